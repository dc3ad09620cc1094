//! Where grove keeps its files under its home folder (`GROVE_HOME`, by default
//! `$XDG_DATA_HOME/grove` or `~/.local/share/grove`; the binary decides, this only joins paths):
//!
//! ```text
//! grove.db                      the coordinator's state (SQLite, WAL)
//! grove.lock                    held by the coordinator daemon and by `grove gc` (flock)
//! mirrors/<name>-<hash>.git     one bare mirror per source repository
//! worktrees/<job>/<task>/       task workspaces (removed per the job's keep_worktrees policy)
//! runs/<job>/<task>/agent.log   what the agent and the checks printed (capped)
//! runs/<job>/<task>/prompt.md   the prompt, files.txt the task's files, feedback.md the
//!                               previous turn's failed check
//! ```

use std::path::{Path, PathBuf};

use crate::JobId;

#[derive(Debug, Clone)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Layout { home: home.into() }
    }
    pub fn home(&self) -> &Path {
        &self.home
    }
    pub fn db(&self) -> PathBuf {
        self.home.join("grove.db")
    }
    /// The lock the coordinator daemon and `grove gc` take, one at a time.
    pub fn lock(&self) -> PathBuf {
        self.home.join("grove.lock")
    }
    pub fn worktrees(&self) -> PathBuf {
        self.home.join("worktrees")
    }
    pub fn runs(&self) -> PathBuf {
        self.home.join("runs")
    }
    /// What hand-offs carried for a task (its ignored files), kept until the job is collected.
    pub fn handoff(&self, job: &JobId, task: &str) -> PathBuf {
        self.home.join("handoffs").join(job.as_str()).join(task)
    }
    pub fn mirrors(&self) -> PathBuf {
        self.home.join("mirrors")
    }
    pub fn worktree(&self, job: &JobId, task: &str) -> PathBuf {
        self.home.join("worktrees").join(job.as_str()).join(task)
    }
    pub fn run_dir(&self, job: &JobId, task: &str) -> PathBuf {
        self.home.join("runs").join(job.as_str()).join(task)
    }
    pub fn log(&self, job: &JobId, task: &str) -> PathBuf {
        self.run_dir(job, task).join("agent.log")
    }
}
