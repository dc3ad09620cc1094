//! A task's workspace: a (sparse) worktree of the mirror on the task's branch, with the
//! git-ignored files the job asked for copied in from the source repository.

use std::path::{Path, PathBuf};

use grove_core::task::Assignment;
use grove_git::Git;
use grove_git::worktree::{self, Checkout};

/// Make the workspace at `path`; returns how the branch was checked out.
pub fn prepare(git: &Git, a: &Assignment, path: &Path) -> Result<Checkout, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let how = worktree::add(git, &a.mirror, path, &a.branch, &a.base, a.sparse.as_deref())
        .map_err(|e| format!("making the worktree: {e}"))?;
    if let Some(src) = &a.source_dir {
        copy_ignored(src, path, &a.ignored_files, a.sparse.as_deref())?;
    }
    Ok(how)
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

/// Remove a workspace grove made.
pub fn remove(git: &Git, mirror: &Path, path: &Path) -> Result<(), String> {
    worktree::remove(git, mirror, path).map_err(|e| format!("removing the worktree {}: {e}", path.display()))
}

/// The folders of a task as one string, for `{scope}` and GROVE_SCOPE (`.` for everything).
pub fn scope_string(sparse: Option<&[String]>) -> String {
    match sparse {
        None => ".".to_owned(),
        Some([]) => ".".to_owned(),
        Some(dirs) => dirs.join(" "),
    }
}

/// A scratch folder beside the workspace for grove's files (prompt, file list, feedback):
/// never inside the worktree, where `git add --all` would commit them.
pub fn scratch(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(name)
}
