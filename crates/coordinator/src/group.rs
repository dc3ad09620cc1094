//! Cross-repository jobs (`[[repos]]`): one change across several repositories. Each
//! repository is a job of its own, `<group>.<name>` (its tasks, mirror, train and integration
//! branch `grove/<group>/integration`), recorded with its place in the order across
//! repositories (`store::RepoOf`). A repository that depends on others waits (job state
//! `waiting`) until every one of them has ended with all its tasks merged; then it runs, its
//! workers given each upstream repository's integration head (`Assignment::upstreams`). A
//! repository whose upstream ended with work not merged does not run: its tasks are cancelled
//! with the reason.
//!
//! Every refusal happens in [`prepare`], before anything is recorded: an unreachable
//! repository or unknown base (named), two repositories with one name or one source, a
//! `depends_on` naming no repository of the job, a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use grove_core::JobId;
use grove_core::layout::Layout;
use grove_core::plan::repos::{self, RepoNode, RepoOrder};
use grove_core::spec::JobSpec;
use grove_core::task::Upstream;
use grove_git::Git;
use tokio::sync::mpsc::UnboundedSender;

use crate::drive::Note;
use crate::store::{JobRow, RepoOf, TaskRow};
use crate::submit::{Prepared, prepare_with_tree};
use crate::{CoordError, Coordinator, job_salt};

/// A cross-repository job looked at before it is recorded: for `grove plan`, and the first
/// half of [`Coordinator::submit_group`].
pub struct PreparedGroup {
    pub id: JobId,
    pub spec: JobSpec,
    /// The repositories in the order they merge (dependencies first), each prepared as a job.
    pub repos: Vec<(String, Prepared)>,
    pub order: RepoOrder,
    /// What the manifests said that grove could not read (named by repository).
    pub warnings: Vec<String>,
    name: String,
    salt: u64,
}

/// Validate a `[[repos]]` spec, prepare each repository as a job of its own (planned with its
/// own selection and split), and order them by the dependencies between them. Refuses, naming
/// the repository, anything one repository's job would refuse.
pub fn prepare(
    git: &Git,
    layout: &Layout,
    spec: JobSpec,
    text: Option<(&str, &str)>,
    cwd: &Path,
) -> Result<PreparedGroup, CoordError> {
    // A repository given by URL is read through a mirror made here; a refusal takes back
    // what this call made (mirrors, and the home when there was none), so bad input leaves
    // nothing behind.
    let home_was = layout.home().exists();
    let mirrors_were: BTreeSet<std::ffi::OsString> = std::fs::read_dir(layout.mirrors())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let prepared = prepare_all(git, layout, spec, text, cwd);
    if prepared.is_err() {
        if !home_was {
            let _ = std::fs::remove_dir_all(layout.home());
        } else if let Ok(dir) = std::fs::read_dir(layout.mirrors()) {
            for e in dir.filter_map(Result::ok).filter(|e| !mirrors_were.contains(&e.file_name())) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    prepared
}

fn prepare_all(
    git: &Git,
    layout: &Layout,
    spec: JobSpec,
    text: Option<(&str, &str)>,
    cwd: &Path,
) -> Result<PreparedGroup, CoordError> {
    spec.validate(text)?;
    let mut prepared: Vec<(String, Prepared)> = Vec::new();
    let mut identities: Vec<(String, String)> = Vec::new();
    let mut interfaces = Vec::new();
    let mut warnings = Vec::new();
    for entry in &spec.repos {
        let name = entry.name();
        let in_repo = |e: CoordError| CoordError::InRepo {
            repo: name.clone(),
            location: entry.source.clone(),
            error: Box::new(e),
        };
        let (one, tree) = prepare_with_tree(git, layout, spec.for_repo(entry), None, cwd).map_err(in_repo)?;
        let identity = identity(git, &one.source);
        if let Some((other, _)) = identities.iter().find(|(_, id)| *id == identity) {
            return Err(CoordError::SameRepo { a: other.clone(), b: name, location: one.source.fetch_url() });
        }
        // What its manifests define and need, from the tree its plan was read from.
        let mut w = Vec::new();
        let interface = repos::interface(&tree, &mut w)
            .map_err(|e| in_repo(CoordError::Plan(grove_core::plan::PlanError::from(e))))?;
        interfaces.push(interface);
        warnings.extend(w.into_iter().map(|w| format!("{name}: {w}")));
        warnings.extend(one.plan.warnings.iter().map(|w| format!("{name}: {w}")));
        identities.push((name.clone(), identity));
        prepared.push((name, one));
    }
    let nodes: Vec<RepoNode<'_>> = spec
        .repos
        .iter()
        .zip(&prepared)
        .zip(&interfaces)
        .map(|((entry, (name, _)), interface)| RepoNode { name, interface, depends_on: &entry.depends_on })
        .collect();
    let order = repos::order(&nodes)?;
    let name = spec.name.clone().unwrap_or_else(|| crate::submit::default_name(&spec));
    let salt = job_salt();
    let id = JobId::new(&name, salt);
    let mut group = PreparedGroup { id, spec, repos: prepared, order, warnings, name, salt };
    group.name_members()?;
    Ok(group)
}

/// What makes two sources one repository: a local one's common git folder (its `.git`,
/// whichever worktree or folder of it was named), a URL as given.
fn identity(git: &Git, source: &grove_git::Source) -> String {
    match source {
        grove_git::Source::Local(dir) => git
            .run(dir, ["rev-parse", "--path-format=absolute", "--git-common-dir"])
            .ok()
            .map(|o| std::path::PathBuf::from(o.stdout.trim()))
            .and_then(|d| std::fs::canonicalize(d).ok())
            .unwrap_or_else(|| dir.clone())
            .display()
            .to_string(),
        grove_git::Source::Url(url) => url.trim_end_matches('/').trim_end_matches(".git").to_owned(),
    }
}

impl PreparedGroup {
    /// Give every repository's job its id, integration branch and place, for the group's id;
    /// the integration branch must not exist in a local repository.
    fn name_members(&mut self) -> Result<(), CoordError> {
        let branch = self.spec.integration_branch(&self.id);
        grove_core::names::check_branch(&branch, "merge.branch").map_err(|e| {
            grove_core::SpecError::Invalid {
                location: None,
                field: "merge.branch".into(),
                message: e.to_string(),
            }
        })?;
        // In the order across repositories: dependencies first.
        let position: BTreeMap<&str, usize> =
            self.order.order.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        self.repos.sort_by_key(|(n, _)| position.get(n.as_str()).copied().unwrap_or(usize::MAX));
        for (name, p) in &mut self.repos {
            p.id = self.id.of_repo(name);
            p.integration_branch.clone_from(&branch);
            let upstream: Vec<String> = self
                .order
                .edges
                .iter()
                .filter(|e| &e.from == name)
                .map(|e| e.to.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let edges = self
                .order
                .edges
                .iter()
                .filter(|e| &e.from == name)
                .map(|e| format!("needs {}: {}", e.to, e.why))
                .collect();
            p.member = Some(RepoOf {
                group: self.id.clone(),
                name: name.clone(),
                ord: position.get(name.as_str()).copied().unwrap_or(0) as u32,
                level: self.order.level.get(name.as_str()).copied().unwrap_or(0),
                upstream,
                edges,
                pr: None,
            });
        }
        Ok(())
    }

    /// The integration branch every repository gets.
    pub fn integration_branch(&self) -> String {
        self.spec.integration_branch(&self.id)
    }
}

impl Coordinator {
    /// Record a prepared cross-repository job: each repository's job (mirror, integration
    /// branch, tasks), those that need others first `waiting`. A group id the state has (or
    /// whose integration branch a local repository has) is replaced by a free one.
    pub fn submit_group(&self, mut g: PreparedGroup) -> Result<Vec<(JobRow, Vec<TaskRow>)>, CoordError> {
        loop {
            let mut taken = !self.store.group(g.id.as_str())?.is_empty();
            for (_, p) in &g.repos {
                taken |= self.store.job_exists(p.id.as_str())?;
                if let grove_git::Source::Local(dir) = &p.source {
                    taken |=
                        self.git.ref_target(dir, &format!("refs/heads/{}", p.integration_branch))?.is_some();
                }
            }
            if !taken {
                break;
            }
            g.salt = g.salt.wrapping_add(1);
            g.id = JobId::new(&g.name, g.salt);
            g.name_members()?;
        }
        let mut out = Vec::new();
        for (_, p) in g.repos {
            out.push(self.submit(p)?);
        }
        Ok(out)
    }

    /// The cross-repository job `group`'s repositories that may run now (their upstream
    /// repositories all ended with every task merged): set `running`, for the caller to
    /// dispatch. Those whose upstream ended with work not merged are cancelled, with the
    /// reason, and so in turn their own dependents.
    pub fn start_ready(
        &self,
        group: &JobId,
        notes: &UnboundedSender<Note>,
    ) -> Result<Vec<JobId>, CoordError> {
        let mut ready = Vec::new();
        loop {
            let members = self.store.group(group.as_str())?;
            let by_name: BTreeMap<&str, &JobRow> =
                members.iter().filter_map(|j| j.repo.as_ref().map(|r| (r.name.as_str(), j))).collect();
            let mut changed = false;
            for job in members.iter().filter(|j| j.state == "waiting") {
                let Some(r) = &job.repo else { continue };
                let mut blocked = Vec::new();
                let mut waiting = false;
                for up in &r.upstream {
                    let Some(u) = by_name.get(up.as_str()) else {
                        blocked.push(format!("{up} is not in the job"));
                        continue;
                    };
                    match u.state.as_str() {
                        "running" | "waiting" => waiting = true,
                        "done" => {
                            let unmerged = self.unmerged(&u.id)?;
                            if !unmerged.is_empty() {
                                blocked.push(format!(
                                    "{up} ended with tasks not merged: {}",
                                    unmerged.join(", ")
                                ));
                            }
                        }
                        other => blocked.push(format!("{up} ended {other}")),
                    }
                }
                if !blocked.is_empty() {
                    let why = format!("not started: it needs {}", blocked.join("; "));
                    self.cancel_unstarted(&job.id, &why, notes)?;
                    changed = true;
                } else if !waiting {
                    self.store.set_job_state(&job.id, "running")?;
                    ready.push(job.id.clone());
                }
            }
            if !changed {
                return Ok(ready);
            }
        }
    }

    /// Cancel one repository that has not started (`grove cancel GROUP.NAME`); the
    /// repositories waiting for it are cancelled by the next [`Coordinator::start_ready`].
    pub fn cancel_repo(
        &self,
        job: &JobId,
        why: &str,
        notes: &UnboundedSender<Note>,
    ) -> Result<(), CoordError> {
        self.cancel_unstarted(job, why, notes)?;
        if let Some(r) = self.store.job(job.as_str())?.repo {
            self.start_ready(&r.group, notes)?;
        }
        Ok(())
    }

    /// Cancel the repositories of `group` still waiting for others (the job was cancelled).
    pub fn cancel_waiting(
        &self,
        group: &JobId,
        why: &str,
        notes: &UnboundedSender<Note>,
    ) -> Result<(), CoordError> {
        for job in self.store.group(group.as_str())?.iter().filter(|j| j.state == "waiting") {
            self.cancel_unstarted(&job.id, why, notes)?;
        }
        Ok(())
    }

    /// A repository's job that never started ends cancelled: its tasks with `why`, then the job.
    fn cancel_unstarted(
        &self,
        job: &JobId,
        why: &str,
        notes: &UnboundedSender<Note>,
    ) -> Result<(), CoordError> {
        for t in self.store.tasks(job)? {
            if !t.state.is_terminal() {
                self.cancelled(job, &t, why, notes)?;
            }
        }
        self.store.set_job_state(job, "cancelled")?;
        let _ = notes.send(Note::Ended { job: job.clone(), state: "cancelled".into() });
        Ok(())
    }

    /// The tasks of `job` that need something more (not merged, not empty, not a variant
    /// another one won over), as `slug (state)`.
    fn unmerged(&self, job: &JobId) -> Result<Vec<String>, CoordError> {
        Ok(self
            .store
            .tasks(job)?
            .into_iter()
            .filter(|t| !t.needs_nothing_more())
            .map(|t| format!("{} ({})", t.slug, t.state.as_str()))
            .collect())
    }

    /// What a task of `job`'s repository gets of the repositories it depends on: every one of
    /// them (its upstreams and theirs), each at its integration head.
    pub(crate) fn upstreams(&self, job: &JobRow) -> Result<Vec<Upstream>, CoordError> {
        let Some(r) = &job.repo else { return Ok(Vec::new()) };
        let members = self.store.group(r.group.as_str())?;
        let by_name: BTreeMap<&str, &JobRow> =
            members.iter().filter_map(|j| j.repo.as_ref().map(|r| (r.name.as_str(), j))).collect();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = r.upstream.iter().map(String::as_str).collect();
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            if let Some(u) = by_name.get(name).and_then(|j| j.repo.as_ref()) {
                todo.extend(u.upstream.iter().map(String::as_str));
            }
        }
        let mut out = Vec::new();
        for name in seen {
            let Some(u) = by_name.get(name) else { continue };
            out.push(Upstream {
                name: name.to_owned(),
                mirror: u.mirror.clone().into(),
                remote: match &self.git_url {
                    Some(base) => crate::githttp::mirror_url(base, Path::new(&u.mirror)),
                    None => format!("file://{}", u.mirror),
                },
                commit: u.integration_head.clone(),
            });
        }
        Ok(out)
    }
}
