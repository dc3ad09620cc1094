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

pub mod daemon;
pub mod drive;
pub mod gc;
pub mod grpc;
pub mod home;
pub mod logs;
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
pub use store::{JobRow, JobTrain, Store, StoreError, TaskAgent, TaskRow, TaskTrain, TurnRow};

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
    /// A review verb cannot apply to this task.
    #[error("{task}: {why}")]
    Refused { task: String, why: String },
    /// Another process (the coordinator daemon, `grove gc`) holds the grove home.
    #[error(
        "{holder} holds the grove home {home}; stop it first (`grove gc` works on a home no coordinator daemon serves)"
    )]
    HomeHeld { home: String, holder: String },
    /// A path could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
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
    /// Jobs being cancelled: their conflicts are not redone.
    cancelling: std::sync::Mutex<std::collections::HashSet<JobId>>,
    /// One train moves at a time, whichever path moves it (events, a submit's dispatch, review
    /// verbs, timers, cancellations): two at once would both start from the same head.
    trains: std::sync::Mutex<()>,
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
            cancelling: Default::default(),
            trains: Default::default(),
        })
    }

    pub(crate) fn set_cancelling(&self, job: &JobId) {
        self.cancelling.lock().unwrap_or_else(|p| p.into_inner()).insert(job.clone());
    }

    pub(crate) fn is_cancelling(&self, job: &JobId) -> bool {
        self.cancelling.lock().unwrap_or_else(|p| p.into_inner()).contains(job)
    }
}

/// A short id for a job: now, in a form that also orders jobs.
pub(crate) fn job_salt() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64 >> 10)
}

pub(crate) fn job_id(name: &str, store: &Store) -> Result<JobId, CoordError> {
    let mut salt = job_salt();
    loop {
        let id = JobId::new(name, salt);
        if !store.job_exists(id.as_str())? {
            return Ok(id);
        }
        salt = salt.wrapping_add(1);
    }
}
