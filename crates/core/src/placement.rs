//! Where a task runs: its pool, chosen when it is dispatched, with the reason.
//!
//! A job asks for a pool (`run.pool`): `local`, `cloud`, any named pool, or `auto`. A named
//! pool is taken as given. `auto` follows the job's `[placement]` policy, first rule that
//! applies wins:
//!
//! 1. The repository is only reachable as a path on the coordinator's machine: `local`
//!    (cloud workers could not clone it).
//! 2. Only one pool is served (the embedded mode): that pool.
//! 3. The task is expected to run long (`placement.expected` at or over `placement.long`,
//!    default 2h): `cloud`, so a laptop going to sleep does not stall it.
//! 4. The task is large (more lines in scope than `placement.cloud_lines`): `cloud`.
//! 5. Fewer than `placement.local_max` of the job's tasks are placed `local` and not over:
//!    `local`.
//! 6. Otherwise the overflow goes to `cloud`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::{de_duration, ser_duration};

/// The pool a job asks for when it asks for the policy.
pub const AUTO: &str = "auto";
pub const LOCAL: &str = "local";
pub const CLOUD: &str = "cloud";

/// The `[placement]` section of a job spec: how `run.pool = "auto"` decides.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    /// Tasks of this job placed `local` at once, at most (default: `run.concurrency`).
    pub local_max: Option<u32>,
    /// How long a task of this job is expected to take (`"8h"`); none: not known.
    #[serde(default, deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub expected: Option<Duration>,
    /// Tasks expected to take at least this long go to the cloud (default 2h).
    #[serde(default, deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub long: Option<Duration>,
    /// Tasks with more lines in scope than this go to the cloud (default: no limit).
    pub cloud_lines: Option<u64>,
}

pub mod defaults {
    use std::time::Duration;
    pub const LONG: Duration = Duration::from_secs(2 * 3600);
}

/// What the policy looks at for one task.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The pool the job asks for (`run.pool`, default `local`).
    pub requested: &'a str,
    /// Lines of the task's files.
    pub lines: u64,
    /// The repository was given as a path, not a URL.
    pub path_only: bool,
    /// The job's tasks placed `local` now and not over (this one not counted).
    pub local_in_flight: u32,
    /// `Some(pool)` when the coordinator serves one pool only (the embedded mode).
    pub single_pool: Option<&'a str>,
    /// The job's concurrency, the default of `local_max`.
    pub concurrency: u32,
}

/// A placement: the pool and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub pool: String,
    pub why: String,
}

fn placed(pool: &str, why: impl Into<String>) -> Placed {
    Placed { pool: pool.to_owned(), why: why.into() }
}

/// Decide where one task runs.
pub fn place(policy: &PlacementSpec, f: &Facts<'_>) -> Placed {
    if f.requested != AUTO {
        return placed(f.requested, format!("the job asks for pool {}", f.requested));
    }
    if f.path_only {
        return placed(LOCAL, "auto: the repository is a local path, which cloud workers cannot reach");
    }
    if let Some(pool) = f.single_pool {
        return placed(pool, format!("auto: only pool {pool} is served here"));
    }
    let long = policy.long.unwrap_or(defaults::LONG);
    if let Some(expected) = policy.expected
        && expected >= long
    {
        return placed(
            CLOUD,
            format!("auto: expected to take {}, at least {}", human(expected), human(long)),
        );
    }
    if let Some(max) = policy.cloud_lines
        && f.lines > max
    {
        return placed(CLOUD, format!("auto: {} lines in scope, over {max}", f.lines));
    }
    let local_max = policy.local_max.unwrap_or(f.concurrency);
    if f.local_in_flight < local_max {
        return placed(LOCAL, format!("auto: local capacity ({} of {local_max} in use)", f.local_in_flight));
    }
    placed(CLOUD, format!("auto: overflow, local is full ({local_max} of {local_max} in use)"))
}

/// `90m` → `1h30m`, `8h` → `8h`, `45s` → `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(requested: &str) -> Facts<'_> {
        Facts {
            requested,
            lines: 100,
            path_only: false,
            local_in_flight: 0,
            single_pool: None,
            concurrency: 4,
        }
    }

    #[test]
    fn a_named_pool_is_taken_as_given() {
        let p = place(&PlacementSpec::default(), &Facts { path_only: true, ..facts("gpu") });
        assert_eq!(p.pool, "gpu");
        assert_eq!(p.why, "the job asks for pool gpu");
    }

    #[test]
    fn auto_fills_local_then_overflows_to_cloud() {
        let policy = PlacementSpec { local_max: Some(2), ..Default::default() };
        let pools: Vec<String> = (0..4)
            .map(|n| place(&policy, &Facts { local_in_flight: n.min(2), ..facts(AUTO) }).pool)
            .collect();
        assert_eq!(pools, ["local", "local", "cloud", "cloud"]);
        let p = place(&policy, &Facts { local_in_flight: 2, ..facts(AUTO) });
        assert_eq!(p.why, "auto: overflow, local is full (2 of 2 in use)");
    }

    #[test]
    fn local_max_defaults_to_the_concurrency() {
        let p = place(&PlacementSpec::default(), &Facts { local_in_flight: 3, ..facts(AUTO) });
        assert_eq!(p.pool, LOCAL);
        let p = place(&PlacementSpec::default(), &Facts { local_in_flight: 4, ..facts(AUTO) });
        assert_eq!(p.pool, CLOUD);
    }

    #[test]
    fn long_and_large_tasks_go_to_the_cloud() {
        let long = PlacementSpec { expected: Some(Duration::from_secs(8 * 3600)), ..Default::default() };
        let p = place(&long, &facts(AUTO));
        assert_eq!((p.pool.as_str(), p.why.as_str()), (CLOUD, "auto: expected to take 8h, at least 2h"));
        let short = PlacementSpec { expected: Some(Duration::from_secs(600)), ..Default::default() };
        assert_eq!(place(&short, &facts(AUTO)).pool, LOCAL);
        let big = PlacementSpec { cloud_lines: Some(50), ..Default::default() };
        assert_eq!(place(&big, &facts(AUTO)).why, "auto: 100 lines in scope, over 50");
    }

    #[test]
    fn a_path_only_repository_stays_local_whatever_else() {
        let long = PlacementSpec {
            expected: Some(Duration::from_secs(8 * 3600)),
            local_max: Some(0),
            ..Default::default()
        };
        let p = place(&long, &Facts { path_only: true, ..facts(AUTO) });
        assert_eq!(p.pool, LOCAL);
        assert!(p.why.contains("local path"), "{}", p.why);
    }

    #[test]
    fn one_served_pool_takes_everything() {
        let p = place(
            &PlacementSpec::default(),
            &Facts { single_pool: Some(LOCAL), local_in_flight: 99, ..facts(AUTO) },
        );
        assert_eq!(p.pool, LOCAL);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::ZERO), "0s");
    }
}
