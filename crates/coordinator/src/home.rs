//! Who may change the grove home wholesale: the coordinator daemon holds `grove.lock` for as
//! long as it runs, and `grove gc` holds it while it collects. The lock is an advisory file
//! lock (`flock`), so the kernel lets go of it when its process dies, SIGKILL included; the
//! file keeps the holder's pid and name to say who it is.

use std::io::Write;
use std::time::{Duration, Instant};

use grove_core::layout::Layout;

use crate::CoordError;

/// The held lock on a grove home; dropping it lets go.
#[derive(Debug)]
pub struct HomeLock {
    file: std::fs::File,
}

impl HomeLock {
    /// Take the home's lock as `who` (e.g. `grove coordinator`), waiting up to `wait` for a
    /// holder to let go (a coordinator restarted right after it was killed finds its
    /// predecessor still exiting).
    pub fn take(layout: &Layout, who: &str, wait: Duration) -> Result<HomeLock, CoordError> {
        let path = layout.lock();
        let io = |what: &str, source| CoordError::Io { what: format!("{what} {}", path.display()), source };
        std::fs::create_dir_all(layout.home()).map_err(|e| io("creating the folder of", e))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        let until = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim();
                    return Err(CoordError::HomeHeld {
                        home: layout.home().display().to_string(),
                        holder: if holder.is_empty() {
                            "another grove process".into()
                        } else {
                            holder.into()
                        },
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", e)),
            }
        }
        // Say who holds it (best effort: the lock itself is what counts).
        let _ = file.set_len(0);
        let _ = writeln!(file, "{who} (pid {})", std::process::id());
        Ok(HomeLock { file })
    }
}

impl Drop for HomeLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
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
}
