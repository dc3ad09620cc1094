//! The cloud pool on Kubernetes: a launcher in the coordinator that, while a
//! Kubernetes-backed pool has tasks waiting and fewer workers than it needs, creates
//! `batch/v1` Jobs, each running one ephemeral `grove worker` that takes whatever task NATS
//! gives it and exits when idle.
//!
//! - [`config`]: `[kube]` of `grove.toml`, environment and flags, validated.
//! - [`job`]: the pure builders (the Job, the git-token Secret, names and labels).
//! - [`decide`]: what the launcher sees (a Job and its pods) and decides (pure).
//! - [`launcher`]: the reconcile loop against the API server (kube-rs).
//!
//! API boundary: the only crate that knows Kubernetes; what it learns reaches the rest of
//! grove as [`grove_coordinator::launch::PoolReport`]s.

pub mod config;
pub mod decide;
pub mod job;
pub mod launcher;
