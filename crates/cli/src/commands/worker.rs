use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use grove_bus::nats::{NatsBus, NatsConfig};
use grove_core::layout::Layout;
use grove_core::spec::parse_duration;
use tokio_util::sync::CancellationToken;

/// Run a worker daemon: take tasks for its pools from NATS JetStream, run them, report.
///
/// The worker makes each workspace as a worktree of the coordinator's mirror when that is on
/// this machine, else as a partial sparse clone that pushes its branch after every turn.
/// SIGTERM or Ctrl-C drains: no new tasks; running ones get --drain-timeout to finish, then
/// are handed back (their checkpoints kept) for another worker. A second signal hands back at
/// once.
///
/// Agents and checks never see this process's environment, only an allow-list of it (PATH,
/// HOME, locale, proxies, ...; see README) and what the job sets. Agents also get their
/// credentials: the builtin adapters' own variables (ANTHROPIC_API_KEY for claude, ...) from
/// this environment, and whatever --agent-env and --agent-env-file name. grove's own tokens
/// are never passed, and every credential's value is masked in logs.
///
/// A worker on another machine (a pod) clones from the coordinator's git endpoint
/// (`grove coordinator --git-url`) with the token in --git-token-file; with --exit-when-idle
/// it exits once the pool has had nothing for it that long, as the launcher's pods do.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove worker --nats nats://127.0.0.1:4222 --pool local --capacity 4
  grove worker --nats nats://nats:4222 --pool cloud --clone --id pod-7
  grove worker --nats nats://nats:4222 --agent-env MY_API_KEY --agent-env-file OPENAI_API_KEY=/run/secrets/openai
  grove worker --nats tls://nats:4222 --nats-ca ca.pem --nats-cert me.pem --nats-key me.key
  grove worker --nats nats://nats:4222 --pool cloud --capacity 1 --clone --exit-when-idle 60s \\
      --git-token-file /var/run/grove/git/token
  GROVE_NATS_PASSWORD=... grove worker --nats nats://nats:4222 --pool gpu --nats-user grove-worker-gpu")]
pub struct WorkerArgs {
    /// The NATS server(s) [env: GROVE_NATS]
    #[arg(long, env = "GROVE_NATS", value_name = "URL")]
    pub nats: String,
    /// A file holding the NATS token [env: GROVE_NATS_TOKEN holds the token itself]
    #[arg(long, value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// Pools to take tasks from (repeatable)
    #[arg(long = "pool", value_name = "POOL", default_value = "local")]
    pub pools: Vec<String>,
    /// Tasks at once
    #[arg(long, short = 'c', default_value_t = 2)]
    pub capacity: usize,
    /// A name for this worker in reports (default: host and process id)
    #[arg(long)]
    pub id: Option<String>,
    /// Always clone the repository (as a pod does), even when the mirror is on this machine
    #[arg(long)]
    pub clone: bool,
    /// How long a task's lease lasts without a heartbeat before another worker gets it
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub ack_wait: Duration,
    /// How long running tasks get to finish when the worker is asked to stop
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,
    /// Disk budget for this worker's workspaces and logs under GROVE_HOME, e.g. 50GiB; over
    /// it, workspaces kept after their task ended are removed (oldest first), then no task is
    /// taken until there is room [default: no budget]
    #[arg(long, value_name = "SIZE", value_parser = grove_worker::disk::parse_size)]
    pub max_disk: Option<u64>,
    /// Free space to keep on GROVE_HOME's filesystem; below it the worker removes kept
    /// workspaces, then takes no task until there is room (0: no floor)
    #[arg(long, value_name = "SIZE", value_parser = grove_worker::disk::parse_size, default_value = "2GiB")]
    pub min_free: u64,
    /// Exit (status 0) after DURATION with no task running and none delivered
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub exit_when_idle: Option<Duration>,
    /// A file holding the token for the coordinator's git endpoint, read at every fetch and
    /// push (so it may be replaced while the worker runs) [env: GROVE_GIT_TOKEN_FILE]
    #[arg(long, env = "GROVE_GIT_TOKEN_FILE", value_name = "FILE")]
    pub git_token_file: Option<PathBuf>,
    /// Check the flags and environment, print the worker's settings and exit, without
    /// connecting (files the flags name need not exist yet)
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON on stdout (with --dry-run)
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    #[command(flatten)]
    pub nats_tls: NatsTls,
    #[command(flatten)]
    pub agent_env: crate::secrets::AgentEnvArgs,
}

/// TLS to NATS (a server started with `--tls`): the CA that signed its certificate, and a
/// client certificate for a server that verifies clients (`--tlsverify`); and who this process
/// is there (a credentials file, or a user and password such as the roles of
/// `deploy/nats/grove-auth.conf`).
#[derive(Args, Debug, Clone, Default)]
pub struct NatsTls {
    /// The CA certificate (PEM) of a NATS server that uses TLS; TLS is then required
    /// [env: GROVE_NATS_CA]
    #[arg(long, env = "GROVE_NATS_CA", value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// A client certificate (PEM) for a NATS server that verifies clients (with --nats-key)
    #[arg(long, value_name = "FILE", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
    /// A NATS credentials file (.creds: user JWT and nkey seed, as `nsc` writes them)
    /// [env: GROVE_NATS_CREDS]
    #[arg(long, env = "GROVE_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// The NATS user to connect as, e.g. grove-worker-local (its password: --nats-password-file
    /// or GROVE_NATS_PASSWORD) [env: GROVE_NATS_USER]
    #[arg(long, env = "GROVE_NATS_USER", value_name = "NAME")]
    pub nats_user: Option<String>,
    /// A file holding the NATS user's password [env: GROVE_NATS_PASSWORD holds it itself]
    #[arg(long, value_name = "FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,
    /// The prefix of this process's NATS reply subjects, as the server's permissions allow
    /// them [default: _INBOX_<user> with --nats-user, else _INBOX] [env: GROVE_NATS_INBOX]
    #[arg(long, env = "GROVE_NATS_INBOX", value_name = "PREFIX")]
    pub nats_inbox: Option<String>,
}

impl NatsTls {
    /// The flags again, for a child process (`grove up`).
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        for (flag, v) in [
            ("--nats-ca", &self.nats_ca),
            ("--nats-cert", &self.nats_cert),
            ("--nats-key", &self.nats_key),
            ("--nats-creds", &self.nats_creds),
            ("--nats-password-file", &self.nats_password_file),
        ] {
            if let Some(v) = v {
                out.push(flag.into());
                out.push(v.clone().into_os_string());
            }
        }
        for (flag, v) in [("--nats-user", &self.nats_user), ("--nats-inbox", &self.nats_inbox)] {
            if let Some(v) = v {
                out.push(flag.into());
                out.push(v.into());
            }
        }
        out
    }
}

pub fn nats_config(
    url: &str,
    token_file: Option<&PathBuf>,
    ack_wait: Duration,
    tls: &NatsTls,
) -> anyhow::Result<NatsConfig> {
    let mut config = NatsConfig::new(url);
    config.ack_wait = ack_wait;
    for f in [&tls.nats_ca, &tls.nats_cert, &tls.nats_key, &tls.nats_creds, &tls.nats_password_file]
        .into_iter()
        .flatten()
    {
        if !f.is_file() {
            anyhow::bail!("{}: no such file (a --nats-* flag names it)", f.display());
        }
    }
    config.credentials = tls.nats_creds.clone();
    if let Some(user) = &tls.nats_user {
        let password = match &tls.nats_password_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("reading the NATS password {}", f.display()))?
                .trim()
                .to_owned(),
            None => std::env::var("GROVE_NATS_PASSWORD").unwrap_or_default(),
        };
        config.user = Some((user.clone(), password));
    }
    config.inbox_prefix = tls.nats_inbox.clone();
    config.tls_ca = tls.nats_ca.clone();
    config.tls_client = tls.nats_cert.clone().zip(tls.nats_key.clone());
    config.token = match token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the NATS token {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("GROVE_NATS_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    Ok(config)
}

pub async fn cmd_worker(home: PathBuf, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let id =
        args.id.clone().unwrap_or_else(|| format!("{}-{}", grove_worker::host_name(), std::process::id()));
    if args.dry_run {
        return dry_run(&home, &id, &args);
    }
    if let Some(f) = &args.git_token_file
        && !f.is_file()
    {
        anyhow::bail!("{}: no such file (--git-token-file / GROVE_GIT_TOKEN_FILE names it)", f.display());
    }
    let mut config = nats_config(&args.nats, args.nats_token_file.as_ref(), args.ack_wait, &args.nats_tls)?;
    // A worker makes nothing on NATS: it waits for a coordinator to have made the streams.
    config.role = grove_bus::nats::Role::Worker;
    let config_ttl = config.worker_ttl;
    let tokens = crate::secrets::grove_tokens(Some(&config), &[]);
    let secrets = crate::secrets::worker_secrets(&home, &args.agent_env, tokens)?;
    let bus = NatsBus::connect(config, &id).await?;
    let mut git = grove_git::Git::detect()?;
    if let Some(f) = &args.git_token_file {
        git = git.with_token_file(f);
    }
    let hand_back = CancellationToken::new();
    let ctx = Arc::new(grove_worker::WorkerContext {
        id: id.clone(),
        bus: Arc::new(bus),
        git,
        layout: Layout::new(home),
        pools: args.pools.clone(),
        capacity: args.capacity.max(1),
        workspace: if args.clone {
            grove_worker::workspace::Mode::Clone
        } else {
            grove_worker::workspace::Mode::Auto
        },
        // See grove_worker::lease: heartbeats three times per fence period.
        heartbeat: grove_worker::lease::heartbeat_every(args.ack_wait),
        hand_back: hand_back.clone(),
        announce_every: config_ttl / 3,
        disk: grove_worker::disk::Budget { max_disk: args.max_disk, min_free: args.min_free },
        secrets,
        idle_exit: args.exit_when_idle,
        agent_home: grove_worker::agent_home_vars(|k| std::env::var(k).ok()),
        repos: Default::default(),
    });
    eprintln!("worker {id}: pools {}, capacity {}, NATS {}", args.pools.join(","), ctx.capacity, args.nats);
    let names = ctx.secrets.credentials().names();
    if !names.is_empty() {
        eprintln!("worker {id}: agent credentials held (values masked in logs): {}", names.join(", "));
    }
    let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
    let mut work = tokio::spawn(grove_worker::run(ctx, stop.clone(), kill.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("watching SIGTERM")?;
    let signal = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tokio::select! {
        r = &mut work => { r.context("the worker loop")?; return Ok(ExitCode::SUCCESS); }
        () = signal => {}
    }
    eprintln!("worker {id}: draining (no new tasks; {:?} for running ones)", args.drain_timeout);
    stop.cancel();
    let mut term2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("watching SIGTERM")?;
    tokio::select! {
        r = &mut work => { r.context("the worker loop")?; return Ok(ExitCode::SUCCESS); }
        () = tokio::time::sleep(args.drain_timeout) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term2.recv() => {}
    }
    eprintln!("worker {id}: handing back the tasks still running");
    hand_back.cancel();
    kill.cancel();
    work.await.context("the worker loop")?;
    Ok(ExitCode::SUCCESS)
}

/// `--dry-run`: what the worker would run with, without connecting.
fn dry_run(home: &std::path::Path, id: &str, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let secs = |d: Duration| d.as_secs_f64();
    let v = serde_json::json!({
        "id": id,
        "home": home,
        "nats": args.nats,
        "pools": args.pools,
        "capacity": args.capacity.max(1),
        "workspace": if args.clone { "clone" } else { "auto" },
        "ack_wait_secs": secs(args.ack_wait),
        "drain_timeout_secs": secs(args.drain_timeout),
        "exit_when_idle_secs": args.exit_when_idle.map(secs),
        "git_token_file": args.git_token_file,
        "nats_token_file": args.nats_token_file,
        "max_disk": args.max_disk,
        "min_free": args.min_free,
    });
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "worker {id}: pools {}, capacity {}, NATS {}, workspaces by {}, home {}{}",
            args.pools.join(","),
            args.capacity.max(1),
            args.nats,
            if args.clone { "clone" } else { "worktree or clone" },
            home.display(),
            args.exit_when_idle.map(|d| format!(", exits after {d:?} idle")).unwrap_or_default()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
