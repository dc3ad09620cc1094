//! The coordinator: turns a job spec into planned tasks, dispatches them over the bus, records
//! what workers report, and merges finished branches in order into the integration branch.
//!
//! - [`submit`]: validate, resolve the repository and base, plan, record. Bad input is refused
//!   before anything is created.
//! - [`drive`]: dispatch, take events, run the merge train ([`train`]) until the job settles.
//! - [`store`]: the state, in SQLite.
//!
//! Architecture invariant: the coordinator never touches a person's working tree or index; it
//! works in the mirror and publishes grove's branches back with `git fetch`.

pub mod access;
pub mod daemon;
pub mod drive;
pub mod gc;
pub mod githttp;
pub mod group;
pub mod grpc;
pub mod handoff;
pub mod home;
pub mod journal;
pub mod launch;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod rerun;
pub mod review;
pub mod store;
pub mod submit;
pub mod timers;
pub mod train;

use std::sync::Arc;

use grove_bus::{Bus, BusError};
use grove_core::JobId;
use grove_core::layout::Layout;
use grove_core::plan::PlanError;
use grove_core::spec::SpecError;
use grove_git::{Git, GitError, worktree::Identity};

pub use drive::Note;
pub use store::{JobRow, JobTrain, PoolLoad, Store, StoreError, TaskAgent, TaskRow, TaskTrain, TurnRow};

/// Why the coordinator could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The job spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A git operation failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Planning failed.
    #[error("planning: {0}")]
    Plan(#[from] PlanError),
    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// The selection left no file to change.
    #[error("nothing to do: the selection matched no file{}", hint(.warnings))]
    NothingSelected { warnings: Vec<String> },
    /// The integration branch already exists in the source repository.
    #[error(
        "branch {branch:?} already exists in {repo}; grove will not touch a branch it did not create (set merge.branch)"
    )]
    BranchExists { branch: String, repo: String },
    /// The selection names a path behind a symlink that leaves the repository.
    #[error("{field}: {path:?} goes through the symlink {link:?} -> {target:?}, which leaves the repository")]
    EscapingSymlink { field: &'static str, path: String, link: String, target: String },
    /// The job's custom agent (`agent.custom`) has no definition at the base commit.
    #[error(
        "agent.custom: no agent {name:?} at the base commit (looked for .github/agents/{name}.agent.md and .claude/agents/{name}.md){}",
        if .defined.is_empty() { "; the repository defines none".to_owned() } else { format!("; it defines: {}", .defined.join(", ")) }
    )]
    NoCustomAgent { name: String, defined: Vec<String> },
    /// The job's custom agent's definition does not parse (the source names file and field).
    #[error("agent.custom: the definition of {name:?} does not parse")]
    BadCustomAgent {
        name: String,
        #[source]
        source: grove_core::agents::DefinitionError,
    },
    /// A merged task cannot be re-run: its branch is in the integration branch.
    #[error("{task} is already merged; re-running it would merge it twice")]
    AlreadyMerged { task: String },
    /// The integration check fails on the integration head, before any merge of the batch.
    #[error("the integration check fails on the integration head itself")]
    HeadFailsCheck { output: String },
    /// The integration check could not be run (not: it failed).
    #[error("running the integration check: {0}")]
    Check(String),
    /// The job's train was stopped midway (the job is being cancelled, or the coordinator is
    /// stopping): nothing it had not recorded moved.
    #[error("the merge train of {job} was stopped")]
    Stopped { job: String },
    /// A review verb cannot apply to this task.
    #[error("{task}: {why}")]
    Refused { task: String, why: String },
    /// Another process (the coordinator daemon, `grove gc`) holds the grove home.
    #[error(
        "{holder} holds the grove home {home}; stop it first (`grove gc` works on a home no coordinator daemon serves)"
    )]
    HomeHeld { home: String, holder: String },
    /// A coordinator daemon (or `grove gc`) holds the grove home a local command would change.
    #[error(
        "the grove home {home} is held by {holder}: give the command --coordinator URL (or \
         GROVE_COORDINATOR) to go through the daemon, or stop it first; changing its jobs from here \
         would race it"
    )]
    HomeServed { home: String, holder: String },
    /// One repository of a cross-repository job refused it.
    #[error("repository {repo} ({location}): {error}")]
    InRepo { repo: String, location: String, error: Box<CoordError> },
    /// Two repositories of a cross-repository job are one.
    #[error("repositories {a} and {b} are the same repository ({location}); give it once")]
    SameRepo { a: String, b: String, location: String },
    /// The repositories of a job cannot be ordered.
    #[error("[[repos]]: {0}")]
    RepoOrder(grove_core::plan::repos::RepoOrderError),
    /// A path could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

// Not `#[from]`: that would make the order's error the source too, and print it twice.
impl From<grove_core::plan::repos::RepoOrderError> for CoordError {
    fn from(e: grove_core::plan::repos::RepoOrderError) -> Self {
        CoordError::RepoOrder(e)
    }
}

fn hint(warnings: &[String]) -> String {
    if warnings.is_empty() { String::new() } else { format!(" ({})", warnings.join("; ")) }
}

/// The coordinator's parts.
pub struct Coordinator {
    pub store: Store,
    pub bus: Arc<dyn Bus>,
    pub git: Git,
    pub layout: Layout,
    pub identity: Identity,
    /// `Some(pool)` when this coordinator's workers serve one pool only (the embedded mode):
    /// `auto` places everything there.
    pub single_pool: Option<String>,
    /// Secrets masked in what the integration check prints (grove's own tokens: the check
    /// gets none of them, this is in case it finds one anyway).
    pub mask: grove_worker::secrets::Mask,
    /// The base URL of this coordinator's git endpoint as workers reach it
    /// (`--git-url`, e.g. `https://grove.example:7070/git`): assignments then name a mirror
    /// by its URL there instead of a `file://` path, so a worker needs no path of this machine.
    pub git_url: Option<String>,
    /// Jobs being cancelled: their conflicts are not redone.
    cancelling: std::sync::Mutex<std::collections::HashSet<JobId>>,
    /// One lock per job: its train moves in one place at a time, whichever path moves it
    /// (events, a submit's dispatch, review verbs, timers, cancellations, `--gc-every`): two at
    /// once would both start from the same head. Other jobs' trains move meanwhile.
    trains: std::sync::Mutex<std::collections::HashMap<JobId, std::sync::Arc<std::sync::Mutex<()>>>>,
    /// Per job, what its train learnt of the integration branch's history (see
    /// [`grove_git::merge::Ancestry`]) and its open mirror; taken out while the train moves,
    /// under the job's lock.
    ancestry: std::sync::Mutex<std::collections::HashMap<JobId, train::TrainMemo>>,
    /// Fired to end every running integration check (the coordinator stops).
    stopping: tokio_util::sync::CancellationToken,
    /// Per job, fired to end its running integration check (the job is being cancelled).
    checks: std::sync::Mutex<std::collections::HashMap<JobId, tokio_util::sync::CancellationToken>>,
    /// Dispatch, turn, attempt and task durations as the events arrive (`/metrics`, OTLP).
    pub timings: metrics::Timings,
}

impl Coordinator {
    pub fn new(layout: Layout, bus: Arc<dyn Bus>, git: Git) -> Result<Coordinator, CoordError> {
        let store = Store::open(&layout.db())?;
        Ok(Coordinator {
            store,
            bus,
            git,
            layout,
            identity: Identity::default(),
            single_pool: None,
            mask: Default::default(),
            git_url: None,
            cancelling: Default::default(),
            trains: Default::default(),
            ancestry: Default::default(),
            stopping: Default::default(),
            checks: Default::default(),
            timings: Default::default(),
        })
    }

    /// The lock a job's train moves under (see [`Coordinator::train`]).
    pub fn job_lock(&self, job: &JobId) -> std::sync::Arc<std::sync::Mutex<()>> {
        let mut all = self.trains.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(job.clone()).or_default().clone()
    }

    /// What a running integration check of `job` stops on: the job's cancellation, or the
    /// coordinator's.
    pub(crate) fn check_token(&self, job: &JobId) -> tokio_util::sync::CancellationToken {
        let mut all = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(job.clone()).or_insert_with(|| self.stopping.child_token()).clone()
    }

    /// End `job`'s running integration check (its process group), and any it would start,
    /// until [`Coordinator::resume_checks`]: the job is being cancelled.
    pub fn stop_checks(&self, job: &JobId) {
        self.check_token(job).cancel();
    }

    /// `job` may run integration checks again (it runs again, or a person asks it to merge).
    pub fn resume_checks(&self, job: &JobId) {
        let mut all = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        if all.get(job).is_some_and(|t| t.is_cancelled()) && !self.stopping.is_cancelled() {
            all.remove(job);
        }
    }

    /// The coordinator stops: every running integration check ends, and no train starts one.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    pub(crate) fn set_cancelling(&self, job: &JobId) {
        self.cancelling.lock().unwrap_or_else(|p| p.into_inner()).insert(job.clone());
    }

    pub(crate) fn is_cancelling(&self, job: &JobId) -> bool {
        self.cancelling.lock().unwrap_or_else(|p| p.into_inner()).contains(job)
    }

    /// The job runs again (a retry, `grove merge`): its conflicts may be redone again.
    pub(crate) fn clear_cancelling(&self, job: &JobId) {
        self.cancelling.lock().unwrap_or_else(|p| p.into_inner()).remove(job);
    }
}

/// A short id for a job: now, in a form that also orders jobs.
pub(crate) fn job_salt() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64 >> 10)
}
