//! A snapshot of work in progress (`grove handoff`): HEAD plus every staged, unstaged and
//! untracked (not ignored) file, as one commit on top of HEAD, made through an index file of
//! grove's own. The person's working tree, index, stash, refs and checked-out branch are not
//! touched; the only trace is the new objects in the repository's object database, which no
//! ref names (git's own `gc` removes them once they are old and unreachable).

use std::path::{Path, PathBuf};

use crate::cli::{Git, GitError, nul_fields};
use crate::worktree::Identity;

/// Why a repository cannot be snapshot now.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Git(#[from] GitError),
    /// A merge, rebase, cherry-pick, revert or bisect is under way.
    #[error(
        "{repo} is in the middle of a {what}: finish or abort it first (grove hands off a settled working tree)"
    )]
    InProgress { repo: String, what: &'static str },
    /// The branch has no commit yet.
    #[error("{repo} has no commit yet: commit something first")]
    Unborn { repo: String },
    /// Files too large to hand off.
    #[error(
        "the work in progress is too large to hand off ({total} bytes of changed files, the limit is {limit}); the largest: {}",
        .largest.iter().map(|(p, n)| format!("{p} ({n} bytes)")).collect::<Vec<_>>().join(", ")
    )]
    TooLarge { total: u64, limit: u64, largest: Vec<(String, u64)> },
}

/// A snapshot commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The commit (HEAD's tree with the work in progress); equal to `head` when nothing changed.
    pub commit: String,
    pub head: String,
    /// The repository's top folder.
    pub top: PathBuf,
    /// The files that differ from HEAD (changed, added or deleted).
    pub changed: Vec<String>,
}

/// What is under way in the git dir `git_dir`, if anything.
pub fn in_progress(git_dir: &Path) -> Option<&'static str> {
    [
        ("MERGE_HEAD", "merge"),
        ("rebase-merge", "rebase"),
        ("rebase-apply", "rebase"),
        ("CHERRY_PICK_HEAD", "cherry-pick"),
        ("REVERT_HEAD", "revert"),
        ("BISECT_LOG", "bisect"),
    ]
    .into_iter()
    .find(|(f, _)| git_dir.join(f).exists())
    .map(|(_, what)| what)
}

/// Snapshot the repository whose working tree contains `dir`. `limit` bounds the bytes of the
/// changed and untracked files (checked before anything is hashed); `scratch` is a folder of
/// grove's for the temporary index.
pub fn take(
    git: &Git,
    dir: &Path,
    scratch: &Path,
    limit: u64,
    message: &str,
    who: &Identity,
) -> Result<Snapshot, SnapshotError> {
    let top = PathBuf::from(git.run(dir, ["rev-parse", "--show-toplevel"])?.stdout.trim());
    let git_dir = git.run(&top, ["rev-parse", "--absolute-git-dir"])?.stdout.trim().to_owned();
    let repo = top.display().to_string();
    if let Some(what) = in_progress(Path::new(&git_dir)) {
        return Err(SnapshotError::InProgress { repo, what });
    }
    let head = match git.run_allowing(&top, ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], &[1])? {
        out if out.code == 0 => out.stdout.trim().to_owned(),
        _ => return Err(SnapshotError::Unborn { repo }),
    };
    std::fs::create_dir_all(scratch)
        .map_err(|e| GitError::io(format!("creating {}", scratch.display()), e))?;
    let index = tempfile::Builder::new()
        .prefix("snapshot-index-")
        .tempfile_in(scratch)
        .map_err(|e| GitError::io(format!("creating an index file in {}", scratch.display()), e))?;
    let g = git.with_index_file(index.path());
    g.run(&top, ["read-tree", &head])?;
    // What would be added: files that differ from HEAD, and untracked ones (not ignored).
    let mut candidates: Vec<String> = Vec::new();
    for args in [
        &["ls-files", "-z", "--modified", "--full-name"][..],
        &["ls-files", "-z", "--others", "--exclude-standard", "--full-name"][..],
    ] {
        let out = g.run(&top, args)?;
        candidates.extend(nul_fields(&out.stdout).map(str::to_owned));
    }
    let mut sizes: Vec<(String, u64)> = candidates
        .iter()
        .filter_map(|p| {
            let m = std::fs::symlink_metadata(crate::worktree::file_path(&top, p)).ok()?;
            m.is_file().then(|| (p.clone(), m.len()))
        })
        .collect();
    let total: u64 = sizes.iter().map(|(_, n)| n).sum();
    if total > limit {
        sizes.sort_by_key(|s| std::cmp::Reverse(s.1));
        sizes.truncate(5);
        return Err(SnapshotError::TooLarge { total, limit, largest: sizes });
    }
    g.run(&top, ["add", "--all", "--", ":/"])?;
    let tree = g.run(&top, ["write-tree"])?.stdout.trim().to_owned();
    let head_tree = git.run(&top, ["rev-parse", &format!("{head}^{{tree}}")])?.stdout.trim().to_owned();
    if tree == head_tree {
        return Ok(Snapshot { commit: head.clone(), head, top, changed: Vec::new() });
    }
    let changed = g.run(&top, ["diff-index", "-z", "--cached", "--name-only", "--no-renames", &head])?;
    let changed = nul_fields(&changed.stdout).map(str::to_owned).collect();
    let writer = crate::merge::CommitWriter::open(Path::new(&git_dir))?;
    let commit = writer.commit(&tree, &[head.as_str()], message, who)?;
    Ok(Snapshot { commit, head, top, changed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::repo_with;

    fn state(git: &Git, repo: &Path) -> (String, Vec<u8>, String) {
        let status = git.run(repo, ["status", "--porcelain=v1", "-uall"]).expect("status").stdout;
        let index = std::fs::read(repo.join(".git/index")).expect("index");
        let refs = git.run(repo, ["for-each-ref"]).expect("refs").stdout;
        (status, index, refs)
    }

    #[test]
    fn a_snapshot_holds_every_change_and_touches_nothing() {
        let git = Git::detect().expect("git");
        let (dir, src) = repo_with(&[("a.txt", "1\n"), ("b.txt", "2\n"), (".gitignore", ".env\n")]);
        std::fs::write(src.join("a.txt"), "1 changed\n").expect("write");
        std::fs::write(src.join("b.txt"), "2 staged\n").expect("write");
        git.run(&src, ["add", "b.txt"]).expect("add");
        std::fs::write(src.join("new.txt"), "new\n").expect("write");
        std::fs::write(src.join(".env"), "TOKEN=1\n").expect("write");
        let before = state(&git, &src);
        let s = take(&git, &src, &dir.path().join("scratch"), 1 << 20, "snapshot", &Identity::default())
            .expect("snapshot");
        assert_eq!(state(&git, &src), before, "the repository is as it was");
        assert_ne!(s.commit, s.head);
        let show = |p: &str| git.run(&src, ["show", &format!("{}:{p}", s.commit)]).map(|o| o.stdout);
        assert_eq!(show("a.txt").expect("a"), "1 changed\n");
        assert_eq!(show("b.txt").expect("b"), "2 staged\n");
        assert_eq!(show("new.txt").expect("new"), "new\n");
        assert!(show(".env").is_err(), "an ignored file is never in the snapshot");
        let mut changed = s.changed.clone();
        changed.sort();
        assert_eq!(changed, ["a.txt", "b.txt", "new.txt"]);
        let parent = git.run(&src, ["rev-parse", &format!("{}^", s.commit)]).expect("parent").stdout;
        assert_eq!(parent.trim(), s.head);
    }

    #[test]
    fn refusals_name_the_cause_and_create_nothing() {
        let git = Git::detect().expect("git");
        let (dir, src) = repo_with(&[("a.txt", "1\n")]);
        std::fs::write(src.join("big.bin"), vec![7u8; 4096]).expect("write");
        let scratch = dir.path().join("scratch");
        let before = state(&git, &src);
        let objects = git.run(&src, ["count-objects"]).expect("count").stdout;
        match take(&git, &src, &scratch, 1000, "s", &Identity::default()) {
            Err(SnapshotError::TooLarge { largest, .. }) => {
                assert_eq!(largest[0], ("big.bin".to_owned(), 4096))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(git.run(&src, ["count-objects"]).expect("count").stdout, objects, "nothing hashed");
        std::fs::write(src.join(".git/MERGE_HEAD"), "x\n").expect("write");
        let e = take(&git, &src, &scratch, 1 << 20, "s", &Identity::default()).expect_err("merging");
        assert!(e.to_string().contains("in the middle of a merge"), "{e}");
        std::fs::remove_file(src.join(".git/MERGE_HEAD")).expect("rm");
        assert_eq!(state(&git, &src), before);
    }
}
