//! The builtin agent adapters (`--agent claude`, `--agent codex`...) with the real CLIs that
//! `scripts/test` installs, driven by the scripted model server on loopback: what each turn
//! cost (as the CLI reported it, or priced from tokens), budgets that stop a turn as it
//! streams, sessions resumed across turns, attempts and workers, usage limits, and questions
//! answered with `grove reply`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use grove_tests::model_server::{ModelServer, Reply, Request};

use crate::harness::{Env, Run, task};

/// A repository of `dirs` folders, one task each with `--split dirs`.
fn repo(env: &Env, dirs: &[&str]) -> PathBuf {
    let files: Vec<(String, String)> =
        dirs.iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    env.repo("r", &files)
}

/// The task a request is for: its workspace is `worktrees/<job>/<task>`.
fn task_of(req: &Request) -> String {
    let w = req.workdir().unwrap_or_default();
    Path::new(&w).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn cli(name: &str) -> String {
    grove_tests::agent_cli(name).to_str().expect("utf-8 path").to_owned()
}

fn run(env: &Env, repo: &Path, args: &[&str], vars: &[(String, String)]) -> Run {
    env.grove_with(repo, args, vars)
}

/// The JSON lines of a task's log of type `kind` (what the CLI printed).
fn logged(env: &Env, repo: &Path, task: &str, kind: &str) -> Vec<serde_json::Value> {
    let log = env.grove(repo, &["logs", task]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    log.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Four `--agent claude` tasks at once: each CLI's Write tool writes in its own worktree, the
/// four branches merge, and each task's tokens and cost in `grove status --json` are what
/// Claude Code printed in its result; the job's are their sum, and the text status has them in
/// its COST column.
#[test]
fn four_claude_tasks_merge_with_the_cost_the_cli_reported() {
    let env = Env::new();
    let repo = repo(&env, &["a", "b", "c", "d"]);
    let server = ModelServer::start();
    server.respond(|req, n| {
        let t = task_of(req);
        match n {
            0 => Reply::write(&format!("{t}/claude.txt"), &format!("by claude in {t}\n"))
                .usage(1234, 56)
                .cache(300, 40),
            _ => Reply::text(format!("Wrote {t}/claude.txt.")).usage(1300, 20),
        }
    });
    let home = env.path().join("home");
    let claude = cli("claude");
    let out = run(
        &env,
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "-j",
            "4",
            "--agent",
            "claude",
            "--agent-program",
            &claude,
            "--prompt",
            "Leave a note",
            "--json",
        ],
        &server.claude_env(&home),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let id = job["id"].as_str().expect("id").to_owned();
    let ib = job["integration_branch"].as_str().expect("branch");
    let mut sum = 0.0;
    for t in ["a", "b", "c", "d"] {
        let row = task(&job, t);
        assert_eq!(row["shown"], "merged", "{row:#}");
        assert_eq!(env.git(&repo, &["show", &format!("{ib}:{t}/claude.txt")]), format!("by claude in {t}"));
        let results = logged(&env, &repo, &format!("{id}/{t}"), "result");
        assert_eq!(results.len(), 1, "one turn");
        let r = &results[0];
        let u = &row["usage"];
        assert_eq!(u["cost_usd"], r["total_cost_usd"], "{row:#}");
        assert!(u["cost_usd"].as_f64().is_some_and(|c| c > 0.0));
        assert_eq!(u["input_tokens"], r["usage"]["input_tokens"]);
        assert_eq!(u["output_tokens"], r["usage"]["output_tokens"]);
        assert_eq!(u["cache_read_tokens"], r["usage"]["cache_read_input_tokens"]);
        assert_eq!(u["cache_write_tokens"], r["usage"]["cache_creation_input_tokens"]);
        assert_eq!(u["input_tokens"], 1234 + 1300, "the server's usage, summed by the CLI over two calls");
        assert_eq!(row["session"], r["session_id"]);
        sum += u["cost_usd"].as_f64().expect("cost");
    }
    let job_cost = job["usage"]["cost_usd"].as_f64().expect("job cost");
    assert!((job_cost - sum).abs() < 1e-9, "{job_cost} vs {sum}");
    let text = env.grove(&repo, &["status", &id]).stdout;
    assert!(text.contains("COST"), "{text}");
    assert!(
        text.contains(&grove_core_dollars(task(&job, "a")["usage"]["cost_usd"].as_f64().expect("c"))),
        "{text}"
    );
    let list = env.grove(&repo, &["status"]).stdout;
    assert!(list.contains("COST") && list.contains(&grove_core_dollars(job_cost)), "{list}");
    // The log says how Claude was told not to ask anything.
    let log = env.grove(&repo, &["logs", &format!("{id}/a")]).stdout;
    assert!(log.contains("[grove] claude: "), "{log}");
}

/// `$0.0121`, as grove prints a cost.
fn grove_core_dollars(c: f64) -> String {
    if c >= 1.0 {
        return format!("${c:.2}");
    }
    let s = format!("{c:.4}");
    let s = s.trim_end_matches('0');
    format!("${s:0<4}")
}

/// A task budget: task `a`'s second model call reports more tokens than the budget allows
/// and asks to run a command that never ends; grove sees it over from the assistant message on
/// the stream and stops Claude (whose own `--max-budget-usd`, the remainder grove passed, may
/// stop it first: both are in the log), commits what the first call wrote, and fails the task
/// with "budget: $X of $Y"; the other task merges.
#[test]
fn a_task_budget_stops_a_task_mid_turn_with_its_work_committed() {
    let env = Env::new();
    let repo = repo(&env, &["a", "b"]);
    let server = ModelServer::start();
    server.respond(|req, n| {
        let t = task_of(req);
        match (t.as_str(), n) {
            (_, 0) => Reply::write(&format!("{t}/partial.txt"), "first call\n").usage(100, 10),
            ("a", _) => Reply::exec("tail -f /dev/null").usage(5_000_000, 10),
            _ => Reply::text("Done.").usage(100, 10),
        }
    });
    let claude = cli("claude");
    let out = run(
        &env,
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "-j",
            "2",
            "--agent",
            "claude",
            "--agent-program",
            &claude,
            "--prompt",
            "Work",
            "--max-task-cost",
            "0.5",
            "--turn-timeout",
            "60s",
            "--json",
        ],
        &server.claude_env(&env.path().join("home")),
    );
    assert_eq!(out.code, 1, "a failed: {}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["state"], "failed", "{a:#}");
    let reason = a["reason"].as_str().expect("reason");
    assert!(reason.starts_with("budget: $") && reason.ends_with(" of $0.50"), "{reason}");
    let branch = a["branch"].as_str().expect("branch");
    assert_eq!(
        env.git(&repo, &["show", &format!("{branch}:a/partial.txt")]),
        "first call",
        "its work is committed"
    );
    assert_eq!(task(&job, "b")["shown"], "merged");
    // Claude was given the remainder as its own cap too.
    let id = job["id"].as_str().expect("id");
    let log = env.grove(&repo, &["logs", &format!("{id}/a")]).stdout;
    assert!(log.contains("[grove] claude: --max-budget-usd 0.5000"), "{log}");
    assert!(
        log.contains(" of $0.50: the agent was stopped mid-turn"),
        "grove stopped it as the stream showed it: {log}"
    );
    let a_calls: Vec<_> = server.model_requests().into_iter().filter(|r| task_of(r) == "a").collect();
    assert_eq!(a_calls.len(), 2, "no call after the one that went over");
}

/// A task whose check fails after turn 1 gets a second turn that resumes the same Claude
/// session (`--resume`, with the check's failure as the whole prompt): the server sees one
/// conversation go on, both turns are billed to the task, and it merges.
#[test]
fn a_second_turn_resumes_the_same_claude_session() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let server = ModelServer::start();
    server.respond(|req, _| {
        let t = task_of(req);
        let fix = req.text().contains("Fix it, in this workspace.");
        match (fix, req.tool_results().len()) {
            (false, 0) => Reply::write(&format!("{t}/first.txt"), "turn 1\n"),
            (true, 1) => Reply::write(&format!("{t}/second.txt"), "turn 2\n"),
            _ => Reply::text("Done."),
        }
    });
    let claude = cli("claude");
    let out = run(
        &env,
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--agent",
            "claude",
            "--agent-program",
            &claude,
            "--prompt",
            "Work",
            "--check",
            "test -e a/second.txt",
            "--max-turns",
            "2",
            "--json",
        ],
        &server.claude_env(&env.path().join("home")),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert_eq!(a["turns"], 2, "{a:#}");
    let id = job["id"].as_str().expect("id");
    let results = logged(&env, &repo, &format!("{id}/a"), "result");
    assert_eq!(results.len(), 2, "two turns");
    let session = results[0]["session_id"].as_str().expect("session id");
    assert_eq!(results[1]["session_id"], session, "turn 2 resumed turn 1's session");
    assert_eq!(a["session"], session);
    let calls = server.model_requests();
    let turn2: Vec<_> = calls.iter().filter(|r| r.text().contains("Fix it, in this workspace.")).collect();
    assert!(!turn2.is_empty(), "the feedback was the second turn's prompt");
    assert!(turn2.iter().all(|r| r.conversation() == session), "in the same session");
    assert!(turn2[0].text().contains("turn 1"), "with turn 1 in its context");
    // A resumed session's result carries the session's running total, which is the task's.
    let (first, total) = (results[0]["total_cost_usd"].as_f64(), results[1]["total_cost_usd"].as_f64());
    let (first, total) = (first.expect("cost"), total.expect("cost"));
    assert!(total > first, "{first} then {total}");
    let billed = a["usage"]["cost_usd"].as_f64().expect("task cost");
    assert!((billed - total).abs() < 1e-9, "{billed} vs {total}");
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:a/second.txt")]), "turn 2");
}

/// A claude.ai plan's usage limit (the server's 429 with the unified rate-limit headers,
/// which Claude Code turns into a `rate_limit_event` with its reset) parks the task until
/// the reset, shown in `grove status --json`; at the reset it goes again and merges.
#[test]
fn a_claude_usage_limit_parks_the_task_until_its_reset() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let server = ModelServer::start();
    let reset = now() + 4;
    server.queue(Reply::anthropic_usage_limit(reset));
    server.respond(|req, _| {
        let t = task_of(req);
        if req.tool_results().is_empty() {
            Reply::write(&format!("{t}/after.txt"), "after the reset\n")
        } else {
            Reply::text("Done.")
        }
    });
    let claude = cli("claude");
    let home = env.path().join("home");
    let mut cmd = grove_tests::command("grove");
    cmd.current_dir(&repo)
        .args([
            "run",
            "--split",
            "dirs",
            "--agent",
            "claude",
            "--agent-program",
            &claude,
            "--prompt",
            "Work",
            "--json",
        ])
        .env("HOME", &home)
        .env("GROVE_HOME", env.grove_home())
        .envs(server.claude_oauth_env(&home))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn grove");
    let until = Instant::now() + Duration::from_secs(60);
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
            && let Some(a) = ts.iter().find(|t| t["task"] == "a" && t["state"] == "parked")
        {
            parked = Some(a.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let parked = parked.expect("task a was never shown parked");
    // The reset from Claude's rate_limit_event, or a little later when Claude took longer
    // than that to start and ask.
    let until = parked["parked_until"].as_i64().expect("parked_until");
    assert!(until >= reset, "{parked:#}");
    assert!(parked["reason"].as_str().is_some_and(|r| r.contains("usage limit")), "{parked:#}");
    let out = child.wait_with_output().expect("wait grove");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert!(now() >= reset, "not before the reset");
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:a/after.txt")]), "after the reset");
}

/// An agent whose turn ends on a question (and changed nothing) ends `needs-attention` with
/// the question in `grove status`; `grove reply` resumes its session with the answer, which
/// the model sees as the next message of the same conversation, and the task merges.
#[test]
fn a_question_needs_attention_and_grove_reply_finishes_it() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let server = ModelServer::start();
    server.respond(|req, _| {
        let t = task_of(req);
        if req.text().contains("Keep it, deprecated.") {
            if req.tool_results().is_empty() {
                Reply::write(&format!("{t}/api.txt"), "kept, deprecated\n")
            } else {
                Reply::text("Kept it.")
            }
        } else {
            Reply::text("I looked at the code.\n\nShould I keep the old API or remove it?")
        }
    });
    let claude = cli("claude");
    let vars = server.claude_env(&env.path().join("home"));
    let out = run(
        &env,
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--agent",
            "claude",
            "--agent-program",
            &claude,
            "--prompt",
            "Work",
            "--json",
        ],
        &vars,
    );
    assert_eq!(out.code, 1, "not merged yet: {}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["state"], "needs-attention", "{a:#}");
    assert!(a["question"].as_str().is_some_and(|q| q.contains("keep the old API")), "{a:#}");
    let session = a["session"].as_str().expect("session").to_owned();
    let id = job["id"].as_str().expect("id").to_owned();
    let text = env.grove(&repo, &["status", &id]).stdout;
    assert!(text.contains("keep the old API"), "{text}");
    let log = env.grove(&repo, &["logs", &format!("{id}/a")]).stdout;
    assert!(log.contains("the agent asks: "), "{log}");

    let reply = run(&env, &repo, &["reply", &format!("{id}/a"), "Keep it, deprecated.", "--json"], &vars);
    assert_eq!(reply.code, 0, "{}\n{}", reply.stdout, reply.stderr);
    let job = reply.json();
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert_eq!(a["session"], session, "the same session went on");
    let answered: Vec<_> =
        server.model_requests().into_iter().filter(|r| r.text().contains("Keep it, deprecated.")).collect();
    assert!(!answered.is_empty());
    assert!(answered.iter().all(|r| r.conversation() == session));
    assert!(answered[0].text().contains("keep the old API"), "the question is in the resumed context");
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:a/api.txt")]), "kept, deprecated");
}

/// `run` args for `--agent codex` against the scripted server: its provider entry goes to
/// Codex as extra arguments.
fn codex_args(server: &ModelServer, codex: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["run", "--split", "dirs", "--agent", "codex", "--agent-program", codex, "--model", "gpt-5"]
            .map(String::from)
            .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push("--".into());
    args.extend(server.codex_provider_args());
    args
}

/// Four `--agent codex` tasks: Codex's shell tool writes in each worktree, the branches
/// merge, each task's tokens are what Codex's `turn.completed` reported, and its cost (Codex
/// reports none) is those tokens at the price table's gpt-5 price.
#[test]
fn four_codex_tasks_merge_with_their_tokens_priced() {
    let env = Env::new();
    let repo = repo(&env, &["a", "b", "c", "d"]);
    let server = ModelServer::start();
    server.respond(|req, n| {
        let t = task_of(req);
        match n {
            0 => Reply::exec(&format!("echo by codex in {t} > {t}/codex.txt")).usage(1000, 50).cache(200, 0),
            _ => Reply::text(format!("Wrote {t}/codex.txt.")).usage(1100, 20),
        }
    });
    let codex = cli("codex");
    let args = codex_args(&server, &codex, &["-j", "4", "--prompt", "Leave a note", "--json"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&env, &repo, &args, &server.codex_env(&env.path().join("home")));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let id = job["id"].as_str().expect("id").to_owned();
    let ib = job["integration_branch"].as_str().expect("branch");
    let mut sum = 0.0;
    for t in ["a", "b", "c", "d"] {
        let row = task(&job, t);
        assert_eq!(row["shown"], "merged", "{row:#}");
        assert_eq!(env.git(&repo, &["show", &format!("{ib}:{t}/codex.txt")]), format!("by codex in {t}"));
        let done = logged(&env, &repo, &format!("{id}/{t}"), "turn.completed");
        assert_eq!(done.len(), 1, "one turn");
        let cu = &done[0]["usage"];
        let u = &row["usage"];
        let cached = cu["cached_input_tokens"].as_u64().expect("cached");
        let input = cu["input_tokens"].as_u64().expect("input") - cached;
        let output = cu["output_tokens"].as_u64().expect("output");
        assert_eq!(u["input_tokens"], input, "{row:#}");
        assert_eq!(u["output_tokens"], output);
        assert_eq!(u["cache_read_tokens"], cached);
        assert_eq!(cached, 200);
        let priced = (input as f64 * 1.25 + output as f64 * 10.0 + cached as f64 * 0.125) / 1e6;
        let cost = u["cost_usd"].as_f64().expect("a cost from the price table");
        assert!((cost - priced).abs() < 1e-12, "{cost} vs {priced}");
        let threads = logged(&env, &repo, &format!("{id}/{t}"), "thread.started");
        assert_eq!(row["session"], threads[0]["thread_id"]);
        sum += cost;
    }
    let job_cost = job["usage"]["cost_usd"].as_f64().expect("job cost");
    assert!((job_cost - sum).abs() < 1e-9, "{job_cost} vs {sum}");
}

/// A Codex task whose check fails after turn 1 resumes the same thread (`codex exec resume`)
/// in turn 2 with the failure as its prompt, and merges.
#[test]
fn a_second_codex_turn_resumes_the_same_thread() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let server = ModelServer::start();
    server.respond(|req, _| {
        let fix = req.text().contains("Fix it, in this workspace.");
        match (fix, req.tool_results().len()) {
            (false, 0) => Reply::exec("echo one > a/first.txt"),
            (true, 1) => Reply::exec("echo two > a/second.txt"),
            _ => Reply::text("Done."),
        }
    });
    let codex = cli("codex");
    let args = codex_args(
        &server,
        &codex,
        &["--prompt", "Work", "--check", "test -e a/second.txt", "--max-turns", "2", "--json"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&env, &repo, &args, &server.codex_env(&env.path().join("home")));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert_eq!(a["turns"], 2);
    let id = job["id"].as_str().expect("id");
    let threads = logged(&env, &repo, &format!("{id}/a"), "thread.started");
    assert_eq!(threads.len(), 2, "one thread.started a turn");
    assert_eq!(threads[0]["thread_id"], threads[1]["thread_id"], "turn 2 resumed turn 1's thread");
    assert_eq!(a["session"], threads[0]["thread_id"]);
    let turn2: Vec<_> = server
        .model_requests()
        .into_iter()
        .filter(|r| r.text().contains("Fix it, in this workspace."))
        .collect();
    assert!(!turn2.is_empty());
    assert!(turn2[0].text().contains("echo one > a/first.txt"), "turn 1 is in the resumed context");
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:a/second.txt")]), "two");
}

/// A `grove worker` (in `--clone` mode, with a HOME of its own) for `pool` over `nats`, with
/// Claude pointed at `server`; its stderr goes to `<id>.log`.
fn claude_worker(env: &Env, server: &ModelServer, nats: &str, id: &str) -> grove_tests::Proc {
    let home = env.path().join(format!("host-{id}"));
    let log = std::fs::File::create(env.path().join(format!("{id}.log"))).expect("log");
    let mut cmd = grove_tests::command("grove");
    grove_tests::hermetic(&mut cmd)
        .args(["worker", "--nats", nats, "--pool", "local", "--clone", "--id", id])
        .env("HOME", &home)
        .env("GROVE_HOME", home.join("grove"))
        .envs(server.claude_env(&home))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    grove_tests::Proc(cmd.spawn().expect("spawn grove worker"))
}

/// A worker killed mid-turn (SIGKILL, while its Claude waits on the model): the attempt comes
/// back to another worker on another "machine" (its own HOME, so its own Claude folder), which
/// puts the saved transcript where its Claude looks and resumes the same session, with the
/// first turn in its context, and the task merges.
#[test]
fn an_attempt_killed_mid_turn_resumes_its_session_on_another_worker() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let server = ModelServer::start();
    server.respond(|req, _| {
        let t = task_of(req);
        let on_w2 = req.text().contains("host-w2/");
        let results = req.tool_results();
        let did = |f: &str| results.iter().any(|r| r.contains(f));
        if !did("first.txt") {
            Reply::write(&format!("{t}/first.txt"), "turn 1\n")
        } else if !req.text().contains("Fix it, in this workspace.") && !on_w2 {
            Reply::text("Done with turn 1.")
        } else if !on_w2 {
            // Turn 2 on the first worker: it never comes back.
            Reply::hold()
        } else if !did("second.txt") {
            Reply::write(&format!("{t}/second.txt"), "after the move\n")
        } else {
            Reply::text("Done.")
        }
    });
    let (_nats, nats) = crate::distributed::nats_server(&env.path().join("nats"));
    let w1 = claude_worker(&env, &server, &nats, "w1");
    let claude = cli("claude");
    let mut cmd = grove_tests::command("grove");
    grove_tests::hermetic(&mut cmd)
        .current_dir(&repo)
        .args([
            "run",
            "--nats",
            &nats,
            "--ack-wait",
            "3s",
            "--split",
            "dirs",
            "--agent",
            "claude",
            "--agent-program",
            &claude,
            "--prompt",
            "Work",
            "--check",
            "test -e a/second.txt",
            "--max-turns",
            "3",
            "--json",
        ])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = cmd.spawn().expect("grove run");
    assert!(server.wait_held(1, Duration::from_secs(120)), "turn 2 never reached the model");
    drop(w1);
    server.release();
    let _w2 = claude_worker(&env, &server, &nats, "w2");
    let out = run.wait_with_output().expect("grove run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(env.path().join("w2.log")).unwrap_or_default()
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    let calls = server.model_requests();
    let first = calls.iter().find(|r| !r.text().contains("host-w2/")).expect("w1's first request");
    let session = first.conversation();
    let on_w2: Vec<_> = calls.iter().filter(|r| r.text().contains("host-w2/")).collect();
    assert!(!on_w2.is_empty(), "the attempt moved to w2");
    assert!(on_w2.iter().all(|r| r.conversation() == session), "w2 resumed session {session}");
    assert!(on_w2[0].text().contains("turn 1"), "with the first turn in its context");
    assert_eq!(a["session"], session.as_str());
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:a/second.txt")]), "after the move");
}

/// The reply of a two-turn script: turn 1 writes `first.txt`; the check fails, and turn 2
/// (the resumed session, told "Fix it") writes `second.txt`.
///
/// `named`: a step is done when a tool result names its file (Gemini CLI's history holds more
/// results than the writes); else when enough results came back (OpenCode's write result does
/// not name the file).
fn two_turns(req: &Request, named: bool) -> Reply {
    let t = task_of(req);
    let results = req.tool_results();
    let did =
        |f: &str, n: usize| if named { results.iter().any(|r| r.contains(f)) } else { results.len() >= n };
    let reply = if req.text().contains("Fix it, in this workspace.") {
        if did("second.txt", 2) {
            Reply::text("Done.")
        } else {
            Reply::write(&format!("{t}/second.txt"), "turn 2\n")
        }
    } else if did("first.txt", 1) {
        Reply::text("Turn 1 done.")
    } else {
        Reply::write(&format!("{t}/first.txt"), "turn 1\n")
    };
    reply.usage(1000, 30)
}

/// `--agent gemini` (the builtin adapter, not a command line): two turns, the second resuming
/// the first's session (`--resume`, turn 1 in its context), tokens from Gemini CLI's `result`
/// stats, priced from the table.
#[test]
fn the_gemini_adapter_records_tokens_and_resumes_its_session() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let server = ModelServer::start();
    server.respond(|req, _| two_turns(req, true));
    let gemini = cli("gemini");
    let out = run(
        &env,
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--agent",
            "gemini",
            "--agent-program",
            &gemini,
            "--model",
            "gemini-2.5-pro",
            "--prompt",
            "Work",
            "--check",
            "test -e a/second.txt",
            "--max-turns",
            "2",
            "--json",
        ],
        &server.gemini_env(&env.path().join("home")),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert_eq!(a["turns"], 2, "{a:#}");
    let id = job["id"].as_str().expect("id");
    let inits = logged(&env, &repo, &format!("{id}/a"), "init");
    assert_eq!(inits.len(), 2, "two turns");
    assert_eq!(inits[1]["session_id"], inits[0]["session_id"], "turn 2 resumed turn 1's session");
    assert_eq!(a["session"], inits[0]["session_id"]);
    let results = logged(&env, &repo, &format!("{id}/a"), "result");
    let reported: u64 =
        results.iter().map(|r| r["stats"]["output_tokens"].as_u64().expect("output tokens")).sum();
    assert_eq!(a["usage"]["output_tokens"], reported, "{a:#}");
    assert!(a["usage"]["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "priced from the table: {a:#}");
    let turn2: Vec<_> = server
        .model_requests()
        .into_iter()
        .filter(|r| r.text().contains("Fix it, in this workspace."))
        .collect();
    assert!(!turn2.is_empty() && turn2[0].text().contains("turn 1"), "turn 1 is in the resumed context");
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:a/second.txt")]), "turn 2");
}

/// `--agent opencode`: two turns in one OpenCode session (`--session`), its tokens and cost
/// from its `step_finish` events.
#[test]
fn the_opencode_adapter_records_usage_and_resumes_its_session() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let server = ModelServer::start();
    server.respond(|req, _| {
        // OpenCode's helper call (a title, without tools) gets plain text.
        if req.tool_names().is_empty() { Reply::text("A title") } else { two_turns(req, false) }
    });
    let opencode = cli("opencode");
    let out = run(
        &env,
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--agent",
            "opencode",
            "--agent-program",
            &opencode,
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--prompt",
            "Work",
            "--check",
            "test -e a/second.txt",
            "--max-turns",
            "2",
            "--json",
        ],
        &server.opencode_env(&env.path().join("home")),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert_eq!(a["turns"], 2, "{a:#}");
    let session = a["session"].as_str().expect("a session").to_owned();
    assert!(session.starts_with("ses"), "OpenCode's session id: {session}");
    let id = job["id"].as_str().expect("id");
    let log = env.grove(&repo, &["logs", &format!("{id}/a")]).stdout;
    let ids: std::collections::BTreeSet<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["sessionID"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 1, "both turns in one session: {ids:?}");
    assert!(a["usage"]["output_tokens"].as_u64().is_some_and(|n| n > 0), "{a:#}");
    let turn2: Vec<_> = server
        .model_requests()
        .into_iter()
        .filter(|r| r.text().contains("Fix it, in this workspace."))
        .collect();
    assert!(!turn2.is_empty() && turn2[0].text().contains("turn 1"), "turn 1 is in the resumed context");
}

/// The calls a stand-in recorded, each as its arguments joined by spaces.
fn standin_calls(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("the stand-in's arguments");
    text.split('\x1e')
        .filter(|c| !c.is_empty())
        .map(|c| c.trim_end_matches('\x1f').replace('\x1f', " "))
        .collect()
}

fn standin(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("standins").join(name).display().to_string()
}

/// `--agent copilot` against a stand-in that prints Copilot CLI's documented JSONL (the real
/// CLI reaches only GitHub's API): the non-interactive flags, the session id from `result`,
/// `--resume=ID` on the second turn, and a cost shown as unknown (Copilot's JSON has none).
#[test]
fn the_copilot_adapter_reads_its_json_and_resumes_its_session() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let args_file = env.path().join("copilot-args");
    let vars = [("STANDIN_ARGS".to_owned(), args_file.display().to_string())];
    let out = run(
        &env,
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--agent",
            "copilot",
            "--agent-program",
            &standin("copilot"),
            "--agent-env",
            "STANDIN_ARGS",
            "--prompt",
            "Work",
            "--check",
            "test -e copilot-turn2.txt",
            "--max-turns",
            "2",
            "--json",
        ],
        &vars,
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert_eq!(a["turns"], 2, "{a:#}");
    assert_eq!(a["session"], "d60f7463-5d66-44b2-b8c4-60a0c0c36289", "{a:#}");
    assert!(a["usage"]["cost_usd"].is_null(), "Copilot reports no cost: unknown, not 0: {a:#}");
    let calls = standin_calls(&args_file);
    assert_eq!(calls.len(), 2, "{calls:?}");
    for c in &calls {
        for flag in ["--output-format json", "--allow-all-tools", "--no-ask-user", "--prompt="] {
            assert!(c.contains(flag), "{flag} in {c}");
        }
    }
    assert!(!calls[0].contains("--resume"), "{}", calls[0]);
    assert!(calls[1].contains("--resume=d60f7463-5d66-44b2-b8c4-60a0c0c36289"), "{}", calls[1]);
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:copilot-turn2.txt")]), "turn 2");
}

/// `--agent aider` against a stand-in that prints aider's documented text (aider could reach a
/// loopback server, but is not installed for CI): tokens and cost from its usage line, its
/// chat history as the session (`--restore-chat-history` on the second turn), and no commits
/// of its own (`--no-auto-commits`: grove commits).
#[test]
fn the_aider_adapter_reads_its_usage_line_and_restores_its_history() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let args_file = env.path().join("aider-args");
    let vars = [("STANDIN_ARGS".to_owned(), args_file.display().to_string())];
    let out = run(
        &env,
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--agent",
            "aider",
            "--agent-program",
            &standin("aider"),
            "--agent-env",
            "STANDIN_ARGS",
            "--prompt",
            "Work",
            "--check",
            "test -e aider-turn2.txt",
            "--max-turns",
            "2",
            "--json",
        ],
        &vars,
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert_eq!(a["turns"], 2, "{a:#}");
    let u = &a["usage"];
    let cost = u["cost_usd"].as_f64().expect("aider's Cost: line");
    assert!((cost - 0.0246).abs() < 1e-9, "two turns of $0.0123: {a:#}");
    assert_eq!(u["output_tokens"], 700, "350 received, twice: {a:#}");
    let calls = standin_calls(&args_file);
    assert_eq!(calls.len(), 2, "{calls:?}");
    for c in &calls {
        for flag in ["--message=", "--yes-always", "--no-auto-commits", "--chat-history-file="] {
            assert!(c.contains(flag), "{flag} in {c}");
        }
    }
    assert!(!calls[0].contains("--restore-chat-history"));
    assert!(calls[1].contains("--restore-chat-history"), "{}", calls[1]);
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:aider-turn2.txt")]), "turn 2");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:aider-turn1.txt")]), "turn 1");
}

/// A Codex task over its token budget: Codex reports usage when its turn completes, so grove
/// stops it there (before another turn), commits what it wrote and fails it with the budget's
/// reason; the other task merges.
#[test]
fn a_codex_task_over_its_token_budget_fails_with_its_work_committed() {
    let env = Env::new();
    let repo = repo(&env, &["a", "b"]);
    let server = ModelServer::start();
    server.respond(|req, n| {
        let t = task_of(req);
        match (t.as_str(), n) {
            (_, 0) => Reply::exec(&format!("echo first call > {t}/partial.txt")).usage(100, 10),
            ("a", _) => Reply::text("Done.").usage(2_000_000, 10),
            _ => Reply::text("Done.").usage(100, 10),
        }
    });
    let codex = cli("codex");
    let args = codex_args(
        &server,
        &codex,
        &[
            "-j",
            "2",
            "--prompt",
            "Work",
            "--max-task-tokens",
            "100000",
            "--check",
            "false",
            "--max-turns",
            "3",
            "--json",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&env, &repo, &args, &server.codex_env(&env.path().join("home")));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["state"], "failed", "{a:#}");
    assert_eq!(a["turns"], 1, "no turn after the budget was spent: {a:#}");
    assert!(a["reason"].as_str().is_some_and(|r| r.starts_with("budget: ")), "{a:#}");
    let branch = a["branch"].as_str().expect("branch");
    assert_eq!(
        env.git(&repo, &["show", &format!("{branch}:a/partial.txt")]),
        "first call",
        "its work is committed"
    );
    let b = task(&job, "b");
    assert_eq!(b["state"], "failed", "b's check fails every turn: {b:#}");
    assert_eq!(b["turns"], 3, "b was not stopped by a's budget: {b:#}");
}

/// A ChatGPT plan's usage limit as Codex reports it (the server's 429 `usage_limit_reached`
/// with its reset) parks the task until the reset; then it goes again and merges.
#[test]
fn a_codex_usage_limit_parks_the_task_until_its_reset() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let server = ModelServer::start();
    let reset = now() + 4;
    server.queue(Reply::openai_usage_limit(reset));
    server.respond(|req, _| {
        let t = task_of(req);
        if req.tool_results().is_empty() {
            Reply::exec(&format!("echo after the reset > {t}/after.txt"))
        } else {
            Reply::text("Done.")
        }
    });
    let codex = cli("codex");
    let args = codex_args(&server, &codex, &["--prompt", "Work", "--json"]);
    let out = run(
        &env,
        &repo,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &server.codex_env(&env.path().join("home")),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert_eq!(a["parks"], 1, "parked once: {a:#}");
    assert!(now() >= reset, "not before the reset");
    let id = job["id"].as_str().expect("id");
    let log = env.grove(&repo, &["logs", &format!("{id}/a")]).stdout;
    assert!(log.to_lowercase().contains("usage limit"), "{log}");
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:a/after.txt")]), "after the reset");
}

/// A Codex turn that ends on a question ends `needs-attention`; `grove reply` resumes the
/// thread (`exec resume`) with the answer, and the task merges.
#[test]
fn a_codex_question_needs_attention_and_grove_reply_finishes_it() {
    let env = Env::new();
    let repo = repo(&env, &["a"]);
    let server = ModelServer::start();
    server.respond(|req, _| {
        let t = task_of(req);
        if req.text().contains("Keep it, deprecated.") {
            if req.tool_results().is_empty() {
                Reply::exec(&format!("echo kept, deprecated > {t}/api.txt"))
            } else {
                Reply::text("Kept it.")
            }
        } else {
            Reply::text("I looked at the code.\n\nShould I keep the old API or remove it?")
        }
    });
    let codex = cli("codex");
    let vars = server.codex_env(&env.path().join("home"));
    let args = codex_args(&server, &codex, &["--prompt", "Work", "--json"]);
    let out = run(&env, &repo, &args.iter().map(String::as_str).collect::<Vec<_>>(), &vars);
    assert_eq!(out.code, 1, "not merged yet: {}\n{}", out.stdout, out.stderr);
    let job = out.json();
    let a = task(&job, "a");
    assert_eq!(a["state"], "needs-attention", "{a:#}");
    assert!(a["question"].as_str().is_some_and(|q| q.contains("keep the old API")), "{a:#}");
    let thread = a["session"].as_str().expect("thread").to_owned();
    let id = job["id"].as_str().expect("id").to_owned();
    let reply = run(&env, &repo, &["reply", &format!("{id}/a"), "Keep it, deprecated.", "--json"], &vars);
    assert_eq!(reply.code, 0, "{}\n{}", reply.stdout, reply.stderr);
    let job = reply.json();
    let a = task(&job, "a");
    assert_eq!(a["shown"], "merged", "{a:#}");
    assert_eq!(a["session"], thread, "the same thread went on");
    let answered: Vec<_> =
        server.model_requests().into_iter().filter(|r| r.text().contains("Keep it, deprecated.")).collect();
    assert!(
        !answered.is_empty() && answered[0].text().contains("keep the old API"),
        "the question is in the resumed context"
    );
    let ib = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{ib}:a/api.txt")]), "kept, deprecated");
}
