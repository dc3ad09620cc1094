//! `grove ui` in a real terminal: tmux runs it against a `--merge-mode manual` job, the test
//! reads the pane until the tasks show, merges with `m` and checks `grove status --json`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Env, task};

const TMUX: &str = "/usr/bin/tmux";

fn tmux(sock: &Path, args: &[&str]) -> String {
    let out = Command::new(TMUX)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("-S")
        .arg(sock)
        .args(args)
        .output()
        .expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Capture the pane until `until` holds, or fail after `within` with the last screen.
fn wait_pane(sock: &Path, within: Duration, until: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let screen = tmux(sock, &["capture-pane", "-p", "-t", "ui"]);
        if until(&screen) {
            return screen;
        }
        assert!(start.elapsed() < within, "pane never matched:\n{screen}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ui_in_tmux_merges_a_waiting_job() {
    if !Path::new(TMUX).exists() {
        eprintln!("skipped: no {TMUX}");
        return;
    }
    let env = Env::new();
    let repo = env.repo("r", &[("a/f.txt".into(), "a\n".into()), ("b/f.txt".into(), "b\n".into())]);
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--merge-mode",
            "manual",
            "--json",
            "--",
            "sh",
            "-c",
            r#"echo more >> "$GROVE_TASK/f.txt""#,
        ],
    );
    assert_eq!(run.code, 1, "not merged yet: {}", run.stderr);
    let job = run.json();
    let id = job["id"].as_str().expect("id").to_owned();
    assert_eq!(task(&job, "a")["shown"], "succeeded");

    let sock = env.path().join("tmux.sock");
    let grove = grove_tests::bin("grove");
    let line = format!(
        "env -i PATH={path} GIT_AUTHOR_NAME=Test GIT_AUTHOR_EMAIL=test@example.invalid GIT_COMMITTER_NAME=Test GIT_COMMITTER_EMAIL=test@example.invalid LC_ALL=C NO_COLOR=1 TERM=xterm GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME={home} {grove} --home {gh} ui --job {id}",
        path = std::env::var("PATH").unwrap_or_default(),
        home = env.path().join("home").display(),
        grove = grove.display(),
        gh = env.grove_home().display(),
    );
    tmux(&sock, &["-f", "/dev/null", "new-session", "-d", "-s", "ui", "-x", "100", "-y", "24", &line]);
    let screen = wait_pane(&sock, Duration::from_secs(30), |s| s.contains(&id) && s.contains(" b "));
    assert!(screen.contains("succeeded"), "{screen}");
    println!("{screen}");
    tmux(&sock, &["send-keys", "-t", "ui", "m"]);
    let start = Instant::now();
    loop {
        let status = env.grove(&repo, &["status", "--json", &id]);
        let job = status.json();
        if task(&job, "a")["shown"] == "merged" && task(&job, "b")["shown"] == "merged" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never merged: {job:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_pane(&sock, Duration::from_secs(30), |s| s.contains("merged"));
    tmux(&sock, &["send-keys", "-t", "ui", "q"]);
    wait_pane(&sock, Duration::from_secs(10), |s| !s.contains("q quit"));
    tmux(&sock, &["kill-server"]);
}
