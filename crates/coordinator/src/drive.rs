//! Driving a job: dispatch its tasks, take the workers' events, keep the store true, move the
//! merge train, and publish grove's branches back to a local source repository at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use grove_core::spec::{KeepWorktrees, defaults};
use grove_core::task::{Assignment, EventKind, MergeState, TaskEvent, TaskOutcome};
use grove_core::{DiffStat, JobId, TaskState, placement};
use grove_git::{Mirror, Source};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::store::{JobRow, TaskRow};
use crate::{CoordError, Coordinator};

/// How long running attempts get to stop after a cancellation before they are recorded as
/// cancelled anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// How often the driver looks at its tasks' clocks (deadlines, backoffs, parked tasks).
pub(crate) const TICK: Duration = Duration::from_millis(500);

/// What happened, for whoever watches (the CLI's progress display).
#[derive(Debug, Clone)]
pub enum Note {
    Dispatched {
        job: JobId,
        task: String,
        attempt: u32,
    },
    State {
        job: JobId,
        task: String,
        state: TaskState,
        turn: Option<u32>,
    },
    Checkpoint {
        job: JobId,
        task: String,
        turn: u32,
        stat: DiffStat,
    },
    Finished {
        job: JobId,
        task: String,
        state: TaskState,
        stat: DiffStat,
        reason: Option<String>,
    },
    /// Merged into the integration branch (`commit` is `None` when there was nothing to merge).
    Merged {
        job: JobId,
        task: String,
        commit: Option<String>,
    },
    Conflict {
        job: JobId,
        task: String,
        paths: Vec<String>,
    },
    /// The branch conflicted and the task goes again on top of the integration head.
    Redo {
        job: JobId,
        task: String,
        paths: Vec<String>,
    },
    /// The integration check failed with this task's merge; it was set aside.
    CheckFailed {
        job: JobId,
        task: String,
        output: String,
    },
    /// grove's branches were fetched into the source repository; `skipped` were checked out there.
    Published {
        job: JobId,
        branches: usize,
        skipped: Vec<String>,
    },
    /// The job's merging stopped: its train could not move (`grove merge` goes on).
    Stopped {
        job: JobId,
        reason: String,
    },
    /// The job ended: its attempts are over, its train settled and its branches published;
    /// `state` is what it was recorded as (`done`, `cancelled` or `paused`).
    Ended {
        job: JobId,
        state: String,
    },
}

impl Note {
    /// The job the note is about.
    pub fn job(&self) -> &JobId {
        match self {
            Note::Dispatched { job, .. }
            | Note::State { job, .. }
            | Note::Checkpoint { job, .. }
            | Note::Finished { job, .. }
            | Note::Merged { job, .. }
            | Note::Conflict { job, .. }
            | Note::Redo { job, .. }
            | Note::CheckFailed { job, .. }
            | Note::Published { job, .. }
            | Note::Stopped { job, .. }
            | Note::Ended { job, .. } => job,
        }
    }
}

impl Coordinator {
    /// Run `job` until every task that has not ended (or, with `only`, every such task named
    /// there) has ended and the merge train has settled, or until `cancel` fires (then running
    /// attempts are stopped and recorded as cancelled). Tasks caught mid-attempt by an earlier
    /// crash are dispatched again as a new attempt.
    pub async fn drive(
        &self,
        job: &JobId,
        only: Option<&BTreeSet<String>>,
        cancel: CancellationToken,
        notes: UnboundedSender<Note>,
    ) -> Result<JobRow, CoordError> {
        let mut rows = self.drive_jobs(std::slice::from_ref(job), only, cancel, notes).await?;
        rows.pop().ok_or_else(|| CoordError::Store(crate::store::StoreError::NoJob(job.to_string())))
    }

    /// [`Coordinator::drive`] for several jobs at once (the repositories of one level of a
    /// cross-repository job): one event loop, so no job's events wait for another's; each job
    /// is concluded when its own tasks have ended. Returns the jobs as they ended, in the order
    /// given.
    pub async fn drive_jobs(
        &self,
        jobs: &[JobId],
        only: Option<&BTreeSet<String>>,
        cancel: CancellationToken,
        notes: UnboundedSender<Note>,
    ) -> Result<Vec<JobRow>, CoordError> {
        for job in jobs {
            self.dispatch_pending(job, only, &notes).await?;
            // Tasks that ended while no coordinator ran (a resumed job) merge now.
            self.train(job, &notes)?;
        }
        // Ctrl-C also ends a running integration check (its process group).
        let checks: Vec<CancellationToken> = jobs.iter().map(|j| self.check_token(j)).collect();
        let stop_checks = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                for c in checks {
                    c.cancel();
                }
            })
        };
        let chosen = |slug: &str| only.is_none_or(|o| o.contains(slug));
        // What is still to end: dispatched now, or queued again by the train (a redo).
        // Tasks held back by the job's budget are not waited for: the job pauses without them.
        let unfinished = |job: &JobId| -> Result<BTreeSet<String>, CoordError> {
            Ok(self.store.in_flight(job)?.into_iter().filter(|slug| chosen(slug)).collect())
        };
        let mut waiting: std::collections::BTreeMap<JobId, BTreeSet<String>> = BTreeMap::new();
        for job in jobs {
            waiting.insert(job.clone(), unfinished(job)?);
        }
        let mut ended: std::collections::BTreeMap<JobId, JobRow> = BTreeMap::new();
        let mut cancelling: Option<tokio::time::Instant> = None;
        let mut clocks = tokio::time::interval(TICK);
        loop {
            // A job whose tasks have all ended is concluded now: its dependents need it.
            let over: Vec<JobId> =
                waiting.iter().filter(|(_, w)| w.is_empty()).map(|(j, _)| j.clone()).collect();
            for job in over {
                waiting.remove(&job);
                ended.insert(job.clone(), self.conclude(&job, cancel.is_cancelled(), &notes)?);
            }
            if waiting.is_empty() {
                break;
            }
            let deadline =
                cancelling.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
            tokio::select! {
                ev = self.bus.next_event() => {
                    let ev = ev?;
                    if let Some(done) = self.handle_event(&ev, &notes)?
                        && let Some(w) = waiting.get_mut(&ev.job)
                    {
                        if cancelling.is_none() {
                            *w = unfinished(&ev.job)?;
                        } else {
                            w.remove(&done);
                        }
                    }
                }
                () = cancel.cancelled(), if cancelling.is_none() => {
                    cancelling = Some(tokio::time::Instant::now() + CANCEL_GRACE);
                    for (job, w) in &mut waiting {
                        for slug in self.begin_cancel(job, &notes).await? {
                            w.remove(&slug);
                        }
                    }
                }
                _ = clocks.tick(), if cancelling.is_none() => {
                    for (job, w) in &mut waiting {
                        // A clock that cannot be read now (the state or the bus away for a
                        // moment) is read again at the next tick.
                        match self.tick(job, &notes).await {
                            Ok(true) => {
                                self.train(job, &notes)?;
                                *w = unfinished(job)?;
                            }
                            Ok(false) => {}
                            Err(e) => tracing::warn!(%job, "timers: {e}"),
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline), if cancelling.is_some() => {
                    for (job, w) in &mut waiting {
                        self.end_cancel(job, &notes)?;
                        w.clear();
                    }
                }
            }
        }
        stop_checks.abort();
        if let Err(e) = self.bus.unfollow(jobs).await {
            tracing::debug!("no longer following the jobs' events: {e}");
        }
        Ok(jobs.iter().filter_map(|j| ended.remove(j)).collect())
    }

    /// Dispatch the job's tasks that have not ended (only those in `only`, when given) as new
    /// attempts. Returns the dispatched slugs. The caller moves the train.
    pub async fn dispatch_pending(
        &self,
        job: &JobId,
        only: Option<&BTreeSet<String>>,
        notes: &UnboundedSender<Note>,
    ) -> Result<BTreeSet<String>, CoordError> {
        let row = self.store.job(job.as_str())?;
        // Its events are this coordinator's from before its first dispatch.
        self.bus.follow(std::slice::from_ref(job)).await?;
        // The job runs (again): its checks may run, its conflicts be redone.
        self.clear_cancelling(job);
        self.resume_checks(job);
        self.store.set_job_state(job, "running")?;
        let mut dispatched = BTreeSet::new();
        let chosen = |slug: &str| only.is_none_or(|o| o.contains(slug));
        let tasks = self.store.tasks(job)?;
        // A task waiting out a backoff or a usage limit goes when its time comes (`tick`).
        let now = crate::timers::unix_now();
        let to_dispatch: Vec<&TaskRow> = tasks
            .iter()
            .filter(|t| {
                !t.state.is_terminal() && chosen(&t.slug) && t.train.retry_at.is_none_or(|at| at <= now)
            })
            .collect();
        // Tasks of this job already placed local and still going, which `auto` counts against
        // `placement.local_max`; the ones placed here are added as they go.
        let mut local_in_flight = local_in_flight(&tasks, |t| !chosen(&t.slug));
        let job_spent = self.job_spent(&row)?;
        if let Some(why) = over_budget(&row, job_spent) {
            // Nothing more goes out; `grove run --job JOB --max-job-cost N` raises the budget.
            for t in to_dispatch {
                self.store.set_held(job, &t.slug, Some(&why))?;
            }
            self.train(job, notes)?;
            return Ok(dispatched);
        }
        for t in to_dispatch {
            let attempt = t.attempt + 1;
            let placed = self.place(&row, &[], t, Some(local_in_flight));
            if placed.pool == placement::LOCAL {
                local_in_flight += 1;
            }
            self.store.set_dispatched(job, &t.slug, attempt, &placed.pool, &placed.why)?;
            self.bus
                .dispatch(&placed.pool, self.assignment(&row, t, attempt, job_spent, &placed.pool)?)
                .await?;
            self.store.set_on_bus(job, &t.slug, attempt)?;
            dispatched.insert(t.slug.clone());
            let _ = notes.send(Note::Dispatched { job: job.clone(), task: t.slug.clone(), attempt });
        }
        Ok(dispatched)
    }

    /// Where `t` runs now, by the job's pool and placement policy. `local_in_flight` is the
    /// count of the job's tasks placed local and not over, or `None` to count it in `tasks`.
    pub(crate) fn place(
        &self,
        row: &JobRow,
        tasks: &[TaskRow],
        t: &TaskRow,
        local: Option<u32>,
    ) -> placement::Placed {
        let facts = placement::Facts {
            requested: &t.pool,
            lines: t.lines,
            path_only: row.source_dir.is_some(),
            local_in_flight: local.unwrap_or_else(|| local_in_flight(tasks, |o| o.slug != t.slug)),
            single_pool: self.single_pool.as_deref(),
            concurrency: row.spec.concurrency(),
        };
        placement::place(&row.spec.placement, &facts)
    }

    /// Send again the attempts of `job` whose dispatch the bus never confirmed (the
    /// coordinator died between recording and sending). The same attempt goes under the same
    /// message id, so the bus drops it if the first send did arrive.
    pub async fn resend_unconfirmed(&self, job: &JobId) -> Result<Vec<String>, CoordError> {
        let slugs = self.store.unconfirmed_dispatches(job)?;
        if slugs.is_empty() {
            return Ok(slugs);
        }
        let row = self.store.job(job.as_str())?;
        let job_spent = self.job_spent(&row)?;
        for t in self.store.tasks(job)?.iter().filter(|t| slugs.contains(&t.slug)) {
            let pool = t.placed.clone().unwrap_or_else(|| t.pool.clone());
            self.bus.dispatch(&pool, self.assignment(&row, t, t.attempt, job_spent, &pool)?).await?;
            self.store.set_on_bus(job, &t.slug, t.attempt)?;
        }
        Ok(slugs)
    }

    /// Record one event and move its job's train. Returns the task's slug when its attempt is
    /// over.
    pub fn handle_event(
        &self,
        ev: &TaskEvent,
        notes: &UnboundedSender<Note>,
    ) -> Result<Option<String>, CoordError> {
        let done = self.record(ev, notes)?;
        if done.is_some() {
            self.train(&ev.job, notes)?;
        }
        Ok(done)
    }

    /// Start cancelling a job: workers are told to stop its attempts, and tasks no worker has
    /// started are cancelled now. Returns those slugs; running ones report when they stop, or
    /// [`Coordinator::end_cancel`] settles them.
    pub async fn begin_cancel(
        &self,
        job: &JobId,
        notes: &UnboundedSender<Note>,
    ) -> Result<Vec<String>, CoordError> {
        self.set_cancelling(job);
        if let Err(e) = self.bus.cancel(grove_bus::Cancel { job: job.clone(), task: None }).await {
            tracing::warn!("cannot send the cancellation: {e}");
        }
        let mut now = Vec::new();
        for t in self.store.tasks(job)? {
            if matches!(t.state, TaskState::Queued | TaskState::Parked) {
                self.cancelled(job, &t, "cancelled before it started", notes)?;
                now.push(t.slug);
            }
        }
        Ok(now)
    }

    /// The grace after a cancellation is over: tasks whose worker did not confirm are recorded
    /// as cancelled.
    pub fn end_cancel(&self, job: &JobId, notes: &UnboundedSender<Note>) -> Result<(), CoordError> {
        for t in self.store.tasks(job)? {
            if !t.state.is_terminal() {
                self.cancelled(job, &t, "cancelled; its worker did not confirm in time", notes)?;
            }
        }
        Ok(())
    }

    /// The job's attempts are over (or it was cancelled): settle the train, record the job's
    /// state, and publish its branches. Under the job's lock, as [`Coordinator::train`].
    pub fn conclude(
        &self,
        job: &JobId,
        cancelled: bool,
        notes: &UnboundedSender<Note>,
    ) -> Result<JobRow, CoordError> {
        let lock = self.job_lock(job);
        let concluded = || {
            let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
            self.conclude_held(job, cancelled, notes)
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(concluded),
            Err(_) => concluded(),
        }
    }

    /// [`Coordinator::conclude`] with the job's lock held by the caller.
    pub(crate) fn conclude_held(
        &self,
        job: &JobId,
        cancelled: bool,
        notes: &UnboundedSender<Note>,
    ) -> Result<JobRow, CoordError> {
        self.train_held(job, notes)?;
        // Learnt again should a review verb move the train of the ended job.
        self.forget_ancestry(job);
        let state = if cancelled {
            "cancelled"
        } else if self.store.all_terminal(job)? {
            "done"
        } else {
            "paused"
        };
        // The integration checks' worktree is grove's own; the branch it checked stays.
        let checks = self.layout.worktree(job, ".integration");
        if checks.exists() {
            let mirror = self.store.job(job.as_str())?.mirror;
            if let Err(e) = grove_git::worktree::remove(&self.git, std::path::Path::new(&mirror), &checks) {
                tracing::warn!("removing the integration check worktree: {e}");
            }
        }
        // Published before the job is recorded as over: a follower that sees it over (it
        // looks at the state, not only at the notes) finds its branches in the repository.
        self.publish(job, notes)?;
        self.store.set_job_state(job, state)?;
        let _ = notes.send(Note::Ended { job: job.clone(), state: state.to_owned() });
        Ok(self.store.job(job.as_str())?)
    }

    pub(crate) fn cancelled(
        &self,
        job: &JobId,
        t: &TaskRow,
        why: &str,
        notes: &UnboundedSender<Note>,
    ) -> Result<(), CoordError> {
        let outcome = TaskOutcome {
            state: TaskState::Cancelled,
            head: None,
            stat: t.stat,
            turns: t.turns,
            reason: Some(why.into()),
            log_tail: String::new(),
            retry: grove_core::task::Retry::Final,
        };
        self.store.set_finished(job, &t.slug, &outcome)?;
        let _ = notes.send(Note::Finished {
            job: job.clone(),
            task: t.slug.clone(),
            state: TaskState::Cancelled,
            stat: t.stat,
            reason: Some(why.into()),
        });
        Ok(())
    }

    /// Move the train; dispatch the tasks it queued again (redos). The review verbs call it
    /// after changing what the train may do (`approve_merge`, `pick`, `discard`); then
    /// [`Coordinator::publish`] brings the result to the person's repository. Under the job's
    /// lock ([`Coordinator::job_lock`]): one train per job at a time, other jobs' meanwhile. A
    /// train stopped midway (the job is being cancelled) moved nothing it did not record: that
    /// is not an error.
    pub fn train(&self, job: &JobId, notes: &UnboundedSender<Note>) -> Result<(), CoordError> {
        // Waiting for the job's lock (its check may run for minutes) blocks this thread, so
        // the runtime is told first.
        let lock = self.job_lock(job);
        let one_at_a_time = || {
            let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
            self.train_held(job, notes)
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(one_at_a_time),
            Err(_) => one_at_a_time(),
        }
    }

    /// [`Coordinator::train`] with the job's lock held by the caller.
    pub(crate) fn train_held(&self, job: &JobId, notes: &UnboundedSender<Note>) -> Result<(), CoordError> {
        let moved = match self.advance_train(job) {
            Err(CoordError::Stopped { .. }) => {
                tracing::info!(%job, "the train stopped midway (the job is being cancelled)");
                return Ok(());
            }
            other => other?,
        };
        for n in moved {
            if let Note::Redo { task, .. } = &n {
                let row = self.store.job(job.as_str())?;
                if let Some(t) = self.store.task(job, task)? {
                    // `set_redo` made it the next attempt.
                    let attempt = t.attempt;
                    let placed = self.place(&row, &self.store.tasks(job)?, &t, None);
                    self.store.set_dispatched(job, &t.slug, attempt, &placed.pool, &placed.why)?;
                    // A job that had ended (a review verb moved its train) is followed again.
                    crate::train::block_on(self.bus.follow(std::slice::from_ref(job)))??;
                    let job_spent = self.job_spent(&row)?;
                    crate::train::block_on(self.bus.dispatch(
                        &placed.pool,
                        self.assignment(&row, &t, attempt, job_spent, &placed.pool)?,
                    ))??;
                    self.store.set_on_bus(job, &t.slug, attempt)?;
                    let _ = notes.send(n.clone());
                    let _ = notes.send(Note::Dispatched { job: job.clone(), task: t.slug.clone(), attempt });
                    continue;
                }
            }
            let _ = notes.send(n);
        }
        Ok(())
    }

    /// Record one event. Returns the task's slug when its attempt is over.
    pub(crate) fn record(
        &self,
        ev: &TaskEvent,
        notes: &UnboundedSender<Note>,
    ) -> Result<Option<String>, CoordError> {
        let Some(task) = self.store.task(&ev.job, &ev.task)? else {
            tracing::warn!(job = %ev.job, task = %ev.task, "event for an unknown task");
            return Ok(None);
        };
        if task.attempt != ev.attempt || task.state.is_terminal() {
            tracing::debug!(task = %ev.task, attempt = ev.attempt, "stale event ignored");
            return Ok(None);
        }
        let pool = task.placed.as_deref().unwrap_or(&task.pool);
        self.timings.event(ev, pool, task.train.first_dispatched_at);
        let (job, slug) = (ev.job.clone(), ev.task.clone());
        match &ev.kind {
            EventKind::State { state, turn } => {
                self.store.set_state(&job, &slug, ev.attempt, *state, *turn)?;
                let _ = notes.send(Note::State { job, task: slug, state: *state, turn: *turn });
                Ok(None)
            }
            EventKind::Checkpoint { turn, commit, stat, report } => {
                self.store.set_progress(&job, &slug, commit.as_deref(), *stat)?;
                if let Some(r) = report {
                    self.store.record_turn(&job, &slug, ev.attempt, *turn, r)?;
                }
                let _ = notes.send(Note::Checkpoint { job, task: slug, turn: *turn, stat: *stat });
                Ok(None)
            }
            EventKind::Finished(o) => {
                // A transient failure or a usage limit may leave the task waiting to go again.
                let Some(o) = self.after_attempt(&task, o, notes)? else {
                    return Ok(None);
                };
                let o = &o;
                self.store.set_finished(&job, &slug, o)?;
                let _ = notes.send(Note::Finished {
                    job,
                    task: slug.clone(),
                    state: o.state,
                    stat: o.stat,
                    reason: o.reason.clone(),
                });
                Ok(Some(slug))
            }
        }
    }

    /// Fetch the job's branches (integration and tasks) from the mirror into a local source.
    pub fn publish(&self, job: &JobId, notes: &UnboundedSender<Note>) -> Result<(), CoordError> {
        let row = self.store.job(job.as_str())?;
        let Some(dir) = &row.source_dir else {
            // A repository given as a URL: the branches stay in grove's mirror (`grove push`
            // sends the integration branch); watchers still learn that the job is over.
            let _ = notes.send(Note::Published { job: job.clone(), branches: 0, skipped: Vec::new() });
            return Ok(());
        };
        let mirror = Mirror { path: row.mirror.clone().into() };
        let mut branches = vec![format!("refs/heads/{}", row.integration_branch)];
        for t in self.store.tasks(job)? {
            let branch = format!("refs/heads/{}", t.branch);
            // Only branches the mirror has: a task whose only push was refused has none.
            if t.head.is_some()
                && !matches!(t.merge_state, MergeState::Discarded | MergeState::Refused)
                && self.git.ref_target(&mirror.path, &branch).ok().flatten().is_some()
            {
                branches.push(branch);
            }
        }
        let source = Source::Local(dir.into());
        let skipped = tokio::task::block_in_place(|| mirror.publish(&self.git, &source, &branches))?;
        let _ = notes.send(Note::Published {
            job: job.clone(),
            branches: branches.len() - skipped.len(),
            skipped,
        });
        Ok(())
    }
}

impl Coordinator {
    /// Attempt `attempt` of `t`, as a worker gets it, made just before it is dispatched (its
    /// dispatch latency is timed from here: a worker may report before the bus confirms the
    /// dispatch); `job_spent` is what the job's agents spent so far.
    pub(crate) fn assignment(
        &self,
        job: &JobRow,
        t: &TaskRow,
        attempt: u32,
        job_spent: f64,
        pool: &str,
    ) -> Result<Assignment, CoordError> {
        let mut a = assignment(job, t, attempt, job_spent);
        self.timings.dispatched(job.id.as_str(), &t.slug, attempt);
        a.carried = self.carried_for(job, t, pool, &a.ignored_files);
        if let Some(base) = &self.git_url {
            a.remote = crate::githttp::mirror_url(base, std::path::Path::new(&job.mirror));
        }
        a.upstreams = self.upstreams(job)?;
        Ok(a)
    }

    /// The dollars the job's agents are known to have spent; for a repository of a
    /// cross-repository job, what all its repositories spent: they share the job's budget.
    pub(crate) fn job_spent(&self, job: &JobRow) -> Result<f64, CoordError> {
        let spent = |j: &JobId| -> Result<f64, CoordError> {
            Ok(self.store.job_usage(j)?.map_or(0.0, |u| u.known_cost()))
        };
        match &job.repo {
            Some(r) => self.store.group(r.group.as_str())?.iter().map(|m| spent(&m.id)).sum(),
            None => spent(&job.id),
        }
    }
}

/// Why the job may dispatch nothing more: its `budget.job_usd` is spent.
pub fn over_budget(job: &JobRow, spent: f64) -> Option<String> {
    let limit = job.spec.budget.job_usd?;
    (spent >= limit).then(|| {
        format!(
            "job budget: {} of {} spent; nothing more is dispatched (raise it: grove run --job {} --max-job-cost USD)",
            grove_core::usage::dollars(spent),
            grove_core::usage::dollars(limit),
            job.id
        )
    })
}

/// What attempt `attempt` of `t` is given; `job_spent` is what the job's agents spent so far.
pub(crate) fn assignment(job: &JobRow, t: &TaskRow, attempt: u32, job_spent: f64) -> Assignment {
    let spec = &job.spec;
    let per = spec.run.ports_per_task.unwrap_or(defaults::PORTS_PER_TASK);
    let base = spec.run.port_base.unwrap_or(defaults::PORT_BASE);
    let span = u32::from(u16::MAX - base).max(u32::from(per)) / u32::from(per) * u32::from(per);
    let port_base = base as u32 + (t.ord * u32::from(per)) % span.max(1);
    let ignored_files = job
        .ignored_files
        .iter()
        .filter(|f| match &t.sparse {
            None => true,
            Some(dirs) => !f.contains('/') || dirs.iter().any(|d| f.starts_with(&format!("{d}/"))),
        })
        .cloned()
        .collect();
    let variant = t.train.variant.as_deref().and_then(|v| spec.variant(v));
    let mut agent = variant.map_or_else(|| spec.agent.clone(), |v| v.agent(&spec.agent));
    if let Some(v) = variant {
        agent.env.insert("GROVE_VARIANT".into(), v.name.clone());
    }
    let prompt = variant.and_then(|v| v.prompt.clone()).or_else(|| spec.prompt.clone()).unwrap_or_default();
    Assignment {
        job: job.id.clone(),
        task: t.slug.clone(),
        attempt,
        order: t.ord,
        mirror: job.mirror.clone().into(),
        remote: format!("file://{}", job.mirror),
        source_dir: job.source_dir.clone().map(Into::into),
        base: t.base(job).to_owned(),
        branch: t.branch.clone(),
        sparse: t.sparse.clone(),
        files: t.files.clone(),
        prompt,
        agent,
        turn_timeout: spec.turn_timeout(),
        max_turns: spec.max_turns(),
        check: spec.checks.task.clone(),
        ignored_files,
        port_base: u16::try_from(port_base).unwrap_or(base),
        port_count: per,
        log_cap: spec.run.log_cap.unwrap_or(defaults::LOG_CAP),
        keep_worktrees: spec.run.keep_worktrees.unwrap_or(KeepWorktrees::Failed),
        redo: t.train.redo.clone(),
        budget: budget(&spec.budget, t, job_spent),
        session: t
            .agent
            .session
            .clone()
            .zip(t.agent.session_agent.clone())
            .map(|(id, agent)| grove_core::usage::SessionRef { agent, id, total: t.agent.session_total }),
        reply: t.agent.reply.clone(),
        prices: spec.prices.clone(),
        carried: Vec::new(),
        upstreams: Vec::new(),
    }
}

/// The job's limits with what was spent against each.
fn budget(b: &grove_core::usage::BudgetSpec, t: &TaskRow, job_spent: f64) -> grove_core::usage::Budget {
    use grove_core::usage::Cap;
    let task = t.agent.usage.unwrap_or_default();
    grove_core::usage::Budget {
        task_usd: b.task_usd.map(|limit| Cap { limit, spent: task.known_cost() }),
        job_usd: b.job_usd.map(|limit| Cap { limit, spent: job_spent }),
        task_tokens: b.task_tokens.map(|limit| Cap { limit, spent: task.tokens() }),
    }
}

/// The tasks (of those `counted`) placed local and not over.
fn local_in_flight(tasks: &[TaskRow], counted: impl Fn(&TaskRow) -> bool) -> u32 {
    tasks
        .iter()
        .filter(|t| !t.state.is_terminal() && t.placed.as_deref() == Some(placement::LOCAL) && counted(t))
        .count() as u32
}

/// Whether the merge train has anything left for this job.
pub fn settled(tasks: &[TaskRow]) -> bool {
    tasks.iter().all(|t| t.state.is_terminal() && t.merge_state != MergeState::Pending)
}
