use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::Context;
use clap::Args;
use grove_coordinator::Store;
use grove_coordinator::review::{DiffFile, DiffTarget};
use grove_core::layout::Layout;
use grove_git::Git;

/// Review one task's branch against its base: the stat, then the patch, through your pager.
///
/// The pager is git's: GIT_PAGER, then core.pager, then PAGER, then `less`; none when the
/// output is not a terminal. A redone task is compared with the integration head it started
/// from. With --coordinator the daemon makes the diff in its mirror and sends it here.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove diff core
  grove diff rename-1a2b/core --stat
  grove diff core --json | jq '.files[].path'
  grove diff rename-1a2b/core --coordinator http://127.0.0.1:7070")]
pub struct DiffArgs {
    /// JOB/TASK, or TASK when only one job has a task of that name
    pub task: String,
    /// Only the stat
    #[arg(long)]
    pub stat: bool,
    /// The changed files with lines added and removed, as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Review a task of this coordinator daemon [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
}

pub async fn cmd_diff(home: PathBuf, args: DiffArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.coordinator {
        return remote(url, &args).await;
    }
    let layout = Layout::new(home);
    let store = Store::open(&layout.db())?;
    let git = Git::detect()?;
    let target = DiffTarget::find(&store, &git, &args.task)?;
    if args.json {
        let files = tokio::task::block_in_place(|| target.files(&git))?;
        print_json(target.job.id.as_str(), &target.task.slug, &target.base, &target.head, &files)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut cmd = git.command(Path::new(&target.job.mirror));
    cmd.arg("--paginate");
    let color = if crate::output::no_color() { Some(false) } else { None };
    cmd.args(target.args(args.stat, color)).stdin(Stdio::inherit());
    let status = cmd.status().context("running git diff")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_json(job: &str, task: &str, base: &str, head: &str, files: &[DiffFile]) -> anyhow::Result<()> {
    let files: Vec<_> = files
        .iter()
        .map(|f| serde_json::json!({"path": f.path, "insertions": f.insertions, "deletions": f.deletions}))
        .collect();
    let v = serde_json::json!({"job": job, "task": task, "base": base, "head": head, "files": files});
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// --coordinator: the daemon makes the stat and the patch in its mirror; they are shown here
/// through the pager git would pick.
async fn remote(url: &str, args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let mut client = crate::remote::connect(url, &args.tls).await?;
    let tty = std::io::stdout().is_terminal();
    let req = grove_proto::v1::DiffRequest {
        task: args.task.clone(),
        stat_only: args.stat,
        color: tty && !crate::output::no_color(),
    };
    // In pieces: a diff of any size fits.
    use tokio_stream::StreamExt;
    let mut pieces = client.stream_diff(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
    let mut r = grove_proto::v1::DiffChunk::default();
    let mut text = Vec::new();
    while let Some(piece) = pieces.next().await {
        let piece = piece.map_err(|s| crate::remote::status(url, s))?;
        if r.job.is_empty() {
            (r.job, r.task, r.base, r.head) = (piece.job, piece.task, piece.base, piece.head);
        }
        r.files.extend(piece.files);
        text.extend(piece.text);
    }
    if args.json {
        let files: Vec<DiffFile> = r
            .files
            .into_iter()
            .map(|f| DiffFile { path: f.path, insertions: f.insertions, deletions: f.deletions })
            .collect();
        print_json(&r.job, &r.task, &r.base, &r.head, &files)?;
        return Ok(ExitCode::SUCCESS);
    }
    page(&text, tty)?;
    Ok(ExitCode::SUCCESS)
}

/// Show `text` through git's pager (GIT_PAGER, core.pager, PAGER, less) on a terminal, with
/// the environment git gives it; straight to stdout otherwise.
fn page(text: &[u8], tty: bool) -> anyhow::Result<()> {
    let pager = if tty {
        let git = Git::detect()?;
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        git.run(&here, ["var", "GIT_PAGER"]).map(|o| o.stdout.trim().to_owned()).unwrap_or_default()
    } else {
        String::new()
    };
    if pager.is_empty() || pager == "cat" {
        let mut out = std::io::stdout().lock();
        out.write_all(text)?;
        out.flush()?;
        return Ok(());
    }
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", &pager]).stdin(Stdio::piped());
    // As git does for its pager.
    if std::env::var_os("LESS").is_none() {
        cmd.env("LESS", "FRX");
    }
    if std::env::var_os("LV").is_none() {
        cmd.env("LV", "-c");
    }
    let mut child = cmd.spawn().with_context(|| format!("starting the pager {pager:?}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The person may quit the pager before reading everything.
        if let Err(e) = stdin.write_all(text)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e).context("writing to the pager");
        }
    }
    child.wait().with_context(|| format!("waiting for the pager {pager:?}"))?;
    Ok(())
}
