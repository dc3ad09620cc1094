//! The long-lived coordinator: the same steps as `drive`, for every job at once.
//!
//! - One event loop takes every event of the jobs this coordinator follows and records it (a
//!   SQLite write): it never waits for a train. When an attempt ends, the job's train is asked
//!   to move ([`Daemon::kick`]).
//! - Each job's train moves in a blocking thread of its own, under that job's lock
//!   ([`Coordinator::job_lock`]), so one job's 30-minute integration check holds up nothing of
//!   the others; requests that come while it moves make it move once more afterwards. The
//!   job is concluded (and published) there too, when its last attempt is over.
//! - A failure of one job (recording its event, moving its train, publishing it) stops that
//!   job's merging with the reason recorded (`grove status`, a `stopped` note to watchers);
//!   `grove merge` goes on. It never stops the daemon, at start either.
//! - A cancellation ends the job's running integration check (its process group) at once;
//!   running attempts get a grace period to confirm.
//! - Every note to watchers is journaled first ([`crate::journal`]), so followers resume, and
//!   handed to the notifier ([`crate::notify`]), which tells people what needs them.

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
use crate::journal::Journaled;
use crate::notify::Notifier;
use crate::rerun::Rerun;
use crate::store::{JobRow, TaskRow};
use crate::{CoordError, Coordinator};

/// How long running attempts get to confirm a cancellation.
const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// How long a stopping daemon waits for notifications not tried yet.
const NOTIFY_GRACE: Duration = Duration::from_secs(5);

/// How often the clocks of running jobs are looked at.
const TICK: Duration = Duration::from_millis(500);

type Shared<T> = std::sync::Mutex<T>;

fn held<T>(m: &Shared<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Daemon {
    pub coord: Arc<Coordinator>,
    /// What a pod launcher reports about its pools (empty without one).
    pub board: Arc<crate::launch::Board>,
    notes: mpsc::UnboundedSender<Note>,
    /// Sends what a person should hear of the notes, to their jobs' `[notify]` sinks.
    notifier: Arc<Notifier>,
    watch: broadcast::Sender<Journaled>,
    /// Jobs being cancelled, and when their grace ends (`None`: it has).
    cancelling: Shared<HashMap<JobId, Option<Instant>>>,
    /// Single tasks being cancelled, and when their grace ends.
    cancelling_tasks: Shared<HashMap<(JobId, String), Instant>>,
    /// Jobs whose train moves now; `true`: once more when it is done.
    movers: Shared<HashMap<JobId, bool>>,
    /// Ended jobs a review verb changed, and the state they had: they run until their train
    /// has moved, then go back to it and are published again.
    republish: Shared<HashMap<JobId, String>>,
    /// Fired when the daemon stops: movers start no new train.
    stopping: CancellationToken,
}

impl Daemon {
    pub fn new(coord: Arc<Coordinator>) -> Arc<Daemon> {
        let (watch, _) = broadcast::channel(4096);
        let forward = watch.clone();
        let notifier = Notifier::start(coord.clone());
        // The journal is written in order, by one thread: a note's number is its place.
        let notes = crate::journal::writer(coord.clone(), Some(notifier.clone()), move |j| {
            let _ = forward.send(j);
        });
        Arc::new(Daemon {
            coord,
            notifier,
            board: Arc::default(),
            notes,
            watch,
            cancelling: Default::default(),
            cancelling_tasks: Default::default(),
            movers: Default::default(),
            republish: Default::default(),
            stopping: CancellationToken::new(),
        })
    }

    /// Fires when the daemon stops: streams to followers end (they connect again).
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Journaled notes about every job, for watchers, as they come.
    pub fn subscribe(&self) -> broadcast::Receiver<Journaled> {
        self.watch.subscribe()
    }

    /// Validate, plan, record and dispatch a job. `text` is the spec as TOML; relative paths
    /// in it are read from `base_dir`.
    pub async fn submit(
        self: &Arc<Self>,
        name: &str,
        text: &str,
        base_dir: &Path,
    ) -> Result<JobRow, CoordError> {
        let spec = JobSpec::from_toml(name, text)?;
        if !spec.repos.is_empty() {
            return self.submit_group(spec, name, text, base_dir).await;
        }
        let coord = self.coord.clone();
        let (name, text, dir) = (name.to_owned(), text.to_owned(), base_dir.to_path_buf());
        let (job, _) = tokio::task::spawn_blocking(move || {
            let p = crate::submit::prepare(&coord.git, &coord.layout, spec, Some((&name, &text)), &dir)?;
            coord.submit(p)
        })
        .await
        .map_err(|e| CoordError::Io { what: "submitting".into(), source: std::io::Error::other(e) })??;
        self.coord.dispatch_pending(&job.id, None, &self.notes).await?;
        self.kick(&job.id);
        Ok(self.coord.store.job(job.id.as_str())?)
    }

    /// A cross-repository job: every repository prepared and recorded (`group`), those that
    /// need none started. Returns the first repository's job (its `repo` names the group).
    async fn submit_group(
        self: &Arc<Self>,
        spec: JobSpec,
        name: &str,
        text: &str,
        base_dir: &Path,
    ) -> Result<JobRow, CoordError> {
        let coord = self.coord.clone();
        let (name, text, dir) = (name.to_owned(), text.to_owned(), base_dir.to_path_buf());
        let members = tokio::task::spawn_blocking(move || {
            let g = crate::group::prepare(&coord.git, &coord.layout, spec, Some((&name, &text)), &dir)?;
            coord.submit_group(g)
        })
        .await
        .map_err(|e| CoordError::Io { what: "submitting".into(), source: std::io::Error::other(e) })??;
        let Some(first) = members.first().map(|(j, _)| j.clone()) else {
            return Err(CoordError::Refused {
                task: "[[repos]]".into(),
                why: "the job has no repository".into(),
            });
        };
        if let Some(r) = &first.repo {
            self.start_repos(&r.group).await?;
        }
        Ok(self.coord.store.job(first.id.as_str())?)
    }

    /// Start the repositories of `group` whose upstreams all merged (cancelling those whose
    /// upstream did not): their tasks are dispatched and followed.
    pub async fn start_repos(self: &Arc<Self>, group: &JobId) -> Result<(), CoordError> {
        let ready = tokio::task::block_in_place(|| self.coord.start_ready(group, &self.notes))?;
        for job in ready {
            self.coord.dispatch_pending(&job, None, &self.notes).await?;
            self.kick(&job);
        }
        Ok(())
    }

    /// A hand-off (`grove handoff`): a new one-task job on the snapshot, or, for a pulled task
    /// handed back, its next attempt. Returns the job and the task's slug.
    pub async fn handoff(
        self: &Arc<Self>,
        inc: crate::handoff::Incoming,
    ) -> Result<(JobRow, String), CoordError> {
        let (job, slug) = match (inc.task.clone(), inc.job.clone()) {
            (None, Some(id)) => {
                let id = self.coord.store.job(&id)?.id;
                let slug = self.with_job(&id, move |c, job| c.add_to(job, &inc)).await?;
                (id, slug)
            }
            (None, None) => {
                let spec = JobSpec::from_toml("hand-off", &inc.spec_toml)?;
                let coord = self.coord.clone();
                tokio::task::spawn_blocking(move || {
                    let p = crate::submit::prepare(
                        &coord.git,
                        &coord.layout,
                        spec,
                        Some(("hand-off", &inc.spec_toml)),
                        &inc.base_dir,
                    )?;
                    let (job, tasks) = coord.submit(p)?;
                    let slug = match tasks.as_slice() {
                        [t] => t.slug.clone(),
                        _ => {
                            return Err(CoordError::Refused {
                                task: job.id.to_string(),
                                why: format!("a hand-off is one task; the spec made {}", tasks.len()),
                            });
                        }
                    };
                    coord.receive(&job, &slug, &inc, 1)?;
                    Ok((job.id, slug))
                })
                .await
                .map_err(|e| CoordError::Io {
                    what: "a hand-off".into(),
                    source: std::io::Error::other(e),
                })??
            }
            (Some(name), _) => {
                let t = self.coord.store.find_task(&name)?;
                let slug = t.slug.clone();
                let s2 = slug.clone();
                self.with_job(&t.job, move |c, job| c.hand_back(job, &s2, &inc)).await?;
                (t.job, slug)
            }
        };
        let only: BTreeSet<String> = [slug.clone()].into_iter().collect();
        self.coord.dispatch_pending(&job, Some(&only), &self.notes).await?;
        self.kick(&job);
        Ok((self.coord.store.job(job.as_str())?, slug))
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

    /// Cancel a job: its running integration check ends now, workers stop its attempts; it
    /// ends when they confirm or the grace is over. Returns at once.
    pub async fn cancel(self: &Arc<Self>, job: &JobId) -> Result<JobRow, CoordError> {
        if self.coord.store.job(job.as_str())?.state == "waiting" {
            // A repository that never started: cancelled now, and its dependents with it.
            tokio::task::block_in_place(|| {
                self.coord.cancel_repo(job, "cancelled before it started", &self.notes)
            })?;
            return Ok(self.coord.store.job(job.as_str())?);
        }
        self.coord.stop_checks(job);
        self.coord.begin_cancel(job, &self.notes).await?;
        let deadline =
            Instant::now() + if self.coord.store.all_terminal(job)? { Duration::ZERO } else { CANCEL_GRACE };
        held(&self.cancelling).insert(job.clone(), Some(deadline));
        // Concluded (as cancelled) by its train's mover once nothing runs.
        self.kick(job);
        Ok(self.coord.store.job(job.as_str())?)
    }

    /// Cancel one task: its worker stops the attempt (it ends when the worker confirms or the
    /// grace is over); a task no worker has started is cancelled now. The rest of the job
    /// goes on.
    pub async fn cancel_task(self: &Arc<Self>, task: &TaskRow) -> Result<JobRow, CoordError> {
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
            self.kick(&job);
        } else {
            held(&self.cancelling_tasks)
                .insert((job.clone(), task.slug.clone()), Instant::now() + CANCEL_GRACE);
        }
        Ok(self.coord.store.job(job.as_str())?)
    }

    /// Run a task again as a new attempt from the job's base (see [`Coordinator::rerun`]).
    pub async fn retry(self: &Arc<Self>, task: &TaskRow) -> Result<JobRow, CoordError> {
        if !task.state.is_terminal() {
            return Err(CoordError::Refused {
                task: format!("{}/{}", task.job, task.slug),
                why: format!("it is {}; cancel it first or wait for it to end", task.state.as_str()),
            });
        }
        // Under the job's lock: its train and a periodic collection (`Daemon::collect`) see
        // the task either ended or queued again, never half way.
        let slug = task.slug.clone();
        let slugs = self.with_job(&task.job, move |c, job| c.rerun(job, &Rerun::Only(vec![slug]))).await?;
        let only: BTreeSet<String> = slugs.into_iter().collect();
        self.coord.dispatch_pending(&task.job, Some(&only), &self.notes).await?;
        self.kick(&task.job);
        Ok(self.coord.store.job(task.job.as_str())?)
    }

    /// `grove reply`: answer the question of a task that needs attention; its session resumes
    /// with the answer as a new attempt (see [`Coordinator::reply`]).
    pub async fn reply(self: &Arc<Self>, task: &TaskRow, answer: &str) -> Result<JobRow, CoordError> {
        // Under the job's lock, as a retry: the train sees the task waiting or queued again.
        let (slug, answer) = (task.slug.clone(), answer.to_owned());
        self.with_job(&task.job, move |c, job| c.reply(job, &slug, &answer)).await?;
        let only: BTreeSet<String> = [task.slug.clone()].into_iter().collect();
        self.coord.dispatch_pending(&task.job, Some(&only), &self.notes).await?;
        self.kick(&task.job);
        Ok(self.coord.store.job(task.job.as_str())?)
    }

    /// `grove merge`: a manual job's checked branches merge now, in order; a job whose merging
    /// stopped goes on. Returns at once: the train moves (and the job publishes) in the
    /// background, its notes reach watchers.
    pub async fn merge(self: &Arc<Self>, job: &JobId) -> Result<JobRow, CoordError> {
        self.coord.approve_merge(job)?;
        self.coord.resume_checks(job);
        self.coord.clear_cancelling(job);
        self.after_verb(job).await
    }

    /// `grove pick`: that variant merges in its place; the others are discarded.
    pub async fn pick(
        self: &Arc<Self>,
        job: &JobId,
        task: &str,
        variant: &str,
    ) -> Result<JobRow, CoordError> {
        let (task, variant) = (task.to_owned(), variant.to_owned());
        self.with_job(job, move |c, job| c.pick(job, &task, &variant)).await?;
        self.coord.resume_checks(job);
        self.after_verb(job).await
    }

    /// `grove discard`: see [`Coordinator::discard`]; under the job's lock.
    pub async fn discard(
        self: &Arc<Self>,
        job: &JobId,
        slugs: &[String],
    ) -> Result<Vec<crate::review::Discard>, CoordError> {
        let slugs = slugs.to_vec();
        let done = self.with_job(job, move |c, job| c.discard(job, &slugs)).await?;
        self.after_verb(job).await?;
        Ok(done)
    }

    /// `grove push`: see [`Coordinator::push`].
    pub async fn push(&self, job: &JobId, remote: Option<&str>) -> Result<String, CoordError> {
        let (coord, job, remote) = (self.coord.clone(), job.clone(), remote.map(str::to_owned));
        tokio::task::spawn_blocking(move || coord.push(&job, remote.as_deref()))
            .await
            .map_err(|e| CoordError::Io { what: "pushing".into(), source: std::io::Error::other(e) })?
    }

    /// `grove coordinator --gc-every`: collect ended jobs ([`crate::gc::collect`]), each under
    /// its own lock only while it is collected, so no event, review verb or retry changes a
    /// job while it is collected and every other job goes on. The daemon holds the home's
    /// lock, which `grove gc` would need.
    pub fn collect(&self, policy: &crate::gc::Policy) -> Result<crate::gc::Report, CoordError> {
        let c = &self.coord;
        let lock = |job: &JobId| Some(c.job_lock(job));
        crate::gc::collect_locking(
            &c.store,
            &c.git,
            &c.layout,
            policy,
            crate::timers::unix_now(),
            &lock,
            &mut |line| tracing::debug!("gc: {line}"),
        )
    }

    /// Run `f` on the job under its lock, in a blocking thread (the lock may be held by a
    /// train running a long check).
    async fn with_job<T: Send + 'static>(
        &self,
        job: &JobId,
        f: impl FnOnce(&Coordinator, &JobId) -> Result<T, CoordError> + Send + 'static,
    ) -> Result<T, CoordError> {
        let (coord, job) = (self.coord.clone(), job.clone());
        tokio::task::spawn_blocking(move || {
            let lock = coord.job_lock(&job);
            let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
            f(&coord, &job)
        })
        .await
        .map_err(|e| CoordError::Io { what: "a review verb".into(), source: std::io::Error::other(e) })?
    }

    /// After a review verb changed what the train may do: an ended job runs again until its
    /// train has moved (so its followers follow that), then publishes and goes back to its
    /// state; the mover does both. Looked at under the job's lock: a mover ending the job
    /// (publishing, then going back to its state) is done first, so a job about to end is
    /// seen ended and runs again, not left ended with the verb's merges undone.
    async fn after_verb(self: &Arc<Self>, job: &JobId) -> Result<JobRow, CoordError> {
        let me = self.clone();
        self.with_job(job, move |c, job| {
            let row = c.store.job(job.as_str())?;
            if row.state != "running" {
                held(&me.republish).entry(job.clone()).or_insert(row.state.clone());
                c.store.set_job_state(job, "running")?;
            }
            Ok(())
        })
        .await?;
        self.kick(job);
        Ok(self.coord.store.job(job.as_str())?)
    }

    /// Ask `job`'s train to move: now, in a blocking thread of its own, or, when it is moving
    /// already, once more when it is done. The event loop never waits for it.
    pub fn kick(self: &Arc<Self>, job: &JobId) {
        {
            let mut movers = held(&self.movers);
            if let Some(again) = movers.get_mut(job) {
                *again = true;
                return;
            }
            movers.insert(job.clone(), false);
        }
        let (me, job) = (self.clone(), job.clone());
        tokio::spawn(async move {
            loop {
                if me.stopping.is_cancelled() {
                    held(&me.movers).remove(&job);
                    return;
                }
                let (d, j) = (me.clone(), job.clone());
                let moved = tokio::task::spawn_blocking(move || d.move_once(&j)).await;
                let failed = match moved {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(format!("the train's thread failed: {e}")),
                };
                if let Some(why) = failed {
                    // Ended first (when nothing of it runs), so watchers that hear of the
                    // stop find the job over.
                    me.end_stopped(&job);
                    me.stop_job(&job, &format!("moving the merge train: {why}"));
                }
                let mut movers = held(&me.movers);
                match movers.get_mut(&job) {
                    Some(again) if *again => *again = false,
                    _ => {
                        movers.remove(&job);
                        return;
                    }
                }
            }
        });
    }

    /// Move the job's train once, under its lock, and conclude the job when nothing of it runs
    /// any more (cancelled if it was being cancelled); an ended job a review verb changed is
    /// published again.
    fn move_once(&self, job: &JobId) -> Result<(), CoordError> {
        let lock = self.coord.job_lock(job);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let c = &self.coord;
        c.train_held(job, &self.notes)?;
        let row = c.store.job(job.as_str())?;
        if row.state != "running" || !c.store.nothing_in_flight(job)? {
            return Ok(());
        }
        let before = held(&self.republish).get(job).cloned();
        if let Some(state) = before {
            // An ended job a review verb changed: published again, then as it was (a
            // follower that sees it over finds the branches published; one that fails to
            // publish is ended as it was by `end_stopped`).
            c.publish(job, &self.notes)?;
            held(&self.republish).remove(job);
            c.store.set_job_state(job, &state)?;
        } else {
            // Still in `cancelling` should it fail: `end_stopped` ends it cancelled.
            let cancelling = held(&self.cancelling).contains_key(job);
            let ended = c.conclude_held(job, cancelling, &self.notes)?;
            held(&self.cancelling).remove(job);
            // A repository of a cross-repository job ended: the ones that waited for it go
            // (or are cancelled, saying why).
            if let Some(r) = &ended.repo {
                for next in c.start_ready(&r.group, &self.notes)? {
                    crate::train::block_on(c.dispatch_pending(&next, None, &self.notes))??;
                }
            }
        }
        if let Err(e) = crate::train::block_on(c.bus.unfollow(std::slice::from_ref(job)))? {
            tracing::debug!(%job, "no longer following the job's events: {e}");
        }
        Ok(())
    }

    /// A job whose train failed and of which nothing runs any more ends (as it was before a
    /// review verb, else done), so its followers end; its merging stays stopped with why.
    fn end_stopped(&self, job: &JobId) {
        let c = &self.coord;
        let over = c.store.nothing_in_flight(job).unwrap_or(false);
        let running = c.store.job(job.as_str()).is_ok_and(|r| r.state == "running");
        if !(over && running) {
            return;
        }
        let state = held(&self.republish).remove(job).unwrap_or_else(|| {
            if held(&self.cancelling).remove(job).is_some() { "cancelled".into() } else { "done".into() }
        });
        match c.store.set_job_state(job, &state) {
            Ok(()) => {
                let _ = self.notes.send(Note::Ended { job: job.clone(), state });
            }
            Err(e) => tracing::error!(%job, "ending a job whose merging stopped: {e}"),
        }
    }

    /// One job failed (not the daemon): its merging stops with `why`, recorded for `grove
    /// status` and sent to watchers; `grove merge JOB` goes on from there.
    fn stop_job(&self, job: &JobId, why: &str) {
        tracing::warn!(%job, "stopping the job's merging: {why}");
        let stop = format!("{why}; fix it, then `grove merge {job}`");
        if let Err(e) = self.coord.store.set_merge_stopped(job, Some(&stop)) {
            tracing::error!(%job, "recording why the job's merging stopped: {e}");
        }
        let _ = self.notes.send(Note::Stopped { job: job.clone(), reason: stop });
    }

    /// Take events until `stop` fires. Jobs that were running when the daemon last stopped
    /// are followed again, get their never-dispatched tasks dispatched (attempts already on
    /// the bus stay there) and their trains moved; a job that cannot is stopped, not the
    /// daemon. Returns an error only when the bus is gone for good.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<(), CoordError> {
        let running = self.coord.store.jobs_in("running")?;
        let ids: Vec<JobId> = running.iter().map(|j| j.id.clone()).collect();
        self.coord.bus.follow(&ids).await?;
        for job in &running {
            if let Err(e) = self.resume(&job.id).await {
                self.stop_job(&job.id, &format!("resuming after a restart: {e}"));
            }
            // Merges recorded in the branch but not in the state, and tasks that ended while
            // the coordinator was away, move the train (in the background).
            self.kick(&job.id);
        }
        // Cross-repository jobs whose next repositories had not been started when the last
        // daemon stopped.
        let mut groups: BTreeSet<JobId> = BTreeSet::new();
        for j in self.coord.store.jobs_in("waiting")? {
            groups.extend(j.repo.map(|r| r.group));
        }
        for g in groups {
            if let Err(e) = self.start_repos(&g).await {
                tracing::warn!(group = %g, "starting the repositories that waited: {e}");
            }
        }
        // What an earlier daemon recorded and did not get through.
        self.notifier.resume();
        let result = self.serve(&stop).await;
        self.stopping.cancel();
        self.coord.stop();
        self.notifier.flush(NOTIFY_GRACE).await;
        result
    }

    async fn resume(&self, job: &JobId) -> Result<(), CoordError> {
        let fresh: BTreeSet<String> =
            self.coord.store.tasks(job)?.into_iter().filter(|t| t.attempt == 0).map(|t| t.slug).collect();
        if !fresh.is_empty() {
            self.coord.dispatch_pending(job, Some(&fresh), &self.notes).await?;
        }
        let resent = self.coord.resend_unconfirmed(job).await?;
        if !resent.is_empty() {
            tracing::info!(%job, "sent again after a restart: {}", resent.join(", "));
        }
        Ok(())
    }

    async fn serve(self: &Arc<Self>, stop: &CancellationToken) -> Result<(), CoordError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bus_down = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                ev = self.coord.bus.next_event() => match ev {
                    Ok(ev) => {
                        bus_down = Duration::from_millis(100);
                        self.take(&ev);
                    }
                    Err(grove_bus::BusError::Closed) => return Err(grove_bus::BusError::Closed.into()),
                    Err(e) => {
                        tracing::warn!("reading events: {e}; again in {bus_down:?}");
                        tokio::select! {
                            () = stop.cancelled() => return Ok(()),
                            () = tokio::time::sleep(bus_down) => {}
                        }
                        bus_down = (bus_down * 2).min(Duration::from_secs(5));
                    }
                },
                _ = tick.tick() => self.clocks().await,
            }
        }
    }

    /// Record one event (no train moves here); an attempt that ended moves its job's train.
    fn take(self: &Arc<Self>, ev: &grove_core::task::TaskEvent) {
        let recorded = tokio::task::block_in_place(|| self.coord.record(ev, &self.notes));
        match recorded {
            Ok(Some(slug)) => {
                held(&self.cancelling_tasks).remove(&(ev.job.clone(), slug));
                self.kick(&ev.job);
            }
            Ok(None) => {}
            Err(e) => self.stop_job(&ev.job, &format!("recording an event of {}: {e}", ev.task)),
        }
    }

    /// Deadlines, backoffs and parked tasks of every running job, and cancellations whose
    /// grace is over. A job whose clocks cannot be read is looked at again at the next tick.
    async fn clocks(self: &Arc<Self>) {
        let running = match self.coord.store.jobs_in("running") {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("timers: {e}");
                return;
            }
        };
        for job in running {
            match self.coord.tick(&job.id, &self.notes).await {
                Ok(true) => self.kick(&job.id),
                Ok(false) => {}
                Err(e) => tracing::warn!(job = %job.id, "timers: {e}"),
            }
        }
        let now = Instant::now();
        let due: Vec<JobId> = held(&self.cancelling)
            .iter_mut()
            .filter(|(_, t)| t.is_some_and(|t| t <= now))
            .map(|(j, t)| {
                *t = None;
                j.clone()
            })
            .collect();
        for job in due {
            // Still in `cancelling`: the mover concludes it as cancelled.
            if let Err(e) = self.coord.end_cancel(&job, &self.notes) {
                self.stop_job(&job, &format!("ending the cancellation: {e}"));
            }
            self.kick(&job);
        }
        let due: Vec<(JobId, String)> =
            held(&self.cancelling_tasks).iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        for (job, slug) in due {
            held(&self.cancelling_tasks).remove(&(job.clone(), slug.clone()));
            let ended = (|| -> Result<bool, CoordError> {
                match self.coord.store.task(&job, &slug)? {
                    Some(t) if !t.state.is_terminal() => {
                        self.coord.cancelled(
                            &job,
                            &t,
                            "cancelled; its worker did not confirm in time",
                            &self.notes,
                        )?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })();
            match ended {
                Ok(true) => self.kick(&job),
                Ok(false) => {}
                Err(e) => self.stop_job(&job, &format!("ending the cancellation of {slug}: {e}")),
            }
        }
    }
}
