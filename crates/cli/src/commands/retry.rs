use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use grove_proto::v1 as pb;

/// Run a task that ended (failed, needs attention, cancelled, or succeeded but unmerged) again
/// as a new attempt from its job's base. The earlier attempt's branch is kept under
/// refs/grove/attempts/; a merged task is refused.
///
/// Without a coordinator this is `grove run --job JOB --only TASK`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove retry rename-1a2b/core
  grove retry core --coordinator http://coord:7070")]
pub struct RetryArgs {
    /// JOB/TASK, or a task name only one job has
    pub task: String,
    /// The coordinator daemon [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn cmd_retry(home: PathBuf, args: RetryArgs) -> anyhow::Result<ExitCode> {
    let Some(url) = &args.coordinator else {
        let store = grove_coordinator::Store::open(&grove_core::layout::Layout::new(&home).db())?;
        let task = store.find_task(&args.task)?;
        let mut argv = vec!["grove".to_owned(), "run".into(), "--job".into(), task.job.to_string()];
        argv.extend(["--only".into(), task.slug.clone()]);
        if args.json {
            argv.push("--json".into());
        }
        let run = <super::Cli as clap::Parser>::try_parse_from(argv)?;
        return match run.command {
            super::Command::Run(a) => super::run::cmd_run(home, a).await,
            _ => anyhow::bail!("internal: `grove run` did not parse as run"),
        };
    };
    let mut client = crate::remote::connect(url, &args.tls).await?;
    let job = client
        .retry_task(pb::TaskRequest { task: args.task.clone() })
        .await
        .map_err(|s| crate::remote::status(url, s))?
        .into_inner();
    let (row, tasks) = crate::remote::rows(&job)?;
    if !args.json {
        eprintln!("{} queued again (follow it with `grove logs -f {}`)", args.task, args.task);
    }
    super::status::print_job(&row, &tasks, args.json)?;
    Ok(ExitCode::SUCCESS)
}
