use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use grove_core::spec::AgentKind;
use grove_git::Git;
use grove_proto::v1 as pb;
use grove_worker::adapter::session;

/// Hand the work in progress of this repository off to a pool: HEAD with every staged,
/// unstaged and untracked file (one snapshot commit made through an index of grove's own),
/// the git-ignored files you list, and the agent session of this folder, as a one-task job
/// on the coordinator. The worker that takes it resumes the session with the prompt.
///
/// Nothing here is touched: not the working tree, the index, the stash or the branch; no
/// commit contains an ignored file. Refused: a merge, rebase or cherry-pick under way; more
/// than --max-size bytes of changed files; an ignored file that looks like a secret and was
/// matched by a glob instead of named. Run it inside a worktree `grove pull` made and the
/// task goes back as its next attempt, on its branch, with its session.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove handoff --prompt 'finish the migration, then run the tests' --include-ignored .env
  grove handoff --agent codex --no-session --prompt 'port src/db to the new API'
  grove handoff --job rename-3f2a --no-session     # one more task of a running job
  grove pull handoff-3f2a/all        # later: bring it back (a new worktree beside this one)
  grove handoff                      # inside that worktree: send it back as the next attempt")]
pub struct HandoffArgs {
    /// What the agent does next [default: "continue"]
    #[arg(long)]
    pub prompt: Option<String>,
    /// The agent that takes over: claude, codex, gemini, copilot, aider, opencode
    /// [default: the session's, else claude]
    #[arg(long, value_name = "KIND")]
    pub agent: Option<AgentKind>,
    /// The model the agent uses
    #[arg(long)]
    pub model: Option<String>,
    /// The agent CLI's executable on the workers [default: its usual name on PATH]
    #[arg(long, value_name = "PATH")]
    pub agent_program: Option<String>,
    /// Resume this session of the agent [default: the newest one of this folder]
    #[arg(long, value_name = "ID", conflicts_with = "no_session")]
    pub session: Option<String>,
    /// Start a new session instead of resuming one
    #[arg(long)]
    pub no_session: bool,
    /// The pool whose workers take it
    #[arg(long, default_value = "cloud")]
    pub pool: String,
    /// Add it to this running job as a new task, merged after the job's others (it runs the
    /// job's agent; a session must be of that agent) [default: a job of its own]
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Carry these git-ignored files too (gitignore-style patterns, repeatable); the lines of
    /// `.worktreeinclude` are read as well. A file that looks like a secret must be named.
    #[arg(long = "include-ignored", value_name = "GLOB")]
    pub include_ignored: Vec<String>,
    /// Refuse when the changed and untracked files are larger than this, in bytes
    #[arg(long, default_value_t = 100_000_000, value_name = "BYTES")]
    pub max_size: u64,
    /// Print what was handed off as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// The coordinator daemon [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: String,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
}

/// What `grove pull` leaves in the worktree's git dir, so that `grove handoff` there sends the
/// task back.
pub const PULL_MARKER: &str = "grove-pull.json";

/// Names of ignored files that must be named exactly to travel (never by a glob).
fn looks_secret(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    name.starts_with(".env")
        || name.ends_with(".pem")
        || name.ends_with(".key")
        || name.ends_with(".p12")
        || name.ends_with(".pfx")
        || name.starts_with("id_rsa")
        || name.starts_with("id_ed25519")
        || name.starts_with("id_ecdsa")
        || name.contains("secret")
        || name.contains("credential")
        || name.contains("token")
        || name == ".npmrc"
        || name == ".netrc"
        || name == ".pypirc"
}

/// Whether `pattern` names `path` itself (not a glob that happens to match it).
fn names(pattern: &str, path: &str) -> bool {
    let p = pattern.trim_start_matches('/');
    !p.contains(['*', '?', '[']) && (p == path || (!p.contains('/') && path.rsplit('/').next() == Some(p)))
}

/// The git-ignored files to carry, read (regular files only).
fn ignored(git: &Git, top: &Path, args: &HandoffArgs) -> anyhow::Result<Vec<pb::HandoffFile>> {
    let mut patterns = args.include_ignored.clone();
    match std::fs::read_to_string(top.join(grove_coordinator::submit::WORKTREE_INCLUDE)) {
        Ok(text) => patterns.extend(
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("reading .worktreeinclude"),
    }
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let files = grove_coordinator::submit::matching_ignored(git, &patterns, top)?;
    let unnamed: Vec<&String> =
        files.iter().filter(|f| looks_secret(f) && !patterns.iter().any(|p| names(p, f))).collect();
    if !unnamed.is_empty() {
        bail!(
            "{} look{} like secrets and {} matched only by a pattern: name each to carry it (--include-ignored {}); nothing was handed off",
            unnamed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            if unnamed.len() == 1 { "s" } else { "" },
            if unnamed.len() == 1 { "was" } else { "were" },
            unnamed[0]
        );
    }
    let mut out = Vec::new();
    let mut total = 0;
    for f in files {
        use std::os::unix::fs::PermissionsExt;
        let path = grove_git::worktree::file_path(top, &f);
        let meta = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if !meta.is_file() {
            continue;
        }
        total += meta.len();
        if total > grove_core::task::CARRIED_MAX as u64 {
            bail!(
                "the ignored files to carry are larger than {} bytes in all ({f} is {} bytes); list fewer; nothing was handed off",
                grove_core::task::CARRIED_MAX,
                meta.len()
            );
        }
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        out.push(pb::HandoffFile {
            kind: "ignored".into(),
            name: f,
            data,
            mode: meta.permissions().mode() & 0o777,
            more: false,
        });
    }
    Ok(out)
}

/// The agent CLIs' folders, from this process's environment.
pub fn dirs() -> session::Dirs {
    session::Dirs::from_env(|k| std::env::var(k).ok())
}

/// The newest session of `kind` started in `dir`, by its transcript's time.
fn newest(kind: AgentKind, dir: &Path, d: &session::Dirs) -> Option<(String, std::time::SystemTime)> {
    let newest_in = |files: Vec<(PathBuf, String)>| {
        files
            .into_iter()
            .filter_map(|(p, id)| Some((id, std::fs::metadata(&p).ok()?.modified().ok()?)))
            .max_by_key(|(_, t)| *t)
    };
    match kind {
        AgentKind::Claude => {
            let project = d.claude.as_ref()?.join("projects").join(session::claude_slug(dir));
            let files = std::fs::read_dir(project)
                .ok()?
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let id = name.strip_suffix(".jsonl")?.to_owned();
                    Some((e.path(), id))
                })
                .collect();
            newest_in(files)
        }
        AgentKind::Codex => {
            // Rollouts are not kept by folder: the first line names the session's cwd.
            let mut files = Vec::new();
            let mut stack = vec![d.codex.as_ref()?.join("sessions")];
            while let Some(at) = stack.pop() {
                for e in std::fs::read_dir(&at).into_iter().flatten().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                        continue;
                    }
                    // Only the first line (`session_meta`): a rollout can be large.
                    let Ok(f) = std::fs::File::open(&p) else { continue };
                    let mut first = String::new();
                    if std::io::BufRead::read_line(&mut std::io::BufReader::new(f), &mut first).is_err() {
                        continue;
                    }
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&first) else { continue };
                    let meta = &v["payload"];
                    if meta["cwd"].as_str() == Some(dir.to_string_lossy().as_ref())
                        && let Some(id) = meta["id"].as_str()
                    {
                        files.push((p, id.to_owned()));
                    }
                }
            }
            newest_in(files)
        }
        _ => None,
    }
}

/// The session to carry: (kind, id) and its files.
fn find_session(
    args: &HandoffArgs,
    dir: &Path,
    marker: Option<&serde_json::Value>,
) -> anyhow::Result<Option<(AgentKind, String, Vec<pb::HandoffFile>)>> {
    if args.no_session {
        return Ok(None);
    }
    let d = dirs();
    let from_marker = marker.and_then(|m| {
        Some((m["agent"].as_str()?.parse::<AgentKind>().ok()?, m["session"].as_str()?.to_owned()))
    });
    let kinds: Vec<AgentKind> = match args.agent {
        Some(k) => vec![k],
        None => vec![AgentKind::Claude, AgentKind::Codex],
    };
    let chosen = match (&args.session, from_marker) {
        (Some(id), _) => {
            let kind = kinds
                .iter()
                .copied()
                .find(|k| !session::collect(*k, id, dir, dir, &d).is_empty())
                .with_context(|| {
                    format!(
                        "no {} session {id} of {} (looked where each CLI keeps its transcripts); nothing was handed off",
                        kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" or "),
                        dir.display()
                    )
                })?;
            Some((kind, id.clone()))
        }
        // The session `grove pull` placed here, unless one newer was started since.
        (None, Some((kind, id))) if args.agent.is_none_or(|k| k == kind) => {
            let newer = newest(kind, dir, &d).map(|(i, _)| i);
            Some((kind, newer.unwrap_or(id)))
        }
        (None, _) => kinds
            .iter()
            .filter_map(|k| newest(*k, dir, &d).map(|(id, t)| (*k, id, t)))
            .max_by_key(|(_, _, t)| *t)
            .map(|(k, id, _)| (k, id)),
    };
    let Some((kind, id)) = chosen else { return Ok(None) };
    let mut files = Vec::new();
    for (name, path) in session::collect(kind, &id, dir, dir, &d) {
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        files.push(pb::HandoffFile { kind: "session".into(), name, data, mode: 0o600, more: false });
    }
    Ok(Some((kind, id, files)))
}

/// `host:folder`, for the hand-off history.
pub fn place(dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!("{host}:{}", dir.display())
}

/// The pieces of a hand-off: header, files cut to fit a message, checksum.
pub fn pieces(header: pb::HandoffHeader, files: Vec<pb::HandoffFile>) -> Vec<pb::HandoffPiece> {
    use pb::handoff_piece::Piece;
    use sha2::Digest;
    const PIECE: usize = 1 << 20;
    let mut out = vec![pb::HandoffPiece { piece: Some(Piece::Header(header)) }];
    let mut hasher = sha2::Sha256::new();
    for f in files {
        let chunks: Vec<&[u8]> =
            if f.data.is_empty() { vec![&[][..]] } else { f.data.chunks(PIECE).collect() };
        let n = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            hasher.update(f.name.as_bytes());
            hasher.update(c);
            out.push(pb::HandoffPiece {
                piece: Some(Piece::File(pb::HandoffFile {
                    kind: f.kind.clone(),
                    name: f.name.clone(),
                    data: c.to_vec(),
                    mode: f.mode,
                    more: i + 1 < n,
                })),
            });
        }
    }
    out.push(pb::HandoffPiece { piece: Some(Piece::Sha256(format!("{:x}", hasher.finalize()))) });
    out
}

pub async fn cmd_handoff(home: PathBuf, args: HandoffArgs) -> anyhow::Result<ExitCode> {
    let git = Git::detect()?;
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let git_dir = git
        .run(&cwd, ["rev-parse", "--absolute-git-dir"])
        .with_context(|| format!("{} is not in a git repository", cwd.display()))?;
    let git_dir = PathBuf::from(git_dir.stdout.trim());
    let marker: Option<serde_json::Value> = match std::fs::read(git_dir.join(PULL_MARKER)) {
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .with_context(|| format!("reading {}", git_dir.join(PULL_MARKER).display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading the pull marker"),
    };
    let top = PathBuf::from(git.run(&cwd, ["rev-parse", "--show-toplevel"])?.stdout.trim());
    let branch = git
        .run_allowing(&top, ["symbolic-ref", "--quiet", "--short", "HEAD"], &[1])?
        .stdout
        .trim()
        .to_owned();
    if let Some(m) = &marker
        && m["branch"].as_str().is_some_and(|b| b != branch)
    {
        bail!(
            "this worktree was pulled for {} on branch {}, but {} is checked out: check that branch out again to hand it back",
            m["task"].as_str().unwrap_or("a task"),
            m["branch"].as_str().unwrap_or(""),
            if branch.is_empty() { "a detached HEAD" } else { branch.as_str() }
        );
    }
    if args.job.is_some() && marker.is_some() {
        bail!(
            "this worktree holds a pulled task: `grove handoff` here sends it back to that task; drop --job"
        );
    }
    // Everything that can refuse, before anything is made.
    let files = ignored(&git, &top, &args)?;
    let found = find_session(&args, &cwd, marker.as_ref())?;
    let from = place(&top);
    let message = format!(
        "grove: hand-off of {} from {from}",
        if branch.is_empty() { "a detached HEAD" } else { branch.as_str() }
    );
    let snap = tokio::task::block_in_place(|| {
        grove_git::snapshot::take(&git, &cwd, &home.join("tmp"), args.max_size, &message, &Default::default())
    })?;
    let agent = match (&args.agent, &found) {
        (Some(k), _) => *k,
        (None, Some((k, _, _))) => *k,
        (None, None) => {
            marker.as_ref().and_then(|m| m["agent"].as_str()?.parse().ok()).unwrap_or(AgentKind::Claude)
        }
    };
    let prompt = args.prompt.clone().unwrap_or_else(|| "continue".to_owned());
    let task = marker.as_ref().and_then(|m| m["task"].as_str().map(str::to_owned)).unwrap_or_default();
    let spec = if task.is_empty() {
        // (With --job only its pool is read.)
        let mut t = toml::Table::new();
        t.insert("name".into(), "handoff".into());
        t.insert("prompt".into(), prompt.clone().into());
        let mut repo = toml::Table::new();
        repo.insert("source".into(), top.display().to_string().into());
        repo.insert("base".into(), snap.commit.clone().into());
        t.insert("repo".into(), repo.into());
        let mut split = toml::Table::new();
        split.insert("rule".into(), "single".into());
        t.insert("split".into(), split.into());
        let mut a = toml::Table::new();
        a.insert("kind".into(), agent.as_str().into());
        if let Some(m) = &args.model {
            a.insert("model".into(), m.clone().into());
        }
        if let Some(p) = &args.agent_program {
            a.insert("program".into(), p.clone().into());
        }
        t.insert("agent".into(), a.into());
        let mut run = toml::Table::new();
        run.insert("pool".into(), args.pool.clone().into());
        t.insert("run".into(), run.into());
        // The person reviews what comes back (`grove pull`, `grove merge`).
        let mut merge = toml::Table::new();
        merge.insert("mode".into(), "manual".into());
        t.insert("merge".into(), merge.into());
        toml::to_string(&t).context("writing the hand-off's job spec")?
    } else {
        String::new()
    };
    let header = pb::HandoffHeader {
        spec_toml: spec,
        base_dir: top.display().to_string(),
        snapshot: snap.commit.clone(),
        repo: top.display().to_string(),
        session: found.as_ref().map(|(k, id, _)| pb::Session {
            agent: k.as_str().to_owned(),
            id: id.clone(),
            total: None,
        }),
        task: task.clone(),
        job: args.job.clone().unwrap_or_default(),
        from: from.clone(),
        prompt: Some(prompt),
        ..Default::default()
    };
    let n_ignored = files.len();
    let mut all = files;
    let (session_id, n_transcript) = match found {
        Some((_, id, f)) => {
            let n = f.len();
            all.extend(f);
            (Some(id), n)
        }
        None => (None, 0),
    };
    let url = &args.coordinator;
    let mut client = crate::remote::connect(url, &args.tls).await?;
    let reply = client
        .handoff(tokio_stream::iter(pieces(header, all)))
        .await
        .map_err(|s| crate::remote::status(url, s))?
        .into_inner();
    let job = reply.job.map(|j| j.id).unwrap_or_default();
    let name = format!("{job}/{}", reply.task);
    if args.json {
        let v = serde_json::json!({
            "job": job,
            "task": reply.task,
            "snapshot": snap.commit,
            "head": snap.head,
            "changed": snap.changed,
            "ignored_files": n_ignored,
            "agent": agent.as_str(),
            "session": session_id,
            "pool": args.pool,
            "handed_back": !task.is_empty(),
        });
        println!("{v:#}");
    }
    let session_text = match &session_id {
        Some(id) => format!("{} session {id} ({n_transcript} transcript file(s))", agent.as_str()),
        None => format!("a new {} session", agent.as_str()),
    };
    eprintln!(
        "{} {name} to pool {}: snapshot {} of {} changed file(s) on {}, {n_ignored} ignored file(s), {session_text}",
        if !task.is_empty() {
            "handed back"
        } else if args.job.is_some() {
            "added to its job as"
        } else {
            "handed off"
        },
        args.pool,
        &snap.commit[..12.min(snap.commit.len())],
        snap.changed.len(),
        if branch.is_empty() { "a detached HEAD" } else { branch.as_str() },
    );
    eprintln!("  follow it:     grove logs -f {name} --coordinator {url}");
    eprintln!("  bring it back: grove pull {name} --coordinator {url}   (--stop to end its attempt first)");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_must_be_named() {
        assert!(
            looks_secret(".env") && looks_secret("config/.env.local") && looks_secret("certs/server.pem")
        );
        assert!(!looks_secret("build/cache.bin") && !looks_secret("config/local.toml"));
        assert!(names(".env", ".env") && names(".env", "web/.env") && names("/web/.env", "web/.env"));
        assert!(!names(".env*", ".env") && !names("*.pem", "a.pem") && !names("web/.env", ".env"));
    }
}
