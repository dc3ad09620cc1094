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
use crate::daemon::Daemon;
use crate::drive::Note;
use crate::store::{JobRow, StoreError, TaskRow};

/// The service; wrap it with [`with_token`] for a listener that needs a token.
pub struct Api {
    daemon: Arc<Daemon>,
}

impl Api {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Api { daemon }
    }
}

/// A server for `api` that, when `token` is set, refuses calls without
/// `authorization: Bearer <token>` (compared in constant time).
pub fn server(
    api: Api,
    token: Option<String>,
) -> tonic::service::interceptor::InterceptedService<
    CoordinatorServer<Api>,
    impl tonic::service::Interceptor + Clone,
> {
    let expected = token.map(|t| format!("Bearer {t}").into_bytes());
    CoordinatorServer::with_interceptor(api, move |req: Request<()>| {
        let Some(expected) = &expected else { return Ok(req) };
        let given = req.metadata().get("authorization").map(|v| v.as_bytes()).unwrap_or_default();
        if constant_time_eq(given, expected) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("a valid bearer token is required (--token-file / GROVE_TOKEN)"))
        }
    })
}

/// Equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn status(e: CoordError) -> Status {
    match &e {
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

pub fn job_pb(j: &JobRow, tasks: &[TaskRow]) -> pb::Job {
    pb::Job {
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
        parks: t.train.parks,
        parked_secs: t.train.parked_secs,
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
    }
    out
}

impl Api {
    fn task(&self, name: &str) -> Result<TaskRow, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("name a task: JOB/TASK or TASK"));
        }
        self.daemon.coord.store.find_task(name).map_err(|e| status(e.into()))
    }

    fn job_id(&self, id: &str) -> Result<JobId, Status> {
        let job = self
            .daemon
            .coord
            .store
            .job_or_latest((!id.is_empty()).then_some(id))
            .map_err(|e| status(e.into()))?;
        Ok(job.id)
    }

    fn job(&self, id: &str) -> Result<pb::Job, Status> {
        let store = &self.daemon.coord.store;
        let job = store.job_or_latest((!id.is_empty()).then_some(id)).map_err(|e| status(e.into()))?;
        let tasks = store.tasks(&job.id).map_err(|e| status(e.into()))?;
        Ok(job_pb(&job, &tasks))
    }
}

#[tonic::async_trait]
impl CoordinatorApi for Api {
    async fn submit_job(&self, req: Request<pb::SubmitJobRequest>) -> Result<Response<pb::Job>, Status> {
        let r = req.into_inner();
        let name = if r.spec_name.is_empty() { "job spec".to_owned() } else { r.spec_name };
        let job =
            self.daemon.submit(&name, &r.spec_toml, &PathBuf::from(r.base_dir)).await.map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    async fn plan_job(&self, req: Request<pb::SubmitJobRequest>) -> Result<Response<pb::PlanReply>, Status> {
        let r = req.into_inner();
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
        Ok(Response::new(self.job(&req.into_inner().id)?))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsReply>, Status> {
        let jobs = self.daemon.coord.store.jobs().map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListJobsReply { jobs: jobs.iter().map(|j| job_pb(j, &[])).collect() }))
    }

    type WatchJobStream = ReceiverStream<Result<pb::JobNote, Status>>;

    async fn watch_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let mut rx = self.daemon.subscribe();
        let r = req.into_inner();
        let job = self.job(&r.id)?;
        let (tx, out) = tokio::sync::mpsc::channel(256);
        let done = matches!(job.state.as_str(), "done" | "cancelled" | "paused");
        // Where each task stands now, for a watcher that comes late (a note that also comes
        // live may then be seen twice).
        let snapshot: Vec<pb::JobNote> = if r.snapshot {
            job.tasks
                .iter()
                .map(|t| {
                    let merged = t.merge == grove_core::task::MergeState::Merged.as_str();
                    pb::JobNote {
                        job: job.id.clone(),
                        task: t.slug.clone(),
                        kind: if merged { "merged" } else { "state" }.into(),
                        state: t.state.clone(),
                        stat: t.stat,
                        reason: if merged { t.merge_commit.clone() } else { t.reason.clone() },
                        paths: vec![],
                        turn: None,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        tokio::spawn(async move {
            for n in snapshot {
                if tx.send(Ok(n)).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
            loop {
                match rx.recv().await {
                    Ok(n) => {
                        let note = note_pb(&n);
                        if note.job != job.id {
                            continue;
                        }
                        let last = note.kind == "published";
                        if tx.send(Ok(note)).await.is_err() || last {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("a watcher missed {n} notes");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn cancel_task(&self, req: Request<pb::TaskRequest>) -> Result<Response<pb::Job>, Status> {
        let task = self.task(&req.into_inner().task)?;
        let job = self.daemon.cancel_task(&task).await.map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    async fn retry_task(&self, req: Request<pb::TaskRequest>) -> Result<Response<pb::Job>, Status> {
        let task = self.task(&req.into_inner().task)?;
        let job = self.daemon.retry(&task).await.map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    type StreamLogStream = ReceiverStream<Result<pb::LogChunk, Status>>;

    async fn stream_log(
        &self,
        req: Request<pb::LogRequest>,
    ) -> Result<Response<Self::StreamLogStream>, Status> {
        let r = req.into_inner();
        let task = self.task(&r.task)?;
        let (tx, out) = tokio::sync::mpsc::channel(64);
        let daemon = self.daemon.clone();
        let chunks = daemon.coord.bus.read_log(&task.job, &task.slug).await.map_err(|e| status(e.into()))?;
        tokio::spawn(async move {
            let result = match chunks {
                Some(chunks) => crate::logs::forward(&daemon.coord, &task, chunks, r.follow, &tx).await,
                None => crate::logs::tail_file(&daemon.coord, &task, r.follow, &tx).await,
            };
            if let Err(e) = result {
                let _ = tx.send(Err(status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersReply>, Status> {
        let workers = self.daemon.coord.bus.workers().await.map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListWorkersReply {
            workers: workers.iter().map(grove_bus::wire::worker_pb).collect(),
        }))
    }

    async fn merge_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = self.job_id(&req.into_inner().id)?;
        let job = self.daemon.merge(&id).map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    async fn discard_tasks(
        &self,
        req: Request<pb::DiscardRequest>,
    ) -> Result<Response<pb::DiscardReply>, Status> {
        let r = req.into_inner();
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
            for d in self.daemon.discard(job, slugs).map_err(status)? {
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
        let r = req.into_inner();
        let (job, task, _) = crate::review::variants_of(&self.daemon.coord.store, &r.task).map_err(status)?;
        let job = self.daemon.pick(&job.id, &task, &r.variant).map_err(status)?;
        Ok(Response::new(self.job(job.id.as_str())?))
    }

    async fn push_job(&self, req: Request<pb::PushRequest>) -> Result<Response<pb::PushReply>, Status> {
        let r = req.into_inner();
        let store = &self.daemon.coord.store;
        let job = store
            .job_or_latest((!r.job.is_empty()).then_some(r.job.as_str()))
            .map_err(|e| status(e.into()))?;
        let to = self.daemon.push(&job.id, r.remote.as_deref()).map_err(status)?;
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
        let name = req.into_inner().task;
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
        let r = req.into_inner();
        if r.task.is_empty() {
            return Err(Status::invalid_argument("name a task: JOB/TASK or TASK"));
        }
        let coord = self.daemon.coord.clone();
        let reply = tokio::task::spawn_blocking(move || -> Result<pb::DiffReply, CoordError> {
            let target = crate::review::DiffTarget::find(&coord.store, &coord.git, &r.task)?;
            let files = target
                .files(&coord.git)?
                .into_iter()
                .map(|f| pb::DiffFile { path: f.path, insertions: f.insertions, deletions: f.deletions })
                .collect();
            let text = target.text(&coord.git, r.stat_only, r.color)?;
            Ok(pb::DiffReply {
                job: target.job.id.to_string(),
                task: target.task.slug,
                base: target.base,
                head: target.head,
                text: text.into_bytes(),
                files,
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)?;
        Ok(Response::new(reply))
    }

    async fn cancel_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let job = self.job(&req.into_inner().id)?;
        let id = JobId::parse(&job.id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.daemon.cancel(&id).await.map_err(status)?;
        Ok(Response::new(self.job(&job.id)?))
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
    }
}
