//! One bare mirror per source repository. Workspaces borrow the mirror's objects and push their
//! branch into it, so the person's working tree and index are never touched; task and
//! integration branches are made in the mirror and fetched back into a local source repository
//! when published.
//!
//! The mirror's config, hooks and attributes are grove's: [`Mirror::protect`] puts them back as
//! grove made them (only inert config keys, no hooks, no `info/attributes`, no `commondir`) when
//! a job is submitted, a workspace prepared, and before merges and pushes.

use std::path::{Path, PathBuf};

use crate::cli::{Git, GitError, sanitize_config_entries};

/// The config keys a mirror may have: format and layout, what clones of it may ask for, git's
/// gc thresholds, and limits that only make it refuse more of what is pushed to it. Nothing
/// that names a program, a path to read or a URL.
const MIRROR_KEYS: [&str; 19] = [
    "core.repositoryformatversion",
    "core.filemode",
    "core.bare",
    "core.logallrefupdates",
    "core.symlinks",
    "core.ignorecase",
    "core.precomposeunicode",
    "extensions.worktreeconfig",
    "extensions.objectformat",
    "uploadpack.allowfilter",
    "uploadpack.allowanysha1inwant",
    "uploadpack.allowreachablesha1inwant",
    "gc.auto",
    "gc.autopacklimit",
    "receive.maxinputsize",
    "receive.fsckobjects",
    "receive.denynonfastforwards",
    "receive.denydeletes",
    "transfer.fsckobjects",
];

/// How many loose objects (estimated) make [`Mirror::pack_loose`] pack them.
const LOOSE_TO_PACK: usize = 1024;

/// Where a job's repository comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A repository on this machine (its top folder, canonical).
    Local(PathBuf),
    /// A URL git can fetch from.
    Url(String),
}

impl Source {
    /// Read a repository location as a person wrote it: a URL (`scheme://`, or scp-like
    /// `host:path`) or a path, relative to `cwd`, inside a git repository.
    pub fn parse(git: &Git, location: &str, cwd: &Path) -> Result<Source, GitError> {
        if Source::is_url(location) {
            return Ok(Source::Url(location.to_owned()));
        }
        let path = cwd.join(location);
        if !path.exists() {
            return Err(GitError::NotARepo { path: path.display().to_string() });
        }
        let top = git.toplevel(&path)?;
        let top = top.canonicalize().map_err(|e| GitError::io(format!("resolving {}", top.display()), e))?;
        Ok(Source::Local(top))
    }

    /// Whether `location` is a URL git fetches from (`scheme://...` or scp-like
    /// `user@host:path`), not a path.
    pub fn is_url(location: &str) -> bool {
        location.contains("://") || is_scp_like(location)
    }

    /// What git fetches from.
    pub fn fetch_url(&self) -> String {
        match self {
            Source::Local(p) => p.display().to_string(),
            Source::Url(u) => u.clone(),
        }
    }

    /// A readable, stable folder name for this source's mirror.
    pub fn mirror_name(&self) -> String {
        let s = self.fetch_url();
        let base =
            s.trim_end_matches('/').trim_end_matches(".git").rsplit(['/', ':']).next().unwrap_or("repo");
        let base = grove_core::names::slugify(base, 40);
        format!("{}-{:08x}.git", if base.is_empty() { "repo" } else { &base }, fnv1a(s.as_bytes()) as u32)
    }
}

/// FNV-1a: a hash that stays the same across Rust versions, so mirror names do too.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn is_scp_like(s: &str) -> bool {
    // git@host:path, host:path; a Windows drive (C:\) or a path with a slash before the colon is not.
    match s.find(':') {
        Some(i) => i > 1 && !s[..i].contains('/'),
        None => false,
    }
}

/// A bare mirror of one source.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub path: PathBuf,
}

/// The refspecs a mirror fetches: the source's branches under `refs/remotes/origin/`, its
/// tags, and its HEAD. Nothing under `refs/heads/` is ever fetched, so a fetch cannot
/// overwrite grove's own branches.
const REFSPECS: [&str; 3] =
    ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*", "+HEAD:refs/remotes/origin/HEAD"];

impl Mirror {
    /// Open or create the mirror of `source` under `dir`, and fetch from it.
    pub fn ensure(git: &Git, dir: &Path, source: &Source) -> Result<Mirror, GitError> {
        let path = dir.join(source.mirror_name());
        let new = !path.join("HEAD").exists();
        if new {
            std::fs::create_dir_all(dir)
                .map_err(|e| GitError::io(format!("creating {}", dir.display()), e))?;
            // No template: no sample hooks, nothing grove did not write.
            git.run(
                dir,
                [
                    std::ffi::OsStr::new("init"),
                    "--bare".as_ref(),
                    "--quiet".as_ref(),
                    "--template=".as_ref(),
                    path.as_os_str(),
                ],
            )?;
        }
        let mirror = Mirror { path };
        Mirror::protect(git, &mirror.path)?;
        if let (true, Source::Local(repo)) = (new, source) {
            // The fetch below then finds every object there and copies nothing.
            let seeded = mirror.seed_objects(git, repo)?;
            tracing::debug!(
                linked = seeded.linked,
                copied = seeded.copied,
                mirror = %mirror.path.display(),
                "mirror seeded from the source's objects"
            );
        }
        mirror.serve_commits_by_id(git)?;
        mirror.fetch(git, source)?;
        mirror.pack_loose(git)?;
        Ok(mirror)
    }

    /// Pack the mirror's loose objects when there are many (a source made of fresh commits
    /// seeds it with loose objects, and every checkpoint and merge adds some): git then finds
    /// an object in a pack index in memory instead of a file per object, which a checkout of
    /// a large tree asks for thousands of times. The count is estimated as `git gc --auto`
    /// does, from one of the 256 fan-out folders; `git repack -d -l` packs only the loose
    /// objects and removes them once packed (readers find them in the new pack).
    pub fn pack_loose(&self, git: &Git) -> Result<bool, GitError> {
        let sample = self.path.join("objects").join("17");
        let in_sample = match std::fs::read_dir(&sample) {
            Ok(rd) => rd.filter_map(Result::ok).filter(|e| e.file_name().len() == 38).count(),
            Err(_) => 0,
        };
        if in_sample * 256 < LOOSE_TO_PACK {
            return Ok(false);
        }
        git.run(&self.path, ["repack", "-d", "-l", "-q"])?;
        Ok(true)
    }

    /// Put the mirror's config, hooks and attributes back as grove keeps them, whatever a
    /// process with access to the folder (an agent running `git config` in a workspace of an
    /// older grove, or writing files there) changed: config entries outside [`MIRROR_KEYS`]
    /// dropped, `hooks/` emptied, `info/attributes`, a planted `.git` and a `commondir` removed.
    /// Returns what was changed (also logged), empty when the mirror was as grove keeps it.
    /// A `path` that is not a bare repository (no mirror grove made) is left alone.
    pub fn protect(git: &Git, path: &Path) -> Result<Vec<String>, GitError> {
        let mut changed = Vec::new();
        if !crate::cli::is_git_dir(path) {
            return Ok(changed);
        }
        for planted in ["commondir", "gitdir", ".git", "info/attributes"] {
            if remove_any(&path.join(planted))? {
                changed.push(format!("removed {planted}"));
            }
        }
        let hooks = path.join("hooks");
        match std::fs::symlink_metadata(&hooks) {
            Ok(m) if m.is_dir() => {
                let entries = std::fs::read_dir(&hooks)
                    .map_err(|e| GitError::io(format!("reading {}", hooks.display()), e))?;
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    // git's sample hooks (older mirrors were made with them) go quietly.
                    if remove_any(&e.path())? && !name.ends_with(".sample") {
                        changed.push(format!("removed hooks/{name}"));
                    }
                }
            }
            Ok(_) => {
                remove_any(&hooks)?;
                changed.push("removed hooks (not a folder)".to_owned());
            }
            Err(_) => {}
        }
        let mut kept = Vec::new();
        for file in ["config", "config.worktree"] {
            let (dropped, entries) = sanitize_config_entries(git, &path.join(file), &MIRROR_KEYS)?;
            for key in dropped {
                changed.push(format!("dropped {key} from {file}"));
            }
            kept.push(entries);
        }
        // What `git config --file F --get KEY` prints: the last value.
        let value = |entries: &[crate::cli::ConfigEntry], section: &str, name: &str| {
            entries
                .iter()
                .rev()
                .find(|(s, sub, n, _)| s == section && sub.is_none() && n == name)
                .map(|e| e.3.clone())
        };
        let enabled = value(&kept[0], "extensions", "worktreeconfig").as_deref() == Some("true")
            && value(&kept[1], "core", "bare").as_deref() == Some("true");
        if !enabled {
            Mirror { path: path.to_path_buf() }.enable_worktree_config(git)?;
        }
        if !changed.is_empty() {
            tracing::warn!(mirror = %path.display(), ?changed, "the mirror was changed behind grove's back; put back");
        }
        Ok(changed)
    }

    /// Sparse checkouts need per-worktree config. git turns it on by itself at the first
    /// `sparse-checkout`, moving `core.bare` out of the shared config, and a worktree made
    /// at that moment by another task reads a half-moved config ("must be run in a work
    /// tree"). So do the same move once, before any worktree exists.
    /// [`Mirror::protect`] calls it when the sanitized config does not have it yet.
    fn enable_worktree_config(&self, git: &Git) -> Result<(), GitError> {
        let per_worktree = self.path.join("config.worktree");
        git.run(
            &self.path,
            [
                "config".as_ref(),
                "--file".as_ref(),
                per_worktree.as_os_str(),
                "core.bare".as_ref(),
                "true".as_ref(),
            ],
        )?;
        git.run_allowing(&self.path, ["config", "--unset", "core.bare"], &[5])?;
        git.run(&self.path, ["config", "core.repositoryformatversion", "1"])?;
        git.run(&self.path, ["config", "extensions.worktreeConfig", "true"])?;
        // Workers without the mirror make partial clones of it.
        git.run(&self.path, ["config", "uploadpack.allowFilter", "true"])?;
        Ok(())
    }

    /// Give a new mirror the objects of a repository on this machine without copying them:
    /// its packs and loose objects are hard-linked into the mirror (copied where the file
    /// system does not allow a link: another device, say), as `git clone --local` does, and
    /// its alternates are carried over. The mirror holds its own links, so nothing the person
    /// does later in their repository (`git gc --prune=now`, deleting branches, rewriting
    /// history) takes an object from it; and git never changes an object file in place.
    ///
    /// Only regular files of git's own shapes are taken (`xx/<hash>`, `pack/pack-*.{pack,idx,rev}`),
    /// never a symlink or a temporary file, and a pack only together with its index. Objects
    /// that vanish while this runs (a `git gc` in the source) are simply skipped: the fetch
    /// that follows brings whatever is missing.
    pub fn seed_objects(&self, git: &Git, repo: &Path) -> Result<Seeded, GitError> {
        let out = git.run(repo, ["rev-parse", "--path-format=absolute", "--git-common-dir"])?;
        let from = PathBuf::from(out.stdout.trim_end_matches('\n')).join("objects");
        let to = self.path.join("objects");
        let mut seeded = Seeded::default();
        let entries = |dir: &Path| -> Result<Vec<std::fs::DirEntry>, GitError> {
            match std::fs::read_dir(dir) {
                Ok(rd) => Ok(rd.filter_map(Result::ok).collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(GitError::io(format!("reading {}", dir.display()), e)),
            }
        };
        // Packs: the .pack before its .idx (and .rev), so that git never sees an index
        // without its pack.
        let mut packs: Vec<String> = entries(&from.join("pack"))?
            .iter()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter_map(|n| n.strip_suffix(".idx").map(str::to_owned))
            .filter(|stem| stem.starts_with("pack-") && stem[5..].bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        packs.sort();
        for stem in &packs {
            for ext in ["pack", "rev", "idx"] {
                let name = format!("{stem}.{ext}");
                let done = link_or_copy(&from.join("pack").join(&name), &to.join("pack").join(&name))?;
                seeded.count(done);
                if ext == "pack" && done == Placed::Missing {
                    break; // gone since the listing: its index must not come alone
                }
            }
        }
        for fanout in entries(&from)? {
            let name = fanout.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            for obj in entries(&fanout.path())? {
                let file = obj.file_name();
                let Some(file) = file.to_str() else { continue };
                if file.len() < 38 || !file.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue; // tmp_obj_* and the like
                }
                seeded.count(link_or_copy(&obj.path(), &to.join(name).join(file))?);
            }
        }
        // Alternates: the source borrows objects from elsewhere; so does its mirror, by
        // absolute path.
        let alternates = from.join("info/alternates");
        if let Ok(text) = std::fs::read_to_string(&alternates) {
            let lines: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let p = Path::new(l);
                    if p.is_absolute() { p.to_path_buf() } else { from.join(p) }.display().to_string()
                })
                .collect();
            if !lines.is_empty() {
                let dst = to.join("info/alternates");
                let io = |e| GitError::io(format!("writing {}", dst.display()), e);
                std::fs::create_dir_all(to.join("info")).map_err(io)?;
                std::fs::write(&dst, lines.join("\n") + "\n").map_err(io)?;
            }
        }
        Ok(seeded)
    }

    /// Workspaces made by clone fetch just the commit they start from, by its id: let the
    /// mirror answer wants of any commit reachable from its refs (a base, an integration
    /// head), and filters (blobs on demand). Set once; mirrors made before get it here.
    fn serve_commits_by_id(&self, git: &Git) -> Result<(), GitError> {
        let key = "uploadpack.allowReachableSHA1InWant";
        let on = git.run_allowing(&self.path, ["config", "--get", key], &[1])?;
        if on.stdout.trim() != "true" {
            git.run(&self.path, ["config", key, "true"])?;
            git.run(&self.path, ["config", "uploadpack.allowFilter", "true"])?;
        }
        Ok(())
    }

    /// Let git pack loose objects and prune unreachable old ones when it judges it worth it
    /// (`git gc --auto`: git's own thresholds, `gc.auto` loose objects and `gc.autoPackLimit`
    /// packs, with the default 6700 in place of the 0 every other grove git command runs
    /// with). In the foreground, so nothing works in the mirror after this returns.
    pub fn maintain(git: &Git, path: &Path) -> Result<(), GitError> {
        let auto = git
            .run_allowing(path, ["config", "--file", "config", "--get", "gc.auto"], &[1])
            .ok()
            .map(|o| o.stdout.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "6700".to_owned());
        let auto = format!("gc.auto={auto}");
        git.run(path, ["-c", &auto, "-c", "gc.autoDetach=false", "gc", "--auto", "--quiet"])?;
        Ok(())
    }

    /// Fetch the source's branches and tags.
    pub fn fetch(&self, git: &Git, source: &Source) -> Result<(), GitError> {
        let url = source.fetch_url();
        let mut args = vec!["fetch", "--quiet", "--no-write-fetch-head", "--prune", "--", url.as_str()];
        args.extend(REFSPECS);
        git.run(&self.path, args)?;
        Ok(())
    }

    /// Make sure the mirror has `commit` (a commit reachable from no branch, say), fetching it
    /// by id when needed.
    pub fn ensure_commit(&self, git: &Git, source: &Source, commit: &str) -> Result<(), GitError> {
        let probe = format!("{commit}^{{commit}}");
        if git.run_allowing(&self.path, ["cat-file", "-e", &probe], &[1, 128])?.code == 0 {
            return Ok(());
        }
        git.run(
            &self.path,
            ["fetch", "--quiet", "--no-write-fetch-head", "--", &source.fetch_url(), commit],
        )?;
        Ok(())
    }

    /// Resolve `rev` as the source names it: a branch of the source (`main`), a tag, a commit
    /// id, or `HEAD` (the source's HEAD).
    pub fn resolve(&self, git: &Git, rev: &str) -> Result<String, GitError> {
        let candidates = if rev == "HEAD" {
            vec!["refs/remotes/origin/HEAD".to_owned()]
        } else {
            vec![format!("refs/remotes/origin/{rev}"), format!("refs/tags/{rev}"), rev.to_owned()]
        };
        for c in &candidates {
            if let Ok(id) = git.resolve_commit(&self.path, c) {
                return Ok(id);
            }
        }
        Err(GitError::UnknownRev { rev: rev.to_owned(), repo: self.path.display().to_string() })
    }

    /// Fetch `branches` (full names under `refs/heads/`) from the mirror into a local source
    /// repository, force-updating them: they are grove's branches. A branch the person has checked out there is left alone and reported.
    pub fn publish(&self, git: &Git, source: &Source, branches: &[String]) -> Result<Vec<String>, GitError> {
        let Source::Local(repo) = source else { return Ok(Vec::new()) };
        // The person's repository fetches from the mirror: nothing of the mirror's may run.
        Mirror::protect(git, &self.path)?;
        let mut skipped = Vec::new();
        let url = self.path.display().to_string();
        // The mirror's end finds exactly the mirror (`--strict`: not a `.git` planted in it) and
        // runs with grove's settings (git clears them for the other end of a local transport).
        let upload = format!("--upload-pack=git {} upload-pack --strict", crate::cli::hardening_args());
        // A thousand refspecs are some 150 KB of arguments, far below the kernel's limit: one
        // fetch for most jobs (each fetch negotiates and packs anew).
        for chunk in branches.chunks(1000) {
            let mut args = vec![
                "fetch".to_owned(),
                "--quiet".into(),
                "--no-tags".into(),
                "--no-write-fetch-head".into(),
                upload.clone(),
            ];
            args.push("--".into());
            args.push(url.clone());
            args.extend(chunk.iter().map(|b| format!("+{b}:{b}")));
            if let Err(e) = git.run(repo, &args) {
                // One branch checked out in the person's worktree makes the whole fetch fail:
                // retry one by one so the others still arrive.
                tracing::debug!("publishing in one fetch failed, retrying one by one: {e}");
                for b in chunk {
                    let spec = format!("+{b}:{b}");
                    if let Err(e) = git.run(
                        repo,
                        [
                            "fetch",
                            "--quiet",
                            "--no-tags",
                            "--no-write-fetch-head",
                            &upload,
                            "--",
                            &url,
                            &spec,
                        ],
                    ) {
                        match e {
                            GitError::Failed { stderr, .. } if stderr.contains("checked out") => {
                                skipped.push(b.clone())
                            }
                            other => return Err(other),
                        }
                    }
                }
            }
        }
        Ok(skipped)
    }
}

/// What [`Mirror::seed_objects`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    /// Files hard-linked from the source.
    pub linked: usize,
    /// Files copied (no link possible).
    pub copied: usize,
}

impl Seeded {
    fn count(&mut self, done: Placed) {
        match done {
            Placed::Linked => self.linked += 1,
            Placed::Copied => self.copied += 1,
            Placed::Missing | Placed::Present => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    Linked,
    Copied,
    /// The source file is not there (anymore), or is not a regular file.
    Missing,
    /// The mirror has it already.
    Present,
}

/// Hard-link `from` to `to`, or copy it where a link is not possible.
fn link_or_copy(from: &Path, to: &Path) -> Result<Placed, GitError> {
    match std::fs::symlink_metadata(from) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return Ok(Placed::Missing),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Placed::Missing),
        Err(e) => return Err(GitError::io(format!("reading {}", from.display()), e)),
    }
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| GitError::io(format!("creating {}", dir.display()), e))?;
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(Placed::Linked),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Placed::Present),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Placed::Missing),
        // Another file system, or one without links: copy, through a temporary name so a
        // half-written object is never seen under its real one.
        Err(_) => {
            let tmp = to.with_extension("grove-tmp");
            let io = |e| GitError::io(format!("copying {} to {}", from.display(), to.display()), e);
            match std::fs::copy(from, &tmp) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Placed::Missing),
                Err(e) => return Err(io(e)),
            }
            std::fs::rename(&tmp, to).map_err(io)?;
            Ok(Placed::Copied)
        }
    }
}

/// Remove whatever is at `path` (file, symlink or folder) without following a symlink.
/// Returns whether something was there.
fn remove_any(path: &Path) -> Result<bool, GitError> {
    let what = || format!("removing {}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(|e| GitError::io(what(), e))?,
        Ok(_) => std::fs::remove_file(path).map_err(|e| GitError::io(what(), e))?,
        Err(_) => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert!(is_scp_like("git@github.com:o/r.git"));
        assert!(!is_scp_like("./a:b/c"));
        assert!(!is_scp_like("C:\\x"));
        assert!(!is_scp_like("plain"));
        let s = Source::Url("https://example.com/org/My Repo.git".into());
        assert!(s.mirror_name().starts_with("my-repo-"), "{}", s.mirror_name());
    }

    /// A source of many fresh (loose) objects gives a mirror whose objects end in a pack;
    /// one of a few stays as it is.
    #[test]
    fn many_loose_objects_are_packed() {
        let git = Git::detect().expect("git");
        let files: Vec<(String, String)> =
            (0..1500).map(|i| (format!("d{i:04}/f.txt"), format!("{i}\n"))).collect();
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
        let (dir, src) = crate::testutil::repo_with(&refs);
        let loose = |repo: &Path| {
            let out = git.run(repo, ["count-objects", "-v"]).expect("count-objects").stdout;
            out.lines().find_map(|l| l.strip_prefix("count: ")).and_then(|n| n.trim().parse::<usize>().ok())
        };
        assert!(loose(&src).unwrap_or(0) > 3000, "the source's objects are loose");
        let homes = dir.path().join("mirrors");
        let m = Mirror::ensure(&git, &homes, &Source::Local(src.clone())).expect("mirror");
        assert_eq!(loose(&m.path), Some(0), "packed");
        git.run(&m.path, ["fsck", "--no-progress", "--connectivity-only"]).expect("whole");
        assert!(!m.pack_loose(&git).expect("again"), "nothing left to pack");

        let (small_dir, small) = crate::testutil::repo_with(&[("a.txt", "a\n")]);
        let m =
            Mirror::ensure(&git, &small_dir.path().join("mirrors"), &Source::Local(small)).expect("mirror");
        assert!(loose(&m.path).unwrap_or(0) > 0, "a few loose objects stay loose");
    }

    /// A mirror of a local repository shares its object files (hard links), and stays whole
    /// when the person then deletes a branch, rewrites history and prunes everything
    /// unreachable; grove's branches still publish back.
    #[test]
    fn a_local_mirror_links_objects_and_survives_the_sources_gc() {
        use std::os::unix::fs::MetadataExt;
        let git = Git::detect().expect("git");
        let (dir, src) = crate::testutil::repo_with(&[("a/x.txt", "1\n"), ("b/y.txt", "2\n")]);
        let first = crate::testutil::commit_files(&src, &[("a/x.txt", "one\n")]);
        git.run(&src, ["repack", "-a", "-d", "-q"]).expect("repack");
        // A loose object beside the pack, on a branch the person will delete.
        git.run(&src, ["checkout", "--quiet", "-b", "topic"]).expect("branch");
        let topic = crate::testutil::commit_files(&src, &[("b/y.txt", "two\n")]);
        git.run(&src, ["checkout", "--quiet", "main"]).expect("checkout");

        let source = Source::Local(src.canonicalize().expect("canonical"));
        let mirror = Mirror::ensure(&git, &dir.path().join("mirrors"), &source).expect("mirror");
        let packs = |objects: &Path| -> Vec<(String, u64)> {
            let mut v: Vec<(String, u64)> = std::fs::read_dir(objects.join("pack"))
                .expect("pack dir")
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().expect("meta").ino()))
                .collect();
            v.sort();
            v
        };
        let theirs = packs(&src.join(".git/objects"));
        assert!(!theirs.is_empty());
        assert_eq!(packs(&mirror.path.join("objects")), theirs, "the same pack files, linked");
        assert_eq!(mirror.resolve(&git, "topic").expect("topic"), topic);
        git.run(&mirror.path, ["fsck", "--no-progress", "--connectivity-only"]).expect("fsck");

        // The person deletes the branch, rewrites main and prunes everything unreachable.
        git.run(&src, ["branch", "-D", "topic"]).expect("delete");
        git.run(
            &src,
            ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--amend", "-m", "rewritten"],
        )
        .expect("amend");
        git.run(&src, ["reflog", "expire", "--expire=now", "--all"]).expect("reflog");
        git.run(&src, ["gc", "--quiet", "--prune=now"]).expect("gc");
        assert!(git.run_allowing(&src, ["cat-file", "-e", &topic], &[1, 128]).expect("probe").code != 0);

        // The mirror still has every object it had, and takes the new history.
        git.run(&mirror.path, ["cat-file", "-e", &topic]).expect("topic's commit kept");
        git.run(&mirror.path, ["cat-file", "-e", &first]).expect("the old main kept");
        mirror.fetch(&git, &source).expect("fetch after the rewrite");
        git.run(&mirror.path, ["fsck", "--no-progress", "--connectivity-only"]).expect("fsck after");
        let main = mirror.resolve(&git, "main").expect("main");
        assert_ne!(main, first);

        // A grove branch made in the mirror on the old history still arrives in the repository.
        git.run(&mirror.path, ["update-ref", "refs/heads/grove/job-1/a", &topic]).expect("grove branch");
        let skipped =
            mirror.publish(&git, &source, &["refs/heads/grove/job-1/a".to_owned()]).expect("publish");
        assert!(skipped.is_empty());
        assert_eq!(git.resolve_commit(&src, "grove/job-1/a").expect("published"), topic);
    }

    #[test]
    fn seeding_takes_only_gits_own_files_and_never_a_symlink() {
        let git = Git::detect().expect("git");
        let (dir, src) = crate::testutil::repo_with(&[("a.txt", "1\n")]);
        let objects = src.join(".git/objects");
        std::fs::write(dir.path().join("secret"), "not an object").expect("write");
        std::fs::create_dir_all(objects.join("ab")).expect("mkdir");
        let fake = "ab".to_owned() + &"c".repeat(38);
        std::os::unix::fs::symlink(dir.path().join("secret"), objects.join("ab").join(&fake[2..]))
            .expect("link");
        std::fs::write(objects.join("ab/tmp_obj_x"), "partial").expect("write");
        std::fs::write(objects.join("pack/pack-zz.idx"), "odd").expect("write");
        let mirror_dir = dir.path().join("m.git");
        git.run(dir.path(), ["init", "--bare", "--quiet", "m.git"]).expect("init");
        let m = Mirror { path: mirror_dir.clone() };
        let seeded = m.seed_objects(&git, &src).expect("seed");
        assert!(seeded.linked >= 3, "{seeded:?}"); // a commit, a tree, a blob
        assert!(!mirror_dir.join("objects/ab").join(&fake[2..]).exists(), "a symlink is not followed");
        assert!(!mirror_dir.join("objects/ab/tmp_obj_x").exists());
        assert!(!mirror_dir.join("objects/pack/pack-zz.idx").exists());
    }
}
