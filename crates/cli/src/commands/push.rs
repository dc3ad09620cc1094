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
  grove push --remote upstream        # the latest job, to the remote `upstream`
  grove push rename-1a2b --coordinator http://127.0.0.1:7070   # pushed from the daemon's machine")]
pub struct PushArgs {
    /// The job (default: the latest)
    pub job: Option<String>,
    /// The remote to push to [default: origin]
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Print where it went as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Push a job of this coordinator daemon (from its machine) [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
}

pub async fn cmd_push(home: PathBuf, args: PushArgs) -> anyhow::Result<ExitCode> {
    let (job, branch, to) = if let Some(url) = &args.coordinator {
        let mut client = crate::remote::connect(url, &args.tls).await?;
        let req = grove_proto::v1::PushRequest {
            job: args.job.clone().unwrap_or_default(),
            remote: args.remote.clone(),
        };
        let r = client.push_job(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
        (r.job, r.branch, r.remote)
    } else {
        let emb = Embedded::unlocked(home, None, None, &[]).await?;
        let coord = emb.coordinator.clone();
        let job = coord.store.job_or_latest(args.job.as_deref())?;
        let to = tokio::task::block_in_place(|| coord.push(&job.id, args.remote.as_deref()))?;
        (job.id.to_string(), job.integration_branch, to)
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({"job": job, "branch": branch, "remote": to});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "pushed {branch} to {to}")?;
    }
    Ok(ExitCode::SUCCESS)
}
