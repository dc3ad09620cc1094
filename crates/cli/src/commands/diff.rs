use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::Context;
use clap::Args;
use grove_coordinator::Store;
use grove_core::layout::Layout;
use grove_git::Git;

/// Review one task's branch against its base: the stat, then the patch, through git's pager.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove diff core
  grove diff rename-1a2b/core --stat")]
pub struct DiffArgs {
    /// JOB/TASK, or TASK when only one job has a task of that name
    pub task: String,
    /// Only the stat
    #[arg(long)]
    pub stat: bool,
}

pub fn cmd_diff(home: PathBuf, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(home);
    let store = Store::open(&layout.db())?;
    let task = store.find_task(&args.task)?;
    let job = store.job(task.job.as_str())?;
    let git = Git::detect()?;
    let mirror = Path::new(&job.mirror);
    let head = git
        .ref_target(mirror, &format!("refs/heads/{}", task.branch))?
        .with_context(|| format!("{} has no branch yet (state: {})", task.branch, task.state))?;
    let mut cmd = git.command(mirror);
    cmd.arg("--paginate").args(["diff", "--stat"]);
    if !args.stat {
        cmd.arg("--patch");
    }
    cmd.args([job.base.as_str(), head.as_str(), "--"]).stdin(Stdio::inherit());
    let status = cmd.status().context("running git diff")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
