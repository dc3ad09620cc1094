//! The real agent CLIs (installed by `scripts/test` at pinned versions) against the scripted
//! model server of `grove_tests::model_server`, on loopback: the CLI's own edit and shell
//! tools change files in grove's worktrees, grove commits and merges them, and the requests
//! the CLI sent show what it was told. Run through `--agent command`, as a person would today.

use std::path::{Path, PathBuf};

use grove_tests::model_server::{Api, ModelServer, Reply};

use crate::harness::{Env, listed, task};

/// A repository of four folders, one task each with `--split dirs`.
fn four_dirs(env: &Env) -> PathBuf {
    let files: Vec<(String, String)> =
        ["a", "b", "c", "d"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    env.repo("r", &files)
}

/// The task a request is for: its workspace is `worktrees/<job>/<task>`.
fn task_of(workdir: &str) -> String {
    Path::new(workdir).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `claude -p` in four worktrees at once: each CLI's real Write tool writes a file in its own
/// task's folder, the four branches merge, and every conversation the server saw carries the
/// prompt, Claude Code's tools, and the tool's result in its second request.
#[test]
fn claude_writes_files_in_four_worktrees_and_they_merge() {
    let env = Env::new();
    let repo = four_dirs(&env);
    let server = ModelServer::start();
    server.respond(|req, n| {
        let task = task_of(&req.workdir().unwrap_or_default());
        match n {
            0 => Reply::write(&format!("{task}/claude.txt"), &format!("written by claude in {task}\n"))
                .usage(1234, 56),
            _ => Reply::text(format!("Wrote {task}/claude.txt.")).usage(1300, 20),
        }
    });
    let claude = grove_tests::agent_cli("claude");
    let claude = claude.to_str().expect("utf-8 path");
    let run = env.grove_with(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "-j",
            "4",
            "--prompt",
            "Leave a note in your folder",
            "--json",
            "--",
            claude,
            "-p",
            "{prompt} (task {task})",
            "--output-format",
            "json",
            "--permission-mode",
            "acceptEdits",
        ],
        &listed(server.claude_env(&env.path().join("home"))),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let job = run.json();
    let ib = job["integration_branch"].as_str().expect("integration branch");
    for t in ["a", "b", "c", "d"] {
        let row = task(&job, t);
        assert_eq!(row["shown"], "merged", "{row:#}");
        let note = env.git(&repo, &["show", &format!("{ib}:{t}/claude.txt")]);
        assert_eq!(note, format!("written by claude in {t}"));
    }

    let asked = server.model_requests();
    assert_eq!(
        asked.len(),
        8,
        "two model requests per task: {:?}",
        asked.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(asked.iter().all(|r| r.api() == Some(Api::Anthropic) && r.path == "/v1/messages?beta=true"));
    for t in ["a", "b", "c", "d"] {
        let mine: Vec<_> = asked.iter().filter(|r| r.workdir().is_some_and(|w| task_of(&w) == t)).collect();
        assert_eq!(mine.len(), 2, "task {t}");
        assert!(mine[0].text().contains(&format!("Leave a note in your folder (task {t})")), "the prompt");
        assert!(mine[0].tool_names().iter().any(|n| n == "Write"), "{:?}", mine[0].tool_names());
        assert!(mine[0].system().contains("Claude"), "Claude Code's system prompt");
        assert_eq!(mine[0].conversation(), mine[1].conversation(), "one session per task");
        assert!(mine[0].header("x-api-key") == Some("sk-ant-test"), "the key came from the worker's env");
        let results = mine[1].tool_results();
        assert!(results.iter().any(|r| r.contains("claude.txt")), "the Write tool's result: {results:?}");
    }
}

/// `codex exec` in four worktrees at once: each CLI runs its real shell tool
/// (`exec_command`), which writes a file in its task's folder; the branches merge, and the
/// requests carry the prompt, the model asked for and the command's output.
#[test]
fn codex_runs_its_shell_tool_in_four_worktrees_and_they_merge() {
    let env = Env::new();
    let repo = four_dirs(&env);
    let server = ModelServer::start();
    server.respond(|req, n| {
        let task = task_of(&req.workdir().unwrap_or_default());
        match n {
            0 => Reply::exec(&format!("echo written by codex in {task} > {task}/codex.txt && echo wrote-it")),
            _ => Reply::text(format!("Wrote {task}/codex.txt.")),
        }
        .usage(1000, 50)
    });
    let codex = grove_tests::agent_cli("codex");
    let mut args: Vec<String> = [
        "run",
        "--split",
        "dirs",
        "-j",
        "4",
        "--prompt",
        "Leave a note in your folder",
        "--json",
        "--",
        codex.to_str().expect("utf-8 path"),
        "exec",
        "--json",
        "-s",
        "workspace-write",
        "--skip-git-repo-check",
        "-m",
        "gpt-test",
    ]
    .map(String::from)
    .to_vec();
    args.extend(server.codex_provider_args());
    args.push("{prompt} (task {task})".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = env.grove_with(&repo, &args, &listed(server.codex_env(&env.path().join("home"))));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let job = run.json();
    let ib = job["integration_branch"].as_str().expect("integration branch");
    for t in ["a", "b", "c", "d"] {
        assert_eq!(task(&job, t)["shown"], "merged", "{:#}", task(&job, t));
        assert_eq!(
            env.git(&repo, &["show", &format!("{ib}:{t}/codex.txt")]),
            format!("written by codex in {t}")
        );
    }
    let asked = server.model_requests();
    assert_eq!(asked.len(), 8, "two model requests per task");
    for t in ["a", "b", "c", "d"] {
        let mine: Vec<_> = asked.iter().filter(|r| r.workdir().is_some_and(|w| task_of(&w) == t)).collect();
        assert_eq!(mine.len(), 2, "task {t}");
        assert!(mine[0].api() == Some(Api::OpenAi) && mine[0].path == "/v1/responses");
        assert_eq!(mine[0].model(), Some("gpt-test"));
        assert!(mine[0].text().contains(&format!("Leave a note in your folder (task {t})")), "the prompt");
        assert!(mine[0].tool_names().iter().any(|n| n == "exec_command"), "{:?}", mine[0].tool_names());
        assert_eq!(mine[0].header("authorization"), Some("Bearer sk-test"));
        assert_eq!(mine[0].conversation(), mine[1].conversation(), "one thread per task");
        let results = mine[1].tool_results();
        assert!(results.iter().any(|r| r.contains("wrote-it")), "the command's output: {results:?}");
    }
}

/// `gemini -p` in four worktrees at once: each CLI's real `write_file` tool writes a file in
/// its task's folder (approval mode yolo, so nothing asks), the branches merge, and the
/// requests carry the prompt and Gemini CLI's tools.
#[test]
fn gemini_writes_files_in_four_worktrees_and_they_merge() {
    let env = Env::new();
    let repo = four_dirs(&env);
    let server = ModelServer::start();
    server.respond(|req, n| {
        let task = task_of(&req.workdir().unwrap_or_default());
        match n {
            0 => Reply::write(&format!("{task}/gemini.txt"), &format!("written by gemini in {task}\n")),
            _ => Reply::text(format!("Wrote {task}/gemini.txt.")),
        }
        .usage(1000, 30)
    });
    let gemini = grove_tests::agent_cli("gemini");
    let run = env.grove_with(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "-j",
            "4",
            "--prompt",
            "Leave a note in your folder",
            "--json",
            "--",
            gemini.to_str().expect("utf-8 path"),
            "-p",
            "{prompt} (task {task})",
            "-o",
            "stream-json",
            "--approval-mode",
            "yolo",
            "--skip-trust",
        ],
        &listed(server.gemini_env(&env.path().join("home"))),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let job = run.json();
    let ib = job["integration_branch"].as_str().expect("integration branch");
    for t in ["a", "b", "c", "d"] {
        assert_eq!(task(&job, t)["shown"], "merged", "{:#}", task(&job, t));
        assert_eq!(
            env.git(&repo, &["show", &format!("{ib}:{t}/gemini.txt")]),
            format!("written by gemini in {t}")
        );
    }
    let asked = server.model_requests();
    assert_eq!(asked.len(), 8, "two model requests per task");
    for t in ["a", "b", "c", "d"] {
        let mine: Vec<_> = asked.iter().filter(|r| r.workdir().is_some_and(|w| task_of(&w) == t)).collect();
        assert_eq!(mine.len(), 2, "task {t}");
        assert_eq!(mine[0].api(), Some(Api::Gemini));
        assert!(mine[0].text().contains(&format!("Leave a note in your folder (task {t})")), "the prompt");
        assert!(mine[0].tool_names().iter().any(|n| n == "write_file"), "{:?}", mine[0].tool_names());
        assert_eq!(mine[0].header("x-goog-api-key"), Some("gemini-test-key"));
        assert!(
            mine[1].tool_results().iter().any(|r| r.contains("gemini.txt")),
            "{:?}",
            mine[1].tool_results()
        );
    }
}

/// `opencode run` in four worktrees at once, its `anthropic` provider pointed at the server:
/// each CLI's real `write` tool writes a file in its task's folder and the branches merge.
/// OpenCode's helper call (a session title, without tools) does not move the script.
#[test]
fn opencode_writes_files_in_four_worktrees_and_they_merge() {
    let env = Env::new();
    let repo = four_dirs(&env);
    let server = ModelServer::start();
    server.respond(|req, n| {
        let task = task_of(&req.workdir().unwrap_or_default());
        match n {
            0 => Reply::write(&format!("{task}/opencode.txt"), &format!("written by opencode in {task}\n")),
            _ => Reply::text(format!("Wrote {task}/opencode.txt.")),
        }
        .usage(1000, 30)
    });
    let opencode = grove_tests::agent_cli("opencode");
    let run = env.grove_with(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "-j",
            "4",
            "--prompt",
            "Leave a note in your folder",
            "--json",
            "--",
            "sh",
            "-c",
            // Each OpenCode keeps its state (a SQLite database it sets up on first start) in a
            // folder of its own: four first starts on one fresh database race.
            r#"d="$HOME/opencode-state/$GROVE_TASK"; XDG_DATA_HOME="$d/data" XDG_STATE_HOME="$d/state" XDG_CACHE_HOME="$d/cache" exec "$0" run --format json -m anthropic/claude-sonnet-4-5 "$1""#,
            opencode.to_str().expect("utf-8 path"),
            "{prompt} (task {task})",
        ],
        &listed(server.opencode_env(&env.path().join("home"))),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let job = run.json();
    let ib = job["integration_branch"].as_str().expect("integration branch");
    for t in ["a", "b", "c", "d"] {
        assert_eq!(task(&job, t)["shown"], "merged", "{:#}", task(&job, t));
        let note = env.git(&repo, &["show", &format!("{ib}:{t}/opencode.txt")]);
        assert_eq!(note, format!("written by opencode in {t}"));
    }
    let turns: Vec<_> = server.model_requests().into_iter().filter(|r| !r.tool_names().is_empty()).collect();
    assert_eq!(turns.len(), 8, "two turns per task");
    for t in ["a", "b", "c", "d"] {
        let mine: Vec<_> = turns.iter().filter(|r| r.workdir().is_some_and(|w| task_of(&w) == t)).collect();
        assert_eq!(mine.len(), 2, "task {t}");
        assert!(mine[0].text().contains(&format!("Leave a note in your folder (task {t})")), "the prompt");
        assert_eq!(mine[0].model(), Some("claude-sonnet-4-5"));
        assert_eq!(mine[1].tool_results().len(), 1, "the write tool's result came back");
    }
}

/// Run `cli args` in a fresh folder of `env` with `vars` (and PATH), stdin closed:
/// (exit code, stdout, stderr).
fn run_cli(env: &Env, cli: &str, args: &[&str], vars: &[(String, String)]) -> (i32, String, String) {
    let ws = env.path().join("ws");
    std::fs::create_dir_all(&ws).expect("mkdir ws");
    let mut cmd = std::process::Command::new(grove_tests::agent_cli(cli));
    grove_tests::hermetic(&mut cmd)
        .env("HOME", env.path().join("home"))
        .current_dir(&ws)
        .args(args)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null());
    let out = cmd.output().expect("run the CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The lines of a JSONL stream that parse.
fn jsonl(out: &str) -> Vec<serde_json::Value> {
    out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The errors the scripted server sends are the ones Claude Code recognises: a claude.ai
/// plan's limit (OAuth) gives a `rate_limit_event` with the reset time and "You've hit your
/// … limit · resets …"; a bad key gives "Invalid API key" with status 401. Either way the
/// result has `is_error` and the CLI exits 1.
#[test]
fn claude_recognises_the_servers_limit_and_auth_replies() {
    let env = Env::new();
    let server = ModelServer::start();
    let reset = now() + 3600;
    server.queue(Reply::anthropic_usage_limit(reset));
    let home = env.path().join("home");
    let args = ["-p", "hi", "--output-format", "stream-json", "--verbose"];
    let (code, out, err) = run_cli(&env, "claude", &args, &server.claude_oauth_env(&home));
    assert_eq!(code, 1, "{out}\n{err}");
    let lines = jsonl(&out);
    let limit = lines.iter().find(|l| l["type"] == "rate_limit_event").expect("a rate_limit_event");
    assert_eq!(limit["rate_limit_info"]["status"], "rejected", "{limit}");
    assert_eq!(limit["rate_limit_info"]["resetsAt"], reset, "{limit}");
    let result = lines.iter().find(|l| l["type"] == "result").expect("a result");
    assert_eq!((result["is_error"].as_bool(), result["api_error_status"].as_i64()), (Some(true), Some(429)));
    let text = result["result"].as_str().expect("result text");
    assert!(text.starts_with("You've hit your") && text.contains("limit · resets"), "{text}");
    assert_eq!(server.requests()[0].header("authorization"), Some("Bearer sk-ant-oat01-test"));

    server.queue(Reply::anthropic_auth_error());
    let (code, out, _) = run_cli(&env, "claude", &args, &server.claude_env(&home));
    assert_eq!(code, 1, "{out}");
    let lines = jsonl(&out);
    let result = lines.iter().find(|l| l["type"] == "result").expect("a result");
    assert_eq!(result["api_error_status"], 401, "{result}");
    assert!(result["result"].as_str().is_some_and(|t| t.contains("Invalid API key")), "{result}");
}

/// Codex recognises the server's usage-limit reply ("You’ve hit your usage limit … try again
/// at …", with its curly apostrophe), an API key out of quota and a bad key, each in
/// `turn.failed`, and exits 1.
#[test]
fn codex_recognises_the_servers_limit_and_auth_replies() {
    let env = Env::new();
    let server = ModelServer::start();
    let home = env.path().join("home");
    for (reply, expect) in [
        (Reply::openai_usage_limit(now() + 3600), "You\u{2019}ve hit your usage limit."),
        (Reply::openai_quota_exceeded(), "Quota exceeded. Check your plan and billing details."),
        (Reply::openai_auth_error(), "unexpected status 401 Unauthorized"),
    ] {
        server.queue(reply);
        let mut args: Vec<String> =
            ["exec", "--json", "-s", "workspace-write", "--skip-git-repo-check"].map(String::from).to_vec();
        args.extend(server.codex_provider_args());
        args.extend(["-m", "gpt-test", "hi"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run_cli(&env, "codex", &args, &server.codex_env(&home));
        assert_eq!(code, 1, "{out}\n{err}");
        let failed = jsonl(&out).into_iter().find(|l| l["type"] == "turn.failed").expect("turn.failed");
        let message = failed["error"]["message"].as_str().expect("message");
        assert!(message.starts_with(expect), "{message}");
        if expect.contains("usage limit") {
            assert!(message.contains("try again at "), "{message}");
        }
    }
    assert_eq!(server.model_requests().len(), 3, "no retries");
}
