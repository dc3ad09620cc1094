use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use grove_coordinator::daemon::Daemon;
use grove_coordinator::grpc;
use grove_core::spec::parse_duration;
use tokio_util::sync::CancellationToken;

use crate::embedded::Embedded;

/// Run the coordinator daemon: a gRPC API for `grove --coordinator URL ...`, dispatch over
/// NATS JetStream to `grove worker` processes, state in SQLite under the grove home.
///
/// A listener on an address other than loopback requires a token (--token-file or
/// GROVE_TOKEN); clients send it as a bearer token.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove coordinator --nats nats://127.0.0.1:4222
  grove coordinator --listen 0.0.0.0:7070 --token-file /etc/grove/token --nats nats://nats:4222")]
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
    let nats = super::worker::nats_config(&args.nats, None, args.ack_wait)?;
    let emb = Embedded::open(home.clone(), Some(nats)).await?;
    let daemon = Daemon::new(emb.coordinator.clone());
    let stop = CancellationToken::new();
    let events = tokio::spawn(daemon.clone().run(stop.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!("grove coordinator: gRPC on {addr}, NATS {}, state in {}", args.nats, home.display());
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
    tonic::transport::Server::builder()
        .add_service(grpc::server(grpc::Api::new(daemon), token))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .context("serving gRPC")?;
    stop.cancel();
    events.await.context("the event loop")??;
    Ok(ExitCode::SUCCESS)
}
