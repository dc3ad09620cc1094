//! A fake code host on loopback for tests: GitHub (REST v3) under `/github`, GitLab (v4)
//! under `/gitlab/api/v4` and Gitea (v1) under `/gitea/api/v1` of one server, keeping
//! repositories, pull/merge requests, labels, reviewers and checks in memory and answering
//! in the real hosts' request and response shapes, so far as grove uses them:
//!
//! - a duplicate create gets GitHub's 422 `Validation Failed` / "A pull request already
//!   exists for o:b." and GitLab's and Gitea's 409;
//! - every answer carries rate-limit headers (`x-ratelimit-limit/remaining/reset/used` on
//!   GitHub, `ratelimit-*` on GitLab);
//! - a wrong token gets 401 (GitHub: `{"message":"Bad credentials"}`);
//! - faults are programmable: [`Server::secondary_limit`] (the next writes get GitHub's
//!   secondary-rate-limit 403, with or without `retry-after`), [`Server::primary_limit`]
//!   (403 with `x-ratelimit-remaining: 0` until a reset), [`Server::set_check`] (a passing,
//!   failing or pending check on a pull request's head), [`Server::set_mergeable`],
//!   [`Server::hide_next_finds`] (lists answer empty, as in a race with another writer);
//! - every request is recorded ([`Server::requests`]: method, path, body, status, time).
//!
//! Repositories come into being when first named. Merging does not look at checks (as a
//! host without branch protection): refusing a red one is the client's job.

mod gitea;
mod github;
mod gitlab;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::Kind;

/// The token the fake accepts.
pub const TOKEN: &str = "fake-token-7f3a";

/// A check's result, as [`Server::set_check`] sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Passed,
    Failed,
    Pending,
}

/// One request the fake got.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    pub method: String,
    /// The path after the kind's API prefix, undecoded (`/repos/o/r/pulls`).
    pub path: String,
    pub query: String,
    /// The JSON body (Null when none).
    pub body: Value,
    pub status: u16,
    pub at: Instant,
    /// The request's headers, lower-case names; the auth headers' values are `***`.
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Request {
    pub fn is_write(&self) -> bool {
        self.method != "GET" && self.method != "HEAD"
    }
}

/// A pull or merge request the fake keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct FakePr {
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
    /// `open` or `closed` (merged ones are closed and `merged`).
    pub state: String,
    pub merged: bool,
    /// The order merges happened in over the whole server, from 1.
    pub merge_seq: Option<u64>,
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
    /// Who reviewed it (on GitHub and Gitea they leave `reviewers` then).
    pub reviewed: Vec<String>,
    pub head_sha: String,
    pub mergeable: bool,
}

#[derive(Debug, Default)]
struct Repo {
    prs: Vec<FakePr>,
    /// Gitea's labels by id (index + 1).
    labels: Vec<String>,
    /// Checks by commit.
    checks: HashMap<String, Vec<(String, Check)>>,
}

#[derive(Debug)]
struct Fault {
    count: u32,
    retry_after: Option<u64>,
}

#[derive(Debug)]
struct State {
    addr: SocketAddr,
    token: String,
    repos: HashMap<(Kind, String), Repo>,
    requests: Vec<Request>,
    secondary: Option<Fault>,
    primary: Option<(u32, u64)>,
    hide_finds: u32,
    /// The next requests answered with this status and no more.
    fail: Option<(u32, u16)>,
    /// GitLab users by id (index + 1); any username asked for exists.
    users: Vec<String>,
    merges: u64,
    next_sha: u64,
    used: u64,
}

impl State {
    fn repo(&mut self, kind: Kind, project: &str) -> &mut Repo {
        self.repos.entry((kind, project.to_owned())).or_default()
    }

    fn sha(&mut self) -> String {
        self.next_sha += 1;
        format!("{:040x}", 0xa11ce_u64 << 20 | self.next_sha)
    }

    fn web(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn user_id(&mut self, name: &str) -> u64 {
        let i = match self.users.iter().position(|u| u == name) {
            Some(i) => i,
            None => {
                self.users.push(name.to_owned());
                self.users.len() - 1
            }
        };
        i as u64 + 1
    }

    fn checks(&mut self, kind: Kind, project: &str, sha: &str) -> Vec<(String, Check)> {
        self.repo(kind, project).checks.get(sha).cloned().unwrap_or_default()
    }

    /// A new pull request's number: GitHub and Gitea share numbers with issues, so any
    /// unused one will do.
    fn open(&mut self, kind: Kind, project: &str, head: &str, base: &str, title: &str, body: &str) -> FakePr {
        let sha = self.sha();
        let repo = self.repo(kind, project);
        let pr = FakePr {
            number: repo.prs.len() as u64 + 1,
            head: head.to_owned(),
            base: base.to_owned(),
            title: title.to_owned(),
            body: body.to_owned(),
            draft: false,
            state: "open".into(),
            merged: false,
            merge_seq: None,
            labels: Vec::new(),
            reviewers: Vec::new(),
            reviewed: Vec::new(),
            head_sha: sha,
            mergeable: true,
        };
        repo.prs.push(pr.clone());
        pr
    }

    fn pr_mut(&mut self, kind: Kind, project: &str, number: u64) -> Option<&mut FakePr> {
        self.repo(kind, project).prs.iter_mut().find(|p| p.number == number)
    }

    fn open_pr_for(&mut self, kind: Kind, project: &str, head: &str, base: &str) -> Option<&mut FakePr> {
        self.repo(kind, project)
            .prs
            .iter_mut()
            .find(|p| p.state == "open" && p.head == head && p.base == base)
    }

    fn merge(&mut self, kind: Kind, project: &str, number: u64) {
        self.merges += 1;
        let seq = self.merges;
        if let Some(pr) = self.pr_mut(kind, project, number) {
            pr.merged = true;
            pr.state = "closed".into();
            pr.merge_seq = Some(seq);
        }
    }
}

/// What a kind's handler answers.
struct Answer {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer { status, body, headers: Vec::new() }
}

/// A request as the kinds' handlers see it.
struct Call<'a> {
    method: &'a str,
    /// Path segments after the prefix, percent-decoded.
    segs: Vec<String>,
    query: HashMap<String, String>,
    body: &'a Value,
}

impl Call<'_> {
    fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn s(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn now_epoch() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// The fake server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Starts a server on 127.0.0.1 and a free port.
    pub async fn start() -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            addr,
            token: TOKEN.to_owned(),
            repos: HashMap::new(),
            requests: Vec::new(),
            secondary: None,
            primary: None,
            hide_finds: 0,
            fail: None,
            users: Vec::new(),
            merges: 0,
            next_sha: 0,
            used: 0,
        }));
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("fake code host stopped: {e}");
            }
        });
        Ok(Server { addr, state, task })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API base URL of `kind` on this server.
    pub fn api(&self, kind: Kind) -> String {
        match kind {
            Kind::GitHub => format!("{}/github", self.url()),
            Kind::GitLab => format!("{}/gitlab/api/v4", self.url()),
            Kind::Gitea => format!("{}/gitea/api/v1", self.url()),
        }
    }

    /// A host config of `kind` pointing at this server, writes spaced by `min_write_interval`.
    pub fn host_config(&self, kind: Kind, min_write_interval: std::time::Duration) -> crate::HostConfig {
        let mut c = crate::HostConfig::new(format!("fake-{kind}.test"), kind, self.api(kind));
        c.min_write_interval = min_write_interval;
        c
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The pull requests of `project`.
    pub fn prs(&self, kind: Kind, project: &str) -> Vec<FakePr> {
        self.lock().repos.get(&(kind, project.to_owned())).map(|r| r.prs.clone()).unwrap_or_default()
    }

    /// Opens a pull request as someone else would.
    pub fn open_pr(&self, kind: Kind, project: &str, head: &str, base: &str, title: &str) -> FakePr {
        self.lock().open(kind, project, head, base, title, "")
    }

    /// The next `count` writes get GitHub's secondary-rate-limit 403 (GitLab and Gitea: 429
    /// "Retry later"), with `retry-after: SECONDS` when given.
    pub fn secondary_limit(&self, count: u32, retry_after: Option<u64>) {
        self.lock().secondary = Some(Fault { count, retry_after });
    }

    /// The next `count` requests get a 403 with `x-ratelimit-remaining: 0` and a reset
    /// `reset_in` seconds from now.
    pub fn primary_limit(&self, count: u32, reset_in: u64) {
        self.lock().primary = Some((count, now_epoch() + reset_in));
    }

    /// The next `count` requests answer `status` (a 502 from a proxy, say) and do nothing.
    pub fn fail_next(&self, count: u32, status: u16) {
        self.lock().fail = Some((count, status));
    }

    /// The next `count` list requests answer an empty list.
    pub fn hide_next_finds(&self, count: u32) {
        self.lock().hide_finds = count;
    }

    /// Sets check `name` on the head of pull request `number`. On GitHub a name with a `/`
    /// is a commit status (`ci/test`), other names are check runs; on GitLab each is a job
    /// of the head pipeline; on Gitea a commit status.
    pub fn set_check(&self, kind: Kind, project: &str, number: u64, name: &str, check: Check) {
        let mut s = self.lock();
        let Some(sha) = s.pr_mut(kind, project, number).map(|p| p.head_sha.clone()) else { return };
        let checks = s.repo(kind, project).checks.entry(sha).or_default();
        checks.retain(|(n, _)| n != name);
        checks.push((name.to_owned(), check));
    }

    /// `user` reviews pull request `number`: on GitHub and Gitea they leave the requested
    /// reviewers, as there; on GitLab they stay.
    pub fn review(&self, kind: Kind, project: &str, number: u64, user: &str) {
        if let Some(pr) = self.lock().pr_mut(kind, project, number) {
            if kind != Kind::GitLab {
                pr.reviewers.retain(|r| r != user);
            }
            pr.reviewed.push(user.to_owned());
        }
    }

    /// Whether the host can merge pull request `number`.
    pub fn set_mergeable(&self, kind: Kind, project: &str, number: u64, mergeable: bool) {
        if let Some(pr) = self.lock().pr_mut(kind, project, number) {
            pr.mergeable = mergeable;
        }
    }

    /// A new commit on pull request `number`'s head (its checks start over).
    pub fn push_head(&self, kind: Kind, project: &str, number: u64) {
        let mut s = self.lock();
        let sha = s.sha();
        if let Some(pr) = s.pr_mut(kind, project, number) {
            pr.head_sha = sha;
        }
    }

    /// Adds a label to the repository (Gitea needs labels to exist; GitHub and GitLab make
    /// them on use).
    pub fn add_label(&self, kind: Kind, project: &str, name: &str) {
        self.lock().repo(kind, project).labels.push(name.to_owned());
    }
}

fn authorized(kind: Kind, headers: &HeaderMap, token: &str) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let auth = get("authorization");
    let bearer = |a: &str| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("token ")) == Some(token);
    match kind {
        Kind::GitHub | Kind::Gitea => auth.is_some_and(bearer),
        Kind::GitLab => get("private-token") == Some(token) || auth.is_some_and(bearer),
    }
}

fn unauthorized(kind: Kind) -> Answer {
    match kind {
        Kind::GitHub => answer(
            401,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        ),
        Kind::GitLab => answer(401, json!({"message": "401 Unauthorized"})),
        Kind::Gitea => answer(401, json!({"message": "invalid username, password or token", "url": ""})),
    }
}

fn not_found(kind: Kind) -> Answer {
    match kind {
        Kind::GitHub => answer(
            404,
            json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}),
        ),
        Kind::GitLab => answer(404, json!({"message": "404 Not found"})),
        Kind::Gitea => answer(404, json!({"message": "The target couldn't be found.", "errors": []})),
    }
}

async fn handle(AxState(state): AxState<Arc<Mutex<State>>>, req: axum::extract::Request) -> Response {
    let at = Instant::now();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers = req.headers().clone();
    let bytes = axum::body::to_bytes(req.into_body(), 16 << 20).await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);

    let (kind, rest) = if let Some(r) = path.strip_prefix("/github") {
        (Kind::GitHub, r)
    } else if let Some(r) = path.strip_prefix("/gitlab/api/v4") {
        (Kind::GitLab, r)
    } else if let Some(r) = path.strip_prefix("/gitea/api/v1") {
        (Kind::Gitea, r)
    } else {
        return respond(None, answer(404, json!({"message": "no such API"})), 0, 0);
    };
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let write = method != "GET" && method != "HEAD";
    s.used += 1;
    let ans = if !authorized(kind, &headers, &s.token) {
        unauthorized(kind)
    } else if let Some(ans) = fault(&mut s, kind, write) {
        ans
    } else {
        let call = Call {
            method: &method,
            segs: rest.split('/').filter(|x| !x.is_empty()).map(decode).collect(),
            query: query
                .split('&')
                .filter(|x| !x.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (decode(k), decode(v))
                })
                .collect(),
            body: &body,
        };
        let found = match kind {
            Kind::GitHub => github::route(&mut s, &call),
            Kind::GitLab => gitlab::route(&mut s, &call),
            Kind::Gitea => gitea::route(&mut s, &call),
        };
        found.unwrap_or_else(|| not_found(kind))
    };
    let status = ans.status;
    let headers = headers
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "authorization" | "private-token" => "***".to_owned(),
                _ => v.to_str().unwrap_or_default().to_owned(),
            };
            (k.as_str().to_owned(), value)
        })
        .collect();
    s.requests.push(Request { kind, method, path: rest.to_owned(), query, body, status, at, headers });
    let used = s.used;
    let reset = s.primary.as_ref().map(|(_, r)| *r).unwrap_or(now_epoch() + 3600);
    drop(s);
    respond(Some(kind), ans, used, reset)
}

/// A programmed fault for this request, if one is due.
fn fault(s: &mut State, kind: Kind, write: bool) -> Option<Answer> {
    if let Some((count, status)) = s.fail.as_mut()
        && *count > 0
    {
        *count -= 1;
        return Some(answer(*status, json!("<html><body><h1>Bad gateway</h1></body></html>")));
    }
    if let Some((count, reset)) = s.primary.as_mut()
        && *count > 0
    {
        *count -= 1;
        let reset = *reset;
        let mut a = answer(
            403,
            json!({"message": "API rate limit exceeded for user ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}),
        );
        a.headers.push(("x-ratelimit-remaining", "0".into()));
        a.headers.push(("x-ratelimit-reset", reset.to_string()));
        return Some(a);
    }
    if write
        && let Some(f) = s.secondary.as_mut()
        && f.count > 0
    {
        f.count -= 1;
        let mut a = match kind {
            Kind::GitHub => answer(
                403,
                json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.", "documentation_url": "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}),
            ),
            // GitLab's (Rack::Attack) answer is plain text.
            Kind::GitLab | Kind::Gitea => answer(429, json!("Retry later\n")),
        };
        if let Some(after) = f.retry_after {
            a.headers.push(("retry-after", after.to_string()));
        }
        return Some(a);
    }
    None
}

fn respond(kind: Option<Kind>, ans: Answer, used: u64, reset: u64) -> Response {
    // A JSON string is sent as plain text.
    let (text, content_type) = match ans.body {
        Value::Null => (String::new(), "application/json; charset=utf-8"),
        Value::String(s) => (s, "text/plain; charset=utf-8"),
        other => (other.to_string(), "application/json; charset=utf-8"),
    };
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = StatusCode::from_u16(ans.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("content-type", content_type.into());
    let remaining = 5000u64.saturating_sub(used);
    match kind {
        Some(Kind::GitHub) => {
            put("x-ratelimit-limit", "5000".into());
            put("x-ratelimit-remaining", remaining.to_string());
            put("x-ratelimit-reset", reset.to_string());
            put("x-ratelimit-used", used.to_string());
            put("x-ratelimit-resource", "core".into());
            put("x-github-api-version-selected", "2022-11-28".into());
        }
        Some(Kind::GitLab) => {
            put("ratelimit-limit", "2000".into());
            put("ratelimit-observed", used.to_string());
            put("ratelimit-remaining", 2000u64.saturating_sub(used).to_string());
            put("ratelimit-reset", reset.to_string());
        }
        Some(Kind::Gitea) | None => {}
    }
    for (name, value) in ans.headers {
        put(name, value);
    }
    resp
}
