//! A rewrite of some files of a commit without a checkout: each file's blob is read from the
//! object database, rewritten in memory, and the changed blobs, the edited tree and the commit
//! are written in process with gix (no subprocess, no index, no working tree). For the builtin
//! `replace` agent, whose whole turn is a function of the files' bytes.

use std::path::Path;

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;

use crate::cli::GitError;
use crate::worktree::Identity;

/// A file's new bytes from its path and bytes; `None` leaves it as it is.
pub type Rewrite<'a> = dyn FnMut(&str, &[u8]) -> Option<Vec<u8>> + 'a;

/// What [`rewrite_files`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// The new commit (its parent the start); `None` when no file changed.
    pub commit: Option<String>,
    /// The files whose bytes changed, in the order they were given.
    pub changed: Vec<String>,
}

/// Rewrite `files` (repository-relative, `/`-separated) of commit `start` in the repository at
/// `repo` with `rewrite`, which gets a file's path and bytes and returns its new bytes (or
/// `None` to leave it). Only regular files are given to it (executable ones keep their mode);
/// a symlink, a submodule, a folder or a path the tree lacks is skipped, as the `replace`
/// agent skips them in a checkout. When something changed, the tree is edited and a commit
/// of it with `start` as its parent is written, by `who` (the author and committer git's
/// environment names win, as they do for `git commit`): the commit a checkpoint of the same
/// change would make. No ref moves: see [`Session::move_branch`].
pub fn rewrite_files(
    repo: &Path,
    start: &str,
    files: &[String],
    rewrite: &mut Rewrite<'_>,
    message: &str,
    who: &Identity,
) -> Result<Rewritten, GitError> {
    let mut session = Session::open(repo)?;
    let done = session.rewrite_files(start, files, rewrite, message, who)?;
    session.persist()?;
    Ok(done)
}

/// A repository opened once for a whole turn without a checkout: the attributes check, the
/// branch's tip, the rewrite, the branch's move and the diff stat, where each of those opened
/// it again before (an open reads the config, the refs' layout and the pack indexes). The
/// objects a rewrite writes stay in memory, so the diff stat reads them from there, until
/// [`Session::persist`] writes them to the object database; persist before the branch moves.
pub struct Session {
    repo: gix::Repository,
}

impl Session {
    pub fn open(repo: &Path) -> Result<Session, GitError> {
        let what = || format!("opening {}", repo.display());
        let r = crate::open_gix(repo).map(gix::Repository::from).map_err(|e| GitError::read(what(), e))?;
        Ok(Session::with(r))
    }

    /// [`Session::open`] through `repos`: the repository kept open there when it is.
    pub fn open_in(repos: &crate::OpenRepos, repo: &Path) -> Result<Session, GitError> {
        let r = repos.open(repo).map_err(|e| GitError::read(format!("opening {}", repo.display()), e))?;
        Ok(Session::with(r))
    }

    fn with(r: gix::Repository) -> Session {
        let mut r = r.with_object_memory();
        // The folders along the task's paths are looked up once per file.
        r.object_cache_size_if_unset(4 << 20);
        Session { repo: r }
    }

    /// See [`transformed`].
    pub fn transformed(&self, start: &str, files: &[String]) -> Result<Option<String>, GitError> {
        transformed_in(&self.repo, start, files)
    }

    /// The tip of `refs/heads/<branch>`, or `None` when there is no such branch.
    pub fn branch_tip(&self, branch: &str) -> Result<Option<String>, GitError> {
        crate::refs::target_in(&self.repo, &format!("refs/heads/{branch}"))
    }

    /// Move `refs/heads/<branch>` to `new` by compare-and-swap: only if it points at `old`, or,
    /// with `old` = `None`, only if it does not exist yet. Any other state is an error (someone
    /// else moved the branch): nothing is overwritten. A reflog entry, where the repository
    /// keeps them, is by `who`. The objects it names must be persisted first.
    pub fn move_branch(
        &self,
        branch: &str,
        new: &str,
        old: Option<&str>,
        who: &Identity,
    ) -> Result<(), GitError> {
        let expect = old.map_or(crate::refs::Expect::Absent, crate::refs::Expect::At);
        crate::refs::set_in(&self.repo, &format!("refs/heads/{branch}"), new, expect, false, "grove", who)
    }

    /// See [`crate::stats::diff_stat`]; objects not persisted yet count.
    pub fn diff_stat(&self, from: &str, to: &str) -> Result<grove_core::DiffStat, GitError> {
        crate::stats::diff_stat_in(&self.repo, from, to)
    }

    /// Write the objects kept in memory that the object database lacks; returns how many.
    pub fn persist(&mut self) -> Result<usize, GitError> {
        let Some(objects) = self.repo.objects.take_object_memory() else { return Ok(0) };
        let written = crate::write_missing(&self.repo, objects.iter());
        self.repo.objects.enable_object_memory();
        written
    }

    /// See [`rewrite_files`]; the objects stay in memory until [`Session::persist`].
    pub fn rewrite_files(
        &mut self,
        start: &str,
        files: &[String],
        rewrite: &mut Rewrite<'_>,
        message: &str,
        who: &Identity,
    ) -> Result<Rewritten, GitError> {
        let what = || format!("rewriting files of {start} in {}", self.repo.git_dir().display());
        let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
        let r = &self.repo;
        let start_id = gix::ObjectId::from_hex(start.as_bytes()).map_err(|e| read(&e))?;
        let tree = r.find_commit(start_id).map_err(|e| read(&e))?.tree().map_err(|e| read(&e))?;
        let mut done = Rewritten::default();
        let mut edits = Vec::new();
        for f in files {
            let Some(entry) = tree.lookup_entry(f.split('/')).map_err(|e| read(&e))? else { continue };
            let kind = entry.mode().kind();
            if !matches!(kind, EntryKind::Blob | EntryKind::BlobExecutable) {
                continue;
            }
            let blob = r.find_blob(entry.object_id()).map_err(|e| read(&e))?;
            let Some(out) = rewrite(f, &blob.data) else { continue };
            if out == blob.data {
                continue;
            }
            // Into memory even when the object database has it (`write_blob` would skip it
            // then): the diff stat reads it from there instead of mapping a loose file, and
            // `persist` writes only what is missing.
            let id =
                gix::objs::Write::write_buf(&r.objects, gix::objs::Kind::Blob, &out).map_err(|e| read(&e))?;
            edits.push(crate::edit::TreeEdit::Put(f.as_str().into(), kind, id));
            done.changed.push(f.clone());
        }
        if edits.is_empty() {
            return Ok(done);
        }
        let new_tree = crate::edit::write(r, tree.id, &edits).map_err(|e| read(&e))?;
        if new_tree == tree.id {
            return Ok(done);
        }
        let message = commit_message(message);
        let commit = gix::objs::Commit {
            tree: new_tree,
            parents: vec![start_id].into(),
            author: signature(who, "AUTHOR"),
            committer: signature(who, "COMMITTER"),
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        let id = r.write_object(&commit).map_err(|e| read(&e))?;
        done.commit = Some(id.detach().to_hex().to_string());
        Ok(done)
    }
}

/// Words of a gitattributes line under which git changes a file's bytes between the object
/// database and a checkout (conversions, filters such as LFS, encodings, `ident`).
const TRANSFORMING: [&str; 7] =
    ["filter", "eol", "text", "crlf", "working-tree-encoding", "encoding", "ident"];

/// Why git would change some of `files`' bytes between commit `start` of `repo` and a checkout
/// (a `.gitattributes` along their paths, or the repository's `info/attributes`, that names a
/// conversion, a filter, an encoding or `ident`), naming the file that says so; `None` when it
/// would not. A rewrite of the stored bytes would then differ from one of the checkout's, so
/// such files are rewritten in a checkout. Conservative: any such word counts, whatever the
/// pattern.
pub fn transformed(repo: &Path, start: &str, files: &[String]) -> Result<Option<String>, GitError> {
    let what = || format!("reading the attributes of {start} in {}", repo.display());
    let r = crate::open_gix(repo).map(gix::Repository::from).map_err(|e| GitError::read(what(), e))?;
    transformed_in(&r, start, files)
}

/// Whether a gitattributes text names a conversion (see [`TRANSFORMING`]) for any pattern.
fn says(text: &[u8]) -> bool {
    text.lines().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with(b"#")).any(|l| {
        l.split(|b| b.is_ascii_whitespace()).skip(1).any(|attr| {
            let attr = attr.trim_start_with(|c| c == '-' || c == '!');
            let name = attr.split(|b| *b == b'=').next().unwrap_or(attr);
            TRANSFORMING.iter().any(|w| name == w.as_bytes())
        })
    })
}

/// [`transformed`] in a repository already open.
fn transformed_in(r: &gix::Repository, start: &str, files: &[String]) -> Result<Option<String>, GitError> {
    let what = || format!("reading the attributes of {start} in {}", r.git_dir().display());
    let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
    if let Ok(text) = std::fs::read(r.git_dir().join("info").join("attributes"))
        && says(&text)
    {
        return Ok(Some("info/attributes".into()));
    }
    let start_id = gix::ObjectId::from_hex(start.as_bytes()).map_err(|e| read(&e))?;
    let tree = r.find_commit(start_id).map_err(|e| read(&e))?.tree().map_err(|e| read(&e))?;
    let mut dirs: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for f in files {
        let mut d = f.as_str();
        while let Some((parent, _)) = d.rsplit_once('/') {
            dirs.insert(parent);
            d = parent;
        }
        dirs.insert("");
    }
    for d in dirs {
        let path = if d.is_empty() { ".gitattributes".to_owned() } else { format!("{d}/.gitattributes") };
        let Some(entry) = tree.lookup_entry(path.split('/')).map_err(|e| read(&e))? else { continue };
        if !entry.mode().is_blob() {
            continue;
        }
        if says(&r.find_blob(entry.object_id()).map_err(|e| read(&e))?.data) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The signature `git commit -c user.name=… -c user.email=…` would use for `role` (`AUTHOR`
/// or `COMMITTER`): `GIT_<ROLE>_NAME`, `_EMAIL` and `_DATE` from the environment when set,
/// else `who` now.
pub(crate) fn signature(who: &Identity, role: &str) -> gix::actor::Signature {
    signature_from(who, role, &|name| std::env::var(name).ok())
}

/// A commit message as `git commit -m` stores it (its default `--cleanup=whitespace`): every
/// line's trailing whitespace removed, leading and trailing empty lines dropped, runs of empty
/// lines made one, a newline at the end.
pub(crate) fn commit_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 1);
    let mut empty_run = false;
    for line in message.lines() {
        let line = line.trim_end_matches([' ', '\t', '\r', '\x0b', '\x0c']);
        if line.is_empty() {
            empty_run = !out.is_empty();
            continue;
        }
        if empty_run {
            out.push('\n');
            empty_run = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// [`signature`] with the environment's variables read through `env`.
fn signature_from(who: &Identity, role: &str, env: &dyn Fn(&str) -> Option<String>) -> gix::actor::Signature {
    let var = |part: &str| env(&format!("GIT_{role}_{part}")).filter(|v| !v.is_empty());
    let time = var("DATE")
        .and_then(|d| gix::date::parse(&d, None).ok())
        .unwrap_or_else(gix::date::Time::now_local_or_utc);
    gix::actor::Signature {
        name: var("NAME").unwrap_or_else(|| who.name.clone()).as_bytes().as_bstr().into(),
        email: var("EMAIL").unwrap_or_else(|| who.email.clone()).as_bytes().as_bstr().into(),
        time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Git;
    use crate::testutil::repo_with;

    fn upper_x(_: &str, b: &[u8]) -> Option<Vec<u8>> {
        b.contains(&b'x').then(|| b.iter().map(|c| if *c == b'x' { b'X' } else { *c }).collect())
    }

    fn ls_tree(git: &Git, repo: &Path, rev: &str) -> String {
        git.run(repo, ["ls-tree", "-r", "--full-tree", rev]).expect("ls-tree").stdout
    }

    fn show(git: &Git, repo: &Path, spec: &str) -> String {
        git.run(repo, ["show", spec]).expect("show").stdout
    }

    /// Attributes that convert bytes on checkout, along a file's path or in info/attributes,
    /// send the rewrite to a checkout; others do not.
    #[test]
    fn converting_attributes_are_found_along_the_paths() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[
            ("a/b/x.rs", "x\n"),
            ("c/y.rs", "x\n"),
            ("a/.gitattributes", "# a comment names text\n*.rs linguist-generated\n"),
            ("a/b/.gitattributes", "*.bin filter=lfs diff=lfs merge=lfs -text\n"),
            ("d/.gitattributes", "*.rs eol=crlf\n"),
            ("d/z.rs", "x\n"),
        ]);
        let start = git.resolve_commit(&src, "HEAD").expect("head");
        let of = |f: &str| transformed(&src, &start, &[f.to_owned()]).expect("attributes");
        assert_eq!(of("c/y.rs"), None, "no attributes on its path");
        assert_eq!(of("a/b/x.rs").as_deref(), Some("a/b/.gitattributes"), "filter=lfs");
        assert_eq!(of("d/z.rs").as_deref(), Some("d/.gitattributes"), "eol");
        std::fs::create_dir_all(src.join(".git/info")).expect("info");
        std::fs::write(src.join(".git/info/attributes"), "* text=auto\n").expect("write");
        // git reads the git dir's info/attributes: `.git/info` here, the folder itself for a
        // bare repository.
        assert_eq!(of("c/y.rs").as_deref(), Some("info/attributes"), "the git dir's info/attributes");
        let bare = src.join(".git");
        assert_eq!(
            transformed(&bare, &start, &["c/y.rs".to_owned()]).expect("attributes").as_deref(),
            Some("info/attributes")
        );
    }

    #[test]
    fn changed_files_are_rewritten_in_a_commit_on_the_start() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a/b/c/x.rs", "x1\n"), ("a/y.rs", "none\n"), ("top.rs", "xx\n")]);
        let start = git.resolve_commit(&src, "HEAD").expect("head");
        let files: Vec<String> =
            ["a/b/c/x.rs", "a/y.rs", "top.rs", "a/gone.rs", "a/b"].map(str::to_owned).into();
        let message = "grove: j t turn 1\n\nGrove-Job: j";
        let done = rewrite_files(&src, &start, &files, &mut upper_x, message, &Identity::default())
            .expect("rewrite");
        assert_eq!(done.changed, ["a/b/c/x.rs", "top.rs"], "unchanged, missing and folders skipped");
        let commit = done.commit.expect("a commit");
        assert_eq!(show(&git, &src, &format!("{commit}:a/b/c/x.rs")), "X1\n");
        assert_eq!(show(&git, &src, &format!("{commit}:top.rs")), "XX\n");
        assert_eq!(show(&git, &src, &format!("{commit}:a/y.rs")), "none\n");
        let parents = git.run(&src, ["rev-parse", &format!("{commit}^@")]).expect("parents").stdout;
        assert_eq!(parents.trim(), start);
        let body = git.run(&src, ["log", "-1", "--format=%B", &commit]).expect("log").stdout;
        assert_eq!(body.trim_end(), message);
        // The same change made with git in a checkout gives the same tree.
        std::fs::write(src.join("a/b/c/x.rs"), "X1\n").expect("write");
        std::fs::write(src.join("top.rs"), "XX\n").expect("write");
        git.run(&src, ["add", "--all"]).expect("add");
        let tree = git.run(&src, ["write-tree"]).expect("write-tree").stdout;
        let ours = git.run(&src, ["rev-parse", &format!("{commit}^{{tree}}")]).expect("tree").stdout;
        assert_eq!(ours.trim(), tree.trim());
    }

    #[test]
    fn nothing_changed_is_no_commit() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a.rs", "none\n")]);
        let start = git.resolve_commit(&src, "HEAD").expect("head");
        let files = vec!["a.rs".to_owned(), "b.rs".to_owned()];
        let same = &mut |_: &str, b: &[u8]| Some(b.to_vec());
        let done = rewrite_files(&src, &start, &files, same, "m", &Identity::default()).expect("rewrite");
        assert_eq!(done, Rewritten::default());
    }

    #[test]
    fn symlinks_and_submodules_are_skipped_and_the_executable_bit_kept() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("bin/run.sh", "x\n"), ("target.rs", "x\n")]);
        std::os::unix::fs::symlink("../target.rs", src.join("bin/link.rs")).expect("symlink");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(src.join("bin/run.sh"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        git.run(&src, ["add", "--all"]).expect("add");
        let head = git.resolve_commit(&src, "HEAD").expect("head");
        // A submodule entry (a gitlink) pointing at some commit.
        git.run(&src, ["update-index", "--add", "--cacheinfo", &format!("160000,{head},sub")])
            .expect("gitlink");
        git.run(&src, ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "more"])
            .expect("commit");
        let start = git.resolve_commit(&src, "HEAD").expect("head");
        let files: Vec<String> = ["bin/run.sh", "bin/link.rs", "sub"].map(str::to_owned).into();
        let mut seen = Vec::new();
        let mut rw = |p: &str, b: &[u8]| {
            seen.push(p.to_owned());
            upper_x(p, b)
        };
        let done = rewrite_files(&src, &start, &files, &mut rw, "m", &Identity::default()).expect("rewrite");
        assert_eq!(seen, ["bin/run.sh"], "only the regular file is read");
        let commit = done.commit.expect("a commit");
        let before = ls_tree(&git, &src, &start);
        let after = ls_tree(&git, &src, &commit);
        assert!(after.contains("100755 blob"), "executable kept: {after}");
        assert!(after.lines().any(|l| l.starts_with("120000") && l.ends_with("bin/link.rs")), "{after}");
        assert!(after.lines().any(|l| l.starts_with("160000") && l.ends_with("sub")), "{after}");
        let unchanged =
            |t: &str| t.lines().filter(|l| !l.ends_with("bin/run.sh")).collect::<Vec<_>>().join("\n");
        assert_eq!(unchanged(&before), unchanged(&after));
    }

    #[test]
    fn the_environment_names_the_author_as_it_does_for_git() {
        let env = |name: &str| match name {
            "GIT_AUTHOR_NAME" => Some("Test".to_owned()),
            "GIT_AUTHOR_DATE" => Some("2026-01-01T00:00:00Z".to_owned()),
            _ => None,
        };
        let author = signature_from(&Identity::default(), "AUTHOR", &env);
        assert_eq!(
            (author.name.to_string(), author.email.to_string()),
            ("Test".into(), "grove@localhost".into())
        );
        assert_eq!((author.time.seconds, author.time.offset), (1_767_225_600, 0));
        let committer = signature_from(&Identity::default(), "COMMITTER", &env);
        assert_eq!(committer.name, "grove");
    }

    #[test]
    fn the_branch_moves_only_from_where_it_was() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a.rs", "x\n")]);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let files = vec!["a.rs".to_owned()];
        let done = rewrite_files(&src, &base, &files, &mut upper_x, "m", &Identity::default()).expect("rw");
        let c = done.commit.expect("commit");
        let session = Session::open(&src).expect("open");
        let (branch_tip, move_branch) = (
            |b: &str| session.branch_tip(b),
            |b: &str, new: &str, old: Option<&str>, who: &Identity| session.move_branch(b, new, old, who),
        );
        assert_eq!(branch_tip("grove/j/t").expect("tip"), None);
        let who = Identity::default();
        move_branch("grove/j/t", &base, None, &who).expect("create");
        assert!(move_branch("grove/j/t", &c, None, &who).is_err(), "it exists already");
        assert!(move_branch("grove/j/t", &c, Some(&c), &who).is_err(), "not where it is");
        move_branch("grove/j/t", &c, Some(&base), &who).expect("move");
        assert_eq!(branch_tip("grove/j/t").expect("tip"), Some(c.clone()));
        assert_eq!(git.ref_target(&src, "refs/heads/grove/j/t").expect("git"), Some(c));
    }
}
