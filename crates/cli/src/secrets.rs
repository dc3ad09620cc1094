//! The secrets this process knows: the agents' credentials its workers pass (in layers:
//! `grove.toml` in the grove home, then `GROVE_AGENT_ENV`, then the flags), and grove's own
//! tokens, which are masked in logs wherever a worker or the train writes them and never
//! reach an agent or a check.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use grove_worker::secrets::{CredentialSources, Credentials, Secrets};

/// Credentials for the agents this process's workers run. They never travel with a job: each
/// worker reads them from its own environment or files.
#[derive(Args, Debug, Clone, Default)]
pub struct AgentEnvArgs {
    /// Pass this variable of this process's environment to every agent (repeatable): an
    /// agent's credential, masked in logs. The builtin adapters' own (ANTHROPIC_API_KEY for
    /// claude, OPENAI_API_KEY for codex, ...) pass to their agents without it
    /// [env: GROVE_AGENT_ENV, comma-separated; grove.toml: credentials.env]
    #[arg(
        long = "agent-env",
        value_name = "NAME",
        env = "GROVE_AGENT_ENV",
        value_delimiter = ',',
        help_heading = "Credentials"
    )]
    pub agent_env: Vec<String>,
    /// Set NAME for every agent to the contents of the file PATH (repeatable): a credential,
    /// masked in logs [grove.toml: credentials.files]
    #[arg(long = "agent-env-file", value_name = "NAME=PATH", value_parser = name_and_path, help_heading = "Credentials")]
    pub agent_env_file: Vec<(String, PathBuf)>,
}

fn name_and_path(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_owned(), path.into())),
        _ => Err(format!("{s:?} is not NAME=PATH")),
    }
}

impl AgentEnvArgs {
    /// The flags again, for a child process (`grove up`'s workers).
    pub fn args(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        for name in &self.agent_env {
            out.push("--agent-env".into());
            out.push(name.into());
        }
        for (name, path) in &self.agent_env_file {
            out.push("--agent-env-file".into());
            let mut v = OsString::from(format!("{name}="));
            v.push(path);
            out.push(v);
        }
        out
    }
}

/// The file of settings in the grove home.
pub const CONFIG_FILE: &str = "grove.toml";

/// `grove.toml` in the grove home: settings of this machine's grove (not of a job).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    credentials: CredentialsConfig,
    /// Read by the launcher (`[kube]`) and `grove pr` (`[forge]`), not here.
    #[serde(default, rename = "kube")]
    _kube: Option<toml::Value>,
    #[serde(default, rename = "forge")]
    _forge: Option<toml::Value>,
}

/// `[credentials]`: what workers of this machine pass to agents.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsConfig {
    /// Variables of the worker's environment.
    #[serde(default)]
    env: Vec<String>,
    /// NAME = PATH: variables set from files (a relative PATH is relative to the grove home).
    #[serde(default)]
    files: BTreeMap<String, PathBuf>,
}

/// Where this worker's credentials come from: `grove.toml`, then the environment and flags
/// (a name given again later is taken from the later layer).
fn sources(home: &Path, args: &AgentEnvArgs) -> anyhow::Result<CredentialSources> {
    let path = home.join(CONFIG_FILE);
    let config = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str::<Config>(&text).with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut env: Vec<String> = Vec::new();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let add_env = |name: &String, env: &mut Vec<String>, files: &mut Vec<(String, PathBuf)>| {
        files.retain(|(n, _)| n != name);
        if !env.contains(name) {
            env.push(name.clone());
        }
    };
    for name in &config.credentials.env {
        add_env(name, &mut env, &mut files);
    }
    for (name, p) in &config.credentials.files {
        env.retain(|n| n != name);
        files.retain(|(n, _)| n != name);
        files.push((name.clone(), home.join(p)));
    }
    for name in args.agent_env.iter().filter(|n| !n.is_empty()) {
        add_env(name, &mut env, &mut files);
    }
    for (name, p) in &args.agent_env_file {
        env.retain(|n| n != name);
        files.retain(|(n, _)| n != name);
        files.push((name.clone(), p.clone()));
    }
    Ok(CredentialSources { env, files })
}

/// The agents' credentials of a worker run from this process, with grove's `tokens` to mask.
pub fn worker_secrets(home: &Path, args: &AgentEnvArgs, tokens: Vec<String>) -> anyhow::Result<Secrets> {
    let sources = sources(home, args)?;
    let credentials = Credentials::load(&sources, |n| std::env::var(n).ok())?;
    Ok(Secrets::new(credentials, tokens))
}

/// The values of grove's own secrets this process knows: the API and NATS tokens from the
/// environment, `extra` (tokens read from files), and the secret lines of a NATS credentials
/// file.
pub fn grove_tokens(nats: Option<&grove_bus::nats::NatsConfig>, extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> =
        ["GROVE_TOKEN", "GROVE_NATS_TOKEN", "NATS_TOKEN", "NATS_PASSWORD", "NATS_NKEY"]
            .into_iter()
            .filter_map(|n| std::env::var(n).ok())
            .chain(extra.iter().cloned())
            .collect();
    if let Some(c) = nats {
        out.extend(c.token.clone());
        if let Some(creds) = &c.credentials
            && let Ok(text) = std::fs::read_to_string(creds)
        {
            out.extend(creds_secrets(&text));
        }
    }
    out.retain(|t| !t.trim().is_empty());
    out
}

/// The JWT and the seed of a NATS `.creds` file: the lines between its BEGIN and END markers.
fn creds_secrets(text: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("---") && line.contains("BEGIN") {
            inside = true;
        } else if line.starts_with("---") && line.contains("END") {
            inside = false;
        } else if inside && !line.is_empty() {
            out.push(line.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_config_then_flags() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::write(
            d.path().join(CONFIG_FILE),
            "[credentials]\nenv = [\"A\", \"B\"]\nfiles = { C = \"c.key\", B = \"b.key\" }\n",
        )
        .expect("write");
        let args = AgentEnvArgs {
            agent_env: vec!["C".into(), "D".into()],
            agent_env_file: vec![("A".into(), "/run/a".into())],
        };
        let s = sources(d.path(), &args).expect("sources");
        assert_eq!(s.env, ["C", "D"]);
        assert_eq!(s.files, [("B".to_owned(), d.path().join("b.key")), ("A".to_owned(), "/run/a".into())]);
        std::fs::write(d.path().join(CONFIG_FILE), "[credential]\n").expect("write");
        let e = format!("{:#}", sources(d.path(), &AgentEnvArgs::default()).unwrap_err());
        assert!(e.contains("unknown field") && e.contains("credential"), "{e}");
    }

    #[test]
    fn a_creds_file_s_jwt_and_seed_are_secrets() {
        let text = "-----BEGIN NATS USER JWT-----\neyJhbGciOi.jwt\n------END NATS USER JWT------\n\n\
                    ****** IMPORTANT ******\nNKEYs are sensitive.\n\n-----BEGIN USER NKEY SEED-----\n\
                    SUAMSEED\n------END USER NKEY SEED------\n";
        assert_eq!(creds_secrets(text), ["eyJhbGciOi.jwt", "SUAMSEED"]);
    }
}
