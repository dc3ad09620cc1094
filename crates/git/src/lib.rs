//! Every git operation grove makes.
//!
//! gix reads commits, trees, blobs and diff statistics ([`tree`], [`stats`]), reads and moves
//! refs ([`refs`]: a bare mirror's always, a workspace's HEAD), writes rewritten files, merge
//! and checkpoint commits, and copies a checkpoint's objects into the mirror. The git CLI,
//! through the one wrapper in [`cli`], does what gix does not or where git is needed anyway:
//! fetch, the checkout that fills a workspace, `add --all` and `write-tree` (the index),
//! `merge-tree --write-tree`, repacking.
//!
//! gix opens repositories with [`open_gix`]: the repository's own config only (no system,
//! global or environment config, no `include.path`). gix runs no hooks, and what grove asks of
//! it (tree walks, blob reads, tree-to-tree diffs of objects, tree edits, commit writes) runs no
//! filter, textconv or diff driver: blobs from the object database are diffed as stored.
//!
//! Architecture invariant: grove's git never runs what a repository names: no hook, fsmonitor,
//! filter, diff or merge driver, textconv, alias, `core.sshCommand` or `include.path` from a
//! mirror's or a workspace's config (see [`cli`]); a workspace is addressed by `--git-dir` and
//! `--work-tree`, never found by discovery.
//!
//! API boundary: nothing here prints or reads `$HOME`; paths come from the caller.

pub mod cli;
pub mod edit;
pub mod merge;
pub mod mirror;
pub mod open;
pub mod refs;
pub mod rewrite;
pub mod sideref;
pub mod snapshot;
pub mod stats;
pub mod tree;
pub mod worktree;

pub use cli::{Git, GitError};
pub use merge::MergeOutcome;
pub use mirror::{Mirror, Source};
pub use open::OpenRepos;
pub use tree::CommitTree;

/// Open a repository with gix, reading only its own config: not the system's, the user's or
/// the environment's, and no `include.path`. A `path` that is itself a git dir (a bare mirror,
/// a workspace's `.git`) is opened as it is: a `.git` planted inside it is never followed.
pub fn open_gix(path: &std::path::Path) -> Result<gix::ThreadSafeRepository, gix::Error> {
    let options = gix::open::Options::isolated().open_path_as_is(cli::is_git_dir(path));
    gix::ThreadSafeRepository::open_opts(path, options)
}

/// Write `objects` (taken from a repository's object memory, so `repo` writes through to its
/// object database) that the database lacks: one another turn or merge wrote is not written
/// again. Returns how many were written.
pub(crate) fn write_missing<'a>(
    repo: &gix::Repository,
    objects: impl IntoIterator<Item = (&'a gix::ObjectId, &'a (gix::objs::Kind, Vec<u8>))>,
) -> Result<usize, GitError> {
    use gix::objs::Write as _;
    let what = || format!("writing objects to {}", repo.git_dir().display());
    let mut n = 0;
    for (id, (kind, data)) in objects {
        if repo.objects.exists_without_refresh(id) {
            continue;
        }
        let got = repo.objects.write_buf(*kind, data).map_err(|e| GitError::read(what(), e))?;
        debug_assert_eq!(&got, id);
        n += 1;
    }
    Ok(n)
}

/// A full object id in hex.
pub type Oid = String;

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod merge_props;
#[cfg(test)]
mod testutil;
