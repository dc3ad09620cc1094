//! grove's domain: job specs, tasks and their states, and the planner that splits a change
//! into module-scoped tasks and orders them.
//!
//! Architecture invariant: this crate does no I/O. It never touches the file system, git, the
//! network or the terminal; the repository is seen through [`plan::SourceTree`], which the
//! git crate implements over a commit's tree.

pub mod agents;
pub mod env;
pub mod layout;
pub mod names;
pub mod placement;
pub mod plan;
pub mod spec;
pub mod task;
pub mod urls;
pub mod usage;

pub use names::{JobId, NameError};
pub use spec::{JobSpec, SpecError};
pub use task::{DiffStat, TaskState};
