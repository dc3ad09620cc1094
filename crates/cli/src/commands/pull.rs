use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use grove_core::spec::AgentKind;
use grove_git::Git;
use grove_proto::v1 as pb;
use grove_worker::adapter::session;

use super::handoff::{PULL_MARKER, dirs, place};

/// Bring a task here, finished or running: a new worktree of this repository (never the one
/// checked out) on the task's branch, with the ignored files it carried and its agent session
/// placed where that CLI's own resume finds it. `grove handoff` run in that worktree sends it
/// back as the task's next attempt.
///
/// A running task is pulled at its last checkpoint; --stop ends its attempt first. The branch
/// `grove/<job>/<task>` is made in this repository (or moved forward, never back); an existing
/// folder is never written into.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove pull handoff-3f2a/all                     # into ../<repo>-all
  grove pull handoff --stop --into ~/work/fix     # stop the remote attempt, then pull
  cd ../myrepo-handoff && claude --resume <id>    # go on by hand
  grove handoff --prompt 'now the docs'           # and send it back")]
pub struct PullArgs {
    /// JOB/TASK, or a task name only one job has
    pub task: String,
    /// The new worktree's folder [default: ../<repository>-<task> beside this repository]
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
    /// Stop the task's running attempt first (it ends at its last checkpoint)
    #[arg(long)]
    pub stop: bool,
    /// Print what was pulled as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// The coordinator daemon [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: String,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
}

/// What the stream brought.
#[derive(Default)]
struct Received {
    header: pb::HandoffHeader,
    files: Vec<pb::HandoffFile>,
    bundle: Vec<u8>,
}

async fn receive(stream: &mut tonic::Streaming<pb::HandoffPiece>) -> anyhow::Result<Received> {
    use pb::handoff_piece::Piece;
    use sha2::Digest;
    let mut got = Received::default();
    let (mut hasher, mut sum, mut open) = (sha2::Sha256::new(), None, false);
    while let Some(piece) = stream.message().await.context("receiving the task")? {
        match piece.piece {
            Some(Piece::Header(h)) => got.header = h,
            Some(Piece::File(f)) => {
                hasher.update(f.name.as_bytes());
                hasher.update(&f.data);
                let more = f.more;
                match got.files.last_mut() {
                    Some(last) if open && last.name == f.name && last.kind == f.kind => {
                        last.data.extend_from_slice(&f.data)
                    }
                    _ => got.files.push(f),
                }
                open = more;
            }
            Some(Piece::Bundle(b)) => {
                hasher.update(&b);
                got.bundle.extend_from_slice(&b);
            }
            Some(Piece::Sha256(s)) => sum = Some(s),
            None => {}
        }
    }
    let want = format!("{:x}", hasher.finalize());
    if sum.as_deref() != Some(want.as_str()) {
        bail!(
            "the task arrived damaged (checksum {want}, the coordinator sent {sum:?}); nothing was made, try again"
        );
    }
    Ok(got)
}

/// The command that resumes `id` of `kind` in a terminal.
fn resume_command(kind: AgentKind, id: &str) -> Option<String> {
    Some(match kind {
        AgentKind::Claude => format!("claude --resume {id}"),
        AgentKind::Codex => format!("codex resume {id}"),
        AgentKind::Gemini => format!("gemini --resume {id}"),
        AgentKind::Copilot => format!("copilot --resume {id}"),
        AgentKind::Opencode => format!("opencode --session {id}"),
        _ => return None,
    })
}

fn is_ancestor(git: &Git, repo: &Path, a: &str, b: &str) -> anyhow::Result<bool> {
    Ok(git.run_allowing(repo, ["merge-base", "--is-ancestor", a, b], &[1])?.code == 0)
}

pub async fn cmd_pull(home: PathBuf, args: PullArgs) -> anyhow::Result<ExitCode> {
    let git = Git::detect()?;
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let top = git.run(&cwd, ["rev-parse", "--show-toplevel"]).with_context(|| {
        format!("{} is not in a git repository: run grove pull in the task's repository", cwd.display())
    })?;
    let top = PathBuf::from(top.stdout.trim());
    let name = top.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "repo".into());
    let slug = args.task.rsplit('/').next().unwrap_or(&args.task).to_owned();
    let into = match &args.into {
        Some(d) => std::path::absolute(d).with_context(|| format!("resolving {}", d.display()))?,
        None => top.parent().unwrap_or(&top).join(format!("{name}-{slug}")),
    };
    if into.exists() {
        bail!(
            "{} exists: grove pull makes a new worktree and never writes into a folder; name another with --into",
            into.display()
        );
    }
    let url = &args.coordinator;
    let mut client = crate::remote::connect(url, &args.tls).await?;
    if args.stop {
        eprintln!("{}: stopping its attempt at its last checkpoint...", args.task);
    }
    let req = pb::PullRequest { task: args.task.clone(), stop: args.stop, into: place(&into) };
    let mut stream = client.pull_task(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
    let got = receive(&mut stream).await?;
    let h = &got.header;
    grove_core::names::check_commit_id(&h.head, "head")
        .map_err(|e| anyhow::anyhow!("the coordinator sent {e}"))?;
    if !h.branch.starts_with("grove/") || grove_core::names::check_branch(&h.branch, "branch").is_err() {
        bail!("the coordinator sent a branch {:?} that is not grove's", h.branch);
    }
    let full = format!("refs/heads/{}", h.branch);
    // The branch here: made, or moved forward; never back, never one checked out.
    let existing = git.run_allowing(&top, ["rev-parse", "--verify", "--quiet", &full], &[1])?;
    let existing = (existing.code == 0).then(|| existing.stdout.trim().to_owned());
    if existing.is_some() {
        let list = git.run(&top, ["worktree", "list", "--porcelain"])?.stdout;
        let mut at = "";
        for line in list.lines() {
            if let Some(p) = line.strip_prefix("worktree ") {
                at = p;
            }
            if line == format!("branch {full}") {
                bail!("{} is checked out in {at}: work there, or remove that worktree first", h.branch);
            }
        }
    }
    let scratch = home.join("tmp");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        if !got.bundle.is_empty() {
            let bundle = tempfile::Builder::new().prefix("pull-").suffix(".bundle").tempfile_in(&scratch)?;
            std::fs::write(bundle.path(), &got.bundle).context("writing the bundle")?;
            let tmp_ref = format!("refs/grove/pull/{}", h.task);
            git.run(
                &top,
                [
                    "fetch".as_ref(),
                    "--quiet".as_ref(),
                    "--no-write-fetch-head".as_ref(),
                    bundle.path().as_os_str(),
                    format!("+{full}:{tmp_ref}").as_ref(),
                ],
            )
            .context("fetching the task's branch")?;
            git.run(&top, ["update-ref", "-d", &tmp_ref])?;
        } else if git
            .run_allowing(&top, ["cat-file", "-e", &format!("{}^{{commit}}", h.head)], &[1, 128])?
            .code
            != 0
        {
            bail!(
                "this repository lacks the task's base {}: pull it in the repository it was handed off from",
                h.head
            );
        }
        match &existing {
            Some(old) if old == &h.head => {}
            Some(old) if is_ancestor(&git, &top, old, &h.head)? => {
                git.run(&top, ["update-ref", &full, &h.head, old])?;
            }
            Some(old) => bail!(
                "{} here ({old}) has commits the task's branch ({}) lacks: nothing was changed; merge them by hand or delete the branch",
                h.branch,
                h.head
            ),
            None => {
                git.run(&top, ["update-ref", &full, &h.head, ""])?;
            }
        }
        git.run(
            &top,
            ["worktree".as_ref(), "add".as_ref(), "--quiet".as_ref(), into.as_os_str(), h.branch.as_ref()],
        )
        .context("making the worktree")?;
        Ok(())
    })?;
    // The ignored files, never through a symlink, never over a file.
    let carried: Vec<grove_core::task::Carried> = got
        .files
        .iter()
        .filter(|f| f.kind == "ignored")
        .map(|f| grove_core::task::Carried { path: f.name.clone(), data: f.data.clone(), mode: f.mode })
        .collect();
    let copied = grove_worker::workspace::copy_ignored(None, &into, &[], &carried, None)
        .map_err(|e| anyhow::anyhow!(e))?;
    for (f, why) in &copied.refused {
        eprintln!("warning: {f} not placed: {why}");
    }
    // The session, where its CLI looks from the new folder.
    let kind = h.session.as_ref().and_then(|s| s.agent.parse::<AgentKind>().ok());
    let mut placed = 0;
    if let (Some(kind), Some(_)) = (kind, &h.session) {
        let d = dirs();
        for f in got.files.iter().filter(|f| f.kind == "session") {
            let Some(to) = session::restore_path(kind, &f.name, &into, &scratch, &d) else { continue };
            if to.exists() {
                continue;
            }
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&to, &f.data).with_context(|| format!("writing {}", to.display()))?;
            placed += 1;
        }
    }
    let wt_git_dir = git.run(&into, ["rev-parse", "--absolute-git-dir"])?.stdout.trim().to_owned();
    let marker = serde_json::json!({
        "coordinator": url,
        "task": format!("{}/{}", h.job, h.task),
        "branch": h.branch,
        "agent": kind.map(|k| k.as_str()),
        "session": h.session.as_ref().map(|s| s.id.clone()),
    });
    std::fs::write(Path::new(&wt_git_dir).join(PULL_MARKER), format!("{marker:#}\n"))
        .context("writing the pull marker")?;
    let resume = kind.zip(h.session.as_ref()).and_then(|(k, s)| resume_command(k, &s.id));
    if args.json {
        let v = serde_json::json!({
            "job": h.job,
            "task": h.task,
            "branch": h.branch,
            "head": h.head,
            "into": into.display().to_string(),
            "ignored_files": copied.files,
            "session": h.session.as_ref().map(|s| serde_json::json!({"agent": s.agent, "id": s.id, "files": placed})),
            "resume": resume,
        });
        println!("{v:#}");
    }
    eprintln!(
        "pulled {}/{} into {} on {} ({} ignored file(s){})",
        h.job,
        h.task,
        into.display(),
        h.branch,
        copied.files.len(),
        match &h.session {
            Some(s) => format!(", {} session {} with {placed} transcript file(s)", s.agent, s.id),
            None => String::new(),
        }
    );
    if let Some(r) = &resume {
        eprintln!("  go on there:   cd {} && {r}", into.display());
    }
    eprintln!("  send it back:  cd {} && grove handoff --coordinator {url}", into.display());
    Ok(ExitCode::SUCCESS)
}
