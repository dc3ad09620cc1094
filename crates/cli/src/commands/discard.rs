use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use grove_core::TaskState;

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
  grove discard --failed --job rename-1a2b")]
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
}

pub async fn cmd_discard(home: PathBuf, args: DiscardArgs) -> anyhow::Result<ExitCode> {
    if args.tasks.is_empty() && !args.failed && !args.needs_attention {
        bail!("name the tasks to discard, or pass --failed / --needs-attention");
    }
    let emb = Embedded::open(home, None).await?;
    let coord = emb.coordinator.clone();
    // (job, slugs), in the order given.
    let mut chosen: Vec<(grove_core::JobId, Vec<String>)> = Vec::new();
    let mut add = |job: &grove_core::JobId, slug: String| match chosen.iter_mut().find(|(j, _)| j == job) {
        Some((_, v)) => {
            if !v.contains(&slug) {
                v.push(slug)
            }
        }
        None => chosen.push((job.clone(), vec![slug])),
    };
    for name in &args.tasks {
        let t = coord.store.find_task(name)?;
        add(&t.job, t.slug);
    }
    if args.failed || args.needs_attention {
        let job = coord.store.job_or_latest(args.job.as_deref())?;
        let tasks = coord.store.tasks(&job.id)?;
        let picked: Vec<_> = tasks
            .into_iter()
            .filter(|t| {
                t.merge_state != grove_core::task::MergeState::Discarded
                    && ((args.failed && t.state == TaskState::Failed)
                        || (args.needs_attention && t.state == TaskState::NeedsAttention))
            })
            .collect();
        if picked.is_empty() && args.tasks.is_empty() {
            eprintln!("job {}: no task in those states; nothing discarded", job.id);
        }
        for t in picked {
            add(&job.id, t.slug);
        }
    }
    let mut report = Vec::new();
    for (job, slugs) in &chosen {
        let done = tokio::task::block_in_place(|| coord.discard(job, slugs))?;
        report.extend(done.into_iter().map(|d| (job.clone(), d)));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<_> = report
            .iter()
            .map(|(j, d)| serde_json::json!({"job": j.as_str(), "task": d.task, "removed": d.removed, "kept": d.kept}))
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
