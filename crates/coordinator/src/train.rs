//! The merge train: finished task branches merge into the integration branch in the plan's
//! order, in memory (`git merge-tree --write-tree`, no checkout), one merge commit per task.
//! A task merges as soon as it succeeded and every task before it has merged or been set
//! aside; later tasks that finish first wait. A conflicting branch is set aside as
//! needs-attention with its paths recorded, and the rest go on.

use grove_core::task::MergeState;
use grove_core::{JobId, TaskState};
use grove_git::MergeOutcome;
use grove_git::merge::{commit_tree, merge_trees, tree_of};

use crate::drive::Note;
use crate::store::{JobRow, MergeDecision, TaskRow};
use crate::{CoordError, Coordinator};

impl Coordinator {
    /// Move the train as far as it can go now. Returns what happened, in order.
    pub fn advance_train(&self, job: &JobId) -> Result<Vec<Note>, CoordError> {
        let row = self.store.job(job.as_str())?;
        let tasks = self.store.tasks(job)?;
        let mirror = std::path::Path::new(&row.mirror);
        let full = format!("refs/heads/{}", row.integration_branch);
        let mut head = row.integration_head.clone();
        let mut notes = Vec::new();
        for t in &tasks {
            if t.merge_state.is_settled() {
                continue;
            }
            match t.state {
                TaskState::Succeeded => {}
                TaskState::Failed | TaskState::Cancelled | TaskState::NeedsAttention => {
                    self.store.set_merge(job, &t.slug, &MergeDecision::plain(MergeState::Skipped), &head)?;
                    continue;
                }
                // Everything after a task still in flight waits for it.
                _ => break,
            }
            let Some(task_head) = t.head.as_deref().filter(|h| *h != row.base && !t.stat.is_empty()) else {
                self.store.set_merge(job, &t.slug, &MergeDecision::plain(MergeState::Empty), &head)?;
                notes.push(Note::Merged { job: job.clone(), task: t.slug.clone(), commit: None });
                continue;
            };
            match merge_trees(&self.git, mirror, &head, task_head)? {
                MergeOutcome::Clean { tree } => {
                    if tree == tree_of(&self.git, mirror, &head)? {
                        // Already in the integration branch (an identical change merged before).
                        self.store.set_merge(
                            job,
                            &t.slug,
                            &MergeDecision::plain(MergeState::Empty),
                            &head,
                        )?;
                        notes.push(Note::Merged { job: job.clone(), task: t.slug.clone(), commit: None });
                        continue;
                    }
                    let message = merge_message(&row, t);
                    let commit =
                        commit_tree(&self.git, mirror, &tree, &[&head, task_head], &message, &self.identity)?;
                    self.git.update_ref(mirror, &full, &commit, Some(&head))?;
                    let d =
                        MergeDecision { commit: Some(&commit), ..MergeDecision::plain(MergeState::Merged) };
                    self.store.set_merge(job, &t.slug, &d, &commit)?;
                    head = commit.clone();
                    notes.push(Note::Merged { job: job.clone(), task: t.slug.clone(), commit: Some(commit) });
                }
                MergeOutcome::Conflict { paths } => {
                    let why = format!("conflicts with the integration branch in {}", paths.join(", "));
                    let d = MergeDecision {
                        state: MergeState::Conflict,
                        commit: None,
                        conflict: &paths,
                        set_aside: Some(&why),
                    };
                    self.store.set_merge(job, &t.slug, &d, &head)?;
                    notes.push(Note::Conflict { job: job.clone(), task: t.slug.clone(), paths });
                }
            }
        }
        Ok(notes)
    }
}

/// One merge commit's message: what merged, with job, task, attempt, agent and diff stat as
/// git trailers (a restarted coordinator recognises its merges by them).
fn merge_message(job: &JobRow, t: &TaskRow) -> String {
    let agent = job.spec.agent.kind.map_or("unknown", |k| k.as_str());
    format!(
        "grove: merge {} ({})\n\n{}\n\nGrove-Job: {}\nGrove-Task: {}\nGrove-Attempt: {}\nGrove-Agent: {agent}\nGrove-Diffstat: {}",
        t.slug, job.id, t.title, job.id, t.slug, t.attempt, t.stat
    )
}
