//! Planner tests over in-memory trees, one file per rule.

mod auto;
mod cargo;
mod codeowners;
mod core;
mod go;
mod hostile;
mod jvm;
mod npm;
mod python;
mod shard;

use std::collections::BTreeMap;

use super::{FileKind, Plan, SourceTree, TreeError, TreeFile, plan};
use crate::spec::{Selection, Split, SplitRule};

/// A tree held in memory.
pub(super) struct MemTree {
    files: Vec<TreeFile>,
    content: BTreeMap<String, Vec<u8>>,
}

impl MemTree {
    /// Files given as `(path, content)`; a path ending in `@` is a symlink, `#` a submodule.
    pub fn new(entries: &[(&str, &str)]) -> Self {
        let mut content = BTreeMap::new();
        let mut kinds = BTreeMap::new();
        for (p, c) in entries {
            let (path, kind) = if let Some(p) = p.strip_suffix('@') {
                (p, FileKind::Symlink)
            } else if let Some(p) = p.strip_suffix('#') {
                (p, FileKind::Submodule)
            } else {
                (*p, FileKind::Regular)
            };
            content.insert(path.to_owned(), c.as_bytes().to_vec());
            kinds.insert(path.to_owned(), kind);
        }
        let files = content
            .iter()
            .map(|(p, c)| TreeFile { path: p.clone(), size: c.len() as u64, kind: kinds[p] })
            .collect();
        MemTree { files, content }
    }
}

impl MemTree {
    /// Replace the content of `path` with raw bytes (not UTF-8, say).
    pub fn with_bytes(mut self, path: &str, bytes: &[u8]) -> Self {
        self.content.insert(path.to_owned(), bytes.to_vec());
        if let Some(f) = self.files.iter_mut().find(|f| f.path == path) {
            f.size = bytes.len() as u64;
        }
        self
    }

    /// Say `path` is `size` bytes whatever its content (a tree listing sizes it does not hold).
    pub fn with_size(mut self, path: &str, size: u64) -> Self {
        if let Some(f) = self.files.iter_mut().find(|f| f.path == path) {
            f.size = size;
        }
        self
    }
}

impl SourceTree for MemTree {
    fn files(&self) -> &[TreeFile] {
        &self.files
    }
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        Ok(self.content.get(path).cloned())
    }
}

pub(super) fn split(rule: SplitRule) -> Split {
    Split { rule, ..Split::default() }
}

pub(super) fn run(tree: &MemTree, select: &Selection, split: &Split) -> Plan {
    plan(tree, select, split).expect("plans")
}

/// `slug: files` per task, in order.
pub(super) fn layout(p: &Plan) -> Vec<String> {
    p.tasks.iter().map(|t| format!("{}: {}", t.slug, t.files.join(" "))).collect()
}

pub(super) fn task<'p>(p: &'p Plan, slug: &str) -> &'p super::PlannedTask {
    p.tasks.iter().find(|t| t.slug == slug).unwrap_or_else(|| panic!("no task {slug} in {:#?}", layout(p)))
}

/// Every file of every task is inside its sparse checkout.
pub(super) fn assert_sparse_covers(p: &Plan) {
    for t in &p.tasks {
        let Some(dirs) = &t.sparse else { continue };
        for f in &t.files {
            let d = super::paths::parent(f);
            assert!(
                d.is_empty() || dirs.iter().any(|s| super::paths::is_within(d, s)),
                "{} not in the checkout of {}: {dirs:?}",
                f,
                t.slug
            );
        }
    }
}
