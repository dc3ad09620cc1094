//! Plain folders: the folder at `depth` levels names a module; a file shallower than that
//! belongs to its own folder, and top-level files to the root.

use super::{Modules, SourceTree};
use crate::plan::FileKind;
use crate::plan::paths::parent;
use crate::spec::SplitRule;

pub(super) fn discover(tree: &dyn SourceTree, depth: u32, m: &mut Modules) {
    let depth = depth.max(1) as usize;
    for f in tree.files() {
        if !matches!(f.kind, FileKind::Regular | FileKind::Executable) {
            continue;
        }
        let key = key(&f.path, depth);
        if m.at(key).is_none() {
            m.add(key, key, SplitRule::Dirs, false);
        }
    }
}

/// The folder of `path` at most `depth` levels down.
pub(crate) fn key(path: &str, depth: usize) -> &str {
    match path.match_indices('/').nth(depth - 1) {
        Some((i, _)) => &path[..i],
        None => parent(path),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_stop_at_depth() {
        assert_eq!(super::key("a/b/c/d.rs", 2), "a/b");
        assert_eq!(super::key("a/d.rs", 2), "a");
        assert_eq!(super::key("d.rs", 1), "");
        assert_eq!(super::key("a/b/d.rs", 1), "a");
    }
}
