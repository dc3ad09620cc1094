//! OpenAI Codex CLI: `codex exec --json -s workspace-write -c approval_policy=never
//! --skip-git-repo-check`, and `codex exec resume <thread id>` for later turns (only the
//! conversation is kept, so every flag is given again).
//!
//! Events, one JSON object a line: `thread.started {thread_id}`, `turn.started`,
//! `item.started|updated|completed {item}` (`agent_message {text}` is the agent's message),
//! `turn.completed {usage}`, `turn.failed {error:{message}}`, `error {message}` (a
//! `Reconnecting... n/5` one is transient). `usage` is `{input_tokens, cached_input_tokens,
//! output_tokens, ...}` and, verified with Codex 0.169, the thread's running total: a resumed
//! turn's own share is the difference from the total before it. There is no cost: it comes
//! from the price table.

use grove_core::usage::{TurnOutcome, TurnReport, Usage};
use serde_json::Value;

use super::json::{self, str_at, u64_at};
use super::{Context, Invocation, Parser, Plan};
use crate::process::{End, Stream};

pub fn invocation(plan: &Plan<'_>) -> Invocation {
    let mut args: Vec<String> = vec!["exec".into()];
    if plan.resume.is_some() {
        args.push("resume".into());
    }
    args.push("--json".into());
    // `exec resume` has no -s: the same setting through the config.
    args.extend(["-c".into(), "sandbox_mode=\"workspace-write\"".into()]);
    args.extend(["-c".into(), "approval_policy=\"never\"".into()]);
    args.push("--skip-git-repo-check".into());
    if let Some(m) = plan.model {
        args.extend(["-m".into(), m.to_owned()]);
    }
    args.extend(plan.args.iter().cloned());
    args.push("--".into());
    if let Some(s) = plan.resume {
        args.push(s.id.clone());
    }
    args.push(super::with_instructions(plan));
    Invocation {
        program: super::program(plan),
        args,
        env: Vec::new(),
        notes: vec!["codex: sandbox workspace-write, approval_policy never (nothing is asked)".into()],
    }
}

/// Reads `codex exec --json`.
pub struct CodexParser {
    ctx: Context,
    thread: Option<String>,
    message: Option<String>,
    /// The thread's running total at `turn.completed`.
    total: Option<Usage>,
    failed: Option<String>,
    errors: Vec<String>,
    asked: Option<String>,
    stderr: Vec<String>,
}

impl CodexParser {
    pub fn new(ctx: Context) -> CodexParser {
        CodexParser {
            ctx,
            thread: None,
            message: None,
            total: None,
            failed: None,
            errors: Vec::new(),
            asked: None,
            stderr: Vec::new(),
        }
    }

    /// This turn's usage: the running total less the session's total before it.
    fn turn_usage(&self) -> Usage {
        let Some(total) = self.total else {
            return self.ctx.prices.priced(self.ctx.model.as_deref(), Usage::zero());
        };
        let b = &self.ctx.before;
        let tokens = Usage::new(
            total.input_tokens.saturating_sub(b.input_tokens),
            total.output_tokens.saturating_sub(b.output_tokens),
            total.cache_read_tokens.saturating_sub(b.cache_read_tokens),
            total.cache_write_tokens.saturating_sub(b.cache_write_tokens),
            None,
        );
        self.ctx.prices.priced(self.ctx.model.as_deref(), tokens)
    }
}

/// `{input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens}` as grove's
/// usage: input is the input that was not read from the cache.
fn usage_of(u: &Value) -> Usage {
    let cached = u64_at(u, "cached_input_tokens");
    Usage::new(
        u64_at(u, "input_tokens").saturating_sub(cached),
        u64_at(u, "output_tokens"),
        cached,
        u64_at(u, "cache_write_input_tokens"),
        None,
    )
}

impl Parser for CodexParser {
    fn line(&mut self, stream: Stream, line: &str) {
        if stream == Stream::Stderr {
            if !line.trim().is_empty() {
                self.stderr.push(line.to_owned());
                if self.stderr.len() > 20 {
                    self.stderr.remove(0);
                }
            }
            return;
        }
        let Some(v) = json::parse(line) else { return };
        match str_at(&v, "type") {
            Some("thread.started") => self.thread = str_at(&v, "thread_id").map(str::to_owned),
            Some("item.completed") => {
                let item = v.get("item").unwrap_or(&Value::Null);
                // `item_type` / `assistant_message` before Codex 0.4x.
                let kind = str_at(item, "type").or_else(|| str_at(item, "item_type"));
                if matches!(kind, Some("agent_message" | "assistant_message"))
                    && let Some(t) = str_at(item, "text").filter(|t| !t.trim().is_empty())
                {
                    self.message = Some(t.to_owned());
                }
            }
            Some("request_user_input") => {
                let qs: Vec<String> = v
                    .get("questions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|q| str_at(q, "question").or_else(|| q.as_str()).map(str::to_owned))
                    .collect();
                self.asked = Some(if qs.is_empty() { "Codex asked for input".into() } else { qs.join("\n") });
            }
            Some("turn.completed") => {
                self.total = v.get("usage").map(usage_of);
                self.failed = None;
            }
            Some("turn.failed") => {
                let e = v.get("error").unwrap_or(&Value::Null);
                self.failed = Some(str_at(e, "message").unwrap_or("the turn failed").to_owned());
            }
            Some("error") => {
                if let Some(m) = str_at(&v, "message") {
                    self.errors.push(m.to_owned());
                }
            }
            _ => {}
        }
    }

    fn spent(&self) -> Usage {
        self.turn_usage()
    }

    fn finish(&mut self, end: &End, _tail: &str, now: i64) -> TurnReport {
        let outcome = match (&self.failed, self.total.is_some()) {
            (Some(m), _) => classify(m, now),
            (None, true) => TurnOutcome::Success,
            (None, false) => {
                // No turn end: a final `error` event, else the process's own end.
                let last_error = self.errors.iter().rev().find(|e| !e.starts_with("Reconnecting"));
                match last_error {
                    Some(m) => classify(m, now),
                    None => {
                        let mut text = self.stderr.join("\n");
                        if let Some(m) = self.errors.last() {
                            text.push('\n');
                            text.push_str(m);
                        }
                        super::outcome_of_exit(end, &text, now)
                    }
                }
            }
        };
        TurnReport {
            agent: "codex".into(),
            model: self.ctx.model.clone(),
            outcome,
            summary: self.message.clone(),
            usage: self.turn_usage(),
            session: self.thread.clone(),
            question: self.asked.clone(),
        }
    }
}

/// A `turn.failed` or final `error` message.
fn classify(message: &str, now: i64) -> TurnOutcome {
    let lower = message.to_lowercase();
    let m = message.to_owned();
    if lower.contains("hit your usage limit") || lower.contains("usage_limit") || lower.contains("rate limit")
    {
        return TurnOutcome::UsageLimit { reset: crate::limits::usage_limit(message, now), message: m };
    }
    if super::looks_like_auth(message) || lower.contains("to use codex with your chatgpt plan") {
        return TurnOutcome::Auth(m);
    }
    if super::looks_like_network(message) || lower.contains("reconnecting") {
        return TurnOutcome::Network(m);
    }
    TurnOutcome::Error(m)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use grove_core::spec::AgentKind;
    use grove_core::usage::SessionRef;

    use super::*;
    use crate::adapter::Prices;

    fn parser(model: Option<&str>, before: Usage) -> CodexParser {
        CodexParser::new(Context {
            prices: Prices::new(&BTreeMap::new()),
            model: model.map(str::to_owned),
            before,
        })
    }

    fn feed(p: &mut CodexParser, text: &str) {
        for l in text.lines() {
            p.line(Stream::Stdout, l);
        }
    }

    #[test]
    fn first_and_resumed_command_lines() {
        let s = SessionRef { agent: "codex".into(), id: "0199a213".into(), ..SessionRef::default() };
        let extra = vec!["-c".to_owned(), "model_provider=mock".to_owned()];
        let mut plan = Plan {
            kind: AgentKind::Codex,
            program: Some("/opt/codex"),
            model: Some("gpt-5"),
            args: &extra,
            prompt: "do it",
            resume: None,
            workdir: Path::new("/w"),
            run_dir: Path::new("/r"),
            usd_left: None,
            as_root: true,
            persona: None,
        };
        let i = invocation(&plan);
        assert_eq!(i.program, "/opt/codex");
        assert_eq!(
            i.args,
            [
                "exec",
                "--json",
                "-c",
                "sandbox_mode=\"workspace-write\"",
                "-c",
                "approval_policy=\"never\"",
                "--skip-git-repo-check",
                "-m",
                "gpt-5",
                "-c",
                "model_provider=mock",
                "--",
                "do it"
            ]
        );
        plan.resume = Some(&s);
        let i = invocation(&plan);
        assert_eq!(&i.args[..2], ["exec", "resume"]);
        assert_eq!(&i.args[i.args.len() - 3..], ["--", "0199a213", "do it"]);
    }

    /// The documented sample (docs/exec.md, agent-clis.md §2.2), priced at gpt-5's list price.
    #[test]
    fn a_documented_turn() {
        let mut p = parser(Some("gpt-5"), Usage::zero());
        feed(
            &mut p,
            r#"{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Searching for README files**"}}
{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"","status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"2025-09-11\nAGENTS.md\n...","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Yep — there’s a `README.md` in the repository root."}}
{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}"#,
        );
        let r = p.finish(&End::Exited(0), "", 0);
        assert_eq!(r.outcome, TurnOutcome::Success);
        assert_eq!(r.session.as_deref(), Some("0199a213-81c0-7800-8aa1-bbab2a035a53"));
        assert_eq!(r.summary.as_deref(), Some("Yep — there’s a `README.md` in the repository root."));
        let u = r.usage;
        assert_eq!((u.input_tokens, u.cache_read_tokens, u.output_tokens), (315, 24448, 122));
        let want = 315.0 * 1.25e-6 + 24448.0 * 0.125e-6 + 122.0 * 10e-6;
        assert!((u.cost_usd.expect("priced") - want).abs() < 1e-12, "{u:?}");
        // Without a model there is no price: unknown, not zero.
        let mut p = parser(None, Usage::zero());
        feed(
            &mut p,
            r#"{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":0,"output_tokens":1}}"#,
        );
        assert_eq!(p.finish(&End::Exited(0), "", 0).usage.cost_usd, None);
    }

    /// Captured from Codex 0.169 resuming a thread: its usage is the thread's total.
    #[test]
    fn a_resumed_turn_counts_only_itself() {
        let before = Usage::new(1600, 100, 400, 0, None);
        let mut p = parser(Some("gpt-5.5"), before);
        feed(
            &mut p,
            r#"{"type":"thread.started","thread_id":"01a2352b-26cc-77e3-9405-d6bfc122c25b"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"Resumed, fixed."}}
{"type":"turn.completed","usage":{"input_tokens":3000,"cached_input_tokens":600,"cache_write_input_tokens":0,"output_tokens":150,"reasoning_output_tokens":0}}"#,
        );
        let u = p.finish(&End::Exited(0), "", 0).usage;
        assert_eq!((u.input_tokens, u.cache_read_tokens, u.output_tokens), (800, 200, 50));
    }

    /// Captured from Codex 0.169 (a 429 `usage_limit_reached`), and the documented logged-out
    /// failure (agent-clis.md §2.2).
    #[test]
    fn limits_and_auth() {
        let mut p = parser(None, Usage::zero());
        feed(
            &mut p,
            r#"{"type":"thread.started","thread_id":"01a2352b-76ef-77c0-b54c-80795ed5de8e"}
{"type":"turn.started"}
{"type":"error","message":"You’ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit https://chatgpt.com/settings/usage to purchase more credits or try again at 6:12 AM."}
{"type":"turn.failed","error":{"message":"You’ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit https://chatgpt.com/settings/usage to purchase more credits or try again at 6:12 AM."}}"#,
        );
        let r = p.finish(&End::Exited(1), "", 1_795_600_800);
        assert!(matches!(r.outcome, TurnOutcome::UsageLimit { reset: Some(_), .. }), "{:?}", r.outcome);
        let mut p = parser(None, Usage::zero());
        feed(
            &mut p,
            r#"{"type":"error","message":"Reconnecting... 2/5 (unexpected status 401 Unauthorized: ...)"}
{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: Missing bearer or basic authentication in header, ..."}}"#,
        );
        assert!(matches!(p.finish(&End::Exited(1), "", 0).outcome, TurnOutcome::Auth(_)));
        let mut p = parser(None, Usage::zero());
        feed(
            &mut p,
            r#"{"type":"error","message":"stream disconnected before completion: error sending request for url (http://127.0.0.1:9/v1/responses)"}"#,
        );
        assert!(matches!(p.finish(&End::Exited(1), "", 0).outcome, TurnOutcome::Network(_)));
    }

    #[test]
    fn an_input_request_is_a_question() {
        let mut p = parser(None, Usage::zero());
        feed(
            &mut p,
            r#"{"type":"request_user_input","id":"r1","call_id":"c1","questions":[{"question":"Keep the old flag?"}]}"#,
        );
        assert_eq!(p.finish(&End::Exited(0), "", 0).question.as_deref(), Some("Keep the old flag?"));
    }
}
