//! The cloud pool on Kubernetes, end to end: a real coordinator daemon with its pod launcher,
//! a real nats-server, and a fake Kubernetes (grove_tests::kube) whose kubelet runs each
//! Job's container as a local `grove worker` process with exactly the pod's command line,
//! environment and volumes. The pods share no folder with the coordinator: they clone from its
//! git endpoint with the token the launcher put in their Secret.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use grove_tests::kube::{FakeKube, Kubelet, KubeletConfig, b64decode, entrypoint};
use grove_tests::{Proc, free_port, nats_server};

use crate::distributed::dirs_repo;
use crate::harness::{Env, task};

const TOKEN: &str = "api-s3cret";

struct Cloud {
    env: Env,
    _nats: Proc,
    kube: FakeKube,
    kubelet: Kubelet,
    _coordinator: Proc,
    api: String,
    port: u16,
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A coordinator with the launcher on, a fake cluster and its kubelet.
fn cloud(extra_config: &str) -> Cloud {
    let env = Env::new();
    let (nats, nats_url) = nats_server(&env.path().join("nats"));
    let kube = FakeKube::start("grove");
    let kubeconfig = kube.kubeconfig(env.path());
    let port = free_port();
    let token = env.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let config = env.path().join("grove.toml");
    std::fs::write(
        &config,
        format!(
            "[kube]\nenabled = true\nimage = \"grove-worker:e2e\"\nidle_exit = \"3s\"\ntermination_grace = \"10s\"\n\
             backoff = \"1s\"\nresync = \"1s\"\nmax_pods = 2\n{extra_config}"
        ),
    )
    .expect("config");
    let mut cmd = grove_tests::command("grove");
    cmd.args([
        "coordinator",
        "--nats",
        &nats_url,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--ack-wait",
        "3s",
    ])
    .arg("--token-file")
    .arg(&token)
    .args(["--git-url", &format!("http://127.0.0.1:{port}/git")])
    .arg("--config")
    .arg(&config)
    .env("KUBECONFIG", &kubeconfig)
    .env("HOME", env.path().join("home"))
    .env("GROVE_HOME", env.grove_home())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(env.path().join("coordinator.log")).expect("log"));
    let coordinator = Proc(cmd.spawn().expect("spawn grove coordinator"));
    assert!(grove_tests::wait_port(port, Duration::from_secs(30)), "the coordinator did not start");
    let path = std::env::var("PATH").unwrap_or_default();
    let kubelet = Kubelet::start(
        &kube,
        KubeletConfig {
            root: env.path().join("pods"),
            entrypoint: entrypoint(&repo_root().join("images/worker/Dockerfile")),
            programs: vec![("/usr/local/bin/grove".into(), grove_tests::bin("grove").to_path_buf())],
            image_env: vec![
                ("PATH".into(), path),
                ("LC_ALL".into(), "C".into()),
                ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ],
            // The pods see neither the coordinator's home nor the person's repository.
            hide: vec![env.grove_home(), env.path().join("r")],
        },
    );
    Cloud {
        env,
        _nats: nats,
        kube,
        kubelet,
        _coordinator: coordinator,
        api: format!("http://127.0.0.1:{port}"),
        port,
    }
}

impl Cloud {
    /// `grove ARGS` against the coordinator, with its token.
    fn grove(&self, cwd: &Path, args: &[&str]) -> crate::harness::Run {
        let mut cmd = grove_tests::command("grove");
        cmd.current_dir(cwd)
            .args(args)
            .env("HOME", self.env.path().join("home"))
            .env("GROVE_HOME", self.env.path().join("client-home"))
            .env("GROVE_TOKEN", TOKEN)
            .env("GROVE_COORDINATOR", &self.api);
        let out = cmd.output().expect("run grove");
        crate::harness::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run_job(&self, repo: &Path, script: &str) -> std::process::Child {
        let mut cmd = grove_tests::command("grove");
        cmd.current_dir(repo)
            .args(["run", "--pool", "cloud", "--split", "dirs", "--json", "--", "sh", "-c", script])
            .env("HOME", self.env.path().join("home"))
            .env("GROVE_TOKEN", TOKEN)
            .env("GROVE_COORDINATOR", &self.api)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("spawn grove run")
    }

    fn jobs(&self) -> usize {
        self.kube.with(|c| c.jobs.len())
    }

    fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(self.env.path().join("coordinator.log")).unwrap_or_default();
        let mut pods = String::new();
        for e in std::fs::read_dir(self.env.path().join("pods")).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(e.path().join("log")).unwrap_or_default();
            pods.push_str(&format!("--- pod {}:\n{}\n", e.file_name().to_string_lossy(), text));
        }
        let requests = self.kube.with(|c| c.requests.join("\n"));
        format!("coordinator:\n{log}\n{pods}\nAPI requests:\n{requests}")
    }
}

fn finished(child: std::process::Child, cloud: &Cloud) -> serde_json::Value {
    let out = child.wait_with_output().expect("grove run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        cloud.diagnostics()
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Cloud tasks are queued; the launcher makes Jobs (the git token's Secret first); the
/// kubelet runs their pods as `grove worker` processes; the tasks clone over the coordinator's
/// git endpoint, push, and merge; the idle pods exit and the launcher ends at zero Jobs.
#[test]
fn cloud_tasks_run_in_launched_pods_and_merge() {
    let c = cloud("");
    let repo = dirs_repo(&c.env, "r", 3);
    let marks = c.env.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks");
    let script = format!(
        r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt"; git remote get-url origin > {m}/$GROVE_TASK.origin; find {h} {r} -mindepth 1 | grep -c . > {m}/$GROVE_TASK.seen || true"#,
        m = marks.display(),
        h = c.env.grove_home().display(),
        r = repo.display()
    );
    assert_eq!(c.jobs(), 0, "nothing queued, no Job");
    let job = finished(c.run_job(&repo, &script), &c);
    let tasks = job["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|t| t["shown"] == "merged"), "{job:#}\n{}", c.diagnostics());
    let integration = job["integration_branch"].as_str().expect("branch");
    for t in ["d00", "d01", "d02"] {
        assert_eq!(task(&job, t)["placed"], "cloud");
        let content = c.env.git(&repo, &["show", &format!("{integration}:{t}/f.txt")]);
        assert!(content.ends_with(&format!("by {t}")), "{content}");
        // The pod cloned from the coordinator's git endpoint, not from a path of its machine,
        // and the clone's config holds no token.
        let origin = std::fs::read_to_string(marks.join(format!("{t}.origin"))).expect("origin");
        assert!(origin.starts_with(&format!("http://127.0.0.1:{}/git/", c.port)), "{origin}");
        assert!(!origin.contains(TOKEN) && !origin.contains("gwt1"), "{origin}");
        // Where the machine allows a mount namespace, the pod saw neither the coordinator's
        // home nor the repository (empty in it), so all it did went through the endpoint.
        let hidden = std::fs::read_dir(c.env.path().join("pods"))
            .expect("pods")
            .flatten()
            .any(|p| p.path().join("hidden").is_file());
        if hidden {
            let seen = std::fs::read_to_string(marks.join(format!("{t}.seen"))).expect("seen");
            assert_eq!(seen.trim(), "0", "the pod saw files of the coordinator's home or the repository");
        }
        // Its workspace and log were in the pod's own volume (its GROVE_HOME).
        let id = job["id"].as_str().expect("id");
        let in_a_pod = std::fs::read_dir(c.env.path().join("pods"))
            .expect("pods")
            .flatten()
            .any(|p| p.path().join(format!("volumes/workspace/runs/{id}/{t}/agent.log")).is_file());
        assert!(in_a_pod, "{t} ran in a pod's workspace volume");
    }
    // At most max_pods Jobs at once, each a slot name; the token Secret came first.
    let (created, requests, secret) =
        c.kube.with(|k| (k.created.clone(), k.requests.clone(), k.secrets.get("grove-worker-git").cloned()));
    assert!(
        !created.is_empty() && created.iter().all(|n| n == "grove-cloud-0" || n == "grove-cloud-1"),
        "{created:?}"
    );
    let first_secret = requests
        .iter()
        .position(|r| r.starts_with("PATCH /api/v1/namespaces/grove/secrets/grove-worker-git"));
    let first_job = requests.iter().position(|r| r == "POST /apis/batch/v1/namespaces/grove/jobs");
    assert!(first_secret.is_some() && first_secret < first_job, "{requests:#?}");
    // What the kubelet ran is the image's entrypoint (tini skipped when absent) and the Job's
    // args, with the Secret's folder in place of its mount path.
    let pod = std::fs::read_dir(c.env.path().join("pods")).expect("pods").flatten().next().expect("a pod");
    let argv = std::fs::read_to_string(pod.path().join("argv")).expect("argv");
    assert!(
        argv.starts_with(
            "/usr/local/bin/grove\nworker\n--pool\ncloud\n--capacity\n1\n--clone\n--exit-when-idle\n3s"
        ),
        "{argv}"
    );
    assert!(argv.contains("volumes/git-token/token"), "{argv}");
    // Scale to zero: idle pods exit, their Jobs finish and go.
    wait_for("zero Jobs", Duration::from_secs(60), || c.jobs() == 0);
    let workers = c.grove(c.env.path(), &["workers", "--json"]);
    assert_eq!(workers.code, 0, "{}", workers.stderr);
    let list = workers.json();
    let pool =
        list.as_array().and_then(|l| l.iter().find(|e| e["kind"] == "pool")).expect("the cloud pool").clone();
    assert_eq!(
        (pool["id"].as_str(), pool["backend"].as_str()),
        (Some("cloud"), Some("kubernetes/grove")),
        "{pool:#}"
    );

    // The git endpoint wants a token: none or a wrong one is refused, the pods' works.
    let mirror = std::fs::read_to_string(marks.join("d00.origin")).expect("origin").trim().to_owned();
    let secret = secret.expect("the pods' token Secret");
    let pod_token =
        String::from_utf8(b64decode(secret["data"]["token"].as_str().expect("token"))).expect("utf-8");
    assert!(pod_token.starts_with("gwt1."), "a worker token, not the API token: {pod_token}");
    let ls_remote = |token: Option<&str>| {
        let mut cmd = std::process::Command::new("git");
        grove_tests::hermetic(&mut cmd);
        cmd.args(["-c", "credential.helper="]);
        if let Some(t) = token {
            cmd.args(["-c", &format!("credential.helper=!f() {{ echo username=x; echo password={t}; }}; f")]);
        }
        cmd.args(["ls-remote", &mirror]).env("GIT_TERMINAL_PROMPT", "0").output().expect("git ls-remote")
    };
    for refused in [None, Some("wrong")] {
        let out = ls_remote(refused);
        assert!(!out.status.success(), "{refused:?} was let in");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("401")
                || err.contains("Authentication failed")
                || err.contains("could not read Username"),
            "{err}"
        );
    }
    let out = ls_remote(Some(&pod_token));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refs = String::from_utf8_lossy(&out.stdout);
    assert!(refs.contains(&format!("refs/heads/{integration}")), "{refs}");
}

/// A pod evicted mid-task (SIGTERM, then SIGKILL after its grace period): its worker commits
/// and pushes what the agent wrote and hands the task back; the launcher reports the failure,
/// backs off, makes another pod, and that one resumes from the checkpoint and merges.
#[test]
fn an_evicted_pods_task_resumes_in_a_new_pod_from_its_checkpoint() {
    let c = cloud("");
    let repo = dirs_repo(&c.env, "r", 1);
    let marks = c.env.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks");
    let script = format!(
        r#"f="$GROVE_TASK/f.txt"; if grep -q part1 "$f"; then echo part2 >> "$f"; else echo part1 >> "$f"; touch {m}/first; sleep 600 & wait; fi"#,
        m = marks.display()
    );
    let run = c.run_job(&repo, &script);
    let first = marks.join("first");
    wait_for("the first turn", Duration::from_secs(60), || first.exists());
    // One task, one pod.
    let pod = c.kube.with(|k| k.pods.keys().next().cloned()).expect("a pod");
    c.kubelet.evict(&pod);
    let job = finished(run, &c);
    assert_eq!(task(&job, "d00")["shown"], "merged", "{job:#}\n{}", c.diagnostics());
    let integration = job["integration_branch"].as_str().expect("branch");
    let content = c.env.git(&repo, &["show", &format!("{integration}:d00/f.txt")]);
    assert_eq!(content, "0\npart1\npart2", "the second pod went on from the first one's checkpoint");
    let created = c.kube.with(|k| k.created.clone());
    assert!(created.len() >= 2, "a new pod replaced the evicted one: {created:?}");
    // The eviction is reported with its reason.
    let workers = c.grove(c.env.path(), &["workers", "--json"]);
    let list = workers.json();
    let pool = list.as_array().and_then(|l| l.iter().find(|e| e["kind"] == "pool")).expect("pool").clone();
    let failures = pool["failures"].as_array().expect("failures");
    assert!(failures.iter().any(|f| f["reason"] == "Evicted"), "{pool:#}");
    let status = c.grove(c.env.path(), &["status"]);
    assert!(status.stdout.contains("Evicted"), "{}", status.stdout);
    wait_for("zero Jobs", Duration::from_secs(60), || c.jobs() == 0);
}
