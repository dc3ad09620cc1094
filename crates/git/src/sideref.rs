//! Files kept on a side ref: a commit whose tree holds a few files grove owns (an agent
//! session's transcript, say), outside any branch's tree, so they travel wherever the
//! repository's refs go (a worktree shares them with its mirror; a clone pushes them) without
//! ever being in the task's change.
//!
//! Each write is a new commit on top of the ref's last one, and the ref moves by
//! compare-and-swap: nothing is forced.

use std::path::Path;

use crate::cli::{Git, GitError};
use crate::worktree::Identity;

/// Files by slash-separated path, with their bytes.
pub type Files = Vec<(String, Vec<u8>)>;

/// Write `files` (slash-separated paths and their bytes) as a commit on top of `full_ref` in
/// the repository at `repo` (a worktree or a bare repository), and move the ref to it.
/// Returns the commit.
pub fn write(
    git: &Git,
    repo: &Path,
    full_ref: &str,
    files: &[(String, Vec<u8>)],
    message: &str,
    who: &Identity,
) -> Result<String, GitError> {
    let what = || format!("writing {full_ref} in {}", repo.display());
    let read = |e: &dyn std::fmt::Display| GitError::read(what(), e);
    let r = gix::open(repo).map_err(|e| read(&e))?;
    let empty = gix::ObjectId::empty_tree(r.object_hash());
    let mut editor = r.edit_tree(empty).map_err(|e| read(&e))?;
    for (path, bytes) in files {
        if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(read(&format!("{path:?} is not a relative path")));
        }
        let id = r.write_blob(bytes).map_err(|e| read(&e))?.detach();
        editor.upsert(path.as_str(), gix::objs::tree::EntryKind::Blob, id).map_err(|e| read(&e))?;
    }
    let tree = editor.write().map_err(|e| read(&e))?.detach();
    let old = git.ref_target(repo, full_ref)?;
    let parents: Vec<&str> = old.as_deref().into_iter().collect();
    let writer = crate::merge::CommitWriter::open(repo)?;
    let commit = writer.commit(&tree.to_hex().to_string(), &parents, message, who)?;
    git.update_ref(repo, full_ref, &commit, old.as_deref())?;
    Ok(commit)
}

/// The files at `full_ref` in the repository at `repo`, or `None` when the ref does not
/// exist. Read with the git CLI, which fetches the blobs a partial clone lacks.
pub fn read(git: &Git, repo: &Path, full_ref: &str) -> Result<Option<Files>, GitError> {
    let Some(commit) = git.ref_target(repo, full_ref)? else { return Ok(None) };
    let list = git.run(repo, ["ls-tree", "-r", "-z", "--full-tree", &commit])?;
    let mut files = Vec::new();
    for entry in crate::cli::nul_fields(&list.stdout) {
        // `<mode> blob <id>\t<path>`
        let Some((meta, path)) = entry.split_once('\t') else { continue };
        let mut parts = meta.split_whitespace();
        let (Some(_mode), Some("blob"), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let out = git
            .command(repo)
            .args(["cat-file", "blob", id])
            .output()
            .map_err(|e| GitError::io(format!("reading {path} of {full_ref}"), e))?;
        if !out.status.success() {
            return Err(GitError::Failed {
                args: format!("cat-file blob {id}"),
                dir: repo.display().to_string(),
                code: out.status.code().unwrap_or(-1),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        files.push((path.to_owned(), out.stdout));
    }
    Ok(Some(files))
}

/// Fetch `full_ref` from the clone's origin (a missing ref there is not an error).
pub fn fetch(git: &Git, clone: &Path, full_ref: &str) -> Result<bool, GitError> {
    let spec = format!("+{full_ref}:{full_ref}");
    let out = git.run_allowing(clone, ["fetch", "--quiet", "--no-tags", "origin", &spec], &[128])?;
    Ok(out.code == 0)
}

/// Push `full_ref` to the clone's origin (a fast-forward: each write builds on the last).
pub fn push(git: &Git, clone: &Path, full_ref: &str) -> Result<(), GitError> {
    let spec = format!("{full_ref}:{full_ref}");
    git.run(clone, ["push", "--quiet", "--no-verify", "--porcelain", "origin", &spec])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::repo_with;

    #[test]
    fn files_go_on_a_side_ref_and_come_back_without_touching_the_branch() {
        let git = Git::detect().expect("git");
        let (_dir, repo) = repo_with(&[("a.txt", "a\n")]);
        let head = git.ref_target(&repo, "HEAD").expect("head");
        let who = Identity::default();
        let r = "refs/grove/sessions/j/t";
        assert_eq!(read(&git, &repo, r).expect("read"), None);
        let files = vec![
            ("session.json".to_owned(), b"{\"id\":\"x\"}".to_vec()),
            ("files/claude/x.jsonl".to_owned(), vec![0u8, 159, 146, 150, b'\n']),
        ];
        let first = write(&git, &repo, r, &files, "grove: session", &who).expect("write");
        let again = write(&git, &repo, r, &files[..1], "grove: session", &who).expect("write again");
        assert_ne!(first, again);
        assert!(git.is_ancestor(&repo, &first, &again).expect("ancestry"), "each write builds on the last");
        let mut back = read(&git, &repo, r).expect("read").expect("there");
        back.sort();
        assert_eq!(back, files[..1].to_vec());
        let mut first_files = read(&git, &repo, &first).expect("read").expect("there");
        first_files.sort();
        let mut want = files.clone();
        want.sort();
        assert_eq!(first_files, want, "bytes come back as they were");
        assert_eq!(git.ref_target(&repo, "HEAD").expect("head"), head, "the branch did not move");
        assert!(write(&git, &repo, r, &[("../x".into(), vec![])], "m", &who).is_err());
    }
}
