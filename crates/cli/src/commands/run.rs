use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use grove_core::TaskState;
use grove_core::task::MergeState;
use tokio_util::sync::CancellationToken;

use crate::embedded::Embedded;
use crate::specargs::SpecArgs;

/// Plan a change, run an agent on every task in its own worktree, merge the results in order.
///
/// Runs embedded: the coordinator and the workers in this process, state under the grove
/// home. Exits 0 when every task merged (or had nothing to change), 1 when some did not,
/// 130 when cancelled.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove run examples/job.toml
  grove run --split cargo --grep FileId --agent replace --pattern '\\bFileId\\b' --replace SourceFileId
  grove run --split dirs --depth 2 --check 'cargo check' --agent command -- claude -p {prompt}")]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print the finished job as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn cmd_run(home: PathBuf, args: RunArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let loaded = args.spec.load(&cwd)?;
    let concurrency = loaded.spec.concurrency() as usize;
    let file = loaded.file.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
    // Everything that can refuse the job runs before grove opens or creates its state.
    let git = grove_git::Git::detect()?;
    let layout = grove_core::layout::Layout::new(&home);
    let prepared = tokio::task::block_in_place(|| {
        grove_coordinator::submit::prepare(&git, &layout, loaded.spec.clone(), file, &loaded.dir)
    })?;
    let emb = Embedded::open(home)?;
    let coord = emb.coordinator.clone();
    let (job, tasks) = tokio::task::block_in_place(|| coord.submit(prepared))?;
    for w in &job.warnings {
        eprintln!("warning: {w}");
    }
    let files: usize = tasks.iter().map(|t| t.files.len()).sum();
    eprintln!(
        "job {}: {} task(s), {files} file(s), base {}, integration branch {}",
        job.id,
        tasks.len(),
        &job.base[..job.base.len().min(12)],
        job.integration_branch
    );

    let cancel = CancellationToken::new();
    crate::signal::install(cancel.clone());
    let mut workers = emb.start_workers(concurrency, &cancel);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let progress = tokio::spawn(crate::progress::show(rx, tasks.len()));
    let result = coord.drive(&job.id, cancel.clone(), tx).await;
    let cancelled = cancel.is_cancelled();
    cancel.cancel();
    while workers.join_next().await.is_some() {}
    let _ = progress.await;
    let row = result?;

    let tasks = coord.store.tasks(&row.id)?;
    super::status::print_job(&row, &tasks, args.json)?;
    if !args.json {
        println!();
        println!("  grove status {}        # again, later", row.id);
        println!("  grove diff {}/TASK     # review one task's branch", row.id);
        println!("  grove logs {}/TASK     # what its agent printed", row.id);
        if let Some(dir) = &row.source_dir {
            println!("  git -C {dir} log --oneline {}", row.integration_branch);
        }
    }
    let all_in = tasks.iter().all(|t| {
        t.state == TaskState::Succeeded && matches!(t.merge_state, MergeState::Merged | MergeState::Empty)
    });
    Ok(if cancelled {
        ExitCode::from(130)
    } else if all_in {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
