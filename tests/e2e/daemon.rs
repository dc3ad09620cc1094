//! A coordinator that never stops for one job (issue 12): limits that cannot loop forever,
//! failures isolated per job, slow checks off the event loop, coordinators sharing a NATS,
//! followers that outlive a coordinator's restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use grove_tests::Proc;

use crate::distributed::{dirs_repo, free_port, nats_server, wait_port, worker};
use crate::harness::{Env, task};

fn three_dirs(env: &Env) -> std::path::PathBuf {
    let files: Vec<(String, String)> =
        ["a", "b", "c"].iter().map(|d| (format!("{d}/f.txt"), format!("{d}\n"))).collect();
    env.repo("r", &files)
}

/// A compiler's error at `src/x.rs:429:5` or rustc's "recursion limit reached" is the agent's
/// failure, not a usage limit: the task fails at once. A real limit parks the task, but only
/// `--max-parks` times: the next one fails it, saying why.
#[test]
fn compile_errors_are_not_limits_and_parking_is_capped() {
    let env = Env::new();
    let repo = three_dirs(&env);
    let script = r#"echo "attempt $GROVE_ATTEMPT" >> $GROVE_TASK/f.txt
        case $GROVE_TASK in
          a) echo "error[E0308]: mismatched types"; echo "   --> src/x.rs:429:5";
             echo "error: recursion limit reached while expanding \`vec!\`"; exit 101 ;;
          b) echo "Error: 429 Too Many Requests: rate limit exceeded, retry after 1s"; exit 1 ;;
        esac"#;
    let run = env.grove(
        &repo,
        &["run", "--split", "dirs", "-j", "3", "--max-parks", "1", "--json", "--", "sh", "-c", script],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let job = run.json();
    let a = task(&job, "a");
    assert_eq!(a["state"], "failed", "{a:#}");
    assert_eq!(a["attempt"], 1, "a compile error is not parked: {a:#}");
    assert_eq!(a["parks"], 0, "{a:#}");
    let b = task(&job, "b");
    assert_eq!(b["state"], "failed", "{b:#}");
    assert_eq!(b["attempt"], 2, "parked once, then failed: {b:#}");
    assert_eq!(b["parks"], 1, "{b:#}");
    let why = b["reason"].as_str().expect("reason");
    assert!(why.contains("not parked again: it was parked 1 time already (run.max_parks)"), "{why}");
    assert_eq!(task(&job, "c")["shown"], "merged", "{job:#}");
}

/// A coordinator daemon on `port` with its home in the test's grove home; its stderr goes to
/// `logs/<name>.log` (shown when a test fails).
pub(crate) fn coordinator(env: &Env, nats: &str, port: u16, name: &str) -> Proc {
    let dir = env.path().join("logs");
    std::fs::create_dir_all(&dir).expect("logs");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log")));
    let child = grove_tests::command("grove")
        .args(["coordinator", "--nats", nats, "--listen", &format!("127.0.0.1:{port}")])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GROVE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log.expect("log file")))
        .spawn()
        .expect("spawn grove coordinator");
    wait_port(port);
    Proc(child)
}

pub(crate) fn log_of(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.path().join(format!("logs/{name}.log"))).unwrap_or_default()
}

/// `grove args` in `cwd` against the test's homes, not waited for; stdout and stderr piped.
fn spawn_grove(env: &Env, cwd: &Path, args: &[&str]) -> Child {
    grove_tests::command("grove")
        .current_dir(cwd)
        .args(args)
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn grove")
}

/// Wait for `child` at most `within` (then kill it and fail, saying `what`).
fn finish(mut child: Child, within: Duration, what: &str) -> (i32, String, String) {
    let deadline = Instant::now() + within;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{what} did not end within {within:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Poll `probe` until it gives a value (at most `within`, then fail saying `what`).
fn until<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The job `id` on the daemon at `api` as `grove status --json` shows it (`None` while the
/// daemon is away).
fn status(env: &Env, api: &str, id: &str) -> Option<serde_json::Value> {
    let s = env.grove(env.path(), &["status", "--coordinator", api, "--json", id]);
    (s.code == 0).then(|| s.json())
}

fn merged(job: &serde_json::Value) -> usize {
    job["tasks"].as_array().map_or(0, |ts| ts.iter().filter(|t| t["shown"] == "merged").count())
}

/// The daemon's only mirror.
fn mirror(env: &Env) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(env.grove_home().join("mirrors"))
        .expect("mirrors")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().expect("a mirror")
}

/// A coordinator SIGKILLed mid-job and started again: the `grove run` attached to it rides
/// it out (it reconnects and resumes) and ends 0 with every task merged and published; a
/// `grove watch --json` beside it sees every journaled note once, in order, without a gap,
/// and every merge; a `grove logs -f` of a task that runs across the restart gets its whole
/// output once.
#[test]
fn followers_outlive_a_coordinator_killed_mid_job() {
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let mut coord = coordinator(&env, &nats, port, "coordinator-1");
    let _w = [worker(&env, &nats, "w1", "local", false), worker(&env, &nats, "w2", "local", false)];
    let n = 12;
    let repo = dirs_repo(&env, "r", n);
    let gate = env.path().join("gate");
    // d00 talks, then waits for the gate (opened once the coordinator is back), then talks
    // again; the others take a moment each.
    let script = format!(
        r#"if [ "$GROVE_TASK" = d00 ]; then echo "before the restart"; while [ ! -e {g} ]; do sleep 0.05; done; echo "after the restart"; fi; sleep 0.3; echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#,
        g = gate.display()
    );
    let run = spawn_grove(
        &env,
        &repo,
        &[
            "run",
            "--coordinator",
            &api,
            "--split",
            "dirs",
            "--json",
            "--reconnect-for",
            "60s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let id = crate::distributed::newest_job(&env, &api);
    let watch = spawn_grove(
        &env,
        env.path(),
        &["watch", &id, "--coordinator", &api, "--json", "--reconnect-for", "60s"],
    );
    let logs = spawn_grove(
        &env,
        env.path(),
        &["logs", "-f", &format!("{id}/d00"), "--coordinator", &api, "--reconnect-for", "60s"],
    );
    // Some merges are in; d00 (first in the order) holds the rest of the train back.
    until(Duration::from_secs(60), "d00 running and others done", || {
        let job = status(&env, &api, &id)?;
        let done = job["tasks"].as_array()?.iter().filter(|t| t["state"] == "succeeded").count();
        (task(&job, "d00")["state"] == "running" && done >= 3).then_some(())
    });
    coord.0.kill().expect("SIGKILL the coordinator");
    let _ = coord.0.wait();
    drop(coord);
    let _coord = coordinator(&env, &nats, port, "coordinator-2");
    std::fs::write(&gate, "").expect("open the gate");

    let (code, stdout, stderr) = finish(run, Duration::from_secs(120), "grove run");
    assert_eq!(code, 0, "{stderr}\n{stdout}\n{}", log_of(&env, "coordinator-2"));
    let job: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(merged(&job), n, "{job:#}");
    // Published into the person's repository.
    let branch = job["integration_branch"].as_str().expect("branch");
    for i in 0..n {
        let f = env.git(&repo, &["show", &format!("{branch}:d{i:02}/f.txt")]);
        assert_eq!(f, format!("{i}\nby d{i:02}"));
    }

    let (code, out, err) = finish(watch, Duration::from_secs(30), "grove watch");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().expect("seq")).collect();
    // The snapshot is numbered as the journal was when it was taken; every note after it
    // follows, each once, in order.
    let first = seqs[0];
    let notes: Vec<u64> = seqs.iter().copied().filter(|s| *s > first).collect();
    assert!(seqs.iter().take_while(|s| **s == first).count() == n, "a snapshot line per task: {out}");
    assert_eq!(notes, ((first + 1)..=first + notes.len() as u64).collect::<Vec<_>>(), "{out}");
    let merges: std::collections::BTreeSet<&str> =
        lines.iter().filter(|l| l["event"] == "merged").filter_map(|l| l["task"].as_str()).collect();
    assert_eq!(merges.len(), n, "every merge seen: {out}");
    assert_eq!(lines.last().map(|l| l["event"].clone()), Some("published".into()), "{out}");

    let (code, out, err) = finish(logs, Duration::from_secs(30), "grove logs -f");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("before the restart").count(), 1, "{out}");
    assert_eq!(out.matches("after the restart").count(), 1, "{out}");
}

/// One job whose train cannot move (its integration branch was deleted in the mirror behind
/// the daemon's back: the compare-and-swap fails) stops that job's merging, with the reason in
/// `grove status` and a `stopped` note to its watchers; the daemon goes on: another job runs
/// and merges, and once the branch is back, `grove merge` goes on with the stopped one.
#[test]
fn a_job_whose_train_fails_stops_alone() {
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let mut coord = coordinator(&env, &nats, port, "coordinator");
    let _w = worker(&env, &nats, "w1", "local", false);
    let repo = dirs_repo(&env, "r", 2);
    let gate = env.path().join("gate");
    let script = format!(
        r#"if [ "$GROVE_TASK" = d01 ]; then while [ ! -e {g} ]; do sleep 0.05; done; fi; echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#,
        g = gate.display()
    );
    let submit = env.grove(
        &repo,
        &["run", "--coordinator", &api, "--split", "dirs", "--detach", "--json", "--", "sh", "-c", &script],
    );
    assert_eq!(submit.code, 0, "{}", submit.stderr);
    let a = submit.json()["id"].as_str().expect("id").to_owned();
    let job = until(Duration::from_secs(60), "d00 merged", || {
        status(&env, &api, &a).filter(|j| task(j, "d00")["shown"] == "merged")
    });
    let branch = format!("refs/heads/{}", job["integration_branch"].as_str().expect("branch"));
    let head = job["integration_head"].as_str().expect("head").to_owned();
    let mirror = mirror(&env);
    let git_dir = format!("--git-dir={}", mirror.display());
    env.git(env.path(), &[&git_dir, "update-ref", "-d", &branch]);
    let watch = spawn_grove(&env, env.path(), &["watch", &a, "--coordinator", &api, "--json"]);
    std::fs::write(&gate, "").expect("open the gate");

    let stopped = until(Duration::from_secs(60), "job A's merging stopped", || {
        status(&env, &api, &a).filter(|j| !j["merge_stopped"].is_null())
    });
    let why = stopped["merge_stopped"].as_str().expect("why");
    assert!(why.contains("moving the merge train") && why.contains(&format!("grove merge {a}")), "{why}");
    assert_eq!(task(&stopped, "d01")["state"], "succeeded", "{stopped:#}");
    assert_ne!(task(&stopped, "d01")["shown"], "merged", "{stopped:#}");
    assert!(
        coord.0.try_wait().expect("try_wait").is_none(),
        "the daemon died: {}",
        log_of(&env, "coordinator")
    );
    let (_, watched, _) = finish(watch, Duration::from_secs(30), "grove watch");
    assert!(watched.lines().any(|l| l.contains("\"event\":\"stopped\"")), "{watched}");
    let text = env.grove(env.path(), &["status", "--coordinator", &api, &a]).stdout;
    assert!(text.contains("merging stopped: moving the merge train"), "{text}");

    // Another job runs to the end meanwhile.
    let other = dirs_repo(&env, "other", 2);
    let run = env.grove(
        &other,
        &[
            "run",
            "--coordinator",
            &api,
            "--split",
            "dirs",
            "--json",
            "--",
            "sh",
            "-c",
            "echo x >> $GROVE_TASK/f.txt",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, log_of(&env, "coordinator"));
    assert_eq!(merged(&run.json()), 2);

    // The branch back where grove left it: `grove merge` goes on and merges d01.
    env.git(env.path(), &[&git_dir, "update-ref", &branch, &head]);
    let merge = env.grove(env.path(), &["merge", &a, "--coordinator", &api, "--json"]);
    assert_eq!(merge.code, 0, "{}\n{}", merge.stderr, merge.stdout);
    let job = merge.json();
    assert_eq!(merged(&job), 2, "{job:#}");
    assert!(job["merge_stopped"].is_null(), "{job:#}");
}

/// A 60 s integration check in one job holds up nothing of the others: another job's
/// cancellation answers at once and its task ends cancelled within seconds, its events are
/// recorded, `grove status` answers; then cancelling the checking job ends its check's
/// process group at once.
#[test]
fn a_slow_check_in_one_job_holds_up_no_other() {
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let _coord = coordinator(&env, &nats, port, "coordinator");
    let _w = worker(&env, &nats, "w1", "local", false);
    let marks = env.path().join("marks");
    std::fs::create_dir_all(&marks).expect("mkdir");
    let slow = dirs_repo(&env, "slow", 1);
    let check = format!("echo $$ > {m}/check; exec sleep 60", m = marks.display());
    let submit = env.grove(
        &slow,
        &[
            "run",
            "--coordinator",
            &api,
            "--split",
            "dirs",
            "--integration-check",
            &check,
            "--detach",
            "--json",
            "--",
            "sh",
            "-c",
            "echo x >> $GROVE_TASK/f.txt",
        ],
    );
    assert_eq!(submit.code, 0, "{}", submit.stderr);
    let a = submit.json()["id"].as_str().expect("id").to_owned();
    let check_pid: i32 = until(Duration::from_secs(60), "the integration check started", || {
        std::fs::read_to_string(marks.join("check")).ok()?.trim().parse().ok()
    });

    let other = dirs_repo(&env, "other", 1);
    let agent = format!("echo $$ > {m}/agent; exec sleep 60", m = marks.display());
    let submit = env.grove(
        &other,
        &["run", "--coordinator", &api, "--split", "dirs", "--detach", "--json", "--", "sh", "-c", &agent],
    );
    assert_eq!(submit.code, 0, "{}", submit.stderr);
    let b = submit.json()["id"].as_str().expect("id").to_owned();
    // Its events are recorded while the check runs: it shows running.
    until(Duration::from_secs(30), "job B's task running", || {
        status(&env, &api, &b).filter(|j| task(j, "d00")["state"] == "running")
    });
    let asked = Instant::now();
    let cancel = env.grove(env.path(), &["cancel", &b, "--coordinator", &api]);
    assert_eq!(cancel.code, 0, "{}", cancel.stderr);
    assert!(asked.elapsed() < Duration::from_secs(5), "the cancel took {:?}", asked.elapsed());
    until(Duration::from_secs(10), "job B cancelled", || {
        status(&env, &api, &b).filter(|j| j["state"] == "cancelled" && task(j, "d00")["state"] == "cancelled")
    });
    eprintln!("another job cancelled in {:?} while a check ran", asked.elapsed());
    assert!(crate::faults::pid_alive(check_pid), "job A's check goes on");
    assert_eq!(status(&env, &api, &a).expect("job A")["state"], "running");

    let asked = Instant::now();
    let cancel = env.grove(env.path(), &["cancel", &a, "--coordinator", &api]);
    assert_eq!(cancel.code, 0, "{}", cancel.stderr);
    until(Duration::from_secs(10), "the check's process ended", || {
        (!crate::faults::pid_alive(check_pid)).then_some(())
    });
    let job = until(Duration::from_secs(10), "job A cancelled", || {
        status(&env, &api, &a).filter(|j| j["state"] == "cancelled")
    });
    eprintln!("a running check stopped in {:?}", asked.elapsed());
    assert_ne!(task(&job, "d00")["shown"], "merged", "an unchecked merge went in: {job:#}");
}

/// A daemon and a `grove run --nats` on one NATS at once, each with its own home and jobs:
/// each reads only its own job's events, and both jobs run to the end.
#[test]
fn a_daemon_and_a_run_share_a_nats() {
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let _coord = coordinator(&env, &nats, port, "coordinator");
    let _w = [worker(&env, &nats, "w1", "local", false), worker(&env, &nats, "w2", "local", false)];
    let script = r#"sleep 0.5; echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#;
    let one = dirs_repo(&env, "one", 6);
    let two = dirs_repo(&env, "two", 6);
    let daemon_run = spawn_grove(
        &env,
        &one,
        &["run", "--coordinator", &api, "--split", "dirs", "--json", "--", "sh", "-c", script],
    );
    let mut embedded = grove_tests::command("grove");
    embedded
        .current_dir(&two)
        .args(["run", "--nats", &nats, "--split", "dirs", "--json", "--", "sh", "-c", script])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.path().join("run-home"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let embedded = embedded.spawn().expect("spawn grove run --nats");
    for (child, what) in [(daemon_run, "the daemon's job"), (embedded, "grove run --nats")] {
        let (code, out, err) = finish(child, Duration::from_secs(120), what);
        assert_eq!(code, 0, "{what}: {err}\n{out}");
        let job: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(merged(&job), 6, "{what}: {job:#}");
    }
}

/// Ctrl-C on `grove up` (the terminal's SIGINT, to its whole process group) drains: the
/// running task finishes, nothing is killed; a second Ctrl-C stops at once: a task still
/// running goes back to the queue, its agent killed.
#[test]
fn grove_up_drains_on_the_first_ctrl_c_and_stops_on_the_second() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let up = grove_tests::command("grove")
        .args([
            "up",
            "--nats",
            &nats,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "1",
            "--capacity",
            "2",
        ])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // As a shell runs it: a process group of its own, which the terminal signals.
        .process_group(0)
        .spawn()
        .expect("spawn grove up");
    let pgid = up.id() as i32;
    let up = Proc(up);
    wait_port(port);
    let marks = env.path().join("marks");
    std::fs::create_dir_all(&marks).expect("mkdir");
    // d00 finishes a moment after the first Ctrl-C; d01 runs until it is stopped.
    let script = format!(
        r#"echo $$ > {m}/$GROVE_TASK.pid; if [ "$GROVE_TASK" = d00 ]; then while [ ! -e {m}/ctrl-c ]; do sleep 0.05; done; sleep 1; echo done > {m}/d00.done; else exec sleep 600; fi"#,
        m = marks.display()
    );
    let repo = dirs_repo(&env, "r", 2);
    let submit = env.grove(
        &repo,
        &["run", "--coordinator", &api, "--split", "dirs", "--detach", "--json", "--", "sh", "-c", &script],
    );
    assert_eq!(submit.code, 0, "{}", submit.stderr);
    let pid = |t: &str| -> Option<i32> {
        std::fs::read_to_string(marks.join(format!("{t}.pid"))).ok()?.trim().parse().ok()
    };
    let (_, d01) = until(Duration::from_secs(60), "both agents started", || Some((pid("d00")?, pid("d01")?)));
    let ctrl_c = || {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGINT)
            .expect("SIGINT")
    };

    ctrl_c();
    std::fs::write(marks.join("ctrl-c"), "").expect("mark");
    // Draining: d00's agent is not killed; it finishes.
    until(Duration::from_secs(20), "d00's agent finished while draining", || {
        marks.join("d00.done").exists().then_some(())
    });
    assert!(crate::faults::pid_alive(d01), "draining kills nothing");

    let second = Instant::now();
    ctrl_c();
    let mut up = up;
    until(Duration::from_secs(20), "grove up stopped", || up.0.try_wait().expect("try_wait"));
    eprintln!("grove up stopped {:?} after the second Ctrl-C", second.elapsed());
    until(Duration::from_secs(10), "d01's agent killed", || (!crate::faults::pid_alive(d01)).then_some(()));
}

/// Local commands that change jobs refuse a home a coordinator daemon serves, naming its URL,
/// instead of moving its trains beside it; through the daemon (`--coordinator`) they work.
#[test]
fn local_verbs_refuse_a_home_a_daemon_serves() {
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let _coord = coordinator(&env, &nats, port, "coordinator");
    let repo = dirs_repo(&env, "r", 1);
    let verbs: [&[&str]; 6] = [
        &["run", "--split", "dirs", "--", "true"],
        &["run", "--job", "some-0001"],
        &["merge", "some-0001"],
        &["discard", "some-0001/d00"],
        &["pick", "some-0001/d00", "one"],
        &["retry", "some-0001/d00"],
    ];
    for verb in verbs {
        let r = env.grove(&repo, verb);
        assert_eq!(r.code, 2, "{verb:?}: {}", r.stderr);
        if verb[0] == "retry" {
            // It names the task first; no such task here.
            continue;
        }
        assert!(
            r.stderr.contains(&format!("grove coordinator at {api}")) && r.stderr.contains("--coordinator"),
            "{verb:?}: {}",
            r.stderr
        );
    }
    let jobs = env.grove(env.path(), &["status", "--coordinator", &api, "--json"]);
    assert_eq!(jobs.json().as_array().map(Vec::len), Some(0), "nothing was recorded: {}", jobs.stdout);
}

/// `grove run --nats` outlives a restart of its NATS server mid-job (scope 1): its job's
/// events come again from the restarted server (JetStream keeps them on disk) and it ends 0
/// with every task merged.
#[test]
fn a_run_on_nats_outlives_a_nats_restart() {
    let env = Env::new();
    let store = env.path().join("nats");
    let (nats, port) = grove_tests::nats_server_with(&store, &[]);
    let url = format!("nats://127.0.0.1:{port}");
    let _w = worker(&env, &url, "w1", "local", false);
    let repo = dirs_repo(&env, "r", 4);
    let (gate, started) = (env.path().join("gate"), env.path().join("started"));
    std::fs::create_dir_all(&started).expect("mkdir");
    let script = format!(
        r#"touch {s}/$GROVE_TASK; while [ ! -e {g} ]; do sleep 0.05; done; echo "by $GROVE_TASK" >> "$GROVE_TASK/f.txt""#,
        s = started.display(),
        g = gate.display()
    );
    let run = spawn_grove(
        &env,
        &repo,
        &["run", "--nats", &url, "--split", "dirs", "--json", "--", "sh", "-c", &script],
    );
    until(Duration::from_secs(60), "an agent starts", || {
        (std::fs::read_dir(&started).ok()?.count() > 0).then_some(())
    });
    drop(nats);
    let again = std::process::Command::new("nats-server")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server again");
    let _nats = Proc(again);
    wait_port(port);
    std::fs::write(&gate, "").expect("open the gate");
    let (code, out, err) = finish(run, Duration::from_secs(600), "grove run --nats");
    assert_eq!(code, 0, "{err}\n{out}");
    let job: serde_json::Value = serde_json::from_str(&out).expect("json");
    for t in ["d00", "d01", "d02", "d03"] {
        assert_eq!(task(&job, t)["shown"], "merged", "{job:#}");
    }
}

/// Replies within tonic's 4 MiB (scope 8): `ListJobs` in pages of the size asked, in order,
/// each job once; a diff of 5 MiB arrives whole through `grove diff` (StreamDiff), where one
/// `DiffTask` reply is cut with a note.
#[test]
fn listings_and_diffs_larger_than_one_reply_arrive_whole() {
    use grove_proto::v1 as pb;
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let _coord = coordinator(&env, &nats, port, "coordinator");
    let _w = worker(&env, &nats, "w1", "local", false);
    let repo = env.repo("r", &[("f.txt".to_owned(), "f\n".to_owned())]);
    let mut ids = Vec::new();
    for script in ["echo one >> f.txt", "seq 1 700000 > big.txt", "echo three >> f.txt"] {
        let run = env.grove(
            &repo,
            &["run", "--coordinator", &api, "--split", "single", "--json", "--", "sh", "-c", script],
        );
        assert_eq!(run.code, 0, "{}\n{}", run.stderr, log_of(&env, "coordinator"));
        ids.push(run.json()["id"].as_str().expect("id").to_owned());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let paged: Vec<(Vec<String>, Option<String>)> = rt.block_on(async {
        let mut api = pb::coordinator_client::CoordinatorClient::connect(api.clone()).await.expect("connect");
        let (mut pages, mut after) = (Vec::new(), String::new());
        loop {
            let page = api
                .list_jobs(pb::ListJobsRequest { page_size: 1, after: after.clone() })
                .await
                .expect("ListJobs")
                .into_inner();
            let next = page.next.clone().filter(|n| !n.is_empty());
            pages.push((page.jobs.into_iter().map(|j| j.id).collect(), next.clone()));
            match next {
                Some(n) => after = n,
                None => return pages,
            }
        }
    });
    assert_eq!(paged.len(), 3, "{paged:?}");
    assert_eq!(paged.iter().flat_map(|(j, _)| j.clone()).collect::<Vec<_>>(), ids, "each job once, in order");
    assert_eq!(paged[0].1.as_deref(), Some(ids[0].as_str()), "a page says where the next starts");
    assert_eq!(paged[2].1, None, "the last page says it is the last");

    let diff = env.grove(&repo, &["diff", "--coordinator", &api, &format!("{}/all", ids[1])]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    assert!(diff.stdout.len() > 5 << 20, "{} bytes", diff.stdout.len());
    assert!(diff.stdout.contains("\n+1\n") && diff.stdout.contains("\n+700000\n"), "the whole patch");
    assert!(!diff.stdout.contains("(cut:"), "nothing was cut");
}

/// `grove coordinator --metrics-listen`: after a 3-task job, `GET /metrics` is Prometheus
/// text whose series count what happened (issue 18, metrics).
#[test]
fn metrics_count_what_the_daemon_did() {
    use std::io::{Read, Write};
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let (port, mport) = (free_port(), free_port());
    let child = grove_tests::command("grove")
        .args(["coordinator", "--nats", &nats, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{mport}")])
        .env("HOME", env.path().join("home"))
        .env("GROVE_HOME", env.grove_home())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn grove coordinator");
    let _coord = Proc(child);
    wait_port(port);
    wait_port(mport);
    let _w = worker(&env, &nats, "w1", "local", false);
    let repo = dirs_repo(&env, "r", 3);
    let api = format!("http://127.0.0.1:{port}");
    let run = env.grove(
        &repo,
        &[
            "run",
            "--coordinator",
            &api,
            "--split",
            "dirs",
            "--json",
            "--",
            "sh",
            "-c",
            r#"echo x >> "$GROVE_TASK/f.txt""#,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", mport)).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let mut series = std::collections::BTreeMap::new();
    for line in body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        series.insert(name.to_owned(), v);
    }
    assert_eq!(series.get("grove_jobs{state=\"done\"}"), Some(&1.0), "{body}");
    assert_eq!(series.get("grove_tasks{state=\"succeeded\"}"), Some(&3.0), "{body}");
    assert_eq!(series.get("grove_merges_total"), Some(&3.0), "{body}");
    assert_eq!(series.get("grove_agent_turns_total"), Some(&3.0), "{body}");
    assert_eq!(series.get("grove_conflicts_total"), Some(&0.0), "{body}");
    // The worker's registration, and the durations of what the coordinator saw happen.
    assert_eq!(series.get("grove_workers{pool=\"local\"}"), Some(&1.0), "{body}");
    assert_eq!(series.get("grove_worker_slots{pool=\"local\"}"), Some(&2.0), "{body}");
    for h in ["dispatch_latency", "turn_duration", "attempt_duration", "task_duration"] {
        let name = format!("grove_{h}_seconds");
        assert_eq!(series.get(&format!("{name}_count")), Some(&3.0), "{name}: {body}");
        assert_eq!(series.get(&format!("{name}_bucket{{le=\"+Inf\"}}")), Some(&3.0), "{name}: {body}");
        let buckets: Vec<f64> = body
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{name}'s buckets are cumulative: {buckets:?}");
        assert!(series.get(&format!("{name}_sum")).is_some_and(|s| *s >= 0.0), "{name}: {body}");
    }
}

/// A `[[repos]]` job submitted to a daemon, run by a worker in clone mode: the library's
/// repository runs first, the consumers after it (waiting meanwhile), each consumer's check
/// finding the library's merged integration head in `GROVE_UPSTREAM_LIB`; `grove status
/// GROUP` on the daemon shows all three in order.
#[test]
fn a_cross_repository_job_runs_on_a_coordinator_library_first() {
    let env = Env::new();
    let (_nats, nats) = nats_server(&env.path().join("nats"));
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let _coord = coordinator(&env, &nats, port, "coordinator");
    // In clone mode, as a pod: its workspaces and the upstream checkouts are clones of the
    // mirrors' URLs, not worktrees of them.
    let _w = worker(&env, &nats, "w1", "local", true);
    let lib = env.repo(
        "lib",
        &[
            ("package.json".into(), "{\"name\": \"@acme/lib\", \"version\": \"1.0.0\"}\n".into()),
            ("index.js".into(), "exports.oldName = () => 1;\n".into()),
        ],
    );
    for app in ["app1", "app2"] {
        env.repo(
            app,
            &[
                (
                    "package.json".into(),
                    format!("{{\"name\": \"{app}\", \"dependencies\": {{\"@acme/lib\": \"^1.0.0\"}}}}\n"),
                ),
                ("main.js".into(), "require('@acme/lib').oldName();\n".into()),
            ],
        );
    }
    let spec = env.path().join("job.toml");
    std::fs::write(
        &spec,
        "name = \"rename\"\n[[repos]]\nsource = \"app1\"\n[[repos]]\nsource = \"app2\"\n[[repos]]\nsource = \"lib\"\n\
         [split]\nrule = \"single\"\n[agent]\nkind = \"replace\"\npattern = \"oldName\"\nreplace = \"newName\"\n\
         [checks]\ntask = 'test -z \"$GROVE_UPSTREAM_LIB\" || grep -q newName \"$GROVE_UPSTREAM_LIB/index.js\"'\n",
    )
    .expect("spec");
    let run = env.grove(env.path(), &["run", "job.toml", "--coordinator", &api, "--json"]);
    assert_eq!(run.code, 0, "{}\n{}\n{}", run.stdout, run.stderr, log_of(&env, "coordinator"));
    let group = run.json();
    let names: Vec<&str> = group["repositories"]
        .as_array()
        .expect("repos")
        .iter()
        .filter_map(|r| r["repository"]["name"].as_str())
        .collect();
    assert_eq!(names, ["lib", "app1", "app2"], "{group:#}");
    assert!(group["tasks"].as_array().expect("tasks").iter().all(|t| t["shown"] == "merged"), "{group:#}");
    let id = group["id"].as_str().expect("id");
    // The consumers started only after the library merged.
    let lib_done =
        group["repositories"][0]["tasks"][0]["merge_commit"].as_str().expect("lib merged").to_owned();
    assert_eq!(env.git(&lib, &["rev-parse", &format!("grove/{id}/integration")]), lib_done);
    let text = env.grove(env.path(), &["status", id, "--coordinator", &api]);
    assert!(text.stdout.contains("3 repositories, dependencies first"), "{}", text.stdout);
    assert!(
        text.stdout.contains("app1 needs lib") || text.stdout.contains("needs lib: package.json"),
        "{}",
        text.stdout
    );
}
