//! A credential in a repository URL (`http://user:token@host/r.git`) is used for the fetch and
//! push it came with, and never stored, shown or logged: a loopback smart-HTTP server (git's
//! own `http-backend` behind Basic auth) checks it was used; the state, the mirror, the output
//! and the errors are searched for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::harness::{Env, task};

const USER: &str = "alice";
const TOKEN: &str = "s3cr3t-t0ken-9f8e";

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A smart-HTTP git server on loopback for the bare repositories under `root`, wanting Basic
/// auth `USER:TOKEN`; it keeps every Authorization header it was sent.
struct GitHttp {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl GitHttp {
    fn start(root: &Path) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (root, log) = (root.to_path_buf(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, log) = (root.clone(), log.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &root, &log);
                });
            }
        });
        GitHttp { port, seen }
    }

    fn url(&self, userinfo: &str) -> String {
        format!("http://{userinfo}127.0.0.1:{}/r.git", self.port)
    }
}

fn serve(conn: TcpStream, root: &Path, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let mut out = conn;
    let auth = header("authorization");
    if let Some(a) = &auth {
        seen.lock().expect("lock").push(a.clone());
    }
    if auth.as_deref() != Some(&format!("Basic {}", base64(format!("{USER}:{TOKEN}").as_bytes()))) {
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = grove_tests::hermetic(&mut Command::new("git"))
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = cgi.stdin.take() {
        stdin.write_all(&body)?;
    }
    let output = cgi.wait_with_output()?;
    let split = output
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, rest) = match split {
        Some((i, n)) => (String::from_utf8_lossy(&output.stdout[..i]).into_owned(), &output.stdout[i + n..]),
        None => (String::new(), &output.stdout[..]),
    };
    let mut status = "200 OK".to_owned();
    let mut response = Vec::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            _ => response.extend_from_slice(format!("{h}\r\n").as_bytes()),
        }
    }
    out.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", rest.len()).as_bytes(),
    )?;
    out.write_all(&response)?;
    out.write_all(b"\r\n")?;
    out.write_all(rest)
}

/// Every file under `dir` (the grove home: state, mirrors, run logs) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn a_credential_in_a_repository_url_is_used_and_never_stored_or_shown() {
    let env = Env::new();
    let files: Vec<(String, String)> = (0..2).map(|i| (format!("d{i}/f.txt"), format!("{i}\n"))).collect();
    let work = env.repo("work", &files);
    let served = env.path().join("srv");
    std::fs::create_dir_all(&served).expect("mkdir");
    env.git(&served, &["clone", "--quiet", "--bare", work.to_str().expect("utf-8"), "r.git"]);
    let server = GitHttp::start(&served);
    let with_token = server.url(&format!("{USER}:{TOKEN}@"));
    let plain = server.url("");

    // Without the credential the server refuses: the fetch really needs it.
    let refused = env.grove(env.path(), &["plan", "--repo", &plain, "--split", "dirs"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);

    let script = r#"echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;
    let run = env.grove(
        env.path(),
        &["run", "--repo", &with_token, "--split", "dirs", "--json", "--", "sh", "-c", script],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    assert_eq!(task(&job, "d0")["shown"], "merged", "{job:#}");
    assert!(
        server.seen.lock().expect("lock").iter().any(|a| a.starts_with("Basic ")),
        "git sent the credential"
    );
    // What is stored and shown is the URL without it.
    assert_eq!(job["source"], plain.as_str(), "{job:#}");
    for (what, text) in [("run stdout", &run.stdout), ("run stderr", &run.stderr)] {
        assert!(!text.contains(TOKEN), "{what} shows the token: {text}");
    }
    let status = env.grove(env.path(), &["status", "--json", job["id"].as_str().expect("id")]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(!status.stdout.contains(TOKEN) && status.stdout.contains(&plain), "{}", status.stdout);
    let table = env.grove(env.path(), &["status", job["id"].as_str().expect("id")]);
    assert!(!table.stdout.contains(TOKEN), "{}", table.stdout);
    // Nowhere in the home: SQLite (and its WAL), the mirror's config and refs, the logs.
    let leaked = files_containing(&env.grove_home(), TOKEN.as_bytes());
    assert!(leaked.is_empty(), "the token is stored in {leaked:?}");
    let leaked = files_containing(&env.grove_home(), base64(format!("{USER}:{TOKEN}").as_bytes()).as_bytes());
    assert!(leaked.is_empty(), "the encoded credential is stored in {leaked:?}");

    // A wrong credential fails, and the error names the URL without it.
    let wrong = env.grove(
        env.path(),
        &["run", "--repo", &server.url(&format!("{USER}:wr0ng-pa55@")), "--split", "dirs", "--", "true"],
    );
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(!wrong.stderr.contains("wr0ng-pa55"), "{}", wrong.stderr);
    assert!(wrong.stderr.contains(&plain), "the error names the repository: {}", wrong.stderr);

    // Pushing with a credential in the remote: used for the push, not shown, not stored.
    let id = job["id"].as_str().expect("id");
    let push = env.grove(env.path(), &["push", id, "--remote", &with_token, "--json"]);
    assert_eq!(push.code, 0, "{}\n{}", push.stderr, push.stdout);
    assert!(!push.stdout.contains(TOKEN) && !push.stderr.contains(TOKEN), "{}{}", push.stdout, push.stderr);
    let pushed = env.git(&served.join("r.git"), &["branch", "--list", "grove/*"]);
    assert!(pushed.contains(&format!("grove/{id}/integration")), "{pushed}");
    // A push that fails masks the credential in its error.
    let dead = format!("http://{USER}:{TOKEN}@127.0.0.1:{}/r.git", grove_tests::free_port());
    let failed = env.grove(env.path(), &["push", id, "--remote", &dead]);
    assert_eq!(failed.code, 2, "{}", failed.stderr);
    assert!(!failed.stderr.contains(TOKEN), "{}", failed.stderr);
    let leaked = files_containing(&env.grove_home(), TOKEN.as_bytes());
    assert!(leaked.is_empty(), "the token is stored in {leaked:?}");
}
