//! Selection: which files of the tree are in the change.
//!
//! Globs follow gitignore habits on top of `globset`: `*` stays inside one path component and
//! `**` crosses folders; a glob naming a folder takes everything below it (`crates/core` is
//! `crates/core/**` too); a glob without `/` matches at any depth (`*.rs`, `target`); a
//! leading `/` anchors a glob to the root (`/build.rs`). Only regular and executable files are
//! ever selected: symlinks and submodules are left out.

use std::collections::HashSet;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{FileKind, PlanError, SourceTree};
use crate::spec::Selection;

/// Most names listed in one warning before "and N more".
const LIST_MAX: usize = 10;

/// Indexes into `tree.files()` of the selected files, in path order.
pub(crate) fn select(
    tree: &dyn SourceTree,
    sel: &Selection,
    warnings: &mut Vec<String>,
) -> Result<Vec<usize>, PlanError> {
    let files = tree.files();
    let include = Patterns::new("select.include", &sel.include)?;
    let exclude = Patterns::new("select.exclude", &sel.exclude)?;

    let listed: Option<HashSet<&str>> = if sel.files.is_empty() {
        None
    } else {
        Some(sel.files.iter().map(|f| f.trim_start_matches("./")).collect())
    };
    if let Some(listed) = &listed {
        check_listed(files, listed, warnings);
    }

    let mut inc_hit = vec![false; sel.include.len()];
    let mut exc_hit = vec![false; sel.exclude.len()];
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if !matches!(f.kind, FileKind::Regular | FileKind::Executable) {
            continue;
        }
        let p = f.path.as_str();
        let included = include.is_empty() || include.hit(p, &mut inc_hit, &mut scratch);
        let excluded = !exclude.is_empty() && exclude.hit(p, &mut exc_hit, &mut scratch);
        if included && !excluded && listed.as_ref().is_none_or(|l| l.contains(p)) {
            out.push(i);
        }
    }
    for (field, pats, hit) in
        [("select.include", &sel.include, &inc_hit), ("select.exclude", &sel.exclude, &exc_hit)]
    {
        for (p, hit) in pats.iter().zip(hit) {
            if !hit {
                warnings.push(format!("{field}: {p:?} matches no file"));
            }
        }
    }

    if let Some(re) = &sel.grep {
        let re = regex::bytes::Regex::new(re)
            .map_err(|e| PlanError::Selection { field: "select.grep", message: e.to_string() })?;
        let paths: Vec<&str> = out.iter().map(|&i| files[i].path.as_str()).collect();
        let hits = tree.grep(&re, &paths)?;
        let hits: HashSet<&str> = hits.iter().map(String::as_str).collect();
        out.retain(|&i| hits.contains(files[i].path.as_str()));
    }
    Ok(out)
}

/// Warn about listed files the tree does not have, or has as something other than a file.
fn check_listed(files: &[super::TreeFile], listed: &HashSet<&str>, warnings: &mut Vec<String>) {
    let mut seen: HashSet<&str> = HashSet::with_capacity(listed.len());
    let mut not_files = Vec::new();
    for f in files {
        if let Some(&p) = listed.get(f.path.as_str()) {
            seen.insert(p);
            if !matches!(f.kind, FileKind::Regular | FileKind::Executable) {
                not_files.push(p);
            }
        }
    }
    let mut unknown: Vec<&str> = listed.iter().copied().filter(|p| !seen.contains(p)).collect();
    unknown.sort_unstable();
    not_files.sort_unstable();
    if !unknown.is_empty() {
        warnings.push(format!("select.files: not in the tree: {}", list(&unknown)));
    }
    if !not_files.is_empty() {
        warnings.push(format!("select.files: symlinks or submodules, left out: {}", list(&not_files)));
    }
}

/// `a, b, c and 4 more`.
pub(crate) fn list(names: &[&str]) -> String {
    let mut s = names.iter().take(LIST_MAX).copied().collect::<Vec<_>>().join(", ");
    if names.len() > LIST_MAX {
        s.push_str(&format!(" and {} more", names.len() - LIST_MAX));
    }
    s
}

/// A person's globs, compiled; each may stand for several `globset` globs.
struct Patterns {
    set: GlobSet,
    /// For each compiled glob, the index of the person's glob it came from.
    origin: Vec<usize>,
}

impl Patterns {
    fn new(field: &'static str, pats: &[String]) -> Result<Self, PlanError> {
        let mut b = GlobSetBuilder::new();
        let mut origin = Vec::new();
        for (i, p) in pats.iter().enumerate() {
            for g in expand(p) {
                let glob = GlobBuilder::new(&g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| PlanError::Selection { field, message: format!("bad glob {p:?}: {e}") })?;
                b.add(glob);
                origin.push(i);
            }
        }
        let set = b.build().map_err(|e| PlanError::Selection { field, message: e.to_string() })?;
        Ok(Patterns { set, origin })
    }

    fn is_empty(&self) -> bool {
        self.origin.is_empty()
    }

    /// Whether `path` matches; marks the person's globs that matched.
    fn hit(&self, path: &str, hit: &mut [bool], scratch: &mut Vec<usize>) -> bool {
        self.set.matches_into(path, scratch);
        for &g in scratch.iter() {
            hit[self.origin[g]] = true;
        }
        !scratch.is_empty()
    }
}

/// The `globset` globs standing for one glob written gitignore-style.
pub(crate) fn expand(pat: &str) -> Vec<String> {
    let p = pat.trim().trim_end_matches('/');
    let (anchored, p) = match p.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (p.contains('/'), p.trim_start_matches("./")),
    };
    if p.is_empty() {
        return vec!["**".into()];
    }
    if anchored {
        vec![p.to_owned(), format!("{p}/**")]
    } else {
        vec![format!("**/{p}"), format!("**/{p}/**")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_expand_like_gitignore() {
        assert_eq!(expand("crates/core"), ["crates/core", "crates/core/**"]);
        assert_eq!(expand("*.rs"), ["**/*.rs", "**/*.rs/**"]);
        assert_eq!(expand("/build.rs"), ["build.rs", "build.rs/**"]);
        assert_eq!(expand("docs/"), ["**/docs", "**/docs/**"]);
    }
}
