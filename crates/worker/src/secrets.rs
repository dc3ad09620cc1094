//! Secrets around the processes a worker runs: the agent's credentials (read from the
//! worker's environment or from files the worker was told of, never from the job), the clean
//! environment agents and checks get ([`environment`]), and masking: the values of every
//! credential and of grove's own tokens are replaced by [`MASK`] wherever grove writes what a
//! process printed (the task log, hence its chunks on the bus and `grove logs`, the tail in
//! failure reasons).
//!
//! Which names are inherited, forbidden or an adapter's credentials is
//! [`grove_core::env`]'s to say.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use grove_core::env as policy;

/// What a secret's value is replaced with.
pub const MASK: &str = "***";

/// Values shorter than this are not masked: no real secret is that short, and masking `x`
/// everywhere would garble every log.
pub const MIN_MASKED: usize = 6;

/// A credential could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A credential was named that is one of grove's own secrets.
    #[error("{name} is one of grove's own secrets; it is never passed to agents")]
    Forbidden { name: String },
    /// A credential to pass from the environment is not set there.
    #[error("{name} is to be passed to agents (--agent-env), but it is not set in this environment")]
    NotSet { name: String },
    /// A credential's name is not a variable name.
    #[error("{name:?} is not a variable name (letters, digits and _, not starting with a digit)")]
    BadName { name: String },
    /// A credential file could not be read.
    #[error("reading {name}'s file {path}: {source}")]
    File {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a worker's agent credentials come from, as its flags and config say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSources {
    /// Variables of the worker's environment to pass to every agent (`--agent-env NAME`).
    pub env: Vec<String>,
    /// Variables to set for every agent from a file's contents (`--agent-env-file NAME=PATH`;
    /// one trailing newline is dropped).
    pub files: Vec<(String, PathBuf)>,
}

/// The agents' credentials a worker holds: those it was told to pass to every agent, and the
/// builtin adapters' own ([`policy::adapter_credentials`]) that its environment has.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    values: BTreeMap<String, String>,
    /// The names passed to every agent; the others go to their adapter's agents only.
    listed: BTreeSet<String>,
}

impl Credentials {
    /// Read the credentials `sources` name, and the adapters' default ones, from `lookup` (the
    /// worker's environment) and the files. A listed name that is one of grove's secrets, or
    /// that is not set, is an error.
    pub fn load(
        sources: &CredentialSources,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Credentials, SecretsError> {
        let mut c = Credentials::default();
        let check = |name: &str| {
            if name.is_empty()
                || name.starts_with(|ch: char| ch.is_ascii_digit())
                || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            {
                return Err(SecretsError::BadName { name: name.to_owned() });
            }
            if policy::forbidden(name) {
                return Err(SecretsError::Forbidden { name: name.to_owned() });
            }
            Ok(())
        };
        for name in &sources.env {
            check(name)?;
            let value = lookup(name).ok_or_else(|| SecretsError::NotSet { name: name.clone() })?;
            c.values.insert(name.clone(), value);
            c.listed.insert(name.clone());
        }
        for (name, path) in &sources.files {
            check(name)?;
            let text = std::fs::read_to_string(path).map_err(|source| SecretsError::File {
                name: name.clone(),
                path: path.display().to_string(),
                source,
            })?;
            let value = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
            c.values.insert(name.clone(), value.to_owned());
            c.listed.insert(name.clone());
        }
        for name in policy::known_credentials() {
            if !c.values.contains_key(name)
                && let Some(v) = lookup(name).filter(|v| !v.is_empty())
            {
                c.values.insert(name.to_owned(), v);
            }
        }
        Ok(c)
    }

    /// The credentials of this worker's environment alone (the adapters' default names).
    pub fn from_env() -> Credentials {
        Credentials::load(&CredentialSources::default(), |n| std::env::var(n).ok()).unwrap_or_default()
    }

    /// Set one credential, passed to every agent (for tests and embedders).
    pub fn insert(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_owned(), value.to_owned());
        self.listed.insert(name.to_owned());
    }

    /// What an agent of `adapter` (an `agent.kind` name: `claude`, `codex`, `command`, ...)
    /// gets: every listed credential, and those of the adapter's own names this worker has.
    pub fn for_agent(&self, adapter: &str) -> Vec<(String, String)> {
        let own = policy::adapter_credentials(adapter);
        self.values
            .iter()
            .filter(|(k, _)| self.listed.contains(*k) || own.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The names held, for the worker to say what it passes (never the values).
    pub fn names(&self) -> Vec<&str> {
        self.values.keys().map(String::as_str).collect()
    }

    fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str)
    }
}

/// A worker's secrets: the agents' credentials, and what to mask (those, and grove's tokens).
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    credentials: Arc<Credentials>,
    mask: Mask,
}

impl Secrets {
    /// `grove_tokens`: the values of grove's own secrets this process knows (API token, NATS
    /// token, NATS credentials), masked like the credentials.
    pub fn new(credentials: Credentials, grove_tokens: impl IntoIterator<Item = String>) -> Secrets {
        let mask = Mask::new(credentials.values().map(str::to_owned).chain(grove_tokens));
        Secrets { credentials: Arc::new(credentials), mask }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn mask(&self) -> &Mask {
        &self.mask
    }
}

/// The environment of an agent or check: the [`policy::inherited`] variables of this
/// process's environment, then `given` (what the job and the adapter set, and an agent's
/// credentials) without any of grove's own secrets ([`policy::forbidden`]), whoever gave them.
pub fn environment(given: &[(String, String)]) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> =
        std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(policy::inherited)).collect();
    for (k, v) in given {
        if policy::forbidden(k) {
            tracing::warn!(variable = %k, "one of grove's own secrets is never passed to a process");
            continue;
        }
        env.insert(k.into(), v.into());
    }
    env.into_iter().collect()
}

/// Secret values to mask. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mask {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Arc<Vec<Vec<u8>>>,
    /// The first bytes of the secrets, to skip most positions at once.
    first: Arc<[bool; 256]>,
}

impl Default for Mask {
    fn default() -> Mask {
        Mask::new(std::iter::empty())
    }
}

impl Mask {
    pub fn new(values: impl IntoIterator<Item = String>) -> Mask {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .map(|v| v.trim().as_bytes().to_vec())
            .filter(|v| v.len() >= MIN_MASKED)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        let mut first = [false; 256];
        for s in &secrets {
            first[usize::from(s[0])] = true;
        }
        Mask { secrets: Arc::new(secrets), first: Arc::new(first) }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret in it masked.
    pub fn text(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        let mut s = self.stream();
        let mut out = s.push(text.as_bytes());
        out.extend(s.finish());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A masker for output that comes in pieces: a secret split across two pieces is masked.
    pub fn stream(&self) -> MaskStream {
        MaskStream { mask: self.clone(), held: Vec::new() }
    }
}

/// Masks a stream of output pieces. It holds back the end of a piece while that could be
/// the start of a secret, until the next piece (or [`MaskStream::finish`]) decides.
#[derive(Debug, Clone, Default)]
pub struct MaskStream {
    mask: Mask,
    held: Vec<u8>,
}

impl MaskStream {
    /// The masked output that is ready, given the next piece.
    pub fn push(&mut self, piece: &[u8]) -> Vec<u8> {
        if self.mask.is_empty() {
            return piece.to_vec();
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(piece);
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'scan: while i < buf.len() {
            if self.mask.first[usize::from(buf[i])] {
                let rest = &buf[i..];
                for s in self.mask.secrets.iter() {
                    if rest.starts_with(s) {
                        out.extend_from_slice(MASK.as_bytes());
                        i += s.len();
                        continue 'scan;
                    }
                }
                if self.mask.secrets.iter().any(|s| s.len() > rest.len() && s.starts_with(rest)) {
                    // Perhaps a secret the next piece completes.
                    self.held = rest.to_vec();
                    return out;
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        out
    }

    /// What is held back, at the end of the output (it was no secret after all).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask() -> Mask {
        Mask::new(["sk-ant-secret-1".to_owned(), "nats-token-42".to_owned(), "x".to_owned()])
    }

    #[test]
    fn secrets_are_masked_whole_and_short_values_not_at_all() {
        let m = mask();
        assert_eq!(m.text("key=sk-ant-secret-1 and nats-token-42."), "key=*** and ***.");
        assert_eq!(m.text("xxx sk-ant-secret"), "xxx sk-ant-secret", "a prefix alone stays");
        assert_eq!(Mask::default().text("sk-ant-secret-1"), "sk-ant-secret-1");
        let nested = Mask::new(["abcdef".to_owned(), "abcdefgh".to_owned()]);
        assert_eq!(nested.text("abcdefgh abcdef"), "*** ***");
    }

    #[test]
    fn a_secret_split_across_pieces_is_masked() {
        let m = mask();
        let text = b"one sk-ant-secret-1 two nats-token-42 three sk-ant-";
        // Every way of cutting the output in two, and byte by byte.
        for cut in 0..text.len() {
            let mut s = m.stream();
            let mut out = s.push(&text[..cut]);
            out.extend(s.push(&text[cut..]));
            out.extend(s.finish());
            assert_eq!(String::from_utf8_lossy(&out), "one *** two *** three sk-ant-", "cut at {cut}");
        }
        let mut s = m.stream();
        let mut out = Vec::new();
        for b in text {
            out.extend(s.push(std::slice::from_ref(b)));
        }
        out.extend(s.finish());
        assert_eq!(String::from_utf8_lossy(&out), "one *** two *** three sk-ant-");
    }

    #[test]
    fn credentials_come_from_the_environment_and_files_never_grove_s_own() {
        let d = tempfile::tempdir().expect("tmp");
        let file = d.path().join("key");
        std::fs::write(&file, "from-a-file\n").expect("write");
        let env = |n: &str| match n {
            "MY_KEY" => Some("my-key-value".to_owned()),
            "ANTHROPIC_API_KEY" => Some("sk-ant-default".to_owned()),
            "OPENAI_API_KEY" => Some("sk-openai".to_owned()),
            "GROVE_TOKEN" => Some("grove-token".to_owned()),
            _ => None,
        };
        let sources =
            CredentialSources { env: vec!["MY_KEY".into()], files: vec![("FILE_KEY".into(), file.clone())] };
        let c = Credentials::load(&sources, env).expect("loads");
        let names = |v: Vec<(String, String)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(names(c.for_agent("command")), ["FILE_KEY", "MY_KEY"]);
        assert_eq!(names(c.for_agent("claude")), ["ANTHROPIC_API_KEY", "FILE_KEY", "MY_KEY"]);
        assert_eq!(names(c.for_agent("codex")), ["FILE_KEY", "MY_KEY", "OPENAI_API_KEY"]);
        assert!(c.for_agent("command").contains(&("FILE_KEY".into(), "from-a-file".into())));

        for (bad, want) in
            [("GROVE_TOKEN", "grove's own"), ("GROVE_NATS_TOKEN", "grove's own"), ("NOPE", "not set")]
        {
            let s = CredentialSources { env: vec![bad.into()], files: vec![] };
            let e = Credentials::load(&s, env).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let s = CredentialSources { env: vec![], files: vec![("NATS_NKEY".into(), file)] };
        assert!(matches!(Credentials::load(&s, env), Err(SecretsError::Forbidden { .. })));
        let s = CredentialSources { env: vec!["A-B".into()], files: vec![] };
        assert!(matches!(Credentials::load(&s, env), Err(SecretsError::BadName { .. })));

        let secrets = Secrets::new(c, ["grove-token-value".to_owned()]);
        assert_eq!(
            secrets.mask().text("my-key-value from-a-file sk-openai grove-token-value"),
            "*** *** *** ***"
        );
    }

    #[test]
    fn the_environment_is_the_allow_list_and_what_was_given() {
        let given = vec![
            ("GROVE_TASK".to_owned(), "core".to_owned()),
            ("GROVE_NATS_TOKEN".to_owned(), "listed-anyway".to_owned()),
            ("MY_KEY".to_owned(), "v".to_owned()),
        ];
        let env = environment(&given);
        let names: Vec<String> = env.iter().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
        assert!(names.contains(&"GROVE_TASK".to_owned()) && names.contains(&"MY_KEY".to_owned()));
        assert!(!names.iter().any(|n| n == "GROVE_NATS_TOKEN"), "{names:?}");
        assert!(
            names.iter().all(|n| policy::inherited(n) || n == "GROVE_TASK" || n == "MY_KEY"),
            "{names:?}"
        );
        if std::env::var_os("PATH").is_some() {
            assert!(names.contains(&"PATH".to_owned()), "{names:?}");
        }
    }
}
