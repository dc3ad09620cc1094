//! Tasks against the clock: a failed attempt that was not the job's verdict goes again after a
//! backoff (up to `run.max_attempts`), a task whose agent hit a usage limit is parked until
//! the limit resets, and a task past its `run.deadline` is stopped and failed.
//!
//! Both drivers (`drive` for `grove run`, `daemon` for the coordinator daemon) call
//! [`Coordinator::tick`] from their timers and [`Coordinator::after_attempt`] through
//! `handle_event`; what they wait for is in SQLite (`failures`, `first_dispatched_at`,
//! `retry_at`), so a restarted coordinator keeps every clock.

use std::time::Duration;

use grove_core::task::{Retry, TaskOutcome};
use grove_core::{JobId, TaskState};
use tokio::sync::mpsc::UnboundedSender;

use crate::drive::Note;
use crate::store::{TaskRow, Wait};
use crate::{CoordError, Coordinator};

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A little spread so a fleet parked on one limit does not come back in one instant: 1 s plus
/// up to a tenth of the wait (at most a minute), fixed per task and attempt.
pub(crate) fn jitter(slug: &str, attempt: u32, wait: i64) -> i64 {
    let spread = (wait / 10).clamp(1, 60) as u64;
    let h = slug.bytes().fold(u64::from(attempt).wrapping_mul(0x9E37_79B9), |h, b| {
        h.rotate_left(5) ^ u64::from(b).wrapping_mul(0x100_0000_01B3)
    });
    1 + (h % spread) as i64
}

/// `10h`, `30s`, `1h 30m`.
pub(crate) fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

impl Coordinator {
    /// Decide what an attempt's end means for its task. Returns the outcome to record as the
    /// task's end, or `None` when the task waits to go again (recorded here).
    pub(crate) fn after_attempt(
        &self,
        task: &TaskRow,
        o: &TaskOutcome,
        notes: &UnboundedSender<Note>,
    ) -> Result<Option<TaskOutcome>, CoordError> {
        if o.state != TaskState::Failed || o.retry == Retry::Final {
            return Ok(Some(o.clone()));
        }
        let job = &task.job;
        let spec = self.store.job(job.as_str())?.spec;
        let reason = o.reason.clone().unwrap_or_else(|| "the attempt failed".into());
        let now = unix_now();
        match o.retry {
            Retry::Parked { until } => {
                // A reset time from the wire is anything: one past the cap is the cap.
                let cap = spec.max_parked();
                let cap_secs = i64::try_from(cap.as_secs()).unwrap_or(i64::MAX);
                let wait = until.clamp(now, now.saturating_add(cap_secs)) - now;
                let parks = task.train.parks;
                let refused = if parks >= spec.max_parks() {
                    Some(format!("it was parked {} already (run.max_parks)", times(parks)))
                } else if task.train.parked_secs.saturating_add(wait) > cap_secs {
                    Some(format!(
                        "it would be parked {} in all, more than run.max_parked ({})",
                        human(Duration::from_secs(task.train.parked_secs.saturating_add(wait).max(0) as u64)),
                        human(cap)
                    ))
                } else {
                    None
                };
                if let Some(why) = refused {
                    let mut out = o.clone();
                    out.retry = Retry::Final;
                    out.reason = Some(format!("{reason}; not parked again: {why}"));
                    return Ok(Some(out));
                }
                let at = now + wait;
                let at = at.saturating_add(jitter(&task.slug, task.attempt, wait));
                let mut waiting = o.clone();
                waiting.reason = Some(format!("{reason}; parked until {}", clock(at)));
                self.store.set_waiting(job, &task.slug, &waiting, Wait::Park { secs: at - now }, at)?;
                let _ = notes.send(Note::State {
                    job: job.clone(),
                    task: task.slug.clone(),
                    state: TaskState::Parked,
                    turn: None,
                });
                Ok(None)
            }
            _ => {
                let failures = task.train.failures + 1;
                let max = spec.max_attempts();
                let mut out = o.clone();
                if failures >= max {
                    let n = if failures == 1 { "1 attempt".into() } else { format!("{failures} attempts") };
                    out.reason = Some(format!("{reason} (after {n})"));
                    return Ok(Some(out));
                }
                let wait = spec.retry_backoff(failures);
                out.reason = Some(format!("{reason}; attempt {} of {max} in {}", failures + 1, human(wait)));
                let at = now + wait.as_secs() as i64;
                self.store.set_waiting(job, &task.slug, &out, Wait::Retry, at)?;
                let _ = notes.send(Note::State {
                    job: job.clone(),
                    task: task.slug.clone(),
                    state: TaskState::Queued,
                    turn: None,
                });
                Ok(None)
            }
        }
    }

    /// Run the job's clocks once: fail and stop tasks past their deadline, and dispatch the
    /// tasks whose wait (backoff or parking) is over. Returns whether a task ended, so the
    /// caller moves the train and looks again at what it waits for.
    pub async fn tick(&self, job: &JobId, notes: &UnboundedSender<Note>) -> Result<bool, CoordError> {
        if self.is_cancelling(job) {
            return Ok(false);
        }
        let row = self.store.job(job.as_str())?;
        if row.state != "running" {
            return Ok(false);
        }
        // A dispatch of an earlier tick the bus did not confirm (NATS away for a moment) goes
        // again as the same attempt, under the same message id.
        if let Err(e) = self.resend_unconfirmed(job).await {
            tracing::warn!(%job, "sending again what the bus did not confirm: {e}");
        }
        let now = unix_now();
        let deadline = row.spec.run.deadline;
        let tasks = self.store.tasks(job)?;
        let mut ended = false;
        let job_spent = self.job_spent(&row)?;
        let over = crate::drive::over_budget(&row, job_spent);
        for t in tasks.iter().filter(|t| !t.state.is_terminal()) {
            if let (Some(d), Some(first)) = (deadline, t.train.first_dispatched_at)
                && now >= first.saturating_add(d.as_secs() as i64)
            {
                // Stop the running attempt as a cancellation would; the task itself failed.
                let cancel = grove_bus::Cancel { job: job.clone(), task: Some(t.slug.clone()) };
                if let Err(e) = self.bus.cancel(cancel).await {
                    tracing::warn!(task = %t.slug, "cannot stop the attempt past its deadline: {e}");
                }
                let why = format!("deadline {} passed", human(d));
                let outcome = TaskOutcome {
                    state: TaskState::Failed,
                    head: None,
                    stat: t.stat,
                    turns: t.turns,
                    reason: Some(why.clone()),
                    log_tail: t.log_tail.clone().unwrap_or_default(),
                    retry: Retry::Final,
                };
                self.store.set_finished(job, &t.slug, &outcome)?;
                let _ = notes.send(Note::Finished {
                    job: job.clone(),
                    task: t.slug.clone(),
                    state: TaskState::Failed,
                    stat: t.stat,
                    reason: Some(why),
                });
                ended = true;
                continue;
            }
            if t.train.retry_at.is_some_and(|at| at <= now) && t.agent.held.is_none() {
                if let Some(why) = &over {
                    // The job spent its budget while this task waited: it waits for a raise.
                    self.store.set_held(job, &t.slug, Some(why))?;
                    ended = true;
                    continue;
                }
                let attempt = t.attempt + 1;
                let placed = self.place(&row, &tasks, t, None);
                self.store.set_dispatched(job, &t.slug, attempt, &placed.pool, &placed.why)?;
                if let Err(e) = self
                    .bus
                    .dispatch(&placed.pool, self.assignment(&row, t, attempt, job_spent, &placed.pool)?)
                    .await
                {
                    tracing::warn!(task = %t.slug, attempt, "dispatching again: {e}; the next tick sends it");
                    continue;
                }
                self.store.set_on_bus(job, &t.slug, attempt)?;
                let _ = notes.send(Note::Dispatched { job: job.clone(), task: t.slug.clone(), attempt });
            }
        }
        Ok(ended)
    }
}

/// A unix time as `2026-11-25 15:00:00 UTC`.
pub(crate) fn clock(t: i64) -> String {
    // Years past 9999 do not print; no clamped time gets there.
    let when = std::time::UNIX_EPOCH + Duration::from_secs(t.clamp(0, 253_402_300_799) as u64);
    humantime::format_rfc3339_seconds(when).to_string().replacen('T', " ", 1).replace('Z', " UTC")
}

/// `1 time`, `3 times`.
fn times(n: u32) -> String {
    if n == 1 { "1 time".into() } else { format!("{n} times") }
}

#[cfg(test)]
mod tests {
    use super::*;

    use grove_core::task::{Retry, TaskOutcome};
    use grove_core::{DiffStat, TaskState};

    fn limit(until: i64) -> TaskOutcome {
        TaskOutcome {
            state: TaskState::Failed,
            head: None,
            stat: DiffStat::default(),
            turns: 1,
            reason: Some("usage limit".into()),
            log_tail: String::new(),
            retry: Retry::Parked { until },
        }
    }

    /// Parking is capped by count and by total time, and a reset time from the wire that is
    /// absurdly far away (or in the past) is clamped, not overflowed.
    #[test]
    fn parking_is_capped_and_reset_times_are_clamped() {
        let git = grove_git::Git::detect().expect("git");
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (base, tips) = crate::train::tests::repo(&git, &dir, 2, &[]);
        let mut spec = crate::train::tests::spec();
        spec.run.max_parks = Some(2);
        spec.run.max_parked = Some(Duration::from_secs(3600));
        let (coord, job) =
            crate::train::tests::coordinator(&tmp.path().join("home"), &dir, spec, &base, &tips);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let task = || coord.store.task(&job, "m0").expect("task").expect("m0");

        // "Try again in 9999999 days": parked for the cap (an hour), plus jitter.
        let now = unix_now();
        assert!(coord.after_attempt(&task(), &limit(i64::MAX), &tx).expect("parked").is_none());
        let t = task();
        assert_eq!(t.state, TaskState::Parked);
        let at = t.train.retry_at.expect("retry_at");
        assert!((now + 3600..=now + 3600 + 62).contains(&at), "{at} vs {now}");
        assert_eq!(t.train.parks, 1);

        // The next limit would take it past an hour in all: failed, with why.
        let o = coord.after_attempt(&t, &limit(now + 60), &tx).expect("decided").expect("failed");
        assert_eq!(o.retry, Retry::Final);
        let why = o.reason.expect("reason");
        assert!(why.contains("not parked again") && why.contains("run.max_parked"), "{why}");

        // A reset in the past parks for the jitter only; the count cap ends the third.
        let t = coord.store.task(&job, "m1").expect("task").expect("m1");
        assert!(coord.after_attempt(&t, &limit(i64::MIN), &tx).expect("parked").is_none());
        let t = coord.store.task(&job, "m1").expect("task").expect("m1");
        assert!(t.train.retry_at.expect("retry_at") <= unix_now() + 2);
        assert!(coord.after_attempt(&t, &limit(now + 1), &tx).expect("parked").is_none());
        let t = coord.store.task(&job, "m1").expect("task").expect("m1");
        let why = coord.after_attempt(&t, &limit(now + 1), &tx).expect("decided").expect("failed").reason;
        assert!(
            why.as_deref().is_some_and(|w| w.contains("parked 2 times already (run.max_parks)")),
            "{why:?}"
        );
        assert_eq!(clock(i64::MAX), "9999-12-31 23:59:59 UTC");
    }

    #[test]
    fn jitter_is_small_and_stable() {
        assert_eq!(jitter("a", 1, 3), 1, "a few seconds' wait gets a second");
        let j = jitter("core", 2, 3600);
        assert!((1..=60).contains(&j));
        assert_eq!(j, jitter("core", 2, 3600));
        assert_eq!(clock(1_795_600_800), "2026-11-25 10:00:00 UTC");
        assert_eq!(human(Duration::from_secs(36000)), "10h");
    }
}
