//! A task's workspace: a (sparse) repository of its own on the task's branch, borrowing the
//! mirror's objects when the mirror is on this machine, else a partial sparse clone of the
//! mirror's URL; either pushes its branch into the mirror after every turn. Git-ignored files the job asked for are copied in from the source.

use std::path::{Path, PathBuf};

use grove_core::DiffStat;
use grove_core::task::Assignment;
use grove_git::Git;
use grove_git::worktree::{self, Checkout};

/// How a worker makes workspaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// A worktree of the mirror when it is on this machine, else a clone of its URL.
    #[default]
    Auto,
    /// Always a clone of the mirror's URL (as a pod does).
    Clone,
}

/// A prepared workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub path: PathBuf,
    /// The mirror, when the workspace borrows its objects; `None` for a clone.
    mirror: Option<PathBuf>,
    /// Where checkpoints are pushed: the mirror's path, or the URL a clone came from.
    remote: String,
    branch: String,
    /// The ignored files copied in, and those never to be committed.
    pub copied: Copied,
    /// The upstream repositories' checkouts (a cross-repository job): each one's variable
    /// (`GROVE_UPSTREAM_<NAME>`) and folder, read-only by agreement, remade every attempt.
    pub upstreams: Vec<(String, PathBuf)>,
    /// The folder holding them.
    upstream_root: PathBuf,
}

/// Mark `dir` (the folder holding one job's workspaces) as a top of directory hierarchies, as
/// `chattr +T` does: ext4 then places each new folder in it (a workspace) in a block group of
/// its own, as it places top-level folders, instead of beside its parent. Each workspace is a
/// tree of some 50 inodes that lives for a task and is deleted; in one group, every new inode
/// of the job was checked against each one freed there in the last 30 s (ext4 without a journal
/// skips recently freed inodes one by one), which was the largest cost of a fleet of short
/// tasks on such a disk. Best effort: other filesystems ignore or refuse the flag, and nothing
/// depends on it.
fn spread_subtrees(dir: &Path) {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
        let Ok(folder) = std::fs::File::open(dir) else { return };
        let set = ioctl_getflags(&folder).and_then(|flags| {
            if flags.contains(IFlags::TOPDIR) {
                Ok(())
            } else {
                ioctl_setflags(&folder, flags | IFlags::TOPDIR)
            }
        });
        if let Err(e) = set {
            tracing::debug!(dir = %dir.display(), "not marked as a top of directory hierarchies: {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
}

/// Where the upstream checkouts of the task whose workspace is `path` go: beside the task's
/// workspaces, in a folder no task slug can name (`worktrees/<job>/.upstreams/<task>`).
fn upstream_root(path: &Path) -> PathBuf {
    let task = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    path.parent().unwrap_or(path).join(".upstreams").join(task)
}

impl Workspace {
    /// Make the workspace at `path`; returns it and how the branch was checked out.
    pub fn prepare(
        git: &Git,
        a: &Assignment,
        path: &Path,
        mode: Mode,
    ) -> Result<(Workspace, Checkout), String> {
        if let Some(parent) = path.parent().filter(|p| std::fs::symlink_metadata(p).is_err()) {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            spread_subtrees(parent);
        }
        let local = mode == Mode::Auto && a.mirror.join("HEAD").exists();
        let how = if local {
            worktree::add(git, &a.mirror, path, &a.branch, &a.base, a.sparse.as_deref())
                .map_err(|e| format!("making the worktree: {e}"))?
        } else {
            worktree::clone_sparse(git, &a.remote, path, &a.branch, &a.base, a.sparse.as_deref())
                .map_err(|e| format!("cloning {}: {e}", a.remote))?
        };
        // A clone is what a worker elsewhere makes: it reads no path of the coordinator's
        // machine, so the ignored files come only from what the assignment carries.
        let src = a.source_dir.as_deref().filter(|s| local && s.exists());
        let copied = copy_ignored(src, path, &a.ignored_files, &a.carried, a.sparse.as_deref())?;
        if src.is_none() && a.carried.is_empty() && !a.ignored_files.is_empty() {
            tracing::warn!(
                task = %a.task,
                "{} ignored file(s) not copied: this worker cannot read the source and the assignment carries none",
                a.ignored_files.len()
            );
        }
        // Each upstream repository at its integration head: a worktree of its mirror when it
        // is on this machine, else a one-commit clone of its URL.
        let root = upstream_root(path);
        let mut upstreams = Vec::new();
        for u in &a.upstreams {
            let dir = root.join(&u.name);
            let made = if mode == Mode::Auto && u.mirror.join("HEAD").exists() {
                worktree::detached_at(git, &u.mirror, &dir, &u.commit)
            } else {
                worktree::clone_detached(git, &u.remote, &dir, &u.commit)
            };
            made.map_err(|e| {
                format!("checking out the upstream repository {} at {}: {e}", u.name, u.commit)
            })?;
            upstreams.push((u.env_name(), dir));
        }
        let ws = Workspace {
            path: path.to_path_buf(),
            mirror: local.then(|| a.mirror.clone()),
            remote: if local { a.mirror.display().to_string() } else { a.remote.clone() },
            branch: a.branch.clone(),
            copied,
            upstreams,
            upstream_root: root,
        };
        Ok((ws, how))
    }

    /// Make a checkpoint visible to the coordinator: the branch is pushed into the mirror (by
    /// path, or to its URL for a clone). A refused push fails with git's message.
    pub fn publish(&self, git: &Git) -> Result<(), String> {
        if let Some(m) = &self.mirror {
            grove_git::Mirror::protect(git, m)
                .map_err(|e| format!("checking the mirror {}: {e}", m.display()))?;
        }
        worktree::push_branch(git, &self.path, &self.remote, &self.branch)
            .map_err(|e| format!("pushing {}: {e}", self.branch))
    }

    /// Keep `files` on the side ref `full_ref` where the coordinator sees it: in the mirror's
    /// refs for a worktree; pushed for a clone.
    pub fn save_files(
        &self,
        git: &Git,
        full_ref: &str,
        files: &[(String, Vec<u8>)],
        message: &str,
        who: &worktree::Identity,
    ) -> Result<(), String> {
        grove_git::sideref::write(git, &self.path, full_ref, files, message, who)
            .map_err(|e| e.to_string())?;
        if self.mirror.is_none() {
            grove_git::sideref::push(git, &self.path, full_ref)
                .map_err(|e| format!("pushing {full_ref}: {e}"))?;
        }
        Ok(())
    }

    /// The files on the side ref `full_ref` (fetched first, for a clone), or `None`.
    pub fn load_files(&self, git: &Git, full_ref: &str) -> Result<Option<grove_git::sideref::Files>, String> {
        if self.mirror.is_none()
            && !grove_git::sideref::fetch(git, &self.path, full_ref).map_err(|e| e.to_string())?
        {
            return Ok(None);
        }
        grove_git::sideref::read(git, &self.path, full_ref).map_err(|e| e.to_string())
    }

    /// The branch's tip as the coordinator sees it: in the mirror for a worktree; for a clone,
    /// what its remote last accepted (`git push` moves `refs/remotes/origin/<branch>` only when
    /// the push succeeds), so a refused push never reports a commit the mirror lacks.
    pub fn head(&self, git: &Git) -> Option<String> {
        match &self.mirror {
            Some(mirror) => git.ref_target(mirror, &format!("refs/heads/{}", self.branch)).ok().flatten(),
            None => worktree::pushed_tip(git, &self.path, &self.branch).ok().flatten(),
        }
    }

    /// The branch against `base`. A clone is partial: resumed from a pushed branch it lacks
    /// the base's blobs, which gix neither has nor fetches (it counted nothing), so git, which
    /// fetches them from the remote, counts there.
    pub fn stat(&self, git: &Git, base: &str, head: &str) -> Result<DiffStat, String> {
        match &self.mirror {
            Some(m) => grove_git::stats::diff_stat(m, base, head).map_err(|e| e.to_string()),
            None => grove_git::stats::diff_stat_cli(git, &self.path, base, head).map_err(|e| e.to_string()),
        }
    }

    /// Remove the workspace (grove's own) and its upstream checkouts; the branch stays.
    pub fn remove(&self, git: &Git) -> Result<(), String> {
        if std::fs::symlink_metadata(&self.upstream_root).is_ok() {
            // Repositories of their own (borrowing the mirrors' objects): a folder to remove.
            std::fs::remove_dir_all(&self.upstream_root)
                .map_err(|e| format!("removing {}: {e}", self.upstream_root.display()))?;
        }
        match &self.mirror {
            Some(m) => worktree::remove(git, m, &self.path),
            None => std::fs::remove_dir_all(&self.path).map_err(|e| grove_git::GitError::Io {
                what: format!("removing {}", self.path.display()),
                source: e,
            }),
        }
        .map_err(|e| format!("removing the workspace {}: {e}", self.path.display()))
    }
}

/// What copying the ignored files did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// Copied into the workspace.
    pub files: Vec<String>,
    /// The listed files the checkout did not bring: never to be committed (those copied, and
    /// any the agent might make under the same names).
    pub keep_out: Vec<String>,
    /// Not copied, and why (a symlink on the way, in the source or in the workspace).
    pub refused: Vec<(String, String)>,
}

/// Copy the listed ignored files that fall inside the checkout (top-level files, and files
/// under the sparse folders): first those `carried` in the assignment, then those of `files`
/// read from the source repository `src` (when this machine has it). Existing files in the
/// workspace are not overwritten. No symlink is followed on either side: not one in the source
/// repository (a file, or a folder on its way, that points elsewhere), not one in the
/// workspace (a folder an earlier attempt's agent replaced with a link, or a link where the
/// file goes): such a file is not copied.
pub fn copy_ignored(
    src: Option<&Path>,
    dst: &Path,
    files: &[String],
    carried: &[grove_core::task::Carried],
    sparse: Option<&[String]>,
) -> Result<Copied, String> {
    use nofollow::{Found, Walk};
    let mut done = Copied::default();
    let src_root = src.map(nofollow::open_root).transpose()?;
    let dst_root = nofollow::open_root(dst)?;
    let from_carried = carried.iter().map(|c| (&c.path, Some(c)));
    let from_src = files.iter().filter(|_| src_root.is_some()).map(|f| (f, None));
    for (f, bytes) in from_carried.chain(from_src) {
        let inside = match sparse {
            None => true,
            Some(dirs) => !f.contains('/') || dirs.iter().any(|d| f.starts_with(&format!("{d}/"))),
        };
        let parts: Vec<&str> = f.split('/').collect();
        if !inside
            || grove_core::spec::check_repo_path(f).is_err()
            || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            continue;
        }
        let Some((name, dirs)) = parts.split_last() else { continue };
        let err = |e: nix::Error| format!("copying ignored file {f}: {e}");
        // The checkout brought it: the branch's own file, left alone (or a carried one, copied).
        let to_dir = nofollow::walk(&dst_root, dirs, false).map_err(err)?;
        if let Walk::Dir(d) = &to_dir
            && nofollow::exists(d, name).map_err(err)?
        {
            continue;
        }
        if !done.keep_out.contains(f) {
            done.keep_out.push(f.clone());
        }
        if let Walk::Blocked = to_dir {
            done.refused
                .push((f.clone(), "a folder on its way in the workspace is a symlink or a file".into()));
            continue;
        }
        let from = match (bytes, &src_root) {
            (Some(c), _) => nofollow::Source::Bytes(&c.data, c.mode),
            (None, Some(root)) => {
                let found = match nofollow::walk(root, dirs, false).map_err(err)? {
                    Walk::Dir(d) => nofollow::open_file(&d, name).map_err(err)?,
                    Walk::Blocked => Found::Link,
                    Walk::Missing => Found::Nothing,
                };
                match found {
                    Found::File(file) => nofollow::Source::File(file),
                    // Gone since the job was submitted, or not a regular file.
                    Found::Nothing => continue,
                    Found::Link => {
                        done.refused
                            .push((f.clone(), "a symlink in your repository, or a folder on its way".into()));
                        continue;
                    }
                }
            }
            (None, None) => continue,
        };
        let Walk::Dir(to_dir) = nofollow::walk(&dst_root, dirs, true).map_err(err)? else {
            done.refused
                .push((f.clone(), "a folder on its way in the workspace is a symlink or a file".into()));
            continue;
        };
        match nofollow::create_copy(&to_dir, name, from) {
            Ok(true) => done.files.push(f.clone()),
            Ok(false) => done.refused.push((f.clone(), "something is already there in the workspace".into())),
            Err(e) => return Err(format!("copying ignored file {f}: {e}")),
        }
    }
    Ok(done)
}

/// File operations relative to an open folder that never follow a symlink (`openat` with
/// `O_NOFOLLOW`): a path is walked one folder at a time, so no link anywhere on it is followed.
mod nofollow {
    use std::fs::File;
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::Path;

    use nix::errno::Errno;
    use nix::fcntl::{AtFlags, OFlag, openat};
    use nix::sys::stat::{Mode, SFlag, fstat, fstatat, mkdirat};

    const DIR: OFlag =
        OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);

    /// Where a walk down some folders ended.
    pub enum Walk {
        /// The folder, open.
        Dir(OwnedFd),
        /// A folder on the way does not exist.
        Missing,
        /// A folder on the way is a symlink, or not a folder.
        Blocked,
    }

    /// What is at a file's place.
    pub enum Found {
        File(File),
        Nothing,
        /// A symlink (or a device, a pipe...: not a regular file).
        Link,
    }

    /// A folder to start from, given by the caller (it may itself be reached through links).
    pub fn open_root(dir: &Path) -> Result<OwnedFd, String> {
        nix::fcntl::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| format!("opening {}: {e}", dir.display()))
    }

    /// The folder `dirs` below `root`, each a real folder; with `make`, missing ones are made.
    pub fn walk(root: &OwnedFd, dirs: &[&str], make: bool) -> nix::Result<Walk> {
        let mut at = root.try_clone().map_err(|_| Errno::EBADF)?;
        for d in dirs {
            let next = match openat(at.as_fd(), *d, DIR, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if make => {
                    match mkdirat(at.as_fd(), *d, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    match openat(at.as_fd(), *d, DIR, Mode::empty()) {
                        Ok(fd) => fd,
                        Err(Errno::ELOOP | Errno::ENOTDIR) => return Ok(Walk::Blocked),
                        Err(e) => return Err(e),
                    }
                }
                Err(Errno::ENOENT) => return Ok(Walk::Missing),
                // ELOOP: a symlink (O_NOFOLLOW); ENOTDIR: a file.
                Err(Errno::ELOOP | Errno::ENOTDIR) => return Ok(Walk::Blocked),
                Err(e) => return Err(e),
            };
            at = next;
        }
        Ok(Walk::Dir(at))
    }

    /// Whether anything (a dangling symlink included) is at `name` in `dir`.
    pub fn exists(dir: &OwnedFd, name: &str) -> nix::Result<bool> {
        match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The regular file `name` in `dir`, opened for reading.
    pub fn open_file(dir: &OwnedFd, name: &str) -> nix::Result<Found> {
        // O_NONBLOCK: a pipe put there does not hang the open.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Found::Nothing),
            Err(Errno::ELOOP | Errno::ENXIO) => return Ok(Found::Link),
            Err(e) => return Err(e),
        };
        let st = fstat(&fd)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Ok(Found::Link);
        }
        Ok(Found::File(File::from(fd)))
    }

    /// What a copied file is made from.
    pub enum Source<'a> {
        /// A file of the source repository, open.
        File(File),
        /// Bytes carried in the assignment, with their permission bits.
        Bytes(&'a [u8], u32),
    }

    /// Create `name` in `dir` (never through a symlink, never over anything) with `from`'s
    /// contents and permissions. `false`: something is already there.
    pub fn create_copy(dir: &OwnedFd, name: &str, from: Source<'_>) -> std::io::Result<bool> {
        let mode = match &from {
            Source::File(f) => fstat(f).map(|st| st.st_mode & 0o777).unwrap_or(0o644),
            Source::Bytes(_, mode) => mode & 0o777,
        };
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(mode)) {
            Ok(fd) => fd,
            Err(Errno::EEXIST | Errno::ELOOP) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let mut to = File::from(fd);
        match from {
            Source::File(mut f) => {
                std::io::copy(&mut f, &mut to)?;
            }
            Source::Bytes(b, _) => std::io::Write::write_all(&mut to, b)?,
        }
        Ok(true)
    }
}

/// The folders of a task as one string, for `{scope}` and GROVE_SCOPE (`.` for everything).
pub fn scope_string(sparse: Option<&[String]>) -> String {
    match sparse {
        None | Some([]) => ".".to_owned(),
        Some(dirs) => dirs.join(" "),
    }
}

/// A scratch folder beside the workspace for grove's files (prompt, file list, feedback):
/// never inside the worktree, where `git add --all` would commit them.
pub fn scratch(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn list(files: &[&str]) -> Vec<String> {
        files.iter().map(|f| (*f).to_owned()).collect()
    }

    /// Where the filesystem keeps the flag (ext4), a job's workspace folder gets it; elsewhere
    /// marking it fails quietly and the workspace is made all the same.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_jobs_workspace_folder_spreads_its_workspaces() {
        use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
        let d = tempfile::tempdir().expect("tmp");
        let (probe, job) = (d.path().join("probe"), d.path().join("job"));
        std::fs::create_dir(&probe).expect("mkdir");
        std::fs::create_dir(&job).expect("mkdir");
        spread_subtrees(&job);
        let flags = |p: &Path| ioctl_getflags(std::fs::File::open(p).expect("open")).ok();
        let supported = flags(&probe).is_some_and(|f| {
            ioctl_setflags(std::fs::File::open(&probe).expect("open"), f | IFlags::TOPDIR).is_ok()
                && flags(&probe).is_some_and(|f| f.contains(IFlags::TOPDIR))
        });
        let marked = flags(&job).is_some_and(|f| f.contains(IFlags::TOPDIR));
        assert_eq!(marked, supported, "marked where the filesystem keeps the flag, and only there");
        // Marking twice changes nothing.
        spread_subtrees(&job);
        assert_eq!(flags(&job).is_some_and(|f| f.contains(IFlags::TOPDIR)), supported);
    }

    #[test]
    fn ignored_files_are_copied_and_kept_out_unless_the_checkout_has_them() {
        let d = tempfile::tempdir().expect("tmp");
        let (src, dst) = (d.path().join("src"), d.path().join("ws"));
        write(&src.join(".env"), "TOKEN=1\n");
        write(&src.join("a/config/local.toml"), "x\n");
        write(&src.join("b/other.env"), "y\n");
        write(&src.join("tracked.txt"), "from the source\n");
        write(&dst.join("tracked.txt"), "from the checkout\n");
        std::fs::create_dir_all(&dst).expect("mkdir");
        let files = list(&[".env", "a/config/local.toml", "b/other.env", "tracked.txt", "gone.txt"]);
        let sparse = vec!["a".to_owned()];
        let c = copy_ignored(Some(&src), &dst, &files, &[], Some(&sparse)).expect("copies");
        assert_eq!(c.files, [".env", "a/config/local.toml"]);
        assert_eq!(c.keep_out, [".env", "a/config/local.toml", "gone.txt"], "b/ is outside the checkout");
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        assert_eq!(std::fs::read_to_string(dst.join(".env")).expect("read"), "TOKEN=1\n");
        assert_eq!(std::fs::read_to_string(dst.join("tracked.txt")).expect("read"), "from the checkout\n");
        assert!(!dst.join("b").exists());
    }

    /// A source file that is a symlink out of the repository, or lies behind a symlinked
    /// folder, is not copied: its target's contents never reach the workspace.
    #[test]
    fn a_symlink_in_the_source_is_never_followed() {
        let d = tempfile::tempdir().expect("tmp");
        let (src, dst, outside) = (d.path().join("src"), d.path().join("ws"), d.path().join("outside"));
        write(&outside.join("id_rsa"), "PRIVATE\n");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::create_dir_all(&dst).expect("mkdir");
        symlink(outside.join("id_rsa"), src.join(".env")).expect("symlink");
        symlink(&outside, src.join("conf")).expect("symlink");
        let c = copy_ignored(Some(&src), &dst, &list(&[".env", "conf/id_rsa"]), &[], None).expect("copies");
        assert!(c.files.is_empty(), "{c:?}");
        assert_eq!(c.refused.len(), 2, "{c:?}");
        assert!(!dst.join(".env").exists() && std::fs::symlink_metadata(dst.join(".env")).is_err());
        assert!(!dst.join("conf").exists());
    }

    /// A workspace whose folder an earlier attempt's agent replaced with a symlink (out of
    /// the workspace), or with a symlink where the file goes: nothing is written through it.
    #[test]
    fn a_symlink_in_the_workspace_is_never_followed() {
        let d = tempfile::tempdir().expect("tmp");
        let (src, dst, outside) = (d.path().join("src"), d.path().join("ws"), d.path().join("outside"));
        write(&src.join("conf/.env"), "SECRET=1\n");
        write(&src.join(".env"), "SECRET=2\n");
        write(&src.join("deep/a/b/.env"), "SECRET=3\n");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::create_dir_all(dst.join("deep")).expect("mkdir");
        symlink(&outside, dst.join("conf")).expect("symlink");
        symlink(outside.join("planted"), dst.join(".env")).expect("dangling symlink");
        symlink(&outside, dst.join("deep/a")).expect("symlink");
        let files = list(&["conf/.env", ".env", "deep/a/b/.env"]);
        let c = copy_ignored(Some(&src), &dst, &files, &[], None).expect("copies");
        assert!(c.files.is_empty(), "{c:?}");
        assert_eq!(c.keep_out, ["conf/.env", "deep/a/b/.env"], "the dangling link is the checkout's");
        assert_eq!(c.refused.len(), 2, "{c:?}");
        assert_eq!(std::fs::read_dir(&outside).expect("read").count(), 0, "nothing written outside");
    }
}
