//! Hand-off both ways (`grove handoff`, `grove pull`) with the real Claude Code CLI against
//! the scripted model server: a coordinator daemon on a real nats-server, and a `cloud` worker
//! in `--clone` mode with a home of its own (it reaches the repository only through the
//! coordinator's mirror, as a pod does).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use grove_tests::Proc;
use grove_tests::model_server::{ModelServer, Reply, Request};

use crate::distributed::{free_port, nats_server, wait_port};
use crate::harness::{Env, Run};

const TOKEN: &str = "TOKEN=hunter2-handoff";

fn cli(name: &str) -> String {
    grove_tests::agent_cli(name).to_str().expect("utf-8 path").to_owned()
}

/// The person's laptop: its own HOME (and Claude's folder in it).
fn laptop(env: &Env) -> PathBuf {
    env.path().join("laptop")
}

/// `grove args` in `cwd` as the person on the laptop, with Claude pointed at `server`.
fn grove_here(env: &Env, server: &ModelServer, cwd: &Path, args: &[&str]) -> Run {
    let mut vars = server.claude_env(&laptop(env));
    vars.push(("HOME".into(), laptop(env).display().to_string()));
    vars.push(("GROVE_HOME".into(), env.path().join("laptop-grove").display().to_string()));
    env.grove_with(cwd, args, &vars)
}

/// The person's repository, settled, then with work in progress: a modified tracked file, a
/// staged change, an untracked file and an ignored `.env`.
fn work_in_progress(env: &Env) -> PathBuf {
    let files = [
        ("a.txt".to_owned(), "a\n".to_owned()),
        ("b.txt".to_owned(), "b\n".to_owned()),
        (".gitignore".to_owned(), ".env\n*.log\n".to_owned()),
    ];
    let repo = env.repo("laptop-repo", &files);
    std::fs::write(repo.join("a.txt"), "a, edited\n").expect("write");
    std::fs::write(repo.join("b.txt"), "b, staged\n").expect("write");
    env.git(&repo, &["add", "b.txt"]);
    std::fs::write(repo.join("new.txt"), "untracked\n").expect("write");
    std::fs::write(repo.join(".env"), format!("{TOKEN}\n")).expect("write");
    repo
}

/// Everything of the repository a hand-off must leave as it was: the status, the index's
/// bytes, the stash, the refs (but grove's own `refs/heads/grove/<job>/`, which `grove pull`
/// makes), HEAD and every file of the working tree.
fn state(env: &Env, repo: &Path) -> String {
    let mut out =
        env.git(repo, &["status", "--porcelain=v2", "--branch", "--untracked-files=all", "--ignored"]);
    out.push_str(&format!("\nindex {:?}", std::fs::read(repo.join(".git/index")).expect("index")));
    out.push_str(&format!("\nstash {}", env.git(repo, &["stash", "list"])));
    out.push_str(&format!("\nHEAD {}", std::fs::read_to_string(repo.join(".git/HEAD")).expect("HEAD")));
    let refs = env.git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"]);
    let refs: Vec<&str> = refs.lines().filter(|r| !r.starts_with("refs/heads/grove/")).collect();
    out.push_str(&format!("\nrefs {refs:?}"));
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        out.push_str(&format!("\n{} {:?}", f.display(), std::fs::read(&f).expect("read")));
    }
    out
}

/// No commit reachable from any ref of `repo` has a `.env`.
fn no_env_committed(env: &Env, repo: &Path) {
    for c in env.git(repo, &["rev-list", "--all"]).lines() {
        let tree = env.git(repo, &["ls-tree", "-r", "--name-only", c]);
        assert!(
            !tree.lines().any(|p| p.rsplit('/').next() == Some(".env")),
            "{c} in {} has a .env",
            repo.display()
        );
    }
}

/// A `grove status --json` of `job` on the coordinator at `api`.
fn job_status(env: &Env, api: &str, job: &str) -> serde_json::Value {
    let s = env.grove(env.path(), &["status", "--coordinator", api, "--json", job]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    s.json()
}

/// Wait for the task to reach `state` at attempt `attempt`.
fn until_state(env: &Env, api: &str, job: &str, attempt: u64, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = job_status(env, api, job);
        let t = &j["tasks"][0];
        if t["attempt"] == attempt && t["state"] == state {
            return j;
        }
        assert!(
            !(t["attempt"] == attempt && (t["state"] == "failed" || t["state"] == "needs-attention")),
            "the task ended {}: {j:#}",
            t["state"]
        );
        assert!(
            Instant::now() < deadline,
            "not {state} at attempt {attempt}: {:#}\n{}",
            j["tasks"][0],
            env.grove(env.path(), &["logs", &format!("{job}/all"), "--coordinator", api]).stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A request of the pod's Claude: its workspace is under the pod's home (a resumed
/// conversation also carries the laptop's earlier working directory, so look for the pod's).
fn is_remote(req: &Request) -> bool {
    req.text().contains("/pod/grove/worktrees/")
}

/// Laptop → cloud → laptop → cloud, with Claude Code's own session all the way.
#[test]
fn work_in_progress_goes_to_the_cloud_and_back_with_its_claude_session() {
    let env = Env::new();
    let repo = work_in_progress(&env);
    let pulled = env.path().join("pulled");
    let server = ModelServer::start();
    server.respond(move |req, _| {
        if !is_remote(req) {
            // On the laptop: the person's own session, then a resumed one in the pulled folder.
            return Reply::text("Noted: the code word is PLUM.");
        }
        let results = req.tool_results();
        let did = |f: &str| results.iter().any(|r| r.contains(f));
        if req.text().contains("second round") {
            if did("round2.txt") { Reply::text("Done.") } else { Reply::write("round2.txt", "round two\n") }
        } else if did("remote.txt") {
            Reply::text("Done.")
        } else if !did(TOKEN) {
            Reply::read(".env")
        } else {
            Reply::write("remote.txt", "by the remote\n")
        }
    });

    // The person's Claude Code session in this folder, by the real CLI.
    let claude = cli("claude");
    let mut c = std::process::Command::new(&claude);
    grove_tests::hermetic(&mut c)
        .current_dir(&repo)
        .args(["-p", "Remember the code word.", "--output-format", "json"])
        .env("HOME", laptop(&env))
        .envs(server.claude_env(&laptop(&env)))
        .stdin(Stdio::null());
    let out = c.output().expect("claude");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("claude's json");
    let session = result["session_id"].as_str().expect("session id").to_owned();

    let (_nats, _coord, _worker, api) = fleet(&env, &server.claude_env(&env.path().join("pod")));
    let logs = env.path().join("logs");

    // Laptop → cloud.
    let before = state(&env, &repo);
    let h = grove_here(
        &env,
        &server,
        &repo,
        &[
            "handoff",
            "--coordinator",
            &api,
            "--agent-program",
            &claude,
            "--prompt",
            "finish it",
            "--include-ignored",
            ".env",
            "--json",
        ],
    );
    assert_eq!(
        h.code,
        0,
        "{}\n{}",
        h.stderr,
        std::fs::read_to_string(logs.join("coordinator.log")).unwrap_or_default()
    );
    let handed = h.json();
    assert_eq!(handed["session"], session.as_str(), "{handed:#}");
    assert_eq!(handed["ignored_files"], 1);
    assert_eq!(state(&env, &repo), before, "the repository is byte-identical after the hand-off");
    let job = handed["job"].as_str().expect("job").to_owned();
    let task = handed["task"].as_str().expect("task").to_owned();
    let name = format!("{job}/{task}");
    let done = until_state(&env, &api, &job, 1, "succeeded");
    let t = &done["tasks"][0];
    assert_eq!(t["session"], session.as_str(), "the remote attempt went on in the laptop's session: {t:#}");

    let remote: Vec<Request> = server.model_requests().into_iter().filter(is_remote).collect();
    assert!(
        !remote.is_empty(),
        "no request from the pod: {:?}\n{}",
        server.model_requests().iter().map(|r| r.workdir()).collect::<Vec<_>>(),
        std::fs::read_to_string(logs.join("worker.log")).unwrap_or_default()
            + &env.grove(env.path(), &["logs", &name, "--coordinator", &api]).stdout
    );
    assert!(remote.iter().all(|r| r.conversation() == session), "the pod resumed session {session}");
    assert!(remote[0].text().contains("PLUM"), "the laptop's turn is in the resumed context");
    assert!(remote[0].text().contains("finish it"), "the hand-off's prompt");
    assert!(
        remote.iter().any(|r| r.tool_results().iter().any(|x| x.contains(TOKEN))),
        "the pod's agent read the carried .env"
    );
    no_env_committed(&env, &repo);
    let mirror = std::fs::read_dir(env.grove_home().join("mirrors"))
        .expect("mirrors")
        .flatten()
        .next()
        .expect("a mirror");
    no_env_committed(&env, &mirror.path());

    // Cloud → laptop.
    let p = grove_here(
        &env,
        &server,
        &repo,
        &["pull", &name, "--coordinator", &api, "--into", pulled.to_str().expect("utf-8"), "--json"],
    );
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert_eq!(state(&env, &repo), before.clone(), "pulling leaves the checked-out worktree alone");
    let pj = p.json();
    assert_eq!(pj["resume"], format!("claude --resume {session}"), "{pj:#}");
    for (f, want) in [
        ("remote.txt", "by the remote\n"),
        ("a.txt", "a, edited\n"),
        ("b.txt", "b, staged\n"),
        ("new.txt", "untracked\n"),
        (".env", &format!("{TOKEN}\n")),
    ] {
        assert_eq!(
            std::fs::read_to_string(pulled.join(f)).unwrap_or_default(),
            want,
            "{f} in the pulled worktree"
        );
    }
    let slug: String = pulled
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let transcript = laptop(&env).join(".claude/projects").join(slug).join(format!("{session}.jsonl"));
    assert!(transcript.is_file(), "the session is where claude looks from {}", pulled.display());
    let mut c = std::process::Command::new(&claude);
    grove_tests::hermetic(&mut c)
        .current_dir(&pulled)
        .args(["-p", "What was the code word?", "--resume", &session, "--output-format", "json"])
        .env("HOME", laptop(&env))
        .envs(server.claude_env(&laptop(&env)))
        .stdin(Stdio::null());
    let out = c.output().expect("claude --resume");
    assert!(
        out.status.success(),
        "claude --resume in the pulled worktree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(resumed["session_id"], session.as_str(), "claude found the session there");

    // Laptop → cloud again, from the pulled worktree: the next attempt on the same branch.
    std::fs::write(pulled.join("local.txt"), "made on the laptop\n").expect("write");
    let b = grove_here(
        &env,
        &server,
        &pulled,
        &["handoff", "--coordinator", &api, "--prompt", "second round", "--json"],
    );
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert_eq!(b.json()["handed_back"], true);
    let done = until_state(&env, &api, &job, 2, "succeeded");
    let t = &done["tasks"][0];
    assert_eq!(t["session"], session.as_str(), "{t:#}");
    let ways: Vec<&str> =
        t["handoffs"].as_array().expect("handoffs").iter().filter_map(|h| h["way"].as_str()).collect();
    assert_eq!(ways, ["handoff", "pull", "handoff"], "{t:#}");
    let into2 = env.path().join("pulled-2");
    let args = ["pull", name.as_str(), "--coordinator", &api, "--into", into2.to_str().expect("utf-8")];
    let busy = grove_here(&env, &server, &repo, &args);
    assert_ne!(busy.code, 0);
    assert!(
        busy.stderr.contains("is checked out in"),
        "the first pull's worktree has the branch: {}",
        busy.stderr
    );
    env.git(&repo, &["worktree", "remove", "--force", pulled.to_str().expect("utf-8")]);
    let again = grove_here(&env, &server, &repo, &args);
    assert_eq!(again.code, 0, "{}", again.stderr);
    for f in ["remote.txt", "local.txt", "round2.txt"] {
        assert!(env.path().join("pulled-2").join(f).is_file(), "{f} after the second round");
    }
    assert_eq!(state(&env, &repo), before, "the repository is byte-identical at the end");
    no_env_committed(&env, &repo);
    no_env_committed(&env, &mirror.path());
}

/// Each refusal says what is wrong, and nothing is made: no job, no commit, no change.
#[test]
fn handoff_refusals_create_nothing() {
    let env = Env::new();
    let repo = work_in_progress(&env);
    let server = ModelServer::start();
    let (_nats, _coord, _worker, api) = fleet(&env, &[]);
    let objects = |repo: &Path| env.git(repo, &["count-objects", "-v"]);

    std::fs::write(repo.join("big.bin"), vec![1u8; 200_000]).expect("write");
    let before = (state(&env, &repo), objects(&repo));
    let big = grove_here(
        &env,
        &server,
        &repo,
        &["handoff", "--coordinator", &api, "--no-session", "--max-size", "100000"],
    );
    assert_ne!(big.code, 0);
    assert!(
        big.stderr.contains("too large") && big.stderr.contains("big.bin (200000 bytes)"),
        "{}",
        big.stderr
    );
    assert_eq!((state(&env, &repo), objects(&repo)), before, "nothing was hashed or changed");
    std::fs::remove_file(repo.join("big.bin")).expect("rm");

    let before = (state(&env, &repo), objects(&repo));
    let glob = grove_here(
        &env,
        &server,
        &repo,
        &["handoff", "--coordinator", &api, "--no-session", "--include-ignored", ".e*"],
    );
    assert_ne!(glob.code, 0);
    assert!(
        glob.stderr.contains(".env looks like secrets")
            || glob.stderr.contains(".env looks like a secret")
            || glob.stderr.contains(".env looks"),
        "{}",
        glob.stderr
    );
    assert!(glob.stderr.contains("--include-ignored .env"), "{}", glob.stderr);
    assert_eq!((state(&env, &repo), objects(&repo)), before);

    // A merge under way, made by git itself.
    let other = env.repo("merging", &[("f.txt".to_owned(), "base\n".to_owned())]);
    env.git(&other, &["checkout", "-q", "-b", "side"]);
    std::fs::write(other.join("f.txt"), "side\n").expect("write");
    env.git(&other, &["commit", "-qam", "side"]);
    env.git(&other, &["checkout", "-q", "main"]);
    std::fs::write(other.join("f.txt"), "main\n").expect("write");
    env.git(&other, &["commit", "-qam", "main"]);
    let mut m = std::process::Command::new("git");
    grove_tests::hermetic(&mut m)
        .current_dir(&other)
        .args(["merge", "-q", "side"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid");
    let merged = m.output().expect("git merge");
    assert!(!merged.status.success(), "the merge conflicts");
    assert!(other.join(".git/MERGE_HEAD").exists(), "{}", String::from_utf8_lossy(&merged.stderr));
    let before = (state(&env, &other), objects(&other));
    let mid = grove_here(&env, &server, &other, &["handoff", "--coordinator", &api, "--no-session"]);
    assert_ne!(mid.code, 0, "{}", mid.stderr);
    assert!(mid.stderr.contains("in the middle of a merge"), "{}", mid.stderr);
    assert_eq!((state(&env, &other), objects(&other)), before);

    let jobs = env.grove(env.path(), &["status", "--coordinator", &api, "--json"]);
    assert_eq!(jobs.code, 0, "{}", jobs.stderr);
    assert_eq!(jobs.json().as_array().map(Vec::len), Some(0), "no job was made: {}", jobs.stdout);
}

/// A coordinator daemon and a `cloud` worker that clones, for the tests below; its logs go to
/// `logs/`.
fn fleet(env: &Env, worker_env: &[(String, String)]) -> (Proc, Proc, Proc, String) {
    let (nats, url) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let log = |n: &str| Stdio::from(std::fs::File::create(logs.join(n)).expect("log"));
    let mut cmd = grove_tests::command("grove");
    grove_tests::hermetic(&mut cmd)
        .args(["coordinator", "--nats", &url, "--listen", &format!("127.0.0.1:{port}")])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .stdout(Stdio::null())
        .stderr(log("coordinator.log"));
    let coord = Proc(cmd.spawn().expect("coordinator"));
    wait_port(port);
    let pod = env.path().join("pod");
    let mut cmd = grove_tests::command("grove");
    grove_tests::hermetic(&mut cmd)
        .args(["worker", "--nats", &url, "--pool", "cloud", "--clone", "--id", "pod-1", "--ack-wait", "5s"])
        .env("HOME", &pod)
        .env("GROVE_HOME", pod.join("grove"))
        .envs(worker_env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(log("worker.log"));
    let worker = Proc(cmd.spawn().expect("worker"));
    (nats, coord, worker, format!("http://127.0.0.1:{port}"))
}

fn until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 90 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `grove handoff --job` adds the work in progress to a running job as one more task, merged
/// after the others; `grove pull --stop` ends that task's running attempt, then brings it here
/// at its last checkpoint.
#[test]
fn a_handoff_joins_a_running_job_and_pull_stop_ends_its_attempt() {
    let env = Env::new();
    let (_n, _c, _w, api) = fleet(&env, &[]);
    let repo = work_in_progress(&env);
    let (gate, started) = (env.path().join("gate"), env.path().join("started"));
    std::fs::create_dir_all(&started).expect("mkdir");
    // Each task says it started, then waits for the gate.
    let script = format!(
        r#"touch {s}/$GROVE_TASK; while [ ! -e {g} ]; do sleep 0.05; done; echo "by $GROVE_TASK" > "$GROVE_TASK.out""#,
        s = started.display(),
        g = gate.display()
    );
    let mut run = grove_tests::command("grove");
    grove_tests::hermetic(&mut run)
        .current_dir(&repo)
        .args([
            "run",
            "--coordinator",
            &api,
            "--pool",
            "cloud",
            "--split",
            "single",
            "--detach",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.path().join("laptop-grove"));
    let out = run.output().expect("grove run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let job = job["id"].as_str().expect("id").to_owned();
    until("the job's task starts", || started.join("all").exists().then_some(()));

    let before = state(&env, &repo);
    let server = ModelServer::start();
    let h = grove_here(
        &env,
        &server,
        &repo,
        &["handoff", "--coordinator", &api, "--job", &job, "--no-session", "--json"],
    );
    assert_eq!(h.code, 0, "{}", h.stderr);
    assert_eq!(h.json()["task"], "handoff");
    assert_eq!(state(&env, &repo), before);
    until("the handed-off task starts", || started.join("handoff").exists().then_some(()));
    let st = job_status(&env, &api, &job);
    let t = crate::harness::task(&st, "handoff");
    assert_eq!(t["state"], "running", "{st:#}");
    assert_eq!(t["order"], 1, "after the job's own task");

    let into = env.path().join("pulled");
    let p = grove_here(
        &env,
        &server,
        &repo,
        &[
            "pull",
            &format!("{job}/handoff"),
            "--stop",
            "--coordinator",
            &api,
            "--into",
            into.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(p.code, 0, "{}", p.stderr);
    let st = job_status(&env, &api, &job);
    let t = crate::harness::task(&st, "handoff");
    assert_eq!(t["state"], "cancelled", "--stop ended the attempt: {t:#}");
    assert!(t["where"].as_str().is_some_and(|w| w.starts_with("pulled into")), "{t:#}");
    for (f, want) in [("a.txt", "a, edited\n"), ("b.txt", "b, staged\n"), ("new.txt", "untracked\n")] {
        assert_eq!(std::fs::read_to_string(into.join(f)).unwrap_or_default(), want, "{f}");
    }
    assert!(!into.join(".env").exists(), "nothing ignored was listed, nothing ignored travelled");

    std::fs::write(&gate, "").expect("open the gate");
    let st = until("the job's own task merges", || {
        let st = job_status(&env, &api, &job);
        (crate::harness::task(&st, "all")["shown"] == "merged").then_some(st)
    });
    assert_eq!(crate::harness::task(&st, "handoff")["state"], "cancelled");
    assert_eq!(state(&env, &repo), before, "byte-identical at the end");
}

/// A Codex session goes too: the newest rollout of the folder is found, carried, and
/// `codex exec resume` on the pod goes on in the same thread, with the laptop's turn in its
/// context.
#[test]
fn a_codex_session_is_handed_off_and_resumed_on_the_pod() {
    let env = Env::new();
    let repo = work_in_progress(&env);
    let server = ModelServer::start();
    server.respond(|req, _| {
        if !is_remote(req) {
            return Reply::text("Noted: the code word is PLUM.");
        }
        if req.tool_results().is_empty() {
            Reply::exec("wc -c < .env > seen.txt")
        } else {
            Reply::text("Done.")
        }
    });
    let pod = env.path().join("pod");
    let mut pod_env = server.codex_env(&pod);
    // The pod's Codex knows the scripted server as its provider from its own config.
    let provider = format!(
        "model_provider = \"mock\"\n[model_providers.mock]\nname = \"mock\"\nbase_url = \"{}\"\nwire_api = \"responses\"\nenv_key = \"OPENAI_API_KEY\"\nrequest_max_retries = 0\nstream_max_retries = 0\n",
        server.openai_url()
    );
    std::fs::write(pod.join(".codex/config.toml"), &provider).expect("pod config");
    pod_env.push(("NO_COLOR".into(), "1".into()));
    let (_n, _c, _w, api) = fleet(&env, &pod_env);

    let codex = cli("codex");
    let laptop_env = server.codex_env(&laptop(&env));
    std::fs::write(laptop(&env).join(".codex/config.toml"), &provider).expect("laptop config");
    let mut c = std::process::Command::new(&codex);
    grove_tests::hermetic(&mut c)
        .current_dir(&repo)
        .args(["exec", "--json", "--skip-git-repo-check", "-m", "gpt-5", "Remember the code word."])
        .env("HOME", laptop(&env))
        .envs(laptop_env.iter().cloned())
        .stdin(Stdio::null());
    let out = c.output().expect("codex");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let thread = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "thread.started")
        .and_then(|v| v["thread_id"].as_str().map(str::to_owned))
        .expect("codex printed its thread");

    let mut vars = laptop_env.clone();
    vars.push(("HOME".into(), laptop(&env).display().to_string()));
    vars.push(("GROVE_HOME".into(), env.path().join("laptop-grove").display().to_string()));
    let h = env.grove_with(
        &repo,
        &[
            "handoff",
            "--coordinator",
            &api,
            "--agent",
            "codex",
            "--agent-program",
            &codex,
            "--model",
            "gpt-5",
            "--prompt",
            "finish it",
            "--include-ignored",
            ".env",
            "--json",
        ],
        &vars,
    );
    assert_eq!(h.code, 0, "{}", h.stderr);
    let handed = h.json();
    assert_eq!(handed["session"], thread.as_str(), "the folder's newest Codex thread: {handed:#}");
    let job = handed["job"].as_str().expect("job").to_owned();
    let done = until_state(&env, &api, &job, 1, "succeeded");
    assert_eq!(done["tasks"][0]["session"], thread.as_str(), "{done:#}");
    let remote: Vec<Request> = server.model_requests().into_iter().filter(is_remote).collect();
    assert!(!remote.is_empty(), "no request from the pod");
    assert!(remote[0].text().contains("PLUM"), "the laptop's turn is in the resumed thread");
    assert!(remote[0].text().contains("finish it"));
    let into = env.path().join("pulled");
    let p = env.grove_with(
        &repo,
        &[
            "pull",
            &format!("{job}/all"),
            "--coordinator",
            &api,
            "--into",
            into.to_str().expect("utf-8"),
            "--json",
        ],
        &vars,
    );
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert_eq!(p.json()["resume"], format!("codex resume {thread}"));
    let seen = std::fs::read_to_string(into.join("seen.txt")).unwrap_or_default();
    assert_eq!(seen.trim(), (TOKEN.len() + 1).to_string(), "the pod's shell read the carried .env");
}
