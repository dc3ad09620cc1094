use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use grove_core::task::WorkerInfo;

use crate::output::table;

/// List the live workers: id, host, pools, capacity and what each is running.
///
/// Workers announce themselves in the worker registry (a NATS key-value bucket whose entries
/// lapse unless renewed), so a worker that died leaves the list within its TTL (30 s). Ask a
/// coordinator (--coordinator) or read the registry straight from NATS (--nats). The
/// embedded mode's workers live inside `grove run` and are not listed.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove workers --coordinator http://127.0.0.1:7070
  grove workers --nats nats://127.0.0.1:4222 --json | jq '.[] | select(.pools | index(\"cloud\"))'")]
pub struct WorkersArgs {
    /// Ask this coordinator daemon [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL", conflicts_with = "nats")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
    #[command(flatten)]
    pub nats_tls: super::worker::NatsTls,
    /// Read the registry from this NATS server [env: GROVE_NATS]
    #[arg(long, env = "GROVE_NATS", value_name = "URL")]
    pub nats: Option<String>,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn cmd_workers(args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let workers: Vec<WorkerInfo> = if let Some(url) = &args.coordinator {
        let mut client = crate::remote::connect(url, &args.tls).await?;
        client
            .list_workers(grove_proto::v1::ListWorkersRequest {})
            .await
            .map_err(|s| crate::remote::status(url, s))?
            .into_inner()
            .workers
            .into_iter()
            .filter_map(|w| match grove_bus::wire::worker_of(w) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("ignoring a worker the coordinator listed: {e}");
                    None
                }
            })
            .collect()
    } else if let Some(url) = &args.nats {
        let mut config =
            super::worker::nats_config(url, None, std::time::Duration::from_secs(60), &args.nats_tls)?;
        // Only reads the registry.
        config.role = grove_bus::nats::Role::Client;
        let bus = grove_bus::nats::NatsBus::connect(config, "grove-workers").await?;
        grove_bus::Bus::workers(&bus).await.context("reading the worker registry")?
    } else {
        anyhow::bail!(
            "no coordinator and no NATS given: the embedded mode's workers live inside `grove run`; \
             give --coordinator URL (or GROVE_COORDINATOR) or --nats URL"
        );
    };
    print(&workers, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print(workers: &[WorkerInfo], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "id": w.id,
                    "host": w.host,
                    "pools": w.pools,
                    "capacity": w.capacity,
                    "running": w.tasks.len(),
                    "tasks": w.tasks,
                    "version": w.version,
                    "started_at": w.started_at,
                    "seen_at": w.seen_at,
                    "refusing": w.refusing,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if workers.is_empty() {
        writeln!(out, "no live workers (start some with `grove worker --nats URL` or `grove up`)")?;
        return Ok(());
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.host.clone(),
                w.pools.join(","),
                format!("{}/{}", w.tasks.len(), w.capacity),
                format!("{}s ago", (now - w.seen_at).max(0)),
                w.version.clone(),
                match &w.refusing {
                    Some(why) => format!("refusing work: {why}"),
                    None => w.tasks.join(" "),
                },
            ]
        })
        .collect();
    write!(out, "{}", table(&["WORKER", "HOST", "POOLS", "BUSY", "SEEN", "VERSION", "TASKS"], &rows))?;
    Ok(())
}
