//! The embedded mode: a coordinator and N workers in this process, joined by the in-process
//! bus, state in SQLite under the grove home. The same coordinator and worker code runs as
//! daemons over NATS.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use grove_bus::{Bus, InProcessBus};
use grove_coordinator::Coordinator;
use grove_core::layout::Layout;
use grove_git::Git;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The grove home: `--home`, else GROVE_HOME, else `$XDG_DATA_HOME/grove`, else
/// `~/.local/share/grove`.
pub fn home(flag: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(h) = flag {
        return Ok(h.clone());
    }
    if let Some(h) = std::env::var_os("GROVE_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(x).join("grove"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context("no HOME; set GROVE_HOME")?;
    Ok(PathBuf::from(home).join(".local/share/grove"))
}

/// An embedded coordinator, its bus, and git.
pub struct Embedded {
    pub coordinator: Arc<Coordinator>,
    pub bus: Arc<dyn Bus>,
    pub git: Git,
    pub layout: Layout,
    /// What this process's workers pass to agents and mask; set with [`Embedded::credentials`].
    pub secrets: grove_worker::secrets::Secrets,
    /// grove's own tokens this process knows, masked.
    tokens: Vec<String>,
    /// The home's lock, shared with other local commands; `None` for the daemon's own.
    _home: Option<grove_coordinator::home::HomeLock>,
    /// This process's notifier, started by the first job it drives.
    notifier: std::sync::OnceLock<Arc<grove_coordinator::notify::Notifier>>,
}

impl Embedded {
    /// Open the state under `home` with the in-process bus, or with NATS when `nats` is given
    /// (then workers elsewhere can take the tasks), for a local command that changes jobs:
    /// refused while a coordinator daemon serves the home (go through it with --coordinator).
    pub async fn open(home: PathBuf, nats: Option<grove_bus::nats::NatsConfig>) -> anyhow::Result<Embedded> {
        Embedded::open_with(home, nats, None, &[]).await
    }

    /// [`Embedded::open`], with the git endpoint's URL as workers elsewhere reach it, masking
    /// `tokens` (grove's own, read from files) besides those of the environment and the NATS
    /// config.
    pub async fn open_with(
        home: PathBuf,
        nats: Option<grove_bus::nats::NatsConfig>,
        git_url: Option<String>,
        tokens: &[String],
    ) -> anyhow::Result<Embedded> {
        let lock = tokio::task::block_in_place(|| {
            grove_coordinator::home::HomeLock::share(&Layout::new(&home), true)
        })?;
        let mut emb = Self::unlocked(home, nats, git_url, tokens).await?;
        emb._home = Some(lock);
        Ok(emb)
    }

    /// [`Embedded::open_with`] without the home's lock: for the coordinator daemon, which
    /// holds it alone, and for verbs that change no job (`grove push`).
    pub async fn unlocked(
        home: PathBuf,
        nats: Option<grove_bus::nats::NatsConfig>,
        git_url: Option<String>,
        tokens: &[String],
    ) -> anyhow::Result<Embedded> {
        let tokens = crate::secrets::grove_tokens(nats.as_ref(), tokens);
        let git = Git::detect()?;
        let layout = Layout::new(home);
        let single_pool = nats.is_none().then(|| grove_core::placement::LOCAL.to_owned());
        let bus: Arc<dyn Bus> = match nats {
            Some(config) => Arc::new(grove_bus::nats::NatsBus::connect(config, "grove-coordinator").await?),
            None => Arc::new(InProcessBus::new()),
        };
        let mut coordinator = Coordinator::new(layout.clone(), bus.clone(), git.clone())
            .with_context(|| format!("opening grove's state in {}", layout.home().display()))?;
        coordinator.single_pool = single_pool;
        coordinator.mask = grove_worker::secrets::Mask::new(tokens.iter().cloned());
        coordinator.git_url = git_url;
        let coordinator = Arc::new(coordinator);
        let secrets = grove_worker::secrets::Secrets::new(Default::default(), tokens.iter().cloned());
        Ok(Embedded {
            coordinator,
            bus,
            git,
            layout,
            secrets,
            tokens,
            _home: None,
            notifier: Default::default(),
        })
    }

    /// The notifier of the jobs this process drives: one per process (a canary and the rest
    /// share it), started on first use with what an earlier run left unsent. Call from within
    /// the runtime.
    pub fn notifier(&self) -> Arc<grove_coordinator::notify::Notifier> {
        self.notifier
            .get_or_init(|| {
                let n = grove_coordinator::notify::Notifier::start(self.coordinator.clone());
                n.resume();
                n
            })
            .clone()
    }

    /// Give this process's workers the agents' credentials `args` and `grove.toml` name
    /// (and the adapters' own from this environment).
    pub fn credentials(&mut self, args: &crate::secrets::AgentEnvArgs) -> anyhow::Result<()> {
        self.secrets = crate::secrets::worker_secrets(self.layout.home(), args, self.tokens.clone())?;
        Ok(())
    }

    /// Start `n` workers on the `local` pool; they stop when `stop` fires.
    pub fn start_workers(&self, n: usize, stop: &CancellationToken) -> JoinSet<()> {
        let mut set = JoinSet::new();
        // One process, one set of open mirrors for all its workers.
        let repos = Arc::new(grove_git::OpenRepos::default());
        for i in 1..=n {
            let ctx = Arc::new(grove_worker::WorkerContext {
                id: format!("embedded-{i}"),
                bus: self.bus.clone(),
                git: self.git.clone(),
                layout: self.layout.clone(),
                pools: vec!["local".into()],
                capacity: 1,
                workspace: grove_worker::workspace::Mode::Auto,
                heartbeat: std::time::Duration::from_secs(10),
                hand_back: CancellationToken::new(),
                announce_every: std::time::Duration::from_secs(10),
                // One run on the person's machine: they watch their own disk.
                disk: grove_worker::disk::Budget::none(),
                secrets: self.secrets.clone(),
                idle_exit: None,
                agent_home: grove_worker::agent_home_vars(|k| std::env::var(k).ok()),
                repos: repos.clone(),
            });
            set.spawn(grove_worker::run(ctx, stop.clone(), stop.clone()));
        }
        set
    }
}
