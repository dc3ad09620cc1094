//! A tree edited in process: some paths put or removed, the changed trees written.
//!
//! gix's `Repository::edit_tree` checks, before it writes a tree, that every entry of it
//! exists in the object database: for a merge into a folder of 2,000 modules that is 2,000
//! lookups per merge (loose ones a file system call each) to re-check entries it read from
//! the database a moment before. Here only what the edit brings is checked: the names along
//! each edited path (as git's `core.protect*` would, so no tree grove writes has a `.git`,
//! `..` or a name Windows or macOS would turn into one) and that each object put exists.

use gix::bstr::{BStr, BString, ByteSlice};
use gix::objs::tree::EntryKind;

/// One change to a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEdit {
    /// Put the object `id` of `kind` at the path (intermediate folders made as needed).
    Put(BString, EntryKind, gix::ObjectId),
    /// Remove what is at the path (nothing when there is nothing).
    Remove(BString),
}

/// Why an edit was not written.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the path {path:?} has a name git refuses: {source}")]
    Name { path: BString, source: gix::validate::path::component::Error },
    #[error("the object {id} to put at {path:?} is not in the repository")]
    Missing { path: BString, id: gix::ObjectId },
    #[error(transparent)]
    Git(#[from] gix::Error),
}

/// The tree `root` of `repo` with `edits` applied in order, written (through `repo`'s object
/// writer: to memory when the repository keeps objects there); returns the new tree's id.
pub fn write(
    repo: &gix::Repository,
    root: gix::ObjectId,
    edits: &[TreeEdit],
) -> Result<gix::ObjectId, EditError> {
    let options = gix::validate::path::component::Options::default();
    let tree: gix::objs::Tree = repo.find_tree(root)?.decode()?.into();
    let mut editor = gix::objs::tree::Editor::new(tree, &repo.objects, repo.object_hash());
    for edit in edits {
        check_names(edit, options)?;
        match edit {
            TreeEdit::Put(path, kind, id) => {
                if *kind != EntryKind::Commit && !repo.has_object(id) {
                    return Err(EditError::Missing { path: path.clone(), id: *id });
                }
                editor.upsert(components(path.as_bstr()), *kind, *id)?;
            }
            TreeEdit::Remove(path) => {
                editor.remove(components(path.as_bstr()))?;
            }
        }
    }
    Ok(editor.write(|tree| repo.write_object(tree).map(gix::Id::detach))?)
}

fn components(path: &BStr) -> impl Iterator<Item = &BStr> {
    path.split_str("/").map(ByteSlice::as_bstr)
}

fn check_names(edit: &TreeEdit, options: gix::validate::path::component::Options) -> Result<(), EditError> {
    let path = match edit {
        TreeEdit::Put(path, ..) | TreeEdit::Remove(path) => path.as_bstr(),
    };
    let mut names = components(path).peekable();
    while let Some(name) = names.next() {
        // The last name of a symlink is checked as git checks a link's name.
        let link = names.peek().is_none() && matches!(edit, TreeEdit::Put(_, EntryKind::Link, _));
        let mode = link.then_some(gix::validate::path::component::Mode::Symlink);
        gix::validate::path::component(name, mode, options)
            .map_err(|source| EditError::Name { path: path.to_owned(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{commit_files, repo_with};

    fn open(src: &std::path::Path) -> gix::Repository {
        crate::open_gix(src).expect("open").to_thread_local()
    }

    fn root_of(r: &gix::Repository, commit: &str) -> gix::ObjectId {
        let id = gix::ObjectId::from_hex(commit.as_bytes()).expect("id");
        r.find_commit(id).expect("commit").tree_id().expect("tree").detach()
    }

    /// The same tree git writes for the same change.
    #[test]
    fn an_edit_writes_the_tree_git_would() {
        let (_d, src) = repo_with(&[("a/b/c.txt", "c\n"), ("a/d.txt", "d\n"), ("e.txt", "e\n")]);
        let git = crate::Git::detect().expect("git");
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let r = open(&src);
        let blob = r.write_blob(b"new\n").expect("blob").detach();
        let edits = [
            TreeEdit::Put("a/b/c.txt".into(), EntryKind::Blob, blob),
            TreeEdit::Put("x/y/z.txt".into(), EntryKind::BlobExecutable, blob),
            TreeEdit::Remove("e.txt".into()),
        ];
        let ours = write(&r, root_of(&r, &base), &edits).expect("written");
        std::fs::write(src.join("a/b/c.txt"), "new\n").expect("write");
        std::fs::create_dir_all(src.join("x/y")).expect("mkdir");
        std::fs::write(src.join("x/y/z.txt"), "new\n").expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(src.join("x/y/z.txt"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::remove_file(src.join("e.txt")).expect("rm");
        let commit = commit_files(&src, &[]);
        assert_eq!(ours, root_of(&r, &commit), "git's commit of the same change has that tree");
    }

    /// What git refuses in a tree is refused, and so is an object the repository lacks.
    #[test]
    fn bad_names_and_missing_objects_are_refused() {
        let (_d, src) = repo_with(&[("a.txt", "a\n")]);
        let git = crate::Git::detect().expect("git");
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let r = open(&src);
        let root = root_of(&r, &base);
        let blob = r.write_blob(b"x\n").expect("blob").detach();
        for bad in [".git/config", "a/../b", "a/.GIT/hooks", "a/git~1/x", "a//b"] {
            let e = write(&r, root, &[TreeEdit::Put(bad.into(), EntryKind::Blob, blob)]).expect_err(bad);
            assert!(matches!(e, EditError::Name { .. }), "{bad}: {e}");
        }
        let missing = gix::ObjectId::from_hex(b"0123456789012345678901234567890123456789").expect("id");
        let e =
            write(&r, root, &[TreeEdit::Put("b.txt".into(), EntryKind::Blob, missing)]).expect_err("missing");
        assert!(matches!(e, EditError::Missing { .. }), "{e}");
    }
}
