use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, task};

pub(crate) use grove_tests::{Proc, free_port, nats_server};

pub(crate) fn worker(env: &Env, nats: &str, id: &str, pool: &str, clone: bool) -> Proc {
    let mut cmd = grove_tests::command("grove");
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

pub(crate) fn dirs_repo(env: &Env, name: &str, n: usize) -> std::path::PathBuf {
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
    // The first run of the turn sleeps in a child (as an agent's tools run) and says which;
    // a later one finishes at once.
    let script = format!(
        r#"if [ ! -e {m} ]; then sleep 30 & echo $! > {m}; wait; fi; echo done >> "$GROVE_TASK/f.txt""#,
        m = marker.display()
    );
    let mut run = grove_tests::command("grove");
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
    let mut sleeper = String::new();
    while sleeper.trim().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
        sleeper = std::fs::read_to_string(&marker).expect("the agent's child");
    }
    let sleeper: i32 = sleeper.trim().parse().expect("a pid");
    first.0.kill().expect("SIGKILL the worker");
    let _ = first.0.wait();
    // The dead worker's agent does not run on: its watchdog ends the group (SIGTERM, then
    // SIGKILL 2s later).
    let killed = Instant::now();
    while crate::faults::pid_alive(sleeper) {
        assert!(killed.elapsed() < Duration::from_secs(5), "the killed worker's agent is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let mut run = grove_tests::command("grove");
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
    // Both pids written, not only their files made (a SIGINT between the two would leave
    // an empty file, read below as /proc//stat).
    let written = |t: &str| std::fs::read_to_string(pids.join(t)).is_ok_and(|p| p.ends_with('\n'));
    while !(written("d00") && written("d01")) {
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
    let mut cmd = grove_tests::command("grove");
    cmd.args(["coordinator", "--nats", nats, "--listen", listen])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(f) = token_file {
        cmd.arg("--token-file").arg(f);
    }
    Proc(cmd.spawn().expect("spawn grove coordinator"))
}

pub(crate) fn wait_port(port: u16) {
    assert!(grove_tests::wait_port(port, Duration::from_secs(20)), "port {port} did not open");
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

    // Planning on the coordinator creates nothing and shows the same tasks.
    let plan = env.grove(&repo, &["plan", "--coordinator", &api, "--split", "dirs", "--json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert_eq!(plan.json()["tasks"].as_array().expect("tasks").len(), 12);

    // Bad input comes back as a clear refusal.
    let bad = env.grove(&repo, &["run", "--coordinator", &api, "--grep", "File(Id", "--", "true"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("select.grep"), "{}", bad.stderr);
}

/// On a non-loopback address the API needs TLS and tokens; without either it refuses to
/// start, saying which (`access::` runs it with both).
#[test]
fn the_api_refuses_to_listen_off_loopback_without_tls_and_tokens() {
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let listen = format!("0.0.0.0:{}", free_port());
    let open = env.grove(env.path(), &["coordinator", "--nats", &url, "--listen", &listen]);
    assert_eq!(open.code, 2);
    assert!(open.stderr.contains("not a loopback address") && open.stderr.contains("TLS"), "{}", open.stderr);

    let token = env.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let t = token.to_str().expect("utf-8");
    let plain =
        env.grove(env.path(), &["coordinator", "--nats", &url, "--listen", &listen, "--token-file", t]);
    assert_eq!(plain.code, 2, "tokens in the clear: {}", plain.stderr);
    assert!(plain.stderr.contains("--tls-cert"), "{}", plain.stderr);
}

pub(crate) fn daemon(env: &Env, exe: &str, args: &[&str], home: &Path) -> Proc {
    let child = grove_tests::command(exe)
        .args(args)
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", home)
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
        "grove-coordinator",
        &["--nats", &nats, "--listen", &format!("127.0.0.1:{port}")],
        &home,
    );
    let worker_bin = "grove-worker";
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
    let mut run = grove_tests::command("grove");
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
    let follow = grove_tests::command("grove")
        .args(["logs", "-f", &format!("{id}/d29"), "--coordinator", &api])
        .env("GROVE_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn grove logs -f");

    let watch = grove_tests::command("grove")
        .args(["watch", &id, "--coordinator", &api, "--json"])
        .env("GROVE_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn grove watch");
    // Workers announce themselves once they found grove's streams on NATS, each in its time.
    let expected =
        [("c1", "cloud"), ("l1", "local"), ("l2", "local")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let workers = env.grove(env.path(), &["workers", "--coordinator", &api, "--json"]);
        assert_eq!(workers.code, 0, "{}", workers.stderr);
        let listed: Vec<(String, String)> = workers
            .json()
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| {
                (w["id"].as_str().expect("id").to_owned(), w["pools"][0].as_str().expect("pool").to_owned())
            })
            .collect();
        if listed == expected {
            break;
        }
        assert!(Instant::now() < until, "the fleet is {listed:?}, not {expected:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = run.wait_with_output().expect("grove run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    let logs = follow.wait_with_output().expect("grove logs -f");
    let streamed = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.status.success(), "{}", String::from_utf8_lossy(&logs.stderr));
    let (start, middle, end) =
        (streamed.find("start d29"), streamed.find("middle"), streamed.find("end d29"));
    assert!(start < middle && middle < end && start.is_some(), "{streamed}");

    let watched = watch.wait_with_output().expect("grove watch");
    assert!(watched.status.success(), "{}", String::from_utf8_lossy(&watched.stderr));
    // It starts with where each task stands, so merges before it came are not missed.
    let merged: std::collections::BTreeSet<String> = String::from_utf8_lossy(&watched.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "merged")
        .filter_map(|v| v["task"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(merged.len(), 30, "grove watch saw every merge");
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
    let mut run = grove_tests::command("grove");
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
    // Both pids written, not only their files made (a SIGINT between the two would leave
    // an empty file, read below as /proc//stat).
    let written = |t: &str| std::fs::read_to_string(pids.join(t)).is_ok_and(|p| p.ends_with('\n'));
    while !(written("d00") && written("d01")) {
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

/// The review verbs against a coordinator daemon: a `--merge-mode manual` job waits; `grove
/// diff` shows a task's stat then patch from the daemon's mirror; `grove discard` removes a
/// task's branch there; `grove merge` merges the rest and publishes; `grove push` pushes the
/// integration branch; a `--pick manual` job's variants are compared and one is picked.
#[test]
fn review_verbs_work_against_a_coordinator() {
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let _c = coordinator(&env, &nats, &format!("127.0.0.1:{port}"), None);
    let _w = worker(&env, &nats, "w1", "local", false);
    wait_port(port);
    let repo = dirs_repo(&env, "r", 3);
    let origin = env.path().join("origin.git");
    env.git(env.path(), &["init", "--quiet", "--bare", origin.to_str().expect("utf-8")]);
    env.git(&repo, &["remote", "add", "origin", origin.to_str().expect("utf-8")]);
    let script = r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;
    let run = env.grove(
        &repo,
        &["run", "--coordinator", &api, "--split", "dirs", "--merge-mode", "manual", "--json", "--"],
    );
    assert_eq!(run.code, 2, "no agent: {}", run.stderr);
    let run = env.grove(
        &repo,
        &[
            "run",
            "--coordinator",
            &api,
            "--split",
            "dirs",
            "--merge-mode",
            "manual",
            "--json",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(run.code, 1, "checked, not merged: {}", run.stderr);
    let job = run.json();
    let id = job["id"].as_str().expect("id").to_owned();
    assert_eq!(job["merge_mode"], "manual", "{job:#}");
    assert!(
        task(&job, "d01")["why"].as_str().expect("why").contains(&format!("grove merge {id}")),
        "{job:#}"
    );

    let diff = env.grove(env.path(), &["diff", &format!("{id}/d01"), "--coordinator", &api]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    let (stat, patch) = (diff.stdout.find("d01/f.txt | 1 +"), diff.stdout.find("+by d01"));
    assert!(stat.is_some() && stat < patch, "stat, then patch:\n{}", diff.stdout);
    let files = env.grove(env.path(), &["diff", "d01", "--json", "--coordinator", &api]);
    assert_eq!(files.code, 0, "{}", files.stderr);
    assert_eq!(files.json()["files"][0]["path"], "d01/f.txt", "{}", files.stdout);

    let discard = env.grove(env.path(), &["discard", &format!("{id}/d02"), "--coordinator", &api, "--json"]);
    assert_eq!(discard.code, 0, "{}", discard.stderr);
    let removed = discard.json()[0]["removed"].to_string();
    assert!(removed.contains(&format!("branch grove/{id}/d02 in grove's mirror")), "{removed}");
    let gone = env.grove(env.path(), &["diff", &format!("{id}/d02"), "--coordinator", &api]);
    assert_eq!(gone.code, 2);
    assert!(gone.stderr.contains("was discarded"), "{}", gone.stderr);

    let merge = env.grove(env.path(), &["merge", &id, "--coordinator", &api, "--json"]);
    assert_eq!(merge.code, 1, "d02 was discarded: {}", merge.stderr);
    let job = merge.json();
    assert_eq!(job["merge_approved"], true, "{job:#}");
    for (t, shown, seq) in [("d00", "merged", 1), ("d01", "merged", 2)] {
        assert_eq!(task(&job, t)["shown"], shown, "{job:#}");
        assert_eq!(task(&job, t)["merge_position"], seq, "{job:#}");
    }
    assert_eq!(task(&job, "d02")["shown"], "discarded", "{job:#}");
    // Published into the person's repository.
    let branch = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{branch}:d01/f.txt")]), "1\nby d01");

    let push = env.grove(env.path(), &["push", &id, "--coordinator", &api, "--json"]);
    assert_eq!(push.code, 0, "{}", push.stderr);
    assert_eq!(push.json()["remote"], "origin");
    assert_eq!(
        env.git(&origin, &["rev-parse", branch]),
        env.git(&repo, &["rev-parse", branch]),
        "the integration branch is on origin"
    );

    // Variants, picked by hand.
    let run = env.grove(
        &repo,
        &[
            "run",
            "--coordinator",
            &api,
            "--split",
            "dirs",
            "--include",
            "d00/**",
            "--variant",
            "one=echo one >> d00/f.txt",
            "--variant",
            "two=echo two >> d00/f.txt; echo extra > d00/g.txt",
            "--pick",
            "manual",
            "--json",
        ],
    );
    assert_eq!(run.code, 1, "waiting for a pick: {}", run.stderr);
    let vid = run.json()["id"].as_str().expect("id").to_owned();
    let compare = env.grove(env.path(), &["compare", "d00", "--coordinator", &api, "--json"]);
    assert_eq!(compare.code, 0, "{}", compare.stderr);
    let c = compare.json();
    assert_eq!(c["job"], vid.as_str(), "{c:#}");
    assert_eq!(c["pick"], "manual", "{c:#}");
    let variants = c["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 2, "{c:#}");
    assert!(variants.iter().all(|v| v["checks_passed"] == true), "{c:#}");
    assert_eq!(variants.iter().find(|v| v["variant"] == "two").expect("two")["files"], 2, "{c:#}");
    let wrong = env.grove(env.path(), &["pick", "d00", "three", "--coordinator", &api]);
    assert_eq!(wrong.code, 2);
    assert!(wrong.stderr.contains("has no variant \"three\""), "{}", wrong.stderr);
    let pick = env.grove(env.path(), &["pick", "d00", "two", "--coordinator", &api, "--json"]);
    assert_eq!(pick.code, 0, "{}\n{}", pick.stderr, pick.stdout);
    let job = pick.json();
    assert_eq!(task(&job, "d00.two")["shown"], "merged", "{job:#}");
    assert_eq!(task(&job, "d00.one")["shown"], "discarded", "{job:#}");
    assert_eq!(task(&job, "d00.two")["picked"], true, "{job:#}");
    let branch = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{branch}:d00/g.txt")]), "extra");

    // An unreachable coordinator is named.
    let dead = format!("http://127.0.0.1:{}", free_port());
    for verb in [
        &["merge", "x"][..],
        &["diff", "x"],
        &["discard", "x"],
        &["push"],
        &["compare", "x"],
        &["pick", "x", "y"],
    ] {
        let mut args = verb.to_vec();
        args.extend(["--coordinator", &dead]);
        let r = env.grove(env.path(), &args);
        assert_eq!(r.code, 2, "{verb:?}");
        assert!(
            r.stderr.contains(&format!("cannot reach the coordinator at {dead}")),
            "{verb:?}: {}",
            r.stderr
        );
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI, as PEM
/// files in `dir`. (Not a CA certificate: rustls refuses a CA certificate as a server's.)
pub(crate) fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "cert.pem"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .expect("openssl on PATH (.ci/run installs it)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// TLS end to end, with a self-signed certificate: nats-server requires TLS and a client
/// certificate; the coordinator serves gRPC over TLS and reaches NATS with --nats-ca and
/// --nats-cert/--nats-key; a worker does the same and runs the task; `grove run` and `grove
/// status` reach the coordinator over https with GROVE_CA_FILE, and without it (or with
/// another CA) fail saying what is missing. Off loopback, TLS does not replace the token.
#[test]
fn tls_to_the_coordinator_and_to_nats() {
    let env = Env::new();
    let (cert, key) = self_signed(&env.path().join("tls"));
    // A self-signed certificate is its own CA.
    let ca = cert.clone();
    let port = free_port();
    let nats_dir = env.path().join("nats");
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "--tlsverify", "--tlscert"])
        .arg(&cert)
        .arg("--tlskey")
        .arg(&key)
        // Clients must show a certificate signed by this one: the same, here.
        .arg("--tlscacert")
        .arg(&cert)
        .arg("-sd")
        .arg(&nats_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server");
    let _nats = Proc(child);
    wait_port(port);
    let nats = format!("nats://127.0.0.1:{port}");
    let (ca_s, cert_s, key_s) =
        (ca.to_str().expect("utf-8"), cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));

    // Without the CA, NATS's certificate is not trusted: a clear error, not a hang.
    let refused = env.grove(env.path(), &["workers", "--nats", &nats]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains(&nats), "{}", refused.stderr);
    assert!(refused.stderr.contains("--nats-ca"), "{}", refused.stderr);
    // Without a client certificate, the server refuses.
    let anonymous = env.grove(env.path(), &["workers", "--nats", &nats, "--nats-ca", ca_s]);
    assert_eq!(anonymous.code, 2, "{}", anonymous.stderr);
    assert!(anonymous.stderr.contains(&nats), "{}", anonymous.stderr);
    let client_cert = ["--nats-ca", ca_s, "--nats-cert", cert_s, "--nats-key", key_s];

    // Off loopback the API wants a token, TLS or not.
    let open = env.grove(
        env.path(),
        &[
            "coordinator",
            "--nats",
            &nats,
            "--listen",
            &format!("0.0.0.0:{}", free_port()),
            "--tls-cert",
            cert_s,
            "--tls-key",
            key_s,
        ],
    );
    assert_eq!(open.code, 2);
    assert!(open.stderr.contains("not a loopback address"), "{}", open.stderr);

    let api_port = free_port();
    let home = env.grove_home();
    let listen = format!("127.0.0.1:{api_port}");
    let _c = daemon(
        &env,
        "grove",
        &[
            &["coordinator", "--nats", &nats, "--listen", &listen][..],
            &["--tls-cert", cert_s, "--tls-key", key_s],
            &client_cert,
        ]
        .concat(),
        &home,
    );
    let _w = daemon(
        &env,
        "grove",
        &[&["worker", "--nats", &nats, "--id", "w1", "--ack-wait", "2s"][..], &client_cert].concat(),
        &env.path().join("worker-w1"),
    );
    wait_port(api_port);
    let api = format!("https://127.0.0.1:{api_port}");

    let no_ca = env.grove(env.path(), &["status", "--coordinator", &api]);
    assert_eq!(no_ca.code, 2);
    assert!(no_ca.stderr.contains(&api) && no_ca.stderr.contains("GROVE_CA_FILE"), "{}", no_ca.stderr);

    let repo = dirs_repo(&env, "r", 1);
    let grove = |cwd: &Path, args: &[&str]| {
        let out = grove_tests::command("grove")
            .current_dir(cwd)
            .args(args)
            .env("HOME", env.path().join("home"))
            .env("GROVE_HOME", &home)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("NO_COLOR", "1")
            .env("GROVE_CA_FILE", &ca)
            .output()
            .expect("grove");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let script = r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;
    let (code, stdout, stderr) =
        grove(&repo, &["run", "--coordinator", &api, "--split", "dirs", "--json", "--", "sh", "-c", script]);
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    let job: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(task(&job, "d00")["shown"], "merged", "{job:#}");
    assert!(
        env.path().join(format!("worker-w1/runs/{}/d00/agent.log", job["id"].as_str().expect("id"))).exists()
    );

    let (code, stdout, stderr) = grove(env.path(), &["status", "--coordinator", &api, "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(job["id"].as_str().expect("id")), "{stdout}");

    // Another certificate as the CA: the handshake fails, saying so.
    let (other, _) = self_signed(&env.path().join("other"));
    let (code, _, stderr) =
        grove(env.path(), &["status", "--coordinator", &api, "--ca-file", other.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(&format!("cannot reach the coordinator at {api}")), "{stderr}");
    assert!(stderr.contains("not signed by the CA"), "{stderr}");
}

/// Lease fencing: a worker that cannot get its heartbeats confirmed (NATS frozen) stops its
/// agent's process group before its lease can lapse, so no other worker ever runs the task
/// at the same time; once NATS is back the task is delivered again and finishes.
#[test]
fn a_worker_cut_off_from_nats_stops_its_agent_before_the_lease_lapses() {
    let env = Env::new();
    let (nats, url) = nats_server(&env.path().join("nats"));
    let mut w = grove_tests::command("grove");
    let _w = Proc(
        w.args([
            "worker",
            "--nats",
            &url,
            "--pool",
            "local",
            "--capacity",
            "1",
            "--id",
            "w1",
            "--ack-wait",
            "8s",
        ])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.path().join("worker-w1"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn grove worker"),
    );
    let repo = dirs_repo(&env, "r", 1);
    let pid_file = env.path().join("agent.pid");
    // The first delivery's agent hangs (and says who it is); a later one finishes at once.
    let script = format!(
        r#"if [ ! -e {p} ]; then sleep 600 & echo $! > {p}; wait; fi; echo done >> "$GROVE_TASK/f.txt""#,
        p = pid_file.display()
    );
    let mut run = grove_tests::command("grove");
    run.current_dir(&repo)
        .args([
            "run",
            "--nats",
            &url,
            "--ack-wait",
            "8s",
            "--split",
            "dirs",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run.spawn().expect("spawn grove run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&pid_file).map_or(true, |p| p.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent = std::fs::read_to_string(&pid_file).expect("pid").trim().to_owned();
    let alive = || {
        let stat = std::fs::read_to_string(format!("/proc/{agent}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
        !matches!(state, None | Some('Z') | Some('X'))
    };
    // Freeze NATS: connections stay open, nothing is answered (a partition, not a crash).
    let nats_pid = nats.0.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &nats_pid]).status().expect("kill").success());
    let frozen = Instant::now();
    // Lease 8s: the fence is 5s after the last confirmed heartbeat (sent every 5/3s), then
    // the agent gets SIGTERM. It must be gone before the server could give the task to anyone
    // else: 8s after that heartbeat, so within 8s - 5/3s of the freeze.
    while alive() {
        assert!(frozen.elapsed() < Duration::from_secs(12), "the agent outlived the lease by far");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped_after = frozen.elapsed();
    assert!(
        stopped_after < Duration::from_millis(6300),
        "stopped {stopped_after:?} after the freeze: too late"
    );
    assert!(stopped_after >= Duration::from_secs(1), "stopped too early ({stopped_after:?})");
    assert!(Command::new("kill").args(["-CONT", &nats_pid]).status().expect("kill").success());
    let out = run.wait_with_output().expect("grove run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(task(&job, "d00")["shown"], "merged", "{job:#}");
    eprintln!("agent stopped {stopped_after:?} after NATS froze (lease 8s)");
}

/// A NATS credentials file that is not one is named in the error, before anything starts.
#[test]
fn a_bad_nats_credentials_file_is_named() {
    let env = Env::new();
    let creds = env.path().join("user.creds");
    std::fs::write(&creds, "not a creds file\n").expect("write");
    let url = format!("nats://127.0.0.1:{}", free_port());
    let out =
        env.grove(env.path(), &["worker", "--nats", &url, "--nats-creds", creds.to_str().expect("utf-8")]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("credentials file") && out.stderr.contains("user.creds"), "{}", out.stderr);
    let missing = env.grove(env.path(), &["worker", "--nats", &url, "--nats-creds", "/nonexistent.creds"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("/nonexistent.creds: no such file"), "{}", missing.stderr);
}
