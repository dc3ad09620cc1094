//! The review verbs that change state: discard a task's branch, let a manual job merge, push
//! the integration branch. None of them touches a branch grove did not create, and none
//! force-pushes.

use std::path::Path;

use grove_core::task::MergeState;
use grove_core::{JobId, TaskState};
use grove_git::Git;
use grove_git::worktree::{self, Deleted};

use crate::store::{JobRow, Store, TaskRow};
use crate::{CoordError, Coordinator, StoreError};

/// What discarding one task did.
#[derive(Debug, Clone, Default)]
pub struct Discard {
    pub task: String,
    /// What was removed, one line each (a worktree, a branch in the mirror or the repository).
    pub removed: Vec<String>,
    /// What was left alone, and why.
    pub kept: Vec<String>,
}

impl Coordinator {
    /// Discard tasks of `job`: their worktrees and branches (grove's own: `grove/<job>/<task>`
    /// in the mirror, and in the person's repository while it still points where grove put
    /// it and is not checked out). The commits stay reachable in the mirror under
    /// `refs/grove/attempts/`. A merged or unfinished task is refused before anything changes.
    pub fn discard(&self, job: &JobId, slugs: &[String]) -> Result<Vec<Discard>, CoordError> {
        self.discard_as(job, slugs, "discarded")
    }

    /// [`Coordinator::discard`], recording `why`.
    pub(crate) fn discard_as(
        &self,
        job: &JobId,
        slugs: &[String],
        why: &str,
    ) -> Result<Vec<Discard>, CoordError> {
        let row = self.store.job(job.as_str())?;
        let tasks = self.store.tasks(job)?;
        let mut chosen = Vec::new();
        for s in slugs {
            let t = tasks
                .iter()
                .find(|t| &t.slug == s)
                .ok_or_else(|| StoreError::NoTask(format!("{job}/{s}")))?;
            let refuse = |why: &str| CoordError::Refused { task: format!("{job}/{s}"), why: why.into() };
            if t.merge_state == MergeState::Merged {
                return Err(refuse(
                    "is merged into the integration branch; discarding its branch would not take it out",
                ));
            }
            if !t.state.is_terminal() {
                return Err(refuse("has not ended (cancel the job first, or wait)"));
            }
            chosen.push(t.clone());
        }
        let mirror = Path::new(&row.mirror);
        let mut out = Vec::new();
        for t in chosen {
            let mut d = Discard { task: t.slug.clone(), ..Discard::default() };
            let wt = self.layout.worktree(job, &t.slug);
            if wt.exists() {
                worktree::remove(&self.git, mirror, &wt)?;
                d.removed.push(format!("worktree {}", wt.display()));
            }
            let full = format!("refs/heads/{}", t.branch);
            let tip = self.git.ref_target(mirror, &full)?;
            if let Some(tip) = &tip {
                if *tip != row.base {
                    let keep = format!("refs/grove/attempts/{job}/{}/{}", t.slug, t.attempt);
                    if self.git.ref_target(mirror, &keep)?.as_deref() != Some(tip.as_str()) {
                        self.git.update_ref(mirror, &keep, tip, None).or_else(|_| {
                            // An older record under that name: keep this tip beside it.
                            let alt = format!("{keep}-discarded");
                            self.git.update_ref(mirror, &alt, tip, None)
                        })?;
                    }
                }
                if worktree::delete_branch(&self.git, mirror, &t.branch, Some(tip))? == Deleted::Yes {
                    d.removed.push(format!("branch {} in grove's mirror", t.branch));
                }
            }
            if let Some(src) = &row.source_dir {
                let src = Path::new(src);
                match worktree::delete_branch(&self.git, src, &t.branch, tip.as_deref())? {
                    Deleted::Yes => d.removed.push(format!("branch {} in {}", t.branch, src.display())),
                    Deleted::Absent => {}
                    Deleted::Moved { to } => d.kept.push(format!(
                        "branch {} in {}: it moved to {} since grove published it",
                        t.branch,
                        src.display(),
                        &to[..to.len().min(12)]
                    )),
                    Deleted::CheckedOut => d.kept.push(format!(
                        "branch {} in {}: it is checked out there",
                        t.branch,
                        src.display()
                    )),
                }
            }
            self.store.set_discarded(job, &t.slug, why)?;
            out.push(d);
        }
        Ok(out)
    }

    /// `grove pick TASK VARIANT`: that variant merges (when the train reaches it), the others
    /// are discarded. Refused unless the variant passed and no variant of the task is merged.
    pub fn pick(&self, job: &JobId, task: &str, variant: &str) -> Result<(), CoordError> {
        let tasks = self.store.tasks(job)?;
        let rows: Vec<_> = tasks.iter().filter(|t| t.train.variant_of.as_deref() == Some(task)).collect();
        let refuse = |why: String| CoordError::Refused { task: format!("{job}/{task}"), why };
        if rows.is_empty() {
            return Err(if tasks.iter().any(|t| t.slug == task) {
                refuse("has no variants".into())
            } else {
                StoreError::NoTask(format!("{job}/{task}")).into()
            });
        }
        let names = || rows.iter().filter_map(|r| r.train.variant.clone()).collect::<Vec<_>>().join(", ");
        let Some(chosen) = rows.iter().find(|r| r.train.variant.as_deref() == Some(variant)) else {
            return Err(refuse(format!("has no variant {variant:?} (it has {})", names())));
        };
        if let Some(m) = rows.iter().find(|r| matches!(r.merge_state, MergeState::Merged | MergeState::Empty))
        {
            return Err(refuse(format!(
                "variant {} is already merged",
                m.train.variant.as_deref().unwrap_or_default()
            )));
        }
        if let Some(p) = rows.iter().find(|r| r.train.picked && r.slug != chosen.slug) {
            return Err(refuse(format!(
                "variant {} is already picked",
                p.train.variant.as_deref().unwrap_or_default()
            )));
        }
        if chosen.state != grove_core::TaskState::Succeeded {
            return Err(refuse(format!("variant {variant} did not pass (it is {})", chosen.state)));
        }
        self.store.set_picked(job, &chosen.slug)?;
        Ok(())
    }

    /// `grove merge`: a manual job's tasks may merge from now on, and a job whose merging
    /// stopped on a conflict goes on.
    pub fn approve_merge(&self, job: &JobId) -> Result<(), CoordError> {
        self.store.set_merge_approved(job)?;
        self.store.set_merge_stopped(job, None)?;
        Ok(())
    }

    /// Push the job's integration branch to `remote` of the person's repository (default
    /// `origin`), or to the job's URL when it came from one. Never forced: a remote branch
    /// that moved elsewhere refuses the push. Returns where it went.
    pub fn push(&self, job: &JobId, remote: Option<&str>) -> Result<String, CoordError> {
        let row = self.store.job(job.as_str())?;
        let spec = format!("refs/heads/{b}:refs/heads/{b}", b = row.integration_branch);
        let (dir, to) = match &row.source_dir {
            Some(src) => (src.clone(), remote.unwrap_or("origin").to_owned()),
            None => (row.mirror.clone(), remote.map_or_else(|| row.source.clone(), str::to_owned)),
        };
        let dir = Path::new(&dir);
        let full = format!("refs/heads/{}", row.integration_branch);
        if self.git.ref_target(dir, &full)?.is_none() {
            return Err(CoordError::Refused {
                task: job.to_string(),
                why: format!("{} is not in {} yet", row.integration_branch, dir.display()),
            });
        }
        if row.source_dir.is_none() {
            // Pushing from the mirror: its config (ssh command, URL rewrites) as grove keeps it.
            grove_git::Mirror::protect(&self.git, dir)?;
        }
        // A credential in a URL is used for this push only, and never shown.
        let (to, credential) = grove_core::urls::split_credential(&to);
        check_push_target(&to).map_err(|why| CoordError::Refused { task: job.to_string(), why })?;
        let git = match credential {
            Some(c) => self.git.with_credential(&to, c),
            None => self.git.clone(),
        };
        git.run(dir, ["push", "--quiet", "--porcelain", "--no-verify", "--", &to, &spec])?;
        Ok(to)
    }
}

/// Where `grove push` may push: a remote's name, or a URL or scp-like location git reaches
/// over a network or a path; not an option, not git's `ext::` or `fd::` transports.
pub fn check_push_target(to: &str) -> Result<(), String> {
    if to.is_empty() || to.len() > 4096 {
        return Err("the remote is empty or longer than 4096 bytes".into());
    }
    if to.starts_with('-') || to.chars().any(char::is_control) {
        return Err(format!("{to:?} is not a remote (an option or a control character)"));
    }
    if to
        .split_once("::")
        .is_some_and(|(t, _)| t.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)))
    {
        return Err(format!("{to:?}: git's transport helpers (ext::, fd::) are not used by grove"));
    }
    Ok(())
}

/// Which tasks `grove discard` names: by name, and by state in one job.
#[derive(Debug, Clone, Default)]
pub struct DiscardSelection {
    /// (job, slugs), in the order given.
    pub chosen: Vec<(JobId, Vec<String>)>,
    /// States were asked for and this job has no task in them.
    pub nothing_in: Option<JobId>,
}

/// Resolve `grove discard`'s arguments: `names` (JOB/TASK or TASK), plus with `failed` /
/// `needs_attention` every such task of `job` (default: the newest job) not yet discarded.
pub fn discard_selection(
    store: &Store,
    names: &[String],
    failed: bool,
    needs_attention: bool,
    job: Option<&str>,
) -> Result<DiscardSelection, CoordError> {
    let mut sel = DiscardSelection::default();
    let mut add = |job: &JobId, slug: String| match sel.chosen.iter_mut().find(|(j, _)| j == job) {
        Some((_, v)) => {
            if !v.contains(&slug) {
                v.push(slug)
            }
        }
        None => sel.chosen.push((job.clone(), vec![slug])),
    };
    for name in names {
        let t = store.find_task(name)?;
        add(&t.job, t.slug);
    }
    if failed || needs_attention {
        let job = store.job_or_latest(job)?;
        let picked: Vec<_> = store
            .tasks(&job.id)?
            .into_iter()
            .filter(|t| {
                t.merge_state != MergeState::Discarded
                    && ((failed && t.state == TaskState::Failed)
                        || (needs_attention && t.state == TaskState::NeedsAttention))
            })
            .collect();
        let empty = picked.is_empty();
        for t in picked {
            add(&job.id, t.slug);
        }
        if empty && names.is_empty() {
            sel.nothing_in = Some(job.id);
        }
    }
    Ok(sel)
}

/// The job and the variant rows of `name` (JOB/TASK, or TASK: the newest job with variants
/// of that task).
pub fn variants_of(store: &Store, name: &str) -> Result<(JobRow, String, Vec<TaskRow>), CoordError> {
    let (jobs, task) = match name.split_once('/') {
        Some((job, task)) => (vec![store.job(job)?], task),
        None => (store.jobs()?.into_iter().rev().collect(), name),
    };
    for job in jobs {
        let rows: Vec<TaskRow> = store
            .tasks(&job.id)?
            .into_iter()
            .filter(|t| t.train.variant_of.as_deref() == Some(task))
            .collect();
        if !rows.is_empty() {
            return Ok((job, task.to_owned(), rows));
        }
    }
    Err(CoordError::Refused {
        task: name.to_owned(),
        why: "no task of that name has variants (see `grove status JOB`)".into(),
    })
}

/// What `grove diff` compares: a task's branch tip with the commit it started from.
#[derive(Debug, Clone)]
pub struct DiffTarget {
    pub job: JobRow,
    pub task: TaskRow,
    pub base: String,
    pub head: String,
}

impl DiffTarget {
    /// Find the task `name` (JOB/TASK or TASK) and its branch in grove's mirror. A discarded
    /// task says where its commits went; a task without a branch yet is refused.
    pub fn find(store: &Store, git: &Git, name: &str) -> Result<DiffTarget, CoordError> {
        let task = store.find_task(name)?;
        let job = store.job(task.job.as_str())?;
        let full = format!("{}/{}", task.job, task.slug);
        if task.merge_state == MergeState::Discarded {
            return Err(CoordError::Refused {
                task: full,
                why: format!(
                    "was discarded ({}); its last commits are under refs/grove/attempts/{}/{}/ in {}",
                    task.reason.as_deref().unwrap_or("discarded"),
                    task.job,
                    task.slug,
                    job.mirror
                ),
            });
        }
        let head = git
            .ref_target(Path::new(&job.mirror), &format!("refs/heads/{}", task.branch))?
            .ok_or_else(|| CoordError::Refused {
                task: full,
                why: format!("{} has no branch yet (state: {})", task.branch, task.state),
            })?;
        let base = task.base(&job).to_owned();
        Ok(DiffTarget { job, task, base, head })
    }

    fn mirror(&self) -> &Path {
        Path::new(&self.job.mirror)
    }

    /// The changed files with lines added and removed (`None` for a binary file).
    pub fn files(&self, git: &Git) -> Result<Vec<DiffFile>, CoordError> {
        let out = git.run(
            self.mirror(),
            [
                "diff",
                "--numstat",
                "-z",
                "--no-renames",
                "--no-ext-diff",
                "--no-textconv",
                &self.base,
                &self.head,
                "--",
            ],
        )?;
        Ok(out
            .stdout
            .split('\0')
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                let (a, d, p) = (f.next()?, f.next()?, f.next()?);
                Some(DiffFile { path: p.to_owned(), insertions: a.parse().ok(), deletions: d.parse().ok() })
            })
            .collect())
    }

    /// The arguments of `git diff` that print the stat, then (unless `stat_only`) the patch:
    /// the embedded `grove diff` runs them under git's pager, the daemon returns their output.
    /// `color`: `Some` forces git's colors on or off; `None` leaves it to git (a terminal).
    pub fn args(&self, stat_only: bool, color: Option<bool>) -> Vec<String> {
        // Nothing the mirror's config or attributes name (a diff program, textconv) runs.
        let mut args = ["diff", "--no-ext-diff", "--no-textconv", "--stat"].map(str::to_owned).to_vec();
        if !stat_only {
            args.push("--patch".into());
        }
        match color {
            Some(true) => args.push("--color=always".into()),
            Some(false) => args.push("--no-color".into()),
            None => {}
        }
        args.extend([self.base.clone(), self.head.clone(), "--".into()]);
        args
    }

    /// What [`DiffTarget::args`] prints.
    pub fn text(&self, git: &Git, stat_only: bool, color: bool) -> Result<String, CoordError> {
        Ok(git.run(self.mirror(), self.args(stat_only, Some(color)))?.stdout)
    }
}

/// One changed file.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffFile {
    pub path: String,
    pub insertions: Option<u64>,
    pub deletions: Option<u64>,
}
