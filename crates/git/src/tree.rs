//! A commit's files, read with gix, as the planner's [`SourceTree`].

use std::path::Path;

use grove_core::plan::{FileKind, SourceTree, TreeError, TreeFile};

use crate::cli::GitError;

/// The files of one commit.
pub struct CommitTree {
    repo: gix::ThreadSafeRepository,
    files: Vec<TreeFile>,
    ids: Vec<gix::ObjectId>,
}

impl CommitTree {
    /// List every file of `commit` in the repository at `repo`.
    pub fn load(repo: &Path, commit: &str) -> Result<CommitTree, GitError> {
        let what = || format!("{commit} in {}", repo.display());
        let shared = crate::open_gix(repo).map_err(|e| GitError::read(what(), e))?;
        let local = shared.to_thread_local();
        let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| GitError::read(what(), e))?;
        let tree = local.find_commit(id).and_then(|c| c.tree()).map_err(|e| GitError::read(what(), e))?;
        let mut recorder = gix::traverse::tree::Recorder::default();
        tree.traverse().breadthfirst(&mut recorder).map_err(|e| GitError::read(what(), e))?;
        let mut entries: Vec<_> = recorder.records.into_iter().filter(|e| !e.mode.is_tree()).collect();
        entries.sort_by(|a, b| a.filepath.cmp(&b.filepath));
        let mut files = Vec::with_capacity(entries.len());
        let mut ids = Vec::with_capacity(entries.len());
        for e in entries {
            let kind = if e.mode.is_commit() {
                FileKind::Submodule
            } else if e.mode.is_link() {
                FileKind::Symlink
            } else if e.mode.is_executable() {
                FileKind::Executable
            } else {
                FileKind::Regular
            };
            let size = if kind == FileKind::Submodule {
                0
            } else {
                local.find_header(e.oid).map_err(|err| GitError::read(what(), err))?.size()
            };
            files.push(TreeFile { path: e.filepath.to_string(), size, kind });
            ids.push(e.oid);
        }
        Ok(CommitTree { repo: shared, files, ids })
    }

    fn index(&self, path: &str) -> Option<usize> {
        self.files.binary_search_by(|f| f.path.as_str().cmp(path)).ok()
    }

    /// Symlinks of the tree whose target leaves the repository, with their targets.
    pub fn escaping_symlinks(&self) -> Result<Vec<(String, String)>, TreeError> {
        let mut out = Vec::new();
        for f in self.files.iter().filter(|f| f.kind == FileKind::Symlink) {
            let Some(target) = self.read(&f.path)? else { continue };
            let target = String::from_utf8_lossy(&target).into_owned();
            if symlink_escapes(&f.path, &target) {
                out.push((f.path.clone(), target));
            }
        }
        Ok(out)
    }
}

/// Whether a symlink at `link` (repository-relative) pointing at `target` leads outside the
/// repository.
pub fn symlink_escapes(link: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    let mut depth: i64 = link.matches('/').count() as i64;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

impl SourceTree for CommitTree {
    fn files(&self) -> &[TreeFile] {
        &self.files
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        let Some(i) = self.index(path) else { return Ok(None) };
        let repo = self.repo.to_thread_local();
        let mut blob = repo.find_blob(self.ids[i]).map_err(|e| TreeError(format!("reading {path}: {e}")))?;
        Ok(Some(blob.take_data()))
    }

    /// Reads blobs on every core.
    fn grep(&self, re: &regex::bytes::Regex, paths: &[&str]) -> Result<Vec<String>, TreeError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
        let chunk = paths.len().div_ceil(threads).max(1);
        let results: Vec<Result<Vec<String>, TreeError>> = std::thread::scope(|s| {
            let handles: Vec<_> = paths
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let repo = self.repo.to_thread_local();
                        let mut hits = Vec::new();
                        for p in part {
                            let Some(i) = self.index(p) else { continue };
                            let blob = repo
                                .find_blob(self.ids[i])
                                .map_err(|e| TreeError(format!("reading {p}: {e}")))?;
                            if re.is_match(&blob.data) {
                                hits.push((*p).to_owned());
                            }
                        }
                        Ok(hits)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(TreeError("a grep thread panicked".into()))))
                .collect()
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::repo_with;

    #[test]
    fn lists_reads_and_greps_a_commit() {
        let git = crate::Git::detect().expect("git");
        let (_dir, src) =
            repo_with(&[("a/x.rs", "FileId\n"), ("b/y.rs", "other\n"), ("c.txt", "FileId too\n")]);
        let head = git.resolve_commit(&src, "HEAD").expect("head");
        let t = CommitTree::load(&src, &head).expect("load");
        let paths: Vec<_> = t.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/x.rs", "b/y.rs", "c.txt"]);
        assert_eq!(t.files()[0].size, 7);
        assert_eq!(t.read("b/y.rs").expect("read"), Some(b"other\n".to_vec()));
        assert_eq!(t.read("nope").expect("read"), None);
        let re = regex::bytes::Regex::new(r"\bFileId\b").expect("re");
        assert_eq!(t.grep(&re, &paths).expect("grep"), ["a/x.rs", "c.txt"]);
    }

    #[test]
    fn symlinks_that_leave_are_found() {
        assert!(symlink_escapes("a", "/etc/passwd"));
        assert!(symlink_escapes("a", "../x"));
        assert!(!symlink_escapes("a/b", "../x"));
        assert!(symlink_escapes("a/b", "../../x"));
        assert!(!symlink_escapes("a/b", "c/../../d"));
    }
}
