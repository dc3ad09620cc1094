//! A fake Kubernetes for the launcher's end-to-end tests: an API server on loopback that
//! stores the Jobs, pods and Secrets the coordinator makes (the endpoints the launcher uses,
//! answered as the real one answers them), and a kubelet that, for each new Job, starts the
//! pod's container as a local process: the image's entrypoint with the pod spec's args, the
//! pod's environment (field refs and Secrets resolved), its volumes as folders of its own
//! (Secrets written into them, and rewritten when the Secret changes). A process that exits
//! finishes its pod and Job; a deleted or evicted pod gets SIGTERM, then SIGKILL after its
//! grace period.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What the fake API server holds.
#[derive(Default)]
pub struct Cluster {
    pub jobs: BTreeMap<String, Value>,
    pub pods: BTreeMap<String, Value>,
    pub secrets: BTreeMap<String, Value>,
    /// Every request: `METHOD /path`.
    pub requests: Vec<String>,
    /// Jobs ever created, in order.
    pub created: Vec<String>,
    serial: u64,
}

/// The fake API server; it stops with the test.
pub struct FakeKube {
    pub port: u16,
    pub namespace: String,
    pub cluster: Arc<Mutex<Cluster>>,
    _runtime: tokio::runtime::Runtime,
}

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                  "reason": reason, "message": message, "code": code}),
    )
}

fn now_rfc3339() -> String {
    // Seconds since the epoch as a UTC timestamp, without a date library.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Whether `obj`'s labels match a selector `k=v,k=v`.
fn selected(obj: &Value, selector: Option<&str>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else { return true };
    sel.split(',').all(|kv| match kv.split_once('=') {
        Some((k, v)) => obj["metadata"]["labels"][k].as_str() == Some(v),
        None => false,
    })
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
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| decode(v)))
}

pub fn b64encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            o.push(if i <= c.len() { T[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' });
        }
    }
    o
}

pub fn b64decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let vals: Vec<u32> = s
        .bytes()
        .filter(|c| *c != b'=')
        .filter_map(|c| T.iter().position(|t| *t == c).map(|p| p as u32))
        .collect();
    let mut out = Vec::new();
    for ch in vals.chunks(4) {
        let n = ch.iter().enumerate().fold(0u32, |n, (i, v)| n | (v << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..ch.len().saturating_sub(1)]);
    }
    out
}

impl Cluster {
    fn answer(&mut self, ns: &str, method: &str, path: &str, query: &str, body: &[u8]) -> (u16, Value) {
        self.requests.push(format!("{method} {path}"));
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let selector = query_param(query, "labelSelector");
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match parts.as_slice() {
            ["apis", "batch", "v1", "namespaces", n, "jobs"] if *n == ns => match method {
                "GET" => {
                    let items: Vec<Value> =
                        self.jobs.values().filter(|j| selected(j, selector.as_deref())).cloned().collect();
                    (
                        200,
                        json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": self.serial.to_string()}, "items": items}),
                    )
                }
                "POST" => {
                    let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
                        return status(422, "Invalid", "metadata.name: Required value".into());
                    };
                    if self.jobs.contains_key(&name) {
                        return status(409, "AlreadyExists", format!("jobs.batch \"{name}\" already exists"));
                    }
                    self.serial += 1;
                    let mut job = body;
                    job["metadata"]["namespace"] = ns.into();
                    job["metadata"]["uid"] = format!("uid-{}", self.serial).into();
                    job["metadata"]["resourceVersion"] = self.serial.to_string().into();
                    job["metadata"]["creationTimestamp"] = now_rfc3339().into();
                    job["status"] = json!({});
                    self.jobs.insert(name.clone(), job.clone());
                    self.created.push(name);
                    (201, job)
                }
                _ => status(405, "MethodNotAllowed", format!("{method} on jobs")),
            },
            ["apis", "batch", "v1", "namespaces", n, "jobs", name] if *n == ns => match method {
                "GET" => match self.jobs.get(*name) {
                    Some(j) => (200, j.clone()),
                    None => status(404, "NotFound", format!("jobs.batch \"{name}\" not found")),
                },
                "DELETE" => match self.jobs.remove(*name) {
                    Some(j) => {
                        // Background propagation: the Job's pods go too (the kubelet stops them).
                        self.pods.retain(|_, p| p["metadata"]["labels"]["job-name"].as_str() != Some(name));
                        (200, j)
                    }
                    None => status(404, "NotFound", format!("jobs.batch \"{name}\" not found")),
                },
                _ => status(405, "MethodNotAllowed", format!("{method} on a job")),
            },
            ["api", "v1", "namespaces", n, "pods"] if *n == ns && method == "GET" => {
                let items: Vec<Value> =
                    self.pods.values().filter(|p| selected(p, selector.as_deref())).cloned().collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": self.serial.to_string()}, "items": items}),
                )
            }
            ["api", "v1", "namespaces", n, "secrets", name] if *n == ns => match method {
                "GET" => match self.secrets.get(*name) {
                    Some(s) => (200, s.clone()),
                    None => status(404, "NotFound", format!("secrets \"{name}\" not found")),
                },
                // Server-side apply: create or replace what this manager owns (all of it here).
                "PATCH" => {
                    if query_param(query, "fieldManager").is_none() {
                        return status(400, "BadRequest", "PATCH with apply needs a fieldManager".into());
                    }
                    self.serial += 1;
                    let mut s = body;
                    s["metadata"]["namespace"] = ns.into();
                    s["metadata"]["resourceVersion"] = self.serial.to_string().into();
                    self.secrets.insert((*name).to_owned(), s.clone());
                    (200, s)
                }
                _ => status(405, "MethodNotAllowed", format!("{method} on a secret")),
            },
            _ => status(404, "NotFound", format!("the fake API server has no {method} {path}")),
        }
    }
}

impl FakeKube {
    /// Start the API server on a free loopback port, for the namespace `namespace`.
    pub fn start(namespace: &str) -> FakeKube {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the fake API server");
        let cluster = Arc::new(Mutex::new(Cluster::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let (c, ns) = (cluster.clone(), namespace.to_owned());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let (c, ns) = (c.clone(), ns.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
                    let (code, v) = c.lock().unwrap_or_else(|p| p.into_inner()).answer(
                        &ns,
                        parts.method.as_str(),
                        parts.uri.path(),
                        parts.uri.query().unwrap_or_default(),
                        &bytes,
                    );
                    axum::response::Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from(serde_json::to_vec(&v).unwrap_or_default()))
                        .unwrap_or_default()
                }
            });
            let _ = axum::serve(listener, app).await;
        });
        FakeKube { port, namespace: namespace.to_owned(), cluster, _runtime: runtime }
    }

    /// A kubeconfig that points at this server (plain http, no credentials).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: grove\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: grove\n    namespace: {}\n\
             current-context: fake\n",
            self.port, self.namespace
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        f(&mut self.cluster.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A process the fake kubelet runs for a pod.
struct Container {
    pod: String,
    job: String,
    child: Child,
    dir: PathBuf,
    /// Secret volumes: folder and the Secret's name.
    secrets: Vec<(PathBuf, String)>,
    grace: Duration,
    /// SIGTERM sent at; SIGKILL after `grace`.
    terminating: Option<Instant>,
    /// Why it is stopped (an eviction), for the pod's status.
    evicted: bool,
}

/// How the fake kubelet runs containers.
pub struct KubeletConfig {
    /// Where pods' folders go.
    pub root: PathBuf,
    /// The image's entrypoint (from its Dockerfile), run before the pod's args.
    pub entrypoint: Vec<String>,
    /// The image's programs on this machine (`/usr/local/bin/grove` → the built binary).
    pub programs: Vec<(String, PathBuf)>,
    /// The image's own environment (PATH and the like), before the pod's.
    pub image_env: Vec<(String, String)>,
    /// Folders of this machine a pod must not see (the coordinator's home, the person's
    /// repository): where the machine allows it, each container runs in a mount namespace of
    /// its own with an empty tmpfs over each of them that exists.
    pub hide: Vec<PathBuf>,
}

/// Whether this machine lets a process make a mount namespace and mount in it.
fn can_hide() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", "mount -t tmpfs probe /mnt"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The fake kubelet; it stops (killing its containers) when dropped.
pub struct Kubelet {
    stop: Arc<std::sync::atomic::AtomicBool>,
    evict: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    pub fn start(kube: &FakeKube, config: KubeletConfig) -> Kubelet {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let evict: Arc<Mutex<Vec<String>>> = Arc::default();
        let (cluster, s, e) = (kube.cluster.clone(), stop.clone(), evict.clone());
        let thread = std::thread::spawn(move || run_kubelet(cluster, config, s, e));
        Kubelet { stop, evict, thread: Some(thread) }
    }

    /// Evict a pod: SIGTERM now, SIGKILL after its grace period, then the pod fails
    /// (`Evicted`), as a drain or node pressure does.
    pub fn evict(&self, pod: &str) {
        self.evict.lock().unwrap_or_else(|p| p.into_inner()).push(pod.to_owned());
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_kubelet(
    cluster: Arc<Mutex<Cluster>>,
    config: KubeletConfig,
    stop: Arc<std::sync::atomic::AtomicBool>,
    evict: Arc<Mutex<Vec<String>>>,
) {
    let mut running: Vec<Container> = Vec::new();
    let mut started: std::collections::HashSet<String> = Default::default();
    let mut serial = 0u32;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let mut c = cluster.lock().unwrap_or_else(|p| p.into_inner());
        // New Jobs get a pod.
        let new: Vec<(String, Value)> = c
            .jobs
            .iter()
            .filter(|(_, j)| !started.contains(j["metadata"]["uid"].as_str().unwrap_or_default()))
            .map(|(n, j)| (n.clone(), j.clone()))
            .collect();
        for (job, spec) in new {
            started.insert(spec["metadata"]["uid"].as_str().unwrap_or_default().to_owned());
            serial += 1;
            let pod = format!("{job}-{serial:05x}");
            match start_container(&config, &c, &job, &pod, &spec) {
                Ok(ct) => {
                    let mut labels = spec["spec"]["template"]["metadata"]["labels"].clone();
                    labels["job-name"] = job.clone().into();
                    labels["batch.kubernetes.io/job-name"] = job.clone().into();
                    c.pods.insert(
                        pod.clone(),
                        json!({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": pod, "namespace": spec["metadata"]["namespace"], "labels": labels,
                                            "creationTimestamp": now_rfc3339()},
                               "status": {"phase": "Running", "containerStatuses": [{"name": "worker", "image": spec["spec"]["template"]["spec"]["containers"][0]["image"],
                                          "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": now_rfc3339()}}}]}}),
                    );
                    if let Some(j) = c.jobs.get_mut(&job) {
                        j["status"] = json!({"active": 1, "startTime": now_rfc3339()});
                    }
                    running.push(ct);
                }
                Err(e) => {
                    // The container cannot start: the pod says so, as CreateContainerError would.
                    let mut labels = spec["spec"]["template"]["metadata"]["labels"].clone();
                    labels["job-name"] = job.clone().into();
                    c.pods.insert(
                        pod.clone(),
                        json!({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": pod, "labels": labels, "creationTimestamp": now_rfc3339()},
                               "status": {"phase": "Pending", "containerStatuses": [{"name": "worker", "image": "", "imageID": "", "ready": false,
                                          "restartCount": 0, "state": {"waiting": {"reason": "CreateContainerError", "message": e}}}]}}),
                    );
                }
            }
        }
        let evictions: Vec<String> = std::mem::take(&mut *evict.lock().unwrap_or_else(|p| p.into_inner()));
        for ct in running.iter_mut() {
            // Secrets are updated in place in their volumes, as the kubelet does.
            for (dir, name) in &ct.secrets {
                write_secret(&c, name, dir);
            }
            let deleted = !c.pods.contains_key(&ct.pod);
            let evicted = evictions.contains(&ct.pod);
            if (deleted || evicted) && ct.terminating.is_none() {
                let _ = Command::new("kill").args(["-TERM", &ct.child.id().to_string()]).status();
                ct.terminating = Some(Instant::now());
                ct.evicted = evicted;
            }
            if ct.terminating.is_some_and(|t| t.elapsed() >= ct.grace) {
                let _ = ct.child.kill();
            }
        }
        let mut still = Vec::new();
        for mut ct in running.drain(..) {
            match ct.child.try_wait() {
                Ok(Some(exit)) => {
                    let code = exit.code().unwrap_or(137);
                    let ok = code == 0 && !ct.evicted;
                    if let Some(p) = c.pods.get_mut(&ct.pod) {
                        p["status"] = json!({"phase": if ok { "Succeeded" } else { "Failed" },
                            "containerStatuses": [{"name": "worker", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                                "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}}}]});
                        if ct.evicted {
                            p["status"]["reason"] = "Evicted".into();
                            p["status"]["message"] = "The node was low on resource: memory.".into();
                        }
                    }
                    if let Some(j) = c.jobs.get_mut(&ct.job) {
                        j["status"] = if ok {
                            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
                        } else {
                            json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
                        };
                    }
                    let _ = std::fs::write(ct.dir.join("exit"), code.to_string());
                }
                _ => still.push(ct),
            }
        }
        running = still;
        drop(c);
        std::thread::sleep(Duration::from_millis(50));
    }
    for mut ct in running {
        let _ = ct.child.kill();
        let _ = ct.child.wait();
    }
}

fn write_secret(c: &Cluster, name: &str, dir: &Path) {
    let Some(s) = c.secrets.get(name) else { return };
    for (k, v) in s["data"].as_object().into_iter().flatten() {
        let data = b64decode(v.as_str().unwrap_or_default());
        let file = dir.join(k);
        if std::fs::read(&file).ok().as_deref() != Some(&data[..]) {
            // Atomically, as the kubelet swaps the volume's symlink.
            let tmp = dir.join(format!(".{k}.tmp"));
            let _ = std::fs::write(&tmp, &data);
            let _ = std::fs::rename(&tmp, &file);
        }
    }
}

/// `$(VAR)` as the kubelet expands it in args and env values.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = s.to_owned();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

fn start_container(
    config: &KubeletConfig,
    c: &Cluster,
    job: &str,
    pod: &str,
    spec: &Value,
) -> Result<Container, String> {
    let pod_spec = &spec["spec"]["template"]["spec"];
    let container = &pod_spec["containers"][0];
    let dir = config.root.join(pod);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Volumes: a folder each; Secrets written into theirs.
    let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut secrets = Vec::new();
    for v in pod_spec["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let path = dir.join("volumes").join(&name);
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        if let Some(secret) = v["secret"]["secretName"].as_str() {
            if !c.secrets.contains_key(secret) {
                return Err(format!("secret \"{secret}\" not found"));
            }
            write_secret(c, secret, &path);
            secrets.push((path.clone(), secret.to_owned()));
        }
        volumes.insert(name, path);
    }
    let mut mounts: Vec<(String, PathBuf)> = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let v = volumes.get(m["name"].as_str()?)?;
            Some((m["mountPath"].as_str()?.to_owned(), v.clone()))
        })
        .collect();
    // The longest mount first: /var/run/grove/git before /var.
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let remap = |s: &str| -> String {
        for (at, to) in &mounts {
            if s == at || s.starts_with(&format!("{at}/")) {
                return format!("{}{}", to.display(), &s[at.len()..]);
            }
        }
        s.to_owned()
    };
    let mut env: Vec<(String, String)> = config.image_env.clone();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod.to_owned()
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let (s, k) = (r["name"].as_str().unwrap_or_default(), r["key"].as_str().unwrap_or_default());
            let v = c
                .secrets
                .get(s)
                .and_then(|s| s["data"][k].as_str())
                .ok_or(format!("secret {s} key {k} not found"))?;
            String::from_utf8_lossy(&b64decode(v)).into_owned()
        } else {
            return Err(format!("env {name}: a source the fake kubelet does not know"));
        };
        env.push((name, remap(&value)));
    }
    for f in container["envFrom"].as_array().into_iter().flatten() {
        let s = f["secretRef"]["name"].as_str().unwrap_or_default();
        let data = c.secrets.get(s).ok_or(format!("secret \"{s}\" not found"))?;
        for (k, v) in data["data"].as_object().into_iter().flatten() {
            env.push((
                k.clone(),
                String::from_utf8_lossy(&b64decode(v.as_str().unwrap_or_default())).into_owned(),
            ));
        }
    }
    let mut argv: Vec<String> = match container["command"].as_array() {
        Some(cmd) => cmd.iter().filter_map(|a| a.as_str().map(|a| expand(a, &env))).collect(),
        None => config.entrypoint.clone(),
    };
    argv.extend(
        container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .map(|a| remap(&expand(a, &env))),
    );
    // An init (tini) the machine lacks is skipped: what it runs is what the pod runs.
    while argv.first().is_some_and(|p| p.ends_with("tini") && which(p).is_none()) {
        let dash = argv.iter().position(|a| a == "--").map_or(1, |i| i + 1);
        argv.drain(..dash);
    }
    let program = argv.first().ok_or("no command")?.clone();
    let program = config
        .programs
        .iter()
        .find(|(p, _)| *p == program)
        .map(|(_, local)| local.clone())
        .or_else(|| which(&program))
        .ok_or(format!("{program}: not in the image"))?;
    let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
    let hidden: Vec<&PathBuf> = config.hide.iter().filter(|d| d.is_dir()).collect();
    let mut cmd = if !hidden.is_empty() && can_hide() {
        // unshare and sh exec: the container's pid is the program's, as in a pod.
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"n=$1; shift; while [ "$n" -gt 0 ]; do mount -t tmpfs -o size=1m,mode=000 hidden "$1" || exit 97; shift; n=$((n-1)); done; exec "$@""#)
            .arg("sh")
            .arg(hidden.len().to_string())
            .args(&hidden)
            .arg(&program);
        std::fs::write(
            dir.join("hidden"),
            hidden.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join("\n"),
        )
        .map_err(|e| e.to_string())?;
        c
    } else {
        Command::new(&program)
    };
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", argv[0]))?;
    std::fs::write(dir.join("argv"), argv.join("\n")).map_err(|e| e.to_string())?;
    Ok(Container {
        pod: pod.to_owned(),
        job: job.to_owned(),
        child,
        dir,
        secrets,
        grace: Duration::from_secs(pod_spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30)),
        terminating: None,
        evicted: false,
    })
}

fn which(p: &str) -> Option<PathBuf> {
    if p.contains('/') {
        return Path::new(p).is_file().then(|| PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|d| d.join(p))
        .find(|f| f.is_file())
}

/// The exec-form ENTRYPOINT of a Dockerfile (`ENTRYPOINT ["a", "b"]`), from its last stage.
pub fn entrypoint(dockerfile: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dockerfile).expect("the Dockerfile");
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("ENTRYPOINT "))
        .expect("the Dockerfile has an ENTRYPOINT");
    serde_json::from_str(line.trim()).expect("ENTRYPOINT in exec (JSON) form")
}
