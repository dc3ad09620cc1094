//! Workers: take assignments from the bus, run each attempt in its own workspace, report.
//!
//! A worker runs up to `capacity` attempts at once. Each attempt: a worktree of the mirror on
//! the task's branch ([`workspace`]), turns of the agent ([`agent`], through the one process
//! wrapper in [`process`]) each ending in a checkpoint commit, the task's check, then a
//! report. The worker never prints; everything it does is reported as events or traced.

pub mod agent;
mod attempt;
pub mod process;
pub mod workspace;

use std::sync::Arc;

use grove_bus::Bus;
use grove_core::layout::Layout;
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
}

/// Take and run assignments until `cancel` fires; then wait for running attempts, which see
/// the same token and stop their agents.
pub async fn run(ctx: Arc<WorkerContext>, cancel: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.capacity.max(1)));
    let mut running = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let delivery = tokio::select! {
            () = cancel.cancelled() => break,
            d = ctx.bus.next_task(&ctx.pools) => match d {
                Ok(d) => d,
                Err(e) => { tracing::info!(worker = %ctx.id, "bus closed: {e}"); break }
            },
        };
        tracing::info!(worker = %ctx.id, task = %delivery.assignment.task, attempt = delivery.assignment.attempt, "starting");
        let (ctx2, cancel2) = (ctx.clone(), cancel.clone());
        running.spawn(async move {
            attempt::run(ctx2, delivery, cancel2).await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}
