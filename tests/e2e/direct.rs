//! The builtin `replace` agent without a checkout (the mirror is on this machine, nothing needs
//! a workspace): the integration tree must be byte for byte the serial rewrite's, and a run
//! that needs a workspace (a check) must give the same tree through the checkout path.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::harness::{Env, task};

const PATTERN: &str = r"\bFileId\b";

/// Folders with nested files, an executable, a symlink whose target has the word, a file
/// where the word is only part of another, and a folder without it.
fn repo(env: &Env) -> PathBuf {
    let files = [
        ("README.md", "read me\n"),
        ("a/x.rs", "use FileId;\n// FileIdx stays\n"),
        ("a/deep/er/y.rs", "FileId FileId\n"),
        ("a/run.sh", "#!/bin/sh\necho FileId\n"),
        ("b/z.txt", "FileIdx and FileId\n"),
        ("b/c/d.rs", "fn f(_: FileId) {}\n"),
        ("c/none.txt", "nothing\n"),
    ];
    let root = env.path().join("src");
    for (p, content) in files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
    let run = root.join("a/run.sh");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("FileId.rs", root.join("a/link.rs")).expect("symlink");
    env.git(&root, &["init", "--quiet", "--initial-branch=main"]);
    env.git(&root, &["add", "--all"]);
    env.git(&root, &["commit", "--quiet", "-m", "initial"]);
    root
}

/// The serial result with plain git: a clone, the rewrite of every regular file under the
/// task folders (symlinks left alone), one `git commit -a`; its tree.
fn serial_tree(env: &Env, repo: &Path) -> String {
    let serial = env.path().join("serial");
    env.git(env.path(), &["clone", "--quiet", repo.to_str().expect("utf8"), "serial"]);
    let re = regex::bytes::Regex::new(PATTERN).expect("regex");
    let mut stack: Vec<PathBuf> = ["a", "b", "c"].iter().map(|d| serial.join(d)).collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let kind = std::fs::symlink_metadata(&path).expect("stat").file_type();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).expect("read");
                let new = re.replace_all(&bytes, b"SourceFileId".as_slice());
                if new.as_ref() != bytes.as_slice() {
                    std::fs::write(&path, new.as_ref()).expect("write");
                }
            }
        }
    }
    env.git(&serial, &["commit", "--quiet", "-am", "serial"]);
    env.git(&serial, &["rev-parse", "HEAD^{tree}"])
}

/// `grove run --split dirs --agent replace` (with `extra` flags); the job's JSON.
fn run(env: &Env, repo: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "run",
        "--split",
        "dirs",
        "--grep",
        PATTERN,
        "--agent",
        "replace",
        "--pattern",
        PATTERN,
        "--replace",
        "SourceFileId",
        "-j",
        "2",
        "--json",
    ];
    args.extend(extra);
    let run = env.grove(repo, &args);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    for t in ["a", "b"] {
        assert_eq!(task(&job, t)["shown"], "merged", "{job:#}");
    }
    job
}

/// The checkpoint commit of task `t` in `job`: author, committer, dates, parents, subject.
fn checkpoint(env: &Env, repo: &Path, job: &serde_json::Value, t: &str) -> String {
    env.git(repo, &["log", "-1", "--format=%an <%ae> %ad | %cn <%ce> %cd | %P | %B", &branch(job, t)])
}

#[test]
fn replace_without_a_checkout_gives_the_serial_tree_and_the_checkout_path_agrees() {
    let env = Env::new();
    let repo = repo(&env);
    let base = env.git(&repo, &["rev-parse", "HEAD"]);
    let expected = serial_tree(&env, &repo);

    let direct = run(&env, &repo, &[]);
    let integration = direct["integration_branch"].as_str().expect("branch");
    let tree = env.git(&repo, &["rev-parse", &format!("{integration}^{{tree}}")]);
    assert_eq!(tree, expected, "the integration tree is the serial one");
    let ls = env.git(&repo, &["ls-tree", "-r", integration]);
    assert!(ls.lines().any(|l| l.starts_with("100755") && l.ends_with("a/run.sh")), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with("120000") && l.ends_with("a/link.rs")), "{ls}");
    assert_eq!(env.git(&repo, &["cat-file", "-p", &format!("{integration}:a/link.rs")]), "FileId.rs");
    let id = direct["id"].as_str().expect("id");
    let logs = env.grove(&repo, &["logs", &format!("{id}/a")]);
    assert!(logs.stdout.contains("no workspace: the files are rewritten in the mirror"), "{}", logs.stdout);
    assert!(logs.stdout.contains("a/deep/er/y.rs: 2 replacement(s)"), "{}", logs.stdout);
    assert!(logs.stdout.contains("replace: 4 replacement(s) in 3 of"), "{}", logs.stdout);

    // A check needs a workspace: the checkout path, the same tree and the same kind of commit.
    let env2 = Env::new();
    let repo2 = self::repo(&env2);
    assert_eq!(env2.git(&repo2, &["rev-parse", "HEAD"]), base, "the same base commit");
    let checked = run(&env2, &repo2, &["--check", "true"]);
    let integration2 = checked["integration_branch"].as_str().expect("branch");
    assert_eq!(env2.git(&repo2, &["rev-parse", &format!("{integration2}^{{tree}}")]), expected);
    let id2 = checked["id"].as_str().expect("id");
    let logs2 = env2.grove(&repo2, &["logs", &format!("{id2}/a")]);
    assert!(!logs2.stdout.contains("no workspace"), "{}", logs2.stdout);
    assert!(logs2.stdout.contains("a/deep/er/y.rs: 2 replacement(s)"), "{}", logs2.stdout);
    for t in ["a", "b"] {
        let ours = checkpoint(&env, &repo, &direct, t).replace(id, "JOB");
        let theirs = checkpoint(&env2, &repo2, &checked, t).replace(id2, "JOB");
        assert_eq!(ours, theirs, "the checkpoint commit of {t} is the one a checkout makes");
        assert_eq!(task(&direct, t)["diff"], task(&checked, t)["diff"], "the diff stat of {t}");
        assert_eq!(task(&direct, t)["turns"], task(&checked, t)["turns"]);
        assert_eq!(
            env.git(&repo, &["rev-parse", &format!("{}^{{tree}}", branch(&direct, t))]),
            env2.git(&repo2, &["rev-parse", &format!("{}^{{tree}}", branch(&checked, t))]),
        );
    }
}

fn branch(job: &serde_json::Value, t: &str) -> String {
    task(job, t)["branch"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("grove/{}/{t}", job["id"].as_str().expect("id")))
}
