//! OpenTelemetry: one connected trace per attempt, coordinator → NATS → worker → agent, and
//! the coordinator's metrics over OTLP, received by a collector of the test's own.

use std::process::Stdio;
use std::time::Duration;

use grove_tests::Proc;
use grove_tests::otlp::{Collector, Span};

use crate::distributed::{dirs_repo, free_port, nats_server, wait_port};
use crate::harness::Env;

fn otel(cmd: &mut std::process::Command, collector: &Collector) {
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300");
}

#[test]
fn a_task_is_one_trace_from_the_coordinator_through_nats_to_the_agent() {
    let env = Env::new();
    let collector = Collector::start();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let mut coord = grove_tests::command("grove");
    coord
        .args(["coordinator", "--nats", &nats, "--listen", &format!("127.0.0.1:{port}")])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    otel(&mut coord, &collector);
    let _coord = Proc(coord.spawn().expect("spawn grove coordinator"));
    let mut worker = grove_tests::command("grove");
    worker
        .args(["worker", "--nats", &nats, "--pool", "local", "--id", "w1", "--ack-wait", "5s"])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.path().join("worker-w1"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    otel(&mut worker, &collector);
    let _worker = Proc(worker.spawn().expect("spawn grove worker"));
    wait_port(port);
    let repo = dirs_repo(&env, "r", 1);
    let api = format!("http://127.0.0.1:{port}");
    // The agent keeps the TRACEPARENT it was given, in the file it changes.
    let script = r#"printf '%s\n' "$TRACEPARENT" >> "$GROVE_TASK/f.txt""#;
    let run = env
        .grove(&repo, &["run", "--coordinator", &api, "--split", "dirs", "--json", "--", "sh", "-c", script]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let job = run.json();
    let integration = job["integration_branch"].as_str().expect("branch");
    let changed = env.git(&repo, &["show", &format!("{integration}:d00/f.txt")]);
    let traceparent = changed.lines().nth(1).unwrap_or_default().to_owned();

    let within = Duration::from_secs(20);
    let find = |c: &Collector, service: &str, name: &str| -> Option<Span> {
        c.spans().into_iter().find(|s| s.service == service && s.name == name)
    };
    let dispatch = collector
        .wait_for(within, |c| find(c, "grove-coordinator", "dispatch"))
        .unwrap_or_else(|| panic!("no dispatch span: {:#?}", collector.spans()));
    assert!(dispatch.parent.is_empty(), "the dispatch is the attempt's root: {dispatch:?}");
    assert_eq!(dispatch.attributes.get("grove.task").map(String::as_str), Some("d00"));
    assert_eq!(dispatch.attributes.get("grove.attempt").map(String::as_str), Some("1"));
    let attempt = collector
        .wait_for(within, |c| find(c, "grove-worker", "attempt"))
        .unwrap_or_else(|| panic!("no attempt span: {:#?}", collector.spans()));
    assert_eq!(attempt.trace_id, dispatch.trace_id, "one trace: {attempt:?} {dispatch:?}");
    assert_eq!(attempt.parent, dispatch.span_id, "the worker's attempt is the dispatch's child");
    assert_eq!(attempt.attributes.get("grove.outcome").map(String::as_str), Some("succeeded"), "{attempt:?}");
    let turn = collector
        .wait_for(within, |c| find(c, "grove-worker", "turn"))
        .unwrap_or_else(|| panic!("no turn span: {:#?}", collector.spans()));
    assert_eq!(
        (turn.trace_id.as_str(), turn.parent.as_str()),
        (attempt.trace_id.as_str(), attempt.span_id.as_str())
    );
    assert_eq!(turn.attributes.get("gen_ai.operation.name").map(String::as_str), Some("invoke_agent"));
    // The agent got the turn's context.
    assert_eq!(traceparent, format!("00-{}-{}-01", turn.trace_id, turn.span_id), "{changed}");
    // The worker's git processes are inside the attempt's trace, none a trace of its own.
    let spans = collector.spans();
    let gits: Vec<&Span> = spans.iter().filter(|s| s.service == "grove-worker" && s.name == "git").collect();
    assert!(!gits.is_empty(), "{spans:#?}");
    assert!(gits.iter().all(|g| g.trace_id == attempt.trace_id && !g.parent.is_empty()), "{gits:#?}");
    assert!(
        collector.wait_for(within, |c| find(c, "grove-coordinator", "merge")).is_some(),
        "no merge span: {:#?}",
        collector.spans()
    );
    // The coordinator's metrics arrive over OTLP: the state's gauges and the durations.
    let point = |c: &Collector, metric: &str| {
        c.points().into_iter().rev().find(|p| p.service == "grove-coordinator" && p.metric == metric)
    };
    let turns = collector
        .wait_for(within, |c| point(c, "grove.turn.duration").filter(|p| p.value >= 1.0))
        .unwrap_or_else(|| panic!("no turn durations: {:#?}", collector.points()));
    assert_eq!(turns.attributes.get("pool").map(String::as_str), Some("local"));
    let merged = collector
        .wait_for(within, |c| point(c, "grove.merges").filter(|p| p.value >= 1.0))
        .unwrap_or_else(|| panic!("no merges counted: {:#?}", collector.points()));
    assert_eq!(merged.value, 1.0);
}
