//! Conversions between grove-core's domain types and the wire types of `proto/grove.proto`,
//! by hand, in one place.

use std::time::Duration;

use grove_core::agents::{AgentDefinition, Format};
use grove_core::spec::{AgentKind, AgentSpec, KeepWorktrees};
use grove_core::task::{Assignment, EventKind, LogChunk, Redo, Retry, TaskEvent, TaskOutcome, WorkerInfo};
use grove_core::usage::{Budget, Cap, Price, SessionRef, TurnOutcome, TurnReport, Usage};
use grove_core::{DiffStat, JobId, TaskState};
use grove_proto::SCHEMA_VERSION;
use grove_proto::v1 as pb;
use prost::Message;

/// A message that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
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
    /// A field holds a value this grove does not know.
    #[error("{what}: bad {field}: {message}")]
    Field { what: &'static str, field: &'static str, message: String },
}

fn field(what: &'static str, field: &'static str, message: impl ToString) -> WireError {
    WireError::Field { what, field, message: message.to_string() }
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
        summary: r.summary,
        usage: r.usage.as_ref().map(usage_of).unwrap_or_default(),
        session: r.session,
        question: r.question,
    })
}

/// The identity of an assignment that could not be read in full (to report its rejection).
pub fn peek_assignment(bytes: &[u8]) -> Option<(String, String, u32)> {
    let m = pb::TaskAssignment::decode(bytes).ok()?;
    Some((m.job, m.task, m.attempt))
}

pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment, WireError> {
    const W: &str = "task assignment";
    let m = pb::TaskAssignment::decode(bytes).map_err(|source| WireError::Decode { what: W, source })?;
    if m.schema > SCHEMA_VERSION {
        return Err(WireError::NewerSchema { what: W, found: m.schema });
    }
    let agent = m.agent.unwrap_or_default();
    let kind = match agent.kind.as_str() {
        "" => None,
        k => Some(k.parse::<AgentKind>().map_err(|e| field(W, "agent.kind", e))?),
    };
    Ok(Assignment {
        job: JobId::parse(&m.job).map_err(|e| field(W, "job", e))?,
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
        turn_timeout: Duration::from_millis(m.turn_timeout_ms),
        max_turns: m.max_turns,
        check: m.check,
        ignored_files: m.ignored_files,
        port_base: u16::try_from(m.port_base).map_err(|e| field(W, "port_base", e))?,
        port_count: u16::try_from(m.port_count).map_err(|e| field(W, "port_count", e))?,
        log_cap: m.log_cap,
        keep_worktrees: m.keep_worktrees.parse().map_err(|e| field(W, "keep_worktrees", e))?,
        redo: m.redo_hunks.map(|hunks| Redo {
            paths: m.redo_paths,
            hunks,
            previous_diff: m.redo_previous_diff.unwrap_or_default(),
        }),
        budget: m.budget.map(budget_of).unwrap_or_default(),
        session: m.session.map(|s| SessionRef {
            agent: s.agent,
            id: s.id,
            total: s.total.as_ref().map(usage_of).unwrap_or_default(),
        }),
        reply: m.reply,
        prices: m
            .prices
            .into_iter()
            .map(|(model, p)| {
                (
                    model,
                    Price {
                        input: p.input,
                        output: p.output,
                        cache_read: p.cache_read,
                        cache_write: p.cache_write,
                    },
                )
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
    let m = pb::TaskEvent::decode(bytes).map_err(|source| WireError::Decode { what: W, source })?;
    if m.schema > SCHEMA_VERSION {
        return Err(WireError::NewerSchema { what: W, found: m.schema });
    }
    let state = |s: &str| s.parse::<TaskState>().map_err(|e| field(W, "state", e));
    let kind = match m.kind.ok_or_else(|| field(W, "kind", "missing"))? {
        pb::task_event::Kind::State(s) => EventKind::State { state: state(&s.state)?, turn: s.turn },
        pb::task_event::Kind::Checkpoint(c) => EventKind::Checkpoint {
            turn: c.turn,
            commit: c.commit,
            stat: stat_of(c.stat),
            report: c.report.map(report_of).transpose().map_err(|e| field(W, "report", e))?,
        },
        pb::task_event::Kind::Finished(o) => EventKind::Finished(TaskOutcome {
            state: state(&o.state)?,
            head: o.head,
            stat: stat_of(o.stat),
            turns: o.turns,
            reason: o.reason,
            log_tail: o.log_tail,
            retry: match (o.parked_until, o.transient) {
                (Some(until), _) => Retry::Parked { until },
                (None, true) => Retry::Transient,
                (None, false) => Retry::Final,
            },
        }),
    };
    Ok(TaskEvent {
        job: JobId::parse(&m.job).map_err(|e| field(W, "job", e))?,
        task: m.task,
        attempt: m.attempt,
        kind,
    })
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
    let m = pb::LogChunk::decode(bytes).map_err(|source| WireError::Decode { what: W, source })?;
    if m.schema > SCHEMA_VERSION {
        return Err(WireError::NewerSchema { what: W, found: m.schema });
    }
    log_of(m).map_err(|e| field(W, "job", e))
}

/// A log chunk from its wire form (also what the gRPC API streams).
pub fn log_of(m: pb::LogChunk) -> Result<LogChunk, grove_core::NameError> {
    Ok(LogChunk {
        job: JobId::parse(&m.job)?,
        task: m.task,
        attempt: m.attempt,
        offset: m.offset,
        data: m.data,
        eof: m.eof,
    })
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

pub fn worker_of(m: pb::WorkerInfo) -> WorkerInfo {
    WorkerInfo {
        id: m.id,
        host: m.host,
        pools: m.pools,
        capacity: m.capacity,
        tasks: m.tasks,
        version: m.version,
        started_at: m.started_at,
        seen_at: m.seen_at,
        refusing: m.refusing,
    }
}

pub fn encode_worker(w: &WorkerInfo) -> Vec<u8> {
    worker_pb(w).encode_to_vec()
}

pub fn decode_worker(bytes: &[u8]) -> Result<WorkerInfo, WireError> {
    const W: &str = "worker announcement";
    let m = pb::WorkerInfo::decode(bytes).map_err(|source| WireError::Decode { what: W, source })?;
    if m.schema > SCHEMA_VERSION {
        return Err(WireError::NewerSchema { what: W, found: m.schema });
    }
    Ok(worker_of(m))
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
            mirror: "/m.git".into(),
            remote: "file:///m.git".into(),
            source_dir: Some("/src".into()),
            base: "abc".into(),
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
        }
    }

    #[test]
    fn assignments_and_events_round_trip() {
        let a = assignment("t");
        assert_eq!(decode_assignment(&encode_assignment(&a)).expect("decode"), a);
        let e = TaskEvent {
            job: a.job.clone(),
            task: "t".into(),
            attempt: 2,
            kind: EventKind::Finished(TaskOutcome {
                state: TaskState::Failed,
                head: Some("h".into()),
                stat: DiffStat { files: 1, insertions: 2, deletions: 3 },
                turns: 2,
                reason: Some("boom".into()),
                log_tail: "tail".into(),
                retry: Retry::Final,
            }),
        };
        assert_eq!(decode_event(&encode_event(&e)).expect("decode"), e);
        let checkpoint = TaskEvent {
            kind: EventKind::Checkpoint {
                turn: 1,
                commit: Some("c".into()),
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
}
