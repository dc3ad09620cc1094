use std::process::ExitCode;

use clap::Args;
use grove_proto::v1 as pb;

/// Cancel a job, or one task of it, on a coordinator: the workers running it kill the agents'
/// process groups, keep what was committed, and the tasks end as cancelled.
///
/// A job run in the embedded mode lives inside its `grove run` process: press Ctrl-C there.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove cancel rename-1a2b                 # the whole job
  grove cancel rename-1a2b/core            # one task; the rest of the job goes on
  grove cancel core --coordinator http://coord:7070")]
pub struct CancelArgs {
    /// A job id, JOB/TASK, or a task name only one job has
    pub target: String,
    /// The coordinator daemon [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
    /// Print the job as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn cmd_cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let Some(url) = &args.coordinator else {
        anyhow::bail!(
            "no coordinator given: a job run in the embedded mode lives inside its `grove run` process \
             (press Ctrl-C there); for a daemon give --coordinator URL or GROVE_COORDINATOR"
        );
    };
    let mut client = crate::remote::connect(url, &args.tls).await?;
    let is_job = !args.target.contains('/')
        && client.get_job(pb::GetJobRequest { id: args.target.clone(), ..Default::default() }).await.is_ok();
    let job = if is_job {
        client.cancel_job(pb::GetJobRequest { id: args.target.clone(), ..Default::default() }).await
    } else {
        client.cancel_task(pb::TaskRequest { task: args.target.clone() }).await
    }
    .map_err(|s| crate::remote::status(url, s))?
    .into_inner();
    let job =
        crate::remote::fetch_job(&mut client, &job.id).await.map_err(|s| crate::remote::status(url, s))?;
    let (row, tasks) = crate::remote::rows(&job)?;
    if !args.json {
        eprintln!(
            "cancelling {}: running agents are stopped; tasks end as cancelled when their workers confirm",
            args.target
        );
    }
    super::status::print_job(&row, &tasks, args.json)?;
    Ok(ExitCode::SUCCESS)
}
