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

/// The metrics now, as Prometheus text exposition format 0.0.4.
pub fn render(store: &Store) -> Result<String, StoreError> {
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
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let label = |k: &str, v: &str| {
        format!("{{{k}=\"{}\"}}", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
    };
    family(
        "grove_jobs",
        "gauge",
        "Jobs by state.",
        jobs.iter().map(|(s, n)| (label("state", s), n.to_string())).collect(),
    );
    family(
        "grove_tasks",
        "gauge",
        "Tasks by state.",
        tasks.iter().map(|(s, n)| (label("state", s), n.to_string())).collect(),
    );
    family(
        "grove_queue_depth",
        "gauge",
        "Queued tasks of running jobs, by pool.",
        queued.iter().map(|(p, n)| (label("pool", p), n.to_string())).collect(),
    );
    family(
        "grove_merges_total",
        "counter",
        "Tasks merged into their integration branch.",
        vec![(String::new(), merged.to_string())],
    );
    family(
        "grove_conflicts_total",
        "counter",
        "Tasks whose branch conflicted with the integration branch.",
        vec![(String::new(), conflicts.to_string())],
    );
    family(
        "grove_redos_total",
        "counter",
        "Attempts that redid a conflicting task.",
        vec![(String::new(), redos.to_string())],
    );
    family(
        "grove_agent_turns_total",
        "counter",
        "Agent turns run.",
        vec![(String::new(), turns.to_string())],
    );
    family(
        "grove_agent_tokens_total",
        "counter",
        "Tokens the agents reported, by kind.",
        [("input", input), ("output", output), ("cache_read", cache_read), ("cache_write", cache_write)]
            .iter()
            .map(|(k, n)| (label("kind", k), n.to_string()))
            .collect(),
    );
    family(
        "grove_agent_cost_usd_total",
        "counter",
        "What the agents are known to have spent, in USD.",
        vec![(String::new(), format!("{cost}"))],
    );
    Ok(out)
}

/// `GET /metrics`.
pub fn router(coord: Arc<crate::Coordinator>) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(metrics)).with_state(coord)
}

async fn metrics(State(coord): State<Arc<crate::Coordinator>>) -> Response {
    match tokio::task::spawn_blocking(move || render(&coord.store)).await {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
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
