//! The coordinator's gRPC API (tonic), over the [`Daemon`].
//!
//! API boundary: the only place the coordinator meets the gRPC wire types; conversions from
//! the store's rows are here, by hand.

use std::path::PathBuf;
use std::sync::Arc;

use grove_core::JobId;
use grove_core::task::MergeState;
use grove_proto::v1 as pb;
use grove_proto::v1::coordinator_server::{Coordinator as CoordinatorApi, CoordinatorServer};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::CoordError;
use crate::access::{Caller, Scope, Tokens};
use crate::daemon::Daemon;
use crate::drive::Note;
use crate::store::{JobRow, StoreError, TaskRow};

/// The service; [`server`] puts it behind the token check.
pub struct Api {
    daemon: Arc<Daemon>,
}

impl Api {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Api { daemon }
    }
}

/// The largest request the API reads (a job spec is a few KiB).
pub const MAX_REQUEST: usize = 2 << 20;
/// The most bytes of files (ignored files and a session's transcript) one hand-off carries.
pub const HANDOFF_MAX: usize = 256 << 20;
/// The largest job spec a request may carry.
pub const MAX_SPEC: usize = 1 << 20;
/// Tasks one discard may name.
pub const MAX_DISCARD: usize = 10_000;

/// A server for `api`. With `tokens`, a call without `authorization: Bearer <token>` of one
/// of them is refused (Unauthenticated), and each method checks the caller's scope
/// (PermissionDenied naming the scope it needs); without tokens every call is the local
/// person's (the CLI serves that only on loopback).
pub fn server(
    api: Api,
    tokens: Tokens,
) -> tonic::service::interceptor::InterceptedService<
    CoordinatorServer<Api>,
    impl tonic::service::Interceptor + Clone,
> {
    let tokens = Arc::new(tokens);
    let service = CoordinatorServer::new(api).max_decoding_message_size(MAX_REQUEST);
    tonic::service::interceptor::InterceptedService::new(service, move |mut req: Request<()>| {
        let caller = if tokens.is_empty() {
            Caller::local()
        } else {
            let given = req.metadata().get("authorization").map(|v| v.as_bytes()).unwrap_or_default();
            tokens.caller(given).ok_or_else(|| {
                Status::unauthenticated("a valid bearer token is required (--token-file / GROVE_TOKEN)")
            })?
        };
        req.extensions_mut().insert(caller);
        Ok(req)
    })
}

/// The caller of `req` may make `call`, which needs `scope`.
fn allow<T>(req: &Request<T>, scope: Scope, call: &str) -> Result<Caller, Status> {
    // No caller: a server built without the interceptor; nobody is trusted then.
    let caller =
        req.extensions().get::<Caller>().cloned().unwrap_or(Caller { scope: Scope::Read, name: None });
    if caller.scope < scope {
        return Err(Status::permission_denied(format!(
            "{call} needs a token with the {scope} scope; this one has {}",
            caller.scope
        )));
    }
    Ok(caller)
}

/// A submit-scoped caller acts on the jobs it submitted; admin on any.
fn allow_job(store: &crate::store::Store, caller: &Caller, job: &JobId, call: &str) -> Result<(), Status> {
    if caller.scope >= Scope::Admin {
        return Ok(());
    }
    let owner = store.owner(job).map_err(|e| status(e.into()))?;
    if owner.is_some() && owner == caller.name {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "{call}: job {job} was not submitted with this token; acting on it needs the admin scope"
    )))
}

/// A bad field of a request: InvalidArgument naming it.
fn bad_field(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// A job id as a request gives it: empty (the newest job) or a valid id.
fn job_field(field: &str, id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Ok(());
    }
    JobId::parse(id).map(drop).map_err(|e| bad_field(field, e))
}

/// A task as a request names it: `JOB/TASK` or `TASK`.
fn task_field(field: &str, name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(bad_field(field, "name a task: JOB/TASK or TASK"));
    }
    grove_core::names::check_task_ref(name).map_err(|e| bad_field(field, e))
}

/// A job spec and where it is read from, as SubmitJob and PlanJob take them.
fn spec_fields(r: &pb::SubmitJobRequest) -> Result<(), Status> {
    if r.spec_toml.len() > MAX_SPEC {
        return Err(bad_field("spec_toml", format!("{} bytes, more than {MAX_SPEC}", r.spec_toml.len())));
    }
    if r.spec_name.len() > 256 || r.spec_name.chars().any(char::is_control) {
        return Err(bad_field("spec_name", "longer than 256 bytes or with a control character"));
    }
    let dir = std::path::Path::new(&r.base_dir);
    if r.base_dir.len() > 4096
        || !dir.is_absolute()
        || r.base_dir.contains('\0')
        || r.base_dir.split('/').any(|c| c == "..")
    {
        return Err(bad_field("base_dir", "not an absolute, plain path of at most 4096 bytes"));
    }
    Ok(())
}

/// The most a reply or a stream's message carries, well under tonic's 4 MiB default limit
/// on decoding: a job's tasks, a job listing, a diff and a log come in pieces of this size.
pub const REPLY_BUDGET: usize = 3 << 20;

/// A piece of a log or a diff's text.
const PIECE: usize = 1 << 20;

fn status(e: CoordError) -> Status {
    let status = status_of(&e);
    // A credential in a repository URL is never sent back, whoever put it in the message.
    Status::new(status.code(), grove_core::urls::redact(status.message()))
}

fn status_of(e: &CoordError) -> Status {
    match e {
        CoordError::Spec(_)
        | CoordError::NothingSelected { .. }
        | CoordError::BranchExists { .. }
        | CoordError::EscapingSymlink { .. }
        | CoordError::AlreadyMerged { .. } => Status::invalid_argument(e.to_string()),
        CoordError::Refused { .. } => Status::failed_precondition(e.to_string()),
        CoordError::Store(StoreError::Ambiguous { .. }) => Status::invalid_argument(e.to_string()),
        CoordError::Store(StoreError::NoJob(_) | StoreError::NoTask(_)) => Status::not_found(e.to_string()),
        CoordError::Git(grove_git::GitError::NotARepo { .. } | grove_git::GitError::UnknownRev { .. }) => {
            Status::invalid_argument(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

fn stat(s: grove_core::DiffStat) -> Option<pb::DiffStat> {
    Some(pb::DiffStat { files: s.files, insertions: s.insertions, deletions: s.deletions })
}

/// A job with as many of `tasks` as fit in [`REPLY_BUDGET`] (at least one); `more_tasks`
/// says when the rest wait for the next page.
pub fn job_page(j: &JobRow, tasks: &[TaskRow]) -> pb::Job {
    use prost::Message;
    let mut job = job_pb(j, &[]);
    let mut size = job.encoded_len();
    for t in tasks {
        let t = task_pb(t);
        let more = t.encoded_len() + 8;
        if size + more > REPLY_BUDGET && !job.tasks.is_empty() {
            job.more_tasks = true;
            break;
        }
        size += more;
        job.tasks.push(t);
    }
    job
}

pub fn job_pb(j: &JobRow, tasks: &[TaskRow]) -> pb::Job {
    let usage = tasks.iter().filter_map(|t| t.agent.usage).reduce(|a, b| a.add(&b));
    let spent = usage.map_or(0.0, |u| u.known_cost());
    pb::Job {
        usage: usage.as_ref().map(grove_bus::wire::usage_pb),
        budget_stopped: crate::drive::over_budget(j, spent),
        budget_job_usd: j.spec.budget.job_usd,
        id: j.id.to_string(),
        state: j.state.clone(),
        source: j.source.clone(),
        base: j.base.clone(),
        integration_branch: j.integration_branch.clone(),
        integration_head: j.integration_head.clone(),
        warnings: j.warnings.clone(),
        created_at: j.created_at,
        merge_mode: j.spec.merge_mode().as_str().to_owned(),
        pick: j.spec.pick().as_str().to_owned(),
        merge_approved: j.train.approved,
        merge_stopped: j.train.stopped.clone(),
        tasks: tasks.iter().map(task_pb).collect(),
        more_tasks: false,
        repo: j.repo.as_ref().map(|r| pb::JobRepo {
            group: r.group.to_string(),
            name: r.name.clone(),
            order: r.ord,
            level: r.level,
            upstream: r.upstream.clone(),
            edges: r.edges.clone(),
            pull_request: r.pr.clone(),
        }),
    }
}

fn pod_pb(p: &crate::launch::PodReport) -> pb::LaunchedPod {
    pb::LaunchedPod {
        name: p.name.clone(),
        pod: p.pod.clone(),
        phase: p.phase.clone(),
        reason: p.reason.clone(),
        message: p.message.clone(),
        created_at: p.created_at,
        stuck: p.stuck,
    }
}

/// A launcher's pool as on the wire.
pub fn pool_pb(p: &crate::launch::PoolReport) -> pb::LaunchedPool {
    pb::LaunchedPool {
        pool: p.pool.clone(),
        backend: p.backend.clone(),
        wanted: p.wanted,
        max: p.max,
        pods: p.pods.iter().map(pod_pb).collect(),
        failures: p.failures.iter().map(pod_pb).collect(),
        held: p.held.clone(),
        error: p.error.clone(),
        updated_at: p.updated_at,
    }
}

/// One task as on the wire, with what the merge train knows about it.
pub fn task_pb(t: &TaskRow) -> pb::Task {
    pb::Task {
        order: t.ord,
        slug: t.slug.clone(),
        title: t.title.clone(),
        state: t.state.as_str().to_owned(),
        merge: t.merge_state.as_str().to_owned(),
        branch: t.branch.clone(),
        files: t.files.clone(),
        depends_on: t.depends_on.clone(),
        attempt: t.attempt,
        turns: t.turns,
        head: t.head.clone(),
        stat: stat(t.stat),
        reason: t.reason.clone(),
        conflict_paths: t.conflict_paths.clone(),
        merge_commit: t.merge_commit.clone(),
        pool: t.pool.clone(),
        level: t.level,
        placed: t.placed.clone(),
        placed_why: t.placed_why.clone(),
        lines: t.lines,
        merge_seq: t.train.merge_seq,
        redos: t.train.redos,
        task_base: t.train.base.clone(),
        variant: t.train.variant.clone(),
        variant_of: t.train.variant_of.clone(),
        picked: t.train.picked,
        started_at: t.train.started_at,
        finished_at: t.train.finished_at,
        check_output: t.log_tail.clone().filter(|_| t.merge_state == MergeState::CheckFailed),
        failures: t.train.failures,
        first_dispatched_at: t.train.first_dispatched_at,
        retry_at: t.train.retry_at,
        usage: t.agent.usage.as_ref().map(grove_bus::wire::usage_pb),
        question: t.agent.question.clone(),
        session: t.agent.session.clone(),
        held: t.agent.held.clone(),
        parks: t.train.parks,
        parked_secs: t.train.parked_secs,
        handoffs: t
            .handoffs
            .iter()
            .map(|h| pb::HandoffEvent {
                at: h.at,
                way: h.way.clone(),
                place: h.place.clone(),
                attempt: h.attempt,
            })
            .collect(),
    }
}

fn note_pb(n: &Note) -> pb::JobNote {
    let mut out = pb::JobNote::default();
    match n {
        Note::Dispatched { job, task, .. } => {
            (out.job, out.task, out.kind) = (job.to_string(), task.clone(), "dispatched".into())
        }
        Note::State { job, task, state, turn } => {
            (out.job, out.task, out.kind, out.state, out.turn) =
                (job.to_string(), task.clone(), "state".into(), state.as_str().into(), *turn);
        }
        Note::Checkpoint { job, task, turn, stat: s } => {
            (out.job, out.task, out.kind, out.turn, out.stat) =
                (job.to_string(), task.clone(), "checkpoint".into(), Some(*turn), stat(*s));
        }
        Note::Finished { job, task, state, stat: s, reason } => {
            (out.job, out.task, out.kind, out.state, out.stat, out.reason) = (
                job.to_string(),
                task.clone(),
                "finished".into(),
                state.as_str().into(),
                stat(*s),
                reason.clone(),
            );
        }
        Note::Merged { job, task, commit } => {
            (out.job, out.task, out.kind, out.reason) =
                (job.to_string(), task.clone(), "merged".into(), commit.clone());
        }
        Note::Conflict { job, task, paths } => {
            (out.job, out.task, out.kind, out.paths) =
                (job.to_string(), task.clone(), "conflict".into(), paths.clone());
        }
        Note::Redo { job, task, paths } => {
            (out.job, out.task, out.kind, out.paths) =
                (job.to_string(), task.clone(), "redo".into(), paths.clone());
        }
        Note::CheckFailed { job, task, output } => {
            (out.job, out.task, out.kind, out.reason) =
                (job.to_string(), task.clone(), "check-failed".into(), Some(output.clone()));
        }
        Note::Published { job, skipped, .. } => {
            (out.job, out.kind, out.paths) = (job.to_string(), "published".into(), skipped.clone());
        }
        Note::Stopped { job, reason } => {
            (out.job, out.kind, out.reason) = (job.to_string(), "stopped".into(), Some(reason.clone()));
        }
        Note::Ended { job, state } => {
            (out.job, out.kind, out.state) = (job.to_string(), "ended".into(), state.clone());
        }
    }
    out
}

/// Where a task stands now, as a note (`merged`, or its state).
fn snapshot_note(job: &JobRow, t: &TaskRow, seq: u64) -> pb::JobNote {
    let merged = t.merge_state == MergeState::Merged;
    pb::JobNote {
        job: job.id.to_string(),
        task: t.slug.clone(),
        kind: if merged { "merged" } else { "state" }.into(),
        state: t.state.as_str().to_owned(),
        stat: stat(t.stat),
        reason: if merged { t.merge_commit.clone() } else { t.reason.clone() },
        paths: vec![],
        turn: None,
        seq,
    }
}

impl Api {
    fn task(&self, name: &str) -> Result<TaskRow, Status> {
        task_field("task", name)?;
        self.daemon.coord.store.find_task(name).map_err(|e| status(e.into()))
    }

    fn job_id(&self, id: &str) -> Result<JobId, Status> {
        job_field("id", id)?;
        let job = self
            .daemon
            .coord
            .store
            .job_or_latest((!id.is_empty()).then_some(id))
            .map_err(|e| status(e.into()))?;
        Ok(job.id)
    }

    /// The job `id` (the newest when empty) with its first page of tasks, or those after
    /// the task of order `after`.
    fn job(&self, id: &str) -> Result<pb::Job, Status> {
        self.job_from(id, None)
    }

    /// What `grove diff` shows of a task: the target, its files, and the stat then patch.
    async fn diff(
        &self,
        r: pb::DiffRequest,
    ) -> Result<(crate::review::DiffTarget, Vec<pb::DiffFile>, String), Status> {
        if r.task.is_empty() {
            return Err(Status::invalid_argument("name a task: JOB/TASK or TASK"));
        }
        let coord = self.daemon.coord.clone();
        tokio::task::spawn_blocking(move || -> Result<_, CoordError> {
            let target = crate::review::DiffTarget::find(&coord.store, &coord.git, &r.task)?;
            let files = target
                .files(&coord.git)?
                .into_iter()
                .map(|f| pb::DiffFile { path: f.path, insertions: f.insertions, deletions: f.deletions })
                .collect();
            let text = target.text(&coord.git, r.stat_only, r.color)?;
            Ok((target, files, text))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)
    }

    fn job_from(&self, id: &str, after: Option<u32>) -> Result<pb::Job, Status> {
        job_field("id", id)?;
        let store = &self.daemon.coord.store;
        let job = store.job_or_latest((!id.is_empty()).then_some(id)).map_err(|e| status(e.into()))?;
        let mut tasks = store.tasks(&job.id).map_err(|e| status(e.into()))?;
        if let Some(after) = after {
            tasks.retain(|t| t.ord > after);
        }
        Ok(job_page(&job, &tasks))
    }
}

/// A journaled note as on the wire.
fn journaled_pb(j: &crate::journal::Journaled) -> pb::JobNote {
    pb::JobNote { seq: j.seq, ..note_pb(&j.note) }
}

/// Where a watcher of `job` stands: what it has been sent, up to `cursor` in the journal.
struct Watcher {
    daemon: Arc<Daemon>,
    job: JobId,
    cursor: u64,
    tx: tokio::sync::mpsc::Sender<Result<pb::JobNote, Status>>,
}

enum Sent {
    /// Go on.
    More,
    /// The job is over (its `published` note went), or the watcher went away.
    Over,
}

impl Watcher {
    async fn send(&mut self, note: pb::JobNote) -> Sent {
        let last = note.kind == "published";
        if note.seq > 0 {
            self.cursor = note.seq;
        }
        if self.tx.send(Ok(note)).await.is_err() || last { Sent::Over } else { Sent::More }
    }

    /// Send what the journal has after the cursor.
    async fn catch_up(&mut self) -> Result<Sent, CoordError> {
        loop {
            let (daemon, job, cursor) = (self.daemon.clone(), self.job.clone(), self.cursor);
            let page = tokio::task::spawn_blocking(move || daemon.coord.store.notes_after(&job, cursor, 256))
                .await
                .map_err(|e| CoordError::Io {
                    what: "reading the journal".into(),
                    source: std::io::Error::other(e),
                })??;
            if page.is_empty() {
                return Ok(Sent::More);
            }
            for (seq, text) in page {
                self.cursor = seq;
                let Some(note) = crate::journal::from_json(&self.job, &text) else { continue };
                if let Sent::Over = self.send(journaled_pb(&crate::journal::Journaled { seq, note })).await {
                    return Ok(Sent::Over);
                }
            }
        }
    }

    /// Every note after the cursor, from the journal, then as they come (the journal again
    /// when some were missed: a lagging watcher), until the job is over: its `published`
    /// note, or, caught up, the job no longer running (a job whose merging stopped ends so;
    /// it is looked at again after a quiet while, so no watcher waits for a note that never
    /// comes).
    async fn follow(mut self, mut rx: tokio::sync::broadcast::Receiver<crate::journal::Journaled>) {
        use tokio::sync::broadcast::error::RecvError;
        const QUIET: std::time::Duration = std::time::Duration::from_secs(3);
        loop {
            match self.catch_up().await {
                Ok(Sent::More) => {}
                Ok(Sent::Over) => return,
                Err(e) => {
                    let _ = self.tx.send(Err(status(e))).await;
                    return;
                }
            }
            // Caught up: a job that is no longer running sends nothing more.
            match self.daemon.coord.store.job(self.job.as_str()) {
                Ok(j) if j.state != "running" => return,
                Ok(_) => {}
                Err(e) => {
                    let _ = self.tx.send(Err(status(e.into()))).await;
                    return;
                }
            }
            loop {
                let Ok(next) = tokio::time::timeout(QUIET, rx.recv()).await else { break };
                match next {
                    Ok(j) if *j.note.job() != self.job => continue,
                    // Not journaled (the journal failed): sent as it is.
                    Ok(j) if j.seq == 0 => {
                        if let Sent::Over = self.send(journaled_pb(&j)).await {
                            return;
                        }
                    }
                    Ok(j) if j.seq <= self.cursor => continue,
                    Ok(j) if j.seq == self.cursor + 1 => {
                        let stopped = matches!(j.note, Note::Stopped { .. });
                        if let Sent::Over = self.send(journaled_pb(&j)).await {
                            return;
                        }
                        if stopped {
                            // The job may have ended with it: look.
                            break;
                        }
                    }
                    // A gap (this note came before the journal was read up to it): read it.
                    Ok(_) | Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

#[tonic::async_trait]
impl CoordinatorApi for Api {
    async fn submit_job(&self, req: Request<pb::SubmitJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = allow(&req, Scope::Submit, "SubmitJob")?;
        let r = req.into_inner();
        spec_fields(&r)?;
        let name = if r.spec_name.is_empty() { "job spec".to_owned() } else { r.spec_name };
        let job =
            self.daemon.submit(&name, &r.spec_toml, &PathBuf::from(r.base_dir)).await.map_err(status)?;
        if let Some(owner) = &caller.name {
            self.daemon.coord.store.set_owner(&job.id, owner).map_err(|e| status(e.into()))?;
        }
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    async fn plan_job(&self, req: Request<pb::SubmitJobRequest>) -> Result<Response<pb::PlanReply>, Status> {
        allow(&req, Scope::Submit, "PlanJob")?;
        let r = req.into_inner();
        spec_fields(&r)?;
        let name = if r.spec_name.is_empty() { "job spec".to_owned() } else { r.spec_name };
        let p = self.daemon.plan(&name, &r.spec_toml, &PathBuf::from(r.base_dir)).await.map_err(status)?;
        let pool = p.spec.run.pool.clone().unwrap_or_else(|| grove_core::placement::LOCAL.to_owned());
        Ok(Response::new(pb::PlanReply {
            base: p.base.clone(),
            selected_files: p.plan.selected_files as u64,
            warnings: p.plan.warnings.clone(),
            dot: p.plan.dot(),
            tasks: p
                .plan
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| pb::PlannedTask {
                    order: i as u32,
                    slug: t.slug.clone(),
                    title: t.title.clone(),
                    level: t.level,
                    sparse: t.sparse.as_ref().map(|d| pb::Folders { dirs: d.clone() }),
                    files: t.files.clone(),
                    lines: t.lines,
                    depends_on: t.depends_on.clone(),
                    pool: pool.clone(),
                })
                .collect(),
        }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        allow(&req, Scope::Read, "GetJob")?;
        let r = req.into_inner();
        Ok(Response::new(self.job_from(&r.id, r.tasks_after)?))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsReply>, Status> {
        allow(&req, Scope::Read, "ListJobs")?;
        use prost::Message;
        let r = req.into_inner();
        let limit = if r.page_size == 0 { 10_000 } else { r.page_size as usize };
        let after = (!r.after.is_empty()).then_some(r.after.as_str());
        let (jobs, mut more) =
            self.daemon.coord.store.jobs_page(after, limit).map_err(|e| status(e.into()))?;
        let mut reply = pb::ListJobsReply::default();
        let mut size = 0;
        for j in &jobs {
            let j = job_pb(j, &[]);
            size += j.encoded_len() + 8;
            if size > REPLY_BUDGET && !reply.jobs.is_empty() {
                more = true;
                break;
            }
            reply.jobs.push(j);
        }
        if more {
            reply.next = reply.jobs.last().map(|j| j.id.clone());
        }
        Ok(Response::new(reply))
    }

    type WatchJobStream = ReceiverStream<Result<pb::JobNote, Status>>;

    async fn watch_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        allow(&req, Scope::Read, "WatchJob")?;
        // Subscribed before anything is read: no note falls between the journal and the live.
        let rx = self.daemon.subscribe();
        let r = req.into_inner();
        let store = &self.daemon.coord.store;
        let job =
            store.job_or_latest((!r.id.is_empty()).then_some(r.id.as_str())).map_err(|e| status(e.into()))?;
        let (tx, out) = tokio::sync::mpsc::channel(256);
        let mut watcher = Watcher { daemon: self.daemon.clone(), job: job.id.clone(), cursor: 0, tx };
        let snapshot = match r.after {
            // A follower that resumes: every note after the last one it saw.
            Some(after) => {
                watcher.cursor = after;
                Vec::new()
            }
            None => {
                watcher.cursor = store.last_note(&job.id).map_err(|e| status(e.into()))?;
                // Where each task stands now, for a watcher that comes late, numbered as the
                // journal's newest note: the notes after it follow.
                let done = job.state != "running";
                let tasks = if r.snapshot || done {
                    store.tasks(&job.id).map_err(|e| status(e.into()))?
                } else {
                    Vec::new()
                };
                let mut notes: Vec<pb::JobNote> = if r.snapshot {
                    tasks.iter().map(|t| snapshot_note(&job, t, watcher.cursor)).collect()
                } else {
                    Vec::new()
                };
                // A job whose merging stopped says so to a watcher that comes after the note.
                if r.snapshot
                    && let Some(reason) = &job.train.stopped
                {
                    let stopped = Note::Stopped { job: job.id.clone(), reason: reason.clone() };
                    notes.push(pb::JobNote { seq: watcher.cursor, ..note_pb(&stopped) });
                }
                if done {
                    // Over already: the snapshot (if asked) is all there is.
                    let tx = watcher.tx.clone();
                    tokio::spawn(async move {
                        for n in notes {
                            if tx.send(Ok(n)).await.is_err() {
                                return;
                            }
                        }
                    });
                    return Ok(Response::new(ReceiverStream::new(out)));
                }
                notes
            }
        };
        let stopping = self.daemon.stopping();
        tokio::spawn(async move {
            for n in snapshot {
                if watcher.tx.send(Ok(n)).await.is_err() {
                    return;
                }
            }
            // A daemon that stops ends the stream; the follower resumes with another.
            tokio::select! {
                () = watcher.follow(rx) => {}
                () = stopping.cancelled() => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn cancel_task(&self, req: Request<pb::TaskRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = allow(&req, Scope::Submit, "CancelTask")?;
        let task = self.task(&req.into_inner().task)?;
        allow_job(&self.daemon.coord.store, &caller, &task.job, "CancelTask")?;
        let job = self.daemon.cancel_task(&task).await.map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    async fn reply_task(&self, req: Request<pb::ReplyRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = allow(&req, Scope::Submit, "ReplyTask")?;
        let r = req.into_inner();
        if r.answer.len() > 1 << 20 {
            return Err(Status::invalid_argument(format!(
                "answer: {} bytes, more than the 1 MiB grove reads",
                r.answer.len()
            )));
        }
        let task = self.task(&r.task)?;
        allow_job(&self.daemon.coord.store, &caller, &task.job, "ReplyTask")?;
        let job = self.daemon.reply(&task, &r.answer).await.map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    async fn retry_task(&self, req: Request<pb::TaskRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = allow(&req, Scope::Submit, "RetryTask")?;
        let task = self.task(&req.into_inner().task)?;
        allow_job(&self.daemon.coord.store, &caller, &task.job, "RetryTask")?;
        let job = self.daemon.retry(&task).await.map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    type StreamLogStream = ReceiverStream<Result<pb::LogChunk, Status>>;

    async fn stream_log(
        &self,
        req: Request<pb::LogRequest>,
    ) -> Result<Response<Self::StreamLogStream>, Status> {
        allow(&req, Scope::Read, "StreamLog")?;
        let r = req.into_inner();
        let task = self.task(&r.task)?;
        let (tx, out) = tokio::sync::mpsc::channel(64);
        let daemon = self.daemon.clone();
        let chunks = daemon.coord.bus.read_log(&task.job, &task.slug).await.map_err(|e| status(e.into()))?;
        let from = crate::logs::Cursor { attempt: r.from_attempt, offset: r.from_offset };
        let stopping = self.daemon.stopping();
        tokio::spawn(async move {
            let sent = async {
                match chunks {
                    Some(chunks) => {
                        crate::logs::forward(&daemon.coord, &task, chunks, r.follow, from, &tx).await
                    }
                    None => crate::logs::tail_file(&daemon.coord, &task, r.follow, from, &tx).await,
                }
            };
            // A daemon that stops ends the stream; the follower resumes with another.
            let result = tokio::select! {
                r = sent => r,
                () = stopping.cancelled() => Ok(()),
            };
            if let Err(e) = result {
                let _ = tx.send(Err(status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn list_workers(
        &self,
        req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersReply>, Status> {
        allow(&req, Scope::Read, "ListWorkers")?;
        let workers = self.daemon.coord.bus.workers().await.map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListWorkersReply {
            workers: workers.iter().map(grove_bus::wire::worker_pb).collect(),
            pools: self.daemon.board.pools().iter().map(pool_pb).collect(),
        }))
    }

    async fn merge_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        allow(&req, Scope::Admin, "MergeJob")?;
        let id = self.job_id(&req.into_inner().id)?;
        let job = self.daemon.merge(&id).await.map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    async fn discard_tasks(
        &self,
        req: Request<pb::DiscardRequest>,
    ) -> Result<Response<pb::DiscardReply>, Status> {
        allow(&req, Scope::Admin, "DiscardTasks")?;
        let r = req.into_inner();
        if r.tasks.len() > MAX_DISCARD {
            return Err(bad_field("tasks", format!("{} tasks, more than {MAX_DISCARD}", r.tasks.len())));
        }
        for t in &r.tasks {
            task_field("tasks", t)?;
        }
        job_field("job", &r.job)?;
        let store = &self.daemon.coord.store;
        let job = (!r.job.is_empty()).then_some(r.job.as_str());
        let sel = crate::review::discard_selection(store, &r.tasks, r.failed, r.needs_attention, job)
            .map_err(status)?;
        if sel.chosen.is_empty() && sel.nothing_in.is_none() {
            return Err(Status::invalid_argument(
                "name the tasks to discard, or ask for --failed / --needs-attention",
            ));
        }
        let mut discarded = Vec::new();
        for (job, slugs) in &sel.chosen {
            for d in self.daemon.discard(job, slugs).await.map_err(status)? {
                discarded.push(pb::Discarded {
                    job: job.to_string(),
                    task: d.task,
                    removed: d.removed,
                    kept: d.kept,
                });
            }
        }
        Ok(Response::new(pb::DiscardReply { discarded, nothing_in: sel.nothing_in.map(|j| j.to_string()) }))
    }

    async fn pick_variant(&self, req: Request<pb::PickRequest>) -> Result<Response<pb::Job>, Status> {
        allow(&req, Scope::Admin, "PickVariant")?;
        let r = req.into_inner();
        task_field("task", &r.task)?;
        grove_core::names::check_variant(&r.variant).map_err(|e| bad_field("variant", e))?;
        let (job, task, _) = crate::review::variants_of(&self.daemon.coord.store, &r.task).map_err(status)?;
        let job = self.daemon.pick(&job.id, &task, &r.variant).await.map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    async fn push_job(&self, req: Request<pb::PushRequest>) -> Result<Response<pb::PushReply>, Status> {
        allow(&req, Scope::Admin, "PushJob")?;
        let r = req.into_inner();
        job_field("job", &r.job)?;
        if let Some(remote) = &r.remote {
            let (to, _) = grove_core::urls::split_credential(remote);
            crate::review::check_push_target(&to).map_err(|e| bad_field("remote", e))?;
        }
        let store = &self.daemon.coord.store;
        let job = store
            .job_or_latest((!r.job.is_empty()).then_some(r.job.as_str()))
            .map_err(|e| status(e.into()))?;
        let to = self.daemon.push(&job.id, r.remote.as_deref()).await.map_err(status)?;
        Ok(Response::new(pb::PushReply {
            job: job.id.to_string(),
            branch: job.integration_branch,
            remote: to,
        }))
    }

    async fn compare_task(
        &self,
        req: Request<pb::TaskRequest>,
    ) -> Result<Response<pb::CompareReply>, Status> {
        allow(&req, Scope::Read, "CompareTask")?;
        let name = req.into_inner().task;
        task_field("task", &name)?;
        let (job, task, rows) =
            crate::review::variants_of(&self.daemon.coord.store, &name).map_err(status)?;
        Ok(Response::new(pb::CompareReply {
            job: job.id.to_string(),
            task,
            pick: job.spec.pick().as_str().to_owned(),
            variants: rows.iter().map(task_pb).collect(),
        }))
    }

    async fn diff_task(&self, req: Request<pb::DiffRequest>) -> Result<Response<pb::DiffReply>, Status> {
        allow(&req, Scope::Read, "DiffTask")?;
        let r = req.into_inner();
        task_field("task", &r.task)?;
        let (target, files, mut text) = self.diff(r).await?;
        // One reply: cut to fit (StreamDiff sends all of it).
        if text.len() > REPLY_BUDGET - (64 << 10) {
            let mut end = REPLY_BUDGET - (64 << 10);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str(
                "\n[grove] (cut: the diff is larger than one reply; a newer grove shows all of it)\n",
            );
        }
        let mut reply = pb::DiffReply {
            job: target.job.id.to_string(),
            task: target.task.slug,
            base: target.base,
            head: target.head,
            text: text.into_bytes(),
            files,
        };
        // A listing of files too large for one reply keeps its first ones.
        use prost::Message;
        while reply.encoded_len() > REPLY_BUDGET && !reply.files.is_empty() {
            let keep = reply.files.len() / 2;
            reply.files.truncate(keep);
        }
        Ok(Response::new(reply))
    }

    type StreamDiffStream = ReceiverStream<Result<pb::DiffChunk, Status>>;

    async fn stream_diff(
        &self,
        req: Request<pb::DiffRequest>,
    ) -> Result<Response<Self::StreamDiffStream>, Status> {
        use prost::Message;
        allow(&req, Scope::Read, "StreamDiff")?;
        let r = req.into_inner();
        task_field("task", &r.task)?;
        let (target, files, text) = self.diff(r).await?;
        let mut chunks = vec![pb::DiffChunk {
            job: target.job.id.to_string(),
            task: target.task.slug,
            base: target.base,
            head: target.head,
            ..Default::default()
        }];
        for f in files {
            let last = chunks.len() - 1;
            if chunks[last].encoded_len() + f.encoded_len() + 8 > PIECE && !chunks[last].files.is_empty() {
                chunks.push(pb::DiffChunk::default());
            }
            let last = chunks.len() - 1;
            chunks[last].files.push(f);
        }
        for piece in text.as_bytes().chunks(PIECE) {
            chunks.push(pb::DiffChunk { text: piece.to_vec(), ..Default::default() });
        }
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for c in chunks {
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn handoff(
        &self,
        req: Request<tonic::Streaming<pb::HandoffPiece>>,
    ) -> Result<Response<pb::HandoffReply>, Status> {
        use pb::handoff_piece::Piece;
        use sha2::Digest;
        let caller = allow(&req, Scope::Submit, "Handoff")?;
        let mut stream = req.into_inner();
        let (mut header, mut sum) = (None::<pb::HandoffHeader>, None::<String>);
        let mut files: Vec<pb::HandoffFile> = Vec::new();
        let (mut hasher, mut total, mut open) = (sha2::Sha256::new(), 0usize, false);
        while let Some(piece) = stream.message().await? {
            match piece.piece {
                Some(Piece::Header(h)) if header.is_none() && files.is_empty() => header = Some(h),
                Some(Piece::File(f)) if header.is_some() && sum.is_none() => {
                    hasher.update(f.name.as_bytes());
                    hasher.update(&f.data);
                    total += f.data.len();
                    if total > HANDOFF_MAX {
                        return Err(Status::invalid_argument(format!(
                            "a hand-off carries at most {HANDOFF_MAX} bytes of files"
                        )));
                    }
                    let more = f.more;
                    match files.last_mut() {
                        Some(last) if open && last.name == f.name && last.kind == f.kind => {
                            last.data.extend_from_slice(&f.data)
                        }
                        _ => files.push(f),
                    }
                    open = more;
                }
                Some(Piece::Sha256(s)) if header.is_some() && sum.is_none() => sum = Some(s),
                _ => {
                    return Err(Status::invalid_argument(
                        "hand-off pieces out of order: a header, files, a checksum",
                    ));
                }
            }
        }
        let h = header.ok_or_else(|| Status::invalid_argument("a hand-off without a header"))?;
        let want = format!("{:x}", hasher.finalize());
        if sum.as_deref() != Some(want.as_str()) {
            return Err(Status::data_loss(format!(
                "the hand-off's checksum does not match (sent {}, received {want}): nothing was recorded",
                sum.as_deref().unwrap_or("none")
            )));
        }
        grove_core::names::check_commit_id(&h.snapshot, "snapshot")
            .map_err(|e| Status::invalid_argument(format!("snapshot: {e}")))?;
        let repo = PathBuf::from(&h.repo);
        if !repo.is_absolute() || h.repo.split('/').any(|c| c == "..") {
            return Err(Status::invalid_argument(format!("repo: {:?} is not an absolute path", h.repo)));
        }
        if h.from.len() > 4096 || h.spec_toml.len() > MAX_SPEC {
            return Err(Status::invalid_argument("from or spec_toml: too long"));
        }
        let session = match &h.session {
            Some(s) => {
                let kind: grove_core::spec::AgentKind =
                    s.agent.parse().map_err(|e| Status::invalid_argument(format!("session.agent: {e}")))?;
                if s.id.is_empty()
                    || s.id.len() > 200
                    || !s.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(Status::invalid_argument(format!(
                        "session.id: {:?} is not a session id",
                        s.id
                    )));
                }
                Some((kind.as_str().to_owned(), s.id.clone()))
            }
            None => None,
        };
        let mut inc = crate::handoff::Incoming {
            spec_toml: h.spec_toml,
            base_dir: PathBuf::from(h.base_dir),
            snapshot: h.snapshot,
            repo,
            session,
            task: (!h.task.is_empty()).then_some(h.task),
            job: (!h.job.is_empty()).then_some(h.job),
            prompt: h.prompt.filter(|p| !p.trim().is_empty()),
            from: h.from,
            ..Default::default()
        };
        let mut carried = 0;
        for f in files {
            let bad = |why: String| Status::invalid_argument(format!("file {:?}: {why}", f.name));
            if f.name.is_empty() || f.name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                return Err(bad("not a relative path".into()));
            }
            match f.kind.as_str() {
                "ignored" => {
                    grove_core::spec::check_repo_path(&f.name).map_err(|w| bad(w.to_string()))?;
                    carried += f.data.len();
                    if carried > grove_core::task::CARRIED_MAX {
                        return Err(bad(format!(
                            "more than {} bytes of ignored files in all",
                            grove_core::task::CARRIED_MAX
                        )));
                    }
                    inc.ignored.push(grove_core::task::Carried {
                        path: f.name,
                        data: f.data,
                        mode: f.mode & 0o777,
                    });
                }
                "session" => inc.transcript.push((f.name, f.data)),
                other => return Err(bad(format!("unknown kind {other:?}"))),
            }
        }
        if let Some(name) = &inc.task {
            task_field("task", name)?;
            let t = self.task(name)?;
            allow_job(&self.daemon.coord.store, &caller, &t.job, "Handoff")?;
        }
        if let Some(id) = &inc.job {
            let id = self.job_id(id)?;
            allow_job(&self.daemon.coord.store, &caller, &id, "Handoff")?;
        }
        let new = inc.task.is_none() && inc.job.is_none();
        let (job, task) = self.daemon.handoff(inc).await.map_err(status)?;
        if new && let Some(owner) = &caller.name {
            self.daemon.coord.store.set_owner(&job.id, owner).map_err(|e| status(e.into()))?;
        }
        Ok(Response::new(pb::HandoffReply { job: Some(self.job(job.id.as_str())?), task }))
    }

    type PullTaskStream = ReceiverStream<Result<pb::HandoffPiece, Status>>;

    async fn pull_task(
        &self,
        req: Request<pb::PullRequest>,
    ) -> Result<Response<Self::PullTaskStream>, Status> {
        use pb::handoff_piece::Piece;
        use sha2::Digest;
        let caller = allow(&req, Scope::Submit, "PullTask")?;
        let r = req.into_inner();
        if r.into.len() > 4096 {
            return Err(Status::invalid_argument("into: too long"));
        }
        let mut t = self.task(&r.task)?;
        allow_job(&self.daemon.coord.store, &caller, &t.job, "PullTask")?;
        let active = |t: &TaskRow| t.state.is_on_worker();
        if r.stop && active(&t) {
            self.daemon.cancel_task(&t).await.map_err(status)?;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
            while active(&t) {
                if tokio::time::Instant::now() > deadline {
                    return Err(Status::deadline_exceeded(format!(
                        "{}/{} did not stop within 2 minutes; try again",
                        t.job, t.slug
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                t = self.task(&format!("{}/{}", t.job, t.slug))?;
            }
        }
        let coord = self.daemon.coord.clone();
        let t2 = t.clone();
        let pulled = tokio::task::spawn_blocking(move || crate::handoff::pulled(&coord, &t2))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        let store = &self.daemon.coord.store;
        store.add_handoff(&t.job, &t.slug, "pull", &r.into, t.attempt).map_err(|e| status(e.into()))?;
        let mut pieces = vec![Piece::Header(pb::HandoffHeader {
            job: t.job.to_string(),
            task: t.slug.clone(),
            branch: t.branch.clone(),
            head: pulled.head.clone(),
            base: pulled.base.clone(),
            session: pulled.session.as_ref().map(|(agent, id)| pb::Session {
                agent: agent.clone(),
                id: id.clone(),
                total: None,
            }),
            ..Default::default()
        })];
        let mut hasher = sha2::Sha256::new();
        let files = pulled
            .ignored
            .into_iter()
            .map(|c| ("ignored", c.path, c.data, c.mode))
            .chain(pulled.transcript.into_iter().map(|(n, d)| ("session", n, d, 0o600)));
        for (kind, name, data, mode) in files {
            let chunks: Vec<&[u8]> =
                if data.is_empty() { vec![&[][..]] } else { data.chunks(PIECE).collect() };
            let n = chunks.len();
            for (i, c) in chunks.into_iter().enumerate() {
                hasher.update(name.as_bytes());
                hasher.update(c);
                pieces.push(Piece::File(pb::HandoffFile {
                    kind: kind.into(),
                    name: name.clone(),
                    data: c.to_vec(),
                    mode,
                    more: i + 1 < n,
                }));
            }
        }
        for c in pulled.bundle.chunks(PIECE) {
            hasher.update(c);
            pieces.push(Piece::Bundle(c.to_vec()));
        }
        pieces.push(Piece::Sha256(format!("{:x}", hasher.finalize())));
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for p in pieces {
                if tx.send(Ok(pb::HandoffPiece { piece: Some(p) })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn cancel_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = allow(&req, Scope::Submit, "CancelJob")?;
        let job = self.job(&req.into_inner().id)?;
        let id = JobId::parse(&job.id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        allow_job(&self.daemon.coord.store, &caller, &id, "CancelJob")?;
        self.daemon.cancel(&id).await.map_err(status)?;
        Ok(Response::new(self.job(&job.id)?))
    }
}

#[cfg(test)]
mod tests {
    use super::{REPLY_BUDGET, job_page};
    use crate::train::tests::{coordinator, repo, spec};

    /// A job whose tasks do not fit in one reply (tonic refuses a message over 4 MiB) comes in
    /// pages, each within the budget and none empty, that add up to every task once, in order.
    #[test]
    fn a_job_too_large_for_one_reply_comes_in_pages_that_fit() {
        use prost::Message;
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("repo");
        std::fs::create_dir_all(&src).expect("mkdir");
        let git = grove_git::Git::detect().expect("git");
        let (base, tips) = repo(&git, &src, 9, &[]);
        let (coord, job) = coordinator(&dir.path().join("home"), &src, spec(), &base, &tips);
        let row = coord.store.job(job.as_str()).expect("job");
        let mut tasks = coord.store.tasks(&job).expect("tasks");
        for t in &mut tasks {
            t.reason = Some("x".repeat(1 << 20));
        }
        let (mut seen, mut after, mut pages) = (Vec::new(), None::<u32>, 0);
        loop {
            let rest: Vec<_> = tasks.iter().filter(|t| after.is_none_or(|a| t.ord > a)).cloned().collect();
            let page = job_page(&row, &rest);
            pages += 1;
            assert!(page.encoded_len() <= REPLY_BUDGET, "a page of {} bytes", page.encoded_len());
            assert!(!page.tasks.is_empty(), "an empty page");
            after = page.tasks.last().map(|t| t.order);
            seen.extend(page.tasks.iter().map(|t| t.slug.clone()));
            if !page.more_tasks {
                break;
            }
        }
        assert!(pages >= 3, "{pages} pages for 9 MiB");
        assert_eq!(seen, tasks.iter().map(|t| t.slug.clone()).collect::<Vec<_>>());
    }
}
