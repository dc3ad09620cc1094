//! `grove gc`: disk hygiene for a coordinator's home. Jobs that ended a while ago lose their
//! worktrees (`worktrees/<job>/`), their run dirs (`runs/<job>/`) and, in the mirror, their
//! task branches and attempt records whose commits are safe to let go; each mirror is then
//! pruned of stale worktree entries and packed (`git gc --auto`); with `mirrors`, a mirror
//! no uncollected job uses any more is removed (it is a cache: a new job clones it again).
//!
//! Architecture invariant: gc removes only what grove made, and only safe commits. Paths are
//! those grove names under the home (`worktrees/<job>/<task>`, `runs/<job>/<task>`,
//! `mirrors/<name>-<hash>.git`) for jobs in the store, reached without a symlink; refs are
//! the exact task branches the store recorded (`grove/<job>/<task>`) and grove's own
//! `refs/grove/attempts/<job>/<task>/`, deleted by compare-and-swap. A ref goes only when
//! its commits are in the integration branch (or, for a merged task, superseded by the
//! merged attempt), or with `prune_unmerged`. The integration branch and the person's
//! repository are never touched; a mirror goes only when every ref of grove's in it is an
//! integration branch that is published (in the source repository or fetched back from it).
//!
//! The selection is pure ([`job_verdict`], [`ref_verdict`], [`mirror_verdict`]); [`collect`]
//! gathers the facts and acts.

use std::collections::{BTreeSet, HashSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use grove_core::layout::Layout;
use grove_core::task::MergeState;
use grove_core::{JobId, TaskState, names};
use grove_git::Git;
use grove_git::worktree;
use grove_worker::disk::du;

use crate::CoordError;
use crate::store::{JobRow, Store, TaskRow};

/// What to collect.
#[derive(Debug, Clone)]
pub struct Policy {
    /// A job is collected once it ended at least this long ago.
    pub older_than: Duration,
    /// Also delete branches and attempt records of tasks that did not merge.
    pub prune_unmerged: bool,
    /// Also remove mirrors no uncollected job uses.
    pub mirrors: bool,
    /// Say what would go; change nothing.
    pub dry_run: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            older_than: Duration::from_secs(7 * 24 * 3600),
            prune_unmerged: false,
            mirrors: false,
            dry_run: false,
        }
    }
}

/// What kind of thing was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A task's (or the integration check's) worktree under `worktrees/<job>/`.
    Worktree,
    /// A task's run dir under `runs/<job>/` (agent log, prompt, files).
    RunDir,
    /// A task branch in grove's mirror.
    Branch,
    /// A record of an earlier attempt, `refs/grove/attempts/<job>/<task>/<n>`, in the mirror.
    Attempt,
    /// A whole mirror.
    Mirror,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Worktree => "worktree",
            Kind::RunDir => "run-dir",
            Kind::Branch => "branch",
            Kind::Attempt => "attempt-ref",
            Kind::Mirror => "mirror",
        }
    }
}

/// One thing removed (or, in a dry run, to be removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub job: Option<JobId>,
    pub kind: Kind,
    /// A path, or a ref and the mirror it is in.
    pub what: String,
    /// Bytes it took on disk (0 for a ref: its objects go when the mirror is packed).
    pub bytes: u64,
    /// Why it could go.
    pub why: String,
}

/// Something grove made that was left, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub job: Option<JobId>,
    pub what: String,
    pub why: String,
}

/// A mirror pruned and packed: its size before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub mirror: String,
    pub before: u64,
    pub after: u64,
}

/// What a collection did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub dry_run: bool,
    pub removed: Vec<Removal>,
    pub kept: Vec<Kept>,
    /// Jobs not collected, and why (still running, needs attention, too recent...).
    pub skipped: Vec<(JobId, String)>,
    /// Jobs collected (or to be).
    pub collected: Vec<JobId>,
    pub packed: Vec<Packed>,
}

impl Report {
    /// Bytes freed: what was removed, and what packing the mirrors gave back.
    pub fn freed(&self) -> u64 {
        let removed: u64 = self.removed.iter().map(|r| r.bytes).sum();
        let packed: u64 = self.packed.iter().map(|p| p.before.saturating_sub(p.after)).sum();
        removed + packed
    }
}

/// Whether a task's part in the job is over: it ended, and the train is done with it.
/// `cancelled_job`: a cancelled job's succeeded tasks will not merge any more.
fn task_settled(t: &TaskRow, cancelled_job: bool) -> Result<(), String> {
    let who = &t.slug;
    match t.state {
        TaskState::Failed | TaskState::Cancelled => Ok(()),
        TaskState::NeedsAttention if t.merge_state == MergeState::Discarded => Ok(()),
        TaskState::NeedsAttention => Err(format!("task {who} needs attention (discard or retry it first)")),
        TaskState::Succeeded => match t.merge_state {
            MergeState::Merged | MergeState::Empty | MergeState::Discarded | MergeState::Skipped => Ok(()),
            _ if cancelled_job => Ok(()),
            m => Err(format!("task {who} succeeded and its merge is {}", m.as_str())),
        },
        s => Err(format!("task {who} is {s}")),
    }
}

/// Whether `job` may be collected at `now` (seconds), its newest change being at `last`:
/// it ended (done or cancelled, every task settled, the train not stopped) at least
/// `older_than` ago. `Err` says why not.
pub fn job_verdict(
    job: &JobRow,
    tasks: &[TaskRow],
    last: i64,
    now: i64,
    older_than: Duration,
) -> Result<(), String> {
    let cancelled = match job.state.as_str() {
        "done" => false,
        "cancelled" => true,
        s => return Err(format!("the job is {s}")),
    };
    if let Some(why) = &job.train.stopped
        && !cancelled
    {
        return Err(format!("its merging stopped ({why}); `grove merge` goes on"));
    }
    for t in tasks {
        task_settled(t, cancelled)?;
    }
    let age = now.saturating_sub(last);
    let wanted = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    if age < wanted {
        let d = humantime::format_duration(Duration::from_secs(age.max(0) as u64));
        return Err(format!("it ended {d} ago (--older-than {})", humantime::format_duration(older_than)));
    }
    Ok(())
}

/// Whether a task's ref may go: `Ok(why)` or `Err(why kept)`. `reachable`: its commit is in
/// the integration branch; `task_merged`: the task merged (so an earlier attempt's record is
/// superseded); `attempt`: the ref is an attempt record, not the task branch.
pub fn ref_verdict(
    reachable: bool,
    task_merged: bool,
    attempt: bool,
    prune_unmerged: bool,
) -> Result<&'static str, String> {
    if reachable {
        Ok("in the integration branch")
    } else if attempt && task_merged {
        Ok("an earlier attempt of a merged task")
    } else if prune_unmerged {
        Ok("not merged; --prune-unmerged")
    } else {
        Err("not merged (--prune-unmerged removes it)".into())
    }
}

/// What decides whether a mirror may go.
#[derive(Debug, Clone, Default)]
pub struct MirrorFacts {
    /// Jobs using it that are not collected.
    pub uncollected: Vec<JobId>,
    /// Refs of grove's in it (`refs/heads/`, `refs/grove/`) that no collected job's published
    /// integration branch accounts for.
    pub other_refs: Vec<String>,
    /// Integration branches in it that are not published.
    pub unpublished: Vec<String>,
}

/// `Ok` when the mirror may be removed, else why not.
pub fn mirror_verdict(f: &MirrorFacts) -> Result<(), String> {
    let list = |v: &[String]| {
        let mut s = v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 3 {
            s.push_str(&format!(" and {} more", v.len() - 3));
        }
        s
    };
    if !f.uncollected.is_empty() {
        let ids: Vec<String> = f.uncollected.iter().map(ToString::to_string).collect();
        return Err(format!("used by job(s) not collected: {}", list(&ids)));
    }
    if !f.unpublished.is_empty() {
        return Err(format!("integration branch(es) only here, not published: {}", list(&f.unpublished)));
    }
    if !f.other_refs.is_empty() {
        return Err(format!("holds refs gc keeps: {}", list(&f.other_refs)));
    }
    Ok(())
}

/// `path` lies under `home`, reached through plain names only (no `..`, no symlink on the
/// way, itself no symlink): the only paths gc removes.
pub fn owned(home: &Path, path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(home) else { return false };
    if rest.as_os_str().is_empty() {
        return false;
    }
    let mut p = home.to_path_buf();
    for c in rest.components() {
        let Component::Normal(c) = c else { return false };
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if !m.file_type().is_symlink() => {}
            _ => return false,
        }
    }
    true
}

/// A folder name grove gives mirrors: `<name>-<8 hex>.git`.
fn mirror_name(name: &str) -> bool {
    name.strip_suffix(".git")
        .and_then(|n| n.rsplit_once('-'))
        .is_some_and(|(_, h)| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

struct Ctx<'a> {
    git: &'a Git,
    layout: &'a Layout,
    policy: &'a Policy,
    report: Report,
    /// Refs deleted (or, in a dry run, to be), by mirror.
    gone: HashSet<(PathBuf, String)>,
}

/// Collect what `policy` allows under `layout`'s home, at `now` (seconds since the epoch).
/// `progress` hears a line per step of a long run. The caller holds the home's lock
/// ([`crate::home::HomeLock`]).
pub fn collect(
    store: &Store,
    git: &Git,
    layout: &Layout,
    policy: &Policy,
    now: i64,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, CoordError> {
    collect_locking(store, git, layout, policy, now, &|_| None, progress)
}

/// The lock a job is collected under, if any ([`crate::Coordinator::job_lock`]).
pub type JobLocks<'a> = dyn Fn(&JobId) -> Option<std::sync::Arc<std::sync::Mutex<()>>> + 'a;

/// [`collect`] in a process where jobs move meanwhile (the daemon's `--gc-every`): each job is
/// collected under `lock(job)`, looked at again once it is held (a retry may have made it
/// run again), and nothing else is held meanwhile. The mirrors' upkeep (`git worktree prune`,
/// `git gc --auto`) holds no job's lock: git keeps it safe beside a train writing objects.
pub fn collect_locking(
    store: &Store,
    git: &Git,
    layout: &Layout,
    policy: &Policy,
    now: i64,
    lock: &JobLocks<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, CoordError> {
    let mut cx = Ctx {
        git,
        layout,
        policy,
        report: Report { dry_run: policy.dry_run, ..Report::default() },
        gone: HashSet::new(),
    };
    let jobs = store.jobs()?;
    let mut chosen = Vec::new();
    for job in &jobs {
        let tasks = store.tasks(&job.id)?;
        let last = store.last_activity(&job.id)?;
        match job_verdict(job, &tasks, last, now, policy.older_than) {
            // Collected before: nothing of it is left but what gc kept, unmerged work.
            Ok(()) if job.collected_at.is_some() && !policy.prune_unmerged => {}
            Ok(()) => chosen.push((job, tasks)),
            Err(why) => cx.report.skipped.push((job.id.clone(), why)),
        }
    }
    let n = chosen.len();
    for (i, (job, _)) in chosen.into_iter().enumerate() {
        progress(&format!("job {}/{n}: {}", i + 1, job.id));
        let held = lock(&job.id);
        let _held = held.as_ref().map(|l| l.lock().unwrap_or_else(|p| p.into_inner()));
        // As it is now, under its lock.
        let (job, tasks) = (store.job(job.id.as_str())?, store.tasks(&job.id)?);
        let last = store.last_activity(&job.id)?;
        if let Err(why) = job_verdict(&job, &tasks, last, now, policy.older_than) {
            cx.report.skipped.push((job.id.clone(), why));
            continue;
        }
        cx.job(&job, &tasks)?;
        if !policy.dry_run {
            store.set_collected(&job.id, now)?;
        }
        cx.report.collected.push(job.id.clone());
    }
    cx.mirrors(&jobs, progress)?;
    Ok(cx.report)
}

impl Ctx<'_> {
    fn io(what: String) -> impl FnOnce(std::io::Error) -> CoordError {
        move |source| CoordError::Io { what, source }
    }

    fn keep(&mut self, job: Option<&JobId>, what: String, why: impl Into<String>) {
        self.report.kept.push(Kept { job: job.cloned(), what, why: why.into() });
    }

    fn removed(&mut self, job: Option<&JobId>, kind: Kind, what: String, bytes: u64, why: &str) {
        self.report.removed.push(Removal { job: job.cloned(), kind, what, bytes, why: why.into() });
    }

    /// The job's mirror, when it is one of this home's mirrors.
    fn mirror_of(&self, job: &JobRow) -> Option<PathBuf> {
        let m = PathBuf::from(&job.mirror);
        (m.parent() == Some(self.layout.mirrors().as_path()) && owned(self.layout.home(), &m))
            .then_some(m)
            .filter(|m| m.join("HEAD").exists())
    }

    fn job(&mut self, job: &JobRow, tasks: &[TaskRow]) -> Result<(), CoordError> {
        let mirror = self.mirror_of(job);
        let mut known: BTreeSet<String> = tasks.iter().map(|t| t.slug.clone()).collect();
        known.insert(".integration".into());
        let wt_dir = self.layout.worktrees().join(job.id.as_str());
        self.folders(job, &wt_dir, &known, Kind::Worktree, mirror.as_deref())?;
        let run_dir = self.layout.runs().join(job.id.as_str());
        self.folders(job, &run_dir, &known, Kind::RunDir, None)?;
        // What hand-offs carried for its tasks (their ignored files) goes with its logs.
        let handoffs = self.layout.home().join("handoffs").join(job.id.as_str());
        self.folders(job, &handoffs, &known, Kind::RunDir, None)?;
        match &mirror {
            Some(m) => self.refs(job, tasks, m)?,
            None => {
                let what = format!("branches of {} in {}", job.id, job.mirror);
                self.keep(Some(&job.id), what, "not a mirror under this grove home (or gone)");
            }
        }
        Ok(())
    }

    /// Remove `dir/<name>` for the names grove gives there, then `dir` when it is empty.
    /// Worktrees go through their mirror, so it forgets them.
    fn folders(
        &mut self,
        job: &JobRow,
        dir: &Path,
        known: &BTreeSet<String>,
        kind: Kind,
        mirror: Option<&Path>,
    ) -> Result<(), CoordError> {
        let home = self.layout.home();
        if !dir.exists() {
            return Ok(());
        }
        if !owned(home, dir) {
            self.keep(Some(&job.id), dir.display().to_string(), "a symlink, or not under the grove home");
            return Ok(());
        }
        let linked: Vec<PathBuf> = match mirror {
            Some(m) => {
                worktree::linked(self.git, m)?.into_iter().map(|p| p.canonicalize().unwrap_or(p)).collect()
            }
            None => Vec::new(),
        };
        let entries = std::fs::read_dir(dir).map_err(Self::io(format!("reading {}", dir.display())))?;
        let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        children.sort();
        for path in children {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !known.contains(&name) {
                self.keep(
                    Some(&job.id),
                    path.display().to_string(),
                    "not a task of the job: grove did not make it",
                );
                continue;
            }
            if !owned(home, &path) || !path.is_dir() {
                self.keep(
                    Some(&job.id),
                    path.display().to_string(),
                    "a symlink or a file, not grove's folder",
                );
                continue;
            }
            let bytes = du(&path);
            if !self.policy.dry_run {
                let canon = path.canonicalize().unwrap_or_else(|_| path.clone());
                match mirror {
                    Some(m) if linked.contains(&canon) => worktree::remove(self.git, m, &path)?,
                    _ => std::fs::remove_dir_all(&path)
                        .map_err(Self::io(format!("removing {}", path.display())))?,
                }
            }
            let why =
                if kind == Kind::Worktree { "the job ended" } else { "the job ended (its logs go too)" };
            self.removed(Some(&job.id), kind, path.display().to_string(), bytes, why);
        }
        if !self.policy.dry_run {
            // Only when empty: whatever was kept stays with its folder.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// The task branches and attempt records of the job in `mirror`, by [`ref_verdict`]. Two
    /// `for-each-ref` per job (its refs, and those of them in the integration branch), and a
    /// merge-base only for a squash-merged task.
    fn refs(&mut self, job: &JobRow, tasks: &[TaskRow], mirror: &Path) -> Result<(), CoordError> {
        let git = self.git;
        let integration = format!("refs/heads/{}", job.integration_branch);
        let integration_tip = git.ref_target(mirror, &integration)?;
        let prefixes = [format!("refs/heads/grove/{}/", job.id), format!("refs/grove/attempts/{}/", job.id)];
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let refs: std::collections::HashMap<String, String> =
            for_each_ref(git, mirror, &prefixes, None)?.into_iter().collect();
        if refs.is_empty() {
            return Ok(());
        }
        let in_integration: HashSet<String> = match &integration_tip {
            Some(tip) => {
                for_each_ref(git, mirror, &prefixes, Some(tip))?.into_iter().map(|(r, _)| r).collect()
            }
            None => HashSet::new(),
        };
        let checked_out = worktree::checked_out(git, mirror)?;
        let shown = |r: &str| format!("{r} in {}", mirror.display());
        for t in tasks {
            let task_merged = t.merge_state == MergeState::Merged;
            let branch = names::task_branch(&job.id, &t.slug);
            let attempts = format!("refs/grove/attempts/{}/{}/", job.id, t.slug);
            let mut mine: Vec<(String, bool)> =
                refs.keys().filter(|r| r.starts_with(&attempts)).map(|r| (r.clone(), true)).collect();
            mine.sort();
            // Only the branch grove named for the task, never the integration branch.
            let full = format!("refs/heads/{branch}");
            if t.branch == branch && full != integration && refs.contains_key(&full) {
                mine.insert(0, (full, false));
            }
            for (full, attempt) in mine {
                let Some(oid) = refs.get(&full) else { continue };
                // A squash merge leaves the task's commits out of the integration branch: its
                // merge commit being there is what counts.
                let squashed = !attempt
                    && task_merged
                    && match (&t.merge_commit, &integration_tip) {
                        (Some(c), Some(i)) => git.is_ancestor(mirror, c, i)?,
                        _ => false,
                    };
                let reachable = in_integration.contains(&full) || squashed;
                let kind = if attempt { Kind::Attempt } else { Kind::Branch };
                match ref_verdict(reachable, task_merged, attempt, self.policy.prune_unmerged) {
                    Err(why) => self.keep(Some(&job.id), shown(&full), why),
                    Ok(_) if checked_out.contains(&full) => {
                        self.keep(Some(&job.id), shown(&full), "checked out in a worktree")
                    }
                    Ok(why) => {
                        if self.policy.dry_run
                            || worktree::delete_ref_at(git, mirror, &full, oid, "grove gc")?
                        {
                            self.gone.insert((mirror.to_path_buf(), full.clone()));
                            self.removed(Some(&job.id), kind, shown(&full), 0, why);
                        } else {
                            self.keep(Some(&job.id), shown(&full), "it moved meanwhile");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every mirror of the home: removed when `policy.mirrors` and [`mirror_verdict`] allow,
    /// else pruned and packed.
    fn mirrors(&mut self, jobs: &[JobRow], progress: &mut dyn FnMut(&str)) -> Result<(), CoordError> {
        let dir = self.layout.mirrors();
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
        let mut mirrors: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.') && mirror_name(n))
                    && owned(self.layout.home(), p)
                    && p.join("HEAD").is_file()
            })
            .collect();
        mirrors.sort();
        let n = mirrors.len();
        for (i, m) in mirrors.into_iter().enumerate() {
            progress(&format!("mirror {}/{n}: {}", i + 1, m.display()));
            let users: Vec<&JobRow> = jobs.iter().filter(|j| Path::new(&j.mirror) == m).collect();
            if self.policy.mirrors {
                let facts = self.mirror_facts(&m, &users)?;
                match mirror_verdict(&facts) {
                    Ok(()) => {
                        self.remove_mirror(&m)?;
                        continue;
                    }
                    Err(why) => self.keep(None, m.display().to_string(), why),
                }
            }
            if self.policy.dry_run {
                continue;
            }
            worktree::prune(self.git, &m)?;
            let before = du(&m);
            grove_git::Mirror::maintain(self.git, &m)?;
            let after = du(&m);
            self.report.packed.push(Packed { mirror: m.display().to_string(), before, after });
        }
        Ok(())
    }

    fn mirror_facts(&self, m: &Path, users: &[&JobRow]) -> Result<MirrorFacts, CoordError> {
        let collected = |j: &JobRow| j.collected_at.is_some() || self.report.collected.contains(&j.id);
        let mut f = MirrorFacts {
            uncollected: users.iter().filter(|j| !collected(j)).map(|j| j.id.clone()).collect(),
            ..MirrorFacts::default()
        };
        for (full, oid) in for_each_ref(self.git, m, &["refs/heads/", "refs/grove/"], None)? {
            if self.gone.contains(&(m.to_path_buf(), full.clone())) {
                continue;
            }
            let integration_of =
                users.iter().find(|j| full == format!("refs/heads/{}", j.integration_branch));
            match integration_of {
                Some(j) if self.published(j, m, &oid)? => {}
                Some(_) => f.unpublished.push(full),
                None => f.other_refs.push(full),
            }
        }
        Ok(f)
    }

    /// The job's integration branch, at `tip` in the mirror, is also in its source: in the
    /// person's repository, or on the remote (fetched back into the mirror).
    fn published(&self, job: &JobRow, mirror: &Path, tip: &str) -> Result<bool, CoordError> {
        let full = format!("refs/heads/{}", job.integration_branch);
        if let Some(src) = job.source_dir.as_deref().map(Path::new).filter(|p| p.exists())
            && let Ok(Some(there)) = self.git.ref_target(src, &full)
            && (there == tip || self.git.is_ancestor(src, tip, &there)?)
        {
            return Ok(true);
        }
        let fetched = format!("refs/remotes/origin/{}", job.integration_branch);
        Ok(match self.git.ref_target(mirror, &fetched)? {
            Some(there) => there == tip || self.git.is_ancestor(mirror, tip, &there)?,
            None => false,
        })
    }

    fn remove_mirror(&mut self, m: &Path) -> Result<(), CoordError> {
        let bytes = du(m);
        if !self.policy.dry_run {
            // Out of the way first, so a job starting now clones a fresh one.
            let name = m.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let aside = m.with_file_name(format!(".{name}.removing-{}", std::process::id()));
            std::fs::rename(m, &aside).map_err(Self::io(format!("moving {} aside", m.display())))?;
            std::fs::remove_dir_all(&aside).map_err(Self::io(format!("removing {}", aside.display())))?;
        }
        let why = "no uncollected job uses it; --mirrors";
        self.removed(None, Kind::Mirror, m.display().to_string(), bytes, why);
        Ok(())
    }
}

/// `(ref, object id)` of the refs under `prefixes` in `repo`; with `merged`, only those whose
/// commit is reachable from that commit.
fn for_each_ref(
    git: &Git,
    repo: &Path,
    prefixes: &[&str],
    merged: Option<&str>,
) -> Result<Vec<(String, String)>, CoordError> {
    let merged = merged.map(|m| format!("--merged={m}"));
    let mut args = vec!["for-each-ref", "--format=%(refname) %(objectname)"];
    args.extend(merged.as_deref());
    args.extend(prefixes);
    let out = git.run(repo, args)?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, o)| (r.to_owned(), o.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobTrain, TaskTrain};
    use grove_core::DiffStat;

    fn job(state: &str) -> JobRow {
        JobRow {
            id: JobId::parse("j-0001").expect("id"),
            created_at: 0,
            spec: grove_core::spec::JobSpec::from_toml("t", "").expect("spec"),
            source: "src".into(),
            source_dir: None,
            mirror: "m".into(),
            base: "b".into(),
            integration_branch: "grove/j-0001/integration".into(),
            integration_head: "b".into(),
            state: state.into(),
            warnings: vec![],
            ignored_files: vec![],
            train: JobTrain::default(),
            collected_at: None,
            repo: None,
        }
    }

    fn task(slug: &str, state: TaskState, merge: MergeState) -> TaskRow {
        TaskRow {
            handoffs: Vec::new(),
            job: JobId::parse("j-0001").expect("id"),
            slug: slug.into(),
            ord: 0,
            level: 0,
            title: slug.into(),
            sparse: None,
            files: vec![],
            lines: 0,
            depends_on: vec![],
            branch: format!("grove/j-0001/{slug}"),
            pool: "local".into(),
            placed: None,
            placed_why: None,
            state,
            merge_state: merge,
            attempt: 1,
            turns: 1,
            head: None,
            stat: DiffStat::default(),
            reason: None,
            log_tail: None,
            merge_commit: None,
            conflict_paths: vec![],
            train: TaskTrain::default(),
            agent: Default::default(),
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn only_ended_jobs_old_enough_are_collected() {
        let merged = task("a", TaskState::Succeeded, MergeState::Merged);
        let failed = task("b", TaskState::Failed, MergeState::Skipped);
        let ok = |j: &JobRow, ts: &[TaskRow], age: i64| job_verdict(j, ts, 1_000_000 - age, 1_000_000, DAY);
        assert_eq!(ok(&job("done"), &[merged.clone(), failed.clone()], 86_400), Ok(()));
        let young = ok(&job("done"), std::slice::from_ref(&merged), 3_600).expect_err("too recent");
        assert!(young.contains("ended 1h ago"), "{young}");
        assert!(
            ok(&job("running"), std::slice::from_ref(&merged), 86_400)
                .expect_err("running")
                .contains("is running")
        );
        assert!(ok(&job("paused"), std::slice::from_ref(&merged), 86_400).is_err());
        for s in [TaskState::Queued, TaskState::Running, TaskState::Parked] {
            assert!(ok(&job("done"), &[task("q", s, MergeState::Pending)], 86_400).is_err(), "{s}");
        }
        // Set aside, waiting for a person: not collected until discarded.
        let attention = task("c", TaskState::NeedsAttention, MergeState::Conflict);
        assert!(ok(&job("done"), &[attention], 86_400).expect_err("attention").contains("needs attention"));
        let discarded = task("c", TaskState::NeedsAttention, MergeState::Discarded);
        assert_eq!(ok(&job("done"), &[discarded], 86_400), Ok(()));
        // A manual job's checked task waiting for `grove merge`: the train is not done.
        let waiting = task("d", TaskState::Succeeded, MergeState::Pending);
        assert!(ok(&job("done"), std::slice::from_ref(&waiting), 86_400).is_err());
        // ...but a cancelled job will not merge it any more.
        assert_eq!(ok(&job("cancelled"), &[waiting], 86_400), Ok(()));
        let mut stopped = job("done");
        stopped.train.stopped = Some("conflict".into());
        assert!(ok(&stopped, &[merged], 86_400).expect_err("stopped").contains("merging stopped"));
    }

    #[test]
    fn refs_go_only_when_safe_or_asked() {
        assert!(ref_verdict(true, false, false, false).is_ok());
        assert!(ref_verdict(false, false, false, false).is_err(), "a failed task's work stays");
        assert!(ref_verdict(false, true, false, false).is_err(), "a task branch not in the integration");
        assert!(ref_verdict(false, true, true, false).is_ok(), "a merged task's earlier attempt");
        assert!(ref_verdict(false, false, true, false).is_err());
        assert!(ref_verdict(false, false, false, true).is_ok());
    }

    #[test]
    fn a_mirror_goes_only_with_nothing_of_value_left() {
        assert_eq!(mirror_verdict(&MirrorFacts::default()), Ok(()));
        let used =
            MirrorFacts { uncollected: vec![JobId::parse("j-0002").expect("id")], ..Default::default() };
        assert!(mirror_verdict(&used).expect_err("used").contains("j-0002"));
        let only_here =
            MirrorFacts { unpublished: vec!["refs/heads/grove/j/integration".into()], ..Default::default() };
        assert!(mirror_verdict(&only_here).is_err());
        let refs = MirrorFacts {
            other_refs: (0..5).map(|i| format!("refs/heads/x{i}")).collect(),
            ..Default::default()
        };
        assert!(mirror_verdict(&refs).expect_err("refs").contains("and 2 more"));
        assert!(mirror_name("repo-0a1b2c3d.git") && !mirror_name("repo.git") && !mirror_name("x-123.git"));
    }

    #[test]
    fn only_plain_paths_under_the_home_are_owned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(home.join("worktrees/j/a")).expect("mkdir");
        std::fs::create_dir_all(outside.join("a")).expect("mkdir");
        std::os::unix::fs::symlink(&outside, home.join("worktrees/k")).expect("symlink");
        assert!(owned(&home, &home.join("worktrees/j/a")));
        assert!(!owned(&home, &home), "the home itself");
        assert!(!owned(&home, &home.join("worktrees/k/a")), "through a symlink");
        assert!(!owned(&home, &home.join("worktrees/k")), "a symlink");
        assert!(!owned(&home, &home.join("worktrees/j/../../../outside")));
        assert!(!owned(&home, &outside.join("a")));
    }
}
