//! One attempt of a task: make the workspace, run turns (agent, checkpoint commit, checks),
//! report every step, and end with an outcome.

use std::sync::Arc;
use std::time::Duration;

use grove_bus::{Bus, Delivery};
use grove_core::task::{Assignment, EventKind, Retry, TaskEvent, TaskOutcome};
use grove_core::{DiffStat, TaskState, spec::KeepWorktrees};
use grove_git::worktree::Identity;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use grove_core::usage::{SessionRef, TurnOutcome, Usage};

use crate::WorkerContext;
use crate::adapter;
use crate::agent::{self, Turn};
use crate::process::{self, End, Log};
use crate::workspace::{self, Workspace};

/// Run the attempt in `delivery`, report its events and its outcome, and settle the delivery.
///
/// Lease fencing (see [`lease`]): a delivery over NATS is this worker's only while the
/// server keeps getting its heartbeats. When none has been confirmed for
/// [`lease::fence_after`], the worker stops the agent, makes no checkpoint and reports
/// nothing, and leaves the task to whichever worker gets it after the lease.
pub async fn run(ctx: Arc<WorkerContext>, delivery: Delivery, cancel: CancellationToken) {
    // The attempt's span continues the coordinator's dispatch span (over NATS, its header).
    let span = tracing::info_span!(
        parent: None,
        "attempt",
        otel.kind = "consumer",
        grove.job = %delivery.assignment.job,
        grove.task = %delivery.assignment.task,
        grove.attempt = delivery.assignment.attempt,
        grove.pool = %delivery.pool,
        grove.worker = %ctx.id,
        grove.delivered = delivery.delivered(),
        grove.outcome = tracing::field::Empty,
    );
    grove_telemetry::set_parent(&span, delivery.trace.as_deref());
    attempt(ctx, delivery, cancel).instrument(span).await
}

async fn attempt(ctx: Arc<WorkerContext>, delivery: Delivery, cancel: CancellationToken) {
    let a = delivery.assignment.clone();
    let mut tail = LogTail::start(&ctx, &a).await;
    let resume = Resume::find(&ctx, &a, delivery.delivered()).await;
    let fence = CancellationToken::new();
    let stop = cancel.child_token();
    let delivery = Arc::new(delivery);
    // Heartbeats run on their own, so a slow confirmation never holds up the fence below.
    let renewed = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let beats = {
        // Paced by the lease the server holds, when the bus has one.
        let every = delivery.lease().map_or(ctx.heartbeat, lease::heartbeat_every);
        let (delivery, renewed, task) = (delivery.clone(), renewed.clone(), a.task.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let sent = tokio::time::Instant::now();
                match delivery.progress().await {
                    Ok(()) => *renewed.lock().unwrap_or_else(|p| p.into_inner()) = sent,
                    Err(e) => tracing::warn!(%task, "heartbeat not confirmed: {e}"),
                }
            }
        })
    };
    // Output ships on its own too: a send waiting on a slow or frozen server must never hold
    // up the fence (it used to share the loop below and delayed it by seconds).
    let shipped = CancellationToken::new();
    let shipper = {
        let (ctx, shipped) = (ctx.clone(), shipped.clone());
        tokio::spawn(async move {
            let mut logs = tokio::time::interval(LOG_EVERY);
            logs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shipped.cancelled() => break,
                    _ = logs.tick() => {
                        // Output is best effort: it never holds up the attempt.
                        let _ = tokio::time::timeout(LOG_EVERY, tail.send(&ctx, false)).await;
                    }
                }
            }
            tail
        })
    };
    let outcome = {
        let work = execute(&ctx, &a, &stop, &fence, resume.as_ref());
        tokio::pin!(work);
        let fence_after = delivery.lease().map(lease::fence_after);
        let mut check = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                out = &mut work => break out,
                _ = check.tick(), if fence_after.is_some() && !fence.is_cancelled() => {
                    let since = renewed.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                    if fence_after.is_some_and(|f| since >= f) {
                        tracing::warn!(
                            task = %a.task,
                            "no heartbeat confirmed for {since:?}: the lease may lapse, stopping the agent"
                        );
                        fence.cancel();
                        stop.cancel();
                    }
                }
            }
        }
    };
    beats.abort();
    let _ = beats.await;
    shipped.cancel();
    let tail = shipper.await;
    let Ok(delivery) = Arc::try_unwrap(delivery) else {
        tracing::warn!(task = %a.task, "the delivery is still shared; leaving it for redelivery");
        return;
    };
    if fence.is_cancelled() {
        // Another worker may have the task by now: leave everything to it (the delivery comes
        // back after the lease; this attempt's committed checkpoints are on its branch).
        tracing::warn!(task = %a.task, "lease lost; the task goes to whichever worker gets it next");
        return;
    }
    match tail {
        Ok(mut tail) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), tail.send(&ctx, true)).await;
        }
        Err(e) => tracing::warn!(task = %a.task, "the log shipper failed, the log's end is not sent: {e}"),
    }
    if outcome.state == TaskState::Cancelled && ctx.hand_back.is_cancelled() {
        // The worker is draining: hand the task back for another worker, keeping its
        // checkpoints (already committed and published), instead of recording it cancelled.
        tracing::info!(task = %a.task, "handing back");
        if let Err(e) = delivery.nak(Duration::ZERO).await {
            tracing::warn!(task = %a.task, "nak failed, the task comes back after its lease: {e}");
        }
        return;
    }
    tracing::Span::current().record("grove.outcome", outcome.state.as_str());
    // The log (and so its tail) is masked already; a reason may quote anything (a check's
    // command line, a process's error): masked too, before it leaves this worker.
    let mut outcome = outcome;
    let mask = ctx.secrets.mask();
    outcome.reason = outcome.reason.map(|r| mask.text(&r));
    outcome.log_tail = mask.text(&outcome.log_tail);
    let event = TaskEvent {
        job: a.job.clone(),
        task: a.task.clone(),
        attempt: a.attempt,
        kind: EventKind::Finished(outcome),
    };
    if let Err(e) = ctx.bus.report(event).await {
        tracing::warn!(task = %a.task, "cannot report the outcome, leaving the delivery for redelivery: {e}");
        return;
    }
    if let Err(e) = delivery.ack().await {
        tracing::warn!(task = %a.task, "ack failed: {e}");
    }
}

/// An assignment whose job or task was cancelled while it was queued: report it cancelled and
/// settle the delivery, without running anything.
pub async fn drop_cancelled(ctx: &WorkerContext, delivery: Delivery) {
    let a = delivery.assignment.clone();
    let outcome = TaskOutcome {
        state: TaskState::Cancelled,
        head: None,
        stat: DiffStat::default(),
        turns: 0,
        reason: Some("cancelled before it started".into()),
        log_tail: String::new(),
        retry: grove_core::task::Retry::Final,
    };
    let event = TaskEvent {
        job: a.job.clone(),
        task: a.task.clone(),
        attempt: a.attempt,
        kind: EventKind::Finished(outcome),
    };
    if let Err(e) = ctx.bus.report(event).await {
        tracing::warn!(task = %a.task, "cannot report the cancellation: {e}");
    }
    if let Err(e) = delivery.ack().await {
        tracing::warn!(task = %a.task, "ack failed: {e}");
    }
}

/// The timing of leases, heartbeats and the fence.
///
/// JetStream gives a delivery to another worker once `ack_wait` (the lease) has passed since
/// the server last heard a heartbeat (an in-progress ack) for it. A worker counts its lease
/// from the moment it *sent* the last heartbeat the server confirmed, which is no later than
/// the server's moment, so the worker's clock runs ahead of the server's. It stops its agent
/// when `fence_after(lease)` has passed without a confirmed heartbeat: `lease - margin`, the
/// margin being a quarter of the lease but at least 3s (the agent's SIGTERM-to-SIGKILL grace
/// of 2s plus a second). So the agent is gone before the server can hand the task to anyone
/// else: two workers never run one task at once. Heartbeats go three times per fence period,
/// so one lost heartbeat does not stop anything.
pub mod lease {
    use std::time::Duration;

    const MIN_MARGIN: Duration = Duration::from_secs(3);

    /// How long without a confirmed heartbeat before the worker stops the attempt.
    pub fn fence_after(lease: Duration) -> Duration {
        let margin = (lease / 4).max(MIN_MARGIN);
        if lease > margin * 2 { lease - margin } else { lease / 2 }
    }

    /// How often a running attempt sends a heartbeat.
    pub fn heartbeat_every(lease: Duration) -> Duration {
        (fence_after(lease) / 3).max(Duration::from_millis(100))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_fence_leaves_room_for_the_kill_grace() {
            let s = Duration::from_secs;
            assert_eq!(fence_after(s(60)), s(45));
            assert_eq!(fence_after(s(8)), s(5));
            assert_eq!(fence_after(s(4)), s(2), "short leases: half");
            assert_eq!(heartbeat_every(s(60)), s(15));
            for l in [4, 8, 30, 60, 600] {
                // One lost heartbeat: the next one still comes before the fence.
                assert!(heartbeat_every(s(l)) * 2 < fence_after(s(l)), "one lost heartbeat is fine at {l}s");
            }
        }
    }
}

/// How often a running attempt sends its new output over the bus.
const LOG_EVERY: Duration = Duration::from_millis(500);
/// The most output one log chunk carries.
const LOG_CHUNK: usize = 64 * 1024;

/// Sends what the attempt adds to the task's log file over the bus, so `grove logs -f` can
/// follow an agent on any worker.
struct LogTail {
    path: std::path::PathBuf,
    job: grove_core::JobId,
    task: String,
    attempt: u32,
    offset: u64,
}

impl LogTail {
    async fn start(ctx: &WorkerContext, a: &Assignment) -> LogTail {
        let path = ctx.layout.log(&a.job, &a.task);
        let offset = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        LogTail { path, job: a.job.clone(), task: a.task.clone(), attempt: a.attempt, offset }
    }

    /// Send what is new; with `eof`, also say the attempt's output is complete.
    async fn send(&mut self, ctx: &WorkerContext, eof: bool) {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut data = Vec::new();
        if let Ok(mut f) = tokio::fs::File::open(&self.path).await
            && f.seek(std::io::SeekFrom::Start(self.offset)).await.is_ok()
            && let Err(e) = f.read_to_end(&mut data).await
        {
            tracing::debug!(task = %self.task, "reading the log: {e}");
        }
        let mut pieces: Vec<&[u8]> = data.chunks(LOG_CHUNK).collect();
        if pieces.is_empty() && !eof {
            return;
        }
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let chunk = grove_core::task::LogChunk {
                job: self.job.clone(),
                task: self.task.clone(),
                attempt: self.attempt,
                offset: self.offset,
                data: piece.to_vec(),
                eof: eof && i == last,
            };
            if let Err(e) = ctx.bus.publish_log(chunk).await {
                // Output is also in the worker's log file; a lost chunk is not a lost task.
                tracing::debug!(task = %self.task, "sending log output: {e}");
                return;
            }
            self.offset += piece.len() as u64;
        }
    }
}

pub(crate) async fn report(bus: &Arc<dyn Bus>, a: &Assignment, kind: EventKind) {
    let ev = TaskEvent { job: a.job.clone(), task: a.task.clone(), attempt: a.attempt, kind };
    if let Err(e) = bus.report(ev).await {
        tracing::warn!(task = %a.task, "cannot report an event: {e}");
    }
}

pub(crate) fn failed(reason: String, tail: String, turns: u32) -> TaskOutcome {
    TaskOutcome {
        state: TaskState::Failed,
        head: None,
        stat: DiffStat::default(),
        turns,
        reason: Some(reason),
        log_tail: tail,
        retry: grove_core::task::Retry::Final,
    }
}

/// What an attempt that resumes an interrupted delivery tells the agent.
struct Resume {
    delivered: u32,
    /// The end of the output of the deliveries before (from the bus, or this machine's log).
    previous_log: std::path::PathBuf,
}

impl Resume {
    /// For a delivery after the first, write the previous output's tail next to the prompt.
    async fn find(ctx: &WorkerContext, a: &Assignment, delivered: u32) -> Option<Resume> {
        if delivered < 2 {
            return None;
        }
        let mut text = Vec::new();
        if let Ok(Some(mut chunks)) = ctx.bus.read_log(&a.job, &a.task).await {
            use futures::StreamExt;
            let until = tokio::time::Instant::now() + Duration::from_secs(3);
            while let Ok(Some(Ok(c))) = tokio::time::timeout_at(
                until.min(tokio::time::Instant::now() + Duration::from_millis(300)),
                chunks.next(),
            )
            .await
            {
                if c.attempt == a.attempt {
                    text.extend_from_slice(&c.data);
                }
            }
        }
        if text.is_empty() {
            text = tokio::fs::read(ctx.layout.log(&a.job, &a.task)).await.unwrap_or_default();
        }
        const KEEP: usize = 16 * 1024;
        let start = text.len().saturating_sub(KEEP);
        let previous_log = workspace::scratch(&ctx.layout.run_dir(&a.job, &a.task), "previous.log");
        if let Some(dir) = previous_log.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        if let Err(e) = tokio::fs::write(&previous_log, &text[start..]).await {
            tracing::warn!(task = %a.task, "writing the previous output: {e}");
        }
        Some(Resume { delivered, previous_log })
    }
}

async fn execute(
    ctx: &Arc<WorkerContext>,
    a: &Assignment,
    cancel: &CancellationToken,
    fence: &CancellationToken,
    resume: Option<&Resume>,
) -> TaskOutcome {
    report(&ctx.bus, a, EventKind::State { state: TaskState::Preparing, turn: None }).await;
    let path = ctx.layout.worktree(&a.job, &a.task);
    let run_dir = ctx.layout.run_dir(&a.job, &a.task);
    let mut log = match Log::open(&ctx.layout.log(&a.job, &a.task), a.log_cap).await {
        Ok(l) => l.masking(ctx.secrets.mask()),
        Err(e) => return transient(e.to_string(), String::new(), 0),
    };
    let _ = log.note(&format!("attempt {} of {} on worker {}", a.attempt, a.task, ctx.id)).await;
    // This attempt takes the workspace back: disk hygiene may not remove it any more.
    crate::disk::unmark_kept(&ctx.layout, &a.job, &a.task);
    // A `replace` turn that needs no folder on disk runs in the mirror, without a checkout.
    if let Some(direct) = crate::direct::Direct::eligible(ctx, a, &path) {
        let delivered = resume.map(|r| r.delivered);
        return direct.run(ctx, a, &mut log, fence, delivered).await;
    }
    let prep = {
        let (git, a, path, mode) = (ctx.git.clone(), a.clone(), path.clone(), ctx.workspace);
        tokio::task::spawn_blocking(move || Workspace::prepare(&git, &a, &path, mode)).await
    };
    let ws = match prep {
        Ok(Ok((ws, how))) => {
            let _ = log.note(&format!("workspace {} ({how:?})", path.display())).await;
            let c = &ws.copied;
            if !c.files.is_empty() {
                let _ = log
                    .note(&format!("copied in as git-ignored (never committed): {}", c.files.join(", ")))
                    .await;
            }
            for (f, why) in &c.refused {
                let _ = log.note(&format!("ignored file {f} not copied: {why}")).await;
            }
            ws
        }
        Ok(Err(e)) => return transient(format!("preparing the workspace: {e}"), log.tail(), 0),
        Err(e) => return transient(format!("preparing the workspace: {e}"), log.tail(), 0),
    };
    if let Some(r) = resume {
        let _ = log
            .note(&format!(
                "resuming an interrupted attempt (delivery {}) from its last checkpoint",
                r.delivered
            ))
            .await;
    }
    let mut outcome = turns(ctx, a, &ws, &run_dir, &mut log, cancel, fence, resume).await;
    outcome.log_tail = log.tail();
    if fence.is_cancelled() {
        // Not this worker's any more: keep the workspace as it is, touch nothing.
        return outcome;
    }

    // The branch against the base, whatever happened.
    let head = ws.head(&ctx.git);
    if let Some(head) = &head {
        match ws.stat(&ctx.git, &a.base, head) {
            Ok(stat) => outcome.stat = stat,
            Err(e) => tracing::warn!(task = %a.task, "diff stat: {e}"),
        }
    }
    outcome.head = head;

    let keep = match a.keep_worktrees {
        KeepWorktrees::All => true,
        KeepWorktrees::None => false,
        KeepWorktrees::Failed => outcome.state != TaskState::Succeeded,
    };
    if keep {
        crate::disk::mark_kept(&ctx.layout, &a.job, &a.task, &path);
    } else {
        let git = ctx.git.clone();
        let removed = tokio::task::spawn_blocking(move || ws.remove(&git)).await;
        if let Ok(Err(e)) | Err(e) = removed.map_err(|e| e.to_string()) {
            tracing::warn!(task = %a.task, "{e}");
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)] // the attempt's parts, each used throughout the loop
async fn turns(
    ctx: &Arc<WorkerContext>,
    a: &Assignment,
    ws: &Workspace,
    run_dir: &std::path::Path,
    log: &mut Log,
    cancel: &CancellationToken,
    fence: &CancellationToken,
    resume: Option<&Resume>,
) -> TaskOutcome {
    let scope = workspace::scope_string(a.sparse.as_deref());
    let prompt_file = workspace::scratch(run_dir, "prompt.md");
    let files_file = workspace::scratch(run_dir, "files.txt");
    // A repository-defined agent's instructions, for agents that read them from a file.
    let agent_file = workspace::scratch(run_dir, "agent.md");
    let feedback_file = workspace::scratch(run_dir, "feedback.md");
    let conflict_file = workspace::scratch(run_dir, "conflict.md");
    let previous_diff_file = workspace::scratch(run_dir, "previous.diff");
    let mut prompt =
        format!("{}\n\nScope: {scope}\nFiles ({}): see {}\n", a.prompt, a.files.len(), files_file.display());
    if let Some(redo) = &a.redo {
        prompt.push_str(&format!(
            "\nThis is a redo: the previous attempt's branch conflicted with the integration branch in {}. \
             The workspace now starts from the integration head. The conflicting files, with git's \
             markers, are in {}; the previous attempt's diff is in {}. Make the change again on top \
             of what is here.\n",
            redo.paths.join(", "),
            conflict_file.display(),
            previous_diff_file.display()
        ));
    }
    if let Some(r) = resume {
        prompt.push_str(&format!(
            "\nThis attempt was interrupted before (its worker was lost; this is delivery {}). The \
             workspace starts from its last checkpoint: the work committed so far is here. The end of \
             the earlier output is in {}.\n",
            r.delivered,
            r.previous_log.display()
        ));
    }
    let mut written = tokio::fs::write(&prompt_file, &prompt)
        .await
        .and(tokio::fs::write(&files_file, a.files.join("\n")).await);
    if let Some(d) = &a.agent.definition {
        written = written.and(tokio::fs::write(&agent_file, &d.body).await);
    }
    if let Some(redo) = &a.redo {
        let text = format!(
            "# Conflict\n\nPaths: {}\n\n## Conflicting files (with git's markers)\n\n{}\n## Previous diff\n\n{}",
            redo.paths.join(" "),
            redo.hunks,
            redo.previous_diff
        );
        written = written
            .and(tokio::fs::write(&conflict_file, text).await)
            .and(tokio::fs::write(&previous_diff_file, &redo.previous_diff).await);
    }
    if let Err(e) = written {
        return transient(format!("writing the prompt file: {e}"), log.tail(), 0);
    }
    let _ = tokio::fs::remove_file(&feedback_file).await;
    if a.redo.is_none() {
        let _ = tokio::fs::remove_file(&conflict_file).await;
        let _ = tokio::fs::remove_file(&previous_diff_file).await;
    }
    let who = Identity::default();
    // A CLI adapter keeps its session from turn to turn, and across attempts.
    let cli = a.agent.kind.filter(|k| k.is_cli());
    let mut session = match cli {
        Some(kind) => restore_session(ctx, a, ws, run_dir, kind, resume.is_some(), log).await,
        None => None,
    };
    let mut spent = Usage::zero();
    // A repository-defined agent (`agent.custom`): its body and tools, for the CLI to run with.
    let persona = a.agent.definition.as_ref().map(|d| adapter::Persona {
        name: d.name.clone(),
        instructions: d.body.clone(),
        tools: d.tools.clone(),
    });
    let prices = adapter::Prices::new(&a.prices);
    let mut next_prompt = first_prompt(a, &prompt, session.is_some(), resume);
    let mut turn_no = 0;
    loop {
        turn_no += 1;
        let adapter = a.agent.kind.map_or("command", |k| k.as_str());
        // GenAI semantic conventions on the turn: the agent's system, model, tokens and cost.
        let turn_span = tracing::info_span!(
            "turn",
            grove.turn = turn_no,
            gen_ai.operation.name = "invoke_agent",
            gen_ai.system = genai_system(adapter),
            gen_ai.provider.name = genai_system(adapter),
            gen_ai.request.model = a.agent.model.as_deref(),
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            grove.cost_usd = tracing::field::Empty,
            grove.outcome = tracing::field::Empty,
        );
        log.reset_tail();
        let _ = log.note(&format!("turn {turn_no}")).await;
        report(&ctx.bus, a, EventKind::State { state: TaskState::Running, turn: Some(turn_no) }).await;
        let mut env: Vec<(String, String)> = vec![
            ("GROVE_JOB".into(), a.job.to_string()),
            ("GROVE_TASK".into(), a.task.clone()),
            ("GROVE_SCOPE".into(), scope.clone()),
            ("GROVE_PROMPT_FILE".into(), prompt_file.display().to_string()),
            ("GROVE_FILES_FILE".into(), files_file.display().to_string()),
            ("GROVE_BRANCH".into(), a.branch.clone()),
            ("GROVE_TURN".into(), turn_no.to_string()),
            ("GROVE_ATTEMPT".into(), a.attempt.to_string()),
            ("GROVE_PORT_BASE".into(), a.port_base.to_string()),
            ("GROVE_PORT_COUNT".into(), a.port_count.to_string()),
        ];
        if turn_no > 1 {
            env.push(("GROVE_FEEDBACK_FILE".into(), feedback_file.display().to_string()));
        }
        // A cross-repository job: the repositories this one depends on, merged, checked out.
        for (name, dir) in &ws.upstreams {
            env.push((name.clone(), dir.display().to_string()));
        }
        if let Some(d) = &a.agent.definition {
            env.push(("GROVE_AGENT_NAME".into(), d.name.clone()));
            env.push(("GROVE_AGENT_FILE".into(), agent_file.display().to_string()));
            if let Some(m) = &d.model {
                env.push(("GROVE_AGENT_MODEL".into(), m.clone()));
            }
            if let Some(tools) = &d.tools {
                env.push(("GROVE_AGENT_TOOLS".into(), tools.join(",")));
            }
        }
        if let Some(r) = resume {
            env.push(("GROVE_DELIVERY".into(), r.delivered.to_string()));
            env.push(("GROVE_PREVIOUS_LOG_FILE".into(), r.previous_log.display().to_string()));
        }
        if let Some(redo) = &a.redo {
            env.push(("GROVE_CONFLICT_FILE".into(), conflict_file.display().to_string()));
            env.push(("GROVE_CONFLICT_PATHS".into(), redo.paths.join("\n")));
            env.push(("GROVE_PREVIOUS_DIFF_FILE".into(), previous_diff_file.display().to_string()));
        }
        // Where the turn starts: commits the agent makes itself are seen against it.
        let since = {
            let dir = ws.path.clone();
            tokio::task::spawn_blocking(move || grove_git::worktree::head(&dir).ok().flatten())
                .await
                .ok()
                .flatten()
        };
        // The agent gets its credentials; the check (below) does not.
        let mut agent_env = env.clone();
        // A CLI that exports its own telemetry joins the turn's trace.
        if let Some(tp) = grove_telemetry::traceparent(&turn_span) {
            agent_env.push(("TRACEPARENT".into(), tp));
        }
        // A builtin adapter's settings the worker has (its API's address, its state folder),
        // unless the job set them; then its credentials.
        for name in grove_core::env::adapter_settings(adapter) {
            if let Some(v) = ctx.agent_home.get(*name)
                && !agent_env.iter().any(|(k, _)| k == name)
            {
                agent_env.push(((*name).to_owned(), v.clone()));
            }
        }
        agent_env.extend(ctx.secrets.credentials().for_agent(adapter));
        let turn = Turn {
            agent: &a.agent,
            workdir: &ws.path,
            files: &a.files,
            prompt: &a.prompt,
            task: &a.task,
            scope: &scope,
            env: agent_env,
            timeout: a.turn_timeout,
        };
        let (finished, turn_report) = match cli {
            None => match agent::run_turn(&turn, log, cancel).instrument(turn_span.clone()).await {
                Ok(f) => (f, None),
                Err(e) => return failed(format!("turn {turn_no}: {e}"), log.tail(), turn_no),
            },
            Some(kind) => {
                if let Some(why) = a.budget.exceeded(&spent) {
                    let _ = log.note(&why).await;
                    return failed(why, log.tail(), turn_no - 1);
                }
                let args = agent::fill_all(&a.agent.args, &turn);
                let plan = adapter::Plan {
                    kind,
                    program: a.agent.program.as_deref(),
                    // The job's --model wins over the one the repository's agent asks for.
                    model: a.agent.model.as_deref().or(a
                        .agent
                        .definition
                        .as_ref()
                        .and_then(|d| d.model.as_deref())),
                    args: &args,
                    prompt: &next_prompt,
                    resume: session.as_ref(),
                    workdir: &ws.path,
                    run_dir,
                    usd_left: a.budget.usd_left().map(|l| (l - spent.known_cost()).max(0.0)),
                    as_root: agent::running_as_root(),
                    persona: persona.as_ref(),
                };
                let t =
                    match agent::run_cli_turn(&turn, &plan, &a.budget, &spent, prices.clone(), log, cancel)
                        .instrument(turn_span.clone())
                        .await
                    {
                        Ok(t) => t,
                        Err(e) => return failed(format!("turn {turn_no}: {e}"), log.tail(), turn_no),
                    };
                if t.resume_failed && session.is_some() && !cancel.is_cancelled() {
                    // The CLI lost the session (its transcript did not travel): start a new one.
                    let _ = log
                        .note(&format!("{kind:?}: the session to resume was not found; starting a new one"))
                        .await;
                    session = None;
                    next_prompt = first_prompt(a, &prompt, false, resume);
                    turn_no -= 1;
                    continue;
                }
                spent = spent.add(&t.report.usage);
                note_turn(log, turn_no, &t.report).await;
                if let Some(id) = &t.report.session {
                    let before =
                        session.as_ref().filter(|s| &s.id == id).map_or_else(Usage::zero, |s| s.total);
                    session = Some(SessionRef {
                        agent: kind.as_str().into(),
                        id: id.clone(),
                        total: before.add(&t.report.usage),
                    });
                }
                (t.finished, Some(t.report))
            }
        };
        if fence.is_cancelled() {
            // The lease may have lapsed: no checkpoint, another worker may be on the branch.
            return failed(format!("turn {turn_no}: the lease was lost"), log.tail(), turn_no);
        }
        // Checkpoint whatever the agent left, even after a failure: work is never lost.
        let message = checkpoint_message(a, turn_no);
        let transcript = match (cli, &session) {
            (Some(kind), Some(s)) => session_files(ctx, a, ws, run_dir, kind, s),
            _ => None,
        };
        // The checkpoint is published (pushed, for a clone) before the turn is reported, and
        // the session's transcript with it.
        let commit = {
            let (git, ws, who, since) = (ctx.git.clone(), ws.clone(), who.clone(), since.clone());
            let side = session_ref(a);
            let span = tracing::info_span!(parent: &turn_span, "checkpoint");
            tokio::task::spawn_blocking(move || {
                let _in = span.enter();
                let keep_out = &ws.copied.keep_out;
                let c = grove_git::worktree::checkpoint(
                    &git,
                    &ws.path,
                    &message,
                    &who,
                    keep_out,
                    since.as_deref(),
                )
                .map_err(|e| e.to_string())?;
                // Also when grove had nothing to commit: the agent may have committed itself.
                ws.publish(&git)?;
                if let Some(files) = transcript
                    && let Err(e) = ws.save_files(&git, &side, &files, "grove: agent session", &who)
                {
                    // The session stays on this machine; elsewhere the next attempt starts one.
                    tracing::warn!("saving the agent's session: {e}");
                }
                Ok::<_, String>(c)
            })
            .await
        };
        let commit = match commit {
            Ok(Ok(c)) => {
                if c.folded > 0 {
                    let _ = log
                        .note(&format!(
                            "the agent's own {} commit(s) this turn had git-ignored files grove copied in: \
                             folded into the checkpoint without them",
                            c.folded
                        ))
                        .await;
                }
                if !c.left_out.is_empty() {
                    let _ = log
                        .note(&format!(
                            "left out of the checkpoint (copied in as git-ignored; never committed): {}",
                            c.left_out.join(", ")
                        ))
                        .await;
                }
                c.commit
            }
            Ok(Err(e)) => {
                return transient(format!("checkpointing turn {turn_no}: {e}"), log.tail(), turn_no);
            }
            Err(e) => return transient(format!("checkpointing turn {turn_no}: {e}"), log.tail(), turn_no),
        };
        let stat = match &commit {
            Some(c) => ws.stat(&ctx.git, &a.base, c).unwrap_or_default(),
            None => DiffStat::default(),
        };
        // A turn that changed nothing and ended on a question asks it: recorded with the turn,
        // so `grove status` shows it, as an ask tool's question is.
        let mut turn_report = turn_report;
        if let Some(r) = turn_report.as_mut()
            && r.question.is_none()
            && commit.is_none()
            && matches!(r.outcome, TurnOutcome::Success)
            && let Some(q) = r.summary.as_deref().and_then(adapter::asks_a_question)
        {
            let _ = log.note(&format!("the agent asks: {q}")).await;
            r.question = Some(q);
        }
        if let Some(r) = &turn_report {
            turn_span.record("gen_ai.response.model", r.model.as_deref());
            turn_span.record("gen_ai.usage.input_tokens", r.usage.input_tokens);
            turn_span.record("gen_ai.usage.output_tokens", r.usage.output_tokens);
            turn_span.record("grove.cost_usd", r.usage.cost_usd);
            turn_span.record("grove.outcome", format!("{:?}", r.outcome).as_str());
        }
        drop(turn_span);
        report(
            &ctx.bus,
            a,
            EventKind::Checkpoint {
                turn: turn_no,
                commit: commit.clone(),
                stat,
                report: turn_report.clone(),
            },
        )
        .await;
        match finished.end {
            End::TimedOut(t) => {
                return failed(
                    format!("turn {turn_no} timed out after {}", humanize(t)),
                    log.tail(),
                    turn_no,
                );
            }
            End::Cancelled if cancel.is_cancelled() => {
                return TaskOutcome {
                    state: TaskState::Cancelled,
                    head: None,
                    stat: DiffStat::default(),
                    turns: turn_no,
                    reason: Some("cancelled".into()),
                    log_tail: log.tail(),
                    retry: grove_core::task::Retry::Final,
                };
            }
            _ => {}
        }
        if let (Some(kind), Some(r)) = (cli, &turn_report) {
            if let Some(outcome) =
                cli_verdict(kind, r, turn_no, commit.is_some(), &a.budget, &spent, log).await
            {
                return outcome;
            }
        } else {
            match finished.end {
                End::Exited(0) => {}
                End::Exited(code) => {
                    let why = format!("the agent exited with code {code} in turn {turn_no}");
                    let mut outcome = failed(why.clone(), log.tail(), turn_no);
                    // A usage or rate limit is not the agent's verdict: park until it resets.
                    if let Some(until) = crate::limits::usage_limit(&outcome.log_tail, unix_now()) {
                        let _ = log.note(&format!("usage limit: parked until unix time {until}")).await;
                        outcome.reason = Some(format!("{why}: the agent hit a usage limit"));
                        outcome.retry = Retry::Parked { until };
                    }
                    return outcome;
                }
                End::TimedOut(_) | End::Cancelled => {
                    return failed(format!("turn {turn_no} was stopped"), log.tail(), turn_no);
                }
            }
        }
        let Some(check) = &a.check else {
            return succeeded(turn_no);
        };
        report(&ctx.bus, a, EventKind::State { state: TaskState::Checking, turn: Some(turn_no) }).await;
        log.reset_tail();
        let _ = log.note(&format!("check: {check}")).await;
        let args = vec!["-c".to_owned(), check.clone()];
        let result = process::run("sh", &args, &ws.path, &env, a.turn_timeout, log, cancel)
            .instrument(tracing::info_span!("check", grove.turn = turn_no))
            .await;
        let end = match result {
            Ok(f) => f.end,
            Err(e) => return failed(format!("running the check: {e}"), log.tail(), turn_no),
        };
        let why = match end {
            End::Exited(0) => return succeeded(turn_no),
            End::Cancelled => {
                return TaskOutcome {
                    state: TaskState::Cancelled,
                    head: None,
                    stat: DiffStat::default(),
                    turns: turn_no,
                    reason: Some("cancelled".into()),
                    log_tail: log.tail(),
                    retry: grove_core::task::Retry::Final,
                };
            }
            End::Exited(code) => format!("the check `{check}` failed (exit {code}) after turn {turn_no}"),
            End::TimedOut(t) => format!("the check `{check}` timed out after {}", humanize(t)),
        };
        if turn_no >= a.max_turns || (commit.is_none() && session.is_none()) {
            return failed(why, log.tail(), turn_no);
        }
        let feedback = format!("{why}. Its output ended with:\n\n{}\n", log.tail());
        if let Err(e) = tokio::fs::write(&feedback_file, &feedback).await {
            return failed(format!("writing the feedback file: {e}"), log.tail(), turn_no);
        }
        // A resumed session has the task in its context: the feedback is the whole prompt.
        next_prompt = if session.is_some() {
            format!("{feedback}\nFix it, in this workspace.")
        } else {
            format!("{prompt}\n{feedback}")
        };
    }
}

/// The message of a turn's checkpoint commit: job, task, attempt and turn, as trailers too.
pub(crate) fn checkpoint_message(a: &Assignment, turn_no: u32) -> String {
    format!(
        "grove: {} {} turn {turn_no}\n\nGrove-Job: {}\nGrove-Task: {}\nGrove-Attempt: {}\nGrove-Turn: {turn_no}",
        a.job, a.task, a.job, a.task, a.attempt
    )
}

/// The GenAI semantic conventions' `gen_ai.system` of an adapter: the provider whose model the
/// CLI calls, where the CLI has one; otherwise the adapter's name.
fn genai_system(adapter: &str) -> &str {
    match adapter {
        "claude" => "anthropic",
        "codex" => "openai",
        "gemini" => "gcp.gemini",
        "copilot" => "github_copilot",
        other => other,
    }
}

/// What the first turn of an attempt says to a CLI adapter: the whole task, or, to a session
/// that already has the task in its context, only what is new (a person's answer, a conflict
/// to redo, an interruption).
fn first_prompt(a: &Assignment, full: &str, resumed: bool, resume: Option<&Resume>) -> String {
    if !resumed {
        return full.to_owned();
    }
    if let Some(answer) = &a.reply {
        return answer.clone();
    }
    if a.redo.is_some() {
        // The redo paragraph of the full prompt, which names the conflict's files.
        if let Some(i) = full.find("\nThis is a redo:") {
            return full[i + 1..].to_owned();
        }
    }
    let mut p = String::from(
        "Go on with the task where you left off. The workspace has the work committed so far (the last \
         turn may not have finished).",
    );
    if let Some(r) = resume {
        p.push_str(&format!(" The end of the earlier output is in {}.", r.previous_log.display()));
    }
    p
}

/// The task's side ref for its agent session.
fn session_ref(a: &Assignment) -> String {
    format!("refs/grove/sessions/{}/{}", a.job, a.task)
}

/// The agent's environment as the CLI's folders (the job's `agent.env`, then the worker's).
fn agent_dirs(ctx: &WorkerContext, a: &Assignment) -> adapter::session::Dirs {
    adapter::session::Dirs::from_env(|k| {
        a.agent.env.get(k).cloned().or_else(|| ctx.agent_home.get(k).cloned())
    })
}

/// The session's record and transcript, as files for its side ref.
fn session_files(
    ctx: &WorkerContext,
    a: &Assignment,
    ws: &Workspace,
    run_dir: &std::path::Path,
    kind: grove_core::spec::AgentKind,
    s: &SessionRef,
) -> Option<Vec<(String, Vec<u8>)>> {
    let dirs = agent_dirs(ctx, a);
    let t = &s.total;
    let record = serde_json::json!({
        "agent": s.agent,
        "id": s.id,
        "attempt": a.attempt,
        "workdir": ws.path.display().to_string(),
        "total": {
            "input_tokens": t.input_tokens,
            "output_tokens": t.output_tokens,
            "cache_read_tokens": t.cache_read_tokens,
            "cache_write_tokens": t.cache_write_tokens,
            "cost_usd": t.cost_usd,
            "known_cost_usd": t.known_cost_usd,
        },
    });
    let mut files = vec![("session.json".to_owned(), record.to_string().into_bytes())];
    for (name, path) in adapter::session::collect(kind, &s.id, &ws.path, run_dir, &dirs) {
        match std::fs::read(&path) {
            Ok(bytes) => files.push((format!("files/{name}"), bytes)),
            Err(e) => tracing::warn!(task = %a.task, "reading {}: {e}", path.display()),
        }
    }
    Some(files)
}

/// A session as `session.json` on the side ref records it, with the attempt that saved it.
fn saved_session(bytes: &[u8]) -> Option<(SessionRef, u32)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let t = &v["total"];
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    let cost = t["cost_usd"].as_f64();
    let total = Usage {
        cost_usd: cost,
        known_cost_usd: t["known_cost_usd"].as_f64().or(cost).unwrap_or(0.0),
        ..Usage::new(
            n("input_tokens"),
            n("output_tokens"),
            n("cache_read_tokens"),
            n("cache_write_tokens"),
            cost,
        )
    };
    let s = SessionRef { agent: v["agent"].as_str()?.to_owned(), id: v["id"].as_str()?.to_owned(), total };
    Some((s, v["attempt"].as_u64().unwrap_or(0) as u32))
}

/// The session the attempt resumes, with its transcript put where the CLI looks for it from
/// this workspace (unless this machine has it already: a newer copy, from an attempt here).
///
/// The coordinator names the session (`Assignment::session`, from the turns it recorded); a
/// redelivered attempt (its worker was lost) resumes the one it saved itself on the task's
/// side ref, which the coordinator may not have heard of yet.
async fn restore_session(
    ctx: &Arc<WorkerContext>,
    a: &Assignment,
    ws: &Workspace,
    run_dir: &std::path::Path,
    kind: grove_core::spec::AgentKind,
    redelivered: bool,
    log: &mut Log,
) -> Option<SessionRef> {
    let wanted = a.session.clone().filter(|s| s.agent == kind.as_str() && !s.id.is_empty());
    if wanted.is_none() && !redelivered {
        return None;
    }
    let (git, ws2, side) = (ctx.git.clone(), ws.clone(), session_ref(a));
    let files = match tokio::task::spawn_blocking(move || ws2.load_files(&git, &side)).await {
        Ok(Ok(f)) => f.unwrap_or_default(),
        Ok(Err(e)) => {
            let _ = log.note(&format!("reading the saved session: {e}")).await;
            Vec::new()
        }
        Err(e) => {
            let _ = log.note(&format!("reading the saved session: {e}")).await;
            Vec::new()
        }
    };
    let saved = files.iter().find(|(n, _)| n == "session.json").and_then(|(_, b)| saved_session(b));
    let chosen = match (saved, wanted) {
        // This very attempt saved it before its worker was lost.
        (Some((s, attempt)), _) if redelivered && attempt == a.attempt && s.agent == kind.as_str() => s,
        (_, Some(w)) => w,
        _ => return None,
    };
    let ours = files
        .iter()
        .find(|(n, _)| n == "session.json")
        .and_then(|(_, b)| saved_session(b))
        .is_some_and(|(s, _)| s.id == chosen.id);
    let dirs = agent_dirs(ctx, a);
    let mut put = 0;
    for (name, bytes) in files.into_iter().filter(|_| ours) {
        let Some(rel) = name.strip_prefix("files/") else { continue };
        let Some(to) = adapter::session::restore_path(kind, rel, &ws.path, run_dir, &dirs) else { continue };
        if to.exists() {
            continue;
        }
        if let Some(dir) = to.parent()
            && let Err(e) = tokio::fs::create_dir_all(dir).await
        {
            tracing::warn!(task = %a.task, "making {}: {e}", dir.display());
            continue;
        }
        match tokio::fs::write(&to, bytes).await {
            Ok(()) => put += 1,
            Err(e) => tracing::warn!(task = %a.task, "writing {}: {e}", to.display()),
        }
    }
    let _ = log
        .note(&format!(
            "resuming {} session {} ({put} transcript file(s) restored for this workspace)",
            chosen.agent, chosen.id
        ))
        .await;
    Some(chosen)
}

/// A line in the log about what the turn produced.
async fn note_turn(log: &mut Log, turn_no: u32, r: &grove_core::usage::TurnReport) {
    let u = &r.usage;
    let tokens = format!(
        "{} in, {} out, {} cache read, {} cache write",
        grove_core::usage::tokens_text(u.input_tokens),
        grove_core::usage::tokens_text(u.output_tokens),
        grove_core::usage::tokens_text(u.cache_read_tokens),
        grove_core::usage::tokens_text(u.cache_write_tokens)
    );
    let session = r.session.as_deref().map(|s| format!(", session {s}")).unwrap_or_default();
    let _ = log.note(&format!("turn {turn_no}: {} · {tokens} · {}{session}", r.outcome, u.cost_text())).await;
    if let Some(q) = &r.question {
        let _ = log.note(&format!("the agent asks: {q}")).await;
    }
}

/// What a CLI adapter's turn means for the attempt: `Some` ends it (a failure, a park, a
/// question), `None` goes on to the check.
async fn cli_verdict(
    kind: grove_core::spec::AgentKind,
    r: &grove_core::usage::TurnReport,
    turn_no: u32,
    committed: bool,
    budget: &grove_core::usage::Budget,
    spent: &Usage,
    log: &mut Log,
) -> Option<TaskOutcome> {
    let tail = log.tail();
    match &r.outcome {
        TurnOutcome::Success => {
            // A question ends the turn for a person: explicit (an ask tool, denied
            // permissions), or a final message asking one when the turn changed nothing.
            let asked = r
                .question
                .clone()
                .or_else(|| r.summary.as_deref().filter(|_| !committed).and_then(adapter::asks_a_question));
            let q = asked?;
            if r.question.is_none() {
                let _ = log.note(&format!("the agent asks: {q}")).await;
            }
            Some(TaskOutcome {
                state: TaskState::NeedsAttention,
                reason: Some(format!("question: {}", one_line(&q))),
                ..failed(String::new(), tail, turn_no)
            })
        }
        TurnOutcome::Budget(m) => {
            Some(failed(budget.exceeded(spent).unwrap_or_else(|| m.clone()), tail, turn_no))
        }
        TurnOutcome::MaxTurns => {
            Some(failed(format!("the agent stopped at its own turn limit in turn {turn_no}"), tail, turn_no))
        }
        TurnOutcome::UsageLimit { reset, message } => {
            let until = reset.unwrap_or_else(|| unix_now() + crate::limits::DEFAULT_PARK);
            let _ = log.note(&format!("usage limit: parked until unix time {until}")).await;
            let mut o = failed(
                format!("the agent hit a usage limit in turn {turn_no}: {}", one_line(message)),
                tail,
                turn_no,
            );
            o.retry = Retry::Parked { until };
            Some(o)
        }
        TurnOutcome::Auth(m) => {
            let why = format!(
                "{} could not authenticate: {} ({})",
                kind.as_str(),
                one_line(m),
                adapter::auth_hint(kind)
            );
            let _ = log.note(&why).await;
            Some(failed(why, tail, turn_no))
        }
        TurnOutcome::Network(m) => Some(transient(
            format!("{} could not reach its provider in turn {turn_no}: {}", kind.as_str(), one_line(m)),
            tail,
            turn_no,
        )),
        TurnOutcome::Error(m) => {
            Some(failed(format!("the agent failed in turn {turn_no}: {}", one_line(m)), tail, turn_no))
        }
    }
}

/// The first line of `text`, at most 300 characters.
fn one_line(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or_default();
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

/// A failure around the agent's work, not of it: the coordinator may try again.
pub(crate) fn transient(reason: String, tail: String, turns: u32) -> TaskOutcome {
    TaskOutcome { retry: Retry::Transient, ..failed(reason, tail, turns) }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn succeeded(turns: u32) -> TaskOutcome {
    TaskOutcome {
        state: TaskState::Succeeded,
        head: None,
        stat: DiffStat::default(),
        turns,
        reason: None,
        log_tail: String::new(),
        retry: grove_core::task::Retry::Final,
    }
}

/// `1m 30s`, `250ms`.
fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}
