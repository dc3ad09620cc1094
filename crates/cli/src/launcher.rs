//! Wiring the Kubernetes pod launcher (grove-kube) into `grove coordinator`: its settings in
//! layers (the config file's `[kube]`, `GROVE_KUBE_*`, flags), the client (in-cluster or
//! kubeconfig), and the loop beside the daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use grove_coordinator::daemon::Daemon;
use grove_coordinator::githttp::WorkerTokens;
use grove_kube::config::{Layers, Overrides, Settings};
use tokio_util::sync::CancellationToken;

/// The launcher's flags (they win over GROVE_KUBE_* and the config file).
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// The coordinator's configuration file; its [kube] table configures the pod launcher
    /// [default: $GROVE_HOME/grove.toml, when it exists] [env: GROVE_CONFIG]
    #[arg(long, env = "GROVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Launch worker pods on Kubernetes for the pools of [kube] (default: the `cloud` pool)
    /// [env: GROVE_KUBE=true]
    #[arg(long)]
    pub kube: bool,
    /// The namespace of the worker Jobs [env: GROVE_KUBE_NAMESPACE]
    #[arg(long, value_name = "NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// The worker image [env: GROVE_KUBE_IMAGE]
    #[arg(long, value_name = "IMAGE")]
    pub kube_image: Option<String>,
    /// Pods per pool at most [env: GROVE_KUBE_MAX_PODS]
    #[arg(long, value_name = "N")]
    pub kube_max_pods: Option<u32>,
}

/// The config file: the one named (`--config`, `GROVE_CONFIG`), else `grove.toml` in the home
/// when it exists.
pub(crate) fn config_file(home: &Path, named: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    match named {
        Some(f) if !f.is_file() => {
            anyhow::bail!("{}: no such file (--config / GROVE_CONFIG names it)", f.display())
        }
        Some(f) => Ok(Some(f.to_path_buf())),
        None => Ok(Some(home.join(crate::secrets::CONFIG_FILE)).filter(|f| f.is_file())),
    }
}

/// The launcher's layers: file, then environment, then flags. `git_url` and `nats` are the
/// coordinator's own, the defaults of what pods are told.
pub fn layers(home: &Path, args: &KubeArgs, git_url: Option<&str>) -> anyhow::Result<Layers> {
    let file = match config_file(home, args.config.as_deref())? {
        Some(f) => Layers::read_file(&f)?,
        None => Default::default(),
    };
    let env = Overrides::from_env(|k| std::env::var(k).ok())?;
    let flags = Overrides {
        enabled: args.kube.then_some(true),
        namespace: args.kube_namespace.clone(),
        image: args.kube_image.clone(),
        max_pods: args.kube_max_pods,
        nats_url: None,
        git_url: None,
    };
    // The coordinator's --git-url is the default of kube.git_url, not an override of it.
    let mut file = file;
    if file.git_url.is_none() {
        file.git_url = git_url.map(str::to_owned);
    }
    Ok(Layers { file, overrides: env.then(flags) })
}

/// Start the launcher when the layers enable it; returns its settings.
pub async fn start(
    layers: &Layers,
    daemon: &Arc<Daemon>,
    tokens: Arc<WorkerTokens>,
    nats_url: &str,
    stop: CancellationToken,
) -> anyhow::Result<Option<Settings>> {
    if !layers.enabled() {
        return Ok(None);
    }
    let settings = layers.validate().context("the pod launcher's configuration ([kube])")?;
    let client = kube::Client::try_default().await.context(
        "no Kubernetes API to launch pods with: run in a cluster (service account) or set KUBECONFIG",
    )?;
    let namespace = settings.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let nats_url = settings.nats_url.clone().unwrap_or_else(|| nats_url.to_owned());
    let launcher = Arc::new(grove_kube::launcher::Launcher::new(grove_kube::launcher::Context {
        client,
        namespace: namespace.clone(),
        settings: settings.clone(),
        nats_url,
        demands: Arc::new(grove_kube::launcher::CoordinatorDemands(daemon.coord.clone())),
        tokens,
        board: daemon.board.clone(),
        clock: Arc::new(grove_kube::launcher::unix_now),
    }));
    // A dispatch wakes the launcher at once instead of at its next look.
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut notes = daemon.subscribe();
    let (w, s) = (wake.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = s.cancelled() => return,
                n = notes.recv() => match n {
                    Ok(grove_coordinator::journal::Journaled { note: grove_coordinator::Note::Dispatched { .. }, .. }) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => w.notify_one(),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    tokio::spawn(launcher.run(wake, stop));
    let pools: Vec<String> =
        settings.pools.iter().map(|p| format!("{} (at most {})", p.name, p.max_pods)).collect();
    eprintln!(
        "grove coordinator: launching worker pods in kubernetes/{namespace} for {}, image {}",
        pools.join(", "),
        settings.image
    );
    Ok(Some(settings))
}
