//! Real repositories for the crate's tests.

use std::path::{Path, PathBuf};

use crate::cli::Git;

/// A new repository in a temp dir with `files` committed on `main`.
pub fn repo_with(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let git = Git::detect().expect("git");
    git.run(&src, ["init", "--quiet", "--initial-branch=main"]).expect("init");
    commit_files(&src, files);
    (dir, src)
}

/// Write `files` into the working tree of `repo` and commit them; returns the commit id.
pub fn commit_files(repo: &Path, files: &[(&str, &str)]) -> String {
    let git = Git::detect().expect("git");
    for (p, content) in files {
        let path = repo.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
    git.run(repo, ["add", "--all"]).expect("add");
    git.run(repo, ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "files"])
        .expect("commit");
    git.run(repo, ["rev-parse", "HEAD"]).expect("rev-parse").stdout.trim().to_owned()
}
