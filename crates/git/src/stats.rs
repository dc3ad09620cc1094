//! Diff statistics between two commits, computed with gix (no subprocess).

use std::path::Path;

use grove_core::DiffStat;

use crate::cli::GitError;

/// Files changed, lines added and removed from `from` to `to` (commit ids) in `repo`.
/// Renames are not tracked: a renamed file counts as one removed and one added.
pub fn diff_stat(repo: &Path, from: &str, to: &str) -> Result<DiffStat, GitError> {
    let what = || format!("diff {from}..{to} in {}", repo.display());
    let repo = crate::open_gix(repo).map(gix::Repository::from).map_err(|e| GitError::read(what(), e))?;
    diff_stat_in(&repo, from, to)
}

/// [`diff_stat`] in a repository already open (its objects written to memory count too).
pub fn diff_stat_in(repo: &gix::Repository, from: &str, to: &str) -> Result<DiffStat, GitError> {
    let what = || format!("diff {from}..{to} in {}", repo.git_dir().display());
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

/// The same as [`diff_stat`] through the git CLI, in the workspace at `repo`: for a partial
/// clone, whose missing blobs gix does not fetch and git fetches from its promisor remote on
/// demand.
pub fn diff_stat_cli(git: &crate::Git, repo: &Path, from: &str, to: &str) -> Result<DiffStat, GitError> {
    let ws = crate::cli::Repo::Workspace(repo.to_path_buf());
    let out =
        git.run_in(&ws, ["diff", "--numstat", "--no-renames", "--no-ext-diff", "--no-textconv", from, to])?;
    let mut stat = DiffStat::default();
    for line in out.stdout.lines() {
        let mut cols = line.split('\t');
        // Binary files show `-` for both counts.
        let n = |c: Option<&str>| c.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (added, removed) = (n(cols.next()), n(cols.next()));
        stat.files += 1;
        stat.insertions += added;
        stat.deletions += removed;
    }
    Ok(stat)
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
        assert_eq!(diff_stat_cli(&git, &src, &base, &head).expect("stat"), s, "git counts the same");
    }

    /// A partial clone that checked out only the branch tip: git fetches the base's blobs and
    /// counts the change; gix, without them, is not asked.
    #[test]
    fn a_partial_clone_resumed_on_a_branch_is_counted() {
        let git = crate::Git::detect().expect("git");
        let (d, src) = repo_with(&[("a.txt", "1\n2\n3\n")]);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let head = commit_files(&src, &[("a.txt", "1\ntwo\n3\n")]);
        git.run(&src, ["config", "uploadpack.allowFilter", "true"]).expect("config");
        let clone = d.path().join("clone");
        let url = format!("file://{}", src.display());
        git.run(d.path(), ["clone", "--quiet", "--filter=blob:none", "--no-checkout", &url, "clone"])
            .expect("clone");
        git.run(&clone, ["checkout", "--quiet", &head]).expect("checkout");
        let s = diff_stat_cli(&git, &clone, &base, &head).expect("stat");
        assert_eq!(s, DiffStat { files: 1, insertions: 1, deletions: 1 });
    }
}
