//! Secrets: never inherited, never logged, never committed.
//!
//! An agent that prints its environment runs with grove's tokens and an unrelated secret in
//! the environment of the process that runs it (`grove run` embedded, or a `grove worker` over
//! a real nats-server): none reach the agent, a check or the integration check; PATH and HOME
//! do; a credential passed with `--agent-env` reaches the agent only, and its value is masked
//! wherever grove shows what the agent printed. A `.env` copied into workspaces as git-ignored,
//! whatever rule ignores it, is in no task branch, no integration branch and not in the
//! person's repository after publish.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::{Env, write_files};

const GROVE_TOKEN: &str = "grove-api-token-0123456789";
const NATS_TOKEN: &str = "grove-nats-token-9876543210";
const UNRELATED: &str = "unrelated-secret-value-42";
const CREDENTIAL: &str = "sk-test-credential-abcdef123456";

/// A grove command with the harness's hermetic set-up and `extra` environment.
fn grove(env: &Env, home: &Path, cwd: &Path, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut cmd = grove_tests::command("grove");
    cmd.current_dir(cwd)
        .args(args)
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("run grove");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The secrets in the environment of the process that runs agents.
fn secret_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GROVE_TOKEN", GROVE_TOKEN),
        ("GROVE_NATS_TOKEN", NATS_TOKEN),
        ("SECRET", UNRELATED),
        ("MY_API_KEY", CREDENTIAL),
    ]
}

/// The agent: writes its environment to `out/agent-<task>.env`, prints it, prints its
/// credential (whole, then in two pieces), changes its folder's file. Task `d01` then fails,
/// so its log's tail (with the credential in it) becomes part of its outcome.
fn agent_script(out: &Path) -> String {
    format!(
        r#"env > "{out}/agent-$GROVE_TASK.env"; env; echo "key=$MY_API_KEY"; printf 'split=%s' "$(printf %s "$MY_API_KEY" | cut -c1-12)"; printf '%s\n' "$(printf %s "$MY_API_KEY" | cut -c13-)"; echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt"; if [ "$GROVE_TASK" = d01 ]; then echo "failing with $MY_API_KEY"; exit 1; fi"#,
        out = out.display()
    )
}

fn env_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What an agent saw: PATH, HOME and its credential; none of grove's tokens, no unrelated
/// secret.
fn assert_agent_env(text: &str, home: &Path) {
    assert!(text.lines().any(|l| l.starts_with("PATH=")), "{text}");
    assert!(text.lines().any(|l| l == format!("HOME={}", home.display())), "{text}");
    assert!(text.lines().any(|l| l == format!("MY_API_KEY={CREDENTIAL}")), "the passed credential: {text}");
    assert!(text.lines().any(|l| l == "GROVE_TASK=d00" || l == "GROVE_TASK=d01"), "{text}");
    for bad in ["GROVE_TOKEN", "GROVE_NATS_TOKEN", "SECRET=", "GROVE_HOME"] {
        assert!(!text.lines().any(|l| l.starts_with(bad)), "{bad} reached the agent: {text}");
    }
    for value in [GROVE_TOKEN, NATS_TOKEN, UNRELATED] {
        assert!(!text.contains(value), "{value} reached the agent: {text}");
    }
}

/// What a check saw: PATH, no credential, no token.
fn assert_check_env(text: &str) {
    assert!(text.lines().any(|l| l.starts_with("PATH=")), "{text}");
    for value in [GROVE_TOKEN, NATS_TOKEN, UNRELATED, CREDENTIAL] {
        assert!(!text.contains(value), "{value} reached a check: {text}");
    }
    assert!(!text.contains("MY_API_KEY"), "{text}");
}

/// What grove shows of an agent's output: masked.
fn assert_masked(what: &str, text: &str) {
    for value in [GROVE_TOKEN, NATS_TOKEN, UNRELATED, CREDENTIAL, &CREDENTIAL[12..]] {
        assert!(!text.contains(value), "{what} shows {value}: {text}");
    }
}

fn repo(env: &Env) -> PathBuf {
    let files: Vec<(String, String)> = (0..2).map(|i| (format!("d{i:02}/f.txt"), format!("{i}\n"))).collect();
    env.repo("r", &files)
}

/// Every file grove wrote about a job (state, logs, run folders) has none of the secrets.
fn assert_nothing_stored(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
            if meta.is_dir() {
                if !["mirrors", "worktrees"].contains(&p.file_name().and_then(|n| n.to_str()).unwrap_or("")) {
                    stack.push(p);
                }
            } else if meta.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                for value in [GROVE_TOKEN, NATS_TOKEN, UNRELATED, CREDENTIAL] {
                    assert!(
                        !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                        "{} holds {value}",
                        p.display()
                    );
                }
            }
        }
    }
}

#[test]
fn an_embedded_agent_gets_a_clean_environment_and_its_credential_masked() {
    let env = Env::new();
    let repo = repo(&env);
    let out = env.path().join("seen");
    std::fs::create_dir_all(&out).expect("mkdir");
    let check = format!(r#"env > "{}/check-$GROVE_TASK.env""#, out.display());
    let integration = format!(r#"env > "{}/integration.env""#, out.display());
    let script = agent_script(&out);
    let home = env.grove_home();
    let args = [
        "run",
        "--split",
        "dirs",
        "--agent-env",
        "MY_API_KEY",
        "--check",
        &check,
        "--integration-check",
        &integration,
        "--json",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let (code, stdout, stderr) = output(&mut grove(&env, &home, &repo, &args, &secret_env()));
    assert_eq!(code, 1, "d01 fails: {stderr}\n{stdout}");
    let job: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let id = job["id"].as_str().expect("id").to_owned();
    assert_eq!(crate::harness::task(&job, "d00")["shown"], "merged", "{job:#}");
    assert_eq!(crate::harness::task(&job, "d01")["state"], "failed", "{job:#}");
    assert_masked("grove run's output", &format!("{stdout}{stderr}"));

    for t in ["d00", "d01"] {
        assert_agent_env(&env_file(&out.join(format!("agent-{t}.env"))), &env.path().join("home"));
    }
    assert_check_env(&env_file(&out.join("check-d00.env")));
    assert_check_env(&env_file(&out.join("integration.env")));

    let log = env_file(&home.join(format!("runs/{id}/d00/agent.log")));
    assert!(log.contains("key=***") && log.contains("MY_API_KEY=***"), "{log}");
    assert!(log.contains("split=***"), "a credential printed in two pieces is masked: {log}");
    assert!(log.lines().any(|l| l.starts_with("PATH=")), "{log}");
    assert_masked("the log", &log);
    for t in ["d00", "d01"] {
        let (code, shown, err) = output(&mut grove(&env, &home, &repo, &["logs", &format!("{id}/{t}")], &[]));
        assert_eq!(code, 0, "{err}");
        assert!(shown.contains("key=***"), "{shown}");
        assert_masked("grove logs", &shown);
    }
    let (_, status, _) = output(&mut grove(&env, &home, &repo, &["status", &id], &[]));
    assert_masked("grove status", &status);
    // Nothing grove keeps (state, logs, the failure's tail) has a secret in it.
    assert_nothing_stored(&home);
}

/// The same through a coordinator daemon and a real `grove worker` over a nats-server that
/// wants a token: the worker's agents see no token, their output is masked in the worker's
/// log and in the chunks `grove logs --coordinator` reads from NATS.
#[test]
fn a_worker_over_nats_gives_agents_a_clean_environment_and_masks_their_output() {
    let env = Env::new();
    let (_nats, port) = grove_tests::nats_server_with(&env.path().join("nats"), &["--auth", NATS_TOKEN]);
    let nats = format!("nats://127.0.0.1:{port}");
    let api_port = grove_tests::free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    let home = env.grove_home();
    let quiet = |mut c: Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
        grove_tests::Proc(c.spawn().expect("spawn"))
    };
    let listen = format!("127.0.0.1:{api_port}");
    let _coordinator = quiet(grove(
        &env,
        &home,
        env.path(),
        &["coordinator", "--nats", &nats, "--listen", &listen],
        &secret_env(),
    ));
    let worker_home = env.path().join("worker-home");
    let worker_args = ["worker", "--nats", &nats, "--id", "w1", "--agent-env", "MY_API_KEY"];
    let _worker = quiet(grove(&env, &worker_home, env.path(), &worker_args, &secret_env()));
    assert!(grove_tests::wait_port(api_port, std::time::Duration::from_secs(30)), "no coordinator");

    let repo = repo(&env);
    let out = env.path().join("seen");
    std::fs::create_dir_all(&out).expect("mkdir");
    let check = format!(r#"env > "{}/check-$GROVE_TASK.env""#, out.display());
    let integration = format!(r#"env > "{}/integration.env""#, out.display());
    let script = agent_script(&out);
    let args = [
        "run",
        "--coordinator",
        &api,
        "--split",
        "dirs",
        "--check",
        &check,
        "--integration-check",
        &integration,
        "--json",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let cli_env = [("GROVE_TOKEN", GROVE_TOKEN)];
    let (code, stdout, stderr) = output(&mut grove(&env, &home, &repo, &args, &cli_env));
    assert_eq!(code, 1, "d01 fails: {stderr}\n{stdout}");
    let job: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let id = job["id"].as_str().expect("id").to_owned();
    assert_eq!(crate::harness::task(&job, "d00")["shown"], "merged", "{job:#}");
    assert_masked("grove run's output", &format!("{stdout}{stderr}"));

    for t in ["d00", "d01"] {
        assert_agent_env(&env_file(&out.join(format!("agent-{t}.env"))), &env.path().join("home"));
    }
    assert_check_env(&env_file(&out.join("check-d00.env")));
    assert_check_env(&env_file(&out.join("integration.env")));

    let log = env_file(&worker_home.join(format!("runs/{id}/d00/agent.log")));
    assert!(log.contains("key=***") && log.contains("split=***"), "{log}");
    assert_masked("the worker's log", &log);
    for t in ["d00", "d01"] {
        let args = ["logs", &format!("{id}/{t}"), "--coordinator", &api];
        let (code, shown, err) = output(&mut grove(&env, &home, &repo, &args, &cli_env));
        assert_eq!(code, 0, "{err}");
        assert!(shown.contains("key=***"), "{shown}");
        assert_masked("grove logs --coordinator", &shown);
    }
    let (_, status, _) =
        output(&mut grove(&env, &home, &repo, &["status", "--coordinator", &api, &id], &cli_env));
    assert_masked("grove status --coordinator", &status);
    assert_nothing_stored(&home);
    assert_nothing_stored(&worker_home);
    // The chunks NATS keeps (the stream GROVE_LOGS, on disk) are masked too.
    assert_nothing_stored(&env.path().join("nats"));
}

/// How `.env` is ignored in the person's repository.
#[derive(Debug, Clone, Copy)]
enum Ignored {
    /// By the committed `.gitignore`.
    Committed,
    /// By a `.gitignore` that is not committed.
    Untracked,
    /// By `.git/info/exclude`.
    InfoExclude,
    /// By the global `core.excludesFile`.
    Global,
}

/// `.env`, copied into each workspace as git-ignored with `--include-ignored .env`, is never
/// committed, merged or published, whatever rule ignores it, also when the agent forces it in
/// (`git add -f`) or commits it itself; the workspace had it, and the log says it was left out.
#[test]
fn a_copied_ignored_file_is_never_committed_however_it_is_ignored() {
    for how in [Ignored::Committed, Ignored::Untracked, Ignored::InfoExclude, Ignored::Global] {
        let env = Env::new();
        let mut files: Vec<(String, String)> =
            (0..3).map(|i| (format!("d{i:02}/f.txt"), format!("{i}\n"))).collect();
        if let Ignored::Committed = how {
            files.push((".gitignore".into(), ".env\n".into()));
        }
        let repo = env.repo("r", &files);
        write_files(&repo, &[(".env".into(), format!("API_KEY={CREDENTIAL}\n"))]);
        let mut extra: Vec<(&str, String)> = Vec::new();
        match how {
            Ignored::Committed => {}
            Ignored::Untracked => write_files(&repo, &[(".gitignore".into(), ".env\n.gitignore\n".into())]),
            Ignored::InfoExclude => write_files(&repo, &[(".git/info/exclude".into(), ".env\n".into())]),
            Ignored::Global => {
                let excludes = env.path().join("global-excludes");
                std::fs::write(&excludes, ".env\n").expect("write");
                let config = env.path().join("gitconfig");
                std::fs::write(&config, format!("[core]\n\texcludesFile = {}\n", excludes.display()))
                    .expect("write");
                extra.push(("GIT_CONFIG_GLOBAL", config.display().to_string()));
            }
        }
        let mut git = Command::new("git");
        grove_tests::hermetic(&mut git).current_dir(&repo).args(["status", "--porcelain", "--ignored"]);
        for (k, v) in &extra {
            git.env(k, v);
        }
        let status = String::from_utf8_lossy(&git.output().expect("git status").stdout).into_owned();
        assert!(status.contains("!! .env"), "{how:?}: .env is ignored in the repository: {status}");

        // d00 changes its file; d01 also forces .env in; d02 commits it itself.
        let script = r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt"; case $GROVE_TASK in d01) git add -f .env ;; d02) git add -f .env "$GROVE_TASK/f.txt" && git commit -q -m "agent commit" ;; esac"#;
        let home = env.grove_home();
        let args = [
            "run",
            "--split",
            "dirs",
            "--include-ignored",
            ".env",
            "--keep-worktrees",
            "all",
            "--json",
            "--",
            "sh",
            "-c",
            script,
        ];
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, stdout, stderr) = output(&mut grove(&env, &home, &repo, &args, &extra));
        assert_eq!(code, 0, "{how:?}: {stderr}\n{stdout}");
        let job: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        let id = job["id"].as_str().expect("id");
        let tasks = job["tasks"].as_array().expect("tasks");
        // (A committed .gitignore is a top-level file: the root task, with nothing to change.)
        assert!(tasks.iter().all(|t| t["shown"] == "merged" || t["task"] == "root"), "{how:?}: {job:#}");

        for t in ["d00", "d01", "d02"] {
            let ws = home.join(format!("worktrees/{id}/{t}/.env"));
            assert_eq!(env_file(&ws), format!("API_KEY={CREDENTIAL}\n"), "{how:?}: the workspace had it");
            let log = env_file(&home.join(format!("runs/{id}/{t}/agent.log")));
            assert!(log.contains("copied in as git-ignored (never committed): .env"), "{how:?}: {log}");
            if !matches!(how, Ignored::Committed | Ignored::Global) || t != "d00" {
                assert!(log.contains("left out of the checkpoint"), "{how:?} {t}: {log}");
            }
            if t == "d02" {
                assert!(log.contains("folded into the checkpoint without them"), "{how:?}: {log}");
            }
        }
        // Not in any commit of the person's repository: task branches, integration branch.
        let touched = env.git(&repo, &["log", "--all", "--format=%H", "--", ".env"]);
        assert_eq!(touched, "", "{how:?}: a commit has .env");
        let branches = env.git(&repo, &["branch", "--list", &format!("grove/{id}/*")]);
        let want = if let Ignored::Committed = how { 5 } else { 4 };
        assert_eq!(branches.lines().count(), want, "{how:?}: published: {branches}");
        let integration = job["integration_branch"].as_str().expect("branch");
        let files = env.git(&repo, &["ls-tree", "-r", "--name-only", integration]);
        assert!(!files.contains(".env") && files.contains("d02/f.txt"), "{how:?}: {files}");
        let d02 = env.git(&repo, &["show", &format!("{integration}:d02/f.txt")]);
        assert_eq!(d02, "2\nby d02", "{how:?}: the agent's own commit's work merged");
        // Nor in grove's mirror.
        let mirror =
            std::fs::read_dir(home.join("mirrors")).expect("mirrors").flatten().next().expect("mirror");
        let git_dir = format!("--git-dir={}", mirror.path().display());
        assert_eq!(
            env.git(env.path(), &[&git_dir, "log", "--all", "--format=%H", "--", ".env"]),
            "",
            "{how:?}"
        );
    }
}
