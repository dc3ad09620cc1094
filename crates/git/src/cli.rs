//! The one wrapper around the git executable. Every git subprocess grove runs is built here:
//! null stdin, C locale, no terminal prompts, no fsmonitor, none of the caller's `GIT_DIR`-like
//! variables, stderr captured, failures turned into [`GitError`].

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
    /// `-c key=value` given to every command (a credential helper, say).
    config: Vec<String>,
}

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
        let git = Git { program: PathBuf::from("git"), config: Vec::new() };
        let out = git.run(Path::new("."), ["version"])?;
        let found = out.stdout.trim().trim_start_matches("git version ").to_owned();
        let mut nums = found.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
        let v = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
        if v < MIN_GIT {
            return Err(GitError::TooOld { found });
        }
        Ok(git)
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

    /// A git command with grove's fixed environment, to be run in `dir`.
    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.current_dir(dir)
            .args(["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "gc.auto=0"])
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0");
        for c in &self.config {
            cmd.arg("-c").arg(c);
        }
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_COMMON_DIR",
            "GIT_PREFIX",
        ] {
            cmd.env_remove(var);
        }
        cmd
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
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let shown = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
        tracing::debug!(dir = %dir.display(), "git {shown}");
        let mut cmd = self.command(dir);
        cmd.args(&args);
        let Output { status, stdout, stderr } = cmd
            .output()
            .map_err(|source| GitError::Spawn { program: self.program.display().to_string(), source })?;
        let code = status.code().unwrap_or(-1);
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
    pub fn ref_target(&self, repo: &Path, full_ref: &str) -> Result<Option<String>, GitError> {
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

    /// Set `full_ref` to `new` if it currently is `old` (`None`: it must not exist).
    pub fn update_ref(
        &self,
        repo: &Path,
        full_ref: &str,
        new: &str,
        old: Option<&str>,
    ) -> Result<(), GitError> {
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
