//! OpenCode: `opencode run --format json`, and `--session <id>` for later turns; tool
//! permissions are set to `allow` through `OPENCODE_PERMISSION`, so nothing is asked.
//!
//! JSONL events, each with `sessionID` and a `part`: `step_start`, `text` (`part.text`),
//! `tool_use`, `step_finish` (`part.cost` in USD, `part.tokens {input, output, reasoning,
//! cache: {read, write}}`, `part.reason`: a reason other than `tool-calls` ends the run), and
//! `error`. OpenCode reports its cost per step.

use grove_core::usage::{TurnOutcome, TurnReport, Usage};
use serde_json::Value;

use super::json::{self, str_at, u64_at};
use super::{Context, Invocation, Parser, Plan};
use crate::process::{End, Stream};

/// Every tool allowed, for a run nobody watches.
const PERMISSION: &str = r#"{"edit":"allow","bash":"allow","webfetch":"allow","external_directory":"allow"}"#;

pub fn invocation(plan: &Plan<'_>) -> Invocation {
    let mut args = vec!["run".to_owned(), "--format".into(), "json".into()];
    if let Some(m) = plan.model {
        args.extend(["--model".into(), m.to_owned()]);
    }
    if let Some(s) = plan.resume {
        args.extend(["--session".into(), s.id.clone()]);
    }
    args.extend(plan.args.iter().cloned());
    args.push("--".into());
    args.push(super::with_instructions(plan));
    Invocation {
        program: super::program(plan),
        args,
        env: vec![("OPENCODE_PERMISSION".into(), PERMISSION.into())],
        notes: vec![format!("opencode: OPENCODE_PERMISSION={PERMISSION} (nothing is asked)")],
    }
}

/// Reads `opencode run --format json`.
pub struct OpenCodeParser {
    ctx: Context,
    session: Option<String>,
    usage: Usage,
    priced: bool,
    text: Option<String>,
    finished: bool,
    error: Option<String>,
    stderr: Vec<String>,
}

impl OpenCodeParser {
    pub fn new(ctx: Context) -> OpenCodeParser {
        OpenCodeParser {
            ctx,
            session: None,
            usage: Usage::zero(),
            priced: true,
            text: None,
            finished: false,
            error: None,
            stderr: Vec::new(),
        }
    }

    fn total(&self) -> Usage {
        if self.priced {
            self.usage
        } else {
            self.ctx.prices.priced(self.ctx.model.as_deref(), Usage { cost_usd: None, ..self.usage })
        }
    }
}

impl Parser for OpenCodeParser {
    fn line(&mut self, stream: Stream, line: &str) {
        let Some(v) = json::parse(line).filter(|_| stream == Stream::Stdout) else {
            if !line.trim().is_empty() {
                self.stderr.push(line.to_owned());
                if self.stderr.len() > 20 {
                    self.stderr.remove(0);
                }
            }
            return;
        };
        if let Some(s) = str_at(&v, "sessionID") {
            self.session = Some(s.to_owned());
        }
        let part = v.get("part").unwrap_or(&Value::Null);
        match str_at(&v, "type") {
            Some("text") => {
                if let Some(t) = str_at(part, "text").filter(|t| !t.trim().is_empty()) {
                    self.text = Some(t.to_owned());
                }
            }
            Some("step_finish") => {
                let t = part.get("tokens").unwrap_or(&Value::Null);
                let cache = t.get("cache").unwrap_or(&Value::Null);
                let cost = part.get("cost").and_then(Value::as_f64);
                // A reported cost of 0 with tokens is a model OpenCode has no price for.
                let cost = cost.filter(|c| *c > 0.0 || u64_at(t, "input") + u64_at(t, "output") == 0);
                self.priced &= cost.is_some();
                self.usage = self.usage.add(&Usage::new(
                    u64_at(t, "input"),
                    u64_at(t, "output") + u64_at(t, "reasoning"),
                    u64_at(cache, "read"),
                    u64_at(cache, "write"),
                    Some(cost.unwrap_or(0.0)),
                ));
                if str_at(part, "reason") != Some("tool-calls") {
                    self.finished = true;
                }
            }
            Some("error") => {
                let e = v.get("error").unwrap_or(&Value::Null);
                let data = e.get("data").unwrap_or(&Value::Null);
                let m =
                    str_at(data, "message").or_else(|| str_at(e, "message")).or_else(|| str_at(e, "name"));
                self.error = Some(m.unwrap_or("OpenCode reported an error").to_owned());
            }
            _ => {}
        }
    }

    fn spent(&self) -> Usage {
        self.total()
    }

    fn finish(&mut self, end: &End, tail: &str, now: i64) -> TurnReport {
        let outcome = match (&self.error, end) {
            (Some(m), _) => {
                let text = format!("{m}\n{}", self.stderr.join("\n"));
                match super::outcome_of_exit(&End::Exited(1), &text, now) {
                    TurnOutcome::Error(_) => TurnOutcome::Error(m.clone()),
                    other => other,
                }
            }
            (None, End::Exited(0)) if self.finished || self.text.is_some() => TurnOutcome::Success,
            (None, end) => super::outcome_of_exit(end, &format!("{}\n{tail}", self.stderr.join("\n")), now),
        };
        TurnReport {
            agent: "opencode".into(),
            model: self.ctx.model.clone(),
            outcome,
            summary: self.text.clone(),
            usage: self.total(),
            session: self.session.clone(),
            question: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::adapter::Prices;

    /// The reference's shape (agent-clis.md §6), a tool step then the final one.
    #[test]
    fn steps_are_summed_and_the_last_text_is_the_summary() {
        let mut p = OpenCodeParser::new(Context {
            prices: Prices::new(&BTreeMap::new()),
            model: None,
            before: Usage::zero(),
        });
        for l in [
            r#"{"type":"step_start","timestamp":1767000000000,"sessionID":"ses_4a1b","part":{"type":"step-start"}}"#,
            r#"{"type":"tool_use","timestamp":1767000000100,"sessionID":"ses_4a1b","part":{"type":"tool","tool":"edit","state":{"status":"completed"}}}"#,
            r#"{"type":"step_finish","timestamp":1767000000200,"sessionID":"ses_4a1b","part":{"type":"step-finish","reason":"tool-calls","cost":0.002,"tokens":{"input":1000,"output":20,"reasoning":5,"cache":{"read":300,"write":0}}}}"#,
            r#"{"type":"text","timestamp":1767000000300,"sessionID":"ses_4a1b","part":{"type":"text","text":"Renamed it."}}"#,
            r#"{"type":"step_finish","timestamp":1767000000400,"sessionID":"ses_4a1b","part":{"type":"step-finish","reason":"stop","cost":0.001,"tokens":{"total":17512,"input":17509,"output":3}}}"#,
        ] {
            p.line(Stream::Stdout, l);
        }
        let r = p.finish(&End::Exited(0), "", 0);
        assert_eq!(r.outcome, TurnOutcome::Success);
        assert_eq!(r.summary.as_deref(), Some("Renamed it."));
        assert_eq!(r.session.as_deref(), Some("ses_4a1b"));
        let u = r.usage;
        assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens), (18509, 28, 300));
        assert!((u.cost_usd.expect("reported") - 0.003).abs() < 1e-12);
    }
}
