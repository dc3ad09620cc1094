use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::embedded::Embedded;

/// Push a job's integration branch to your repository's remote (never forced).
///
/// From a local repository it pushes `grove/<job>/integration` (or the job's merge.branch) to
/// REMOTE (default `origin`); for a job made from a URL, to that URL. A remote branch of that
/// name that moved elsewhere refuses the push: grove never force-pushes.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove push rename-1a2b
  grove push --remote upstream        # the latest job, to the remote `upstream`")]
pub struct PushArgs {
    /// The job (default: the latest)
    pub job: Option<String>,
    /// The remote to push to [default: origin]
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Print where it went as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn cmd_push(home: PathBuf, args: PushArgs) -> anyhow::Result<ExitCode> {
    let emb = Embedded::open(home, None).await?;
    let coord = emb.coordinator.clone();
    let job = coord.store.job_or_latest(args.job.as_deref())?;
    let to = tokio::task::block_in_place(|| coord.push(&job.id, args.remote.as_deref()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({"job": job.id.as_str(), "branch": job.integration_branch, "remote": to});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "pushed {} to {to}", job.integration_branch)?;
    }
    Ok(ExitCode::SUCCESS)
}
