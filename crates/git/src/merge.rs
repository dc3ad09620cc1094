//! In-memory merges for the merge train: `git merge-tree --write-tree` computes the merged
//! tree without an index or a working tree, and `commit-tree` + `update-ref` record it.

use std::path::Path;

use crate::cli::{Git, GitError, nul_fields};

/// The result of merging two commits' trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The merge is clean; this is the merged tree.
    Clean { tree: String },
    /// The merge conflicts in these paths; `tree` holds the files with git's conflict markers.
    Conflict { paths: Vec<String>, tree: String },
}

/// Merge `theirs` into `ours` (commit ids) in memory. git's exit status decides, never an
/// empty conflict list.
pub fn merge_trees(git: &Git, repo: &Path, ours: &str, theirs: &str) -> Result<MergeOutcome, GitError> {
    let out = git.run_allowing(
        repo,
        [
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            "-z",
            "--end-of-options",
            ours,
            theirs,
        ],
        &[1],
    )?;
    let mut fields = nul_fields(&out.stdout);
    let tree = fields.next().unwrap_or_default().to_owned();
    if out.code == 0 {
        return Ok(MergeOutcome::Clean { tree });
    }
    let mut paths: Vec<String> = fields.map(str::to_owned).collect();
    paths.dedup();
    Ok(MergeOutcome::Conflict { paths, tree })
}

/// The conflicting files of a conflicted merge `tree`, each with git's conflict markers, for
/// an agent to read; at most `cap` bytes (a note says when more was left out).
pub fn conflict_hunks(git: &Git, repo: &Path, tree: &str, paths: &[String], cap: usize) -> String {
    let mut out = String::new();
    for p in paths {
        let spec = format!("{tree}:{p}");
        let body = match git.run(repo, ["cat-file", "-p", &spec]) {
            Ok(o) => o.stdout,
            Err(_) => "(deleted on one side, or not a text file)\n".to_owned(),
        };
        out.push_str(&format!("=== {p}\n{body}"));
        if !out.ends_with('\n') {
            out.push('\n');
        }
        if out.len() > cap {
            break;
        }
    }
    cap_text(out, cap)
}

/// The patch from `from` to `to` (commit ids), at most `cap` bytes.
pub fn patch(git: &Git, repo: &Path, from: &str, to: &str, cap: usize) -> Result<String, GitError> {
    let out = git.run(repo, ["diff", "--no-color", "--no-ext-diff", "--end-of-options", from, to, "--"])?;
    Ok(cap_text(out.stdout, cap))
}

fn cap_text(mut s: String, cap: usize) -> String {
    if s.len() > cap {
        let mut end = cap;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("\n[grove] (cut: more than the cap)\n");
    }
    s
}

/// The tree id of a commit.
pub fn tree_of(git: &Git, repo: &Path, commit: &str) -> Result<String, GitError> {
    let spec = format!("{commit}^{{tree}}");
    Ok(git.run(repo, ["rev-parse", "--verify", &spec])?.stdout.trim().to_owned())
}

/// Write a commit of `tree` with `parents` and `message`, by `name <email>` at a fixed or
/// current time; returns its id.
pub fn commit_tree(
    git: &Git,
    repo: &Path,
    tree: &str,
    parents: &[&str],
    message: &str,
    who: &crate::worktree::Identity,
) -> Result<String, GitError> {
    let mut args = vec![
        "-c".to_owned(),
        format!("user.name={}", who.name),
        "-c".to_owned(),
        format!("user.email={}", who.email),
        "commit-tree".to_owned(),
        "--no-gpg-sign".to_owned(),
        tree.to_owned(),
    ];
    for p in parents {
        args.push("-p".into());
        args.push((*p).to_owned());
    }
    args.push("-m".into());
    args.push(message.to_owned());
    Ok(git.run(repo, &args)?.stdout.trim().to_owned())
}

/// Writes commit objects in-process with gix: no subprocess per merge. For the merge train,
/// which makes one commit per task; `commit_tree` makes the same commit with the git CLI.
pub struct CommitWriter {
    repo: gix::Repository,
}

impl CommitWriter {
    pub fn open(repo: &Path) -> Result<CommitWriter, GitError> {
        let r = gix::open(repo).map_err(|e| GitError::read(format!("opening {}", repo.display()), e))?;
        Ok(CommitWriter { repo: r })
    }

    /// Write a commit of `tree` with `parents` and `message`, by `who` now; returns its id.
    pub fn commit(
        &self,
        tree: &str,
        parents: &[&str],
        message: &str,
        who: &crate::worktree::Identity,
    ) -> Result<String, GitError> {
        let what = || format!("writing a commit of {tree}");
        let id = |hex: &str| gix::ObjectId::from_hex(hex.as_bytes()).map_err(|e| GitError::read(what(), e));
        let sig = gix::actor::Signature {
            name: who.name.as_str().into(),
            email: who.email.as_str().into(),
            time: gix::date::Time::now_local_or_utc(),
        };
        let mut message = message.to_owned();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        let commit = gix::objs::Commit {
            tree: id(tree)?,
            parents: parents.iter().map(|p| id(p)).collect::<Result<_, _>>()?,
            author: sig.clone(),
            committer: sig,
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        let written = self.repo.write_object(&commit).map_err(|e| GitError::read(what(), e))?;
        Ok(written.detach().to_hex().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{commit_files, repo_with};

    #[test]
    fn clean_and_conflicting_merges() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a.txt", "a\n"), ("b.txt", "b\n")]);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let one = commit_files(&src, &[("a.txt", "A\n")]);
        git.run(&src, ["checkout", "--quiet", "--detach", &base]).expect("checkout");
        let two = commit_files(&src, &[("b.txt", "B\n")]);
        git.run(&src, ["checkout", "--quiet", "--detach", &base]).expect("checkout");
        let three = commit_files(&src, &[("a.txt", "other\n")]);

        let MergeOutcome::Clean { tree } = merge_trees(&git, &src, &one, &two).expect("merge") else {
            panic!("expected a clean merge")
        };
        let who = crate::worktree::Identity::default();
        let m = commit_tree(&git, &src, &tree, &[&one, &two], "merge", &who).expect("commit");
        let show = git.run(&src, ["show", "--format=%P", "--no-patch", &m]).expect("show").stdout;
        assert_eq!(show.trim(), format!("{one} {two}"));
        let fast =
            CommitWriter::open(&src).expect("open").commit(&tree, &[&one, &two], "merge", &who).expect("gix");
        let same = |c: &str| {
            git.run(&src, ["show", "--format=%T %P %an <%ae> %B", "--no-patch", c]).expect("show").stdout
        };
        assert_eq!(same(&fast), same(&m));
        git.run(&src, ["fsck", "--strict", "--no-dangling"]).expect("the commit is well-formed");
        assert!(matches!(
            merge_trees(&git, &src, &one, &three).expect("merge"),
            MergeOutcome::Conflict { paths, tree } if paths == ["a.txt"] && {
                let hunks = conflict_hunks(&git, &src, &tree, &paths, 1 << 20);
                hunks.contains("<<<<<<<") && hunks.contains("other") && hunks.contains("=== a.txt")
            }
        ));
    }
}
