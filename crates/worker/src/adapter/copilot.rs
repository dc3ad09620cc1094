//! GitHub Copilot CLI: `copilot --prompt=<p> --output-format json --allow-all-tools
//! --no-ask-user`, and `--resume=<session id>` for later turns; a repository-defined agent
//! runs as `--agent=NAME` (Copilot reads `.github/agents/` itself).
//!
//! JSONL events `{type, data, id, timestamp}`: `assistant.message {content, toolRequests,
//! outputTokens?}` (the final text is the last with non-empty content), `tool.execution_start
//! {toolName}`, and the terminal `result {sessionId, exitCode, usage: {premiumRequests, ...}}`.
//! Copilot's JSON has no token counts and no cost (only OpenTelemetry has them): the cost is
//! unknown. Its rate limits come as text.

use grove_core::usage::{TurnOutcome, TurnReport, Usage};
use serde_json::Value;

use super::json::{self, str_at, u64_at};
use super::{Context, Invocation, Parser, Plan};
use crate::process::{End, Stream};

pub fn invocation(plan: &Plan<'_>) -> Invocation {
    // Copilot loads the definition itself: the prompt goes as it is.
    let prompt = if plan.persona.is_some() { plan.prompt.to_owned() } else { super::with_instructions(plan) };
    let mut args = vec![
        format!("--prompt={prompt}"),
        "--output-format".into(),
        "json".into(),
        "--allow-all-tools".into(),
        "--no-ask-user".into(),
    ];
    if let Some(m) = plan.model {
        args.push(format!("--model={m}"));
    }
    if let Some(p) = plan.persona {
        args.push(format!("--agent={}", p.name));
    }
    if let Some(s) = plan.resume {
        args.push(format!("--resume={}", s.id));
    }
    args.extend(plan.args.iter().cloned());
    Invocation {
        program: super::program(plan),
        args,
        env: Vec::new(),
        notes: vec!["copilot: --allow-all-tools --no-ask-user (nothing is asked)".into()],
    }
}

/// Reads `copilot --output-format json`.
pub struct CopilotParser {
    ctx: Context,
    session: Option<String>,
    model: Option<String>,
    last_text: Option<String>,
    output_tokens: u64,
    result: Option<Value>,
    asked: Option<String>,
    text: Vec<String>,
}

impl CopilotParser {
    pub fn new(ctx: Context) -> CopilotParser {
        CopilotParser {
            ctx,
            session: None,
            model: None,
            last_text: None,
            output_tokens: 0,
            result: None,
            asked: None,
            text: Vec::new(),
        }
    }

    fn usage(&self) -> Usage {
        // Output tokens are all Copilot says; no price can be made of them.
        Usage::new(0, self.output_tokens, 0, 0, None)
    }
}

impl Parser for CopilotParser {
    fn line(&mut self, stream: Stream, line: &str) {
        let Some(v) = json::parse(line).filter(|_| stream == Stream::Stdout) else {
            if !line.trim().is_empty() {
                self.text.push(line.to_owned());
                if self.text.len() > 40 {
                    self.text.remove(0);
                }
            }
            return;
        };
        let data = v.get("data").unwrap_or(&Value::Null);
        match str_at(&v, "type") {
            Some("assistant.message") => {
                if let Some(c) = str_at(data, "content").filter(|c| !c.trim().is_empty()) {
                    self.last_text = Some(c.to_owned());
                }
                if let Some(m) = str_at(data, "model") {
                    self.model = Some(m.to_owned());
                }
                self.output_tokens += u64_at(data, "outputTokens");
            }
            Some("tool.execution_start") if str_at(data, "toolName") == Some("ask_user") => {
                let args = data.get("arguments").unwrap_or(&Value::Null);
                self.asked = str_at(args, "question").or_else(|| str_at(args, "message")).map(str::to_owned);
            }
            Some("result") => {
                self.session = str_at(&v, "sessionId").map(str::to_owned);
                self.result = Some(v);
            }
            Some("session.start") | Some("session.started") => {
                if let Some(s) = str_at(data, "sessionId") {
                    self.session = Some(s.to_owned());
                }
            }
            _ => {}
        }
    }

    fn spent(&self) -> Usage {
        self.usage()
    }

    fn finish(&mut self, end: &End, tail: &str, now: i64) -> TurnReport {
        let text = format!("{}\n{tail}", self.text.join("\n"));
        let code = self.result.as_ref().and_then(|r| r.get("exitCode")).and_then(Value::as_i64);
        let outcome = match (code, end) {
            (Some(0), End::Exited(_)) | (None, End::Exited(0)) => {
                // Copilot may exit 0 after a refused request: a limit said in text still counts.
                match crate::limits::usage_limit(&text, now) {
                    Some(reset) if self.last_text.is_none() => TurnOutcome::UsageLimit {
                        reset: Some(reset),
                        message: super::last_line(&text).unwrap_or_default(),
                    },
                    _ => TurnOutcome::Success,
                }
            }
            (Some(c), End::Exited(_)) => super::outcome_of_exit(&End::Exited(c as i32), &text, now),
            (_, end) => super::outcome_of_exit(end, &text, now),
        };
        TurnReport {
            agent: "copilot".into(),
            model: self.model.clone().or(self.ctx.model.clone()),
            outcome,
            summary: self.last_text.clone(),
            usage: self.usage(),
            session: self.session.clone(),
            question: self.asked.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::adapter::Prices;

    fn parser() -> CopilotParser {
        CopilotParser::new(Context {
            prices: Prices::new(&BTreeMap::new()),
            model: None,
            before: Usage::zero(),
        })
    }

    /// The reference's capture (agent-clis.md §3.2).
    #[test]
    fn a_documented_run() {
        let mut p = parser();
        for l in [
            r#"{"type":"assistant.message","data":{"messageId":"m0","model":"claude-sonnet-4.6","content":"","toolRequests":[{"name":"edit"}],"turnId":"0","outputTokens":12},"id":"a","timestamp":"2026-07-31T07:16:40.000Z"}"#,
            r#"{"type":"assistant.message","data":{"messageId":"e5ba2219-...","model":"claude-sonnet-4.6","content":"Xin chào từ Copilot CLI.","toolRequests":[],"turnId":"0","outputTokens":34},"id":"5f8f1a8c-...","timestamp":"2026-07-31T07:16:46.181Z"}"#,
            r#"{"type":"result","timestamp":"2026-07-31T07:16:46.223Z","sessionId":"d60f7463-5d66-44b2-b8c4-60a0c0c36289","exitCode":0,"usage":{"premiumRequests":1,"totalApiDurationMs":2833,"sessionDurationMs":8931,"codeChanges":{"linesAdded":0,"linesRemoved":0,"filesModified":[]}}}"#,
        ] {
            p.line(Stream::Stdout, l);
        }
        let r = p.finish(&End::Exited(0), "", 0);
        assert_eq!(r.outcome, TurnOutcome::Success);
        assert_eq!(r.summary.as_deref(), Some("Xin chào từ Copilot CLI."));
        assert_eq!(r.session.as_deref(), Some("d60f7463-5d66-44b2-b8c4-60a0c0c36289"));
        assert_eq!(r.usage.output_tokens, 46);
        assert_eq!(r.usage.cost_usd, None, "Copilot reports no cost");
        assert_eq!(r.model.as_deref(), Some("claude-sonnet-4.6"));
    }

    /// The verbatim rate-limit text of github/copilot-cli#2336.
    #[test]
    fn a_rate_limit_in_text() {
        let mut p = parser();
        p.line(Stream::Stderr, "Sorry, you've hit a rate limit that restricts the number of Copilot model requests you can make within a specific time period. Please try again in 2 hours. Please review our Terms of Service (https://docs.github.com/site-policy). (Request ID: 1234)");
        let r = p.finish(&End::Exited(1), "", 100);
        assert!(
            matches!(r.outcome, TurnOutcome::UsageLimit { reset: Some(t), .. } if t == 100 + 7200),
            "{:?}",
            r.outcome
        );
    }
}
