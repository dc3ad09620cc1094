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
    /// The agent hit a usage or rate limit: the task waits for the limit's reset time, then
    /// goes again as a new attempt from its checkpoints.
    Parked,
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
    pub const ALL: [TaskState; 9] = [
        TaskState::Queued,
        TaskState::Preparing,
        TaskState::Running,
        TaskState::Checking,
        TaskState::Parked,
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
            TaskState::Parked => "parked",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::NeedsAttention => "needs-attention",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Queued for a worker or on one (dispatched, preparing, running, checking).
    pub fn is_on_worker(self) -> bool {
        matches!(self, TaskState::Queued | TaskState::Preparing | TaskState::Running | TaskState::Checking)
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
    /// Merged in memory, but the integration check failed with it; set aside.
    CheckFailed,
    /// A person discarded the task's branch (`grove discard`).
    Discarded,
    /// The branch adds a file grove copied into the workspace as git-ignored (a secret,
    /// perhaps): set aside, never merged, never published.
    Refused,
}

/// The state people read: `merged` for a task whose branch went in.
pub fn shown_state(s: TaskState, m: MergeState) -> &'static str {
    match (s, m) {
        (TaskState::Succeeded, MergeState::Merged) => "merged",
        (TaskState::Succeeded, MergeState::Empty) => "no-change",
        (_, MergeState::Discarded) => "discarded",
        _ => s.as_str(),
    }
}

impl MergeState {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeState::Pending => "pending",
            MergeState::Merged => "merged",
            MergeState::Empty => "empty",
            MergeState::Conflict => "conflict",
            MergeState::Skipped => "skipped",
            MergeState::CheckFailed => "check-failed",
            MergeState::Discarded => "discarded",
            MergeState::Refused => "refused",
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
            MergeState::CheckFailed,
            MergeState::Discarded,
            MergeState::Refused,
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

/// Everything a worker needs to run one attempt of a task. Sent by the coordinator over the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub job: crate::JobId,
    /// The task's slug.
    pub task: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The task's place in the merge order (0-based).
    pub order: u32,
    /// The bare mirror the workspace is a worktree of, on the coordinator's machine.
    pub mirror: std::path::PathBuf,
    /// A URL of the mirror that workers without it clone from and push their branch to.
    pub remote: String,
    /// The source repository's working tree, when it is on this machine (for ignored files).
    pub source_dir: Option<std::path::PathBuf>,
    /// The commit the task starts from.
    pub base: String,
    /// The task's branch (`grove/<job>/<slug>`).
    pub branch: String,
    /// Cone folders for a sparse checkout, `None` for a full one.
    pub sparse: Option<Vec<String>>,
    /// The files the task owns.
    pub files: Vec<String>,
    pub prompt: String,
    pub agent: crate::spec::AgentSpec,
    pub turn_timeout: std::time::Duration,
    pub max_turns: u32,
    /// A shell command run in the workspace after each turn.
    pub check: Option<String>,
    /// Git-ignored files of `source_dir` to copy into the workspace (already matched against
    /// the job's `include_ignored` patterns and `.worktreeinclude`).
    pub ignored_files: Vec<String>,
    pub port_base: u16,
    pub port_count: u16,
    pub log_cap: u64,
    pub keep_worktrees: crate::spec::KeepWorktrees,
    /// Set when this attempt redoes the task after its branch conflicted with the integration
    /// branch: `base` is then the integration head and the branch starts there.
    pub redo: Option<Redo>,
    /// What the attempt may still spend (`[budget]`, less what was spent before).
    pub budget: crate::usage::Budget,
    /// The agent session the attempt resumes (a builtin CLI adapter's earlier turn).
    pub session: Option<crate::usage::SessionRef>,
    /// A person's answer to the question the agent asked (`grove reply`): the first turn's
    /// prompt, in the resumed session.
    pub reply: Option<String>,
    /// The job's prices over the builtin table, by model name prefix.
    pub prices: std::collections::BTreeMap<String, crate::usage::Price>,
    /// Git-ignored files that travel with the assignment itself, for a worker that cannot read
    /// `source_dir` (a clone elsewhere, a pod), or that were snapshot at a hand-off: written
    /// into the workspace before `ignored_files` are copied, and never committed.
    pub carried: Vec<Carried>,
    /// For a repository of a cross-repository job: the repositories it depends on (all of
    /// them, not only the direct ones), each at its merged integration head.
    pub upstreams: Vec<Upstream>,
}

/// A repository a task's repository depends on, as its workspace gets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstream {
    /// Its name in the job (`GROVE_UPSTREAM_<NAME>`).
    pub name: String,
    /// Its mirror on the coordinator's machine.
    pub mirror: std::path::PathBuf,
    /// A URL of the mirror, for workers without it.
    pub remote: String,
    /// Its integration head.
    pub commit: String,
}

impl Upstream {
    /// The environment variable naming its checkout: `GROVE_UPSTREAM_` and the name in upper
    /// case, every character that is not a letter or digit an `_` (`my-lib` →
    /// `GROVE_UPSTREAM_MY_LIB`).
    pub fn env_name(&self) -> String {
        upstream_env(&self.name)
    }
}

/// The variable naming the checkout of the upstream repository `name` (see
/// [`Upstream::env_name`]).
pub fn upstream_env(name: &str) -> String {
    let up: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("GROVE_UPSTREAM_{up}")
}

/// A git-ignored file carried in an assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// Slash-separated, relative to the repository's top.
    pub path: String,
    pub data: Vec<u8>,
    /// Permission bits (0o600, 0o755...).
    pub mode: u32,
}

/// The most bytes of ignored files an assignment carries (a NATS message is at most 1 MiB).
pub const CARRIED_MAX: usize = 512 << 10;

/// What an agent redoing a conflicting task is told (in GROVE_CONFLICT_FILE and friends).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Redo {
    /// The paths that conflicted.
    pub paths: Vec<String>,
    /// The conflicting files as git's merge left them (with conflict markers), capped.
    pub hunks: String,
    /// The previous attempt's diff against its base, capped.
    pub previous_diff: String,
}

/// What a worker reports about an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    pub job: crate::JobId,
    pub task: String,
    pub attempt: u32,
    pub kind: EventKind,
}

/// The kinds of report.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The attempt moved to a non-terminal state (`turn` is set while running).
    State { state: TaskState, turn: Option<u32> },
    /// A turn ended with a checkpoint commit (or none, when nothing changed), and what a
    /// builtin agent adapter read from the CLI about the turn.
    Checkpoint { turn: u32, commit: Option<String>, stat: DiffStat, report: Option<crate::usage::TurnReport> },
    /// The attempt is over.
    Finished(TaskOutcome),
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// Succeeded, Failed, Cancelled, or NeedsAttention (the agent asked a question).
    pub state: TaskState,
    /// The branch's tip at the end.
    pub head: Option<String>,
    /// The branch against the base.
    pub stat: DiffStat,
    pub turns: u32,
    /// Why it failed or was cancelled, in a sentence.
    pub reason: Option<String>,
    /// The last lines of the agent's (or check's) output.
    pub log_tail: String,
    /// Whether a failed attempt is the task's verdict or may be tried again.
    pub retry: Retry,
}

/// What a failed attempt says about trying again. The worker decides: a failure of the
/// agent's work (it exited non-zero, its check failed, a turn timed out) is the task's
/// verdict; a failure around it (the workspace, a push, the log file) is transient; an agent
/// that reports a usage or rate limit with a reset time parks the task until then.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Retry {
    /// The outcome stands (successes, cancellations, the agent's or the check's verdict).
    #[default]
    Final,
    /// Not the job's fault: a new attempt may succeed (up to `run.max_attempts`, with backoff).
    Transient,
    /// The agent's provider refused until `until` (unix seconds): go again then.
    Parked { until: i64 },
}

/// A piece of an agent's output, as a worker streams it while the attempt runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub job: crate::JobId,
    pub task: String,
    pub attempt: u32,
    /// Where `data` starts in the task's log file.
    pub offset: u64,
    pub data: Vec<u8>,
    /// The attempt is over: no more output comes for it.
    pub eof: bool,
}

/// A live worker, as it announces itself in the worker registry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pools: Vec<String>,
    /// Attempts at once, at most.
    pub capacity: u32,
    /// The `JOB/TASK` of each attempt running now.
    pub tasks: Vec<String>,
    /// grove's version on the worker.
    pub version: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds of this announcement.
    pub seen_at: i64,
    /// Why the worker takes no task now (its disk is short), if so.
    pub refusing: Option<String>,
}
