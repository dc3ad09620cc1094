//! Disk hygiene for long fleets: before taking a task, a worker checks its budget (`--max-disk`:
//! bytes under its home's `worktrees/` and `runs/`) and the free space of that filesystem
//! (`--min-free`). Short, it first removes workspaces it kept after their task ended (by the
//! job's `keep_worktrees`), oldest first; still short, it takes no task (one it would fail
//! mid-way), says why in its registry announcement, and looks again later.
//!
//! Only workspaces grove kept are removed: an attempt that keeps its workspace leaves a
//! marker (`runs/<job>/<task>/workspace.kept`), and a new attempt of the task takes it away
//! before it prepares the workspace. Nothing without a marker is ever removed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use grove_core::JobId;
use grove_core::layout::Layout;
use grove_git::Git;

/// The name of the marker an attempt leaves in its run dir when it keeps its workspace.
pub const KEPT: &str = "workspace.kept";

/// A worker's disk limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    /// Bytes its workspaces and run dirs may take, at most (`None`: no budget).
    pub max_disk: Option<u64>,
    /// Bytes that must stay free on the filesystem of its home (0: no floor).
    pub min_free: u64,
}

impl Budget {
    /// No limits (the embedded mode: the person's own machine, one run).
    pub fn none() -> Budget {
        Budget::default()
    }
    fn is_none(&self) -> bool {
        self.max_disk.is_none() && self.min_free == 0
    }
}

/// A finished workspace grove kept, that may be removed to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub path: PathBuf,
    /// Its marker.
    pub marker: PathBuf,
    /// Bytes it takes.
    pub size: u64,
    /// When its attempt ended (the marker's time).
    pub ended: SystemTime,
}

/// What to do before taking a task.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Indexes into the kept workspaces to remove, oldest first.
    pub remove: Vec<usize>,
    /// Still short after that: why no task is taken.
    pub refuse: Option<String>,
}

/// Decide, from the bytes used and free and the kept workspaces, what to remove and whether a
/// task may be taken.
pub fn plan(budget: Budget, used: u64, free: u64, kept: &[Kept]) -> Plan {
    let short = |used: u64, free: u64| budget.max_disk.is_some_and(|m| used >= m) || free < budget.min_free;
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by_key(|i| (kept[*i].ended, kept[*i].path.clone()));
    let (mut used, mut free) = (used, free);
    let mut remove = Vec::new();
    for i in order {
        if !short(used, free) {
            break;
        }
        remove.push(i);
        used = used.saturating_sub(kept[i].size);
        free = free.saturating_add(kept[i].size);
    }
    let refuse = if let Some(m) = budget.max_disk.filter(|m| used >= *m) {
        Some(format!("disk budget: workspaces take {}, the budget is {}", size(used), size(m)))
    } else if free < budget.min_free {
        Some(format!("disk: {} free, below the floor of {}", size(free), size(budget.min_free)))
    } else {
        None
    };
    Plan { remove, refuse }
}

/// Check the budget, removing kept workspaces as needed. `None`: a task may be taken;
/// `Some(why)`: not now.
pub fn make_room(git: &Git, layout: &Layout, budget: Budget) -> Option<String> {
    if budget.is_none() {
        return None;
    }
    let home = layout.home();
    let used =
        if budget.max_disk.is_some() { du(&home.join("worktrees")) + du(&home.join("runs")) } else { 0 };
    let free = free_bytes(home).unwrap_or(u64::MAX);
    // Within the budget (the usual case), the kept workspaces are not even listed: listing
    // reads every run dir of every job, once per task taken.
    plan(budget, used, free, &[]).refuse.as_ref()?;
    let kept = kept(home);
    let p = plan(budget, used, free, &kept);
    for i in &p.remove {
        let k = &kept[*i];
        // Take the marker first: a new attempt of the task that takes it meanwhile wins.
        let claimed = k.marker.with_extension("removing");
        if std::fs::rename(&k.marker, &claimed).is_err() {
            continue;
        }
        tracing::info!(workspace = %k.path.display(), bytes = k.size, "removing a kept workspace to make room");
        if let Err(e) = remove_workspace(git, &k.path) {
            tracing::warn!(workspace = %k.path.display(), "removing a kept workspace: {e}");
        }
        let _ = std::fs::remove_file(&claimed);
    }
    if p.remove.is_empty() {
        p.refuse
    } else {
        // Measure again after the removals.
        make_room_measured(layout, budget)
    }
}

fn make_room_measured(layout: &Layout, budget: Budget) -> Option<String> {
    let home = layout.home();
    let used =
        if budget.max_disk.is_some() { du(&home.join("worktrees")) + du(&home.join("runs")) } else { 0 };
    plan(budget, used, free_bytes(home).unwrap_or(u64::MAX), &[]).refuse
}

/// Leave the marker that makes this workspace removable by [`make_room`].
pub fn mark_kept(layout: &Layout, job: &JobId, task: &str, workspace: &Path) {
    let marker = layout.run_dir(job, task).join(KEPT);
    if let Err(e) = std::fs::write(&marker, workspace.display().to_string()) {
        tracing::warn!(marker = %marker.display(), "marking a kept workspace: {e}");
    }
}

/// A new attempt of the task takes its workspace back: it is not removable any more.
pub fn unmark_kept(layout: &Layout, job: &JobId, task: &str) {
    let _ = std::fs::remove_file(layout.run_dir(job, task).join(KEPT));
}

/// The kept workspaces under `home`: run dirs with a marker whose workspace is where grove
/// puts it (`worktrees/<job>/<task>`).
fn kept(home: &Path) -> Vec<Kept> {
    let mut out = Vec::new();
    let Ok(jobs) = std::fs::read_dir(home.join("runs")) else {
        return out;
    };
    for job in jobs.flatten() {
        let Ok(tasks) = std::fs::read_dir(job.path()) else { continue };
        for task in tasks.flatten() {
            let marker = task.path().join(KEPT);
            let Ok(meta) = std::fs::metadata(&marker) else { continue };
            let path = home.join("worktrees").join(job.file_name()).join(task.file_name());
            if !path.is_dir() {
                let _ = std::fs::remove_file(&marker);
                continue;
            }
            out.push(Kept {
                size: du(&path),
                path,
                marker,
                ended: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    out
}

/// Remove a workspace: a worktree through its mirror (so the mirror forgets it), a clone by
/// deleting it.
fn remove_workspace(git: &Git, path: &Path) -> Result<(), String> {
    let dot_git = path.join(".git");
    if dot_git.is_file() {
        // `gitdir: <mirror>/worktrees/<name>`
        let text = std::fs::read_to_string(&dot_git).map_err(|e| e.to_string())?;
        let mirror = text
            .trim()
            .strip_prefix("gitdir:")
            .map(|g| PathBuf::from(g.trim()))
            .and_then(|g| g.parent().and_then(Path::parent).map(Path::to_path_buf));
        if let Some(mirror) = mirror.filter(|m| m.join("HEAD").exists()) {
            return grove_git::worktree::remove(git, &mirror, path).map_err(|e| e.to_string());
        }
    }
    std::fs::remove_dir_all(path).map_err(|e| e.to_string())
}

/// Bytes of the files under `path` (symlinks not followed).
pub fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map_or(0, |rd| rd.flatten().map(|e| du(&e.path())).sum())
}

/// Bytes free for an unprivileged user on the filesystem holding `path` (or its nearest
/// existing parent).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let st = nix::sys::statvfs::statvfs(p).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// `1.5 GiB`, `300 MiB`, `12 KiB`, `17 B`.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]).replace(".0 ", " ") }
}

/// Parse `2GiB`, `500M`, `10G`, `1.5 GiB`, `123` (bytes). Units are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?} (examples: 500MiB, 2GiB, 10G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, TiB)")),
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn kept(name: &str, size: u64, age: u64) -> Kept {
        Kept {
            path: PathBuf::from(name),
            marker: PathBuf::from(format!("{name}.kept")),
            size,
            ended: SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - age),
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn within_budget_nothing_is_removed() {
        let b = Budget { max_disk: Some(10 * GIB), min_free: 2 * GIB };
        assert_eq!(plan(b, 5 * GIB, 50 * GIB, &[kept("a", GIB, 10)]), Plan::default());
    }

    #[test]
    fn over_budget_the_oldest_kept_workspaces_go_first() {
        let b = Budget { max_disk: Some(10 * GIB), min_free: 0 };
        let ks = [kept("new", 3 * GIB, 1), kept("old", 2 * GIB, 100), kept("mid", 2 * GIB, 50)];
        // 12 GiB used: removing "old" leaves 10 (still at the budget), then "mid": 8.
        let p = plan(b, 12 * GIB, 50 * GIB, &ks);
        assert_eq!(p.remove, vec![1, 2]);
        assert_eq!(p.refuse, None);
    }

    #[test]
    fn still_short_after_removing_everything_kept_refuses() {
        let b = Budget { max_disk: None, min_free: 2 * GIB };
        let p = plan(b, 0, GIB, &[kept("a", 100, 5)]);
        assert_eq!(p.remove, vec![0]);
        assert_eq!(p.refuse.as_deref(), Some("disk: 1 GiB free, below the floor of 2 GiB"));
        let b = Budget { max_disk: Some(GIB), min_free: 0 };
        let p = plan(b, 3 * GIB, 50 * GIB, &[]);
        assert_eq!(p.refuse.as_deref(), Some("disk budget: workspaces take 3 GiB, the budget is 1 GiB"));
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("2GiB"), Ok(2 * GIB));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1.5 GiB"), Ok(GIB + GIB / 2));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("2 parsecs").is_err());
        assert_eq!(size(1536 << 20), "1.5 GiB");
        assert_eq!(size(17), "17 B");
    }

    #[test]
    fn only_marked_workspaces_are_removed() {
        let home = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(home.path());
        let job = JobId::parse("j-1").unwrap_or_else(|_| JobId::new("j", 1));
        for t in ["kept", "running", "foreign"] {
            let ws = layout.worktree(&job, t);
            std::fs::create_dir_all(&ws).expect("mkdir");
            std::fs::write(ws.join("big"), vec![0u8; 4096]).expect("write");
            std::fs::create_dir_all(layout.run_dir(&job, t)).expect("mkdir");
        }
        mark_kept(&layout, &job, "kept", &layout.worktree(&job, "kept"));
        let git = Git::detect().expect("git");
        // A budget of one byte cannot be met: the kept workspace goes, the others stay, and
        // the worker refuses.
        let why = make_room(&git, &layout, Budget { max_disk: Some(1), min_free: 0 });
        assert!(why.is_some_and(|w| w.starts_with("disk budget")));
        assert!(!layout.worktree(&job, "kept").exists());
        assert!(layout.worktree(&job, "running").exists());
        assert!(layout.worktree(&job, "foreign").exists());
        // Enough budget: a task may be taken.
        assert_eq!(make_room(&git, &layout, Budget { max_disk: Some(1 << 20), min_free: 0 }), None);
    }
}
