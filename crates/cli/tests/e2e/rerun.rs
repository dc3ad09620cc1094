use crate::harness::{Env, task};

fn three_dirs(env: &Env) -> std::path::PathBuf {
    let files: Vec<(String, String)> =
        ["a", "b", "c"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    env.repo("r", &files)
}

/// `--failed` runs a failed task again from the base; merged tasks are not touched, and a
/// merged task cannot be re-run.
#[test]
fn failed_tasks_run_again_and_merge() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let gate = env.path().join("gate");
    // Task b fails until the gate file exists.
    let script = format!(
        r#"echo "turn on $GROVE_TASK" >> "$GROVE_TASK/f.txt"; if [ "$GROVE_TASK" = b ] && [ ! -e {} ]; then exit 4; fi"#,
        gate.display()
    );
    let first = env.grove(&repo, &["run", "--split", "dirs", "--json", "--", "sh", "-c", &script]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    let job = first.json();
    let id = job["id"].as_str().expect("id");
    assert_eq!(task(&job, "b")["state"], "failed");
    let integration = job["integration_branch"].as_str().expect("branch");
    let before = env.git(&repo, &["rev-parse", integration]);

    let merged = env.grove(&repo, &["run", "--job", id, "--only", "a"]);
    assert_eq!(merged.code, 2);
    assert!(merged.stderr.contains("already merged"), "{}", merged.stderr);

    std::fs::write(&gate, "").expect("gate");
    let again = env.grove(&repo, &["run", "--failed", "--json"]);
    assert_eq!(again.code, 0, "{}\n{}", again.stderr, again.stdout);
    let job = again.json();
    let b = task(&job, "b");
    assert_eq!(b["shown"], "merged");
    assert_eq!(b["attempt"], 2);
    // From the base: the failed attempt's line is not in b's new branch.
    let content = env.git(&repo, &["show", &format!("{integration}:b/f.txt")]);
    assert_eq!(content, "b\nturn on b", "{content}");
    // The first merges stay; b's merge comes on top of them.
    let merges = env.git(&repo, &["rev-list", "--merges", "--count", &format!("{before}..{integration}")]);
    assert_eq!(merges, "1");
}

/// `--canary N` runs the first N tasks alone; without a terminal the rest waits for
/// `grove run --job`. An agent that changes nothing is "no-change", not a failure.
#[test]
fn canary_then_the_rest_and_empty_diffs_are_not_failures() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let script = r#"if [ "$GROVE_TASK" != c ]; then echo x >> "$GROVE_TASK/f.txt"; fi"#;
    let canary =
        env.grove(&repo, &["run", "--split", "dirs", "--canary", "1", "--json", "--", "sh", "-c", script]);
    assert_eq!(canary.code, 1, "the job is not finished: {}", canary.stderr);
    assert!(canary.stderr.contains("the rest waits"), "{}", canary.stderr);
    let job = canary.json();
    assert_eq!(job["state"], "paused");
    assert_eq!(task(&job, "a")["shown"], "merged");
    assert_eq!(task(&job, "b")["state"], "queued");

    let rest = env.grove(&repo, &["run", "--job", job["id"].as_str().expect("id"), "--json"]);
    assert_eq!(rest.code, 0, "{}\n{}", rest.stderr, rest.stdout);
    let job = rest.json();
    assert_eq!(job["state"], "done");
    assert_eq!(task(&job, "b")["shown"], "merged");
    assert_eq!(task(&job, "c")["shown"], "no-change");
    assert_eq!(task(&job, "c")["state"], "succeeded");
}

/// `grove plan --dot` and `--files-from -`.
#[test]
fn plan_prints_dot_and_reads_a_file_list() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let dot = env.grove(&repo, &["plan", "--split", "dirs", "--dot"]);
    assert_eq!(dot.code, 0, "{}", dot.stderr);
    assert!(dot.stdout.starts_with("digraph"), "{}", dot.stdout);

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_grove"));
    cmd.current_dir(&repo)
        .args(["plan", "--split", "dirs", "--files-from", "-", "--json"])
        .env("GROVE_HOME", env.grove_home())
        .env("HOME", env.path().join("home"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(b"a/f.txt\n./c/f.txt\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let slugs: Vec<_> = plan["tasks"].as_array().expect("tasks").iter().map(|t| t["task"].clone()).collect();
    assert_eq!(slugs, ["a", "c"]);
}
