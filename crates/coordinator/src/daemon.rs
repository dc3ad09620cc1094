//! The long-lived coordinator: the same steps as `drive`, for every job at once. Submitting
//! dispatches; one loop takes every event, records it, moves the train, and concludes a job
//! when its last attempt is over; cancellations get a grace period to be confirmed.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use grove_core::JobId;
use grove_core::spec::JobSpec;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::drive::Note;
use crate::rerun::Rerun;
use crate::store::{JobRow, TaskRow};
use crate::{CoordError, Coordinator};

/// How long running attempts get to confirm a cancellation.
const CANCEL_GRACE: Duration = Duration::from_secs(15);

pub struct Daemon {
    pub coord: Arc<Coordinator>,
    /// What a pod launcher reports about its pools (empty without one).
    pub board: Arc<crate::launch::Board>,
    notes: mpsc::UnboundedSender<Note>,
    watch: broadcast::Sender<Note>,
    /// Jobs being cancelled, and when their grace ends.
    cancelling: std::sync::Mutex<HashMap<JobId, Instant>>,
    /// Single tasks being cancelled, and when their grace ends.
    cancelling_tasks: std::sync::Mutex<HashMap<(JobId, String), Instant>>,
    /// Held while the merge train moves: the event loop and the review verbs (merge, pick)
    /// must not move one job's train at once (the second `update-ref` would fail its
    /// compare-and-swap).
    train_lock: std::sync::Mutex<()>,
}

impl Daemon {
    pub fn new(coord: Arc<Coordinator>) -> Arc<Daemon> {
        let (notes, mut rx) = mpsc::unbounded_channel::<Note>();
        let (watch, _) = broadcast::channel(4096);
        let forward = watch.clone();
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                let _ = forward.send(n);
            }
        });
        Arc::new(Daemon {
            coord,
            board: Arc::default(),
            notes,
            watch,
            cancelling: Default::default(),
            cancelling_tasks: Default::default(),
            train_lock: Default::default(),
        })
    }

    /// Notes about every job, for watchers.
    pub fn subscribe(&self) -> broadcast::Receiver<Note> {
        self.watch.subscribe()
    }

    /// Validate, plan, record and dispatch a job. `text` is the spec as TOML; relative paths
    /// in it are read from `base_dir`.
    pub async fn submit(&self, name: &str, text: &str, base_dir: &Path) -> Result<JobRow, CoordError> {
        let spec = JobSpec::from_toml(name, text)?;
        let coord = self.coord.clone();
        let (name, text, dir) = (name.to_owned(), text.to_owned(), base_dir.to_path_buf());
        let (job, _) = tokio::task::spawn_blocking(move || {
            let p = crate::submit::prepare(&coord.git, &coord.layout, spec, Some((&name, &text)), &dir)?;
            coord.submit(p)
        })
        .await
        .map_err(|e| CoordError::Io { what: "submitting".into(), source: std::io::Error::other(e) })??;
        self.coord.dispatch_pending(&job.id, None, &self.notes).await?;
        Ok(self.coord.store.job(job.id.as_str())?)
    }

    /// Validate and plan a job as `submit` would, recording nothing.
    pub async fn plan(
        &self,
        name: &str,
        text: &str,
        base_dir: &Path,
    ) -> Result<crate::submit::Prepared, CoordError> {
        let mut spec = JobSpec::from_toml(name, text)?;
        // A plan needs no agent; fill one in so validation passes when none was given.
        if spec.agent.kind.is_none() {
            spec.agent.kind = Some(grove_core::spec::AgentKind::Command);
            spec.agent.command = vec!["true".into()];
        }
        let coord = self.coord.clone();
        let (name, text, dir) = (name.to_owned(), text.to_owned(), base_dir.to_path_buf());
        tokio::task::spawn_blocking(move || {
            crate::submit::prepare(&coord.git, &coord.layout, spec, Some((&name, &text)), &dir)
        })
        .await
        .map_err(|e| CoordError::Io { what: "planning".into(), source: std::io::Error::other(e) })?
    }

    /// Cancel a job: workers stop its attempts; it ends when they confirm or the grace is over.
    pub async fn cancel(&self, job: &JobId) -> Result<JobRow, CoordError> {
        self.coord.begin_cancel(job, &self.notes).await?;
        if self.coord.store.all_terminal(job)? {
            return self.coord.conclude(job, true, &self.notes);
        }
        self.lock().insert(job.clone(), Instant::now() + CANCEL_GRACE);
        Ok(self.coord.store.job(job.as_str())?)
    }

    /// Cancel one task: its worker stops the attempt (it ends when the worker confirms or the
    /// grace is over); a task no worker has started is cancelled now. The rest of the job
    /// goes on.
    pub async fn cancel_task(&self, task: &TaskRow) -> Result<JobRow, CoordError> {
        let job = task.job.clone();
        if task.state.is_terminal() {
            return Err(CoordError::Refused {
                task: format!("{job}/{}", task.slug),
                why: format!("already {}; nothing to cancel", task.state.as_str()),
            });
        }
        let cancel = grove_bus::Cancel { job: job.clone(), task: Some(task.slug.clone()) };
        if let Err(e) = self.coord.bus.cancel(cancel).await {
            tracing::warn!("cannot send the cancellation: {e}");
        }
        if matches!(task.state, grove_core::TaskState::Queued | grove_core::TaskState::Parked) {
            self.coord.cancelled(&job, task, "cancelled before it started", &self.notes)?;
            self.coord.train(&job, &self.notes)?;
            self.conclude_if_over(&job)?;
        } else {
            self.task_lock().insert((job.clone(), task.slug.clone()), Instant::now() + CANCEL_GRACE);
        }
        Ok(self.coord.store.job(job.as_str())?)
    }

    /// Run a task again as a new attempt from the job's base (see [`Coordinator::rerun`]).
    pub async fn retry(&self, task: &TaskRow) -> Result<JobRow, CoordError> {
        if !task.state.is_terminal() {
            return Err(CoordError::Refused {
                task: format!("{}/{}", task.job, task.slug),
                why: format!("it is {}; cancel it first or wait for it to end", task.state.as_str()),
            });
        }
        // Under the train lock: a periodic collection (`Daemon::collect`) sees the job either
        // ended or running again, never half way.
        let slugs = {
            let _train = self.train_guard();
            self.coord.rerun(&task.job, &Rerun::Only(vec![task.slug.clone()]))?
        };
        let only: BTreeSet<String> = slugs.into_iter().collect();
        self.coord.dispatch_pending(&task.job, Some(&only), &self.notes).await?;
        Ok(self.coord.store.job(task.job.as_str())?)
    }

    /// `grove reply`: answer the question of a task that needs attention; its session resumes
    /// with the answer as a new attempt (see [`Coordinator::reply`]).
    pub async fn reply(&self, task: &TaskRow, answer: &str) -> Result<JobRow, CoordError> {
        {
            let _train = self.train_guard();
            self.coord.reply(&task.job, &task.slug, answer)?;
        }
        let only: BTreeSet<String> = [task.slug.clone()].into_iter().collect();
        self.coord.dispatch_pending(&task.job, Some(&only), &self.notes).await?;
        Ok(self.coord.store.job(task.job.as_str())?)
    }

    /// `grove merge`: a manual job's checked branches merge now, in order; a job whose merging
    /// stopped goes on. Redos the train queues are dispatched; the job ends (and publishes)
    /// when they are over.
    pub fn merge(&self, job: &JobId) -> Result<JobRow, CoordError> {
        let _train = self.train_guard();
        self.coord.approve_merge(job)?;
        self.settle(job)
    }

    /// `grove pick`: that variant merges in its place; the others are discarded.
    pub fn pick(&self, job: &JobId, task: &str, variant: &str) -> Result<JobRow, CoordError> {
        let _train = self.train_guard();
        self.coord.pick(job, task, variant)?;
        self.settle(job)
    }

    /// `grove coordinator --gc-every`: collect ended jobs ([`crate::gc::collect`]) under the
    /// train lock, so no event, review verb or retry changes a job while it is collected. The
    /// daemon holds the home's lock, which `grove gc` would need.
    pub fn collect(&self, policy: &crate::gc::Policy) -> Result<crate::gc::Report, CoordError> {
        let _train = self.train_guard();
        let c = &self.coord;
        crate::gc::collect(&c.store, &c.git, &c.layout, policy, crate::timers::unix_now(), &mut |line| {
            tracing::debug!("gc: {line}")
        })
    }

    /// `grove discard`: see [`Coordinator::discard`].
    pub fn discard(&self, job: &JobId, slugs: &[String]) -> Result<Vec<crate::review::Discard>, CoordError> {
        let _train = self.train_guard();
        tokio::task::block_in_place(|| self.coord.discard(job, slugs))
    }

    /// `grove push`: see [`Coordinator::push`].
    pub fn push(&self, job: &JobId, remote: Option<&str>) -> Result<String, CoordError> {
        tokio::task::block_in_place(|| self.coord.push(job, remote))
    }

    /// After a review verb changed what the train may do: move it (its notes go to watchers),
    /// and publish when nothing of the job runs any more; a job with redos in flight runs
    /// again, and the event loop concludes it when they end.
    fn settle(&self, job: &JobId) -> Result<JobRow, CoordError> {
        self.coord.train(job, &self.notes)?;
        let row = self.coord.store.job(job.as_str())?;
        if self.coord.store.all_terminal(job)? {
            if row.state == "running" {
                return self.coord.conclude(job, false, &self.notes);
            }
            self.coord.publish(job, &self.notes)?;
        } else if row.state != "running" {
            self.coord.store.set_job_state(job, "running")?;
        }
        Ok(self.coord.store.job(job.as_str())?)
    }

    fn train_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.train_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conclude_if_over(&self, job: &JobId) -> Result<(), CoordError> {
        if self.coord.store.nothing_in_flight(job)? && self.coord.store.job(job.as_str())?.state == "running"
        {
            let cancelled = self.lock().remove(job).is_some();
            self.coord.conclude(job, cancelled, &self.notes)?;
        }
        Ok(())
    }

    fn task_lock(&self) -> std::sync::MutexGuard<'_, HashMap<(JobId, String), Instant>> {
        self.cancelling_tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Instant>> {
        self.cancelling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take events until `stop` fires. Jobs that were running when the daemon last stopped
    /// get their never-dispatched tasks dispatched; attempts already on the bus stay there.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<(), CoordError> {
        for job in self.coord.store.jobs()?.into_iter().filter(|j| j.state == "running") {
            let fresh: BTreeSet<String> = self
                .coord
                .store
                .tasks(&job.id)?
                .into_iter()
                .filter(|t| t.attempt == 0)
                .map(|t| t.slug)
                .collect();
            if !fresh.is_empty() {
                self.coord.dispatch_pending(&job.id, Some(&fresh), &self.notes).await?;
            }
            let resent = self.coord.resend_unconfirmed(&job.id).await?;
            if !resent.is_empty() {
                tracing::info!(job = %job.id, "sent again after a restart: {}", resent.join(", "));
            }
            // Merges recorded in the branch but not in the state, and tasks that ended while
            // the coordinator was away, move the train now.
            self.coord.train(&job.id, &self.notes)?;
            self.conclude_if_over(&job.id)?;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                ev = self.coord.bus.next_event() => {
                    let ev = ev?;
                    let done = {
                        let _train = self.train_guard();
                        self.coord.handle_event(&ev, &self.notes)?
                    };
                    if let Some(slug) = done {
                        self.task_lock().remove(&(ev.job.clone(), slug));
                        self.conclude_if_over(&ev.job)?;
                    }
                }
                _ = tick.tick() => {
                    // Deadlines, backoffs and parked tasks of every running job.
                    for job in self.coord.store.jobs()?.into_iter().filter(|j| j.state == "running") {
                        match self.coord.tick(&job.id, &self.notes).await {
                            Ok(true) => self.conclude_if_over(&job.id)?,
                            Ok(false) => {}
                            // Read again at the next tick (NATS away for a moment).
                            Err(e) => tracing::warn!(job = %job.id, "timers: {e}"),
                        }
                    }
                    let due: Vec<JobId> = {
                        let now = Instant::now();
                        self.lock().iter().filter(|(_, t)| **t <= now).map(|(j, _)| j.clone()).collect()
                    };
                    for job in due {
                        self.lock().remove(&job);
                        self.coord.end_cancel(&job, &self.notes)?;
                        self.coord.conclude(&job, true, &self.notes)?;
                    }
                    let due: Vec<(JobId, String)> = {
                        let now = Instant::now();
                        self.task_lock().iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect()
                    };
                    for (job, slug) in due {
                        self.task_lock().remove(&(job.clone(), slug.clone()));
                        if let Some(t) = self.coord.store.task(&job, &slug)?
                            && !t.state.is_terminal()
                        {
                            self.coord.cancelled(&job, &t, "cancelled; its worker did not confirm in time", &self.notes)?;
                            self.coord.train(&job, &self.notes)?;
                            self.conclude_if_over(&job)?;
                        }
                    }
                }
            }
        }
    }
}
