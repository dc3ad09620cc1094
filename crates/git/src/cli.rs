//! The one wrapper around the git executable. Every git subprocess grove runs is built here:
//! null stdin, C locale, no terminal prompts, none of the caller's `GIT_DIR`-like variables,
//! stderr captured, failures turned into [`GitError`].
//!
//! What a repository could make grove's git run is switched off here, whatever its config says:
//! hooks (`core.hooksPath=/dev/null`), fsmonitor, submodule recursion and replace refs. Aliases
//! never apply (git ignores an alias named like a builtin, and grove runs only builtins);
//! diffs are run with `--no-ext-diff --no-textconv` and commits with `--no-verify
//! --no-gpg-sign` where they are made. Filters and merge or diff drivers are defined only in
//! config: grove keeps the config of the repositories it runs git in to a short list of inert
//! keys ([`sanitize_config`]), and a workspace's git dir is addressed explicitly ([`Repo`]), so
//! an agent that rewrote its `.git` cannot send grove's git elsewhere.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The oldest git grove works with: `merge-tree --write-tree` came in 2.38.
pub const MIN_GIT: (u32, u32) = (2, 38);

/// A git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The git executable could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// git is older than grove needs.
    #[error("git {found} is too old: grove needs git {}.{} or newer", MIN_GIT.0, MIN_GIT.1)]
    TooOld { found: String },
    /// A git command exited non-zero.
    #[error("`git {args}` failed (exit {code}) in {dir}: {stderr}")]
    Failed { args: String, dir: String, code: i32, stderr: String },
    /// A revision does not name a commit.
    #[error("{rev:?} is not a commit in {repo}")]
    UnknownRev { rev: String, repo: String },
    /// A path is not a git repository.
    #[error("{path} is not a git repository")]
    NotARepo { path: String },
    /// gix could not read the repository.
    #[error("reading {what}: {message}")]
    Read { what: String, message: String },
    /// A workspace's git dir is no longer the folder grove made (replaced by a file or a
    /// symlink, or turned into a linked worktree pointing elsewhere).
    #[error("the workspace {path} was tampered with: {what}; grove runs no git there")]
    Tampered { path: String, what: String },
    /// A file-system operation around git failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl GitError {
    pub(crate) fn read(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        GitError::Read { what: what.into(), message: e.to_string() }
    }
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        GitError::Io { what: what.into(), source }
    }
}

/// The git executable, checked once.
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    /// A credential for one site, for the fetches and pushes of this `Git` only.
    credential: Option<std::sync::Arc<SiteCredential>>,
    /// `-c key=value` given to every command (a credential helper, say).
    config: Vec<String>,
    /// An index file of grove's own (`GIT_INDEX_FILE`), for a snapshot that must not touch
    /// the person's index.
    index_file: Option<PathBuf>,
}

/// A credential git may use for one site (scheme, host and port). git gets it from a credential
/// helper that reads it from the environment of the git process, so it never appears in a
/// command line, a config file or a message; a redirect to another site gets nothing.
#[derive(Debug)]
struct SiteCredential {
    site: String,
    credential: grove_core::urls::Credential,
}

/// The helper: git runs it with `get` and the request on stdin; it answers with the
/// credential grove put in the environment.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \"$GROVE_GIT_USERNAME\" \"$GROVE_GIT_PASSWORD\"; }; f";

/// What a successful git command printed.
#[derive(Debug)]
pub struct GitOutput {
    pub stdout: String,
    pub stderr: String,
    /// The exit code (0, or a non-zero code the caller allowed).
    pub code: i32,
}

impl Git {
    /// Find `git` on PATH and check its version.
    pub fn detect() -> Result<Git, GitError> {
        let git =
            Git { program: PathBuf::from("git"), credential: None, config: Vec::new(), index_file: None };
        let out = git.run(Path::new("."), ["version"])?;
        let found = out.stdout.trim().trim_start_matches("git version ").to_owned();
        let mut nums = found.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
        let v = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
        if v < MIN_GIT {
            return Err(GitError::TooOld { found });
        }
        Ok(git)
    }

    /// This git, with `credential` for the site of `url` (`https://host:port`): what a URL's
    /// userinfo carried, for the fetch or push it was given for.
    pub fn with_credential(&self, url: &str, credential: grove_core::urls::Credential) -> Git {
        let site = url
            .split_once("://")
            .map(|(scheme, rest)| format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or("")))
            .unwrap_or_default();
        Git {
            program: self.program.clone(),
            credential: Some(std::sync::Arc::new(SiteCredential { site, credential })),
            config: self.config.clone(),
            index_file: self.index_file.clone(),
        }
    }

    /// This git, using `index` as the index file instead of the repository's own.
    pub fn with_index_file(&self, index: &Path) -> Git {
        Git { index_file: Some(index.to_path_buf()), ..self.clone() }
    }

    /// This git, answering a remote's password prompt with the token in `file`, read afresh
    /// at every request (so a token rewritten in place, as a mounted Kubernetes Secret is,
    /// takes effect at once). The token never appears on a command line or in a repository's
    /// config.
    pub fn with_token_file(mut self, file: &Path) -> Git {
        let quoted = format!("'{}'", file.display().to_string().replace('\'', "'\\''"));
        // An empty value first: no other helper (a developer's keychain) answers instead.
        self.config.push("credential.helper=".into());
        self.config.push(format!(
            "credential.helper=!f() {{ test \"$1\" = get || exit 0; echo username=grove; printf 'password=%s\\n' \"$(cat {quoted})\"; }}; f"
        ));
        self
    }

    /// A git command with grove's fixed environment, to be run in `dir`. A `dir` that is itself
    /// a git dir (a bare mirror: `HEAD`, `objects/` and `refs/` in it) is named with `--git-dir`,
    /// so a `.git` planted inside it is never discovered; anything else is found by git's
    /// discovery from `dir` (the person's own repository). Workspaces use [`Git::run_in`].
    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = self.base(dir);
        if is_git_dir(dir) {
            cmd.arg(flag("--git-dir=", dir));
        }
        cmd
    }

    fn base(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.current_dir(dir)
            .args(HARDENING.iter().flat_map(|kv| ["-c", kv]))
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_NO_REPLACE_OBJECTS", "1");
        if let Some(c) = &self.credential {
            // Only this helper (an empty value empties git's list), and only for that site.
            cmd.args(["-c", "credential.helper="])
                .arg("-c")
                .arg(format!("credential.{}.helper={CREDENTIAL_HELPER}", c.site))
                .env("GROVE_GIT_USERNAME", c.credential.user())
                .env("GROVE_GIT_PASSWORD", c.credential.password());
        }
        for c in &self.config {
            cmd.arg("-c").arg(c);
        }
        for var in CALLER_VARS {
            cmd.env_remove(var);
        }
        if let Some(index) = &self.index_file {
            cmd.env("GIT_INDEX_FILE", index);
        }
        cmd
    }

    /// A git command addressed at `repo` explicitly (`--git-dir`, and `--work-tree` for a
    /// workspace), run in its top folder. Refuses a workspace whose `.git` is not the folder
    /// grove made.
    pub fn command_in(&self, repo: &Repo) -> Result<Command, GitError> {
        match repo {
            Repo::Bare(dir) => {
                let mut cmd = self.base(dir);
                cmd.arg(flag("--git-dir=", dir));
                Ok(cmd)
            }
            Repo::Workspace(top) => {
                let top = std::path::absolute(top)
                    .map_err(|e| GitError::io(format!("resolving {}", top.display()), e))?;
                let git_dir = workspace_git_dir(&top)?;
                let mut cmd = self.base(&top);
                cmd.arg(flag("--git-dir=", &git_dir)).arg(flag("--work-tree=", &top));
                Ok(cmd)
            }
        }
    }

    /// Run git on `repo`, addressed explicitly; a non-zero exit is an error.
    pub fn run_in<I, S>(&self, repo: &Repo, args: I) -> Result<GitOutput, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_in_allowing(repo, args, &[])
    }

    /// Run git on `repo`, addressed explicitly; exit codes in `ok` (besides 0) are returned.
    pub fn run_in_allowing<I, S>(&self, repo: &Repo, args: I, ok: &[i32]) -> Result<GitOutput, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cmd = self.command_in(repo)?;
        self.output(cmd, repo.top(), args, ok)
    }

    /// Run git in `dir`; a non-zero exit is an error.
    pub fn run<I, S>(&self, dir: &Path, args: I) -> Result<GitOutput, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_allowing(dir, args, &[])
    }

    /// Run git in `dir`; exit codes in `ok` (besides 0) are returned, not errors.
    pub fn run_allowing<I, S>(&self, dir: &Path, args: I, ok: &[i32]) -> Result<GitOutput, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cmd = self.command(dir);
        self.output(cmd, dir, args, ok)
    }

    fn output<I, S>(&self, mut cmd: Command, dir: &Path, args: I, ok: &[i32]) -> Result<GitOutput, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let shown = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
        tracing::debug!(dir = %dir.display(), "git {shown}");
        // A span per git process, inside whatever grove is tracing (not a trace of its own:
        // a git call outside any span is not worth one). Only the subcommand is recorded:
        // arguments may carry URLs.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            let sub = args.iter().map(|a| a.to_string_lossy()).find(|a| !a.starts_with('-'));
            tracing::debug_span!(
                "git",
                grove.git.command = sub.as_deref().unwrap_or(""),
                grove.git.exit = tracing::field::Empty
            )
        };
        let _in = span.enter();
        cmd.args(&args);
        let Output { status, stdout, stderr } = cmd
            .output()
            .map_err(|source| GitError::Spawn { program: self.program.display().to_string(), source })?;
        let code = status.code().unwrap_or(-1);
        span.record("grove.git.exit", code);
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        if code == 0 || ok.contains(&code) {
            return Ok(GitOutput { stdout: String::from_utf8_lossy(&stdout).into_owned(), stderr, code });
        }
        Err(GitError::Failed {
            args: shown,
            dir: dir.display().to_string(),
            code,
            stderr: stderr.trim().to_owned(),
        })
    }

    /// Resolve `rev` to a full commit id in the repository at `repo`.
    pub fn resolve_commit(&self, repo: &Path, rev: &str) -> Result<String, GitError> {
        let spec = format!("{rev}^{{commit}}");
        match self.run(repo, ["rev-parse", "--verify", "--quiet", "--end-of-options", &spec]) {
            Ok(out) => Ok(out.stdout.trim().to_owned()),
            Err(GitError::Failed { .. }) => {
                Err(GitError::UnknownRev { rev: rev.to_owned(), repo: repo.display().to_string() })
            }
            Err(e) => Err(e),
        }
    }

    /// The id a ref points at, or `None` when it does not exist.
    /// A bare repository (a mirror) is read in process.
    pub fn ref_target(&self, repo: &Path, full_ref: &str) -> Result<Option<String>, GitError> {
        if is_git_dir(repo) && full_ref.starts_with("refs/") {
            return crate::refs::target(repo, full_ref);
        }
        let out = self.run_allowing(repo, ["rev-parse", "--verify", "--quiet", full_ref], &[1])?;
        Ok((out.code == 0).then(|| out.stdout.trim().to_owned()))
    }

    /// Whether commit `a` is `b` or an ancestor of it. A commit missing from `repo` counts as
    /// no.
    pub fn is_ancestor(&self, repo: &Path, a: &str, b: &str) -> Result<bool, GitError> {
        let out = self.run_allowing(repo, ["merge-base", "--is-ancestor", a, b], &[1, 128])?;
        Ok(out.code == 0)
    }

    /// All merge bases of commits `a` and `b` (`git merge-base --all`); empty when their
    /// histories are unrelated.
    pub fn merge_bases(&self, repo: &Path, a: &str, b: &str) -> Result<Vec<String>, GitError> {
        let out = self.run_allowing(repo, ["merge-base", "--all", "--end-of-options", a, b], &[1])?;
        Ok(out.stdout.split_whitespace().map(str::to_owned).collect())
    }

    /// Set `full_ref` to `new` if it currently is `old` (`None`: it must not exist). In a bare
    /// repository (a mirror) the ref moves in process.
    pub fn update_ref(
        &self,
        repo: &Path,
        full_ref: &str,
        new: &str,
        old: Option<&str>,
    ) -> Result<(), GitError> {
        let id = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if is_git_dir(repo)
            && full_ref.starts_with("refs/")
            && id(new)
            && old.is_none_or(|o| o.is_empty() || id(o))
        {
            // As for git, an empty (or all-zero) old value means the ref must not exist.
            let expect = old
                .filter(|o| !o.is_empty() && o.bytes().any(|b| b != b'0'))
                .map_or(crate::refs::Expect::Absent, crate::refs::Expect::At);
            let who = crate::worktree::Identity::default();
            return crate::refs::set(repo, full_ref, new, expect, true, "grove", &who);
        }
        self.run(repo, ["update-ref", "-m", "grove", full_ref, new, old.unwrap_or("")])?;
        Ok(())
    }

    /// The top folder of the repository that contains `path`: its working tree, or the git dir
    /// of a bare repository.
    pub fn toplevel(&self, path: &Path) -> Result<PathBuf, GitError> {
        let not_repo = || GitError::NotARepo { path: path.display().to_string() };
        let out = self
            .run(path, ["rev-parse", "--is-bare-repository", "--absolute-git-dir"])
            .map_err(|_| not_repo())?;
        let mut lines = out.stdout.lines();
        let (bare, git_dir) = (lines.next() == Some("true"), lines.next().ok_or_else(not_repo)?.to_owned());
        if bare {
            return Ok(PathBuf::from(git_dir));
        }
        let out = self.run(path, ["rev-parse", "--show-toplevel"]).map_err(|_| not_repo())?;
        Ok(PathBuf::from(out.stdout.trim_end_matches('\n')))
    }
}

/// `-c` settings on every git command grove runs: they come after every config file, so a
/// repository's config cannot turn these back on.
const HARDENING: [&str; 5] = [
    // No hook of the repository's (or anyone's) runs: grove's commits, checkouts, pushes and
    // ref updates are its own.
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    // grove never wants submodules checked out or fetched.
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "gc.auto=0",
];

/// Variables of the caller's environment that would redirect git (to another repository,
/// object store, namespace, attribute source or diff program): grove names what it means.
const CALLER_VARS: [&str; 16] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_REPLACE_REF_BASE",
    "GIT_GRAFT_FILE",
    "GIT_SHALLOW_FILE",
    "GIT_ATTR_SOURCE",
    "GIT_EXTERNAL_DIFF",
    "GIT_CONFIG",
];

/// [`HARDENING`] as arguments for a shell command line (`-c k=v -c …`), for a git that grove
/// does not spawn itself (the receive-pack of a local remote).
pub(crate) fn hardening_args() -> String {
    HARDENING.iter().map(|kv| format!("-c {kv}")).collect::<Vec<_>>().join(" ")
}

fn flag(name: &str, path: &Path) -> std::ffi::OsString {
    let mut f = std::ffi::OsString::from(name);
    f.push(path.as_os_str());
    f
}

/// Whether `dir` is itself a git dir (a bare repository), not a work tree.
pub(crate) fn is_git_dir(dir: &Path) -> bool {
    dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

/// A repository grove addresses explicitly, never by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repo {
    /// A bare repository (a mirror), named with `--git-dir`.
    Bare(PathBuf),
    /// A workspace grove made: its work tree, whose git dir is the folder `.git` in it.
    Workspace(PathBuf),
}

impl Repo {
    /// The folder git runs in.
    pub fn top(&self) -> &Path {
        match self {
            Repo::Bare(p) | Repo::Workspace(p) => p,
        }
    }
}

/// The git dir of the workspace at `top`, checked: a real folder (not a symlink, not a `.git`
/// file pointing elsewhere) that is not a linked worktree's (no `commondir`).
pub fn workspace_git_dir(top: &Path) -> Result<PathBuf, GitError> {
    let git_dir = top.join(".git");
    let tampered = |what: &str| GitError::Tampered { path: top.display().to_string(), what: what.to_owned() };
    match std::fs::symlink_metadata(&git_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(m) if m.file_type().is_symlink() => return Err(tampered(".git is a symlink")),
        Ok(_) => return Err(tampered(".git is a file, not grove's folder")),
        Err(e) => return Err(GitError::io(format!("reading {}", git_dir.display()), e)),
    }
    for f in ["commondir", "gitdir"] {
        if std::fs::symlink_metadata(git_dir.join(f)).is_ok() {
            return Err(tampered(&format!(".git/{f} makes it a linked worktree of another repository")));
        }
    }
    Ok(git_dir)
}

/// Keep a repository's config file to `allowed` keys (lower-case `section.key`, or
/// `section.*.key` for any subsection): every other entry (hooks path, aliases, filter, merge
/// and diff drivers, `include.path`, `core.sshCommand`, `url.*.insteadOf`, `core.worktree` …)
/// is dropped and the file rewritten in grove's own layout. git itself reads the file
/// (`git config --file F --list --no-includes`); the result is written beside it and renamed
/// over it, so a symlink in its place is replaced, not followed. Returns the keys dropped
/// (empty when the file was already as grove writes it). A missing file stays missing.
///
/// A file that is already a regular file in grove's layout with only allowed keys (what grove
/// wrote last time, the common case) is recognised in process, without running git: its text
/// must be exactly the layout's rendering of the entries read from it.
pub fn sanitize_config(git: &Git, file: &Path, allowed: &[&str]) -> Result<Vec<String>, GitError> {
    sanitize_config_entries(git, file, allowed).map(|(dropped, _)| dropped)
}

/// A config entry as grove keeps it: section, subsection, name (lower case, as `git config
/// --list` names them) and value.
pub(crate) type ConfigEntry = (String, Option<String>, String, String);

/// [`sanitize_config`], also returning the entries the file keeps, in order.
pub(crate) fn sanitize_config_entries(
    git: &Git,
    file: &Path,
    allowed: &[&str],
) -> Result<(Vec<String>, Vec<ConfigEntry>), GitError> {
    let meta = match std::fs::symlink_metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(GitError::io(format!("reading {}", file.display()), e)),
    };
    if meta.is_file() {
        let text = std::fs::read(file).map_err(|e| GitError::io(format!("reading {}", file.display()), e))?;
        if let Some(kept) = std::str::from_utf8(&text).ok().and_then(|t| in_grove_layout(t, allowed)) {
            return Ok((Vec::new(), kept));
        }
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    // Read by git itself (through a symlink too: its allowed values are kept, the link is not).
    let mut cmd = git.base(dir);
    cmd.arg("config").arg("--no-includes").arg("--list").arg("-z").arg("--file").arg(file);
    let out = cmd.output().map_err(|source| GitError::Spawn { program: "git".into(), source })?;
    let unreadable = !out.status.success();
    let entries = if unreadable { String::new() } else { String::from_utf8_lossy(&out.stdout).into_owned() };
    let mut kept: Vec<ConfigEntry> = Vec::new();
    let mut dropped = Vec::new();
    if unreadable {
        dropped.push(format!("(all of {}: not a config file git reads)", file.display()));
    }
    for entry in nul_fields(&entries) {
        let (key, value) = entry.split_once('\n').unwrap_or((entry, "true"));
        let Some((section, rest)) = key.split_once('.') else { continue };
        let (sub, name) = match rest.rsplit_once('.') {
            Some((sub, name)) => (Some(sub.to_owned()), name),
            None => (None, rest),
        };
        let pattern = match &sub {
            Some(_) => format!("{section}.*.{name}"),
            None => key.to_owned(),
        };
        if allowed.contains(&pattern.as_str()) && !value.contains(['\n', '\0']) {
            kept.push((section.to_owned(), sub, name.to_owned(), value.to_owned()));
        } else {
            dropped.push(key.to_owned());
        }
    }
    let text = render_config(&kept);
    if meta.is_file() {
        let now = std::fs::read(file).map_err(|e| GitError::io(format!("reading {}", file.display()), e))?;
        if now == text.as_bytes() {
            return Ok((dropped, kept));
        }
    }
    // A name of this process and call: two processes putting one file back at once each
    // rename their own (identical) text over it.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("config");
    let tmp = dir.join(format!(".{name}.grove-{}-{seq}", std::process::id()));
    std::fs::write(&tmp, text.as_bytes())
        .map_err(|e| GitError::io(format!("writing {}", tmp.display()), e))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(file).map_err(|e| GitError::io(format!("removing {}", file.display()), e))?;
    }
    if let Err(e) = std::fs::rename(&tmp, file) {
        let _ = std::fs::remove_file(&tmp);
        return Err(GitError::io(format!("replacing {}", file.display()), e));
    }
    Ok((dropped, kept))
}

/// The entries of `text` when it is exactly [`render_config`]'s rendering of them and every
/// one is `allowed`; else `None` (git must read it). Strict: lower-case section and key names
/// of letters, digits and `-`, every value quoted, nothing else on any line. Since `text` is
/// then a rendering grove itself would write, git reads exactly these entries from it.
fn in_grove_layout(text: &str, allowed: &[&str]) -> Option<Vec<ConfigEntry>> {
    let plain = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    // A quoted string's contents, unescaped: `\"`, `\\` and (in values) `\t`.
    let unquote = |q: &str, value: bool| -> Option<String> {
        let inner = q.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    't' if value => out.push('\t'),
                    _ => return None,
                },
                '"' => return None,
                '\t' if value => return None,
                c => out.push(c),
            }
        }
        Some(out)
    };
    let mut entries = Vec::new();
    let mut head: Option<(String, Option<String>)> = None;
    for line in text.split_inclusive('\n') {
        let line = line.strip_suffix('\n')?;
        if let Some(kv) = line.strip_prefix('\t') {
            let (section, sub) = head.clone()?;
            let (name, value) = kv.split_once(" = ")?;
            let value = unquote(value, true)?;
            if !plain(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) || value.contains('\0') {
                return None;
            }
            entries.push((section, sub, name.to_owned(), value));
        } else {
            let inside = line.strip_prefix('[')?.strip_suffix(']')?;
            head = Some(match inside.split_once(' ') {
                Some((section, sub)) => (section.to_owned(), Some(unquote(sub, false)?)),
                None => (inside.to_owned(), None),
            });
            let (section, _) = head.as_ref()?;
            if !plain(section) {
                return None;
            }
        }
    }
    let allowed_entry = |(section, sub, name, _): &ConfigEntry| {
        let pattern = match sub {
            Some(_) => format!("{section}.*.{name}"),
            None => format!("{section}.{name}"),
        };
        allowed.contains(&pattern.as_str())
    };
    (entries.iter().all(allowed_entry) && render_config(&entries) == text).then_some(entries)
}

/// A config file in grove's layout: sections in first-seen order, every value quoted.
pub(crate) fn render_config(entries: &[ConfigEntry]) -> String {
    // Values: `\"`, `\\` and `\t` escaped; subsection names: only `\"` and `\\`.
    let quote = |v: &str, value: bool| {
        let mut q = String::with_capacity(v.len() + 2);
        q.push('"');
        for c in v.chars() {
            match c {
                '"' => q.push_str("\\\""),
                '\\' => q.push_str("\\\\"),
                '\t' if value => q.push_str("\\t"),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    };
    type Section<'a> = ((&'a str, Option<&'a str>), Vec<(&'a str, &'a str)>);
    let mut sections: Vec<Section> = Vec::new();
    for (section, sub, name, value) in entries {
        let head = (section.as_str(), sub.as_deref());
        match sections.iter_mut().find(|(h, _)| *h == head) {
            Some((_, kv)) => kv.push((name, value)),
            None => sections.push((head, vec![(name, value)])),
        }
    }
    let mut out = String::new();
    for ((section, sub), kv) in sections {
        match sub {
            Some(s) => out.push_str(&format!("[{section} {}]\n", quote(s, false))),
            None => out.push_str(&format!("[{section}]\n")),
        }
        for (k, v) in kv {
            out.push_str(&format!("\t{k} = {}\n", quote(v, true)));
        }
    }
    out
}

/// Split git's `-z` output.
pub(crate) fn nul_fields(s: &str) -> impl Iterator<Item = &str> {
    s.split('\0').filter(|f| !f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper answers `get` with the file's content at that moment, and nothing else.
    #[test]
    fn the_token_file_answers_credential_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("it's a token");
        std::fs::write(&file, "first\n").expect("token");
        let git = Git::detect().expect("git").with_token_file(&file);
        let ask = |git: &Git| {
            let mut cmd = git.command(dir.path());
            cmd.args(["credential", "fill"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("git credential");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"protocol=http\nhost=grove:7070\npath=git/r.git\n\n")
                .expect("write");
            let out = child.wait_with_output().expect("wait");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let out = ask(&git);
        assert!(out.contains("username=grove\n") && out.contains("password=first\n"), "{out}");
        std::fs::write(&file, "second\n").expect("rewritten in place");
        assert!(ask(&git).contains("password=second\n"));
    }

    /// The in-process reading of grove's own layout finds what git finds, and hands every
    /// other file (git's own layout, an unknown key, a symlink, odd quoting) to git.
    #[test]
    fn grove_layout_is_read_as_git_reads_it() {
        let git = Git::detect().expect("git");
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = ["core.bare", "core.filemode", "remote.*.url", "extensions.worktreeconfig"];
        let file = dir.path().join("config");
        std::fs::write(
            &file,
            "[core]\n\tbare = true\n\tfileMode = false\n\thooksPath = /tmp/x\n[remote \"o \\\"q\\\"\"]\n\turl = a\\\\b\tc\n[extensions]\n\tworktreeConfig\n",
        )
        .expect("write");
        // The first time git reads it and grove rewrites it in its layout.
        let (dropped, kept) = sanitize_config_entries(&git, &file, &allowed).expect("sanitize");
        assert_eq!(dropped, ["core.hookspath"]);
        let text = std::fs::read_to_string(&file).expect("read");
        let entries = in_grove_layout(&text, &allowed).expect("grove's layout now");
        assert_eq!(entries, kept);
        let listed = git
            .run(dir.path(), ["config", "--no-includes", "--list", "-z", "--file", "config"])
            .expect("list")
            .stdout;
        let by_git: Vec<String> = nul_fields(&listed).map(str::to_owned).collect();
        let ours: Vec<String> = entries
            .iter()
            .map(|(s, sub, n, v)| match sub {
                Some(sub) => format!("{s}.{sub}.{n}\n{v}"),
                None => format!("{s}.{n}\n{v}"),
            })
            .collect();
        assert_eq!(ours, by_git, "{text}");
        // Nothing more to do, and no git needed to know it.
        let (dropped, again) = sanitize_config_entries(&git, &file, &allowed).expect("again");
        assert!(dropped.is_empty());
        assert_eq!(again, kept);
        for other in [
            "[core]\n\tbare = true\n",
            "[core]\n\thookspath = \"x\"\n",
            "[Core]\n\tbare = \"true\"\n",
            "[core]\n\tbare = \"true\" ; comment\n",
            "[core]\n\tbare = \"tr\\ue\"\n",
            "[core]\n\tbare = \"true\"",
            "[core]\n\tbare = \"true\"\n[include]\n\tpath = \"x\"\n",
            "\tbare = \"true\"\n",
        ] {
            assert_eq!(in_grove_layout(other, &allowed), None, "{other:?}");
        }
    }

    #[test]
    fn failures_carry_git_message() {
        let git = Git::detect().expect("git installed");
        let dir = tempfile::tempdir().expect("tempdir");
        let e = git.run(dir.path(), ["rev-parse", "HEAD"]).unwrap_err();
        match e {
            GitError::Failed { code, stderr, .. } => {
                assert_eq!(code, 128);
                assert!(stderr.contains("not a git repository"), "{stderr}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
