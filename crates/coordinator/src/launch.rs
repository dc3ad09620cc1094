//! What a pod launcher reports about the pools it serves: its pods (pending, running,
//! failing and why), what it wants, and why it holds back. The launcher (grove-kube) writes
//! it; `grove workers` and `grove status` read it through the API. Nothing here knows
//! Kubernetes.

use std::collections::BTreeMap;

/// One pod of a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodReport {
    /// The launcher's object (a Job).
    pub name: String,
    /// The pod it made (the worker's id in the registry), once there is one.
    pub pod: Option<String>,
    /// pending | running | succeeded | failed
    pub phase: String,
    /// Why it is stuck or failed: `ImagePullBackOff`, `Unschedulable`, `OOMKilled`...
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Pending and unable to start by itself.
    pub stuck: bool,
}

/// One pool, as its launcher last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolReport {
    pub pool: String,
    /// Where its pods run (`kubernetes/<namespace>`).
    pub backend: String,
    /// Pods the demand asks for, at most `max`.
    pub wanted: u32,
    pub max: u32,
    /// Pods that have not finished.
    pub pods: Vec<PodReport>,
    /// Recent failures, newest last (the failed pods themselves are removed).
    pub failures: Vec<PodReport>,
    /// Why no pod is made although more are wanted (backing off, a pod that cannot start).
    pub held: Option<String>,
    /// The last error talking to the cluster, while it lasts.
    pub error: Option<String>,
    /// Unix seconds.
    pub updated_at: i64,
}

/// The launcher's reports, shared with the API.
#[derive(Debug, Default)]
pub struct Board {
    pools: std::sync::Mutex<BTreeMap<String, PoolReport>>,
}

impl Board {
    pub fn set(&self, report: PoolReport) {
        self.lock().insert(report.pool.clone(), report);
    }

    /// Change a pool's report in place (an error between two full reports).
    pub fn update(&self, pool: &str, f: impl FnOnce(&mut PoolReport)) {
        let mut pools = self.lock();
        let r = pools
            .entry(pool.to_owned())
            .or_insert_with(|| PoolReport { pool: pool.to_owned(), ..Default::default() });
        f(r);
    }

    /// Every pool, by name.
    pub fn pools(&self) -> Vec<PoolReport> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PoolReport>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }
}
