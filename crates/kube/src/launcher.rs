//! The reconcile loop, kube-rs style: [`Launcher::reconcile`] looks at one pool (what its
//! tasks ask for, which of its Jobs exist and how their pods are doing), acts (creates the
//! Jobs that are missing, deletes the ones that finished or are not needed), reports, and
//! says when to look again ([`Action`]); [`Launcher::error_policy`] says when to look again
//! after a failed call. [`Launcher::run`] drives both for every pool until stopped.
//!
//! The invariants, which ARCHITECTURE.md repeats:
//! - The cluster is the state: every round lists the pool's Jobs by label, so a restarted
//!   coordinator adopts the Jobs it finds, and a Job name is a slot (`<instance>-<pool>-<n>`),
//!   so a create that finds the name taken (409) adopts that Job instead of making another.
//! - Scale to zero: no task queued or running, no Job; a running worker is never deleted (it
//!   exits when idle), only Jobs that finished or never started.
//! - A pod that fails or cannot start is reported with its reason and holds the pool back
//!   (doubling waits) instead of being made again and again.
//! - The pods' git token is a Secret written before the first Job and again before it
//!   expires, in place: pods mount it as a folder, so they see the new token.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use grove_coordinator::launch::{Board, PodReport, PoolReport};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{PoolSettings, Settings};
use crate::decide::{self, Backoff, Decision, Delete, Demand, Observed, Phase};
use crate::job::{self, JobParams};

/// The field manager of the launcher's server-side applies.
pub const FIELD_MANAGER: &str = "grove-launcher";
/// Failures kept per pool for `grove workers`.
const KEEP_FAILURES: usize = 10;

/// When to look at a pool again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub requeue_after: Duration,
}

impl Action {
    pub fn requeue(d: Duration) -> Action {
        Action { requeue_after: d }
    }
}

/// A round of the launcher failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The API server refused or failed a call (`what` says which).
    #[error("{what}: {}", describe(.source))]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The coordinator could not say what the pool needs (its state or the bus).
    #[error("reading what the pool needs: {0}")]
    Demand(String),
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "forbidden ({}): the coordinator's service account lacks a permission; the chart's Role grants what the launcher uses",
            s.message
        ),
        kube::Error::Api(s) => format!("{} {} ({})", s.code, s.reason, s.message),
        other => other.to_string(),
    }
}

impl LaunchError {
    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            LaunchError::Kube { source: kube::Error::Api(s), .. } => Some(s.code),
            _ => None,
        }
    }
    /// A short name, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self.code() {
            Some(401) => "unauthorized",
            Some(403) => "forbidden",
            Some(404) => "not-found",
            Some(409) => "conflict",
            Some(422) => "invalid",
            Some(c) if c >= 500 => "server-error",
            Some(_) => "api-error",
            None if matches!(self, LaunchError::Demand(_)) => "demand",
            None => "unreachable",
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Kube { what, source }
}

/// What a pool asks for, as the coordinator knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolDemand {
    pub demand: Demand,
    /// The longest a queued or running task may still run.
    pub deadline: Option<Duration>,
}

/// Where the launcher learns what a pool needs.
#[async_trait::async_trait]
pub trait Demands: Send + Sync {
    /// `own` tells this launcher's workers from others by their id's prefix.
    async fn demand(&self, pool: &str, own: &str) -> Result<PoolDemand, String>;
}

/// The coordinator's tasks and its worker registry.
pub struct CoordinatorDemands(pub Arc<grove_coordinator::Coordinator>);

#[async_trait::async_trait]
impl Demands for CoordinatorDemands {
    async fn demand(&self, pool: &str, own: &str) -> Result<PoolDemand, String> {
        let load = self.0.store.pool_load(pool, unix_now()).map_err(|e| e.to_string())?;
        let workers = self.0.bus.workers().await.map_err(|e| e.to_string())?;
        let others = workers
            .iter()
            .filter(|w| w.pools.iter().any(|p| p == pool) && !w.id.starts_with(own) && w.refusing.is_none())
            .map(|w| w.capacity)
            .sum();
        Ok(PoolDemand {
            demand: Demand { queued: load.queued, running: load.running, others },
            deadline: load.deadline,
        })
    }
}

/// Where the pods' git tokens come from.
pub trait TokenSource: Send + Sync {
    /// A token valid for `ttl` from `now`, and when it expires (unix seconds).
    fn mint(&self, ttl: Duration, now: i64) -> (String, i64);
}

impl TokenSource for grove_coordinator::githttp::WorkerTokens {
    fn mint(&self, ttl: Duration, now: i64) -> (String, i64) {
        grove_coordinator::githttp::WorkerTokens::mint(self, ttl, now)
    }
}

/// The clock, in unix seconds (a test sets its own).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// What the launcher needs.
pub struct Context {
    pub client: kube::Client,
    pub namespace: String,
    pub settings: Settings,
    /// The NATS URL as pods reach it.
    pub nats_url: String,
    pub demands: Arc<dyn Demands>,
    pub tokens: Arc<dyn TokenSource>,
    pub board: Arc<Board>,
    pub clock: Clock,
}

#[derive(Debug)]
struct PoolState {
    backoff: Backoff,
    /// Jobs (by uid) whose failure was already counted.
    seen: HashSet<String>,
    failures: VecDeque<PodReport>,
    /// Failed rounds in a row.
    errors: u32,
}

/// The launcher of every Kubernetes-backed pool of one coordinator.
pub struct Launcher {
    ctx: Context,
    pools: tokio::sync::Mutex<HashMap<String, PoolState>>,
    /// When the token in the pods' Secret expires, once this launcher wrote it.
    token_expires: tokio::sync::Mutex<Option<i64>>,
}

impl Launcher {
    pub fn new(ctx: Context) -> Launcher {
        Launcher { ctx, pools: Default::default(), token_expires: Default::default() }
    }

    pub fn settings(&self) -> &Settings {
        &self.ctx.settings
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace)
    }

    fn new_state(&self) -> PoolState {
        let s = &self.ctx.settings;
        PoolState {
            backoff: Backoff::new(s.backoff, s.max_backoff),
            seen: HashSet::new(),
            failures: VecDeque::new(),
            errors: 0,
        }
    }

    /// One round for `pool`.
    pub async fn reconcile(&self, pool: &PoolSettings) -> Result<Action, LaunchError> {
        let s = &self.ctx.settings;
        let selector = job::selector(&s.instance, &pool.name);
        let own = format!("{}-{}-", s.instance, job::pool_label(&pool.name));
        let demand = self.ctx.demands.demand(&pool.name, &own).await.map_err(LaunchError::Demand)?;
        let jobs = self.jobs();
        let list = jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("listing the pool's Jobs"))?;
        let pods: Vec<Pod> = if list.items.is_empty() {
            Vec::new()
        } else {
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace);
            api.list(&ListParams::default().labels(&selector))
                .await
                .map_err(kube_err("listing the pool's pods"))?
                .items
        };
        let mut observed: Vec<Observed> = list
            .items
            .iter()
            .map(|j| {
                let slot = j.metadata.name.as_deref().and_then(|n| job::slot_of(&s.instance, &pool.name, n));
                decide::observe(j, &pods, slot)
            })
            .collect();
        let now = std::time::Instant::now();
        let mut states = self.pools.lock().await;
        let state = states.entry(pool.name.clone()).or_insert_with(|| self.new_state());
        state.errors = 0;
        if observed.iter().any(|o| matches!(o.phase, Phase::Running | Phase::Succeeded)) {
            state.backoff.clear();
        }
        for o in &observed {
            if (o.phase == Phase::Failed || o.stuck) && state.seen.insert(o.uid.clone()) {
                let wait = state.backoff.fail(now);
                tracing::warn!(
                    pool = %pool.name,
                    job = %o.name,
                    "worker pod {}: {} {}; next pod in {wait:?} at the earliest",
                    if o.stuck { "cannot start" } else { "failed" },
                    o.reason.as_deref().unwrap_or("(no reason given)"),
                    o.message.as_deref().unwrap_or("")
                );
                state.failures.push_back(report(o));
                while state.failures.len() > KEEP_FAILURES {
                    state.failures.pop_front();
                }
            }
        }
        let uids: HashSet<&str> = observed.iter().map(|o| o.uid.as_str()).collect();
        state.seen.retain(|u| uids.contains(u.as_str()));
        let decision = decide::decide(demand.demand, &observed, pool.max_pods, state.backoff.left(now));
        let backoff_left = state.backoff.left(now);
        let failures: Vec<PodReport> = state.failures.iter().cloned().collect();
        drop(states);

        for (name, why) in &decision.delete {
            self.delete(name, *why).await?;
        }
        let deleted: HashSet<&str> = decision.delete.iter().map(|(n, _)| n.as_str()).collect();
        observed.retain(|o| !deleted.contains(o.name.as_str()));
        if !decision.create.is_empty() || !observed.is_empty() {
            // Pods that start, and pods that run, need a token that has not expired.
            self.ensure_token().await?;
        }
        for slot in &decision.create {
            if let Some(o) = self.create(pool, *slot, demand.deadline).await? {
                observed.push(o);
            }
        }
        self.ctx.board.set(self.pool_report(pool, &decision, &observed, failures));
        let mut next = s.resync;
        if let Some(left) = backoff_left {
            next = next.min(left + Duration::from_millis(100));
        }
        Ok(Action::requeue(next))
    }

    /// After a failed round: wait `backoff`, doubling per failure in a row up to
    /// `max_backoff`; the pool's report carries the error meanwhile.
    pub async fn error_policy(&self, pool: &PoolSettings, err: &LaunchError) -> Action {
        let s = &self.ctx.settings;
        let mut states = self.pools.lock().await;
        let state = states.entry(pool.name.clone()).or_insert_with(|| self.new_state());
        state.errors = state.errors.saturating_add(1);
        let wait = s.backoff.saturating_mul(1u32 << (state.errors - 1).min(16)).min(s.max_backoff);
        drop(states);
        tracing::warn!(pool = %pool.name, kind = err.kind(), "launcher: {err}; trying again in {wait:?}");
        let now = (self.ctx.clock)();
        let message = err.to_string();
        self.ctx.board.update(&pool.name, |r| {
            r.backend = format!("kubernetes/{}", self.ctx.namespace);
            r.max = pool.max_pods;
            r.error = Some(message);
            r.updated_at = now;
        });
        Action::requeue(wait)
    }

    async fn delete(&self, name: &str, why: Delete) -> Result<(), LaunchError> {
        // Background: the Job goes now, its pod after it (the Job controller owns the pod).
        match self.jobs().delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(job = %name, "deleted ({})", match why {
                    Delete::Finished => "finished",
                    Delete::NotNeeded => "not needed any more",
                });
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(kube_err(format!("deleting the Job {name}"))(e)),
        }
    }

    /// Create the Job of `slot`; a name already taken is that slot's Job, adopted (or, when
    /// it has finished, deleted so the slot is free next round).
    async fn create(
        &self,
        pool: &PoolSettings,
        slot: u32,
        deadline: Option<Duration>,
    ) -> Result<Option<Observed>, LaunchError> {
        let s = &self.ctx.settings;
        let deadline =
            deadline.map(|d| d + s.termination_grace).unwrap_or(s.max_lifetime).min(s.max_lifetime);
        let params = JobParams { settings: s, pool, slot, nats_url: &self.ctx.nats_url, deadline };
        let wanted = job::job(&params);
        let name = wanted.metadata.name.clone().unwrap_or_default();
        let jobs = self.jobs();
        match jobs
            .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &wanted)
            .await
        {
            Ok(made) => {
                tracing::info!(pool = %pool.name, job = %name, "created a worker Job");
                Ok(Some(decide::observe(&made, &[], Some(slot))))
            }
            Err(kube::Error::Api(st)) if st.code == 409 => {
                let there = jobs.get(&name).await.map_err(kube_err(format!("reading the Job {name}")))?;
                let o = decide::observe(&there, &[], Some(slot));
                if o.phase.finished() {
                    self.delete(&name, Delete::Finished).await?;
                    return Ok(None);
                }
                tracing::info!(pool = %pool.name, job = %name, "already there: adopted");
                Ok(Some(o))
            }
            Err(e) => Err(kube_err(format!("creating the Job {name}"))(e)),
        }
    }

    /// Write the pods' git token when none was written yet or half its life is gone.
    async fn ensure_token(&self) -> Result<(), LaunchError> {
        let s = &self.ctx.settings;
        let now = (self.ctx.clock)();
        let mut expires = self.token_expires.lock().await;
        if expires.is_some_and(|e| e - now > (s.token_ttl.as_secs() / 2) as i64) {
            return Ok(());
        }
        let (token, until) = self.ctx.tokens.mint(s.token_ttl, now);
        let secret = job::token_secret(&s.instance, &token, until);
        let name = job::token_secret_name(&s.instance);
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace);
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret))
            .await
            .map_err(kube_err(format!("writing the git token Secret {name}")))?;
        tracing::info!(secret = %name, "wrote the pods' git token (valid until unix {until})");
        *expires = Some(until);
        Ok(())
    }

    fn pool_report(
        &self,
        pool: &PoolSettings,
        d: &Decision,
        live: &[Observed],
        failures: Vec<PodReport>,
    ) -> PoolReport {
        let now = (self.ctx.clock)();
        PoolReport {
            pool: pool.name.clone(),
            backend: format!("kubernetes/{}", self.ctx.namespace),
            wanted: d.wanted,
            max: pool.max_pods,
            pods: live.iter().map(report).collect(),
            failures,
            held: d.held.clone(),
            error: None,
            updated_at: now,
        }
    }

    /// Reconcile every pool until `stop`: each when its [`Action`] says, and all of them at
    /// once when `wake` is notified (a task was dispatched), except a pool waiting out an
    /// error. Jobs are left running when it stops: their workers need no coordinator to go
    /// on, and the next coordinator adopts them.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, stop: CancellationToken) {
        let pools = self.ctx.settings.pools.clone();
        let mut next: Vec<(Instant, bool)> = vec![(Instant::now(), false); pools.len()];
        loop {
            for (i, pool) in pools.iter().enumerate() {
                if next[i].0 > Instant::now() {
                    continue;
                }
                next[i] = match self.reconcile(pool).await {
                    Ok(a) => (Instant::now() + a.requeue_after, false),
                    Err(e) => (Instant::now() + self.error_policy(pool, &e).await.requeue_after, true),
                };
            }
            let at = next
                .iter()
                .map(|(t, _)| *t)
                .min()
                .unwrap_or_else(|| Instant::now() + self.ctx.settings.resync);
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {
                    let now = Instant::now();
                    for n in next.iter_mut().filter(|(_, erred)| !erred) {
                        n.0 = now;
                    }
                }
                () = tokio::time::sleep_until(at) => {}
            }
        }
    }
}

fn report(o: &Observed) -> PodReport {
    PodReport {
        name: o.name.clone(),
        pod: o.pod.clone(),
        phase: o.phase.as_str().to_owned(),
        reason: o.reason.clone(),
        message: o.message.clone(),
        created_at: o.created_at,
        stuck: o.stuck,
    }
}

#[cfg(test)]
mod tests;
