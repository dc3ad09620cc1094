//! The coordinator's metrics as Prometheus text (`grove coordinator --metrics-listen ADDR`,
//! `GET /metrics`), read from the state at each scrape: jobs and tasks by state, the queue of
//! each pool, merges, conflicts and redos, agent turns, tokens and cost.
//!
//! Counters (`_total`) count over every job the state still has (`grove gc` keeps the rows),
//! so they only grow while jobs are kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use grove_core::TaskState;
use grove_core::task::MergeState;

use crate::store::{Store, StoreError};

/// What a metric family is, for both exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One metric family: its name (Prometheus style), kind, help and samples (labels, value).
#[derive(Debug, Clone)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    /// The family `name` of [`FAMILIES`], with no samples yet.
    fn of(name: &'static str) -> Self {
        let (name, kind, help) =
            FAMILIES.iter().find(|(n, _, _)| *n == name).copied().unwrap_or((name, Kind::Gauge, ""));
        Family { name, kind, help, samples: Vec::new() }
    }
    fn with(mut self, labels: Vec<(&'static str, String)>, value: f64) -> Self {
        self.samples.push((labels, value));
        self
    }
}

/// What the state, the workers' registry and the launchers say now.
pub fn snapshot(
    store: &Store,
    workers: &[grove_core::task::WorkerInfo],
    pools: &[crate::launch::PoolReport],
) -> Result<Vec<Family>, StoreError> {
    let mut jobs: BTreeMap<String, u64> =
        ["running", "done", "cancelled"].iter().map(|s| ((*s).to_owned(), 0)).collect();
    let mut tasks: BTreeMap<&'static str, u64> = TaskState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut queued: BTreeMap<String, u64> = BTreeMap::new();
    let (mut merged, mut conflicts, mut redos, mut turns) = (0u64, 0u64, 0u64, 0u64);
    let (mut input, mut output, mut cache_read, mut cache_write, mut cost) = (0u64, 0u64, 0u64, 0u64, 0.0f64);
    for job in store.jobs()? {
        *jobs.entry(job.state.clone()).or_default() += 1;
        for t in store.tasks(&job.id)? {
            *tasks.entry(t.state.as_str()).or_default() += 1;
            if job.state == "running" && t.state == TaskState::Queued {
                *queued.entry(t.placed.clone().unwrap_or_else(|| t.pool.clone())).or_default() += 1;
            }
            merged += u64::from(t.merge_state == MergeState::Merged);
            conflicts += u64::from(!t.conflict_paths.is_empty());
            redos += u64::from(t.train.redos);
            turns += u64::from(t.turns);
        }
        if let Some(u) = store.job_usage(&job.id)? {
            input += u.input_tokens;
            output += u.output_tokens;
            cache_read += u.cache_read_tokens;
            cache_write += u.cache_write_tokens;
            cost += u.known_cost();
        }
    }
    let mut out = Vec::new();
    let mut f = Family::of("grove_jobs");
    for (s, n) in &jobs {
        f = f.with(vec![("state", s.clone())], *n as f64);
    }
    out.push(f);
    let mut f = Family::of("grove_tasks");
    for (s, n) in &tasks {
        f = f.with(vec![("state", (*s).to_owned())], *n as f64);
    }
    out.push(f);
    let mut f = Family::of("grove_queue_depth");
    for (p, n) in &queued {
        f = f.with(vec![("pool", p.clone())], *n as f64);
    }
    out.push(f);
    for (name, n) in [
        ("grove_merges_total", merged),
        ("grove_conflicts_total", conflicts),
        ("grove_redos_total", redos),
        ("grove_agent_turns_total", turns),
    ] {
        out.push(Family::of(name).with(vec![], n as f64));
    }
    let mut f = Family::of("grove_agent_tokens_total");
    for (k, n) in
        [("input", input), ("output", output), ("cache_read", cache_read), ("cache_write", cache_write)]
    {
        f = f.with(vec![("kind", k.to_owned())], n as f64);
    }
    out.push(f);
    out.push(Family::of("grove_agent_cost_usd_total").with(vec![], cost));
    // Workers: those the registry has now, by pool; their slots and the tasks they run.
    let (mut live, mut slots, mut busy, mut refusing) = (
        BTreeMap::<&str, u64>::new(),
        BTreeMap::<&str, u64>::new(),
        BTreeMap::<&str, u64>::new(),
        BTreeMap::<&str, u64>::new(),
    );
    for w in workers {
        for p in &w.pools {
            *live.entry(p).or_default() += 1;
            *slots.entry(p).or_default() += u64::from(w.capacity);
            *busy.entry(p).or_default() += w.tasks.len() as u64;
            *refusing.entry(p).or_default() += u64::from(w.refusing.is_some());
        }
    }
    for (name, by) in [
        ("grove_workers", &live),
        ("grove_worker_slots", &slots),
        ("grove_worker_tasks", &busy),
        ("grove_workers_refusing", &refusing),
    ] {
        let mut f = Family::of(name);
        for (p, n) in by {
            f = f.with(vec![("pool", (*p).to_owned())], *n as f64);
        }
        out.push(f);
    }
    // Pods: what each Kubernetes-backed pool's launcher last saw.
    let mut pods = Family::of("grove_pods");
    let mut wanted = Family::of("grove_pods_wanted");
    let mut failures = Family::of("grove_pod_failures");
    for r in pools {
        let mut phases: BTreeMap<&str, u64> = BTreeMap::new();
        for p in &r.pods {
            *phases.entry(p.phase.as_str()).or_default() += 1;
        }
        for (phase, n) in phases {
            pods = pods.with(vec![("pool", r.pool.clone()), ("phase", phase.to_owned())], n as f64);
        }
        wanted = wanted.with(vec![("pool", r.pool.clone())], f64::from(r.wanted));
        failures = failures.with(vec![("pool", r.pool.clone())], r.failures.len() as f64);
    }
    out.extend([pods, wanted, failures]);
    Ok(out)
}

/// The families and the timings as Prometheus text exposition format 0.0.4.
pub fn text(families: &[Family], timings: &Timings) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (labels, value) in &f.samples {
            let _ = writeln!(out, "{}{} {value}", f.name, labels_text(labels));
        }
    }
    timings.text(&mut out);
    out
}

fn labels_text(labels: &[(&str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The metrics of the state now, as Prometheus text (no workers, pods or timings).
pub fn render(store: &Store) -> Result<String, StoreError> {
    Ok(text(&snapshot(store, &[], &[])?, &Timings::default()))
}

/// The upper bounds of the duration histograms, in seconds: from a quick dispatch to an
/// eight-hour task.
const BUCKETS: [f64; 14] =
    [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 28800.0];

/// The durations the coordinator sees, measured from the events as they arrive (so they
/// include the bus's latency): from dispatch to a worker taking the attempt, each turn, each
/// attempt, and each task from its first dispatch to its end. Kept in memory since the
/// daemon started (Prometheus' usual counters), and recorded as OTLP histograms too.
pub struct Timings {
    clocks: std::sync::Mutex<std::collections::HashMap<(String, String), Clock>>,
    hists: std::sync::Mutex<BTreeMap<&'static str, Hist>>,
    otel: BTreeMap<&'static str, grove_telemetry::opentelemetry::metrics::Histogram<f64>>,
}

#[derive(Default)]
struct Clock {
    attempt: u32,
    dispatched: Option<std::time::Instant>,
    started: Option<std::time::Instant>,
    turn: Option<std::time::Instant>,
}

#[derive(Default, Clone)]
struct Hist {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The histograms: name, help.
const HISTOGRAMS: [(&str, &str); 4] = [
    ("grove_dispatch_latency_seconds", "From dispatching an attempt to a worker taking it."),
    ("grove_turn_duration_seconds", "Agent turns, from their start to their checkpoint."),
    ("grove_attempt_duration_seconds", "Attempts, from a worker taking them to their end."),
    ("grove_task_duration_seconds", "Tasks, from their first dispatch to the end of their last attempt."),
];

impl Default for Timings {
    fn default() -> Self {
        let meter = grove_telemetry::meter();
        let otel = HISTOGRAMS
            .iter()
            .map(|(name, help)| {
                let otel_name = name.trim_end_matches("_seconds").replace('_', ".");
                let h = meter
                    .f64_histogram(otel_name)
                    .with_unit("s")
                    .with_description(*help)
                    .with_boundaries(BUCKETS.to_vec())
                    .build();
                (*name, h)
            })
            .collect();
        Timings { clocks: Default::default(), hists: Default::default(), otel }
    }
}

impl Timings {
    fn observe(
        &self,
        name: &'static str,
        d: std::time::Duration,
        attrs: &[grove_telemetry::opentelemetry::KeyValue],
    ) {
        let secs = d.as_secs_f64();
        let mut hists = self.hists.lock().unwrap_or_else(|p| p.into_inner());
        let h = hists.entry(name).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
        drop(hists);
        if let Some(o) = self.otel.get(name) {
            o.record(secs, attrs);
        }
    }

    fn clock<R>(&self, job: &str, task: &str, attempt: u32, f: impl FnOnce(&mut Clock) -> R) -> R {
        let mut clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        let c = clocks.entry((job.to_owned(), task.to_owned())).or_default();
        if c.attempt != attempt {
            *c = Clock { attempt, ..Clock::default() };
        }
        f(c)
    }

    /// An attempt was put on the bus.
    pub fn dispatched(&self, job: &str, task: &str, attempt: u32) {
        self.clock(job, task, attempt, |c| c.dispatched = Some(std::time::Instant::now()));
    }

    /// An event of the attempt arrived. `first_dispatched_at` (unix seconds) dates the task.
    pub fn event(&self, ev: &grove_core::task::TaskEvent, pool: &str, first_dispatched_at: Option<i64>) {
        use grove_core::task::EventKind;
        let now = std::time::Instant::now();
        let attrs = [grove_telemetry::opentelemetry::KeyValue::new("pool", pool.to_owned())];
        let (job, task) = (ev.job.as_str(), ev.task.as_str());
        match &ev.kind {
            EventKind::State { state: TaskState::Preparing, .. } => {
                let since = self.clock(job, task, ev.attempt, |c| {
                    c.started = Some(now);
                    c.dispatched.take()
                });
                if let Some(t) = since {
                    self.observe("grove_dispatch_latency_seconds", now - t, &attrs);
                }
            }
            EventKind::State { state: TaskState::Running, turn: Some(_) } => {
                self.clock(job, task, ev.attempt, |c| c.turn = Some(now));
            }
            EventKind::Checkpoint { .. } => {
                if let Some(t) = self.clock(job, task, ev.attempt, |c| c.turn.take()) {
                    self.observe("grove_turn_duration_seconds", now - t, &attrs);
                }
            }
            EventKind::Finished(o) => {
                let started = self.clock(job, task, ev.attempt, |c| c.started.take());
                self.clocks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(job.to_owned(), task.to_owned()));
                if let Some(t) = started {
                    self.observe("grove_attempt_duration_seconds", now - t, &attrs);
                }
                if o.state.is_terminal()
                    && let Some(first) = first_dispatched_at
                {
                    let now_secs = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    let secs = (now_secs - first).max(0);
                    self.observe(
                        "grove_task_duration_seconds",
                        std::time::Duration::from_secs(secs.unsigned_abs()),
                        &attrs,
                    );
                }
            }
            EventKind::State { .. } => {}
        }
    }

    fn text(&self, out: &mut String) {
        let hists = self.hists.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (name, help) in HISTOGRAMS {
            let h = hists.get(name).cloned().unwrap_or_default();
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (le, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", h.sum);
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
    }
}

/// What `/metrics` and the OTLP gauges read.
#[derive(Clone)]
pub struct Sources {
    pub coord: Arc<crate::Coordinator>,
    pub board: Arc<crate::launch::Board>,
}

impl Sources {
    /// The families now (the state read off the async runtime's threads).
    pub async fn families(&self) -> Result<Vec<Family>, String> {
        // The registry is a NATS read: bounded, so a slow bus never holds a scrape.
        let workers =
            match tokio::time::timeout(std::time::Duration::from_secs(2), self.coord.bus.workers()).await {
                Ok(Ok(w)) => w,
                Ok(Err(e)) => {
                    tracing::debug!("metrics: the worker registry: {e}");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
        let pools = self.board.pools();
        let coord = self.coord.clone();
        tokio::task::spawn_blocking(move || snapshot(&coord.store, &workers, &pools))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Export the families as OTLP gauges and counters (a no-op without a meter provider):
    /// refreshed every `every` in the background, read by the instruments' callbacks.
    pub fn export(self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let latest: Arc<std::sync::Mutex<Vec<Family>>> = Arc::default();
        let meter = grove_telemetry::meter();
        let mut instruments = Vec::new();
        for (name, kind, help) in FAMILIES {
            let otel_name = name.trim_end_matches("_total").replace('_', ".");
            let latest = latest.clone();
            let read = move |name: &str| -> Vec<(f64, Vec<grove_telemetry::opentelemetry::KeyValue>)> {
                let latest = latest.lock().unwrap_or_else(|p| p.into_inner());
                latest
                    .iter()
                    .filter(|f| f.name == name)
                    .flat_map(|f| f.samples.iter())
                    .map(|(labels, v)| {
                        (
                            *v,
                            labels
                                .iter()
                                .map(|(k, v)| grove_telemetry::opentelemetry::KeyValue::new(*k, v.clone()))
                                .collect(),
                        )
                    })
                    .collect()
            };
            match kind {
                Kind::Gauge => instruments.push(Box::new(
                    meter
                        .f64_observable_gauge(otel_name)
                        .with_description(help)
                        .with_callback(move |o| {
                            for (v, attrs) in read(name) {
                                o.observe(v, &attrs);
                            }
                        })
                        .build(),
                ) as Box<dyn std::any::Any + Send>),
                Kind::Counter => instruments.push(Box::new(
                    meter
                        .f64_observable_counter(otel_name)
                        .with_description(help)
                        .with_callback(move |o| {
                            for (v, attrs) in read(name) {
                                o.observe(v, &attrs);
                            }
                        })
                        .build(),
                )),
            }
        }
        tokio::spawn(async move {
            let _instruments = instruments;
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match self.families().await {
                    Ok(f) => *latest.lock().unwrap_or_else(|p| p.into_inner()) = f,
                    Err(e) => tracing::warn!("metrics: reading the state: {e}"),
                }
            }
        })
    }
}

/// Every family [`snapshot`] makes, for the OTLP instruments.
const FAMILIES: [(&str, Kind, &str); 16] = [
    ("grove_jobs", Kind::Gauge, "Jobs by state."),
    ("grove_tasks", Kind::Gauge, "Tasks by state."),
    ("grove_queue_depth", Kind::Gauge, "Queued tasks of running jobs, by pool."),
    ("grove_merges_total", Kind::Counter, "Tasks merged into their integration branch."),
    ("grove_conflicts_total", Kind::Counter, "Tasks whose branch conflicted with the integration branch."),
    ("grove_redos_total", Kind::Counter, "Attempts that redid a conflicting task."),
    ("grove_agent_turns_total", Kind::Counter, "Agent turns run."),
    ("grove_agent_tokens_total", Kind::Counter, "Tokens the agents reported, by kind."),
    ("grove_agent_cost_usd_total", Kind::Counter, "What the agents are known to have spent, in USD."),
    ("grove_workers", Kind::Gauge, "Workers registered now, by pool."),
    ("grove_worker_slots", Kind::Gauge, "Task slots of the registered workers, by pool."),
    ("grove_worker_tasks", Kind::Gauge, "Tasks the registered workers are running, by pool."),
    ("grove_workers_refusing", Kind::Gauge, "Registered workers taking no task (disk, draining), by pool."),
    ("grove_pods", Kind::Gauge, "Worker pods not finished, by pool and phase."),
    ("grove_pods_wanted", Kind::Gauge, "Worker pods the queue asks for, by pool."),
    ("grove_pod_failures", Kind::Gauge, "Recent pod failures kept in the report, by pool."),
];

/// `GET /metrics`.
pub fn router(sources: Sources) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(metrics)).with_state(sources)
}

async fn metrics(State(sources): State<Sources>) -> Response {
    match sources.families().await {
        Ok(families) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text(&families, &sources.coord.timings),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::render;
    use crate::train::tests::{coordinator, repo, spec};

    #[test]
    fn the_metrics_parse_as_prometheus_text_with_the_states_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("repo");
        std::fs::create_dir_all(&src).expect("mkdir");
        let git = grove_git::Git::detect().expect("git");
        let (base, tips) = repo(&git, &src, 3, &[]);
        let (coord, _job) = coordinator(&dir.path().join("home"), &src, spec(), &base, &tips);
        let text = render(&coord.store).expect("render");
        let mut seen = std::collections::BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') {
                assert!(line.starts_with("# HELP ") || line.starts_with("# TYPE "), "{line}");
                continue;
            }
            let (name, value) = line.rsplit_once(' ').expect("name value");
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            seen.insert(name.to_owned(), v);
        }
        assert_eq!(seen.get("grove_jobs{state=\"running\"}"), Some(&1.0), "{text}");
        let tasks: f64 = seen.iter().filter(|(k, _)| k.starts_with("grove_tasks{")).map(|(_, v)| v).sum();
        assert_eq!(tasks, 3.0, "{text}");
        assert!(seen.contains_key("grove_merges_total") && seen.contains_key("grove_agent_cost_usd_total"));
    }
}
