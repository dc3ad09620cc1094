//! The merge train: finished task branches merge into the integration branch in the plan's
//! order, in memory (`git merge-tree --write-tree`, no checkout), one commit per task (a merge
//! commit, or a single-parent one under `merge.mode = "squash"`). A task merges as soon as it
//! succeeded and every task before it has merged or been set aside; later tasks that finish
//! first wait. Under `merge.mode = "manual"` nothing merges until `grove merge`.
//!
//! With `checks.integration`, up to `merge.batch` merges are made in memory and the check runs
//! on the last one (in a worktree grove owns) before the integration branch moves. A failing
//! batch is bisected: the first merge that fails the check is set aside with the check's
//! output, the merges before it go in, and the rest are merged again on top.
//!
//! A conflicting branch follows `merge.on_conflict`: `redo` queues the task again on top of the
//! integration head with the conflict described (at most `merge.max_redos` times), `attention`
//! sets it aside, `abort` stops the job's merging.

use std::path::Path;

use grove_core::spec::{MergeMode, OnConflict, Pick};
use grove_core::task::{MergeState, Redo};
use grove_core::{JobId, TaskState};
use grove_git::MergeOutcome;
use grove_git::merge::{Ancestry, CommitWriter, conflict_hunks, merge_trees, patch};

use crate::drive::Note;
use crate::store::{JobRow, MergeDecision, TaskRow};
use crate::{CoordError, Coordinator};

/// The most of a conflict's files, or of a previous diff, handed to a redoing agent.
const REDO_CAP: usize = 256 * 1024;

/// What the train does at a task with variants.
enum Picked {
    /// Nothing more to do there (merged, set aside, or no variant passed).
    Settled,
    /// No variant may go yet (running, or waiting for `grove pick`): the train stops here.
    Wait,
    /// This variant goes on as the task.
    Winner(Box<TaskRow>),
}

/// What a job's train keeps between its moves: what it learnt of the integration branch's
/// history, and the mirror, open.
#[derive(Default)]
pub(crate) struct TrainMemo {
    ancestry: Ancestry,
    writer: Option<(String, CommitWriter)>,
}

/// The tasks the train goes through in order: a job's every row (given), or its rows not
/// settled yet, read a page at a time as the train gets to them: a few first (the train most
/// often stops at the next task, still running), then twice as many each time.
struct Queue<'a> {
    job: &'a JobId,
    rows: std::collections::VecDeque<TaskRow>,
    paged: bool,
    last: Option<(u32, String)>,
    page: u32,
    exhausted: bool,
}

impl<'a> Queue<'a> {
    const FIRST_PAGE: u32 = 4;
    const MAX_PAGE: u32 = 256;

    fn new(job: &'a JobId, all: Option<Vec<TaskRow>>) -> Queue<'a> {
        let paged = all.is_none();
        Queue {
            job,
            rows: all.unwrap_or_default().into(),
            paged,
            last: None,
            page: Self::FIRST_PAGE,
            exhausted: !paged,
        }
    }

    fn next(&mut self, store: &crate::store::Store) -> Result<Option<TaskRow>, CoordError> {
        if self.rows.is_empty() && !self.exhausted {
            let after = self.last.as_ref().map(|(ord, slug)| (*ord, slug.as_str()));
            let rows = store.pending_merges(self.job, after, self.page)?;
            self.exhausted = rows.len() < self.page as usize;
            self.page = (self.page * 2).min(Self::MAX_PAGE);
            self.rows.extend(rows);
        }
        let t = self.rows.pop_front();
        if self.paged
            && let Some(t) = &t
        {
            self.last = Some((t.ord, t.slug.clone()));
        }
        Ok(t)
    }
}

/// A branch merged in memory, not yet in the integration branch.
struct Candidate {
    task: TaskRow,
    commit: String,
}

impl Coordinator {
    /// Move the train as far as it can go now. Returns what happened, in order. A task the
    /// train queued for a redo comes back as [`Note::Redo`]; the caller dispatches it.
    pub fn advance_train(&self, job: &JobId) -> Result<Vec<Note>, CoordError> {
        // What the last train of this job learnt of its history and the mirror it opened, so
        // that a merge base costs a walk of the task's commits, not of every merge so far.
        let mut memo = {
            let mut all = self.ancestry.lock().unwrap_or_else(|p| p.into_inner());
            all.remove(job).unwrap_or_default()
        };
        let moved = self.advance_train_with(job, &mut memo);
        let mut all = self.ancestry.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(job.clone(), memo);
        moved
    }

    pub(crate) fn forget_ancestry(&self, job: &JobId) {
        self.ancestry.lock().unwrap_or_else(|p| p.into_inner()).remove(job);
    }

    fn advance_train_with(&self, job: &JobId, memo: &mut TrainMemo) -> Result<Vec<Note>, CoordError> {
        let row = self.store.job(job.as_str())?;
        let mut notes = Vec::new();
        if row.train.stopped.is_some() {
            return Ok(notes);
        }
        let mode = row.spec.merge_mode();
        let may_merge = mode != MergeMode::Manual || row.train.approved;
        let batch =
            if row.spec.checks.integration.is_some() { row.spec.batch() as usize } else { usize::MAX };
        let mirror = Path::new(&row.mirror);
        // The mirror's config and attributes as grove keeps them: no merge driver of an agent's.
        grove_git::Mirror::protect(&self.git, mirror)?;
        // Commits are written and refs read in process (gix), the mirror opened once per job.
        let TrainMemo { ancestry, writer } = memo;
        if writer.as_ref().is_some_and(|(at, _)| *at != row.mirror) {
            *writer = None;
        }
        let (_, w) = match &mut *writer {
            Some(open) => open,
            None => writer.insert((row.mirror.clone(), CommitWriter::buffered(mirror)?)),
        };
        let mut head = self.reconcile(&row, w, &mut notes)?;
        let copied: std::collections::HashSet<&str> = row.ignored_files.iter().map(String::as_str).collect();
        loop {
            let mut cands: Vec<Candidate> = Vec::new();
            let mut tip = head.clone();
            // The tip's tree, once known (a merge just wrote it): one `rev-parse` less per merge.
            let mut tip_tree: Option<String> = None;
            let mut conflict: Option<(TaskRow, Vec<String>, String)> = None;
            // With variants the groups need every row; without, the rows the train has not
            // settled are read a page at a time, up to the first one still running.
            let variants = !row.spec.variants.is_empty();
            let all = if variants { self.store.tasks(job)? } else { Vec::new() };
            let mut queue = Queue::new(job, variants.then(|| all.clone()));
            let mut groups = std::collections::BTreeSet::new();
            while let Some(t) = queue.next(&self.store)? {
                // The variants of a task are one place in the order: the picked one stands for
                // them, the others are discarded.
                let t = match &t.train.variant_of {
                    None => t,
                    Some(group) => {
                        if !groups.insert(group.clone()) {
                            continue;
                        }
                        let rows: Vec<&TaskRow> =
                            all.iter().filter(|r| r.train.variant_of.as_ref() == Some(group)).collect();
                        match self.pick_variant(&row, &rows, &head)? {
                            Picked::Settled => continue,
                            Picked::Wait => break,
                            Picked::Winner(w) => *w,
                        }
                    }
                };
                if t.merge_state.is_settled() {
                    continue;
                }
                match t.state {
                    TaskState::Succeeded => {}
                    TaskState::Failed | TaskState::Cancelled | TaskState::NeedsAttention => {
                        self.store.set_merge(
                            job,
                            &t.slug,
                            &MergeDecision::plain(MergeState::Skipped),
                            &head,
                        )?;
                        continue;
                    }
                    // Everything after a task still in flight waits for it.
                    _ => break,
                }
                if !may_merge {
                    break;
                }
                let base = t.base(&row).to_owned();
                let Some(task_head) = t.head.clone().filter(|h| *h != base && !t.stat.is_empty()) else {
                    self.store.set_merge(job, &t.slug, &MergeDecision::plain(MergeState::Empty), &head)?;
                    notes.push(Note::Merged { job: job.clone(), task: t.slug.clone(), commit: None });
                    continue;
                };
                // Most merges touch paths nothing merged since the base touched: made in
                // process, in time proportional to the task's change; git decides the rest.
                // Files grove copied in as git-ignored never merge (workers leave them out of
                // every checkpoint; this holds whatever a worker did).
                if !copied.is_empty() {
                    let leaked: Vec<String> = w
                        .added_files(&base, &task_head)?
                        .into_iter()
                        .filter(|p| copied.contains(p.as_str()))
                        .collect();
                    if !leaked.is_empty() {
                        let why = format!(
                            "refused: its branch adds {}, which grove copied into the workspace as \
                             git-ignored; such files are never merged or published (the branch stays \
                             in grove's mirror: `grove discard` it, or `grove retry` the task)",
                            leaked.join(", ")
                        );
                        tracing::warn!(task = %t.slug, "{why}");
                        let d = MergeDecision {
                            set_aside: Some(&why),
                            ..MergeDecision::plain(MergeState::Refused)
                        };
                        self.store.set_merge(job, &t.slug, &d, &head)?;
                        continue;
                    }
                }
                let span = tracing::info_span!(
                    parent: None,
                    "merge",
                    grove.job = %job,
                    grove.task = %t.slug,
                    grove.outcome = tracing::field::Empty,
                );
                let _in = span.enter();
                let merge_base = match w.merge_base_above(ancestry, &base, &tip, &task_head)? {
                    Some(known) => Some(known),
                    None => match w.merge_bases(&tip, &task_head)?.as_slice() {
                        [one] => Some(one.clone()),
                        _ => None,
                    },
                };
                let fast = match merge_base {
                    Some(base) => w.merge_disjoint(&base, &tip, &task_head).unwrap_or_else(|e| {
                        tracing::warn!(task = %t.slug, "merging in process failed, git merges instead: {e}");
                        None
                    }),
                    None => None,
                };
                let outcome = match fast {
                    Some(tree) => MergeOutcome::Clean { tree },
                    None => {
                        // git reads the tip, which may be a merge still in memory.
                        w.persist()?;
                        merge_trees(&self.git, mirror, &tip, &task_head)?
                    }
                };
                span.record(
                    "grove.outcome",
                    if matches!(outcome, MergeOutcome::Clean { .. }) { "clean" } else { "conflict" },
                );
                match outcome {
                    MergeOutcome::Clean { tree } => {
                        let current = match tip_tree.take() {
                            Some(t) => t,
                            None => w.tree_of(&tip)?,
                        };
                        if tree == current {
                            tip_tree = Some(current);
                            // Already in (an identical change merged before).
                            self.store.set_merge(
                                job,
                                &t.slug,
                                &MergeDecision::plain(MergeState::Empty),
                                &head,
                            )?;
                            notes.push(Note::Merged { job: job.clone(), task: t.slug.clone(), commit: None });
                            continue;
                        }
                        let message = merge_message(&row, &t, mode);
                        let parents: Vec<&str> = match mode {
                            MergeMode::Squash => vec![&tip],
                            MergeMode::Merge | MergeMode::Manual => vec![&tip, &task_head],
                        };
                        let commit = w.commit(&tree, &parents, &message, &self.identity)?;
                        tip = commit.clone();
                        tip_tree = Some(tree);
                        cands.push(Candidate { task: t, commit });
                        if cands.len() >= batch {
                            break;
                        }
                    }
                    MergeOutcome::Conflict { paths, tree } => {
                        conflict = Some((t, paths, tree));
                        break;
                    }
                }
            }

            if !cands.is_empty() {
                let full_batch = cands.len() >= batch;
                // The integration check runs git on the candidates.
                w.persist()?;
                let (good, culprit) = match self.verify(&row, &head, &cands) {
                    Err(CoordError::HeadFailsCheck { output }) => {
                        let check = row.spec.checks.integration.as_deref().unwrap_or_default();
                        let last = output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
                        let stop = format!(
                            "the integration check `{check}` fails on the integration head itself ({last}); fix it, then `grove merge {}`",
                            row.id
                        );
                        self.store.set_merge_stopped(job, Some(&stop))?;
                        break;
                    }
                    other => other?,
                };
                if good > 0 {
                    let new = &cands[good - 1].commit;
                    let full = format!("refs/heads/{}", row.integration_branch);
                    w.update_ref(&full, new, &head, &self.identity)?;
                    for c in &cands[..good] {
                        let d = MergeDecision {
                            commit: Some(&c.commit),
                            ..MergeDecision::plain(MergeState::Merged)
                        };
                        self.store.set_merge(job, &c.task.slug, &d, &c.commit)?;
                        notes.push(Note::Merged {
                            job: job.clone(),
                            task: c.task.slug.clone(),
                            commit: Some(c.commit.clone()),
                        });
                    }
                    head.clone_from(new);
                }
                if let Some(output) = culprit {
                    let t = &cands[good].task;
                    let check = row.spec.checks.integration.as_deref().unwrap_or_default();
                    let why =
                        format!("breaks the integration check `{check}` (found by bisecting its batch)");
                    let d = MergeDecision {
                        set_aside: Some(&why),
                        output: Some(&output),
                        ..MergeDecision::plain(MergeState::CheckFailed)
                    };
                    self.store.set_merge(job, &t.slug, &d, &head)?;
                    notes.push(Note::CheckFailed { job: job.clone(), task: t.slug.clone(), output });
                    continue;
                }
                if conflict.is_some() || full_batch {
                    // Merge on from the new head: the conflict may be gone, or the next batch waits.
                    continue;
                }
                break;
            }

            let Some((t, paths, tree)) = conflict else { break };
            let policy = row.spec.on_conflict();
            let cancelling = self.is_cancelling(job);
            if policy == OnConflict::Redo && t.train.redos < row.spec.max_redos() && !cancelling {
                notes.push(self.prepare_redo(&row, &t, &paths, &tree, &head)?);
                // The task is queued again: the tasks after it wait for its new attempt.
                break;
            }
            let why = match policy {
                OnConflict::Redo if cancelling => {
                    format!(
                        "conflicts with the integration branch in {} (no redo: cancelling)",
                        paths.join(", ")
                    )
                }
                OnConflict::Redo => format!(
                    "still conflicts with the integration branch in {} after {} redo(s)",
                    paths.join(", "),
                    t.train.redos
                ),
                _ => format!("conflicts with the integration branch in {}", paths.join(", ")),
            };
            let d = MergeDecision {
                conflict: &paths,
                set_aside: Some(&why),
                ..MergeDecision::plain(MergeState::Conflict)
            };
            self.store.set_merge(job, &t.slug, &d, &head)?;
            notes.push(Note::Conflict { job: job.clone(), task: t.slug.clone(), paths: paths.clone() });
            if policy == OnConflict::Abort {
                let stop = format!("stopped at {} (on_conflict = \"abort\"): {why}", t.slug);
                self.store.set_merge_stopped(job, Some(&stop))?;
                break;
            }
        }
        Ok(notes)
    }

    /// Decide which variant of a task goes on in the train: a picked one, else the one
    /// `merge.pick` chooses now (then recorded as picked). The losers that ended are
    /// discarded; those still running are told to stop.
    /// The integration branch as the mirror has it, with the store brought up to date: a
    /// coordinator that died between moving the branch and recording its merges finds them
    /// here, by their trailers (`Grove-Job`, `Grove-Task`), and records each once instead of
    /// merging it again. Returns the head to go on from.
    fn reconcile(&self, row: &JobRow, w: &CommitWriter, notes: &mut Vec<Note>) -> Result<String, CoordError> {
        let mirror = Path::new(&row.mirror);
        let full = format!("refs/heads/{}", row.integration_branch);
        let Some(actual) = w.ref_target(&full)? else {
            return Ok(row.integration_head.clone());
        };
        if actual == row.integration_head {
            return Ok(actual);
        }
        let range = format!("{}..{actual}", row.integration_head);
        let out =
            self.git.run(mirror, ["log", "--first-parent", "--reverse", "--format=%H%x00%B%x1e", &range])?;
        let tasks = self.store.tasks(&row.id)?;
        let mut recorded = 0;
        for entry in out.stdout.split('\x1e') {
            let Some((commit, body)) = entry.trim_start_matches('\n').split_once('\0') else { continue };
            let trailer =
                |key: &str| body.lines().rev().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()));
            if trailer("Grove-Job:").as_deref() != Some(row.id.as_str()) {
                continue;
            }
            let Some(slug) = trailer("Grove-Task:") else { continue };
            let Some(t) = tasks.iter().find(|t| t.slug == slug) else { continue };
            if t.merge_state == MergeState::Merged {
                continue;
            }
            let d = MergeDecision { commit: Some(commit), ..MergeDecision::plain(MergeState::Merged) };
            self.store.set_merge(&row.id, &slug, &d, commit)?;
            notes.push(Note::Merged { job: row.id.clone(), task: slug, commit: Some(commit.to_owned()) });
            recorded += 1;
        }
        // The store follows the branch (even when nothing was grove's, the branch is the truth).
        self.store.set_integration_head(&row.id, &actual)?;
        tracing::info!(job = %row.id, recorded, "the integration branch was ahead of the state; caught up");
        Ok(actual)
    }

    fn pick_variant(&self, row: &JobRow, rows: &[&TaskRow], head: &str) -> Result<Picked, CoordError> {
        let ended = rows.iter().all(|r| r.state.is_terminal());
        let passing = || rows.iter().filter(|r| r.state == TaskState::Succeeded);
        let winner = match rows.iter().find(|r| r.train.picked) {
            Some(w) => Some(*w),
            None => match row.spec.pick() {
                Pick::Manual => None,
                Pick::FirstPassing => {
                    passing().min_by_key(|r| r.train.finished_seq.unwrap_or(u32::MAX)).copied()
                }
                Pick::SmallestDiff if ended => {
                    passing().min_by_key(|r| r.stat.insertions + r.stat.deletions).copied()
                }
                Pick::SmallestDiff => None,
            },
        };
        let Some(w) = winner else {
            if ended && passing().next().is_none() {
                // No variant passed: nothing of this task will merge.
                for r in rows.iter().filter(|r| !r.merge_state.is_settled()) {
                    self.store.set_merge(
                        &row.id,
                        &r.slug,
                        &MergeDecision::plain(MergeState::Skipped),
                        head,
                    )?;
                }
                return Ok(Picked::Settled);
            }
            return Ok(Picked::Wait);
        };
        if !w.train.picked {
            self.store.set_picked(&row.id, &w.slug)?;
        }
        let name = w.train.variant.as_deref().unwrap_or_default();
        for l in rows.iter().filter(|r| r.slug != w.slug && r.merge_state != MergeState::Discarded) {
            if l.state == TaskState::Queued {
                // Not started: it will not be.
                let outcome = grove_core::task::TaskOutcome {
                    state: TaskState::Cancelled,
                    head: None,
                    stat: l.stat,
                    turns: 0,
                    reason: Some(format!("lost to variant {name} before it started")),
                    log_tail: String::new(),
                    retry: grove_core::task::Retry::Final,
                };
                self.store.set_finished(&row.id, &l.slug, &outcome)?;
                self.discard_as(&row.id, std::slice::from_ref(&l.slug), &format!("lost to variant {name}"))?;
            } else if l.state.is_terminal() {
                self.discard_as(&row.id, std::slice::from_ref(&l.slug), &format!("lost to variant {name}"))?;
            } else {
                let stop = grove_bus::Cancel { job: row.id.clone(), task: Some(l.slug.clone()) };
                if let Err(e) = block_on(self.bus.cancel(stop))? {
                    tracing::warn!(task = %l.slug, "cannot stop a losing variant: {e}");
                }
            }
        }
        if w.merge_state.is_settled() {
            return Ok(Picked::Settled);
        }
        Ok(Picked::Winner(Box::new((*w).clone())))
    }

    /// Run the integration check on a batch. Returns how many candidates (from the first)
    /// may go in, and, when one breaks the check, its output (it is `cands[good]`). Assumes
    /// that once a merge breaks the check, the later ones do too (what bisecting assumes).
    fn verify(
        &self,
        row: &JobRow,
        head: &str,
        cands: &[Candidate],
    ) -> Result<(usize, Option<String>), CoordError> {
        let Some(check) = row.spec.checks.integration.as_deref() else { return Ok((cands.len(), None)) };
        let n = cands.len();
        let (ok, mut bad_output) = self.integration_check(row, check, &cands[n - 1].commit)?;
        if ok {
            return Ok((n, None));
        }
        // The integration head passed (it went in); candidate `hi` fails. Find the first failing.
        let (mut lo, mut hi) = (0usize, n);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let (ok, out) = self.integration_check(row, check, &cands[mid - 1].commit)?;
            if ok {
                lo = mid;
            } else {
                hi = mid;
                bad_output = out;
            }
        }
        if hi == 1 {
            // The very first merge fails: make sure the integration head itself passes, or
            // every task would be set aside in turn for a check that cannot pass.
            let (ok, out) = self.integration_check(row, check, head)?;
            if !ok {
                return Err(CoordError::HeadFailsCheck { output: out });
            }
        }
        Ok((hi - 1, Some(bad_output)))
    }

    /// Run `check` on `commit` in grove's integration worktree of the job. Returns whether it
    /// passed and the end of its output.
    fn integration_check(
        &self,
        row: &JobRow,
        check: &str,
        commit: &str,
    ) -> Result<(bool, String), CoordError> {
        let span = tracing::info_span!(
            parent: None,
            "check",
            grove.job = %row.id,
            grove.check.scope = "integration",
            grove.commit = commit,
        );
        let _in = span.enter();
        let path = self.layout.worktree(&row.id, ".integration");
        grove_git::worktree::detached_at(&self.git, Path::new(&row.mirror), &path, commit)?;
        let log_path = self.layout.run_dir(&row.id, ".integration").join("check.log");
        let timeout = row.spec.turn_timeout();
        let env = vec![
            ("GROVE_JOB".to_owned(), row.id.to_string()),
            ("GROVE_COMMIT".to_owned(), commit.to_owned()),
        ];
        let args = vec!["-c".to_owned(), check.to_owned()];
        // A cancellation of the job, or the coordinator stopping, ends the check's process
        // group: the batch is not merged, and nothing is recorded of it.
        let cancel = self.check_token(&row.id);
        if cancel.is_cancelled() {
            return Err(CoordError::Stopped { job: row.id.to_string() });
        }
        let run = async {
            use grove_worker::process::{self, Log};
            let mut log = Log::open(&log_path, 1 << 20).await?.masking(&self.mask);
            log.note(&format!("integration check `{check}` at {commit}")).await?;
            log.reset_tail();
            let f = process::run("sh", &args, &path, &env, timeout, &mut log, &cancel).await?;
            Ok::<_, process::ProcessError>((f.end, log.tail()))
        };
        let (end, tail) = block_on(run)?.map_err(|e| CoordError::Check(e.to_string()))?;
        if end == grove_worker::process::End::Cancelled {
            return Err(CoordError::Stopped { job: row.id.to_string() });
        }
        let ok = end == grove_worker::process::End::Exited(0);
        tracing::info!(job = %row.id, %commit, ok, "integration check");
        Ok((ok, tail))
    }

    /// Queue a conflicting task again on top of the integration head `head`: its branch is
    /// kept under `refs/grove/attempts/`, moved to `head`, and the conflict recorded for the
    /// agent.
    fn prepare_redo(
        &self,
        row: &JobRow,
        t: &TaskRow,
        paths: &[String],
        tree: &str,
        head: &str,
    ) -> Result<Note, CoordError> {
        let mirror = Path::new(&row.mirror);
        let branch = format!("refs/heads/{}", t.branch);
        let old = self.git.ref_target(mirror, &branch)?.or_else(|| t.head.clone()).unwrap_or_default();
        let keep = format!("refs/grove/attempts/{}/{}/{}", row.id, t.slug, t.attempt);
        match self.git.ref_target(mirror, &keep)? {
            Some(k) if k == old => {}
            // An earlier record under that name (a re-run of the same attempt): keep both.
            Some(_) => self.git.update_ref(mirror, &format!("{keep}-redo"), &old, None)?,
            None => self.git.update_ref(mirror, &keep, &old, None)?,
        }
        let redo = Redo {
            paths: paths.to_vec(),
            hunks: conflict_hunks(&self.git, mirror, tree, paths, REDO_CAP),
            previous_diff: patch(&self.git, mirror, t.base(row), &old, REDO_CAP)?,
        };
        self.git.update_ref(mirror, &branch, head, Some(&old))?;
        let n = t.train.redos + 1;
        let why = format!(
            "redo {n} of {}: conflicted with the integration branch in {}",
            row.spec.max_redos(),
            paths.join(", ")
        );
        self.store.set_redo(&row.id, &t.slug, head, &redo, &why)?;
        Ok(Note::Redo { job: row.id.clone(), task: t.slug.clone(), paths: paths.to_vec() })
    }
}

/// Run a future to its end from synchronous train code: inside the runtime (the train runs
/// under `block_in_place`) or, outside one, on a small runtime of its own.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, CoordError> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => Ok(tokio::task::block_in_place(|| h.block_on(f))),
        Err(_) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| CoordError::Io { what: "starting a runtime".into(), source })?;
            Ok(rt.block_on(f))
        }
    }
}

/// One commit's message: what merged, with job, task, attempt, agent and diff stat as git
/// trailers (a restarted coordinator recognises its merges by them).
fn merge_message(job: &JobRow, t: &TaskRow, mode: MergeMode) -> String {
    let variant = t.train.variant.as_deref().and_then(|v| job.spec.variant(v));
    let kind = variant.map_or(job.spec.agent.kind, |v| v.agent(&job.spec.agent).kind);
    let agent = kind.map_or("unknown", |k| k.as_str());
    let verb = if mode == MergeMode::Squash { "squash" } else { "merge" };
    let mut m = format!(
        "grove: {verb} {} ({})\n\n{}\n\nGrove-Job: {}\nGrove-Task: {}\nGrove-Attempt: {}\nGrove-Agent: {agent}\nGrove-Diffstat: {}",
        t.slug, job.id, t.title, job.id, t.slug, t.attempt, t.stat
    );
    if let Some(v) = variant {
        m.push_str(&format!("\nGrove-Variant: {}", v.name));
    }
    m
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use grove_core::layout::Layout;
    use grove_core::spec::{AgentKind, JobSpec};
    use grove_core::task::MergeState;
    use grove_core::{DiffStat, JobId, TaskState};
    use grove_git::Git;

    use crate::store::{JobRow, TaskRow};
    use crate::{Coordinator, JobTrain, TaskTrain};

    pub(crate) fn git_in(git: &Git, dir: &Path, args: &[&str]) -> String {
        let mut all = vec!["-c", "user.name=t", "-c", "user.email=t@example.invalid"];
        all.extend_from_slice(args);
        git.run(dir, &all).expect("git").stdout.trim().to_owned()
    }

    /// A repository with folders `m0..mN`, and a branch per folder changing it; `broken`
    /// branches also add a `BROKEN` file. Returns the base and the tips.
    pub(crate) fn repo(git: &Git, dir: &Path, n: usize, broken: &[usize]) -> (String, Vec<String>) {
        for m in 0..n {
            std::fs::create_dir_all(dir.join(format!("m{m}"))).expect("mkdir");
            std::fs::write(dir.join(format!("m{m}/f")), "x\n").expect("write");
        }
        git_in(git, dir, &["init", "--quiet", "--initial-branch=main"]);
        git_in(git, dir, &["add", "--all"]);
        git_in(git, dir, &["commit", "--quiet", "-m", "base"]);
        let base = git_in(git, dir, &["rev-parse", "HEAD"]);
        let tips = (0..n)
            .map(|m| {
                git_in(git, dir, &["checkout", "--quiet", "-B", &format!("b{m}"), &base]);
                std::fs::write(dir.join(format!("m{m}/f")), "y\n").expect("write");
                if broken.contains(&m) {
                    std::fs::write(dir.join(format!("m{m}/BROKEN")), "").expect("write");
                }
                git_in(git, dir, &["add", "--all"]);
                git_in(git, dir, &["commit", "--quiet", "-m", &format!("m{m}")]);
                git_in(git, dir, &["rev-parse", "HEAD"])
            })
            .collect();
        git_in(git, dir, &["checkout", "--quiet", "main"]);
        (base, tips)
    }

    pub(crate) fn coordinator(
        home: &Path,
        dir: &Path,
        spec: JobSpec,
        base: &str,
        tips: &[String],
    ) -> (Coordinator, JobId) {
        coordinator_copying(home, dir, spec, base, tips, &[])
    }

    /// With `ignored`: the git-ignored files the job copied into workspaces.
    fn coordinator_copying(
        home: &Path,
        dir: &Path,
        spec: JobSpec,
        base: &str,
        tips: &[String],
        ignored: &[&str],
    ) -> (Coordinator, JobId) {
        let git = Git::detect().expect("git");
        let coord =
            Coordinator::new(Layout::new(home), Arc::new(grove_bus::InProcessBus::new()), git.clone())
                .expect("coordinator");
        let job = JobId::new("t", 1);
        let branch = format!("grove/{job}/integration");
        let full = format!("refs/heads/{branch}");
        if git.ref_target(dir, &full).expect("ref").is_none() {
            git.update_ref(dir, &full, base, None).expect("branch");
        }
        let row = JobRow {
            id: job.clone(),
            created_at: 0,
            spec,
            source: dir.display().to_string(),
            source_dir: None,
            mirror: dir.display().to_string(),
            base: base.into(),
            integration_branch: branch,
            integration_head: base.into(),
            state: "running".into(),
            warnings: vec![],
            ignored_files: ignored.iter().map(|f| (*f).to_owned()).collect(),
            train: JobTrain::default(),
            collected_at: None,
            repo: None,
        };
        let stat = DiffStat { files: 1, insertions: 1, deletions: 1 };
        let tasks: Vec<TaskRow> = tips
            .iter()
            .enumerate()
            .map(|(i, tip)| TaskRow {
                handoffs: Vec::new(),
                job: job.clone(),
                slug: format!("m{i}"),
                ord: i as u32,
                level: 0,
                title: format!("m{i}"),
                sparse: None,
                files: vec![],
                lines: 0,
                depends_on: vec![],
                branch: format!("grove/{job}/m{i}"),
                pool: "local".into(),
                placed: None,
                placed_why: None,
                state: TaskState::Succeeded,
                merge_state: MergeState::Pending,
                attempt: 1,
                turns: 1,
                head: Some(tip.clone()),
                stat,
                reason: None,
                log_tail: None,
                merge_commit: None,
                conflict_paths: vec![],
                train: TaskTrain::default(),
                agent: Default::default(),
            })
            .collect();
        coord.store.insert_job(&row, &tasks).expect("insert");
        for t in &tasks {
            coord.store.set_progress(&job, &t.slug, t.head.as_deref(), stat).expect("progress");
        }
        (coord, job)
    }

    pub(crate) fn spec() -> JobSpec {
        let mut s = JobSpec::default();
        s.agent.kind = Some(AgentKind::Command);
        s
    }

    /// Paths that move the train at once (a submit's dispatch, the event loop, a review verb)
    /// take turns: every branch merges exactly once and none fails on the other's move of the
    /// integration branch (which the compare-and-swap of `update-ref` would refuse).
    #[test]
    fn trains_moved_from_several_threads_take_turns() {
        let git = Git::detect().expect("git");
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (base, tips) = repo(&git, &dir, 24, &[]);
        let (coord, job) = coordinator(&tmp.path().join("home"), &dir, spec(), &base, &tips);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::scope(|s| {
            let movers: Vec<_> = (0..4).map(|_| s.spawn(|| coord.train(&job, &tx))).collect();
            for m in movers {
                m.join().expect("thread").expect("the train moved");
            }
        });
        let tasks = coord.store.tasks(&job).expect("tasks");
        assert!(tasks.iter().all(|t| t.merge_state == MergeState::Merged));
        let head = coord.store.job(job.as_str()).expect("job").integration_head;
        let merges = git.run(&dir, ["rev-list", "--count", "--merges", &head]).expect("rev-list").stdout;
        assert_eq!(merges.trim(), "24", "one merge commit per task");
    }

    /// The one-task lookup and the all-terminal check an event uses agree with the full read.
    #[test]
    fn one_task_and_all_terminal_agree_with_the_job_s_tasks() {
        let git = Git::detect().expect("git");
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (base, tips) = repo(&git, &dir, 3, &[]);
        let (coord, job) = coordinator(&tmp.path().join("home"), &dir, spec(), &base, &tips);
        let all = coord.store.tasks(&job).expect("tasks");
        for t in &all {
            let one = coord.store.task(&job, &t.slug).expect("task").expect("found");
            assert_eq!(format!("{one:?}"), format!("{t:?}"));
        }
        assert!(coord.store.task(&job, "nope").expect("task").is_none());
        assert!(coord.store.all_terminal(&job).expect("terminal"));
        let t = &all[1];
        coord.store.set_state(&job, &t.slug, t.attempt, TaskState::Running, Some(1)).expect("state");
        assert!(!coord.store.all_terminal(&job).expect("terminal"));
        coord.store.set_state(&job, &t.slug, t.attempt, TaskState::Failed, None).expect("state");
        assert!(coord.store.all_terminal(&job).expect("terminal"));
    }

    #[test]
    fn a_batch_is_bisected_to_each_breaking_merge() {
        let git = Git::detect().expect("git");
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (base, tips) = repo(&git, &dir, 6, &[1, 4]);
        let mut s = spec();
        s.checks.integration = Some("! ls m*/BROKEN 2>/dev/null".into());
        s.merge.batch = Some(6);
        let (coord, job) = coordinator(&tmp.path().join("home"), &dir, s, &base, &tips);
        coord.advance_train(&job).expect("train");
        let tasks = coord.store.tasks(&job).expect("tasks");
        let states: Vec<_> = tasks.iter().map(|t| t.merge_state).collect();
        use MergeState::{CheckFailed, Merged};
        assert_eq!(states, [Merged, CheckFailed, Merged, Merged, CheckFailed, Merged]);
        assert_eq!(tasks[1].state, TaskState::NeedsAttention);
        let seq: Vec<_> = tasks.iter().map(|t| t.train.merge_seq).collect();
        assert_eq!(seq, [Some(1), None, Some(2), Some(3), None, Some(4)]);
        let head = coord.store.job(job.as_str()).expect("job").integration_head;
        let files = git.run(&dir, ["ls-tree", "-r", "--name-only", &head]).expect("ls-tree").stdout;
        assert!(!files.contains("BROKEN"), "{files}");
    }

    #[test]
    fn squash_commits_have_one_parent_and_an_identical_change_merges_empty() {
        let git = Git::detect().expect("git");
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (base, mut tips) = repo(&git, &dir, 2, &[]);
        tips.push(tips[0].clone());
        let mut s = spec();
        s.merge.mode = Some(grove_core::spec::MergeMode::Squash);
        let (coord, job) = coordinator(&tmp.path().join("home"), &dir, s, &base, &tips);
        coord.advance_train(&job).expect("train");
        let tasks = coord.store.tasks(&job).expect("tasks");
        let states: Vec<_> = tasks.iter().map(|t| t.merge_state).collect();
        assert_eq!(states, [MergeState::Merged, MergeState::Merged, MergeState::Empty]);
        let head = coord.store.job(job.as_str()).expect("job").integration_head;
        let parents = git.run(&dir, ["show", "--no-patch", "--format=%P", &head]).expect("show").stdout;
        assert_eq!(parents.split_whitespace().count(), 1, "{parents}");
    }

    /// A coordinator that died after moving the integration branch but before recording the
    /// merges (here: a second state database that never saw them) records them from the
    /// commits' trailers when it starts again, and merges nothing twice.
    #[test]
    fn merges_in_the_branch_but_not_in_the_state_are_recognised_by_their_trailers() {
        let git = Git::detect().expect("git");
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (base, tips) = repo(&git, &dir, 3, &[]);
        let (after_crash, job) = coordinator(&tmp.path().join("old-state"), &dir, spec(), &base, &tips);
        let (before_crash, _) = coordinator(&tmp.path().join("home"), &dir, spec(), &base, &tips);
        before_crash.advance_train(&job).expect("train");
        let head = before_crash.store.job(job.as_str()).expect("job").integration_head;
        let merged: Vec<_> =
            before_crash.store.tasks(&job).expect("tasks").into_iter().map(|t| t.merge_commit).collect();

        let notes = after_crash.advance_train(&job).expect("train after the restart");
        assert_eq!(notes.len(), 3, "{notes:?}");
        let tasks = after_crash.store.tasks(&job).expect("tasks");
        assert!(tasks.iter().all(|t| t.merge_state == MergeState::Merged), "{tasks:?}");
        assert_eq!(tasks.iter().map(|t| t.merge_commit.clone()).collect::<Vec<_>>(), merged);
        assert_eq!(after_crash.store.job(job.as_str()).expect("job").integration_head, head);
        let count = git.run(&dir, ["rev-list", "--count", "--first-parent", &format!("{base}..{head}")]);
        assert_eq!(count.expect("rev-list").stdout.trim(), "3", "one merge commit per task");
    }

    /// A branch that adds a file the job copied in as git-ignored is refused, whatever made
    /// it: set aside with the reason, never merged, never published; the others merge.
    #[test]
    fn a_branch_adding_a_copied_ignored_file_is_refused() {
        let git = Git::detect().expect("git");
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (base, mut tips) = repo(&git, &dir, 3, &[]);
        git_in(&git, &dir, &["checkout", "--quiet", "--detach", &tips[1]]);
        std::fs::write(dir.join(".env"), "TOKEN=1\n").expect("write");
        git_in(&git, &dir, &["add", "-f", ".env"]);
        git_in(&git, &dir, &["commit", "--quiet", "-m", "leak"]);
        tips[1] = git_in(&git, &dir, &["rev-parse", "HEAD"]);
        git_in(&git, &dir, &["checkout", "--quiet", "main"]);
        let home = tmp.path().join("home");
        let (coord, job) = coordinator_copying(&home, &dir, spec(), &base, &tips, &[".env", "m0/local.toml"]);
        coord.advance_train(&job).expect("train");
        let tasks = coord.store.tasks(&job).expect("tasks");
        let states: Vec<_> = tasks.iter().map(|t| t.merge_state).collect();
        assert_eq!(states, [MergeState::Merged, MergeState::Refused, MergeState::Merged]);
        assert_eq!(tasks[1].state, TaskState::NeedsAttention);
        let why = tasks[1].reason.as_deref().unwrap_or_default();
        assert!(why.starts_with("refused: its branch adds .env, which grove copied"), "{why}");
        let head = coord.store.job(job.as_str()).expect("job").integration_head;
        let files = git.run(&dir, ["ls-tree", "-r", "--name-only", &head]).expect("ls-tree").stdout;
        assert!(!files.contains(".env"), "{files}");
    }
}
