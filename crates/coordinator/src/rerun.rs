//! Re-running tasks of an existing job from its recorded base.

use grove_core::task::MergeState;
use grove_core::{JobId, TaskState};

use crate::{CoordError, Coordinator, StoreError};

/// What a re-run may take.
#[derive(Debug, Clone)]
pub enum Rerun {
    /// These tasks, by slug.
    Only(Vec<String>),
    /// Every task that failed, needs attention, or was cancelled (not the discarded ones).
    Failed,
}

impl Coordinator {
    /// Queue tasks of `job` again, each from the job's base: the branch of an earlier attempt
    /// is kept under `refs/grove/attempts/<job>/<task>/<attempt>` (nothing an agent committed
    /// is lost) and the task's branch starts again at the base. A merged task is refused.
    /// Returns the slugs queued.
    pub fn rerun(&self, job: &JobId, which: &Rerun) -> Result<Vec<String>, CoordError> {
        let row = self.store.job(job.as_str())?;
        let tasks = self.store.tasks(job)?;
        let chosen: Vec<_> = match which {
            Rerun::Only(slugs) => {
                let mut v = Vec::new();
                for s in slugs {
                    let t = tasks
                        .iter()
                        .find(|t| &t.slug == s)
                        .ok_or_else(|| StoreError::NoTask(format!("{job}/{s}")))?;
                    if t.merge_state == MergeState::Merged {
                        return Err(CoordError::AlreadyMerged { task: format!("{job}/{s}") });
                    }
                    v.push(t);
                }
                v
            }
            Rerun::Failed => tasks
                .iter()
                .filter(|t| {
                    matches!(t.state, TaskState::Failed | TaskState::NeedsAttention | TaskState::Cancelled)
                        && !matches!(t.merge_state, MergeState::Merged | MergeState::Discarded)
                })
                .collect(),
        };
        let mirror = std::path::Path::new(&row.mirror);
        for t in &chosen {
            let branch = format!("refs/heads/{}", t.branch);
            if let Some(head) = self.git.ref_target(mirror, &branch)? {
                if head != row.base {
                    let keep = format!("refs/grove/attempts/{job}/{}/{}", t.slug, t.attempt);
                    self.git.update_ref(mirror, &keep, &head, None).or_else(|e| {
                        // Already kept by an earlier re-run of the same attempt.
                        if self.git.ref_target(mirror, &keep)?.as_deref() == Some(head.as_str()) {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })?;
                }
                self.git.update_ref(mirror, &branch, &row.base, Some(&head))?;
            }
            self.store.reset_task(job, &t.slug)?;
        }
        Ok(chosen.iter().map(|t| t.slug.clone()).collect())
    }
}

impl Coordinator {
    /// A person answers the question a task's agent asked (`grove reply`): the task, which
    /// needs attention, is queued again as a new attempt that resumes the agent's session with
    /// `answer` as its first turn. Its branch and checkpoints stay. Refused for a task whose
    /// agent asked nothing or kept no session.
    pub fn reply(&self, job: &JobId, slug: &str, answer: &str) -> Result<(), CoordError> {
        let name = format!("{job}/{slug}");
        let t = self.store.task(job, slug)?.ok_or_else(|| StoreError::NoTask(name.clone()))?;
        let refuse = |why: String| Err(CoordError::Refused { task: name.clone(), why });
        if t.state != TaskState::NeedsAttention || t.agent.question.is_none() {
            return refuse(format!("its agent asked nothing (it is {}); see `grove status`", t.state));
        }
        if t.agent.session.is_none() {
            return refuse("its agent kept no session to resume; run it again with `grove retry`".into());
        }
        if answer.trim().is_empty() {
            return refuse("the answer is empty".into());
        }
        self.store.set_reply(job, slug, answer)?;
        Ok(())
    }
}
