//! Hand-off (`grove handoff`, `grove pull`): work in progress that moves between a person's
//! machine and a pool.
//!
//! A hand-off arrives as a snapshot commit in a repository this machine reads (made by the CLI
//! through an index of its own: HEAD plus every change, never an ignored file), the ignored
//! files the person listed, and an agent session's transcript. The first becomes a one-task
//! job whose base is the snapshot; the ignored files are kept under the home
//! (`handoffs/<job>/<task>/ignored`) and carried in every assignment of the task, never
//! committed; the transcript goes on the task's session side ref, where the worker's session
//! restore finds it. A task handed back from a pulled worktree keeps its branch (which moves
//! forward to the new snapshot) and goes on as its next attempt.

use std::path::{Path, PathBuf};

use grove_core::placement::LOCAL;
use grove_core::task::{CARRIED_MAX, Carried};
use grove_core::{JobId, TaskState};
use grove_git::worktree::Identity;

use crate::store::{JobRow, TaskRow};
use crate::{CoordError, Coordinator, StoreError};

/// What a hand-off brings.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// The new job's spec (ignored when `task` is set).
    pub spec_toml: String,
    pub base_dir: PathBuf,
    /// The snapshot commit and the repository it is in.
    pub snapshot: String,
    pub repo: PathBuf,
    /// The agent session (adapter, id) and its transcript's files, named as the session side
    /// ref names them.
    pub session: Option<(String, String)>,
    pub transcript: Vec<(String, Vec<u8>)>,
    pub ignored: Vec<Carried>,
    /// `JOB/TASK` of a pulled task handed back.
    pub task: Option<String>,
    /// A running job the hand-off joins as a new task (`grove handoff --job`).
    pub job: Option<String>,
    /// The prompt of the next attempt (a task handed back, or a session resumed).
    pub prompt: Option<String>,
    /// host:folder it comes from.
    pub from: String,
}

/// The folder of a task's carried ignored files.
pub fn carried_dir(layout: &grove_core::layout::Layout, job: &JobId, task: &str) -> PathBuf {
    layout.handoff(job, task).join("ignored")
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> CoordError {
    move |source| CoordError::Io { what, source }
}

/// Replace the carried files in `dir` (grove's own folder) with `files`.
pub fn write_carried(dir: &Path, files: &[Carried]) -> Result<(), CoordError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(format!("removing {}", dir.display())))?;
    }
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    for f in files {
        grove_core::spec::check_repo_path(&f.path).map_err(|why| CoordError::Refused {
            task: "hand-off".into(),
            why: format!("ignored file {:?} {why}", f.path),
        })?;
        let to = grove_git::worktree::file_path(dir, &f.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode & 0o777)
            .open(&to)
            .map_err(io(format!("writing {}", to.display())))?;
        out.write_all(&f.data).map_err(io(format!("writing {}", to.display())))?;
    }
    Ok(())
}

/// The files under `dir` as carried files (no symlink followed), at most [`CARRIED_MAX`]
/// bytes in all.
pub fn read_carried(dir: &Path) -> Result<Vec<Carried>, CoordError> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut total = 0;
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((at, prefix)) = stack.pop() {
        let entries = match std::fs::read_dir(&at) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(format!("reading {}", at.display()))(e)),
        };
        for e in entries {
            let e = e.map_err(io(format!("reading {}", at.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let meta =
                std::fs::symlink_metadata(e.path()).map_err(io(format!("reading {}", e.path().display())))?;
            if meta.is_dir() {
                stack.push((e.path(), rel));
            } else if meta.is_file() {
                total += meta.len() as usize;
                if total > CARRIED_MAX {
                    tracing::warn!(
                        "{}: more than {CARRIED_MAX} bytes of ignored files; the rest stay",
                        dir.display()
                    );
                    return Ok(out);
                }
                let data = std::fs::read(e.path()).map_err(io(format!("reading {}", e.path().display())))?;
                out.push(Carried { path: rel, data, mode: meta.permissions().mode() & 0o777 });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// `files` (ignored files of the source's working tree `src`) as carried files: only regular
/// files reached through real folders (no symlink anywhere on the way), at most
/// [`CARRIED_MAX`] bytes in all.
pub fn carried_from_source(src: &Path, files: &[String]) -> Vec<Carried> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut total = 0;
    'files: for f in files {
        if grove_core::spec::check_repo_path(f).is_err() {
            continue;
        }
        let mut at = src.to_path_buf();
        let parts: Vec<&str> = f.split('/').collect();
        for (i, p) in parts.iter().enumerate() {
            at.push(p);
            let Ok(meta) = std::fs::symlink_metadata(&at) else { continue 'files };
            let last = i + 1 == parts.len();
            if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
                continue 'files;
            }
        }
        let Ok(data) = std::fs::read(&at) else { continue };
        total += data.len();
        if total > CARRIED_MAX {
            tracing::warn!(
                "more than {CARRIED_MAX} bytes of ignored files: {f} and the rest are not carried"
            );
            break;
        }
        let mode = std::fs::metadata(&at).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o644);
        out.push(Carried { path: f.clone(), data, mode });
    }
    out
}

/// The side ref of a task's agent session (as the worker names it).
pub fn session_ref(job: &JobId, task: &str) -> String {
    format!("refs/grove/sessions/{job}/{task}")
}

impl Coordinator {
    /// The ignored files an assignment of `t` carries, for the pool it goes to: a hand-off's
    /// (always), else, for a pool other than `local` (whose workers read the source's working
    /// tree themselves), `listed` (the assignment's ignored files, already those inside the
    /// task's checkout) read from that working tree.
    pub(crate) fn carried_for(
        &self,
        job: &JobRow,
        t: &TaskRow,
        pool: &str,
        listed: &[String],
    ) -> Vec<Carried> {
        let dir = carried_dir(&self.layout, &job.id, &t.slug);
        if dir.exists() {
            return read_carried(&dir).unwrap_or_else(|e| {
                tracing::warn!(job = %job.id, task = %t.slug, "the hand-off's ignored files: {e}");
                Vec::new()
            });
        }
        match &job.source_dir {
            Some(src) if pool != LOCAL && !listed.is_empty() => carried_from_source(Path::new(src), listed),
            _ => Vec::new(),
        }
    }

    /// Keep what a hand-off brought for task `slug` of `job`: its ignored files, and its
    /// session on the task's side ref, named for the next attempt (with `prompt` as its first
    /// turn when the session is resumed).
    pub fn receive(&self, job: &JobRow, slug: &str, inc: &Incoming, attempt: u32) -> Result<(), CoordError> {
        write_carried(&carried_dir(&self.layout, &job.id, slug), &inc.ignored)?;
        if let Some((agent, id)) = &inc.session {
            let record = serde_json::json!({
                "agent": agent,
                "id": id,
                "attempt": attempt,
                "workdir": inc.from,
                "total": {},
            });
            let mut files = vec![("session.json".to_owned(), record.to_string().into_bytes())];
            files.extend(inc.transcript.iter().map(|(n, b)| (format!("files/{n}"), b.clone())));
            let message = format!("grove: {agent} session {id} handed off from {}", inc.from);
            grove_git::sideref::write(
                &self.git,
                Path::new(&job.mirror),
                &session_ref(&job.id, slug),
                &files,
                &message,
                &Identity::default(),
            )?;
        }
        let session = inc.session.as_ref().map(|(a, i)| (a.as_str(), i.as_str()));
        self.store.set_handoff(&job.id, slug, session, inc.prompt.as_deref())?;
        self.store.add_handoff(&job.id, slug, "handoff", &inc.from, attempt)?;
        Ok(())
    }

    /// A hand-off that joins `job` as a new task (`grove handoff --job`), last in its merge
    /// order, starting from the snapshot. The job must be of the same repository, and a
    /// session must be of the job's agent. Returns the new task's slug.
    pub fn add_to(&self, job: &JobId, inc: &Incoming) -> Result<String, CoordError> {
        let row = self.store.job(job.as_str())?;
        let refuse = |why: String| Err(CoordError::Refused { task: job.to_string(), why });
        let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let same = row.source_dir.as_deref().map(|d| canon(Path::new(d))) == Some(canon(&inc.repo));
        if !same {
            return refuse(format!(
                "it is a job of {}, not of {}: hand off without --job for a job of its own",
                row.source,
                inc.repo.display()
            ));
        }
        if row.state == "cancelled" {
            return refuse("it was cancelled".into());
        }
        let kind = row.spec.agent.kind.map(|k| k.as_str()).unwrap_or("command");
        if let Some((agent, _)) = &inc.session
            && agent != kind
        {
            return refuse(format!(
                "its tasks run {kind}, and the session is {agent}'s: hand off without --job, or --no-session"
            ));
        }
        let pool = if inc.spec_toml.trim().is_empty() {
            None
        } else {
            grove_core::spec::JobSpec::from_toml("hand-off", &inc.spec_toml)?.run.pool
        };
        let tasks = self.store.tasks(job)?;
        let slug = (1..)
            .map(|n| if n == 1 { "handoff".to_owned() } else { format!("handoff-{n}") })
            .find(|s| tasks.iter().all(|t| &t.slug != s))
            .unwrap_or_else(|| "handoff".to_owned());
        let mirror = grove_git::Mirror { path: PathBuf::from(&row.mirror) };
        mirror.ensure_commit(&self.git, &grove_git::Source::Local(inc.repo.clone()), &inc.snapshot)?;
        let t = TaskRow {
            handoffs: Vec::new(),
            job: job.clone(),
            slug: slug.clone(),
            ord: tasks.iter().map(|t| t.ord + 1).max().unwrap_or(0),
            level: tasks.iter().map(|t| t.level + 1).max().unwrap_or(0),
            title: format!("hand-off from {}", inc.from),
            sparse: None,
            files: Vec::new(),
            lines: 0,
            depends_on: Vec::new(),
            branch: grove_core::names::task_branch(job, &slug),
            pool: pool.unwrap_or_else(|| row.spec.run.pool.clone().unwrap_or_else(|| "cloud".to_owned())),
            placed: None,
            placed_why: None,
            state: TaskState::Queued,
            merge_state: grove_core::task::MergeState::Pending,
            attempt: 0,
            turns: 0,
            head: None,
            stat: Default::default(),
            reason: None,
            log_tail: None,
            merge_commit: None,
            conflict_paths: Vec::new(),
            train: Default::default(),
            agent: Default::default(),
        };
        self.store.add_task(&t, &inc.snapshot)?;
        self.receive(&row, &slug, inc, 1)?;
        Ok(slug)
    }

    /// A pulled task handed back (`grove handoff` in the worktree `grove pull` made): its
    /// branch moves forward to the snapshot (which must descend from it: nothing the pool did
    /// is lost), what the hand-off brought is kept, and the task is queued as its next attempt.
    pub fn hand_back(&self, job: &JobId, slug: &str, inc: &Incoming) -> Result<(), CoordError> {
        let name = format!("{job}/{slug}");
        let row = self.store.job(job.as_str())?;
        let t = self.store.task(job, slug)?.ok_or_else(|| StoreError::NoTask(name.clone()))?;
        let refuse = |why: String| Err(CoordError::Refused { task: name.clone(), why });
        if t.state.is_on_worker() && t.attempt > 0 {
            return refuse(format!(
                "it is {} on pool {}: `grove pull --stop {name}` ends that attempt first",
                t.state, t.pool
            ));
        }
        if t.merge_state == grove_core::task::MergeState::Merged {
            return refuse(
                "it is merged already; hand off a new task instead (grove handoff without --task)".into(),
            );
        }
        let mirror = grove_git::Mirror { path: PathBuf::from(&row.mirror) };
        let source = grove_git::Source::Local(inc.repo.clone());
        mirror.ensure_commit(&self.git, &source, &inc.snapshot)?;
        let branch = format!("refs/heads/{}", t.branch);
        let tip = self.git.ref_target(&mirror.path, &branch)?;
        if let Some(tip) = &tip
            && tip != &inc.snapshot
        {
            let ok = self
                .git
                .run_allowing(&mirror.path, ["merge-base", "--is-ancestor", tip, &inc.snapshot], &[1])?
                .code
                == 0;
            if !ok {
                return refuse(format!(
                    "the work handed back does not contain the task's branch tip {tip} (it moved on since the pull: `grove pull {name}` again)"
                ));
            }
        }
        self.git.update_ref(&mirror.path, &branch, &inc.snapshot, tip.as_deref())?;
        self.store.requeue(job, slug)?;
        self.receive(&row, slug, inc, t.attempt + 1)
    }
}

/// What `grove pull` gets of a task.
#[derive(Debug, Clone, Default)]
pub struct Pulled {
    /// The task's branch tip in the mirror (its base when it has none).
    pub head: String,
    pub base: String,
    /// A git bundle of the branch (`base..head`; empty when they are the same).
    pub bundle: Vec<u8>,
    pub ignored: Vec<Carried>,
    /// The agent session of its last turn, and its transcript's files.
    pub session: Option<(String, String)>,
    pub transcript: Vec<(String, Vec<u8>)>,
}

/// Read what `grove pull` brings of `t`, from the mirror and the home.
pub fn pulled(coord: &Coordinator, t: &TaskRow) -> Result<Pulled, CoordError> {
    let job = coord.store.job(t.job.as_str())?;
    let mirror = Path::new(&job.mirror);
    let base = t.base(&job).to_owned();
    let branch = format!("refs/heads/{}", t.branch);
    let head = coord.git.ref_target(mirror, &branch)?.unwrap_or_else(|| base.clone());
    let mut out = Pulled { head: head.clone(), base: base.clone(), ..Default::default() };
    if head != base {
        let dir = tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(coord.layout.home())
            .map_err(io(format!("making a folder in {}", coord.layout.home().display())))?;
        let file = dir.path().join("task.bundle");
        let not_base = format!("^{base}");
        coord.git.run(
            mirror,
            [
                std::ffi::OsStr::new("bundle"),
                "create".as_ref(),
                "--quiet".as_ref(),
                file.as_os_str(),
                branch.as_ref(),
                not_base.as_ref(),
            ],
        )?;
        out.bundle = std::fs::read(&file).map_err(io(format!("reading {}", file.display())))?;
    }
    let dir = carried_dir(&coord.layout, &job.id, &t.slug);
    out.ignored = if dir.exists() {
        read_carried(&dir)?
    } else {
        match &job.source_dir {
            Some(src) => carried_from_source(Path::new(src), &job.ignored_files),
            None => Vec::new(),
        }
    };
    if let Some(files) = grove_git::sideref::read(&coord.git, mirror, &session_ref(&job.id, &t.slug))? {
        let record = files
            .iter()
            .find(|(n, _)| n == "session.json")
            .and_then(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).ok());
        if let Some(v) = record
            && let (Some(agent), Some(id)) = (v["agent"].as_str(), v["id"].as_str())
        {
            out.session = Some((agent.to_owned(), id.to_owned()));
            out.transcript = files
                .into_iter()
                .filter_map(|(n, b)| n.strip_prefix("files/").map(|n| (n.to_owned(), b)))
                .collect();
        }
    }
    // The session the coordinator recorded last wins over an older side ref's.
    if let (Some(id), Some(agent)) = (&t.agent.session, &t.agent.session_agent)
        && out.session.as_ref().is_none_or(|(_, i)| i != id)
    {
        out.session = Some((agent.clone(), id.clone()));
        out.transcript.clear();
    }
    Ok(out)
}
