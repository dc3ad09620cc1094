//! Progress while a job runs: a bar and counts on a terminal, one line per finished task
//! above it; nothing when stderr is not a terminal (the summary comes at the end). With
//! `[notify] bell`, the terminal bell rings when a task needs attention or fails and when
//! the job ends.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use grove_coordinator::Note;
use grove_core::TaskState;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::output::{paint, state_color};

/// Show progress until the sender side closes; `bell`: ring the terminal bell on what needs a
/// person (only on a terminal).
pub async fn show(mut rx: UnboundedReceiver<Note>, total: usize, bell: bool) {
    let tty = std::io::stderr().is_terminal();
    let bell = bell && tty;
    let ring = || {
        let mut err = std::io::stderr();
        let _ = err.write_all(b"\x07").and_then(|()| err.flush());
    };
    let color = crate::output::color_enabled_stderr();
    let bar = if tty {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden())
    };
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut states: HashMap<String, TaskState> = HashMap::new();
    let mut merged = 0usize;
    while let Some(note) = rx.recv().await {
        match note {
            Note::Dispatched { task, .. } => {
                states.insert(task, TaskState::Queued);
            }
            Note::State { task, state, .. } => {
                if state == TaskState::Parked && states.get(&task) != Some(&TaskState::Parked) {
                    let mark = paint("parked", state_color(state), color);
                    bar.println(format!(
                        "{mark:>8}  {task}  the agent hit a usage limit; `grove status` says until when"
                    ));
                }
                states.insert(task, state);
            }
            Note::Checkpoint { .. } => {}
            Note::Finished { task, state, stat, reason, .. } => {
                if bell && matches!(state, TaskState::Failed | TaskState::NeedsAttention) {
                    ring();
                }
                states.insert(task.clone(), state);
                bar.inc(1);
                let mark = paint(
                    if state == TaskState::Succeeded { "done" } else { state.as_str() },
                    state_color(state),
                    color,
                );
                let why = reason.map(|r| format!("  {r}")).unwrap_or_default();
                bar.println(format!("{mark:>8}  {task}  {stat}{why}"));
            }
            Note::Merged { commit, .. } => {
                if commit.is_some() {
                    merged += 1;
                }
            }
            Note::Conflict { task, paths, .. } => {
                if bell {
                    ring();
                }
                let mark = paint("conflict", state_color(TaskState::NeedsAttention), color);
                bar.println(format!("{mark:>8}  {task}  {}", paths.join(", ")));
            }
            Note::Redo { task, paths, .. } => {
                // One more attempt to wait for.
                bar.inc_length(1);
                let mark = paint("redo", state_color(TaskState::Queued), color);
                bar.println(format!(
                    "{mark:>8}  {task}  conflicted in {}; again on the integration head",
                    paths.join(", ")
                ));
            }
            Note::CheckFailed { task, .. } => {
                if bell {
                    ring();
                }
                let mark = paint("set aside", state_color(TaskState::NeedsAttention), color);
                bar.println(format!("{mark:>8}  {task}  breaks the integration check"));
            }
            Note::Stopped { reason, .. } => {
                let mark = paint("stopped", state_color(TaskState::NeedsAttention), color);
                bar.println(format!("{mark:>8}  merging stopped: {reason}"));
            }
            Note::Ended { .. } => {
                if bell {
                    ring();
                }
            }
            Note::Published { skipped, .. } => {
                for b in skipped {
                    bar.println(format!(
                        "    note  {b} is checked out in your repository; not updated there"
                    ));
                }
            }
        }
        let count = |f: fn(TaskState) -> bool| states.values().filter(|s| f(**s)).count();
        let parked = match count(|s| s == TaskState::Parked) {
            0 => String::new(),
            n => format!(" · {n} parked"),
        };
        bar.set_message(format!(
            "{} running · {} queued{parked} · {} failed · {merged} merged",
            count(|s| matches!(s, TaskState::Preparing | TaskState::Running | TaskState::Checking)),
            count(|s| s == TaskState::Queued),
            count(|s| matches!(s, TaskState::Failed | TaskState::NeedsAttention | TaskState::Cancelled)),
        ));
    }
    bar.finish_and_clear();
}
