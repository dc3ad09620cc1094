use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use grove_coordinator::access::Tokens;
use grove_coordinator::daemon::Daemon;
use grove_coordinator::githttp::{self, GitAccess, WorkerTokens};
use grove_coordinator::grpc;
use grove_coordinator::home::HomeLock;
use grove_core::spec::parse_duration;
use tokio_util::sync::CancellationToken;

use crate::embedded::Embedded;

/// Run the coordinator daemon: a gRPC API for `grove --coordinator URL ...`, dispatch over
/// NATS JetStream to `grove worker` processes, state in SQLite under the grove home.
///
/// With --tls-cert and --tls-key the API is served over TLS (rustls): clients use an https://
/// URL and trust the certificate with --ca-file (or GROVE_CA_FILE). A listener on an address
/// other than loopback requires both TLS and tokens: a token sent in the clear could be read
/// off the network.
///
/// Tokens (--token-file, or GROVE_TOKEN for one admin token) carry a scope: the file has one
/// `SCOPE TOKEN [NAME]` per line. read: status, logs, watch, diff, compare, workers; submit:
/// also plan and run jobs, cancel and retry the jobs it submitted; admin: everything (merge,
/// discard, pick, push, anyone's jobs). A line with a token alone is an admin token. Clients
/// send theirs in GROVE_TOKEN; a call outside its scope is refused naming the scope it needs.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove coordinator --nats nats://127.0.0.1:4222
  grove coordinator --nats nats://127.0.0.1:4222 --gc-every 6h --gc-older-than 7d
  grove coordinator --listen 0.0.0.0:7070 --token-file /etc/grove/tokens --tls-cert cert.pem \\
      --tls-key key.pem --nats tls://nats:4222 --nats-ca nats-ca.pem --nats-user grove-coordinator
  grove coordinator --listen 0.0.0.0:7070 --token-file /etc/grove/tokens --tls-cert cert.pem \\
      --tls-key key.pem --nats nats://nats:4222 --git-url https://grove:7070/git \\
      --kube --kube-image ghcr.io/example/grove-worker:0.1.0

A token file:
  # SCOPE   TOKEN                 NAME (jobs are recorded under it)
  read      r-3f9a0c6e1b2d4f58    dashboards
  submit    s-8c1d77a0e5f34b21    alice
  admin     a-77e0b2c9d4e61f03    ops")]
pub struct CoordinatorArgs {
    /// The address to serve gRPC on
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics at http://ADDR/metrics (jobs and tasks by state, queue depth
    /// per pool, merges, conflicts, redos, agent turns, tokens and cost); plain HTTP, no token:
    /// keep it on loopback or a private network
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// The NATS server(s) [env: GROVE_NATS]
    #[arg(long, env = "GROVE_NATS", value_name = "URL")]
    pub nats: String,
    /// A file of API tokens, one `SCOPE TOKEN [NAME]` per line (scope read, submit or admin;
    /// a token alone is admin) [env: GROVE_TOKEN holds one admin token itself]
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// How long a task's lease lasts without a heartbeat
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub ack_wait: std::time::Duration,
    /// Serve gRPC over TLS with this certificate (PEM; with --tls-key); clients then use
    /// https:// and --ca-file
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Collect ended jobs every DURATION, as `grove gc --older-than <--gc-older-than>` does
    /// (never unmerged work, never a mirror); off by default
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub gc_every: Option<std::time::Duration>,
    /// With --gc-every: how long ago a job must have ended to be collected
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "7d", requires = "gc_every")]
    pub gc_older_than: std::time::Duration,
    /// The mirrors' URL as workers elsewhere reach this coordinator, e.g.
    /// https://grove.example:7070/git (served on --listen under /git) [env: GROVE_GIT_URL]
    #[arg(long, env = "GROVE_GIT_URL", value_name = "URL")]
    pub git_url: Option<String>,
    /// Check the flags, the token, TLS files and the launcher's configuration, print the
    /// coordinator's settings and the worker Job the launcher would make for each of its pools,
    /// and exit without starting
    #[arg(long)]
    pub dry_run: bool,
    /// Serve the API without TLS on a non-loopback address (tokens are still required): only
    /// where the network between clients and this coordinator is private, as inside a
    /// cluster whose pods reach it through a Service (the Helm chart without `tls.enabled`)
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Print JSON on stdout (with --dry-run)
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    #[command(flatten)]
    pub nats_tls: super::worker::NatsTls,
    #[command(flatten)]
    pub kube: crate::launcher::KubeArgs,
}

/// `--dry-run`: what the coordinator would run with, and the Jobs its launcher would make
/// (slot 0 of each pool, with no task's deadline), without opening its state or connecting.
fn dry_run(
    home: &std::path::Path,
    args: &CoordinatorArgs,
    tls: bool,
    kube: &grove_kube::config::Layers,
) -> anyhow::Result<ExitCode> {
    let launcher = if kube.enabled() {
        let s = kube.validate().context("the pod launcher's configuration ([kube])")?;
        let nats_url = s.nats_url.clone().unwrap_or_else(|| args.nats.clone());
        let jobs: Vec<_> = s
            .pools
            .iter()
            .map(|pool| {
                grove_kube::job::job(&grove_kube::job::JobParams {
                    settings: &s,
                    pool,
                    slot: 0,
                    nats_url: &nats_url,
                    deadline: s.max_lifetime,
                })
            })
            .collect();
        Some(serde_json::json!({
            "namespace": s.namespace,
            "instance": s.instance,
            "image": s.image,
            "pools": s.pools.iter().map(|p| serde_json::json!({"pool": p.name, "max_pods": p.max_pods})).collect::<Vec<_>>(),
            "jobs": jobs,
        }))
    } else {
        None
    };
    let v = serde_json::json!({
        "home": home,
        "listen": args.listen.to_string(),
        "nats": args.nats,
        "tls": tls,
        "git_url": args.git_url,
        "ack_wait_secs": args.ack_wait.as_secs_f64(),
        "gc_every_secs": args.gc_every.map(|d| d.as_secs_f64()),
        "kube": launcher,
    });
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let pools = launcher.as_ref().and_then(|l| l["pools"].as_array().cloned()).map(|p| {
            p.iter()
                .map(|p| format!("{} (at most {})", p["pool"].as_str().unwrap_or_default(), p["max_pods"]))
                .collect::<Vec<_>>()
        });
        writeln!(
            out,
            "coordinator: {} on {}, NATS {}, state in {}, {}",
            if tls { "https" } else { "http" },
            args.listen,
            args.nats,
            home.display(),
            match pools {
                Some(p) => format!("launching worker pods for {}", p.join(", ")),
                None => "no pod launcher".to_owned(),
            }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The server's TLS identity, when a certificate was given.
fn server_tls(args: &CoordinatorArgs) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |f: &PathBuf, what: &str| {
        std::fs::read(f).with_context(|| format!("reading the TLS {what} {}", f.display()))
    };
    let identity = tonic::transport::Identity::from_pem(read(cert, "certificate")?, read(key, "key")?);
    Ok(Some(tonic::transport::ServerTlsConfig::new().identity(identity)))
}

/// The API's tokens: from `file` (see [`grove_coordinator::access`]), else one admin token in
/// GROVE_TOKEN, else none.
pub fn tokens(file: Option<&PathBuf>) -> anyhow::Result<Tokens> {
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading the tokens {}", f.display()))?;
        if std::fs::metadata(f).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            eprintln!(
                "grove coordinator: warning: {} can be read by other users (chmod 600 it)",
                f.display()
            );
        }
        return Tokens::parse(&text).with_context(|| format!("the token file {}", f.display()));
    }
    match std::env::var("GROVE_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        Some(t) => Tokens::admin(t.trim()).context("GROVE_TOKEN"),
        None => Ok(Tokens::none()),
    }
}

/// Off loopback the API needs TLS (unless `plaintext` is allowed) and tokens.
fn check_exposure(listen: SocketAddr, tls: bool, plaintext: bool, tokens: &Tokens) -> anyhow::Result<()> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if !tls && !plaintext {
        anyhow::bail!(
            "{listen} is not a loopback address: serve the API over TLS there (--tls-cert and --tls-key), \
             so the tokens clients send cannot be read off the network (or --allow-plaintext, on a \
             private network only)"
        );
    }
    if tokens.is_empty() {
        anyhow::bail!(
            "{listen} is not a loopback address: give tokens (--token-file or GROVE_TOKEN) so the API is not open to anyone"
        );
    }
    Ok(())
}

pub async fn cmd_coordinator(home: PathBuf, args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let tokens = tokens(args.token_file.as_ref())?;
    let tls = server_tls(&args)?;
    check_exposure(args.listen, tls.is_some(), args.allow_plaintext, &tokens)?;
    if let Some(u) = &args.git_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        anyhow::bail!("--git-url {u:?}: an http:// or https:// URL (this coordinator's address, then /git)");
    }
    // The launcher's configuration is checked before anything starts.
    let kube_layers = crate::launcher::layers(&home, &args.kube, args.git_url.as_deref())?;
    if kube_layers.enabled() {
        kube_layers.validate().context("the pod launcher's configuration ([kube])")?;
    }
    let mut nats = super::worker::nats_config(&args.nats, None, args.ack_wait, &args.nats_tls)?;
    if args.dry_run {
        return dry_run(&home, &args, tls.is_some(), &kube_layers);
    }
    // One daemon per home, and no `grove gc` under its feet. A predecessor killed a moment
    // ago may still be exiting: give it a few seconds to let go.
    let layout = grove_core::layout::Layout::new(home.clone());
    // The lock says where the daemon serves, for local commands it refuses.
    let who =
        format!("grove coordinator at {}://{}", if tls.is_some() { "https" } else { "http" }, args.listen);
    let _home_lock =
        tokio::task::block_in_place(|| HomeLock::take(&layout, &who, std::time::Duration::from_secs(5)))?;
    // Its own consumer of the events stream, filtered to its jobs, kept across restarts
    // (and forgotten by the server when the stream's events would be gone anyway).
    nats.reader = Some(grove_bus::nats::EventReader {
        id: grove_coordinator::home::coordinator_id(&layout)?,
        replay: true,
        forget_after: std::time::Duration::from_secs(14 * 86400),
    });
    let emb = Embedded::unlocked(home.clone(), Some(nats), args.git_url.clone(), &tokens.values()).await?;
    let daemon = Daemon::new(emb.coordinator.clone());
    let stop = CancellationToken::new();
    let events = tokio::spawn(daemon.clone().run(stop.clone()));
    let worker_tokens = Arc::new(tokio::task::block_in_place(|| WorkerTokens::open(&layout))?);
    crate::launcher::start(&kube_layers, &daemon, worker_tokens.clone(), &args.nats, stop.clone()).await?;
    let git = Arc::new(GitAccess {
        git: emb.git.clone(),
        mirrors: layout.mirrors(),
        api_tokens: tokens.clone(),
        tokens: worker_tokens,
    });
    if let Some(every) = args.gc_every {
        let policy = grove_coordinator::gc::Policy { older_than: args.gc_older_than, ..Default::default() };
        tokio::spawn(collect_every(daemon.clone(), every, policy, stop.clone()));
    }
    let sources =
        grove_coordinator::metrics::Sources { coord: daemon.coord.clone(), board: daemon.board.clone() };
    // The gauges and counters go out over OTLP too when a meter provider is installed
    // (`OTEL_EXPORTER_OTLP_ENDPOINT`); the durations are histograms recorded as they happen.
    if grove_telemetry::export::Wanted::from_env(|k| std::env::var(k).ok()).metrics {
        let every = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(std::time::Duration::from_secs(10), std::time::Duration::from_millis)
            .min(std::time::Duration::from_secs(60));
        sources.clone().export(every);
    }
    if let Some(addr) = args.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (--metrics-listen)"))?;
        let at = metrics.local_addr()?;
        eprintln!("grove coordinator: metrics on http://{at}/metrics");
        let routes = tonic::service::Routes::from(grove_coordinator::metrics::router(sources.clone()));
        let stop = stop.clone();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .accept_http1(true)
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(metrics),
                    stop.cancelled_owned(),
                )
                .await;
            if let Err(e) = served {
                tracing::warn!("serving metrics on {at}: {e}");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "grove coordinator: gRPC on {scheme}://{addr}, mirrors on {scheme}://{addr}{}, NATS {}, state in {}",
        githttp::PREFIX,
        args.nats,
        home.display()
    );
    let shutdown = {
        let stop = stop.clone();
        async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("grove coordinator: stopping (state is saved; running attempts stay on the bus)");
            stop.cancel();
        }
    };
    // HTTP/1.1 too: git's smart HTTP speaks it (over TLS curl negotiates HTTP/2).
    let mut server = tonic::transport::Server::builder().accept_http1(true);
    if let Some(tls) = tls {
        server = server.tls_config(tls).context("the TLS certificate or key")?;
    }
    let routes = tonic::service::Routes::from(githttp::router(git))
        .add_service(grpc::server(grpc::Api::new(daemon), tokens));
    let serve = server
        .add_routes(routes)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown);
    let mut events = events;
    tokio::select! {
        served = serve => {
            served.context("serving gRPC")?;
            stop.cancel();
            events.await.context("the event loop")??;
        }
        // The event loop ended by itself: an error it cannot go on from (the state or the bus
        // failing). Serving on without it would accept jobs nobody moves; exit instead, so a
        // supervisor starts the coordinator again, which picks up from SQLite and the streams.
        ended = &mut events => {
            ended.context("the event loop")?.context("the event loop stopped")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--gc-every`: collect ended jobs now and then until `stop`; a failed round is logged and
/// the next one tries again.
async fn collect_every(
    daemon: std::sync::Arc<Daemon>,
    every: std::time::Duration,
    policy: grove_coordinator::gc::Policy,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(std::time::Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (d, p) = (daemon.clone(), policy.clone());
        match tokio::task::spawn_blocking(move || d.collect(&p)).await {
            Ok(Ok(r)) if !r.removed.is_empty() => tracing::info!(
                removed = r.removed.len(),
                freed = r.freed(),
                jobs = r.collected.len(),
                "gc: collected ended jobs"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("gc: {e}"),
            Err(e) => tracing::warn!("gc: {e}"),
        }
    }
}
