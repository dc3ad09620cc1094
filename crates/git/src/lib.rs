//! Every git operation grove makes.
//!
//! gix reads: commits, trees, blobs and diff statistics ([`tree`], [`stats`]). The git CLI,
//! through the one wrapper in [`cli`], does what gix does not or where git is needed anyway:
//! fetch, worktrees and sparse checkout, commits that must update a worktree's index,
//! `merge-tree --write-tree`, ref updates.
//!
//! API boundary: nothing here prints or reads `$HOME`; paths come from the caller.

pub mod cli;
pub mod merge;
pub mod mirror;
pub mod sideref;
pub mod stats;
pub mod tree;
pub mod worktree;

pub use cli::{Git, GitError};
pub use merge::MergeOutcome;
pub use mirror::{Mirror, Source};
pub use tree::CommitTree;

/// A full object id in hex.
pub type Oid = String;

#[cfg(test)]
mod testutil;
