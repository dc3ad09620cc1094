//! The CLI as a client of a coordinator daemon (`--coordinator URL`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use grove_coordinator::{JobRow, JobTrain, TaskAgent, TaskRow, TaskTrain};
use grove_core::spec::{JobSpec, MergeMode, Pick};
use grove_core::task::MergeState;
use grove_core::{DiffStat, JobId, TaskState};
use grove_proto::v1 as pb;
use grove_proto::v1::coordinator_client::CoordinatorClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

pub type Client = CoordinatorClient<InterceptedService<Channel, Auth>>;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// How to trust a coordinator served over TLS (an `https://` URL).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Tls {
    /// The CA certificate (PEM) that signed an https coordinator's certificate
    /// [env: GROVE_CA_FILE]
    #[arg(long, env = "GROVE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The TLS settings for `url`: none for http://; for https:// the CA the person gave (grove
/// does not read the system's roots: a coordinator's certificate comes from a private CA).
fn tls_for(url: &str, tls: &Tls) -> anyhow::Result<Option<ClientTlsConfig>> {
    if !url.starts_with("https://") {
        return Ok(None);
    }
    let Some(ca) = &tls.ca_file else {
        bail!(
            "{url} is https: give the CA certificate that signed the coordinator's certificate \
             (--ca-file FILE or GROVE_CA_FILE; for a self-signed certificate, the certificate itself)"
        );
    };
    let pem = read(ca, "the CA certificate")?;
    Ok(Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))))
}

/// What to do about a TLS failure, from the error's chain.
fn tls_hint(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut chain = String::new();
    let mut cur = Some(e);
    while let Some(c) = cur {
        chain.push_str(&c.to_string());
        cur = c.source();
    }
    if chain.contains("UnknownIssuer") || chain.contains("BadSignature") {
        " (its certificate is not signed by the CA given with --ca-file / GROVE_CA_FILE)"
    } else if chain.contains("CaUsedAsEndEntity") {
        " (its certificate is a CA certificate; rustls needs one made with basicConstraints=CA:FALSE)"
    } else if chain.contains("NotValidForName") {
        " (its certificate does not name that host or IP address)"
    } else if chain.contains("InvalidContentType") || chain.contains("CorruptMessage") {
        " (is it serving TLS? use http:// for a coordinator without --tls-cert)"
    } else {
        ""
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Connect to the coordinator at `url`, failing within seconds with its address when it is
/// not there.
pub async fn connect(url: &str, tls: &Tls) -> anyhow::Result<Client> {
    let token = std::env::var("GROVE_TOKEN").ok().filter(|t| !t.is_empty());
    if token.is_some() && url.starts_with("http://") && !is_loopback_url(url) {
        bail!(
            "{url} is not https: GROVE_TOKEN is only sent over TLS off this machine \
             (use the coordinator's https:// URL and --ca-file)"
        );
    }
    let auth = match token {
        Some(t) => Some(format!("Bearer {t}").parse().context("GROVE_TOKEN is not a valid header value")?),
        None => None,
    };
    let mut endpoint = Channel::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a coordinator URL (e.g. http://127.0.0.1:7070)"))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(config) = tls_for(url, tls)? {
        endpoint = endpoint.tls_config(config).with_context(|| format!("TLS for {url}"))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        let hint = tls_hint(&e);
        anyhow::Error::new(e).context(format!("cannot reach the coordinator at {url}{hint}"))
    })?;
    Ok(CoordinatorClient::with_interceptor(channel, Auth(auth)))
}

/// Whether `url`'s host is this machine (`localhost`, 127.0.0.0/8, ::1).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A gRPC failure as an error a person reads.
pub fn status(url: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("coordinator {url}: {}", s.message())
}

/// A job from the wire as the rows the printing code takes.
pub fn rows(j: &pb::Job) -> anyhow::Result<(JobRow, Vec<TaskRow>)> {
    let id = JobId::parse(&j.id)?;
    let stat = |s: &Option<pb::DiffStat>| {
        s.as_ref()
            .map(|s| DiffStat { files: s.files, insertions: s.insertions, deletions: s.deletions })
            .unwrap_or_default()
    };
    let tasks = j
        .tasks
        .iter()
        .map(|t| -> anyhow::Result<TaskRow> {
            Ok(TaskRow {
                handoffs: t
                    .handoffs
                    .iter()
                    .map(|h| grove_coordinator::store::HandoffRow {
                        slug: t.slug.clone(),
                        at: h.at,
                        way: h.way.clone(),
                        place: h.place.clone(),
                        attempt: h.attempt,
                    })
                    .collect(),
                job: id.clone(),
                slug: t.slug.clone(),
                ord: t.order,
                level: t.level,
                title: t.title.clone(),
                sparse: None,
                files: t.files.clone(),
                lines: t.lines,
                depends_on: t.depends_on.clone(),
                branch: t.branch.clone(),
                pool: t.pool.clone(),
                placed: t.placed.clone(),
                placed_why: t.placed_why.clone(),
                state: t.state.parse::<TaskState>().map_err(anyhow::Error::msg)?,
                merge_state: t.merge.parse::<MergeState>().map_err(anyhow::Error::msg)?,
                attempt: t.attempt,
                turns: t.turns,
                head: t.head.clone(),
                stat: stat(&t.stat),
                reason: t.reason.clone(),
                log_tail: t.check_output.clone(),
                merge_commit: t.merge_commit.clone(),
                conflict_paths: t.conflict_paths.clone(),
                train: TaskTrain {
                    base: t.task_base.clone(),
                    redos: t.redos,
                    redo: None,
                    merge_seq: t.merge_seq,
                    variant: t.variant.clone(),
                    variant_of: t.variant_of.clone(),
                    picked: t.picked,
                    finished_seq: None,
                    started_at: t.started_at,
                    finished_at: t.finished_at,
                    failures: t.failures,
                    first_dispatched_at: t.first_dispatched_at,
                    retry_at: t.retry_at,
                    parks: t.parks,
                    parked_secs: t.parked_secs,
                },
                agent: TaskAgent {
                    usage: t.usage.as_ref().map(grove_bus::wire::usage_of),
                    session: t.session.clone(),
                    question: t.question.clone(),
                    held: t.held.clone(),
                    ..TaskAgent::default()
                },
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut spec = JobSpec::default();
    // An older coordinator sends neither: the defaults.
    spec.merge.mode = j.merge_mode.parse::<MergeMode>().ok();
    spec.merge.pick = j.pick.parse::<Pick>().ok();
    spec.budget.job_usd = j.budget_job_usd;
    let job = JobRow {
        id,
        created_at: j.created_at,
        spec,
        source: j.source.clone(),
        source_dir: None,
        mirror: String::new(),
        base: j.base.clone(),
        integration_branch: j.integration_branch.clone(),
        integration_head: j.integration_head.clone(),
        state: j.state.clone(),
        warnings: j.warnings.clone(),
        ignored_files: Vec::new(),
        train: JobTrain { approved: j.merge_approved, stopped: j.merge_stopped.clone() },
        collected_at: None,
        repo: match &j.repo {
            None => None,
            Some(r) => Some(grove_coordinator::store::RepoOf {
                group: JobId::parse(&r.group)
                    .map_err(|e| anyhow::anyhow!("the coordinator sent a bad group id: {e}"))?,
                name: r.name.clone(),
                ord: r.order,
                level: r.level,
                upstream: r.upstream.clone(),
                edges: r.edges.clone(),
                pr: r.pull_request.clone(),
            }),
        },
    };
    Ok((job, tasks))
}

/// A note from the wire as the progress display's note.
pub fn note(n: &pb::JobNote) -> Option<grove_coordinator::Note> {
    use grove_coordinator::Note;
    let job = JobId::parse(&n.job).ok()?;
    let task = n.task.clone();
    let state = || n.state.parse::<TaskState>().ok();
    let stat = n.stat.as_ref().map(|s| DiffStat {
        files: s.files,
        insertions: s.insertions,
        deletions: s.deletions,
    });
    Some(match n.kind.as_str() {
        "dispatched" => Note::Dispatched { job, task, attempt: 0 },
        "state" => Note::State { job, task, state: state()?, turn: n.turn },
        "checkpoint" => {
            Note::Checkpoint { job, task, turn: n.turn.unwrap_or(0), stat: stat.unwrap_or_default() }
        }
        "finished" => Note::Finished {
            job,
            task,
            state: state()?,
            stat: stat.unwrap_or_default(),
            reason: n.reason.clone(),
        },
        "merged" => Note::Merged { job, task, commit: n.reason.clone() },
        "conflict" => Note::Conflict { job, task, paths: n.paths.clone() },
        "redo" => Note::Redo { job, task, paths: n.paths.clone() },
        "check-failed" => Note::CheckFailed { job, task, output: n.reason.clone().unwrap_or_default() },
        "published" => Note::Published { job, branches: 0, skipped: n.paths.clone() },
        "stopped" => Note::Stopped { job, reason: n.reason.clone().unwrap_or_default() },
        "ended" => Note::Ended { job, state: n.state.clone() },
        _ => return None,
    })
}

/// The coordinator stayed away longer than a follower waits for it (`--reconnect-for`): the
/// job goes on there, the follower gives up (exit code [`LOST`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "lost the coordinator at {url}: not reachable again within {waited} ({why}); the job goes on there \
     (follow it again with `grove watch JOB --coordinator {url}`)"
)]
pub struct Lost {
    pub url: String,
    pub waited: String,
    pub why: String,
}

/// The exit code of a follower that gave up on its coordinator.
pub const LOST: u8 = 3;

/// How a command that follows a job on a coordinator rides out the coordinator going away (a
/// restart, a network blip): it connects again, with a growing pause, and resumes where it
/// was, for up to `--reconnect-for`.
#[derive(clap::Args, Debug, Clone)]
pub struct Follow {
    /// How long to keep trying to reach the coordinator again when it goes away while
    /// following, then exit 3 (the job goes on there) [env: GROVE_RECONNECT_FOR]
    #[arg(long, env = "GROVE_RECONNECT_FOR", value_name = "DURATION", value_parser = grove_core::spec::parse_duration, default_value = "10m")]
    pub reconnect_for: Duration,
}

impl Default for Follow {
    fn default() -> Self {
        Follow { reconnect_for: Duration::from_secs(600) }
    }
}

/// Whether a failed call means the coordinator went away (so: connect again), not a refusal.
pub fn transient(s: &tonic::Status) -> bool {
    use tonic::Code;
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted => true,
        Code::Internal => {
            let m = s.message();
            m.contains("h2 protocol error") || m.contains("connection") || m.contains("transport")
        }
        _ => false,
    }
}

/// A connection to a coordinator that can be made again.
pub struct Link {
    pub url: String,
    tls: Tls,
    give_up: Duration,
    pub client: Client,
    /// When the coordinator went away (`None`: it is there).
    lost_at: Option<std::time::Instant>,
    pause: Duration,
}

impl Link {
    /// Connect now (an unreachable coordinator is an error at once, as for any command).
    pub async fn open(url: &str, tls: &Tls, follow: &Follow) -> anyhow::Result<Link> {
        let client = connect(url, tls).await?;
        Ok(Link {
            url: url.to_owned(),
            tls: tls.clone(),
            give_up: follow.reconnect_for,
            client,
            lost_at: None,
            pause: Duration::from_millis(200),
        })
    }

    /// The coordinator answered: a later loss counts its time afresh.
    pub fn ok(&mut self) {
        self.lost_at = None;
        self.pause = Duration::from_millis(200);
    }

    /// The coordinator went away (`why`): wait a little (longer each time) and connect again,
    /// until it answers or `--reconnect-for` has passed since it went away ([`Lost`]).
    pub async fn again(&mut self, why: &str) -> anyhow::Result<()> {
        let lost_at = *self.lost_at.get_or_insert_with(std::time::Instant::now);
        loop {
            if lost_at.elapsed() >= self.give_up {
                return Err(Lost {
                    url: self.url.clone(),
                    waited: humantime::format_duration(self.give_up).to_string(),
                    why: why.to_owned(),
                }
                .into());
            }
            tracing::info!(
                "the coordinator at {} went away ({why}); connecting again in {:?}",
                self.url,
                self.pause
            );
            tokio::time::sleep(self.pause.min(self.give_up.saturating_sub(lost_at.elapsed()))).await;
            self.pause = (self.pause * 2).min(Duration::from_secs(5));
            match connect(&self.url, &self.tls).await {
                Ok(c) => {
                    self.client = c;
                    return Ok(());
                }
                Err(e) => tracing::debug!("{e:#}"),
            }
        }
    }

    /// `call` with the coordinator, connecting again while it is away.
    pub async fn call<T, F>(&mut self, mut call: impl FnMut(Client) -> F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        loop {
            match call(self.client.clone()).await {
                Ok(v) => {
                    self.ok();
                    return Ok(v);
                }
                Err(s) if transient(&s) => self.again(s.message()).await?,
                Err(s) => return Err(status(&self.url, s)),
            }
        }
    }
}

/// A job with all its tasks, asked for page by page when it is too large for one reply.
pub async fn fetch_job(client: &mut Client, id: &str) -> Result<pb::Job, tonic::Status> {
    let mut job =
        client.get_job(pb::GetJobRequest { id: id.to_owned(), ..Default::default() }).await?.into_inner();
    while job.more_tasks {
        let Some(last) = job.tasks.last().map(|t| t.order) else { break };
        let page = client
            .get_job(pb::GetJobRequest { id: job.id.clone(), tasks_after: Some(last), ..Default::default() })
            .await?
            .into_inner();
        job.more_tasks = page.more_tasks;
        job.state = page.state;
        job.merge_stopped = page.merge_stopped;
        if page.tasks.is_empty() {
            break;
        }
        job.tasks.extend(page.tasks);
    }
    Ok(job)
}

/// Every job (without tasks), page by page.
pub async fn list_jobs(client: &mut Client) -> Result<Vec<pb::Job>, tonic::Status> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = client.list_jobs(pb::ListJobsRequest { page_size: 0, after }).await?.into_inner();
        all.extend(page.jobs);
        match page.next {
            Some(next) if !next.is_empty() => after = next,
            _ => return Ok(all),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn loopback_urls_are_told_apart() {
        for yes in ["http://127.0.0.1:7070", "http://localhost:1", "http://[::1]:7070/", "http://127.1.2.3"] {
            assert!(is_loopback_url(yes), "{yes}");
        }
        for no in [
            "http://10.0.0.1:7070",
            "http://coordinator:7070",
            "http://127.0.0.1.evil.com:1",
            "http://[::2]:1",
        ] {
            assert!(!is_loopback_url(no), "{no}");
        }
    }
}
