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
}

/// --coordinator: stream the log from the daemon.
async fn remote_logs(url: &str, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    use tokio_stream::StreamExt;
    let mut client = crate::remote::connect(url, &args.tls).await?;
    let mut chunks = client
        .stream_log(grove_proto::v1::LogRequest { task: args.task.clone(), follow: args.follow })
        .await
        .map_err(|s| crate::remote::status(url, s))?
        .into_inner();
    let mut out = std::io::stdout();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|s| crate::remote::status(url, s))?;
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
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
