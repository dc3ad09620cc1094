//! Reading and moving refs in process with gix: what `git rev-parse --verify REF` and `git
//! update-ref -m MSG REF NEW OLD` do, without a git process. Used where grove reads or moves
//! a ref many times per task (the mirror's task branches, a workspace's HEAD).

use std::path::Path;

use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use crate::cli::GitError;
use crate::worktree::Identity;

/// What a ref must be before it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// It must not exist.
    Absent,
    /// It must point at this commit.
    At(&'a str),
}

/// The object `full_ref` of the repository whose git dir is `git_dir` points at, following
/// symbolic refs (`HEAD`) but not peeling tags, as `git rev-parse --verify` prints it; `None`
/// when there is no such ref (or a symbolic ref leads nowhere: an unborn branch).
pub fn target(git_dir: &Path, full_ref: &str) -> Result<Option<String>, GitError> {
    let what = || format!("reading {full_ref} in {}", git_dir.display());
    let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
    let r = crate::open_gix(git_dir).map(gix::Repository::from).map_err(|e| read(&e))?;
    target_in(&r, full_ref)
}

/// [`target`] in a repository already open.
pub fn target_in(r: &gix::Repository, full_ref: &str) -> Result<Option<String>, GitError> {
    let what = || format!("reading {full_ref} in {}", r.git_dir().display());
    let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
    let Some(mut reference) = r.try_find_reference(full_ref).map_err(|e| read(&e))? else {
        return Ok(None);
    };
    // git follows at most 5 symbolic refs.
    for _ in 0..5 {
        let next = match reference.target() {
            gix::refs::TargetRef::Object(id) => return Ok(Some(id.to_hex().to_string())),
            gix::refs::TargetRef::Symbolic(name) => r.try_find_reference(name).map_err(|e| read(&e))?,
        };
        match next {
            Some(next) => reference = next,
            // An unborn branch.
            None => return Ok(None),
        }
    }
    Err(read(&"too many symbolic refs"))
}

/// Move `full_ref` of the repository whose git dir is `git_dir` to `new`, by compare-and-swap
/// (`expect`); any other state is an error and nothing is written. With `deref`, a symbolic
/// ref (`HEAD` on a branch) moves the ref it names, as `git commit` does, and both get a
/// reflog entry where the repository keeps reflogs; the entry is by `who`, with `message`.
pub fn set(
    git_dir: &Path,
    full_ref: &str,
    new: &str,
    expect: Expect<'_>,
    deref: bool,
    message: &str,
    who: &Identity,
) -> Result<(), GitError> {
    let what = || format!("moving {full_ref} to {new} in {}", git_dir.display());
    let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
    let r = crate::open_gix(git_dir).map(gix::Repository::from).map_err(|e| read(&e))?;
    set_in(&r, full_ref, new, expect, deref, message, who)
}

/// [`set`] in a repository already open.
pub fn set_in(
    r: &gix::Repository,
    full_ref: &str,
    new: &str,
    expect: Expect<'_>,
    deref: bool,
    message: &str,
    who: &Identity,
) -> Result<(), GitError> {
    let what = || format!("moving {full_ref} to {new} in {}", r.git_dir().display());
    let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
    // Isolated, gix knows no identity; the reflog needs one.
    let by = crate::rewrite::signature(who, "COMMITTER");
    let id = |hex: &str| gix::ObjectId::from_hex(hex.as_bytes()).map_err(|e| read(&e));
    let expected = match expect {
        Expect::At(old) => PreviousValue::MustExistAndMatch(gix::refs::Target::Object(id(old)?)),
        Expect::Absent => PreviousValue::MustNotExist,
    };
    let name = gix::refs::FullName::try_from(full_ref).map_err(|e| read(&e))?;
    let edit = RefEdit {
        change: Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: message.into(),
            },
            expected,
            new: gix::refs::Target::Object(id(new)?),
        },
        name,
        deref,
    };
    let mut time = gix::date::parse::TimeBuf::default();
    r.edit_references_as(Some(edit), Some(by.to_ref(&mut time))).map_err(|e| read(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Git;
    use crate::testutil::repo_with;

    /// The same answers as git's: a branch, HEAD through its symbolic ref, an annotated tag
    /// unpeeled, a missing ref, an unborn HEAD; and compare-and-swap moves seen by git.
    #[test]
    fn refs_read_and_move_as_git_sees_them() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a.txt", "1\n")]);
        let dot_git = src.join(".git");
        let head = git.resolve_commit(&src, "HEAD").expect("head");
        git.run(&src, ["-c", "user.name=t", "-c", "user.email=t@x", "tag", "-a", "-m", "t", "v1"])
            .expect("tag");
        let by_git = |r: &str| {
            let out =
                git.run_allowing(&src, ["rev-parse", "--verify", "--quiet", r], &[1]).expect("rev-parse");
            (out.code == 0).then(|| out.stdout.trim().to_owned())
        };
        for r in ["HEAD", "refs/heads/main", "refs/tags/v1", "refs/heads/nothing"] {
            assert_eq!(target(&dot_git, r).expect("target"), by_git(r), "{r}");
        }
        assert_ne!(target(&dot_git, "refs/tags/v1").expect("tag"), Some(head.clone()), "not peeled");

        // A new branch, then a compare-and-swap that must find it where it is.
        let who = Identity::default();
        let second = git
            .run(&src, ["commit-tree", "-p", &head, "-m", "two", &format!("{head}^{{tree}}")])
            .expect("commit-tree")
            .stdout
            .trim()
            .to_owned();
        set(&dot_git, "refs/heads/b", &head, Expect::Absent, false, "grove", &who).expect("create");
        assert!(set(&dot_git, "refs/heads/b", &second, Expect::Absent, false, "grove", &who).is_err());
        assert!(set(&dot_git, "refs/heads/b", &second, Expect::At(&second), false, "grove", &who).is_err());
        set(&dot_git, "refs/heads/b", &second, Expect::At(&head), false, "grove", &who).expect("move");
        assert_eq!(by_git("refs/heads/b"), Some(second.clone()));

        // HEAD with deref moves the branch it is on, which keeps a reflog.
        set(&dot_git, "HEAD", &second, Expect::At(&head), true, "commit: two", &who).expect("HEAD");
        assert_eq!(by_git("refs/heads/main"), Some(second.clone()));
        let symbolic = git.run(&src, ["symbolic-ref", "HEAD"]).expect("symbolic-ref").stdout;
        assert_eq!(symbolic.trim(), "refs/heads/main", "HEAD stays on its branch");
        let log = git.run(&src, ["reflog", "show", "--format=%gs", "main"]).expect("reflog").stdout;
        assert_eq!(log.lines().next(), Some("commit: two"));

        // Detached, HEAD itself moves.
        git.run(&src, ["checkout", "--quiet", "--detach", &head]).expect("detach");
        set(&dot_git, "HEAD", &second, Expect::At(&head), true, "commit: two", &who).expect("detached");
        assert_eq!(by_git("HEAD"), Some(second.clone()));
        assert!(git.run_allowing(&src, ["symbolic-ref", "-q", "HEAD"], &[1]).expect("detached").code == 1);

        // An unborn branch reads as no ref.
        git.run(&src, ["checkout", "--quiet", "--orphan", "new"]).expect("orphan");
        assert_eq!(target(&dot_git, "HEAD").expect("unborn"), None);
    }
}
