//! One module per subcommand: an `XxxArgs` struct (its doc comment is the help) and a
//! `cmd_xxx` function.

mod agents;
mod cancel;
mod compare;
mod coordinator;
mod demo;
mod diff;
mod discard;
mod gc;
mod handoff;
mod logs;
mod merge;
mod pick;
mod plan;
mod pr;
mod pull;
mod push;
mod reply;
mod retry;
mod run;
mod status;
mod ui;
mod up;
mod watch;
mod worker;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// grove runs many coding agents at once, each in its own git worktree and branch, and
/// merges their work back in dependency order.
#[derive(Parser, Debug)]
#[command(name = "grove", version, propagate_version = true, max_term_width = 100)]
#[command(after_help = "Start with `grove demo`, then `grove run job.toml` in your repository.")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The `service.name` this process reports its telemetry as (`OTEL_SERVICE_NAME` wins).
    pub fn service_name(&self) -> &'static str {
        match self.command {
            Command::Coordinator(_) => "grove-coordinator",
            Command::Worker(_) => "grove-worker",
            _ => "grove",
        }
    }
}

#[derive(Args, Debug)]
pub struct Global {
    /// Where grove keeps its state, mirrors, worktrees and logs
    /// [env: GROVE_HOME; default ~/.local/share/grove]
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// More diagnostics on stderr (-vv for all); GROVE_LOG takes a tracing filter
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

// Parsed once per process: the size of the largest arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    Run(run::RunArgs),
    Plan(plan::PlanArgs),
    Status(status::StatusArgs),
    Logs(logs::LogsArgs),
    Diff(diff::DiffArgs),
    Merge(merge::MergeArgs),
    Discard(discard::DiscardArgs),
    Push(push::PushArgs),
    Pr(pr::PrArgs),
    Gc(gc::GcArgs),
    Compare(compare::CompareArgs),
    Pick(pick::PickArgs),
    Demo(demo::DemoArgs),
    Cancel(cancel::CancelArgs),
    Retry(retry::RetryArgs),
    Reply(reply::ReplyArgs),
    Workers(workers::WorkersArgs),
    Agents(agents::AgentsArgs),
    Worker(worker::WorkerArgs),
    Coordinator(coordinator::CoordinatorArgs),
    Up(up::UpArgs),
    Ui(ui::UiArgs),
    Watch(watch::WatchArgs),
    Handoff(handoff::HandoffArgs),
    Pull(pull::PullArgs),
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = crate::embedded::home(cli.global.home.as_ref())?;
    match cli.command {
        Command::Run(a) => run::cmd_run(home, a).await,
        Command::Plan(a) => plan::cmd_plan(home, a).await,
        Command::Status(a) => status::cmd_status(home, a).await,
        Command::Logs(a) => logs::cmd_logs(home, a).await,
        Command::Diff(a) => diff::cmd_diff(home, a).await,
        Command::Merge(a) => merge::cmd_merge(home, a).await,
        Command::Discard(a) => discard::cmd_discard(home, a).await,
        Command::Push(a) => push::cmd_push(home, a).await,
        Command::Pr(a) => pr::cmd_pr(home, a).await,
        Command::Gc(a) => gc::cmd_gc(home, a).await,
        Command::Compare(a) => compare::cmd_compare(home, a).await,
        Command::Pick(a) => pick::cmd_pick(home, a).await,
        Command::Demo(a) => demo::cmd_demo(home, a).await,
        Command::Worker(a) => worker::cmd_worker(home, a).await,
        Command::Coordinator(a) => coordinator::cmd_coordinator(home, a).await,
        Command::Cancel(a) => cancel::cmd_cancel(a).await,
        Command::Retry(a) => retry::cmd_retry(home, a).await,
        Command::Reply(a) => reply::cmd_reply(home, a).await,
        Command::Workers(a) => workers::cmd_workers(a).await,
        Command::Agents(a) => agents::cmd_agents(home, a).await,
        Command::Up(a) => up::cmd_up(home, a).await,
        Command::Ui(a) => ui::cmd_ui(home, a).await,
        Command::Watch(a) => watch::cmd_watch(home, a).await,
        Command::Handoff(a) => handoff::cmd_handoff(home, a).await,
        Command::Pull(a) => pull::cmd_pull(home, a).await,
    }
}
