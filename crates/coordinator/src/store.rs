//! The coordinator's state in SQLite (WAL): jobs and their tasks. A coordinator killed at any
//! moment reopens the file and carries on; every write is one transaction.

use std::path::Path;
use std::sync::Mutex;

use grove_core::spec::JobSpec;
use grove_core::task::{MergeState, TaskOutcome};
use grove_core::usage::{TurnOutcome, TurnReport, Usage};
use grove_core::{DiffStat, JobId, TaskState};
use rusqlite::{Connection, OptionalExtension, params};

/// The state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("state database {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value does not parse (a newer grove wrote it, or the file was edited).
    #[error("state database {path}: bad {what}: {message}")]
    Corrupt { path: String, what: &'static str, message: String },
    /// No such job.
    #[error("no job {0:?} (see `grove status`)")]
    NoJob(String),
    /// No such task.
    #[error("no task {0:?} (see `grove status`)")]
    NoTask(String),
    /// The name matches tasks of several jobs.
    #[error("{name:?} names tasks in several jobs ({jobs}); say JOB/TASK")]
    Ambiguous { name: String, jobs: String },
}

/// 4 added `jobs.collected_at` (`grove gc`); 5 added the `turns` table (what each agent turn
/// spent), the tasks' agent session, question, reply and budget hold, `tasks.parks` and
/// `tasks.parked_secs` (parking is capped) and the `notes` journal (followers resume from it).
/// Versions 3 and 4 are migrated in place; new tables are made by [`SCHEMA`] itself (the
/// `notifications` outbox came so, within version 5).
const SCHEMA_VERSION: i64 = 5;

/// What each older version needs to become the next one, in order.
const MIGRATIONS: &[(i64, &str)] = &[
    (3, "ALTER TABLE jobs ADD COLUMN collected_at INTEGER;"),
    (
        4,
        "ALTER TABLE tasks ADD COLUMN parks INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE tasks ADD COLUMN parked_secs INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE tasks ADD COLUMN session TEXT;
         ALTER TABLE tasks ADD COLUMN session_agent TEXT;
         ALTER TABLE tasks ADD COLUMN question TEXT;
         ALTER TABLE tasks ADD COLUMN reply TEXT;
         ALTER TABLE tasks ADD COLUMN held TEXT;",
    ),
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    spec TEXT NOT NULL,
    source TEXT NOT NULL,
    source_dir TEXT,
    mirror TEXT NOT NULL,
    base TEXT NOT NULL,
    integration_branch TEXT NOT NULL,
    integration_head TEXT NOT NULL,
    state TEXT NOT NULL,
    warnings TEXT NOT NULL,
    ignored_files TEXT NOT NULL,
    merge_approved INTEGER NOT NULL DEFAULT 0,
    merge_stopped TEXT,
    collected_at INTEGER
);
CREATE TABLE IF NOT EXISTS tasks (
    job TEXT NOT NULL REFERENCES jobs(id),
    slug TEXT NOT NULL,
    ord INTEGER NOT NULL,
    level INTEGER NOT NULL,
    title TEXT NOT NULL,
    sparse TEXT,
    files TEXT NOT NULL,
    lines INTEGER NOT NULL,
    depends_on TEXT NOT NULL,
    branch TEXT NOT NULL,
    pool TEXT NOT NULL,
    state TEXT NOT NULL,
    merge_state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    turns INTEGER NOT NULL DEFAULT 0,
    head TEXT,
    files_changed INTEGER NOT NULL DEFAULT 0,
    insertions INTEGER NOT NULL DEFAULT 0,
    deletions INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    log_tail TEXT,
    merge_commit TEXT,
    conflict_paths TEXT,
    task_base TEXT,
    redos INTEGER NOT NULL DEFAULT 0,
    redo TEXT,
    merge_seq INTEGER,
    variant TEXT,
    variant_of TEXT,
    picked INTEGER NOT NULL DEFAULT 0,
    finished_seq INTEGER,
    started_at INTEGER,
    finished_at INTEGER,
    placed TEXT,
    placed_why TEXT,
    on_bus INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    first_dispatched_at INTEGER,
    retry_at INTEGER,
    parks INTEGER NOT NULL DEFAULT 0,
    parked_secs INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    session TEXT,
    session_agent TEXT,
    question TEXT,
    reply TEXT,
    held TEXT,
    PRIMARY KEY (job, slug)
);
CREATE TABLE IF NOT EXISTS job_repos (
    job TEXT PRIMARY KEY REFERENCES jobs(id),
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    ord INTEGER NOT NULL,
    level INTEGER NOT NULL,
    upstream TEXT NOT NULL,
    edges TEXT NOT NULL,
    pr TEXT
);
CREATE INDEX IF NOT EXISTS job_repos_by_grp ON job_repos(grp, ord);
CREATE TABLE IF NOT EXISTS job_owners (
    job TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_slug ON tasks(slug);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(job, state);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE TABLE IF NOT EXISTS handoffs (
    job TEXT NOT NULL,
    slug TEXT NOT NULL,
    at INTEGER NOT NULL,
    way TEXT NOT NULL,
    place TEXT NOT NULL,
    attempt INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS handoffs_by_job ON handoffs(job, slug);
CREATE TABLE IF NOT EXISTS notes (
    job TEXT NOT NULL,
    seq INTEGER NOT NULL,
    note TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (job, seq)
);
CREATE TABLE IF NOT EXISTS notifications (
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    sink TEXT NOT NULL,
    event TEXT NOT NULL,
    at INTEGER NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    sent_at INTEGER,
    error TEXT,
    PRIMARY KEY (job, key, sink)
);
CREATE INDEX IF NOT EXISTS notifications_unsent ON notifications(sent_at, at);
CREATE TABLE IF NOT EXISTS turns (
    job TEXT NOT NULL,
    slug TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    turn INTEGER NOT NULL,
    agent TEXT NOT NULL,
    model TEXT,
    outcome TEXT NOT NULL,
    message TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_usd REAL,
    known_cost_usd REAL NOT NULL,
    session TEXT,
    summary TEXT,
    question TEXT,
    at INTEGER NOT NULL,
    PRIMARY KEY (job, slug, attempt, turn)
);
";

/// Which of a job's task rows [`Store::select_tasks`] reads.
#[derive(Clone, Copy)]
enum Which<'a> {
    All,
    One(&'a str),
    Pending { after: Option<(u32, &'a str)>, limit: u32 },
}

/// What a pool's tasks ask of it (see [`Store::pool_load`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolLoad {
    /// On the bus, not taken by a worker yet.
    pub queued: u32,
    /// Being prepared, run or checked by a worker.
    pub running: u32,
    /// The longest any of them may still run, when their jobs have a deadline.
    pub deadline: Option<std::time::Duration>,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: JobId,
    pub created_at: i64,
    pub spec: JobSpec,
    /// Where the repository came from, as given to git.
    pub source: String,
    /// The source's working tree, when local.
    pub source_dir: Option<String>,
    pub mirror: String,
    pub base: String,
    pub integration_branch: String,
    pub integration_head: String,
    /// `running`, `done` or `cancelled`.
    pub state: String,
    pub warnings: Vec<String>,
    pub ignored_files: Vec<String>,
    pub train: JobTrain,
    /// When `grove gc` removed the job's worktrees and run dirs (seconds since the epoch).
    pub collected_at: Option<i64>,
    /// For one repository of a cross-repository job: which, and where it stands in the order.
    pub repo: Option<RepoOf>,
}

/// A job that is one repository of a cross-repository job (`[[repos]]`): the job `<group>.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoOf {
    /// The cross-repository job's id.
    pub group: JobId,
    /// The repository's name in it.
    pub name: String,
    /// Its place in the order across repositories (0 first), and its level (0: needs none).
    pub ord: u32,
    pub level: u32,
    /// The repositories it depends on (direct ones), by name.
    pub upstream: Vec<String>,
    /// Why: one line per dependency ("app/Cargo.toml needs cargo:mylib").
    pub edges: Vec<String>,
    /// Its pull request, once `grove pr` opened one (the code host's JSON, as grove keeps it).
    pub pr: Option<String>,
}

/// One move of a task's work (`grove handoff`, `grove pull`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffRow {
    pub slug: String,
    /// Seconds since the epoch.
    pub at: i64,
    /// `handoff` or `pull`.
    pub way: String,
    /// host:folder it came from or went to.
    pub place: String,
    pub attempt: u32,
}

/// Where a job's merge train stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobTrain {
    /// For `merge.mode = "manual"`: a person ran `grove merge`.
    pub approved: bool,
    /// Merging stopped (`on_conflict = "abort"`): why.
    pub stopped: Option<String>,
}

/// What the merge train knows about one task beyond its state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskTrain {
    /// The commit the task's current attempt started from, when not the job's base (a redo
    /// starts on the integration head).
    pub base: Option<String>,
    /// How many times the task was redone after a conflict.
    pub redos: u32,
    /// What the next (or current) attempt is told about the conflict it redoes.
    pub redo: Option<grove_core::task::Redo>,
    /// 1 for the first task merged into the integration branch, 2 for the next...
    pub merge_seq: Option<u32>,
    /// The variant this row runs (`merge.pick` keeps one per task).
    pub variant: Option<String>,
    /// For a variant: the task's slug (its rows share it and their place in the order).
    pub variant_of: Option<String>,
    /// A person picked this variant (`grove pick`).
    pub picked: bool,
    /// 1 for the job's first attempt to end, 2 for the next... (first-passing picks by it).
    pub finished_seq: Option<u32>,
    /// When the current attempt started and ended (seconds since the epoch).
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Attempts that failed for a reason that is not the job's verdict (counted against
    /// `run.max_attempts`).
    pub failures: u32,
    /// When the task was first dispatched (seconds since the epoch); its deadline counts from
    /// here, across attempts.
    pub first_dispatched_at: Option<i64>,
    /// A task waiting to go again (after a transient failure's backoff, or parked on a usage
    /// limit) is dispatched at this time (seconds since the epoch).
    pub retry_at: Option<i64>,
    /// Times the task was parked on a usage limit (capped by `run.max_parks`).
    pub parks: u32,
    /// Seconds it was parked for, in all (capped by `run.max_parked`).
    pub parked_secs: i64,
}

/// Why a task waits to go again ([`Store::set_waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// After a transient failure.
    Retry,
    /// Parked on a usage limit for this many seconds.
    Park { secs: i64 },
}

/// What the merge train decided about one task.
#[derive(Debug, Clone, Copy)]
pub struct MergeDecision<'a> {
    pub state: MergeState,
    /// The merge commit, when merged.
    pub commit: Option<&'a str>,
    /// Conflicting paths, when set aside for a conflict.
    pub conflict: &'a [String],
    /// When set, the task becomes needs-attention with this reason.
    pub set_aside: Option<&'a str>,
    /// Output to keep as the task's log tail (a failed integration check's).
    pub output: Option<&'a str>,
}

impl MergeDecision<'_> {
    /// A decision with nothing but a merge state.
    pub fn plain(state: MergeState) -> Self {
        MergeDecision { state, commit: None, conflict: &[], set_aside: None, output: None }
    }
}

/// A task as stored.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub job: JobId,
    pub slug: String,
    pub ord: u32,
    pub level: u32,
    pub title: String,
    pub sparse: Option<Vec<String>>,
    pub files: Vec<String>,
    pub lines: u64,
    pub depends_on: Vec<String>,
    pub branch: String,
    /// The pool the job asked for (`auto` for the placement policy).
    pub pool: String,
    /// Where the current attempt was placed, and why (none before the first dispatch).
    pub placed: Option<String>,
    pub placed_why: Option<String>,
    pub state: TaskState,
    pub merge_state: MergeState,
    pub attempt: u32,
    pub turns: u32,
    pub head: Option<String>,
    pub stat: DiffStat,
    pub reason: Option<String>,
    pub log_tail: Option<String>,
    pub merge_commit: Option<String>,
    pub conflict_paths: Vec<String>,
    pub train: TaskTrain,
    pub agent: TaskAgent,
    /// Where its work went (`grove handoff`, `grove pull`), oldest first.
    pub handoffs: Vec<HandoffRow>,
}

/// What a task's agent spent and where its session stands (builtin CLI adapters).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskAgent {
    /// The sum of its turns' usage; `None`: its agent reported none.
    pub usage: Option<Usage>,
    /// The agent's session id and adapter (the next attempt resumes it).
    pub session: Option<String>,
    pub session_agent: Option<String>,
    /// What that session had spent by its last recorded turn.
    pub session_total: Usage,
    /// The question the agent ended its turn with (the task needs a person).
    pub question: Option<String>,
    /// A person's answer, for the next attempt (`grove reply`).
    pub reply: Option<String>,
    /// Why the task is not dispatched: the job is over its budget.
    pub held: Option<String>,
}

/// A notification as recorded (see [`Store::record_notification`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRow {
    pub job: JobId,
    /// The state change it reports (`failed:<task>:<attempt>`, ...).
    pub key: String,
    /// `webhook`, `ntfy` or `command`.
    pub sink: String,
    /// The event, as JSON.
    pub event: String,
    pub tries: u32,
    /// When it got through (seconds since the epoch).
    pub sent_at: Option<i64>,
    /// Why its last try failed.
    pub error: Option<String>,
}

/// One recorded agent turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRow {
    pub attempt: u32,
    pub turn: u32,
    pub report: TurnReport,
    pub at: i64,
}

impl TaskRow {
    /// Whether the task needs nothing more: merged, nothing to change, or a variant that lost
    /// to another.
    pub fn needs_nothing_more(&self) -> bool {
        (self.state == TaskState::Succeeded
            && matches!(self.merge_state, MergeState::Merged | MergeState::Empty))
            || (self.train.variant_of.is_some()
                && self.merge_state == MergeState::Discarded
                && self.reason.as_deref().is_some_and(|r| r.starts_with("lost to variant")))
    }

    /// The commit the task's branch is compared with: its redo base, else the job's base.
    pub fn base<'a>(&'a self, job: &'a JobRow) -> &'a str {
        self.train.base.as_deref().unwrap_or(&job.base)
    }
}

pub struct Store {
    conn: Mutex<Connection>,
    path: String,
}

/// One new task row; `base` is its own start (`task_base`), else the job's base.
fn insert_task(tx: &rusqlite::Transaction<'_>, t: &TaskRow, base: Option<&str>) -> rusqlite::Result<usize> {
    tx.exec_cached(
        "INSERT INTO tasks (job, slug, ord, level, title, sparse, files, lines, depends_on, branch, pool,
           state, merge_state, updated_at, variant, variant_of, task_base)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)",
        params![
            t.job.as_str(),
            t.slug,
            t.ord,
            t.level,
            t.title,
            t.sparse.as_deref().map(json),
            json(&t.files),
            t.lines as i64,
            json(&t.depends_on),
            t.branch,
            t.pool,
            t.state.as_str(),
            t.merge_state.as_str(),
            now(),
            t.train.variant,
            t.train.variant_of,
            base,
        ],
    )
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `execute` and `query_row` through the connection's statement cache: the coordinator runs
/// the same few statements for every event, and preparing one (parsing, planning) costs more
/// than running it.
trait Cached {
    fn exec_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row_cached<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row_cached<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

impl Store {
    /// Open (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let err = |source| StoreError::Sqlite { path: p.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        // Not SQLITE_DBCONFIG_ENABLE_QPSG: it spares the statements that SQLite (built with
        // STAT4) prepares again when a parameter changes, but its plans made the coordinator's
        // peak memory for a 10,000-task job 30 MiB larger (the fleet bench, part 3).
        // Every statement the store runs stays prepared (see `Cached`).
        conn.set_prepared_statement_cache_capacity(64);
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        let has_jobs: bool = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'jobs'", [], |r| r.get::<_, i64>(0))
            .map_err(err)?
            > 0;
        if has_jobs && version >= MIGRATIONS[0].0 && version < SCHEMA_VERSION {
            // Columns added, each version's in one transaction with the version it reaches.
            for (from, sql) in MIGRATIONS.iter().filter(|(v, _)| *v >= version) {
                let to = from + 1;
                conn.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {to}; COMMIT;"))
                    .map_err(err)?;
            }
        } else if has_jobs && version < SCHEMA_VERSION {
            return Err(StoreError::Corrupt {
                path: p,
                what: "schema version",
                message: format!(
                    "{version} was written by an earlier, unreleased grove ({SCHEMA_VERSION} now); move the file away"
                ),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt {
                path: p,
                what: "schema version",
                message: format!("{version} is newer than this grove understands ({SCHEMA_VERSION})"),
            });
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(err)?;
        Ok(Store { conn: Mutex::new(conn), path: p })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| StoreError::Sqlite { path: self.path.clone(), source })
    }

    fn corrupt(&self, what: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), what, message: e.to_string() }
    }

    /// Record a new job and its tasks in one transaction.
    pub fn insert_job(&self, job: &JobRow, tasks: &[TaskRow]) -> Result<(), StoreError> {
        let spec = serde_json::to_string(&job.spec).map_err(|e| self.corrupt("spec", e))?;
        self.with(|c| {
            let tx = c.transaction()?;
            tx.exec_cached(
                "INSERT INTO jobs (id, created_at, spec, source, source_dir, mirror, base, integration_branch,
                   integration_head, state, warnings, ignored_files) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
                params![
                    job.id.as_str(),
                    job.created_at,
                    spec,
                    job.source,
                    job.source_dir,
                    job.mirror,
                    job.base,
                    job.integration_branch,
                    job.integration_head,
                    job.state,
                    json(&job.warnings),
                    json(&job.ignored_files),
                ],
            )?;
            if let Some(r) = &job.repo {
                tx.exec_cached(
                    "INSERT INTO job_repos (job, grp, name, ord, level, upstream, edges, pr)
                     VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                    params![
                        job.id.as_str(),
                        r.group.as_str(),
                        r.name,
                        r.ord,
                        r.level,
                        json(&r.upstream),
                        json(&r.edges),
                        r.pr,
                    ],
                )?;
            }
            for t in tasks {
                insert_task(&tx, t, None)?;
            }
            tx.commit()
        })
    }

    /// The jobs of the cross-repository job `group`, in its order across repositories (empty:
    /// no such group).
    pub fn group(&self, group: &str) -> Result<Vec<JobRow>, StoreError> {
        self.select_jobs("WHERE r.grp = ?1 ORDER BY r.ord", &[group])
    }

    /// Record the pull request of a repository's job (`grove pr`).
    pub fn set_pr(&self, job: &JobId, pr: Option<&str>) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached("UPDATE job_repos SET pr = ?2 WHERE job = ?1", params![job.as_str(), pr])
        })?;
        Ok(())
    }

    /// A task added to a running job (`grove handoff --job`), starting from `base`; the job
    /// runs again if it had ended.
    pub fn add_task(&self, t: &TaskRow, base: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            insert_task(&tx, t, Some(base))?;
            tx.exec_cached("UPDATE jobs SET state = 'running' WHERE id = ?1", params![t.job.as_str()])?;
            tx.commit()
        })
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        self.select_jobs("ORDER BY created_at, jobs.rowid", &[])
    }

    /// The jobs in `state` (`running`, say), oldest first: an index lookup, not a scan.
    pub fn jobs_in(&self, state: &str) -> Result<Vec<JobRow>, StoreError> {
        self.select_jobs("WHERE state = ?1 ORDER BY created_at, jobs.rowid", &[state])
    }

    /// Up to `limit` jobs created after the job `after` (in the order of [`Store::jobs`]), for
    /// a listing in pages. Returns them and whether more follow.
    pub fn jobs_page(&self, after: Option<&str>, limit: usize) -> Result<(Vec<JobRow>, bool), StoreError> {
        let limit = limit.max(1);
        let take = (limit + 1).to_string();
        let mut jobs = match after {
            None => self.select_jobs("ORDER BY created_at, jobs.rowid LIMIT ?1", &[&take])?,
            Some(id) => self.select_jobs(
                "WHERE (created_at, jobs.rowid) > (SELECT created_at, rowid FROM jobs WHERE id = ?1)
                 ORDER BY created_at, jobs.rowid LIMIT ?2",
                &[id, &take],
            )?,
        };
        let more = jobs.len() > limit;
        jobs.truncate(limit);
        Ok((jobs, more))
    }

    fn select_jobs(&self, tail: &str, args: &[&str]) -> Result<Vec<JobRow>, StoreError> {
        let rows = self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT id, created_at, spec, source, source_dir, mirror, base, integration_branch, integration_head,
                   state, warnings, ignored_files, merge_approved, merge_stopped, collected_at,
                   r.grp, r.name, r.ord, r.level, r.upstream, r.edges, r.pr
                 FROM jobs LEFT JOIN job_repos r ON r.job = jobs.id {tail}"
            ))?;
            st.query_map(rusqlite::params_from_iter(args), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    [r.get::<_, String>(3)?, r.get::<_, String>(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?],
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, String>(11)?,
                    JobTrain { approved: r.get::<_, i64>(12)? != 0, stopped: r.get(13)? },
                    r.get::<_, Option<i64>>(14)?,
                    match r.get::<_, Option<String>>(15)? {
                        None => None,
                        Some(grp) => Some((
                            grp,
                            r.get::<_, String>(16)?,
                            r.get::<_, u32>(17)?,
                            r.get::<_, u32>(18)?,
                            r.get::<_, String>(19)?,
                            r.get::<_, String>(20)?,
                            r.get::<_, Option<String>>(21)?,
                        )),
                    },
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(
                |(
                    id,
                    created_at,
                    spec,
                    [source, mirror, base, ib, ih, state],
                    source_dir,
                    warnings,
                    ignored,
                    train,
                    collected_at,
                    repo,
                )| {
                    let repo = match repo {
                        None => None,
                        Some((grp, name, ord, level, upstream, edges, pr)) => Some(RepoOf {
                            group: JobId::parse(&grp).map_err(|e| self.corrupt("job group", e))?,
                            name,
                            ord,
                            level,
                            upstream: serde_json::from_str(&upstream)
                                .map_err(|e| self.corrupt("upstream repositories", e))?,
                            edges: serde_json::from_str(&edges)
                                .map_err(|e| self.corrupt("repository edges", e))?,
                            pr,
                        }),
                    };
                    Ok(JobRow {
                        id: JobId::parse(&id).map_err(|e| self.corrupt("job id", e))?,
                        created_at,
                        spec: serde_json::from_str(&spec).map_err(|e| self.corrupt("spec", e))?,
                        source,
                        source_dir,
                        mirror,
                        base,
                        integration_branch: ib,
                        integration_head: ih,
                        state,
                        warnings: serde_json::from_str(&warnings).map_err(|e| self.corrupt("warnings", e))?,
                        ignored_files: serde_json::from_str(&ignored)
                            .map_err(|e| self.corrupt("ignored files", e))?,
                        train,
                        collected_at,
                        repo,
                    })
                },
            )
            .collect()
    }

    /// One job, by its key.
    pub fn job(&self, id: &str) -> Result<JobRow, StoreError> {
        self.select_jobs("WHERE id = ?1", &[id])?.pop().ok_or_else(|| StoreError::NoJob(id.to_owned()))
    }

    /// The job `id`, or the newest job when `None`.
    pub fn job_or_latest(&self, id: Option<&str>) -> Result<JobRow, StoreError> {
        match id {
            Some(id) => self.job(id),
            None => self
                .select_jobs("ORDER BY created_at DESC, jobs.rowid DESC LIMIT 1", &[])?
                .pop()
                .ok_or_else(|| StoreError::NoJob("(none yet)".into())),
        }
    }

    /// Record who submitted a job (the name of an API token).
    pub fn set_owner(&self, job: &JobId, owner: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "INSERT INTO job_owners (job, owner) VALUES (?1, ?2)
                 ON CONFLICT(job) DO UPDATE SET owner = excluded.owner",
                params![job.as_str(), owner],
            )
        })?;
        Ok(())
    }

    /// Who submitted a job over the API with a token; `None` for the others.
    pub fn owner(&self, job: &JobId) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.row_cached("SELECT owner FROM job_owners WHERE job = ?1", params![job.as_str()], |r| r.get(0))
                .optional()
        })
    }

    /// A job's tasks, in order.
    pub fn tasks(&self, job: &JobId) -> Result<Vec<TaskRow>, StoreError> {
        let mut tasks = self.select_tasks(job, Which::All)?;
        for h in self.handoffs(job)? {
            if let Some(t) = tasks.iter_mut().find(|t| t.slug == h.slug) {
                t.handoffs.push(h);
            }
        }
        Ok(tasks)
    }

    /// One task of a job (an event's, say), without reading the others.
    pub fn task(&self, job: &JobId, slug: &str) -> Result<Option<TaskRow>, StoreError> {
        Ok(self.select_tasks(job, Which::One(slug))?.pop())
    }

    /// Up to `limit` of the job's tasks the merge train has not settled (merge state
    /// `pending`), in order, from after the task `after` (its place and slug). Without their
    /// hand-offs. The train reads these a few at a time: it stops at the first one still
    /// running, and a job's whole list read at every finished attempt would cost its size
    /// squared.
    pub fn pending_merges(
        &self,
        job: &JobId,
        after: Option<(u32, &str)>,
        limit: u32,
    ) -> Result<Vec<TaskRow>, StoreError> {
        self.select_tasks(job, Which::Pending { after, limit })
    }

    /// Whether every task of the job is in a terminal state (an index lookup, not a scan).
    pub fn all_terminal(&self, job: &JobId) -> Result<bool, StoreError> {
        let going: Vec<&str> =
            TaskState::ALL.iter().filter(|s| !s.is_terminal()).map(|s| s.as_str()).collect();
        let marks = vec!["?"; going.len()].join(", ");
        let sql = format!("SELECT EXISTS (SELECT 1 FROM tasks WHERE job = ? AND state IN ({marks}))");
        let id = job.as_str();
        let any: i64 = self.with(|c| {
            let params = std::iter::once(&id).chain(&going);
            c.row_cached(&sql, rusqlite::params_from_iter(params), |r| r.get(0))
        })?;
        Ok(any == 0)
    }

    /// Whether nothing of the job is in flight: every task ended, or is held back by the job's
    /// budget.
    pub fn nothing_in_flight(&self, job: &JobId) -> Result<bool, StoreError> {
        Ok(self.in_flight(job)?.is_empty())
    }

    /// The slugs of the job's tasks that have not ended and are not held back by its budget:
    /// what a driver still waits for. One indexed read of two columns, asked after every
    /// finished attempt (the whole rows would make a job's events cost its size squared).
    pub fn in_flight(&self, job: &JobId) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let going: Vec<&str> =
            TaskState::ALL.iter().filter(|s| !s.is_terminal()).map(|s| s.as_str()).collect();
        let marks = vec!["?"; going.len()].join(", ");
        let sql = format!("SELECT slug FROM tasks WHERE job = ? AND state IN ({marks}) AND held IS NULL");
        let id = job.as_str();
        self.with(|c| {
            let params = std::iter::once(&id).chain(&going);
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(0))?;
            rows.collect()
        })
    }

    fn select_tasks(&self, job: &JobId, which: Which<'_>) -> Result<Vec<TaskRow>, StoreError> {
        let raw = self.with(|c| {
            const COLUMNS: &str =
                "SELECT slug, ord, level, title, sparse, files, lines, depends_on, branch, pool, state, merge_state,
                   attempt, turns, head, files_changed, insertions, deletions, reason, log_tail, merge_commit,
                   conflict_paths, task_base, redos, redo, merge_seq, variant, variant_of, picked, finished_seq,
                   started_at, finished_at, placed, placed_why, failures, first_dispatched_at, retry_at,
                   parks, parked_secs,
                   session, session_agent, question, reply, held,
                   u.n, u.i, u.o, u.cr, u.cw, u.cost, u.priced, u.known,
                   s.n, s.i, s.o, s.cr, s.cw, s.cost, s.priced, s.known
                 FROM tasks";
            const SUMS: &str = "COUNT(*) AS n, SUM(input_tokens) AS i, SUM(output_tokens) AS o,
                   SUM(cache_read_tokens) AS cr, SUM(cache_write_tokens) AS cw, SUM(cost_usd) AS cost,
                   COUNT(cost_usd) AS priced, SUM(known_cost_usd) AS known";
            // The turns' sums per task (all of a job's, grouped), or one task's (no grouping, nor
            // the temporary tables grouping makes: a primary-key range).
            let all_sums = format!(
                "LEFT JOIN (SELECT slug AS us, {SUMS} FROM turns WHERE job = ?1 AND ?2 IS NULL GROUP BY slug) u
                   ON u.us = tasks.slug
                 LEFT JOIN (SELECT slug AS ss, session AS sid, {SUMS} FROM turns
                   WHERE job = ?1 AND ?2 IS NULL AND session IS NOT NULL GROUP BY slug, session) s
                   ON s.ss = tasks.slug AND s.sid = tasks.session
                 WHERE job = ?1"
            );
            let one_sums = format!(
                "LEFT JOIN (SELECT {SUMS} FROM turns WHERE job = ?1 AND slug = ?2) u ON 1
                 LEFT JOIN (SELECT session AS sid, {SUMS} FROM turns
                   WHERE job = ?1 AND slug = ?2 AND session IS NOT NULL GROUP BY session) s
                   ON s.sid = tasks.session
                 WHERE job = ?1 AND tasks.slug = ?2"
            );
            let (slug, after_ord, after_slug, limit) = match which {
                Which::All => (None, None, None, None),
                Which::One(slug) => (Some(slug), None, None, None),
                Which::Pending { after, limit } => {
                    (None, after.map(|a| a.0), after.map(|a| a.1), Some(limit))
                }
            };
            let mut st = match which {
                Which::One(_) => c.prepare_cached(&format!(
                    "{COLUMNS} {one_sums} AND ?3 IS NULL AND ?4 IS NULL AND ?5 IS NULL"
                ))?,
                Which::All => c.prepare_cached(&format!(
                    "{COLUMNS} {all_sums} AND ?3 IS NULL AND ?4 IS NULL AND ?5 IS NULL ORDER BY ord, tasks.slug"
                ))?,
                Which::Pending { .. } => c.prepare_cached(&format!(
                    "{COLUMNS} {all_sums} AND merge_state = '{}'
                       AND (?3 IS NULL OR (ord, tasks.slug) > (?3, ?4))
                     ORDER BY ord, tasks.slug LIMIT ?5",
                    MergeState::Pending.as_str()
                ))?,
            };
            st.query_map(params![job.as_str(), slug, after_ord, after_slug, limit], |r| {
                Ok(RawTask {
                    slug: r.get(0)?,
                    ord: r.get(1)?,
                    level: r.get(2)?,
                    title: r.get(3)?,
                    sparse: r.get(4)?,
                    files: r.get(5)?,
                    lines: r.get(6)?,
                    depends_on: r.get(7)?,
                    branch: r.get(8)?,
                    pool: r.get(9)?,
                    state: r.get(10)?,
                    merge_state: r.get(11)?,
                    attempt: r.get(12)?,
                    turns: r.get(13)?,
                    head: r.get(14)?,
                    stat: [r.get(15)?, r.get(16)?, r.get(17)?],
                    reason: r.get(18)?,
                    log_tail: r.get(19)?,
                    merge_commit: r.get(20)?,
                    conflict_paths: r.get(21)?,
                    task_base: r.get(22)?,
                    redos: r.get(23)?,
                    redo: r.get(24)?,
                    merge_seq: r.get(25)?,
                    variant: r.get(26)?,
                    variant_of: r.get(27)?,
                    picked: r.get::<_, i64>(28)? != 0,
                    finished_seq: r.get(29)?,
                    started_at: r.get(30)?,
                    finished_at: r.get(31)?,
                    placed: r.get(32)?,
                    placed_why: r.get(33)?,
                    failures: r.get(34)?,
                    first_dispatched_at: r.get(35)?,
                    retry_at: r.get(36)?,
                    parks: r.get(37)?,
                    parked_secs: r.get(38)?,
                    session: r.get(39)?,
                    session_agent: r.get(40)?,
                    question: r.get(41)?,
                    reply: r.get(42)?,
                    held: r.get(43)?,
                    usage: usage_at(r, 44)?,
                    session_total: usage_at(r, 52)?.map(|u| u.1),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raw.into_iter().map(|t| t.into_row(job, self)).collect()
    }

    /// Find a task by `JOB/TASK` or by its slug alone (in the newest job that has it... unless
    /// several jobs have it, which is ambiguous).
    pub fn find_task(&self, name: &str) -> Result<TaskRow, StoreError> {
        if let Some((job, slug)) = name.split_once('/') {
            let job = self.job(job)?;
            return self.task(&job.id, slug)?.ok_or_else(|| StoreError::NoTask(name.into()));
        }
        let jobs: Vec<String> = self.with(|c| {
            let mut st = c.prepare("SELECT DISTINCT job FROM tasks WHERE slug = ?1")?;
            st.query_map([name], |r| r.get(0))?.collect()
        })?;
        match jobs.as_slice() {
            [] => Err(StoreError::NoTask(name.into())),
            [job] => self.find_task(&format!("{job}/{name}")),
            many => Err(StoreError::Ambiguous { name: name.into(), jobs: many.join(", ") }),
        }
    }

    /// A task moved to a new state (running, checking...) in attempt `attempt`.
    pub fn set_state(
        &self,
        job: &JobId,
        slug: &str,
        attempt: u32,
        state: TaskState,
        turns: Option<u32>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET state = ?3, turns = COALESCE(?4, turns), updated_at = ?5,
                   started_at = COALESCE(started_at, ?5)
                 WHERE job = ?1 AND slug = ?2 AND attempt = ?6",
                params![job.as_str(), slug, state.as_str(), turns, now(), attempt],
            )
        })?;
        Ok(())
    }

    /// Make a task new again for a re-run (its attempt count goes on).
    pub fn reset_task(&self, job: &JobId, slug: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET state = 'queued', merge_state = 'pending', head = NULL, files_changed = 0,
                   insertions = 0, deletions = 0, reason = NULL, log_tail = NULL, merge_commit = NULL,
                   conflict_paths = NULL, turns = 0, task_base = NULL, redos = 0, redo = NULL, merge_seq = NULL,
                   failures = 0, first_dispatched_at = NULL, retry_at = NULL, parks = 0, parked_secs = 0,
                   session = NULL, session_agent = NULL, question = NULL, reply = NULL, held = NULL,
                   updated_at = ?3 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, now()],
            )
        })?;
        Ok(())
    }

    /// A task was dispatched as attempt `attempt` to `pool`, for the reason `why`.
    pub fn set_dispatched(
        &self,
        job: &JobId,
        slug: &str,
        attempt: u32,
        pool: &str,
        why: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET state = 'queued', attempt = ?3, reason = NULL, updated_at = ?4, started_at = NULL,
                   finished_at = NULL, finished_seq = NULL, placed = ?5, placed_why = ?6, on_bus = 0,
                   retry_at = NULL, first_dispatched_at = COALESCE(first_dispatched_at, ?4), held = NULL
                 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, attempt, now(), pool, why],
            )
        })?;
        Ok(())
    }

    /// Record where a task's branch stands after a turn.
    pub fn set_progress(
        &self,
        job: &JobId,
        slug: &str,
        head: Option<&str>,
        stat: DiffStat,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET head = COALESCE(?3, head), files_changed = ?4, insertions = ?5, deletions = ?6,
                   updated_at = ?7 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, head, stat.files as i64, stat.insertions as i64, stat.deletions as i64, now()],
            )
        })?;
        Ok(())
    }

    /// Record the end of an attempt.
    pub fn set_finished(&self, job: &JobId, slug: &str, o: &TaskOutcome) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET state = ?3, head = COALESCE(?4, head), files_changed = ?5, insertions = ?6,
                   deletions = ?7, turns = ?8, reason = ?9, log_tail = ?10, updated_at = ?11, finished_at = ?11,
                   finished_seq = (SELECT COALESCE(MAX(finished_seq), 0) + 1 FROM tasks WHERE job = ?1)
                 WHERE job = ?1 AND slug = ?2",
                params![
                    job.as_str(),
                    slug,
                    o.state.as_str(),
                    o.head,
                    o.stat.files as i64,
                    o.stat.insertions as i64,
                    o.stat.deletions as i64,
                    o.turns,
                    o.reason,
                    o.log_tail,
                    now()
                ],
            )
        })?;
        Ok(())
    }

    /// An attempt ended without settling the task: it waits until `retry_at`, then goes
    /// again: queued after a transient failure (counted against `run.max_attempts`), or parked
    /// on a usage limit (counted against `run.max_parks` and `run.max_parked`).
    pub fn set_waiting(
        &self,
        job: &JobId,
        slug: &str,
        o: &TaskOutcome,
        wait: Wait,
        retry_at: i64,
    ) -> Result<(), StoreError> {
        let (state, failed, parked) = match wait {
            Wait::Retry => (TaskState::Queued, 1, None),
            Wait::Park { secs } => (TaskState::Parked, 0, Some(secs)),
        };
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET state = ?3, head = COALESCE(?4, head), files_changed = ?5, insertions = ?6,
                   deletions = ?7, turns = ?8, reason = ?9, log_tail = ?10, updated_at = ?11, finished_at = ?11,
                   retry_at = ?12, failures = failures + ?13, parks = parks + (?14 IS NOT NULL),
                   parked_secs = parked_secs + COALESCE(?14, 0)
                 WHERE job = ?1 AND slug = ?2",
                params![
                    job.as_str(),
                    slug,
                    state.as_str(),
                    o.head,
                    o.stat.files as i64,
                    o.stat.insertions as i64,
                    o.stat.deletions as i64,
                    o.turns,
                    o.reason,
                    o.log_tail,
                    now(),
                    retry_at,
                    failed,
                    parked,
                ],
            )
        })?;
        Ok(())
    }

    /// Record a merge-train decision about a task, and the integration head after it, at once.
    pub fn set_merge(
        &self,
        job: &JobId,
        slug: &str,
        d: &MergeDecision<'_>,
        integration_head: &str,
    ) -> Result<(), StoreError> {
        let MergeDecision { state: merge, commit: merge_commit, conflict, set_aside, output } = *d;
        let conflict = if conflict.is_empty() { None } else { Some(json(conflict)) };
        self.with(|c| {
            let tx = c.transaction()?;
            let seq: Option<i64> = if merge == MergeState::Merged {
                Some(tx.row_cached(
                    "SELECT COALESCE(MAX(merge_seq), 0) + 1 FROM tasks WHERE job = ?1",
                    [job.as_str()],
                    |r| r.get(0),
                )?)
            } else {
                None
            };
            tx.exec_cached(
                "UPDATE tasks SET merge_state = ?3, merge_commit = ?4, conflict_paths = ?5, updated_at = ?6,
                   state = CASE WHEN ?7 IS NULL THEN state ELSE 'needs-attention' END,
                   reason = COALESCE(?7, reason), log_tail = COALESCE(?8, log_tail), merge_seq = ?9
                 WHERE job = ?1 AND slug = ?2",
                params![
                    job.as_str(),
                    slug,
                    merge.as_str(),
                    merge_commit,
                    conflict,
                    now(),
                    set_aside,
                    output,
                    seq
                ],
            )?;
            tx.exec_cached(
                "UPDATE jobs SET integration_head = ?2 WHERE id = ?1",
                params![job.as_str(), integration_head],
            )?;
            tx.commit()
        })
    }

    /// A conflicting task goes again as a redo on top of `base` (the integration head): queued
    /// as its next attempt (not yet on the bus: a coordinator that dies before sending it
    /// sends it when it starts again), its branch's record cleared, with what its agent is told.
    pub fn set_redo(
        &self,
        job: &JobId,
        slug: &str,
        base: &str,
        redo: &grove_core::task::Redo,
        why: &str,
    ) -> Result<(), StoreError> {
        let text = redo_to_json(redo);
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET state = 'queued', merge_state = 'pending', head = NULL, files_changed = 0,
                   insertions = 0, deletions = 0, reason = ?5, log_tail = NULL, merge_commit = NULL,
                   conflict_paths = ?6, turns = 0, task_base = ?3, redos = redos + 1, redo = ?4,
                   attempt = attempt + 1, on_bus = 0, question = NULL, updated_at = ?7 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, base, text, why, json(&redo.paths), now()],
            )
        })?;
        Ok(())
    }

    /// Record what one agent turn produced (the turn's checkpoint carried it): its usage, and
    /// the task's session and question. A person's answer is used once a turn took it.
    pub fn record_turn(
        &self,
        job: &JobId,
        slug: &str,
        attempt: u32,
        turn: u32,
        r: &TurnReport,
    ) -> Result<(), StoreError> {
        let u = &r.usage;
        let message = r.outcome.message().map(str::to_owned);
        self.with(|c| {
            let tx = c.transaction()?;
            tx.exec_cached(
                "INSERT OR REPLACE INTO turns (job, slug, attempt, turn, agent, model, outcome, message,
                   input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, known_cost_usd,
                   session, summary, question, at)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)",
                params![
                    job.as_str(),
                    slug,
                    attempt,
                    turn,
                    r.agent,
                    r.model,
                    r.outcome.as_str(),
                    message,
                    u.input_tokens as i64,
                    u.output_tokens as i64,
                    u.cache_read_tokens as i64,
                    u.cache_write_tokens as i64,
                    u.cost_usd,
                    u.known_cost(),
                    r.session,
                    r.summary,
                    r.question,
                    now(),
                ],
            )?;
            tx.exec_cached(
                "UPDATE tasks SET session = COALESCE(?3, session), session_agent = CASE WHEN ?3 IS NULL
                   THEN session_agent ELSE ?4 END, question = ?5, reply = NULL, updated_at = ?6
                 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, r.session, r.agent, r.question, now()],
            )?;
            tx.commit()
        })
    }

    /// A task's recorded turns, oldest first.
    pub fn turns(&self, job: &JobId, slug: &str) -> Result<Vec<TurnRow>, StoreError> {
        let rows = self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT attempt, turn, agent, model, outcome, message, input_tokens, output_tokens, cache_read_tokens,
                   cache_write_tokens, cost_usd, known_cost_usd, session, summary, question, at
                 FROM turns WHERE job = ?1 AND slug = ?2 ORDER BY attempt, turn",
            )?;
            st.query_map(params![job.as_str(), slug], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    [r.get::<_, i64>(6)?, r.get(7)?, r.get(8)?, r.get(9)?],
                    (r.get::<_, Option<f64>>(10)?, r.get::<_, f64>(11)?),
                    [r.get::<_, Option<String>>(12)?, r.get(13)?, r.get(14)?],
                    r.get::<_, i64>(15)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(
                |(
                    attempt,
                    turn,
                    agent,
                    model,
                    outcome,
                    message,
                    t,
                    (cost, known),
                    [session, summary, question],
                    at,
                )| {
                    let outcome = TurnOutcome::from_parts(&outcome, message, None)
                        .map_err(|e| self.corrupt("turn outcome", e))?;
                    let usage = Usage {
                        input_tokens: t[0] as u64,
                        output_tokens: t[1] as u64,
                        cache_read_tokens: t[2] as u64,
                        cache_write_tokens: t[3] as u64,
                        cost_usd: cost,
                        known_cost_usd: known,
                    };
                    let report = TurnReport { agent, model, outcome, summary, usage, session, question };
                    Ok(TurnRow { attempt, turn, report, at })
                },
            )
            .collect()
    }

    /// What a job's agents spent: the sum of its tasks' turns; `None` when no agent reported.
    pub fn job_usage(&self, job: &JobId) -> Result<Option<Usage>, StoreError> {
        let usage = self.with(|c| {
            c.row_cached(
                "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),
                   SUM(cache_write_tokens), SUM(cost_usd), COUNT(cost_usd), SUM(known_cost_usd)
                 FROM turns WHERE job = ?1",
                [job.as_str()],
                |r| usage_at(r, 0),
            )
        })?;
        Ok(usage.map(|(_, u)| u))
    }

    /// A person answered the question of a task that needs attention: it goes again as a new
    /// attempt that resumes its agent's session with `answer`; its branch is kept.
    pub fn set_reply(&self, job: &JobId, slug: &str, answer: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET state = 'queued', merge_state = 'pending', reason = NULL, merge_commit = NULL,
                   merge_seq = NULL, question = NULL, reply = ?3, retry_at = NULL, held = NULL, on_bus = 0,
                   updated_at = ?4 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, answer, now()],
            )
        })?;
        Ok(())
    }

    /// A hand-off names the task's session (adapter, id) and the first prompt of the attempt
    /// that resumes it.
    pub fn set_handoff(
        &self,
        job: &JobId,
        slug: &str,
        session: Option<(&str, &str)>,
        prompt: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET session = COALESCE(?3, session), session_agent = COALESCE(?4, session_agent),
                   reply = CASE WHEN ?3 IS NULL THEN reply ELSE ?5 END, updated_at = ?6
                   WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, session.map(|s| s.1), session.map(|s| s.0), prompt, now()],
            )
        })?;
        Ok(())
    }

    /// A task handed back: queued again as its next attempt, its branch kept (and its job
    /// running again).
    pub fn requeue(&self, job: &JobId, slug: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.exec_cached(
                "UPDATE tasks SET state = 'queued', merge_state = 'pending', reason = NULL, merge_commit = NULL,
                   merge_seq = NULL, question = NULL, retry_at = NULL, held = NULL, on_bus = 0,
                   updated_at = ?3 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, now()],
            )?;
            tx.exec_cached("UPDATE jobs SET state = 'running' WHERE id = ?1", params![job.as_str()])?;
            tx.commit()
        })?;
        Ok(())
    }

    /// One move of a task's work: `way` is `handoff` (from `place`) or `pull` (into `place`).
    pub fn add_handoff(
        &self,
        job: &JobId,
        slug: &str,
        way: &str,
        place: &str,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "INSERT INTO handoffs (job, slug, at, way, place, attempt) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![job.as_str(), slug, now(), way, place, attempt],
            )
        })?;
        Ok(())
    }

    /// The moves of the job's tasks' work, oldest first: (slug, at, way, place, attempt).
    pub fn handoffs(&self, job: &JobId) -> Result<Vec<HandoffRow>, StoreError> {
        self.with(|c| {
            let mut q = c.prepare(
                "SELECT slug, at, way, place, attempt FROM handoffs WHERE job = ?1 ORDER BY rowid",
            )?;
            let rows = q.query_map(params![job.as_str()], |r| {
                Ok(HandoffRow {
                    slug: r.get(0)?,
                    at: r.get(1)?,
                    way: r.get(2)?,
                    place: r.get(3)?,
                    attempt: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// A task is not dispatched because the job is over its budget (`None`: it may go again).
    pub fn set_held(&self, job: &JobId, slug: &str, why: Option<&str>) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET held = ?3, updated_at = ?4 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, why, now()],
            )
        })?;
        Ok(())
    }

    /// The job's spec changed (its budget was raised by `grove run --job JOB --max-job-cost`).
    pub fn set_spec(&self, job: &JobId, spec: &JobSpec) -> Result<(), StoreError> {
        let text = serde_json::to_string(spec).map_err(|e| self.corrupt("spec", e))?;
        self.with(|c| c.exec_cached("UPDATE jobs SET spec = ?2 WHERE id = ?1", params![job.as_str(), text]))?;
        Ok(())
    }

    /// A person picked this variant of its task (`grove pick`).
    pub fn set_picked(&self, job: &JobId, slug: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET picked = 1 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug],
            )
        })?;
        Ok(())
    }

    /// A person discarded a task's branch.
    pub fn set_discarded(&self, job: &JobId, slug: &str, why: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET merge_state = 'discarded', reason = ?3, updated_at = ?4 WHERE job = ?1 AND slug = ?2",
                params![job.as_str(), slug, why, now()],
            )
        })?;
        Ok(())
    }

    /// `grove merge`: a manual job may merge now.
    pub fn set_merge_approved(&self, job: &JobId) -> Result<(), StoreError> {
        self.with(|c| c.exec_cached("UPDATE jobs SET merge_approved = 1 WHERE id = ?1", [job.as_str()]))?;
        Ok(())
    }

    /// The job's merging stopped (`on_conflict = "abort"`), or goes on again (`None`).
    pub fn set_merge_stopped(&self, job: &JobId, why: Option<&str>) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached("UPDATE jobs SET merge_stopped = ?2 WHERE id = ?1", params![job.as_str(), why])
        })?;
        Ok(())
    }

    /// Attempt `attempt` of a task is on the bus (the bus confirmed the dispatch).
    pub fn set_on_bus(&self, job: &JobId, slug: &str, attempt: u32) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE tasks SET on_bus = 1 WHERE job = ?1 AND slug = ?2 AND attempt = ?3",
                params![job.as_str(), slug, attempt],
            )
        })?;
        Ok(())
    }

    /// Tasks recorded as dispatched whose dispatch the bus never confirmed (the coordinator
    /// died in between): their attempt must be sent again, under the same message id.
    pub fn unconfirmed_dispatches(&self, job: &JobId) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT slug FROM tasks WHERE job = ?1 AND state = 'queued' AND attempt > 0 AND on_bus = 0 ORDER BY ord",
            )?;
            st.query_map([job.as_str()], |r| r.get(0))?.collect()
        })
    }

    /// What the tasks placed on `pool` ask of it now (`now`: unix seconds), for a pod
    /// launcher: tasks on the bus waiting for a worker, tasks a worker is on, and the longest
    /// time one of them may still run (`run.deadline` counted from its first dispatch).
    /// Tasks waiting out a backoff or parked are not on the bus and ask for nothing.
    pub fn pool_load(&self, pool: &str, now: i64) -> Result<PoolLoad, StoreError> {
        let rows: Vec<(String, String, Option<i64>)> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT t.job, t.state, t.first_dispatched_at FROM tasks t JOIN jobs j ON j.id = t.job
                 WHERE j.state = 'running' AND t.placed = ?1 AND t.on_bus = 1
                   AND t.state IN ('queued', 'preparing', 'running', 'checking')
                   AND (t.state != 'queued' OR t.retry_at IS NULL)",
            )?;
            st.query_map([pool], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
        })?;
        let mut load = PoolLoad::default();
        let mut deadlines: std::collections::HashMap<String, Option<std::time::Duration>> =
            Default::default();
        for (job, state, first) in rows {
            if state == "queued" {
                load.queued += 1;
            } else {
                load.running += 1;
            }
            let deadline = match deadlines.get(&job) {
                Some(d) => *d,
                None => {
                    let d = self.job(&job)?.spec.run.deadline;
                    deadlines.insert(job.clone(), d);
                    d
                }
            };
            if let Some(d) = deadline {
                let spent = first.map_or(0, |f| (now - f).max(0)) as u64;
                let left = d.saturating_sub(std::time::Duration::from_secs(spent));
                load.deadline = Some(load.deadline.map_or(left, |l: std::time::Duration| l.max(left)));
            }
        }
        Ok(load)
    }

    /// The integration branch is at `head` (found in the mirror after a restart).
    pub fn set_integration_head(&self, job: &JobId, head: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached("UPDATE jobs SET integration_head = ?2 WHERE id = ?1", params![job.as_str(), head])
        })?;
        Ok(())
    }

    pub fn set_job_state(&self, job: &JobId, state: &str) -> Result<(), StoreError> {
        // A job that runs again (a retry) makes new files: it is no longer collected.
        self.with(|c| {
            c.exec_cached(
                "UPDATE jobs SET state = ?2, collected_at = CASE WHEN ?2 = 'running' THEN NULL ELSE collected_at END
                 WHERE id = ?1",
                params![job.as_str(), state],
            )
        })?;
        Ok(())
    }

    /// `grove gc` removed the job's worktrees and run dirs (the first time it did).
    pub fn set_collected(&self, job: &JobId, at: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE jobs SET collected_at = COALESCE(collected_at, ?2) WHERE id = ?1",
                params![job.as_str(), at],
            )
        })?;
        Ok(())
    }

    /// When anything about the job last changed (seconds since the epoch): its newest task
    /// update, or its creation.
    pub fn last_activity(&self, job: &JobId) -> Result<i64, StoreError> {
        self.with(|c| {
            c.row_cached(
                "SELECT MAX(j.created_at, COALESCE(MAX(t.updated_at), 0), COALESCE(MAX(t.finished_at), 0))
                 FROM jobs j LEFT JOIN tasks t ON t.job = j.id WHERE j.id = ?1 GROUP BY j.id",
                [job.as_str()],
                |r| r.get(0),
            )
            .optional()
        })?
        .ok_or_else(|| StoreError::NoJob(job.to_string()))
    }

    /// Journal a note of `job` (its JSON, see [`crate::journal`]); returns its sequence number
    /// in the job's journal (1, 2, ...).
    pub fn append_note(&self, job: &JobId, note: &str) -> Result<u64, StoreError> {
        self.with(|c| {
            c.row_cached(
                "INSERT INTO notes (job, seq, note, at)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM notes WHERE job = ?1), ?2, ?3)
                 RETURNING seq",
                params![job.as_str(), note, now()],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|s| s as u64)
    }

    /// Up to `limit` journaled notes of `job` after sequence number `after`, in order.
    pub fn notes_after(
        &self,
        job: &JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, note FROM notes WHERE job = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            st.query_map(params![job.as_str(), after as i64, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })?
            .collect()
        })
    }

    /// The sequence number of `job`'s newest journaled note (0: none yet).
    pub fn last_note(&self, job: &JobId) -> Result<u64, StoreError> {
        self.with(|c| {
            c.row_cached("SELECT COALESCE(MAX(seq), 0) FROM notes WHERE job = ?1", [job.as_str()], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|s| s as u64)
    }

    /// Record that `event` (its JSON) is to go to `sink` under `key`, the state change it
    /// reports (see [`crate::notify`]). Returns `false` when that key was recorded for that
    /// sink before: it is sent, or being sent, already.
    pub fn record_notification(
        &self,
        job: &JobId,
        key: &str,
        sink: &str,
        event: &str,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            c.exec_cached(
                "INSERT OR IGNORE INTO notifications (job, key, sink, event, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![job.as_str(), key, sink, event, now()],
            )
        })
        .map(|n| n == 1)
    }

    /// A try of a notification ended: sent (`error` is `None`), or not, after `tries` in all.
    pub fn notification_tried(
        &self,
        job: &JobId,
        key: &str,
        sink: &str,
        tries: u32,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE notifications SET tries = ?4, error = ?5,
                   sent_at = CASE WHEN ?5 IS NULL THEN ?6 ELSE NULL END
                 WHERE job = ?1 AND key = ?2 AND sink = ?3",
                params![job.as_str(), key, sink, tries, error, now()],
            )
        })?;
        Ok(())
    }

    /// Notifications recorded since `since` (seconds since the epoch) and not sent, with
    /// fewer than `max_tries` tries, oldest first.
    pub fn unsent_notifications(
        &self,
        since: i64,
        max_tries: u32,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        self.notification_rows(
            "WHERE sent_at IS NULL AND at >= ?1 AND tries < ?2 ORDER BY at, rowid",
            params![since, max_tries],
        )
    }

    /// Every notification recorded for `job`, in the order they were recorded.
    pub fn notifications(&self, job: &JobId) -> Result<Vec<NotificationRow>, StoreError> {
        self.notification_rows("WHERE job = ?1 ORDER BY rowid", params![job.as_str()])
    }

    fn notification_rows(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let rows = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT job, key, sink, event, tries, sent_at, error FROM notifications {filter}"
            ))?;
            st.query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(job, key, sink, event, tries, sent_at, error)| {
                Ok(NotificationRow {
                    job: JobId::parse(&job).map_err(|e| self.corrupt("notification job", e))?,
                    key,
                    sink,
                    event,
                    tries,
                    sent_at,
                    error,
                })
            })
            .collect()
    }

    /// The job id `id` is free.
    pub fn job_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|c| c.row_cached("SELECT 1 FROM jobs WHERE id = ?1", [id], |_| Ok(())).optional())
            .map(|r| r.is_some())
    }
}

struct RawTask {
    slug: String,
    ord: u32,
    level: u32,
    title: String,
    sparse: Option<String>,
    files: String,
    lines: i64,
    depends_on: String,
    branch: String,
    pool: String,
    state: String,
    merge_state: String,
    attempt: u32,
    turns: u32,
    head: Option<String>,
    stat: [i64; 3],
    reason: Option<String>,
    log_tail: Option<String>,
    merge_commit: Option<String>,
    conflict_paths: Option<String>,
    placed: Option<String>,
    placed_why: Option<String>,
    task_base: Option<String>,
    redos: u32,
    redo: Option<String>,
    merge_seq: Option<u32>,
    variant: Option<String>,
    variant_of: Option<String>,
    picked: bool,
    finished_seq: Option<u32>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    failures: u32,
    first_dispatched_at: Option<i64>,
    retry_at: Option<i64>,
    session: Option<String>,
    session_agent: Option<String>,
    question: Option<String>,
    reply: Option<String>,
    held: Option<String>,
    usage: Option<(i64, Usage)>,
    session_total: Option<Usage>,
    parks: u32,
    parked_secs: i64,
}

/// A sum of turns read from column `at` on: their count, tokens, cost (unknown unless every
/// turn was priced), count of priced turns and known cost. `None` when no turn was recorded.
fn usage_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<(i64, Usage)>> {
    let Some(n) = r.get::<_, Option<i64>>(at)?.filter(|n| *n > 0) else { return Ok(None) };
    let int = |i: usize| -> rusqlite::Result<u64> {
        Ok(r.get::<_, Option<i64>>(at + i)?.unwrap_or(0).max(0) as u64)
    };
    let cost: Option<f64> = r.get(at + 5)?;
    let priced: i64 = r.get::<_, Option<i64>>(at + 6)?.unwrap_or(0);
    let known: f64 = r.get::<_, Option<f64>>(at + 7)?.unwrap_or(0.0);
    let u = Usage {
        input_tokens: int(1)?,
        output_tokens: int(2)?,
        cache_read_tokens: int(3)?,
        cache_write_tokens: int(4)?,
        cost_usd: if priced == n { Some(cost.unwrap_or(0.0)) } else { None },
        known_cost_usd: known,
    };
    Ok(Some((n, u)))
}

impl RawTask {
    fn into_row(self, job: &JobId, s: &Store) -> Result<TaskRow, StoreError> {
        let list = |what, v: &str| serde_json::from_str::<Vec<String>>(v).map_err(|e| s.corrupt(what, e));
        Ok(TaskRow {
            handoffs: Vec::new(),
            job: job.clone(),
            sparse: self.sparse.as_deref().map(|v| list("sparse", v)).transpose()?,
            files: list("files", &self.files)?,
            depends_on: list("depends_on", &self.depends_on)?,
            conflict_paths: self
                .conflict_paths
                .as_deref()
                .map(|v| list("conflict paths", v))
                .transpose()?
                .unwrap_or_default(),
            state: self.state.parse().map_err(|e| s.corrupt("task state", e))?,
            merge_state: self.merge_state.parse().map_err(|e| s.corrupt("merge state", e))?,
            slug: self.slug,
            ord: self.ord,
            level: self.level,
            title: self.title,
            lines: self.lines as u64,
            branch: self.branch,
            pool: self.pool,
            placed: self.placed,
            placed_why: self.placed_why,
            attempt: self.attempt,
            turns: self.turns,
            head: self.head,
            stat: DiffStat {
                files: self.stat[0] as u64,
                insertions: self.stat[1] as u64,
                deletions: self.stat[2] as u64,
            },
            reason: self.reason,
            log_tail: self.log_tail,
            merge_commit: self.merge_commit,
            train: TaskTrain {
                base: self.task_base,
                redos: self.redos,
                redo: self
                    .redo
                    .as_deref()
                    .map(|r| redo_from_json(r).map_err(|e| s.corrupt("redo", e)))
                    .transpose()?,
                merge_seq: self.merge_seq,
                variant: self.variant,
                variant_of: self.variant_of,
                picked: self.picked,
                finished_seq: self.finished_seq,
                started_at: self.started_at,
                finished_at: self.finished_at,
                failures: self.failures,
                first_dispatched_at: self.first_dispatched_at,
                retry_at: self.retry_at,
                parks: self.parks,
                parked_secs: self.parked_secs,
            },
            agent: TaskAgent {
                usage: self.usage.map(|(_, u)| u),
                session: self.session,
                session_agent: self.session_agent,
                session_total: self.session_total.unwrap_or_else(Usage::zero),
                question: self.question,
                reply: self.reply,
                held: self.held,
            },
        })
    }
}

fn redo_to_json(r: &grove_core::task::Redo) -> String {
    serde_json::json!({"paths": r.paths, "hunks": r.hunks, "previous_diff": r.previous_diff}).to_string()
}

fn redo_from_json(text: &str) -> Result<grove_core::task::Redo, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let paths = v["paths"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Ok(grove_core::task::Redo { paths, hunks: s("hunks"), previous_diff: s("previous_diff") })
}

/// A list column as JSON.
fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 3 file (before `collected_at`) opens, migrated, with its jobs.
    #[test]
    fn a_version_3_file_is_migrated_in_place_to_the_current_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grove.db");
        {
            let conn = Connection::open(&path).expect("open");
            let old = version_4_schema()
                .replace("    merge_stopped TEXT,\n    collected_at INTEGER\n", "    merge_stopped TEXT\n");
            assert_ne!(old, version_4_schema());
            conn.execute_batch(&old).expect("old schema");
            conn.execute(
                "INSERT INTO jobs (id, created_at, spec, source, mirror, base, integration_branch, integration_head,
                   state, warnings, ignored_files) VALUES ('j-0001', 1, '{}', 's', 'm', 'b', 'i', 'b', 'done', '[]', '[]')",
                [],
            )
            .expect("a job");
            conn.execute(
                "INSERT INTO tasks (job, slug, ord, level, title, files, lines, depends_on, branch, pool, state,
                   merge_state, updated_at) VALUES ('j-0001', 't', 0, 0, 't', '[]', 0, '[]', 'b', 'local', 'parked',
                   'pending', 1)",
                [],
            )
            .expect("a task");
            conn.pragma_update(None, "user_version", 3).expect("version");
        }
        let store = Store::open(&path).expect("migrated");
        let id = JobId::parse("j-0001").expect("id");
        assert_eq!(store.job("j-0001").expect("job").collected_at, None);
        store.set_collected(&id, 42).expect("collect");
        store.set_collected(&id, 43).expect("again");
        assert_eq!(store.job("j-0001").expect("job").collected_at, Some(42), "the first collection counts");
        assert_eq!(store.last_activity(&id).expect("activity"), 1);
        store.set_job_state(&id, "running").expect("retried");
        assert_eq!(store.job("j-0001").expect("job").collected_at, None, "running again: not collected");
        let t = store.task(&id, "t").expect("task").expect("t");
        assert_eq!((t.train.parks, t.train.parked_secs), (0, 0));
        drop(store);
        let again = Store::open(&path).expect("opens again at version 5");
        let version: i64 =
            again.with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0))).expect("v");
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// The schema as version 4 had it: without the turns table and the tasks' agent columns.
    fn version_4_schema() -> String {
        let cut = SCHEMA.find("CREATE TABLE IF NOT EXISTS notes").expect("the notes table");
        SCHEMA[..cut]
            .replace(
                "    session TEXT,\n    session_agent TEXT,\n    question TEXT,\n    reply TEXT,\n    held TEXT,\n",
                "",
            )
            .replace("    parks INTEGER NOT NULL DEFAULT 0,\n    parked_secs INTEGER NOT NULL DEFAULT 0,\n", "")
    }

    /// A version 4 file opens at version 5: its tasks get agent columns, turns are recorded
    /// and summed per task and job.
    #[test]
    fn a_version_4_file_is_migrated_and_records_turns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grove.db");
        {
            let conn = Connection::open(&path).expect("open");
            let old = version_4_schema();
            assert!(!old.contains("session_agent"));
            conn.execute_batch(&old).expect("old schema");
            conn.execute(
                "INSERT INTO jobs (id, created_at, spec, source, mirror, base, integration_branch, integration_head,
                   state, warnings, ignored_files) VALUES ('j-0001', 1, '{}', 's', 'm', 'b', 'i', 'b', 'running', '[]', '[]')",
                [],
            )
            .expect("a job");
            for slug in ["a", "b"] {
                conn.execute(
                    "INSERT INTO tasks (job, slug, ord, level, title, files, lines, depends_on, branch, pool, state,
                       merge_state, updated_at) VALUES ('j-0001', ?1, 0, 0, ?1, '[]', 0, '[]', 'b', 'local', 'running', 'pending', 1)",
                    [slug],
                )
                .expect("a task");
            }
            conn.pragma_update(None, "user_version", 4).expect("version");
        }
        let store = Store::open(&path).expect("migrated");
        let id = JobId::parse("j-0001").expect("id");
        let report = |session: &str, cost: Option<f64>| TurnReport {
            agent: "codex".into(),
            model: Some("gpt-5".into()),
            outcome: TurnOutcome::Success,
            summary: Some("done".into()),
            usage: Usage::new(100, 10, 50, 0, cost),
            session: Some(session.into()),
            question: None,
        };
        store.record_turn(&id, "a", 1, 1, &report("s1", Some(0.25))).expect("turn");
        store.record_turn(&id, "a", 1, 2, &report("s1", Some(0.5))).expect("turn");
        store.record_turn(&id, "b", 1, 1, &report("s2", None)).expect("turn");
        let a = store.task(&id, "a").expect("read").expect("a");
        let u = a.agent.usage.expect("usage");
        assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens), (200, 20, 100));
        assert_eq!(u.cost_usd, Some(0.75));
        assert_eq!(a.agent.session.as_deref(), Some("s1"));
        assert_eq!(a.agent.session_agent.as_deref(), Some("codex"));
        assert_eq!(a.agent.session_total.input_tokens, 200);
        let b = store.task(&id, "b").expect("read").expect("b");
        assert_eq!(b.agent.usage.expect("usage").cost_usd, None, "a turn without a price: unknown");
        let job = store.job_usage(&id).expect("job usage").expect("some");
        assert_eq!(job.tokens(), 480);
        assert_eq!(job.cost_usd, None);
        assert_eq!(job.known_cost(), 0.75);
        assert_eq!(store.turns(&id, "a").expect("turns").len(), 2);
        // The one-task read, the whole list and the train's pages agree.
        let all = store.tasks(&id).expect("all");
        for t in &all {
            let one = store.task(&id, &t.slug).expect("read").expect("one");
            assert_eq!(format!("{:?}", one.agent), format!("{:?}", t.agent), "{}", t.slug);
        }
        let first = store.pending_merges(&id, None, 1).expect("page");
        let rest = store.pending_merges(&id, Some((first[0].ord, &first[0].slug)), 10).expect("page");
        let paged: Vec<&str> = first.iter().chain(&rest).map(|t| t.slug.as_str()).collect();
        assert_eq!(paged, all.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>());
        assert_eq!(store.in_flight(&id).expect("in flight").len(), 2);
        store.set_held(&id, "b", Some("job budget")).expect("hold");
        assert_eq!(store.in_flight(&id).expect("in flight").into_iter().collect::<Vec<_>>(), ["a"]);
        assert!(!store.nothing_in_flight(&id).expect("in flight"), "a is still running");
    }

    /// A pod launcher's view of a pool: tasks on the bus, tasks being worked on, and the
    /// longest deadline left; other pools, ended jobs and tasks waiting out a backoff count
    /// for nothing.
    #[test]
    fn pool_load_counts_what_needs_a_worker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("grove.db")).expect("open");
        store
            .with(|c| {
                for (id, state, spec) in
                    [("j-0001", "running", r#"{"run":{"deadline":"2h"}}"#), ("j-0002", "done", "{}"), ("j-0003", "running", "{}")]
                {
                    c.exec_cached(
                        "INSERT INTO jobs (id, created_at, spec, source, mirror, base, integration_branch, integration_head,
                           state, warnings, ignored_files) VALUES (?1, 1, ?3, 's', 'm', 'b', 'i', 'b', ?2, '[]', '[]')",
                        params![id, state, spec],
                    )?;
                }
                type Row<'a> = (&'a str, &'a str, &'a str, &'a str, i64, Option<i64>, Option<i64>);
                let tasks: [Row; 8] = [
                    ("j-0001", "a", "cloud", "queued", 1, None, Some(1000)),
                    ("j-0001", "b", "cloud", "running", 1, None, Some(400)),
                    ("j-0001", "c", "cloud", "queued", 1, Some(5000), Some(100)), // backing off
                    ("j-0001", "d", "local", "queued", 1, None, Some(1000)),
                    ("j-0001", "e", "cloud", "succeeded", 1, None, Some(1000)),
                    ("j-0001", "f", "cloud", "queued", 0, None, Some(1000)), // not confirmed on the bus
                    ("j-0002", "a", "cloud", "queued", 1, None, Some(1000)), // its job ended
                    ("j-0003", "a", "cloud", "checking", 1, None, Some(1000)),
                ];
                for (job, slug, pool, state, on_bus, retry_at, first) in tasks {
                    c.exec_cached(
                        "INSERT INTO tasks (job, slug, ord, level, title, files, lines, depends_on, branch, pool,
                           state, merge_state, updated_at, placed, on_bus, retry_at, first_dispatched_at)
                         VALUES (?1, ?2, 0, 0, 't', '[]', 0, '[]', 'b', ?3, ?4, 'pending', 0, ?3, ?5, ?6, ?7)",
                        params![job, slug, pool, state, on_bus, retry_at, first],
                    )?;
                }
                Ok(())
            })
            .expect("rows");
        let load = store.pool_load("cloud", 1000).expect("load");
        assert_eq!((load.queued, load.running), (1, 2));
        // j-0001's deadline is 2h: `a` was first dispatched just now (2h left), `b` 600s ago.
        assert_eq!(load.deadline, Some(std::time::Duration::from_secs(7200)));
        let later = store.pool_load("cloud", 1000 + 3600).expect("load");
        assert_eq!(later.deadline, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(store.pool_load("gpu", 1000).expect("load"), PoolLoad::default());
    }
}
