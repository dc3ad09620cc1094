//! The Bus over NATS JetStream.
//!
//! - Stream `GROVE_TASKS` (work queue, file storage): subject `grove.tasks.<pool>`, one durable
//!   pull consumer per pool (`pool-<pool>`) shared by that pool's workers. Explicit acks; a
//!   delivery not acked within `ack_wait` (a lost worker) is delivered again, up to
//!   `max_deliver` times; in-progress acks are the heartbeats of long turns. Assignments carry
//!   a message id (`job/task/attempt`) so a re-dispatch after a coordinator crash is dropped
//!   by JetStream's de-duplication window.
//! - Stream `GROVE_EVENTS` (limits, file storage): subject `grove.events.<job>`. Each
//!   coordinator reads through a durable consumer of its own, `coordinator-<id>`, filtered to
//!   the subjects of the jobs it follows ([`Bus::follow`]), so coordinators sharing a NATS
//!   (daemons, `grove run --nats`) never take each other's events. An event is acked when the
//!   coordinator asks for the next one, so an event it had not recorded when it died is
//!   delivered again.
//!
//! - Roles ([`Role`]): only the coordinator makes streams, the registry and consumers (a pool's
//!   consumer when it first dispatches to that pool); a worker looks them up (waiting for a
//!   coordinator to make them) and pulls only from its pools' consumers; a client only reads
//!   the registry. So each role needs only the NATS permissions `deploy/nats/grove-auth.conf`
//!   gives it, and each uses an inbox prefix of its own (`_INBOX_<user>`), so no role can
//!   subscribe to another's replies.
//!
//! Every message is protobuf ([`crate::wire`]) with a `Grove-Schema` header. A worker that gets
//! an assignment it cannot read terminates it (no redelivery) and reports the task failed with
//! the reason, instead of crashing; one of a newer schema it gives back, to be delivered again
//! after [`NatsConfig::newer_schema_delay`] (to a newer worker, in a rolling upgrade).

use std::path::PathBuf;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind, Message};
use async_trait::async_trait;
use futures::StreamExt;
use grove_core::task::{Assignment, EventKind, LogChunk, TaskEvent, TaskOutcome, WorkerInfo};
use grove_core::{DiffStat, JobId, TaskState};
use grove_proto::SCHEMA_VERSION;
use tokio::sync::Mutex;
use tracing::Instrument as _;

use crate::wire;
use crate::{Acker, Bus, BusError, Cancel, Delivery};

/// Core NATS subject for cancellations (not JetStream: only workers connected now need them).
pub const CANCEL_SUBJECT: &str = "grove.control.cancel";

/// The oldest nats-server grove works with: KV buckets (the worker registry) and the
/// consumer settings grove uses need 2.10 (2.9.10 breaks async-nats's KV).
pub const MIN_SERVER: (u32, u32, u32) = (2, 10, 0);

pub const TASKS_STREAM: &str = "GROVE_TASKS";
pub const EVENTS_STREAM: &str = "GROVE_EVENTS";
pub const LOGS_STREAM: &str = "GROVE_LOGS";
/// The KV bucket of live workers (key: worker id).
pub const WORKERS_BUCKET: &str = "GROVE_WORKERS";

/// What a process does on NATS, and so what it makes and what it only looks up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Makes the streams, the registry and the pools' consumers; dispatches, reads events.
    #[default]
    Coordinator,
    /// Pulls assignments of its pools, reports events and logs, announces itself; makes
    /// nothing (it waits for a coordinator to have made the streams and its pools' consumers).
    Worker,
    /// Reads the worker registry.
    Client,
}

/// How to reach NATS and how deliveries behave.
#[derive(Clone)]
pub struct NatsConfig {
    /// `nats://host:port`, or several separated by commas.
    pub url: String,
    /// A token, when the server wants one.
    pub token: Option<String>,
    /// How long to try to connect before giving up with an error naming the address.
    pub connect_timeout: Duration,
    /// How long a delivery may go without an ack or a heartbeat before it is delivered again.
    pub ack_wait: Duration,
    /// Deliveries of one assignment at most (then it is left for the coordinator to decide).
    pub max_deliver: i64,
    /// How long one pull waits for a message before trying the next pool.
    pub pull_wait: Duration,
    /// How long a worker's announcement lives in the registry unless renewed.
    pub worker_ttl: Duration,
    /// TLS: the CA certificate (PEM) the server's certificate is checked against.
    pub tls_ca: Option<PathBuf>,
    /// TLS: a client certificate and its key (PEM), for servers that verify clients.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Refuse a connection without TLS (implied by `tls_ca`, `tls_client` or a `tls://` URL).
    pub require_tls: bool,
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed, as `nsc` makes them).
    pub credentials: Option<PathBuf>,
    /// A user name and password (the users of `deploy/nats/grove-auth.conf`).
    pub user: Option<(String, String)>,
    /// The prefix of this connection's reply subjects; `None`: `_INBOX_<user>` with a user,
    /// else NATS's `_INBOX`.
    pub inbox_prefix: Option<String>,
    /// What this process does on NATS.
    pub role: Role,
    /// For a coordinator: the consumer it reads its jobs' events through. Workers read none.
    pub reader: Option<EventReader>,
    /// How long an assignment of a newer schema than this worker reads waits before it is
    /// delivered again (to some worker of the pool: a newer one takes it).
    pub newer_schema_delay: Duration,
}

/// A coordinator's durable consumer of the events stream: `coordinator-<id>`, filtered to the
/// jobs it follows.
#[derive(Debug, Clone, PartialEq)]
pub struct EventReader {
    /// Stable across restarts (a daemon keeps it in its home), unique per coordinator.
    pub id: String,
    /// A consumer made afresh reads the followed jobs' events from the start of the stream (a
    /// daemon: events reported while no consumer existed are not lost; old ones are stale and
    /// ignored); otherwise only events published from then on (`grove run --nats`, which
    /// follows its job before dispatching it).
    pub replay: bool,
    /// The server forgets the consumer after this long without a reader.
    pub forget_after: Duration,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the password.
        f.debug_struct("NatsConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("inbox_prefix", &self.inbox_prefix())
            .field("role", &self.role)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("tls_ca", &self.tls_ca)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(60),
            max_deliver: 10,
            pull_wait: Duration::from_secs(2),
            worker_ttl: Duration::from_secs(30),
            tls_ca: None,
            tls_client: None,
            require_tls: false,
            credentials: None,
            user: None,
            inbox_prefix: None,
            role: Role::Coordinator,
            reader: None,
            newer_schema_delay: Duration::from_secs(30),
        }
    }

    /// The prefix of this connection's reply subjects.
    pub fn inbox_prefix(&self) -> String {
        match (&self.inbox_prefix, &self.user) {
            (Some(p), _) => p.clone(),
            (None, Some((user, _))) => format!("_INBOX_{}", pool_token(user)),
            (None, None) => "_INBOX".to_owned(),
        }
    }
}

/// The NATS side failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// No server answered at the address.
    #[error("cannot reach NATS at {url}: {message}")]
    Connect { url: String, message: String },
    /// The server is older than grove supports.
    #[error("nats-server {found} at {url} is too old: grove needs {}.{}.{} or newer (with JetStream enabled: -js)", MIN_SERVER.0, MIN_SERVER.1, MIN_SERVER.2)]
    TooOld { url: String, found: String },
    /// A JetStream call failed.
    #[error("JetStream {what}: {message}")]
    JetStream { what: String, message: String },
}

fn js_err(what: impl Into<String>, e: impl std::fmt::Display) -> NatsError {
    NatsError::JetStream { what: what.into(), message: e.to_string() }
}

impl From<NatsError> for BusError {
    fn from(e: NatsError) -> Self {
        BusError::Transport(e.to_string())
    }
}

/// The bus over NATS JetStream.
pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    config: NatsConfig,
    /// Pool consumers, made on first use.
    pools: Mutex<Vec<(String, PullConsumer)>>,
    /// The coordinator's event consumer, made on first use, and the event to ack next time.
    events: Mutex<EventsState>,
    /// The jobs whose events this coordinator reads; held while the consumer's filter is set.
    followed: Mutex<std::collections::BTreeSet<String>>,
    /// Who reports rejections (a worker id).
    name: String,
    /// Cancellations received, once subscribed.
    cancels: Mutex<Option<tokio::sync::broadcast::Sender<Cancel>>>,
    workers: async_nats::jetstream::kv::Store,
}

#[derive(Default)]
struct EventsState {
    consumer: Option<PullConsumer>,
    messages: Option<pull::Stream>,
    unacked: Option<Message>,
}

/// A TLS failure says what to give.
fn with_tls_hint(message: String) -> String {
    if message.contains("UnknownIssuer") {
        format!("{message} (give the CA certificate that signed the server's certificate: --nats-ca FILE)")
    } else if message.contains("CaUsedAsEndEntity") {
        format!(
            "{message} (the server's certificate is a CA certificate; rustls needs basicConstraints=CA:FALSE)"
        )
    } else {
        message
    }
}

/// Parse `2.15.1` (or `2.11.0-RC.1`) into numbers.
pub fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut n =
        v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or(0));
    (n.next().unwrap_or(0), n.next().unwrap_or(0), n.next().unwrap_or(0))
}

impl NatsBus {
    /// Connect, check the server, and make the streams (idempotently). `name` names this
    /// process in NATS and in the reports it makes.
    pub async fn connect(config: NatsConfig, name: &str) -> Result<NatsBus, NatsError> {
        let url = config.url.clone();
        let mut opts =
            async_nats::ConnectOptions::new().name(name).connection_timeout(config.connect_timeout);
        if let Some(t) = &config.token {
            opts = opts.token(t.clone());
        }
        if let Some((user, password)) = &config.user {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        opts = opts.custom_inbox_prefix(config.inbox_prefix());
        if let Some(creds) = &config.credentials {
            opts = opts.credentials_file(creds).await.map_err(|e| NatsError::Connect {
                url: url.clone(),
                message: format!("reading the credentials file {}: {e}", creds.display()),
            })?;
        }
        if let Some(ca) = &config.tls_ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &config.tls_client {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if config.require_tls
            || config.tls_ca.is_some()
            || config.tls_client.is_some()
            || url.starts_with("tls://")
        {
            opts = opts.require_tls(true);
        }
        let client = tokio::time::timeout(config.connect_timeout, opts.connect(url.as_str()))
            .await
            .map_err(|_| NatsError::Connect { url: url.clone(), message: "timed out".into() })?
            .map_err(|e| NatsError::Connect { url: url.clone(), message: with_tls_hint(e.to_string()) })?;
        let version = client.server_info().version;
        if parse_version(&version) < MIN_SERVER {
            return Err(NatsError::TooOld { url, found: version });
        }
        let js = jetstream::new(client.clone());
        let workers = match config.role {
            Role::Coordinator => ensure_streams(&js, &config).await?,
            Role::Worker | Role::Client => find_streams(&js, config.role, &url).await?,
        };
        let bus = NatsBus {
            client,
            js,
            config,
            pools: Mutex::new(Vec::new()),
            events: Mutex::new(EventsState::default()),
            followed: Mutex::new(Default::default()),
            name: name.to_owned(),
            cancels: Mutex::new(None),
            workers,
        };
        Ok(bus)
    }

    /// The server's version string.
    pub fn server_version(&self) -> String {
        self.client.server_info().version
    }

    /// The pool's durable consumer: made by a coordinator, looked up by a worker (`None`: no
    /// coordinator has dispatched to the pool yet).
    async fn pool_consumer(&self, pool: &str) -> Result<Option<PullConsumer>, NatsError> {
        let mut pools = self.pools.lock().await;
        if let Some((_, c)) = pools.iter().find(|(p, _)| p == pool) {
            return Ok(Some(c.clone()));
        }
        let durable = format!("pool-{}", pool_token(pool));
        if self.config.role != Role::Coordinator {
            let consumer: PullConsumer = match self.js.get_consumer_from_stream(&durable, TASKS_STREAM).await
            {
                Ok(c) => c,
                Err(e) if e.to_string().contains("not found") => return Ok(None),
                Err(e) => return Err(js_err(format!("looking up consumer {durable}"), e)),
            };
            self.check_lease(pool, &consumer);
            pools.push((pool.to_owned(), consumer.clone()));
            return Ok(Some(consumer));
        }
        let stream =
            self.js.get_stream(TASKS_STREAM).await.map_err(|e| js_err("opening the tasks stream", e))?;
        let consumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: task_subject(pool),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    max_deliver: self.config.max_deliver,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| js_err(format!("creating consumer {durable}"), e))?;
        self.check_lease(pool, &consumer);
        pools.push((pool.to_owned(), consumer.clone()));
        Ok(Some(consumer))
    }

    /// The consumer may be older than this process and made with another ack wait; the
    /// server's is the lease that counts (workers fence by it).
    fn check_lease(&self, pool: &str, consumer: &PullConsumer) {
        let lease = consumer.cached_info().config.ack_wait;
        if lease != self.config.ack_wait {
            tracing::warn!(
                pool,
                "pool {pool} was set up with a lease (ack wait) of {lease:?}, not {:?}: using the server's",
                self.config.ack_wait
            );
        }
    }

    /// Refuse an assignment that cannot be read: terminate it and report why.
    async fn reject(&self, msg: &Message, why: &str) {
        tracing::warn!(subject = %msg.subject, "rejecting an assignment: {why}");
        let _ = msg.ack_with(AckKind::Term).await;
        if let Some((job, task, attempt)) = wire::peek_assignment(&msg.payload) {
            let event = TaskEvent {
                job,
                task,
                attempt,
                kind: EventKind::Finished(TaskOutcome {
                    state: TaskState::Failed,
                    head: None,
                    stat: DiffStat::default(),
                    turns: 0,
                    reason: Some(format!("worker {} rejected the assignment: {why}", self.name)),
                    log_tail: String::new(),
                    retry: grove_core::task::Retry::Final,
                }),
            };
            if let Err(e) = self.report(event).await {
                tracing::warn!("cannot report the rejection: {e}");
            }
        }
    }
}

/// Make grove's streams and the worker registry, idempotently (a second coordinator or a
/// restart finds them as they are).
async fn ensure_streams(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<async_nats::jetstream::kv::Store, NatsError> {
    js.get_or_create_stream(stream::Config {
        name: TASKS_STREAM.into(),
        subjects: vec!["grove.tasks.>".into()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .map_err(|e| js_err(format!("creating stream {TASKS_STREAM}"), e))?;
    js.get_or_create_stream(stream::Config {
        name: EVENTS_STREAM.into(),
        subjects: vec!["grove.events.>".into()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: Duration::from_secs(14 * 86400),
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .map_err(|e| js_err(format!("creating stream {EVENTS_STREAM}"), e))?;
    js.get_or_create_stream(stream::Config {
        name: LOGS_STREAM.into(),
        subjects: vec!["grove.logs.>".into()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: Duration::from_secs(7 * 86400),
        // The oldest output goes first when the fleet has written 4 GiB of it.
        max_bytes: 4 << 30,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .map_err(|e| js_err(format!("creating stream {LOGS_STREAM}"), e))?;
    let kv = async_nats::jetstream::kv::Config {
        bucket: WORKERS_BUCKET.into(),
        description: "live grove workers; entries lapse unless renewed".into(),
        history: 1,
        max_age: config.worker_ttl,
        storage: StorageType::File,
        ..Default::default()
    };
    match js.get_key_value(WORKERS_BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv)
            .await
            .map_err(|e| js_err(format!("creating key-value bucket {WORKERS_BUCKET}"), e)),
    }
}

/// A worker's or a client's side of [`ensure_streams`]: look the registry up, and the tasks
/// stream for a worker; a worker waits for a coordinator to make them, a client says none has.
async fn find_streams(
    js: &jetstream::Context,
    role: Role,
    url: &str,
) -> Result<async_nats::jetstream::kv::Store, NatsError> {
    let mut told = false;
    loop {
        let e = match js.get_key_value(WORKERS_BUCKET).await {
            Ok(kv) if role == Role::Client => return Ok(kv),
            Ok(kv) => match js.get_stream(TASKS_STREAM).await {
                Ok(_) => return Ok(kv),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        let missing = e.contains("not found") || e.contains("no responders");
        if role == Role::Client || !missing {
            let hint = if missing { " (no coordinator has set up grove on this server yet)" } else { "" };
            return Err(js_err(format!("looking up grove's streams at {url}"), format!("{e}{hint}")));
        }
        if !told {
            tracing::warn!("waiting for a coordinator to set up grove's streams at {url}");
            told = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// KV keys allow letters, digits, `-`, `_`, `/`, `=` and `.`.
fn registry_key(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_=.".contains(c) { c } else { '_' }).collect()
}

fn log_subject(job: &JobId, task: &str) -> String {
    format!("grove.logs.{job}.{}", pool_token(task))
}

/// Pools are subject tokens: no dots, spaces or wildcards.
fn pool_token(pool: &str) -> String {
    pool.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn task_subject(pool: &str) -> String {
    format!("grove.tasks.{}", pool_token(pool))
}

/// What JetStream publishes when a pool consumer gives up on an assignment after
/// `max_deliver` deliveries (every worker that took it died or lost its lease).
const MAX_DELIVERIES_ADVISORY: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.GROVE_TASKS.*";

/// The coordinator's side: turn each max-deliveries advisory into the attempt's outcome, a
/// transient failure, so the coordinator decides (a new attempt after its backoff, up to
/// `run.max_attempts`), and take the dead assignment out of the work queue. The advisory is
/// core NATS: one sent while no coordinator listens is missed, and the task's deadline is
/// then what ends it.
fn watch_max_deliveries(client: async_nats::Client, js: jetstream::Context, max: i64) {
    tokio::spawn(async move {
        let mut sub = match client.subscribe(MAX_DELIVERIES_ADVISORY).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot watch for assignments JetStream gave up on: {e}");
                return;
            }
        };
        while let Some(m) = sub.next().await {
            let Some(seq) = json_number(&m.payload, "stream_seq") else { continue };
            if let Err(e) = gave_up(&js, seq, max).await {
                tracing::warn!(seq, "an assignment JetStream gave up on: {e}");
            }
        }
    });
}

async fn gave_up(js: &jetstream::Context, seq: u64, max: i64) -> Result<(), String> {
    let stream = js.get_stream(TASKS_STREAM).await.map_err(|e| e.to_string())?;
    let raw = stream.get_raw_message(seq).await.map_err(|e| e.to_string())?;
    let (job, task, attempt) = wire::peek_assignment(&raw.payload).ok_or("unreadable assignment")?;
    let event = TaskEvent {
        job: job.clone(),
        task: task.clone(),
        attempt,
        kind: EventKind::Finished(TaskOutcome {
            state: TaskState::Failed,
            head: None,
            stat: DiffStat::default(),
            turns: 0,
            reason: Some(format!("no worker finished it in {max} deliveries (workers lost)")),
            log_tail: String::new(),
            retry: grove_core::task::Retry::Transient,
        }),
    };
    // The same id as a worker's report of this attempt: whichever comes first counts.
    let msg = PublishMessage::build()
        .payload(wire::encode_event(&event).into())
        .headers(headers("TaskEvent"))
        .message_id(format!("{job}/{task}/{attempt}/finished"));
    let ack = js.send_publish(format!("grove.events.{job}"), msg).await.map_err(|e| e.to_string())?;
    ack.await.map_err(|e| e.to_string())?;
    stream.delete_message(seq).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A number field of a JSON object, without a JSON parser: `"key":123`.
fn json_number(payload: &[u8], key: &str) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let at = text.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The W3C trace-context header an assignment's dispatch span travels in.
const TRACEPARENT: &str = "traceparent";

fn headers(kind: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Grove-Schema", SCHEMA_VERSION.to_string().as_str());
    h.insert("Grove-Type", kind);
    h
}

struct NatsAcker {
    msg: Message,
    lease: Duration,
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.msg.double_ack().await.map_err(|e| BusError::Transport(format!("ack: {e}")))
    }
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        self.msg
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| BusError::Transport(format!("nak: {e}")))
    }
    async fn progress(&self) -> Result<(), BusError> {
        // Confirmed by the server, so the worker knows when its lease was last renewed.
        let confirm = (self.lease / 4).max(Duration::from_millis(200));
        match tokio::time::timeout(confirm, self.msg.double_ack_with(AckKind::Progress)).await {
            Ok(r) => r.map_err(|e| BusError::Transport(format!("progress: {e}"))),
            Err(_) => Err(BusError::Transport(format!("progress: not confirmed within {confirm:?}"))),
        }
    }
    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }
    fn delivered(&self) -> u32 {
        self.msg.info().map_or(1, |i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn dispatch(&self, pool: &str, a: Assignment) -> Result<(), BusError> {
        // The pool's consumer is the coordinator's to make: workers only look it up.
        self.pool_consumer(pool).await?;
        let id = format!("{}/{}/{}", a.job, a.task, a.attempt);
        let span = crate::dispatch_span(pool, &a);
        let mut headers = headers("TaskAssignment");
        // The trace travels beside the payload, as W3C trace context does over any transport.
        if let Some(tp) = grove_telemetry::traceparent(&span) {
            headers.insert(TRACEPARENT, tp.as_str());
        }
        let msg = PublishMessage::build()
            .payload(wire::encode_assignment(&a).into())
            .headers(headers)
            .message_id(id);
        async {
            let ack = self
                .js
                .send_publish(task_subject(pool), msg)
                .await
                .map_err(|e| BusError::Transport(format!("dispatching {}/{}: {e}", a.job, a.task)))?;
            ack.await.map_err(|e| BusError::Transport(format!("dispatching {}/{}: {e}", a.job, a.task)))?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn next_task(&self, pools: &[String]) -> Result<Delivery, BusError> {
        loop {
            let mut pulled = false;
            for pool in pools {
                let Some(consumer) = self.pool_consumer(pool).await? else { continue };
                pulled = true;
                let mut batch = consumer
                    .fetch()
                    .max_messages(1)
                    .expires(self.config.pull_wait)
                    .messages()
                    .await
                    .map_err(|e| BusError::Transport(format!("pulling from pool {pool}: {e}")))?;
                while let Some(msg) = batch.next().await {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::debug!("pull: {e}");
                            continue;
                        }
                    };
                    // The pool's consumer filters its subject; a message on another subject
                    // (a consumer someone re-made with a wider filter) is not this pool's.
                    if msg.subject.as_str() != task_subject(pool) {
                        let why = format!("it came on {}, not pool {pool}'s subject", msg.subject);
                        self.reject(&msg, &why).await;
                        continue;
                    }
                    match wire::decode_assignment(&msg.payload) {
                        Ok(a) => {
                            let lease = consumer.cached_info().config.ack_wait;
                            let trace = msg
                                .headers
                                .as_ref()
                                .and_then(|h| h.get(TRACEPARENT))
                                .map(|v| v.as_str().to_owned());
                            return Ok(
                                Delivery::new(pool, a, Box::new(NatsAcker { msg, lease })).with_trace(trace)
                            );
                        }
                        Err(e @ wire::WireError::NewerSchema { .. }) => {
                            // A newer coordinator's work: a newer worker of the pool takes it.
                            let delay = self.config.newer_schema_delay;
                            tracing::info!(subject = %msg.subject, "giving back an assignment: {e}; again in {delay:?}");
                            if let Err(e) = msg.ack_with(AckKind::Nak(Some(delay))).await {
                                tracing::warn!("giving back an assignment of a newer schema: {e}");
                            }
                        }
                        Err(e) => self.reject(&msg, &e.to_string()).await,
                    }
                }
            }
            if !pulled {
                // No coordinator has dispatched to these pools yet: look again in a while.
                tokio::time::sleep(self.config.pull_wait).await;
            } else if self.client.connection_state() == async_nats::connection::State::Disconnected {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    async fn report(&self, event: TaskEvent) -> Result<(), BusError> {
        let mut msg =
            PublishMessage::build().payload(wire::encode_event(&event).into()).headers(headers("TaskEvent"));
        if let EventKind::Finished(_) = event.kind {
            // A worker that reports its outcome twice (a retry after a lost PubAck) is counted once.
            msg = msg.message_id(format!("{}/{}/{}/finished", event.job, event.task, event.attempt));
        }
        let subject = format!("grove.events.{}", event.job);
        let ack = self
            .js
            .send_publish(subject, msg)
            .await
            .map_err(|e| BusError::Transport(format!("reporting: {e}")))?;
        ack.await.map_err(|e| BusError::Transport(format!("reporting: {e}")))?;
        Ok(())
    }

    async fn cancel(&self, cancel: Cancel) -> Result<(), BusError> {
        let payload = match &cancel.task {
            Some(t) => format!("{}/{t}", cancel.job),
            None => cancel.job.to_string(),
        };
        self.client
            .publish(CANCEL_SUBJECT, payload.into())
            .await
            .map_err(|e| BusError::Transport(format!("cancelling: {e}")))?;
        self.client.flush().await.map_err(|e| BusError::Transport(format!("cancelling: {e}")))
    }

    async fn cancels(&self) -> Result<tokio::sync::broadcast::Receiver<Cancel>, BusError> {
        let mut slot = self.cancels.lock().await;
        if slot.is_none() {
            *slot = Some(self.subscribe_cancels().await?);
        }
        match slot.as_ref() {
            Some(tx) => Ok(tx.subscribe()),
            None => Err(BusError::Closed),
        }
    }

    async fn announce(&self, worker: &WorkerInfo) -> Result<(), BusError> {
        self.workers
            .put(registry_key(&worker.id), wire::encode_worker(worker).into())
            .await
            .map_err(|e| BusError::Transport(format!("announcing worker {}: {e}", worker.id)))?;
        Ok(())
    }

    async fn withdraw(&self, id: &str) -> Result<(), BusError> {
        self.workers
            .purge(registry_key(id))
            .await
            .map_err(|e| BusError::Transport(format!("withdrawing worker {id}: {e}")))
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, BusError> {
        let keys = match self.workers.keys().await {
            Ok(k) => k,
            Err(e) => return Err(BusError::Transport(format!("listing workers: {e}"))),
        };
        let keys: Vec<String> = keys.filter_map(|k| async move { k.ok() }).collect().await;
        let mut out = Vec::new();
        for key in keys {
            let Some(bytes) = self
                .workers
                .get(&key)
                .await
                .map_err(|e| BusError::Transport(format!("reading worker {key}: {e}")))?
            else {
                continue;
            };
            match wire::decode_worker(&bytes) {
                Ok(w) => out.push(w),
                Err(e) => tracing::warn!("ignoring worker {key}: {e}"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn publish_log(&self, chunk: LogChunk) -> Result<(), BusError> {
        let subject = log_subject(&chunk.job, &chunk.task);
        let id = format!("{}/{}/{}/{}/{}", chunk.job, chunk.task, chunk.attempt, chunk.offset, chunk.eof);
        let msg = PublishMessage::build()
            .payload(wire::encode_log(&chunk).into())
            .headers(headers("LogChunk"))
            .message_id(id);
        let ack = self
            .js
            .send_publish(subject, msg)
            .await
            .map_err(|e| BusError::Transport(format!("sending log output: {e}")))?;
        ack.await.map_err(|e| BusError::Transport(format!("sending log output: {e}")))?;
        Ok(())
    }

    async fn read_log(&self, job: &JobId, task: &str) -> Result<Option<crate::LogStream>, BusError> {
        if self.config.role == Role::Worker {
            // Reading the logs stream takes a consumer of it, which workers do not make (nor
            // may they read other tasks' output): a worker resumes from its own log file.
            return Ok(None);
        }
        let stream = self
            .js
            .get_stream(LOGS_STREAM)
            .await
            .map_err(|e| NatsError::from_js("opening the logs stream", e))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: log_subject(job, task),
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::from_js("reading the logs stream", e))?;
        let messages =
            consumer.messages().await.map_err(|e| BusError::Transport(format!("reading logs: {e}")))?;
        let chunks = messages.filter_map(|m| async move {
            match m {
                Ok(msg) => match wire::decode_log(&msg.payload) {
                    Ok(c) => Some(Ok(c)),
                    Err(e) => {
                        tracing::warn!("skipping an unreadable log chunk: {e}");
                        None
                    }
                },
                Err(e) => Some(Err(BusError::Transport(format!("reading logs: {e}")))),
            }
        });
        Ok(Some(Box::pin(chunks)))
    }

    async fn follow(&self, jobs: &[JobId]) -> Result<(), BusError> {
        self.refollow(|set| {
            let before = set.len();
            set.extend(jobs.iter().map(|j| j.to_string()));
            set.len() != before
        })
        .await
    }

    async fn unfollow(&self, jobs: &[JobId]) -> Result<(), BusError> {
        self.refollow(|set| {
            let before = set.len();
            for j in jobs {
                set.remove(j.as_str());
            }
            set.len() != before
        })
        .await
    }

    async fn next_event(&self) -> Result<TaskEvent, BusError> {
        let mut st = self.events.lock().await;
        if let Some(prev) = st.unacked.take()
            && let Err(e) = prev.double_ack().await
        {
            // NATS away for a moment: the event comes again after the lease, and recording an
            // event twice is harmless (stale and repeated events are ignored).
            tracing::warn!("acking an event failed, it will be delivered again: {e}");
        }
        loop {
            if st.messages.is_none() {
                match self.event_messages(&mut st).await {
                    Ok(m) => st.messages = Some(m),
                    Err(e) => {
                        // Reconnecting: try again with a pause rather than give up.
                        tracing::warn!("reading events: {e}; trying again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let next = match st.messages.as_mut() {
                Some(m) => m.next().await,
                None => continue,
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!("events: {e}");
                    continue;
                }
                None => {
                    // The server went away and the pull ended: start a new one.
                    st.messages = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            match wire::decode_event(&msg.payload) {
                Ok(ev) => {
                    st.unacked = Some(msg);
                    return Ok(ev);
                }
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, "dropping an unreadable event: {e}");
                    let _ = msg.ack_with(AckKind::Term).await;
                }
            }
        }
    }
}

impl NatsBus {
    /// The coordinator's durable pull of events (made on first use, kept across reconnects).
    async fn event_messages(&self, st: &mut EventsState) -> Result<pull::Stream, BusError> {
        let consumer = match &st.consumer {
            Some(c) => c.clone(),
            None => {
                let followed = self.followed.lock().await;
                let c = self.events_consumer(&followed).await?;
                drop(followed);
                st.consumer = Some(c.clone());
                // Only coordinators read events: they also hear of assignments JetStream gave
                // up on (any of them may turn one into its job's event; the message id makes
                // it one event).
                watch_max_deliveries(self.client.clone(), self.js.clone(), self.config.max_deliver);
                c
            }
        };
        consumer.messages().await.map_err(|e| BusError::Transport(format!("reading events: {e}")))
    }

    /// Make this coordinator's events consumer, or set its filter to the jobs in `followed`
    /// (a placeholder subject no job has when there are none: an empty filter would be every
    /// subject).
    async fn events_consumer(
        &self,
        followed: &std::collections::BTreeSet<String>,
    ) -> Result<PullConsumer, BusError> {
        let Some(reader) = &self.config.reader else {
            return Err(BusError::Transport(
                "this NATS connection reads no events (it is not a coordinator's: no reader set)".into(),
            ));
        };
        let durable = format!("coordinator-{}", pool_token(&reader.id));
        let mut filters: Vec<String> = followed.iter().map(|j| format!("grove.events.{j}")).collect();
        if filters.is_empty() {
            filters.push(format!("grove.events._none_.{}", pool_token(&reader.id)));
        }
        let stream = self
            .js
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|e| NatsError::from_js("opening the events stream", e))?;
        let deliver_policy = if reader.replay { DeliverPolicy::All } else { DeliverPolicy::New };
        stream
            .create_consumer(pull::Config {
                durable_name: Some(durable.clone()),
                description: Some(format!("events of the jobs coordinator {} follows", reader.id)),
                filter_subjects: filters,
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.config.ack_wait,
                deliver_policy,
                inactive_threshold: reader.forget_after,
                ..Default::default()
            })
            .await
            .map_err(|e| js_err(format!("setting up the events consumer {durable}"), e).into())
    }

    /// Change the followed jobs with `change` and, when that changed them, the consumer's filter.
    async fn refollow(
        &self,
        change: impl FnOnce(&mut std::collections::BTreeSet<String>) -> bool,
    ) -> Result<(), BusError> {
        let mut followed = self.followed.lock().await;
        if !change(&mut followed) || self.config.reader.is_none() {
            return Ok(());
        }
        self.events_consumer(&followed).await.map(|_| ())
    }
}

impl NatsBus {
    async fn subscribe_cancels(&self) -> Result<tokio::sync::broadcast::Sender<Cancel>, BusError> {
        let mut sub = self
            .client
            .subscribe(CANCEL_SUBJECT)
            .await
            .map_err(|e| BusError::Transport(format!("subscribing to cancellations: {e}")))?;
        let (tx, _) = tokio::sync::broadcast::channel(256);
        let forward = tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let text = String::from_utf8_lossy(&msg.payload).into_owned();
                let (job, task) = match text.split_once('/') {
                    Some((j, t)) => (j.to_owned(), Some(t.to_owned())),
                    None => (text, None),
                };
                let task_ok = task.as_deref().map_or(Ok(()), grove_core::names::check_task_slug);
                match (JobId::parse(&job), task_ok) {
                    (Ok(job), Ok(())) => {
                        let _ = forward.send(Cancel { job, task });
                    }
                    (Err(e), _) | (_, Err(e)) => tracing::warn!("ignoring a malformed cancellation: {e}"),
                }
            }
        });
        Ok(tx)
    }
}

impl NatsError {
    fn from_js(what: &str, e: impl std::fmt::Display) -> BusError {
        js_err(what, e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        assert!(parse_version("2.9.10") < MIN_SERVER);
        assert!(parse_version("2.10.0") >= MIN_SERVER);
        assert!(parse_version("2.15.1") >= MIN_SERVER);
        assert!(parse_version("2.11.0-RC.1") >= MIN_SERVER);
        assert_eq!(pool_token("gpu.big"), "gpu_big");
    }
}
