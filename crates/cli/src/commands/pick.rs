use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::embedded::Embedded;

/// Keep one variant of a task: it merges (in its place in the order) and the other variants'
/// worktrees and branches are discarded.
///
/// For jobs run with `merge.pick = "manual"` (or to overrule first-passing / smallest-diff
/// before they decided). Only a variant that passed its checks can be picked.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove compare core            # the variants side by side
  grove pick core claude        # merge core's `claude` variant, discard the others
  grove pick rename-1a2b/core codex --json
  grove pick core claude --coordinator http://127.0.0.1:7070")]
pub struct PickArgs {
    /// JOB/TASK, or TASK (the newest job with variants of that task)
    pub task: String,
    /// The variant's name (see `grove compare TASK`)
    pub variant: String,
    /// Print the job as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Workers for a redo, should the picked branch conflict (default: the job's concurrency)
    #[arg(long, short = 'j', value_name = "N")]
    pub concurrency: Option<usize>,
    /// Pick in a job of this coordinator daemon [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL", conflicts_with = "concurrency")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
    #[command(flatten)]
    pub follow: crate::remote::Follow,
}

pub async fn cmd_pick(home: PathBuf, args: PickArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.coordinator {
        let mut link = crate::remote::Link::open(url, &args.tls, &args.follow).await?;
        let req = grove_proto::v1::PickRequest { task: args.task.clone(), variant: args.variant.clone() };
        let job =
            link.client.pick_variant(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
        eprintln!("picked {} variant {} on {url}", args.task, args.variant);
        let left = job.tasks.iter().filter(|t| !super::merge::is_over(&t.state)).count();
        return super::run::watch_remote(&mut link, &job.id, left, args.json, false).await;
    }
    let mut emb = Embedded::open(home, None).await?;
    // Redos run here: the builtin adapters' own credentials from this environment.
    emb.credentials(&Default::default())?;
    let coord = emb.coordinator.clone();
    let (job, task, _) = grove_coordinator::review::variants_of(&coord.store, &args.task)?;
    coord.pick(&job.id, &task, &args.variant)?;
    eprintln!("picked {}/{task} variant {}", job.id, args.variant);
    let workers = args.concurrency.unwrap_or(job.spec.concurrency() as usize).max(1);
    let (row, cancelled) = super::run::drive(&emb, &job.id, None, workers).await?;
    super::run::finish(&coord.store, &row, args.json, cancelled)
}
