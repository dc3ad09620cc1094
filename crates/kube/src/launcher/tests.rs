//! The launcher against a mocked API server (`tower_test::mock::pair`): every request it
//! makes is checked (method, path, query, body) and answered as the API server would.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::config::{Layers, Overrides};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

struct Fixed(Mutex<PoolDemand>);

#[async_trait::async_trait]
impl Demands for Fixed {
    async fn demand(&self, pool: &str, own: &str) -> Result<PoolDemand, String> {
        assert_eq!((pool, own), ("cloud", "grove-cloud-"));
        Ok(*self.0.lock().expect("lock"))
    }
}

struct Counter(AtomicU32);

impl TokenSource for Counter {
    fn mint(&self, ttl: Duration, now: i64) -> (String, i64) {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        (format!("token-{n}"), now + ttl.as_secs() as i64)
    }
}

struct Fixture {
    launcher: Launcher,
    handle: Handle,
    board: Arc<Board>,
    demand: Arc<Fixed>,
    clock: Arc<AtomicI64>,
}

fn fixture(queued: u32, running: u32) -> Fixture {
    let text = "[kube]\nimage = \"grove-worker:1\"\ngit_url = \"http://grove:7070/git\"\nbackoff = \"1s\"\n\
                max_backoff = \"4s\"\ntoken_ttl = \"1h\"\n[kube.pools.cloud]\nmax_pods = 3\n";
    let settings = Layers { file: Layers::parse(text, "t").expect("parse"), overrides: Overrides::default() }
        .validate()
        .expect("valid");
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "grove");
    let board = Arc::new(Board::default());
    let demand = Arc::new(Fixed(Mutex::new(PoolDemand {
        demand: Demand { queued, running, others: 0 },
        deadline: Some(Duration::from_secs(3600)),
    })));
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let c = clock.clone();
    let launcher = Launcher::new(Context {
        client,
        namespace: "grove".into(),
        settings,
        nats_url: "nats://nats:4222".into(),
        demands: demand.clone(),
        tokens: Arc::new(Counter(AtomicU32::new(0))),
        board: board.clone(),
        clock: Arc::new(move || c.load(Ordering::SeqCst)),
    });
    Fixture { launcher, handle, board, demand, clock }
}

type Check = Box<dyn Fn(&Value) + Send>;

/// What the mocked API server expects next, and what it answers.
struct Step {
    method: &'static str,
    path: String,
    /// `key=value` pairs the query must have (decoded).
    query: Vec<(&'static str, String)>,
    status: u16,
    reply: Value,
    /// Checks on the request body (JSON).
    check: Option<Check>,
}

fn step(method: &'static str, path: &str, status: u16, reply: Value) -> Step {
    Step { method, path: path.to_owned(), query: Vec::new(), status, reply, check: None }
}

impl Step {
    fn query(mut self, k: &'static str, v: &str) -> Step {
        self.query.push((k, v.to_owned()));
        self
    }
    fn check(mut self, f: impl Fn(&Value) + Send + 'static) -> Step {
        self.check = Some(Box::new(f));
        self
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answer `steps` in order; any other request fails the test. Returns the request bodies.
fn serve(mut handle: Handle, steps: Vec<Step>) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut bodies = Vec::new();
        for (i, s) in steps.into_iter().enumerate() {
            let (req, send) =
                handle.next_request().await.unwrap_or_else(|| panic!("step {i}: no request came"));
            assert_eq!(req.method().as_str(), s.method, "step {i}: {} {}", req.method(), req.uri());
            assert_eq!(req.uri().path(), s.path, "step {i}");
            let query: Vec<(String, String)> = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (decode(k), decode(v))
                })
                .collect();
            for (k, v) in &s.query {
                assert!(
                    query.iter().any(|(qk, qv)| qk == k && qv == v),
                    "step {i}: {k}={v} not in {query:?}"
                );
            }
            let bytes = req.into_body().collect_bytes().await.expect("body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON body")
            };
            if let Some(check) = &s.check {
                check(&body);
            }
            bodies.push(body);
            let reply = serde_json::to_vec(&s.reply).expect("reply");
            send.send_response(
                Response::builder().status(s.status).body(Body::from(reply)).expect("response"),
            );
        }
        bodies
    })
}

const JOBS: &str = "/apis/batch/v1/namespaces/grove/jobs";
const PODS: &str = "/api/v1/namespaces/grove/pods";
const SECRET: &str = "/api/v1/namespaces/grove/secrets/grove-worker-git";
const SELECTOR: &str =
    "app.kubernetes.io/managed-by=grove,app.kubernetes.io/instance=grove,grove.dev/pool=cloud";

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": if kind == "JobList" { "batch/v1" } else { "v1" }, "kind": kind, "metadata": {"resourceVersion": "7"}, "items": items})
}

fn a_job(name: &str, uid: &str, status: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": "grove", "uid": uid, "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"template": {"spec": {"containers": [{"name": "worker", "image": "grove-worker:1"}]}}},
           "status": status})
}

fn a_pod(job: &str, status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("{job}-x7k2p"), "namespace": "grove", "labels": {"batch.kubernetes.io/job-name": job},
                        "creationTimestamp": "2026-01-01T00:00:05Z"},
           "status": status})
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "reason": reason, "message": message, "code": code})
}

fn created(name: &'static str) -> Step {
    step("POST", JOBS, 201, a_job(name, &format!("uid-{name}"), json!({})))
        .query("fieldManager", FIELD_MANAGER)
        .check(move |b| {
            assert_eq!(b["apiVersion"], "batch/v1");
            assert_eq!(b["kind"], "Job");
            assert_eq!(b["metadata"]["name"], name);
            assert_eq!(b["metadata"]["labels"]["grove.dev/pool"], "cloud");
            assert_eq!(b["spec"]["backoffLimit"], 0);
            // The queued tasks' deadline (1h) plus the grace period.
            assert_eq!(b["spec"]["activeDeadlineSeconds"], 3600 + 300);
            assert_eq!(b["spec"]["template"]["spec"]["containers"][0]["args"][2], "cloud");
        })
}

fn token_written(n: u32) -> Step {
    step(
        "PATCH",
        SECRET,
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "grove-worker-git"}}),
    )
    .query("fieldManager", FIELD_MANAGER)
    .query("force", "true")
    .check(move |b| {
        assert_eq!(b["kind"], "Secret");
        let want = format!("token-{n}");
        let b64 = b["data"]["token"].as_str().expect("token");
        assert_eq!(decode_b64(b64), want.as_bytes(), "{b64}");
    })
}

fn decode_b64(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let vals: Vec<u32> = s
        .bytes()
        .filter(|c| *c != b'=')
        .map(|c| T.iter().position(|t| *t == c).expect("base64") as u32)
        .collect();
    let mut out = Vec::new();
    for ch in vals.chunks(4) {
        let n = ch.iter().enumerate().fold(0u32, |n, (i, v)| n | (v << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..ch.len() - 1]);
    }
    out
}

fn pool(f: &Fixture) -> PoolSettings {
    f.launcher.settings().pool("cloud").expect("cloud").clone()
}

#[tokio::test]
async fn queued_tasks_get_jobs_after_the_token() {
    let f = fixture(2, 0);
    let p = pool(&f);
    let api = serve(
        f.handle,
        vec![
            step("GET", JOBS, 200, list("JobList", vec![])).query("labelSelector", SELECTOR),
            token_written(1),
            created("grove-cloud-0"),
            created("grove-cloud-1"),
        ],
    );
    let action = f.launcher.reconcile(&p).await.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    api.await.expect("every request as expected");
    let r = &f.board.pools()[0];
    assert_eq!((r.pool.as_str(), r.backend.as_str(), r.wanted, r.max), ("cloud", "kubernetes/grove", 2, 3));
    let names: Vec<&str> = r.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["grove-cloud-0", "grove-cloud-1"]);
    assert!(r.pods.iter().all(|p| p.phase == "pending"));
}

#[tokio::test]
async fn a_name_already_taken_is_adopted_or_freed() {
    let f = fixture(2, 0);
    let p = pool(&f);
    let api = serve(
        f.handle,
        vec![
            // The list is stale: both slots exist by the time they are created.
            step("GET", JOBS, 200, list("JobList", vec![])),
            token_written(1),
            step(
                "POST",
                JOBS,
                409,
                status(409, "AlreadyExists", "jobs.batch \"grove-cloud-0\" already exists"),
            ),
            step(
                "GET",
                &format!("{JOBS}/grove-cloud-0"),
                200,
                a_job("grove-cloud-0", "u0", json!({"active": 1})),
            ),
            step(
                "POST",
                JOBS,
                409,
                status(409, "AlreadyExists", "jobs.batch \"grove-cloud-1\" already exists"),
            ),
            step(
                "GET",
                &format!("{JOBS}/grove-cloud-1"),
                200,
                a_job("grove-cloud-1", "u1", json!({"conditions": [{"type": "Complete", "status": "True"}]})),
            ),
            step("DELETE", &format!("{JOBS}/grove-cloud-1"), 200, a_job("grove-cloud-1", "u1", json!({})))
                .check(|b| assert_eq!(b["propagationPolicy"], "Background")),
        ],
    );
    f.launcher.reconcile(&p).await.expect("reconciled");
    api.await.expect("every request as expected");
    let r = &f.board.pools()[0];
    let names: Vec<&str> = r.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["grove-cloud-0"], "the live one adopted, the finished one deleted");
}

#[tokio::test]
async fn finished_jobs_are_deleted_and_a_failure_holds_the_pool() {
    let f = fixture(1, 0);
    let p = pool(&f);
    let failed =
        json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]});
    let oom = json!({"phase": "Failed", "containerStatuses": [{"name": "worker", "image": "grove-worker:1", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]});
    let api = serve(
        f.handle,
        vec![
            step(
                "GET",
                JOBS,
                200,
                list(
                    "JobList",
                    vec![
                        a_job(
                            "grove-cloud-0",
                            "u0",
                            json!({"conditions": [{"type": "Complete", "status": "True"}]}),
                        ),
                        a_job("grove-cloud-1", "u1", failed),
                    ],
                ),
            )
            .query("labelSelector", SELECTOR),
            step("GET", PODS, 200, list("PodList", vec![a_pod("grove-cloud-1", oom)]))
                .query("labelSelector", SELECTOR),
            step("DELETE", &format!("{JOBS}/grove-cloud-0"), 200, a_job("grove-cloud-0", "u0", json!({})))
                .check(|b| assert_eq!(b["propagationPolicy"], "Background")),
            // Already gone (its TTL): fine.
            step(
                "DELETE",
                &format!("{JOBS}/grove-cloud-1"),
                404,
                status(404, "NotFound", "jobs.batch \"grove-cloud-1\" not found"),
            ),
        ],
    );
    let action = f.launcher.reconcile(&p).await.expect("reconciled");
    api.await.expect("every request as expected");
    assert!(
        action.requeue_after <= Duration::from_millis(1100),
        "looks again when the backoff ends: {action:?}"
    );
    let r = &f.board.pools()[0];
    assert!(r.pods.is_empty());
    assert_eq!(r.failures.len(), 1);
    assert_eq!(
        (r.failures[0].name.as_str(), r.failures[0].reason.as_deref()),
        ("grove-cloud-1", Some("OOMKilled"))
    );
    assert!(r.held.as_deref().is_some_and(|h| h.contains("backing off")), "{:?}", r.held);
}

#[tokio::test]
async fn a_stuck_pod_is_reported_and_nothing_more_is_made() {
    let f = fixture(3, 0);
    let p = pool(&f);
    let pulling = json!({"phase": "Pending", "containerStatuses": [{"name": "worker", "image": "grove-worker:1", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"grove-worker:1\""}}}]});
    let api = serve(
        f.handle,
        vec![
            step("GET", JOBS, 200, list("JobList", vec![a_job("grove-cloud-0", "u0", json!({"active": 1}))])),
            step("GET", PODS, 200, list("PodList", vec![a_pod("grove-cloud-0", pulling)])),
            // The live Job's pod needs a valid token; no Job is created.
            token_written(1),
        ],
    );
    f.launcher.reconcile(&p).await.expect("reconciled");
    api.await.expect("every request as expected");
    let r = &f.board.pools()[0];
    assert_eq!(r.pods.len(), 1);
    assert!(r.pods[0].stuck);
    assert_eq!(r.pods[0].reason.as_deref(), Some("ImagePullBackOff"));
    assert_eq!(r.pods[0].pod.as_deref(), Some("grove-cloud-0-x7k2p"));
    assert!(r.held.as_deref().is_some_and(|h| h.contains("ImagePullBackOff")), "{:?}", r.held);
}

#[tokio::test]
async fn scale_to_zero_deletes_what_never_started_and_leaves_running_workers() {
    let f = fixture(0, 0);
    let p = pool(&f);
    let api = serve(
        f.handle,
        vec![
            step(
                "GET",
                JOBS,
                200,
                list(
                    "JobList",
                    vec![
                        a_job("grove-cloud-0", "u0", json!({"active": 1})),
                        a_job("grove-cloud-1", "u1", json!({"active": 1})),
                    ],
                ),
            ),
            step(
                "GET",
                PODS,
                200,
                list(
                    "PodList",
                    vec![
                        a_pod("grove-cloud-0", json!({"phase": "Running"})),
                        a_pod("grove-cloud-1", json!({"phase": "Pending"})),
                    ],
                ),
            ),
            step("DELETE", &format!("{JOBS}/grove-cloud-1"), 200, a_job("grove-cloud-1", "u1", json!({}))),
            token_written(1),
        ],
    );
    f.launcher.reconcile(&p).await.expect("reconciled");
    api.await.expect("every request as expected");
    let r = &f.board.pools()[0];
    assert_eq!(r.wanted, 0);
    let pods: Vec<(&str, &str)> = r.pods.iter().map(|p| (p.name.as_str(), p.phase.as_str())).collect();
    assert_eq!(pods, [("grove-cloud-0", "running")]);
}

#[tokio::test]
async fn the_token_is_written_again_in_place_before_it_expires() {
    let f = fixture(1, 0);
    let p = pool(&f);
    let running = || list("JobList", vec![a_job("grove-cloud-0", "u0", json!({"active": 1}))]);
    let pods = || list("PodList", vec![a_pod("grove-cloud-0", json!({"phase": "Running"}))]);
    let api = serve(
        f.handle,
        vec![
            step("GET", JOBS, 200, list("JobList", vec![])),
            token_written(1),
            created("grove-cloud-0"),
            // A minute later: the token is fresh, nothing is written.
            step("GET", JOBS, 200, running()),
            step("GET", PODS, 200, pods()),
            // Over half of its hour later: a new token, same Secret.
            step("GET", JOBS, 200, running()),
            step("GET", PODS, 200, pods()),
            token_written(2),
        ],
    );
    f.launcher.reconcile(&p).await.expect("round 1");
    f.clock.fetch_add(60, Ordering::SeqCst);
    *f.demand.0.lock().expect("lock") =
        PoolDemand { demand: Demand { queued: 0, running: 1, others: 0 }, deadline: None };
    f.launcher.reconcile(&p).await.expect("round 2");
    f.clock.fetch_add(1800, Ordering::SeqCst);
    f.launcher.reconcile(&p).await.expect("round 3");
    api.await.expect("every request as expected");
}

/// 403 and 500 are errors of the round: the error policy waits (doubling, capped), the pool's
/// report says what failed; the next good round clears it.
#[tokio::test]
async fn the_error_policy_backs_off_on_403_and_500() {
    let f = fixture(1, 0);
    let p = pool(&f);
    let api = serve(
        f.handle,
        vec![
            step(
                "GET",
                JOBS,
                403,
                status(
                    403,
                    "Forbidden",
                    "jobs.batch is forbidden: User \"system:serviceaccount:grove:grove\" cannot list resource \"jobs\"",
                ),
            ),
            step("GET", JOBS, 500, status(500, "InternalError", "etcdserver: request timed out")),
            step("GET", JOBS, 500, status(500, "InternalError", "etcdserver: request timed out")),
            step("GET", JOBS, 500, status(500, "InternalError", "etcdserver: request timed out")),
            step("GET", JOBS, 200, list("JobList", vec![])),
            token_written(1),
            created("grove-cloud-0"),
        ],
    );
    let err = f.launcher.reconcile(&p).await.expect_err("403");
    assert_eq!((err.code(), err.kind()), (Some(403), "forbidden"));
    assert_eq!(f.launcher.error_policy(&p, &err).await, Action::requeue(Duration::from_secs(1)));
    let r = &f.board.pools()[0];
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains("forbidden") && e.contains("Role")),
        "{:?}",
        r.error
    );
    let mut waits = Vec::new();
    for _ in 0..3 {
        let err = f.launcher.reconcile(&p).await.expect_err("500");
        assert_eq!(err.kind(), "server-error");
        waits.push(f.launcher.error_policy(&p, &err).await.requeue_after.as_secs());
    }
    assert_eq!(waits, [2, 4, 4], "doubling, capped at max_backoff");
    f.launcher.reconcile(&p).await.expect("the API is back");
    api.await.expect("every request as expected");
    assert_eq!(f.board.pools()[0].error, None);
}
