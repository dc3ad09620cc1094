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

    let mut cmd = grove_tests::command("grove");
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

/// `grove plan --split auto` on a real repository mixing Cargo, npm and Go: every ecosystem's
/// modules, dependencies first.
#[test]
fn auto_plans_a_mixed_repository_in_dependency_order() {
    let env = Env::new();
    let f = |p: &str, s: &str| (p.to_owned(), s.to_owned());
    let repo = env.repo(
        "mixed",
        &[
            f("Cargo.toml", "[workspace]\nmembers = [\"rust/*\"]\n"),
            f("rust/core/Cargo.toml", "[package]\nname = \"core\"\nversion = \"0.1.0\"\n"),
            f("rust/core/src/lib.rs", "pub struct FileId;\n"),
            f("rust/app/Cargo.toml", "[package]\nname = \"app\"\nversion = \"0.1.0\"\n[dependencies]\ncore = { path = \"../core\" }\n"),
            f("rust/app/src/main.rs", "use core::FileId;\n"),
            f("package.json", r#"{"name": "root", "private": true, "workspaces": ["web/*"]}"#),
            f("web/ui/package.json", r#"{"name": "@acme/ui", "dependencies": {"@acme/base": "workspace:*"}}"#),
            f("web/ui/index.js", "// FileId\n"),
            f("web/base/package.json", r#"{"name": "@acme/base"}"#),
            f("web/base/index.js", "// FileId\n"),
            f("go/lib/go.mod", "module example.com/lib\n\ngo 1.22\n"),
            f("go/lib/lib.go", "package lib // FileId\n"),
            f("go/svc/go.mod", "module example.com/svc\n\ngo 1.22\n\nrequire example.com/lib v0.0.0\n\nreplace example.com/lib => ../lib\n"),
            f("go/svc/main.go", "package main // FileId\n"),
        ],
    );
    let plan = env.grove(&repo, &["plan", "--split", "auto", "--grep", "FileId", "--json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan = plan.json();
    let tasks = plan["tasks"].as_array().expect("tasks");
    let pos = |slug: &str| {
        tasks.iter().position(|t| t["task"] == slug).unwrap_or_else(|| panic!("no {slug}: {plan:#}"))
    };
    assert_eq!(tasks.len(), 6, "{plan:#}");
    assert!(pos("core") < pos("app"));
    assert!(pos("acme-base") < pos("acme-ui"));
    assert!(pos("go-lib") < pos("go-svc"));
    assert_eq!(task(&plan, "go-svc")["depends_on"], serde_json::json!(["go-lib"]));
    assert_eq!(task(&plan, "app")["depends_on"], serde_json::json!(["core"]));
}
