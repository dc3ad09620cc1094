//! Long jobs against the clock: attempts that fail around the agent go again, usage limits
//! park a task until their reset time, deadlines fail a task that runs too long.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{Env, task};

fn three_dirs(env: &Env) -> std::path::PathBuf {
    let files: Vec<(String, String)> =
        ["a", "b", "c"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    env.repo("r", &files)
}

/// A checkpoint that cannot be committed (the agent leaves the worktree's index locked) is
/// not the job's verdict: the task goes again after the backoff, from its branch, and fails
/// only after `--max-attempts`, saying so. An agent that exits non-zero is not retried.
#[test]
fn transient_failures_are_retried_up_to_max_attempts() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let counts = env.path().join("counts");
    std::fs::create_dir_all(&counts).expect("mkdir");
    // a: always locks the index; b: only on its first attempt; c: exits 3 (a verdict).
    let script = format!(
        "f={c}/$GROVE_TASK; n=$(cat $f 2>/dev/null || echo 0); n=$((n+1)); echo $n > $f; \
         echo \"attempt $GROVE_ATTEMPT\" >> $GROVE_TASK/f.txt; \
         if [ $GROVE_TASK = c ]; then exit 3; fi; \
         if [ $GROVE_TASK = a ] || [ $n = 1 ]; then touch \"$(git rev-parse --git-dir)/index.lock\"; fi",
        c = counts.display()
    );
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "-j",
            "3",
            "--max-attempts",
            "2",
            "--retry-backoff",
            "1s",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let job = run.json();
    let a = task(&job, "a");
    assert_eq!(a["state"], "failed", "{a:#}\n{}", run.stderr);
    let reason = a["reason"].as_str().expect("reason");
    assert!(reason.contains("checkpointing turn 1") && reason.ends_with("(after 2 attempts)"), "{reason}");
    assert_eq!(a["attempt"], 2);
    assert_eq!(std::fs::read_to_string(counts.join("a")).expect("count").trim(), "2");
    let b = task(&job, "b");
    assert_eq!(b["shown"], "merged", "{b:#}");
    assert_eq!(b["attempt"], 2);
    assert_eq!(b["failures"], 1);
    // The first attempt's change could not be committed; the second made it again.
    let content = env.git(&repo, &["show", &format!("{}:b/f.txt", b["branch"].as_str().expect("branch"))]);
    assert_eq!(content, "b\nattempt 2");
    let c = task(&job, "c");
    assert_eq!(c["state"], "failed");
    assert_eq!(c["attempt"], 1, "the agent's own failure is not retried");
    assert_eq!(std::fs::read_to_string(counts.join("c")).expect("count").trim(), "1");
}

/// An agent that prints Claude Code's usage-limit line with a reset a few seconds ahead parks
/// its task (visible in `grove status --json`), which goes again at the reset time from its
/// checkpoint branch and merges. The park is 8 s: the test has to see it happen with `grove
/// status` in between, and with the whole suite on 2 cores 3 s was sometimes over first.
#[test]
fn a_usage_limit_parks_the_task_until_its_reset() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let marks = env.path().join("marks");
    std::fs::create_dir_all(&marks).expect("mkdir");
    let script = format!(
        "echo \"attempt $GROVE_ATTEMPT\" >> $GROVE_TASK/f.txt; \
         if [ $GROVE_TASK = b ] && [ ! -e {m}/b ]; then touch {m}/b; \
           echo \"Claude AI usage limit reached|$(( $(date +%s) + 8 ))\"; exit 1; fi",
        m = marks.display()
    );
    let mut cmd = grove_tests::command("grove");
    cmd.current_dir(&repo)
        .args(["run", "--split", "dirs", "-j", "3", "--json", "--", "sh", "-c", &script])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn grove");
    let until = Instant::now() + Duration::from_secs(30);
    let mut parked = None;
    while parked.is_none() && Instant::now() < until {
        let jobs = env.grove(&repo, &["status", "--json"]);
        let Some(id) = (jobs.code == 0).then(|| jobs.json()[0]["id"].as_str().map(str::to_owned)).flatten()
        else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let st = env.grove(&repo, &["status", "--json", &id]);
        if st.code == 0
            && let Some(ts) = st.json()["tasks"].as_array()
            && let Some(b) = ts.iter().find(|t| t["task"] == "b" && t["state"] == "parked")
        {
            parked = Some(b.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let parked = parked.expect("task b was never shown parked");
    assert!(parked["parked_until"].as_i64().is_some(), "{parked:#}");
    assert!(parked["reason"].as_str().is_some_and(|r| r.contains("usage limit")), "{parked:#}");
    let id = env.grove(&repo, &["status", "--json"]).json()[0]["id"].as_str().expect("id").to_owned();
    let text = env.grove(&repo, &["status", &id]).stdout;
    assert!(text.contains("parked"), "{text}");

    let out = child.wait_with_output().expect("wait grove");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let b = task(&job, "b");
    assert_eq!(b["shown"], "merged", "{b:#}");
    assert_eq!(b["attempt"], 2);
    let content =
        env.git(&repo, &["show", &format!("{}:b/f.txt", job["integration_branch"].as_str().expect("ib"))]);
    assert_eq!(
        content, "b\nattempt 1\nattempt 2",
        "the second attempt resumed from the first one's checkpoint"
    );
}

/// A task past `--deadline` is stopped and recorded failed with the deadline as its reason
/// (not cancelled), and the job ends without waiting for it.
#[test]
fn a_task_past_its_deadline_fails() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let started = Instant::now();
    let script = "if [ $GROVE_TASK = a ]; then sleep 60; fi; echo x >> $GROVE_TASK/f.txt";
    let run = env.grove(
        &repo,
        &["run", "--split", "dirs", "-j", "3", "--deadline", "2s", "--json", "--", "sh", "-c", script],
    );
    assert!(started.elapsed() < Duration::from_secs(40), "took {:?}", started.elapsed());
    let job = run.json();
    let a = task(&job, "a");
    assert_eq!(a["state"], "failed", "{a:#}\n{}", run.stderr);
    assert_eq!(a["reason"], "deadline 2s passed");
    assert_eq!(task(&job, "b")["shown"], "merged");
}

/// A worker over its `--max-disk` budget with nothing of its own to remove (a file grove did
/// not make fills its workspaces' folder) takes no task and says so in the registry; once
/// there is room again it takes the task, which merges. The foreign file is never removed.
#[test]
fn a_worker_short_of_disk_refuses_work_then_resumes() {
    use crate::distributed::{Proc, nats_server};
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let home = env.path().join("worker-home");
    let foreign = home.join("worktrees").join("not-groves.bin");
    std::fs::create_dir_all(foreign.parent().expect("parent")).expect("mkdir");
    std::fs::write(&foreign, vec![0u8; 2 << 20]).expect("write");
    // `grove run --nats` sets grove up on NATS and dispatches the task; the worker, which
    // waits for that, finds itself over budget and takes nothing.
    let repo = env.repo("r", &[("a/f.txt".to_owned(), "a\n".to_owned())]);
    let mut run = grove_tests::command("grove");
    run.current_dir(&repo)
        .args(["run", "--nats", &url, "--split", "dirs", "--json", "--", "sh", "-c", "echo x >> a/f.txt"])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = run.spawn().expect("spawn grove run");
    let mut cmd = grove_tests::command("grove");
    cmd.args(["worker", "--nats", &url, "--id", "w1", "--max-disk", "1MiB", "--min-free", "0"])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", &home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _w = Proc(cmd.spawn().expect("spawn grove worker"));

    let until = Instant::now() + Duration::from_secs(20);
    let refusing = loop {
        let ws = env.grove(env.path(), &["workers", "--nats", &url, "--json"]);
        if ws.code == 0
            && let Some(why) = ws.json()[0]["refusing"].as_str()
        {
            break why.to_owned();
        }
        assert!(Instant::now() < until, "the worker never said it refuses work: {}", ws.stdout);
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(refusing.starts_with("disk budget: workspaces take 2 MiB"), "{refusing}");

    assert!(!home.join("runs").exists(), "a refusing worker took a task");
    std::fs::remove_file(&foreign).expect("make room");
    let out = child.wait_with_output().expect("wait grove run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(task(&job, "a")["shown"], "merged", "{job:#}");
    let ws = env.grove(env.path(), &["workers", "--nats", &url, "--json"]);
    assert_eq!(ws.json()[0]["refusing"], serde_json::Value::Null);
}

/// The same clocks in the coordinator daemon, with a worker on NATS that clones (so the
/// outcome's `transient` and `parked_until` cross the wire): a task whose checkpoint cannot
/// be committed once goes again and merges, a task on a usage limit shows parked through the
/// gRPC API and then merges, a task that runs past the deadline fails with it.
#[test]
fn the_daemon_retries_parks_and_enforces_deadlines() {
    use crate::distributed::{daemon, free_port, nats_server, newest_job, wait_port};
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let grove = "grove";
    let listen = format!("127.0.0.1:{port}");
    let _c = daemon(&env, grove, &["coordinator", "--nats", &url, "--listen", &listen], &env.grove_home());
    let _w = daemon(
        &env,
        grove,
        &["worker", "--nats", &url, "--id", "w1", "--capacity", "3", "--clone", "--min-free", "0"],
        &env.path().join("worker-home"),
    );
    wait_port(port);
    let api = format!("http://127.0.0.1:{port}");
    let repo = three_dirs(&env);
    let marks = env.path().join("marks");
    std::fs::create_dir_all(&marks).expect("mkdir");
    let script = format!(
        "echo \"attempt $GROVE_ATTEMPT\" >> $GROVE_TASK/f.txt; \
         if [ $GROVE_TASK = a ]; then sleep 60; fi; \
         if [ ! -e {m}/$GROVE_TASK ]; then touch {m}/$GROVE_TASK; \
           if [ $GROVE_TASK = b ]; then echo \"Claude AI usage limit reached|$(( $(date +%s) + 2 ))\"; exit 1; fi; \
           touch \"$(git rev-parse --git-dir)/index.lock\"; fi",
        m = marks.display()
    );
    let mut cmd = grove_tests::command(grove);
    cmd.current_dir(&repo)
        .args(["run", "--coordinator", &api, "--split", "dirs", "--deadline", "10s", "--retry-backoff", "1s"])
        .args(["--json", "--", "sh", "-c", &script])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn grove run");
    let id = newest_job(&env, &api);
    let until = Instant::now() + Duration::from_secs(30);
    let parked = loop {
        let st = env.grove(env.path(), &["status", "--coordinator", &api, "--json", &id]);
        if st.code == 0
            && let Some(b) =
                st.json()["tasks"].as_array().and_then(|ts| ts.iter().find(|t| t["task"] == "b")).cloned()
            && b["state"] == "parked"
        {
            break b;
        }
        assert!(Instant::now() < until, "b was never shown parked: {}", st.stdout);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(parked["parked_until"].as_i64().is_some(), "{parked:#}");

    let out = child.wait_with_output().expect("wait grove run");
    let job: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let a = task(&job, "a");
    assert_eq!(a["state"], "failed", "{job:#}");
    assert_eq!(a["reason"], "deadline 10s passed");
    for t in ["b", "c"] {
        let tk = task(&job, t);
        assert_eq!(tk["shown"], "merged", "{job:#}");
        assert_eq!(tk["attempt"], 2, "{tk:#}");
    }
    assert_eq!(task(&job, "c")["failures"], 1);
}
