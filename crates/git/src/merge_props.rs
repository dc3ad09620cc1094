//! Property test: on small generated histories (a base, and two sides each changing it by a
//! few file writes, deletions, mode changes, symlinks and folder moves), whenever the in-process
//! disjoint merge answers, its tree is the one `git merge-tree --write-tree` writes. 64 cases by
//! default; `PROPTEST_CASES=2000 cargo test -p grove-git merge_props` runs more.

use std::path::Path;

use proptest::prelude::*;

use crate::cli::Git;
use crate::merge::{CommitWriter, MergeOutcome, merge_trees};
use crate::testutil::repo_with;

const PATHS: [&str; 8] = ["a/one", "a/two", "a/deep/three", "b/x", "b/y", "c", "top", "a/deep"];
const CONTENTS: [&str; 3] = ["1\n", "2\n", "3\n"];
const DIRS: [&str; 3] = ["a", "b", "a/deep"];

#[derive(Debug, Clone)]
enum Op {
    Write(usize, usize),
    Delete(usize),
    Exec(usize),
    Link(usize, usize),
    MoveDir(usize),
    RemoveDir(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    prop_oneof![
        4 => (p.clone(), 0..CONTENTS.len()).prop_map(|(p, c)| Op::Write(p, c)),
        2 => p.clone().prop_map(Op::Delete),
        1 => p.clone().prop_map(Op::Exec),
        1 => (p.clone(), p).prop_map(|(p, t)| Op::Link(p, t)),
        1 => (0..DIRS.len()).prop_map(Op::MoveDir),
        1 => (0..DIRS.len()).prop_map(Op::RemoveDir),
    ]
}

/// Apply `op` to the work tree at `root`; one that does not fit the tree (a folder where a file
/// would go) is skipped.
fn apply(root: &Path, op: &Op) {
    use std::os::unix::fs::PermissionsExt;
    let at = |i: usize| root.join(PATHS[i]);
    let clear = |p: &Path| {
        if p.is_symlink() || p.is_file() {
            let _ = std::fs::remove_file(p);
        }
    };
    match op {
        Op::Write(p, c) => {
            let path = at(*p);
            if path.is_dir() && !path.is_symlink() {
                return;
            }
            clear(&path);
            if let Some(parent) = path.parent()
                && std::fs::create_dir_all(parent).is_ok()
            {
                let _ = std::fs::write(&path, CONTENTS[*c]);
            }
        }
        Op::Delete(p) => clear(&at(*p)),
        Op::Exec(p) => {
            let path = at(*p);
            if path.is_file() && !path.is_symlink() {
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
            }
        }
        Op::Link(p, t) => {
            let path = at(*p);
            if path.is_dir() && !path.is_symlink() {
                return;
            }
            clear(&path);
            if let Some(parent) = path.parent()
                && std::fs::create_dir_all(parent).is_ok()
            {
                let _ = std::os::unix::fs::symlink(PATHS[*t], &path);
            }
        }
        Op::MoveDir(d) => {
            let (from, to) = (root.join(DIRS[*d]), root.join(format!("{}-moved", DIRS[*d])));
            if from.is_dir() && !from.is_symlink() && !to.exists() {
                let _ = std::fs::rename(from, to);
            }
        }
        Op::RemoveDir(d) => {
            let dir = root.join(DIRS[*d]);
            if dir.is_dir() && !dir.is_symlink() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_disjoint_merge_is_gits_whenever_it_answers(
        base in prop::collection::btree_map(0..PATHS.len() - 1, 0..CONTENTS.len(), 1..6),
        ours_ops in prop::collection::vec(op(), 0..4),
        theirs_ops in prop::collection::vec(op(), 0..4),
    ) {
        let git = Git::detect().expect("git");
        let files: Vec<(&str, &str)> = base.iter().map(|(&p, &c)| (PATHS[p], CONTENTS[c])).collect();
        let (_d, src) = repo_with(&files);
        let base = git.resolve_commit(&src, "HEAD").expect("head");
        let side = |name: &str, ops: &[Op]| {
            git.run(&src, ["checkout", "--quiet", "--force", "--detach", &base]).expect("checkout");
            git.run(&src, ["clean", "--quiet", "-fdx"]).expect("clean");
            for op in ops {
                apply(&src, op);
            }
            git.run(&src, ["add", "--all"]).expect("add");
            git.run(&src, ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--allow-empty", "-m", name])
                .expect("commit");
            git.resolve_commit(&src, "HEAD").expect("head")
        };
        let (ours, theirs) = (side("ours", &ours_ops), side("theirs", &theirs_ops));
        let bases = git.merge_bases(&src, &ours, &theirs).expect("merge-base");
        prop_assert_eq!(&bases, &vec![base.clone()]);
        let writer = CommitWriter::open(&src).expect("open");
        if let Some(tree) = writer.merge_disjoint(&base, &ours, &theirs).expect("merge_disjoint") {
            match merge_trees(&git, &src, &ours, &theirs).expect("merge-tree") {
                MergeOutcome::Clean { tree: by_git } => prop_assert_eq!(tree, by_git),
                MergeOutcome::Conflict { paths, .. } => {
                    prop_assert!(false, "git finds a conflict in {:?} where the fast path merged", paths)
                }
            }
        }
    }
}
