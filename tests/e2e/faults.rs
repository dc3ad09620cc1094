//! Faults around a worker over NATS: a worker asked to stop hands its running task back at its
//! drain deadline, and a remote that refuses a clone's push fails the task with git's words.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::distributed::{Proc, dirs_repo, nats_server, worker};
use crate::harness::{Env, task};

fn grove_run(env: &Env, repo: &Path, nats: &str, extra: &[&str], script: &str) -> std::process::Child {
    let mut run = grove_tests::command("grove");
    run.current_dir(repo)
        .args(["run", "--nats", nats, "--split", "dirs", "--json"])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run.spawn().expect("spawn grove run")
}

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process runs: it exists and is not a zombie (an orphan's zombie lingers where
/// PID 1 does not reap, as in some containers).
pub(crate) fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGTERM drains a worker: its running task gets `--drain-timeout`, then its agent's process
/// group is stopped and the delivery is handed back (nak), so another worker takes it at once,
/// well before the 60s lease would have run out, and the worker exits cleanly.
#[test]
fn a_draining_worker_hands_its_task_back_at_the_deadline() {
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let mut first = grove_tests::command("grove");
    first
        .args(["worker", "--nats", &url, "--pool", "local", "--id", "w1"])
        .args(["--ack-wait", "60s", "--drain-timeout", "1s"])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.path().join("worker-w1"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut first = Proc(first.spawn().expect("spawn grove worker"));
    let repo = dirs_repo(&env, "r", 1);
    let pid_file = env.path().join("sleeper");
    // The first delivery sleeps (in a child, like an agent's tools); a later one finishes.
    let script = format!(
        r#"if [ -z "$GROVE_DELIVERY" ]; then sleep 60 & echo $! > {p}; wait; fi; echo "delivery $GROVE_DELIVERY" >> "$GROVE_TASK/f.txt""#,
        p = pid_file.display()
    );
    let run = grove_run(&env, &repo, &url, &[], &script);
    wait_for(&pid_file, "the task did not start on w1");
    let sleeper: i32 = std::fs::read_to_string(&pid_file).expect("pid").trim().parse().expect("a pid");

    let asked = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the worker");
    let status = first.0.wait().expect("wait for w1");
    let drained = asked.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = first.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(status.success(), "w1 exited with {status}: {stderr}");
    // 1s of drain, then up to 2s between SIGTERM and SIGKILL of the agent's group.
    assert!(drained < Duration::from_secs(6), "w1 took {drained:?} to drain: {stderr}");
    assert!(stderr.contains("draining") && stderr.contains("handing back"), "{stderr}");
    assert!(!pid_alive(sleeper), "the agent's child outlived the drain");

    let _second = worker(&env, &url, "w2", "local", false);
    let out = run.wait_with_output().expect("grove run");
    let handed = asked.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(handed < Duration::from_secs(30), "the task came back only after {handed:?} (its lease is 60s)");
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let d = task(&job, "d00");
    assert_eq!(d["shown"], "merged", "{job:#}");
    assert_eq!(d["attempt"], 1, "a hand-back is the same attempt, not a failure: {d:#}");
    let id = job["id"].as_str().expect("id");
    assert!(env.path().join(format!("worker-w2/runs/{id}/d00/agent.log")).exists(), "w2 ran it");
    let branch = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{branch}:d00/f.txt")]), "0\ndelivery 2");
}

/// A clone worker whose remote refuses the push (a pre-receive hook) fails the task with
/// git's message, once its attempts are spent; nothing is merged.
#[test]
fn a_refused_push_fails_the_task_with_gits_message() {
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let _w = worker(&env, &url, "c1", "local", true);
    let repo = dirs_repo(&env, "r", 1);
    let script = r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;
    // A first job makes grove's mirror (the clones' remote); then the mirror refuses pushes.
    let ok = grove_run(&env, &repo, &url, &[], script).wait_with_output().expect("grove run");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        String::from_utf8_lossy(&ok.stdout)
    );
    let mirrors: Vec<_> = std::fs::read_dir(env.grove_home().join("mirrors"))
        .expect("mirrors")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    // No hook of the mirror's ever runs (grove's git runs none), so the refusal is git's own: a
    // limit on what the mirror accepts, one of the few settings grove leaves in its config.
    let mirror = mirrors[0].to_str().expect("utf8");
    env.git(env.path(), &["--git-dir", mirror, "config", "receive.maxInputSize", "1"]);

    let out =
        grove_run(&env, &repo, &url, &["--max-attempts", "1"], script).wait_with_output().expect("grove run");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let d = task(&job, "d00");
    assert_eq!(d["state"], "failed", "{job:#}");
    let reason = d["reason"].as_str().expect("reason");
    assert!(reason.contains("pack exceeds maximum allowed size"), "{reason}");
    assert!(reason.contains("failed to push some refs"), "{reason}");
    assert!(reason.contains(&format!("pushing {}", d["branch"].as_str().expect("branch"))), "{reason}");
}
