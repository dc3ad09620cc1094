//! A scripted model server on a loopback port, for driving the real agent CLIs in tests
//! without a network: Anthropic's Messages API (`POST /v1/messages`, what Claude Code calls
//! with `ANTHROPIC_BASE_URL`) and OpenAI's Responses API (`POST /v1/responses`, what Codex
//! calls through a `model_providers` entry), both streaming server-sent events.
//!
//! A test scripts what the "model" answers ([`Reply`]: text, a tool call for the CLI's real
//! edit or shell tool, an error with the body and headers the CLI recognises, token usage)
//! and reads back every request the CLI sent ([`Request`]: path, headers, JSON body; the
//! system prompt, the tools, the model, the workspace the CLI says it works in).
//!
//! Replies are scripted per conversation: every conversation (the CLI's session id, sent in
//! `X-Claude-Code-Session-Id` by Claude Code and `session-id` by Codex) plays the script from
//! its start, so four CLIs running at once in four worktrees each get the same replies in
//! order, and a resumed session carries on where it stopped. One-off replies queued with
//! [`ModelServer::queue`] are taken first, by whichever model request comes next.
//!
//! Everything else a CLI asks at start (`HEAD /api/hello`, model listings, telemetry, token
//! counts) is answered at once (an empty list, a count, or 404) so that nothing waits.
//!
//! ```no_run
//! use grove_tests::model_server::{ModelServer, Reply};
//! let server = ModelServer::start();
//! server.script(vec![Reply::write("notes.txt", "hello\n").usage(1234, 56), Reply::text("Done.")]);
//! // ANTHROPIC_BASE_URL=server.anthropic_url() ANTHROPIC_API_KEY=x claude -p ...
//! let asked = server.model_requests();
//! assert!(asked[0].text().contains("the prompt"));
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

/// Which of the two APIs a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Anthropic's Messages API (`POST /v1/messages`).
    Anthropic,
    /// OpenAI's Responses API (`POST /v1/responses`).
    OpenAi,
    /// Google's Gemini API (`POST /v1beta/models/MODEL:streamGenerateContent`).
    Gemini,
}

/// One HTTP request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path with its query (`/v1/messages?beta=true`).
    pub path: String,
    /// Header names in lowercase, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body, when it is JSON.
    pub json: Option<Value>,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The path without its query.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// The model API this request calls, if it is a model turn (not a token count).
    pub fn api(&self) -> Option<Api> {
        if self.method != "POST" {
            return None;
        }
        match self.route() {
            "/v1/messages" => Some(Api::Anthropic),
            "/v1/responses" => Some(Api::OpenAi),
            r if r.starts_with("/v1beta/models/") && r.ends_with(":streamGenerateContent") => {
                Some(Api::Gemini)
            }
            _ => None,
        }
    }

    /// The body's JSON, or `null`.
    pub fn body_json(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.json.as_ref().unwrap_or(&NULL)
    }

    /// The model asked for (in the body, or in Gemini's path).
    pub fn model(&self) -> Option<&str> {
        self.body_json()["model"].as_str().or_else(|| {
            let rest = self.route().strip_prefix("/v1beta/models/")?;
            rest.split(':').next()
        })
    }

    /// The conversation this request belongs to: the CLI's session id, else the workspace.
    pub fn conversation(&self) -> String {
        self.header("x-claude-code-session-id")
            .or_else(|| self.header("session-id"))
            .or_else(|| self.header("session_id"))
            .map(str::to_owned)
            .or_else(|| self.workdir())
            .unwrap_or_default()
    }

    /// Every string in the body joined by newlines: what to search for a prompt or a path.
    pub fn text(&self) -> String {
        let mut out = String::new();
        collect_strings(self.body_json(), &mut out);
        out
    }

    /// The system prompt: Anthropic's `system` (and system-role messages), or OpenAI's
    /// `instructions` and developer/system messages.
    pub fn system(&self) -> String {
        let b = self.body_json();
        let mut out = String::new();
        collect_strings(&b["system"], &mut out);
        collect_strings(&b["instructions"], &mut out);
        collect_strings(&b["systemInstruction"], &mut out);
        for m in b["messages"].as_array().into_iter().chain(b["input"].as_array()).flatten() {
            if matches!(m["role"].as_str(), Some("system" | "developer")) {
                collect_strings(&m["content"], &mut out);
            }
        }
        out
    }

    /// The names of the tools offered to the model.
    pub fn tool_names(&self) -> Vec<String> {
        let tools = self.body_json()["tools"].as_array().into_iter().flatten();
        let gemini = tools.clone().flat_map(|t| t["functionDeclarations"].as_array().into_iter().flatten());
        tools.chain(gemini).filter_map(|t| t["name"].as_str().map(str::to_owned)).collect()
    }

    /// The tool results sent back in this request (Anthropic `tool_result` blocks, OpenAI
    /// `function_call_output` items), as text.
    pub fn tool_results(&self) -> Vec<String> {
        let b = self.body_json();
        let mut out = Vec::new();
        for m in b["messages"].as_array().into_iter().flatten() {
            for block in m["content"].as_array().into_iter().flatten() {
                if block["type"] == "tool_result" {
                    let mut s = String::new();
                    collect_strings(&block["content"], &mut s);
                    out.push(s);
                }
            }
        }
        let parts = b["contents"].as_array().into_iter().flatten();
        for part in parts.flat_map(|c| c["parts"].as_array().into_iter().flatten()) {
            if part.get("functionResponse").is_some() {
                let mut s = String::new();
                collect_strings(&part["functionResponse"]["response"], &mut s);
                out.push(s);
            }
        }
        for item in b["input"].as_array().into_iter().flatten() {
            if item["type"] == "function_call_output" || item["type"] == "custom_tool_call_output" {
                let mut s = String::new();
                collect_strings(&item["output"], &mut s);
                out.push(s);
            }
        }
        out
    }

    /// The directory the CLI says it works in: Claude Code's "Primary working directory: "
    /// line, Codex's `<cwd>` element, or the first of Gemini CLI's "Workspace Directories".
    /// The last one named: a session resumed elsewhere still carries its earlier one.
    pub fn workdir(&self) -> Option<String> {
        let text = self.text();
        let markers =
            ["Primary working directory: ", "**Workspace Directories:**\n  - ", "  Working directory: "];
        for marker in markers {
            if let Some(i) = text.rfind(marker) {
                let rest = &text[i + marker.len()..];
                // Claude Code names a resumed session's old folder: "X (was Y)".
                let line = rest.lines().next().unwrap_or("");
                return Some(line.split(" (was ").next().unwrap_or(line).trim().to_owned());
            }
        }
        let i = text.find("<cwd>")?;
        let rest = &text[i + "<cwd>".len()..];
        Some(rest[..rest.find("</cwd>")?].trim().to_owned())
    }
}

fn collect_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Token usage reported with a reply. Anthropic's `input_tokens` are the uncached ones;
/// OpenAI's `input_tokens` include the cached ones (`cached_tokens`): each API is sent its
/// own shape from the same numbers, with `input` meaning uncached input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage { input: 100, output: 10, cache_read: 0, cache_write: 0 }
    }
}

/// What the model answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    kind: Kind,
    usage: Usage,
}

#[derive(Debug, Clone)]
enum Kind {
    Text(String),
    /// A tool call. String values in `input` have `{cwd}` replaced by the request's workspace.
    Tool {
        name: String,
        input: Value,
    },
    /// The CLI's shell tool: Claude Code's `Bash`, Codex's `exec_command`, Gemini CLI's
    /// `run_shell_command`.
    Exec(String),
    /// The CLI's file-writing tool: Claude Code's `Write`, Gemini CLI's `write_file`; Codex
    /// (whose edits are patches) gets a shell command writing the file.
    Write {
        path: String,
        content: String,
    },
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    Hold,
}

impl Reply {
    /// A final text answer (the model ends its turn).
    pub fn text(text: impl Into<String>) -> Reply {
        Reply { kind: Kind::Text(text.into()), usage: Usage::default() }
    }

    /// A call of tool `name` with `input` (Anthropic `tool_use`, OpenAI `function_call`).
    /// `{cwd}` in any string of `input` becomes the workspace the request names.
    pub fn tool(name: impl Into<String>, input: Value) -> Reply {
        Reply { kind: Kind::Tool { name: name.into(), input }, usage: Usage::default() }
    }

    /// Write `content` to `path` (relative to the workspace, or absolute) with the CLI's own
    /// tool: Claude Code's `Write`, Gemini CLI's `write_file`, for Codex its shell tool.
    pub fn write(path: &str, content: &str) -> Reply {
        Reply {
            kind: Kind::Write { path: in_cwd(path), content: content.to_owned() },
            usage: Usage::default(),
        }
    }

    /// Claude Code's `Edit` tool: replace `old` by `new` in `path` (the file must have been
    /// read in the session first: script a `Read` before it).
    pub fn edit(path: &str, old: &str, new: &str) -> Reply {
        Reply::tool(
            "Edit",
            json!({ "file_path": in_cwd(path), "old_string": old, "new_string": new, "replace_all": false }),
        )
    }

    /// Claude Code's `Read` tool.
    pub fn read(path: &str) -> Reply {
        Reply::tool("Read", json!({ "file_path": in_cwd(path) }))
    }

    /// Run `cmd` with the CLI's shell tool, in the turn's working directory: Claude Code's
    /// `Bash` (it needs `--allowedTools Bash` or a permission mode that allows it), Codex's
    /// `exec_command`, Gemini CLI's `run_shell_command`.
    pub fn exec(cmd: &str) -> Reply {
        Reply { kind: Kind::Exec(cmd.to_owned()), usage: Usage::default() }
    }

    /// An HTTP error with this status, headers and body.
    pub fn status(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        Reply {
            kind: Kind::Status {
                status,
                headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                body: body.to_owned(),
            },
            usage: Usage::default(),
        }
    }

    /// Anthropic's answer when a claude.ai plan's limit is used up until `reset` (unix
    /// seconds): 429 with the unified rate-limit headers Claude Code reads its reset from.
    pub fn anthropic_usage_limit(reset: i64) -> Reply {
        let reset = reset.to_string();
        Reply::status(
            429,
            &[
                ("anthropic-ratelimit-unified-status", "rejected"),
                ("anthropic-ratelimit-unified-reset", &reset),
                ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
                ("anthropic-ratelimit-unified-5h-status", "rejected"),
                ("anthropic-ratelimit-unified-5h-reset", &reset),
                ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
                ("x-should-retry", "false"),
                ("request-id", "req_limit"),
            ],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#,
        )
    }

    /// Anthropic's 429 for a plain rate limit (API key), retry after `retry_after` seconds.
    pub fn anthropic_rate_limit(retry_after: u64) -> Reply {
        let after = retry_after.to_string();
        Reply::status(
            429,
            &[("retry-after", &after), ("x-should-retry", "false"), ("request-id", "req_rate")],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
        )
    }

    /// Anthropic's 401 for a bad API key.
    pub fn anthropic_auth_error() -> Reply {
        Reply::status(
            401,
            &[("x-should-retry", "false"), ("request-id", "req_auth")],
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        )
    }

    /// OpenAI's answer when a ChatGPT plan's Codex limit is used up until `reset` (unix
    /// seconds): 429 with `error.type = "usage_limit_reached"`, which Codex shows as "You've
    /// hit your usage limit. ... try again at <time>."
    pub fn openai_usage_limit(reset: i64) -> Reply {
        let body = json!({
            "error": {
                "type": "usage_limit_reached",
                "message": "The usage limit has been reached",
                "plan_type": "plus",
                "resets_at": reset,
            }
        });
        Reply::status(429, &[("x-request-id", "req_limit")], &body.to_string())
    }

    /// OpenAI's 429 for an API key out of quota ("Quota exceeded" in Codex).
    pub fn openai_quota_exceeded() -> Reply {
        let body = json!({
            "error": {
                "type": "insufficient_quota",
                "code": "insufficient_quota",
                "message": "You exceeded your current quota, please check your plan and billing details.",
            }
        });
        Reply::status(429, &[("x-request-id", "req_quota")], &body.to_string())
    }

    /// OpenAI's 401 for a bad API key.
    pub fn openai_auth_error() -> Reply {
        let body = json!({
            "error": {
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "message": "Incorrect API key provided: x. You can find your API key at https://platform.openai.com/account/api-keys.",
            }
        });
        Reply::status(401, &[("x-request-id", "req_auth")], &body.to_string())
    }

    /// Hold the request unanswered until [`ModelServer::release`] (or the server ends): the
    /// CLI is then mid-turn, for as long as the test needs it to be.
    pub fn hold() -> Reply {
        Reply { kind: Kind::Hold, usage: Usage::default() }
    }

    /// Report `input` (uncached) and `output` tokens for this reply.
    pub fn usage(mut self, input: u64, output: u64) -> Reply {
        self.usage.input = input;
        self.usage.output = output;
        self
    }

    /// Report cache reads and writes (prompt caching) for this reply.
    pub fn cache(mut self, read: u64, write: u64) -> Reply {
        self.usage.cache_read = read;
        self.usage.cache_write = write;
        self
    }
}

/// `path` as a workspace path template: absolute paths stay.
fn in_cwd(path: &str) -> String {
    if path.starts_with('/') { path.to_owned() } else { format!("{{cwd}}/{path}") }
}

type Handler = Box<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// One-off replies, taken by the next model request.
    queued: VecDeque<Reply>,
    /// How many model requests each conversation has sent.
    turns: HashMap<String, usize>,
    handler: Option<Handler>,
    /// Bumped by `release`: held requests answer when it moves.
    released: u64,
    held: usize,
    ids: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A scripted model server on `127.0.0.1`, stopped when dropped.
pub struct ModelServer {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ModelServer {
    /// Start on a free loopback port. With no script, every model request gets "done".
    pub fn start() -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the model server");
        let port = listener.local_addr().expect("model server address").port();
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        ModelServer { port, shared, accept: Some(accept) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// For `ANTHROPIC_BASE_URL`.
    pub fn anthropic_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The base URL of the OpenAI-style API (`…/v1`).
    pub fn openai_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The Codex `-c` arguments that make this server its model provider `mock`, with the key
    /// read from `OPENAI_API_KEY` and no retries (a scripted error is seen at once).
    pub fn codex_provider_args(&self) -> Vec<String> {
        vec![
            "-c".into(),
            "model_provider=mock".into(),
            "-c".into(),
            format!(
                "model_providers.mock={{name=\"mock\",base_url=\"{}\",wire_api=\"responses\",env_key=\"OPENAI_API_KEY\",request_max_retries=0,stream_max_retries=0}}",
                self.openai_url()
            ),
        ]
    }

    /// The environment that points Claude Code at this server, keeps it off the network
    /// (no telemetry, error reports or update checks) and keeps its state under `home`.
    pub fn claude_env(&self, home: &std::path::Path) -> Vec<(String, String)> {
        [
            ("ANTHROPIC_BASE_URL", self.anthropic_url()),
            ("ANTHROPIC_API_KEY", "sk-ant-test".to_owned()),
            ("CLAUDE_CONFIG_DIR", home.join(".claude").display().to_string()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
            ("DISABLE_AUTOUPDATER", "1".to_owned()),
            ("DISABLE_TELEMETRY", "1".to_owned()),
            ("DISABLE_ERROR_REPORTING", "1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// [`Self::claude_env`] signed in as a claude.ai subscriber (`CLAUDE_CODE_OAUTH_TOKEN`
    /// instead of an API key): only then does Claude Code read the unified rate-limit
    /// headers of [`Reply::anthropic_usage_limit`] into a `rate_limit_event` and its "You've
    /// hit your … limit · resets …" text.
    pub fn claude_oauth_env(&self, home: &std::path::Path) -> Vec<(String, String)> {
        let mut env: Vec<_> =
            self.claude_env(home).into_iter().filter(|(k, _)| k != "ANTHROPIC_API_KEY").collect();
        env.push(("CLAUDE_CODE_OAUTH_TOKEN".to_owned(), "sk-ant-oat01-test".to_owned()));
        env
    }

    /// The environment for Codex: its API key and a `CODEX_HOME` under `home` (made here:
    /// Codex refuses a missing one). The provider itself is in [`Self::codex_provider_args`].
    pub fn codex_env(&self, home: &std::path::Path) -> Vec<(String, String)> {
        let codex_home = home.join(".codex");
        std::fs::create_dir_all(&codex_home).expect("make CODEX_HOME");
        vec![
            ("OPENAI_API_KEY".to_owned(), "sk-test".to_owned()),
            ("CODEX_HOME".to_owned(), codex_home.display().to_string()),
        ]
    }

    /// The environment for Gemini CLI: this server as its API (`GOOGLE_GEMINI_BASE_URL`), an
    /// API key, and `home/.gemini/settings.json` (made here) choosing API-key auth with
    /// telemetry, usage statistics and update checks off.
    pub fn gemini_env(&self, home: &std::path::Path) -> Vec<(String, String)> {
        let dir = home.join(".gemini");
        std::fs::create_dir_all(&dir).expect("make ~/.gemini");
        let settings = json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "telemetry": {"enabled": false},
            "privacy": {"usageStatisticsEnabled": false},
            "general": {"disableAutoUpdate": true, "disableUpdateNag": true},
        });
        std::fs::write(dir.join("settings.json"), settings.to_string()).expect("write Gemini CLI settings");
        vec![
            ("GOOGLE_GEMINI_BASE_URL".to_owned(), format!("http://127.0.0.1:{}", self.port)),
            ("GEMINI_API_KEY".to_owned(), "gemini-test-key".to_owned()),
        ]
    }

    /// The environment for OpenCode: `home/.config/opencode/opencode.json` (made here) points
    /// its `anthropic` provider at this server, with sharing, updates and the model list
    /// fetch off. Run it as `opencode run --format json -m anthropic/MODEL PROMPT`.
    pub fn opencode_env(&self, home: &std::path::Path) -> Vec<(String, String)> {
        let dir = home.join(".config/opencode");
        std::fs::create_dir_all(&dir).expect("make OpenCode's config dir");
        let config = json!({
            "$schema": "https://opencode.ai/config.json",
            "provider": {"anthropic": {"options": {"baseURL": format!("{}/v1", self.anthropic_url()), "apiKey": "sk-ant-test"}}},
            "autoupdate": false,
            "share": "disabled",
        });
        std::fs::write(dir.join("opencode.json"), config.to_string()).expect("write opencode.json");
        [
            ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
            ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
            ("OPENCODE_DISABLE_SHARE", "1"),
            ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Every conversation plays `replies` in order from its start; past their end it gets
    /// "done".
    pub fn script(&self, replies: Vec<Reply>) {
        self.respond(move |_, n| replies.get(n).cloned().unwrap_or_else(|| Reply::text("done")));
    }

    /// Answer model requests with `f(request, n)`, `n` being how many model requests the
    /// request's conversation sent before this one.
    pub fn respond(&self, f: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) {
        self.shared.lock().handler = Some(Box::new(f));
    }

    /// A one-off reply for the next model request, before any script.
    pub fn queue(&self, reply: Reply) {
        self.shared.lock().queued.push_back(reply);
    }

    /// Answer every request held by [`Reply::hold`] so far (with "done").
    pub fn release(&self) {
        let mut st = self.shared.lock();
        st.released += 1;
        self.shared.changed.notify_all();
    }

    /// Wait until `n` requests are held (at most `within`); whether they are.
    pub fn wait_held(&self, n: usize, within: Duration) -> bool {
        let st = self.shared.lock();
        let (st, _) = self
            .shared
            .changed
            .wait_timeout_while(st, within, |st| st.held < n)
            .unwrap_or_else(|e| e.into_inner());
        st.held >= n
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// The model requests (`POST /v1/messages`, `POST /v1/responses`) received so far.
    pub fn model_requests(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.api().is_some()).collect()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Serve requests on one connection until the client closes it.
fn serve(shared: &Shared, conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(write_half) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    let mut out = write_half;
    while let Some(req) = read_request(&mut reader) {
        let keep = !req.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let response = answer(shared, req);
        if out.write_all(&response).and_then(|()| out.flush()).is_err() || !keep {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = get("content-length").and_then(|n| n.parse::<usize>().ok()) {
        body = vec![0; n];
        r.read_exact(&mut body).ok()?;
    }
    let json = serde_json::from_slice(&body).ok();
    Some(Request { method, path, headers, body, json })
}

fn answer(shared: &Shared, req: Request) -> Vec<u8> {
    let api = req.api();
    let route = req.route().to_owned();
    let method = req.method.clone();
    let (reply, id) = {
        let mut st = shared.lock();
        st.requests.push(req.clone());
        st.ids += 1;
        let id = st.ids;
        let reply = match api {
            None => None,
            // A helper call without tools (OpenCode's title for the session, say): a short
            // text that does not move the conversation's script.
            Some(_) if req.tool_names().is_empty() => Some(Reply::text("Scripted session")),
            Some(_) => {
                let key = req.conversation();
                let n = *st.turns.get(&key).unwrap_or(&0);
                st.turns.insert(key, n + 1);
                let r = match st.queued.pop_front() {
                    Some(r) => r,
                    None => st.handler.as_ref().map_or_else(|| Reply::text("done"), |h| h(&req, n)),
                };
                Some(r)
            }
        };
        shared.changed.notify_all();
        (reply, id)
    };
    let Some(mut reply) = reply else {
        return side_answer(&method, &route);
    };
    if let Kind::Hold = reply.kind {
        let mut st = shared.lock();
        let seen = st.released;
        st.held += 1;
        shared.changed.notify_all();
        let mut st = shared
            .changed
            .wait_while(st, |st| st.released == seen && !shared.stop.load(Ordering::SeqCst))
            .unwrap_or_else(|e| e.into_inner());
        st.held -= 1;
        drop(st);
        reply = Reply { kind: Kind::Text("done".into()), usage: reply.usage };
    }
    let cwd = req.workdir().unwrap_or_default();
    match (api, &reply.kind) {
        (_, Kind::Status { status, headers, body }) => {
            http(*status, "application/json", headers, body.as_bytes())
        }
        (Some(Api::Anthropic), _) => {
            // OpenCode speaks this API too, with its own tool names.
            let opencode = req.tool_names().iter().any(|n| n == "write");
            sse(&anthropic_events(&reply, &cwd, id, req.model(), opencode))
        }
        (Some(Api::Gemini), _) => sse_data(&gemini_events(&reply, &cwd, req.model())),
        (_, _) => sse(&openai_events(&reply, &cwd, id)),
    }
}

/// The calls a CLI makes besides model turns.
fn side_answer(method: &str, route: &str) -> Vec<u8> {
    match (method, route) {
        ("POST", "/v1/messages/count_tokens") => {
            http(200, "application/json", &[], br#"{"input_tokens":1000}"#)
        }
        ("GET", "/v1/models") => {
            http(200, "application/json", &[], br#"{"object":"list","data":[],"has_more":false}"#)
        }
        // Gemini CLI's model router (a one-shot classifier of the prompt): a low score.
        ("POST", r) if r.starts_with("/v1beta/models/") && r.ends_with(":generateContent") => http(
            200,
            "application/json",
            &[],
            br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"{\"complexity_reasoning\":\"scripted\",\"complexity_score\":10}"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1,"totalTokenCount":2}}"#,
        ),
        ("POST", r) if r.starts_with("/v1beta/models/") && r.ends_with(":countTokens") => {
            http(200, "application/json", &[], br#"{"totalTokens":1000}"#)
        }
        ("HEAD", _) => http(404, "application/json", &[], b""),
        _ => http(
            404,
            "application/json",
            &[],
            br#"{"error":{"type":"not_found_error","message":"not here"}}"#,
        ),
    }
}

fn http(status: u16, content_type: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Status",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Server-sent events with data lines only (Gemini's `alt=sse`).
fn sse_data(events: &[Value]) -> Vec<u8> {
    let body: String = events.iter().map(|d| format!("data: {d}\r\n\r\n")).collect();
    http(200, "text/event-stream", &[], body.as_bytes())
}

fn sse(events: &[(&str, Value)]) -> Vec<u8> {
    let mut body = String::new();
    for (name, data) in events {
        body.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    http(200, "text/event-stream", &[("cache-control".into(), "no-cache".into())], body.as_bytes())
}

/// `{cwd}` in every string of `v` replaced by `cwd`.
fn fill_cwd(v: &Value, cwd: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("{cwd}", cwd)),
        Value::Array(a) => Value::Array(a.iter().map(|v| fill_cwd(v, cwd)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), fill_cwd(v, cwd))).collect()),
        other => other.clone(),
    }
}

fn anthropic_events(
    reply: &Reply,
    cwd: &str,
    id: u64,
    model: Option<&str>,
    opencode: bool,
) -> Vec<(&'static str, Value)> {
    let u = reply.usage;
    let start = json!({
        "type": "message_start",
        "message": {
            "id": format!("msg_{id:04}"), "type": "message", "role": "assistant",
            "model": model.unwrap_or("claude-sonnet-4-5"), "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {
                "input_tokens": u.input, "output_tokens": 1,
                "cache_read_input_tokens": u.cache_read, "cache_creation_input_tokens": u.cache_write,
            },
        },
    });
    let mut events = vec![("message_start", start)];
    let stop_reason = match &reply.kind {
        Kind::Tool { name, input } => {
            let input = fill_cwd(input, cwd);
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "tool_use", "id": format!("toolu_{id:04}"), "name": name, "input": {}}}),
            ));
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
            ));
            "tool_use"
        }
        Kind::Exec(_) | Kind::Write { .. } => {
            let (name, input) = match &reply.kind {
                Kind::Write { path, content } if opencode => {
                    ("write", json!({"filePath": path.replace("{cwd}", cwd), "content": content}))
                }
                Kind::Write { path, content } => {
                    ("Write", json!({"file_path": path.replace("{cwd}", cwd), "content": content}))
                }
                Kind::Exec(cmd) if opencode => {
                    ("bash", json!({"command": cmd, "description": "run a command"}))
                }
                Kind::Exec(cmd) => ("Bash", json!({"command": cmd, "description": "run a command"})),
                _ => ("Bash", json!({})),
            };
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "tool_use", "id": format!("toolu_{id:04}"), "name": name, "input": {}}}),
            ));
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
            ));
            "tool_use"
        }
        Kind::Text(text) => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            ));
            "end_turn"
        }
        Kind::Status { .. } | Kind::Hold => "end_turn",
    };
    events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": u.output}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
}

fn openai_events(reply: &Reply, cwd: &str, id: u64) -> Vec<(&'static str, Value)> {
    let u = reply.usage;
    let item = match &reply.kind {
        Kind::Tool { name, input } => json!({
            "type": "function_call", "id": format!("fc_{id:04}"), "call_id": format!("call_{id:04}"),
            "name": name, "arguments": fill_cwd(input, cwd).to_string(), "status": "completed",
        }),
        Kind::Exec(cmd) => json!({
            "type": "function_call", "id": format!("fc_{id:04}"), "call_id": format!("call_{id:04}"),
            "name": "exec_command", "arguments": json!({"cmd": cmd}).to_string(), "status": "completed",
        }),
        Kind::Write { path, content } => {
            let cmd = format!(
                "printf '%s' {} > {}",
                shell_quote(content),
                shell_quote(&path.replace("{cwd}", cwd))
            );
            json!({
                "type": "function_call", "id": format!("fc_{id:04}"), "call_id": format!("call_{id:04}"),
                "name": "exec_command", "arguments": json!({"cmd": cmd}).to_string(), "status": "completed",
            })
        }
        Kind::Text(text) => json!({
            "type": "message", "id": format!("msg_{id:04}"), "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }),
        Kind::Status { .. } | Kind::Hold => json!({
            "type": "message", "id": format!("msg_{id:04}"), "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": "done", "annotations": []}],
        }),
    };
    let resp = format!("resp_{id:04}");
    vec![
        (
            "response.created",
            json!({"type": "response.created", "response": {"id": resp, "status": "in_progress"}}),
        ),
        (
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
        ),
        (
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        ),
        (
            "response.completed",
            json!({"type": "response.completed", "response": {
                "id": resp, "status": "completed",
                "usage": {
                    "input_tokens": u.input + u.cache_read,
                    "input_tokens_details": {"cached_tokens": u.cache_read},
                    "output_tokens": u.output,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": u.input + u.cache_read + u.output,
                },
            }}),
        ),
    ]
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn gemini_events(reply: &Reply, cwd: &str, model: Option<&str>) -> Vec<Value> {
    let u = reply.usage;
    let part = match &reply.kind {
        Kind::Text(text) => json!({"text": text}),
        Kind::Tool { name, input } => json!({"functionCall": {"name": name, "args": fill_cwd(input, cwd)}}),
        Kind::Exec(cmd) => json!({"functionCall": {"name": "run_shell_command", "args": {"command": cmd}}}),
        Kind::Write { path, content } => json!({"functionCall": {"name": "write_file",
            "args": {"file_path": path.replace("{cwd}", cwd), "content": content}}}),
        Kind::Status { .. } | Kind::Hold => json!({"text": "done"}),
    };
    vec![json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {
            "promptTokenCount": u.input + u.cache_read,
            "cachedContentTokenCount": u.cache_read,
            "candidatesTokenCount": u.output,
            "totalTokenCount": u.input + u.cache_read + u.output,
        },
        "modelVersion": model.unwrap_or("gemini-test"),
    })]
}
