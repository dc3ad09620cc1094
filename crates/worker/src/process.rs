//! The one wrapper for the processes a worker runs: agents and checks. Each runs in its own
//! process group with a null stdin, its stdout and stderr appended to the task's log (capped)
//! and kept as a tail; a timeout or a cancellation kills the whole group, and so does the end
//! of the main process, however it ends (`watchdog`), so no straggler keeps changing the
//! workspace.
//!
//! A process never inherits this one's environment: it gets [`crate::secrets::environment`]
//! (an allow-list of this environment, and what the caller gives, never grove's own
//! secrets). What it prints goes through the log's [`Mask`], so no secret the worker knows
//! reaches the log file, the bus or a failure reason.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::secrets::{Mask, MaskStream};

/// How long a group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Lines of output kept as the tail.
const TAIL_LINES: usize = 40;
/// The longest line a line hook sees; the rest of a longer line is dropped (the log keeps it).
pub const LINE_CAP: usize = 4 << 20;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Called with each line of output as it comes, without its newline (a last line without one
/// comes when the stream ends), for callers that read a CLI's machine output as it streams.
pub type OnLine<'a> = &'a mut (dyn FnMut(Stream, &str) + Send);

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// It exited with this code (a signal counts as 128 + its number).
    Exited(i32),
    /// It ran past its timeout and its group was killed.
    TimedOut(Duration),
    /// The attempt was cancelled and its group was killed.
    Cancelled,
}

/// A process's end and the last lines it printed.
#[derive(Debug, Clone)]
pub struct Finished {
    pub end: End,
    pub tail: String,
    pub duration: Duration,
}

/// A process could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started (not found, not executable).
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The log could not be written.
    #[error("writing the log {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// An append-only task log with a size cap: output past the cap is dropped, once noted.
pub struct Log {
    file: tokio::fs::File,
    path: String,
    written: u64,
    cap: u64,
    tail: VecDeque<String>,
    partial: String,
    mask: MaskStream,
}

impl Log {
    pub async fn open(path: &Path, cap: u64) -> Result<Log, ProcessError> {
        let err = |source| ProcessError::Log { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(err)?;
        }
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await.map_err(err)?;
        let written = file.metadata().await.map_err(err)?.len();
        Ok(Log {
            file,
            path: path.display().to_string(),
            written,
            cap,
            tail: VecDeque::new(),
            partial: String::new(),
            mask: MaskStream::default(),
        })
    }

    /// Mask these secrets in everything written from now on (a secret split across writes
    /// included).
    pub fn masking(mut self, mask: &Mask) -> Log {
        self.mask = mask.stream();
        self
    }

    /// Append bytes (masked); they also feed the tail.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ProcessError> {
        let masked = self.mask.push(bytes);
        self.write_masked(&masked).await
    }

    async fn write_masked(&mut self, bytes: &[u8]) -> Result<(), ProcessError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.feed_tail(bytes);
        if self.written >= self.cap {
            return Ok(());
        }
        let room = (self.cap - self.written) as usize;
        let err = |source| ProcessError::Log { path: self.path.clone(), source };
        if bytes.len() > room {
            self.file.write_all(&bytes[..room]).await.map_err(err)?;
            let note =
                format!("\n[grove: log cap of {} bytes reached; further output is not kept]\n", self.cap);
            self.file.write_all(note.as_bytes()).await.map_err(err)?;
            self.written = self.cap;
        } else {
            self.file.write_all(bytes).await.map_err(err)?;
            self.written += bytes.len() as u64;
        }
        Ok(())
    }

    /// A line of grove's own in the log (`== turn 2 ==`).
    pub async fn note(&mut self, line: &str) -> Result<(), ProcessError> {
        self.write(format!("[grove] {line}\n").as_bytes()).await
    }

    fn feed_tail(&mut self, bytes: &[u8]) {
        self.partial.push_str(&String::from_utf8_lossy(bytes));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.tail.push_back(line.trim_end_matches('\n').to_owned());
            if self.tail.len() > TAIL_LINES {
                self.tail.pop_front();
            }
        }
    }

    /// The last lines written (including a final partial line).
    pub fn tail(&self) -> String {
        let mut lines: Vec<&str> = self.tail.iter().map(String::as_str).collect();
        if !self.partial.is_empty() {
            lines.push(&self.partial);
        }
        let skip = lines.len().saturating_sub(TAIL_LINES);
        lines[skip..].join("\n")
    }

    /// Make sure everything written is in the file (tokio writes on a background thread),
    /// including the end of the output the mask held back.
    pub async fn flush(&mut self) -> Result<(), ProcessError> {
        let held = self.mask.finish();
        self.write_masked(&held).await?;
        self.file.flush().await.map_err(|source| ProcessError::Log { path: self.path.clone(), source })
    }

    /// Forget the tail (a new turn starts).
    pub fn reset_tail(&mut self) {
        self.tail.clear();
        self.partial.clear();
    }
}

/// Run `program args` in `dir` with `env`, output to `log`, under `timeout` and `cancel`.
pub async fn run(
    program: &str,
    args: &[String],
    dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
    log: &mut Log,
    cancel: &CancellationToken,
) -> Result<Finished, ProcessError> {
    run_streaming(program, args, dir, env, timeout, log, cancel, None).await
}

/// [`run`], with `on_line` called for every line of output as it comes (see [`OnLine`]).
#[allow(clippy::too_many_arguments)] // `run`'s arguments and the hook
pub async fn run_streaming(
    program: &str,
    args: &[String],
    dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
    log: &mut Log,
    cancel: &CancellationToken,
    mut on_line: Option<OnLine<'_>>,
) -> Result<Finished, ProcessError> {
    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .envs(crate::secrets::environment(env))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    tracing::debug!(%program, ?args, dir = %dir.display(), "spawning");
    let mut child =
        cmd.spawn().map_err(|source| ProcessError::Spawn { program: program.to_owned(), source })?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    // Should this process die before the group ends, the watchdog ends the group.
    let _watched = child.id().map(crate::watchdog::Watched::new);
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Stream, Vec<u8>)>(64);
    type Sender = tokio::sync::mpsc::Sender<(Stream, Vec<u8>)>;
    let pump = |r: Option<Box<dyn AsyncRead + Unpin + Send>>, which: Stream, tx: Sender| async move {
        let Some(mut r) = r else { return };
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || tx.send((which, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let out_task = tokio::spawn(pump(out.take().map(|o| Box::new(o) as _), Stream::Stdout, tx.clone()));
    let err_task = tokio::spawn(pump(err.take().map(|e| Box::new(e) as _), Stream::Stderr, tx));
    let mut lines = [Lines::default(), Lines::default()];

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut end = None;
    let mut streams_open = true;
    while end.is_none() || streams_open {
        tokio::select! {
            chunk = rx.recv(), if streams_open => match chunk {
                Some((which, bytes)) => {
                    log.write(&bytes).await?;
                    if let Some(f) = on_line.as_mut() {
                        lines[which as usize].feed(&bytes, |l| f(which, l));
                    }
                }
                None => streams_open = false,
            },
            status = child.wait(), if end.is_none() => {
                let code = match status {
                    Ok(s) => s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
                    Err(_) => -1,
                };
                end = Some(End::Exited(code));
                // Stragglers the process left behind go with it; their output pipes close.
                kill_group(pgid, Signal::SIGKILL);
            }
            () = &mut deadline, if end.is_none() => {
                terminate(&mut child, pgid).await;
                end = Some(End::TimedOut(timeout));
            }
            () = cancel.cancelled(), if end.is_none() => {
                terminate(&mut child, pgid).await;
                end = Some(End::Cancelled);
            }
        }
    }
    let _ = tokio::join!(out_task, err_task);
    if let Some(f) = on_line.as_mut() {
        for (which, l) in [Stream::Stdout, Stream::Stderr].into_iter().zip(&mut lines) {
            l.finish(|line| f(which, line));
        }
    }
    log.flush().await?;
    let end = end.unwrap_or(End::Exited(-1));
    Ok(Finished { end, tail: log.tail(), duration: started.elapsed() })
}

/// Splits one stream's bytes into lines for a line hook, at most [`LINE_CAP`] bytes each.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
    /// The current line passed the cap: the rest of it is dropped.
    overflow: bool,
}

impl Lines {
    fn feed(&mut self, mut bytes: &[u8], mut f: impl FnMut(&str)) {
        while let Some(i) = bytes.iter().position(|b| *b == b'\n') {
            self.push(&bytes[..i]);
            self.emit(&mut f);
            bytes = &bytes[i + 1..];
        }
        self.push(bytes);
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = LINE_CAP.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.overflow = true;
        }
        self.partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self, f: &mut impl FnMut(&str)) {
        let line = String::from_utf8_lossy(&self.partial);
        f(line.trim_end_matches('\r'));
        self.partial.clear();
        self.overflow = false;
    }

    fn finish(&mut self, mut f: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            self.emit(&mut f);
        }
    }
}

/// SIGTERM the group, then SIGKILL it after a grace period if the leader is still there.
async fn terminate(child: &mut tokio::process::Child, pgid: Option<Pid>) {
    kill_group(pgid, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
        kill_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    kill_group(pgid, Signal::SIGKILL);
}

fn kill_group(pgid: Option<Pid>, sig: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH: the group is already gone.
        let _ = killpg(pgid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sh(script: &str, timeout: Duration, log: &mut Log) -> Finished {
        let dir = std::env::temp_dir();
        run("sh", &["-c".into(), script.into()], &dir, &[], timeout, log, &CancellationToken::new())
            .await
            .expect("runs")
    }

    #[tokio::test]
    async fn exit_code_and_tail_are_kept() {
        let d = tempfile::tempdir().expect("tmp");
        let mut log = Log::open(&d.path().join("t.log"), 1 << 20).await.expect("log");
        let f = sh(
            "for i in $(seq 1 50); do echo line $i; done; echo oops >&2; exit 3",
            Duration::from_secs(10),
            &mut log,
        )
        .await;
        assert_eq!(f.end, End::Exited(3));
        assert!(f.tail.ends_with("line 50\noops") || f.tail.ends_with("oops"), "{}", f.tail);
        assert_eq!(f.tail.lines().count(), TAIL_LINES);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let d = tempfile::tempdir().expect("tmp");
        let pidfile = d.path().join("child.pid");
        let mut log = Log::open(&d.path().join("t.log"), 1 << 20).await.expect("log");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let f = sh(&script, Duration::from_millis(300), &mut log).await;
        assert_eq!(f.end, End::TimedOut(Duration::from_millis(300)));
        assert!(f.duration < Duration::from_secs(5), "{:?}", f.duration);
        let pid: i32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
        // The grandchild is gone too: no such process, or a zombie nobody reaped yet.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state.rsplit(')').next().unwrap_or("").trim_start().chars().next();
        assert!(matches!(state, None | Some('Z') | Some('X')), "grandchild {pid} survived: {state:?}");
    }

    #[tokio::test]
    async fn a_line_hook_sees_each_stream_line_by_line() {
        let d = tempfile::tempdir().expect("tmp");
        let mut log = Log::open(&d.path().join("t.log"), 1 << 20).await.expect("log");
        let mut seen: Vec<(Stream, String)> = Vec::new();
        let mut hook = |s: Stream, l: &str| seen.push((s, l.to_owned()));
        let script = "printf '{\"a\":1}\\n{\"b\"'; sleep 0.1; printf ':2}\\nlast'; echo oops >&2";
        let f = run_streaming(
            "sh",
            &["-c".into(), script.into()],
            d.path(),
            &[],
            Duration::from_secs(10),
            &mut log,
            &CancellationToken::new(),
            Some(&mut hook),
        )
        .await
        .expect("runs");
        assert_eq!(f.end, End::Exited(0));
        let out: Vec<&str> =
            seen.iter().filter(|(s, _)| *s == Stream::Stdout).map(|(_, l)| l.as_str()).collect();
        assert_eq!(out, [r#"{"a":1}"#, r#"{"b":2}"#, "last"]);
        assert!(seen.contains(&(Stream::Stderr, "oops".to_owned())), "{seen:?}");
    }

    #[test]
    fn lines_past_the_cap_are_cut() {
        let mut l = Lines::default();
        let mut got = Vec::new();
        let long = vec![b'x'; LINE_CAP + 10];
        l.feed(&long, |s| got.push(s.len()));
        l.feed(b"\nshort\n", |s| got.push(s.len()));
        assert_eq!(got, [LINE_CAP, 5]);
    }

    #[tokio::test]
    async fn the_log_is_capped_with_a_note() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("t.log");
        let mut log = Log::open(&path, 1000).await.expect("log");
        let f = sh("yes abcdefghi | head -n 1000", Duration::from_secs(10), &mut log).await;
        assert_eq!(f.end, End::Exited(0));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("abcdefghi\n"));
        assert!(
            text.contains("log cap of 1000 bytes reached"),
            "{}",
            &text[text.len().saturating_sub(200)..]
        );
        assert!(text.len() < 1200, "{}", text.len());
    }

    /// A process sees the allow-list of this environment and what it was given, never one
    /// of grove's secrets, even when given.
    #[tokio::test]
    async fn the_environment_is_clean() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("t.log");
        let mut log = Log::open(&path, 1 << 20).await.expect("log");
        let env =
            vec![("GROVE_TASK".to_owned(), "core".to_owned()), ("GROVE_TOKEN".to_owned(), "x".to_owned())];
        let f = run("env", &[], d.path(), &env, Duration::from_secs(10), &mut log, &CancellationToken::new())
            .await
            .expect("runs");
        assert_eq!(f.end, End::Exited(0));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.lines().any(|l| l == "GROVE_TASK=core"), "{text}");
        for line in text.lines() {
            let name = line.split('=').next().unwrap_or_default();
            assert!(
                grove_core::env::inherited(name)
                    || name == "GROVE_TASK"
                    || name == "PWD"
                    || name == "SHLVL"
                    || name == "_",
                "{name} was inherited: {text}"
            );
        }
    }

    /// Secrets are masked in the file and the tail, also when a write cuts one in two.
    #[tokio::test]
    async fn secrets_are_masked_across_writes() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("t.log");
        let mask = Mask::new(["sk-live-0123456789".to_owned()]);
        let mut log = Log::open(&path, 1 << 20).await.expect("log").masking(&mask);
        log.write(b"key: sk-live-01234").await.expect("write");
        log.write(b"56789 done\nlast sk-li").await.expect("write");
        log.flush().await.expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "key: *** done\nlast sk-li");
        assert_eq!(log.tail(), "key: *** done\nlast sk-li");
    }
}
