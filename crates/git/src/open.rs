//! Repositories kept open between operations of one process.
//!
//! Opening a repository with gix reads its config and maps its pack indexes; dropping the
//! last handle unmaps them again, which on a busy multi-threaded process means a TLB
//! shoot-down on every core. A worker that runs hundreds of short turns against one mirror
//! paid both for every turn. [`OpenRepos`] keeps each repository open while it is in use and
//! for a little while after, and never for long: objects that others add (fetches, merges,
//! other workers' checkpoints) are still found, since gix looks for new packs when an object
//! is missing and reads loose objects and refs from disk each time, but a long-lived handle
//! would also keep packs that `git repack` deleted mapped (their disk space not freed) and
//! could run out of gix's pack slots as fetches add packs. So an entry is closed once it has
//! not been used for [`LINGER`] or was opened [`MAX_AGE`] ago, whichever comes first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unused repository stays open.
pub const LINGER: Duration = Duration::from_secs(10);
/// How long a repository stays open at most, used or not: it is opened afresh after that.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// Open repositories by path (as given: callers pass the same path for the same repository,
/// such as an assignment's mirror). Thread-safe; cheap to share behind an `Arc`.
#[derive(Default)]
pub struct OpenRepos {
    open: Mutex<HashMap<PathBuf, Entry>>,
}

struct Entry {
    repo: gix::ThreadSafeRepository,
    opened: Instant,
    used: Instant,
}

impl std::fmt::Debug for OpenRepos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("OpenRepos").field("open", &open.keys().collect::<Vec<_>>()).finish()
    }
}

impl OpenRepos {
    /// A handle on the repository at `path` (opened as [`crate::open_gix`] opens it), from the
    /// one kept open when there is one that is fresh enough.
    pub fn open(&self, path: &Path) -> Result<gix::Repository, gix::Error> {
        let now = Instant::now();
        let closed = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let closed = take_stale(&mut open, now);
            if let Some(e) = open.get_mut(path) {
                e.used = now;
                return Ok(e.repo.to_thread_local());
            }
            closed
        };
        // Unmapped outside the lock; opened outside it too (others keep using theirs).
        drop(closed);
        let repo = crate::open_gix(path)?;
        let local = repo.to_thread_local();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.entry(path.to_owned()).or_insert(Entry { repo, opened: now, used: now });
        Ok(local)
    }

    /// Close what is stale now (see the module's doc); for a periodic call from an owner that
    /// may go idle, so an idle process holds nothing open for long.
    pub fn close_stale(&self) {
        let closed = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            take_stale(&mut open, Instant::now())
        };
        drop(closed);
    }

    /// How many repositories are open now.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Remove the entries unused for [`LINGER`] or older than [`MAX_AGE`]; returned, so the
/// caller drops them after letting go of the lock.
fn take_stale(open: &mut HashMap<PathBuf, Entry>, now: Instant) -> Vec<Entry> {
    let stale: Vec<PathBuf> = open
        .iter()
        .filter(|(_, e)| now.duration_since(e.used) >= LINGER || now.duration_since(e.opened) >= MAX_AGE)
        .map(|(p, _)| p.clone())
        .collect();
    stale.iter().filter_map(|p| open.remove(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Git;
    use crate::testutil::{commit_files, repo_with};

    fn head(r: &gix::Repository) -> String {
        r.rev_parse_single("HEAD").expect("HEAD").detach().to_string()
    }

    #[test]
    fn a_repository_stays_open_between_uses_and_sees_what_others_add() {
        let (_dir, src) = repo_with(&[("a.txt", "a\n")]);
        let repos = OpenRepos::default();
        let first = head(&repos.open(&src).expect("open"));
        assert_eq!(repos.len(), 1);
        // Someone else commits and repacks (the packs the handle mapped are deleted): the kept
        // handle finds the new commit, its objects and the moved ref.
        let second = commit_files(&src, &[("b.txt", "b\n")]);
        Git::detect().expect("git").run(&src, ["repack", "-a", "-d", "-q"]).expect("repack");
        let r = repos.open(&src).expect("open again");
        assert_eq!(repos.len(), 1, "the same repository, still open");
        assert_ne!(first, second);
        assert_eq!(head(&r), second);
        let commit = r.find_commit(gix::ObjectId::from_hex(second.as_bytes()).expect("id")).expect("commit");
        let tree = commit.tree().expect("its tree");
        let blob = tree.find_entry("b.txt").expect("b.txt").object().expect("its blob");
        assert_eq!(&blob.data[..], b"b\n");
    }

    #[test]
    fn an_unused_repository_closes() {
        let (_dir, src) = repo_with(&[("a.txt", "a\n")]);
        let repos = OpenRepos::default();
        drop(repos.open(&src).expect("open"));
        repos.close_stale();
        assert_eq!(repos.len(), 1, "used just now: kept");
        let past = Instant::now().checked_sub(LINGER).expect("a clock that far back");
        repos.open.lock().expect("lock").get_mut(&src).expect("kept").used = past;
        repos.close_stale();
        assert!(repos.is_empty(), "unused for LINGER: closed");
        drop(repos.open(&src).expect("open"));
        let past = Instant::now().checked_sub(MAX_AGE).expect("a clock that far back");
        repos.open.lock().expect("lock").get_mut(&src).expect("kept").opened = past;
        assert_eq!(
            head(&repos.open(&src).expect("reopened")),
            head(&crate::open_gix(&src).expect("open").to_thread_local())
        );
        let opened = repos.open.lock().expect("lock").get(&src).expect("kept").opened;
        assert!(opened.elapsed() < MAX_AGE, "opened MAX_AGE ago: opened afresh");
    }
}
