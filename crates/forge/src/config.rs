//! Which code host a remote is on, how to reach its API, and its token.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Error;

/// The kind of code host, which decides the API's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// GitHub and GitHub Enterprise (REST v3).
    #[value(name = "github")]
    GitHub,
    /// GitLab (REST v4): merge requests.
    #[value(name = "gitlab")]
    GitLab,
    /// Gitea and Forgejo (REST v1).
    #[value(name = "gitea", alias = "forgejo")]
    #[serde(alias = "forgejo")]
    Gitea,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GitHub => "github",
            Kind::GitLab => "gitlab",
            Kind::Gitea => "gitea",
        }
    }

    /// The environment variables a token is read from, in order.
    pub fn token_vars(self) -> &'static [&'static str] {
        match self {
            Kind::GitHub => &["GITHUB_TOKEN", "GH_TOKEN"],
            Kind::GitLab => &["GITLAB_TOKEN"],
            Kind::Gitea => &["GITEA_TOKEN"],
        }
    }

    /// What a pull request is called on this host.
    pub fn pr_noun(self) -> &'static str {
        match self {
            Kind::GitLab => "merge request",
            Kind::GitHub | Kind::Gitea => "pull request",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        <Kind as clap::ValueEnum>::from_str(s, true)
    }
}

/// A repository on a code host, read from a git remote URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Remote {
    /// The host name, lower-case, without port or user (`github.com`).
    pub host: String,
    /// The project's path on the host without `.git`: `owner/repo`, or on GitLab
    /// `group/subgroup/repo`.
    pub project: String,
}

impl Remote {
    /// Reads `https://host/owner/repo(.git)`, `git@host:owner/repo.git` and
    /// `ssh://git@host(:port)/group/sub/repo.git`.
    pub fn parse(url: &str) -> Result<Remote, Error> {
        let bad = || Error::Remote { url: url.to_owned() };
        let url_trimmed = url.trim();
        let (host, path) = if let Some((scheme, rest)) = url_trimmed.split_once("://") {
            if !matches!(scheme, "https" | "http" | "ssh" | "git" | "git+ssh" | "ssh+git") {
                return Err(bad());
            }
            let (authority, path) = rest.split_once('/').ok_or_else(bad)?;
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = match host.rsplit_once(':') {
                Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
                _ => host,
            };
            (host, path)
        } else {
            // scp-like: [user@]host:path
            let (authority, path) = url_trimmed.split_once(':').ok_or_else(bad)?;
            if authority.contains('/') {
                return Err(bad());
            }
            (authority.rsplit_once('@').map_or(authority, |(_, h)| h), path)
        };
        let path = path.trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        if host.is_empty()
            || segments.len() < 2
            || segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            return Err(bad());
        }
        Ok(Remote { host: host.to_ascii_lowercase(), project: segments.join("/") })
    }
}

/// A secret token: Debug and Display print `***`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into())
    }

    /// The secret itself, for an auth header. Never log or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Default spacing of writes to one host (GitHub's guidance for content-creating requests).
pub const DEFAULT_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// Default wait after a secondary rate limit that names no time.
pub const DEFAULT_SECONDARY_WAIT: Duration = Duration::from_secs(60);
/// Default longest single wait a rate limit may ask for before grove gives up.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default retries of one request after a rate limit (or a 502/503/504 on a read).
pub const DEFAULT_MAX_RETRIES: u32 = 4;

/// How to reach one host's API.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// The host name as in remote URLs (`github.com`).
    pub host: String,
    pub kind: Kind,
    /// The API's base URL without a trailing `/` (`https://api.github.com`,
    /// `https://gitlab.com/api/v4`, `https://HOST/api/v3` for GitHub Enterprise).
    pub api_url: String,
    /// The variable the token is read from, instead of the kind's usual ones.
    pub token_env: Option<String>,
    /// A credentials file to read the token from when no variable has it.
    pub credentials: Option<PathBuf>,
    /// The least time between two writes (POST, PATCH, PUT, DELETE) to this host.
    pub min_write_interval: Duration,
    /// The wait after a secondary rate limit that names no time.
    pub secondary_wait: Duration,
    /// The longest single wait a rate limit may impose; a longer one is an error.
    pub max_wait: Duration,
    /// Retries of one request after rate limits.
    pub max_retries: u32,
    /// Timeout of one request.
    pub timeout: Duration,
}

impl HostConfig {
    /// A host of `kind` with its API at `api_url` and the default limits.
    pub fn new(host: impl Into<String>, kind: Kind, api_url: impl Into<String>) -> HostConfig {
        HostConfig {
            host: host.into(),
            kind,
            api_url: api_url.into().trim_end_matches('/').to_owned(),
            token_env: None,
            credentials: None,
            min_write_interval: DEFAULT_WRITE_INTERVAL,
            secondary_wait: DEFAULT_SECONDARY_WAIT,
            max_wait: DEFAULT_MAX_WAIT,
            max_retries: DEFAULT_MAX_RETRIES,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The built-in hosts: github.com, gitlab.com, codeberg.org.
    pub fn builtin(host: &str) -> Option<HostConfig> {
        let (kind, api) = match host {
            "github.com" => (Kind::GitHub, "https://api.github.com"),
            "gitlab.com" => (Kind::GitLab, "https://gitlab.com/api/v4"),
            "codeberg.org" => (Kind::Gitea, "https://codeberg.org/api/v1"),
            _ => return None,
        };
        Some(HostConfig::new(host, kind, api))
    }

    /// The token: from `token_env` if set, else from the kind's usual variables, else from
    /// the credentials file. `env` looks a variable up (`|k| std::env::var(k).ok()`).
    pub fn token(&self, env: impl Fn(&str) -> Option<String>) -> Result<Token, Error> {
        let vars: Vec<&str> = match &self.token_env {
            Some(v) => vec![v.as_str()],
            None => self.kind.token_vars().to_vec(),
        };
        for var in &vars {
            if let Some(t) = env(var).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
                return Ok(Token(t));
            }
        }
        if let Some(path) = &self.credentials
            && let Some(t) = read_credentials(path)?.remove(&self.host)
        {
            return Ok(t);
        }
        Err(Error::NoToken {
            host: self.host.clone(),
            vars: vars.join(" or "),
            credentials: self.credentials.clone(),
        })
    }
}

/// Reads a credentials file: TOML with one `"host" = "token"` line per host, e.g.
///
/// ```toml
/// "github.com" = "ghp_…"
/// "git.example.com" = "glpat-…"
/// ```
pub fn read_credentials(path: &Path) -> Result<BTreeMap<String, Token>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Credentials { path: path.to_owned(), source })?;
    // The parser's message may quote the line, which holds a token: say where only.
    let table: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| Error::CredentialsSyntax {
        path: path.to_owned(),
        at: e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1)),
    })?;
    Ok(table.into_iter().map(|(h, t)| (h.to_ascii_lowercase(), Token(t.trim().to_owned()))).collect())
}

/// One host's entry in the `[forge."HOST"]` config table; every field optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub kind: Option<Kind>,
    /// The API's base URL.
    pub api: Option<String>,
    pub token_env: Option<String>,
    pub credentials: Option<PathBuf>,
    /// `"1s"`, `"250ms"` (humantime).
    #[serde(default, with = "opt_duration")]
    pub min_write_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub secondary_wait: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub max_wait: Option<Duration>,
    pub max_retries: Option<u32>,
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// The configured hosts: the `[forge]` table of grove's config, keyed by host name.
///
/// ```toml
/// [forge."git.example.com"]
/// kind = "gitlab"                      # github | gitlab | gitea (forgejo)
/// api = "https://git.example.com/api/v4"
/// token_env = "EXAMPLE_TOKEN"          # default: the kind's GITHUB_TOKEN/GH_TOKEN, GITLAB_TOKEN, GITEA_TOKEN
/// credentials = "/home/me/.config/grove/credentials.toml"   # "host" = "token" lines
/// min_write_interval = "1s"
/// ```
///
/// A host without an entry is one of the built-in ones (github.com, gitlab.com,
/// codeberg.org); an entry for a built-in host overrides what it names.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Hosts(pub BTreeMap<String, HostEntry>);

impl Hosts {
    /// The `[forge]` table of a TOML document (none: no hosts configured).
    pub fn from_toml(text: &str) -> Result<Hosts, Error> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            forge: Hosts,
        }
        toml::from_str::<Doc>(text).map(|d| d.forge).map_err(|e| Error::Config(e.message().to_owned()))
    }

    /// How to reach `host`.
    pub fn config(&self, host: &str) -> Result<HostConfig, Error> {
        let host = host.to_ascii_lowercase();
        let entry = self.0.iter().find(|(h, _)| h.eq_ignore_ascii_case(&host)).map(|(_, e)| e);
        let mut config = match (HostConfig::builtin(&host), entry) {
            (Some(c), None) => return Ok(c),
            (None, None) => return Err(Error::UnknownHost { host }),
            (Some(mut c), Some(e)) => {
                if let Some(kind) = e.kind {
                    c.kind = kind;
                }
                if let Some(api) = &e.api {
                    c.api_url = api.trim_end_matches('/').to_owned();
                }
                c
            }
            (None, Some(e)) => {
                let kind = e.kind.ok_or_else(|| Error::Config(format!("[forge.\"{host}\"] needs a kind")))?;
                let api = match (&e.api, kind) {
                    (Some(api), _) => api.clone(),
                    (None, Kind::GitHub) => format!("https://{host}/api/v3"),
                    (None, Kind::GitLab) => format!("https://{host}/api/v4"),
                    (None, Kind::Gitea) => format!("https://{host}/api/v1"),
                };
                HostConfig::new(host.clone(), kind, api)
            }
        };
        let Some(e) = entry else { return Ok(config) };
        if !(config.api_url.starts_with("https://") || config.api_url.starts_with("http://")) {
            return Err(Error::Config(format!("[forge.\"{host}\"] api is not an http(s) URL")));
        }
        config.token_env = e.token_env.clone().or(config.token_env);
        config.credentials = e.credentials.clone().or(config.credentials);
        config.min_write_interval = e.min_write_interval.unwrap_or(config.min_write_interval);
        config.secondary_wait = e.secondary_wait.unwrap_or(config.secondary_wait);
        config.max_wait = e.max_wait.unwrap_or(config.max_wait);
        config.max_retries = e.max_retries.unwrap_or(config.max_retries);
        config.timeout = e.timeout.unwrap_or(config.timeout);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_remote_urls() {
        let cases = [
            ("https://github.com/o/r", "github.com", "o/r"),
            ("https://github.com/o/r.git", "github.com", "o/r"),
            ("https://github.com/o/r/", "github.com", "o/r"),
            ("https://user:pw@GitHub.com/o/r.git", "github.com", "o/r"),
            ("git@github.com:o/r.git", "github.com", "o/r"),
            ("github.com:o/r", "github.com", "o/r"),
            ("ssh://git@gitlab.com/group/sub/repo.git", "gitlab.com", "group/sub/repo"),
            ("ssh://git@git.example.com:2222/g/r.git", "git.example.com", "g/r"),
            ("https://git.example.com:8443/a/b/c/d", "git.example.com", "a/b/c/d"),
        ];
        for (url, host, project) in cases {
            let r = Remote::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((r.host.as_str(), r.project.as_str()), (host, project), "{url}");
        }
        for bad in
            ["", "/local/path", "file:///x/y", "https://github.com/only", "git@host:", "https://h/a/../b"]
        {
            assert!(Remote::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_never_prints() {
        let t = Token::new("s3cret-value");
        assert_eq!(format!("{t}"), "***");
        assert!(!format!("{t:?}").contains("s3cret"));
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Token,
        }
        assert!(!format!("{:?}", Holder { token: t.clone() }).contains("s3cret"));
        assert_eq!(t.expose(), "s3cret-value");
    }

    #[test]
    fn hosts_from_toml() {
        let hosts = Hosts::from_toml(
            r#"
            [forge."git.example.com"]
            kind = "gitlab"
            token_env = "EXAMPLE_TOKEN"
            min_write_interval = "250ms"

            [forge."ghe.corp"]
            kind = "github"

            [forge."github.com"]
            api = "http://127.0.0.1:9/"
            "#,
        )
        .expect("parse");
        let c = hosts.config("git.example.com").expect("config");
        assert_eq!(c.kind, Kind::GitLab);
        assert_eq!(c.api_url, "https://git.example.com/api/v4");
        assert_eq!(c.min_write_interval, Duration::from_millis(250));
        assert_eq!(hosts.config("ghe.corp").expect("ghe").api_url, "https://ghe.corp/api/v3");
        let gh = hosts.config("github.com").expect("gh");
        assert_eq!((gh.kind, gh.api_url.as_str()), (Kind::GitHub, "http://127.0.0.1:9"));
        assert_eq!(hosts.config("gitlab.com").expect("gl").api_url, "https://gitlab.com/api/v4");
        assert_eq!(hosts.config("codeberg.org").expect("cb").kind, Kind::Gitea);
        assert!(matches!(hosts.config("other.org"), Err(Error::UnknownHost { .. })));
        assert!(Hosts::from_toml("[forge.\"x\"]\nkind = \"svn\"").is_err());
        let forgejo = Hosts::from_toml("[forge.\"f.example\"]\nkind = \"forgejo\"").expect("forgejo");
        assert_eq!(forgejo.config("f.example").expect("f").api_url, "https://f.example/api/v1");
        assert_eq!("GitLab".parse::<Kind>(), Ok(Kind::GitLab));
        assert_eq!(Hosts::from_toml("").expect("empty"), Hosts::default());
    }

    #[test]
    fn token_lookup_order_and_missing() {
        let c = HostConfig::builtin("github.com").expect("builtin");
        let t = c.token(|k| (k == "GH_TOKEN").then(|| "from-gh".to_owned())).expect("token");
        assert_eq!(t.expose(), "from-gh");
        let t = c.token(|k| Some(format!("v-{k}"))).expect("token");
        assert_eq!(t.expose(), "v-GITHUB_TOKEN");
        let e = c.token(|_| None).expect_err("missing");
        assert!(e.to_string().contains("GITHUB_TOKEN or GH_TOKEN"), "{e}");

        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("creds.toml");
        std::fs::write(&path, "\"github.com\" = \"file-token\"\n").expect("write");
        let mut c = c;
        c.credentials = Some(path.clone());
        assert_eq!(c.token(|_| None).expect("file").expose(), "file-token");
        std::fs::write(&path, "\"github.com\" = file-token-unquoted\n").expect("write");
        let e = c.token(|_| None).expect_err("syntax");
        assert!(!e.to_string().contains("file-token"), "{e}");
    }
}
