//! Who may change the grove home: the coordinator daemon holds `grove.lock` for as long as it
//! runs, and `grove gc` holds it while it collects, each alone. Local commands that change a
//! home's jobs (`grove run`, `merge`, `discard`, `pick`, `retry`) share it: many at once, but
//! never beside a daemon (they would move its trains under its feet: they go through it with
//! `--coordinator` instead) or `grove gc`. The lock is an advisory file lock (`flock`), so the
//! kernel lets go of it when its process dies, SIGKILL included; the file keeps the sole
//! holder's pid and name (a daemon's URL) to say who it is.

use std::io::Write;
use std::time::{Duration, Instant};

use grove_core::layout::Layout;

use crate::CoordError;

/// The held lock on a grove home; dropping it lets go.
#[derive(Debug)]
pub struct HomeLock {
    /// `None`: a home no one had locked yet (it did not exist), shared.
    file: Option<std::fs::File>,
    /// Held alone (a daemon, `grove gc`), not shared (a local command).
    sole: bool,
}

fn open(layout: &Layout) -> Result<(std::fs::File, std::path::PathBuf), CoordError> {
    let path = layout.lock();
    let io = |what: &str, source| CoordError::Io { what: format!("{what} {}", path.display()), source };
    std::fs::create_dir_all(layout.home()).map_err(|e| io("creating the folder of", e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io("opening", e))?;
    Ok((file, path))
}

/// Who holds the lock, as its file says.
fn holder(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        "another grove process (a `grove run` or a review verb)".into()
    } else {
        text.into()
    }
}

impl HomeLock {
    /// Take the home's lock as `who` (e.g. `grove coordinator`), waiting up to `wait` for a
    /// holder to let go (a coordinator restarted right after it was killed finds its
    /// predecessor still exiting).
    pub fn take(layout: &Layout, who: &str, wait: Duration) -> Result<HomeLock, CoordError> {
        let (mut file, path) = open(layout)?;
        let io = |what: &str, source| CoordError::Io { what: format!("{what} {}", path.display()), source };
        let until = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(CoordError::HomeHeld {
                        home: layout.home().display().to_string(),
                        holder: holder(&path),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", e)),
            }
        }
        // Say who holds it (best effort: the lock itself is what counts).
        let _ = file.set_len(0);
        let _ = writeln!(file, "{who} (pid {})", std::process::id());
        Ok(HomeLock { file: Some(file), sole: true })
    }

    /// Share the home's lock, for a local command that changes its jobs: refused at once
    /// while a daemon (or `grove gc`) holds it, naming it. Without `create`, a home that has
    /// no lock file yet is not made (a job refused later leaves nothing behind): no one serves
    /// it, and nothing is held.
    pub fn share(layout: &Layout, create: bool) -> Result<HomeLock, CoordError> {
        if !create && !layout.lock().exists() {
            return Ok(HomeLock { file: None, sole: false });
        }
        let (file, path) = open(layout)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(HomeLock { file: Some(file), sole: false }),
            Err(std::fs::TryLockError::WouldBlock) => Err(CoordError::HomeServed {
                home: layout.home().display().to_string(),
                holder: holder(&path),
            }),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(CoordError::Io { what: format!("locking {}", path.display()), source: e })
            }
        }
    }
}

/// This home's coordinator id, for the consumer its daemon reads events through: made on
/// first use and kept in `<home>/coordinator-id`, so a restarted daemon (a pod on its volume
/// included) reads on where it stopped, and two homes never share one.
pub fn coordinator_id(layout: &Layout) -> Result<String, CoordError> {
    let path = layout.home().join("coordinator-id");
    let io = |what: &str, source| CoordError::Io { what: format!("{what} {}", path.display()), source };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", e)),
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mixed =
        nanos ^ (u64::from(std::process::id()) << 40) ^ (nanos >> 17).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let host: String = grove_worker::host_name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(24)
        .collect();
    let id = format!("{host}-{mixed:016x}");
    std::fs::create_dir_all(layout.home()).map_err(|e| io("creating the folder of", e))?;
    // Written whole then renamed: a daemon killed half way leaves no half id.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("writing", e))?;
    Ok(id)
}

impl Drop for HomeLock {
    fn drop(&mut self) {
        let Some(file) = &self.file else { return };
        if self.sole {
            let _ = file.set_len(0);
        }
        let _ = file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_refusal_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        let held = HomeLock::take(&layout, "grove coordinator", Duration::ZERO).expect("first");
        let e = HomeLock::take(&layout, "grove gc", Duration::from_millis(200)).expect_err("held");
        let text = e.to_string();
        assert!(text.contains("grove coordinator (pid "), "{text}");
        drop(held);
        HomeLock::take(&layout, "grove gc", Duration::ZERO).expect("free again");
    }

    /// Local commands share the home with each other, never with a daemon or `grove gc`.
    #[test]
    fn local_commands_share_the_home_but_not_with_a_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        let one = HomeLock::share(&layout, true).expect("one");
        let two = HomeLock::share(&layout, true).expect("two at once");
        let e = HomeLock::take(&layout, "grove coordinator at http://x", Duration::ZERO).expect_err("shared");
        assert!(e.to_string().contains("a `grove run` or a review verb"), "{e}");
        drop((one, two));
        let daemon = HomeLock::take(&layout, "grove coordinator at http://127.0.0.1:7070", Duration::ZERO)
            .expect("sole");
        let e = HomeLock::share(&layout, true).expect_err("served");
        let text = e.to_string();
        assert!(text.contains("at http://127.0.0.1:7070") && text.contains("--coordinator"), "{text}");
        drop(daemon);
        HomeLock::share(&layout, true).expect("free again");
    }

    #[test]
    fn a_home_keeps_its_coordinator_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().join("home"));
        let id = coordinator_id(&layout).expect("made");
        assert_eq!(coordinator_id(&layout).expect("read"), id);
        let other = Layout::new(dir.path().join("other"));
        assert_ne!(coordinator_id(&other).expect("made"), id);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{id}");
    }
}
