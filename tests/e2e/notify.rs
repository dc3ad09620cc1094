//! Notifications, end to end: a webhook and an ntfy server (one tiny HTTP server on a loopback
//! port, in the test) and a command sink get one event per state change (a task failed, a
//! task needs attention, the job finished), again not when the job is run again; a sink that
//! refuses connections changes nothing of the job or its exit code; bad sinks are refused
//! before the job starts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Env, task};

/// One request the server got.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// An HTTP server on a free loopback port that answers 200 to every POST and keeps what it
/// got; it runs until the test process ends.
struct Server {
    port: u16,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Some(req) = serve(conn) {
                    keep.lock().expect("lock").push(req);
                }
            }
        });
        Server { port, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What came to `path`, in order.
    fn at(&self, path: &str) -> Vec<Request> {
        self.got.lock().expect("lock").iter().filter(|r| r.path == path).cloned().collect()
    }
}

/// Read one request from `conn` and answer it (one request per connection).
fn serve(conn: TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut conn = conn;
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").ok()?;
    Some(Request { path, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// Poll `probe` until it gives a value (at most `within`, then fail saying `what`).
fn until<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JSON lines of `file` (the command sink's), none while it does not exist.
fn lines(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `(event, task)` of each event, sorted: what was sent, whatever the order.
fn kinds(events: &[Value]) -> Vec<(String, String)> {
    let mut k: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (e["event"].as_str().unwrap_or("?").to_owned(), e["task"].as_str().unwrap_or("-").to_owned())
        })
        .collect();
    k.sort();
    k
}

/// A repository with `a/`, `b/`, `c/` and a top-level `shared.txt`.
fn three_dirs(env: &Env) -> PathBuf {
    let mut files: Vec<(String, String)> =
        ["a", "b", "c"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    files.push(("shared.txt".into(), "shared\n".into()));
    env.repo("r", &files)
}

/// `c` fails; `a` and `b` both append to `shared.txt`, so `b` conflicts with `a`'s merge
/// (set aside under `--on-conflict attention`); `a` merges.
const SCRIPT: &str = r#"case "$GROVE_TASK" in
  c) echo "c gives up" >&2; exit 3 ;;
  *) echo "$GROVE_TASK" >> shared.txt; echo "$GROVE_TASK" >> "$GROVE_TASK/f.txt" ;;
esac"#;

/// One task fails, one needs attention (a merge conflict), one merges: the webhook, the ntfy
/// topic and the command each get exactly one event per state change and one job-finished
/// event with the counts; `grove run --job` on the ended job sends nothing again.
#[test]
fn each_state_change_reaches_every_sink_once() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let server = Server::start();
    let file = env.path().join("events.jsonl");
    let command = format!("sh -c 'cat >> {}'", file.display());
    let (hook, ntfy_server) = (server.url("/hook"), server.url(""));
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--on-conflict",
            "attention",
            "--notify-webhook",
            &hook,
            "--notify-ntfy",
            "grove-test",
            "--notify-ntfy-server",
            &ntfy_server,
            "--notify-command",
            &command,
            "--json",
            "--",
            "sh",
            "-c",
            SCRIPT,
        ],
    );
    // What it would be without notifications: not everything merged.
    assert_eq!(run.code, 1, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    let id = job["id"].as_str().expect("id").to_owned();
    assert_eq!(task(&job, "a")["shown"], "merged", "{job:#}");
    assert_eq!(task(&job, "b")["state"], "needs-attention", "{job:#}");
    assert_eq!(task(&job, "c")["state"], "failed", "{job:#}");

    let expected = vec![
        ("job-finished".to_owned(), "-".to_owned()),
        ("task-failed".to_owned(), "c".to_owned()),
        ("task-needs-attention".to_owned(), "b".to_owned()),
    ];
    let hooks = until(Duration::from_secs(30), "three webhook events", || {
        let got = server.at("/hook");
        (got.len() >= 3).then_some(got)
    });
    let events: Vec<Value> = hooks.iter().map(Request::json).collect();
    assert_eq!(kinds(&events), expected, "{events:#?}");
    for (r, e) in hooks.iter().zip(&events) {
        assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
        assert_eq!(e["job"], id.as_str());
        let text = e["text"].as_str().expect("text");
        assert!(text.starts_with("grove: ") && !text.contains('\n'), "{e:#}");
        assert_eq!(e["content"], e["text"], "Discord's content is Slack's text: {e:#}");
    }
    let by = |name: &str| events.iter().find(|e| e["event"] == name).expect(name);
    let failed = by("task-failed");
    assert_eq!(failed["attempt"], 1);
    assert_eq!(failed["state"], "failed");
    assert!(failed["reason"].as_str().is_some_and(|r| !r.is_empty()), "{failed:#}");
    let attention = by("task-needs-attention");
    assert_eq!(attention["cause"], "conflict", "{attention:#}");
    assert_eq!(attention["conflict_paths"], serde_json::json!(["shared.txt"]), "{attention:#}");
    assert!(attention["text"].as_str().expect("text").contains("shared.txt"), "{attention:#}");
    let finished = by("job-finished");
    assert_eq!(finished["state"], "done", "{finished:#}");
    assert_eq!(finished["tasks"], 3);
    assert_eq!(finished["merged"], 1);
    assert_eq!(
        finished["states"],
        serde_json::json!({"merged": 1, "failed": 1, "needs-attention": 1}),
        "{finished:#}"
    );
    assert_eq!(finished["integration_branch"], job["integration_branch"]);

    // ntfy: the summary as text to <server>/<topic>, with a title.
    let ntfy = until(Duration::from_secs(30), "three ntfy posts", || {
        let got = server.at("/grove-test");
        (got.len() >= 3).then_some(got)
    });
    let mut texts: Vec<&str> = ntfy.iter().map(|r| r.body.as_str()).collect();
    let mut want: Vec<&str> = events.iter().map(|e| e["text"].as_str().expect("text")).collect();
    texts.sort();
    want.sort();
    assert_eq!(texts, want);
    for r in &ntfy {
        assert!(r.header("title").is_some_and(|t| t.starts_with("grove: ")), "{r:?}");
    }

    // The command: the same events, one JSON object each on its stdin.
    let sent = until(Duration::from_secs(30), "three events through the command", || {
        let l = lines(&file);
        (l.len() >= 3).then_some(l)
    });
    assert_eq!(kinds(&sent), expected, "{sent:#?}");
    assert_eq!(sent.iter().find(|e| e["event"] == "job-finished"), Some(finished));

    // The ended job run again: it ends the same way, and nobody hears of it twice.
    let again = env.grove(&repo, &["run", "--job", &id, "--json"]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert_eq!(server.at("/hook").len(), 3, "{:#?}", server.at("/hook"));
    assert_eq!(server.at("/grove-test").len(), 3);
    assert_eq!(lines(&file).len(), 3);
    // A person's retry is a new state change: its failure is heard.
    let retry = env.grove(&repo, &["run", "--job", &id, "--only", "c", "--json"]);
    assert_eq!(retry.code, 1, "{}", retry.stderr);
    let after = until(Duration::from_secs(30), "the retry's failure and end", || {
        let l = lines(&file);
        (l.len() >= 5).then_some(l)
    });
    let new: Vec<(String, String)> = kinds(&after[3..]);
    assert_eq!(
        new,
        [("job-finished".to_owned(), "-".to_owned()), ("task-failed".to_owned(), "c".to_owned())]
    );
    assert_eq!(after.iter().filter(|e| e["event"] == "task-failed").nth(1).expect("2nd")["attempt"], 2);
}

/// A webhook whose port refuses connections: the job runs as it would without it (exit 0,
/// everything merged), the failure is logged, and the other sinks still get their events.
#[test]
fn a_failing_sink_does_not_fail_the_job() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let file = env.path().join("events.jsonl");
    let command = format!("sh -c 'cat >> {}'", file.display());
    let hook = format!("http://127.0.0.1:{refused}/hook");
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--notify-webhook",
            &hook,
            "--notify-command",
            &command,
            "--json",
            "--",
            "sh",
            "-c",
            "echo \"$GROVE_TASK\" >> \"$GROVE_TASK/f.txt\"",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    for t in ["a", "b", "c"] {
        assert_eq!(task(&job, t)["shown"], "merged", "{job:#}");
    }
    assert!(run.stderr.contains("notifications: webhook"), "the failure is logged: {}", run.stderr);
    let sent = until(Duration::from_secs(30), "the job-finished event through the command", || {
        let l = lines(&file);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(kinds(&sent), [("job-finished".to_owned(), "-".to_owned())], "{sent:#?}");
    assert_eq!(sent[0]["merged"], 3);
}

/// Sinks grove cannot use are refused before the job starts, naming the field.
#[test]
fn bad_sinks_are_refused_before_the_job_starts() {
    let env = Env::new();
    let repo = three_dirs(&env);
    for (flags, field) in [
        (vec!["--notify-webhook", "hooks.example/x"], "notify.webhook"),
        (vec!["--notify-webhook", "ftp://example.invalid/x"], "notify.webhook"),
        (vec!["--notify-ntfy", "a/b"], "notify.ntfy"),
        (vec!["--notify-ntfy", "t", "--notify-ntfy-server", "ntfy"], "notify.ntfy_server"),
        (vec!["--notify-command", ""], "notify.command"),
        (vec!["--notify-command", "sh -c 'unclosed"], "notify.command"),
    ] {
        let mut args = vec!["run", "--split", "dirs"];
        args.extend(flags.iter().copied());
        args.extend(["--", "true"]);
        let run = env.grove(&repo, &args);
        assert_eq!(run.code, 2, "{flags:?}: {}", run.stderr);
        assert!(run.stderr.contains(field), "{flags:?}: {}", run.stderr);
    }
    let status = env.grove(&repo, &["status", "--json"]);
    assert!(!status.stdout.contains("\"id\""), "no job was made: {}", status.stdout);
}

/// Through the coordinator daemon, across its SIGKILL and restart mid-job: the command sink
/// (run by the daemon) hears of the failure before the restart and of the job's end after
/// it, each once.
#[test]
fn the_daemon_notifies_once_across_a_restart() {
    use crate::daemon::{coordinator, log_of};
    use crate::distributed::{dirs_repo, free_port, nats_server, worker};
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let mut coord = coordinator(&env, &nats, port, "coordinator-1");
    let _w = worker(&env, &nats, "w1", "local", false);
    let repo = dirs_repo(&env, "r", 2);
    let (file, gate) = (env.path().join("events.jsonl"), env.path().join("gate"));
    let command = format!("sh -c 'cat >> {}'", file.display());
    // d00 fails at once; d01 waits for the gate, opened once the daemon is back.
    let script = format!(
        r#"if [ "$GROVE_TASK" = d00 ]; then echo "d00 gives up" >&2; exit 3; fi; while [ ! -e {g} ]; do sleep 0.05; done; echo x >> "$GROVE_TASK/f.txt""#,
        g = gate.display()
    );
    let submit = env.grove(
        &repo,
        &[
            "run",
            "--coordinator",
            &api,
            "--split",
            "dirs",
            "--notify-command",
            &command,
            "--detach",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(submit.code, 0, "{}", submit.stderr);
    let id = submit.json()["id"].as_str().expect("id").to_owned();
    let before = until(Duration::from_secs(60), "d00's failure heard", || {
        let l = lines(&file);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(kinds(&before), [("task-failed".to_owned(), "d00".to_owned())], "{before:#?}");
    assert_eq!(before[0]["job"], id.as_str());
    // Killed once the daemon recorded that delivery (a kill between the sink's answer and the
    // record would send it again: at least once, as documented).
    until(Duration::from_secs(30), "the delivery recorded", || {
        let log = log_of(&env, "coordinator-1");
        log.lines().any(|l| l.contains("notified") && l.contains("failed:d00")).then_some(())
    });

    coord.0.kill().expect("SIGKILL the coordinator");
    let _ = coord.0.wait();
    drop(coord);
    let _coord = coordinator(&env, &nats, port, "coordinator-2");
    std::fs::write(&gate, "").expect("open the gate");

    let after = until(Duration::from_secs(90), "the job's end heard", || {
        let l = lines(&file);
        l.iter().any(|e| e["event"] == "job-finished").then_some(l)
    });
    assert_eq!(
        kinds(&after),
        [("job-finished".to_owned(), "-".to_owned()), ("task-failed".to_owned(), "d00".to_owned())],
        "{after:#?}\n{}",
        log_of(&env, "coordinator-2")
    );
    let end = after.iter().find(|e| e["event"] == "job-finished").expect("end");
    assert_eq!(end["states"], serde_json::json!({"merged": 1, "failed": 1}), "{end:#}");
}
