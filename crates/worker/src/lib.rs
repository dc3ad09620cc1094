//! Workers: take assignments from the bus, run each attempt in its own workspace, report.
//!
//! A worker runs up to `capacity` attempts at once. Each attempt: a worktree of the mirror on
//! the task's branch ([`workspace`]), turns of the agent ([`agent`], through the one process
//! wrapper in [`process`]) each ending in a checkpoint commit, the task's check, then a
//! report. The worker never prints; everything it does is reported as events or traced.

pub mod adapter;
pub mod agent;
mod attempt;
mod direct;
pub mod disk;
pub mod limits;
pub use attempt::lease;
pub mod process;
pub mod secrets;
mod watchdog;
pub mod workspace;

use std::sync::Arc;

use grove_bus::Bus;
use grove_core::JobId;
use grove_core::layout::Layout;
use grove_core::task::WorkerInfo;
use grove_git::Git;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What a worker needs.
pub struct WorkerContext {
    /// A name for logs and reports.
    pub id: String,
    pub bus: Arc<dyn Bus>,
    pub git: Git,
    pub layout: Layout,
    /// The pools this worker takes tasks from.
    pub pools: Vec<String>,
    /// Attempts at once.
    pub capacity: usize,
    /// How workspaces are made.
    pub workspace: workspace::Mode,
    /// How often a running attempt tells the bus it is alive; well under the bus's lease.
    pub heartbeat: std::time::Duration,
    /// Fired (before `cancel`) when the worker drains: cancelled attempts are handed back to
    /// the bus for another worker instead of being recorded as cancelled.
    pub hand_back: CancellationToken,
    /// How often the worker renews its announcement in the registry (well under its TTL).
    pub announce_every: std::time::Duration,
    /// Disk limits checked before each task is taken (`Budget::none()`: none).
    pub disk: disk::Budget,
    /// The agents' credentials, and what is masked in logs (those, and grove's tokens).
    pub secrets: secrets::Secrets,
    /// Stop after this long with no attempt running and none delivered (an ephemeral
    /// worker: a pod that exits when the pool's queue is empty); `None`: run until stopped.
    pub idle_exit: Option<std::time::Duration>,
    /// The worker's variables that say where agent CLIs keep their sessions (`HOME`,
    /// `CLAUDE_CONFIG_DIR`, `CODEX_HOME`, `COPILOT_HOME`), so a session's transcript can be
    /// saved with the task and put back where the CLI looks. See [`agent_home_vars`].
    pub agent_home: std::collections::BTreeMap<String, String>,
    /// Mirrors kept open between turns (opening one maps its pack indexes; a turn without a
    /// checkout is short enough for that to be a good part of it).
    /// Shared by the workers of one process.
    pub repos: Arc<grove_git::OpenRepos>,
}

/// The variables that say where agent CLIs keep their sessions; [`agent_home_vars`] also reads
/// the builtin adapters' settings.
pub const AGENT_HOME_VARS: [&str; 4] = ["HOME", "CLAUDE_CONFIG_DIR", "CODEX_HOME", "COPILOT_HOME"];

/// [`WorkerContext::agent_home`] from a lookup of the worker's environment: the
/// [`AGENT_HOME_VARS`] and every builtin adapter's settings (`grove_core::env::adapter_settings`),
/// which pass to that adapter's agents.
pub fn agent_home_vars(
    lookup: impl Fn(&str) -> Option<String>,
) -> std::collections::BTreeMap<String, String> {
    AGENT_HOME_VARS
        .iter()
        .copied()
        .chain(grove_core::env::known_settings())
        .filter_map(|k| lookup(k).map(|v| (k.to_owned(), v)))
        .collect()
}

/// How long a worker short of disk waits before it looks again.
const DISK_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// This machine's name, for announcements.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How long a worker remembers a cancellation, for assignments still queued when it came.
const RECENT_CANCELS: std::time::Duration = std::time::Duration::from_secs(3600);

type Running = Arc<std::sync::Mutex<Vec<(JobId, String, CancellationToken)>>>;
/// Why the worker takes no task now (short of disk), for its announcement.
/// Set it and notify: the announcement is renewed at once.
type Refusing = Arc<(std::sync::Mutex<Option<String>>, tokio::sync::Notify)>;

/// Keep this worker's announcement alive in the registry until aborted.
async fn announce(ctx: Arc<WorkerContext>, attempts: Running, refusing: Refusing) {
    let mut info = WorkerInfo {
        id: ctx.id.clone(),
        host: host_name(),
        pools: ctx.pools.clone(),
        capacity: ctx.capacity as u32,
        tasks: Vec::new(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: unix_now(),
        seen_at: 0,
        refusing: None,
    };
    let mut tick = tokio::time::interval(ctx.announce_every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = refusing.1.notified() => {}
        }
        info.tasks = attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(j, t, _)| format!("{j}/{t}"))
            .collect();
        info.seen_at = unix_now();
        // A worker with nothing to do keeps no mirror open for long.
        ctx.repos.close_stale();
        info.refusing = refusing.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Err(e) = ctx.bus.announce(&info).await {
            tracing::warn!(worker = %ctx.id, "announcing: {e}");
        }
    }
}

/// Whether this worker may act on `delivery`: only what it could have been sent, an
/// assignment of one of its pools, for a task whose slug is a single safe name (it is joined
/// into paths under the home), on that task's own branch.
fn accepts(pools: &[String], delivery: &grove_bus::Delivery) -> Result<(), String> {
    let a = &delivery.assignment;
    if !pools.contains(&delivery.pool) {
        return Err(format!("it is for pool {:?}, which this worker does not serve", delivery.pool));
    }
    grove_core::names::check_task_slug(&a.task).map_err(|e| e.to_string())?;
    let branch = grove_core::names::task_branch(&a.job, &a.task);
    if a.branch != branch {
        return Err(format!("its branch {:?} is not the task's branch {branch:?}", a.branch));
    }
    Ok(())
}

/// Report a refused assignment failed (the coordinator's verdict stands) and settle it.
async fn refuse(ctx: &WorkerContext, delivery: grove_bus::Delivery, why: &str) {
    let a = &delivery.assignment;
    let event = grove_core::task::TaskEvent {
        job: a.job.clone(),
        task: a.task.clone(),
        attempt: a.attempt,
        kind: grove_core::task::EventKind::Finished(grove_core::task::TaskOutcome {
            state: grove_core::TaskState::Failed,
            head: None,
            stat: grove_core::DiffStat::default(),
            turns: 0,
            reason: Some(format!("worker {} refused the assignment: {why}", ctx.id)),
            log_tail: String::new(),
            retry: grove_core::task::Retry::Final,
        }),
    };
    if let Err(e) = ctx.bus.report(event).await {
        tracing::warn!(worker = %ctx.id, "cannot report the refusal: {e}");
    }
    if let Err(e) = delivery.ack().await {
        tracing::warn!(worker = %ctx.id, "ack failed: {e}");
    }
}

/// Resolves once the worker has had no attempt and no delivery for `ctx.idle_exit` (never
/// without one). Looked at often, so an attempt that ends while the worker waits for the next
/// task starts the idle clock then.
async fn idle_for(
    ctx: &WorkerContext,
    attempts: &Running,
    last_busy: &std::sync::Mutex<std::time::Instant>,
) -> std::time::Duration {
    let Some(limit) = ctx.idle_exit else { return std::future::pending().await };
    loop {
        tokio::time::sleep(limit.min(std::time::Duration::from_millis(250))).await;
        let idle = attempts.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        let since = last_busy.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        if idle && since >= limit {
            return since;
        }
    }
}

/// Check the disk budget in a blocking thread; `Some(why)` when no task may be taken.
async fn disk_check(ctx: &Arc<WorkerContext>) -> Option<String> {
    let (git, layout, budget) = (ctx.git.clone(), ctx.layout.clone(), ctx.disk);
    tokio::task::spawn_blocking(move || disk::make_room(&git, &layout, budget)).await.unwrap_or(None)
}

/// Take and run assignments until `stop` fires, then wait for the running attempts. `kill`
/// stops running attempts (their agents are killed, their work committed); the embedded mode
/// passes one token for both, a draining daemon fires `kill` only after a grace period.
pub async fn run(ctx: Arc<WorkerContext>, stop: CancellationToken, kill: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.capacity.max(1)));
    let mut running = JoinSet::new();
    // Running attempts by job and task, so a cancellation from the coordinator reaches them.
    let attempts: Running = Arc::default();
    let refusing: Refusing = Arc::default();
    // When the worker last had something to do, for `idle_exit`.
    let last_busy = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let announcer = tokio::spawn(announce(ctx.clone(), attempts.clone(), refusing.clone()));
    // Cancellations seen lately: an assignment that was still queued when its job or task was
    // cancelled is dropped when it arrives instead of run.
    let recent: Arc<std::sync::Mutex<Vec<(grove_bus::Cancel, std::time::Instant)>>> = Arc::default();
    let watcher = match ctx.bus.cancels().await {
        Ok(mut rx) => {
            let attempts = attempts.clone();
            let recent = recent.clone();
            Some(tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(c) => {
                            {
                                let mut r = recent.lock().unwrap_or_else(|p| p.into_inner());
                                r.retain(|(_, at)| at.elapsed() < RECENT_CANCELS);
                                r.push((c.clone(), std::time::Instant::now()));
                            }
                            let list = attempts.lock().unwrap_or_else(|p| p.into_inner());
                            for (job, task, token) in list.iter() {
                                if c.matches(job, task) {
                                    tracing::info!(%job, %task, "cancelled by the coordinator");
                                    token.cancel();
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            }))
        }
        Err(e) => {
            tracing::warn!(worker = %ctx.id, "cannot watch cancellations: {e}");
            None
        }
    };
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        if let Some(why) = disk_check(&ctx).await {
            // Short of disk even after removing kept workspaces: take nothing it would fail
            // mid-way, say so in the registry, and look again later.
            let before = refusing.0.lock().unwrap_or_else(|p| p.into_inner()).replace(why.clone());
            if before.as_deref() != Some(why.as_str()) {
                tracing::warn!(worker = %ctx.id, "taking no task: {why}");
                refusing.1.notify_one();
            }
            drop(permit);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(DISK_RETRY) => continue,
            }
        }
        if refusing.0.lock().unwrap_or_else(|p| p.into_inner()).take().is_some() {
            tracing::info!(worker = %ctx.id, "disk is within limits again: taking tasks");
            refusing.1.notify_one();
        }
        let delivery = tokio::select! {
            () = stop.cancelled() => break,
            idle = idle_for(&ctx, &attempts, &last_busy) => {
                tracing::info!(worker = %ctx.id, "nothing to do for {idle:?}: exiting");
                break;
            }
            d = ctx.bus.next_task(&ctx.pools) => match d {
                Ok(d) => d,
                Err(grove_bus::BusError::Closed) => { tracing::info!(worker = %ctx.id, "bus closed"); break }
                Err(e) => {
                    // NATS away for a moment: the client reconnects; try again shortly.
                    tracing::warn!(worker = %ctx.id, "pulling a task: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        *last_busy.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        let dropped = {
            let a = &delivery.assignment;
            recent.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(c, _)| c.matches(&a.job, &a.task))
        };
        if dropped {
            tracing::info!(worker = %ctx.id, task = %delivery.assignment.task, "cancelled before it started; dropped");
            attempt::drop_cancelled(&ctx, delivery).await;
            continue;
        }
        if let Err(why) = accepts(&ctx.pools, &delivery) {
            tracing::warn!(worker = %ctx.id, task = %delivery.assignment.task, "refusing an assignment: {why}");
            refuse(&ctx, delivery, &why).await;
            continue;
        }
        tracing::info!(worker = %ctx.id, task = %delivery.assignment.task, attempt = delivery.assignment.attempt, "starting");
        let token = kill.child_token();
        let key = (delivery.assignment.job.clone(), delivery.assignment.task.clone(), token.clone());
        attempts.lock().unwrap_or_else(|p| p.into_inner()).push(key);
        let (ctx2, attempts2, busy2) = (ctx.clone(), attempts.clone(), last_busy.clone());
        running.spawn(async move {
            let (job, task) = (delivery.assignment.job.clone(), delivery.assignment.task.clone());
            attempt::run(ctx2, delivery, token).await;
            *busy2.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
            attempts2
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(j, t, _)| !(*j == job && *t == task));
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    if let Some(w) = watcher {
        w.abort();
    }
    announcer.abort();
    if let Err(e) = ctx.bus.withdraw(&ctx.id).await {
        tracing::debug!(worker = %ctx.id, "withdrawing: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grove_bus::InProcessBus;
    use grove_core::spec::{AgentSpec, KeepWorktrees};
    use grove_core::task::{Assignment, EventKind};

    fn assignment(task: &str, branch: &str) -> Assignment {
        Assignment {
            job: JobId::new("j", 1),
            task: task.into(),
            attempt: 1,
            order: 0,
            mirror: "/nowhere/mirrors/m.git".into(),
            remote: "file:///nowhere/mirrors/m.git".into(),
            source_dir: None,
            base: "ab".repeat(20),
            branch: branch.into(),
            sparse: None,
            files: vec![],
            prompt: String::new(),
            agent: AgentSpec::default(),
            turn_timeout: std::time::Duration::from_secs(1),
            max_turns: 1,
            check: None,
            ignored_files: vec![],
            port_base: 42000,
            port_count: 1,
            log_cap: 1024,
            keep_worktrees: KeepWorktrees::None,
            redo: None,
            budget: Default::default(),
            session: None,
            reply: None,
            carried: Vec::new(),
            upstreams: Vec::new(),
            prices: Default::default(),
        }
    }

    /// A worker acts only on what it could have been sent: an assignment on another task's
    /// branch, or whose slug would leave its home, is refused and reported, and nothing is
    /// made for it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_worker_refuses_what_it_could_not_have_been_sent() {
        let home = tempfile::tempdir().expect("tempdir");
        let bus = Arc::new(InProcessBus::new());
        let ctx = Arc::new(WorkerContext {
            id: "w".into(),
            bus: bus.clone(),
            git: Git::detect().expect("git"),
            layout: Layout::new(home.path()),
            pools: vec!["local".into()],
            capacity: 1,
            workspace: workspace::Mode::Auto,
            heartbeat: std::time::Duration::from_secs(10),
            hand_back: CancellationToken::new(),
            announce_every: std::time::Duration::from_secs(10),
            disk: disk::Budget::none(),
            secrets: secrets::Secrets::default(),
            idle_exit: None,
            agent_home: Default::default(),
            repos: Default::default(),
        });
        let job = JobId::new("j", 1);
        for (task, branch) in [
            ("a", "main".to_owned()),
            ("b", "grove/j-0001/a".to_owned()),
            ("..", "grove/j-0001/..".to_owned()),
        ] {
            bus.dispatch("local", assignment(task, &branch)).await.expect("dispatch");
        }
        let stop = CancellationToken::new();
        let worker = tokio::spawn(run(ctx, stop.clone(), stop.clone()));
        for task in ["a", "b", ".."] {
            let ev = bus.next_event().await.expect("event");
            assert_eq!((ev.job.clone(), ev.task.as_str()), (job.clone(), task));
            let EventKind::Finished(o) = ev.kind else { panic!("{task}: {:?}", ev.kind) };
            assert_eq!(o.state, grove_core::TaskState::Failed);
            assert!(o.reason.as_deref().is_some_and(|r| r.contains("refused")), "{:?}", o.reason);
        }
        stop.cancel();
        worker.await.expect("worker");
        assert!(!home.path().join("worktrees").exists() && !home.path().join("runs").exists());
    }
}
