//! Real repositories poisoned the ways an agent (or a hostile repository) can poison them: grove's
//! git and gix run nothing the poison names, find nothing it points to, and put the config back.

use std::path::{Path, PathBuf};

use crate::cli::{Git, GitError};
use crate::merge::{CommitWriter, MergeOutcome, merge_trees, patch};
use crate::mirror::Mirror;
use crate::testutil::{commit_files, repo_with};
use crate::worktree::{self, Identity};
use grove_core::plan::SourceTree;

/// A program that records each call as a file `<marker>/<first argument>` and passes its input
/// through (so it could stand in for a filter), and the marker folder.
fn spy(dir: &Path) -> (String, PathBuf) {
    let marker = dir.join("ran");
    std::fs::create_dir_all(&marker).expect("marker dir");
    let script = dir.join("spy");
    std::fs::write(&script, format!("#!/bin/sh\ntouch '{}'/\"$1\"\ncat\nexit 0\n", marker.display()))
        .expect("spy");
    std::process::Command::new("chmod").arg("+x").arg(&script).status().expect("chmod");
    (script.display().to_string(), marker)
}

fn ran(marker: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(marker)
        .expect("marker")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// git as an agent runs it: in the folder, by discovery, with no grove hardening.
fn agent_git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git");
    assert!(out.status.success(), "agent git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn hook(dir: &Path, name: &str, spy: &str) {
    std::fs::create_dir_all(dir).expect("hooks dir");
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n'{spy}' hook-{name} </dev/null\n")).expect("hook");
    std::process::Command::new("chmod").arg("+x").arg(&path).status().expect("chmod");
}

/// What an agent can set through `git config` in its repository, each naming the spy.
fn poison_config(dir: &Path, spy: &str, hooks: &Path) {
    let hooks = hooks.display().to_string();
    let sets: Vec<(String, String)> = vec![
        ("core.hooksPath".into(), hooks),
        ("core.fsmonitor".into(), format!("{spy} fsmonitor")),
        ("core.sshCommand".into(), format!("{spy} ssh")),
        ("core.alternateRefsCommand".into(), format!("{spy} alternate-refs")),
        ("alias.commit".into(), format!("!{spy} alias-commit")),
        ("alias.add".into(), format!("!{spy} alias-add")),
        ("alias.push".into(), format!("!{spy} alias-push")),
        ("filter.evil.clean".into(), format!("{spy} clean")),
        ("filter.evil.smudge".into(), format!("{spy} smudge")),
        ("filter.evil.required".into(), "true".into()),
        ("diff.evil.textconv".into(), format!("{spy} textconv")),
        ("diff.evil.command".into(), format!("{spy} diff-driver")),
        ("diff.external".into(), format!("{spy} external-diff")),
        ("merge.evil.driver".into(), format!("{spy} merge-driver %O %A %B")),
        ("credential.helper".into(), format!("!{spy} credential")),
    ];
    for (k, v) in &sets {
        agent_git(dir, &["config", k, v]);
    }
}

/// Last, as it breaks the agent's own git: a work tree elsewhere.
fn poison_worktree(dir: &Path) {
    agent_git(dir, &["config", "core.worktree", "/nonexistent/elsewhere"]);
}

fn attributes() -> &'static str {
    "* filter=evil diff=evil merge=evil\n"
}

fn bare_mirror(git: &Git, dir: &Path, src: &Path) -> PathBuf {
    let mirror = dir.join("m.git");
    git.run(dir, ["clone", "--quiet", "--bare", src.to_str().expect("utf8"), "m.git"]).expect("clone");
    Mirror::protect(git, &mirror).expect("protect");
    mirror
}

#[test]
fn a_poisoned_workspace_runs_nothing_of_grove_and_its_commit_is_plain() {
    let git = Git::detect().expect("git");
    let (d, src) = repo_with(&[("a/f.txt", "one\n"), ("a/g.txt", "two\n"), ("README", "r\n")]);
    let (spy, marker) = spy(d.path());
    let mirror = bare_mirror(&git, d.path(), &src);
    let base = git.resolve_commit(&mirror, "HEAD").expect("head");
    let wt = d.path().join("wt");
    worktree::add(&git, &mirror, &wt, "grove/j/a", &base, Some(&["a".to_owned()])).expect("add");

    // The agent's turn: it poisons its repository every way git offers, and changes files.
    poison_config(&wt, &spy, &wt.join(".git/evil-hooks"));
    let url_rewrite = format!("url./nonexistent/redirected.git.insteadOf={}", mirror.display());
    let (k, v) = url_rewrite.split_once('=').expect("kv");
    agent_git(&wt, &["config", k, v]);
    let receive = format!("remote.{}.receivepack", mirror.display());
    agent_git(&wt, &["config", &receive, &format!("{spy} receive-pack")]);
    let included = d.path().join("included.gitconfig");
    std::fs::write(&included, format!("[core]\n\thooksPath = {}\n", wt.join(".git/evil-hooks").display()))
        .expect("include");
    agent_git(&wt, &["config", "include.path", included.to_str().expect("utf8")]);
    for name in
        ["pre-commit", "commit-msg", "post-commit", "reference-transaction", "pre-push", "post-checkout"]
    {
        hook(&wt.join(".git/evil-hooks"), name, &spy);
        hook(&wt.join(".git/hooks"), name, &spy);
    }
    std::fs::write(wt.join(".git/info/attributes"), attributes()).expect("attributes");
    std::fs::write(wt.join(".gitattributes"), attributes()).expect("gitattributes");
    std::fs::write(wt.join("a/f.txt"), "ONE\n").expect("write");
    std::fs::write(wt.join("a/new.txt"), "new\n").expect("write");
    poison_worktree(&wt);
    assert!(ran(&marker).is_empty(), "nothing ran yet");

    let c =
        worktree::commit_all(&git, &wt, "turn 1", &Identity::default()).expect("commit").expect("a commit");
    worktree::push_branch(&git, &wt, &mirror.display().to_string(), "grove/j/a").expect("push");
    let stat = crate::stats::diff_stat_cli(&git, &wt, &base, &c).expect("stat");
    let patch = patch(&git, &mirror, &base, &c, 1 << 20).expect("patch");
    assert_eq!(ran(&marker), Vec::<String>::new(), "grove's git ran what the agent's config named");

    // The checkpoint holds the files as written (no clean filter), and reached the mirror.
    assert_eq!(git.ref_target(&mirror, "refs/heads/grove/j/a").expect("ref"), Some(c.clone()));
    let blob = git.run(&mirror, ["cat-file", "-p", &format!("{c}:a/f.txt")]).expect("blob").stdout;
    assert_eq!(blob, "ONE\n");
    assert_eq!(stat.files, 3, "f.txt, new.txt, .gitattributes");
    assert!(patch.contains("+ONE") && !patch.contains("textconv"), "{patch}");
    // The workspace's config now holds only inert keys; the agent's own hooks stay its own.
    let config = std::fs::read_to_string(wt.join(".git/config")).expect("config");
    for gone in
        ["hooksPath", "alias", "filter", "fsmonitor", "worktree =", "include", "insteadOf", "receivepack"]
    {
        assert!(!config.contains(gone), "{gone} survived: {config}");
    }
    assert!(!wt.join(".git/info/attributes").exists());
    assert!(wt.join(".git/hooks/pre-commit").exists());
}

#[test]
fn a_workspace_whose_git_dir_was_replaced_is_refused() {
    let git = Git::detect().expect("git");
    let (d, src) = repo_with(&[("a/f.txt", "one\n")]);
    let mirror = bare_mirror(&git, d.path(), &src);
    let base = git.resolve_commit(&mirror, "HEAD").expect("head");
    let (_other_dir, other) = repo_with(&[("x", "elsewhere\n")]);
    let other_head = git.resolve_commit(&other, "HEAD").expect("head");
    let wt = d.path().join("wt");
    let refused = |what: &str| {
        std::fs::write(wt.join("a/f.txt"), format!("{what}\n")).expect("write");
        match worktree::commit_all(&git, &wt, what, &Identity::default()) {
            Err(GitError::Tampered { what: why, .. }) => why,
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    };
    // `.git` as a file pointing at another repository.
    worktree::add(&git, &mirror, &wt, "grove/j/a", &base, None).expect("add");
    std::fs::remove_dir_all(wt.join(".git")).expect("rm");
    std::fs::write(wt.join(".git"), format!("gitdir: {}\n", other.join(".git").display())).expect("gitfile");
    assert!(refused("gitfile").contains("file"));
    // `.git` as a symlink.
    worktree::add(&git, &mirror, &wt, "grove/j/a", &base, None).expect("add");
    std::fs::remove_dir_all(wt.join(".git")).expect("rm");
    std::os::unix::fs::symlink(other.join(".git"), wt.join(".git")).expect("symlink");
    assert!(refused("symlink").contains("symlink"));
    // A `commondir` that makes it a linked worktree of another repository.
    worktree::add(&git, &mirror, &wt, "grove/j/a", &base, None).expect("add");
    std::fs::write(wt.join(".git/commondir"), other.join(".git").display().to_string()).expect("commondir");
    assert!(refused("commondir").contains("commondir"));
    assert_eq!(
        git.resolve_commit(&other, "HEAD").expect("head"),
        other_head,
        "the other repository is untouched"
    );
    assert_eq!(git.ref_target(&mirror, "refs/heads/grove/j/a").expect("ref"), Some(base));
}

#[test]
fn a_poisoned_mirror_is_put_back_and_runs_nothing() {
    let git = Git::detect().expect("git");
    let (d, src) = repo_with(&[("a.txt", "base\n"), ("b.txt", "b\n")]);
    let (spy, marker) = spy(d.path());
    let base = git.resolve_commit(&src, "HEAD").expect("head");
    let ours = commit_files(&src, &[("a.txt", "ours\n")]);
    git.run(&src, ["checkout", "--quiet", "--detach", &base]).expect("checkout");
    let theirs = commit_files(&src, &[("a.txt", "theirs\n")]);
    let mirror = bare_mirror(&git, d.path(), &src);
    git.run(&mirror, ["fetch", "--quiet", src.to_str().expect("utf8"), &ours, &theirs]).expect("fetch");

    let wt = d.path().join("wt");
    worktree::add(&git, &mirror, &wt, "grove/j/t", &base, None).expect("add");
    poison_config(&mirror, &spy, &mirror.join("hooks"));
    poison_worktree(&mirror);
    for name in ["reference-transaction", "post-update", "pre-receive", "update"] {
        hook(&mirror.join("hooks"), name, &spy);
    }
    std::fs::create_dir_all(mirror.join("info")).expect("info");
    std::fs::write(mirror.join("info/attributes"), attributes()).expect("attributes");
    // A planted `.git` pointing at another repository, where a branch exists that the mirror
    // does not have: discovery in the mirror's folder would find it first.
    let (_o, other) = repo_with(&[("x", "x\n")]);
    git.run(&other, ["branch", "planted"]).expect("branch");
    std::fs::write(mirror.join(".git"), format!("gitdir: {}\n", other.join(".git").display()))
        .expect("gitfile");

    // Even before grove puts the mirror back, its git addresses the mirror and runs no hook.
    assert_eq!(git.ref_target(&mirror, "refs/heads/planted").expect("ref"), None);
    git.update_ref(&mirror, "refs/heads/grove/x", &ours, None).expect("update-ref");
    let p = patch(&git, &mirror, &base, &ours, 1 << 20).expect("patch");
    assert!(p.contains("+ours"), "{p}");
    // A checkpoint pushed into the poisoned mirror: its receive-pack runs none of its hooks.
    std::fs::write(wt.join("b.txt"), "B\n").expect("write");
    let c = worktree::commit_all(&git, &wt, "turn", &Identity::default()).expect("commit").expect("a commit");
    worktree::push_branch(&git, &wt, &mirror.display().to_string(), "grove/j/t").expect("push");
    assert_eq!(git.ref_target(&mirror, "refs/heads/grove/j/t").expect("ref"), Some(c));
    assert_eq!(ran(&marker), Vec::<String>::new());

    let changed = Mirror::protect(&git, &mirror).expect("protect");
    for expected in [
        "core.hookspath",
        "alias.commit",
        "filter.evil.clean",
        "merge.evil.driver",
        "info/attributes",
        "hooks/update",
        ".git",
    ] {
        assert!(changed.iter().any(|c| c.contains(expected)), "{expected} not in {changed:?}");
    }
    assert!(Mirror::protect(&git, &mirror).expect("again").is_empty(), "protect is idempotent");
    // The same file on both sides: a merge driver would be asked, were one configured.
    let out = merge_trees(&git, &mirror, &ours, &theirs).expect("merge");
    assert!(matches!(out, MergeOutcome::Conflict { ref paths, .. } if paths == &["a.txt"]), "{out:?}");
    assert_eq!(ran(&marker), Vec::<String>::new(), "grove's git in the mirror ran something");
    let config = std::fs::read_to_string(mirror.join("config")).expect("config");
    assert!(config.contains("worktreeConfig") || config.contains("worktreeconfig"), "{config}");
    git.run(&mirror, ["fsck", "--no-dangling"]).expect("the mirror still works");
}

/// gix opens with the repository's config only and, for what grove asks of it, runs no filter,
/// textconv or hook even when the repository's config and attributes name them.
#[test]
fn gix_runs_no_filter_or_textconv() {
    let git = Git::detect().expect("git");
    let (d, src) = repo_with(&[("a/f.txt", "one\n"), ("b/g.txt", "two\n")]);
    let (spy, marker) = spy(d.path());
    let base = git.resolve_commit(&src, "HEAD").expect("head");
    let ours = commit_files(&src, &[("a/f.txt", "ONE\n")]);
    git.run(&src, ["checkout", "--quiet", "--detach", &base]).expect("checkout");
    let theirs = commit_files(&src, &[("b/g.txt", "TWO\n")]);
    poison_config(&src, &spy, &src.join(".git/hooks"));
    std::fs::write(src.join(".git/info/attributes"), attributes()).expect("attributes");

    let stat = crate::stats::diff_stat(&src, &base, &ours).expect("stat");
    assert_eq!((stat.files, stat.insertions, stat.deletions), (1, 1, 1));
    let tree = crate::CommitTree::load(&src, &ours).expect("tree");
    assert_eq!(tree.read("a/f.txt").expect("read"), Some(b"ONE\n".to_vec()));
    let w = CommitWriter::open(&src).expect("open");
    let merged = w.merge_disjoint(&base, &ours, &theirs).expect("merge").expect("disjoint");
    let c = w.commit(&merged, &[&ours, &theirs], "m", &Identity::default()).expect("commit");
    assert_eq!(ran(&marker), Vec::<String>::new(), "gix ran what the config named");
    let files = git.run(&src, ["ls-tree", "-r", "--name-only", &c]).expect("ls-tree").stdout;
    assert_eq!(files, "a/f.txt\nb/g.txt\n");
}
