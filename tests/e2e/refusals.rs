use crate::harness::Env;

/// Every refusal exits 2, says what was wrong, and leaves nothing behind: no grove state, no
/// branch in the repository.
#[test]
fn bad_input_is_refused_before_anything_is_created() {
    let env = Env::new();
    let mut files = vec![("a/x.rs".to_owned(), "FileId\n".to_owned())];
    files.push(("b/y.rs".into(), "FileId\n".into()));
    let repo = env.repo("r", &files);
    std::os::unix::fs::symlink("/etc", repo.join("out")).expect("symlink");
    env.git(&repo, &["add", "out"]);
    env.git(&repo, &["commit", "--quiet", "-m", "a symlink out"]);
    // A branch of the person's that a job names as its integration branch.
    env.git(&repo, &["branch", "theirs"]);
    let branches_before = env.git(&repo, &["branch", "--list"]);

    let spec = env.path().join("job.toml");
    std::fs::write(&spec, "[repo]\nsource = \"r\"\n\n[split]\nrule = \"dirs\"\ndepth = \"two\"\n")
        .expect("write");
    let agent = ["--agent", "replace", "--pattern", "FileId", "--replace", "X"];
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec![spec.to_str().expect("utf8")], &["job.toml", "line 6", "depth"]),
        (vec!["--include", "../x/**"], &["select.include", "leaves the repository"]),
        (vec!["--include", "/etc/**"], &["select.include", "absolute"]),
        (vec!["--include", "out/**"], &["select.include", "symlink", "/etc"]),
        (vec!["--repo", "/nonexistent/repo"], &["/nonexistent/repo", "not a git repository"]),
        (vec!["--base", "no-such-branch"], &["no-such-branch", "not a commit"]),
        (vec!["--branch", "bad..name"], &["merge.branch", "not a valid git branch name"]),
        (vec!["--grep", "File(Id"], &["select.grep", "invalid regex"]),
        (vec!["--grep", "NoSuchWord"], &["nothing to do"]),
        (vec!["--branch", "theirs"], &["branch \"theirs\" already exists", "merge.branch"]),
        (vec!["--include-ignored", "[oops"], &["run.include_ignored", "[oops"]),
    ];
    // `grove plan` refuses what `grove run` refuses: both go through `submit::prepare`.
    for verb in ["plan", "run"] {
        for (extra, expected) in &cases {
            let mut args = vec![verb];
            args.extend(extra);
            if !extra.first().is_some_and(|a| a.ends_with(".toml")) {
                args.extend(agent);
            }
            let run = env.grove(&repo, &args);
            assert_eq!(run.code, 2, "{args:?} should be refused: {}", run.stderr);
            for e in *expected {
                assert!(run.stderr.contains(e), "{args:?}: expected {e:?} in: {}", run.stderr);
            }
        }
    }
    assert!(!env.grove_home().exists(), "grove created state for a refused job");
    assert_eq!(env.git(&repo, &["branch", "--list"]), branches_before);
}
