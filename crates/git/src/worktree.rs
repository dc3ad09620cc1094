//! Task workspaces and the per-turn commit.
//!
//! A workspace is a repository of its own at the workspace's folder (its git dir is `.git` in
//! it), whose objects are borrowed from the mirror (`objects/info/alternates`), sparse where the
//! task's scope allows; grove pushes its branch into the mirror after each checkpoint. Nothing
//! in it is shared with another task or with the mirror: what an agent writes into its config,
//! hooks or attributes stays in its own workspace, and grove's own git there reads only the
//! inert part of its config ([`protect`]). Workspaces of older grove versions, linked worktrees
//! of the mirror, are still removed properly.

use std::path::{Path, PathBuf};

use crate::cli::{Git, GitError, Repo, nul_fields, sanitize_config, workspace_git_dir};

/// Who grove's checkpoint commits are by.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity { name: "grove".into(), email: "grove@localhost".into() }
    }
}

/// How a worktree was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkout {
    /// The branch was new and starts at the base commit.
    Fresh,
    /// The branch existed (an earlier attempt's checkpoints); work continues from its tip.
    Resumed,
}

/// The config keys a workspace keeps when grove's git runs there: format, layout, the sparse
/// checkout, and its remote (for a clone). Nothing that names a program to run.
const WORKSPACE_KEYS: [&str; 18] = [
    "core.repositoryformatversion",
    "core.filemode",
    "core.bare",
    "core.logallrefupdates",
    "core.symlinks",
    "core.ignorecase",
    "core.precomposeunicode",
    "core.sparsecheckout",
    "core.sparsecheckoutcone",
    "extensions.worktreeconfig",
    "extensions.objectformat",
    "extensions.partialclone",
    "index.sparse",
    "remote.*.url",
    "remote.*.fetch",
    "remote.*.promisor",
    "remote.*.partialclonefilter",
    "branch.*.merge",
];

/// Make the workspace's git dir safe for grove's own git, after an agent had it: `.git` must be
/// the folder grove made (else [`GitError::Tampered`]); its config keeps only
/// [`WORKSPACE_KEYS`] (an alias, hooks path, filter, diff or merge driver, `core.worktree`,
/// `include.path`, `url.*.insteadOf` the agent set are dropped) and `info/attributes` is removed.
/// The agent's own hooks stay (grove never runs hooks). Returns what was changed.
pub fn protect(git: &Git, top: &Path) -> Result<Vec<String>, GitError> {
    let git_dir = workspace_git_dir(top)?;
    let mut changed = Vec::new();
    for file in ["config", "config.worktree"] {
        for key in sanitize_config(git, &git_dir.join(file), &WORKSPACE_KEYS)? {
            changed.push(format!("dropped {key} from .git/{file}"));
        }
    }
    let attributes = git_dir.join("info").join("attributes");
    if std::fs::symlink_metadata(&attributes).is_ok() {
        let what = || format!("removing {}", attributes.display());
        if attributes.is_dir() && !attributes.is_symlink() {
            std::fs::remove_dir_all(&attributes).map_err(|e| GitError::io(what(), e))?;
        } else {
            std::fs::remove_file(&attributes).map_err(|e| GitError::io(what(), e))?;
        }
        changed.push("removed .git/info/attributes".to_owned());
    }
    if !changed.is_empty() {
        tracing::info!(workspace = %top.display(), ?changed, "grove's git reads only the inert part of the workspace's config");
    }
    Ok(changed)
}

/// A new, empty repository at `path` that borrows the objects of `mirror`, written in process
/// in the shape `git init --template=` gives it (no sample hooks, nothing grove did not
/// write): `HEAD` on `branch` (unborn), the config in grove's layout (with `extra` entries,
/// such as a sparse checkout's), `objects/info/alternates` naming the mirror's objects, empty
/// `refs/heads` and `refs/tags`. Like git, it records a file system that cannot make symlinks
/// (`core.symlinks = false`) or tells no case (`core.ignorecase = true`).
fn init_borrowing(
    git: &Git,
    mirror: &Path,
    path: &Path,
    branch: &str,
    extra: &[(&str, &str)],
) -> Result<Repo, GitError> {
    let io = |what: String| move |e: std::io::Error| GitError::io(what, e);
    let objects = objects_dir(git, mirror)?;
    let git_dir = path.join(".git");
    // Only what git needs (`git init` also makes `objects/pack` and `refs/tags`, which git
    // makes itself when it needs them): on a busy worker every folder made is one more inode
    // for the file system to allocate and free.
    for dir in ["objects/info", "refs/heads", "info"] {
        let d = git_dir.join(dir);
        std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
    }
    let mut line = objects.into_os_string().into_encoded_bytes();
    line.push(b'\n');
    let alternates = git_dir.join("objects/info/alternates");
    std::fs::write(&alternates, line).map_err(io(format!("writing {}", alternates.display())))?;
    let head = git_dir.join("HEAD");
    std::fs::write(&head, format!("ref: refs/heads/{branch}\n"))
        .map_err(io(format!("writing {}", head.display())))?;
    let mut core: Vec<(&str, &str)> = vec![
        ("repositoryformatversion", "0"),
        ("filemode", "true"),
        ("bare", "false"),
        ("logallrefupdates", "true"),
    ];
    // git init's probes of the file system.
    let probe = git_dir.join("grove-symlink-probe");
    if std::os::unix::fs::symlink("target", &probe).is_err() {
        core.push(("symlinks", "false"));
    }
    let _ = std::fs::remove_file(&probe);
    if std::fs::symlink_metadata(git_dir.join("hEaD")).is_ok() {
        core.push(("ignorecase", "true"));
    }
    let entries: Vec<crate::cli::ConfigEntry> = core
        .iter()
        .map(|(k, v)| ("core", *k, *v))
        .chain(extra.iter().map(|(k, v)| {
            let (section, name) = k.split_once('.').unwrap_or(("core", k));
            (section, name, *v)
        }))
        .map(|(section, name, value)| (section.to_owned(), None, name.to_owned(), value.to_owned()))
        .collect();
    let config = git_dir.join("config");
    std::fs::write(&config, crate::cli::render_config(&entries))
        .map_err(io(format!("writing {}", config.display())))?;
    Ok(Repo::Workspace(path.to_path_buf()))
}

/// The absolute path of the object folder of `repo`: a bare mirror's `objects` (read without
/// a git process), else where git says it is.
fn objects_dir(git: &Git, repo: &Path) -> Result<PathBuf, GitError> {
    if crate::cli::is_git_dir(repo) {
        return std::path::absolute(repo.join("objects"))
            .map_err(|e| GitError::io(format!("resolving {}", repo.display()), e));
    }
    let objects = git.run(repo, ["rev-parse", "--path-format=absolute", "--git-path", "objects"])?;
    Ok(PathBuf::from(objects.stdout.trim_end_matches('\n')))
}

/// The `info/sparse-checkout` file `git sparse-checkout set --cone -- DIRS` writes: the
/// top-level files, each folder's parents (their files only), each folder whole. `None` for a
/// folder name git would escape or that is not a plain relative path (git then writes it).
fn cone_patterns(dirs: &[String]) -> Option<String> {
    let plain = |d: &str| {
        !d.is_empty()
            && d.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/@+".contains(&b))
            && d.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
    };
    let mut set: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for d in dirs {
        let d = d.trim_end_matches('/');
        if !plain(d) {
            return None;
        }
        set.insert(d);
    }
    // A folder inside another one of the set adds nothing.
    let whole: Vec<&str> = set
        .iter()
        .copied()
        .filter(|d| {
            !set.iter().any(|o| d.len() > o.len() && d.starts_with(o) && d.as_bytes()[o.len()] == b'/')
        })
        .collect();
    let mut parents: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for d in &whole {
        let mut at = *d;
        while let Some((p, _)) = at.rsplit_once('/') {
            parents.insert(p);
            at = p;
        }
    }
    let mut out = String::from("/*\n!/*/\n");
    for p in parents.iter().filter(|p| !whole.contains(p)) {
        out.push_str(&format!("/{p}/\n!/{p}/*/\n"));
    }
    for d in &whole {
        out.push_str(&format!("/{d}/\n"));
    }
    Some(out)
}

/// Make the workspace of `branch` at `path` from `mirror`: a repository of its own borrowing
/// the mirror's objects, on `branch` at the mirror's tip of it when it exists (an earlier
/// attempt's checkpoints), else on a new branch at `base`, which is also made in the mirror.
/// `sparse`: folders for a cone-mode sparse checkout (top-level files are always there);
/// `None` checks out everything. The checkpoints reach the mirror through [`push_branch`].
///
/// One git process: the checkout. The repository, its refs and its sparse-checkout patterns
/// are written in process, as git would write them.
pub fn add(
    git: &Git,
    mirror: &Path,
    path: &Path,
    branch: &str,
    base: &str,
    sparse: Option<&[String]>,
) -> Result<Checkout, GitError> {
    let full = format!("refs/heads/{branch}");
    // A workspace left by a crashed attempt at the same place is grove's own: drop it first.
    if std::fs::symlink_metadata(path).is_ok() {
        remove(git, mirror, path)?;
    }
    crate::mirror::Mirror::protect(git, mirror)?;
    let (how, start) = match git.ref_target(mirror, &full)? {
        Some(tip) => (Checkout::Resumed, tip),
        None => {
            git.update_ref(mirror, &full, base, None)?;
            (Checkout::Fresh, base.to_owned())
        }
    };
    let patterns = sparse.map(cone_patterns);
    // A sparse index: folders outside the cone are one entry each, so git's checkout, add and
    // write-tree read and write in proportion to the cone, not to the repository.
    let extra: &[(&str, &str)] = match patterns {
        Some(Some(_)) => {
            &[("core.sparsecheckout", "true"), ("core.sparsecheckoutcone", "true"), ("index.sparse", "true")]
        }
        _ => &[],
    };
    let ws = init_borrowing(git, mirror, path, branch, extra)?;
    let git_dir = path.join(".git");
    let who = Identity::default();
    let absent = crate::refs::Expect::Absent;
    crate::refs::set(&git_dir, &full, &start, absent, false, "grove", &who)?;
    match (sparse, patterns) {
        (Some(_), Some(Some(text))) => {
            let file = git_dir.join("info/sparse-checkout");
            std::fs::write(&file, text)
                .map_err(|e| GitError::io(format!("writing {}", file.display()), e))?;
        }
        (Some(dirs), _) => {
            let mut args = vec!["sparse-checkout", "set", "--cone", "--sparse-index", "--"];
            args.extend(dirs.iter().map(String::as_str));
            git.run_in(&ws, args)?;
        }
        (None, _) => {}
    }
    git.run_in(&ws, ["checkout", "--quiet"])?;
    Ok(how)
}

/// Make a workspace on a machine without the mirror: a shallow, partial, sparse clone of
/// `remote` at `path` on `branch`: the remote's branch when it exists (earlier checkpoints),
/// else a new one at `base`. Only the commits it starts from are fetched, by id (`--depth 1`,
/// the mirror allows wants of reachable commits) and without blobs (`--filter=blob:none`);
/// the sparse checkout then fetches the blobs of the task's folders, and git fetches any
/// other blob lazily from the remote (a promisor) when a diff needs it. `base` is always
/// fetched too, so diff stats against it stay right. Pushes are fast-forwards of the branch,
/// whose parents the remote has.
pub fn clone_sparse(
    git: &Git,
    remote: &str,
    path: &Path,
    branch: &str,
    base: &str,
    sparse: Option<&[String]>,
) -> Result<Checkout, GitError> {
    if std::fs::symlink_metadata(path).is_ok() {
        std::fs::remove_dir_all(path).map_err(|e| GitError::io(format!("removing {}", path.display()), e))?;
    }
    std::fs::create_dir_all(path).map_err(|e| GitError::io(format!("creating {}", path.display()), e))?;
    // No template: no sample hooks, nothing grove did not write.
    git.run(path, ["init", "--quiet", "--template=", "--initial-branch", branch])?;
    let ws = Repo::Workspace(path.to_path_buf());
    for (key, value) in [
        ("remote.origin.url", remote),
        ("remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"),
        ("remote.origin.promisor", "true"),
        ("remote.origin.partialclonefilter", "blob:none"),
    ] {
        git.run_in(&ws, ["config", key, value])?;
    }
    if let Some(dirs) = sparse {
        let mut args = vec!["sparse-checkout", "set", "--cone", "--sparse-index", "--"];
        args.extend(dirs.iter().map(String::as_str));
        git.run_in(&ws, args)?;
    }
    let remote_branch = format!("refs/remotes/origin/{branch}");
    // The remote's git, when it is on this machine (a `file://` mirror), runs hardened too.
    let upload_pack = format!("--upload-pack=git {} upload-pack --strict", crate::cli::hardening_args());
    let heads = format!("refs/heads/{branch}");
    let exists = !git
        .run_in(&ws, ["ls-remote", upload_pack.as_str(), "--heads", "origin", &heads])?
        .stdout
        .trim()
        .is_empty();
    let branch_spec = format!("+refs/heads/{branch}:{remote_branch}");
    let mut args = vec!["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", upload_pack.as_str()];
    args.extend(["--depth", "1", "--filter=blob:none", "origin", base]);
    if exists {
        args.push(&branch_spec);
    }
    git.run_in(&ws, args)?;
    let start = if exists { remote_branch.as_str() } else { base };
    git.run_in(&ws, ["checkout", "--quiet", "--no-track", "-B", branch, start])?;
    Ok(if exists { Checkout::Resumed } else { Checkout::Fresh })
}

/// Publish the workspace's `branch` into `remote` when it moved since the last time (a
/// checkpoint, or the agent's own commits): a fast-forward, grove's branches only move on. The
/// remote is named, not read from the workspace's config.
///
/// A workspace [`add`] made (it borrows the mirror's objects) publishes in process: the objects
/// the mirror lacks are copied and the mirror's branch moves by compare-and-swap, no git at
/// either end, so nothing of the mirror's or the workspace's config runs. Another bare
/// repository on this machine fetches the branch from the workspace, a git grove starts on it
/// by `--git-dir` (a push would let its receive-pack find its repository by itself: a `.git`
/// planted in its folder would take the push elsewhere). Any other remote (a clone's URL) is
/// pushed to. For these two, `refs/remotes/origin/<branch>` records what the remote accepted.
pub fn push_branch(git: &Git, path: &Path, remote: &str, branch: &str) -> Result<(), GitError> {
    protect(git, path)?;
    let ws = Repo::Workspace(path.to_path_buf());
    let git_dir = workspace_git_dir(path)?;
    let full = format!("refs/heads/{branch}");
    let Some(tip) = crate::refs::target(&git_dir, &full)? else {
        return Err(GitError::Failed {
            args: format!("rev-parse --verify {full}"),
            dir: path.display().to_string(),
            code: 128,
            stderr: format!("the workspace has no branch {full}"),
        });
    };
    let mirror = Path::new(remote);
    if crate::cli::is_git_dir(mirror) && borrows_from(&git_dir, mirror) {
        // The workspace reads the mirror's objects: what it made is copied over in process,
        // and the mirror's branch itself says what it has (no tracking ref to keep).
        if crate::refs::target(mirror, &full)?.as_deref() == Some(tip.as_str()) {
            return Ok(());
        }
        return publish_into(&git_dir, mirror, &full, &tip);
    }
    if pushed_tip(git, path, branch)?.as_deref() == Some(tip.as_str()) {
        return Ok(());
    }
    // git clears its `-c` settings for the other end of a local transport (it runs in another
    // repository): name them again there.
    let hardened = crate::cli::hardening_args();
    if crate::cli::is_git_dir(mirror) {
        let top = std::path::absolute(path)
            .map_err(|e| GitError::io(format!("resolving {}", path.display()), e))?;
        let upload = format!("--upload-pack=git {hardened} upload-pack");
        let spec = format!("{full}:{full}");
        let args: Vec<std::ffi::OsString> = vec![
            "fetch".into(),
            "--quiet".into(),
            "--no-tags".into(),
            "--no-write-fetch-head".into(),
            upload.into(),
            "--".into(),
            top.into(),
            spec.into(),
        ];
        git.run(mirror, args)?;
        let now = git.ref_target(mirror, &full)?;
        if now.as_deref() != Some(tip.as_str()) {
            return Err(GitError::Failed {
                args: format!("fetch {full} into {remote}"),
                dir: path.display().to_string(),
                code: 0,
                stderr: format!("the mirror's {full} is at {now:?}, not at {tip}"),
            });
        }
    } else {
        let spec = format!("{tip}:{full}");
        let receive = format!("--receive-pack=git {hardened} receive-pack");
        git.run_in(&ws, ["push", "--quiet", "--no-verify", "--porcelain", &receive, "--", remote, &spec])?;
    }
    let tracking = format!("refs/remotes/origin/{branch}");
    let old = pushed_tip(git, path, branch)?;
    let expect = old.as_deref().map_or(crate::refs::Expect::Absent, crate::refs::Expect::At);
    crate::refs::set(&git_dir, &tracking, &tip, expect, false, "grove: pushed", &Identity::default())?;
    Ok(())
}

/// Whether the repository whose git dir is `git_dir` borrows the objects of `mirror` (its
/// alternates name the mirror's object folder): a workspace [`add`] made.
fn borrows_from(git_dir: &Path, mirror: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(git_dir.join("objects/info/alternates")) else { return false };
    let Ok(objects) = std::path::absolute(mirror.join("objects")) else { return false };
    text.lines().any(|l| Path::new(l) == objects)
}

/// What the remote last accepted of the workspace's `branch` (see [`push_branch`]).
pub fn pushed_tip(_git: &Git, path: &Path, branch: &str) -> Result<Option<String>, GitError> {
    crate::refs::target(&workspace_git_dir(path)?, &format!("refs/remotes/origin/{branch}"))
}

/// Remove a workspace grove made (its files, uncommitted changes included). The branch stays.
/// A linked worktree of the mirror (made by an older grove) is removed through the mirror, so
/// it forgets it.
pub fn remove(git: &Git, mirror: &Path, path: &Path) -> Result<(), GitError> {
    let legacy = std::fs::symlink_metadata(path.join(".git")).is_ok_and(|m| m.is_file());
    if legacy {
        let _admin = AdminLock::take(mirror)?;
        let args: [&std::ffi::OsStr; 5] = [
            "worktree".as_ref(),
            "remove".as_ref(),
            "--force".as_ref(),
            "--force".as_ref(),
            path.as_os_str(),
        ];
        let _ = git.run(mirror, args);
        git.run(mirror, ["worktree", "prune"])?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        std::fs::remove_dir_all(path).map_err(|e| GitError::io(format!("removing {}", path.display()), e))?;
    }
    Ok(())
}

/// Put grove's own detached workspace of `mirror` at `path` on `commit` (full checkout),
/// making it when it is missing. For checks on the integration result (whose code agents
/// wrote): a repository of its own, like a task's.
pub fn detached_at(git: &Git, mirror: &Path, path: &Path, commit: &str) -> Result<(), GitError> {
    if std::fs::symlink_metadata(path.join(".git")).is_ok_and(|m| m.is_dir()) && protect(git, path).is_ok() {
        let ws = Repo::Workspace(path.to_path_buf());
        git.run_in(&ws, ["checkout", "--quiet", "--force", "--detach", commit])?;
        git.run_in(&ws, ["clean", "--quiet", "-fdx"])?;
        return Ok(());
    }
    if std::fs::symlink_metadata(path).is_ok() {
        remove(git, mirror, path)?;
    }
    let ws = init_borrowing(git, mirror, path, "main", &[])?;
    git.run_in(&ws, ["checkout", "--quiet", "--detach", commit])?;
    Ok(())
}

/// A repository of its own at `path` holding `commit` of `remote` checked out (detached, full,
/// one commit deep): what a worker without the mirror makes of an upstream repository's
/// integration head. Made again when it is there.
pub fn clone_detached(git: &Git, remote: &str, path: &Path, commit: &str) -> Result<(), GitError> {
    if std::fs::symlink_metadata(path).is_ok() {
        std::fs::remove_dir_all(path).map_err(|e| GitError::io(format!("removing {}", path.display()), e))?;
    }
    std::fs::create_dir_all(path).map_err(|e| GitError::io(format!("creating {}", path.display()), e))?;
    git.run(path, ["init", "--quiet", "--template="])?;
    let ws = Repo::Workspace(path.to_path_buf());
    git.run_in(&ws, ["config", "remote.origin.url", remote])?;
    let upload_pack = format!("--upload-pack=git {} upload-pack --strict", crate::cli::hardening_args());
    git.run_in(
        &ws,
        [
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            upload_pack.as_str(),
            "--depth",
            "1",
            "origin",
            commit,
        ],
    )?;
    git.run_in(&ws, ["checkout", "--quiet", "--detach", commit])?;
    Ok(())
}

/// Forget worktrees of `repo` whose folders are gone (`git worktree prune`), taking turns
/// with adds and removes.
pub fn prune(git: &Git, repo: &Path) -> Result<(), GitError> {
    let _admin = AdminLock::take(repo)?;
    git.run(repo, ["worktree", "prune"])?;
    Ok(())
}

/// The folders of `repo`'s linked worktrees (the main one, or a bare repository, not
/// included), as git recorded them.
pub fn linked(git: &Git, repo: &Path) -> Result<Vec<PathBuf>, GitError> {
    let out = git.run(repo, ["worktree", "list", "--porcelain", "-z"])?;
    // The first record is the main worktree (or the bare repository itself).
    Ok(nul_fields(&out.stdout)
        .filter_map(|l| l.strip_prefix("worktree "))
        .skip(1)
        .map(PathBuf::from)
        .collect())
}

/// Delete `full_ref` in `repo` only if it still points at `expected` (compare-and-swap), with
/// `why` in the reflog. `false`: it had moved or was gone, and is left alone.
pub fn delete_ref_at(
    git: &Git,
    repo: &Path,
    full_ref: &str,
    expected: &str,
    why: &str,
) -> Result<bool, GitError> {
    let res = git.run_allowing(repo, ["update-ref", "-m", why, "-d", full_ref, expected], &[1, 128])?;
    Ok(res.code == 0)
}

/// The branches (full ref names) checked out in any worktree of `repo`.
pub fn checked_out(git: &Git, repo: &Path) -> Result<Vec<String>, GitError> {
    let out = git.run(repo, ["worktree", "list", "--porcelain"])?;
    Ok(out.stdout.lines().filter_map(|l| l.strip_prefix("branch ")).map(str::to_owned).collect())
}

/// What [`delete_branch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The branch was deleted.
    Yes,
    /// There was no such branch.
    Absent,
    /// It points elsewhere than expected (someone moved it): left alone.
    Moved { to: String },
    /// It is checked out in a worktree: left alone.
    CheckedOut,
}

/// Delete `refs/heads/<branch>` in `repo` only when it still points at `expected` (when given)
/// and no worktree has it checked out.
pub fn delete_branch(
    git: &Git,
    repo: &Path,
    branch: &str,
    expected: Option<&str>,
) -> Result<Deleted, GitError> {
    let full = format!("refs/heads/{branch}");
    let Some(now) = git.ref_target(repo, &full)? else { return Ok(Deleted::Absent) };
    if let Some(e) = expected
        && e != now
    {
        return Ok(Deleted::Moved { to: now });
    }
    if checked_out(git, repo)?.contains(&full) {
        return Ok(Deleted::CheckedOut);
    }
    git.run(repo, ["update-ref", "-m", "grove discard", "-d", &full, &now])?;
    Ok(Deleted::Yes)
}

/// An exclusive lock on a repository's worktree administration. `git worktree add` reads
/// every other worktree's admin files and fails on one being written at the same moment, so
/// adds, removes and prunes of one mirror take turns, across processes too.
struct AdminLock(std::fs::File);

impl AdminLock {
    fn take(repo: &Path) -> Result<AdminLock, GitError> {
        let path = repo.join("grove-worktrees.lock");
        let what = || format!("locking {}", path.display());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| GitError::io(what(), e))?;
        file.lock().map_err(|e| GitError::io(what(), e))?;
        Ok(AdminLock(file))
    }
}

impl Drop for AdminLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Commit everything in the workspace (new, changed and deleted files inside its sparse
/// checkout), after [`protect`]ing it. Returns the new commit, or `None` when there was
/// nothing to commit.
pub fn commit_all(
    git: &Git,
    worktree: &Path,
    message: &str,
    who: &Identity,
) -> Result<Option<String>, GitError> {
    checkpoint(git, worktree, message, who, &[], None).map(|c| c.commit)
}

/// What a [`checkpoint`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The new commit; `None` when there was nothing to commit.
    pub commit: Option<String>,
    /// Files of `keep_out` that were staged (by `git add --all`, or by the agent) and were
    /// left out of the commit.
    pub left_out: Vec<String>,
    /// How many commits the agent made itself since the turn began that were folded into
    /// this one, because they had files of `keep_out` in them.
    pub folded: usize,
}

/// Commit everything in the worktree but the files of `keep_out` (git-ignored files grove
/// copied in, whatever rule ignored them and even if the agent staged them with `git add -f`):
/// they stay in the worktree and never enter a commit. `since`: the commit the turn started
/// from; commits the agent made itself since then that have a `keep_out` file in them are
/// undone (`reset --soft`: their changes stay staged) and their work goes into this one
/// commit, without those files, so no commit on the branch ever has them.
pub fn checkpoint(
    git: &Git,
    worktree: &Path,
    message: &str,
    who: &Identity,
    keep_out: &[String],
    since: Option<&str>,
) -> Result<Checkpoint, GitError> {
    protect(git, worktree)?;
    let ws = Repo::Workspace(worktree.to_path_buf());
    let mut done = Checkpoint::default();
    let keep: std::collections::HashSet<&str> = keep_out.iter().map(String::as_str).collect();
    if let Some(since) = since.filter(|_| !keep.is_empty()) {
        let head = git.run_in(&ws, ["rev-parse", "HEAD"])?.stdout.trim().to_owned();
        if head != since {
            let range = format!("{since}..{head}");
            let touched =
                git.run_in(&ws, ["log", "--format=", "--name-only", "-z", "--no-renames", &range])?;
            if nul_fields(&touched.stdout).any(|p| keep.contains(p.trim_start_matches('\n'))) {
                let n = git.run_in(&ws, ["rev-list", "--count", &range])?;
                done.folded = n.stdout.trim().parse().unwrap_or(0);
                git.run_in(&ws, ["reset", "--quiet", "--soft", since])?;
            }
        }
    }
    // Files outside the sparse cone are never staged by `add --all` (git refuses them, present
    // or not), so git's look for them is skipped: one stat per folder outside the cone, 4,000
    // for a task of a 2,000-folder repository. The agent's own git commands keep the check.
    git.run_in(&ws, ["-c", "sparse.expectFilesOutsideOfPatterns=true", "add", "--all"])?;
    if !keep.is_empty() {
        // What is staged against HEAD: proportional to the change, not to the list.
        let staged = git.run_in(&ws, ["diff", "--cached", "--name-only", "--no-renames", "-z", "HEAD"])?;
        done.left_out = nul_fields(&staged.stdout).filter(|p| keep.contains(p)).map(str::to_owned).collect();
        for chunk in done.left_out.chunks(256) {
            let mut args: Vec<&str> =
                vec!["--literal-pathspecs", "rm", "--quiet", "--cached", "--ignore-unmatch", "--"];
            args.extend(chunk.iter().map(String::as_str));
            git.run_in(&ws, args)?;
        }
    }
    let git_dir = workspace_git_dir(worktree)?;
    if let Some(head) = crate::refs::target(&git_dir, "HEAD")? {
        // The staged tree against HEAD's; the commit and the ref move in process, as `git
        // commit` would make them.
        let tree = git.run_in(&ws, ["write-tree"])?.stdout.trim().to_owned();
        done.commit = commit_tree(&git_dir, &head, &tree, message, who)?;
        return Ok(done);
    }
    // An unborn branch (the agent made an orphan): git commits it.
    let staged =
        git.run_in_allowing(&ws, ["diff", "--cached", "--quiet", "--no-ext-diff", "--no-textconv"], &[1])?;
    if staged.code == 0 {
        return Ok(done);
    }
    let mut cmd_args = vec![
        "-c".to_owned(),
        format!("user.name={}", who.name),
        "-c".to_owned(),
        format!("user.email={}", who.email),
    ];
    cmd_args.extend(["commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message].map(str::to_owned));
    git.run_in(&ws, &cmd_args)?;
    let head = git.run_in(&ws, ["rev-parse", "HEAD"])?;
    done.commit = Some(head.stdout.trim().to_owned());
    Ok(done)
}

/// Commit `tree` on top of `head` in the repository whose git dir is `git_dir`, as `git commit
/// -m MESSAGE` by `who` would (the environment's `GIT_AUTHOR_*`/`GIT_COMMITTER_*` win), and
/// move HEAD (the branch it is on) there by compare-and-swap, with git's reflog message.
/// `None` when `tree` is `head`'s own: nothing to commit.
fn commit_tree(
    git_dir: &Path,
    head: &str,
    tree: &str,
    message: &str,
    who: &Identity,
) -> Result<Option<String>, GitError> {
    let what = || format!("committing in {}", git_dir.display());
    let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
    let r = crate::open_gix(git_dir).map(gix::Repository::from).map_err(|e| read(&e))?;
    let head_id = gix::ObjectId::from_hex(head.as_bytes()).map_err(|e| read(&e))?;
    let tree_id = gix::ObjectId::from_hex(tree.as_bytes()).map_err(|e| read(&e))?;
    if r.find_commit(head_id).map_err(|e| read(&e))?.tree_id().map_err(|e| read(&e))? == tree_id {
        return Ok(None);
    }
    let message = crate::rewrite::commit_message(message);
    let subject = message.lines().next().unwrap_or("").to_owned();
    let commit = gix::objs::Commit {
        tree: tree_id,
        parents: vec![head_id].into(),
        author: crate::rewrite::signature(who, "AUTHOR"),
        committer: crate::rewrite::signature(who, "COMMITTER"),
        encoding: None,
        message: message.into(),
        extra_headers: Vec::new(),
    };
    let id = r.write_object(&commit).map_err(|e| read(&e))?.detach().to_hex().to_string();
    let log = format!("commit: {subject}");
    crate::refs::set(git_dir, "HEAD", &id, crate::refs::Expect::At(head), true, &log, who)?;
    Ok(Some(id))
}

/// The commit the workspace at `top` is on (HEAD), read in process; `None` on an unborn branch.
pub fn head(top: &Path) -> Result<Option<String>, GitError> {
    crate::refs::target(&workspace_git_dir(top)?, "HEAD")
}

/// Copy into `to` every object reachable from `tip` in `from` that `to` lacks, each after the
/// objects it refers to (so an object `to` has always has everything below it), stopping at
/// objects `to` has. Submodule commits are not followed. Returns how many were copied.
fn copy_missing(from: &gix::Repository, to: &gix::Repository, tip: gix::ObjectId) -> Result<usize, String> {
    use gix::objs::Write as _;
    let copy = |id: gix::ObjectId| -> Result<(), String> {
        let o = from.find_object(id).map_err(|e| format!("reading {id}: {e}"))?;
        let written = to.objects.write_buf(o.kind, &o.data).map_err(|e| format!("writing {id}: {e}"))?;
        if written != id {
            return Err(format!("object {id} reads as {written}"));
        }
        Ok(())
    };
    // The commits `to` lacks, newest first.
    let mut commits = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![tip];
    while let Some(c) = stack.pop() {
        if !seen.insert(c) || to.has_object(c) {
            continue;
        }
        let commit = from.find_commit(c).map_err(|e| format!("reading commit {c}: {e}"))?;
        stack.extend(commit.parent_ids().map(|p| p.detach()));
        commits.push((c, commit.tree_id().map_err(|e| format!("reading commit {c}: {e}"))?.detach()));
    }
    let mut copied = 0;
    // Trees, post-order: (tree, whether its entries were queued).
    for (commit, tree) in commits.iter().rev() {
        let mut stack = vec![(*tree, false)];
        while let Some((t, expanded)) = stack.pop() {
            if expanded {
                if !to.has_object(t) {
                    copy(t)?;
                    copied += 1;
                }
                continue;
            }
            if !seen.insert(t) || to.has_object(t) {
                continue;
            }
            stack.push((t, true));
            let tree = from.find_tree(t).map_err(|e| format!("reading tree {t}: {e}"))?;
            for entry in tree.iter() {
                let entry = entry.map_err(|e| format!("reading tree {t}: {e}"))?;
                let id = entry.object_id();
                match entry.mode().kind() {
                    gix::objs::tree::EntryKind::Tree => stack.push((id, false)),
                    gix::objs::tree::EntryKind::Commit => {}
                    _ => {
                        if seen.insert(id) && !to.has_object(id) {
                            copy(id)?;
                            copied += 1;
                        }
                    }
                }
            }
        }
        copy(*commit)?;
        copied += 1;
    }
    Ok(copied)
}

/// Publish the workspace's new commits into the mirror in process: the objects the mirror
/// lacks are copied, then its branch moves to `tip` by compare-and-swap, only as a fast-forward
/// (as the fetch without `+` that [`push_branch`] would run refuses anything else).
fn publish_into(git_dir: &Path, mirror: &Path, full: &str, tip: &str) -> Result<(), GitError> {
    let what = || format!("publishing {full} into {}", mirror.display());
    let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
    let from = crate::open_gix(git_dir).map(gix::Repository::from).map_err(|e| read(&e))?;
    let to = crate::open_gix(mirror).map(gix::Repository::from).map_err(|e| read(&e))?;
    let tip_id = gix::ObjectId::from_hex(tip.as_bytes()).map_err(|e| read(&e))?;
    copy_missing(&from, &to, tip_id).map_err(|e| read(&e))?;
    let old = crate::refs::target(mirror, full)?;
    if let Some(old) = &old {
        let old_id = gix::ObjectId::from_hex(old.as_bytes()).map_err(|e| read(&e))?;
        let base = to.merge_base(old_id, tip_id).ok().flatten().map(gix::Id::detach);
        if base != Some(old_id) {
            return Err(GitError::Failed {
                args: format!("fetch {full} into {}", mirror.display()),
                dir: git_dir.display().to_string(),
                code: 1,
                stderr: format!(
                    "! [rejected] {full} (non-fast-forward: the mirror's is at {old}, not an ancestor of {tip})"
                ),
            });
        }
    }
    let expect = old.as_deref().map_or(crate::refs::Expect::Absent, crate::refs::Expect::At);
    crate::refs::set(mirror, full, tip, expect, false, "grove", &Identity::default())
}

/// The git-ignored files of a repository's working tree (not folders), repository-relative.
pub fn ignored_files(git: &Git, repo: &Path) -> Result<Vec<String>, GitError> {
    let out = git.run(repo, ["ls-files", "-z", "--others", "--ignored", "--exclude-standard"])?;
    Ok(nul_fields(&out.stdout).map(str::to_owned).collect())
}

/// Where a worktree's files are, given its top folder.
pub fn file_path(worktree: &Path, repo_path: &str) -> PathBuf {
    repo_path.split('/').fold(worktree.to_path_buf(), |p, c| p.join(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::repo_with;

    #[test]
    fn a_clone_pushes_its_checkpoints_and_resumes_from_them() {
        let git = Git::detect().expect("git");
        let (dir, src) = repo_with(&[("a/f.rs", "1\n"), ("b/g.rs", "2\n")]);
        let mirror = dir.path().join("m.git");
        git.run(dir.path(), ["clone", "--quiet", "--bare", src.to_str().expect("utf8"), "m.git"])
            .expect("clone");
        let base = git.resolve_commit(&mirror, "HEAD").expect("head");
        let url = format!("file://{}", mirror.display());
        let wt = dir.path().join("pod");
        let how = clone_sparse(&git, &url, &wt, "grove/j/a", &base, Some(&["a".to_owned()])).expect("clone");
        assert_eq!(how, Checkout::Fresh);
        assert!(wt.join("a/f.rs").exists() && !wt.join("b").exists());
        std::fs::write(wt.join("a/f.rs"), "changed\n").expect("write");
        let c = commit_all(&git, &wt, "turn 1", &Identity::default()).expect("commit").expect("a commit");
        push_branch(&git, &wt, &url, "grove/j/a").expect("push");
        assert_eq!(git.ref_target(&mirror, "refs/heads/grove/j/a").expect("ref"), Some(c));
        let how = clone_sparse(&git, &url, &wt, "grove/j/a", &base, Some(&["a".to_owned()])).expect("again");
        assert_eq!(how, Checkout::Resumed);
        assert_eq!(std::fs::read_to_string(wt.join("a/f.rs")).expect("read"), "changed\n");
        // Shallow: only the commits it starts from; yet a diff against the base is right
        // (the base was fetched too; blobs come from the remote on demand).
        let shallow = git.run(&wt, ["rev-parse", "--is-shallow-repository"]).expect("shallow");
        assert_eq!(shallow.stdout.trim(), "true");
        let stat = git.run(&wt, ["diff", "--numstat", &base, "HEAD"]).expect("diff");
        assert_eq!(stat.stdout.trim(), "1\t1\ta/f.rs");
        // A second checkpoint on the resumed clone pushes as a fast-forward.
        std::fs::write(wt.join("a/f.rs"), "again\n").expect("write");
        let c2 = commit_all(&git, &wt, "turn 2", &Identity::default()).expect("commit").expect("a commit");
        push_branch(&git, &wt, &url, "grove/j/a").expect("push from a shallow clone");
        assert_eq!(git.ref_target(&mirror, "refs/heads/grove/j/a").expect("ref"), Some(c2.clone()));
        git.run(&mirror, ["fsck", "--no-progress", "--connectivity-only"]).expect("the mirror stays whole");
        // A redo starts again from a newer base that only the mirror's branches reach.
        let newer = git
            .run(&mirror, ["commit-tree", "-p", &base, "-m", "integration", &format!("{base}^{{tree}}")])
            .expect("commit-tree")
            .stdout
            .trim()
            .to_owned();
        git.run(&mirror, ["update-ref", "refs/heads/grove/j/integration", &newer]).expect("ref");
        git.run(&mirror, ["update-ref", "-d", "refs/heads/grove/j/a"]).expect("drop the branch");
        let how = clone_sparse(&git, &url, &wt, "grove/j/a", &newer, Some(&["a".to_owned()])).expect("redo");
        assert_eq!(how, Checkout::Fresh);
        assert_eq!(git.resolve_commit(&wt, "HEAD").expect("head"), newer);
    }

    /// The sparse-checkout patterns grove writes are the file `git sparse-checkout set
    /// --cone` writes for the same folders.
    #[test]
    fn cone_patterns_are_gits() {
        let git = Git::detect().expect("git");
        let d = tempfile::tempdir().expect("tmp");
        let sets: [&[&str]; 6] = [
            &[],
            &["a"],
            &["a/x", "b"],
            &["z/q/r", "b", "z/q/s", "z/p"],
            &["a", "a/x", "c.d/e_f", "@x/+y"],
            &["b/", "a/b/c"],
        ];
        for (i, dirs) in sets.iter().enumerate() {
            let dirs: Vec<String> = dirs.iter().map(|d| (*d).to_owned()).collect();
            let repo = d.path().join(format!("r{i}"));
            git.run(d.path(), ["init", "--quiet", repo.to_str().expect("utf8")]).expect("init");
            let mut args = vec!["sparse-checkout", "set", "--cone", "--"];
            args.extend(dirs.iter().map(String::as_str));
            git.run(&repo, args).expect("sparse-checkout");
            let by_git = std::fs::read_to_string(repo.join(".git/info/sparse-checkout")).expect("read");
            assert_eq!(cone_patterns(&dirs).as_deref(), Some(by_git.as_str()), "{dirs:?}");
        }
        for odd in ["a b", "a/*", "../a", "a//b", "./a", "[x]"] {
            assert_eq!(cone_patterns(&[odd.to_owned()]), None, "{odd}");
        }
    }

    /// A checkpoint is the commit `git commit -m` makes of the same staged tree: same tree,
    /// parent, message (cleaned up as git does), author and committer, and the same reflog
    /// line. Made by the one `git add --all` and `git write-tree`.
    #[test]
    fn a_checkpoint_is_the_commit_git_would_make() {
        let git = Git::detect().expect("git");
        let (dir, src) = repo_with(&[("a/f.rs", "1\n"), ("b/g.rs", "2\n")]);
        let mirror = dir.path().join("m.git");
        git.run(dir.path(), ["clone", "--quiet", "--bare", src.to_str().expect("utf8"), "m.git"])
            .expect("clone");
        let base = git.resolve_commit(&mirror, "HEAD").expect("head");
        let ours = dir.path().join("ours");
        let theirs = dir.path().join("theirs");
        add(&git, &mirror, &ours, "grove/j/a", &base, Some(&["a".to_owned()])).expect("add");
        add(&git, &mirror, &theirs, "grove/j/b", &base, Some(&["a".to_owned()])).expect("add");
        let message = "grove: j a turn 1  \n\n\n\nGrove-Job: j\t\nGrove-Task: a\n\n";
        for ws in [&ours, &theirs] {
            std::fs::write(ws.join("a/f.rs"), "changed\n").expect("write");
            std::fs::write(ws.join("a/new.rs"), "new\n").expect("write");
        }
        let who = Identity { name: "Grove Test".into(), email: "t@example.invalid".into() };
        let c = commit_all(&git, &ours, message, &who).expect("checkpoint").expect("a commit");
        let theirs_repo = Repo::Workspace(theirs.clone());
        git.run_in(&theirs_repo, ["add", "--all"]).expect("add");
        git.run_in(
            &theirs_repo,
            [
                "-c",
                "user.name=Grove Test",
                "-c",
                "user.email=t@example.invalid",
                "commit",
                "--quiet",
                "--no-verify",
                "--no-gpg-sign",
                "-m",
                message,
            ],
        )
        .expect("git commit");
        let by_git = git.run_in(&theirs_repo, ["rev-parse", "HEAD"]).expect("head").stdout.trim().to_owned();
        // The commits' text, but for the seconds they were made at.
        let show = |ws: &Path, rev: &str| {
            let text = git.run(ws, ["cat-file", "commit", rev]).expect("cat-file").stdout;
            text.lines()
                .map(|l| match l.split_once("> ") {
                    Some((who, _)) if l.starts_with("author ") || l.starts_with("committer ") => {
                        format!("{who}>")
                    }
                    _ => l.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(show(&ours, &c), show(&theirs, &by_git));
        let reflog = |ws: &Path| {
            git.run(ws, ["reflog", "show", "--format=%gs", "grove/j/a"]).map(|o| o.stdout).unwrap_or_default()
        };
        assert_eq!(reflog(&ours).lines().next(), Some("commit: grove: j a turn 1"));
        assert_eq!(head(&ours).expect("head"), Some(c.clone()));
        assert_eq!(
            git.run(&ours, ["status", "--porcelain"]).expect("status").stdout,
            "",
            "index and tree agree"
        );
        // Nothing new: no commit.
        assert_eq!(commit_all(&git, &ours, "again", &who).expect("checkpoint"), None);
        // Published in process: the mirror has the objects and the branch, fast-forward only.
        push_branch(&git, &ours, &mirror.display().to_string(), "grove/j/a").expect("push");
        assert_eq!(git.ref_target(&mirror, "refs/heads/grove/j/a").expect("ref"), Some(c.clone()));
        git.run(&mirror, ["fsck", "--no-progress", "--connectivity-only"]).expect("the mirror stays whole");
        git.run(&mirror, ["cat-file", "-e", &format!("{c}:a/new.rs")]).expect("the new blob is there");
        // The mirror's branch moved elsewhere (not an ancestor): the push is refused, nothing moves.
        let other = git
            .run(&mirror, ["commit-tree", "-p", &base, "-m", "elsewhere", &format!("{base}^{{tree}}")])
            .expect("commit-tree")
            .stdout
            .trim()
            .to_owned();
        git.update_ref(&mirror, "refs/heads/grove/j/a", &other, Some(&c)).expect("move");
        std::fs::write(ours.join("a/f.rs"), "again\n").expect("write");
        commit_all(&git, &ours, "turn 2", &who).expect("checkpoint").expect("a commit");
        let e = push_branch(&git, &ours, &mirror.display().to_string(), "grove/j/a").expect_err("refused");
        assert!(e.to_string().contains("non-fast-forward"), "{e}");
        assert_eq!(git.ref_target(&mirror, "refs/heads/grove/j/a").expect("ref"), Some(other));
    }

    #[test]
    fn sparse_worktree_commit_and_remove() {
        let git = Git::detect().expect("git");
        let (dir, src) = repo_with(&[("a/x/f.rs", "1\n"), ("b/g.rs", "2\n"), ("README", "r\n")]);
        let mirror = dir.path().join("m.git");
        git.run(dir.path(), ["clone", "--quiet", "--bare", src.to_str().expect("utf8"), "m.git"])
            .expect("clone");
        let base = git.resolve_commit(&mirror, "HEAD").expect("head");
        let wt = dir.path().join("wt");
        let how = add(&git, &mirror, &wt, "grove/j/a", &base, Some(&["a".to_owned()])).expect("add");
        assert_eq!(how, Checkout::Fresh);
        assert!(wt.join("a/x/f.rs").exists());
        assert!(wt.join("README").exists(), "top-level files come with cone mode");
        assert!(!wt.join("b").exists(), "outside the cone");

        // A repository of its own, borrowing the mirror's objects; the branch is in the mirror.
        assert!(wt.join(".git").is_dir() && !wt.join(".git/commondir").exists());
        assert!(wt.join(".git/objects/info/alternates").is_file());
        assert!(linked(&git, &mirror).expect("linked").is_empty(), "not a linked worktree");
        assert_eq!(git.ref_target(&mirror, "refs/heads/grove/j/a").expect("ref"), Some(base.clone()));

        assert_eq!(commit_all(&git, &wt, "nothing", &Identity::default()).expect("commit"), None);
        std::fs::write(wt.join("a/x/f.rs"), "changed\n").expect("write");
        let c = commit_all(&git, &wt, "turn 1", &Identity::default()).expect("commit").expect("a commit");
        assert_eq!(git.run(&wt, ["status", "--porcelain"]).expect("status").stdout, "");
        let at = mirror.display().to_string();
        push_branch(&git, &wt, &at, "grove/j/a").expect("push");
        assert_eq!(git.ref_target(&mirror, "refs/heads/grove/j/a").expect("ref"), Some(c.clone()));
        push_branch(&git, &wt, &at, "grove/j/a").expect("nothing new to push");

        remove(&git, &mirror, &wt).expect("remove");
        assert!(!wt.exists());
        // Adding again resumes from the checkpoint.
        let how = add(&git, &mirror, &wt, "grove/j/a", &base, Some(&["a".to_owned()])).expect("re-add");
        assert_eq!(how, Checkout::Resumed);
        assert_eq!(std::fs::read_to_string(wt.join("a/x/f.rs")).expect("read"), "changed\n");
    }

    /// Files grove copied in as ignored never enter a checkpoint: not when the worktree does
    /// not ignore them (`git add --all` stages them), not when the agent forces them in with
    /// `git add -f`, not when the agent commits them itself.
    #[test]
    fn a_checkpoint_leaves_the_copied_files_out() {
        let git = Git::detect().expect("git");
        let (dir, src) = repo_with(&[("a/f.rs", "1\n"), ("README", "r\n")]);
        let mirror = dir.path().join("m.git");
        git.run(dir.path(), ["clone", "--quiet", "--bare", src.to_str().expect("utf8"), "m.git"])
            .expect("clone");
        let base = git.resolve_commit(&mirror, "HEAD").expect("head");
        let wt = dir.path().join("wt");
        add(&git, &mirror, &wt, "grove/j/a", &base, None).expect("add");
        let keep = vec![".env".to_owned(), "a/secret.key".to_owned()];
        let who = Identity::default();
        let files = |c: &str| git.run(&wt, ["ls-tree", "-r", "--name-only", c]).expect("ls-tree").stdout;

        // Staged by `git add --all` (nothing ignores them here) and by the agent.
        std::fs::write(wt.join(".env"), "TOKEN=1\n").expect("write");
        std::fs::write(wt.join("a/secret.key"), "k\n").expect("write");
        std::fs::write(wt.join("a/f.rs"), "2\n").expect("write");
        git.run(&wt, ["add", "-f", ".env"]).expect("add -f");
        let c = checkpoint(&git, &wt, "turn 1", &who, &keep, Some(&base)).expect("checkpoint");
        let one = c.commit.clone().expect("a commit");
        assert_eq!(c.left_out, [".env", "a/secret.key"]);
        assert_eq!(c.folded, 0);
        assert_eq!(files(&one), "README\na/f.rs\n");
        assert!(wt.join(".env").exists(), "the file stays in the workspace");

        // Committed by the agent itself, with other work: folded into the checkpoint.
        std::fs::write(wt.join("a/f.rs"), "3\n").expect("write");
        git.run(&wt, ["add", "-f", "--all"]).expect("add");
        git.run(&wt, ["-c", "user.name=a", "-c", "user.email=a@x", "commit", "-q", "-m", "agent"])
            .expect("commit");
        std::fs::write(wt.join("a/g.rs"), "new\n").expect("write");
        git.run(&wt, ["add", "a/g.rs"]).expect("add");
        git.run(&wt, ["-c", "user.name=a", "-c", "user.email=a@x", "commit", "-q", "-m", "agent 2"])
            .expect("commit");
        let c = checkpoint(&git, &wt, "turn 2", &who, &keep, Some(&one)).expect("checkpoint");
        let two = c.commit.clone().expect("a commit");
        assert_eq!(c.folded, 2);
        assert_eq!(c.left_out, [".env", "a/secret.key"]);
        assert_eq!(files(&two), "README\na/f.rs\na/g.rs\n");
        let parents = git.run(&wt, ["rev-parse", &format!("{two}^")]).expect("parent").stdout;
        assert_eq!(parents.trim(), one, "the agent's commits are gone from the branch");
        let touched = git.run(&wt, ["log", "--format=", "--name-only", "grove/j/a"]).expect("log").stdout;
        assert!(!touched.contains(".env") && !touched.contains("secret.key"), "{touched}");

        // The agent's own commits without such files stay as they are.
        std::fs::write(wt.join("a/f.rs"), "4\n").expect("write");
        git.run(&wt, ["-c", "user.name=a", "-c", "user.email=a@x", "commit", "-q", "-am", "agent 3"])
            .expect("commit");
        let c = checkpoint(&git, &wt, "turn 3", &who, &keep, Some(&two)).expect("checkpoint");
        assert_eq!((c.commit, c.folded), (None, 0), "nothing but the kept-out files is new");
        let head = git.run(&wt, ["rev-parse", "HEAD"]).expect("head").stdout;
        assert_ne!(head.trim(), two, "the agent's commit stays");
    }
}
