//! Repository path helpers: parents, joins with `..`, and folder covers for sparse checkouts.

/// The folder holding `path` (`""` for a top-level file).
pub(crate) fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// Whether `path` is `dir` or inside it; everything is inside the root `""`.
pub(crate) fn is_within(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// `rel` taken from folder `dir`, with `.` and `..` resolved and no trailing slash. `None` when it
/// is absolute or leaves the repository.
pub(crate) fn join(dir: &str, rel: &str) -> Option<String> {
    let rel = rel.trim();
    if rel.starts_with('/') || rel.starts_with('\\') || rel.get(1..2) == Some(":") {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    for c in rel.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// The smallest set of folders covering `dirs`: sorted, without duplicates, without folders
/// inside another listed folder, and without the root `""` (top-level files are always there).
pub(crate) fn cover(mut dirs: Vec<String>) -> Vec<String> {
    dirs.retain(|d| !d.is_empty());
    // By components, so that a folder's descendants follow it directly (`a`, `a/b`, `a-b`).
    dirs.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    dirs.dedup();
    let mut out: Vec<String> = Vec::with_capacity(dirs.len());
    for d in dirs {
        // A covering folder, if any, is the last one kept.
        if out.last().is_some_and(|last| is_within(&d, last)) {
            continue;
        }
        out.push(d);
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_resolve_dots() {
        assert_eq!(join("crates/a", "../b").as_deref(), Some("crates/b"));
        assert_eq!(join("crates/a", "./x/").as_deref(), Some("crates/a/x"));
        assert_eq!(join("", "a/../b").as_deref(), Some("b"));
        assert_eq!(join("a", "../.."), None);
        assert_eq!(join("a", "/etc"), None);
    }

    #[test]
    fn covers_drop_nested_folders() {
        let c = cover(vec!["a/b".into(), "a".into(), "a-b".into(), "".into(), "c/d".into(), "a-b/x".into()]);
        assert_eq!(c, ["a", "a-b", "c/d"]);
        assert!(is_within("a/b", "a") && !is_within("ab", "a") && is_within("x", ""));
        assert_eq!(parent("a/b/c.rs"), "a/b");
        assert_eq!(parent("c.rs"), "");
    }
}
