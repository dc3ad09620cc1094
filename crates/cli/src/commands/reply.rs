use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::embedded::Embedded;

/// Answer the question a task's agent asked: the task (needs-attention) resumes its agent's
/// session with the answer as the next turn, on its branch, then goes on as usual (checks,
/// merge).
///
/// `grove status` shows what each waiting agent asked, `grove logs TASK` the question in the
/// agent's output. Without a coordinator the job runs here until the task ends, as `grove run
/// --job` does.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove status rename-1a2b                        # core asks: Keep the old API? ...
  grove reply rename-1a2b/core \"Keep it, deprecated.\"
  grove reply core \"Use SQLite.\" --coordinator http://coord:7070")]
pub struct ReplyArgs {
    /// JOB/TASK, or a task name only one job has
    pub task: String,
    /// The answer, given to the agent as its next prompt
    pub answer: String,
    /// Print the job as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Reply to a task of this coordinator daemon [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
    #[command(flatten)]
    pub follow: crate::remote::Follow,
    /// The credentials of this process's workers' agents, when the task runs here
    #[command(flatten)]
    pub agent_env: crate::secrets::AgentEnvArgs,
}

pub async fn cmd_reply(home: PathBuf, args: ReplyArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.coordinator {
        let mut link = crate::remote::Link::open(url, &args.tls, &args.follow).await?;
        let req = grove_proto::v1::ReplyRequest { task: args.task.clone(), answer: args.answer.clone() };
        let job = link.client.reply_task(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
        eprintln!(
            "{}: answered; its agent goes on (follow it with `grove logs -f {}`)",
            args.task, args.task
        );
        let left = job.tasks.iter().filter(|t| !super::merge::is_over(&t.state)).count();
        return super::run::watch_remote(&mut link, &job.id, left, args.json, false).await;
    }
    let mut emb = Embedded::open(home, None).await?;
    emb.credentials(&args.agent_env)?;
    let coord = emb.coordinator.clone();
    let task = coord.store.find_task(&args.task)?;
    tokio::task::block_in_place(|| coord.reply(&task.job, &task.slug, &args.answer))?;
    eprintln!("{}/{}: answered; its agent goes on", task.job, task.slug);
    let only: BTreeSet<String> = [task.slug.clone()].into_iter().collect();
    let (row, cancelled) = super::run::drive(&emb, &task.job, Some(&only), 1).await?;
    super::run::finish(&coord.store, &row, args.json, cancelled)
}
