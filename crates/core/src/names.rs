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
        if s.is_empty() {
            return Err(NameError::Empty { what: "job id" });
        }
        check_branch_component(s, "job id")?;
        Ok(JobId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
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
    NameError::InvalidBranch { what, name: name.to_owned(), why }
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
    fn job_ids_have_a_suffix() {
        let id = JobId::new("Rename FileId", 0x1_2345);
        assert_eq!(id.as_str(), "rename-fileid-2345");
        assert!(check_branch(&task_branch(&id, "core"), "b").is_ok());
    }
}
