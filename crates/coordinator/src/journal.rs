//! The notes journal: every [`Note`] the daemon sends to watchers is first written to SQLite
//! with a sequence number per job, so a follower that lost the coordinator (a restart, a
//! network blip, a watcher that lagged) resumes from the last number it saw: no note missed,
//! none shown twice.
//!
//! Limits: a note is journaled right after the state change it reports, not in the same
//! transaction; a coordinator killed between the two loses that one note (never the state:
//! `grove run` ends on the job's state, read again at the end).

use std::sync::Arc;

use grove_core::{DiffStat, JobId, TaskState};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Coordinator;
use crate::drive::Note;
use crate::notify::Notifier;

/// A note with its place in its job's journal (1 for the first).
#[derive(Debug, Clone)]
pub struct Journaled {
    pub seq: u64,
    pub note: Note,
}

/// The one writer of the journal, for the daemon and `grove run` alike: a blocking thread
/// that journals each note sent to the returned sender, in order (a note's number is its
/// place), hands it to `notifier` (which sends what a person should hear), then to
/// `forward` (watchers, the progress display). It ends when every sender is dropped.
pub fn writer(
    coord: Arc<Coordinator>,
    notifier: Option<Arc<Notifier>>,
    forward: impl Fn(Journaled) + Send + 'static,
) -> mpsc::UnboundedSender<Note> {
    let (notes, mut rx) = mpsc::unbounded_channel::<Note>();
    tokio::task::spawn_blocking(move || {
        while let Some(note) = rx.blocking_recv() {
            let job = note.job().clone();
            let seq = match coord.store.append_note(&job, &to_json(&note)) {
                Ok(seq) => seq,
                // Watchers still get it, unnumbered: a follower that resumes misses it.
                Err(e) => {
                    tracing::warn!(%job, "journaling a note: {e}");
                    0
                }
            };
            if let Some(n) = &notifier {
                n.observe(&note);
            }
            forward(Journaled { seq, note });
        }
    });
    notes
}

fn stat_json(s: &DiffStat) -> Value {
    json!([s.files, s.insertions, s.deletions])
}

fn stat_of(v: &Value) -> DiffStat {
    let n = |i: usize| v.get(i).and_then(Value::as_u64).unwrap_or(0);
    DiffStat { files: n(0), insertions: n(1), deletions: n(2) }
}

/// A note as the journal keeps it (its job is the row's).
pub fn to_json(n: &Note) -> String {
    let v = match n {
        Note::Dispatched { task, attempt, .. } => {
            json!({"kind": "dispatched", "task": task, "attempt": attempt})
        }
        Note::State { task, state, turn, .. } => {
            json!({"kind": "state", "task": task, "state": state.as_str(), "turn": turn})
        }
        Note::Checkpoint { task, turn, stat, .. } => {
            json!({"kind": "checkpoint", "task": task, "turn": turn, "stat": stat_json(stat)})
        }
        Note::Finished { task, state, stat, reason, .. } => json!({
            "kind": "finished", "task": task, "state": state.as_str(), "stat": stat_json(stat), "reason": reason
        }),
        Note::Merged { task, commit, .. } => json!({"kind": "merged", "task": task, "commit": commit}),
        Note::Conflict { task, paths, .. } => json!({"kind": "conflict", "task": task, "paths": paths}),
        Note::Redo { task, paths, .. } => json!({"kind": "redo", "task": task, "paths": paths}),
        Note::CheckFailed { task, output, .. } => {
            json!({"kind": "check-failed", "task": task, "output": output})
        }
        Note::Published { branches, skipped, .. } => {
            json!({"kind": "published", "branches": branches, "skipped": skipped})
        }
        Note::Stopped { reason, .. } => json!({"kind": "stopped", "reason": reason}),
        Note::Ended { state, .. } => json!({"kind": "ended", "state": state}),
    };
    v.to_string()
}

/// A journaled note of `job`; `None` for one this grove cannot read (a newer grove wrote it).
pub fn from_json(job: &JobId, text: &str) -> Option<Note> {
    let v: Value = serde_json::from_str(text).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let strings = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let task = || s("task").unwrap_or_default();
    let state = || s("state").and_then(|x| x.parse::<TaskState>().ok());
    let turn = v.get("turn").and_then(Value::as_u64).and_then(|t| u32::try_from(t).ok());
    let stat = || v.get("stat").map(stat_of).unwrap_or_default();
    let job = job.clone();
    Some(match v.get("kind")?.as_str()? {
        "dispatched" => Note::Dispatched {
            job,
            task: task(),
            attempt: v
                .get("attempt")
                .and_then(Value::as_u64)
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
        },
        "state" => Note::State { job, task: task(), state: state()?, turn },
        "checkpoint" => Note::Checkpoint { job, task: task(), turn: turn.unwrap_or(0), stat: stat() },
        "finished" => {
            Note::Finished { job, task: task(), state: state()?, stat: stat(), reason: s("reason") }
        }
        "merged" => Note::Merged { job, task: task(), commit: s("commit") },
        "conflict" => Note::Conflict { job, task: task(), paths: strings("paths") },
        "redo" => Note::Redo { job, task: task(), paths: strings("paths") },
        "check-failed" => Note::CheckFailed { job, task: task(), output: s("output").unwrap_or_default() },
        "published" => Note::Published {
            job,
            branches: v.get("branches").and_then(Value::as_u64).unwrap_or(0) as usize,
            skipped: strings("skipped"),
        },
        "stopped" => Note::Stopped { job, reason: s("reason").unwrap_or_default() },
        "ended" => Note::Ended { job, state: s("state")? },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_note_comes_back_from_the_journal_as_it_went_in() {
        let job = JobId::new("j", 7);
        let stat = DiffStat { files: 1, insertions: 2, deletions: 3 };
        let notes = vec![
            Note::Dispatched { job: job.clone(), task: "a".into(), attempt: 2 },
            Note::State { job: job.clone(), task: "a".into(), state: TaskState::Running, turn: Some(1) },
            Note::Checkpoint { job: job.clone(), task: "a".into(), turn: 1, stat },
            Note::Finished {
                job: job.clone(),
                task: "a".into(),
                state: TaskState::Failed,
                stat,
                reason: Some("why".into()),
            },
            Note::Merged { job: job.clone(), task: "a".into(), commit: Some("abc".into()) },
            Note::Conflict { job: job.clone(), task: "a".into(), paths: vec!["p".into()] },
            Note::Redo { job: job.clone(), task: "a".into(), paths: vec!["p".into()] },
            Note::CheckFailed { job: job.clone(), task: "a".into(), output: "out".into() },
            Note::Published { job: job.clone(), branches: 3, skipped: vec!["b".into()] },
            Note::Stopped { job: job.clone(), reason: "r".into() },
            Note::Ended { job: job.clone(), state: "done".into() },
        ];
        for n in notes {
            let back = from_json(&job, &to_json(&n)).expect("readable");
            assert_eq!(format!("{back:?}"), format!("{n:?}"));
        }
        assert!(from_json(&job, r#"{"kind":"from-the-future"}"#).is_none());
    }
}
