use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A sandbox: a temp dir with a HOME, a GROVE_HOME and repositories.
pub struct Env {
    pub dir: tempfile::TempDir,
}

/// What a grove command did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn grove_home(&self) -> PathBuf {
        self.dir.path().join("grove-home")
    }

    fn hermetic(&self, cmd: &mut Command) {
        grove_tests::hermetic(cmd)
            .env("HOME", self.dir.path().join("home"))
            .env("GROVE_HOME", self.grove_home())
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
    }

    /// Run `grove args` in `cwd`.
    pub fn grove(&self, cwd: &Path, args: &[&str]) -> Run {
        self.grove_with(cwd, args, &[])
    }

    /// Run `grove args` in `cwd` with `env` added (what its workers and agents inherit).
    pub fn grove_with(&self, cwd: &Path, args: &[&str], env: &[(String, String)]) -> Run {
        let mut cmd = grove_tests::command("grove");
        self.hermetic(&mut cmd);
        cmd.current_dir(cwd).args(args).envs(env.iter().map(|(k, v)| (k, v)));
        let Output { status, stdout, stderr } = cmd.output().expect("run grove");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Run git in `cwd`; panics on failure.
    pub fn git(&self, cwd: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new("git");
        self.hermetic(&mut cmd);
        let out = cmd.current_dir(cwd).args(args).output().expect("run git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// A new repository `name` with `files` committed on `main`.
    pub fn repo(&self, name: &str, files: &[(String, String)]) -> PathBuf {
        let repo = self.dir.path().join(name);
        write_files(&repo, files);
        self.git(&repo, &["init", "--quiet", "--initial-branch=main"]);
        self.git(&repo, &["add", "--all"]);
        self.git(&repo, &["commit", "--quiet", "-m", "initial"]);
        repo
    }
}

pub fn write_files(root: &Path, files: &[(String, String)]) {
    for (p, content) in files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
}

/// A Cargo workspace of `crates` crates with `files` source files each; `c00` is a library
/// every other crate depends on; about half the files use `FileId`.
pub fn cargo_workspace(crates: usize, files: usize) -> Vec<(String, String)> {
    let mut out = vec![("Cargo.toml".to_owned(), "[workspace]\nmembers = [\"crates/*\"]\n".to_owned())];
    for c in 0..crates {
        let deps = if c == 0 { String::new() } else { "c00 = { path = \"../c00\" }\n".to_owned() };
        out.push((
            format!("crates/c{c:02}/Cargo.toml"),
            format!("[package]\nname = \"c{c:02}\"\nversion = \"0.1.0\"\n\n[dependencies]\n{deps}"),
        ));
        for f in 0..files {
            let body = if (c + f) % 2 == 0 {
                format!(
                    "use c00::FileId;\n// FileIdx stays\npub fn f{f}(id: FileId) -> FileId {{\n    id\n}}\n"
                )
            } else {
                format!("pub fn g{f}() -> u32 {{\n    {f}\n}}\n")
            };
            out.push((format!("crates/c{c:02}/src/f{f}.rs"), body));
        }
    }
    out
}

/// The task named `slug` in a job's JSON.
pub fn task<'a>(job: &'a serde_json::Value, slug: &str) -> &'a serde_json::Value {
    job["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["task"] == slug))
        .unwrap_or_else(|| panic!("no task {slug} in {job:#}"))
}

/// `vars` for grove, with `GROVE_AGENT_ENV` naming them all: a `command` agent gets only the
/// variables it is told to (its environment is otherwise grove's allow-list).
pub fn listed(mut vars: Vec<(String, String)>) -> Vec<(String, String)> {
    let names: Vec<String> = vars.iter().map(|(k, _)| k.clone()).collect();
    vars.push(("GROVE_AGENT_ENV".to_owned(), names.join(",")));
    vars
}
