use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::embedded::Embedded;

/// Merge a job's checked branches into its integration branch now, in order.
///
/// For jobs run with `merge.mode = "manual"` (their tasks wait, checked, for this), and for a
/// job whose merging stopped on a conflict (`on_conflict = "abort"`): merging goes on from
/// where it stopped. Conflicts follow the job's `on_conflict` policy (a redo runs its agent
/// here). Prints the job as `grove status` does.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove run job.toml --merge-mode manual   # run and check, merge nothing
  grove status rename-1a2b                 # review; grove diff, grove discard
  grove merge rename-1a2b                  # then merge what is left, in order
  grove merge rename-1a2b --coordinator http://127.0.0.1:7070   # a job on a coordinator daemon")]
pub struct MergeArgs {
    /// The job (default: the latest)
    pub job: Option<String>,
    /// Print the job as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Workers for redone tasks (default: the job's concurrency)
    #[arg(long, short = 'j', value_name = "N")]
    pub concurrency: Option<usize>,
    /// Merge a job of this coordinator daemon (its workers run any redo) [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL", conflicts_with = "concurrency")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
    #[command(flatten)]
    pub follow: crate::remote::Follow,
}

pub async fn cmd_merge(home: PathBuf, args: MergeArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.coordinator {
        let mut link = crate::remote::Link::open(url, &args.tls, &args.follow).await?;
        let req =
            grove_proto::v1::GetJobRequest { id: args.job.clone().unwrap_or_default(), ..Default::default() };
        let job = link.client.merge_job(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
        // Redos the merge queued run on the coordinator's workers: follow them to the end.
        let left = job.tasks.iter().filter(|t| !is_over(&t.state)).count();
        return super::run::watch_remote(&mut link, &job.id, left, args.json, false).await;
    }
    let mut emb = Embedded::open(home, None).await?;
    // Redos run here: the builtin adapters' own credentials from this environment.
    emb.credentials(&Default::default())?;
    let coord = emb.coordinator.clone();
    let job = coord.store.job_or_latest(args.job.as_deref())?;
    coord.approve_merge(&job.id)?;
    let workers = args.concurrency.unwrap_or(job.spec.concurrency() as usize).max(1);
    let (row, cancelled) = super::run::drive(&emb, &job.id, None, workers).await?;
    super::run::finish(&coord.store, &row, args.json, cancelled)
}

/// A task state from the wire that is final.
pub(crate) fn is_over(state: &str) -> bool {
    state.parse::<grove_core::TaskState>().is_ok_and(|s| s.is_terminal())
}
