use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use grove_coordinator::{Note, Store};
use grove_core::layout::Layout;

use crate::output::shown_state;

/// Follow a job as it happens: one line per change (a task's state, a checkpoint, a merge),
/// until the job ends. From another terminal than the `grove run` that runs it, or against a
/// coordinator daemon: then it starts with where each task stands, and a daemon that goes
/// away is waited for (--reconnect-for, then exit 3) and the watch resumes after the last
/// note seen (`seq` in --json: the note's place in the job's journal).
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove watch                      # the latest job
  grove watch rename-1a2b --coordinator http://coord:7070
  grove watch --json | jq -c 'select(.event == \"merged\")'")]
pub struct WatchArgs {
    /// A job id (default: the latest job)
    pub job: Option<String>,
    /// One JSON object per line on stdout
    #[arg(long)]
    pub json: bool,
    /// Ask a coordinator daemon instead of the local state [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
    #[command(flatten)]
    pub follow: crate::remote::Follow,
}

/// One line of the watch.
struct Line<'a> {
    task: &'a str,
    event: &'a str,
    detail: String,
    /// The note's place in the coordinator's journal of the job (a daemon's notes).
    seq: Option<u64>,
}

fn emit(out: &mut impl Write, json: bool, l: &Line<'_>) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::json!({"task": l.task, "event": l.event, "detail": l.detail});
        if let Some(seq) = l.seq {
            v["seq"] = seq.into();
        }
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{:<24} {:<16} {}", l.task, l.event, l.detail)?;
    }
    out.flush()?;
    Ok(())
}

pub async fn cmd_watch(home: PathBuf, args: WatchArgs) -> anyhow::Result<ExitCode> {
    match &args.coordinator {
        Some(url) => remote(url, &args).await,
        None => local(home, &args).await,
    }
}

/// A daemon's job: where each task stands, then every note as it comes. A coordinator that
/// goes away is waited for (`--reconnect-for`) and the watch resumes after the last note seen.
async fn remote(url: &str, args: &WatchArgs) -> anyhow::Result<ExitCode> {
    use tokio_stream::StreamExt;
    let mut link = crate::remote::Link::open(url, &args.tls, &args.follow).await?;
    let req =
        grove_proto::v1::GetJobRequest { id: args.job.clone().unwrap_or_default(), ..Default::default() };
    let job = link.client.get_job(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
    let mut out = std::io::stdout().lock();
    if !args.json {
        eprintln!("watching {} on {url} ({})", job.id, job.state);
    }
    let mut cursor: Option<u64> = None;
    loop {
        let req = grove_proto::v1::GetJobRequest {
            id: job.id.clone(),
            snapshot: cursor.is_none(),
            after: cursor,
            ..Default::default()
        };
        let why = match link.client.watch_job(req).await {
            Err(s) if crate::remote::transient(&s) => s.message().to_owned(),
            Err(s) => return Err(crate::remote::status(url, s)),
            Ok(notes) => {
                link.ok();
                let mut notes = notes.into_inner();
                // A snapshot, even of an ended job, is a place to resume from.
                cursor.get_or_insert(0);
                loop {
                    match notes.next().await {
                        Some(Ok(n)) => {
                            if n.seq > 0 {
                                cursor = Some(n.seq);
                            }
                            if let Some(note) = crate::remote::note(&n) {
                                print_note(&mut out, args.json, &note, Some(n.seq))?;
                            }
                        }
                        Some(Err(s)) if crate::remote::transient(&s) => break s.message().to_owned(),
                        Some(Err(s)) => return Err(crate::remote::status(url, s)),
                        None => break String::new(),
                    }
                }
            }
        };
        // The stream ends when the job is over, or when the coordinator stops.
        let req = grove_proto::v1::GetJobRequest { id: job.id.clone(), ..Default::default() };
        match link.client.get_job(req).await {
            Ok(j) if j.get_ref().state != "running" => return Ok(ExitCode::SUCCESS),
            Ok(_) => {}
            Err(s) if !crate::remote::transient(&s) => return Err(crate::remote::status(url, s)),
            Err(_) => {}
        }
        link.again(if why.is_empty() { "the watch ended" } else { &why }).await?;
    }
}

fn print_note(out: &mut impl Write, json: bool, n: &Note, seq: Option<u64>) -> anyhow::Result<()> {
    let (task, event, detail) = match n {
        Note::Dispatched { task, attempt, .. } => (task.as_str(), "dispatched", format!("attempt {attempt}")),
        Note::State { task, state, turn, .. } => {
            (task.as_str(), state.as_str(), turn.map(|t| format!("turn {t}")).unwrap_or_default())
        }
        Note::Checkpoint { task, turn, stat, .. } => {
            (task.as_str(), "checkpoint", format!("turn {turn}: {stat}"))
        }
        Note::Finished { task, state, stat, reason, .. } => {
            (task.as_str(), state.as_str(), reason.clone().unwrap_or_else(|| stat.to_string()))
        }
        Note::Merged { task, commit, .. } => (
            task.as_str(),
            "merged",
            commit
                .as_deref()
                .map_or_else(|| "nothing to merge".to_owned(), |c| c[..c.len().min(12)].to_owned()),
        ),
        Note::Conflict { task, paths, .. } => (task.as_str(), "conflict", paths.join(", ")),
        Note::Stopped { reason, .. } => ("-", "stopped", reason.clone()),
        Note::Ended { state, .. } => ("-", "ended", state.clone()),
        Note::Published { branches, skipped, .. } => {
            let s = if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({} checked out, left)", skipped.len())
            };
            ("-", "published", format!("{branches} branch(es){s}"))
        }
        other => ("-", "note", format!("{other:?}")),
    };
    emit(out, json, &Line { task, event, detail, seq })
}

/// The embedded state: read it again every half second and print what changed.
async fn local(home: PathBuf, args: &WatchArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&Layout::new(home).db())?;
    let job = store.job_or_latest(args.job.as_deref())?;
    let mut out = std::io::stdout().lock();
    if !args.json {
        eprintln!("watching {} ({})", job.id, job.state);
    }
    let mut seen: HashMap<String, (String, u32, u32, String)> = HashMap::new();
    loop {
        let now = store.job(job.id.as_str())?;
        for t in store.tasks(&job.id)? {
            let shown = shown_state(t.state, t.merge_state).to_owned();
            let key = (shown.clone(), t.attempt, t.turns, t.stat.to_string());
            if seen.get(&t.slug) == Some(&key) {
                continue;
            }
            let detail = match (&t.reason, t.turns) {
                (Some(r), _) if t.state.is_terminal() => r.clone(),
                (_, 0) => format!("attempt {}", t.attempt),
                (_, turns) => format!("attempt {}, turn {turns}, {}", t.attempt, t.stat),
            };
            emit(&mut out, args.json, &Line { task: &t.slug, event: &shown, detail, seq: None })?;
            seen.insert(t.slug.clone(), key);
        }
        if now.state != "running" {
            if !args.json {
                eprintln!("{} is {}", job.id, now.state);
            }
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
