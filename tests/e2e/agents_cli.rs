//! The real agent CLIs (installed by `scripts/test` at pinned versions) against the scripted
//! model server of `grove_tests::model_server`, on loopback: the CLI's own edit and shell
//! tools change files in grove's worktrees, grove commits and merges them, and the requests
//! the CLI sent show what it was told. Run through `--agent command`, as a person would today.

use std::path::{Path, PathBuf};

use grove_tests::model_server::{Api, ModelServer, Reply};

use crate::harness::{Env, task};

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
        &server.claude_env(&env.path().join("home")),
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
