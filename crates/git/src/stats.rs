//! Diff statistics between two commits, computed with gix (no subprocess).

use std::path::Path;

use grove_core::DiffStat;

use crate::cli::GitError;

/// Files changed, lines added and removed from `from` to `to` (commit ids) in `repo`.
/// Renames are not tracked: a renamed file counts as one removed and one added.
pub fn diff_stat(repo: &Path, from: &str, to: &str) -> Result<DiffStat, GitError> {
    let what = || format!("diff {from}..{to} in {}", repo.display());
    let repo = gix::open(repo).map_err(|e| GitError::read(what(), e))?;
    let tree_of = |id: &str| -> Result<gix::Tree<'_>, GitError> {
        let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| GitError::read(what(), e))?;
        repo.find_commit(oid).and_then(|c| c.tree()).map_err(|e| GitError::read(what(), e))
    };
    let (a, b) = (tree_of(from)?, tree_of(to)?);
    if a.id == b.id {
        return Ok(DiffStat::default());
    }
    let stats = a
        .changes()
        .map_err(|e| GitError::read(what(), e))?
        .options(|o| {
            o.track_rewrites(None);
        })
        .stats(&b)
        .map_err(|e| GitError::read(what(), e))?;
    Ok(DiffStat { files: stats.files_changed, insertions: stats.lines_added, deletions: stats.lines_removed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{commit_files, repo_with};

    #[test]
    fn counts_files_and_lines() {
        let git = crate::Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a.txt", "1\n2\n3\n"), ("b.txt", "x\n")]);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let head = commit_files(&src, &[("a.txt", "1\ntwo\n3\n4\n"), ("c.txt", "new\n")]);
        let s = diff_stat(&src, &base, &head).expect("stat");
        assert_eq!(s, DiffStat { files: 2, insertions: 3, deletions: 1 });
        assert_eq!(diff_stat(&src, &head, &head).expect("stat"), DiffStat::default());
    }
}
