//! Pull requests (GitHub, GitHub Enterprise, Gitea/Forgejo) and merge requests (GitLab) for
//! `grove pr`: one per repository of a job, each body linking the others in dependency
//! order, updated rather than duplicated on a re-run, merged in order only when green.
//!
//! - [`Remote::parse`] reads a git remote URL; [`Hosts`] (the `[forge]` config table) and
//!   [`HostConfig::builtin`] say which [`Kind`] of host it is and where its API is;
//!   [`HostConfig::token`] finds the [`Token`] (which never prints).
//! - [`Forge`] talks to one host: [`Forge::upsert`], [`Forge::status`], [`Forge::merge`].
//!   [`Forges`] keeps one per host, so writes to a host share one throttle.
//! - [`open_all`] opens or updates the pull requests of repositories in dependency order
//!   with the links; [`merge_in_order`] merges them, stopping at the first that cannot.
//! - With the `fake` feature, [`fake`] is a loopback code host for tests.
//!
//! HTTP: one hyper client (hyper-util, rustls with the system's roots, as grove's
//! notifications and kube client) for all three kinds, rather than octocrab for GitHub:
//! the three share the throttle, the rate-limit waits and the error shapes this way, and
//! octocrab would add a second HTTP stack whose rate-limit retries are GitHub-only and
//! opt-in. Writes to one host start at least [`HostConfig::min_write_interval`] apart
//! (default 1 s). A 429 or 403 with `Retry-After` waits that long; a 403 with
//! `x-ratelimit-remaining: 0` waits until `x-ratelimit-reset`; a 403 naming a secondary
//! rate limit without either (or GitHub's 422 "was submitted too quickly") waits
//! [`HostConfig::secondary_wait`]. At most [`HostConfig::max_retries`] retries, none
//! after a wait longer than [`HostConfig::max_wait`]; every wait is logged at info. 404,
//! 409 and other 422s are never retried; a 502-504 on a read is, after a doubling wait.
//!
//! Limits: labels and reviewers are only added, never removed; GitHub cannot turn a draft
//! ready (or back) over REST, so an existing pull request keeps its draft flag there
//! (GitLab's `Draft: ` and Gitea's `WIP: ` prefixes follow `--draft`); merges are merge
//! commits; a reviewer GitHub refuses (the author) is logged and left out.
//!
//! ```no_run
//! # async fn run() -> Result<(), grove_forge::Error> {
//! use grove_forge::{Forges, Hosts, MergeItem, OpenItem, PrSpec, Remote};
//!
//! let mut forges = Forges::new(Hosts::default(), |k| std::env::var(k).ok());
//! let mut items = Vec::new();
//! for (name, url) in [("lib", "git@github.com:acme/lib.git"), ("app", "git@github.com:acme/app.git")] {
//!     let remote = Remote::parse(url)?;
//!     let spec = PrSpec { head: "grove/job-7".into(), base: "main".into(), title: "Rename".into(), ..PrSpec::default() };
//!     items.push(OpenItem { name: name.into(), forge: forges.get(&remote)?, project: remote.project, spec });
//! }
//! let prs = grove_forge::open_all(&items).await?;
//! let merges: Vec<MergeItem> = items
//!     .into_iter()
//!     .zip(prs)
//!     .map(|(i, pr)| MergeItem { name: i.name, forge: i.forge, project: i.project, pr })
//!     .collect();
//! for (name, step) in grove_forge::merge_in_order(&merges, false).await {
//!     println!("{name}: {step}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! API boundary: nothing here prints, reads `$HOME` or the process environment on its own
//! (callers pass a lookup to [`HostConfig::token`]), or runs git: pushing the branches is
//! the caller's.

mod config;
mod gitea;
mod github;
mod gitlab;
mod http;

#[cfg(feature = "fake")]
pub mod fake;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use config::{
    DEFAULT_MAX_RETRIES, DEFAULT_MAX_WAIT, DEFAULT_SECONDARY_WAIT, DEFAULT_TIMEOUT, DEFAULT_WRITE_INTERVAL,
    HostConfig, HostEntry, Hosts, Kind, Remote, Token, read_credentials,
};
pub use http::Throttle;

/// What went wrong talking to a code host. No variant carries a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not a git remote this can read.
    #[error("{url:?} is not a remote URL of a code host (https://host/owner/repo, git@host:owner/repo)")]
    Remote { url: String },
    /// The host is not a built-in one and has no `[forge."HOST"]` entry.
    #[error("{host} is not a known code host: add [forge.\"{host}\"] with its kind and api to the config")]
    UnknownHost { host: String },
    /// The configuration is wrong.
    #[error("forge config: {0}")]
    Config(String),
    /// No token in the environment nor in the credentials file.
    #[error("no token for {host}: set {vars}{}", .credentials.as_ref().map(|p| format!(" or add \"{host}\" = \"TOKEN\" to {}", p.display())).unwrap_or_default())]
    NoToken { host: String, vars: String, credentials: Option<PathBuf> },
    /// The token cannot be sent in a header (a control character, a newline).
    #[error("the token for {host} has characters a header cannot carry")]
    BadToken { host: String },
    /// The credentials file cannot be read.
    #[error("reading credentials file {}", .path.display())]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The credentials file is not `"host" = "token"` TOML.
    #[error("credentials file {}{}: not \"host\" = \"token\" lines", .path.display(), .at.map(|l| format!(" line {l}")).unwrap_or_default())]
    CredentialsSyntax { path: PathBuf, at: Option<usize> },
    /// https:// is not available (no system root certificates).
    #[error("https is not available: {0}")]
    NoTls(String),
    /// The request got no answer (refused, DNS, TLS).
    #[error("{what}")]
    Http {
        what: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The answer's body could not be read.
    #[error("{what}: reading the answer: {message}")]
    Body { what: String, message: String },
    /// No answer in time.
    #[error("{what}: no answer within {after:?}")]
    TimedOut { what: String, after: Duration },
    /// The host refused the token (401).
    #[error("{what}: the host refused the token (401 {message}); check its value and scopes")]
    Unauthorized { what: String, message: String },
    /// Still rate limited after the retries.
    #[error("{what}: still rate limited after {tries} tries: {message}")]
    RateLimited { what: String, tries: u32, message: String },
    /// A rate limit asks for a longer wait than allowed.
    #[error("{what}: the host asks to wait {wait:?}, longer than max_wait {cap:?}; try again later")]
    WaitTooLong { what: String, wait: Duration, cap: Duration },
    /// The host answered with an unexpected status.
    #[error("{what}: {status}: {message}")]
    Status { what: String, status: u16, message: String },
    /// The answer lacks what it should have.
    #[error("{what}: unexpected answer: {message}")]
    Shape { what: String, message: String },
    /// A label named on the command line does not exist (Gitea labels are by id).
    #[error("{project} has no label {label:?}")]
    NoLabel { project: String, label: String },
    /// A reviewer named on the command line is not a user of the host.
    #[error("{host} has no user {user:?}")]
    NoUser { host: String, user: String },
    /// The host said a pull request exists but none can be found.
    #[error("{project}: the host says a pull request for {head} → {base} exists but lists none open")]
    Vanished { project: String, head: String, base: String },
    /// The pull request cannot be merged (405/406/422): the host's message says why.
    #[error("{url} cannot be merged: {message}")]
    NotMergeable { url: String, message: String },
    /// The head moved since the status was read (409).
    #[error("{url}: the head branch moved; check it again before merging: {message}")]
    HeadMoved { url: String, message: String },
    /// One repository's pull request failed.
    #[error("{name}")]
    Repo {
        name: String,
        #[source]
        source: Box<Error>,
    },
}

/// The pull request to open or update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrSpec {
    /// The branch with the changes (pushed by the caller).
    pub head: String,
    /// The branch it merges into.
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
    /// Added to the pull request's labels (none removed).
    pub labels: Vec<String>,
    /// Users asked to review (added; `org/team` is a team on GitHub).
    pub reviewers: Vec<String>,
}

/// Where a pull request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrState {
    Open,
    Draft,
    Merged,
    Closed,
}

impl fmt::Display for PrState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrState::Open => "open",
            PrState::Draft => "draft",
            PrState::Merged => "merged",
            PrState::Closed => "closed",
        })
    }
}

/// One check's result, as the kinds' modules read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Pass,
    Fail,
    Pending,
}

impl Checks {
    /// The checks of a commit from each check's name and result.
    fn from_runs(runs: impl IntoIterator<Item = (String, Run)>) -> Checks {
        let (mut failed, mut pending, mut any) = (Vec::new(), Vec::new(), false);
        for (name, run) in runs {
            any = true;
            match run {
                Run::Fail => failed.push(name),
                Run::Pending => pending.push(name),
                Run::Pass => {}
            }
        }
        match (any, failed.is_empty(), pending.is_empty()) {
            (false, _, _) => Checks::None,
            (true, false, _) => Checks::Failed(failed),
            (true, true, false) => Checks::Pending(pending),
            (true, true, true) => Checks::Passed,
        }
    }
}

/// The same text, whatever its line ends and trailing space (hosts store `\r\n` from web
/// edits).
fn same_text(a: &str, b: &str) -> bool {
    a.replace("\r\n", "\n").trim_end() == b.replace("\r\n", "\n").trim_end()
}

/// The labels of `wanted` not in `have` (case-insensitive, as hosts compare them).
fn missing<'a>(wanted: &'a [String], have: &[String]) -> Vec<&'a String> {
    let mut out: Vec<&String> = Vec::new();
    for w in wanted {
        if !have.iter().any(|h| h.eq_ignore_ascii_case(w)) && !out.iter().any(|o| o.eq_ignore_ascii_case(w)) {
            out.push(w);
        }
    }
    out
}

/// A pull or merge request as the host has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pr {
    /// The number (GitLab: the project-local iid).
    pub number: u64,
    /// Its web page.
    pub url: String,
    pub state: PrState,
    pub draft: bool,
    /// Opened by this call (not found open before).
    pub created: bool,
    /// The title as the host stores it (GitLab/Gitea drafts carry a `Draft:`/`WIP:` prefix).
    pub title: String,
    pub body: String,
    pub head_sha: Option<String>,
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
}

/// The checks of a pull request's head commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checks {
    /// All finished and none failed.
    Passed,
    /// These failed (or errored, were cancelled, timed out).
    Failed(Vec<String>),
    /// None failed, these have not finished.
    Pending(Vec<String>),
    /// The commit has no checks.
    None,
}

impl fmt::Display for Checks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checks::Passed => f.write_str("passed"),
            Checks::Failed(names) => write!(f, "failed: {}", names.join(", ")),
            Checks::Pending(names) if names.is_empty() => f.write_str("pending"),
            Checks::Pending(names) => write!(f, "pending: {}", names.join(", ")),
            Checks::None => f.write_str("none"),
        }
    }
}

/// A pull request's state, checks and mergeability.
#[derive(Debug, Clone, PartialEq)]
pub struct PrStatus {
    pub state: PrState,
    pub checks: Checks,
    /// Whether the host can merge it (None: not computed yet).
    pub mergeable: Option<bool>,
    /// The host's word on mergeability, when it has one: GitHub's `mergeable_state`
    /// (`clean`, `dirty`, `blocked`, `behind`), GitLab's `detailed_merge_status`
    /// (`mergeable`, `conflict`, `not_approved`, ...).
    pub merge_detail: Option<String>,
    pub url: String,
    pub head_sha: Option<String>,
}

/// A merge that happened.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOutcome {
    /// The merge commit, when the host says.
    pub sha: Option<String>,
}

/// One code host's API.
#[derive(Debug, Clone)]
pub struct Forge {
    api: Arc<http::Api>,
}

impl Forge {
    /// A client for `config`'s host with its own write throttle.
    pub fn new(config: HostConfig, token: &Token) -> Result<Forge, Error> {
        let throttle = Arc::new(Throttle::new(config.min_write_interval));
        Ok(Forge { api: Arc::new(http::Api::new(config, token, throttle)?) })
    }

    pub fn kind(&self) -> Kind {
        self.api.kind
    }

    pub fn config(&self) -> &HostConfig {
        &self.api.config
    }

    /// How a pull request is referred to in text: `name#12`, on GitLab `name!12`.
    pub fn reference(&self, name: &str, pr: &Pr) -> String {
        let sigil = if self.kind() == Kind::GitLab { '!' } else { '#' };
        format!("{name}{sigil}{}", pr.number)
    }

    /// The open pull request from `head` into `base` in `project`, if there is one.
    pub async fn find(&self, project: &str, head: &str, base: &str) -> Result<Option<Pr>, Error> {
        self.find_in(project, head, base, false).await
    }

    /// The latest pull request from `head` into `base` in any state (open, merged, closed),
    /// for `grove pr --status` and `--merge` after some have merged.
    pub async fn find_latest(&self, project: &str, head: &str, base: &str) -> Result<Option<Pr>, Error> {
        self.find_in(project, head, base, true).await
    }

    async fn find_in(&self, project: &str, head: &str, base: &str, any: bool) -> Result<Option<Pr>, Error> {
        match self.kind() {
            Kind::GitHub => github::find(&self.api, project, head, base, any).await,
            Kind::GitLab => gitlab::find(&self.api, project, head, base, any).await,
            Kind::Gitea => gitea::find(&self.api, project, head, base, any).await,
        }
    }

    /// Updates the open pull request for `spec.head` → `spec.base`, or opens one.
    pub async fn upsert(&self, project: &str, spec: &PrSpec) -> Result<Pr, Error> {
        let existing = self.find(project, &spec.head, &spec.base).await?;
        self.put(project, spec, existing).await
    }

    /// Updates `existing` to `spec` (writing only what differs), or opens a pull request;
    /// a create the host refuses as a duplicate updates the one it has.
    async fn put(&self, project: &str, spec: &PrSpec, existing: Option<Pr>) -> Result<Pr, Error> {
        let pr = match existing {
            Some(pr) => pr,
            None => {
                let created = match self.kind() {
                    Kind::GitHub => github::create(&self.api, project, spec).await?,
                    Kind::GitLab => gitlab::create(&self.api, project, spec).await?,
                    Kind::Gitea => gitea::create(&self.api, project, spec).await?,
                };
                match created {
                    Some(pr) => return Ok(pr),
                    None => {
                        tracing::info!(
                            project,
                            head = spec.head,
                            "a pull request exists already; updating it"
                        );
                        self.find(project, &spec.head, &spec.base).await?.ok_or_else(|| Error::Vanished {
                            project: project.to_owned(),
                            head: spec.head.clone(),
                            base: spec.base.clone(),
                        })?
                    }
                }
            }
        };
        match self.kind() {
            Kind::GitHub => github::update(&self.api, project, pr, spec).await,
            Kind::GitLab => gitlab::update(&self.api, project, pr, spec).await,
            Kind::Gitea => gitea::update(&self.api, project, pr, spec).await,
        }
    }

    /// `pr`'s state, its head commit's checks, and whether it can merge.
    pub async fn status(&self, project: &str, pr: &Pr) -> Result<PrStatus, Error> {
        match self.kind() {
            Kind::GitHub => github::status(&self.api, project, pr.number).await,
            Kind::GitLab => gitlab::status(&self.api, project, pr.number).await,
            Kind::Gitea => gitea::status(&self.api, project, pr.number).await,
        }
    }

    /// Merges `pr` (a merge commit), when its head is still `head_sha` if given.
    pub async fn merge(&self, project: &str, pr: &Pr, head_sha: Option<&str>) -> Result<MergeOutcome, Error> {
        match self.kind() {
            Kind::GitHub => github::merge(&self.api, project, pr, head_sha).await,
            Kind::GitLab => gitlab::merge(&self.api, project, pr, head_sha).await,
            Kind::Gitea => gitea::merge(&self.api, project, pr, head_sha).await,
        }
    }
}

/// Looks an environment variable up.
type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One [`Forge`] per host, made on first use, so writes to one host share a throttle.
pub struct Forges {
    hosts: Hosts,
    env: EnvLookup,
    made: HashMap<String, Forge>,
}

impl Forges {
    /// `env` looks a variable up (`|k| std::env::var(k).ok()`).
    pub fn new(hosts: Hosts, env: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Forges {
        Forges { hosts, env: Box::new(env), made: HashMap::new() }
    }

    /// The forge of `remote`'s host.
    pub fn get(&mut self, remote: &Remote) -> Result<Forge, Error> {
        if let Some(f) = self.made.get(&remote.host) {
            return Ok(f.clone());
        }
        let config = self.hosts.config(&remote.host)?;
        let token = config.token(&self.env)?;
        let forge = Forge::new(config, &token)?;
        self.made.insert(remote.host.clone(), forge.clone());
        Ok(forge)
    }
}

const LINKS_START: &str = "<!-- grove:links -->";
const LINKS_END: &str = "<!-- /grove:links -->";

/// `body` without a links section [`body_with_links`] added.
pub fn body_without_links(body: &str) -> String {
    let Some(start) = body.find(LINKS_START) else { return body.to_owned() };
    let after = &body[start..];
    let end = after.find(LINKS_END).map_or(body.len(), |e| start + e + LINKS_END.len());
    let mut out = body[..start].trim_end().to_owned();
    let rest = body[end..].trim();
    if !rest.is_empty() {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(rest);
    }
    out
}

/// `body` with a section naming the pull requests to merge before this one (`upstream`)
/// and after it (`downstream`), each `(reference, url)` in order. The section is marked,
/// so a body that has one gets it replaced, not a second one.
pub fn body_with_links(body: &str, upstream: &[(String, String)], downstream: &[(String, String)]) -> String {
    let mut out = body_without_links(body);
    if upstream.is_empty() && downstream.is_empty() {
        return out;
    }
    let list = |links: &[(String, String)]| {
        links.iter().map(|(name, url)| format!("[{name}]({url})")).collect::<Vec<_>>().join(", ")
    };
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(LINKS_START);
    out.push_str("\n---\nPart of one change across repositories; grove merges them in this order.\n");
    if !upstream.is_empty() {
        out.push_str(&format!("\nMerge after: {}\n", list(upstream)));
    }
    if !downstream.is_empty() {
        out.push_str(&format!("\nMerge before: {}\n", list(downstream)));
    }
    out.push_str(LINKS_END);
    out
}

/// One repository's pull request for [`open_all`].
#[derive(Debug, Clone)]
pub struct OpenItem {
    /// The repository's name in the job (`lib`), used in the links.
    pub name: String,
    pub forge: Forge,
    pub project: String,
    pub spec: PrSpec,
}

/// Opens or updates one pull request per item, `items` in dependency order, each body
/// linking the ones before it ("merge after") and after it ("merge before").
///
/// Finds the open ones first; opens those missing, each with the links known by then;
/// then brings every one to its final title, body and labels, writing only what differs.
/// A first run of n repositories makes n creates and n-1 body updates (plus labels and
/// reviewers); a re-run of the same makes no writes.
pub async fn open_all(items: &[OpenItem]) -> Result<Vec<Pr>, Error> {
    let named = |name: &str| {
        let name = name.to_owned();
        move |e: Error| Error::Repo { name: name.clone(), source: Box::new(e) }
    };
    let mut prs: Vec<Option<Pr>> = Vec::with_capacity(items.len());
    for item in items {
        prs.push(
            item.forge
                .find(&item.project, &item.spec.head, &item.spec.base)
                .await
                .map_err(named(&item.name))?,
        );
    }
    let links = |prs: &[Option<Pr>], i: usize| {
        let link = |j: usize| {
            prs[j].as_ref().map(|pr: &Pr| (items[j].forge.reference(&items[j].name, pr), pr.url.clone()))
        };
        let up: Vec<_> = (0..i).filter_map(link).collect();
        let down: Vec<_> = (i + 1..items.len()).filter_map(link).collect();
        (up, down)
    };
    for (i, item) in items.iter().enumerate() {
        if prs[i].is_some() {
            continue;
        }
        let (up, down) = links(&prs, i);
        let spec = PrSpec { body: body_with_links(&item.spec.body, &up, &down), ..item.spec.clone() };
        let pr = item.forge.put(&item.project, &spec, None).await.map_err(named(&item.name))?;
        prs[i] = Some(pr);
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (up, down) = links(&prs, i);
        let spec = PrSpec { body: body_with_links(&item.spec.body, &up, &down), ..item.spec.clone() };
        let Some(pr) = prs[i].clone() else { continue };
        let created = pr.created;
        let mut pr = item.forge.put(&item.project, &spec, Some(pr)).await.map_err(named(&item.name))?;
        pr.created = created;
        prs[i] = Some(pr.clone());
        out.push(pr);
    }
    Ok(out)
}

/// Why [`merge_in_order`] stopped at a pull request.
#[derive(Debug, Clone, PartialEq)]
pub enum Blocked {
    /// These checks failed.
    ChecksFailed(Vec<String>),
    /// These checks have not finished.
    ChecksPending(Vec<String>),
    /// The head commit has no checks (and the caller wants some).
    NoChecks,
    /// The host says it cannot be merged (conflicts, branch protection), with its word on
    /// why when it has one.
    NotMergeable(Option<String>),
    /// It is a draft.
    Draft,
    /// It was closed without merging.
    Closed,
    /// Reading its status or merging failed.
    Error(String),
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::ChecksFailed(names) => write!(f, "checks failed: {}", names.join(", ")),
            Blocked::ChecksPending(names) if names.is_empty() => f.write_str("checks have not finished"),
            Blocked::ChecksPending(names) => write!(f, "checks have not finished: {}", names.join(", ")),
            Blocked::NoChecks => f.write_str("no checks ran on its head commit"),
            Blocked::NotMergeable(Some(detail)) => write!(f, "the host says it cannot be merged ({detail})"),
            Blocked::NotMergeable(None) => {
                f.write_str("the host says it cannot be merged (conflicts or branch protection)")
            }
            Blocked::Draft => f.write_str("it is a draft"),
            Blocked::Closed => f.write_str("it was closed without merging"),
            Blocked::Error(e) => f.write_str(e),
        }
    }
}

/// What [`merge_in_order`] did with one pull request.
#[derive(Debug, Clone, PartialEq)]
pub enum MergeStep {
    /// Merged now.
    Merged(MergeOutcome),
    /// Merged before; nothing done.
    AlreadyMerged,
    /// Not merged, and the ones after it were not tried.
    Stopped(Blocked),
    /// Not tried: one before it stopped.
    NotTried,
}

impl fmt::Display for MergeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeStep::Merged(_) => f.write_str("merged"),
            MergeStep::AlreadyMerged => f.write_str("already merged"),
            MergeStep::Stopped(why) => write!(f, "not merged: {why}"),
            MergeStep::NotTried => f.write_str("not tried: one before it did not merge"),
        }
    }
}

/// One repository's pull request for [`merge_in_order`].
#[derive(Debug, Clone)]
pub struct MergeItem {
    pub name: String,
    pub forge: Forge,
    pub project: String,
    pub pr: Pr,
}

/// Merges `items` in order, each only when its checks passed (or it has none and
/// `allow_no_checks`) and the host can merge it; stops at the first that cannot, saying
/// why, and leaves the rest [`MergeStep::NotTried`]. Merged ones are passed over, so a
/// re-run after a fix goes on where the last stopped.
pub async fn merge_in_order(items: &[MergeItem], allow_no_checks: bool) -> Vec<(String, MergeStep)> {
    let mut out = Vec::with_capacity(items.len());
    let mut stopped = false;
    for item in items {
        if stopped {
            out.push((item.name.clone(), MergeStep::NotTried));
            continue;
        }
        let step = merge_one(item, allow_no_checks).await;
        if let MergeStep::Stopped(why) = &step {
            tracing::info!(repo = item.name, url = item.pr.url, %why, "not merged; stopping");
            stopped = true;
        }
        out.push((item.name.clone(), step));
    }
    out
}

async fn merge_one(item: &MergeItem, allow_no_checks: bool) -> MergeStep {
    let status = match item.forge.status(&item.project, &item.pr).await {
        Ok(s) => s,
        Err(e) => return MergeStep::Stopped(Blocked::Error(error_text(&e))),
    };
    let blocked = match (&status.state, &status.checks) {
        (PrState::Merged, _) => return MergeStep::AlreadyMerged,
        (PrState::Closed, _) => Some(Blocked::Closed),
        (PrState::Draft, _) => Some(Blocked::Draft),
        (PrState::Open, Checks::Failed(names)) => Some(Blocked::ChecksFailed(names.clone())),
        (PrState::Open, Checks::Pending(names)) => Some(Blocked::ChecksPending(names.clone())),
        (PrState::Open, Checks::None) if !allow_no_checks => Some(Blocked::NoChecks),
        (PrState::Open, _) if status.mergeable == Some(false) => {
            Some(Blocked::NotMergeable(status.merge_detail.clone()))
        }
        (PrState::Open, _) => None,
    };
    if let Some(why) = blocked {
        return MergeStep::Stopped(why);
    }
    match item.forge.merge(&item.project, &item.pr, status.head_sha.as_deref()).await {
        Ok(outcome) => MergeStep::Merged(outcome),
        Err(e) => MergeStep::Stopped(Blocked::Error(error_text(&e))),
    }
}

/// `e` and its causes, `: `-separated.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.ends_with(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(name: &str) -> (String, String) {
        (name.to_owned(), format!("https://h/{name}"))
    }

    #[test]
    fn links_section_is_replaced_not_appended() {
        let once = body_with_links("Fix it.", &[l("lib#1")], &[l("app2#3")]);
        assert!(once.starts_with("Fix it.\n\n<!-- grove:links -->"), "{once}");
        assert!(once.contains("Merge after: [lib#1](https://h/lib#1)"), "{once}");
        assert!(once.contains("Merge before: [app2#3](https://h/app2#3)"), "{once}");
        assert_eq!(body_with_links(&once, &[l("lib#1")], &[l("app2#3")]), once);
        let changed = body_with_links(&once, &[l("lib#1"), l("lib2#4")], &[]);
        assert_eq!(changed.matches(LINKS_START).count(), 1);
        assert!(changed.contains("[lib#1](https://h/lib#1), [lib2#4](https://h/lib2#4)"));
        assert!(!changed.contains("Merge before"));
        assert_eq!(body_with_links(&once, &[], &[]), "Fix it.");
        assert_eq!(body_without_links("a\n\n<!-- grove:links -->\nx\n<!-- /grove:links -->\n\nb"), "a\n\nb");
        assert_eq!(body_without_links("a <!-- grove:links --> cut"), "a");
        assert!(body_with_links("", &[l("x#1")], &[]).starts_with(LINKS_START));
    }
}
