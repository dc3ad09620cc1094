//! Submitting a job: everything that can be refused is checked before anything is created.

use std::path::Path;

use globset::{Glob, GlobSetBuilder};
use grove_core::agents::{self, AgentDefinition};
use grove_core::layout::Layout;
use grove_core::plan::{Plan, PlanError};
use grove_core::spec::JobSpec;
use grove_core::task::MergeState;
use grove_core::{JobId, TaskState, names};
use grove_git::{CommitTree, Git, Mirror, Source, worktree};

use crate::store::{JobRow, TaskRow};
use crate::{CoordError, Coordinator, job_salt};

/// A job looked at before it is recorded: for `grove plan`, and the first half of submit.
pub struct Prepared {
    pub spec: JobSpec,
    pub source: Source,
    pub base: String,
    pub plan: Plan,
    /// The job's id, and its integration branch (checked: a valid name that does not exist in
    /// a local source). Submit keeps them unless the id is taken in the state.
    pub id: JobId,
    pub integration_branch: String,
    /// The ignored files of a local source to copy into workspaces (patterns checked).
    pub ignored_files: Vec<String>,
    /// The job's name and the salt of its id, should submit need another id.
    name: String,
    salt: u64,
    /// A mirror made while preparing (sources given by URL need one to be read).
    mirror: Option<Mirror>,
    /// What the source URL's userinfo carried, taken out of the spec: used for the fetches of
    /// this submission, never stored.
    credential: Option<grove_core::urls::Credential>,
    /// For one repository of a cross-repository job: which (`crate::group`).
    pub(crate) member: Option<crate::store::RepoOf>,
}

/// git with the source's credential, when its URL carried one.
fn fetching(git: &Git, source: &Source, credential: Option<&grove_core::urls::Credential>) -> Git {
    match (credential, source) {
        (Some(c), Source::Url(url)) => git.with_credential(url, c.clone()),
        _ => git.clone(),
    }
}

/// The file holding extra patterns of ignored files to copy into workspaces.
pub const WORKTREE_INCLUDE: &str = ".worktreeinclude";

/// Validate a spec, resolve its repository and base, and plan it: everything that can refuse
/// a job (the spec, the repository and base, escaping paths, an empty selection, the
/// integration branch's name and its existence, the ignored-file patterns), before any state
/// is opened. Creates nothing for a local repository; for a URL, the mirror (grove's cache) is
/// made to read the tree.
pub fn prepare(
    git: &Git,
    layout: &Layout,
    spec: JobSpec,
    text: Option<(&str, &str)>,
    cwd: &Path,
) -> Result<Prepared, CoordError> {
    prepare_with_tree(git, layout, spec, text, cwd).map(|(p, _)| p)
}

/// [`prepare`], and the base commit's tree it read (for what a cross-repository job reads of
/// it too).
pub(crate) fn prepare_with_tree(
    git: &Git,
    layout: &Layout,
    mut spec: JobSpec,
    text: Option<(&str, &str)>,
    cwd: &Path,
) -> Result<(Prepared, CommitTree), CoordError> {
    spec.validate(text)?;
    if !spec.repos.is_empty() {
        // Several repositories are prepared, each as a job, by `group::prepare`.
        return Err(CoordError::Spec(grove_core::SpecError::Invalid {
            location: None,
            field: "repos".into(),
            message: "a job of several repositories ([[repos]]) is planned per repository: run `grove plan` \
                      without --coordinator (a coordinator runs such jobs; it plans one repository)"
                .into(),
        }));
    }
    // A credential in the URL is taken out here, before anything is stored or shown.
    let (location, credential) =
        grove_core::urls::split_credential(spec.repo.source.as_deref().unwrap_or("."));
    spec.repo.source = Some(location.clone());
    let source = Source::parse(git, &location, cwd)?;
    let fetching = fetching(git, &source, credential.as_ref());
    let (base, tree_repo, mirror) = match &source {
        Source::Local(dir) => (git.resolve_commit(dir, spec.base())?, dir.clone(), None),
        Source::Url(_) => {
            let m = Mirror::ensure(&fetching, &layout.mirrors(), &source)?;
            (m.resolve(git, spec.base())?, m.path.clone(), Some(m))
        }
    };
    let tree = CommitTree::load(&tree_repo, &base)?;
    check_symlinks(&spec, &tree)?;
    spec.agent.definition = custom_agent(&spec, &tree)?;
    let plan = grove_core::plan::plan(&tree, &spec.select, &spec.split)?;
    if plan.tasks.is_empty() {
        return Err(CoordError::NothingSelected { warnings: plan.warnings });
    }
    let name = spec.name.clone().unwrap_or_else(|| default_name(&spec));
    let salt = job_salt();
    let id = JobId::new(&name, salt);
    let integration_branch = spec.integration_branch(&id);
    names::check_branch(&integration_branch, "merge.branch").map_err(|e| grove_core::SpecError::Invalid {
        location: None,
        field: "merge.branch".into(),
        message: e.to_string(),
    })?;
    if let Source::Local(dir) = &source
        && git.ref_target(dir, &format!("refs/heads/{integration_branch}"))?.is_some()
    {
        return Err(CoordError::BranchExists { branch: integration_branch, repo: dir.display().to_string() });
    }
    let ignored_files = match &source {
        Source::Local(dir) => ignored_files(git, &spec, dir)?,
        Source::Url(_) => Vec::new(),
    };
    let p = Prepared {
        spec,
        source,
        base,
        plan,
        id,
        integration_branch,
        ignored_files,
        name,
        salt,
        mirror,
        credential,
        member: None,
    };
    Ok((p, tree))
}

impl Coordinator {
    /// Record a prepared job: mirror, integration branch, tasks. Returns the job and its tasks.
    /// Nothing is refused here ([`prepare`] did that): an id the state already has is replaced
    /// by a free one, whose integration branch (when the branch names the job) is free too.
    pub fn submit(&self, p: Prepared) -> Result<(JobRow, Vec<TaskRow>), CoordError> {
        let span = tracing::info_span!(parent: None, "job", grove.job = %p.id, grove.job.name = %p.name);
        let _in = span.enter();
        let (mut id, mut branch, mut salt) = (p.id.clone(), p.integration_branch.clone(), p.salt);
        let taken = |id: &JobId, branch: &str| -> Result<bool, CoordError> {
            if self.store.job_exists(id.as_str())? {
                return Ok(true);
            }
            Ok(match &p.source {
                Source::Local(dir) if branch != p.integration_branch => {
                    self.git.ref_target(dir, &format!("refs/heads/{branch}"))?.is_some()
                }
                _ => false,
            })
        };
        while taken(&id, &branch)? {
            salt = salt.wrapping_add(1);
            id = JobId::new(&p.name, salt);
            branch = p.spec.integration_branch(&id);
        }
        let full = format!("refs/heads/{branch}");
        let ignored_files = p.ignored_files.clone();
        let fetching = fetching(&self.git, &p.source, p.credential.as_ref());
        let mirror = match p.mirror {
            Some(m) => m,
            None => Mirror::ensure(&fetching, &self.layout.mirrors(), &p.source)?,
        };
        mirror.ensure_commit(&fetching, &p.source, &p.base)?;
        self.git.update_ref(&mirror.path, &full, &p.base, None)?;

        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let job = JobRow {
            id: id.clone(),
            created_at,
            spec: p.spec.clone(),
            source: p.source.fetch_url(),
            source_dir: match &p.source {
                Source::Local(d) => Some(d.display().to_string()),
                Source::Url(_) => None,
            },
            mirror: mirror.path.display().to_string(),
            base: p.base.clone(),
            integration_branch: branch,
            integration_head: p.base.clone(),
            // A repository of a cross-repository job waits to be started (`crate::group`).
            state: if p.member.is_some() { "waiting" } else { "running" }.into(),
            warnings: p.plan.warnings.clone(),
            ignored_files,
            train: Default::default(),
            collected_at: None,
            repo: p.member.clone(),
        };
        let pool = p.spec.run.pool.clone().unwrap_or_else(|| "local".into());
        let mut tasks: Vec<TaskRow> = Vec::new();
        for (i, t) in p.plan.tasks.iter().enumerate() {
            let row = task_row(&id, i, t, &pool);
            if p.spec.variants.is_empty() {
                tasks.push(row);
                continue;
            }
            // One row per variant: its own attempt and branch, the task's place in the order.
            for v in &p.spec.variants {
                let mut r = row.clone();
                r.slug = format!("{}.{}", t.slug, v.name);
                r.branch = names::task_branch(&id, &r.slug);
                r.train.variant = Some(v.name.clone());
                r.train.variant_of = Some(t.slug.clone());
                tasks.push(r);
            }
        }
        self.store.insert_job(&job, &tasks)?;
        Ok((job, tasks))
    }
}

/// The ignored files of the source to copy into workspaces: those matching the job's
/// `include_ignored` patterns or the source's `.worktreeinclude`.
fn ignored_files(git: &Git, spec: &JobSpec, dir: &Path) -> Result<Vec<String>, CoordError> {
    let mut patterns = spec.run.include_ignored.clone();
    match std::fs::read_to_string(dir.join(WORKTREE_INCLUDE)) {
        Ok(text) => patterns.extend(
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CoordError::Io { what: format!("reading {WORKTREE_INCLUDE}"), source: e }),
    }
    matching_ignored(git, &patterns, dir)
}

/// The git-ignored files of the working tree `dir` that match gitignore-like `patterns`.
pub fn matching_ignored(git: &Git, patterns: &[String], dir: &Path) -> Result<Vec<String>, CoordError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let set = gitignore_globs(patterns)?;
    let files = worktree::ignored_files(git, dir)?;
    Ok(files.into_iter().filter(|f| set.is_match(f)).collect())
}

/// gitignore-like patterns as globs: `name` matches at any depth, `dir/` everything below,
/// `a/b` and `/a` are anchored at the root.
fn gitignore_globs(patterns: &[String]) -> Result<globset::GlobSet, CoordError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let dir_only = p.ends_with('/');
        let core = p.trim_end_matches('/');
        let anchored = core.starts_with('/') || core.contains('/');
        let core = core.trim_start_matches('/');
        let base = if anchored { core.to_owned() } else { format!("**/{core}") };
        let mut add = |g: String| {
            Glob::new(&g).map(|g| {
                b.add(g);
            })
        };
        let res = if dir_only {
            add(format!("{base}/**"))
        } else {
            add(base.clone()).and_then(|()| add(format!("{base}/**")))
        };
        res.map_err(|e| {
            CoordError::Spec(grove_core::SpecError::Invalid {
                location: None,
                field: "run.include_ignored".into(),
                message: format!("{p:?}: {e}"),
            })
        })?;
    }
    b.build().map_err(|e| {
        CoordError::Spec(grove_core::SpecError::Invalid {
            location: None,
            field: "run.include_ignored".into(),
            message: e.to_string(),
        })
    })
}

/// The agent definitions of a repository (a path or URL, as `repo.source` takes it) at `base`:
/// the commit id and what was found. For `grove agents`; reads the same tree as `prepare`.
pub fn repository_agents(
    git: &Git,
    layout: &Layout,
    location: &str,
    base: &str,
    cwd: &Path,
) -> Result<(String, agents::Found), CoordError> {
    let source = Source::parse(git, location, cwd)?;
    let (commit, tree_repo) = match &source {
        Source::Local(dir) => (git.resolve_commit(dir, base)?, dir.clone()),
        Source::Url(_) => {
            let m = Mirror::ensure(git, &layout.mirrors(), &source)?;
            (m.resolve(git, base)?, m.path.clone())
        }
    };
    let tree = CommitTree::load(&tree_repo, &commit)?;
    let found = agents::discover(&tree).map_err(PlanError::Tree)?;
    Ok((commit, found))
}

/// The definition of the job's custom agent (`agent.custom`) at the base commit, parsed; a
/// missing or broken one refuses the job here, before anything is made.
fn custom_agent(spec: &JobSpec, tree: &CommitTree) -> Result<Option<AgentDefinition>, CoordError> {
    let Some(name) = &spec.agent.custom else { return Ok(None) };
    let found = agents::discover(tree).map_err(PlanError::Tree)?;
    match found.get(name) {
        Ok(Some(d)) => Ok(Some(d.clone())),
        Ok(None) => Err(CoordError::NoCustomAgent {
            name: name.clone(),
            defined: found.definitions.iter().map(|d| d.name.clone()).collect(),
        }),
        Err(e) => Err(CoordError::BadCustomAgent { name: name.clone(), source: e.clone() }),
    }
}

/// Refuse a selection that names a path through a symlink leaving the repository.
fn check_symlinks(spec: &JobSpec, tree: &CommitTree) -> Result<(), CoordError> {
    let escaping = tree.escaping_symlinks().map_err(PlanError::Tree)?;
    if escaping.is_empty() {
        return Ok(());
    }
    let literal = |s: &str| -> String {
        let cut = s.find(['*', '?', '[', '{']).unwrap_or(s.len());
        s[..cut].trim_end_matches('/').to_owned()
    };
    let named = spec
        .select
        .files
        .iter()
        .map(|f| ("select.files", f.clone()))
        .chain(spec.select.include.iter().map(|g| ("select.include", literal(g))));
    for (field, path) in named {
        if path.is_empty() {
            continue;
        }
        for (link, target) in &escaping {
            if path == *link || path.starts_with(&format!("{link}/")) {
                return Err(CoordError::EscapingSymlink {
                    field,
                    path,
                    link: link.clone(),
                    target: target.clone(),
                });
            }
        }
    }
    Ok(())
}

pub(crate) fn default_name(spec: &JobSpec) -> String {
    if let Some(p) = &spec.prompt {
        let words: Vec<&str> = p.split_whitespace().take(4).collect();
        if !words.is_empty() {
            return words.join(" ");
        }
    }
    spec.agent.kind.map_or("job", |k| k.as_str()).to_owned()
}

fn task_row(job: &JobId, i: usize, t: &grove_core::plan::PlannedTask, pool: &str) -> TaskRow {
    TaskRow {
        handoffs: Vec::new(),
        job: job.clone(),
        slug: t.slug.clone(),
        ord: i as u32,
        level: t.level,
        title: t.title.clone(),
        sparse: t.sparse.clone(),
        files: t.files.clone(),
        lines: t.lines,
        depends_on: t.depends_on.clone(),
        branch: names::task_branch(job, &t.slug),
        pool: pool.to_owned(),
        placed: None,
        placed_why: None,
        state: TaskState::Queued,
        merge_state: MergeState::Pending,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_patterns_match_like_git() {
        let set =
            gitignore_globs(&[".env".into(), "target/".into(), "config/local.toml".into()]).expect("globs");
        assert!(set.is_match(".env"));
        assert!(set.is_match("crates/a/.env"));
        assert!(set.is_match("target/debug/x"));
        assert!(set.is_match("crates/a/target/x"));
        assert!(set.is_match("config/local.toml"));
        assert!(!set.is_match("sub/config/local.toml"));
        assert!(!set.is_match("src/env.rs"));
    }
}
