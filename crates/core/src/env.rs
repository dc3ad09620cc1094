//! What an agent's or a check's environment may hold. Agents and checks never inherit the
//! environment of the worker (or coordinator) that runs them: they get the variables the job
//! and the adapter set, the names listed here as [`inherited`] (taken from grove's own
//! environment), and, for agents only, the agent's own credentials. grove's own secrets
//! ([`forbidden`]) never reach them, even when someone lists them.
//!
//! This module only names things; the worker reads the environment and files
//! (`grove_worker::secrets`).

/// Variables passed through from grove's environment to agents and checks: where things
/// are (home, temporary folder, toolchains), who runs them, the locale and time zone, the
/// proxy and CA settings a network client needs, and git's identity and config location.
/// Nothing here is a credential.
pub const INHERITED: &[&str] = &[
    // The process basics.
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "NO_COLOR",
    // Where tools keep their config, caches and state.
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    // Proxies, both spellings, and the CAs TLS clients trust.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    // Toolchains a check builds with.
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOPATH",
    "GOROOT",
    "GOMODCACHE",
    "GOCACHE",
    "JAVA_HOME",
    "NVM_DIR",
    "PYENV_ROOT",
    "VIRTUAL_ENV",
    // git's identity and where its config is (never GIT_DIR and the like, never credentials).
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_NOSYSTEM",
];

/// Prefixes of inherited variables (the locale's categories).
pub const INHERITED_PREFIXES: &[&str] = &["LC_"];

/// Whether `name` passes from grove's environment to agents and checks.
pub fn inherited(name: &str) -> bool {
    !forbidden(name) && (INHERITED.contains(&name) || INHERITED_PREFIXES.iter().any(|p| name.starts_with(p)))
}

/// grove's own secrets and where they are: the coordinator's API token, the NATS token and
/// credentials files, and anything NATS-related. These never reach an agent or a check, not
/// from grove's environment, not from a job's `agent.env`, not as a credential a worker was
/// told to pass.
pub fn forbidden(name: &str) -> bool {
    name == "GROVE_TOKEN" || name.starts_with("GROVE_NATS") || name.starts_with("NATS_")
}

/// The credentials each builtin adapter's CLI reads, by the adapter's name (`claude`,
/// `codex`, `copilot`, `gemini`, `aider`, `opencode`). A worker passes those of them it has in
/// its environment to that adapter's agents without being told; anything else (and every
/// credential of a `command` agent) it passes only when listed (`--agent-env`,
/// `--agent-env-file`). `GITHUB_TOKEN` is not among Copilot's: in CI it is usually a token
/// that can write the repository, so it is passed only when listed.
pub fn adapter_credentials(adapter: &str) -> &'static [&'static str] {
    match adapter {
        "claude" => &["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"],
        "codex" => &["OPENAI_API_KEY", "CODEX_API_KEY"],
        "copilot" => &["COPILOT_GITHUB_TOKEN", "GH_TOKEN"],
        "gemini" => &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        "aider" => &[
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "GEMINI_API_KEY",
            "OPENROUTER_API_KEY",
            "DEEPSEEK_API_KEY",
        ],
        "opencode" => &["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY"],
        _ => &[],
    }
}

/// The settings (not credentials) each builtin adapter's CLI reads from its environment:
/// where its API is (a gateway or proxy the worker's operator set up), where it keeps its
/// state, what it may send home. A worker passes those it has to that adapter's agents, not
/// masked; a `command` agent gets them only when listed (`--agent-env`).
pub fn adapter_settings(adapter: &str) -> &'static [&'static str] {
    match adapter {
        "claude" => &[
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_MODEL",
            "ANTHROPIC_SMALL_FAST_MODEL",
            "CLAUDE_CONFIG_DIR",
            "CLAUDE_CODE_USE_BEDROCK",
            "CLAUDE_CODE_USE_VERTEX",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "DISABLE_AUTOUPDATER",
            "DISABLE_TELEMETRY",
            "DISABLE_ERROR_REPORTING",
        ],
        "codex" => &["CODEX_HOME", "OPENAI_BASE_URL"],
        "copilot" => &["COPILOT_HOME"],
        "gemini" => {
            &["GOOGLE_GEMINI_BASE_URL", "GEMINI_MODEL", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"]
        }
        "aider" => &["OPENAI_API_BASE", "ANTHROPIC_BASE_URL", "AIDER_MODEL"],
        "opencode" => &["OPENCODE_CONFIG", "OPENCODE_CONFIG_DIR"],
        _ => &[],
    }
}

/// Every adapter's setting names, once each.
pub fn known_settings() -> Vec<&'static str> {
    every_adapters(adapter_settings)
}

/// Every adapter's credential names, once each.
pub fn known_credentials() -> Vec<&'static str> {
    every_adapters(adapter_credentials)
}

/// The names `of` gives for every builtin adapter, sorted, once each.
fn every_adapters(of: fn(&str) -> &'static [&'static str]) -> Vec<&'static str> {
    let mut all: Vec<&str> = ["claude", "codex", "copilot", "gemini", "aider", "opencode"]
        .into_iter()
        .flat_map(of)
        .copied()
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Whether a variable named `name` looks like it holds a secret: one of grove's, an
/// adapter's credential, or a name ending like one (`_API_KEY`, `_TOKEN`, `_SECRET`,
/// `_PASSWORD`, ...). A job spec may not set such a variable: the spec travels in clear (over
/// NATS, in the state), so credentials come from the worker instead.
pub fn looks_secret(name: &str) -> bool {
    const ENDINGS: &[&str] = &[
        "_API_KEY",
        "_APIKEY",
        "_TOKEN",
        "_SECRET",
        "_SECRET_KEY",
        "_ACCESS_KEY",
        "_PASSWORD",
        "_CREDENTIALS",
    ];
    let upper = name.to_ascii_uppercase();
    forbidden(&upper)
        || known_credentials().contains(&upper.as_str())
        || ENDINGS.iter().any(|e| upper.ends_with(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grove_s_secrets_are_never_inherited() {
        for name in ["GROVE_TOKEN", "GROVE_NATS_TOKEN", "GROVE_NATS_CREDS", "NATS_NKEY", "NATS_CREDS"] {
            assert!(forbidden(name), "{name}");
            assert!(!inherited(name), "{name}");
            assert!(looks_secret(name), "{name}");
        }
        for name in ["PATH", "HOME", "LC_ALL", "LC_CTYPE", "https_proxy", "SSL_CERT_FILE"] {
            assert!(inherited(name), "{name}");
        }
        for name in ["SECRET", "ANTHROPIC_API_KEY", "GROVE_HOME", "SSH_AUTH_SOCK", "GIT_DIR", "TERM"] {
            assert!(!inherited(name), "{name}");
        }
    }

    #[test]
    fn credential_names() {
        assert!(adapter_credentials("claude").contains(&"ANTHROPIC_API_KEY"));
        assert!(adapter_credentials("command").is_empty());
        for name in ["ANTHROPIC_API_KEY", "MY_SERVICE_TOKEN", "db_password", "GITHUB_TOKEN", "GH_TOKEN"] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["ANTHROPIC_BASE_URL", "CLAUDE_CODE_MAX_OUTPUT_TOKENS", "RUST_LOG", "GROVE_VARIANT"] {
            assert!(!looks_secret(name), "{name}");
        }
    }
}
