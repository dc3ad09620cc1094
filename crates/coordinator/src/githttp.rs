//! The coordinator's mirrors over the network: git's smart HTTP protocol, served by
//! `git http-backend` behind the coordinator's token, beside the gRPC API (same port, same
//! TLS). Workers that share no disk with the coordinator (pods, other machines) clone from it,
//! including partial and shallow fetches, and push their checkpoints to it.
//!
//! Who may use it: anyone holding the API token, or a worker token this coordinator minted
//! ([`WorkerTokens`]): `gwt1.<expires>.<hmac>`, valid until `expires`, signed with a key kept
//! in the grove home. A pod launcher puts one in the pods' Secret and writes a new one before
//! it expires; the pods read it through a git credential helper at every request.
//!
//! Only `refs/heads/` may be pushed, only fast-forward, never deleted; no hooks run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use grove_core::layout::Layout;
use grove_git::Git;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::CoordError;

/// The URL path the mirrors are served under: `<base>/git/<mirror name>`.
pub const PREFIX: &str = "/git";

/// Signs and checks worker tokens.
pub struct WorkerTokens {
    key: ring::hmac::Key,
}

const TOKEN_KIND: &str = "gwt1";

impl WorkerTokens {
    /// The key in the grove home (`worker-token.key`), made on first use (0600).
    pub fn open(layout: &Layout) -> Result<WorkerTokens, CoordError> {
        let path = layout.home().join("worker-token.key");
        let io = |what: &str, source| CoordError::Io { what: format!("{what} {}", path.display()), source };
        let key = match std::fs::read(&path) {
            Ok(k) if k.len() >= 32 => k,
            Ok(_) => {
                return Err(io("the worker token key is too short:", std::io::Error::other("truncated")));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use ring::rand::SecureRandom;
                let mut k = vec![0u8; 32];
                ring::rand::SystemRandom::new()
                    .fill(&mut k)
                    .map_err(|_| io("making", std::io::Error::other("no randomness")))?;
                std::fs::create_dir_all(layout.home()).map_err(|e| io("creating the folder of", e))?;
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                    Ok(mut f) => {
                        f.write_all(&k).map_err(|e| io("writing", e))?;
                        f.sync_all().map_err(|e| io("writing", e))?;
                        k
                    }
                    // Made by another process a moment ago: use that one.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(&path).map_err(|e| io("reading", e))?
                    }
                    Err(e) => return Err(io("making", e)),
                }
            }
            Err(e) => return Err(io("reading", e)),
        };
        Ok(WorkerTokens::from_key(&key))
    }

    pub fn from_key(key: &[u8]) -> WorkerTokens {
        WorkerTokens { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key) }
    }

    /// A token valid for `ttl` from `now` (unix seconds); returns it and when it expires.
    pub fn mint(&self, ttl: Duration, now: i64) -> (String, i64) {
        let expires = now + ttl.as_secs() as i64;
        let body = format!("{TOKEN_KIND}.{expires}");
        let tag = ring::hmac::sign(&self.key, body.as_bytes());
        (format!("{body}.{}", hex(tag.as_ref())), expires)
    }

    /// Whether `token` is one of ours and has not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> bool {
        let mut parts = token.rsplitn(2, '.');
        let (Some(tag), Some(body)) = (parts.next(), parts.next()) else { return false };
        let Some(expires) = body.strip_prefix("gwt1.").and_then(|e| e.parse::<i64>().ok()) else {
            return false;
        };
        let Some(tag) = unhex(tag) else { return false };
        expires > now && ring::hmac::verify(&self.key, body.as_bytes(), &tag).is_ok()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// What the git endpoint needs.
pub struct GitAccess {
    pub git: Git,
    /// The folder of the mirrors (`Layout::mirrors`).
    pub mirrors: PathBuf,
    /// The API's tokens: when there are any, every request needs an admin one or a worker
    /// token (the endpoint serves workers, which also push).
    pub api_tokens: crate::access::Tokens,
    pub tokens: Arc<WorkerTokens>,
}

/// The routes of the git endpoint, to be served beside the gRPC API.
pub fn router(access: Arc<GitAccess>) -> axum::Router {
    axum::Router::new().route(&format!("{PREFIX}/{{*path}}"), axum::routing::any(serve)).with_state(access)
}

/// A mirror's URL under `base` (the coordinator's `--git-url`).
pub fn mirror_url(base: &str, mirror: &std::path::Path) -> String {
    let name = mirror.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{}/{name}", base.trim_end_matches('/'))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Whether the request carries the API token or a valid worker token (Basic, as git sends
/// what a credential helper gives it, or Bearer).
fn authorized(access: &GitAccess, headers: &HeaderMap) -> bool {
    if access.api_tokens.is_empty() {
        return true;
    }
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let secret = if let Some(b) = value.strip_prefix("Basic ") {
        let Some(decoded) = base64_decode(b.trim()) else { return false };
        let text = String::from_utf8_lossy(&decoded).into_owned();
        match text.split_once(':') {
            Some((_, password)) => password.to_owned(),
            None => return false,
        }
    } else if let Some(t) = value.strip_prefix("Bearer ") {
        t.trim().to_owned()
    } else {
        return false;
    };
    let api = access
        .api_tokens
        .caller(format!("Bearer {secret}").as_bytes())
        .is_some_and(|c| c.scope >= crate::access::Scope::Admin);
    api || access.tokens.verify(&secret, unix_now())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        match chunk.len() {
            4 => out.extend_from_slice(&bytes),
            3 => out.extend_from_slice(&bytes[..2]),
            2 => out.push(bytes[0]),
            _ => return None,
        }
    }
    Some(out)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{text}\n")).into_response()
}

/// A mirror name as grove makes them: `<slug>-<hash>.git`, nothing that walks out.
fn mirror_name_ok(name: &str) -> bool {
    name.ends_with(".git")
        && name.len() > 4
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.contains("..")
}

/// The service a request asks for, checked against the three git smart-HTTP endpoints.
fn route(method: &Method, path: &str, query: &str) -> Option<(String, &'static str)> {
    let (repo, rest) = path.split_once('/')?;
    if !mirror_name_ok(repo) {
        return None;
    }
    let service = match (method, rest) {
        (&Method::GET, "info/refs") => match query.split('&').find_map(|kv| kv.strip_prefix("service=")) {
            Some("git-upload-pack") => "git-upload-pack",
            Some("git-receive-pack") => "git-receive-pack",
            _ => return None,
        },
        (&Method::POST, "git-upload-pack") => "git-upload-pack",
        (&Method::POST, "git-receive-pack") => "git-receive-pack",
        _ => return None,
    };
    Some((repo.to_owned(), service))
}

async fn serve(State(access): State<Arc<GitAccess>>, req: Request) -> Response {
    if !authorized(&access, req.headers()) {
        let mut r = plain(StatusCode::UNAUTHORIZED, "a token is required (the API token or a worker token)");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"grove\""));
        return r;
    }
    let path = req.uri().path().strip_prefix(PREFIX).unwrap_or_default().trim_start_matches('/').to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let Some((repo, service)) = route(req.method(), &path, &query) else {
        return plain(StatusCode::NOT_FOUND, "no such git endpoint");
    };
    if !access.mirrors.join(&repo).join("HEAD").is_file() {
        return plain(StatusCode::NOT_FOUND, &format!("no mirror {repo}"));
    }
    match backend(&access, req, &repo, service, &query).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%repo, "git http-backend: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend failed")
        }
    }
}

/// Run `git http-backend` (CGI) for the request and stream its answer back.
async fn backend(
    access: &GitAccess,
    req: Request,
    repo: &str,
    service: &str,
    query: &str,
) -> Result<Response, String> {
    let (parts, body) = req.into_parts();
    let rest = if parts.method == Method::GET { "info/refs".to_owned() } else { service.to_owned() };
    let mut cmd = access.git.command(&access.mirrors);
    cmd.args([
        "-c",
        "http.receivepack=true",
        "-c",
        "http.uploadpack=true",
        "-c",
        "uploadpack.allowFilter=true",
        "-c",
        "uploadpack.allowAnySHA1InWant=true",
        "-c",
        "receive.denyNonFastForwards=true",
        "-c",
        "receive.denyDeletes=true",
        "http-backend",
    ])
    .env("GIT_PROJECT_ROOT", &access.mirrors)
    .env("GIT_HTTP_EXPORT_ALL", "1")
    .env("PATH_INFO", format!("/{repo}/{rest}"))
    .env("REQUEST_METHOD", parts.method.as_str())
    .env("QUERY_STRING", query)
    .env("REMOTE_USER", "grove-worker")
    .env("REMOTE_ADDR", "127.0.0.1");
    let h =
        |name: &header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(t) = h(&header::CONTENT_TYPE) {
        cmd.env("CONTENT_TYPE", t);
    }
    if let Some(e) = h(&header::CONTENT_ENCODING) {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    // Protocol v2 when the client asks for it (the value is git's own: `version=2`).
    if let Some(p) = parts.headers.get("git-protocol").and_then(|v| v.to_str().ok())
        && p.chars().all(|c| c.is_ascii_alphanumeric() || "=:._-".contains(c))
    {
        cmd.env("GIT_PROTOCOL", p);
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("starting git http-backend: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let feed = tokio::spawn(async move {
        let mut data = body.into_data_stream();
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            stdin.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        stdin.shutdown().await.map_err(|e| e.to_string())
    });
    let repo_name = repo.to_owned();
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        if let Err(e) = feed.await.unwrap_or_else(|e| Err(e.to_string())) {
            tracing::debug!(repo = %repo_name, "request body: {e}");
        }
        match child.wait().await {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::warn!(repo = %repo_name, "git http-backend exited with {s}: {}", text.trim()),
            Err(e) => tracing::warn!(repo = %repo_name, "git http-backend: {e}"),
        }
    });
    let mut out = tokio::io::BufReader::new(stdout);
    let mut builder = Response::builder().status(StatusCode::OK);
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).await.map_err(|e| format!("reading its headers: {e}"))?;
        let line = line.trim_end_matches(['\r', '\n']);
        if n == 0 || line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok()).unwrap_or(500);
            builder = builder.status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        } else {
            builder = builder.header(name, value);
        }
    }
    let stream = futures::stream::unfold(out, |mut out| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match out.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), out))
            }
            Err(e) => Some((Err(e), out)),
        }
    });
    builder.body(Body::from_stream(stream)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_are_signed() {
        let t = WorkerTokens::from_key(b"0123456789abcdef0123456789abcdef");
        let (token, expires) = t.mint(Duration::from_secs(3600), 1000);
        assert_eq!(expires, 4600);
        assert!(token.starts_with("gwt1.4600."), "{token}");
        assert!(t.verify(&token, 1000));
        assert!(t.verify(&token, 4599));
        assert!(!t.verify(&token, 4600), "expired");
        let forged = token.replace("gwt1.4600.", "gwt1.9999.");
        assert!(!t.verify(&forged, 1000), "a later expiry with the old signature");
        let other = WorkerTokens::from_key(b"another key, another coordinator");
        assert!(!other.verify(&token, 1000));
        for junk in ["", "gwt1", "gwt1.x.y", "gwt1.4600.zz", "Bearer x"] {
            assert!(!t.verify(junk, 1000), "{junk:?}");
        }
    }

    #[test]
    fn the_key_is_kept_in_the_home() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        let (token, _) = WorkerTokens::open(&layout).expect("made").mint(Duration::from_secs(60), 0);
        assert!(WorkerTokens::open(&layout).expect("read").verify(&token, 1), "the same key after a restart");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("worker-token.key")).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn only_the_smart_http_endpoints_of_a_mirror_are_served() {
        let ok = [
            (Method::GET, "r-0a1b2c3d.git/info/refs", "service=git-upload-pack", "git-upload-pack"),
            (Method::GET, "r-0a1b2c3d.git/info/refs", "service=git-receive-pack", "git-receive-pack"),
            (Method::POST, "r-0a1b2c3d.git/git-upload-pack", "", "git-upload-pack"),
            (Method::POST, "r-0a1b2c3d.git/git-receive-pack", "", "git-receive-pack"),
        ];
        for (m, p, q, want) in ok {
            assert_eq!(route(&m, p, q).map(|r| r.1), Some(want), "{m} {p}");
        }
        let refused = [
            (Method::GET, "r.git/info/refs", "service=git-upload-archive"),
            (Method::GET, "r.git/info/refs", ""),
            (Method::GET, "r.git/HEAD", ""),
            (Method::GET, "r.git/objects/info/packs", ""),
            (Method::POST, "../r.git/git-upload-pack", ""),
            (Method::POST, "..git/git-upload-pack", ""),
            (Method::POST, "r/git-upload-pack", ""),
            (Method::GET, "r.git/git-upload-pack", ""),
            (Method::POST, ".hidden.git/git-upload-pack", ""),
        ];
        for (m, p, q) in refused {
            assert_eq!(route(&m, p, q), None, "{m} {p} {q}");
        }
    }

    #[test]
    fn basic_and_bearer_credentials() {
        let tokens = Arc::new(WorkerTokens::from_key(b"0123456789abcdef0123456789abcdef"));
        let (worker, _) = tokens.mint(Duration::from_secs(600), unix_now());
        let access = GitAccess {
            git: Git::detect().expect("git"),
            mirrors: PathBuf::from("/nonexistent"),
            api_tokens: crate::access::Tokens::admin("s3cret").expect("a token"),
            tokens,
        };
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
            h
        };
        // base64("grove:s3cret") and base64("x:" + worker token)
        assert!(authorized(&access, &with("Basic Z3JvdmU6czNjcmV0")));
        assert!(authorized(&access, &with("Bearer s3cret")));
        let b64 = |s: &str| {
            const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut o = String::new();
            for c in s.as_bytes().chunks(3) {
                let n = (u32::from(c[0]) << 16)
                    | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*c.get(2).unwrap_or(&0));
                for i in 0..4 {
                    if i <= c.len() {
                        o.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                    } else {
                        o.push('=');
                    }
                }
            }
            o
        };
        assert_eq!(base64_decode(&b64("x:a")).expect("decode"), b"x:a");
        assert!(authorized(&access, &with(&format!("Basic {}", b64(&format!("grove:{worker}"))))));
        assert!(!authorized(&access, &with(&format!("Basic {}", b64("grove:wrong")))));
        assert!(!authorized(&access, &with("Bearer wrong")));
        assert!(!authorized(&access, &HeaderMap::new()));
        let open = GitAccess { api_tokens: crate::access::Tokens::none(), ..access };
        assert!(authorized(&open, &HeaderMap::new()), "like the API: no token set, none asked for");
    }
}
