//! The builtin `replace` agent without a checkout: when the mirror is on this machine and the
//! attempt needs nothing of a workspace (no check, redo, ignored or carried files, upstreams,
//! kept worktree), the task's files are read from the mirror, rewritten, and the checkpoint
//! commit is written there in process (`grove_git::rewrite`); the branch moves by
//! compare-and-swap. The events, log lines, commit and branch are those of the checkout path.

use std::sync::Arc;

use grove_core::task::{Assignment, EventKind};
use grove_core::{DiffStat, TaskState, spec::KeepWorktrees};
use grove_git::worktree::{Checkout, Identity};
use tokio_util::sync::CancellationToken;

use crate::WorkerContext;
use crate::agent;
use crate::attempt::{failed, succeeded, transient};
use crate::process::Log;
use crate::workspace::Mode;

/// The rewrite, when this attempt can run without a checkout.
pub struct Direct {
    re: regex::bytes::Regex,
    with: Vec<u8>,
    /// The mirror, opened once for the whole turn.
    session: grove_git::rewrite::Session,
}

impl Direct {
    /// `Some` when the attempt is a `replace` turn the checkout path would run exactly so: the
    /// mirror here (a worktree workspace), a pattern that compiles, and nothing that needs a
    /// folder on disk. Anything else goes through a workspace as before.
    pub fn eligible(ctx: &WorkerContext, a: &Assignment, path: &std::path::Path) -> Option<Direct> {
        let here = ctx.workspace == Mode::Auto && a.mirror.join("HEAD").exists();
        let plain = a.check.is_none()
            && a.redo.is_none()
            && a.ignored_files.is_empty()
            && a.carried.is_empty()
            && a.upstreams.is_empty()
            && a.keep_worktrees != KeepWorktrees::All
            // A workspace a crashed attempt left: the checkout path removes it first.
            && std::fs::symlink_metadata(path).is_err();
        if !(here && plain) {
            return None;
        }
        let (re, with) = agent::replacer(&a.agent)?;
        let session = match grove_git::rewrite::Session::open_in(&ctx.repos, &a.mirror) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(task = %a.task, "opening the mirror: {e}; rewriting in a checkout");
                return None;
            }
        };
        // Files git converts on checkout (line endings, LFS, encodings) are rewritten in one.
        match session.transformed(&a.base, &a.files) {
            Ok(None) => {}
            Ok(Some(why)) => {
                tracing::debug!(task = %a.task, "{why} converts files on checkout: rewriting in a checkout");
                return None;
            }
            Err(e) => {
                tracing::debug!(task = %a.task, "reading the attributes: {e}; rewriting in a checkout");
                return None;
            }
        }
        Some(Direct { re, with, session })
    }

    /// Run the attempt's one turn: the same states, log lines and checkpoint event as
    /// `attempt::turns` with the `replace` agent and no check, then the outcome.
    pub async fn run(
        self,
        ctx: &Arc<WorkerContext>,
        a: &Assignment,
        log: &mut Log,
        fence: &CancellationToken,
        resuming: Option<u32>,
    ) -> grove_core::task::TaskOutcome {
        let Direct { re, with, mut session } = self;
        let tip = session.branch_tip(&a.branch).map_err(|e| e.to_string());
        let tip = match tip {
            Ok(tip) => tip,
            Err(e) => return transient(format!("preparing the workspace: {e}"), log.tail(), 0),
        };
        let how = if tip.is_some() { Checkout::Resumed } else { Checkout::Fresh };
        let _ = log
            .note(&format!(
                "no workspace: the files are rewritten in the mirror {} ({how:?})",
                a.mirror.display()
            ))
            .await;
        if let Some(delivered) = resuming {
            let _ = log
                .note(&format!(
                    "resuming an interrupted attempt (delivery {delivered}) from its last checkpoint"
                ))
                .await;
        }
        let turn_no = 1;
        let turn_span = tracing::info_span!(
            "turn",
            grove.turn = turn_no,
            gen_ai.operation.name = "invoke_agent",
            gen_ai.system = "replace",
            gen_ai.provider.name = "replace",
        );
        log.reset_tail();
        let _ = log.note(&format!("turn {turn_no}")).await;
        crate::attempt::report(
            &ctx.bus,
            a,
            EventKind::State { state: TaskState::Running, turn: Some(turn_no) },
        )
        .await;
        let start = tip.clone().unwrap_or_else(|| a.base.clone());
        let files: Vec<String> =
            a.files.iter().filter(|f| in_checkout(f, a.sparse.as_deref())).cloned().collect();
        let message = crate::attempt::checkpoint_message(a, turn_no);
        // The rewrite and the diff stat in memory; the objects are written and the branch moved
        // after the lease is checked.
        let rewritten = {
            let (start, base, tip) = (start.clone(), a.base.clone(), tip.clone());
            let span = tracing::info_span!(parent: &turn_span, "checkpoint");
            blocking(move || {
                let _in = span.enter();
                let mut hits = Vec::new();
                let mut rewrite = |f: &str, bytes: &[u8]| {
                    let (out, n) = agent::rewrite_bytes(&re, &with, bytes)?;
                    hits.push((f.to_owned(), n));
                    Some(out)
                };
                let done =
                    session.rewrite_files(&start, &files, &mut rewrite, &message, &Identity::default())?;
                // The branch: to the new commit, or made at the base as a workspace would have
                // made it.
                let (new, head) = match (&done.commit, &tip) {
                    (Some(c), _) => (Some(c.clone()), c.clone()),
                    (None, Some(t)) => (None, t.clone()),
                    (None, None) => (Some(base.clone()), base.clone()),
                };
                let stat = session.diff_stat(&base, &head);
                Ok::<_, grove_git::GitError>((session, done, hits, new, head, stat))
            })
            .await
        };
        let (mut session, done, hits, new, head, stat) = match rewritten {
            Ok(r) => r,
            Err(e) => return transient(format!("checkpointing turn {turn_no}: {e}"), log.tail(), turn_no),
        };
        for (f, n) in &hits {
            let _ = log.write(agent::replaced_line(f, *n).as_bytes()).await;
        }
        let total: usize = hits.iter().map(|(_, n)| n).sum();
        let _ = log.note(&agent::replace_summary(total, hits.len(), a.files.len())).await;
        let _ = log.flush().await;
        if fence.is_cancelled() {
            return failed(format!("turn {turn_no}: the lease was lost"), log.tail(), turn_no);
        }
        if let Some(new) = new {
            let (branch, old) = (a.branch.clone(), tip.clone());
            let moved = blocking(move || {
                session.persist()?;
                session.move_branch(&branch, &new, old.as_deref(), &Identity::default())
            })
            .await;
            if let Err(e) = moved {
                return transient(format!("checkpointing turn {turn_no}: {e}"), log.tail(), turn_no);
            }
        }
        let stat = stat.unwrap_or_else(|e| {
            tracing::warn!(task = %a.task, "diff stat: {e}");
            DiffStat::default()
        });
        drop(turn_span);
        let checkpoint_stat = if done.commit.is_some() { stat } else { DiffStat::default() };
        crate::attempt::report(
            &ctx.bus,
            a,
            EventKind::Checkpoint {
                turn: turn_no,
                commit: done.commit.clone(),
                stat: checkpoint_stat,
                report: None,
            },
        )
        .await;
        grove_core::task::TaskOutcome { head: Some(head), stat, log_tail: log.tail(), ..succeeded(turn_no) }
    }
}

/// `f` on a blocking thread; its error, or the thread's, as text.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn in_checkout(path: &str, sparse: Option<&[String]>) -> bool {
    let Some(dirs) = sparse else { return true };
    let Some((parent, _)) = path.rsplit_once('/') else { return true };
    dirs.iter()
        .map(|d| d.trim_matches('/'))
        .any(|d| path.starts_with(&format!("{d}/")) || d == parent || d.starts_with(&format!("{parent}/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cone_has_top_files_ancestor_files_and_everything_below() {
        let cone = ["crates/m042".to_owned()];
        let has = |p: &str| in_checkout(p, Some(&cone));
        assert!(has("Cargo.toml"));
        assert!(has("crates/README.md"), "a file directly in a folder leading to the cone");
        assert!(has("crates/m042/src/lib.rs"));
        assert!(has("crates/m042/Cargo.toml"));
        assert!(!has("crates/m043/src/lib.rs"));
        assert!(!has("crates/m0421/lib.rs"));
        assert!(!has("docs/x.md"));
        assert!(in_checkout("docs/x.md", None));
        assert!(!in_checkout("a/b.rs", Some(&[])), "no folders: only the top-level files");
    }
}
