//! What agent turns cost: tokens, dollars, the price table that turns tokens into dollars when
//! a CLI reports only tokens, budgets, and what one turn of a builtin agent adapter produced.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Tokens and dollars of one turn, a task or a job.
///
/// `cost_usd` is `None` when the cost is unknown: the CLI did not report one and the price
/// table has no price for the model. A sum with an unknown part is unknown ([`Usage::add`]);
/// [`Usage::known_cost`] is what is known of it, for budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: Option<f64>,
    /// The part of the cost that is known (equal to `cost_usd` when that is known).
    pub known_cost_usd: f64,
}

impl Usage {
    /// Usage with these tokens and cost.
    pub fn new(input: u64, output: u64, cache_read: u64, cache_write: u64, cost_usd: Option<f64>) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            cost_usd,
            known_cost_usd: cost_usd.unwrap_or(0.0),
        }
    }

    /// Nothing spent, at a known cost of zero (the start of a sum).
    pub fn zero() -> Usage {
        Usage { cost_usd: Some(0.0), ..Usage::default() }
    }

    /// Every token, of any kind.
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
    }

    /// The sum of two usages; the cost is unknown when either is.
    pub fn add(&self, o: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens + o.input_tokens,
            output_tokens: self.output_tokens + o.output_tokens,
            cache_read_tokens: self.cache_read_tokens + o.cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens + o.cache_write_tokens,
            cost_usd: self.cost_usd.zip(o.cost_usd).map(|(a, b)| a + b),
            known_cost_usd: self.known_cost_usd + o.known_cost_usd,
        }
    }

    /// The dollars known to be spent.
    pub fn known_cost(&self) -> f64 {
        self.cost_usd.unwrap_or(self.known_cost_usd)
    }

    /// `$0.0121`, or `unknown`.
    pub fn cost_text(&self) -> String {
        match self.cost_usd {
            Some(c) => dollars(c),
            None if self.known_cost_usd > 0.0 => format!("≥{}", dollars(self.known_cost_usd)),
            None => "unknown".into(),
        }
    }
}

/// `$1.23`, `$0.50`, `$0.0121` (up to four decimals below a dollar), `$0`.
pub fn dollars(c: f64) -> String {
    if c == 0.0 {
        "$0".into()
    } else if c >= 1.0 {
        format!("${c:.2}")
    } else {
        let s = format!("{c:.4}");
        let s = s.trim_end_matches('0');
        let s = if s.len() < 4 { format!("{s:0<4}") } else { s.to_owned() };
        format!("${s}")
    }
}

/// `12.3k`, `1.2M`, `950`.
pub fn tokens_text(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The price of a model in USD per million tokens.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input tokens that were not read from the cache.
    pub input: f64,
    pub output: f64,
    /// Input tokens read from the cache (default: a tenth of `input`).
    pub cache_read: Option<f64>,
    /// Input tokens written to the cache (default: `input` and a quarter).
    pub cache_write: Option<f64>,
}

impl Price {
    /// What `u`'s tokens cost at this price.
    pub fn cost(&self, u: &Usage) -> f64 {
        let per = |tokens: u64, usd_per_m: f64| tokens as f64 * usd_per_m / 1e6;
        per(u.input_tokens, self.input)
            + per(u.output_tokens, self.output)
            + per(u.cache_read_tokens, self.cache_read.unwrap_or(self.input / 10.0))
            + per(u.cache_write_tokens, self.cache_write.unwrap_or(self.input * 1.25))
    }
}

/// When the builtin prices were read from the vendors' price lists. A job's `[prices]`
/// overrides them, model by model.
pub const PRICES_AS_OF: &str = "2026-12-01";

/// The builtin price table: model name prefixes and their list prices (USD per million
/// tokens) as of [`PRICES_AS_OF`]. Claude Code reports its own cost, so Anthropic's models are
/// here only for the estimate a budget checks while a turn streams.
pub fn builtin_prices() -> BTreeMap<String, Price> {
    let p =
        |input, output, cache_read| Price { input, output, cache_read: Some(cache_read), cache_write: None };
    [
        // OpenAI (Codex CLI, OpenCode): cached input is a tenth.
        ("gpt-5.5", p(1.25, 10.0, 0.125)),
        ("gpt-5", p(1.25, 10.0, 0.125)),
        ("gpt-5-mini", p(0.25, 2.0, 0.025)),
        ("gpt-5-nano", p(0.05, 0.4, 0.005)),
        ("gpt-4.1", p(2.0, 8.0, 0.5)),
        ("o3", p(2.0, 8.0, 0.5)),
        ("o4-mini", p(1.1, 4.4, 0.275)),
        // Google (Gemini CLI), prompts up to 200k tokens.
        ("gemini-3", p(2.0, 12.0, 0.2)),
        ("gemini-2.5-pro", p(1.25, 10.0, 0.125)),
        ("gemini-2.5-flash", p(0.3, 2.5, 0.03)),
        ("gemini-2.5-flash-lite", p(0.1, 0.4, 0.01)),
        // Anthropic (estimates while a turn streams; the CLI's own figure is recorded).
        ("claude-opus-5", p(4.0, 20.0, 0.4)),
        ("claude-opus-4-5", p(5.0, 25.0, 0.5)),
        ("claude-opus-4", p(15.0, 75.0, 1.5)),
        ("claude-sonnet", p(3.0, 15.0, 0.3)),
        ("claude-haiku-4", p(1.0, 5.0, 0.1)),
        ("claude-3-5-haiku", p(0.8, 4.0, 0.08)),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p))
    .collect()
}

/// The price of `model` in `table`: an exact name, else the longest name that is a prefix of
/// it (`gpt-5` prices `gpt-5-codex`), matched without case and without a `provider/` prefix.
pub fn price_of<'a>(table: &'a BTreeMap<String, Price>, model: &str) -> Option<&'a Price> {
    let model = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
    table
        .iter()
        .filter(|(name, _)| model.starts_with(&name.to_ascii_lowercase()))
        .max_by_key(|(name, _)| name.len())
        .map(|(_, p)| p)
}

/// A job's budgets (`[budget]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// USD one task may spend across its turns and attempts. [--max-task-cost]
    pub task_usd: Option<f64>,
    /// USD the whole job may spend; over it, nothing more is dispatched. [--max-job-cost]
    pub job_usd: Option<f64>,
    /// Tokens (of every kind) one task may use. [--max-task-tokens]
    pub task_tokens: Option<u64>,
}

impl BudgetSpec {
    pub fn is_empty(&self) -> bool {
        self.task_usd.is_none() && self.job_usd.is_none() && self.task_tokens.is_none()
    }
}

/// What an attempt may still spend, as the coordinator knew it at dispatch: each limit with
/// what was spent against it before this attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    /// The task's dollar limit and what the task spent before.
    pub task_usd: Option<Cap<f64>>,
    /// The job's dollar limit and what the job spent before.
    pub job_usd: Option<Cap<f64>>,
    /// The task's token limit and what the task used before.
    pub task_tokens: Option<Cap<u64>>,
}

/// A limit and what was spent against it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cap<T> {
    pub limit: T,
    pub spent: T,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        self.task_usd.is_none() && self.job_usd.is_none() && self.task_tokens.is_none()
    }

    /// Why `turn` (what this attempt spent so far) puts the task over a limit, if it does:
    /// `budget: $1.0312 of $1.00`.
    pub fn exceeded(&self, spent: &Usage) -> Option<String> {
        if let Some(c) = self.task_usd {
            let total = c.spent + spent.known_cost();
            if total > c.limit {
                return Some(format!("budget: {} of {}", dollars(total), dollars(c.limit)));
            }
        }
        if let Some(c) = self.task_tokens {
            let total = c.spent + spent.tokens();
            if total > c.limit {
                return Some(format!("budget: {total} tokens of {}", c.limit));
            }
        }
        if let Some(c) = self.job_usd {
            let total = c.spent + spent.known_cost();
            if total > c.limit {
                return Some(format!("job budget: {} of {}", dollars(total), dollars(c.limit)));
            }
        }
        None
    }

    /// The dollars this attempt may still spend (the tighter of the task's and the job's), for
    /// a CLI's own cap.
    pub fn usd_left(&self) -> Option<f64> {
        let left = |c: Cap<f64>| (c.limit - c.spent).max(0.0);
        match (self.task_usd.map(left), self.job_usd.map(left)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// How one agent turn ended, as the adapter read it from the CLI's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The agent finished its turn.
    Success,
    /// The agent or its CLI failed (the message says how).
    Error(String),
    /// The CLI stopped at its own turn limit (`--max-turns`).
    MaxTurns,
    /// The CLI stopped at its own budget (`--max-budget-usd`), or grove stopped it at the
    /// task's budget.
    Budget(String),
    /// The provider refuses work until `reset` (unix seconds; `None`: not said).
    UsageLimit { reset: Option<i64>, message: String },
    /// The CLI is not logged in or its key is wrong.
    Auth(String),
    /// The provider could not be reached.
    Network(String),
}

impl TurnOutcome {
    /// A short word for the store and `--json`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TurnOutcome::Success => "success",
            TurnOutcome::Error(_) => "error",
            TurnOutcome::MaxTurns => "max-turns",
            TurnOutcome::Budget(_) => "budget",
            TurnOutcome::UsageLimit { .. } => "usage-limit",
            TurnOutcome::Auth(_) => "auth",
            TurnOutcome::Network(_) => "network",
        }
    }

    /// The message that comes with it, if any.
    pub fn message(&self) -> Option<&str> {
        match self {
            TurnOutcome::Success | TurnOutcome::MaxTurns => None,
            TurnOutcome::Error(m)
            | TurnOutcome::Budget(m)
            | TurnOutcome::Auth(m)
            | TurnOutcome::Network(m)
            | TurnOutcome::UsageLimit { message: m, .. } => Some(m),
        }
    }

    /// Rebuild from [`TurnOutcome::as_str`] and [`TurnOutcome::message`] (the wire, the store).
    pub fn from_parts(
        kind: &str,
        message: Option<String>,
        reset: Option<i64>,
    ) -> Result<TurnOutcome, String> {
        let m = || message.clone().unwrap_or_default();
        Ok(match kind {
            "success" => TurnOutcome::Success,
            "error" => TurnOutcome::Error(m()),
            "max-turns" => TurnOutcome::MaxTurns,
            "budget" => TurnOutcome::Budget(m()),
            "usage-limit" => TurnOutcome::UsageLimit { reset, message: m() },
            "auth" => TurnOutcome::Auth(m()),
            "network" => TurnOutcome::Network(m()),
            other => return Err(format!("unknown turn outcome {other:?}")),
        })
    }
}

impl fmt::Display for TurnOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(m) if !m.is_empty() => write!(f, "{}: {m}", self.as_str()),
            _ => f.write_str(self.as_str()),
        }
    }
}

/// What one turn of a builtin agent adapter produced, reported with the turn's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnReport {
    /// The adapter (`claude`, `codex`...).
    pub agent: String,
    /// The model the CLI said it used, if it said.
    pub model: Option<String>,
    pub outcome: TurnOutcome,
    /// The agent's final message.
    pub summary: Option<String>,
    /// What the turn spent (this turn only, not the session's running total).
    pub usage: Usage,
    /// The agent's session id, for the next turn to resume.
    pub session: Option<String>,
    /// The agent ended its turn asking a person something.
    pub question: Option<String>,
}

/// An agent session a task's next turn resumes: which CLI, its id, and what the session had
/// spent by the end of the last recorded turn (Codex reports a session's running total, so
/// the next turn's own share is the difference).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionRef {
    pub agent: String,
    pub id: String,
    /// The session's running total after its last recorded turn.
    pub total: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_with_an_unknown_cost_are_unknown_but_keep_what_is_known() {
        let a = Usage::new(10, 5, 0, 0, Some(0.5));
        let b = Usage::new(1, 1, 1, 1, None);
        let s = a.add(&b);
        assert_eq!(s.tokens(), 19);
        assert_eq!(s.cost_usd, None);
        assert_eq!(s.known_cost(), 0.5);
        assert_eq!(s.cost_text(), "≥$0.50");
        assert_eq!(Usage::zero().add(&a).cost_usd, Some(0.5));
        assert_eq!(Usage::default().cost_text(), "unknown");
        assert_eq!(dollars(1.234), "$1.23");
        assert_eq!(dollars(0.5), "$0.50");
        assert_eq!(dollars(0.0121), "$0.0121");
        assert_eq!(dollars(0.01), "$0.01");
        assert_eq!(tokens_text(12_345), "12.3k");
    }

    #[test]
    fn prices_match_the_longest_prefix() {
        let t = builtin_prices();
        assert_eq!(price_of(&t, "gpt-5-codex").map(|p| p.input), Some(1.25));
        assert_eq!(price_of(&t, "gpt-5-mini-2026").map(|p| p.input), Some(0.25));
        assert_eq!(price_of(&t, "openai/GPT-5").map(|p| p.output), Some(10.0));
        assert!(price_of(&t, "llama-3").is_none());
        let p = Price { input: 2.0, output: 10.0, cache_read: None, cache_write: None };
        let u = Usage::new(1_000_000, 100_000, 1_000_000, 0, None);
        assert!((p.cost(&u) - (2.0 + 1.0 + 0.2)).abs() < 1e-9);
    }

    #[test]
    fn budgets_say_which_limit_and_by_how_much() {
        let b = Budget {
            task_usd: Some(Cap { limit: 1.0, spent: 0.6 }),
            task_tokens: Some(Cap { limit: 1000, spent: 100 }),
            job_usd: Some(Cap { limit: 10.0, spent: 9.8 }),
        };
        assert_eq!(b.exceeded(&Usage::new(1, 1, 0, 0, Some(0.1))), None);
        assert_eq!(b.exceeded(&Usage::new(1, 1, 0, 0, Some(0.5))).as_deref(), Some("budget: $1.10 of $1.00"));
        assert_eq!(
            b.exceeded(&Usage::new(950, 0, 0, 0, Some(0.0))).as_deref(),
            Some("budget: 1050 tokens of 1000")
        );
        assert!((b.usd_left().expect("left") - 0.2).abs() < 1e-9, "the job's remainder is tighter");
        assert_eq!(Budget::default().usd_left(), None);
    }
}
