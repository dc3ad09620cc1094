//! The job spec: what a person submits, read from TOML (and overridden by flags), then
//! validated before any work starts. `examples/job.toml` documents every field.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::names::{self, NameError};

/// A job spec that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The TOML does not parse or a field has the wrong type; the message names line and field.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// A field has a value grove refuses.
    #[error("{}{field}: {message}", location.as_deref().map(|l| format!("{l}: ")).unwrap_or_default())]
    Invalid {
        /// `file:line` when the spec came from a file and the field could be found in it.
        location: Option<String>,
        /// The field's dotted path, as in the file (`select.grep`) or as a flag would set it.
        field: String,
        message: String,
    },
}

/// What a person submits.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A short name; the job id is this name plus a suffix.
    pub name: Option<String>,
    /// What the agent is asked to do (given to agents as `{prompt}` and GROVE_PROMPT_FILE).
    pub prompt: Option<String>,
    #[serde(default)]
    pub repo: RepoSpec,
    /// `[[repos]]`: the repositories of a job that changes several (instead of `[repo]`). Each
    /// gets its own tasks, mirror and integration branch; they merge in the order of the
    /// dependencies between them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<RepoEntry>,
    #[serde(default)]
    pub select: Selection,
    #[serde(default)]
    pub split: Split,
    #[serde(default)]
    pub agent: AgentSpec,
    #[serde(default)]
    pub run: RunSpec,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub merge: MergeSpec,
    #[serde(default)]
    pub placement: crate::placement::PlacementSpec,
    /// What tasks and the job may spend on agents.
    #[serde(default, skip_serializing_if = "crate::usage::BudgetSpec::is_empty")]
    pub budget: crate::usage::BudgetSpec,
    /// Prices (USD per million tokens) by model name prefix, over the builtin table, for CLIs
    /// that report tokens but no cost.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, crate::usage::Price>,
    /// Several agents or prompts for every task: each variant runs as its own attempt on its
    /// own branch (`grove/<job>/<task>.<variant>`), and `merge.pick` keeps one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantSpec>,
    /// Where a person is told that a task needs them or failed, and that the job finished.
    #[serde(default, skip_serializing_if = "NotifySpec::is_empty")]
    pub notify: NotifySpec,
}

/// `[notify]`: the sinks each notification goes to. Events: a task needs attention (its
/// question, conflict paths or failing integration check), a task failed (its reason), the
/// job finished (counts by state, merged count, cost when known). Each is sent once per
/// sink; a sink that fails is retried a few times and never fails the job.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// An http(s) URL each event is POSTed to as JSON: `text` and `content` hold a one-line
    /// summary (what Slack and Discord incoming webhooks show), the other fields the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// An ntfy topic: each event's summary is POSTed as text to `<ntfy_server>/<topic>`, with
    /// a `Title` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy: Option<String>,
    /// The ntfy server (default `https://ntfy.sh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy_server: Option<String>,
    /// A program and its arguments, run with each event as one JSON object on stdin; no
    /// shell runs it unless it is one (`["sh", "-c", "..."]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Ring the terminal bell in `grove run` when a task needs attention or fails and when
    /// the job ends (only when stderr is a terminal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bell: Option<bool>,
}

impl NotifySpec {
    pub fn is_empty(&self) -> bool {
        self == &NotifySpec::default()
    }

    /// The ntfy server events go to.
    pub fn ntfy_server(&self) -> &str {
        self.ntfy_server.as_deref().unwrap_or(defaults::NTFY_SERVER)
    }

    /// Every field that can be checked without the network; `err` names the field.
    fn validate(&self, err: &impl Fn(&str, String) -> SpecError) -> Result<(), SpecError> {
        if let Some(url) = &self.webhook {
            check_http_url(url).map_err(|m| err("notify.webhook", format!("{url:?} {m}")))?;
        }
        if let Some(url) = &self.ntfy_server {
            check_http_url(url).map_err(|m| err("notify.ntfy_server", format!("{url:?} {m}")))?;
            if self.ntfy.is_none() {
                return Err(err("notify.ntfy_server", "is set, but no notify.ntfy topic is".into()));
            }
        }
        if let Some(topic) = &self.ntfy
            && (topic.is_empty()
                || topic.len() > 64
                || !topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(err(
                "notify.ntfy",
                format!("{topic:?} is not an ntfy topic (letters, digits, - and _, at most 64)"),
            ));
        }
        if let Some(cmd) = &self.command
            && cmd.first().is_none_or(|p| p.trim().is_empty())
        {
            return Err(err(
                "notify.command",
                "is empty (give a program and its arguments, e.g. [\"notify-send\", \"grove\"])".into(),
            ));
        }
        Ok(())
    }
}

/// Why `url` is not one grove can POST to, if it is not: an `http://` or `https://` URL with
/// a host, an optional numeric port, and no credentials or spaces.
pub fn check_http_url(url: &str) -> Result<(), &'static str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("is not a URL (expected http://HOST/... or https://HOST/...)");
    };
    if !matches!(scheme, "http" | "https") {
        return Err("is not an http:// or https:// URL");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("has spaces or control characters in it");
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err("carries credentials; grove does not send them (use a URL with a token in its path)");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else { return Err("has an unclosed [ in its host") };
        match after {
            "" => (h, None),
            _ => (h, Some(after.strip_prefix(':').ok_or("has something after its [host]")?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if let Some(p) = port
        && (p.is_empty() || p.parse::<u16>().is_err())
    {
        return Err("has a port that is not a number from 0 to 65535");
    }
    Ok(())
}

/// One way of doing every task: a name, and what it changes from the job's agent and prompt.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    /// A short name (letters, digits, `-`): the branch and `grove pick` use it.
    pub name: String,
    /// Instead of the job's prompt.
    pub prompt: Option<String>,
    /// Instead of `agent.kind`.
    pub kind: Option<AgentKind>,
    /// Instead of `agent.pattern` (replace).
    pub pattern: Option<String>,
    /// Instead of `agent.replace` (replace).
    pub replace: Option<String>,
    /// Instead of `agent.command` (command).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Instead of `agent.model` (the builtin CLI adapters).
    pub model: Option<String>,
    /// Instead of `agent.args` (the builtin CLI adapters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Added to `agent.env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl VariantSpec {
    /// The job's agent with this variant's changes.
    pub fn agent(&self, job: &AgentSpec) -> AgentSpec {
        let mut a = job.clone();
        if self.kind.is_some() {
            a.kind = self.kind;
        }
        if self.pattern.is_some() {
            a.pattern.clone_from(&self.pattern);
        }
        if self.replace.is_some() {
            a.replace.clone_from(&self.replace);
        }
        if !self.command.is_empty() {
            a.command.clone_from(&self.command);
            a.kind.get_or_insert(AgentKind::Command);
        }
        if self.model.is_some() {
            a.model.clone_from(&self.model);
        }
        if !self.args.is_empty() {
            a.args.clone_from(&self.args);
        }
        a.env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        a
    }
}

/// Which variant of a task merges.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Pick {
    /// The first variant to pass its checks; the others are stopped and discarded.
    #[default]
    FirstPassing,
    /// Once every variant ended, the passing one with the fewest changed lines.
    SmallestDiff,
    /// The one a person picks with `grove pick TASK VARIANT`.
    Manual,
}

impl Pick {
    pub fn as_str(self) -> &'static str {
        match self {
            Pick::FirstPassing => "first-passing",
            Pick::SmallestDiff => "smallest-diff",
            Pick::Manual => "manual",
        }
    }
}

impl std::str::FromStr for Pick {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Pick::FirstPassing, Pick::SmallestDiff, Pick::Manual]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown pick rule {s:?} (expected first-passing, smallest-diff or manual)")
            })
    }
}

/// The repository the job changes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// A path to a local repository (its working tree or its `.git`), or a git URL.
    pub source: Option<String>,
    /// The commit the tasks start from: a branch, tag, commit id or `HEAD` (the default).
    pub base: Option<String>,
}

/// One repository of a job that changes several (`[[repos]]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepoEntry {
    /// Its name in the job (tasks, status, `GROVE_UPSTREAM_<NAME>`); default: the last part of
    /// its path or URL, without `.git`.
    pub name: Option<String>,
    /// A path to a local repository, or a git URL.
    pub source: String,
    /// The commit its tasks start from (default: the job's `repo.base`, else `HEAD`).
    pub base: Option<String>,
    /// Its own `[select]`, instead of the job's.
    pub select: Option<Selection>,
    /// Its own `[split]`, instead of the job's.
    pub split: Option<Split>,
    /// Repositories of the job (by name) it needs merged first, besides those its manifests
    /// name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl RepoEntry {
    /// Its name: given, or the last part of its source without `.git`, as a slug.
    pub fn name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let s = self.source.trim_end_matches(['/', '\\']);
        // `lib/.git` is `lib`.
        let s = s.strip_suffix("/.git").unwrap_or(s);
        let last = s.rsplit(['/', '\\', ':']).next().unwrap_or(s);
        let last = last.strip_suffix(".git").unwrap_or(last);
        let slug = names::slugify(last, 40);
        if slug.is_empty() { "repo".to_owned() } else { slug }
    }
}

/// Which files are in the change.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Globs of repository paths to include (`crates/**`); none means every file.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of repository paths to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// A regex (Rust syntax); only files whose content matches are in scope.
    pub grep: Option<String>,
    /// An explicit list of repository paths; when given, only these files are in scope.
    #[serde(default)]
    pub files: Vec<String>,
}

/// How a job is split into tasks.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Split {
    #[serde(default)]
    pub rule: SplitRule,
    /// For `dirs`: how many folder levels name a task (`1` = top-level folders).
    #[serde(default = "default_depth")]
    pub depth: u32,
    /// Largest number of files in one task; bigger modules are split by sub-folder.
    pub max_files: Option<u32>,
    /// Largest number of lines in one task.
    pub max_lines: Option<u64>,
    /// Largest number of tasks; small modules are grouped to stay under it.
    pub max_tasks: Option<u32>,
}

fn default_depth() -> u32 {
    1
}

impl Default for Split {
    fn default() -> Self {
        Split {
            rule: SplitRule::default(),
            depth: default_depth(),
            max_files: None,
            max_lines: None,
            max_tasks: None,
        }
    }
}

/// The rule that turns files into modules.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SplitRule {
    /// Pick from what the repository has (several ecosystems at once are fine).
    #[default]
    Auto,
    /// Folders at `depth`.
    Dirs,
    /// One task per Cargo package; each file belongs to its innermost package.
    Cargo,
    /// npm / yarn / pnpm workspaces.
    Npm,
    /// Go modules (go.mod), and packages inside big modules.
    Go,
    /// Python projects (pyproject.toml, setup.cfg, setup.py) or packages (`__init__.py`).
    Python,
    /// Maven modules.
    Maven,
    /// Gradle projects.
    Gradle,
    /// One task per CODEOWNERS owner set.
    Codeowners,
    /// The whole selection as one task.
    Single,
}

impl SplitRule {
    pub const ALL: [SplitRule; 10] = [
        SplitRule::Auto,
        SplitRule::Dirs,
        SplitRule::Cargo,
        SplitRule::Npm,
        SplitRule::Go,
        SplitRule::Python,
        SplitRule::Maven,
        SplitRule::Gradle,
        SplitRule::Codeowners,
        SplitRule::Single,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SplitRule::Auto => "auto",
            SplitRule::Dirs => "dirs",
            SplitRule::Cargo => "cargo",
            SplitRule::Npm => "npm",
            SplitRule::Go => "go",
            SplitRule::Python => "python",
            SplitRule::Maven => "maven",
            SplitRule::Gradle => "gradle",
            SplitRule::Codeowners => "codeowners",
            SplitRule::Single => "single",
        }
    }
}

impl std::str::FromStr for SplitRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SplitRule::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = SplitRule::ALL.iter().map(|r| r.as_str()).collect();
            format!("unknown split rule {s:?} (expected one of: {})", names.join(", "))
        })
    }
}

/// Which agent runs in each task's workspace.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// `replace` (builtin regex rewrite), `command` (any program), or a builtin CLI adapter:
    /// `claude`, `codex`, `copilot`, `gemini`, `aider`, `opencode`.
    pub kind: Option<AgentKind>,
    /// For `replace`: the regex (Rust syntax) to find.
    pub pattern: Option<String>,
    /// For `replace`: the replacement; `$1`, `${name}` refer to groups.
    pub replace: Option<String>,
    /// For `command`: the program and its arguments; `{prompt}`, `{scope}`, `{task}` are filled in.
    #[serde(default)]
    pub command: Vec<String>,
    /// For a CLI adapter: the model, as the CLI names it (`--model`).
    pub model: Option<String>,
    /// For a CLI adapter: extra arguments, after grove's own (`{prompt}`, `{scope}`, `{task}`
    /// are filled in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// For a CLI adapter: the executable (default: the CLI's usual name on PATH).
    pub program: Option<String>,
    /// Extra environment for the agent.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long one turn may run before its process group is killed (default 30m).
    #[serde(default, deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub turn_timeout: Option<Duration>,
    /// How many turns a task may take: a turn whose checks fail is followed by another with the
    /// failure in GROVE_FEEDBACK_FILE, up to this many (default 1).
    pub max_turns: Option<u32>,
    /// A repository-defined agent to run as: `NAME` of `.github/agents/NAME.agent.md` or
    /// `.claude/agents/NAME.md` at the job's base commit (see `grove agents`).
    pub custom: Option<String>,
    /// The `custom` agent's definition, read and parsed by grove from the base commit when the
    /// job is submitted (a spec file does not set it): what the worker's adapter runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<crate::agents::AgentDefinition>,
}

/// The kinds of agent grove runs.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    Replace,
    Command,
    /// Claude Code (`claude -p`).
    Claude,
    /// OpenAI Codex CLI (`codex exec`).
    Codex,
    /// GitHub Copilot CLI (`copilot -p`).
    Copilot,
    /// Gemini CLI (`gemini -p`).
    Gemini,
    /// aider (`aider --message`).
    Aider,
    /// OpenCode (`opencode run`).
    Opencode,
}

impl AgentKind {
    pub const ALL: [AgentKind; 8] = [
        AgentKind::Replace,
        AgentKind::Command,
        AgentKind::Claude,
        AgentKind::Codex,
        AgentKind::Copilot,
        AgentKind::Gemini,
        AgentKind::Aider,
        AgentKind::Opencode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Replace => "replace",
            AgentKind::Command => "command",
            AgentKind::Claude => "claude",
            AgentKind::Codex => "codex",
            AgentKind::Copilot => "copilot",
            AgentKind::Gemini => "gemini",
            AgentKind::Aider => "aider",
            AgentKind::Opencode => "opencode",
        }
    }

    /// A builtin adapter of an agent CLI (not `replace` or `command`).
    pub fn is_cli(self) -> bool {
        !matches!(self, AgentKind::Replace | AgentKind::Command)
    }
}

impl std::str::FromStr for AgentKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AgentKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = AgentKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown agent {s:?} (expected one of: {})", names.join(", "))
        })
    }
}

/// How the job runs.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Tasks running at once (default 4).
    pub concurrency: Option<u32>,
    /// Git-ignored files to copy from the source repository into each workspace (`.env`,
    /// `config/local.toml`); gitignore-style patterns. A `.worktreeinclude` file at the
    /// repository root adds its patterns.
    #[serde(default)]
    pub include_ignored: Vec<String>,
    /// The first port handed out (default 42000); task N gets `port_base + N * ports_per_task`.
    pub port_base: Option<u16>,
    /// Ports per task (default 10), in GROVE_PORT_BASE and GROVE_PORT_COUNT.
    pub ports_per_task: Option<u16>,
    /// Which workspaces to keep once their task ends: `none`, `failed` (default) or `all`.
    pub keep_worktrees: Option<KeepWorktrees>,
    /// Bytes of agent output kept per task log (default 8 MiB); the rest is dropped with a note.
    pub log_cap: Option<u64>,
    /// The pool tasks run in (default `local`): the workers that serve it take them; `auto`
    /// places each task by the `[placement]` policy.
    pub pool: Option<String>,
    /// A task's wall-clock budget from its first dispatch, across all its attempts (none by
    /// default); past it the task is cancelled and recorded failed.
    #[serde(default, deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub deadline: Option<Duration>,
    /// Attempts per task for failures that are not the job's verdict (the workspace could not
    /// be prepared, a push was refused, the worker was lost); default 3.
    pub max_attempts: Option<u32>,
    /// The wait before the second attempt (default 30s), doubled for each further one, at
    /// most 10m.
    #[serde(default, deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub retry_backoff: Option<Duration>,
    /// Times a task may be parked on a usage limit; the next limit fails it (default 10).
    pub max_parks: Option<u32>,
    /// The most time a task may spend parked in all; a limit that would park it longer fails
    /// it (default 7 days). One reset time further away than this is clamped to it.
    #[serde(default, deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub max_parked: Option<Duration>,
}

/// The worktree removal policy.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeepWorktrees {
    /// Remove every worktree once its task ends; branches stay.
    None,
    /// Keep the worktrees of tasks that failed or need attention, for a person to look into.
    #[default]
    Failed,
    /// Keep every worktree.
    All,
}

impl std::str::FromStr for KeepWorktrees {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(KeepWorktrees::None),
            "failed" => Ok(KeepWorktrees::Failed),
            "all" => Ok(KeepWorktrees::All),
            _ => Err(format!("unknown worktree policy {s:?} (expected none, failed or all)")),
        }
    }
}

/// Commands that decide whether work is good.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// A shell command run in the task's workspace after each turn; non-zero fails the turn.
    pub task: Option<String>,
    /// A shell command run on the integration result (in a worktree grove owns) after each
    /// batch of `merge.batch` merges; a failing batch is bisected to the branch that breaks it.
    pub integration: Option<String>,
}

/// How finished branches come together.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MergeSpec {
    /// The integration branch (default `grove/<job>/integration`); `{job}` is replaced.
    pub branch: Option<String>,
    /// `merge` (a merge commit per task, the default), `squash` (one single-parent commit per
    /// task) or `manual` (nothing merges until `grove merge JOB`).
    pub mode: Option<MergeMode>,
    /// What a conflicting branch gets: `redo` (default: a new attempt on top of the
    /// integration head, told about the conflict), `attention` (set aside) or `abort` (the
    /// job's merging stops).
    pub on_conflict: Option<OnConflict>,
    /// How many times one task may be redone after conflicts (default 2).
    pub max_redos: Option<u32>,
    /// Merges per run of `checks.integration` (default 1: after every merge).
    pub batch: Option<u32>,
    /// With `variants`: which one merges (default `first-passing`).
    pub pick: Option<Pick>,
}

/// How a task's branch enters the integration branch.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MergeMode {
    /// A merge commit with the task's branch as second parent.
    #[default]
    Merge,
    /// One commit with the branch's changes and a single parent.
    Squash,
    /// Tasks wait, checked, until `grove merge JOB` (then as `merge`).
    Manual,
}

impl MergeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMode::Merge => "merge",
            MergeMode::Squash => "squash",
            MergeMode::Manual => "manual",
        }
    }
}

impl std::str::FromStr for MergeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "merge" => Ok(MergeMode::Merge),
            "squash" => Ok(MergeMode::Squash),
            "manual" => Ok(MergeMode::Manual),
            _ => Err(format!("unknown merge mode {s:?} (expected merge, squash or manual)")),
        }
    }
}

/// What the merge train does with a branch that conflicts with the integration branch.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Run the task again on top of the integration head, with the conflict described.
    #[default]
    Redo,
    /// Set the branch aside as needs-attention; the rest go on.
    Attention,
    /// Stop merging this job.
    Abort,
}

impl OnConflict {
    pub fn as_str(self) -> &'static str {
        match self {
            OnConflict::Redo => "redo",
            OnConflict::Attention => "attention",
            OnConflict::Abort => "abort",
        }
    }
}

impl std::str::FromStr for OnConflict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redo" => Ok(OnConflict::Redo),
            "attention" => Ok(OnConflict::Attention),
            "abort" => Ok(OnConflict::Abort),
            _ => Err(format!("unknown conflict policy {s:?} (expected redo, attention or abort)")),
        }
    }
}

/// Defaults applied where the spec is silent.
pub mod defaults {
    use std::time::Duration;
    pub const CONCURRENCY: u32 = 4;
    pub const TURN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    pub const MAX_TURNS: u32 = 1;
    pub const PORT_BASE: u16 = 42000;
    pub const PORTS_PER_TASK: u16 = 10;
    pub const LOG_CAP: u64 = 8 * 1024 * 1024;
    pub const MAX_REDOS: u32 = 2;
    pub const BATCH: u32 = 1;
    pub const MAX_ATTEMPTS: u32 = 3;
    pub const RETRY_BACKOFF: Duration = Duration::from_secs(30);
    /// The longest wait between two attempts, however many there were.
    pub const RETRY_BACKOFF_CAP: Duration = Duration::from_secs(600);
    /// Parkings on usage limits per task before the next limit fails it.
    pub const MAX_PARKS: u32 = 10;
    /// The most time a task spends parked in all (a weekly limit's reset fits).
    pub const MAX_PARKED: Duration = Duration::from_secs(7 * 86400);
    /// Where `notify.ntfy` topics are, unless `notify.ntfy_server` says otherwise.
    pub const NTFY_SERVER: &str = "https://ntfy.sh";
}

impl JobSpec {
    /// Parse a spec from TOML text; `file` names it in errors.
    pub fn from_toml(file: &str, text: &str) -> Result<JobSpec, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse { file: file.to_owned(), message: e.to_string() })
    }

    pub fn concurrency(&self) -> u32 {
        self.run.concurrency.unwrap_or(defaults::CONCURRENCY)
    }
    pub fn turn_timeout(&self) -> Duration {
        self.agent.turn_timeout.unwrap_or(defaults::TURN_TIMEOUT)
    }
    pub fn max_turns(&self) -> u32 {
        self.agent.max_turns.unwrap_or(defaults::MAX_TURNS)
    }
    pub fn max_attempts(&self) -> u32 {
        self.run.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS)
    }
    pub fn max_parks(&self) -> u32 {
        self.run.max_parks.unwrap_or(defaults::MAX_PARKS)
    }
    pub fn max_parked(&self) -> Duration {
        self.run.max_parked.unwrap_or(defaults::MAX_PARKED)
    }
    /// The wait before attempt `failures + 1` after `failures` transient failures (1 or more):
    /// `retry_backoff` doubled per failure after the first, capped at 10m.
    pub fn retry_backoff(&self, failures: u32) -> Duration {
        let first = self.run.retry_backoff.unwrap_or(defaults::RETRY_BACKOFF);
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        first.saturating_mul(factor).min(defaults::RETRY_BACKOFF_CAP.max(first))
    }
    pub fn merge_mode(&self) -> MergeMode {
        self.merge.mode.unwrap_or_default()
    }
    pub fn on_conflict(&self) -> OnConflict {
        self.merge.on_conflict.unwrap_or_default()
    }
    pub fn max_redos(&self) -> u32 {
        self.merge.max_redos.unwrap_or(defaults::MAX_REDOS)
    }
    pub fn batch(&self) -> u32 {
        self.merge.batch.unwrap_or(defaults::BATCH).max(1)
    }
    pub fn pick(&self) -> Pick {
        self.merge.pick.unwrap_or_default()
    }
    /// The variant named `name`.
    pub fn variant(&self, name: &str) -> Option<&VariantSpec> {
        self.variants.iter().find(|v| v.name == name)
    }
    /// `[[repos]]`: sources given, names valid and distinct, `depends_on` naming repositories
    /// of the job, each one's own selection and split valid.
    fn validate_repos(&self, err: &dyn Fn(&str, String) -> SpecError) -> Result<(), SpecError> {
        if self.repo.source.is_some() {
            return Err(err(
                "repo.source",
                "give either [repo] (one repository) or [[repos]] (several), not both".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.repos {
            if r.source.trim().is_empty() {
                return Err(err("repos.source", "a repository without a source".into()));
            }
            let name = r.name();
            names::check_repo_name(&name).map_err(|e| err("repos.name", e.to_string()))?;
            // Each name is a variable of its dependents' tasks: two that make one would hide
            // one checkout.
            if let Some(other) = self
                .repos
                .iter()
                .map(RepoEntry::name)
                .find(|o| *o != name && crate::task::upstream_env(o) == crate::task::upstream_env(&name))
            {
                return Err(err(
                    "repos.name",
                    format!(
                        "repositories {other:?} and {name:?} would both be {} for the tasks that need them; rename one",
                        crate::task::upstream_env(&name)
                    ),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(err(
                    "repos.name",
                    format!(
                        "two repositories are named {name:?} ({}); give each a distinct `name`",
                        self.repos
                            .iter()
                            .filter(|o| o.name() == name)
                            .map(|o| o.source.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        for r in &self.repos {
            for d in &r.depends_on {
                if !seen.contains(d) {
                    return Err(err(
                        "repos.depends_on",
                        format!(
                            "repository {} depends on {d:?}, which is not a repository of the job (it has {})",
                            r.name(),
                            seen.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            // Its own selection and split, checked as a job of its own would be.
            let one = self.for_repo(r);
            one.validate(None).map_err(|e| match e {
                SpecError::Invalid { field, message, .. } => {
                    err(&format!("repos.{field}"), format!("repository {}: {message}", r.name()))
                }
                other => other,
            })?;
        }
        Ok(())
    }

    /// The spec of one repository of a `[[repos]]` job: the job's fields, with the
    /// repository's source, base, selection and split.
    pub fn for_repo(&self, r: &RepoEntry) -> JobSpec {
        let mut one = self.clone();
        one.repos = Vec::new();
        one.repo = RepoSpec {
            source: Some(r.source.clone()),
            base: r.base.clone().or_else(|| self.repo.base.clone()),
        };
        if let Some(sel) = &r.select {
            one.select = sel.clone();
        }
        if let Some(split) = &r.split {
            one.split = split.clone();
        }
        one
    }

    pub fn base(&self) -> &str {
        self.repo.base.as_deref().unwrap_or("HEAD")
    }
    pub fn integration_branch(&self, job: &names::JobId) -> String {
        match &self.merge.branch {
            Some(b) => b.replace("{job}", job.as_str()),
            None => names::default_integration_branch(job),
        }
    }

    /// Check every field that can be checked without the repository. `source` is the spec's
    /// text, when it came from a file, so errors can name the line.
    pub fn validate(&self, file: Option<(&str, &str)>) -> Result<(), SpecError> {
        let err = |field: &str, message: String| SpecError::Invalid {
            location: file.and_then(|(name, text)| locate(text, field).map(|l| format!("{name}:{l}"))),
            field: field.to_owned(),
            message,
        };
        if !self.repos.is_empty() {
            self.validate_repos(&err)?;
        } else if self.repo.source.as_deref().is_none_or(str::is_empty) {
            return Err(err("repo.source", "no repository given (set repo.source or pass --repo)".into()));
        }
        if let Some(name) = &self.name
            && names::slugify(name, 40).is_empty()
        {
            return Err(err("name", format!("{name:?} has no letters or digits to make a job id from")));
        }
        for (field, globs) in
            [("select.include", &self.select.include), ("select.exclude", &self.select.exclude)]
        {
            for g in globs {
                check_repo_path(g).map_err(|m| err(field, format!("{g:?} {m}")))?;
                globset::Glob::new(g).map_err(|e| err(field, format!("bad glob {g:?}: {e}")))?;
            }
        }
        for f in &self.select.files {
            check_repo_path(f).map_err(|m| err("select.files", format!("{f:?} {m}")))?;
        }
        if let Some(re) = &self.select.grep {
            regex::bytes::Regex::new(re).map_err(|e| err("select.grep", format!("invalid regex: {e}")))?;
        }
        if self.split.rule == SplitRule::Dirs && self.split.depth == 0 {
            return Err(err("split.depth", "must be at least 1".into()));
        }
        if self.variants.is_empty() {
            self.validate_agent(&self.agent, None, &err)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &self.variants {
            if v.name.is_empty()
                || v.name.len() > 30
                || !v.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(err(
                    "variants.name",
                    format!(
                        "{:?} is not a variant name (lowercase letters, digits and -, at most 30)",
                        v.name
                    ),
                ));
            }
            if !seen.insert(v.name.as_str()) {
                return Err(err("variants.name", format!("{:?} is given twice", v.name)));
            }
            self.validate_agent(&v.agent(&self.agent), Some(&v.name), &err)?;
        }
        // A spec travels in clear (over NATS, in the state): credentials come from the worker.
        let envs = std::iter::once(("agent.env", &self.agent.env))
            .chain(self.variants.iter().map(|v| ("variants.env", &v.env)));
        for (field, env) in envs {
            if let Some(name) = env.keys().find(|k| crate::env::looks_secret(k)) {
                return Err(err(
                    field,
                    format!(
                        "{name} looks like a credential, and a job spec is no place for one (it travels \
                         in clear to the workers): give it to the worker instead, from its environment \
                         (`--agent-env {name}`) or a file (`--agent-env-file {name}=PATH`)"
                    ),
                ));
            }
        }
        if self.merge.pick.is_some() && self.variants.is_empty() {
            return Err(err("merge.pick", "picks between variants; the job has none".into()));
        }
        if self.agent.turn_timeout.is_some_and(|d| d.is_zero()) {
            return Err(err("agent.turn_timeout", "must be longer than zero".into()));
        }
        if self.agent.max_turns == Some(0) {
            return Err(err("agent.max_turns", "must be at least 1".into()));
        }
        if self.run.concurrency == Some(0) {
            return Err(err("run.concurrency", "must be at least 1".into()));
        }
        if self.run.max_attempts == Some(0) {
            return Err(err("run.max_attempts", "must be at least 1".into()));
        }
        if self.run.deadline.is_some_and(|d| d.is_zero()) {
            return Err(err("run.deadline", "must be longer than zero".into()));
        }
        if self.run.max_parked.is_some_and(|d| d.is_zero()) {
            return Err(err(
                "run.max_parked",
                "must be longer than zero (use run.max_parks = 0 to never park)".into(),
            ));
        }
        if let Some(p) = &self.run.pool
            && (p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(err("run.pool", format!("{p:?} is not a pool name (letters, digits, - and _)")));
        }
        if self.placement.long.is_some_and(|d| d.is_zero()) {
            return Err(err("placement.long", "must be longer than zero".into()));
        }
        if self.placement.expected.is_some_and(|d| d.is_zero()) {
            return Err(err("placement.expected", "must be longer than zero".into()));
        }
        if self.run.ports_per_task == Some(0) {
            return Err(err("run.ports_per_task", "must be at least 1".into()));
        }
        for p in &self.run.include_ignored {
            check_repo_path(p.trim_end_matches('/'))
                .map_err(|m| err("run.include_ignored", format!("{p:?} {m}")))?;
        }
        for (field, v) in [("budget.task_usd", self.budget.task_usd), ("budget.job_usd", self.budget.job_usd)]
        {
            if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(err(field, "must be a positive number of dollars".into()));
            }
        }
        if self.budget.task_tokens == Some(0) {
            return Err(err("budget.task_tokens", "must be at least 1".into()));
        }
        for (model, p) in &self.prices {
            let all = [Some(p.input), Some(p.output), p.cache_read, p.cache_write];
            if model.trim().is_empty() || all.iter().flatten().any(|v| !(*v >= 0.0 && v.is_finite())) {
                return Err(err(
                    "prices",
                    format!("{model:?}: prices are USD per million tokens, 0 or more"),
                ));
            }
        }
        if self.merge.batch == Some(0) {
            return Err(err("merge.batch", "must be at least 1".into()));
        }
        if self.merge.batch.is_some_and(|b| b > 1) && self.checks.integration.is_none() {
            return Err(err(
                "merge.batch",
                "batches only matter with checks.integration (set it, or drop merge.batch)".into(),
            ));
        }
        if self.checks.integration.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(err("checks.integration", "is empty".into()));
        }
        if let Some(b) = &self.merge.branch {
            let probe = b.replace("{job}", "job");
            names::check_branch(&probe, "merge.branch")
                .map_err(|e: NameError| err("merge.branch", e.to_string()))?;
        }
        self.notify.validate(&err)?;
        Ok(())
    }
}

impl JobSpec {
    /// An agent (the job's, or a variant's with its changes) has what its kind needs.
    fn validate_agent(
        &self,
        agent: &AgentSpec,
        variant: Option<&str>,
        err: &impl Fn(&str, String) -> SpecError,
    ) -> Result<(), SpecError> {
        let (table, who) = match variant {
            None => ("agent", String::new()),
            Some(v) => ("variants", format!("variant {v:?}: ")),
        };
        let field = |k: &str| format!("{table}.{k}");
        if let Some(c) = &agent.custom {
            if c.is_empty() || c.contains(['/', '\\']) || c.starts_with('.') {
                return Err(err(
                    &field("custom"),
                    format!("{who}{c:?} is not an agent name (NAME of .github/agents/NAME.agent.md)"),
                ));
            }
            if agent.kind == Some(AgentKind::Replace) {
                return Err(err(
                    &field("custom"),
                    format!("{who}the replace agent runs no model; a custom agent needs an agent CLI"),
                ));
            }
        } else if agent.definition.is_some() {
            return Err(err(
                &field("definition"),
                format!("{who}is filled in by grove from agent.custom; name the agent with agent.custom"),
            ));
        }
        match agent.kind {
            None => Err(err(&field("kind"), format!("{who}no agent given (set agent.kind or pass --agent)"))),
            Some(AgentKind::Replace) => {
                let Some(p) = &agent.pattern else {
                    return Err(err(&field("pattern"), format!("{who}the replace agent needs a pattern")));
                };
                regex::Regex::new(p)
                    .map_err(|e| err(&field("pattern"), format!("{who}invalid regex: {e}")))?;
                if agent.replace.is_none() {
                    return Err(err(
                        &field("replace"),
                        format!("{who}the replace agent needs a replacement"),
                    ));
                }
                Ok(())
            }
            Some(AgentKind::Command) => {
                if agent.command.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err(err(
                        &field("command"),
                        format!("{who}the command agent needs a program to run"),
                    ));
                }
                Ok(())
            }
            Some(kind) => {
                if agent.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
                    return Err(err(&field("model"), format!("{who}is empty")));
                }
                if agent.program.as_deref().is_some_and(|m| m.trim().is_empty()) {
                    return Err(err(&field("program"), format!("{who}is empty")));
                }
                if !agent.command.is_empty() {
                    return Err(err(
                        &field("command"),
                        format!(
                            "{who}the {} agent builds its own command line: give extra arguments in agent.args",
                            kind.as_str()
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Refuse a path or glob that could leave the repository: absolute, `..`, or a drive prefix.
pub fn check_repo_path(p: &str) -> Result<(), &'static str> {
    names::check_repo_path(p)
}

/// Find the 1-based line of a dotted field (`select.grep`) in TOML text: the key's line inside
/// its `[table]`, or the table's header. Good enough for the flat shape of a job spec.
fn locate(text: &str, field: &str) -> Option<usize> {
    let (table, key) = match field.rsplit_once('.') {
        Some((t, k)) => (Some(t), k),
        None => (None, field),
    };
    let mut current: Option<String> = None;
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            current = Some(l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
            if current.as_deref() == table {
                header = Some(i + 1);
            }
            continue;
        }
        if current.as_deref() == table
            && let Some(rest) = l.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(i + 1);
        }
    }
    header
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

pub(crate) fn ser_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

/// Parse `90s`, `10m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e} (examples: 90s, 10m, 2h)"))
}

impl fmt::Display for SplitRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example is a valid spec: every field it shows exists and parses.
    /// A repository's default name is the last part of its path or URL, without `.git`.
    #[test]
    fn repository_names_come_from_their_source() {
        let name = |source: &str| RepoEntry { source: source.into(), ..RepoEntry::default() }.name();
        assert_eq!(name("../lib"), "lib");
        assert_eq!(name("/src/lib/"), "lib");
        assert_eq!(name("/src/lib/.git"), "lib");
        assert_eq!(name("git@github.com:acme/app1.git"), "app1");
        assert_eq!(name("https://gitlab.example.com/group/sub/My_Service.git"), "my_service");
        assert_eq!(
            RepoEntry { name: Some("core".into()), source: "x".into(), ..RepoEntry::default() }.name(),
            "core"
        );
    }

    /// `[[repos]]` is refused with `[repo]`, with names that collide, and with a `depends_on`
    /// outside the job, each naming the field.
    #[test]
    fn repos_are_validated() {
        let spec = |text: &str| {
            JobSpec::from_toml(
                "job.toml",
                &format!("{text}\n[agent]\nkind = \"replace\"\npattern = \"a\"\nreplace = \"b\"\n"),
            )
        };
        let err = |text: &str| {
            spec(text)
                .and_then(|s| s.validate(None).map(|()| s))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("[repo]\nsource = \"a\"\n[[repos]]\nsource = \"b\"\n").contains("not both"));
        assert!(
            err("[[repos]]\nsource = \"a/lib\"\n[[repos]]\nsource = \"b/lib\"\n")
                .contains("two repositories are named \"lib\"")
        );
        assert!(
            err("[[repos]]\nsource = \"my-lib\"\n[[repos]]\nsource = \"my_lib\"\n")
                .contains("GROVE_UPSTREAM_MY_LIB")
        );
        assert!(
            err("[[repos]]\nsource = \"a\"\ndepends_on = [\"z\"]\n").contains("not a repository of the job")
        );
        let ok = spec("[[repos]]\nsource = \"lib\"\n[[repos]]\nsource = \"app\"\ndepends_on = [\"lib\"]\n")
            .expect("parses");
        ok.validate(None).expect("valid");
        let one = ok.for_repo(&ok.repos[1]);
        assert_eq!(one.repo.source.as_deref(), Some("app"));
        assert!(one.repos.is_empty());
    }

    #[test]
    fn the_example_spec_is_valid() {
        let text = include_str!("../../../examples/job.toml");
        let spec = JobSpec::from_toml("examples/job.toml", text).expect("examples/job.toml parses");
        spec.validate(Some(("examples/job.toml", text))).expect("examples/job.toml is valid");
        assert_eq!(spec.placement.long, Some(Duration::from_secs(7200)));
        assert_eq!(spec.run.deadline, Some(Duration::from_secs(36000)));
        assert_eq!(spec.max_attempts(), 3);
        assert_eq!(spec.run.retry_backoff, Some(Duration::from_secs(30)));
    }

    #[test]
    fn retry_backoff_doubles_and_is_capped() {
        let mut spec = JobSpec::from_toml("t", "").expect("empty spec");
        let secs = |n| spec.retry_backoff(n).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(5), secs(6), secs(40)], [30, 60, 120, 480, 600, 600]);
        spec.run.retry_backoff = Some(Duration::from_secs(1));
        assert_eq!(spec.retry_backoff(3), Duration::from_secs(4));
        spec.run.max_attempts = Some(0);
        assert!(spec.validate(None).is_err(), "max_attempts 0 is refused");
    }

    const GOOD: &str = r#"
name = "rename"
prompt = "Rename FileId to SourceFileId"

[repo]
source = "."

[select]
grep = '\bFileId\b'

[split]
rule = "cargo"

[agent]
kind = "replace"
pattern = '\bFileId\b'
replace = "SourceFileId"
turn_timeout = "5m"
"#;

    #[test]
    fn a_good_spec_parses_and_validates() {
        let spec = JobSpec::from_toml("job.toml", GOOD).expect("parses");
        spec.validate(Some(("job.toml", GOOD))).expect("valid");
        assert_eq!(spec.split.rule, SplitRule::Cargo);
        assert_eq!(spec.turn_timeout(), Duration::from_secs(300));
        assert_eq!(spec.base(), "HEAD");
    }

    #[test]
    fn a_spec_survives_toml_serialization() {
        let mut spec = JobSpec::from_toml("job.toml", GOOD).expect("parses");
        spec.agent.command = vec!["claude".into(), "-p".into(), "{prompt}".into()];
        spec.run.concurrency = Some(3);
        let text = toml::to_string(&spec).expect("serializes");
        assert_eq!(JobSpec::from_toml("wire", &text).expect("parses back"), spec, "{text}");
    }

    #[test]
    fn a_wrong_type_names_file_line_and_field() {
        let text = GOOD.replace("rule = \"cargo\"", "rule = \"cargo\"\ndepth = \"two\"");
        let e = JobSpec::from_toml("job.toml", &text).unwrap_err().to_string();
        assert!(e.starts_with("job.toml: "), "{e}");
        assert!(e.contains("line 13"), "{e}");
        assert!(e.contains("depth"), "{e}");
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let text = GOOD.replace("[split]", "[split]\nrulez = 1");
        let e = JobSpec::from_toml("job.toml", &text).unwrap_err().to_string();
        assert!(e.contains("rulez"), "{e}");
    }

    #[test]
    fn a_bad_regex_names_the_line() {
        let text = GOOD.replace(r"grep = '\bFileId\b'", "grep = 'File(Id'");
        let spec = JobSpec::from_toml("job.toml", &text).expect("parses");
        let e = spec.validate(Some(("job.toml", &text))).unwrap_err().to_string();
        assert!(e.starts_with("job.toml:9: select.grep: invalid regex"), "{e}");
    }

    #[test]
    fn variants_change_the_agent_and_are_checked() {
        let text = format!(
            "{GOOD}\n[merge]\npick = \"manual\"\n\n[[variants]]\nname = \"a\"\n\n[[variants]]\nname = \"b\"\ncommand = [\"claude\"]\n"
        );
        let spec = JobSpec::from_toml("job.toml", &text).expect("parses");
        spec.validate(None).expect("valid");
        assert_eq!(spec.pick(), Pick::Manual);
        assert_eq!(spec.variants[1].agent(&spec.agent).kind, Some(AgentKind::Replace), "kind stays");
        let mut bad = spec.clone();
        bad.variants[1].name = "a".into();
        assert!(bad.validate(None).unwrap_err().to_string().contains("given twice"));
        let mut bad = spec.clone();
        bad.variants.clear();
        assert!(bad.validate(None).unwrap_err().to_string().starts_with("merge.pick"));
        let text = toml::to_string(&spec).expect("serializes");
        assert_eq!(JobSpec::from_toml("wire", &text).expect("parses back"), spec, "{text}");
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in ["../x/**", "/etc/**", "a/../../b", "C:/x"] {
            let mut spec = JobSpec::from_toml("job.toml", GOOD).expect("parses");
            spec.select.include = vec![bad.to_owned()];
            let e = spec.validate(None).unwrap_err().to_string();
            assert!(e.starts_with("select.include: "), "{e}");
        }
    }

    /// Credentials never come from a job spec: it travels in clear to the workers.
    #[test]
    fn credentials_in_agent_env_are_refused() {
        let text = GOOD
            .replace("turn_timeout = \"5m\"", "turn_timeout = \"5m\"\nenv = { ANTHROPIC_API_KEY = \"sk\" }");
        let spec = JobSpec::from_toml("job.toml", &text).expect("parses");
        let e = spec.validate(Some(("job.toml", &text))).unwrap_err().to_string();
        assert!(e.starts_with("job.toml:19: agent.env: ANTHROPIC_API_KEY looks like a credential"), "{e}");
        assert!(e.contains("--agent-env ANTHROPIC_API_KEY"), "{e}");
        for name in ["GROVE_NATS_TOKEN", "GROVE_TOKEN", "DEPLOY_TOKEN"] {
            let mut bad = JobSpec::from_toml("job.toml", GOOD).expect("parses");
            bad.variants.push(VariantSpec { name: "a".into(), ..VariantSpec::default() });
            bad.variants[0].env.insert(name.into(), "x".into());
            let e = bad.validate(None).unwrap_err().to_string();
            assert!(e.starts_with(&format!("variants.env: {name} looks like a credential")), "{e}");
        }
        let mut fine = JobSpec::from_toml("job.toml", GOOD).expect("parses");
        fine.agent.env.insert("ANTHROPIC_BASE_URL".into(), "http://127.0.0.1:1".into());
        fine.validate(None).expect("not a credential");
    }

    /// `[notify]`: bad URLs, topics and empty commands are refused by field, with the line.
    #[test]
    fn bad_notify_config_is_refused_by_field() {
        let with = |table: &str| format!("{GOOD}\n[notify]\n{table}\n");
        let ok = with(
            "webhook = \"http://127.0.0.1:8080/hook\"\nntfy = \"grove-1\"\nntfy_server = \"https://[::1]:2586\"\ncommand = [\"sh\", \"-c\", \"cat\"]\nbell = true",
        );
        let spec = JobSpec::from_toml("job.toml", &ok).expect("parses");
        spec.validate(Some(("job.toml", &ok))).expect("valid");
        assert_eq!(spec.notify.ntfy_server(), "https://[::1]:2586");
        let back: JobSpec = toml::from_str(&toml::to_string(&spec).expect("toml")).expect("parses back");
        assert_eq!(back.notify, spec.notify);
        for (table, field, says) in [
            ("webhook = \"hooks.example/x\"", "notify.webhook", "is not a URL"),
            ("webhook = \"ftp://h/x\"", "notify.webhook", "not an http"),
            ("webhook = \"http://:80/x\"", "notify.webhook", "no host"),
            ("webhook = \"http://h:99999/x\"", "notify.webhook", "port"),
            ("webhook = \"https://u:p@h/x\"", "notify.webhook", "credentials"),
            ("webhook = \"http://h/a b\"", "notify.webhook", "spaces"),
            ("ntfy = \"a/b\"", "notify.ntfy", "not an ntfy topic"),
            ("ntfy = \"\"", "notify.ntfy", "not an ntfy topic"),
            ("ntfy_server = \"http://h\"", "notify.ntfy_server", "no notify.ntfy topic"),
            ("ntfy = \"t\"\nntfy_server = \"h\"", "notify.ntfy_server", "is not a URL"),
            ("command = []", "notify.command", "is empty"),
            ("command = [\"\"]", "notify.command", "is empty"),
        ] {
            let text = with(table);
            let spec = JobSpec::from_toml("job.toml", &text).expect("parses");
            let e = spec.validate(Some(("job.toml", &text))).unwrap_err().to_string();
            assert!(e.starts_with("job.toml:") && e.contains(&format!("{field}: ")), "{table}: {e}");
            assert!(e.contains(says), "{table}: {e}");
        }
        assert!(JobSpec::from_toml("job.toml", &with("url = \"http://h\"")).is_err(), "unknown field");
    }
}
