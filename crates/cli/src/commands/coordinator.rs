use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use grove_coordinator::daemon::Daemon;
use grove_coordinator::grpc;
use grove_coordinator::home::HomeLock;
use grove_core::spec::parse_duration;
use tokio_util::sync::CancellationToken;

use crate::embedded::Embedded;

/// Run the coordinator daemon: a gRPC API for `grove --coordinator URL ...`, dispatch over
/// NATS JetStream to `grove worker` processes, state in SQLite under the grove home.
///
/// A listener on an address other than loopback requires a token (--token-file or
/// GROVE_TOKEN), with TLS or without; clients send it as a bearer token. With --tls-cert and
/// --tls-key the API is served over TLS (rustls): clients use an https:// URL and trust the
/// certificate with --ca-file (or GROVE_CA_FILE).
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove coordinator --nats nats://127.0.0.1:4222
  grove coordinator --nats nats://127.0.0.1:4222 --gc-every 6h --gc-older-than 7d
  grove coordinator --listen 0.0.0.0:7070 --token-file /etc/grove/token --nats nats://nats:4222
  grove coordinator --listen 0.0.0.0:7070 --token-file token --tls-cert cert.pem --tls-key key.pem \\
      --nats tls://nats:4222 --nats-ca nats-ca.pem")]
pub struct CoordinatorArgs {
    /// The address to serve gRPC on
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// The NATS server(s) [env: GROVE_NATS]
    #[arg(long, env = "GROVE_NATS", value_name = "URL")]
    pub nats: String,
    /// A file holding the API token [env: GROVE_TOKEN holds the token itself]
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
    #[command(flatten)]
    pub nats_tls: super::worker::NatsTls,
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

pub fn token(file: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    Ok(match file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the token {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("GROVE_TOKEN").ok().filter(|t| !t.is_empty()),
    })
}

pub async fn cmd_coordinator(home: PathBuf, args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let token = token(args.token_file.as_ref())?;
    if !args.listen.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "{} is not a loopback address: give a token (--token-file or GROVE_TOKEN) so the API is not open to anyone",
            args.listen
        );
    }
    let tls = server_tls(&args)?;
    let mut nats = super::worker::nats_config(&args.nats, None, args.ack_wait, &args.nats_tls)?;
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
    let emb = Embedded::unlocked(home.clone(), Some(nats)).await?;
    let daemon = Daemon::new(emb.coordinator.clone());
    let stop = CancellationToken::new();
    let events = tokio::spawn(daemon.clone().run(stop.clone()));
    if let Some(every) = args.gc_every {
        let policy = grove_coordinator::gc::Policy { older_than: args.gc_older_than, ..Default::default() };
        tokio::spawn(collect_every(daemon.clone(), every, policy, stop.clone()));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "grove coordinator: gRPC on {scheme}://{addr}, NATS {}, state in {}",
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
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).context("the TLS certificate or key")?;
    }
    let serve = server
        .add_service(grpc::server(grpc::Api::new(daemon), token))
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
