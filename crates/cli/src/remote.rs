//! The CLI as a client of a coordinator daemon (`--coordinator URL`).

use std::time::Duration;

use anyhow::Context;
use grove_coordinator::{JobRow, TaskRow};
use grove_core::spec::JobSpec;
use grove_core::task::MergeState;
use grove_core::{DiffStat, JobId, TaskState};
use grove_proto::v1 as pb;
use grove_proto::v1::coordinator_client::CoordinatorClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

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

/// Connect to the coordinator at `url`, failing within seconds with its address when it is
/// not there.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let token = std::env::var("GROVE_TOKEN").ok().filter(|t| !t.is_empty());
    let auth = match token {
        Some(t) => Some(format!("Bearer {t}").parse().context("GROVE_TOKEN is not a valid header value")?),
        None => None,
    };
    let endpoint = Channel::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a coordinator URL (e.g. http://127.0.0.1:7070)"))?
        .connect_timeout(Duration::from_secs(5));
    let channel =
        endpoint.connect().await.with_context(|| format!("cannot reach the coordinator at {url}"))?;
    Ok(CoordinatorClient::with_interceptor(channel, Auth(auth)))
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
                log_tail: None,
                merge_commit: t.merge_commit.clone(),
                conflict_paths: t.conflict_paths.clone(),
                train: grove_coordinator::TaskTrain {
                    failures: t.failures,
                    first_dispatched_at: t.first_dispatched_at,
                    retry_at: t.retry_at,
                    ..Default::default()
                },
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let job = JobRow {
        id,
        created_at: j.created_at,
        spec: JobSpec::default(),
        source: j.source.clone(),
        source_dir: None,
        mirror: String::new(),
        base: j.base.clone(),
        integration_branch: j.integration_branch.clone(),
        integration_head: j.integration_head.clone(),
        state: j.state.clone(),
        warnings: j.warnings.clone(),
        ignored_files: Vec::new(),
        train: Default::default(),
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
        "published" => Note::Published { job, branches: 0, skipped: n.paths.clone() },
        _ => return None,
    })
}
