use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use grove_coordinator::{JobRow, Store, TaskRow};
use grove_core::layout::Layout;

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
}

pub async fn cmd_status(home: PathBuf, args: StatusArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.coordinator {
        let mut client = crate::remote::connect(url).await?;
        let ids: Vec<String> = match &args.job {
            Some(id) => vec![id.clone()],
            None => client
                .list_jobs(grove_proto::v1::ListJobsRequest {})
                .await
                .map_err(|s| crate::remote::status(url, s))?
                .into_inner()
                .jobs
                .into_iter()
                .map(|j| j.id)
                .collect(),
        };
        let mut jobs = Vec::new();
        for id in ids {
            let j = client
                .get_job(grove_proto::v1::GetJobRequest { id })
                .await
                .map_err(|s| crate::remote::status(url, s))?;
            jobs.push(crate::remote::rows(&j.into_inner())?);
        }
        match (&args.job, jobs.pop()) {
            (Some(_), Some((job, tasks))) => print_job(&job, &tasks, args.json)?,
            (_, last) => {
                jobs.extend(last);
                print_jobs(&jobs, args.json)?
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = Store::open(&Layout::new(home).db())?;
    match &args.job {
        Some(id) => {
            let job = store.job(id)?;
            let tasks = store.tasks(&job.id)?;
            print_job(&job, &tasks, args.json)?;
        }
        None => {
            let mut jobs = Vec::new();
            for j in store.jobs()? {
                let t = store.tasks(&j.id)?;
                jobs.push((j, t));
            }
            print_jobs(&jobs, args.json)?
        }
    }
    Ok(ExitCode::SUCCESS)
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
            j.state.clone(),
            tasks.len().to_string(),
            (count("merged") + count("no-change")).to_string(),
            (count("failed") + count("needs-attention") + count("cancelled")).to_string(),
            j.integration_branch.clone(),
        ]);
    }
    write!(
        out,
        "{}",
        table(&["JOB", "STATE", "TASKS", "MERGED", "NOT MERGED", "INTEGRATION BRANCH"], &rows)
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
    writeln!(out)?;
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let shown = shown_state(t.state, t.merge_state);
            let why = if !t.conflict_paths.is_empty() {
                format!("conflict in {}", t.conflict_paths.join(", "))
            } else if let Some(r) = &t.reason {
                r.clone()
            } else {
                // Where it runs and why, when the job left that to the placement policy.
                t.placed_why.clone().filter(|_| t.pool == grove_core::placement::AUTO).unwrap_or_default()
            };
            vec![
                (t.ord + 1).to_string(),
                t.slug.clone(),
                paint(shown, state_color(t.state), color),
                t.placed.clone().unwrap_or_else(|| t.pool.clone()),
                t.files.len().to_string(),
                if t.stat.is_empty() { "-".into() } else { t.stat.to_string() },
                t.attempt.to_string(),
                why,
            ]
        })
        .collect();
    write!(out, "{}", table(&["#", "TASK", "STATE", "POOL", "FILES", "CHANGED", "ATTEMPT", "NOTE"], &rows))?;
    Ok(())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn job_json(job: &JobRow, tasks: &[TaskRow]) -> serde_json::Value {
    serde_json::json!({
        "id": job.id.as_str(),
        "state": job.state,
        "created_at": job.created_at,
        "source": job.source,
        "base": job.base,
        "integration_branch": job.integration_branch,
        "integration_head": job.integration_head,
        "warnings": job.warnings,
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
        })).collect::<Vec<_>>(),
    })
}
