//! `grove gc`: what an ended job leaves in the grove home goes, and nothing else: not a
//! running job's files, not unmerged work (unless asked), not the integration branch, not a
//! branch grove did not make, not a mirror still worth something.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::distributed::{Proc, free_port, nats_server, wait_port, worker};
use crate::harness::{Env, Run, task};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// The only mirror of the home.
fn the_mirror(env: &Env) -> PathBuf {
    let mut m: Vec<PathBuf> = std::fs::read_dir(env.grove_home().join("mirrors"))
        .expect("mirrors")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(m.len(), 1, "{m:?}");
    m.remove(0)
}

/// Does `full` exist in `repo`?
fn has_ref(repo: &Path, full: &str) -> bool {
    let mut cmd = Command::new("git");
    cmd.current_dir(repo).args(["rev-parse", "--verify", "--quiet", full]).stdout(Stdio::null());
    cmd.status().expect("git").success()
}

/// Items of `kind` in a gc report's `removed`, as their `what`.
fn removed(report: &serde_json::Value, kind: &str) -> Vec<String> {
    report["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| r["what"].as_str().expect("what").to_owned())
        .collect()
}

fn gc(env: &Env, cwd: &Path, args: &[&str]) -> Run {
    let mut all = vec!["gc", "--older-than", "0s"];
    all.extend(args);
    let run = env.grove(cwd, &all);
    assert_eq!(run.code, 0, "grove {all:?}: {}\n{}", run.stderr, run.stdout);
    run
}

#[test]
fn gc_collects_an_ended_job_and_nothing_it_should_not() {
    let env = Env::new();
    let files: Vec<(String, String)> =
        ["a", "b", "c", "d"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    let repo = env.repo("r", &files);
    // c writes, is checkpointed, then fails: its branch holds work that never merged.
    let script = r#"echo changed >> "$GROVE_TASK/f.txt"; if [ "$GROVE_TASK" = c ]; then exit 3; fi"#;
    let run = env.grove(&repo, &["run", "--split", "dirs", "--json", "--", "sh", "-c", script]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let job = run.json();
    let id = job["id"].as_str().expect("id").to_owned();
    let integration = job["integration_branch"].as_str().expect("branch").to_owned();
    assert_eq!(task(&job, "c")["state"], "failed");
    let mirror = the_mirror(&env);
    let home = env.grove_home();
    let wt_c = home.join("worktrees").join(&id).join("c");
    assert!(wt_c.is_dir(), "the failed task's worktree is kept (keep_worktrees = failed)");
    assert!(home.join("runs").join(&id).join("a/agent.log").is_file());
    let tree = env.git(&mirror, &["rev-parse", &format!("{integration}^{{tree}}")]);
    let c_tip = env.git(&mirror, &["rev-parse", &format!("grove/{id}/c")]);
    // Branches named like grove's that grove did not make: in the mirror and in the repository.
    let foreign = format!("refs/heads/grove/{id}/mine");
    env.git(&mirror, &["update-ref", &foreign, &c_tip]);
    env.git(&repo, &["branch", &format!("grove/{id}/mine"), "main"]);

    // A second job on the same repository, held running by its agent until `gate` exists.
    let gate = env.path().join("gate");
    let started = env.path().join("started");
    let slow = format!(
        r#"touch {started}; i=0; while [ ! -e {gate} ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 9; sleep 0.1; done; echo later >> d/f.txt"#,
        started = s(&started),
        gate = s(&gate)
    );
    let mut running = Proc(
        grove_tests::command("grove")
            .current_dir(&repo)
            .args(["run", "--split", "dirs", "--include", "d/**", "--json", "--", "sh", "-c", &slow])
            .env("HOME", env.path().join("home"))
            .env("GROVE_HOME", &home)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn grove run"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the second job's agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let worktrees_of = |job: &str| std::fs::read_dir(home.join("worktrees").join(job)).map(|d| d.count());
    let status = env.grove(&repo, &["status", "--json"]);
    let jobs = status.json();
    let id2 = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_owned())
        .find(|j| *j != id)
        .expect("the second job");
    assert_eq!(worktrees_of(&id2).expect("its worktree"), 1);

    // A dry run lists, with sizes, and changes nothing.
    let dry = gc(&env, &repo, &["--dry-run", "--json"]).json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["collected"], serde_json::json!([id]));
    assert!(removed(&dry, "worktree").iter().any(|w| w.ends_with(&format!("{id}/c"))), "{dry:#}");
    assert_eq!(removed(&dry, "run-dir").len(), 4, "{dry:#}");
    assert!(
        dry["removed"]
            .as_array()
            .expect("removed")
            .iter()
            .any(|r| r["kind"] == "worktree" && r["bytes"].as_u64() > Some(0))
    );
    assert_eq!(removed(&dry, "branch").len(), 3, "a, b and d merged: {dry:#}");
    assert!(wt_c.is_dir() && home.join("runs").join(&id).is_dir(), "a dry run removes nothing");
    assert!(has_ref(&mirror, &format!("refs/heads/grove/{id}/a")));
    let text = gc(&env, &repo, &["--dry-run"]).stdout;
    assert!(text.contains("WOULD REMOVE") && text.contains("dry run"), "{text}");

    // The real thing, while the second job runs.
    let report = gc(&env, &repo, &["--json", "--mirrors"]).json();
    assert_eq!(report["collected"], serde_json::json!([id]));
    assert!(!home.join("worktrees").join(&id).exists(), "the ended job's worktrees are gone");
    assert!(!home.join("runs").join(&id).exists(), "its run dirs are gone");
    for t in ["a", "b", "d"] {
        assert!(!has_ref(&mirror, &format!("refs/heads/grove/{id}/{t}")), "merged {t} goes");
    }
    let c_ref = format!("refs/heads/grove/{id}/c");
    assert!(has_ref(&mirror, &c_ref), "the failed task's unmerged branch stays");
    let kept: Vec<String> = report["kept"]
        .as_array()
        .expect("kept")
        .iter()
        .map(|k| format!("{}: {}", k["what"].as_str().unwrap_or(""), k["why"].as_str().unwrap_or("")))
        .collect();
    assert!(kept.iter().any(|k| k.contains(&c_ref) && k.contains("--prune-unmerged")), "{kept:#?}");
    assert!(kept.iter().any(|k| k.contains("not collected") && k.contains(&id2)), "{kept:#?}");
    assert!(has_ref(&mirror, &foreign), "a branch grove did not make stays");
    assert_eq!(env.git(&mirror, &["rev-parse", &format!("{integration}^{{tree}}")]), tree);
    assert!(report["freed_bytes"].as_u64().expect("freed") > 0);
    // The running job was not touched.
    assert_eq!(worktrees_of(&id2).expect("still there"), 1);
    assert!(has_ref(&mirror, &format!("refs/heads/grove/{id2}/d")));
    assert!(home.join("runs").join(&id2).join("d").is_dir());
    assert!(report["skipped"].as_array().expect("skipped").iter().any(|x| x["job"] == id2.as_str()));

    std::fs::write(&gate, "").expect("gate");
    let status = running.0.wait().expect("wait for the second job");
    let mut err = String::new();
    if let Some(mut e) = running.0.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).expect("stderr");
    }
    assert!(status.success(), "the second job still finishes: {err}");

    // With --prune-unmerged the failed task's work goes too; the mirror stays sound.
    let report = gc(&env, &repo, &["--json", "--prune-unmerged"]).json();
    assert!(removed(&report, "branch").contains(&format!("{c_ref} in {}", mirror.display())), "{report:#}");
    assert!(!has_ref(&mirror, &c_ref));
    env.git(&mirror, &["fsck", "--no-progress"]);
    assert_eq!(env.git(&mirror, &["rev-parse", &format!("{integration}^{{tree}}")]), tree);

    // The mirror holds a branch grove did not make: it stays; without it, it goes.
    let report = gc(&env, &repo, &["--json", "--mirrors"]).json();
    assert!(removed(&report, "mirror").is_empty(), "{report:#}");
    assert!(mirror.is_dir());
    env.git(&mirror, &["update-ref", "-d", &foreign]);
    let report = gc(&env, &repo, &["--json", "--mirrors"]).json();
    assert_eq!(removed(&report, "mirror"), [mirror.display().to_string()], "{report:#}");
    assert!(!mirror.exists());

    // The person's repository: untouched, branches of both jobs published, `mine` there.
    assert_eq!(env.git(&repo, &["rev-parse", &format!("{integration}^{{tree}}")]), tree);
    assert!(has_ref(&repo, &format!("refs/heads/grove/{id}/mine")));
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
    // status still lists the jobs, collected.
    let jobs = env.grove(&repo, &["status", "--json"]).json();
    let jobs = jobs.as_array().expect("jobs");
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j["collected_at"].as_i64().is_some()), "{jobs:#?}");
    // And a new job clones the mirror again.
    let again = env
        .grove(&repo, &["run", "--split", "dirs", "--include", "a/**", "--json", "--", "sh", "-c", script]);
    assert_eq!(again.code, 0, "{}", again.stderr);
}

/// A coordinator daemon holds the home: `grove gc` (and a second daemon) refuse, naming it.
/// With `--gc-every` the daemon collects ended jobs itself: a job run through it loses its
/// merged task branches in the daemon's mirror, its integration branch stays.
#[test]
fn gc_refuses_under_a_daemon_which_collects_by_itself() {
    let env = Env::new();
    let (_nats, url) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let mut cmd = grove_tests::command("grove");
    cmd.args(["coordinator", "--nats", &url, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--gc-every", "1s", "--gc-older-than", "0s"])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _daemon = Proc(cmd.spawn().expect("spawn grove coordinator"));
    let _worker = worker(&env, &url, "w1", "local", false);
    wait_port(port);
    let refused = env.grove(env.path(), &["gc", "--dry-run"]);
    assert_eq!(refused.code, 2, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains(&format!("grove coordinator at http://127.0.0.1:{port} (pid"))
            && refused.stderr.contains("holds the grove home"),
        "{}",
        refused.stderr
    );
    // A second daemon on the same home refuses as well.
    let second = env.grove(
        env.path(),
        &["coordinator", "--nats", &url, "--listen", &format!("127.0.0.1:{}", free_port())],
    );
    assert_eq!(second.code, 2, "{}", second.stderr);
    assert!(second.stderr.contains("holds the grove home"), "{}", second.stderr);

    let files: Vec<(String, String)> =
        ["a", "b"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    let repo = env.repo("r", &files);
    let api = format!("http://127.0.0.1:{port}");
    let script = r#"echo more >> "$GROVE_TASK/f.txt""#;
    let run = env
        .grove(&repo, &["run", "--coordinator", &api, "--split", "dirs", "--json", "--", "sh", "-c", script]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    let id = job["id"].as_str().expect("id");
    let integration = job["integration_branch"].as_str().expect("branch");
    let mirror = the_mirror(&env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while has_ref(&mirror, &format!("refs/heads/grove/{id}/a"))
        || has_ref(&mirror, &format!("refs/heads/grove/{id}/b"))
    {
        assert!(Instant::now() < deadline, "the daemon did not collect the job");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(has_ref(&mirror, &format!("refs/heads/{integration}")));
    assert_eq!(env.git(&mirror, &["show", &format!("{integration}:a/f.txt")]), "a\nmore");
}

/// A squash merge leaves a task's own commits out of the integration branch: its branch still
/// goes, because its merge commit is in; the integration branch keeps its tree. A discarded
/// task's work, kept under refs/grove/attempts/, stays until --prune-unmerged.
#[test]
fn gc_removes_squash_merged_branches_and_keeps_discarded_work() {
    let env = Env::new();
    let files: Vec<(String, String)> =
        ["a", "b", "c"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    let repo = env.repo("r", &files);
    let script = r#"echo more >> "$GROVE_TASK/f.txt"; [ "$GROVE_TASK" != c ]"#;
    let run = env.grove(
        &repo,
        &["run", "--split", "dirs", "--merge-mode", "squash", "--json", "--", "sh", "-c", script],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let job = run.json();
    let id = job["id"].as_str().expect("id");
    let integration = job["integration_branch"].as_str().expect("branch");
    let discard = env.grove(&repo, &["discard", &format!("{id}/c")]);
    assert_eq!(discard.code, 0, "{}", discard.stderr);
    let mirror = the_mirror(&env);
    let tree = env.git(&mirror, &["rev-parse", &format!("{integration}^{{tree}}")]);
    let a = format!("refs/heads/grove/{id}/a");
    let tip = env.git(&mirror, &["rev-parse", &a]);
    let not_ancestor = Command::new("git")
        .current_dir(&mirror)
        .args(["merge-base", "--is-ancestor", &tip, integration])
        .status()
        .expect("git");
    assert!(!not_ancestor.success(), "squashed: the task's commit is not in the integration branch");
    let attempt =
        env.git(&mirror, &["for-each-ref", "--format=%(refname)", &format!("refs/grove/attempts/{id}/c/")]);
    assert!(!attempt.is_empty(), "discard keeps c's work under refs/grove/attempts/");

    let report = gc(&env, &repo, &["--json"]).json();
    assert_eq!(removed(&report, "branch").len(), 2, "{report:#}");
    assert!(!has_ref(&mirror, &a));
    assert!(removed(&report, "attempt-ref").is_empty(), "{report:#}");
    assert!(has_ref(&mirror, &attempt), "the discarded work stays");
    assert_eq!(env.git(&mirror, &["rev-parse", &format!("{integration}^{{tree}}")]), tree);

    let report = gc(&env, &repo, &["--json", "--prune-unmerged"]).json();
    assert_eq!(removed(&report, "attempt-ref"), [format!("{attempt} in {}", mirror.display())], "{report:#}");
    assert!(!has_ref(&mirror, &attempt));
    assert_eq!(env.git(&mirror, &["rev-parse", &format!("{integration}^{{tree}}")]), tree);
    env.git(&mirror, &["fsck", "--no-progress"]);
}
