//! The merge train and the review verbs, end to end: ordered merging with agents that finish
//! out of order, merge modes, conflict policies, integration checks with bisection, discard
//! and push. Agents are `sh -c` scripts whose order is forced by files, never by timing.

use std::path::{Path, PathBuf};

use crate::harness::{Env, task};

/// A repository with one folder per name (`<name>/f.txt`) and a top-level `shared.txt`.
fn dirs_repo(env: &Env, names: &[&str]) -> PathBuf {
    let mut files: Vec<(String, String)> =
        names.iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    files.push(("shared.txt".into(), "shared\n".into()));
    env.repo("r", &files)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// Subjects of the integration branch's first-parent history, oldest first.
fn merged_subjects(env: &Env, repo: &Path, branch: &str) -> Vec<String> {
    let log =
        env.git(repo, &["log", "--first-parent", "--reverse", "--format=%s", &format!("main..{branch}")]);
    log.lines().map(str::to_owned).collect()
}

/// Task `a` cannot finish before `c` has: `c` finishes first, yet `a` merges first, then `b`,
/// then `c`; each merge commit carries the Grove-* trailers.
#[test]
fn later_tasks_finishing_first_still_merge_in_order() {
    let env = Env::new();
    let repo = dirs_repo(&env, &["a", "b", "c"]);
    let done = env.path().join("done");
    let gate = env.path().join("c-finished");
    let script = format!(
        r#"echo "$GROVE_TASK" >> "$GROVE_TASK/f.txt"
if [ "$GROVE_TASK" = a ]; then
  i=0; while [ ! -e {gate} ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 9; sleep 0.1; done
fi
echo "$GROVE_TASK" >> {done}
if [ "$GROVE_TASK" = c ]; then touch {gate}; fi"#,
        gate = s(&gate),
        done = s(&done)
    );
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "-j",
            "3",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let finished = std::fs::read_to_string(&done).expect("done file");
    let pos = |t: &str| finished.lines().position(|l| l == t).expect("finished");
    assert!(pos("c") < pos("a"), "c finished before a: {finished}");

    let job = run.json();
    for (slug, n) in [("a", 1), ("b", 2), ("c", 3)] {
        assert_eq!(task(&job, slug)["shown"], "merged", "{job:#}");
        assert_eq!(task(&job, slug)["merge_position"], n, "{job:#}");
    }
    let id = job["id"].as_str().expect("id");
    let branch = job["integration_branch"].as_str().expect("branch");
    let subjects = merged_subjects(&env, &repo, branch);
    assert_eq!(
        subjects,
        [
            format!("grove: merge a ({id})"),
            format!("grove: merge b ({id})"),
            format!("grove: merge c ({id})")
        ]
    );
    let first = env.git(&repo, &["rev-list", "--first-parent", "--reverse", &format!("main..{branch}")]);
    let first = first.lines().next().expect("a merge");
    let body = env.git(&repo, &["log", "-1", "--format=%B", first]);
    for trailer in [
        format!("Grove-Job: {id}"),
        "Grove-Task: a".into(),
        "Grove-Attempt: 1".into(),
        "Grove-Agent: command".into(),
        "Grove-Diffstat: 1 files +1 -0".into(),
    ] {
        assert!(body.contains(&trailer), "{trailer} in {body}");
    }
    assert_eq!(env.git(&repo, &["rev-list", "--merges", "--count", &format!("main..{branch}")]), "3");
}

/// `--merge-mode squash`: one single-parent commit per task; `grove push` pushes the
/// integration branch to `origin`, without force.
#[test]
fn squash_mode_and_push() {
    let env = Env::new();
    let repo = dirs_repo(&env, &["a", "b"]);
    let remote = env.path().join("remote.git");
    env.git(env.path(), &["init", "--quiet", "--bare", s(&remote)]);
    env.git(&repo, &["remote", "add", "origin", s(&remote)]);
    let script = r#"echo more >> "$GROVE_TASK/f.txt""#;
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--merge-mode",
            "squash",
            "--json",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    let branch = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["rev-list", "--merges", "--count", &format!("main..{branch}")]), "0");
    assert_eq!(env.git(&repo, &["rev-list", "--count", &format!("main..{branch}")]), "2");
    let id = job["id"].as_str().expect("id");
    assert_eq!(merged_subjects(&env, &repo, branch)[0], format!("grove: squash a ({id})"));

    let push = env.grove(&repo, &["push", id, "--json"]);
    assert_eq!(push.code, 0, "{}", push.stderr);
    assert_eq!(push.json()["remote"], "origin");
    assert_eq!(env.git(&remote, &["rev-parse", branch]), env.git(&repo, &["rev-parse", branch]));
}

/// `--merge-mode manual`: branches are checked and wait; `grove merge` merges them in order.
#[test]
fn manual_mode_waits_for_grove_merge() {
    let env = Env::new();
    for verb in ["merge", "discard", "push", "compare", "pick", "diff", "status"] {
        let help = env.grove(env.path(), &[verb, "--help"]);
        assert!(help.code == 0 && help.stdout.contains("Examples:"), "grove {verb} --help: {}", help.stdout);
    }
    let repo = dirs_repo(&env, &["a", "b"]);
    let script = r#"echo more >> "$GROVE_TASK/f.txt""#;
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--merge-mode",
            "manual",
            "--json",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(run.code, 1, "not merged yet: {}", run.stderr);
    let job = run.json();
    let id = job["id"].as_str().expect("id");
    assert_eq!(task(&job, "a")["shown"], "succeeded");
    assert!(task(&job, "a")["why"].as_str().expect("why").contains("grove merge"), "{job:#}");
    let status = env.grove(&repo, &["status", id]);
    assert!(status.stdout.contains("waiting for `grove merge"), "{}", status.stdout);

    let merge = env.grove(&repo, &["merge", id, "--json"]);
    assert_eq!(merge.code, 0, "{}\n{}", merge.stderr, merge.stdout);
    let job = merge.json();
    assert_eq!(task(&job, "a")["shown"], "merged");
    assert_eq!(task(&job, "b")["merge_position"], 2);
    let branch = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["rev-list", "--merges", "--count", &format!("main..{branch}")]), "2");
}

/// An agent that appends to the shared top-level file: `a` and `b` conflict there. The
/// script keeps a copy of what it is told about the conflict.
fn conflicting_script(env: &Env, touching: &str) -> String {
    let seen = env.path().join("seen");
    format!(
        r#"case "{touching}" in *"$GROVE_TASK"*) echo "$GROVE_TASK" >> shared.txt;; esac
echo "$GROVE_TASK" >> "$GROVE_TASK/f.txt"
if [ -n "$GROVE_CONFLICT_FILE" ]; then
  cp "$GROVE_CONFLICT_FILE" {seen}-$GROVE_TASK
  echo "$GROVE_CONFLICT_PATHS" > {seen}-$GROVE_TASK-paths
fi"#,
        seen = s(&seen)
    )
}

/// Under `redo` (the default), `b`'s branch conflicts with `a`'s merge; `b` runs again on top
/// of the integration head, told about the conflict, and merges on its second attempt.
#[test]
fn a_conflict_under_redo_resolves_on_the_second_attempt() {
    let env = Env::new();
    let repo = dirs_repo(&env, &["a", "b"]);
    let script = conflicting_script(&env, "ab");
    let run = env.grove(
        &repo,
        &["run", "--split", "dirs", "--exclude", "shared.txt", "--json", "--", "sh", "-c", &script],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    let b = task(&job, "b");
    assert_eq!(b["shown"], "merged", "{job:#}");
    assert_eq!(b["attempt"], 2);
    assert_eq!(b["redos"], 1);
    let branch = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{branch}:shared.txt")]), "shared\na\nb");

    let told = std::fs::read_to_string(env.path().join("seen-b")).expect("b was told about the conflict");
    assert!(told.contains("shared.txt") && told.contains("<<<<<<<"), "{told}");
    assert!(told.contains("+b"), "the previous diff is included: {told}");
    let paths = std::fs::read_to_string(env.path().join("seen-b-paths")).expect("paths");
    assert_eq!(paths.trim(), "shared.txt");
    assert!(!env.path().join("seen-a").exists(), "a was never redone");

    // The redo is reviewed against the integration head it started from: stat, then patch.
    let id = job["id"].as_str().expect("id");
    let diff = env.grove(&repo, &["diff", &format!("{id}/b"), "--json"]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    let d = diff.json();
    assert_eq!(d["base"], b["task_base"]);
    let files: Vec<_> = d["files"].as_array().expect("files").iter().map(|f| f["path"].clone()).collect();
    assert_eq!(files, ["b/f.txt", "shared.txt"]);
    let text = env.grove(&repo, &["diff", "b"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let stat = text.stdout.find("2 files changed").expect("the stat");
    let patch = text.stdout.find("diff --git").expect("the patch");
    assert!(stat < patch, "stat first: {}", text.stdout);
}

/// Under `attention` the conflicting branch is set aside with its paths and the rest merge;
/// under `abort` merging stops at it.
#[test]
fn a_conflict_under_attention_is_set_aside_and_under_abort_stops_merging() {
    let env = Env::new();
    let repo = dirs_repo(&env, &["a", "b", "c"]);
    let script = conflicting_script(&env, "ab");
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--on-conflict",
            "attention",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    assert_eq!(task(&job, "a")["shown"], "merged");
    assert_eq!(task(&job, "b")["state"], "needs-attention");
    assert_eq!(task(&job, "b")["conflict_paths"], serde_json::json!(["shared.txt"]));
    assert_eq!(task(&job, "b")["attempt"], 1);
    assert_eq!(task(&job, "c")["shown"], "merged");
    assert_eq!(task(&job, "c")["merge_position"], 2);
    let status = env.grove(&repo, &["status", job["id"].as_str().expect("id")]);
    assert!(
        status.stdout.contains("conflicts with the integration branch in shared.txt"),
        "{}",
        status.stdout
    );

    let env = Env::new();
    let repo = dirs_repo(&env, &["a", "b", "c"]);
    let script = conflicting_script(&env, "ab");
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--on-conflict",
            "abort",
            "--json",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    assert_eq!(task(&job, "a")["shown"], "merged");
    assert_eq!(task(&job, "b")["state"], "needs-attention");
    assert_eq!(task(&job, "c")["shown"], "succeeded", "merging stopped before c: {job:#}");
    assert!(job["merge_stopped"].as_str().expect("stopped").contains("stopped at b"), "{job:#}");
    assert!(task(&job, "c")["why"].as_str().expect("why").contains("merging stopped"), "{job:#}");
}

/// A batch of 8 merges checked at once; branch 5 breaks the integration check. Bisecting finds
/// it in log2(8) further checks, sets it aside with the check's output, and the other 7 merge.
#[test]
fn a_batch_of_eight_is_bisected_to_the_branch_that_breaks_the_check() {
    let env = Env::new();
    let names = ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"];
    let repo = dirs_repo(&env, &names);
    let checks = env.path().join("checks");
    let script =
        r#"echo x >> "$GROVE_TASK/f.txt"; if [ "$GROVE_TASK" = d5 ]; then echo BROKEN > d5/broken; fi"#;
    let check = format!(
        r#"echo "$GROVE_COMMIT" >> {}; if [ -e d5/broken ]; then echo "d5 is broken"; exit 1; fi"#,
        s(&checks)
    );
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--merge-mode",
            "manual",
            "--batch",
            "8",
            "--integration-check",
            &check,
            "--json",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(run.code, 1, "manual: nothing merged yet: {}", run.stderr);
    assert!(!checks.exists(), "no check before `grove merge`");
    let id = run.json()["id"].as_str().expect("id").to_owned();

    let merge = env.grove(&repo, &["merge", &id, "--json"]);
    assert_eq!(merge.code, 1, "d5 is set aside: {}\n{}", merge.stderr, merge.stdout);
    let job = merge.json();
    let d5 = task(&job, "d5");
    assert_eq!(d5["state"], "needs-attention");
    assert_eq!(d5["merge"], "check-failed");
    assert!(d5["why"].as_str().expect("why").contains("d5 is broken"), "{job:#}");
    for n in names.iter().filter(|n| **n != "d5") {
        assert_eq!(task(&job, n)["shown"], "merged", "{n}: {job:#}");
    }
    let branch = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["rev-list", "--merges", "--count", &format!("main..{branch}")]), "7");
    // The whole batch, 3 bisection steps (4 passes, 6 and 5 fail), then 6..8 again on top.
    let runs = std::fs::read_to_string(&checks).expect("checks ran");
    assert_eq!(runs.lines().count(), 5, "{runs}");
}

/// `discard` removes grove's worktree and branches of a task and nothing else: a branch of
/// the person's with the same prefix survives, a task branch they moved is left (and said so),
/// and a merged task is refused.
#[test]
fn discard_removes_only_what_grove_made() {
    let env = Env::new();
    let repo = dirs_repo(&env, &["a", "b", "c"]);
    let script = r#"echo more >> "$GROVE_TASK/f.txt"; [ "$GROVE_TASK" = a ]"#;
    let run = env.grove(
        &repo,
        &["run", "--split", "dirs", "--exclude", "shared.txt", "--json", "--", "sh", "-c", script],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let job = run.json();
    let id = job["id"].as_str().expect("id").to_owned();
    assert_eq!(task(&job, "b")["state"], "failed");
    let b_branch = format!("grove/{id}/b");
    let c_branch = format!("grove/{id}/c");
    let mine = format!("grove/{id}/b-mine");
    env.git(&repo, &["branch", &mine, &b_branch]);
    env.git(&repo, &["branch", "grove/mine", "main"]);
    // The person moved c's branch: it is theirs now.
    env.git(&repo, &["branch", "--force", &c_branch, "main"]);
    let worktree = env.grove_home().join("worktrees").join(&id).join("b");
    assert!(worktree.exists(), "a failed task's worktree is kept");

    let merged = env.grove(&repo, &["discard", &format!("{id}/a")]);
    assert_eq!(merged.code, 2);
    assert!(merged.stderr.contains("is merged"), "{}", merged.stderr);

    let discard = env.grove(&repo, &["discard", "--failed", "--json"]);
    assert_eq!(discard.code, 0, "{}", discard.stderr);
    let report = discard.json();
    assert_eq!(report[0]["task"], "b");
    let removed = report[0]["removed"].as_array().expect("removed");
    assert_eq!(removed.len(), 3, "worktree, mirror branch, repository branch: {report:#}");
    assert_eq!(report[1]["task"], "c");
    let kept = report[1]["kept"].as_array().expect("kept");
    assert!(kept[0].as_str().expect("kept").contains("moved"), "{report:#}");
    assert!(!worktree.exists());
    let branches = env.git(&repo, &["branch", "--format=%(refname:short)"]);
    assert!(!branches.lines().any(|b| b == b_branch), "{branches}");
    assert!(branches.lines().any(|b| b == mine), "{branches}");
    assert!(branches.lines().any(|b| b == "grove/mine"), "{branches}");
    assert!(branches.lines().any(|b| b == format!("grove/{id}/a")), "{branches}");
    assert_eq!(env.git(&repo, &["rev-parse", &c_branch]), env.git(&repo, &["rev-parse", "main"]));
    let text = env.grove(&repo, &["discard", &format!("{id}/b")]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("no worktree or branch left"), "{}", text.stdout);
    let status = env.grove(&repo, &["status", &id, "--json"]);
    assert_eq!(task(&status.json(), "b")["shown"], "discarded");
}

/// `--pick smallest-diff`: once both variants ended, the one with fewer changed lines merges.
#[test]
fn variants_smallest_diff_keeps_the_smaller_change() {
    let env = Env::new();
    let repo = dirs_repo(&env, &["a"]);
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--variant",
            "big=printf '1\\n2\\n3\\n' >> a/f.txt",
            "--variant",
            "small=echo 1 >> a/f.txt",
            "--pick",
            "smallest-diff",
            "--json",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    assert_eq!(task(&job, "a.small")["shown"], "merged", "{job:#}");
    assert_eq!(task(&job, "a.big")["shown"], "discarded", "{job:#}");
}

/// Two variants of one task under `first-passing`: `fast` passes first (`slow` waits for a
/// file nobody makes), merges, and `slow` is stopped and its branch discarded.
#[test]
fn variants_first_passing_merges_the_first_and_discards_the_other() {
    let env = Env::new();
    let repo = dirs_repo(&env, &["a"]);
    let never = env.path().join("never");
    let slow = format!(
        r#"echo slow >> a/f.txt; i=0; while [ ! -e {never} ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 9; sleep 0.1; done"#,
        never = s(&never)
    );
    let fast = "echo fast >> a/f.txt".to_owned();
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--variant",
            &format!("slow={slow}"),
            "--variant",
            &format!("fast={fast}"),
            "--json",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let job = run.json();
    let id = job["id"].as_str().expect("id");
    assert_eq!(task(&job, "a.fast")["shown"], "merged", "{job:#}");
    assert_eq!(task(&job, "a.fast")["picked"], true);
    assert_eq!(task(&job, "a.slow")["shown"], "discarded", "{job:#}");
    assert_eq!(task(&job, "a.slow")["reason"], "lost to variant fast", "{job:#}");
    let branch = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{branch}:a/f.txt")]), "a\nfast");
    let body = env.git(&repo, &["log", "-1", "--format=%B", branch]);
    assert!(body.contains("Grove-Variant: fast"), "{body}");
    let branches = env.git(&repo, &["branch", "--format=%(refname:short)"]);
    assert!(branches.lines().any(|b| b == format!("grove/{id}/a.fast")), "{branches}");
    assert!(!branches.lines().any(|b| b == format!("grove/{id}/a.slow")), "{branches}");
}

/// `--pick manual`: both variants pass and wait; `grove compare` shows them side by side;
/// `grove pick` merges the chosen one and discards the other's branch.
#[test]
fn variants_manual_pick_compare_and_pick() {
    let env = Env::new();
    let repo = dirs_repo(&env, &["a"]);
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--variant",
            "one=echo one >> a/f.txt",
            "--variant",
            "two=echo two >> a/f.txt; echo extra > a/g.txt",
            "--pick",
            "manual",
            "--json",
        ],
    );
    assert_eq!(run.code, 1, "waiting for a pick: {}", run.stderr);
    let job = run.json();
    let id = job["id"].as_str().expect("id").to_owned();
    assert!(task(&job, "a.one")["why"].as_str().expect("why").contains("grove pick a one"), "{job:#}");

    let compare = env.grove(&repo, &["compare", "a", "--json"]);
    assert_eq!(compare.code, 0, "{}", compare.stderr);
    let c = compare.json();
    let variants = c["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 2, "{c:#}");
    assert!(variants.iter().all(|v| v["checks_passed"] == true), "{c:#}");
    let two = variants.iter().find(|v| v["variant"] == "two").expect("two");
    assert_eq!(two["files"], 2);
    let table = env.grove(&repo, &["compare", "a"]);
    assert!(table.stdout.contains("VARIANT") && table.stdout.contains("passed"), "{}", table.stdout);

    let wrong = env.grove(&repo, &["pick", "a", "three"]);
    assert_eq!(wrong.code, 2);
    assert!(wrong.stderr.contains("has no variant \"three\""), "{}", wrong.stderr);

    let pick = env.grove(&repo, &["pick", "a", "two", "--json"]);
    assert_eq!(pick.code, 0, "{}\n{}", pick.stderr, pick.stdout);
    let job = pick.json();
    assert_eq!(task(&job, "a.two")["shown"], "merged", "{job:#}");
    assert_eq!(task(&job, "a.one")["shown"], "discarded", "{job:#}");
    let branch = job["integration_branch"].as_str().expect("branch");
    assert_eq!(env.git(&repo, &["show", &format!("{branch}:a/g.txt")]), "extra");
    let branches = env.git(&repo, &["branch", "--format=%(refname:short)"]);
    assert!(!branches.lines().any(|b| b == format!("grove/{id}/a.one")), "{branches}");
}

/// An integration check that fails on the integration head itself stops merging with that
/// said, instead of setting every task aside in turn.
#[test]
fn an_integration_check_failing_on_the_head_itself_stops_merging() {
    let env = Env::new();
    let repo = dirs_repo(&env, &["a", "b"]);
    let script = r#"echo more >> "$GROVE_TASK/f.txt""#;
    let run = env.grove(
        &repo,
        &[
            "run",
            "--split",
            "dirs",
            "--exclude",
            "shared.txt",
            "--integration-check",
            "echo broken from the start; exit 1",
            "--json",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let job = run.json();
    let stopped = job["merge_stopped"].as_str().expect("stopped");
    assert!(stopped.contains("fails on the integration head itself (broken from the start)"), "{stopped}");
    assert_eq!(task(&job, "a")["shown"], "succeeded", "nothing set aside: {job:#}");
    assert_eq!(task(&job, "b")["shown"], "succeeded");
}
