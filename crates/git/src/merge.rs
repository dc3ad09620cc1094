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
    let out = git.run(
        repo,
        ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--end-of-options", from, to, "--"],
    )?;
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

/// What the merge train has learnt of its integration branch's history: every commit
/// reachable from the tips it has seen that is not reachable from the job's base (each of them
/// descends from the base). Kept between merges for [`CommitWriter::merge_base_above`]; a set
/// larger than the tip's history (a tip moved back) only sends more merges to git's walk.
#[derive(Debug, Default)]
pub struct Ancestry {
    base: Option<gix::ObjectId>,
    above: std::collections::HashSet<gix::ObjectId>,
    /// The tip's history does not all end at the base (an unrelated history merged in): every
    /// merge base is git's walk's from then on.
    broken: bool,
}

impl Ancestry {
    /// Commits read in one walk before giving it to git's (a task branch of thousands of
    /// commits is not what the shortcut is for).
    const WALK_LIMIT: usize = 100_000;
}

/// Writes commit objects in-process with gix: no subprocess per merge. For the merge train,
/// which makes one commit per task; `commit_tree` makes the same commit with the git CLI.
pub struct CommitWriter {
    repo: gix::Repository,
    /// Of the objects held in memory ([`CommitWriter::buffered`]), those on disk already:
    /// what the last persist wrote.
    persisted: std::collections::HashSet<gix::ObjectId>,
}

impl CommitWriter {
    /// Objects a buffered writer keeps in memory after they are persisted, at most; past
    /// that it lets them all go (they are on disk).
    const KEEP_OBJECTS: usize = 1024;
    const KEEP_BYTES: usize = 8 << 20;

    pub fn open(repo: &Path) -> Result<CommitWriter, GitError> {
        let mut r = crate::open_gix(repo)
            .map(gix::Repository::from)
            .map_err(|e| GitError::read(format!("opening {}", repo.display()), e))?;
        // Trees along the merged paths are read again and again within a train.
        r.object_cache_size_if_unset(8 << 20);
        Ok(CommitWriter { repo: r, persisted: Default::default() })
    }

    /// A writer whose trees and commits go to memory first, for the merge train: the next
    /// merge edits the trees the last one wrote, which are then read from memory rather
    /// than from loose files. They reach the object database with [`CommitWriter::persist`],
    /// which [`CommitWriter::update_ref`] calls first; call it before git reads any of them.
    pub fn buffered(repo: &Path) -> Result<CommitWriter, GitError> {
        let mut w = CommitWriter::open(repo)?;
        w.repo.objects.enable_object_memory();
        Ok(w)
    }

    /// Write what is held in memory and not on disk yet to the object database; returns how
    /// many objects were written. What this call wrote stays in memory for reading, until the
    /// next call (up to [`CommitWriter::KEEP_OBJECTS`]); what an earlier one wrote goes.
    /// Nothing to do for a writer that is not buffered.
    pub fn persist(&mut self) -> Result<usize, GitError> {
        let Some(mut memory) = self.repo.objects.take_object_memory() else { return Ok(0) };
        let newest: std::collections::HashSet<gix::ObjectId> =
            memory.keys().filter(|id| !self.persisted.contains(*id)).copied().collect();
        let written = crate::write_missing(&self.repo, memory.iter().filter(|(id, _)| newest.contains(*id)));
        // Only what this call wrote stays: the trees of the last merges, which the next one
        // edits; older ones are not read again. (They are on disk for the moments until then:
        // git prunes only unreferenced objects weeks old.)
        memory.retain(|id, _| newest.contains(id));
        self.persisted = newest;
        let bytes: usize = memory.values().map(|(_, d)| d.len()).sum();
        if written.is_err() || memory.len() > Self::KEEP_OBJECTS || bytes > Self::KEEP_BYTES {
            // What failed to be written is written again by the next merge: it sees it missing.
            memory.clear();
            self.persisted.clear();
        }
        self.repo.objects.set_object_memory(memory);
        written
    }

    /// All merge bases of commits `a` and `b`, as `git merge-base --all` finds them (gix's
    /// port of its walk), in process; empty when their histories are unrelated.
    pub fn merge_bases(&self, a: &str, b: &str) -> Result<Vec<String>, GitError> {
        let what = || format!("finding the merge bases of {a} and {b}");
        let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
        let id = |hex: &str| gix::ObjectId::from_hex(hex.as_bytes()).map_err(|e| read(&e));
        let bases = self.repo.merge_bases_many(id(a)?, &[id(b)?]).map_err(|e| read(&e))?;
        Ok(bases.into_iter().map(|b| b.to_hex().to_string()).collect())
    }

    /// The merge base of the train's `tip` and a task's `head` when it is provably `base`, the
    /// commit the task's branch was made from, found by walking only what `ancestry` does not
    /// know yet: the tip's new commits (once) and the task's own. `None` when that walk cannot
    /// prove it (the task's branch has commits the tip has, another base, or a history that
    /// does not end at `base`): then [`CommitWriter::merge_bases`] decides, as git would.
    ///
    /// `merge_bases` walks the tip's history down to the base every time, so a train of n
    /// merges read n²/2 commits; with `ancestry` kept between merges it reads each once.
    pub fn merge_base_above(
        &self,
        ancestry: &mut Ancestry,
        base: &str,
        tip: &str,
        head: &str,
    ) -> Result<Option<String>, GitError> {
        let what = || format!("finding the merge base of {tip} and {head}");
        let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
        let id = |hex: &str| gix::ObjectId::from_hex(hex.as_bytes()).map_err(|e| read(&e));
        let (base, tip, head) = (id(base)?, id(tip)?, id(head)?);
        if ancestry.base != Some(base) {
            *ancestry = Ancestry { base: Some(base), ..Ancestry::default() };
        }
        if ancestry.broken {
            return Ok(None);
        }
        // The commits between `from` and the base that `known` does not hold, or `None` when a
        // line of their history ends elsewhere (a root) or the walk is longer than `limit`.
        let walk = |from: gix::ObjectId,
                    known: &std::collections::HashSet<gix::ObjectId>,
                    stop_at_known: bool,
                    limit: usize|
         -> Result<Option<Vec<gix::ObjectId>>, GitError> {
            let mut seen = std::collections::HashSet::new();
            let mut todo = vec![from];
            while let Some(c) = todo.pop() {
                if c == base || !seen.insert(c) {
                    continue;
                }
                if known.contains(&c) {
                    if stop_at_known {
                        continue;
                    }
                    return Ok(None);
                }
                if seen.len() > limit {
                    return Ok(None);
                }
                let commit = self.repo.find_commit(c).map_err(|e| read(&e))?;
                let before = todo.len();
                todo.extend(commit.parent_ids().map(|p| p.detach()));
                if todo.len() == before {
                    return Ok(None);
                }
            }
            Ok(Some(seen.into_iter().collect()))
        };
        // The tip's side: everything the train merged since the base, learnt once.
        match walk(tip, &ancestry.above, true, Ancestry::WALK_LIMIT)? {
            Some(new) => ancestry.above.extend(new),
            None => {
                ancestry.broken = true;
                return Ok(None);
            }
        }
        // The task's side: its own commits, none of them in the tip's history.
        Ok(walk(head, &ancestry.above, false, Ancestry::WALK_LIMIT)?.map(|_| base.to_hex().to_string()))
    }

    /// See [`crate::refs::target`].
    pub fn ref_target(&self, full_ref: &str) -> Result<Option<String>, GitError> {
        crate::refs::target_in(&self.repo, full_ref)
    }

    /// Move `full_ref` from `old` to `new` by compare-and-swap, as `git update-ref -m grove`
    /// (see [`crate::refs::set`]).
    pub fn update_ref(
        &mut self,
        full_ref: &str,
        new: &str,
        old: &str,
        who: &crate::worktree::Identity,
    ) -> Result<(), GitError> {
        // Never a ref to an object only in memory.
        self.persist()?;
        crate::refs::set_in(&self.repo, full_ref, new, crate::refs::Expect::At(old), true, "grove", who)
    }

    /// The tree of `commit`.
    pub fn tree_of(&self, commit: &str) -> Result<String, GitError> {
        let what = || format!("reading the tree of {commit}");
        let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
        let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| read(&e))?;
        let tree = self.repo.find_commit(id).map_err(|e| read(&e))?.tree_id().map_err(|e| read(&e))?;
        Ok(tree.detach().to_hex().to_string())
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

    /// The files (not folders) `to` has that `from` has not (commit ids): a tree diff, in time
    /// proportional to the change. Renames count as additions.
    pub fn added_files(&self, from: &str, to: &str) -> Result<Vec<String>, GitError> {
        use gix::object::tree::diff::ChangeDetached as Change;
        let what = || format!("the files {to} adds to {from}");
        let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
        let tree = |hex: &str| -> Result<gix::Tree<'_>, GitError> {
            let id = gix::ObjectId::from_hex(hex.as_bytes()).map_err(|e| read(&e))?;
            self.repo.find_commit(id).map_err(|e| read(&e))?.tree().map_err(|e| read(&e))
        };
        let (a, b) = (tree(from)?, tree(to)?);
        if a.id == b.id {
            return Ok(Vec::new());
        }
        let changes = self
            .repo
            .diff_tree_to_tree(&a, &b, gix::diff::Options::default().with_rewrites(None))
            .map_err(|e| read(&e))?;
        Ok(changes
            .into_iter()
            .filter_map(|c| match c {
                Change::Addition { location, entry_mode, .. } if !entry_mode.is_tree() => {
                    Some(location.to_string())
                }
                // A folder become a file (or a link) is a file added too.
                Change::Modification { location, previous_entry_mode, entry_mode, .. }
                    if previous_entry_mode.is_tree() && !entry_mode.is_tree() =>
                {
                    Some(location.to_string())
                }
                _ => None,
            })
            .collect())
    }

    /// The merged tree of `theirs` into `ours` (commit ids), whose one merge base is `base`
    /// (as [`Git::merge_bases`] finds it), when the merge is one git would make without
    /// thinking: every path `theirs` changed is as the base had it in `ours`. Then the result
    /// is `ours`' tree with `theirs`' changes applied, which is what `git merge-tree` writes,
    /// found in time proportional to `theirs`' change rather than to everything merged since
    /// the base (git's tree merge grows with the latter: 3 ms for the first of 2,000
    /// one-folder tasks, 62 ms for the last). `None`: anything else (renames that meet, a
    /// folder `ours` renamed or removed, one path changed on both sides, a file on one side
    /// where the other has a folder), for [`merge_trees`] to decide: every shape git calls a
    /// conflict is declined here.
    pub fn merge_disjoint(&self, base: &str, ours: &str, theirs: &str) -> Result<Option<String>, GitError> {
        use gix::bstr::{BStr, ByteSlice};
        use gix::object::tree::diff::ChangeDetached as Change;
        let what = || format!("merging {theirs} into {ours}");
        let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
        let id = |hex: &str| gix::ObjectId::from_hex(hex.as_bytes()).map_err(|e| read(&e));
        let (base, ours, theirs) = (id(base)?, id(ours)?, id(theirs)?);
        let tree = |c: gix::ObjectId| -> Result<gix::Tree<'_>, GitError> {
            self.repo.find_commit(c).map_err(|e| read(&e))?.tree().map_err(|e| read(&e))
        };
        let (base_tree, ours_tree, theirs_tree) = (tree(base)?, tree(ours)?, tree(theirs)?);
        if theirs_tree.id == base_tree.id {
            return Ok(Some(ours_tree.id.to_hex().to_string()));
        }
        if ours_tree.id == base_tree.id {
            return Ok(Some(theirs_tree.id.to_hex().to_string()));
        }
        let changes = self
            .repo
            .diff_tree_to_tree(&base_tree, &theirs_tree, gix::diff::Options::default().with_rewrites(None))
            .map_err(|e| read(&e))?;
        // (mode, id) at `path` in `tree`; `None` when there is nothing there.
        let entry = |tree: &gix::Tree<'_>,
                     path: &BStr|
         -> Result<Option<(gix::objs::tree::EntryMode, gix::ObjectId)>, GitError> {
            let found = tree.lookup_entry(path.split_str("/")).map_err(|e| read(&e))?;
            Ok(found.map(|e| (e.mode(), e.object_id())))
        };
        fn parent(path: &BStr) -> Option<&BStr> {
            path.rfind_byte(b'/').map(|i| path[..i].as_bstr())
        }
        use crate::edit::TreeEdit as Edit;
        let mut edits = Vec::new();
        for change in changes {
            match change {
                Change::Addition { entry_mode, .. } | Change::Deletion { entry_mode, .. }
                    if entry_mode.is_tree() =>
                {
                    // A whole folder: its files come as changes of their own.
                }
                Change::Addition { location, entry_mode, id, .. } => {
                    if entry(&ours_tree, location.as_bstr())?.is_some() {
                        return Ok(None);
                    }
                    let mut dir = parent(location.as_bstr());
                    while let Some(d) = dir {
                        let (in_base, in_ours) = (entry(&base_tree, d)?, entry(&ours_tree, d)?);
                        // A folder the base had must still be a folder in `ours`: had it been
                        // renamed or removed there, git would follow the rename or report it.
                        if in_base.is_some_and(|(m, _)| m.is_tree())
                            && !in_ours.is_some_and(|(m, _)| m.is_tree())
                        {
                            return Ok(None);
                        }
                        // Where `theirs` puts a folder, `ours` must not have a file (a blob, a
                        // link, a submodule) of its own: git calls that a file/folder conflict.
                        // The base's file there, left alone by `ours`, is `theirs`' to replace
                        // (its deletion is checked as a change of its own).
                        if in_ours.is_some_and(|(m, _)| !m.is_tree()) && in_ours != in_base {
                            return Ok(None);
                        }
                        dir = parent(d);
                    }
                    edits.push(Edit::Put(location, entry_mode.kind(), id));
                }
                Change::Deletion { location, entry_mode, id, .. } => {
                    if entry(&ours_tree, location.as_bstr())? != Some((entry_mode, id)) {
                        return Ok(None);
                    }
                    // A folder `theirs` no longer has may have been renamed; git would then
                    // move whatever `ours` added to it. Only a folder `ours` left alone is sure.
                    let mut gone = None;
                    let mut dir = parent(location.as_bstr());
                    while let Some(d) = dir
                        && entry(&theirs_tree, d)?.is_none()
                    {
                        gone = Some(d);
                        dir = parent(d);
                    }
                    if let Some(d) = gone
                        && entry(&ours_tree, d)? != entry(&base_tree, d)?
                    {
                        return Ok(None);
                    }
                    edits.push(Edit::Remove(location));
                }
                Change::Modification { previous_entry_mode, previous_id, entry_mode, id, location } => {
                    if previous_entry_mode.is_tree() && entry_mode.is_tree() {
                        continue;
                    }
                    if previous_entry_mode.is_tree() != entry_mode.is_tree()
                        || entry(&ours_tree, location.as_bstr())? != Some((previous_entry_mode, previous_id))
                    {
                        return Ok(None);
                    }
                    edits.push(Edit::Put(location, entry_mode.kind(), id));
                }
                Change::Rewrite { .. } => return Ok(None),
            }
        }
        // Removals first: a file that became a folder (or the other way) goes before its
        // replacement comes.
        edits.sort_by_key(|e| matches!(e, Edit::Put(..)));
        let merged = crate::edit::write(&self.repo, ours_tree.id, &edits).map_err(|e| read(&e))?;
        Ok(Some(merged.to_hex().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{commit_files, repo_with};

    /// A commit of `base`'s tree with `parents` (none: a root) and `msg`.
    fn commit_of_base(git: &Git, src: &Path, base: &str, parents: &[&str], msg: &str) -> String {
        let mut args = vec!["commit-tree".to_owned()];
        for p in parents {
            args.extend(["-p".to_owned(), (*p).to_owned()]);
        }
        args.extend(["-m".to_owned(), msg.to_owned(), format!("{base}^{{tree}}")]);
        git.run(src, &args).expect("commit-tree").stdout.trim().to_owned()
    }

    /// The merge bases found in process are git's: one (unrelated histories), and the
    /// two of a criss-cross merge.
    #[test]
    fn merge_bases_are_gits() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a.txt", "a\n")]);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let commit = |parents: &[&str], msg: &str| commit_of_base(&git, &src, &base, parents, msg);
        let (x, y) = (commit(&[&base], "x"), commit(&[&base], "y"));
        // Criss-cross: each side merges the other's first commit.
        let (m1, m2) = (commit(&[&x, &y], "m1"), commit(&[&y, &x], "m2"));
        let (o, t) = (commit(&[&m1], "o"), commit(&[&m2], "t"));
        let lonely = commit(&[], "unrelated");
        let w = CommitWriter::open(&src).expect("open");
        for (a, b) in [(&x, &y), (&o, &t), (&x, &lonely), (&m1, &x)] {
            let mut ours = w.merge_bases(a, b).expect("in process");
            let mut by_git = git.merge_bases(&src, a, b).expect("git");
            ours.sort();
            by_git.sort();
            assert_eq!(ours, by_git, "{a} {b}");
        }
        assert_eq!(w.merge_bases(&o, &t).expect("bases").len(), 2);
    }

    /// The train's shortcut answers only what git's walk answers: the base for a task branch
    /// made from it, and nothing (so git's walk decides) for a branch holding merged commits,
    /// made from a later tip, or after an unrelated history came into the tip.
    #[test]
    fn merge_base_above_is_gits_or_nothing() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a.txt", "a\n")]);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let commit = |parents: &[&str], msg: &str| commit_of_base(&git, &src, &base, parents, msg);
        let w = CommitWriter::open(&src).expect("open");
        let mut ancestry = Ancestry::default();
        let gits = |a: &str, b: &str| git.merge_bases(&src, a, b).expect("git");
        // A train of merges, each of a two-commit task branch made from the base.
        let mut tip = base.clone();
        let mut merged = Vec::new();
        for n in 0..6 {
            let one = commit(&[&base], &format!("t{n} 1"));
            let task = commit(&[&one], &format!("t{n} 2"));
            let found = w.merge_base_above(&mut ancestry, &base, &tip, &task).expect("walk");
            assert_eq!(found.as_deref(), Some(base.as_str()), "task {n}");
            assert_eq!(gits(&tip, &task), vec![base.clone()]);
            tip = commit(&[&tip, &task], &format!("merge t{n}"));
            merged.push(one);
        }
        // A branch with a commit the train merged: git's walk decides (it finds that commit).
        let greedy = commit(&[&merged[2]], "on top of t2");
        assert_eq!(w.merge_base_above(&mut ancestry, &base, &tip, &greedy).expect("walk"), None);
        assert_eq!(gits(&tip, &greedy), vec![merged[2].clone()]);
        // A redo made from a later tip, asked with the job's base: nothing.
        let redo = commit(&[&tip], "redo");
        let later = commit(&[&tip], "later");
        assert_eq!(w.merge_base_above(&mut ancestry, &base, &later, &redo).expect("walk"), None);
        // Asked with its own base, the redo's base is found (a new base starts afresh).
        let found = w.merge_base_above(&mut ancestry, &tip, &later, &redo).expect("walk");
        assert_eq!(found.as_deref(), Some(tip.as_str()));
        assert_eq!(gits(&later, &redo), vec![tip.clone()]);
        // The tip moved back (a reset head): what was learnt is more than its history, and a
        // task made from the base still gets the base, as git says.
        let mut back = Ancestry::default();
        let far = commit(&[&base], "far");
        let far_tip = commit(&[&tip, &far], "merge far");
        let task = commit(&[&base], "task");
        assert!(w.merge_base_above(&mut back, &base, &far_tip, &task).expect("walk").is_some());
        let found = w.merge_base_above(&mut back, &base, &merged[0], &task).expect("walk");
        assert_eq!(found.as_deref(), Some(base.as_str()));
        assert_eq!(gits(&merged[0], &task), vec![base.clone()]);
        // A task holding `far`, which only the forgotten tip had: nothing, git's walk decides.
        let holds_far = commit(&[&far], "after far");
        assert_eq!(w.merge_base_above(&mut back, &base, &merged[0], &holds_far).expect("walk"), None);
        // An unrelated history merged into the tip: its lines end at another root.
        let lonely = commit(&[], "unrelated");
        let mixed = commit(&[&tip, &lonely], "merge unrelated");
        let task = commit(&[&base], "task");
        assert_eq!(w.merge_base_above(&mut ancestry, &base, &mixed, &task).expect("walk"), None);
        assert_eq!(gits(&mixed, &task), vec![base.clone()]);
        // A task branch of an unrelated history: nothing.
        let mut fresh = Ancestry::default();
        assert_eq!(w.merge_base_above(&mut fresh, &base, &tip, &lonely).expect("walk"), None);
    }

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

    /// A buffered writer's commit is git's to read only once persisted, which moving a ref
    /// does first; what the persist wrote is still read from memory, what an earlier one
    /// wrote is let go.
    #[test]
    fn a_buffered_commit_reaches_disk_before_its_ref_moves() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a.txt", "a\n")]);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let tree = git.run(&src, ["rev-parse", "HEAD^{tree}"]).expect("tree").stdout.trim().to_owned();
        let on_disk = |id: &str| git.run(&src, ["cat-file", "-e", id]).is_ok();
        let mut w = CommitWriter::buffered(&src).expect("open");
        let who = crate::worktree::Identity::default();
        let first = w.commit(&tree, &[&base], "first", &who).expect("commit");
        assert!(!on_disk(&first), "in memory only");
        assert_eq!(w.tree_of(&first).expect("readable in process"), tree);
        w.update_ref("refs/heads/main", &first, &base, &who).expect("moved");
        assert!(on_disk(&first), "persisted before the ref moved");
        assert_eq!(git.resolve_commit(&src, "main").expect("main"), first);
        assert_eq!(w.repo.objects.num_objects_in_memory(), 1, "what the persist wrote stays for reading");
        let second = w.commit(&tree, &[&first], "second", &who).expect("commit");
        assert_eq!(w.persist().expect("persist"), 1);
        assert!(on_disk(&second));
        assert_eq!(w.repo.objects.num_objects_in_memory(), 1, "only the newest persist's objects stay");
        assert_eq!(w.persist().expect("again"), 0, "nothing new: nothing written");
    }

    #[test]
    fn added_files_are_the_files_a_commit_adds() {
        let git = Git::detect().expect("git");
        let (_d, src) = repo_with(&[("a/x.txt", "a\n"), ("b.txt", "b\n")]);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let head = commit_files(&src, &[("a/x.txt", "changed\n"), (".env", "T=1\n"), ("c/d/e.key", "k\n")]);
        let w = CommitWriter::open(&src).expect("open");
        let mut added = w.added_files(&base, &head).expect("diff");
        added.sort();
        assert_eq!(added, [".env", "c/d/e.key"]);
        assert!(w.added_files(&head, &head).expect("diff").is_empty());
    }

    /// The in-process merge agrees with `git merge-tree` wherever it answers, and leaves to git
    /// whatever git might resolve differently (renames, a folder moved or removed, one path
    /// changed on both sides).
    #[test]
    fn the_disjoint_merge_is_gits_merge_or_none() {
        let git = Git::detect().expect("git");
        let files = [
            ("a/one.txt", "1\n"),
            ("a/two.txt", "2\n"),
            ("b/deep/three.txt", "3\n"),
            ("c/only.txt", "c\n"),
            ("top.txt", "t\n"),
        ];
        let (_d, src) = repo_with(&files);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        // A commit on `base` made by a shell script in the working tree.
        let side = |script: &str| {
            git.run(&src, ["checkout", "--quiet", "--detach", &base]).expect("checkout");
            let ok = std::process::Command::new("sh")
                .args(["-c", script])
                .current_dir(&src)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .status()
                .expect("sh");
            assert!(ok.success(), "{script}");
            git.run(&src, ["add", "--all"]).expect("add");
            git.run(
                &src,
                [
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "commit",
                    "--quiet",
                    "--allow-empty",
                    "-m",
                    script,
                ],
            )
            .expect("commit");
            git.resolve_commit(&src, "HEAD").expect("head")
        };
        let writer = CommitWriter::open(&src).expect("open");
        let cases: &[(&str, &str, bool)] = &[
            ("echo A > a/one.txt", "echo B > b/deep/three.txt", true),
            ("echo A > a/one.txt", "mkdir -p n/e && echo new > n/e/w.txt && echo x > a/two.txt", true),
            ("echo A > a/one.txt", "rm a/two.txt", true),
            ("echo A > a/one.txt", "rm c/only.txt", true),
            ("echo A > a/one.txt", "chmod +x top.txt && ln -s top.txt a/link", true),
            (":", "echo B > b/deep/three.txt", true),
            ("echo A > a/one.txt", ":", true),
            ("echo A > a/one.txt", "echo B > a/one.txt", false),
            ("echo A > a/one.txt", "echo A > a/one.txt && echo B > top.txt", false),
            ("git mv a z", "echo new > a/three.txt", false),
            ("rm -r b", "echo new > b/deep/four.txt", false),
            ("echo A > top.txt", "git mv a/one.txt a/uno.txt", true),
            ("echo A > a/one.txt", "git mv a/one.txt a/uno.txt", false),
            ("echo new > c/more.txt", "git mv c d", false),
            ("echo A > a/one.txt", "rm top.txt && mkdir top.txt && echo f > top.txt/f", true),
            ("echo A > a/one.txt", "rm -r c && echo c > c", false),
            // File/folder, both ways: a file `n` on one side, `n/f` on the other.
            ("echo n > n", "mkdir n && echo f > n/f", false),
            ("mkdir n && echo f > n/f", "echo n > n", false),
            ("echo n > n", "mkdir -p n/e && echo f > n/e/f", false),
            ("ln -s top.txt n", "mkdir n && echo f > n/f", false),
            ("mkdir -p a/n && echo f > a/n/f", "echo n > a/n", false),
            // A file made a folder on one side, changed (or made another folder) on the other.
            ("echo T > top.txt", "rm top.txt && mkdir top.txt && echo f > top.txt/f", false),
            (
                "rm top.txt && mkdir top.txt && echo g > top.txt/g",
                "rm top.txt && mkdir top.txt && echo f > top.txt/f",
                false,
            ),
            ("rm c/only.txt && mkdir c/only.txt && echo x > c/only.txt/x", "echo C > c/only.txt", false),
            // A folder made a file on one side, a file added in it on the other.
            ("echo new > c/more.txt", "rm -r c && echo c > c", false),
            ("rm -r c && echo c > c", "echo new > c/more.txt", false),
            // Deleted on one side, changed on the other (both ways), and changed the same way.
            ("rm a/one.txt", "echo A > a/one.txt", false),
            ("echo A > a/one.txt", "rm a/one.txt", false),
            ("chmod +x top.txt", "echo B > top.txt", false),
            ("echo A > new.txt", "echo B > new.txt", false),
        ];
        for (ours_script, theirs_script, answers) in cases {
            let (ours, theirs) = (side(ours_script), side(theirs_script));
            let bases = git.merge_bases(&src, &ours, &theirs).expect("merge-base");
            assert_eq!(bases, std::slice::from_ref(&base));
            let fast = writer.merge_disjoint(&bases[0], &ours, &theirs).expect("merge_disjoint");
            let by_git = merge_trees(&git, &src, &ours, &theirs).expect("merge");
            if let (Some(_), MergeOutcome::Conflict { paths, .. }) = (&fast, &by_git) {
                panic!(
                    "git finds a conflict in {paths:?} where the fast path found none: {ours_script} / {theirs_script}"
                );
            }
            assert_eq!(fast.is_some(), *answers, "ours: {ours_script}; theirs: {theirs_script}");
            if let (Some(tree), MergeOutcome::Clean { tree: by_git }) = (fast, by_git) {
                assert_eq!(tree, by_git, "ours: {ours_script}; theirs: {theirs_script}");
            }
        }
        git.run(&src, ["fsck", "--strict", "--no-dangling"]).expect("the trees are well-formed");
    }
}
