//! Tasks: what one module-scoped piece of a job is, and the states it moves through.

use std::fmt;
use std::str::FromStr;

/// Where a task is in its life. The order of variants is the order of a normal life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Planned and waiting for a worker.
    Queued,
    /// A worker is making its workspace.
    Preparing,
    /// The agent is running (a turn is in progress).
    Running,
    /// The task's checks are running on the agent's result.
    Checking,
    /// The agent finished and the checks passed; the branch waits for, or went through, the merge.
    Succeeded,
    /// The agent or the checks failed, or the task timed out.
    Failed,
    /// The task needs a person: its branch conflicts with the integration branch, say.
    NeedsAttention,
    /// The person cancelled the job or the task.
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Queued,
        TaskState::Preparing,
        TaskState::Running,
        TaskState::Checking,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::NeedsAttention,
        TaskState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Preparing => "preparing",
            TaskState::Running => "running",
            TaskState::Checking => "checking",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::NeedsAttention => "needs-attention",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// No worker will move a task out of a terminal state by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::NeedsAttention | TaskState::Cancelled
        )
    }

    /// Whether a report of `next` may replace `self`. Terminal states are final, except that a
    /// succeeded task may still be set aside by the merge train (needs-attention).
    pub fn may_become(self, next: TaskState) -> bool {
        match self {
            TaskState::Succeeded => next == TaskState::NeedsAttention,
            s if s.is_terminal() => false,
            _ => true,
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown task state {s:?}"))
    }
}

/// Where a succeeded task's branch stands with the integration branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MergeState {
    /// Not merged yet (still running, or waiting for tasks before it in the order).
    Pending,
    /// Merged into the integration branch.
    Merged,
    /// The branch made no change: nothing to merge.
    Empty,
    /// The branch conflicts with the integration branch; it was set aside.
    Conflict,
    /// Never to be merged (the task failed or was cancelled).
    Skipped,
}

impl MergeState {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeState::Pending => "pending",
            MergeState::Merged => "merged",
            MergeState::Empty => "empty",
            MergeState::Conflict => "conflict",
            MergeState::Skipped => "skipped",
        }
    }

    /// The merge train may pass this task.
    pub fn is_settled(self) -> bool {
        !matches!(self, MergeState::Pending)
    }
}

impl FromStr for MergeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            MergeState::Pending,
            MergeState::Merged,
            MergeState::Empty,
            MergeState::Conflict,
            MergeState::Skipped,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown merge state {s:?}"))
    }
}

/// Files changed, lines added and lines removed between two trees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DiffStat {
    pub files: u64,
    pub insertions: u64,
    pub deletions: u64,
}

impl DiffStat {
    pub fn is_empty(&self) -> bool {
        self.files == 0
    }
}

impl fmt::Display for DiffStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} files +{} -{}", self.files, self.insertions, self.deletions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_terminals_are_final() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(s));
        }
        assert!(!TaskState::Failed.may_become(TaskState::Running));
        assert!(TaskState::Succeeded.may_become(TaskState::NeedsAttention));
        assert!(!TaskState::Cancelled.may_become(TaskState::Succeeded));
        assert!(TaskState::Running.may_become(TaskState::Checking));
    }
}
