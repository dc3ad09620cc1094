//! Property tests of the wire decoders: whatever arrives on NATS (random bytes, valid messages
//! with bytes flipped, protobuf messages whose every field is hostile), a decoder never panics,
//! and what it accepts keeps grove's rules. Cases: 64 by default, `PROPTEST_CASES` to change.

use std::path::Path;

use grove_bus::wire::{self, limits};
use grove_core::TaskState;
use grove_core::layout::Layout;
use grove_core::names;
use grove_core::task::{Assignment, EventKind};
use grove_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// Strings an attacker would try in a name or a path, plus plausible and random ones.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("t".to_owned()),
        Just("j-0001".to_owned()),
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("../../etc/passwd".to_owned()),
        Just("/etc/passwd".to_owned()),
        Just("a/../../b".to_owned()),
        Just(".git/hooks/pre-commit".to_owned()),
        Just("a\0b".to_owned()),
        Just("-rf".to_owned()),
        Just("--upload-pack=touch /tmp/x".to_owned()),
        Just("ext::sh -c id".to_owned()),
        Just("https://u:secret@h/r.git".to_owned()),
        Just("grove/j-0001/t".to_owned()),
        Just("/home/g/mirrors/m.git".to_owned()),
        Just("/home/g/mirrors/../../x.git".to_owned()),
        Just("x".repeat(5000)),
        "[a-z0-9./_-]{0,24}",
        "\\PC{0,40}",
        any::<String>(),
    ]
}

fn hostile_list() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(hostile(), 0..40)
}

fn agent() -> impl Strategy<Value = pb::AgentSpec> {
    (
        prop_oneof![Just("command".to_owned()), Just("replace".to_owned()), hostile()],
        prop::option::of(hostile()),
        prop::option::of(hostile()),
        hostile_list(),
        prop::collection::hash_map(hostile(), hostile(), 0..6),
    )
        .prop_map(|(kind, pattern, replace, command, env)| pb::AgentSpec {
            kind,
            pattern,
            replace,
            command,
            env,
            ..Default::default()
        })
}

prop_compose! {
    fn assignment_msg()(
        ids in (hostile(), hostile(), any::<u32>(), any::<u32>()),
        paths in (hostile(), prop::option::of(hostile()), hostile(), hostile(), hostile()),
        lists in (prop::option::of(hostile_list()), hostile_list(), hostile_list(), hostile_list()),
        agent in prop::option::of(agent()),
        numbers in (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()),
        rest in (hostile(), prop::option::of(hostile()), hostile(), prop::option::of(hostile()), prop::option::of(hostile())),
        schema in 0u32..3,
    ) -> pb::TaskAssignment {
        let (job, task, attempt, order) = ids;
        let (mirror, source_dir, base, branch, remote) = paths;
        let (sparse, files, ignored_files, redo_paths) = lists;
        let (turn_timeout_ms, max_turns, port_base, port_count, log_cap) = numbers;
        let (prompt, check, keep_worktrees, redo_hunks, redo_previous_diff) = rest;
        pb::TaskAssignment {
            schema, job, task, attempt, order, mirror, source_dir, base, branch,
            sparse: sparse.map(|dirs| pb::Folders { dirs }),
            files, prompt, agent, turn_timeout_ms, max_turns, check, ignored_files,
            port_base, port_count, log_cap, keep_worktrees, remote, redo_paths, redo_hunks,
            redo_previous_diff,
            ..Default::default()
        }
    }
}

/// A valid assignment whose fields `edit` may then spoil one by one.
fn valid() -> pb::TaskAssignment {
    pb::TaskAssignment {
        schema: grove_proto::SCHEMA_VERSION,
        job: "j-0001".into(),
        task: "core".into(),
        attempt: 1,
        order: 0,
        mirror: "/home/g/mirrors/r-0000abcd.git".into(),
        source_dir: Some("/home/me/r".into()),
        base: "ab".repeat(20),
        branch: "grove/j-0001/core".into(),
        sparse: Some(pb::Folders { dirs: vec!["crates/core".into()] }),
        files: vec!["crates/core/src/lib.rs".into()],
        prompt: "rename".into(),
        agent: Some(pb::AgentSpec {
            kind: "command".into(),
            command: vec!["true".into()],
            ..Default::default()
        }),
        turn_timeout_ms: 60_000,
        max_turns: 1,
        check: None,
        ignored_files: vec![],
        port_base: 42000,
        port_count: 10,
        log_cap: 1 << 20,
        keep_worktrees: "failed".into(),
        remote: "file:///home/g/mirrors/r-0000abcd.git".into(),
        redo_paths: vec![],
        redo_hunks: None,
        redo_previous_diff: None,
        ..Default::default()
    }
}

/// What every assignment a decoder accepts must be: nothing in it can steer a worker outside
/// its home's `worktrees/<job>/<task>` and `runs/<job>/<task>`, onto another branch, or out of
/// the repository.
fn keeps_the_rules(a: &Assignment) {
    names::check_task_slug(&a.task).expect("task slug");
    names::JobId::parse(a.job.as_str()).expect("job id");
    assert_eq!(a.branch, names::task_branch(&a.job, &a.task));
    assert!(a.attempt >= 1);
    let layout = Layout::new("/home/g");
    for (dir, root) in [
        (layout.worktree(&a.job, &a.task), layout.worktrees()),
        (layout.run_dir(&a.job, &a.task), layout.runs()),
    ] {
        let rel = dir.strip_prefix(&root).expect("under the home");
        assert_eq!(rel.components().count(), 2, "{}", dir.display());
        assert!(rel.components().all(|c| matches!(c, std::path::Component::Normal(_))));
    }
    for p in a.files.iter().chain(&a.ignored_files).chain(a.sparse.iter().flatten()) {
        names::check_repo_path(p).expect("repository path");
        let joined = Path::new("/ws").join(p);
        assert!(joined.starts_with("/ws") && !joined.components().any(|c| c.as_os_str() == ".."));
    }
    if let Some(r) = &a.redo {
        a.redo.iter().flat_map(|r| &r.paths).for_each(|p| names::check_repo_path(p).expect("redo path"));
        assert!(r.hunks.len() <= limits::REDO_TEXT);
    }
    assert!(a.mirror.is_absolute() && !a.mirror.components().any(|c| c.as_os_str() == ".."));
    wire::check_remote(&a.remote).expect("remote");
    names::check_commit_id(&a.base, "base").expect("base");
    assert!(a.files.len() <= limits::FILES && a.prompt.len() <= limits::PROMPT);
    assert!(!a.turn_timeout.is_zero() && a.turn_timeout <= limits::TURN_TIMEOUT);
    assert!(a.max_turns >= 1 && a.port_count >= 1);
    assert!(u32::from(a.port_base) + u32::from(a.port_count) <= 65536);
    for (k, v) in &a.agent.env {
        assert!(!k.is_empty() && !k.contains('=') && !k.contains('\0') && !v.contains('\0'));
    }
    assert!(a.agent.command.iter().all(|c| !c.contains('\0')));
}

fn event_keeps_the_rules(e: &grove_core::task::TaskEvent) {
    names::check_task_slug(&e.task).expect("task slug");
    assert!(e.attempt >= 1);
    match &e.kind {
        EventKind::State { state, .. } => {
            assert!(matches!(state, TaskState::Preparing | TaskState::Running | TaskState::Checking))
        }
        EventKind::Checkpoint { commit, .. } => {
            commit.iter().for_each(|c| names::check_commit_id(c, "commit").expect("commit"))
        }
        EventKind::Finished(o) => {
            assert!(matches!(o.state, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled));
            o.head.iter().for_each(|c| names::check_commit_id(c, "head").expect("head"));
            assert!(o.reason.as_ref().is_none_or(|r| r.len() <= limits::REASON + 16));
            assert!(o.log_tail.len() <= limits::LOG_TAIL + 16);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random bytes are refused, never a panic.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(a) = wire::decode_assignment(&bytes) { keeps_the_rules(&a) }
        if let Ok(e) = wire::decode_event(&bytes) { event_keeps_the_rules(&e) }
        if let Ok(c) = wire::decode_log(&bytes) { names::check_task_slug(&c.task).expect("slug") }
        let _ = wire::decode_worker(&bytes);
        if let Some((_, task, _)) = wire::peek_assignment(&bytes) { names::check_task_slug(&task).expect("slug") }
    }

    /// A valid assignment with bytes flipped, cut or appended: refused or still valid.
    #[test]
    fn damaged_assignments_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = valid().encode_to_vec();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend(tail);
        if let Ok(a) = wire::decode_assignment(&bytes) { keeps_the_rules(&a) }
    }

    /// Every field hostile at once: whatever is accepted keeps the rules.
    #[test]
    fn hostile_assignments_never_break_the_rules(m in assignment_msg()) {
        if let Ok(a) = wire::decode_assignment(&m.encode_to_vec()) { keeps_the_rules(&a) }
    }

    /// One field hostile in an otherwise valid assignment (so the check of that field is what
    /// decides): accepted only when the field is fine.
    #[test]
    fn one_hostile_field_is_judged_by_its_own_rule(v in hostile(), list in hostile_list(), which in 0usize..8) {
        let mut m = valid();
        match which {
            0 => {
                m.task = v.clone();
                m.branch = format!("grove/j-0001/{v}");
            }
            1 => m.job = v.clone(),
            2 => m.branch = v.clone(),
            3 => m.mirror = v.clone(),
            4 => m.remote = v.clone(),
            5 => m.files = list.clone(),
            6 => m.ignored_files = list.clone(),
            _ => m.base = v.clone(),
        }
        let decoded = wire::decode_assignment(&m.encode_to_vec());
        if let Ok(a) = &decoded { keeps_the_rules(a) }
        if which == 0 { prop_assert_eq!(decoded.is_ok(), names::check_task_slug(&v).is_ok(), "{:?}", v) }
        if which == 5 || which == 6 {
            let fine = list.iter().all(|p| names::check_repo_path(p).is_ok());
            prop_assert_eq!(decoded.is_ok(), fine, "{:?}", list);
        }
        if which == 7 { prop_assert_eq!(decoded.is_ok(), names::check_commit_id(&v, "base").is_ok()) }
    }

    /// Hostile events: whatever is accepted keeps the rules.
    #[test]
    fn hostile_events_never_break_the_rules(
        job in hostile(), task in hostile(), attempt in any::<u32>(),
        state in prop_oneof![Just("running".to_owned()), Just("succeeded".to_owned()), Just("needs-attention".to_owned()), hostile()],
        head in prop::option::of(prop_oneof![Just("ab".repeat(20)), hostile()]),
        reason in prop::option::of(hostile()), which in 0u8..3, parked in prop::option::of(any::<i64>()),
    ) {
        let kind = match which {
            0 => pb::task_event::Kind::State(pb::StateChange { state, turn: None }),
            1 => pb::task_event::Kind::Checkpoint(pb::Checkpoint { turn: attempt, commit: head, stat: None, report: None }),
            _ => pb::task_event::Kind::Finished(pb::Outcome {
                state, head, stat: None, turns: attempt, reason, log_tail: String::new(),
                transient: attempt % 2 == 0, parked_until: parked,
            }),
        };
        let m = pb::TaskEvent { schema: 1, job, task, attempt, kind: Some(kind) };
        if let Ok(e) = wire::decode_event(&m.encode_to_vec()) { event_keeps_the_rules(&e) }
    }

    /// Hostile log chunks and worker announcements: refused or within bounds.
    #[test]
    fn hostile_logs_and_workers_never_break_the_rules(
        job in hostile(), task in hostile(), data in prop::collection::vec(any::<u8>(), 0..512),
        id in hostile(), pools in hostile_list(), tasks in hostile_list(),
    ) {
        let chunk = pb::LogChunk { schema: 1, job, task, attempt: 1, offset: 0, data, eof: false };
        if let Ok(c) = wire::decode_log(&chunk.encode_to_vec()) {
            names::check_task_slug(&c.task).expect("slug");
            prop_assert!(c.data.len() <= limits::LOG_DATA);
        }
        let w = pb::WorkerInfo { schema: 1, id, pools, tasks, ..Default::default() };
        if let Ok(w) = wire::decode_worker(&w.encode_to_vec()) {
            prop_assert!(w.pools.iter().all(|p| names::check_pool(p).is_ok()));
            prop_assert!(w.tasks.iter().all(|t| names::check_task_ref(t).is_ok()));
            prop_assert!(!w.id.chars().any(char::is_control));
        }
    }
}
