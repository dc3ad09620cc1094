//! Merging 100 branches that touch disjoint modules, in order: grove's merge train (in
//! memory, `Coordinator::advance_train` with its SQLite bookkeeping) against a loop of
//! `git checkout` + `git merge --no-ff` in one worktree, in the same process run. Prints both
//! times and the ratio; the target is grove ≤ 0.2× the loop.
//!
//! Run with `cargo bench -p grove-coordinator --bench train` (`GROVE_BENCH_BRANCHES` and
//! `GROVE_BENCH_FILES` change the sizes). Git runs with a hermetic configuration: the bench
//! starts itself again with GIT_CONFIG_NOSYSTEM=1, GIT_CONFIG_GLOBAL=/dev/null and a temp HOME.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grove_coordinator::store::{JobRow, TaskRow};
use grove_coordinator::{Coordinator, JobTrain, TaskTrain};
use grove_core::layout::Layout;
use grove_core::spec::{AgentKind, JobSpec};
use grove_core::task::MergeState;
use grove_core::{DiffStat, JobId, TaskState};
use grove_git::Git;

const HERMETIC: &str = "GROVE_BENCH_HERMETIC";

fn main() -> ExitCode {
    if std::env::var_os(HERMETIC).is_none() {
        return reexec();
    }
    let branches = env_num("GROVE_BENCH_BRANCHES", 100);
    let files = env_num("GROVE_BENCH_FILES", 20);
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = Git::detect().expect("git 2.38 or newer on PATH");
    let repo = tmp.path().join("repo");
    let started = Instant::now();
    let (base, tips) = setup(&git, &repo, branches, files);
    println!(
        "setup: {branches} branches over {} files, disjoint modules ({:.1?})",
        branches * files,
        started.elapsed()
    );

    // The loop a person would script: one worktree, checkout the integration branch, merge.
    let work = tmp.path().join("loop");
    git.run(tmp.path(), ["clone", "--quiet", repo.to_str().expect("utf8"), "loop"]).expect("clone");
    git.run(&work, ["checkout", "--quiet", "-b", "loop-integration", &base]).expect("branch");
    let t = Instant::now();
    for i in 0..branches {
        git.run(&work, ["checkout", "--quiet", "loop-integration"]).expect("checkout");
        git.run(&work, ["merge", "--quiet", "--no-ff", "--no-edit", &format!("origin/b{i:03}")])
            .expect("merge");
    }
    let looped = t.elapsed();

    // grove's train over the same branches.
    let home = tmp.path().join("grove");
    let coord = Coordinator::new(Layout::new(&home), Arc::new(grove_bus::InProcessBus::new()), git.clone())
        .expect("coordinator");
    let job = JobId::new("bench", 1);
    let integration = format!("grove/{job}/integration");
    git.update_ref(&repo, &format!("refs/heads/{integration}"), &base, None).expect("integration branch");
    let row = job_row(&job, &repo, &base, &integration);
    let tasks: Vec<TaskRow> = tips.iter().enumerate().map(|(i, tip)| task_row(&job, i, tip)).collect();
    coord.store.insert_job(&row, &tasks).expect("insert");
    for t in &tasks {
        coord.store.set_progress(&job, &t.slug, t.head.as_deref(), t.stat).expect("progress");
    }
    let t = Instant::now();
    let notes = coord.advance_train(&job).expect("train");
    let grove = t.elapsed();
    let merged = coord
        .store
        .tasks(&job)
        .expect("tasks")
        .iter()
        .filter(|t| t.merge_state == MergeState::Merged)
        .count();
    assert_eq!(merged, branches, "every branch merged: {:?}", &notes[..notes.len().min(3)]);

    // Both integration results have the same tree.
    let grove_tree = git.run(&repo, ["rev-parse", &format!("{integration}^{{tree}}")]).expect("tree").stdout;
    let loop_tree = git.run(&work, ["rev-parse", "HEAD^{tree}"]).expect("tree").stdout;
    assert_eq!(grove_tree, loop_tree, "grove and the loop merged to the same tree");

    let per = |d: Duration| d / branches as u32;
    println!("checkout + merge loop: {looped:>10.1?}  ({:.2?} per branch)", per(looped));
    println!("grove merge train:     {grove:>10.1?}  ({:.2?} per branch)", per(grove));
    let ratio = grove.as_secs_f64() / looped.as_secs_f64();
    println!("ratio grove / loop: {ratio:.3} (target <= 0.2)");
    ExitCode::SUCCESS
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Run this bench again with git's configuration and HOME pinned.
fn reexec() -> ExitCode {
    let home = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(HERMETIC, "1")
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
        .status()
        .expect("run the bench");
    if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// A repository of `n` modules with `files` files each, and one branch per module changing one
/// of its files. Returns the base commit and the branches' tips.
fn setup(git: &Git, repo: &Path, n: usize, files: usize) -> (String, Vec<String>) {
    for m in 0..n {
        let dir = repo.join(format!("m{m:03}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..files {
            std::fs::write(
                dir.join(format!("f{f:02}.rs")),
                format!("// module {m} file {f}\npub fn f() {{}}\n"),
            )
            .expect("write");
        }
    }
    git.run(repo, ["init", "--quiet", "--initial-branch=main"]).expect("init");
    git.run(repo, ["add", "--all"]).expect("add");
    git.run(repo, ["commit", "--quiet", "-m", "base"]).expect("commit");
    let base = git.resolve_commit(repo, "HEAD").expect("base");
    let mut tips = Vec::new();
    for m in 0..n {
        git.run(repo, ["checkout", "--quiet", "-B", &format!("b{m:03}"), &base]).expect("branch");
        let f = repo.join(format!("m{m:03}/f00.rs"));
        std::fs::write(&f, format!("// module {m} file 0, changed\npub fn f() {{}}\npub fn g() {{}}\n"))
            .expect("write");
        git.run(repo, ["commit", "--quiet", "-am", &format!("change m{m:03}")]).expect("commit");
        tips.push(git.resolve_commit(repo, "HEAD").expect("tip"));
    }
    git.run(repo, ["checkout", "--quiet", "main"]).expect("main");
    (base, tips)
}

fn job_row(job: &JobId, repo: &Path, base: &str, integration: &str) -> JobRow {
    let mut spec = JobSpec::default();
    spec.agent.kind = Some(AgentKind::Command);
    JobRow {
        id: job.clone(),
        created_at: 0,
        spec,
        source: repo.display().to_string(),
        source_dir: None,
        mirror: repo.display().to_string(),
        base: base.to_owned(),
        integration_branch: integration.to_owned(),
        integration_head: base.to_owned(),
        state: "running".into(),
        warnings: Vec::new(),
        ignored_files: Vec::new(),
        train: JobTrain::default(),
        collected_at: None,
        repo: None,
    }
}

fn task_row(job: &JobId, i: usize, tip: &str) -> TaskRow {
    let slug = format!("m{i:03}");
    TaskRow {
        handoffs: Vec::new(),
        job: job.clone(),
        branch: format!("grove/{job}/{slug}"),
        title: slug.clone(),
        slug,
        ord: i as u32,
        level: 0,
        sparse: None,
        files: Vec::new(),
        lines: 0,
        depends_on: Vec::new(),
        pool: "local".into(),
        placed: None,
        placed_why: None,
        state: TaskState::Succeeded,
        merge_state: MergeState::Pending,
        attempt: 1,
        turns: 1,
        head: Some(tip.to_owned()),
        stat: DiffStat { files: 1, insertions: 2, deletions: 1 },
        reason: None,
        log_tail: None,
        merge_commit: None,
        conflict_paths: Vec::new(),
        train: TaskTrain::default(),
        agent: Default::default(),
    }
}
