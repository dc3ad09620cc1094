//! aider: `aider --message=<p> --yes-always --no-auto-commits` (grove commits each turn
//! itself), with its chat history kept in grove's scratch folder, never in the workspace (where
//! it would be committed), and `--restore-chat-history` for later turns: the history file is
//! aider's session.
//!
//! aider prints text only, and exits 0 even when the model call failed, so a turn is read
//! from its text: the usage line `Tokens: 12k sent, 1.2k cache write, 8.4k cache hit, 350
//! received. Cost: $0.0123 message, $0.4567 session.` (`aider/coders/base_coder.py`; the cost
//! part is missing for a model aider has no price for, and the two parts are on two lines when
//! both cache figures are there), and litellm's error texts.

use std::sync::LazyLock;

use grove_core::usage::{TurnOutcome, TurnReport, Usage};
use regex::Regex;

use super::{Context, Invocation, Parser, Plan};
use crate::process::{End, Stream};

/// aider's session: its chat history, in grove's scratch folder.
pub const HISTORY: &str = "aider.chat.history.md";

pub fn invocation(plan: &Plan<'_>) -> Invocation {
    let history = plan.run_dir.join(HISTORY);
    let mut args = vec![
        format!("--message={}", super::with_instructions(plan)),
        "--yes-always".into(),
        "--no-auto-commits".into(),
        "--no-dirty-commits".into(),
        "--no-gitignore".into(),
        "--no-pretty".into(),
        "--no-stream".into(),
        "--no-check-update".into(),
        "--no-analytics".into(),
        "--no-show-model-warnings".into(),
        format!("--chat-history-file={}", history.display()),
        format!("--input-history-file={}", plan.run_dir.join("aider.input.history").display()),
    ];
    if plan.resume.is_some() {
        args.push("--restore-chat-history".into());
    }
    if let Some(m) = plan.model {
        args.push(format!("--model={m}"));
    }
    args.extend(plan.args.iter().cloned());
    Invocation {
        program: super::program(plan),
        args,
        env: Vec::new(),
        notes: vec![
            "aider: --yes-always (shell commands it proposes are declined), --no-auto-commits".into(),
        ],
    }
}

static TOKENS: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"Tokens: ([\d.]+k?) sent(?:, ([\d.]+k?) cache write)?(?:, ([\d.]+k?) cache hit)?, ([\d.]+k?) received\.").ok()
});
static COST: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"Cost: \$([\d.]+) message, \$([\d.]+) session\.").ok());

/// `12k` → 12000, `1.2k` → 1200, `350` → 350 (aider's `format_tokens`).
fn count(s: &str) -> u64 {
    match s.strip_suffix('k') {
        Some(n) => (n.parse::<f64>().unwrap_or(0.0) * 1000.0).round() as u64,
        None => s.parse::<f64>().unwrap_or(0.0).round() as u64,
    }
}

/// Lines aider prints about itself, not the model's answer.
fn chrome(line: &str) -> bool {
    const PREFIXES: [&str; 14] = [
        "Tokens:",
        "Cost:",
        "Aider v",
        "Main model:",
        "Weak model:",
        "Git repo:",
        "Repo-map:",
        "Applied edit to",
        "Added ",
        "Use /help",
        "Model:",
        "Retrying in",
        "https://",
        "Warning",
    ];
    PREFIXES.iter().any(|p| line.starts_with(p))
}

/// Reads aider's text output.
pub struct AiderParser {
    ctx: Context,
    usage: Usage,
    priced: bool,
    reported: bool,
    lines: Vec<String>,
    answer: Vec<String>,
}

impl AiderParser {
    pub fn new(ctx: Context) -> AiderParser {
        AiderParser {
            ctx,
            usage: Usage::zero(),
            priced: true,
            reported: false,
            lines: Vec::new(),
            answer: Vec::new(),
        }
    }

    fn total(&self) -> Usage {
        if self.priced {
            self.usage
        } else {
            // No cost line: aider has no price for the model; the table may.
            self.ctx.prices.priced(self.ctx.model.as_deref(), Usage { cost_usd: None, ..self.usage })
        }
    }
}

impl Parser for AiderParser {
    fn line(&mut self, _stream: Stream, line: &str) {
        let l = line.trim();
        if let Some(c) = TOKENS.as_ref().and_then(|r| r.captures(l)) {
            let n = |i: usize| c.get(i).map_or(0, |m| count(m.as_str()));
            let cost = COST.as_ref().and_then(|r| r.captures(l)).and_then(|c| c[1].parse::<f64>().ok());
            self.usage = self.usage.add(&Usage::new(n(1), n(4), n(3), n(2), Some(cost.unwrap_or(0.0))));
            self.priced &= cost.is_some();
            self.reported = true;
        } else if let Some(c) = COST.as_ref().and_then(|r| r.captures(l)) {
            // The cost on its own line (both cache figures given).
            if let Ok(cost) = c[1].parse::<f64>() {
                let known = self.usage.known_cost() + cost;
                self.usage.cost_usd = Some(known);
                self.usage.known_cost_usd = known;
                self.priced = true;
            }
        } else if !l.is_empty() && !chrome(l) {
            self.answer.push(l.to_owned());
            if self.answer.len() > 30 {
                self.answer.remove(0);
            }
        }
        if !l.is_empty() {
            self.lines.push(l.to_owned());
            if self.lines.len() > 40 {
                self.lines.remove(0);
            }
        }
    }

    fn spent(&self) -> Usage {
        self.total()
    }

    fn finish(&mut self, end: &End, _tail: &str, now: i64) -> TurnReport {
        let text = self.lines.join("\n");
        let outcome = match end {
            // aider exits 0 whatever happened: a turn without a usage line failed if it says so.
            End::Exited(0) if !self.reported => {
                if let Some(reset) = crate::limits::usage_limit(&text, now) {
                    TurnOutcome::UsageLimit {
                        reset: Some(reset),
                        message: super::last_line(&text).unwrap_or_default(),
                    }
                } else if super::looks_like_auth(&text) {
                    TurnOutcome::Auth(super::last_line(&text).unwrap_or_default())
                } else if super::looks_like_network(&text) {
                    TurnOutcome::Network(super::last_line(&text).unwrap_or_default())
                } else {
                    TurnOutcome::Success
                }
            }
            end => super::outcome_of_exit(end, &text, now),
        };
        let summary = (!self.answer.is_empty()).then(|| self.answer.join("\n"));
        TurnReport {
            agent: "aider".into(),
            model: self.ctx.model.clone(),
            outcome,
            summary,
            usage: self.total(),
            session: Some(HISTORY.into()),
            question: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::adapter::Prices;

    fn parser(model: Option<&str>) -> AiderParser {
        AiderParser::new(Context {
            prices: Prices::new(&BTreeMap::new()),
            model: model.map(str::to_owned),
            before: Usage::zero(),
        })
    }

    /// The exact format of `base_coder.py` (agent-clis.md §5), both layouts.
    #[test]
    fn usage_lines() {
        let mut p = parser(None);
        for l in [
            "I renamed the function.",
            "Applied edit to src/lib.rs",
            "Tokens: 12k sent, 1.2k cache write, 8.4k cache hit, 350 received.",
            "Cost: $0.0123 message, $0.4567 session.",
        ] {
            p.line(Stream::Stdout, l);
        }
        let r = p.finish(&End::Exited(0), "", 0);
        assert_eq!(r.outcome, TurnOutcome::Success);
        let u = r.usage;
        assert_eq!(
            (u.input_tokens, u.cache_write_tokens, u.cache_read_tokens, u.output_tokens),
            (12000, 1200, 8400, 350)
        );
        assert_eq!(u.cost_usd, Some(0.0123));
        assert_eq!(r.summary.as_deref(), Some("I renamed the function."));
        let mut p = parser(None);
        p.line(Stream::Stdout, "Tokens: 2.5k sent, 120 received. Cost: $0.0040 message, $0.0040 session.");
        p.line(Stream::Stdout, "Tokens: 3k sent, 80 received. Cost: $0.0050 message, $0.0090 session.");
        let u = p.finish(&End::Exited(0), "", 0).usage;
        assert_eq!((u.input_tokens, u.output_tokens), (5500, 200));
        assert!((u.cost_usd.expect("cost") - 0.009).abs() < 1e-12);
    }

    #[test]
    fn an_unpriced_model_and_a_rate_limit_that_exits_0() {
        let mut p = parser(Some("my-local-model"));
        p.line(Stream::Stdout, "Tokens: 950 sent, 12 received.");
        assert_eq!(p.finish(&End::Exited(0), "", 0).usage.cost_usd, None);
        let mut p = parser(None);
        p.line(Stream::Stdout, "litellm.RateLimitError: AnthropicException - rate_limit_error");
        p.line(
            Stream::Stdout,
            "The API provider has rate limited you. Try again later or check your quotas.",
        );
        assert!(matches!(p.finish(&End::Exited(0), "", 0).outcome, TurnOutcome::UsageLimit { .. }));
    }
}
