use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use grove_coordinator::Store;
use grove_core::layout::Layout;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Print what a task's agent and checks printed (its log, capped per the job's run.log_cap).
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove logs core                  # the task `core` (of the only job that has one)
  grove logs rename-1a2b/core -f   # follow it while it runs
  grove logs core -f --coordinator http://coord:7070   # from a worker anywhere")]
pub struct LogsArgs {
    /// JOB/TASK, or TASK when only one job has a task of that name
    pub task: String,
    /// Keep printing as the log grows, until the task ends
    #[arg(long, short)]
    pub follow: bool,
    /// Ask a coordinator daemon, which has the output of workers anywhere [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
    #[command(flatten)]
    pub follow_flags: crate::remote::Follow,
}

/// --coordinator: stream the log from the daemon. With -f, a coordinator that goes away is
/// waited for (`--reconnect-for`) and the log resumes after the last byte received.
async fn remote_logs(url: &str, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    use tokio_stream::StreamExt;
    let mut link = crate::remote::Link::open(url, &args.tls, &args.follow_flags).await?;
    let mut out = std::io::stdout();
    // Where the output read so far ends: the attempt and the offset after its last byte.
    let (mut attempt, mut offset, mut job) = (None::<u32>, 0u64, None::<String>);
    loop {
        let req = grove_proto::v1::LogRequest {
            task: args.task.clone(),
            follow: args.follow,
            from_attempt: attempt,
            from_offset: offset,
        };
        let why = match link.client.stream_log(req).await {
            Err(s) if args.follow && crate::remote::transient(&s) => s.message().to_owned(),
            Err(s) => return Err(crate::remote::status(url, s)),
            Ok(chunks) => {
                link.ok();
                let mut chunks = chunks.into_inner();
                loop {
                    match chunks.next().await {
                        Some(Ok(chunk)) => {
                            out.write_all(&chunk.data)?;
                            out.flush()?;
                            attempt = Some(chunk.attempt);
                            offset = chunk.offset + chunk.data.len() as u64;
                            job.get_or_insert(chunk.job);
                        }
                        Some(Err(s)) if args.follow && crate::remote::transient(&s) => {
                            break s.message().to_owned();
                        }
                        Some(Err(s)) => return Err(crate::remote::status(url, s)),
                        None => break String::new(),
                    }
                }
            }
        };
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        // The stream ends when the task has ended, or when the coordinator stops: ask which.
        if why.is_empty() {
            let id = job.clone().or_else(|| args.task.split_once('/').map(|(j, _)| j.to_owned()));
            let Some(id) = id else { return Ok(ExitCode::SUCCESS) };
            let slug = args.task.rsplit('/').next().unwrap_or(&args.task).to_owned();
            match crate::remote::fetch_job(&mut link.client, &id).await {
                Ok(j) => {
                    let over = j
                        .tasks
                        .iter()
                        .find(|t| t.slug == slug)
                        .is_none_or(|t| super::merge::is_over(&t.state));
                    if over {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                Err(s) if !crate::remote::transient(&s) => return Err(crate::remote::status(url, s)),
                Err(_) => {}
            }
        }
        link.again(if why.is_empty() { "the log stream ended" } else { &why }).await?;
    }
}

pub async fn cmd_logs(home: PathBuf, args: LogsArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.coordinator {
        return remote_logs(url, &args).await;
    }
    let layout = Layout::new(home);
    let store = Store::open(&layout.db())?;
    let task = store.find_task(&args.task)?;
    let path = layout.log(&task.job, &task.slug);
    let mut out = std::io::stdout();
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.follow => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("{}/{} has no log yet (state: {})", task.job, task.slug, task.state);
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut pos = 0u64;
    let mut buf = Vec::new();
    loop {
        if file.is_none() {
            file = tokio::fs::File::open(&path).await.ok();
        }
        if let Some(f) = file.as_mut() {
            f.seek(std::io::SeekFrom::Start(pos)).await?;
            buf.clear();
            let n = f.read_to_end(&mut buf).await.with_context(|| format!("reading {}", path.display()))?;
            pos += n as u64;
            out.write_all(&buf)?;
            out.flush()?;
        }
        if !args.follow {
            break;
        }
        let now = store.find_task(&format!("{}/{}", task.job, task.slug))?;
        if now.state.is_terminal() && now.attempt >= task.attempt {
            // One last read for what was written just before the end.
            if let Some(f) = file.as_mut() {
                f.seek(std::io::SeekFrom::Start(pos)).await?;
                buf.clear();
                f.read_to_end(&mut buf).await?;
                out.write_all(&buf)?;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(ExitCode::SUCCESS)
}
