//! Notifications: a person hears that a task needs them or failed, and that a job finished,
//! through the sinks of the job's `[notify]`: a webhook (JSON POST), an ntfy topic (text
//! POST), a command (the event as JSON on its stdin). The terminal bell is the CLI's.
//!
//! - [`Notifier::observe`] is handed every note as it is journaled ([`crate::journal::writer`],
//!   in the daemon and in `grove run` alike) and turns the few that matter into an [`Event`]
//!   ([`event`]), reading what the note lacks from the store (the task's attempt and
//!   question; the job's counts and cost).
//! - Each event is recorded per sink in the `notifications` table under a key naming the
//!   state change ([`Event::key`]) before it is sent. A key recorded before is not sent
//!   again: a note seen twice (a restarted coordinator that moves a train again, a job
//!   resumed) sends nothing new.
//! - Sending happens off the event loop: one tokio task per kind of sink takes deliveries
//!   from a bounded queue. A failed try is logged and tried again after a doubling wait, at
//!   most [`MAX_TRIES`] times, then given up (the row keeps why); nothing of it reaches the
//!   job. [`Notifier::resume`] sends what an earlier coordinator recorded and did not get
//!   through.
//!
//! Limits: a note lost before it was journaled (see [`crate::journal`]) sends nothing; an
//! event is sent at least once per sink and recorded sent after the sink accepted it, so a
//! coordinator killed between the two sends that one again when it starts. HTTPS trusts the
//! system's roots (rustls; no OpenSSL); there is no proxy support.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use grove_core::spec::NotifySpec;
use grove_core::task::{MergeState, shown_state};
use grove_core::usage::Usage;
use grove_core::{JobId, TaskState};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Coordinator;
use crate::drive::Note;
use crate::store::{JobRow, TaskRow};

/// Tries per event and sink, the first included.
pub const MAX_TRIES: u32 = 4;
/// The wait after the first failed try; doubled after each further one.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// How long one try of a webhook or ntfy may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command sink may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries waiting per kind of sink; more are left recorded for [`Notifier::resume`].
const QUEUE: usize = 256;
/// Notifications older than this are not sent again by [`Notifier::resume`].
const RESUME_WITHIN: i64 = 24 * 3600;
/// The most of a text (a reason, a question, a check's output) an event carries.
const TEXT_CAP: usize = 1500;

/// Why a notification did not get through (one try).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The URL does not parse as an HTTP URI.
    #[error("bad URL {url:?}: {message}")]
    Url { url: String, message: String },
    /// No HTTPS client: the system's root certificates could not be loaded.
    #[error("https is not available: {0}")]
    NoTls(String),
    /// The request did not get an answer (the source says why: refused, DNS, TLS).
    #[error("POST {url}")]
    Http {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The server answered with a status that is not a success.
    #[error("POST {url}: {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status { url: String, status: u16, body: String },
    /// The try took too long.
    #[error("{what}: no answer within {after:?}")]
    TimedOut { what: String, after: Duration },
    /// The command names no program (`notify.command` is refused so before a job starts).
    #[error("the command is empty")]
    NoProgram,
    /// The command could not be started or fed.
    #[error("{program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The command exited with a failure.
    #[error("{program} exited with {code}{}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    Command { program: String, code: String, stderr: String },
}

/// Where an event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    Webhook,
    Ntfy,
    Command,
}

impl SinkKind {
    pub const ALL: [SinkKind; 3] = [SinkKind::Webhook, SinkKind::Ntfy, SinkKind::Command];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Ntfy => "ntfy",
            SinkKind::Command => "command",
        }
    }

    fn parse(s: &str) -> Option<SinkKind> {
        SinkKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A sink as the job's spec configures it.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A URL the event is POSTed to as JSON.
    Webhook(String),
    /// The ntfy URL (server and topic) the summary is POSTed to.
    Ntfy(String),
    /// A program and its arguments.
    Command(Vec<String>),
}

/// The sink of kind `kind` in `spec`, if it has one.
pub fn target(spec: &NotifySpec, kind: SinkKind) -> Option<Target> {
    match kind {
        SinkKind::Webhook => spec.webhook.clone().map(Target::Webhook),
        SinkKind::Ntfy => spec
            .ntfy
            .as_ref()
            .map(|topic| Target::Ntfy(format!("{}/{topic}", spec.ntfy_server().trim_end_matches('/')))),
        SinkKind::Command => spec.command.clone().filter(|c| !c.is_empty()).map(Target::Command),
    }
}

/// Every sink `spec` configures.
pub fn targets(spec: &NotifySpec) -> Vec<(SinkKind, Target)> {
    SinkKind::ALL.into_iter().filter_map(|k| target(spec, k).map(|t| (k, t))).collect()
}

/// Why a task needs a person.
#[derive(Debug, Clone, PartialEq)]
pub enum Attention {
    /// Its agent asked this (`grove reply` answers).
    Question(String),
    /// Its branch conflicts with the integration branch in these paths.
    Conflict(Vec<String>),
    /// Its merge breaks the integration check, which printed this.
    CheckFailed(String),
    /// Something else; the task's reason, when it has one.
    Other(Option<String>),
}

/// What the job came to, for its finished event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub tasks: usize,
    /// Tasks by the state people read (`merged`, `failed`, `needs-attention`, ...).
    pub states: BTreeMap<String, usize>,
    pub merged: usize,
    /// Attempts over all tasks (a job run again ends again with more).
    pub attempts: u64,
    /// What the job's agents spent, when every turn's cost is known.
    pub cost_usd: Option<f64>,
    /// What is known of it otherwise (`≥$0.12`, `unknown`), when agents reported usage.
    pub cost: Option<String>,
    pub integration_branch: String,
}

/// One thing a person hears about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Attention { job: JobId, task: String, attempt: u32, why: Attention },
    Failed { job: JobId, task: String, attempt: u32, reason: Option<String> },
    Finished { job: JobId, state: String, summary: Summary },
}

fn capped(s: &str) -> String {
    if s.len() <= TEXT_CAP {
        return s.to_owned();
    }
    let mut end = TEXT_CAP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The first line of `s`, at most 200 characters.
fn first_line(s: &str) -> String {
    let line = s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let short: String = line.chars().take(200).collect();
    if short.len() < line.len() { format!("{short}…") } else { short }
}

impl Event {
    pub fn job(&self) -> &JobId {
        match self {
            Event::Attention { job, .. } | Event::Failed { job, .. } | Event::Finished { job, .. } => job,
        }
    }

    /// The event's name in its JSON (`event`).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Attention { .. } => "task-needs-attention",
            Event::Failed { .. } => "task-failed",
            Event::Finished { .. } => "job-finished",
        }
    }

    /// The state change it reports, unique within its job: what is sent once.
    pub fn key(&self) -> String {
        match self {
            Event::Attention { task, attempt, .. } => format!("attention:{task}:{attempt}"),
            Event::Failed { task, attempt, .. } => format!("failed:{task}:{attempt}"),
            Event::Finished { state, summary, .. } => format!("finished:{state}:{}", summary.attempts),
        }
    }

    /// A title (ntfy's `Title`).
    pub fn title(&self) -> String {
        match self {
            Event::Attention { job, task, .. } => format!("grove: {job}/{task} needs attention"),
            Event::Failed { job, task, .. } => format!("grove: {job}/{task} failed"),
            Event::Finished { job, state, .. } => format!("grove: job {job} {}", ended_word(state)),
        }
    }

    /// A one-line summary (Slack's `text`, Discord's `content`, ntfy's body).
    pub fn line(&self) -> String {
        match self {
            Event::Attention { job, task, why, .. } => {
                let what = match why {
                    Attention::Question(q) => format!("its agent asks: {}", first_line(q)),
                    Attention::Conflict(paths) => {
                        format!("its branch conflicts with the integration branch in {}", paths.join(", "))
                    }
                    Attention::CheckFailed(_) => "its merge breaks the integration check".to_owned(),
                    Attention::Other(Some(r)) => first_line(r),
                    Attention::Other(None) => "see grove status".to_owned(),
                };
                format!("grove: {job}/{task} needs attention: {what}")
            }
            Event::Failed { job, task, reason, .. } => match reason {
                Some(r) => format!("grove: {job}/{task} failed: {}", first_line(r)),
                None => format!("grove: {job}/{task} failed"),
            },
            Event::Finished { job, state, summary: s } => {
                let mut parts: Vec<String> = s.states.iter().map(|(k, n)| format!("{n} {k}")).collect();
                if parts.is_empty() {
                    parts.push("no tasks".into());
                }
                let cost = s.cost.as_deref().map(|c| format!("; cost {c}")).unwrap_or_default();
                format!(
                    "grove: job {job} {}: {} of {} task(s){cost}",
                    ended_word(state),
                    parts.join(", "),
                    s.tasks
                )
            }
        }
    }

    /// The event as sinks get it: `text` and `content` (the one-line summary), `title`, and
    /// the event's fields; `at` in seconds since the epoch.
    pub fn payload(&self, at: i64) -> Value {
        let line = self.line();
        let mut v = json!({
            "text": line,
            "content": line,
            "title": self.title(),
            "event": self.name(),
            "job": self.job().as_str(),
            "at": at,
        });
        let fields = match self {
            Event::Attention { task, attempt, why, .. } => {
                let mut f = json!({
                    "task": task,
                    "attempt": attempt,
                    "state": TaskState::NeedsAttention.as_str(),
                });
                let (cause, detail) = match why {
                    Attention::Question(q) => ("question", json!({"question": capped(q)})),
                    Attention::Conflict(p) => ("conflict", json!({"conflict_paths": p})),
                    Attention::CheckFailed(o) => ("check-failed", json!({"check_output": capped(o)})),
                    Attention::Other(r) => ("other", json!({"reason": r.as_deref().map(capped)})),
                };
                f["cause"] = cause.into();
                merge(&mut f, detail);
                f
            }
            Event::Failed { task, attempt, reason, .. } => json!({
                "task": task,
                "attempt": attempt,
                "state": TaskState::Failed.as_str(),
                "reason": reason.as_deref().map(capped),
            }),
            Event::Finished { state, summary: s, .. } => json!({
                "state": state,
                "tasks": s.tasks,
                "states": s.states,
                "merged": s.merged,
                "cost_usd": s.cost_usd,
                "cost": s.cost,
                "integration_branch": s.integration_branch,
            }),
        };
        merge(&mut v, fields);
        v
    }
}

fn ended_word(state: &str) -> &str {
    match state {
        "done" => "finished",
        other => other,
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The notes that may make an event; others are passed by without reading the store.
fn may_notify(note: &Note) -> bool {
    matches!(
        note,
        Note::Finished { state: TaskState::Failed | TaskState::NeedsAttention, .. }
            | Note::Conflict { .. }
            | Note::CheckFailed { .. }
            | Note::Ended { .. }
    )
}

/// The event `note` makes, if any, given its job, the job's tasks as they are now and what
/// its agents spent.
pub fn event(note: &Note, job: &JobRow, tasks: &[TaskRow], usage: Option<&Usage>) -> Option<Event> {
    let task = |slug: &str| tasks.iter().find(|t| t.slug == slug);
    let id = job.id.clone();
    match note {
        Note::Finished { task: slug, state: TaskState::Failed, reason, .. } => Some(Event::Failed {
            job: id,
            attempt: task(slug).map_or(0, |t| t.attempt),
            task: slug.clone(),
            reason: reason.clone(),
        }),
        Note::Finished { task: slug, state: TaskState::NeedsAttention, reason, .. } => {
            let t = task(slug);
            let why = match t.and_then(|t| t.agent.question.clone()) {
                Some(q) => Attention::Question(q),
                None => Attention::Other(reason.clone()),
            };
            Some(Event::Attention { job: id, attempt: t.map_or(0, |t| t.attempt), task: slug.clone(), why })
        }
        Note::Conflict { task: slug, paths, .. } => Some(Event::Attention {
            job: id,
            attempt: task(slug).map_or(0, |t| t.attempt),
            task: slug.clone(),
            why: Attention::Conflict(paths.clone()),
        }),
        Note::CheckFailed { task: slug, output, .. } => Some(Event::Attention {
            job: id,
            attempt: task(slug).map_or(0, |t| t.attempt),
            task: slug.clone(),
            why: Attention::CheckFailed(output.clone()),
        }),
        Note::Ended { state, .. } => {
            let mut states = BTreeMap::new();
            for t in tasks {
                *states.entry(shown_state(t.state, t.merge_state).to_owned()).or_insert(0) += 1;
            }
            let summary = Summary {
                tasks: tasks.len(),
                states,
                merged: tasks.iter().filter(|t| t.merge_state == MergeState::Merged).count(),
                attempts: tasks.iter().map(|t| u64::from(t.attempt)).sum(),
                cost_usd: usage.and_then(|u| u.cost_usd),
                cost: usage.map(Usage::cost_text),
                integration_branch: job.integration_branch.clone(),
            };
            Some(Event::Finished { job: id, state: state.clone(), summary })
        }
        _ => None,
    }
}

/// One event for one sink.
#[derive(Debug, Clone)]
struct Delivery {
    job: JobId,
    key: String,
    kind: SinkKind,
    target: Target,
    payload: Arc<Value>,
    /// Tries made before this one.
    tries: u32,
    /// Counted in [`Untried`] until its first try here (a retry is not).
    counted: bool,
}

/// Deliveries queued and not tried once yet, for [`Notifier::flush`].
#[derive(Default)]
struct Untried {
    count: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Untried {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }
    fn done(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// The notifications of every job a coordinator runs. See the module's documentation.
pub struct Notifier {
    coord: Arc<Coordinator>,
    queues: HashMap<SinkKind, mpsc::Sender<Delivery>>,
    untried: Arc<Untried>,
}

impl Notifier {
    /// Start the senders (one tokio task per kind of sink). Call from within a runtime.
    pub fn start(coord: Arc<Coordinator>) -> Arc<Notifier> {
        let http = Arc::new(Http::new());
        let untried = Arc::new(Untried::default());
        let mut queues = HashMap::new();
        let mut receivers = Vec::new();
        for kind in SinkKind::ALL {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(kind, tx.clone());
            receivers.push((rx, tx));
        }
        for (rx, again) in receivers {
            tokio::spawn(send_all(rx, again, http.clone(), coord.clone(), untried.clone()));
        }
        Arc::new(Notifier { coord, queues, untried })
    }

    /// A note was journaled: record and send the event it makes, if any, to each of its job's
    /// sinks that has not had it. Never fails: what goes wrong is logged.
    pub fn observe(&self, note: &Note) {
        if !may_notify(note) {
            return;
        }
        if let Err(e) = self.observe_or_fail(note) {
            tracing::warn!(job = %note.job(), "notifications: {e}");
        }
    }

    fn observe_or_fail(&self, note: &Note) -> Result<(), crate::StoreError> {
        let store = &self.coord.store;
        let job = store.job(note.job().as_str())?;
        let sinks = targets(&job.spec.notify);
        if sinks.is_empty() {
            return Ok(());
        }
        let tasks = store.tasks(&job.id)?;
        let usage = store.job_usage(&job.id)?;
        let Some(ev) = event(note, &job, &tasks, usage.as_ref()) else { return Ok(()) };
        let (key, payload) = (ev.key(), Arc::new(ev.payload(crate::timers::unix_now())));
        let text = payload.to_string();
        for (kind, target) in sinks {
            if !store.record_notification(&job.id, &key, kind.as_str(), &text)? {
                tracing::debug!(job = %job.id, %key, sink = kind.as_str(), "notified before; not again");
                continue;
            }
            let d = Delivery {
                job: job.id.clone(),
                key: key.clone(),
                kind,
                target,
                payload: payload.clone(),
                tries: 0,
                counted: false,
            };
            self.enqueue(d);
        }
        Ok(())
    }

    fn enqueue(&self, mut d: Delivery) {
        let Some(queue) = self.queues.get(&d.kind) else { return };
        self.untried.add();
        d.counted = true;
        if let Err(e) = queue.try_send(d) {
            self.untried.done();
            let d = match e {
                mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
            };
            tracing::warn!(
                job = %d.job,
                key = %d.key,
                "notifications: the {} queue is full; this one is sent when a coordinator starts next",
                d.kind.as_str()
            );
        }
    }

    /// Queue again what was recorded in the last day and not sent (an earlier coordinator
    /// stopped first), to the sinks its job configures now. Returns how many.
    pub fn resume(&self) -> usize {
        let since = crate::timers::unix_now() - RESUME_WITHIN;
        let rows = match self.coord.store.unsent_notifications(since, MAX_TRIES) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("notifications: reading the unsent ones: {e}");
                return 0;
            }
        };
        let mut jobs: HashMap<JobId, Option<NotifySpec>> = HashMap::new();
        let mut queued = 0;
        for row in rows {
            let spec = jobs
                .entry(row.job.clone())
                .or_insert_with(|| self.coord.store.job(row.job.as_str()).ok().map(|j| j.spec.notify));
            let Some(kind) = SinkKind::parse(&row.sink) else { continue };
            let Some(target) = spec.as_ref().and_then(|s| target(s, kind)) else { continue };
            let Ok(payload) = serde_json::from_str::<Value>(&row.event) else { continue };
            self.enqueue(Delivery {
                job: row.job,
                key: row.key,
                kind,
                target,
                payload: Arc::new(payload),
                tries: row.tries,
                counted: false,
            });
            queued += 1;
        }
        if queued > 0 {
            tracing::info!("notifications: sending {queued} an earlier run did not get through");
        }
        queued
    }

    /// Wait until every queued notification has been tried once, or `grace` has passed (the
    /// process is about to end; later tries are left to [`Notifier::resume`]).
    pub async fn flush(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let changed = self.untried.changed.notified();
            if self.untried.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("notifications: some were not sent before grove stopped; they go when it starts next");
                    return;
                }
            }
        }
    }
}

/// The sender of one kind of sink: one try per delivery as it comes; a failed one is queued
/// again after its wait (by a task of its own, so the others go meanwhile).
async fn send_all(
    mut rx: mpsc::Receiver<Delivery>,
    again: mpsc::Sender<Delivery>,
    http: Arc<Http>,
    coord: Arc<Coordinator>,
    untried: Arc<Untried>,
) {
    // The queue stays open while the notifier has it; `again` is for the retries.
    let again = again.downgrade();
    while let Some(mut d) = rx.recv().await {
        let counted = std::mem::take(&mut d.counted);
        let result = send(&http, &d.target, &d.payload).await;
        d.tries += 1;
        let error = result.as_ref().err().map(|e| with_causes(e));
        if let Err(e) =
            coord.store.notification_tried(&d.job, &d.key, d.kind.as_str(), d.tries, error.as_deref())
        {
            tracing::warn!(job = %d.job, "notifications: recording a try: {e}");
        }
        match error {
            // After it is recorded: a crash from here on sends it no more.
            None => tracing::info!(job = %d.job, key = %d.key, sink = d.kind.as_str(), "notified"),
            Some(e) if d.tries < MAX_TRIES => {
                let wait = FIRST_WAIT * 2u32.pow(d.tries - 1);
                tracing::warn!(
                    job = %d.job,
                    "notifications: {} ({}, try {} of {MAX_TRIES}): {e}; again in {wait:?}",
                    d.kind.as_str(),
                    d.key,
                    d.tries
                );
                if let Some(again) = again.upgrade() {
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = again.send(d).await;
                    });
                }
            }
            Some(e) => tracing::warn!(
                job = %d.job,
                "notifications: {} ({}): giving up after {MAX_TRIES} tries: {e}",
                d.kind.as_str(),
                d.key
            ),
        }
        if counted {
            untried.done();
        }
    }
}

/// `url` as errors and logs show it: scheme and host, the path (a webhook's token, an ntfy
/// topic) left out.
fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "the URL".to_owned() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let tail = if end < rest.len() { "/…" } else { "" };
    format!("{scheme}://{}{tail}", &rest[..end])
}

/// `e` and what caused it, `: `-separated (hyper's own message alone says little).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.ends_with(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// One try of one event to one sink.
async fn send(http: &Http, target: &Target, payload: &Value) -> Result<(), SendError> {
    match target {
        Target::Webhook(url) => {
            let body = serde_json::to_vec(payload).unwrap_or_default();
            http.post(url, "application/json", &[], body).await
        }
        Target::Ntfy(url) => {
            let text = payload.get("text").and_then(Value::as_str).unwrap_or_default();
            let title = payload.get("title").and_then(Value::as_str).unwrap_or("grove");
            http.post(url, "text/plain; charset=utf-8", &[("Title", title)], text.as_bytes().to_vec()).await
        }
        Target::Command(argv) => command(argv, payload).await,
    }
}

/// Run `argv` (no shell) with `payload` as one line of JSON on stdin, in this process's
/// environment without grove's own secrets, in its own process group, under a timeout.
async fn command(argv: &[String], payload: &Value) -> Result<(), SendError> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let Some((program, args)) = argv.split_first() else { return Err(SendError::NoProgram) };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(grove_core::env::forbidden) {
            cmd.env_remove(name);
        }
    }
    tracing::debug!(%program, ?args, "running a notification command");
    let spawn = |source| SendError::Spawn { program: program.clone(), source };
    let mut child = cmd.spawn().map_err(spawn)?;
    let mut line = serde_json::to_vec(payload).unwrap_or_default();
    line.push(b'\n');
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its stdin is not a failure.
            match stdin.write_all(&line).await {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(spawn(e)),
                _ => {}
            }
        }
        child.wait_with_output().await.map_err(spawn)
    };
    let out = tokio::time::timeout(COMMAND_TIMEOUT, run)
        .await
        .map_err(|_| SendError::TimedOut { what: program.clone(), after: COMMAND_TIMEOUT })??;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(SendError::Command {
        program: program.clone(),
        code: out.status.code().map_or_else(|| "a signal".to_owned(), |c| c.to_string()),
        stderr: first_line(stderr.trim_end()),
    })
}

type HttpConnector = hyper_util::client::legacy::connect::HttpConnector;
type Client<C> = hyper_util::client::legacy::Client<C, Full<Bytes>>;

/// An HTTP/1.1 client: plain for http://, rustls with the system's roots for https://.
struct Http {
    plain: Client<HttpConnector>,
    tls: Result<Client<hyper_rustls::HttpsConnector<HttpConnector>>, String>,
}

impl Http {
    fn new() -> Http {
        let builder = || hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map(|b| builder().build(b.https_only().enable_http1().build()))
            .map_err(|e| format!("no system root certificates: {e}"));
        if let Err(e) = &tls {
            tracing::debug!("notifications: {e}; plain http only");
        }
        Http { plain: builder().build(HttpConnector::new()), tls }
    }

    async fn post(
        &self,
        url: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(), SendError> {
        // What errors (and so logs) show of the URL: a webhook's path is its secret.
        let shown = shown_url(url);
        let bad = |message: String| SendError::Url { url: shown.clone(), message };
        let uri: hyper::Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("not an http:// or https:// URL".into())),
        };
        let mut req = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, concat!("grove/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            // A header value is visible ASCII; anything else is left out of it.
            let value: String = value.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).collect();
            req = req.header(*name, value);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| bad(e.to_string()))?;
        let answer = async {
            let sent = if https {
                match &self.tls {
                    Ok(c) => c.request(req).await,
                    Err(e) => return Err(SendError::NoTls(e.clone())),
                }
            } else {
                self.plain.request(req).await
            };
            let resp = sent.map_err(|source| SendError::Http { url: shown.clone(), source })?;
            let status = resp.status();
            // Read (a little of) the answer, so the connection can be used again.
            let body = http_body_util::Limited::new(resp.into_body(), 4096).collect().await;
            let text = body.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()).unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                Err(SendError::Status {
                    url: shown.clone(),
                    status: status.as_u16(),
                    body: first_line(&text),
                })
            }
        };
        tokio::time::timeout(HTTP_TIMEOUT, answer)
            .await
            .map_err(|_| SendError::TimedOut { what: format!("POST {shown}"), after: HTTP_TIMEOUT })?
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use grove_core::DiffStat;
    use grove_git::Git;

    use super::*;
    use crate::train::tests::{coordinator, repo, spec};

    /// A job of two tasks (`m0`, `m1`) whose `[notify]` is `notify`.
    fn fixture(tmp: &Path, notify: NotifySpec) -> (Arc<Coordinator>, JobId) {
        let git = Git::detect().expect("git");
        let dir = tmp.join("r");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (base, tips) = repo(&git, &dir, 2, &[]);
        let mut s = spec();
        s.notify = notify;
        let (coord, job) = coordinator(&tmp.join("home"), &dir, s, &base, &tips);
        (Arc::new(coord), job)
    }

    /// A command sink appending what it reads to `file`, when `gate` (if given) exists.
    fn appending(file: &Path, gate: Option<&Path>) -> NotifySpec {
        let cond = gate.map(|g| format!("test -e {} && ", g.display())).unwrap_or_default();
        let script = format!("{cond}cat >> {}", file.display());
        NotifySpec { command: Some(vec!["sh".into(), "-c".into(), script]), ..NotifySpec::default() }
    }

    fn lines(file: &Path) -> Vec<Value> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect()
    }

    async fn until(what: &str, mut probe: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !probe() {
            assert!(tokio::time::Instant::now() < deadline, "{what}: not within 20s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn failed(job: &JobId) -> Note {
        Note::Finished {
            job: job.clone(),
            task: "m0".into(),
            state: TaskState::Failed,
            stat: DiffStat::default(),
            reason: Some("the agent exited with 3\nand more".into()),
        }
    }

    #[test]
    fn errors_show_no_webhook_token() {
        assert_eq!(shown_url("https://hooks.slack.com/services/T0/B0/XYZ"), "https://hooks.slack.com/…");
        assert_eq!(shown_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(shown_url("nonsense"), "the URL");
    }

    /// The events notes make: which notes, their keys, one line, the fields.
    #[test]
    fn notes_make_events_with_a_line_and_fields() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (coord, job) = fixture(tmp.path(), NotifySpec::default());
        let row = coord.store.job(job.as_str()).expect("job");
        let tasks = coord.store.tasks(&job).expect("tasks");
        let mut tasks = tasks;
        tasks[1].agent.question = Some("Rename the public API too?\nIt is used elsewhere.".into());
        let ev = |n: &Note| event(n, &row, &tasks, None);
        let asks = Note::Finished {
            job: job.clone(),
            task: "m1".into(),
            state: TaskState::NeedsAttention,
            stat: DiffStat::default(),
            reason: Some("the agent asks a question".into()),
        };
        let q = ev(&asks).expect("an event");
        assert_eq!(
            q.line(),
            format!("grove: {job}/m1 needs attention: its agent asks: Rename the public API too?")
        );
        assert_eq!(q.payload(0)["cause"], "question");
        assert_eq!(q.payload(0)["question"], "Rename the public API too?\nIt is used elsewhere.");
        assert_eq!(
            ev(&Note::State { job: job.clone(), task: "m0".into(), state: TaskState::Running, turn: None }),
            None
        );
        let f = ev(&failed(&job)).expect("an event");
        assert_eq!(f.key(), "failed:m0:0", "attempt 0: never dispatched");
        assert_eq!(f.line(), format!("grove: {job}/m0 failed: the agent exited with 3"));
        let p = f.payload(7);
        assert_eq!(
            (p["event"].as_str(), p["task"].as_str(), p["attempt"].as_u64()),
            (Some("task-failed"), Some("m0"), Some(0))
        );
        assert_eq!(p["text"], p["content"]);
        assert_eq!(p["reason"], "the agent exited with 3\nand more");
        let c =
            ev(&Note::Conflict { job: job.clone(), task: "m1".into(), paths: vec!["x".into(), "y".into()] })
                .expect("an event");
        assert_eq!(c.key(), "attention:m1:0");
        assert!(c.line().ends_with("conflicts with the integration branch in x, y"), "{}", c.line());
        assert_eq!(c.payload(0)["conflict_paths"], json!(["x", "y"]));
        assert_eq!(c.payload(0)["cause"], "conflict");
        let usage = Usage::new(10, 10, 0, 0, Some(0.5));
        let end = event(&Note::Ended { job: job.clone(), state: "done".into() }, &row, &tasks, Some(&usage))
            .expect("an event");
        assert_eq!(end.key(), "finished:done:0");
        let p = end.payload(0);
        assert_eq!(p["states"], json!({"succeeded": 2}));
        assert_eq!(
            (p["tasks"].as_u64(), p["merged"].as_u64(), p["cost_usd"].as_f64()),
            (Some(2), Some(0), Some(0.5))
        );
        assert_eq!(end.line(), format!("grove: job {job} finished: 2 succeeded of 2 task(s); cost $0.50"));
    }

    /// A note seen twice, and seen again by a coordinator started anew on the same state,
    /// sends one event.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_state_change_is_sent_once_even_by_a_restarted_coordinator() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("events");
        let (coord, job) = fixture(tmp.path(), appending(&file, None));
        let n = Notifier::start(coord.clone());
        n.observe(&failed(&job));
        n.observe(&failed(&job));
        n.flush(Duration::from_secs(20)).await;
        assert_eq!(lines(&file).len(), 1);
        let again = Notifier::start(coord.clone());
        assert_eq!(again.resume(), 0, "nothing left unsent");
        again.observe(&failed(&job));
        again.flush(Duration::from_secs(20)).await;
        let got = lines(&file);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0]["event"], "task-failed");
        let rows = coord.store.notifications(&job).expect("rows");
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert!(rows[0].sent_at.is_some() && rows[0].tries == 1 && rows[0].error.is_none(), "{rows:#?}");
    }

    /// A sink that fails is tried again after a wait, and its error recorded; what an earlier
    /// coordinator recorded and did not send goes when the next one starts.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failing_sink_is_tried_again_and_the_unsent_go_at_the_next_start() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (file, gate) = (tmp.path().join("events"), tmp.path().join("gate"));
        let (coord, job) = fixture(tmp.path(), appending(&file, Some(&gate)));
        let n = Notifier::start(coord.clone());
        n.observe(&failed(&job));
        n.flush(Duration::from_secs(20)).await;
        let rows = coord.store.notifications(&job).expect("rows");
        assert_eq!(rows[0].tries, 1);
        assert!(rows[0].error.as_deref().is_some_and(|e| e.contains("sh exited with 1")), "{rows:#?}");
        std::fs::write(&gate, "").expect("gate");
        until("the second try", || lines(&file).len() == 1).await;
        until("recorded sent", || coord.store.notifications(&job).expect("rows")[0].sent_at.is_some()).await;

        // Recorded by a coordinator that stopped before sending it.
        let ended = Event::Finished { job: job.clone(), state: "done".into(), summary: Summary::default() };
        let text = ended.payload(crate::timers::unix_now()).to_string();
        assert!(coord.store.record_notification(&job, &ended.key(), "command", &text).expect("record"));
        coord.store.notification_tried(&job, &ended.key(), "command", 1, Some("refused")).expect("a try");
        let next = Notifier::start(coord.clone());
        assert_eq!(next.resume(), 1);
        let started = std::time::Instant::now();
        next.flush(Duration::from_secs(20)).await;
        assert!(started.elapsed() < Duration::from_secs(10), "a resumed one is waited for once");
        let row = coord.store.notifications(&job).expect("rows").pop().expect("the end");
        assert_eq!((row.tries, row.error), (2, None));
        let got = lines(&file);
        assert_eq!(
            got.iter().map(|e| e["event"].as_str().unwrap_or("")).collect::<Vec<_>>(),
            ["task-failed", "job-finished"]
        );
    }
}
