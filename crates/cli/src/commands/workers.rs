use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use grove_core::task::WorkerInfo;
use grove_proto::v1::{LaunchedPod, LaunchedPool};

use crate::output::table;

/// List the live workers: id, host, pools, capacity and what each is running; and, from a
/// coordinator that launches worker pods (Kubernetes), each such pool's pods: pending,
/// running, failing and why.
///
/// Workers announce themselves in the worker registry (a NATS key-value bucket whose entries
/// lapse unless renewed), so a worker that died leaves the list within its TTL (30 s). Ask a
/// coordinator (--coordinator) or read the registry straight from NATS (--nats; no pods then).
/// The embedded mode's workers live inside `grove run` and are not listed.
///
/// With --json: one entry per worker (`"kind": "worker"`; a launched pod's worker has `pod`),
/// per pod without a live worker yet (`"kind": "pod"`) and per launched pool (`"kind":
/// "pool"`: wanted, max, held, error, recent failures); every entry has `id` and `pools`.
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
    let mut pools = Vec::new();
    let workers: Vec<WorkerInfo> = if let Some(url) = &args.coordinator {
        let mut client = crate::remote::connect(url, &args.tls).await?;
        let reply = client
            .list_workers(grove_proto::v1::ListWorkersRequest {})
            .await
            .map_err(|s| crate::remote::status(url, s))?
            .into_inner();
        pools = reply.pools;
        reply
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
    print(&workers, &pools, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn pod_json(p: &LaunchedPod) -> serde_json::Value {
    serde_json::json!({
        "job": p.name,
        "pod": p.pod,
        "phase": p.phase,
        "reason": p.reason,
        "message": p.message,
        "stuck": p.stuck,
        "created_at": p.created_at,
    })
}

/// The launched pod a worker runs in, by its id (a pod's worker is named after the pod).
fn pod_of<'a>(pools: &'a [LaunchedPool], worker: &str) -> Option<&'a LaunchedPod> {
    pools.iter().flat_map(|p| &p.pods).find(|p| p.pod.as_deref() == Some(worker))
}

fn age(now: i64, at: i64) -> String {
    let s = (now - at).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

fn print(workers: &[WorkerInfo], pools: &[LaunchedPool], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let ids: std::collections::HashSet<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    if json {
        let mut list: Vec<_> = workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "kind": "worker",
                    "pod": pod_of(pools, &w.id).map(pod_json),
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
        for pool in pools {
            for p in pool.pods.iter().filter(|p| !p.pod.as_deref().is_some_and(|id| ids.contains(id))) {
                let mut v = pod_json(p);
                v["kind"] = "pod".into();
                v["id"] = p.pod.clone().unwrap_or_else(|| p.name.clone()).into();
                v["pools"] = serde_json::json!([pool.pool]);
                v["backend"] = pool.backend.clone().into();
                list.push(v);
            }
            list.push(serde_json::json!({
                "kind": "pool",
                "id": pool.pool,
                "pools": [pool.pool],
                "backend": pool.backend,
                "wanted": pool.wanted,
                "max": pool.max,
                "pods": pool.pods.len(),
                "held": pool.held,
                "error": pool.error,
                "failures": pool.failures.iter().map(pod_json).collect::<Vec<_>>(),
                "updated_at": pool.updated_at,
            }));
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    for pool in pools {
        writeln!(
            out,
            "pool {} ({}): {} pods, {} wanted, at most {}",
            pool.pool,
            pool.backend,
            pool.pods.len(),
            pool.wanted,
            pool.max
        )?;
        if let Some(e) = &pool.error {
            writeln!(out, "  error: {e}")?;
        }
        if let Some(h) = &pool.held {
            writeln!(out, "  held: {h}")?;
        }
        let rows: Vec<Vec<String>> = pool
            .pods
            .iter()
            .filter(|p| !p.pod.as_deref().is_some_and(|id| ids.contains(id)) || p.stuck)
            .chain(pool.failures.iter().rev().take(5))
            .map(|p| {
                vec![
                    p.pod.clone().unwrap_or_else(|| format!("({})", p.name)),
                    if p.stuck { "stuck".to_owned() } else { p.phase.clone() },
                    age(now, p.created_at),
                    match (&p.reason, &p.message) {
                        (Some(r), Some(m)) => format!("{r}: {m}"),
                        (Some(r), None) => r.clone(),
                        (None, _) => String::new(),
                    },
                ]
            })
            .collect();
        if !rows.is_empty() {
            write!(out, "{}", table(&["POD", "PHASE", "AGE", "WHY"], &rows))?;
        }
    }
    if workers.is_empty() {
        writeln!(out, "no live workers (start some with `grove worker --nats URL` or `grove up`)")?;
        return Ok(());
    }
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
