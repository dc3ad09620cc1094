use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::Context;
use clap::Args;
use grove_coordinator::Store;
use grove_core::layout::Layout;
use grove_git::Git;

/// Review one task's branch against its base: the stat, then the patch, through your pager.
///
/// The pager is git's: GIT_PAGER, then core.pager, then PAGER, then `less`; none when the
/// output is not a terminal. A redone task is compared with the integration head it started
/// from.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove diff core
  grove diff rename-1a2b/core --stat
  grove diff core --json | jq '.files[].path'")]
pub struct DiffArgs {
    /// JOB/TASK, or TASK when only one job has a task of that name
    pub task: String,
    /// Only the stat
    #[arg(long)]
    pub stat: bool,
    /// The changed files with lines added and removed, as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn cmd_diff(home: PathBuf, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(home);
    let store = Store::open(&layout.db())?;
    let task = store.find_task(&args.task)?;
    let job = store.job(task.job.as_str())?;
    let git = Git::detect()?;
    let mirror = Path::new(&job.mirror);
    if task.merge_state == grove_core::task::MergeState::Discarded {
        anyhow::bail!(
            "{}/{} was discarded ({}); its last commits are under refs/grove/attempts/{}/{}/ in {}",
            task.job,
            task.slug,
            task.reason.as_deref().unwrap_or("discarded"),
            task.job,
            task.slug,
            job.mirror
        );
    }
    let head = git
        .ref_target(mirror, &format!("refs/heads/{}", task.branch))?
        .with_context(|| format!("{} has no branch yet (state: {})", task.branch, task.state))?;
    let base = task.base(&job).to_owned();
    if args.json {
        let out = git.run(mirror, ["diff", "--numstat", "-z", "--no-renames", &base, &head, "--"])?;
        let files: Vec<_> = out
            .stdout
            .split('\0')
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                let (a, d, p) = (f.next()?, f.next()?, f.next()?);
                Some(serde_json::json!({"path": p, "insertions": a.parse::<u64>().ok(), "deletions": d.parse::<u64>().ok()}))
            })
            .collect();
        let v = serde_json::json!({
            "job": job.id.as_str(), "task": task.slug, "base": base, "head": head, "files": files,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut cmd = git.command(mirror);
    cmd.arg("--paginate").args(["diff", "--stat"]);
    if !args.stat {
        cmd.arg("--patch");
    }
    if crate::output::no_color() {
        cmd.arg("--no-color");
    }
    cmd.args([base.as_str(), head.as_str(), "--"]).stdin(Stdio::inherit());
    let status = cmd.status().context("running git diff")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
