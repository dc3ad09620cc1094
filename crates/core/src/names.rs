//! Names grove makes and checks: job ids, task slugs and branch names.

use std::fmt;

/// A name that cannot be used where it was given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty { what: &'static str },
    /// The name would not be a valid git branch name.
    #[error("{what} {name:?} is not a valid git branch name: {why}")]
    InvalidBranch { what: &'static str, name: String, why: &'static str },
    /// The name breaks a rule of its kind (characters, length, shape).
    #[error("{what} {name:?} is not valid: {why}")]
    Invalid { what: &'static str, name: String, why: &'static str },
}

/// The longest job id: a job name cut to 40 bytes, a dash and four hex digits, then for one
/// repository of a cross-repository job a dot and its name (40), with room.
pub const JOB_ID_MAX: usize = 96;
/// The longest task slug: a planner slug (60 bytes, plus a `-N` to make it unique), a dot and
/// a variant name (30), with room.
pub const TASK_SLUG_MAX: usize = 128;
/// The longest pool name.
pub const POOL_MAX: usize = 64;
/// The longest variant name (as `JobSpec::validate` has it).
pub const VARIANT_MAX: usize = 30;
/// The longest repository-relative path grove takes from outside (git itself has no limit;
/// Linux's `PATH_MAX` is 4096).
pub const REPO_PATH_MAX: usize = 4096;

/// At most 80 characters of `name`, for an error message (a hostile name may be megabytes).
fn shown(name: &str) -> String {
    match name.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &name[..i]),
        None => name.to_owned(),
    }
}

fn bad(what: &'static str, name: &str, why: &'static str) -> NameError {
    NameError::Invalid { what, name: shown(name), why }
}

/// The characters of a slug (a job id, a task slug): what [`slugify`] keeps.
fn is_slug_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

/// Check a slug-shaped name: `[a-z0-9._-]`, at most `max` bytes, and a valid single branch
/// component (no leading `.` or `-`, no `..`, no trailing `.` or `.lock`). Such a name is one
/// safe path component: never empty, `.`, `..`, absolute or containing a separator.
fn check_slug(s: &str, what: &'static str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if s.len() > max {
        return Err(bad(what, s, "too long"));
    }
    if !s.chars().all(is_slug_char) {
        return Err(bad(what, s, "only lowercase letters, digits, '.', '_' and '-' are allowed"));
    }
    check_branch_component(s, what).map_err(|e| match e {
        NameError::InvalidBranch { why, .. } => bad(what, s, why),
        other => other,
    })
}

/// Check a task's slug as the planner makes it (`crates-ide-db`, `core-2`) or a variant's
/// (`core.fast`).
pub fn check_task_slug(s: &str) -> Result<(), NameError> {
    check_slug(s, "task slug", TASK_SLUG_MAX)
}

/// Check a pool name: letters, digits, `-` and `_` (a NATS subject token), as a job spec has it.
pub fn check_pool(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what: "pool" });
    }
    if s.len() > POOL_MAX {
        return Err(bad("pool", s, "too long"));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(bad("pool", s, "only letters, digits, '-' and '_' are allowed"));
    }
    Ok(())
}

/// Check a variant's name: lowercase letters, digits and `-`, at most 30.
pub fn check_variant(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what: "variant" });
    }
    if s.len() > VARIANT_MAX {
        return Err(bad("variant", s, "too long"));
    }
    if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(bad("variant", s, "only lowercase letters, digits and '-' are allowed"));
    }
    Ok(())
}

/// Check how a person names a task: `JOB/TASK`, or `TASK` alone.
pub fn check_task_ref(s: &str) -> Result<(), NameError> {
    match s.split_once('/') {
        Some((job, task)) => {
            JobId::parse(job)?;
            check_task_slug(task)
        }
        None => check_task_slug(s),
    }
}

/// Check a full commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn check_commit_id(s: &str, what: &'static str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if !matches!(s.len(), 40 | 64) || !s.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
        return Err(bad(what, s, "not a full commit id (40 or 64 lowercase hex digits)"));
    }
    Ok(())
}

/// Check a path relative to a repository's root, as grove takes one from a job spec or a
/// message: not empty, not absolute, no `..` component, no `.git` component (git's own
/// files), no NUL, at most [`REPO_PATH_MAX`] bytes. Joined to a folder, such a path stays in it
/// (symlinks aside: whoever opens it checks those).
pub fn check_repo_path(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("is empty");
    }
    if p.len() > REPO_PATH_MAX {
        return Err("is too long");
    }
    if p.contains('\0') {
        return Err("contains a NUL byte");
    }
    if p.starts_with('/') || p.starts_with('\\') || p.get(1..2) == Some(":") {
        return Err("is absolute; paths are relative to the repository root");
    }
    let mut parts = p.split(['/', '\\']);
    if parts.clone().any(|c| c == "..") {
        return Err("leaves the repository ('..')");
    }
    if parts.any(|c| c.eq_ignore_ascii_case(".git")) {
        return Err("is inside a .git folder");
    }
    Ok(())
}

/// A job's id: the job name plus a short suffix that keeps re-runs of one spec apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// Make an id from a job name and a disambiguating number (time, counter).
    pub fn new(name: &str, salt: u64) -> Self {
        let base = slugify(name, 40);
        let base = if base.is_empty() { "job".to_owned() } else { base };
        JobId(format!("{base}-{:04x}", salt & 0xffff))
    }

    /// Take an id as stored or typed by a person; it must already be a valid slug.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_slug(s, "job id", JOB_ID_MAX)?;
        Ok(JobId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the job of repository `repo` (a name [`check_repo_name`] accepts) of the
    /// cross-repository job `self`: `<self>.<repo>`.
    pub fn of_repo(&self, repo: &str) -> JobId {
        JobId(format!("{}.{repo}", self.0))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lower-case `s`, keep `[a-z0-9._-]`, turn every other run of characters into one `-`,
/// trim separators and cut to `max` bytes. `crates/ide-db` becomes `crates-ide-db`.
pub fn slugify(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let mut dash = false;
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else {
            dash = true;
        }
    }
    let mut out: String = out.trim_matches(|c| c == '.' || c == '-').to_owned();
    if out.len() > max {
        out.truncate(max);
        out = out.trim_end_matches(['-', '.']).to_owned();
    }
    while out.contains("..") {
        out = out.replace("..", ".");
    }
    out
}

/// The branch a task's work lives on.
pub fn task_branch(job: &JobId, slug: &str) -> String {
    format!("grove/{job}/{slug}")
}

/// Check the name of a repository of a job (`[[repos]] name`): a slug of at most 40 bytes.
pub fn check_repo_name(s: &str) -> Result<(), NameError> {
    check_slug(s, "repository name", 40)
}

/// The default integration branch of a job.
pub fn default_integration_branch(job: &JobId) -> String {
    format!("grove/{job}/integration")
}

/// Check a full branch name with the rules of `git check-ref-format --branch`.
pub fn check_branch(name: &str, what: &'static str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(invalid(what, name, "a slash at either end or two in a row"));
    }
    for part in name.split('/') {
        check_branch_component(part, what).map_err(|e| match e {
            NameError::InvalidBranch { why, .. } => invalid(what, name, why),
            other => other,
        })?;
    }
    if name == "@" {
        return Err(invalid(what, name, "\"@\" alone"));
    }
    Ok(())
}

fn check_branch_component(part: &str, what: &'static str) -> Result<(), NameError> {
    let bad = |why| Err(invalid(what, part, why));
    if part.is_empty() {
        return bad("an empty path component");
    }
    if part.starts_with('.') || part.starts_with('-') {
        return bad("a component starting with '.' or '-'");
    }
    if part.ends_with(".lock") || part.ends_with('.') {
        return bad("a component ending with '.lock' or '.'");
    }
    if part.contains("..") || part.contains("@{") {
        return bad("'..' or '@{'");
    }
    if part.chars().any(|c| c.is_ascii_control() || c == ' ' || "~^:?*[\\".contains(c)) {
        return bad("a space, a control character or one of ~ ^ : ? * [ \\");
    }
    Ok(())
}

fn invalid(what: &'static str, name: &str, why: &'static str) -> NameError {
    NameError::InvalidBranch { what, name: shown(name), why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_readable_and_safe() {
        assert_eq!(slugify("crates/ide-db", 60), "crates-ide-db");
        assert_eq!(slugify("  Rename FileId!  ", 60), "rename-fileid");
        assert_eq!(slugify("../..", 60), "");
        assert_eq!(slugify("a..b", 60), "a.b");
        assert_eq!(slugify("abcdef-ghij", 7), "abcdef");
    }

    #[test]
    fn branch_rules_follow_git() {
        assert!(check_branch("grove/x/integration", "branch").is_ok());
        for bad in ["", "a b", "a..b", "/a", "a/", "a.lock", "a~1", "-x", "a//b", "x/.y"] {
            assert!(check_branch(bad, "branch").is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn wire_names_are_single_safe_components() {
        for good in ["core", "crates-ide-db", "core-2", "core.fast", "a_b", "d00"] {
            assert_eq!(check_task_slug(good), Ok(()), "{good}");
        }
        let long = "a".repeat(TASK_SLUG_MAX + 1);
        for bad in
            ["", ".", "..", "../x", "a/b", "/abs", "-x", ".x", "x.", "x.lock", "A", "a b", "a\0", &long]
        {
            assert!(check_task_slug(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(JobId::parse("j-0001").is_ok());
        for bad in ["", "a/b", "..", "J-1", "x\n", "a.lock"] {
            assert!(JobId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_task_ref("j-0001/core").is_ok() && check_task_ref("core").is_ok());
        assert!(check_task_ref("j-0001/../x").is_err() && check_task_ref("a/b/c").is_err());
        assert!(
            check_pool("gpu_big-1").is_ok() && check_pool("gpu.big").is_err() && check_pool(">").is_err()
        );
        assert!(check_commit_id(&"a".repeat(40), "c").is_ok() && check_commit_id("HEAD", "c").is_err());
        assert!(check_commit_id(&"A".repeat(40), "c").is_err());
    }

    #[test]
    fn repo_paths_stay_inside() {
        for good in ["a", "crates/a/x.rs", ".github/x", ".gitignore", "a..b"] {
            assert_eq!(check_repo_path(good), Ok(()), "{good}");
        }
        let long = "a/".repeat(REPO_PATH_MAX);
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "a/../../b",
            "a\\..\\b",
            "C:x",
            "a\0b",
            ".git/config",
            "x/.GIT/hooks",
            &long,
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn errors_show_a_bounded_name() {
        let huge = "A".repeat(1 << 20);
        let e = check_task_slug(&huge).expect_err("refused").to_string();
        assert!(e.len() < 300, "{}", e.len());
    }

    #[test]
    fn job_ids_have_a_suffix() {
        let id = JobId::new("Rename FileId", 0x1_2345);
        assert_eq!(id.as_str(), "rename-fileid-2345");
        assert!(check_branch(&task_branch(&id, "core"), "b").is_ok());
    }
}
