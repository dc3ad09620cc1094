//! A task's workspace: a (sparse) worktree of the mirror on the task's branch when the mirror
//! is on this machine, else a partial sparse clone of the mirror's URL that pushes its branch
//! after every turn. Git-ignored files the job asked for are copied in from the source.

use std::path::{Path, PathBuf};

use grove_core::DiffStat;
use grove_core::task::Assignment;
use grove_git::Git;
use grove_git::worktree::{self, Checkout};

/// How a worker makes workspaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// A worktree of the mirror when it is on this machine, else a clone of its URL.
    #[default]
    Auto,
    /// Always a clone of the mirror's URL (as a pod does).
    Clone,
}

/// A prepared workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub path: PathBuf,
    /// The mirror, when the workspace is a worktree of it; `None` for a clone.
    mirror: Option<PathBuf>,
    branch: String,
}

impl Workspace {
    /// Make the workspace at `path`; returns it and how the branch was checked out.
    pub fn prepare(
        git: &Git,
        a: &Assignment,
        path: &Path,
        mode: Mode,
    ) -> Result<(Workspace, Checkout), String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let local = mode == Mode::Auto && a.mirror.join("HEAD").exists();
        let how = if local {
            worktree::add(git, &a.mirror, path, &a.branch, &a.base, a.sparse.as_deref())
                .map_err(|e| format!("making the worktree: {e}"))?
        } else {
            worktree::clone_sparse(git, &a.remote, path, &a.branch, &a.base, a.sparse.as_deref())
                .map_err(|e| format!("cloning {}: {e}", a.remote))?
        };
        if let Some(src) = a.source_dir.as_deref().filter(|s| s.exists()) {
            copy_ignored(src, path, &a.ignored_files, a.sparse.as_deref())?;
        }
        let ws = Workspace {
            path: path.to_path_buf(),
            mirror: local.then(|| a.mirror.clone()),
            branch: a.branch.clone(),
        };
        Ok((ws, how))
    }

    /// Make a checkpoint visible to the coordinator: a worktree shares the mirror's refs; a
    /// clone pushes its branch. A refused push fails with git's message.
    pub fn publish(&self, git: &Git) -> Result<(), String> {
        if self.mirror.is_some() {
            return Ok(());
        }
        worktree::push_branch(git, &self.path, &self.branch)
            .map_err(|e| format!("pushing {}: {e}", self.branch))
    }

    /// Keep `files` on the side ref `full_ref` where the coordinator sees it: in the mirror's
    /// refs for a worktree; pushed for a clone.
    pub fn save_files(
        &self,
        git: &Git,
        full_ref: &str,
        files: &[(String, Vec<u8>)],
        message: &str,
        who: &worktree::Identity,
    ) -> Result<(), String> {
        grove_git::sideref::write(git, &self.path, full_ref, files, message, who)
            .map_err(|e| e.to_string())?;
        if self.mirror.is_none() {
            grove_git::sideref::push(git, &self.path, full_ref)
                .map_err(|e| format!("pushing {full_ref}: {e}"))?;
        }
        Ok(())
    }

    /// The files on the side ref `full_ref` (fetched first, for a clone), or `None`.
    pub fn load_files(&self, git: &Git, full_ref: &str) -> Result<Option<grove_git::sideref::Files>, String> {
        if self.mirror.is_none()
            && !grove_git::sideref::fetch(git, &self.path, full_ref).map_err(|e| e.to_string())?
        {
            return Ok(None);
        }
        grove_git::sideref::read(git, &self.path, full_ref).map_err(|e| e.to_string())
    }

    /// The branch's tip as the coordinator sees it: in the mirror for a worktree; for a clone,
    /// what its remote last accepted (`git push` moves `refs/remotes/origin/<branch>` only when
    /// the push succeeds), so a refused push never reports a commit the mirror lacks.
    pub fn head(&self, git: &Git) -> Option<String> {
        match &self.mirror {
            Some(mirror) => git.ref_target(mirror, &format!("refs/heads/{}", self.branch)).ok().flatten(),
            None => {
                git.ref_target(&self.path, &format!("refs/remotes/origin/{}", self.branch)).ok().flatten()
            }
        }
    }

    /// The branch against `base`. A clone is partial: resumed from a pushed branch it lacks
    /// the base's blobs, which gix neither has nor fetches (it counted nothing), so git, which
    /// fetches them from the remote, counts there.
    pub fn stat(&self, git: &Git, base: &str, head: &str) -> Result<DiffStat, String> {
        match &self.mirror {
            Some(m) => grove_git::stats::diff_stat(m, base, head).map_err(|e| e.to_string()),
            None => grove_git::stats::diff_stat_cli(git, &self.path, base, head).map_err(|e| e.to_string()),
        }
    }

    /// Remove the workspace (grove's own); the branch stays.
    pub fn remove(&self, git: &Git) -> Result<(), String> {
        match &self.mirror {
            Some(m) => worktree::remove(git, m, &self.path),
            None => std::fs::remove_dir_all(&self.path).map_err(|e| grove_git::GitError::Io {
                what: format!("removing {}", self.path.display()),
                source: e,
            }),
        }
        .map_err(|e| format!("removing the workspace {}: {e}", self.path.display()))
    }
}

/// Copy the listed ignored files that fall inside the checkout (top-level files, and files
/// under the sparse folders). Existing files in the workspace are not overwritten.
fn copy_ignored(src: &Path, dst: &Path, files: &[String], sparse: Option<&[String]>) -> Result<(), String> {
    for f in files {
        let inside = match sparse {
            None => true,
            Some(dirs) => !f.contains('/') || dirs.iter().any(|d| f.starts_with(&format!("{d}/"))),
        };
        if !inside {
            continue;
        }
        let from = grove_git::worktree::file_path(src, f);
        let to = grove_git::worktree::file_path(dst, f);
        if to.exists() {
            continue;
        }
        match std::fs::symlink_metadata(&from) {
            Ok(m) if m.file_type().is_file() => {}
            _ => continue,
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::copy(&from, &to).map_err(|e| format!("copying ignored file {f}: {e}"))?;
    }
    Ok(())
}

/// The folders of a task as one string, for `{scope}` and GROVE_SCOPE (`.` for everything).
pub fn scope_string(sparse: Option<&[String]>) -> String {
    match sparse {
        None | Some([]) => ".".to_owned(),
        Some(dirs) => dirs.join(" "),
    }
}

/// A scratch folder beside the workspace for grove's files (prompt, file list, feedback):
/// never inside the worktree, where `git add --all` would commit them.
pub fn scratch(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(name)
}
