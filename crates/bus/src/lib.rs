//! The transport between the coordinator and its workers.
//!
//! [`Bus`] is what both sides use: the coordinator dispatches [`Assignment`]s to a pool and
//! reads [`TaskEvent`]s; workers pull assignments for their pools, report events, and ack each
//! delivery when the attempt is over. Delivery is at least once: a delivery dropped without an
//! ack (a worker that died) is delivered again. [`InProcessBus`] implements it for the
//! embedded mode; the NATS JetStream implementation keeps the same contract.
//!
//! API boundary: only implementations of this trait know about a wire format.

pub mod nats;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use grove_core::JobId;
use grove_core::task::{Assignment, LogChunk, TaskEvent, WorkerInfo};
use tokio::sync::{Mutex, Notify, mpsc};

/// The bus failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The other side is gone (the bus was shut down).
    #[error("the bus is closed")]
    Closed,
    /// The transport failed (NATS unreachable, a JetStream call refused).
    #[error("{0}")]
    Transport(String),
}

/// One delivery of an assignment to a worker. Ack it when the attempt is over; drop it
/// without acking and it will be delivered again.
pub struct Delivery {
    pub assignment: Assignment,
    /// The pool it was dispatched to (the queue it came from).
    pub pool: String,
    /// The W3C `traceparent` of the dispatch, when the coordinator traces (the worker's
    /// attempt span is its child).
    pub trace: Option<String>,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(pool: &str, assignment: Assignment, acker: Box<dyn Acker>) -> Self {
        Delivery { assignment, pool: pool.to_owned(), trace: None, acker }
    }
    /// The same delivery, joined to the trace of its dispatch.
    pub fn with_trace(mut self, trace: Option<String>) -> Self {
        self.trace = trace;
        self
    }
    /// The attempt is over (whatever its outcome): do not deliver again.
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }
    /// Hand the assignment back, to be delivered again after `delay`.
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        self.acker.nak(delay).await
    }
    /// The attempt is still alive (a heartbeat during long turns). `Ok` means the bus
    /// confirmed it: the lease runs again from before this call.
    pub async fn progress(&self) -> Result<(), BusError> {
        self.acker.progress().await
    }
    /// How long the delivery stays this worker's without a confirmed heartbeat; `None`: as
    /// long as the process lives (the in-process bus).
    pub fn lease(&self) -> Option<Duration> {
        self.acker.lease()
    }
    /// How many times this assignment has been delivered (2 or more: an earlier delivery was
    /// lost with its worker, and this one resumes its work).
    pub fn delivered(&self) -> u32 {
        self.acker.delivered()
    }
}

/// The span of one dispatch: the root of the attempt's trace, whatever the caller was doing
/// (a tick, an event), so each attempt is one trace from coordinator to agent.
pub fn dispatch_span(pool: &str, a: &Assignment) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "dispatch",
        otel.kind = "producer",
        grove.job = %a.job,
        grove.task = %a.task,
        grove.attempt = a.attempt,
        grove.pool = pool,
    )
}

/// How a delivery is settled; one per bus implementation.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError>;
    async fn progress(&self) -> Result<(), BusError>;
    fn lease(&self) -> Option<Duration> {
        None
    }
    fn delivered(&self) -> u32 {
        1
    }
}

/// A request to stop running attempts: of a whole job, or of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    pub job: JobId,
    /// `None`: every task of the job.
    pub task: Option<String>,
}

impl Cancel {
    pub fn matches(&self, job: &JobId, task: &str) -> bool {
        self.job == *job && self.task.as_deref().is_none_or(|t| t == task)
    }
}

/// The transport's contract.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Queue an assignment for any worker of `pool`.
    async fn dispatch(&self, pool: &str, assignment: Assignment) -> Result<(), BusError>;
    /// Wait for the next assignment for one of `pools`.
    async fn next_task(&self, pools: &[String]) -> Result<Delivery, BusError>;
    /// Report an event to the coordinator.
    async fn report(&self, event: TaskEvent) -> Result<(), BusError>;
    /// Wait for the next event of a followed job (the coordinator's side). Asking for the next
    /// event acknowledges the previous one: record an event before asking for another, and an
    /// event that was not recorded (the coordinator died) is delivered again.
    async fn next_event(&self) -> Result<TaskEvent, BusError>;
    /// From now on, [`Bus::next_event`] also returns the events of `jobs` (a coordinator
    /// follows the jobs it drives, before it dispatches them). Other coordinators on the same
    /// transport never see them. The in-process bus has one coordinator: it returns every event.
    async fn follow(&self, _jobs: &[JobId]) -> Result<(), BusError> {
        Ok(())
    }
    /// The events of `jobs` are no longer wanted (they ended).
    async fn unfollow(&self, _jobs: &[JobId]) -> Result<(), BusError> {
        Ok(())
    }
    /// Ask every worker to stop the matching running attempts (best effort, at most once: a
    /// worker that is away misses it, and the coordinator's own deadline settles the task).
    async fn cancel(&self, cancel: Cancel) -> Result<(), BusError>;
    /// Cancellations, for a worker to watch.
    async fn cancels(&self) -> Result<tokio::sync::broadcast::Receiver<Cancel>, BusError>;
    /// Put or renew a worker's announcement in the registry; it lapses after the registry's
    /// TTL unless renewed, so a worker that died disappears by itself.
    async fn announce(&self, worker: &WorkerInfo) -> Result<(), BusError>;
    /// Take a worker's announcement out of the registry (it stops).
    async fn withdraw(&self, id: &str) -> Result<(), BusError>;
    /// The live workers, by id.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, BusError>;
    /// Send a piece of an agent's output to whoever reads logs through the bus.
    async fn publish_log(&self, chunk: LogChunk) -> Result<(), BusError>;
    /// A task's output as the bus keeps it: every stored chunk, then new ones as they come (the
    /// stream does not end by itself). `None`: this bus carries no logs (the embedded mode
    /// reads the log file the worker writes).
    async fn read_log(&self, job: &JobId, task: &str) -> Result<Option<LogStream>, BusError>;
}

/// Chunks of a task's log, in order.
pub type LogStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogChunk, BusError>> + Send>>;

/// The embedded mode's bus: queues in memory, shared by the coordinator and the workers of
/// one process.
pub struct InProcessBus {
    inner: Arc<Queues>,
    events_tx: mpsc::UnboundedSender<TaskEvent>,
    events_rx: Mutex<mpsc::UnboundedReceiver<TaskEvent>>,
    cancels: tokio::sync::broadcast::Sender<Cancel>,
    workers: std::sync::Mutex<std::collections::BTreeMap<String, WorkerInfo>>,
}

struct Queues {
    tasks: std::sync::Mutex<HashMap<String, VecDeque<Queued>>>,
    ready: Notify,
}

/// An assignment waiting in the in-process queue, with the trace of its dispatch.
#[derive(Clone)]
struct Queued {
    assignment: Assignment,
    trace: Option<String>,
}

impl Queues {
    fn push(&self, pool: &str, a: Queued, front: bool) {
        let mut q = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let queue = q.entry(pool.to_owned()).or_default();
        if front {
            queue.push_front(a)
        } else {
            queue.push_back(a)
        }
        drop(q);
        self.ready.notify_waiters();
        self.ready.notify_one();
    }
    fn pop(&self, pools: &[String]) -> Option<(String, Queued)> {
        let mut q = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        pools.iter().find_map(|p| q.get_mut(p).and_then(VecDeque::pop_front).map(|a| (p.clone(), a)))
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        InProcessBus {
            inner: Arc::new(Queues { tasks: Default::default(), ready: Notify::new() }),
            events_tx,
            events_rx: Mutex::new(events_rx),
            cancels: tokio::sync::broadcast::channel(256).0,
            workers: Default::default(),
        }
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }
}

struct InProcessAcker {
    queues: Arc<Queues>,
    pool: String,
    /// `Some` until settled; a drop while `Some` redelivers.
    pending: std::sync::Mutex<Option<Queued>>,
}

impl InProcessAcker {
    fn take(&self) -> Option<Queued> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for InProcessAcker {
    fn drop(&mut self) {
        if let Some(a) = self.take() {
            tracing::debug!(task = %a.assignment.task, "delivery dropped without ack: redelivering");
            self.queues.push(&self.pool, a, true);
        }
    }
}

#[async_trait]
impl Acker for InProcessAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.take();
        Ok(())
    }
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        if let Some(a) = self.take() {
            let queues = self.queues.clone();
            let pool = self.pool.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                queues.push(&pool, a, false);
            });
        }
        Ok(())
    }
    async fn progress(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn dispatch(&self, pool: &str, assignment: Assignment) -> Result<(), BusError> {
        let trace = grove_telemetry::traceparent(&dispatch_span(pool, &assignment));
        self.inner.push(pool, Queued { assignment, trace }, false);
        Ok(())
    }

    async fn next_task(&self, pools: &[String]) -> Result<Delivery, BusError> {
        loop {
            let notified = self.inner.ready.notified();
            if let Some((pool, q)) = self.inner.pop(pools) {
                let acker = InProcessAcker {
                    queues: self.inner.clone(),
                    pool: pool.clone(),
                    pending: std::sync::Mutex::new(Some(q.clone())),
                };
                return Ok(Delivery::new(&pool, q.assignment, Box::new(acker)).with_trace(q.trace));
            }
            notified.await;
        }
    }

    async fn report(&self, event: TaskEvent) -> Result<(), BusError> {
        self.events_tx.send(event).map_err(|_| BusError::Closed)
    }

    async fn next_event(&self) -> Result<TaskEvent, BusError> {
        self.events_rx.lock().await.recv().await.ok_or(BusError::Closed)
    }

    async fn cancel(&self, cancel: Cancel) -> Result<(), BusError> {
        // No receiver (no worker yet) is fine.
        let _ = self.cancels.send(cancel);
        Ok(())
    }

    async fn cancels(&self) -> Result<tokio::sync::broadcast::Receiver<Cancel>, BusError> {
        Ok(self.cancels.subscribe())
    }

    async fn announce(&self, worker: &WorkerInfo) -> Result<(), BusError> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner()).insert(worker.id.clone(), worker.clone());
        Ok(())
    }

    async fn withdraw(&self, id: &str) -> Result<(), BusError> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, BusError> {
        Ok(self.workers.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect())
    }

    async fn publish_log(&self, _chunk: LogChunk) -> Result<(), BusError> {
        // The workers of this process write the log file the coordinator reads.
        Ok(())
    }

    async fn read_log(&self, _job: &JobId, _task: &str) -> Result<Option<LogStream>, BusError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grove_core::JobId;
    use grove_core::spec::{AgentSpec, KeepWorktrees};

    fn assignment(task: &str) -> Assignment {
        Assignment {
            job: JobId::new("j", 1),
            task: task.into(),
            attempt: 1,
            order: 0,
            mirror: "/m".into(),
            remote: "file:///m".into(),
            source_dir: None,
            base: "b".into(),
            branch: "grove/j/t".into(),
            sparse: None,
            files: vec![],
            prompt: String::new(),
            agent: AgentSpec::default(),
            turn_timeout: Duration::from_secs(1),
            max_turns: 1,
            check: None,
            ignored_files: vec![],
            port_base: 1,
            port_count: 1,
            log_cap: 1,
            keep_worktrees: KeepWorktrees::Failed,
            redo: None,
            budget: Default::default(),
            session: None,
            reply: None,
            carried: Vec::new(),
            upstreams: Vec::new(),
            prices: Default::default(),
        }
    }

    #[tokio::test]
    async fn pools_are_separate_and_unacked_deliveries_come_back() {
        let bus = InProcessBus::new();
        bus.dispatch("cloud", assignment("c")).await.expect("dispatch");
        bus.dispatch("local", assignment("a")).await.expect("dispatch");
        let local = vec!["local".to_owned()];
        let d = bus.next_task(&local).await.expect("next");
        assert_eq!(d.assignment.task, "a");
        drop(d); // a worker died mid-attempt
        let d = bus.next_task(&local).await.expect("redelivered");
        assert_eq!(d.assignment.task, "a");
        d.ack().await.expect("ack");
        let pending = tokio::time::timeout(Duration::from_millis(50), bus.next_task(&local)).await;
        assert!(pending.is_err(), "acked work is not delivered again, and cloud work is not local");
        let d = bus.next_task(&["cloud".to_owned()]).await.expect("cloud");
        assert_eq!(d.assignment.task, "c");
        d.nak(Duration::from_millis(10)).await.expect("nak");
        let d = bus.next_task(&["cloud".to_owned()]).await.expect("after nak");
        assert_eq!(d.assignment.task, "c");
        d.ack().await.expect("ack");
    }
}
