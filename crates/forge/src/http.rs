//! The one HTTP client all three kinds share: auth headers, a write throttle per host,
//! rate-limit waits and a timeout per request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::Error;
use crate::config::{HostConfig, Kind, Token};

/// The most of an answer's body that is read.
const BODY_LIMIT: usize = 16 << 20;

type HttpConnector = hyper_util::client::legacy::connect::HttpConnector;
type Client<C> = hyper_util::client::legacy::Client<C, Full<Bytes>>;

/// Plain for http://, rustls with the system's roots for https://.
struct Clients {
    plain: Client<HttpConnector>,
    tls: Result<Client<hyper_rustls::HttpsConnector<HttpConnector>>, String>,
}

impl Clients {
    fn new() -> Clients {
        let builder = || hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map(|b| builder().build(b.https_only().enable_http1().build()))
            .map_err(|e| format!("no system root certificates: {e}"));
        Clients { plain: builder().build(HttpConnector::new()), tls }
    }
}

/// Spaces writes to one host: each starts at least `interval` after the one before.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle { interval, last: Mutex::new(None) }
    }

    /// Waits for this write's turn.
    pub async fn wait(&self) {
        let mut last = self.last.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until(at + self.interval).await;
        }
        *last = Some(Instant::now());
    }
}

/// The string at `path` (object keys) in `v`.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

/// An answer: its status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// What the host says went wrong: GitHub's `message` and `errors[].message`, GitLab's
    /// `message` (a string, list or object) or `error`, Gitea's `message`.
    pub fn message(&self) -> String {
        let v = self.json();
        let mut parts = Vec::new();
        match v.get("message") {
            Some(Value::String(s)) => parts.push(s.clone()),
            Some(Value::Array(a)) => parts.extend(a.iter().map(flat)),
            Some(Value::Object(o)) => parts.extend(o.iter().map(|(k, v)| format!("{k} {}", flat(v)))),
            _ => {}
        }
        if let Some(Value::String(s)) = v.get("error") {
            parts.push(s.clone());
        }
        for e in v.get("errors").and_then(Value::as_array).into_iter().flatten() {
            match e.get("message").and_then(Value::as_str) {
                Some(m) => parts.push(m.to_owned()),
                None => parts.push(flat(e)),
            }
        }
        if parts.is_empty() {
            let text = String::from_utf8_lossy(&self.body);
            parts.push(text.lines().next().unwrap_or("").chars().take(200).collect());
        }
        parts.retain(|p| !p.is_empty());
        parts.join("; ")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn flat(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(flat).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from pairs, encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// One host's API: the base URL, auth, throttle and limits.
pub struct Api {
    pub kind: Kind,
    pub config: HostConfig,
    auth: (HeaderName, HeaderValue),
    clients: Clients,
    throttle: Arc<Throttle>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("kind", &self.kind)
            .field("api_url", &self.config.api_url)
            .finish_non_exhaustive()
    }
}

/// Why an answer asks to wait, and how long.
fn rate_limit_wait(reply: &Reply, config: &HostConfig) -> Option<(Duration, &'static str)> {
    let status = reply.status.as_u16();
    if status == 422 && String::from_utf8_lossy(&reply.body).contains("submitted too quickly") {
        // GitHub's content-creation limit comes as a validation error.
        return Some((config.secondary_wait, "secondary rate limit (submitted too quickly)"));
    }
    if status != 429 && status != 403 {
        return None;
    }
    if let Some(after) = reply.header("retry-after") {
        let wait = after.trim().parse::<u64>().map(Duration::from_secs).ok().or_else(|| {
            let at = httpdate::parse_http_date(after.trim()).ok()?;
            Some(at.duration_since(SystemTime::now()).unwrap_or_default())
        });
        return Some((wait.unwrap_or(config.secondary_wait), "retry-after"));
    }
    let remaining = reply.header("x-ratelimit-remaining").or_else(|| reply.header("ratelimit-remaining"));
    if remaining.map(str::trim) == Some("0") {
        let reset = reply.header("x-ratelimit-reset").or_else(|| reply.header("ratelimit-reset"));
        let wait = reset.and_then(|r| r.trim().parse::<u64>().ok()).map(|epoch| {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
            // One second more: the reset is counted in whole seconds.
            at.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(1)
        });
        return Some((wait.unwrap_or(config.secondary_wait), "primary rate limit"));
    }
    let text = String::from_utf8_lossy(&reply.body).to_ascii_lowercase();
    if text.contains("secondary rate limit") || text.contains("abuse") || status == 429 {
        return Some((config.secondary_wait, "secondary rate limit"));
    }
    None
}

impl Api {
    pub fn new(config: HostConfig, token: &Token, throttle: Arc<Throttle>) -> Result<Api, Error> {
        let (name, value) = match config.kind {
            Kind::GitHub => ("authorization", format!("Bearer {}", token.expose())),
            Kind::GitLab => ("private-token", token.expose().to_owned()),
            Kind::Gitea => ("authorization", format!("token {}", token.expose())),
        };
        let mut value =
            HeaderValue::from_str(&value).map_err(|_| Error::BadToken { host: config.host.clone() })?;
        value.set_sensitive(true);
        Ok(Api {
            kind: config.kind,
            auth: (HeaderName::from_static(name), value),
            clients: Clients::new(),
            throttle,
            config,
        })
    }

    /// `method path` (path after the API base, with its query) with a JSON body, waiting out
    /// rate limits and spacing writes. Any status is returned; only transport failures,
    /// timeouts, 401 and rate limits that do not clear are errors.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply, Error> {
        let url = format!("{}{path}", self.config.api_url);
        let write = method != Method::GET && method != Method::HEAD;
        let what = || format!("{method} {url}");
        let mut tries = 0;
        loop {
            tries += 1;
            if write {
                self.throttle.wait().await;
            }
            let reply = self.once(&method, &url, body).await?;
            if reply.status == StatusCode::UNAUTHORIZED {
                return Err(Error::Unauthorized { what: what(), message: reply.message() });
            }
            let wait = match rate_limit_wait(&reply, &self.config) {
                Some(w) => Some(w),
                None if !write && matches!(reply.status.as_u16(), 502..=504) => {
                    Some((Duration::from_secs(1 << (tries - 1).min(5)), "server error"))
                }
                None => None,
            };
            let Some((wait, why)) = wait else { return Ok(reply) };
            if tries > self.config.max_retries {
                return Err(Error::RateLimited { what: what(), tries, message: reply.message() });
            }
            if wait > self.config.max_wait {
                return Err(Error::WaitTooLong { what: what(), wait, cap: self.config.max_wait });
            }
            tracing::info!(host = %self.config.host, %method, path, ?wait, why, "code host asks to wait; retrying after");
            tokio::time::sleep(wait).await;
        }
    }

    async fn once(&self, method: &Method, url: &str, body: Option<&Value>) -> Result<Reply, Error> {
        let what = || format!("{method} {url}");
        let uri: hyper::Uri =
            url.parse().map_err(|e: hyper::http::uri::InvalidUri| Error::Config(format!("{url}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(Error::Config(format!("{url}: not an http(s) URL"))),
        };
        let mut req = hyper::Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(hyper::header::USER_AGENT, concat!("grove/", env!("CARGO_PKG_VERSION")))
            .header(self.auth.0.clone(), self.auth.1.clone());
        req = match self.kind {
            Kind::GitHub => req
                .header(hyper::header::ACCEPT, "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28"),
            Kind::GitLab | Kind::Gitea => req.header(hyper::header::ACCEPT, "application/json"),
        };
        let bytes = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| Error::Config(format!("{url}: {e}")))?;
        let answer = async {
            let sent = if https {
                match &self.clients.tls {
                    Ok(c) => c.request(req).await,
                    Err(e) => return Err(Error::NoTls(e.clone())),
                }
            } else {
                self.clients.plain.request(req).await
            };
            let resp = sent.map_err(|source| Error::Http { what: what(), source })?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, BODY_LIMIT)
                .collect()
                .await
                .map_err(|e| Error::Body { what: what(), message: e.to_string() })?
                .to_bytes();
            tracing::debug!(%method, url, status = parts.status.as_u16(), "code host answered");
            Ok(Reply { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(self.config.timeout, answer)
            .await
            .map_err(|_| Error::TimedOut { what: what(), after: self.config.timeout })?
    }

    /// `send`, then the body as JSON when the status is a success, else [`Error::Status`].
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        let reply = self.send(method.clone(), path, body).await?;
        if reply.status.is_success() {
            return Ok(reply.json());
        }
        Err(self.status_error(&method, path, &reply))
    }

    /// A merge's answer, the same on every kind: merged (the merge commit read at `sha_at` in
    /// the answer), not mergeable (405, 406, 422, with the host's message), or the head moved
    /// (409).
    pub fn merged(
        &self,
        method: &Method,
        path: &str,
        reply: &Reply,
        pr: &crate::Pr,
        sha_at: Option<&str>,
    ) -> Result<crate::MergeOutcome, Error> {
        match reply.status.as_u16() {
            200..=299 => {
                tracing::info!(url = pr.url, "merged");
                let sha = sha_at.and_then(|k| str_at(&reply.json(), &[k]).map(str::to_owned));
                Ok(crate::MergeOutcome { sha })
            }
            405 | 406 | 422 => Err(Error::NotMergeable { url: pr.url.clone(), message: reply.message() }),
            409 => Err(Error::HeadMoved { url: pr.url.clone(), message: reply.message() }),
            _ => Err(self.status_error(method, path, reply)),
        }
    }

    pub fn status_error(&self, method: &Method, path: &str, reply: &Reply) -> Error {
        Error::Status {
            what: format!("{method} {}{path}", self.config.api_url),
            status: reply.status.as_u16(),
            message: reply.message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn throttle_keeps_the_default_spacing() {
        let t = Throttle::new(crate::config::DEFAULT_WRITE_INTERVAL);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..4 {
            t.wait().await;
            at.push(start.elapsed());
        }
        assert_eq!(at, [0, 1, 2, 3].map(Duration::from_secs));
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_is_shared_by_concurrent_writers() {
        let t = Arc::new(Throttle::new(Duration::from_secs(1)));
        let start = Instant::now();
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    t.wait().await;
                    start.elapsed()
                })
            })
            .collect();
        let mut at = Vec::new();
        for task in tasks {
            at.push(task.await.expect("join"));
        }
        at.sort();
        assert_eq!(at, [0, 1, 2].map(Duration::from_secs));
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_does_not_delay_after_a_pause() {
        let t = Throttle::new(Duration::from_secs(1));
        t.wait().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = Instant::now();
        t.wait().await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    fn reply(status: u16, headers: &[(&'static str, &str)], body: &str) -> Reply {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        Reply {
            status: StatusCode::from_u16(status).expect("status"),
            headers: map,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn reads_rate_limit_answers() {
        let c = HostConfig::new("h", Kind::GitHub, "http://h");
        let w = |r: &Reply| rate_limit_wait(r, &c).map(|(d, _)| d);
        assert_eq!(w(&reply(429, &[("retry-after", "7")], "")), Some(Duration::from_secs(7)));
        assert_eq!(w(&reply(403, &[("retry-after", "2")], "{}")), Some(Duration::from_secs(2)));
        let reset = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("now").as_secs() + 30;
        let d =
            w(&reply(403, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset.to_string())], ""))
                .expect("primary");
        assert!(d > Duration::from_secs(28) && d <= Duration::from_secs(31), "{d:?}");
        let secondary =
            r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes."}"#;
        assert_eq!(w(&reply(403, &[], secondary)), Some(crate::config::DEFAULT_SECONDARY_WAIT));
        assert_eq!(
            w(&reply(403, &[("x-ratelimit-remaining", "10")], r#"{"message":"Resource not accessible"}"#)),
            None
        );
        assert_eq!(w(&reply(422, &[("retry-after", "1")], "")), None);
        let quickly = r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"unprocessable","field":"data","message":"was submitted too quickly"}]}"#;
        assert_eq!(w(&reply(422, &[], quickly)), Some(crate::config::DEFAULT_SECONDARY_WAIT));
        assert_eq!(w(&reply(404, &[], "")), None);
    }

    #[test]
    fn reads_host_messages() {
        let gh = r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for o:b."}]}"#;
        assert_eq!(
            reply(422, &[], gh).message(),
            "Validation Failed; A pull request already exists for o:b."
        );
        let gl = r#"{"message":["Another open merge request already exists for this source branch: !1"]}"#;
        assert_eq!(
            reply(409, &[], gl).message(),
            "Another open merge request already exists for this source branch: !1"
        );
        assert_eq!(
            reply(400, &[], r#"{"message":{"title":["is too long"]}}"#).message(),
            "title is too long"
        );
        assert_eq!(reply(502, &[], "Bad gateway\nmore").message(), "Bad gateway");
        assert_eq!(enc("group/sub repo"), "group%2Fsub%20repo");
    }
}
