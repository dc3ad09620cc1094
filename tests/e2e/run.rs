use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{Env, cargo_workspace, task, write_files};

/// Apply `pattern -> with` to every file of `repo`'s working tree, as one serial rewrite.
fn rewrite_serially(repo: &Path, pattern: &str, with: &str) {
    let re = regex::Regex::new(pattern).expect("regex");
    let mut stack = vec![repo.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let text = std::fs::read_to_string(&path).expect("read");
                let new = re.replace_all(&text, with);
                if new != text {
                    std::fs::write(&path, new.as_ref()).expect("write");
                }
            }
        }
    }
}

#[test]
fn a_cargo_fan_out_equals_the_serial_rewrite() {
    let env = Env::new();
    let repo = env.repo("ws", &cargo_workspace(20, 10));
    let head_before = env.git(&repo, &["rev-parse", "HEAD"]);
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "cargo",
            "--grep",
            r"\bFileId\b",
            "--agent",
            "replace",
            "--pattern",
            r"\bFileId\b",
            "--replace",
            "SourceFileId",
            "-j",
            "4",
            "--json",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    let tasks = job["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 20, "one task per crate");
    assert_eq!(tasks[0]["task"], "c00", "the library every crate depends on merges first");
    assert!(tasks.iter().all(|t| t["shown"] == "merged"), "{job:#}");

    // The integration branch is in the person's repository; their checkout did not move.
    let integration = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["rev-parse", "HEAD"]), head_before);
    assert_eq!(env.git(&repo, &["symbolic-ref", "--short", "HEAD"]), "main");
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    let merges = env.git(&repo, &["rev-list", "--merges", "--count", &format!("main..{integration}")]);
    assert_eq!(merges, "20", "one merge commit per task");

    // The same rewrite done serially in one checkout gives the same tree.
    let serial = env.path().join("serial");
    env.git(env.path(), &["clone", "--quiet", repo.to_str().expect("utf8"), "serial"]);
    rewrite_serially(&serial, r"\bFileId\b", "SourceFileId");
    env.git(&serial, &["commit", "--quiet", "-am", "serial"]);
    let serial_tree = env.git(&serial, &["rev-parse", "HEAD^{tree}"]);
    let grove_tree = env.git(&repo, &["rev-parse", &format!("{integration}^{{tree}}")]);
    assert_eq!(grove_tree, serial_tree);

    // status, logs and diff read what the run recorded.
    let id = job["id"].as_str().expect("id");
    let status = env.grove(&repo, &["status", id]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(status.stdout.contains("c07") && status.stdout.contains("merged"), "{}", status.stdout);
    let logs = env.grove(&repo, &["logs", &format!("{id}/c02")]);
    assert!(logs.stdout.contains("replacement(s)"), "{}", logs.stdout);
    let diff = env.grove(&repo, &["diff", "c02", "--stat"]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    assert!(diff.stdout.contains("files changed"), "{}", diff.stdout);
}

/// Folders a..e with a file each, and a top-level file.
fn five_dirs(env: &Env) -> std::path::PathBuf {
    let mut files: Vec<(String, String)> =
        ["a", "b", "c", "d", "e"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    files.push(("shared.txt".into(), "shared\n".into()));
    env.repo("dirs", &files)
}

#[test]
fn a_failing_agent_fails_its_task_and_the_others_merge() {
    let env = Env::new();
    let repo = five_dirs(&env);
    let script = r#"if [ "$GROVE_TASK" = c ]; then echo "about to fail"; echo boom >&2; exit 3; fi; echo changed >> "$GROVE_TASK/f.txt""#;
    let run = env
        .grove(&repo, &["run", "--split", "dirs", "--include", "?/**", "--json", "--", "sh", "-c", script]);
    assert_eq!(run.code, 1, "a failed task makes the run exit 1: {}", run.stderr);
    let job = run.json();
    let c = task(&job, "c");
    assert_eq!(c["state"], "failed");
    assert!(c["reason"].as_str().expect("reason").contains("exited with code 3"), "{c:#}");
    for t in ["a", "b", "d", "e"] {
        assert_eq!(task(&job, t)["shown"], "merged", "{job:#}");
    }
    let logs = env.grove(&repo, &["logs", "c"]);
    assert!(logs.stdout.contains("about to fail") && logs.stdout.contains("boom"), "{}", logs.stdout);
    let status = env.grove(&repo, &["status", job["id"].as_str().expect("id")]);
    assert!(status.stdout.contains("exited with code 3"), "{}", status.stdout);
}

#[test]
fn an_agent_past_its_timeout_is_killed_with_its_children() {
    let env = Env::new();
    let repo = five_dirs(&env);
    let pidfile = env.path().join("sleeper.pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let started = Instant::now();
    let run = env.grove(
        &repo,
        &["run", "--split", "single", "--turn-timeout", "1s", "--json", "--", "sh", "-c", &script],
    );
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(run.code, 1, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    let t = &job["tasks"][0];
    assert_eq!(t["state"], "failed");
    assert!(t["reason"].as_str().expect("reason").contains("timed out after 1s"), "{t:#}");
    let pid = std::fs::read_to_string(&pidfile).expect("pid file");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
    assert!(matches!(state, None | Some('Z') | Some('X')), "the agent's child survived: {stat}");
}

#[test]
fn the_second_of_two_conflicting_tasks_needs_attention() {
    let env = Env::new();
    let repo = five_dirs(&env);
    // Every task edits the same line of a top-level file (present in every sparse checkout).
    let script = r#"echo "$GROVE_TASK" > shared.txt; echo more >> "$GROVE_TASK/f.txt""#;
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--include",
            "a/**",
            "--include",
            "b/**",
            "--on-conflict",
            "attention",
            "--json",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    assert_eq!(task(&job, "a")["shown"], "merged");
    let b = task(&job, "b");
    assert_eq!(b["state"], "needs-attention");
    assert_eq!(b["conflict_paths"], serde_json::json!(["shared.txt"]));
    let integration = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{integration}:shared.txt")]), "a");
    // The conflicting branch is kept for a person to look at.
    assert!(!env.git(&repo, &["rev-parse", "--verify", b["branch"].as_str().expect("branch")]).is_empty());
}

#[test]
fn ignored_files_are_copied_and_each_task_has_its_own_ports() {
    let env = Env::new();
    let repo = five_dirs(&env);
    write_files(&repo, &[(".gitignore".into(), ".env\n".into()), (".env".into(), "SECRET=1\n".into())]);
    env.git(&repo, &["add", ".gitignore"]);
    env.git(&repo, &["commit", "--quiet", "-m", "ignore .env"]);
    let script = r#"cat .env > "$GROVE_TASK/seen.txt"; echo "$GROVE_PORT_BASE $GROVE_PORT_COUNT" >> "$GROVE_TASK/seen.txt""#;
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--include",
            "?/**",
            "--include-ignored",
            ".env",
            "--json",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    let integration = job["integration_branch"].as_str().expect("branch");
    let a = env.git(&repo, &["show", &format!("{integration}:a/seen.txt")]);
    let b = env.git(&repo, &["show", &format!("{integration}:b/seen.txt")]);
    assert!(a.starts_with("SECRET=1\n") && b.starts_with("SECRET=1\n"), "{a}");
    assert_ne!(a.lines().nth(1), b.lines().nth(1), "tasks share no port range");
    // .env was not committed anywhere: it is ignored in the workspace too.
    let tree = env.git(&repo, &["ls-tree", "-r", "--name-only", integration]);
    assert!(!tree.lines().any(|l| l == ".env"), "{tree}");
}
