//! Claude Code: `claude -p --output-format stream-json --verbose`.
//!
//! The stream is one JSON object a line: `system` (`init` has the session id and model,
//! `api_retry` a failed call being retried), `assistant` (a message, with the usage of the API
//! call that made it, repeated per content block), `user` (tool results), `rate_limit_event`
//! (subscription plans: `status: rejected` carries `resetsAt`, the reset time in unix
//! seconds), and one `result` at the end: `subtype`, `is_error`, `api_error_status`, `result`
//! (the final text), `session_id`, `total_cost_usd`, `usage`, `modelUsage`,
//! `model_usage_since_last_result`, `permission_denials`.
//!
//! Verified against Claude Code 2.1.328: on a resumed session `total_cost_usd` and
//! `modelUsage` are the session's running totals, while `usage` and
//! `model_usage_since_last_result` are this run's; a turn's cost is the latter's `costUSD`.

use std::collections::BTreeMap;

use grove_core::usage::{TurnOutcome, TurnReport, Usage};
use serde_json::Value;

use super::json::{self, str_at, u64_at};
use super::{Context, Invocation, Parser, Plan};
use crate::process::{End, Stream};

/// What Claude may run unattended as root, where `bypassPermissions` is refused: file edits
/// are accepted by `acceptEdits`, these are allowed on top.
const ROOT_ALLOWED: &str = "Bash,WebFetch,WebSearch,TodoWrite,Task";

pub fn invocation(plan: &Plan<'_>) -> Invocation {
    let mut args: Vec<String> =
        ["-p", "--output-format", "stream-json", "--verbose"].iter().map(|s| (*s).to_owned()).collect();
    let mut notes = Vec::new();
    let tools = plan.persona.and_then(|p| p.tools.as_ref()).map(|t| tool_names(t));
    if plan.as_root {
        // `--dangerously-skip-permissions` (and `bypassPermissions`) exit 1 as root.
        args.extend(["--permission-mode".into(), "acceptEdits".into()]);
        let allowed = tools.clone().unwrap_or_else(|| ROOT_ALLOWED.split(',').map(str::to_owned).collect());
        if !allowed.is_empty() {
            args.push(format!("--allowedTools={}", allowed.join(",")));
        }
        notes.push(format!(
            "claude: running as root, where Claude Code refuses bypassPermissions: --permission-mode \
             acceptEdits with --allowedTools {}",
            allowed.join(",")
        ));
    } else {
        args.extend(["--permission-mode".into(), "bypassPermissions".into()]);
        if let Some(t) = &tools {
            args.push(format!("--allowedTools={}", t.join(",")));
        }
        notes.push("claude: --permission-mode bypassPermissions (nothing is asked)".into());
    }
    if let Some(t) = &tools {
        args.push(format!("--tools={}", t.join(",")));
    }
    if let Some(m) = plan.model {
        args.extend(["--model".into(), m.to_owned()]);
    }
    if let Some(s) = plan.resume {
        args.extend(["--resume".into(), s.id.clone()]);
    }
    if let Some(usd) = plan.usd_left {
        // A second line of defence: grove stops the turn itself when the stream shows it over.
        let usd = format!("{:.4}", usd.max(0.0001));
        notes.push(format!("claude: --max-budget-usd {usd} (what the budget has left)"));
        args.extend(["--max-budget-usd".into(), usd]);
    }
    if let Some(p) = plan.persona.filter(|p| !p.instructions.trim().is_empty()) {
        args.extend(["--append-system-prompt".into(), p.instructions.clone()]);
    }
    args.extend(plan.args.iter().cloned());
    args.push("--".into());
    args.push(plan.prompt.to_owned());
    Invocation { program: super::program(plan), args, env: Vec::new(), notes }
}

/// A definition's tool names (GitHub's aliases, Claude's own names, `server/tool` for MCP) as
/// Claude Code's tool names; unknown names are dropped, as VS Code and Copilot do.
pub fn tool_names(tools: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |names: &[&str]| {
        for n in names {
            if !out.iter().any(|o| o == n) {
                out.push((*n).to_owned());
            }
        }
    };
    for t in tools {
        let t = t.trim();
        if let Some((server, tool)) = t.split_once('/') {
            let tool = if tool == "*" { String::new() } else { format!("__{tool}") };
            add(&[&format!("mcp__{server}{tool}")]);
            continue;
        }
        match t.to_ascii_lowercase().as_str() {
            "*" => add(&[
                "Bash",
                "Read",
                "Edit",
                "MultiEdit",
                "Write",
                "NotebookEdit",
                "Grep",
                "Glob",
                "Task",
                "WebSearch",
                "WebFetch",
                "TodoWrite",
            ]),
            "execute" | "shell" | "bash" | "powershell" | "runcommands" | "terminal" => add(&["Bash"]),
            "read" | "notebookread" | "readfile" => add(&["Read"]),
            "edit" | "write" | "multiedit" | "notebookedit" | "editfiles" => {
                add(&["Edit", "MultiEdit", "Write", "NotebookEdit"])
            }
            "search" | "grep" | "glob" | "codebase" => add(&["Grep", "Glob"]),
            "agent" | "custom-agent" | "task" => add(&["Task"]),
            "web" | "websearch" | "webfetch" | "fetch" => add(&["WebSearch", "WebFetch"]),
            "todo" | "todowrite" => add(&["TodoWrite"]),
            "ls" => add(&["LS"]),
            _ => {}
        }
    }
    out
}

/// Reads Claude Code's stream-json.
pub struct ClaudeParser {
    ctx: Context,
    session: Option<String>,
    model: Option<String>,
    /// The usage of each API call (by message id: a message's blocks repeat it) and its model.
    calls: BTreeMap<String, (Option<String>, Usage)>,
    last_text: Option<String>,
    asked: Option<String>,
    assistant_error: Option<String>,
    rejected_until: Option<i64>,
    retrying: Option<String>,
    result: Option<Value>,
    resume_missing: bool,
    stderr: Vec<String>,
}

impl ClaudeParser {
    pub fn new(ctx: Context) -> ClaudeParser {
        ClaudeParser {
            ctx,
            session: None,
            model: None,
            calls: BTreeMap::new(),
            last_text: None,
            asked: None,
            assistant_error: None,
            rejected_until: None,
            retrying: None,
            result: None,
            resume_missing: false,
            stderr: Vec::new(),
        }
    }

    fn message(&mut self, v: &Value) {
        let Some(m) = v.get("message") else { return };
        let model = str_at(m, "model").filter(|m| !m.starts_with('<')).map(str::to_owned);
        if model.is_some() {
            self.model.clone_from(&model);
        }
        if let Some(e) = str_at(v, "error") {
            self.assistant_error = Some(e.to_owned());
        }
        if let (Some(id), Some(u)) = (str_at(m, "id"), m.get("usage")) {
            self.calls.insert(id.to_owned(), (model, usage_of(u)));
        }
        for block in m.get("content").and_then(Value::as_array).into_iter().flatten() {
            match str_at(block, "type") {
                Some("text") => {
                    if let Some(t) = str_at(block, "text").filter(|t| !t.trim().is_empty()) {
                        self.last_text = Some(t.to_owned());
                    }
                }
                Some("tool_use") if str_at(block, "name") == Some("AskUserQuestion") => {
                    self.asked = ask_user_question(block.get("input").unwrap_or(&Value::Null));
                }
                _ => {}
            }
        }
    }

    /// This turn's usage and cost from the result line.
    fn result_usage(&self, r: &Value) -> Usage {
        let since = r.get("model_usage_since_last_result").and_then(Value::as_object);
        if let Some(models) = since.filter(|m| !m.is_empty()) {
            let mut u = Usage::zero();
            for m in models.values() {
                let cost = m.get("costUSD").and_then(Value::as_f64);
                u = u.add(&Usage::new(
                    u64_at(m, "inputTokens"),
                    u64_at(m, "outputTokens"),
                    u64_at(m, "cacheReadInputTokens"),
                    u64_at(m, "cacheCreationInputTokens"),
                    cost,
                ));
            }
            return u;
        }
        let tokens = r.get("usage").map(usage_of).unwrap_or_default();
        let total = r.get("total_cost_usd").and_then(Value::as_f64);
        // Older versions: the running total of a resumed session, less what it had before.
        let cost = total.map(|t| (t - self.ctx.before.known_cost()).max(0.0));
        Usage { cost_usd: cost, known_cost_usd: cost.unwrap_or(0.0), ..tokens }
    }

    fn outcome(&self, r: &Value, now: i64) -> TurnOutcome {
        let text = str_at(r, "result").unwrap_or_default().to_owned();
        let errors = r
            .get("errors")
            .and_then(Value::as_array)
            .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
            .unwrap_or_default();
        let message = if text.is_empty() { errors } else { text };
        let status = r.get("api_error_status").and_then(Value::as_u64);
        match str_at(r, "subtype") {
            Some("error_max_turns") => return TurnOutcome::MaxTurns,
            Some("error_max_budget_usd") => {
                return TurnOutcome::Budget("Claude Code stopped at its --max-budget-usd".into());
            }
            _ => {}
        }
        let is_error = r.get("is_error").and_then(Value::as_bool).unwrap_or(false);
        if !is_error && str_at(r, "subtype") == Some("success") {
            return TurnOutcome::Success;
        }
        let error = self.assistant_error.as_deref();
        if self.rejected_until.is_some() || status == Some(429) || error == Some("rate_limit") {
            let reset = self.rejected_until.or_else(|| crate::limits::usage_limit(&message, now));
            return TurnOutcome::UsageLimit { reset, message };
        }
        if matches!(status, Some(401 | 403))
            || error == Some("authentication_failed")
            || super::looks_like_auth(&message)
        {
            return TurnOutcome::Auth(message);
        }
        if status.is_none_or(|s| s >= 500)
            && (error == Some("server_error") || super::looks_like_network(&message))
        {
            return TurnOutcome::Network(message);
        }
        if message.is_empty() {
            TurnOutcome::Error(str_at(r, "subtype").unwrap_or("error").to_owned())
        } else {
            TurnOutcome::Error(message)
        }
    }
}

fn usage_of(u: &Value) -> Usage {
    Usage::new(
        u64_at(u, "input_tokens"),
        u64_at(u, "output_tokens"),
        u64_at(u, "cache_read_input_tokens"),
        u64_at(u, "cache_creation_input_tokens"),
        None,
    )
}

/// The questions of an `AskUserQuestion` call, one a line.
fn ask_user_question(input: &Value) -> Option<String> {
    let qs: Vec<String> = input
        .get("questions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|q| {
            let text = str_at(q, "question")?;
            let options: Vec<&str> = q
                .get("options")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|o| str_at(o, "label").or_else(|| o.as_str()))
                .collect();
            Some(if options.is_empty() {
                text.to_owned()
            } else {
                format!("{text} ({})", options.join(" / "))
            })
        })
        .collect();
    let single = str_at(input, "question").map(str::to_owned);
    if qs.is_empty() { single } else { Some(qs.join("\n")) }
}

/// What a person would have had to allow: `Bash (rm -rf target)`.
fn denials(r: &Value) -> Option<String> {
    let list: Vec<String> = r
        .get("permission_denials")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| {
            let tool = str_at(d, "tool_name").unwrap_or("a tool");
            let input = d.get("tool_input");
            let what = input
                .and_then(|i| {
                    str_at(i, "command").or_else(|| str_at(i, "file_path")).or_else(|| str_at(i, "url"))
                })
                .map(|w| format!(" ({w})"))
                .unwrap_or_default();
            format!("{tool}{what}")
        })
        .collect();
    (!list.is_empty()).then(|| format!("Claude Code was not allowed to use: {}", list.join(", ")))
}

impl Parser for ClaudeParser {
    fn line(&mut self, stream: Stream, line: &str) {
        if stream == Stream::Stderr {
            if line.contains("No conversation found with session ID") {
                self.resume_missing = true;
            }
            if !line.trim().is_empty() {
                self.stderr.push(line.to_owned());
                if self.stderr.len() > 20 {
                    self.stderr.remove(0);
                }
            }
            return;
        }
        let Some(v) = json::parse(line) else { return };
        if let Some(s) = str_at(&v, "session_id") {
            self.session = Some(s.to_owned());
        }
        match str_at(&v, "type") {
            Some("system") => match str_at(&v, "subtype") {
                Some("init") => {
                    if let Some(m) = str_at(&v, "model") {
                        self.model = Some(m.to_owned());
                    }
                }
                Some("api_retry") => {
                    let status = v.get("error_status").and_then(Value::as_u64);
                    let error = str_at(&v, "error").unwrap_or("unknown");
                    self.retrying = Some(match status {
                        Some(s) => format!("the API answered {s} ({error}); Claude Code is retrying"),
                        None => format!("the API could not be reached ({error}); Claude Code is retrying"),
                    });
                }
                _ => {}
            },
            Some("assistant") => self.message(&v),
            Some("rate_limit_event") => {
                let info = v.get("rate_limit_info").unwrap_or(&Value::Null);
                if str_at(info, "status") == Some("rejected") {
                    self.rejected_until = info.get("resetsAt").and_then(Value::as_i64);
                }
            }
            Some("result") => self.result = Some(v),
            _ => {}
        }
    }

    fn spent(&self) -> Usage {
        if let Some(r) = &self.result {
            return self.result_usage(r);
        }
        let mut total = Usage::zero();
        for (model, u) in self.calls.values() {
            let model = model.as_deref().or(self.model.as_deref()).or(self.ctx.model.as_deref());
            total = total.add(&self.ctx.prices.priced(model, *u));
        }
        total
    }

    fn finish(&mut self, end: &End, tail: &str, now: i64) -> TurnReport {
        let (outcome, usage, summary, question) = match self.result.clone() {
            Some(r) => {
                let summary = str_at(&r, "result").map(str::to_owned).filter(|s| !s.is_empty());
                let question = self.asked.clone().or_else(|| denials(&r));
                (self.outcome(&r, now), self.result_usage(&r), summary.or(self.last_text.clone()), question)
            }
            None => {
                let mut outcome = super::outcome_of_exit(end, &self.stderr.join("\n"), now);
                if let Some(reset) = self.rejected_until {
                    outcome = TurnOutcome::UsageLimit { reset: Some(reset), message: "usage limit".into() };
                } else if matches!(outcome, TurnOutcome::Error(_)) && self.retrying.is_some() {
                    outcome = TurnOutcome::Network(self.retrying.clone().unwrap_or_default());
                } else if let (TurnOutcome::Error(_), Some(line)) = (&outcome, super::last_line(tail))
                    && matches!(end, End::Exited(_))
                    && self.stderr.is_empty()
                {
                    outcome = TurnOutcome::Error(line);
                }
                (outcome, self.spent(), self.last_text.clone(), self.asked.clone())
            }
        };
        TurnReport {
            agent: "claude".into(),
            model: self.model.clone().or(self.ctx.model.clone()),
            outcome,
            summary,
            usage,
            session: self.session.clone(),
            question,
        }
    }

    fn resume_failed(&self) -> bool {
        self.resume_missing && self.result.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use grove_core::spec::AgentKind;
    use grove_core::usage::SessionRef;

    use super::*;
    use crate::adapter::{Persona, Prices};

    fn ctx(before: Usage) -> Context {
        Context { prices: Prices::new(&BTreeMap::new()), model: None, before }
    }

    fn feed(p: &mut ClaudeParser, text: &str) {
        for l in text.lines() {
            p.line(Stream::Stdout, l);
        }
    }

    fn plan<'a>(resume: Option<&'a SessionRef>, persona: Option<&'a Persona>, as_root: bool) -> Plan<'a> {
        Plan {
            kind: AgentKind::Claude,
            program: None,
            model: Some("sonnet"),
            args: &[],
            prompt: "-fix it",
            resume,
            workdir: Path::new("/w"),
            run_dir: Path::new("/r"),
            usd_left: Some(0.5),
            as_root,
            persona,
        }
    }

    #[test]
    fn the_command_line_never_asks_and_resumes() {
        let s = SessionRef { agent: "claude".into(), id: "abc".into(), ..SessionRef::default() };
        let i = invocation(&plan(Some(&s), None, false));
        assert_eq!(i.program, "claude");
        assert_eq!(
            i.args,
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
                "bypassPermissions",
                "--model",
                "sonnet",
                "--resume",
                "abc",
                "--max-budget-usd",
                "0.5000",
                "--",
                "-fix it"
            ]
        );
        let root = invocation(&plan(None, None, true));
        assert!(root.args.windows(2).any(|w| w == ["--permission-mode", "acceptEdits"]), "{:?}", root.args);
        assert!(root.args.contains(&format!("--allowedTools={ROOT_ALLOWED}")));
        assert!(root.notes[0].contains("as root"), "{:?}", root.notes);
    }

    #[test]
    fn a_persona_becomes_the_appended_system_prompt_and_the_tool_list() {
        let p = Persona {
            name: "review".into(),
            instructions: "You review code.".into(),
            tools: Some(vec!["read".into(), "search".into(), "github/*".into(), "unknown".into()]),
        };
        let i = invocation(&plan(None, Some(&p), false));
        assert!(i.args.contains(&"--tools=Read,Grep,Glob,mcp__github".to_owned()), "{:?}", i.args);
        assert!(i.args.contains(&"--allowedTools=Read,Grep,Glob,mcp__github".to_owned()));
        assert!(i.args.windows(2).any(|w| w == ["--append-system-prompt", "You review code."]));
    }

    /// The reference's documented sample (agent-clis.md §1.2): a success with cache tokens and
    /// two models; the cost is the CLI's total.
    #[test]
    fn a_documented_success() {
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        feed(
            &mut p,
            r#"{"type":"assistant","message":{"model":"claude-sonnet-4-6","id":"msg_011CcoMtx3KD3YjwEV947Dei","type":"message","role":"assistant","content":[{"type":"text","text":"OK"}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":2,"cache_creation_input_tokens":6354,"cache_read_input_tokens":15934,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":6354},"output_tokens":1,"service_tier":"standard","inference_geo":"not_available"}},"parent_tool_use_id":null,"session_id":"81898c55-fde9-4d44-b1f5-fbd77cd4fef6","uuid":"816e0888-...","request_id":"req_011CcoMtwM9Ho7VWT8xJUqjw"}
{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"duration_ms":1425,"duration_api_ms":2492,"ttft_ms":1397,"ttft_stream_ms":1281,"time_to_request_ms":29,"num_turns":1,"result":"OK","stop_reason":"end_turn","session_id":"81898c55-fde9-4d44-b1f5-fbd77cd4fef6","total_cost_usd":0.043551200000000005,"usage":{"input_tokens":2,"cache_creation_input_tokens":6354,"cache_read_input_tokens":15934,"output_tokens":4,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":6354,"ephemeral_5m_input_tokens":0},"inference_geo":"not_available","iterations":[],"speed":"standard"},"modelUsage":{"claude-haiku-4-5-20251001":{"inputTokens":511,"outputTokens":14,"cacheReadInputTokens":0,"cacheCreationInputTokens":0,"webSearchRequests":0,"costUSD":0.000581,"contextWindow":200000,"maxOutputTokens":32000},"claude-sonnet-4-6":{"inputTokens":2,"outputTokens":4,"cacheReadInputTokens":15934,"cacheCreationInputTokens":6354,"webSearchRequests":0,"costUSD":0.0429702,"contextWindow":200000,"maxOutputTokens":32000}},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off","uuid":"c5f593b6-..."}"#,
        );
        let r = p.finish(&End::Exited(0), "", 0);
        assert_eq!(r.outcome, TurnOutcome::Success);
        assert_eq!(r.summary.as_deref(), Some("OK"));
        assert_eq!(r.session.as_deref(), Some("81898c55-fde9-4d44-b1f5-fbd77cd4fef6"));
        assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-6"));
        assert_eq!(
            (
                r.usage.input_tokens,
                r.usage.output_tokens,
                r.usage.cache_read_tokens,
                r.usage.cache_write_tokens
            ),
            (2, 4, 15934, 6354)
        );
        assert_eq!(r.usage.cost_usd, Some(0.043551200000000005));
        assert_eq!(r.question, None);
    }

    /// Captured from Claude Code 2.1.328 resuming a session: the total is the session's, the
    /// turn's own figures are in `usage` and `model_usage_since_last_result`.
    #[test]
    fn a_resumed_turn_counts_only_itself() {
        let before = Usage::new(3702, 168, 0, 0, Some(0.018168000000000004));
        let mut p = ClaudeParser::new(ctx(before));
        feed(
            &mut p,
            r#"{"type":"system","subtype":"init","cwd":"/tmp/adx/ws2","session_id":"f63daad1-51c7-405e-bb1c-e77875af21e8","model":"claude-opus-5-5"}
{"duration_api_ms":144,"stop_reason":"end_turn","session_id":"f63daad1-51c7-405e-bb1c-e77875af21e8","total_cost_usd":0.024224000000000002,"usage":{"input_tokens":1234,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":56},"modelUsage":{"claude-opus-5-5":{"inputTokens":4936,"outputTokens":224,"cacheReadInputTokens":0,"cacheCreationInputTokens":0,"costUSD":0.024224000000000002}},"permission_denials":[],"is_error":false,"num_turns":1,"subtype":"success","api_error_status":null,"result":"Resumed fine.","type":"result","model_usage_since_last_result":{"claude-opus-5-5":{"inputTokens":1234,"outputTokens":56,"cacheReadInputTokens":0,"cacheCreationInputTokens":0,"costUSD":0.006056000000000001}}}"#,
        );
        let r = p.finish(&End::Exited(0), "", 0);
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (1234, 56));
        assert_eq!(r.usage.cost_usd, Some(0.006056000000000001));
        // Without the per-run figures, the session's total less what it had before.
        let mut p = ClaudeParser::new(ctx(before));
        feed(
            &mut p,
            r#"{"type":"result","subtype":"success","is_error":false,"result":"x","session_id":"s","total_cost_usd":0.024224000000000002,"usage":{"input_tokens":1234,"output_tokens":56}}"#,
        );
        let r = p.finish(&End::Exited(0), "", 0);
        assert!((r.usage.cost_usd.expect("cost") - 0.006056).abs() < 1e-9);
    }

    /// Captured from Claude Code 2.1.328 with a subscription token against a server answering
    /// 429 with the unified rate-limit headers.
    #[test]
    fn a_usage_limit_takes_its_reset_from_the_event() {
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        feed(
            &mut p,
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796191979,"rateLimitType":"five_hour","isUsingOverage":false},"uuid":"71e48a22","session_id":"edb9fb19-4bb2-4ab1-b980-a6b600616f63"}
{"type":"assistant","message":{"id":"c80c8a9c","model":"<synthetic>","role":"assistant","type":"message","usage":{"input_tokens":0,"output_tokens":0},"content":[{"type":"text","text":"You've hit your 5-hour limit · resets 6:12am (UTC)"}]},"session_id":"edb9fb19-4bb2-4ab1-b980-a6b600616f63","error":"rate_limit"}
{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"duration_ms":1206,"num_turns":1,"result":"You've hit your 5-hour limit · resets 6:12am (UTC)","stop_reason":"stop_sequence","session_id":"edb9fb19-4bb2-4ab1-b980-a6b600616f63","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0},"modelUsage":{},"permission_denials":[],"terminal_reason":"api_error"}"#,
        );
        let r = p.finish(&End::Exited(1), "", 0);
        assert_eq!(
            r.outcome,
            TurnOutcome::UsageLimit {
                reset: Some(1796191979),
                message: "You've hit your 5-hour limit · resets 6:12am (UTC)".into()
            }
        );
        assert_eq!(r.model, None, "the synthetic model is no model");
    }

    /// The documented text-only form (§1.3): no event, the reset time from the text.
    #[test]
    fn a_usage_limit_from_the_text() {
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        feed(
            &mut p,
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"duration_ms":1206,"duration_api_ms":0,"num_turns":1,"result":"You've hit your session limit · resets 12pm (America/New_York)","stop_reason":"stop_sequence","session_id":"<redacted>","total_cost_usd":0,"usage":{"input_tokens":0},"modelUsage":{},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off","uuid":"<redacted>"}"#,
        );
        // 2026-11-25 10:00 UTC is 5am in New York: noon there is 17:00 UTC.
        let r = p.finish(&End::Exited(1), "", 1_795_600_800);
        assert!(
            matches!(r.outcome, TurnOutcome::UsageLimit { reset: Some(t), .. } if t == 1_795_600_800 + 7 * 3600),
            "{:?}",
            r.outcome
        );
    }

    /// Captured from Claude Code 2.1.328: a 401, and a server that is not there.
    #[test]
    fn auth_and_network_failures() {
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        feed(
            &mut p,
            r#"{"type":"assistant","message":{"id":"x","model":"<synthetic>","content":[{"type":"text","text":"Invalid API key · Fix external API key"}],"usage":{"input_tokens":0,"output_tokens":0}},"session_id":"s","error":"authentication_failed"}
{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"result":"Invalid API key · Fix external API key","session_id":"s","total_cost_usd":0,"usage":{},"terminal_reason":"api_error"}"#,
        );
        assert_eq!(
            p.finish(&End::Exited(1), "", 0).outcome,
            TurnOutcome::Auth("Invalid API key · Fix external API key".into())
        );
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        feed(
            &mut p,
            r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":1,"retry_delay_ms":590,"error_status":null,"error":"unknown","session_id":"s"}
{"type":"assistant","message":{"id":"y","model":"<synthetic>","content":[{"type":"text","text":"API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"}],"usage":{}},"session_id":"s","error":"server_error"}
{"type":"result","subtype":"success","is_error":true,"api_error_status":null,"result":"API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)","session_id":"s","total_cost_usd":0,"usage":{},"terminal_reason":"api_error"}"#,
        );
        assert!(matches!(p.finish(&End::Exited(1), "", 0).outcome, TurnOutcome::Network(_)));
    }

    #[test]
    fn max_turns_budget_denials_and_a_missing_session() {
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        feed(
            &mut p,
            r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":2,"errors":["Reached maximum number of turns (1)"]}"#,
        );
        assert_eq!(p.finish(&End::Exited(1), "", 0).outcome, TurnOutcome::MaxTurns);
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        feed(
            &mut p,
            r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true,"total_cost_usd":0.51}"#,
        );
        assert!(matches!(p.finish(&End::Exited(1), "", 0).outcome, TurnOutcome::Budget(_)));
        // Captured from 2.1.328 as root in acceptEdits: a command that needed approval.
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        feed(
            &mut p,
            r#"{"type":"result","subtype":"success","is_error":false,"result":"Done.","session_id":"862543ae","total_cost_usd":0.012112000000000001,"usage":{"input_tokens":2468,"output_tokens":112},"permission_denials":[{"tool_name":"Bash","tool_use_id":"toolu_2","tool_input":{"command":"python3 -c 'print(1)' > d.txt","description":"x"}}]}"#,
        );
        let r = p.finish(&End::Exited(0), "", 0);
        assert_eq!(r.outcome, TurnOutcome::Success);
        assert_eq!(
            r.question.as_deref(),
            Some("Claude Code was not allowed to use: Bash (python3 -c 'print(1)' > d.txt)")
        );
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        p.line(Stream::Stderr, "No conversation found with session ID: 0000");
        let r = p.finish(&End::Exited(1), "", 0);
        assert!(p.resume_failed());
        assert!(matches!(r.outcome, TurnOutcome::Error(m) if m.contains("No conversation found")));
    }

    #[test]
    fn the_stream_shows_spending_before_the_result_and_an_ask_tool_is_a_question() {
        let mut p = ClaudeParser::new(ctx(Usage::zero()));
        // One API call, its usage repeated on each content block: counted once.
        let call = r#"{"type":"assistant","message":{"id":"msg_1","model":"claude-sonnet-4-6","content":[{"type":"text","text":"Hm."}],"usage":{"input_tokens":1000000,"output_tokens":1}},"session_id":"s"}"#;
        feed(&mut p, call);
        feed(&mut p, call);
        let spent = p.spent();
        assert_eq!(spent.input_tokens, 1_000_000);
        assert!((spent.known_cost() - 3.000015).abs() < 1e-6, "{spent:?}");
        feed(
            &mut p,
            r#"{"type":"assistant","message":{"id":"msg_2","model":"claude-sonnet-4-6","content":[{"type":"tool_use","id":"t","name":"AskUserQuestion","input":{"questions":[{"question":"Which database?","header":"DB","options":[{"label":"Postgres"},{"label":"SQLite"}],"multiSelect":false}]}}],"usage":{"input_tokens":1,"output_tokens":1}},"session_id":"s"}"#,
        );
        let r = p.finish(&End::Cancelled, "", 0);
        assert_eq!(r.question.as_deref(), Some("Which database? (Postgres / SQLite)"));
        assert_eq!(r.summary.as_deref(), Some("Hm."));
    }
}
