use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Start a long-lived local fleet: a coordinator daemon and N workers against a NATS server,
/// as child processes of this one, until Ctrl-C or SIGTERM: then the workers drain (no new
/// tasks; running ones finish within their --drain-timeout, or go back to the queue), and the
/// coordinator stops after them. A second Ctrl-C stops everything at once (running tasks go
/// back to the queue with their checkpoints).
///
/// Point the CLI at it with --coordinator http://LISTEN (or GROVE_COORDINATOR). Cloud workers
/// elsewhere join by serving pool `cloud` on the same NATS.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  nats-server -js &   # or any NATS with JetStream
  grove up --nats nats://127.0.0.1:4222 --workers 4
  GROVE_COORDINATOR=http://127.0.0.1:7070 grove run job.toml --pool auto")]
pub struct UpArgs {
    /// The NATS server(s) [env: GROVE_NATS]
    #[arg(long, env = "GROVE_NATS", value_name = "URL")]
    pub nats: String,
    /// The coordinator's gRPC address
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Local worker processes
    #[arg(long, short = 'w', default_value_t = 2)]
    pub workers: usize,
    /// Tasks at once per worker
    #[arg(long, short = 'c', default_value_t = 2)]
    pub capacity: usize,
    /// Pools the local workers serve (repeatable)
    #[arg(long = "pool", value_name = "POOL", default_value = "local")]
    pub pools: Vec<String>,
    /// Serve the coordinator's API over TLS with this certificate (PEM; with --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub nats_tls: super::worker::NatsTls,
    /// Passed on to the workers
    #[command(flatten)]
    pub agent_env: crate::secrets::AgentEnvArgs,
}

pub async fn cmd_up(home: PathBuf, args: UpArgs) -> anyhow::Result<ExitCode> {
    let me = std::env::current_exe().context("finding the grove executable")?;
    let spawn = |what: &str, extra: Vec<String>| -> anyhow::Result<(String, Child)> {
        let mut cmd = Command::new(&me);
        cmd.arg("--home").arg(&home).args(&extra).args(args.nats_tls.args()).kill_on_drop(true);
        // A process group of its own: the terminal's Ctrl-C reaches `grove up` alone, which
        // tells each child once (a worker takes a second signal as "hand back at once").
        cmd.process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting the {what}"))?;
        Ok((what.to_owned(), child))
    };
    let mut coordinator = vec![
        "coordinator".into(),
        "--nats".into(),
        args.nats.clone(),
        "--listen".into(),
        args.listen.clone(),
    ];
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        coordinator.extend(["--tls-cert".into(), cert.display().to_string()]);
        coordinator.extend(["--tls-key".into(), key.display().to_string()]);
    }
    let mut children = vec![spawn("coordinator", coordinator)?];
    for i in 1..=args.workers {
        let mut extra = vec![
            "worker".into(),
            "--nats".into(),
            args.nats.clone(),
            "--capacity".into(),
            args.capacity.to_string(),
            "--id".into(),
            format!("{}-up-{i}", grove_worker::host_name()),
        ];
        for p in &args.pools {
            extra.extend(["--pool".into(), p.clone()]);
        }
        extra.extend(args.agent_env.args().into_iter().map(|a| a.to_string_lossy().into_owned()));
        children.push(spawn(&format!("worker {i}"), extra)?);
    }
    eprintln!(
        "grove up: coordinator on {}://{} and {} worker(s) ({} each, pools {}); Ctrl-C stops them",
        if args.tls_cert.is_some() { "https" } else { "http" },
        args.listen,
        args.workers,
        args.capacity,
        args.pools.join(",")
    );
    let mut signals = Signals::new()?;
    // Wait for a signal, or for a child to end on its own (then the fleet is not whole).
    let died = {
        let waits = children.iter_mut().map(|(name, c)| {
            let name = name.clone();
            Box::pin(async move { (name, c.wait().await) })
        });
        tokio::select! {
            () = signals.next() => None,
            ((name, status), _, _) = futures::future::select_all(waits) => Some((name, status)),
        }
    };
    if let Some((name, status)) = &died {
        eprintln!("grove up: the {name} stopped ({}); stopping the rest", describe(status));
    } else {
        eprintln!("grove up: stopping: the workers drain first (Ctrl-C again to stop at once)");
    }
    // Workers first, so they finish or hand back what they run; then the coordinator.
    let (coordinator, workers) = children.split_at_mut(1);
    for (_, c) in workers.iter_mut() {
        terminate(c);
    }
    let drained = async {
        for (name, c) in workers.iter_mut() {
            wait(name, c, Duration::from_secs(45)).await;
        }
    };
    let at_once = tokio::select! {
        () = drained => false,
        () = signals.next() => true,
    };
    if at_once {
        eprintln!("grove up: stopping at once: running tasks go back to the queue");
        // Each worker's second signal: it hands its tasks back now.
        for (_, c) in workers.iter_mut() {
            terminate(c);
        }
        for (name, c) in workers.iter_mut() {
            wait(name, c, Duration::from_secs(10)).await;
        }
    }
    for (name, c) in coordinator.iter_mut() {
        terminate(c);
        wait(name, c, Duration::from_secs(15)).await;
    }
    Ok(if died.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Ctrl-C, SIGTERM and SIGHUP (the terminal went away), as one stream of "stop".
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("watching SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("watching SIGHUP")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

fn describe(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

fn terminate(c: &Child) {
    if let Some(pid) = c.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

async fn wait(name: &str, c: &mut Child, limit: Duration) {
    match tokio::time::timeout(limit, c.wait()).await {
        Ok(_) => {}
        Err(_) => {
            eprintln!("grove up: the {name} did not stop within {limit:?}; killing it");
            let _ = c.kill().await;
        }
    }
}
