use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use grove_coordinator::{JobRow, Store, TaskRow};
use grove_core::TaskState;
use grove_core::layout::Layout;
use grove_core::spec::{MergeMode, Pick};
use grove_core::task::MergeState;
use grove_core::usage::Usage;

use crate::output::{color_enabled_stdout, paint, shown_state, state_color, table};

/// Show jobs, or one job's tasks with their state, merge position and diff stats.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove status                 # every job, newest last
  grove status rename-1a2b     # that job's tasks
  grove status --json rename-1a2b | jq '.tasks[] | select(.state == \"failed\")'")]
pub struct StatusArgs {
    /// A job id (see `grove status`)
    pub job: Option<String>,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Ask a coordinator daemon instead of the local state [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
}

pub async fn cmd_status(home: PathBuf, args: StatusArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.coordinator {
        let mut client = crate::remote::connect(url, &args.tls).await?;
        let jobs = remote_jobs(&mut client, url, args.job.as_deref()).await?;
        print(args.job.as_deref(), jobs, args.json)?;
        if !args.json {
            // A pool whose pods cannot start or keep failing says so, with the reason.
            let pools = client
                .list_workers(grove_proto::v1::ListWorkersRequest {})
                .await
                .map_err(|s| crate::remote::status(url, s))?
                .into_inner()
                .pools;
            print_pool_problems(&pools)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = Store::open(&Layout::new(home).db())?;
    print(args.job.as_deref(), local_jobs(&store, args.job.as_deref())?, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `grove status [JOB]`: every job, one job, or the repositories of a cross-repository job
/// (what [`local_jobs`] and [`remote_jobs`] give for its id).
fn print(job: Option<&str>, mut jobs: Vec<(JobRow, Vec<TaskRow>)>, json: bool) -> anyhow::Result<()> {
    let Some(id) = job else { return print_jobs(&jobs, json) };
    if !jobs.is_empty() && jobs.iter().all(|(j, _)| j.repo.as_ref().is_some_and(|r| r.group.as_str() == id)) {
        return print_group(id, &jobs, json);
    }
    match jobs.pop() {
        Some((job, tasks)) => print_job(&job, &tasks, json),
        None => print_jobs(&jobs, json),
    }
}

/// Every job with its tasks (or only `job`, or for a cross-repository job's id its repositories' jobs in
/// order) from the local state, as `grove status` shows them.
pub fn local_jobs(store: &Store, job: Option<&str>) -> anyhow::Result<Vec<(JobRow, Vec<TaskRow>)>> {
    let jobs = match job {
        // A cross-repository job's id: its repositories' jobs.
        Some(id) => match store.group(id)? {
            g if g.is_empty() => vec![store.job(id)?],
            g => g,
        },
        None => store.jobs()?,
    };
    let mut out = Vec::new();
    for j in jobs {
        let t = store.tasks(&j.id)?;
        out.push((j, t));
    }
    Ok(out)
}

/// The same from a coordinator daemon. A `job` the daemon has no job of is looked for as a
/// cross-repository job (its repositories' jobs, in order).
pub async fn remote_jobs(
    client: &mut crate::remote::Client,
    url: &str,
    job: Option<&str>,
) -> anyhow::Result<Vec<(JobRow, Vec<TaskRow>)>> {
    let ids: Vec<String> = match job {
        Some(id) => match crate::remote::fetch_job(client, id).await {
            Ok(j) => return Ok(vec![crate::remote::rows(&j)?]),
            Err(s) if s.code() == tonic::Code::NotFound => {
                let mut members: Vec<(u32, String)> = crate::remote::list_jobs(client)
                    .await
                    .map_err(|s| crate::remote::status(url, s))?
                    .into_iter()
                    .filter_map(|j| j.repo.filter(|r| r.group == id).map(|r| (r.order, j.id)))
                    .collect();
                if members.is_empty() {
                    return Err(crate::remote::status(url, s));
                }
                members.sort();
                members.into_iter().map(|(_, id)| id).collect()
            }
            Err(s) => return Err(crate::remote::status(url, s)),
        },
        None => crate::remote::list_jobs(client)
            .await
            .map_err(|s| crate::remote::status(url, s))?
            .into_iter()
            .map(|j| j.id)
            .collect(),
    };
    let mut jobs = Vec::new();
    for id in ids {
        let j = crate::remote::fetch_job(client, &id).await.map_err(|s| crate::remote::status(url, s))?;
        jobs.push(crate::remote::rows(&j)?);
    }
    Ok(jobs)
}

/// Where a task's work is now: on its pool (remote), or pulled into a folder.
pub fn where_now(t: &TaskRow) -> String {
    match t.handoffs.last() {
        Some(h) if h.way == "pull" => {
            let still = if t.state.is_terminal() { "" } else { " (its attempt still runs)" };
            format!("pulled into {}{still}", h.place)
        }
        _ => format!("pool {}", t.placed.as_deref().unwrap_or(&t.pool)),
    }
}

/// One line per launched pool that is held back or erring, and its latest failure.
fn print_pool_problems(pools: &[grove_proto::v1::LaunchedPool]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for p in pools {
        let mut problems: Vec<String> = p.error.iter().chain(&p.held).cloned().collect();
        if let Some(f) = p.failures.last() {
            problems.push(format!(
                "last failed pod {}: {}",
                f.pod.as_deref().unwrap_or(&f.name),
                f.reason.as_deref().unwrap_or("no reason given")
            ));
        }
        for why in problems {
            writeln!(out, "pool {} ({}): {why}", p.pool, p.backend)?;
        }
    }
    Ok(())
}

fn print_jobs(jobs: &[(JobRow, Vec<TaskRow>)], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = jobs.iter().map(|(j, t)| job_json(j, t)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if jobs.is_empty() {
        writeln!(out, "no jobs yet; try `grove demo`")?;
        return Ok(());
    }
    let mut rows = Vec::new();
    for (j, tasks) in jobs {
        let count = |s: &str| tasks.iter().filter(|t| shown_state(t.state, t.merge_state) == s).count();
        rows.push(vec![
            j.id.to_string(),
            if j.collected_at.is_some() { format!("{} (collected)", j.state) } else { j.state.clone() },
            tasks.len().to_string(),
            (count("merged") + count("no-change")).to_string(),
            (count("failed") + count("needs-attention") + count("cancelled")).to_string(),
            cost_cell(job_usage(tasks).as_ref()),
            j.integration_branch.clone(),
        ]);
    }
    write!(
        out,
        "{}",
        table(&["JOB", "STATE", "TASKS", "MERGED", "NOT MERGED", "COST", "INTEGRATION BRANCH"], &rows)
    )?;
    Ok(())
}

/// One job: a header and its tasks in merge order, or JSON.
pub fn print_job(job: &JobRow, tasks: &[TaskRow], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&job_json(job, tasks))?)?;
        return Ok(());
    }
    let color = color_enabled_stdout();
    writeln!(out, "job {}  ({})  source {}", job.id, job.state, job.source)?;
    writeln!(out, "integration branch {} at {}", job.integration_branch, short(&job.integration_head))?;
    if job.collected_at.is_some() {
        writeln!(out, "collected by `grove gc`: its worktrees and logs are gone")?;
    }
    if let Some(stop) = &job.train.stopped {
        writeln!(out, "merging stopped: {stop} (go on with `grove merge {}`)", job.id)?;
    }
    if job.spec.merge_mode() == MergeMode::Manual && !job.train.approved {
        writeln!(out, "merge mode manual: branches wait for `grove merge {}`", job.id)?;
    }
    let usage = job_usage(tasks);
    if let Some(u) = &usage {
        let limit = job
            .spec
            .budget
            .job_usd
            .map(|l| format!(" of {}", grove_core::usage::dollars(l)))
            .unwrap_or_default();
        writeln!(
            out,
            "agents spent {}{limit}: {} tokens in, {} out, {} cache read, {} cache write",
            u.cost_text(),
            grove_core::usage::tokens_text(u.input_tokens),
            grove_core::usage::tokens_text(u.output_tokens),
            grove_core::usage::tokens_text(u.cache_read_tokens),
            grove_core::usage::tokens_text(u.cache_write_tokens)
        )?;
    }
    if let Some(over) = grove_coordinator::drive::over_budget(job, usage.map_or(0.0, |u| u.known_cost())) {
        writeln!(out, "{over}")?;
    }
    for t in tasks.iter().filter(|t| !t.handoffs.is_empty()) {
        let moves: Vec<String> = t
            .handoffs
            .iter()
            .map(|h| {
                let dir = if h.way == "pull" { "pulled into" } else { "handed off from" };
                format!("{dir} {} (attempt {})", h.place, h.attempt)
            })
            .collect();
        writeln!(out, "{}: now {}; {}", t.slug, where_now(t), moves.join(", then "))?;
    }
    let asking = tasks.iter().filter(|t| t.state == TaskState::NeedsAttention && t.agent.question.is_some());
    for t in asking {
        writeln!(
            out,
            "{} asks: {} (answer: grove reply {}/{} \"...\")",
            t.slug,
            t.agent.question.as_deref().unwrap_or_default().trim(),
            job.id,
            t.slug
        )?;
    }
    writeln!(out)?;
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let shown = shown_state(t.state, t.merge_state);
            vec![
                (t.ord + 1).to_string(),
                t.slug.clone(),
                paint(shown, state_color(t.state), color),
                t.placed.clone().unwrap_or_else(|| t.pool.clone()),
                t.files.len().to_string(),
                if t.stat.is_empty() { "-".into() } else { t.stat.to_string() },
                t.train.merge_seq.map_or_else(|| "-".into(), |n| format!("#{n}")),
                attempts(t),
                cost_cell(t.agent.usage.as_ref()),
                why(job, tasks, t),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        table(
            &["#", "TASK", "STATE", "POOL", "FILES", "CHANGED", "MERGED", "ATTEMPTS", "COST", "NOTE"],
            &rows
        )
    )?;
    Ok(())
}

/// What a job's agents spent: the sum of its tasks' (none when no agent reported).
pub fn job_usage(tasks: &[TaskRow]) -> Option<Usage> {
    tasks.iter().filter_map(|t| t.agent.usage).reduce(|a, b| a.add(&b))
}

/// `$0.0121`, `unknown` (tokens without a price), `-` (the agent reports nothing).
pub fn cost_cell(u: Option<&Usage>) -> String {
    u.map_or_else(|| "-".into(), Usage::cost_text)
}

/// The `usage` object of `--json`.
pub fn usage_json(u: Option<&Usage>) -> serde_json::Value {
    let u = u.copied().unwrap_or_default();
    serde_json::json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cost_usd": u.cost_usd,
    })
}

/// `2`, or `3 (1 redo)`.
fn attempts(t: &TaskRow) -> String {
    match t.train.redos {
        0 => t.attempt.to_string(),
        1 => format!("{} (1 redo)", t.attempt),
        n => format!("{} ({n} redos)", t.attempt),
    }
}

/// Why a task is where it is: waiting for whom, or why it was set aside.
pub fn why(job: &JobRow, tasks: &[TaskRow], t: &TaskRow) -> String {
    if t.state == TaskState::Succeeded && t.merge_state == MergeState::Pending {
        if let Some(stop) = &job.train.stopped {
            return format!("waiting: merging stopped ({stop})");
        }
        if job.spec.merge_mode() == MergeMode::Manual && !job.train.approved {
            return format!("checked; waiting for `grove merge {}`", job.id);
        }
        if let (Some(group), Some(v)) = (&t.train.variant_of, &t.train.variant) {
            let picked = tasks.iter().any(|o| o.train.variant_of.as_ref() == Some(group) && o.train.picked);
            if !picked && job.spec.pick() == Pick::Manual {
                return format!("checked; waiting for `grove pick {group} {v}` (or another variant)");
            }
            if !picked {
                return "waiting for the other variants".into();
            }
        }
        if let Some(before) = tasks.iter().find(|b| b.ord < t.ord && !b.merge_state.is_settled()) {
            return format!("waiting for {} ({}) to merge or be set aside", before.slug, before.state);
        }
        return "waiting for the merge train".into();
    }
    if t.merge_state == MergeState::CheckFailed {
        let out = t.log_tail.as_deref().and_then(|l| l.lines().rev().find(|l| !l.trim().is_empty()));
        let reason = t.reason.clone().unwrap_or_default();
        return match out {
            Some(line) => format!("{reason}: {line}"),
            None => reason,
        };
    }
    if !t.conflict_paths.is_empty() && t.state == TaskState::NeedsAttention {
        return t.reason.clone().unwrap_or_else(|| format!("conflict in {}", t.conflict_paths.join(", ")));
    }
    if let Some(held) = &t.agent.held {
        return held.clone();
    }
    // Otherwise where it runs and why, when the job left that to the placement policy.
    t.reason
        .clone()
        .or_else(|| t.placed_why.clone().filter(|_| t.pool == grove_core::placement::AUTO))
        .unwrap_or_default()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn job_json(job: &JobRow, tasks: &[TaskRow]) -> serde_json::Value {
    let usage = job_usage(tasks);
    let spent = usage.map_or(0.0, |u| u.known_cost());
    let budget = serde_json::json!({
        "task_usd": job.spec.budget.task_usd,
        "job_usd": job.spec.budget.job_usd,
        "task_tokens": job.spec.budget.task_tokens,
        "over": grove_coordinator::drive::over_budget(job, spent),
    });
    let mut v = serde_json::json!({
        "id": job.id.as_str(),
        "state": job.state,
        "created_at": job.created_at,
        "source": job.source,
        "base": job.base,
        "integration_branch": job.integration_branch,
        "integration_head": job.integration_head,
        "warnings": job.warnings,
        "merge_mode": job.spec.merge_mode().as_str(),
        "merge_approved": job.train.approved,
        "merge_stopped": job.train.stopped,
        "collected_at": job.collected_at,
        "tasks": tasks.iter().map(|t| serde_json::json!({
            "order": t.ord,
            "task": t.slug,
            "title": t.title,
            "state": t.state.as_str(),
            "merge": t.merge_state.as_str(),
            "shown": shown_state(t.state, t.merge_state),
            "branch": t.branch,
            "files": t.files.len(),
            "depends_on": t.depends_on,
            "attempt": t.attempt,
            "turns": t.turns,
            "head": t.head,
            "diff": {"files": t.stat.files, "insertions": t.stat.insertions, "deletions": t.stat.deletions},
            "reason": t.reason,
            "conflict_paths": t.conflict_paths,
            "merge_commit": t.merge_commit,
            "pool": t.pool,
            "placed": t.placed,
            "placed_why": t.placed_why,
            "merge_position": t.train.merge_seq,
            "redos": t.train.redos,
            "task_base": t.train.base,
            "why": why(job, tasks, t),
            "variant": t.train.variant,
            "variant_of": t.train.variant_of,
            "picked": t.train.picked,
        })).zip(tasks).map(|(mut v, t)| {
            if let Some(o) = v.as_object_mut() {
                // Clocks: attempts that failed around the agent, when the deadline counts from,
                // and when a waiting task goes again (`parked_until` for a usage limit).
                o.insert("failures".into(), t.train.failures.into());
                o.insert("first_dispatched_at".into(), t.train.first_dispatched_at.into());
                let parked = (t.state == TaskState::Parked).then_some(t.train.retry_at).flatten();
                o.insert("parked_until".into(), parked.into());
                o.insert("retry_at".into(), t.train.retry_at.into());
                // What its agent spent, what it asked, its session, and a budget hold.
                o.insert("usage".into(), usage_json(t.agent.usage.as_ref()));
                o.insert("question".into(), t.agent.question.clone().into());
                o.insert("session".into(), t.agent.session.clone().into());
                o.insert("held".into(), t.agent.held.clone().into());
                o.insert("parks".into(), t.train.parks.into());
                o.insert("parked_secs".into(), t.train.parked_secs.into());
                // Where its work went (`grove handoff`, `grove pull`).
                let moves: Vec<serde_json::Value> = t
                    .handoffs
                    .iter()
                    .map(|h| serde_json::json!({"at": h.at, "way": h.way, "place": h.place, "attempt": h.attempt}))
                    .collect();
                o.insert("handoffs".into(), moves.into());
                o.insert("where".into(), where_now(t).into());
                // The repository it changes (a cross-repository job's; else none).
                o.insert("repository".into(), job.repo.as_ref().map(|r| r.name.clone()).into());
            }
            v
        }).collect::<Vec<_>>(),
    });
    if let Some(o) = v.as_object_mut() {
        // What the job's agents spent, and its budget.
        o.insert("usage".into(), usage_json(usage.as_ref()));
        o.insert("budget".into(), budget);
        o.insert("repository".into(), repo_json(job));
    }
    v
}

/// A cross-repository job's repository: its name, group, place, what it needs and its pull
/// request; `null` for a job of one repository.
fn repo_json(job: &JobRow) -> serde_json::Value {
    let Some(r) = &job.repo else { return serde_json::Value::Null };
    serde_json::json!({
        "name": r.name,
        "group": r.group.as_str(),
        "order": r.ord,
        "level": r.level,
        "depends_on": r.upstream,
        "edges": r.edges,
        "pull_request": r.pr.as_deref().and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()),
    })
}

/// A cross-repository job (`grove status GROUP`): each repository's progress and pull
/// request, dependencies first, then each one's tasks; or JSON with every repository and
/// every task (each task naming its repository).
pub fn print_group(group: &str, members: &[(JobRow, Vec<TaskRow>)], json: bool) -> anyhow::Result<()> {
    if json {
        let repos: Vec<serde_json::Value> = members.iter().map(|(j, t)| job_json(j, t)).collect();
        let tasks: Vec<serde_json::Value> = repos
            .iter()
            .flat_map(|r| r.get("tasks").and_then(|t| t.as_array()).cloned().unwrap_or_default())
            .collect();
        let state = group_state(members.iter().map(|(j, _)| j));
        let v = serde_json::json!({ "id": group, "state": state, "repositories": repos, "tasks": tasks });
        writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    {
        let mut out = std::io::stdout().lock();
        let branch = members.first().map_or("", |(j, _)| j.integration_branch.as_str());
        writeln!(
            out,
            "job {group}  ({})  {} repositories, dependencies first; integration branch {branch} in each",
            group_state(members.iter().map(|(j, _)| j)),
            members.len()
        )?;
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|(j, tasks)| {
                let r = j.repo.as_ref();
                let merged = tasks
                    .iter()
                    .filter(|t| matches!(t.merge_state, MergeState::Merged | MergeState::Empty))
                    .count();
                vec![
                    r.map_or(0, |r| r.ord + 1).to_string(),
                    r.map_or_else(String::new, |r| r.name.clone()),
                    j.state.clone(),
                    format!("{merged}/{}", tasks.len()),
                    cost_cell(job_usage(tasks).as_ref()),
                    r.and_then(|r| r.pr.as_deref()).map_or_else(|| "-".into(), pr_cell),
                    r.map_or_else(String::new, |r| {
                        if r.upstream.is_empty() { "-".into() } else { r.upstream.join(", ") }
                    }),
                    j.source.clone(),
                ]
            })
            .collect();
        write!(
            out,
            "{}",
            table(&["#", "REPOSITORY", "STATE", "MERGED", "COST", "PULL REQUEST", "NEEDS", "SOURCE"], &rows)
        )?;
    }
    for (j, tasks) in members {
        let mut out = std::io::stdout().lock();
        writeln!(out)?;
        if let Some(r) = &j.repo {
            writeln!(out, "repository {}:", r.name)?;
            for e in &r.edges {
                writeln!(out, "  {e}")?;
            }
        }
        drop(out);
        print_job(j, tasks, false)?;
    }
    Ok(())
}

/// A cross-repository job's state: `running` while any repository runs or waits, else
/// `cancelled` if any was, else `done`.
pub fn group_state<'a>(jobs: impl Iterator<Item = &'a JobRow>) -> &'static str {
    let states: Vec<&str> = jobs.map(|j| j.state.as_str()).collect();
    if states.iter().any(|s| matches!(*s, "running" | "waiting")) {
        "running"
    } else if states.contains(&"paused") {
        "paused"
    } else if states.contains(&"cancelled") {
        "cancelled"
    } else {
        "done"
    }
}

/// `#12 open https://...` from a kept pull request.
fn pr_cell(pr: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(pr).unwrap_or_default();
    let field = |k: &str| {
        v.get(k).map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).unwrap_or_default()
    };
    format!("#{} {} {}", field("number"), field("state"), field("url")).trim().to_owned()
}
