//! Conversions between grove-core's domain types and the wire types of `proto/grove.proto`,
//! by hand, in one place.
//!
//! API boundary: every message read from NATS becomes a domain value here, and only after each
//! of its fields was checked: names by grove-core's rules (job ids, task slugs, pools),
//! branches of the shape `grove/<job>/<task>`, repository-relative paths that stay inside the
//! repository, absolute paths that are plain, URLs git may fetch from, commit ids, and sizes
//! (counts, lengths, the message itself; [`limits`]). A message that breaks one is refused with
//! a [`WireError`] naming the field; free text that is only shown (a failure's reason, a log's
//! tail) is cut to its limit instead, so an outcome is not lost for being verbose.

use std::path::{Component, Path};
use std::time::Duration;

use grove_core::agents::{AgentDefinition, Format};
use grove_core::names::{self, NameError};
use grove_core::spec::{AgentKind, AgentSpec, KeepWorktrees};
use grove_core::task::{Assignment, EventKind, LogChunk, Redo, Retry, TaskEvent, TaskOutcome, WorkerInfo};
use grove_core::usage::{Budget, Cap, Price, SessionRef, TurnOutcome, TurnReport, Usage};
use grove_core::{DiffStat, JobId, TaskState};
use grove_proto::SCHEMA_VERSION;
use grove_proto::v1 as pb;
use prost::Message;

/// The bounds a message read from the wire must keep. Generous for what grove itself sends;
/// tight enough that a hostile message cannot make a worker or the coordinator allocate,
/// write or spawn without limit.
pub mod limits {
    use std::time::Duration;

    /// A whole message, encoded (NATS's own default `max_payload` is 1 MiB).
    pub const MESSAGE: usize = 8 << 20;
    /// Files of one task, sparse folders, ignored files, conflicting paths.
    pub const FILES: usize = 200_000;
    pub const SPARSE_DIRS: usize = 10_000;
    pub const IGNORED_FILES: usize = 10_000;
    /// Repositories a task's repository depends on.
    pub const UPSTREAMS: usize = 256;
    /// A prompt, a redo's conflict hunks or previous diff (the coordinator caps those at 256 KiB).
    pub const PROMPT: usize = 1 << 20;
    pub const REDO_TEXT: usize = 1 << 20;
    /// A check command, a replace agent's pattern or replacement, one argument of a command.
    pub const COMMAND_TEXT: usize = 64 << 10;
    /// Arguments of an agent's command, variables of its environment.
    pub const COMMAND_ARGS: usize = 1024;
    pub const ENV_VARS: usize = 1024;
    pub const ENV_NAME: usize = 256;
    /// Absolute paths (the mirror, the source) and URLs.
    pub const PATH: usize = 4096;
    pub const URL: usize = 4096;
    /// One turn at most (a week), turns at most, an agent's log at most.
    pub const TURN_TIMEOUT: Duration = Duration::from_secs(7 * 86400);
    pub const MAX_TURNS: u32 = 1000;
    pub const LOG_CAP: u64 = 1 << 30;
    /// A failure's reason and a log's tail: cut to this, not refused.
    pub const REASON: usize = 64 << 10;
    pub const LOG_TAIL: usize = 1 << 20;
    /// One chunk of an agent's output (workers send 64 KiB).
    pub const LOG_DATA: usize = 1 << 20;
    /// A worker's announcement: its id, host and version, each of its running tasks, why it
    /// refuses work; its pools and tasks.
    pub const WORKER_TEXT: usize = 256;
    pub const WORKER_REFUSING: usize = 4096;
    pub const WORKER_POOLS: usize = 64;
    pub const WORKER_TASKS: usize = 10_000;
}

/// A message that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Larger than any message grove sends.
    #[error("{what} of {size} bytes is larger than the {max} bytes grove reads")]
    TooLarge { what: &'static str, size: usize, max: usize },
    /// Not valid protobuf for the expected message.
    #[error("undecodable {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    /// Written by a newer grove.
    #[error("{what} has schema version {found}; this grove reads up to {SCHEMA_VERSION}")]
    NewerSchema { what: &'static str, found: u32 },
    /// A field holds a value grove refuses (unknown, malformed, out of bounds).
    #[error("{what}: bad {field}: {message}")]
    Field { what: &'static str, field: &'static str, message: String },
}

fn field(what: &'static str, field: &'static str, message: impl ToString) -> WireError {
    WireError::Field { what, field, message: message.to_string() }
}

/// Decode `bytes` as `M` after checking their size.
fn decode<M: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M, WireError> {
    if bytes.len() > limits::MESSAGE {
        return Err(WireError::TooLarge { what, size: bytes.len(), max: limits::MESSAGE });
    }
    M::decode(bytes).map_err(|source| WireError::Decode { what, source })
}

fn schema(what: &'static str, found: u32) -> Result<(), WireError> {
    if found > SCHEMA_VERSION {
        return Err(WireError::NewerSchema { what, found });
    }
    Ok(())
}

/// Checks of one message's fields, each naming the message and the field.
struct Check(&'static str);

impl Check {
    fn name(&self, f: &'static str, r: Result<(), NameError>) -> Result<(), WireError> {
        r.map_err(|e| field(self.0, f, e))
    }
    fn job(&self, s: &str) -> Result<JobId, WireError> {
        JobId::parse(s).map_err(|e| field(self.0, "job", e))
    }
    fn task(&self, s: &str) -> Result<(), WireError> {
        self.name("task", names::check_task_slug(s))
    }
    fn attempt(&self, n: u32) -> Result<(), WireError> {
        if n == 0 {
            return Err(field(self.0, "attempt", "0: attempts count from 1"));
        }
        Ok(())
    }
    fn count<T>(&self, f: &'static str, v: &[T], max: usize) -> Result<(), WireError> {
        if v.len() > max {
            return Err(field(self.0, f, format!("{} entries, more than the {max} grove reads", v.len())));
        }
        Ok(())
    }
    /// Text that is used (run, written to a file): refused when too long or holding a NUL.
    fn text(&self, f: &'static str, s: &str, max: usize) -> Result<(), WireError> {
        if s.len() > max {
            return Err(field(self.0, f, format!("{} bytes, more than the {max} grove reads", s.len())));
        }
        if s.contains('\0') {
            return Err(field(self.0, f, "contains a NUL byte"));
        }
        Ok(())
    }
    fn repo_paths(&self, f: &'static str, v: &[String], max: usize) -> Result<(), WireError> {
        self.count(f, v, max)?;
        for p in v {
            names::check_repo_path(p).map_err(|why| field(self.0, f, format!("{:?} {why}", shown(p))))?;
        }
        Ok(())
    }
    /// An absolute, plain path: no `.` or `..` components, no NUL, bounded.
    fn abs_path(&self, f: &'static str, s: &str) -> Result<(), WireError> {
        self.text(f, s, limits::PATH)?;
        let p = Path::new(s);
        if !p.is_absolute() {
            return Err(field(self.0, f, format!("{:?} is not an absolute path", shown(s))));
        }
        if s.split('/').any(|c| c == "." || c == "..")
            || p.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(field(self.0, f, format!("{:?} has '.' or '..' components", shown(s))));
        }
        Ok(())
    }
    fn commit(&self, f: &'static str, s: &str) -> Result<(), WireError> {
        self.name(f, names::check_commit_id(s, "commit"))
    }
}

/// At most 80 characters of `s`, for a message.
fn shown(s: &str) -> &str {
    s.char_indices().nth(80).map_or(s, |(i, _)| &s[..i])
}

/// Cut free text to `max` bytes (at a character boundary), saying so.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("\n… (cut)");
    }
    s
}

/// The mirror an assignment names: an absolute, plain path to a bare repository grove made
/// (`<home>/mirrors/<name>.git`), so a worker never makes a worktree of any other repository.
fn check_mirror(c: &Check, f: &'static str, s: &str) -> Result<(), WireError> {
    c.abs_path(f, s)?;
    let p = Path::new(s);
    let named = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.len() > 4 && n.ends_with(".git"));
    let under = p.parent().and_then(Path::file_name).is_some_and(|n| n == "mirrors");
    if !(named && under) {
        return Err(field(
            c.0,
            f,
            format!("{:?} is not a grove mirror (<home>/mirrors/<name>.git)", shown(s)),
        ));
    }
    Ok(())
}

/// A URL git may clone from and push to: `file://` with an absolute path, `http(s)://`, `ssh://`
/// or `git://`; no password in it, no option-like or control characters, bounded.
pub fn check_remote(s: &str) -> Result<(), String> {
    if s.len() > limits::URL {
        return Err(format!("{} bytes, more than the {} grove reads", s.len(), limits::URL));
    }
    if s.chars().any(|c| c.is_control() || c == ' ') {
        return Err("contains a space or a control character".into());
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("{:?} is not a URL (scheme://...)", shown(s)));
    };
    match scheme {
        "file" => {
            if !rest.starts_with('/') || rest.split('/').any(|c| c == "..") {
                return Err(format!("{:?} is not a file:// URL of an absolute, plain path", shown(s)));
            }
        }
        "http" | "https" | "ssh" | "git" => {
            let authority = rest.split('/').next().unwrap_or("");
            if authority.is_empty() || authority.starts_with('-') {
                return Err(format!("{:?} has no host", shown(s)));
            }
            if authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':')) {
                return Err("carries a password; grove never sends credentials in a URL".into());
            }
        }
        other => {
            return Err(format!(
                "the scheme {:?} is not one grove uses (file, http, https, ssh, git)",
                shown(other)
            ));
        }
    }
    Ok(())
}

pub fn encode_assignment(a: &Assignment) -> Vec<u8> {
    pb::TaskAssignment {
        schema: SCHEMA_VERSION,
        job: a.job.to_string(),
        task: a.task.clone(),
        attempt: a.attempt,
        order: a.order,
        mirror: a.mirror.display().to_string(),
        source_dir: a.source_dir.as_ref().map(|d| d.display().to_string()),
        base: a.base.clone(),
        branch: a.branch.clone(),
        sparse: a.sparse.as_ref().map(|dirs| pb::Folders { dirs: dirs.clone() }),
        files: a.files.clone(),
        prompt: a.prompt.clone(),
        agent: Some(pb::AgentSpec {
            kind: a.agent.kind.map_or("", |k| k.as_str()).to_owned(),
            pattern: a.agent.pattern.clone(),
            replace: a.agent.replace.clone(),
            command: a.agent.command.clone(),
            env: a.agent.env.clone().into_iter().collect(),
            model: a.agent.model.clone(),
            args: a.agent.args.clone(),
            program: a.agent.program.clone(),
            custom: a.agent.custom.clone(),
            definition: a.agent.definition.as_ref().map(definition_pb),
        }),
        turn_timeout_ms: a.turn_timeout.as_millis() as u64,
        max_turns: a.max_turns,
        check: a.check.clone(),
        ignored_files: a.ignored_files.clone(),
        port_base: u32::from(a.port_base),
        port_count: u32::from(a.port_count),
        log_cap: a.log_cap,
        keep_worktrees: match a.keep_worktrees {
            KeepWorktrees::None => "none",
            KeepWorktrees::Failed => "failed",
            KeepWorktrees::All => "all",
        }
        .to_owned(),
        remote: a.remote.clone(),
        redo_paths: a.redo.as_ref().map(|r| r.paths.clone()).unwrap_or_default(),
        redo_hunks: a.redo.as_ref().map(|r| r.hunks.clone()),
        redo_previous_diff: a.redo.as_ref().map(|r| r.previous_diff.clone()),
        budget: (!a.budget.is_empty()).then(|| budget_pb(&a.budget)),
        session: a.session.as_ref().map(|s| pb::Session {
            agent: s.agent.clone(),
            id: s.id.clone(),
            total: Some(usage_pb(&s.total)),
        }),
        reply: a.reply.clone(),
        prices: a.prices.iter().map(|(m, p)| (m.clone(), price_pb(p))).collect(),
        carried: a
            .carried
            .iter()
            .map(|c| pb::CarriedFile { path: c.path.clone(), data: c.data.clone(), mode: c.mode })
            .collect(),
        upstreams: a
            .upstreams
            .iter()
            .map(|u| pb::Upstream {
                name: u.name.clone(),
                mirror: u.mirror.display().to_string(),
                remote: u.remote.clone(),
                commit: u.commit.clone(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Usage on the wire (also what the gRPC API sends).
pub fn usage_pb(u: &Usage) -> pb::Usage {
    pb::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
        cost_usd: u.cost_usd,
        known_cost_usd: u.known_cost_usd,
    }
}

/// Usage from the wire.
pub fn usage_of(u: &pb::Usage) -> Usage {
    Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
        cost_usd: u.cost_usd,
        known_cost_usd: u.cost_usd.unwrap_or(u.known_cost_usd),
    }
}

fn budget_pb(b: &Budget) -> pb::Budget {
    pb::Budget {
        task_usd: b.task_usd.map(|c| pb::CapUsd { limit: c.limit, spent: c.spent }),
        job_usd: b.job_usd.map(|c| pb::CapUsd { limit: c.limit, spent: c.spent }),
        task_tokens: b.task_tokens.map(|c| pb::CapTokens { limit: c.limit, spent: c.spent }),
    }
}

fn budget_of(b: pb::Budget) -> Budget {
    Budget {
        task_usd: b.task_usd.map(|c| Cap { limit: c.limit, spent: c.spent }),
        job_usd: b.job_usd.map(|c| Cap { limit: c.limit, spent: c.spent }),
        task_tokens: b.task_tokens.map(|c| Cap { limit: c.limit, spent: c.spent }),
    }
}

fn price_pb(p: &Price) -> pb::Price {
    pb::Price { input: p.input, output: p.output, cache_read: p.cache_read, cache_write: p.cache_write }
}

fn report_pb(r: &TurnReport) -> pb::TurnReport {
    pb::TurnReport {
        agent: r.agent.clone(),
        model: r.model.clone(),
        outcome: r.outcome.as_str().to_owned(),
        message: r.outcome.message().map(str::to_owned),
        reset: match r.outcome {
            TurnOutcome::UsageLimit { reset, .. } => reset,
            _ => None,
        },
        summary: r.summary.clone(),
        usage: Some(usage_pb(&r.usage)),
        session: r.session.clone(),
        question: r.question.clone(),
    }
}

fn report_of(r: pb::TurnReport) -> Result<TurnReport, String> {
    Ok(TurnReport {
        outcome: TurnOutcome::from_parts(&r.outcome, r.message, r.reset)?,
        agent: r.agent,
        model: r.model,
        summary: r.summary.map(|t| cut(t, limits::REASON)),
        usage: r.usage.as_ref().map(usage_of).unwrap_or_default(),
        session: r.session.map(|t| cut(t, limits::ENV_NAME)),
        question: r.question.map(|t| cut(t, limits::REASON)),
    })
}

/// The identity of an assignment that could not be read in full (to report its rejection):
/// `None` unless its job, task and attempt are themselves valid.
pub fn peek_assignment(bytes: &[u8]) -> Option<(JobId, String, u32)> {
    let m: pb::TaskAssignment = decode("task assignment", bytes).ok()?;
    let c = Check("task assignment");
    let job = c.job(&m.job).ok()?;
    c.task(&m.task).ok()?;
    c.attempt(m.attempt).ok()?;
    Some((job, m.task, m.attempt))
}

pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment, WireError> {
    const W: &str = "task assignment";
    let c = Check(W);
    let m: pb::TaskAssignment = decode(W, bytes)?;
    schema(W, m.schema)?;
    let job = c.job(&m.job)?;
    c.task(&m.task)?;
    c.attempt(m.attempt)?;
    check_mirror(&c, "mirror", &m.mirror)?;
    check_remote(&m.remote).map_err(|e| field(W, "remote", e))?;
    if let Some(dir) = &m.source_dir {
        c.abs_path("source_dir", dir)?;
    }
    c.commit("base", &m.base)?;
    // The branch is the task's own: a worker never checks out, commits to or pushes any other.
    let expected = names::task_branch(&job, &m.task);
    if m.branch != expected {
        return Err(field(
            W,
            "branch",
            format!("{:?} is not the task's branch {expected:?}", shown(&m.branch)),
        ));
    }
    if let Some(f) = &m.sparse {
        c.repo_paths("sparse", &f.dirs, limits::SPARSE_DIRS)?;
    }
    c.repo_paths("files", &m.files, limits::FILES)?;
    c.text("prompt", &m.prompt, limits::PROMPT)?;
    let agent = m.agent.unwrap_or_default();
    let kind = match agent.kind.as_str() {
        "" => None,
        k => Some(k.parse::<AgentKind>().map_err(|e| field(W, "agent.kind", e))?),
    };
    for (f, v) in [("agent.pattern", &agent.pattern), ("agent.replace", &agent.replace)] {
        if let Some(v) = v {
            c.text(f, v, limits::COMMAND_TEXT)?;
        }
    }
    if kind == Some(AgentKind::Replace) && (agent.pattern.is_none() || agent.replace.is_none()) {
        return Err(field(W, "agent", "the replace agent needs a pattern and a replacement"));
    }
    c.count("agent.command", &agent.command, limits::COMMAND_ARGS)?;
    for a in &agent.command {
        c.text("agent.command", a, limits::COMMAND_TEXT)?;
    }
    if kind == Some(AgentKind::Command) && agent.command.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(field(W, "agent.command", "the command agent needs a program to run"));
    }
    if agent.env.len() > limits::ENV_VARS {
        return Err(field(
            W,
            "agent.env",
            format!("{} variables, more than {}", agent.env.len(), limits::ENV_VARS),
        ));
    }
    for (k, v) in &agent.env {
        let name_ok = k.len() <= limits::ENV_NAME
            && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(field(W, "agent.env", format!("{:?} is not a variable name", shown(k))));
        }
        c.text("agent.env", v, limits::COMMAND_TEXT)?;
    }
    let turn_timeout = Duration::from_millis(m.turn_timeout_ms);
    if turn_timeout.is_zero() || turn_timeout > limits::TURN_TIMEOUT {
        return Err(field(
            W,
            "turn_timeout_ms",
            format!("{} is not between 1 ms and a week", m.turn_timeout_ms),
        ));
    }
    if m.max_turns == 0 || m.max_turns > limits::MAX_TURNS {
        return Err(field(
            W,
            "max_turns",
            format!("{} is not between 1 and {}", m.max_turns, limits::MAX_TURNS),
        ));
    }
    if let Some(check) = &m.check {
        c.text("check", check, limits::COMMAND_TEXT)?;
    }
    c.repo_paths("ignored_files", &m.ignored_files, limits::IGNORED_FILES)?;
    let carried_paths: Vec<String> = m.carried.iter().map(|f| f.path.clone()).collect();
    c.repo_paths("carried", &carried_paths, limits::IGNORED_FILES)?;
    let carried_bytes: usize = m.carried.iter().map(|f| f.data.len()).sum();
    if carried_bytes > grove_core::task::CARRIED_MAX {
        return Err(field(
            W,
            "carried",
            format!("{carried_bytes} bytes is more than {}", grove_core::task::CARRIED_MAX),
        ));
    }
    // Upstream checkouts: a repository name (it names a folder and a variable), a mirror and
    // a remote as safe as the task's own, a commit id.
    c.count("upstreams", &m.upstreams, limits::UPSTREAMS)?;
    for u in &m.upstreams {
        c.name("upstreams.name", names::check_repo_name(&u.name))?;
        check_mirror(&c, "upstreams.mirror", &u.mirror)?;
        check_remote(&u.remote).map_err(|e| field(W, "upstreams.remote", e))?;
        c.commit("upstreams.commit", &u.commit)?;
    }
    let port_base = u16::try_from(m.port_base).map_err(|e| field(W, "port_base", e))?;
    let port_count = u16::try_from(m.port_count).map_err(|e| field(W, "port_count", e))?;
    if port_base == 0 || port_count == 0 || u32::from(port_base) + u32::from(port_count) > 65536 {
        return Err(field(
            W,
            "port_count",
            format!("ports {port_base}+{port_count} are not a range of ports"),
        ));
    }
    if m.log_cap == 0 || m.log_cap > limits::LOG_CAP {
        return Err(field(
            W,
            "log_cap",
            format!("{} is not between 1 and {} bytes", m.log_cap, limits::LOG_CAP),
        ));
    }
    let keep_worktrees = m.keep_worktrees.parse().map_err(|e| field(W, "keep_worktrees", e))?;
    let redo = match m.redo_hunks {
        Some(hunks) => {
            c.repo_paths("redo_paths", &m.redo_paths, limits::FILES)?;
            c.text("redo_hunks", &hunks, limits::REDO_TEXT)?;
            let previous_diff = m.redo_previous_diff.unwrap_or_default();
            c.text("redo_previous_diff", &previous_diff, limits::REDO_TEXT)?;
            Some(Redo { paths: m.redo_paths, hunks, previous_diff })
        }
        None => None,
    };
    Ok(Assignment {
        job,
        task: m.task,
        attempt: m.attempt,
        order: m.order,
        mirror: m.mirror.into(),
        remote: m.remote,
        source_dir: m.source_dir.map(Into::into),
        base: m.base,
        branch: m.branch,
        sparse: m.sparse.map(|f| f.dirs),
        files: m.files,
        prompt: m.prompt,
        agent: AgentSpec {
            kind,
            pattern: agent.pattern,
            replace: agent.replace,
            command: agent.command,
            model: agent.model,
            args: agent.args,
            program: agent.program,
            env: agent.env.into_iter().collect(),
            turn_timeout: None,
            max_turns: None,
            custom: agent.custom,
            definition: agent.definition.map(definition_of).transpose()?,
        },
        turn_timeout,
        max_turns: m.max_turns,
        check: m.check,
        ignored_files: m.ignored_files,
        port_base,
        port_count,
        log_cap: m.log_cap,
        keep_worktrees,
        redo,
        budget: m.budget.map(budget_of).unwrap_or_default(),
        session: match m.session {
            Some(s) => {
                c.text("session.agent", &s.agent, limits::ENV_NAME)?;
                c.text("session.id", &s.id, limits::ENV_NAME)?;
                Some(SessionRef {
                    agent: s.agent,
                    id: s.id,
                    total: s.total.as_ref().map(usage_of).unwrap_or_default(),
                })
            }
            None => None,
        },
        reply: m.reply.map(|r| cut(r, limits::PROMPT)),
        prices: m
            .prices
            .into_iter()
            .take(limits::ENV_VARS)
            .map(|(model, p)| {
                (
                    cut(model, limits::ENV_NAME),
                    Price {
                        input: p.input,
                        output: p.output,
                        cache_read: p.cache_read,
                        cache_write: p.cache_write,
                    },
                )
            })
            .collect(),
        carried: m
            .carried
            .into_iter()
            .map(|f| grove_core::task::Carried { path: f.path, data: f.data, mode: f.mode & 0o777 })
            .collect(),
        upstreams: m
            .upstreams
            .into_iter()
            .map(|u| grove_core::task::Upstream {
                name: u.name,
                mirror: u.mirror.into(),
                remote: u.remote,
                commit: u.commit,
            })
            .collect(),
    })
}

fn definition_pb(d: &AgentDefinition) -> pb::AgentDefinition {
    pb::AgentDefinition {
        name: d.name.clone(),
        display_name: d.display_name.clone(),
        path: d.path.clone(),
        format: d.format.as_str().to_owned(),
        description: d.description.clone(),
        tools: d.tools.as_ref().map(|names| pb::Tools { names: names.clone() }),
        disallowed_tools: d.disallowed_tools.clone(),
        model: d.model.clone(),
        target: d.target.clone(),
        body: d.body.clone(),
    }
}

fn definition_of(d: pb::AgentDefinition) -> Result<AgentDefinition, WireError> {
    let format = match d.format.as_str() {
        "github" => Format::Github,
        "claude" => Format::Claude,
        other => return Err(field("task assignment", "agent.definition.format", format!("{other:?}"))),
    };
    Ok(AgentDefinition {
        name: d.name,
        display_name: d.display_name,
        path: d.path,
        format,
        description: d.description,
        tools: d.tools.map(|t| t.names),
        disallowed_tools: d.disallowed_tools,
        model: d.model,
        target: d.target,
        body: d.body,
    })
}

fn stat_pb(s: DiffStat) -> Option<pb::DiffStat> {
    Some(pb::DiffStat { files: s.files, insertions: s.insertions, deletions: s.deletions })
}

fn stat_of(s: Option<pb::DiffStat>) -> DiffStat {
    s.map(|s| DiffStat { files: s.files, insertions: s.insertions, deletions: s.deletions })
        .unwrap_or_default()
}

pub fn encode_event(e: &TaskEvent) -> Vec<u8> {
    let kind = match &e.kind {
        EventKind::State { state, turn } => {
            pb::task_event::Kind::State(pb::StateChange { state: state.as_str().to_owned(), turn: *turn })
        }
        EventKind::Checkpoint { turn, commit, stat, report } => {
            pb::task_event::Kind::Checkpoint(pb::Checkpoint {
                turn: *turn,
                commit: commit.clone(),
                stat: stat_pb(*stat),
                report: report.as_ref().map(report_pb),
            })
        }
        EventKind::Finished(o) => pb::task_event::Kind::Finished(pb::Outcome {
            state: o.state.as_str().to_owned(),
            head: o.head.clone(),
            stat: stat_pb(o.stat),
            turns: o.turns,
            reason: o.reason.clone(),
            log_tail: o.log_tail.clone(),
            transient: o.retry == Retry::Transient,
            parked_until: match o.retry {
                Retry::Parked { until } => Some(until),
                _ => None,
            },
        }),
    };
    pb::TaskEvent {
        schema: SCHEMA_VERSION,
        job: e.job.to_string(),
        task: e.task.clone(),
        attempt: e.attempt,
        kind: Some(kind),
    }
    .encode_to_vec()
}

pub fn decode_event(bytes: &[u8]) -> Result<TaskEvent, WireError> {
    const W: &str = "task event";
    let c = Check(W);
    let m: pb::TaskEvent = decode(W, bytes)?;
    schema(W, m.schema)?;
    let job = c.job(&m.job)?;
    c.task(&m.task)?;
    c.attempt(m.attempt)?;
    let state = |s: &str| s.parse::<TaskState>().map_err(|e| field(W, "state", e));
    let kind = match m.kind.ok_or_else(|| field(W, "kind", "missing"))? {
        pb::task_event::Kind::State(s) => {
            // Only an attempt's own steps; how it ends comes as an outcome (Finished).
            let st = state(&s.state)?;
            if !matches!(st, TaskState::Preparing | TaskState::Running | TaskState::Checking) {
                return Err(field(W, "state", format!("{st} is not a step of a running attempt")));
            }
            EventKind::State { state: st, turn: s.turn }
        }
        pb::task_event::Kind::Checkpoint(cp) => {
            if let Some(commit) = &cp.commit {
                c.commit("commit", commit)?;
            }
            EventKind::Checkpoint {
                turn: cp.turn,
                commit: cp.commit,
                stat: stat_of(cp.stat),
                report: cp.report.map(report_of).transpose().map_err(|e| field(W, "report", e))?,
            }
        }
        pb::task_event::Kind::Finished(o) => {
            let st = state(&o.state)?;
            if !matches!(st, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled) {
                return Err(field(W, "state", format!("{st} is not how an attempt ends")));
            }
            if let Some(head) = &o.head {
                c.commit("head", head)?;
            }
            if o.parked_until.is_some_and(|t| t <= 0) {
                return Err(field(W, "parked_until", "not a time after 1970"));
            }
            EventKind::Finished(TaskOutcome {
                state: st,
                head: o.head,
                stat: stat_of(o.stat),
                turns: o.turns,
                reason: o.reason.map(|r| cut(r, limits::REASON)),
                log_tail: cut(o.log_tail, limits::LOG_TAIL),
                retry: match (o.parked_until, o.transient) {
                    (Some(until), _) => Retry::Parked { until },
                    (None, true) => Retry::Transient,
                    (None, false) => Retry::Final,
                },
            })
        }
    };
    Ok(TaskEvent { job, task: m.task, attempt: m.attempt, kind })
}

pub fn encode_log(c: &LogChunk) -> Vec<u8> {
    pb::LogChunk {
        schema: SCHEMA_VERSION,
        job: c.job.to_string(),
        task: c.task.clone(),
        attempt: c.attempt,
        offset: c.offset,
        data: c.data.clone(),
        eof: c.eof,
    }
    .encode_to_vec()
}

pub fn decode_log(bytes: &[u8]) -> Result<LogChunk, WireError> {
    const W: &str = "log chunk";
    let m: pb::LogChunk = decode(W, bytes)?;
    schema(W, m.schema)?;
    log_of(m)
}

/// A log chunk from its wire form (also what the gRPC API streams), checked.
pub fn log_of(m: pb::LogChunk) -> Result<LogChunk, WireError> {
    let c = Check("log chunk");
    let job = c.job(&m.job)?;
    c.task(&m.task)?;
    c.attempt(m.attempt)?;
    if m.data.len() > limits::LOG_DATA {
        return Err(field(
            c.0,
            "data",
            format!("{} bytes, more than the {} grove reads", m.data.len(), limits::LOG_DATA),
        ));
    }
    Ok(LogChunk { job, task: m.task, attempt: m.attempt, offset: m.offset, data: m.data, eof: m.eof })
}

pub fn log_pb(c: LogChunk) -> pb::LogChunk {
    pb::LogChunk {
        schema: SCHEMA_VERSION,
        job: c.job.to_string(),
        task: c.task,
        attempt: c.attempt,
        offset: c.offset,
        data: c.data,
        eof: c.eof,
    }
}

pub fn worker_pb(w: &WorkerInfo) -> pb::WorkerInfo {
    pb::WorkerInfo {
        schema: SCHEMA_VERSION,
        id: w.id.clone(),
        host: w.host.clone(),
        pools: w.pools.clone(),
        capacity: w.capacity,
        running: w.tasks.len() as u32,
        version: w.version.clone(),
        started_at: w.started_at,
        seen_at: w.seen_at,
        tasks: w.tasks.clone(),
        refusing: w.refusing.clone(),
    }
}

/// A worker's announcement from its wire form (also what the gRPC API lists), checked: it is
/// shown to people and its pools are matched against tasks.
pub fn worker_of(m: pb::WorkerInfo) -> Result<WorkerInfo, WireError> {
    let c = Check("worker announcement");
    for (f, v) in [("id", &m.id), ("host", &m.host), ("version", &m.version)] {
        c.text(f, v, limits::WORKER_TEXT)?;
        if v.chars().any(char::is_control) {
            return Err(field(c.0, f, "contains a control character"));
        }
    }
    if m.id.is_empty() {
        return Err(field(c.0, "id", "is empty"));
    }
    c.count("pools", &m.pools, limits::WORKER_POOLS)?;
    for p in &m.pools {
        c.name("pools", names::check_pool(p))?;
    }
    c.count("tasks", &m.tasks, limits::WORKER_TASKS)?;
    for t in &m.tasks {
        c.text("tasks", t, limits::WORKER_TEXT)?;
        c.name("tasks", names::check_task_ref(t))?;
    }
    if let Some(r) = &m.refusing {
        c.text("refusing", r, limits::WORKER_REFUSING)?;
    }
    Ok(WorkerInfo {
        id: m.id,
        host: m.host,
        pools: m.pools,
        capacity: m.capacity,
        tasks: m.tasks,
        version: m.version,
        started_at: m.started_at,
        seen_at: m.seen_at,
        refusing: m.refusing,
    })
}

pub fn encode_worker(w: &WorkerInfo) -> Vec<u8> {
    worker_pb(w).encode_to_vec()
}

pub fn decode_worker(bytes: &[u8]) -> Result<WorkerInfo, WireError> {
    const W: &str = "worker announcement";
    let m: pb::WorkerInfo = decode(W, bytes)?;
    schema(W, m.schema)?;
    worker_of(m)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn assignment(task: &str) -> Assignment {
        Assignment {
            job: JobId::new("j", 1),
            task: task.into(),
            attempt: 2,
            order: 3,
            mirror: "/home/g/mirrors/m-0000abcd.git".into(),
            remote: "file:///home/g/mirrors/m-0000abcd.git".into(),
            source_dir: Some("/src".into()),
            base: "ab".repeat(20),
            branch: format!("grove/j-0001/{task}"),
            sparse: Some(vec!["crates/a".into()]),
            files: vec!["crates/a/x.rs".into()],
            prompt: "do it".into(),
            agent: AgentSpec {
                kind: Some(AgentKind::Command),
                command: vec!["claude".into(), "-p".into(), "{prompt}".into()],
                env: [("K".to_owned(), "V".to_owned())].into_iter().collect(),
                ..AgentSpec::default()
            },
            turn_timeout: Duration::from_secs(90),
            max_turns: 3,
            check: Some("true".into()),
            ignored_files: vec![".env".into()],
            port_base: 42000,
            port_count: 10,
            log_cap: 1024,
            keep_worktrees: KeepWorktrees::All,
            redo: Some(Redo {
                paths: vec!["crates/a/x.rs".into()],
                hunks: "<<<<<<< ours".into(),
                previous_diff: "diff --git".into(),
            }),
            budget: Budget {
                task_usd: Some(Cap { limit: 2.0, spent: 0.5 }),
                job_usd: None,
                task_tokens: Some(Cap { limit: 10_000, spent: 12 }),
            },
            session: Some(SessionRef {
                agent: "codex".into(),
                id: "0199a213".into(),
                total: Usage::new(100, 10, 5, 0, None),
            }),
            reply: Some("use the new API".into()),
            prices: [(
                "gpt-5".to_owned(),
                Price { input: 1.0, output: 2.0, cache_read: None, cache_write: Some(1.5) },
            )]
            .into_iter()
            .collect(),
            carried: vec![grove_core::task::Carried {
                path: ".env".into(),
                data: b"TOKEN=1\n".to_vec(),
                mode: 0o600,
            }],
            upstreams: vec![grove_core::task::Upstream {
                name: "my-lib".into(),
                mirror: "/home/g/mirrors/lib-1a2b.git".into(),
                remote: "https://coord:7070/git/lib-1a2b.git".into(),
                commit: "1".repeat(40),
            }],
        }
    }

    fn finished() -> TaskEvent {
        TaskEvent {
            job: JobId::new("j", 1),
            task: "t".into(),
            attempt: 2,
            kind: EventKind::Finished(TaskOutcome {
                state: TaskState::Failed,
                head: Some("cd".repeat(20)),
                stat: DiffStat { files: 1, insertions: 2, deletions: 3 },
                turns: 2,
                reason: Some("boom".into()),
                log_tail: "tail".into(),
                retry: Retry::Final,
            }),
        }
    }

    #[test]
    fn assignments_and_events_round_trip() {
        let a = assignment("t");
        assert_eq!(decode_assignment(&encode_assignment(&a)).expect("decode"), a);
        let e = finished();
        assert_eq!(decode_event(&encode_event(&e)).expect("decode"), e);
        let checkpoint = TaskEvent {
            kind: EventKind::Checkpoint {
                turn: 1,
                commit: Some("c".repeat(40)),
                stat: DiffStat::default(),
                report: Some(TurnReport {
                    agent: "claude".into(),
                    model: Some("claude-sonnet-4-6".into()),
                    outcome: TurnOutcome::UsageLimit { reset: Some(1_764_000_000), message: "limit".into() },
                    summary: Some("did it".into()),
                    usage: Usage::new(1, 2, 3, 4, Some(0.01)),
                    session: Some("s".into()),
                    question: Some("which one?".into()),
                }),
            },
            ..e.clone()
        };
        assert_eq!(decode_event(&encode_event(&checkpoint)).expect("decode"), checkpoint);
        for retry in [Retry::Transient, Retry::Parked { until: 1_764_000_000 }] {
            let mut e = e.clone();
            if let EventKind::Finished(o) = &mut e.kind {
                o.retry = retry;
            }
            assert_eq!(decode_event(&encode_event(&e)).expect("decode"), e, "{retry:?} crosses the wire");
        }
    }

    /// A repository-defined agent crosses the wire whole: "all tools" (none given) stays apart
    /// from "no tools" (an empty list).
    #[test]
    fn a_custom_agents_definition_round_trips() {
        let mut a = assignment("t");
        let def = AgentDefinition {
            name: "review".into(),
            display_name: Some("Reviewer".into()),
            path: ".github/agents/review.agent.md".into(),
            format: Format::Github,
            description: "Reviews".into(),
            tools: Some(vec![]),
            disallowed_tools: vec!["Bash".into()],
            model: Some("claude-sonnet-4-5".into()),
            target: None,
            body: "Be terse.".into(),
        };
        a.agent.custom = Some("review".into());
        a.agent.definition = Some(def.clone());
        assert_eq!(decode_assignment(&encode_assignment(&a)).expect("decode"), a);
        a.agent.definition = Some(AgentDefinition { tools: None, format: Format::Claude, ..def });
        assert_eq!(decode_assignment(&encode_assignment(&a)).expect("decode"), a);
    }

    #[test]
    fn a_newer_schema_is_refused_but_identifiable() {
        let mut m =
            pb::TaskAssignment::decode(encode_assignment(&assignment("t")).as_slice()).expect("decode");
        m.schema = SCHEMA_VERSION + 1;
        let bytes = m.encode_to_vec();
        assert!(
            matches!(decode_assignment(&bytes), Err(WireError::NewerSchema { found, .. }) if found == SCHEMA_VERSION + 1)
        );
        assert_eq!(peek_assignment(&bytes).map(|p| p.1), Some("t".to_owned()));
    }

    /// The assignment of [`assignment`] with one field changed by `edit`, as bytes.
    fn edited(edit: impl FnOnce(&mut pb::TaskAssignment)) -> Vec<u8> {
        let mut m =
            pb::TaskAssignment::decode(encode_assignment(&assignment("t")).as_slice()).expect("decode");
        edit(&mut m);
        m.encode_to_vec()
    }

    /// Each hostile field is refused, naming that field.
    #[test]
    fn hostile_assignments_are_refused_naming_the_field() {
        type Edit = Box<dyn FnOnce(&mut pb::TaskAssignment)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("job", Box::new(|m| m.job = "../../etc".into())),
            ("job", Box::new(|m| m.job = "a/b".into())),
            ("task", Box::new(|m| m.task = "..".into())),
            ("task", Box::new(|m| m.task = "../../../home/me".into())),
            ("task", Box::new(|m| m.task = "a/b".into())),
            ("task", Box::new(|m| m.task = String::new())),
            ("task", Box::new(|m| m.task = "x".repeat(10_000))),
            ("attempt", Box::new(|m| m.attempt = 0)),
            ("branch", Box::new(|m| m.branch = "main".into())),
            ("branch", Box::new(|m| m.branch = "grove/j-0001/other".into())),
            ("branch", Box::new(|m| m.branch = "grove/other-0001/t".into())),
            ("mirror", Box::new(|m| m.mirror = "relative/mirrors/m.git".into())),
            ("mirror", Box::new(|m| m.mirror = "/home/me/project".into())),
            ("mirror", Box::new(|m| m.mirror = "/home/g/mirrors/../../me/.git".into())),
            ("mirror", Box::new(|m| m.mirror = "/home/g/mirrors/m.git\0".into())),
            ("remote", Box::new(|m| m.remote = "ext::sh -c touch% /tmp/pwned".into())),
            ("remote", Box::new(|m| m.remote = "--upload-pack=touch /tmp/x".into())),
            ("remote", Box::new(|m| m.remote = "https://user:token@example.com/r.git".into())),
            ("remote", Box::new(|m| m.remote = "file://relative/path".into())),
            ("remote", Box::new(|m| m.remote = "ssh://-oProxyCommand=x/r".into())),
            ("upstreams.name", Box::new(|m| m.upstreams[0].name = "../lib".into())),
            ("upstreams.name", Box::new(|m| m.upstreams[0].name = String::new())),
            ("upstreams.mirror", Box::new(|m| m.upstreams[0].mirror = "/home/me/lib".into())),
            ("upstreams.remote", Box::new(|m| m.upstreams[0].remote = "ext::sh -c id".into())),
            ("upstreams.commit", Box::new(|m| m.upstreams[0].commit = "--output=/tmp/x".into())),
            ("upstreams", Box::new(|m| m.upstreams = vec![m.upstreams[0].clone(); limits::UPSTREAMS + 1])),
            ("source_dir", Box::new(|m| m.source_dir = Some("src".into()))),
            ("source_dir", Box::new(|m| m.source_dir = Some("/a/../etc".into()))),
            ("base", Box::new(|m| m.base = "HEAD".into())),
            ("base", Box::new(|m| m.base = "--output=/tmp/x".into())),
            ("sparse", Box::new(|m| m.sparse = Some(pb::Folders { dirs: vec!["../x".into()] }))),
            ("files", Box::new(|m| m.files = vec!["/etc/passwd".into()])),
            ("files", Box::new(|m| m.files = vec!["a/../../b".into()])),
            ("files", Box::new(|m| m.files = vec!["a\0b".into()])),
            ("files", Box::new(|m| m.files = vec!["a".into(); limits::FILES + 1])),
            ("ignored_files", Box::new(|m| m.ignored_files = vec![".git/hooks/pre-commit".into()])),
            ("ignored_files", Box::new(|m| m.ignored_files = vec!["../../.ssh/id_rsa".into()])),
            (
                "carried",
                Box::new(|m| {
                    m.carried = vec![pb::CarriedFile { path: "../.bashrc".into(), data: vec![], mode: 0o644 }]
                }),
            ),
            (
                "carried",
                Box::new(|m| {
                    m.carried =
                        vec![pb::CarriedFile { path: "big".into(), data: vec![0; 600 << 10], mode: 0o644 }]
                }),
            ),
            ("prompt", Box::new(|m| m.prompt = "x".repeat(limits::PROMPT + 1))),
            ("agent.kind", Box::new(|m| m.agent.as_mut().expect("agent").kind = "rm-rf".into())),
            ("agent.command", Box::new(|m| m.agent.as_mut().expect("agent").command = vec![])),
            ("agent.command", Box::new(|m| m.agent.as_mut().expect("agent").command = vec!["a\0b".into()])),
            (
                "agent.env",
                Box::new(|m| drop(m.agent.as_mut().expect("agent").env.insert("A=B".into(), "x".into()))),
            ),
            (
                "agent.env",
                Box::new(|m| drop(m.agent.as_mut().expect("agent").env.insert("K".into(), "\0".into()))),
            ),
            ("turn_timeout_ms", Box::new(|m| m.turn_timeout_ms = 0)),
            ("turn_timeout_ms", Box::new(|m| m.turn_timeout_ms = u64::MAX)),
            ("max_turns", Box::new(|m| m.max_turns = 0)),
            ("max_turns", Box::new(|m| m.max_turns = u32::MAX)),
            ("port_base", Box::new(|m| m.port_base = 70_000)),
            ("port_count", Box::new(|m| (m.port_base, m.port_count) = (65_530, 10))),
            ("log_cap", Box::new(|m| m.log_cap = 0)),
            ("keep_worktrees", Box::new(|m| m.keep_worktrees = "everything".into())),
            ("redo_paths", Box::new(|m| m.redo_paths = vec!["/abs".into()])),
            ("redo_hunks", Box::new(|m| m.redo_hunks = Some("x".repeat(limits::REDO_TEXT + 1)))),
        ];
        for (name, edit) in cases {
            let bytes = edited(edit);
            match decode_assignment(&bytes) {
                Err(WireError::Field { field, message, .. }) => {
                    assert_eq!(field, name, "{message}");
                    assert!(message.len() < 400, "the reason stays short: {}", message.len());
                }
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn oversized_and_garbage_messages_are_refused() {
        let huge = vec![0u8; limits::MESSAGE + 1];
        assert!(matches!(decode_assignment(&huge), Err(WireError::TooLarge { .. })));
        assert!(matches!(decode_event(&huge), Err(WireError::TooLarge { .. })));
        assert!(peek_assignment(&huge).is_none());
        for garbage in [&b"\xff\xff\xff\xff"[..], b"\x0a\xff\xff\xff\xff\x0f", b"{\"job\":1}"] {
            assert!(decode_assignment(garbage).is_err());
            assert!(decode_event(garbage).is_err());
            assert!(decode_log(garbage).is_err());
            assert!(decode_worker(garbage).is_err());
        }
        // A rejected assignment is reported only when its identity itself is valid.
        assert!(peek_assignment(&edited(|m| m.task = "../x".into())).is_none());
    }

    #[test]
    fn hostile_events_are_refused_and_long_text_is_cut() {
        let mut m = pb::TaskEvent::decode(encode_event(&finished()).as_slice()).expect("decode");
        let with = |f: &dyn Fn(&mut pb::TaskEvent)| {
            let mut m = m.clone();
            f(&mut m);
            decode_event(&m.encode_to_vec())
        };
        assert!(with(&|m| m.task = "../../x".into()).is_err());
        assert!(with(&|m| m.job = "J".into()).is_err());
        assert!(with(&|m| m.attempt = 0).is_err());
        assert!(with(&|m| m.kind = None).is_err());
        // A state event may not end an attempt (only an outcome does).
        for state in ["succeeded", "failed", "needs-attention", "cancelled", "queued", "bogus"] {
            let r = with(&|m| {
                m.kind =
                    Some(pb::task_event::Kind::State(pb::StateChange { state: state.into(), turn: None }))
            });
            assert!(matches!(r, Err(WireError::Field { field: "state", .. })), "{state}: {r:?}");
        }
        let r = with(&|m| {
            m.kind = Some(pb::task_event::Kind::Checkpoint(pb::Checkpoint {
                turn: 1,
                commit: Some("HEAD~1".into()),
                stat: None,
                report: None,
            }))
        });
        assert!(matches!(r, Err(WireError::Field { field: "commit", .. })), "{r:?}");
        if let Some(pb::task_event::Kind::Finished(o)) = &mut m.kind {
            o.state = "needs-attention".into();
        }
        assert!(matches!(decode_event(&m.encode_to_vec()), Err(WireError::Field { field: "state", .. })));
        if let Some(pb::task_event::Kind::Finished(o)) = &mut m.kind {
            o.state = "failed".into();
            o.head = Some("main".into());
        }
        assert!(matches!(decode_event(&m.encode_to_vec()), Err(WireError::Field { field: "head", .. })));
        if let Some(pb::task_event::Kind::Finished(o)) = &mut m.kind {
            o.head = None;
            o.reason = Some("r".repeat(limits::REASON * 2));
            o.log_tail = "é".repeat(limits::LOG_TAIL);
        }
        let e = decode_event(&m.encode_to_vec()).expect("long text is cut, not refused");
        let EventKind::Finished(o) = e.kind else { panic!("finished") };
        assert!(o.reason.as_ref().is_some_and(|r| r.len() <= limits::REASON + 16 && r.ends_with("(cut)")));
        assert!(o.log_tail.len() <= limits::LOG_TAIL + 16);
    }

    #[test]
    fn hostile_log_chunks_and_announcements_are_refused() {
        let chunk = LogChunk {
            job: JobId::new("j", 1),
            task: "t".into(),
            attempt: 1,
            offset: 0,
            data: b"out".to_vec(),
            eof: false,
        };
        assert_eq!(decode_log(&encode_log(&chunk)).expect("decode"), chunk);
        let mut m = log_pb(chunk);
        m.task = "../../etc".into();
        assert!(matches!(decode_log(&m.encode_to_vec()), Err(WireError::Field { field: "task", .. })));
        m.task = "t".into();
        m.data = vec![0; limits::LOG_DATA + 1];
        assert!(matches!(decode_log(&m.encode_to_vec()), Err(WireError::Field { field: "data", .. })));

        let w = WorkerInfo {
            id: "w1".into(),
            host: "h".into(),
            pools: vec!["local".into()],
            capacity: 2,
            tasks: vec!["j-0001/t".into()],
            version: "0.1.0".into(),
            started_at: 1,
            seen_at: 2,
            refusing: None,
        };
        assert_eq!(decode_worker(&encode_worker(&w)).expect("decode"), w);
        for (name, edit) in [
            (
                "id",
                Box::new(|w: &mut WorkerInfo| w.id = "\x1b[31mred".into()) as Box<dyn Fn(&mut WorkerInfo)>,
            ),
            ("id", Box::new(|w: &mut WorkerInfo| w.id = String::new())),
            ("pools", Box::new(|w: &mut WorkerInfo| w.pools = vec!["grove.tasks.>".into()])),
            ("pools", Box::new(|w: &mut WorkerInfo| w.pools = vec!["p".into(); 1000])),
            ("tasks", Box::new(|w: &mut WorkerInfo| w.tasks = vec!["../x".into()])),
            ("host", Box::new(|w: &mut WorkerInfo| w.host = "h".repeat(10_000))),
        ] {
            let mut w = w.clone();
            edit(&mut w);
            match decode_worker(&encode_worker(&w)) {
                Err(WireError::Field { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
