use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use grove_coordinator::review::{Discard, discard_selection};

use crate::embedded::Embedded;

/// Throw tasks' work away: remove the worktrees and branches grove made for them, and say
/// what was removed.
///
/// Only grove's own things go: the task's worktree under the grove home, its branch
/// `grove/<job>/<task>` in grove's mirror, and the same branch in your repository while it
/// still points where grove put it and is not checked out. Other branches (even under
/// `grove/`) are never touched. The commits stay reachable in grove's mirror under
/// `refs/grove/attempts/`. A merged task, or one still running, is refused.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove discard core                         # the task `core` of the only job that has one
  grove discard rename-1a2b/core rename-1a2b/ide
  grove discard --failed --needs-attention   # every failed or set-aside task of the latest job
  grove discard --failed --job rename-1a2b
  grove discard rename-1a2b/core --coordinator http://127.0.0.1:7070")]
pub struct DiscardArgs {
    /// Tasks: JOB/TASK, or TASK when only one job has a task of that name
    pub tasks: Vec<String>,
    /// Every failed task of the job
    #[arg(long)]
    pub failed: bool,
    /// Every task of the job that needs attention (conflicts, broken integration checks)
    #[arg(long)]
    pub needs_attention: bool,
    /// The job for --failed / --needs-attention (default: the latest)
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Print what was removed as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Discard tasks of this coordinator daemon (on its machine) [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
}

pub async fn cmd_discard(home: PathBuf, args: DiscardArgs) -> anyhow::Result<ExitCode> {
    if args.tasks.is_empty() && !args.failed && !args.needs_attention {
        bail!("name the tasks to discard, or pass --failed / --needs-attention");
    }
    let report: Vec<(String, Discard)> = if let Some(url) = &args.coordinator {
        let mut client = crate::remote::connect(url, &args.tls).await?;
        let req = grove_proto::v1::DiscardRequest {
            tasks: args.tasks.clone(),
            failed: args.failed,
            needs_attention: args.needs_attention,
            job: args.job.clone().unwrap_or_default(),
        };
        let r = client.discard_tasks(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
        if let Some(job) = &r.nothing_in {
            eprintln!("job {job}: no task in those states; nothing discarded");
        }
        r.discarded
            .into_iter()
            .map(|d| (d.job, Discard { task: d.task, removed: d.removed, kept: d.kept }))
            .collect()
    } else {
        let emb = Embedded::open(home, None).await?;
        let coord = emb.coordinator.clone();
        let sel = discard_selection(
            &coord.store,
            &args.tasks,
            args.failed,
            args.needs_attention,
            args.job.as_deref(),
        )?;
        if let Some(job) = &sel.nothing_in {
            eprintln!("job {job}: no task in those states; nothing discarded");
        }
        let mut report = Vec::new();
        for (job, slugs) in &sel.chosen {
            let done = tokio::task::block_in_place(|| coord.discard(job, slugs))?;
            report.extend(done.into_iter().map(|d| (job.to_string(), d)));
        }
        report
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<_> = report
            .iter()
            .map(|(j, d)| serde_json::json!({"job": j, "task": d.task, "removed": d.removed, "kept": d.kept}))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (j, d) in &report {
        writeln!(out, "discarded {j}/{}", d.task)?;
        for r in &d.removed {
            writeln!(out, "  removed {r}")?;
        }
        for k in &d.kept {
            writeln!(out, "  kept {k}")?;
        }
        if d.removed.is_empty() && d.kept.is_empty() {
            writeln!(out, "  (it had no worktree or branch left)")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
