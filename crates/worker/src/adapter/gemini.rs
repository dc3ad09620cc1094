//! Gemini CLI: `gemini --prompt=<p> -o stream-json --approval-mode yolo --skip-trust`, and
//! `-r <session id>` for later turns.
//!
//! Events (`packages/core/src/output/types.ts`), each with a `timestamp`: `init {session_id,
//! model}`, `message {role, content, delta?}`, `tool_use`, `tool_result`, `error {severity,
//! message}`, and `result {status: success|error, error?: {type, message}, stats?:
//! {total_tokens, input_tokens, output_tokens, cached, input, duration_ms, tool_calls,
//! models}}`; `input` is the input not read from the cache. No cost: from the price table.
//! Exit codes: 41 authentication, 53 turn limit, 1 general (quota included).

use grove_core::usage::{TurnOutcome, TurnReport, Usage};
use serde_json::Value;

use super::json::{self, str_at, u64_at};
use super::{Context, Invocation, Parser, Plan};
use crate::process::{End, Stream};

pub fn invocation(plan: &Plan<'_>) -> Invocation {
    let mut args = vec![
        format!("--prompt={}", super::with_instructions(plan)),
        "--output-format".into(),
        "stream-json".into(),
        // `--yolo` is deprecated; the approval mode asks nothing.
        "--approval-mode".into(),
        "yolo".into(),
        "--skip-trust".into(),
    ];
    if let Some(m) = plan.model {
        args.extend(["--model".into(), m.to_owned()]);
    }
    if let Some(s) = plan.resume {
        args.extend(["--resume".into(), s.id.clone()]);
    }
    args.extend(plan.args.iter().cloned());
    Invocation {
        program: super::program(plan),
        args,
        env: Vec::new(),
        notes: vec!["gemini: --approval-mode yolo --skip-trust (nothing is asked)".into()],
    }
}

/// Reads `gemini -o stream-json`.
pub struct GeminiParser {
    ctx: Context,
    session: Option<String>,
    model: Option<String>,
    /// The assistant's text of the current message (deltas joined).
    text: String,
    last_text: Option<String>,
    result: Option<Value>,
    errors: Vec<String>,
    stderr: Vec<String>,
}

impl GeminiParser {
    pub fn new(ctx: Context) -> GeminiParser {
        GeminiParser {
            ctx,
            session: None,
            model: None,
            text: String::new(),
            last_text: None,
            result: None,
            errors: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn usage(&self) -> Usage {
        let stats = self.result.as_ref().and_then(|r| r.get("stats"));
        let Some(s) = stats else {
            return self.ctx.prices.priced(self.model(), Usage::zero());
        };
        let cached = u64_at(s, "cached");
        let input = match s.get("input").and_then(Value::as_u64) {
            Some(i) => i,
            None => u64_at(s, "input_tokens").saturating_sub(cached),
        };
        self.ctx.prices.priced(self.model(), Usage::new(input, u64_at(s, "output_tokens"), cached, 0, None))
    }

    fn model(&self) -> Option<&str> {
        self.ctx
            .model
            .as_deref()
            .filter(|m| !matches!(*m, "auto" | "pro" | "flash"))
            .or(self.model.as_deref())
    }
}

impl Parser for GeminiParser {
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
            Some("init") => {
                self.session = str_at(&v, "session_id").map(str::to_owned);
                self.model = str_at(&v, "model").map(str::to_owned);
            }
            Some("message") if str_at(&v, "role") == Some("assistant") => {
                let content = str_at(&v, "content").unwrap_or_default();
                if v.get("delta").and_then(Value::as_bool).unwrap_or(false) {
                    self.text.push_str(content);
                } else {
                    self.text = content.to_owned();
                }
                if !self.text.trim().is_empty() {
                    self.last_text = Some(self.text.clone());
                }
            }
            Some("message") | Some("tool_use") | Some("tool_result") => {
                // A new message starts after a tool: the next assistant text is a new one.
                self.text.clear();
            }
            Some("error") => {
                if let Some(m) = str_at(&v, "message") {
                    self.errors.push(m.to_owned());
                }
            }
            Some("result") => self.result = Some(v),
            _ => {}
        }
    }

    fn spent(&self) -> Usage {
        self.usage()
    }

    fn finish(&mut self, end: &End, tail: &str, now: i64) -> TurnReport {
        let outcome = match (&self.result, end) {
            (_, End::Exited(41)) => {
                TurnOutcome::Auth(super::last_line(&self.stderr.join("\n")).unwrap_or_default())
            }
            (_, End::Exited(53)) => TurnOutcome::MaxTurns,
            (Some(r), _) if str_at(r, "status") == Some("success") => TurnOutcome::Success,
            (Some(r), _) => {
                let e = r.get("error").unwrap_or(&Value::Null);
                let message = str_at(e, "message").map(str::to_owned).or_else(|| self.errors.last().cloned());
                classify(str_at(e, "type"), &message.unwrap_or_default(), now)
            }
            (None, _) => {
                let text = [self.stderr.join("\n"), self.errors.join("\n"), tail.to_owned()].join("\n");
                match self.errors.last() {
                    Some(m) if matches!(end, End::Exited(c) if *c != 0) => classify(None, m, now),
                    _ => super::outcome_of_exit(end, &text, now),
                }
            }
        };
        TurnReport {
            agent: "gemini".into(),
            model: self.model().map(str::to_owned),
            outcome,
            summary: self.last_text.clone(),
            usage: self.usage(),
            session: self.session.clone(),
            question: None,
        }
    }
}

fn classify(kind: Option<&str>, message: &str, now: i64) -> TurnOutcome {
    let lower = message.to_lowercase();
    let m = message.to_owned();
    let quota = matches!(kind, Some("TerminalQuotaError" | "RetryableQuotaError"))
        || ["exhausted your", "resource_exhausted", "quota", "usage limit reached"]
            .iter()
            .any(|w| lower.contains(w));
    if quota {
        return TurnOutcome::UsageLimit { reset: crate::limits::usage_limit(message, now), message: m };
    }
    if super::looks_like_auth(message) {
        return TurnOutcome::Auth(m);
    }
    if super::looks_like_network(message) {
        return TurnOutcome::Network(m);
    }
    TurnOutcome::Error(m)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::adapter::Prices;

    fn parser() -> GeminiParser {
        GeminiParser::new(Context {
            prices: Prices::new(&BTreeMap::new()),
            model: None,
            before: Usage::zero(),
        })
    }

    /// A stream with the reference's real result line (gemini-cli 0.53.1, agent-clis.md §4.2).
    #[test]
    fn a_documented_result() {
        let mut p = parser();
        for l in [
            r#"{"type":"init","timestamp":"2026-08-05T17:51:12.000Z","session_id":"c0ffee00-1111-2222-3333-444455556666","model":"gemini-3.1-pro-preview"}"#,
            r#"{"type":"message","timestamp":"2026-08-05T17:51:13.000Z","role":"user","content":"do it"}"#,
            r#"{"type":"message","timestamp":"2026-08-05T17:53:44.000Z","role":"assistant","content":"Renamed ","delta":true}"#,
            r#"{"type":"message","timestamp":"2026-08-05T17:53:44.100Z","role":"assistant","content":"3 files.","delta":true}"#,
            r#"{"type":"result","timestamp":"2026-08-05T17:53:45.174Z","status":"success","stats":{"total_tokens":43498,"input_tokens":20846,"output_tokens":62,"cached":8089,"input":12757,"duration_ms":153348,"tool_calls":2,"models":{"gemini-3.1-pro-preview":{"total_tokens":43498,"input_tokens":20846,"output_tokens":62}}}}"#,
        ] {
            p.line(Stream::Stdout, l);
        }
        let r = p.finish(&End::Exited(0), "", 0);
        assert_eq!(r.outcome, TurnOutcome::Success);
        assert_eq!(r.summary.as_deref(), Some("Renamed 3 files."));
        assert_eq!(r.session.as_deref(), Some("c0ffee00-1111-2222-3333-444455556666"));
        let u = r.usage;
        assert_eq!((u.input_tokens, u.cache_read_tokens, u.output_tokens), (12757, 8089, 62));
        let want = 12757.0 * 2e-6 + 8089.0 * 0.2e-6 + 62.0 * 12e-6;
        assert!((u.cost_usd.expect("gemini-3 is priced") - want).abs() < 1e-12);
    }

    #[test]
    fn quota_and_auth() {
        let mut p = parser();
        p.line(
            Stream::Stdout,
            r#"{"type":"result","status":"error","error":{"type":"TerminalQuotaError","message":"RESOURCE_EXHAUSTED (code 429): Individual quota reached. Please upgrade your subscription to increase your limits. Resets in 87h35m9s."}}"#,
        );
        let r = p.finish(&End::Exited(1), "", 100);
        assert!(
            matches!(r.outcome, TurnOutcome::UsageLimit { reset: Some(t), .. } if t == 100 + 87 * 3600 + 35 * 60 + 9),
            "{:?}",
            r.outcome
        );
        let mut p = parser();
        p.line(Stream::Stderr, "Please set an Auth method in your settings.json or specify GEMINI_API_KEY");
        assert!(matches!(p.finish(&End::Exited(41), "", 0).outcome, TurnOutcome::Auth(_)));
    }
}
