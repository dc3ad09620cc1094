//! The launcher's configuration, in layers: defaults, then the `[kube]` table of `grove.toml`,
//! then `GROVE_KUBE_*` environment variables, then flags; [`Layers::validate`] turns the result
//! into [`Settings`], refusing anything a Job could not be made from.
//!
//! ```toml
//! [kube]
//! enabled = true
//! namespace = "grove"
//! image = "ghcr.io/example/grove-worker:0.1.0"
//! max_pods = 10                       # the default of every pool
//! resources = { requests = { cpu = "1", memory = "2Gi" }, limits = { memory = "4Gi" } }
//! workspace_size = "20Gi"
//! agent_secrets = ["grove-agent-keys"] # envFrom secretRef: the agents' API keys
//!
//! [kube.pools.cloud]                  # one table per Kubernetes-backed pool
//! max_pods = 20
//! resources = { requests = { cpu = "4", memory = "8Gi" }, limits = { memory = "16Gi" } }
//! node_selector = { "grove.dev/agents" = "true" }
//! tolerations = [{ key = "agents", operator = "Equal", value = "true", effect = "NoSchedule" }]
//! priority_class = "grove-agents"
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use grove_core::spec::parse_duration;
use serde::Deserialize;

/// The launcher's configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML, or has a field grove does not know.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A value is out of range or malformed; `field` names it as the file spells it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// The file: only its `[kube]` table is the launcher's (other tables belong to others).
#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    kube: Option<KubeFile>,
}

/// `[kube]` as written: every field optional, so layers can be stacked.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeFile {
    /// Run the launcher in the coordinator.
    pub enabled: Option<bool>,
    /// The namespace Jobs are made in (default: the service account's in a cluster, else the
    /// kubeconfig context's).
    pub namespace: Option<String>,
    /// Tells this coordinator's Jobs from another's in the same namespace
    /// (`app.kubernetes.io/instance`; default `grove`).
    pub instance: Option<String>,
    /// The worker image.
    pub image: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: Option<String>,
    /// Secrets holding registry credentials for the image.
    pub image_pull_secrets: Option<Vec<String>>,
    /// The pods' service account (they get no API token either way).
    pub service_account: Option<String>,
    /// The NATS URL as pods reach it (default: the coordinator's own `--nats`).
    pub nats_url: Option<String>,
    /// A Secret key holding the NATS token, given to the worker as `GROVE_NATS_TOKEN`.
    pub nats_token_secret: Option<SecretKey>,
    /// The coordinator's git endpoint as pods reach it (default: the coordinator's
    /// `--git-url`). Pods clone from it and push their checkpoints to it.
    pub git_url: Option<String>,
    /// Secrets whose keys become the worker's environment (`envFrom`): the agents' API keys.
    pub agent_secrets: Option<Vec<String>>,
    /// A pod's worker exits after this long with nothing to do (default 60s).
    pub idle_exit: Option<String>,
    /// Finished Jobs are removed by Kubernetes after this long (default 1h); the launcher
    /// removes the ones it has seen finish sooner.
    pub ttl_after_finished: Option<String>,
    /// SIGTERM to SIGKILL (default 5m): the worker commits and pushes what the agent wrote and
    /// hands the task back in this time.
    pub termination_grace: Option<String>,
    /// A pod's deadline when no queued task has one (default 12h).
    pub max_lifetime: Option<String>,
    /// The wait after a pod failed before the next is made (default 10s), doubling up to
    /// `max_backoff` (default 5m) while pods keep failing.
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    /// How long the git token in the pods' Secret is valid (default 2h); the coordinator
    /// writes a new one when half of that is gone.
    pub token_ttl: Option<String>,
    /// How often the launcher looks at its pools when nothing happens (default 5s).
    pub resync: Option<String>,
    /// Defaults of every pool.
    #[serde(flatten)]
    pub pod: PodFile,
    /// The Kubernetes-backed pools (default: `cloud` alone).
    pub pools: Option<BTreeMap<String, PodFile>>,
}

/// What a pool's pods look like; a pool's own table overrides the `[kube]` defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodFile {
    /// Pods of this pool at most (default 10).
    pub max_pods: Option<u32>,
    /// `requests` and `limits`, by resource name (`cpu`, `memory`, `ephemeral-storage`, or an
    /// extended resource such as `nvidia.com/gpu`).
    pub resources: Option<ResourcesFile>,
    /// The size limit of the workspace volume (an emptyDir; default 20Gi).
    pub workspace_size: Option<String>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    pub priority_class: Option<String>,
    /// A RuntimeClass (gVisor, Kata) for stronger isolation.
    pub runtime_class: Option<String>,
    /// Extra annotations on the pods.
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResourcesFile {
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

/// A key of a Secret.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    pub name: String,
    pub key: String,
}

/// A toleration, as in a pod spec.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    pub operator: Option<String>,
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; absent: all.
    pub effect: Option<String>,
    pub toleration_seconds: Option<i64>,
}

/// What flags and environment variables may set; applied over the file, flags last.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub enabled: Option<bool>,
    pub namespace: Option<String>,
    pub image: Option<String>,
    /// Every pool's maximum.
    pub max_pods: Option<u32>,
    pub nats_url: Option<String>,
    pub git_url: Option<String>,
}

impl Overrides {
    /// `GROVE_KUBE`, `GROVE_KUBE_NAMESPACE`, `GROVE_KUBE_IMAGE`, `GROVE_KUBE_MAX_PODS` from
    /// `get` (the process environment in the binary, a map in tests).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Overrides, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let enabled = match get("GROVE_KUBE").as_deref() {
            None => None,
            Some("1" | "true" | "yes" | "on") => Some(true),
            Some("0" | "false" | "no" | "off") => Some(false),
            Some(v) => return Err(invalid("GROVE_KUBE", format!("{v:?} is not a boolean (true or false)"))),
        };
        let max_pods = match get("GROVE_KUBE_MAX_PODS") {
            None => None,
            Some(v) => Some(
                v.parse().map_err(|_| invalid("GROVE_KUBE_MAX_PODS", format!("{v:?} is not a number")))?,
            ),
        };
        Ok(Overrides {
            enabled,
            namespace: get("GROVE_KUBE_NAMESPACE"),
            image: get("GROVE_KUBE_IMAGE"),
            max_pods,
            nats_url: None,
            git_url: None,
        })
    }

    /// `other` over `self`: what `other` sets wins.
    pub fn then(self, other: Overrides) -> Overrides {
        Overrides {
            enabled: other.enabled.or(self.enabled),
            namespace: other.namespace.or(self.namespace),
            image: other.image.or(self.image),
            max_pods: other.max_pods.or(self.max_pods),
            nats_url: other.nats_url.or(self.nats_url),
            git_url: other.git_url.or(self.git_url),
        }
    }
}

/// The layers before validation.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    pub file: KubeFile,
    pub overrides: Overrides,
}

impl Layers {
    /// Read the `[kube]` table of the TOML file at `path`; a file without one is an empty layer.
    pub fn read_file(path: &Path) -> Result<KubeFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The `[kube]` table of `text` (named `name` in errors).
    pub fn parse(text: &str, name: &str) -> Result<KubeFile, ConfigError> {
        let file: File = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: name.to_owned(), message: e.to_string() })?;
        Ok(file.kube.unwrap_or_default())
    }

    /// Whether the launcher runs at all.
    pub fn enabled(&self) -> bool {
        self.overrides.enabled.or(self.file.enabled).unwrap_or(false)
    }

    /// Check everything and fill in the defaults.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let f = &self.file;
        let o = &self.overrides;
        let image = o.image.clone().or_else(|| f.image.clone()).ok_or_else(|| {
            invalid(
                "kube.image",
                "the worker image is required (kube.image, GROVE_KUBE_IMAGE or --kube-image)",
            )
        })?;
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            return Err(invalid("kube.image", format!("{image:?} is not an image reference")));
        }
        let namespace = o.namespace.clone().or_else(|| f.namespace.clone());
        if let Some(ns) = &namespace {
            dns_label("kube.namespace", ns)?;
        }
        let instance = f.instance.clone().unwrap_or_else(|| "grove".to_owned());
        dns_label("kube.instance", &instance)?;
        if instance.len() > 20 {
            return Err(invalid("kube.instance", format!("{instance:?} is longer than 20 characters")));
        }
        let pull_policy = f.image_pull_policy.clone().unwrap_or_else(|| "IfNotPresent".to_owned());
        if !["Always", "IfNotPresent", "Never"].contains(&pull_policy.as_str()) {
            return Err(invalid(
                "kube.image_pull_policy",
                format!("{pull_policy:?} is not Always, IfNotPresent or Never"),
            ));
        }
        let pull_secrets = f.image_pull_secrets.clone().unwrap_or_default();
        for s in &pull_secrets {
            dns_subdomain("kube.image_pull_secrets", s)?;
        }
        if let Some(sa) = &f.service_account {
            dns_subdomain("kube.service_account", sa)?;
        }
        let agent_secrets = f.agent_secrets.clone().unwrap_or_default();
        for s in &agent_secrets {
            dns_subdomain("kube.agent_secrets", s)?;
        }
        if let Some(s) = &f.nats_token_secret {
            dns_subdomain("kube.nats_token_secret.name", &s.name)?;
            if s.key.is_empty() {
                return Err(invalid("kube.nats_token_secret.key", "must not be empty"));
            }
        }
        let nats_url = o.nats_url.clone().or_else(|| f.nats_url.clone());
        let git_url = o.git_url.clone().or_else(|| f.git_url.clone()).ok_or_else(|| {
            invalid(
                "kube.git_url",
                "pods need the coordinator's git endpoint: set kube.git_url or the coordinator's --git-url",
            )
        })?;
        if !(git_url.starts_with("http://") || git_url.starts_with("https://")) {
            return Err(invalid("kube.git_url", format!("{git_url:?} is not an http:// or https:// URL")));
        }
        let dur = |field: &str, v: &Option<String>, default: Duration| -> Result<Duration, ConfigError> {
            let d = match v {
                None => default,
                Some(s) => parse_duration(s).map_err(|e| invalid(format!("kube.{field}"), e))?,
            };
            if d.is_zero() {
                return Err(invalid(format!("kube.{field}"), "must be longer than zero"));
            }
            Ok(d)
        };
        let termination_grace = dur("termination_grace", &f.termination_grace, Duration::from_secs(300))?;
        if termination_grace < Duration::from_secs(10) {
            return Err(invalid(
                "kube.termination_grace",
                "must be 10s or more: the worker needs time to push the agent's work and hand the task back",
            ));
        }
        let backoff = dur("backoff", &f.backoff, Duration::from_secs(10))?;
        let max_backoff = dur("max_backoff", &f.max_backoff, Duration::from_secs(300))?;
        if max_backoff < backoff {
            return Err(invalid("kube.max_backoff", "must not be shorter than kube.backoff"));
        }
        let token_ttl = dur("token_ttl", &f.token_ttl, Duration::from_secs(7200))?;
        if token_ttl < Duration::from_secs(60) {
            return Err(invalid("kube.token_ttl", "must be a minute or more"));
        }
        let defaults = &f.pod;
        let mut pools = Vec::new();
        let named: BTreeMap<String, PodFile> = match &f.pools {
            Some(p) if !p.is_empty() => p.clone(),
            _ => BTreeMap::from([(grove_core::placement::CLOUD.to_owned(), PodFile::default())]),
        };
        for (name, own) in &named {
            pools.push(pool(name, own, defaults, o)?);
        }
        Ok(Settings {
            namespace,
            instance,
            image,
            pull_policy,
            pull_secrets,
            service_account: f.service_account.clone(),
            nats_url,
            nats_token_secret: f.nats_token_secret.clone(),
            git_url: git_url.trim_end_matches('/').to_owned(),
            agent_secrets,
            idle_exit: dur("idle_exit", &f.idle_exit, Duration::from_secs(60))?,
            ttl_after_finished: dur("ttl_after_finished", &f.ttl_after_finished, Duration::from_secs(3600))?,
            termination_grace,
            max_lifetime: dur("max_lifetime", &f.max_lifetime, Duration::from_secs(12 * 3600))?,
            backoff,
            max_backoff,
            token_ttl,
            resync: dur("resync", &f.resync, Duration::from_secs(5))?,
            pools,
        })
    }
}

fn pool(name: &str, own: &PodFile, defaults: &PodFile, o: &Overrides) -> Result<PoolSettings, ConfigError> {
    let field = |f: &str| format!("kube.pools.{name}.{f}");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(invalid(format!("kube.pools.{name:?}"), "a pool name has letters, digits, - and _ only"));
    }
    if name == grove_core::placement::LOCAL || name == "auto" {
        return Err(invalid(
            format!("kube.pools.{name}"),
            format!("{name:?} is not a Kubernetes pool (local workers serve `local`; `auto` is a policy)"),
        ));
    }
    let max_pods = o.max_pods.or(own.max_pods).or(defaults.max_pods).unwrap_or(10);
    if max_pods == 0 || max_pods > 1000 {
        return Err(invalid(field("max_pods"), format!("{max_pods} is not between 1 and 1000")));
    }
    let resources =
        own.resources.clone().or_else(|| defaults.resources.clone()).unwrap_or_else(|| ResourcesFile {
            requests: BTreeMap::from([("cpu".into(), "1".into()), ("memory".into(), "2Gi".into())]),
            limits: BTreeMap::from([("memory".into(), "4Gi".into())]),
        });
    for (kind, map) in [("requests", &resources.requests), ("limits", &resources.limits)] {
        for (k, v) in map {
            resource_name(&field(&format!("resources.{kind}")), k)?;
            quantity(&field(&format!("resources.{kind}.{k}")), v)?;
        }
    }
    for (k, req) in &resources.requests {
        if let Some(lim) = resources.limits.get(k)
            && let (Some(r), Some(l)) = (quantity_value(req), quantity_value(lim))
            && r > l
        {
            return Err(invalid(
                field(&format!("resources.requests.{k}")),
                format!("{req} is more than its limit {lim}"),
            ));
        }
    }
    let workspace_size = own
        .workspace_size
        .clone()
        .or_else(|| defaults.workspace_size.clone())
        .unwrap_or_else(|| "20Gi".into());
    quantity(&field("workspace_size"), &workspace_size)?;
    let node_selector =
        own.node_selector.clone().or_else(|| defaults.node_selector.clone()).unwrap_or_default();
    for (k, v) in &node_selector {
        label_key(&field("node_selector"), k)?;
        label_value(&field(&format!("node_selector.{k}")), v)?;
    }
    let tolerations = own.tolerations.clone().or_else(|| defaults.tolerations.clone()).unwrap_or_default();
    for (i, t) in tolerations.iter().enumerate() {
        let f = field(&format!("tolerations[{i}]"));
        let op = t.operator.as_deref().unwrap_or("Equal");
        if !["Equal", "Exists"].contains(&op) {
            return Err(invalid(f, format!("operator {op:?} is not Equal or Exists")));
        }
        if op == "Exists" && t.value.is_some() {
            return Err(invalid(f, "operator Exists takes no value"));
        }
        if op == "Equal" && t.key.is_none() {
            return Err(invalid(f, "operator Equal needs a key"));
        }
        if let Some(e) = &t.effect
            && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e.as_str())
        {
            return Err(invalid(f, format!("effect {e:?} is not NoSchedule, PreferNoSchedule or NoExecute")));
        }
        if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
            return Err(invalid(f, "toleration_seconds needs effect NoExecute"));
        }
    }
    let priority_class = own.priority_class.clone().or_else(|| defaults.priority_class.clone());
    if let Some(p) = &priority_class {
        dns_subdomain(&field("priority_class"), p)?;
    }
    let runtime_class = own.runtime_class.clone().or_else(|| defaults.runtime_class.clone());
    if let Some(r) = &runtime_class {
        dns_subdomain(&field("runtime_class"), r)?;
    }
    let mut annotations = defaults.annotations.clone().unwrap_or_default();
    annotations.extend(own.annotations.clone().unwrap_or_default());
    for k in annotations.keys() {
        label_key(&field("annotations"), k)?;
    }
    Ok(PoolSettings {
        name: name.to_owned(),
        max_pods,
        resources,
        workspace_size,
        node_selector,
        tolerations,
        priority_class,
        runtime_class,
        annotations,
    })
}

/// The launcher's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub namespace: Option<String>,
    pub instance: String,
    pub image: String,
    pub pull_policy: String,
    pub pull_secrets: Vec<String>,
    pub service_account: Option<String>,
    /// `None`: the coordinator's own NATS URL (filled in by the binary).
    pub nats_url: Option<String>,
    pub nats_token_secret: Option<SecretKey>,
    /// Without a trailing slash; a mirror is `<git_url>/<mirror name>`.
    pub git_url: String,
    pub agent_secrets: Vec<String>,
    pub idle_exit: Duration,
    pub ttl_after_finished: Duration,
    pub termination_grace: Duration,
    pub max_lifetime: Duration,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub token_ttl: Duration,
    pub resync: Duration,
    pub pools: Vec<PoolSettings>,
}

impl Settings {
    pub fn pool(&self, name: &str) -> Option<&PoolSettings> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// One Kubernetes-backed pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub name: String,
    pub max_pods: u32,
    pub resources: ResourcesFile,
    pub workspace_size: String,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub priority_class: Option<String>,
    pub runtime_class: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// RFC 1123 label: what a namespace or a Job name is made of.
fn dns_label(field: &str, s: &str) -> Result<(), ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("{s:?} is not a DNS label (a-z, 0-9 and -, 63 at most)")))
    }
}

/// RFC 1123 subdomain: what most object names are made of.
fn dns_subdomain(field: &str, s: &str) -> Result<(), ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        });
    if ok { Ok(()) } else { Err(invalid(field, format!("{s:?} is not a Kubernetes object name"))) }
}

/// `prefix/name` or `name`, as label and annotation keys are.
fn label_key(field: &str, k: &str) -> Result<(), ConfigError> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        dns_subdomain(field, p).map_err(|_| invalid(field, format!("{k:?}: {p:?} is not a DNS prefix")))?;
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(invalid(field, format!("{k:?} is not a label key"))) }
}

fn label_value(field: &str, v: &str) -> Result<(), ConfigError> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok { Ok(()) } else { Err(invalid(field, format!("{v:?} is not a label value"))) }
}

fn resource_name(field: &str, k: &str) -> Result<(), ConfigError> {
    if ["cpu", "memory", "ephemeral-storage"].contains(&k) || (k.contains('/') && label_key(field, k).is_ok())
    {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{k:?} is not a resource (cpu, memory, ephemeral-storage, or vendor/name)"),
        ))
    }
}

const SUFFIXES: [(&str, f64); 14] = [
    ("Ki", 1024.0),
    ("Mi", 1048576.0),
    ("Gi", 1073741824.0),
    ("Ti", 1099511627776.0),
    ("Pi", 1125899906842624.0),
    ("Ei", 1152921504606846976.0),
    ("m", 0.001),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
    ("", 1.0),
];

/// A Kubernetes quantity's value (`500m`, `2Gi`, `1.5`), or `None` when it is not one.
pub fn quantity_value(q: &str) -> Option<f64> {
    let (num, mult) = SUFFIXES.iter().find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))?;
    let ok = !num.is_empty()
        && num.chars().all(|c| c.is_ascii_digit() || c == '.')
        && num.chars().filter(|c| *c == '.').count() <= 1
        && !num.starts_with('.')
        && !num.ends_with('.');
    if !ok {
        return None;
    }
    num.parse::<f64>().ok().map(|n| n * mult)
}

fn quantity(field: &str, q: &str) -> Result<(), ConfigError> {
    match quantity_value(q) {
        Some(v) if v > 0.0 => Ok(()),
        _ => Err(invalid(field, format!("{q:?} is not a quantity (examples: 500m, 2, 4Gi)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(toml: &str) -> Layers {
        Layers { file: Layers::parse(toml, "grove.toml").expect("parses"), overrides: Overrides::default() }
    }

    const BASE: &str = "[kube]\nimage = \"grove-worker:1\"\ngit_url = \"http://grove:7070/git/\"\n";

    #[test]
    fn defaults_fill_a_minimal_file() {
        let s = layers(BASE).validate().expect("valid");
        assert_eq!(s.instance, "grove");
        assert_eq!(s.git_url, "http://grove:7070/git", "no trailing slash");
        assert_eq!(s.pools.len(), 1);
        let p = &s.pools[0];
        assert_eq!((p.name.as_str(), p.max_pods, p.workspace_size.as_str()), ("cloud", 10, "20Gi"));
        assert_eq!(p.resources.requests["memory"], "2Gi");
        assert_eq!(s.idle_exit, Duration::from_secs(60));
        assert_eq!(s.termination_grace, Duration::from_secs(300));
        assert!(!layers(BASE).enabled(), "off unless asked for");
    }

    #[test]
    fn pools_inherit_the_defaults_and_override_them() {
        let s = layers(&format!(
            "{BASE}max_pods = 3\npriority_class = \"agents\"\nnode_selector = {{ \"a\" = \"b\" }}\n\
             [kube.pools.cloud]\nmax_pods = 7\n[kube.pools.big]\nresources = {{ requests = {{ cpu = \"8\" }} }}\n"
        ))
        .validate()
        .expect("valid");
        let cloud = s.pool("cloud").expect("cloud");
        let big = s.pool("big").expect("big");
        assert_eq!((cloud.max_pods, big.max_pods), (7, 3));
        assert_eq!(big.resources.requests["cpu"], "8");
        assert_eq!(big.priority_class.as_deref(), Some("agents"));
        assert_eq!(cloud.node_selector["a"], "b");
    }

    #[test]
    fn flags_beat_env_beats_the_file() {
        let mut l = layers(&format!("{BASE}namespace = \"from-file\"\nenabled = false\n"));
        let env = Overrides::from_env(|k| match k {
            "GROVE_KUBE" => Some("true".into()),
            "GROVE_KUBE_NAMESPACE" => Some("from-env".into()),
            "GROVE_KUBE_MAX_PODS" => Some("4".into()),
            _ => None,
        })
        .expect("env");
        let flags = Overrides { namespace: Some("from-flag".into()), ..Default::default() };
        l.overrides = env.then(flags);
        assert!(l.enabled());
        let s = l.validate().expect("valid");
        assert_eq!(s.namespace.as_deref(), Some("from-flag"));
        assert_eq!(s.pools[0].max_pods, 4);
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let cases: &[(&str, &str)] = &[
            ("[kube]\ngit_url = \"http://g\"\n", "kube.image"),
            ("[kube]\nimage = \"w:1\"\n", "kube.git_url"),
            (&format!("{BASE}namespace = \"Grove\"\n"), "kube.namespace"),
            (&format!("{BASE}image_pull_policy = \"Sometimes\"\n"), "kube.image_pull_policy"),
            (&format!("{BASE}idle_exit = \"soon\"\n"), "kube.idle_exit"),
            (&format!("{BASE}termination_grace = \"1s\"\n"), "kube.termination_grace"),
            (&format!("{BASE}[kube.pools.cloud]\nmax_pods = 0\n"), "kube.pools.cloud.max_pods"),
            (&format!("{BASE}[kube.pools.local]\n"), "kube.pools.local"),
            (
                &format!("{BASE}[kube.pools.cloud]\nworkspace_size = \"lots\"\n"),
                "kube.pools.cloud.workspace_size",
            ),
            (
                &format!("{BASE}[kube.pools.cloud]\nresources = {{ requests = {{ gpu = \"1\" }} }}\n"),
                "kube.pools.cloud.resources.requests",
            ),
            (
                &format!(
                    "{BASE}[kube.pools.cloud]\nresources = {{ requests = {{ memory = \"8Gi\" }}, limits = {{ memory = \"4Gi\" }} }}\n"
                ),
                "kube.pools.cloud.resources.requests.memory",
            ),
            (
                &format!(
                    "{BASE}[kube.pools.cloud]\ntolerations = [{{ key = \"a\", operator = \"Maybe\" }}]\n"
                ),
                "kube.pools.cloud.tolerations[0]",
            ),
            (
                &format!("{BASE}[kube.pools.cloud]\nnode_selector = {{ \"a b\" = \"c\" }}\n"),
                "kube.pools.cloud.node_selector",
            ),
        ];
        for (text, field) in cases {
            match layers(text).validate() {
                Err(ConfigError::Invalid { field: f, message }) => assert_eq!(f, *field, "{text}: {message}"),
                other => panic!("{text}: expected an error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = Layers::parse(&format!("{BASE}imag = \"typo\"\n"), "grove.toml").expect_err("typo");
        assert!(e.to_string().contains("imag"), "{e}");
        let e = Layers::parse(&format!("{BASE}[kube.pools.cloud]\nmaxpods = 1\n"), "grove.toml")
            .expect_err("typo");
        assert!(e.to_string().contains("maxpods"), "{e}");
        assert!(Layers::parse("[other]\nx = 1\n", "grove.toml").is_ok(), "other tables are someone else's");
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_value("500m"), Some(0.5));
        assert_eq!(quantity_value("2Gi"), Some(2.0 * 1073741824.0));
        assert_eq!(quantity_value("1.5"), Some(1.5));
        for bad in ["", "Gi", "1.2.3", "-1", "2 Gi", ".5"] {
            assert_eq!(quantity_value(bad), None, "{bad}");
        }
    }
}
