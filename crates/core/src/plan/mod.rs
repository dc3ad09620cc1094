//! The planner: from a commit's files and a job's selection and split rule, the tasks of a
//! job, each owning a module's selected files, in logical order (dependencies first).
//!
//! API boundary: the planner sees the repository only through [`SourceTree`]; it never reads
//! the disk or runs git. `grove-git` implements `SourceTree` over a commit's tree.

mod planner;

pub use planner::plan;

use crate::spec::SplitRule;

/// One file of the tree being planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Repository-relative, `/`-separated, no leading `./`.
    pub path: String,
    /// Size in bytes (for symlinks: the length of the target).
    pub size: u64,
    pub kind: FileKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Executable,
    Symlink,
    Submodule,
}

/// A tree could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TreeError(pub String);

/// A read-only view of the files of one commit.
pub trait SourceTree: Sync {
    /// Every file of the tree, sorted by path.
    fn files(&self) -> &[TreeFile];

    /// The content of one file, or `None` when the tree has no such file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError>;

    /// The paths among `paths` whose content matches `re`, in the order given. The default reads
    /// each file; implementations may search faster.
    fn grep(&self, re: &regex::bytes::Regex, paths: &[&str]) -> Result<Vec<String>, TreeError> {
        let mut out = Vec::new();
        for p in paths {
            if let Some(bytes) = self.read(p)?
                && re.is_match(&bytes)
            {
                out.push((*p).to_owned());
            }
        }
        Ok(out)
    }
}

/// The result of planning: tasks in merge order, and what was learnt on the way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Tasks in logical order: every task comes after the tasks it depends on; ties are broken
    /// deterministically (by slug).
    pub tasks: Vec<PlannedTask>,
    /// Modules discovered in the repository (including those that got no task).
    pub modules: Vec<Module>,
    /// Module dependency edges, `(dependent, dependency)` as indexes into `modules`.
    pub edges: Vec<(usize, usize)>,
    /// Things a person should know: unparsable manifests, globs matching nothing, cycles.
    pub warnings: Vec<String>,
    /// How many files the selection kept.
    pub selected_files: usize,
}

/// One task of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTask {
    /// Unique in the plan, stable across re-plans, readable (`ide-db`, `crates-foo`).
    pub slug: String,
    /// The module name(s) for people.
    pub title: String,
    /// Folders to check out (cone-mode sparse checkout; top-level files are always there),
    /// or `None` for a full checkout.
    pub sparse: Option<Vec<String>>,
    /// The selected files this task owns: what the agent is asked to change.
    pub files: Vec<String>,
    /// Lines in `files` (0 when not counted).
    pub lines: u64,
    /// Slugs of the tasks this task depends on (they come earlier in the order).
    pub depends_on: Vec<String>,
    /// 0 for tasks with no dependency among the tasks; otherwise 1 + the highest level of its
    /// dependencies. Tasks of one level are independent of each other.
    pub level: u32,
}

/// A module found in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The module's own name (package name) or its path.
    pub name: String,
    /// Its folder, repository-relative (`""` for the root).
    pub path: String,
    /// Which rule found it.
    pub rule: SplitRule,
}

/// Planning failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The tree could not be read.
    #[error("reading the tree: {0}")]
    Tree(#[from] TreeError),
    /// A selection pattern is unusable.
    #[error("{field}: {message}")]
    Selection { field: &'static str, message: String },
}
