use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, task};

/// Ctrl-C: running agents (and their children) are killed, what they wrote is committed on
/// their branch, tasks not started are cancelled, the state is saved, grove exits 130.
#[test]
fn ctrl_c_cancels_cleanly() {
    let env = Env::new();
    let files: Vec<(String, String)> =
        ["a", "b", "c"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    let repo = env.repo("r", &files);
    let pids = env.path().join("pids");
    std::fs::create_dir_all(&pids).expect("mkdir");
    let script = format!(
        "echo started >> \"$GROVE_TASK/f.txt\"; sleep 60 & echo $! > {}/$GROVE_TASK; wait",
        pids.display()
    );
    let mut cmd = grove_tests::command("grove");
    cmd.current_dir(&repo)
        .args(["run", "--split", "dirs", "-j", "2", "--json", "--", "sh", "-c", &script])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn grove");
    // Wait for two agents to be running (concurrency 2; the third task is queued).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&pids).expect("read_dir").count() < 2 {
        assert!(Instant::now() < deadline, "agents did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait grove");
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?} to stop", sent.elapsed());
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));

    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut started = 0;
    for t in ["a", "b", "c"] {
        let tk = task(&job, t);
        assert_eq!(tk["state"], "cancelled", "{tk:#}");
        if pids.join(t).exists() {
            started += 1;
            // What the agent wrote before it was stopped is committed on its branch.
            let branch = tk["branch"].as_str().expect("branch");
            let content = env.git(&repo, &["show", &format!("{branch}:{t}/f.txt")]);
            assert!(content.ends_with("started"), "{content}");
            let pid = std::fs::read_to_string(pids.join(t)).expect("pid");
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
            assert!(matches!(state, None | Some('Z') | Some('X')), "agent child survived: {stat}");
        }
    }
    assert_eq!(started, 2);
    // The state was saved: status agrees.
    let status = env.grove(&repo, &["status", "--json", job["id"].as_str().expect("id")]);
    assert_eq!(status.json()["state"], "cancelled");
}
