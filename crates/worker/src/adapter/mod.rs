//! The builtin adapters of agent CLIs: Claude Code, Codex, Copilot CLI, Gemini CLI, aider and
//! OpenCode. Each turns a turn of a task into a command line that never waits on a person
//! (nothing reads the terminal; stdin is closed) and reads back, line by line as the CLI
//! prints it, what the turn produced: how it ended, its final message, its tokens and cost,
//! its session id, and whether it ended asking a person something.
//!
//! The formats are the CLIs' documented machine output (see `../shared/reference/agent-clis.md`
//! and each module's tests, which use the documented samples and captures of the real CLIs).

pub mod aider;
pub mod claude;
pub mod codex;
pub mod copilot;
pub mod gemini;
pub mod opencode;
pub mod session;

use std::collections::BTreeMap;
use std::path::Path;

use grove_core::spec::AgentKind;
use grove_core::usage::{self, Price, SessionRef, TurnOutcome, TurnReport, Usage};

use crate::process::{End, Stream};

/// Instructions and tools from a repository-defined agent, for the CLI to run with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Persona {
    /// The definition's name (Copilot CLI runs `--agent NAME` itself).
    pub name: String,
    /// Its body: the appended system prompt where the CLI has one, else before the prompt.
    pub instructions: String,
    /// Its tools as the definition names them (`read`, `edit`, `Bash`...); `None`: all.
    pub tools: Option<Vec<String>>,
}

/// One turn of a builtin adapter, as the attempt sees it.
pub struct Plan<'a> {
    pub kind: AgentKind,
    /// The executable, when not the CLI's usual name.
    pub program: Option<&'a str>,
    pub model: Option<&'a str>,
    /// Extra arguments for the CLI, after grove's own.
    pub args: &'a [String],
    /// This turn's prompt: the task's on the first turn, then the feedback (or a person's
    /// answer) for the resumed session.
    pub prompt: &'a str,
    /// The session this turn resumes.
    pub resume: Option<&'a SessionRef>,
    /// The task's workspace.
    pub workdir: &'a Path,
    /// grove's scratch folder for the task, outside the workspace.
    pub run_dir: &'a Path,
    /// What the attempt may still spend, for a CLI that has a cap of its own.
    pub usd_left: Option<f64>,
    /// The worker runs as root (Claude Code refuses to skip its permission prompts then).
    pub as_root: bool,
    pub persona: Option<&'a Persona>,
}

/// A command line to run, with what the adapter wants said about it in the task's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub program: String,
    pub args: Vec<String>,
    /// Environment the adapter sets (on top of the turn's).
    pub env: Vec<(String, String)>,
    /// Lines for the task's log: how the CLI was told not to ask anything.
    pub notes: Vec<String>,
}

/// Reads one turn's output as it streams.
pub trait Parser: Send {
    /// One line of the CLI's output.
    fn line(&mut self, stream: Stream, line: &str);
    /// What this turn has spent so far, as far as the stream shows (for budgets).
    fn spent(&self) -> Usage;
    /// The turn is over (`end` is how the process ended, `tail` its last lines): what it
    /// produced.
    fn finish(&mut self, end: &End, tail: &str, now: i64) -> TurnReport;
    /// The CLI could not find the session it was asked to resume (the next try starts one).
    fn resume_failed(&self) -> bool {
        false
    }
}

/// The command line for `plan`.
pub fn invocation(plan: &Plan<'_>) -> Invocation {
    match plan.kind {
        AgentKind::Claude => claude::invocation(plan),
        AgentKind::Codex => codex::invocation(plan),
        AgentKind::Copilot => copilot::invocation(plan),
        AgentKind::Gemini => gemini::invocation(plan),
        AgentKind::Aider => aider::invocation(plan),
        AgentKind::Opencode => opencode::invocation(plan),
        AgentKind::Replace | AgentKind::Command => {
            Invocation { program: String::new(), args: Vec::new(), env: Vec::new(), notes: Vec::new() }
        }
    }
}

/// A parser for `plan`'s output; `prices` prices what the CLI reports only in tokens.
pub fn parser(plan: &Plan<'_>, prices: Prices) -> Box<dyn Parser> {
    let ctx = Context {
        prices,
        model: plan.model.map(str::to_owned),
        before: plan.resume.map(|s| s.total).unwrap_or_else(Usage::zero),
    };
    match plan.kind {
        AgentKind::Codex => Box::new(codex::CodexParser::new(ctx)),
        AgentKind::Copilot => Box::new(copilot::CopilotParser::new(ctx)),
        AgentKind::Gemini => Box::new(gemini::GeminiParser::new(ctx)),
        AgentKind::Aider => Box::new(aider::AiderParser::new(ctx)),
        AgentKind::Opencode => Box::new(opencode::OpenCodeParser::new(ctx)),
        AgentKind::Claude | AgentKind::Replace | AgentKind::Command => {
            Box::new(claude::ClaudeParser::new(ctx))
        }
    }
}

/// What every parser knows about its turn.
#[derive(Debug, Clone)]
pub struct Context {
    pub prices: Prices,
    /// The model the turn was asked to use.
    pub model: Option<String>,
    /// The resumed session's running total before this turn (for CLIs that report one).
    pub before: Usage,
}

/// The price table: the builtin one with the job's prices over it.
#[derive(Debug, Clone)]
pub struct Prices(BTreeMap<String, Price>);

impl Prices {
    pub fn new(overrides: &BTreeMap<String, Price>) -> Prices {
        let mut t = usage::builtin_prices();
        t.extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
        Prices(t)
    }

    /// `u` with its cost from the table (unknown without a model or a price for it).
    pub fn priced(&self, model: Option<&str>, u: Usage) -> Usage {
        let cost = model.and_then(|m| usage::price_of(&self.0, m)).map(|p| p.cost(&u));
        Usage { cost_usd: cost, known_cost_usd: cost.unwrap_or(0.0), ..u }
    }
}

/// The usual executable of each CLI.
pub fn default_program(kind: AgentKind) -> &'static str {
    match kind {
        AgentKind::Claude => "claude",
        AgentKind::Codex => "codex",
        AgentKind::Copilot => "copilot",
        AgentKind::Gemini => "gemini",
        AgentKind::Aider => "aider",
        AgentKind::Opencode => "opencode",
        AgentKind::Replace | AgentKind::Command => "",
    }
}

pub(crate) fn program(plan: &Plan<'_>) -> String {
    plan.program.unwrap_or(default_program(plan.kind)).to_owned()
}

/// The prompt with a persona's instructions before it, for CLIs without a system prompt flag.
pub(crate) fn with_instructions(plan: &Plan<'_>) -> String {
    match plan.persona.filter(|p| !p.instructions.trim().is_empty()) {
        Some(p) => format!("{}\n\n---\n\n{}", p.instructions.trim(), plan.prompt),
        None => plan.prompt.to_owned(),
    }
}

/// Helpers for reading JSON lines.
pub(crate) mod json {
    use serde_json::Value;

    pub fn parse(line: &str) -> Option<Value> {
        let t = line.trim();
        if !t.starts_with('{') {
            return None;
        }
        serde_json::from_str(t).ok()
    }

    pub fn u64_at(v: &Value, key: &str) -> u64 {
        v.get(key).and_then(Value::as_u64).unwrap_or(0)
    }

    pub fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
        v.get(key).and_then(Value::as_str)
    }
}

/// Text that says a provider could not be reached (a transient failure).
pub(crate) fn looks_like_network(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "econnrefused",
        "connection refused",
        "econnreset",
        "connection reset",
        "etimedout",
        "timed out",
        "enotfound",
        "getaddrinfo",
        "network error",
        "error sending request",
        "stream disconnected",
        "connection error",
        "could not connect",
        "failed to connect",
        "fetch failed",
        "socket hang up",
        "overloaded",
        "service unavailable",
        "bad gateway",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// Text that says the CLI is not logged in or its key is refused.
pub(crate) fn looks_like_auth(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "401 unauthorized",
        "unauthorized",
        "invalid api key",
        "invalid_api_key",
        "invalid x-api-key",
        "authentication",
        "not logged in",
        "please run /login",
        "login expired",
        "missing bearer",
        "no api key",
        "api key not",
        "please set an auth method",
        "403 forbidden",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// The hint an authentication failure comes with: the variable that would fix it.
pub fn auth_hint(kind: AgentKind) -> &'static str {
    match kind {
        AgentKind::Claude => "set ANTHROPIC_API_KEY (or CLAUDE_CODE_OAUTH_TOKEN) in the worker's environment",
        AgentKind::Codex => {
            "set CODEX_API_KEY (or OPENAI_API_KEY) in the worker's environment, or `codex login`"
        }
        AgentKind::Copilot => "set COPILOT_GITHUB_TOKEN (or GH_TOKEN) in the worker's environment",
        AgentKind::Gemini => "set GEMINI_API_KEY in the worker's environment",
        AgentKind::Aider => {
            "set the API key of aider's model (ANTHROPIC_API_KEY, OPENAI_API_KEY...) in the worker's environment"
        }
        AgentKind::Opencode => {
            "set the API key of OpenCode's provider in the worker's environment, or `opencode auth login`"
        }
        AgentKind::Replace | AgentKind::Command => "",
    }
}

/// How a turn without a recognised end of its own ended: from the process's end and its
/// output.
pub(crate) fn outcome_of_exit(end: &End, tail: &str, now: i64) -> TurnOutcome {
    match end {
        End::Exited(0) => TurnOutcome::Success,
        End::Exited(code) => {
            let last = last_line(tail).unwrap_or_default();
            if let Some(reset) = crate::limits::usage_limit(tail, now) {
                TurnOutcome::UsageLimit { reset: Some(reset), message: last }
            } else if looks_like_auth(tail) {
                TurnOutcome::Auth(last)
            } else if looks_like_network(tail) {
                TurnOutcome::Network(last)
            } else {
                TurnOutcome::Error(format!("exit {code}: {last}"))
            }
        }
        End::TimedOut(_) => TurnOutcome::Error("timed out".into()),
        End::Cancelled => TurnOutcome::Error("stopped".into()),
    }
}

/// The last non-empty line of `text`.
pub(crate) fn last_line(text: &str) -> Option<String> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
}

/// A final message that ends in a question to a person: its last paragraph ends with `?`.
pub fn asks_a_question(summary: &str) -> Option<String> {
    let para = summary.trim().rsplit("\n\n").next()?.trim();
    let last = para.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let last = last.trim_end_matches(['*', '_', '`', ')', '"', ' ']);
    last.ends_with('?').then(|| para.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_final_paragraphs_ending_in_a_question_mark() {
        assert_eq!(
            asks_a_question("I looked at the code.\n\nShould I keep the old API or remove it?").as_deref(),
            Some("Should I keep the old API or remove it?")
        );
        assert_eq!(asks_a_question("Done: renamed 3 files."), None);
        assert_eq!(asks_a_question("Which one? I picked A.\n\nDone."), None);
        assert_eq!(
            asks_a_question("**Which database should I use?**").as_deref(),
            Some("**Which database should I use?**")
        );
    }

    #[test]
    fn failures_are_told_apart_by_their_text() {
        assert!(looks_like_network(
            "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"
        ));
        assert!(looks_like_auth("Invalid API key · Fix external API key"));
        assert!(looks_like_auth(
            "unexpected status 401 Unauthorized: Missing bearer or basic authentication in header"
        ));
        assert!(!looks_like_auth("error[E0425]: cannot find value `x`"));
        assert_eq!(outcome_of_exit(&End::Exited(0), "", 0), TurnOutcome::Success);
        assert!(
            matches!(outcome_of_exit(&End::Exited(1), "boom\n", 0), TurnOutcome::Error(m) if m == "exit 1: boom")
        );
    }
}
