use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use grove_coordinator::review::variants_of;
use grove_coordinator::{Store, TaskRow};
use grove_core::TaskState;
use grove_core::layout::Layout;

use crate::output::{color_enabled_stdout, paint, shown_state, state_color, table};

/// Show a task's variants side by side: checks, files and lines changed, duration, turns.
///
/// Tokens and cost are what each variant's agent reported (the builtin CLI adapters read them
/// from the CLI; `-` for an agent that reports nothing, `unknown` for tokens without a price).
/// Pick one with `grove pick TASK VARIANT`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove compare core
  grove compare rename-1a2b/core --json
  grove compare core --coordinator http://127.0.0.1:7070")]
pub struct CompareArgs {
    /// JOB/TASK, or TASK (the newest job with variants of that task)
    pub task: String,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Compare variants of a job of this coordinator daemon [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
}

pub async fn cmd_compare(home: PathBuf, args: CompareArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.coordinator {
        let mut client = crate::remote::connect(url, &args.tls).await?;
        let req = grove_proto::v1::TaskRequest { task: args.task.clone() };
        let r = client.compare_task(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
        let wire = grove_proto::v1::Job { id: r.job.clone(), tasks: r.variants, ..Default::default() };
        let (_, rows) = crate::remote::rows(&wire)?;
        return print(&r.job, &r.pick, &r.task, &rows, args.json);
    }
    let store = Store::open(&Layout::new(home).db())?;
    let (job, task, rows) = variants_of(&store, &args.task)?;
    print(job.id.as_str(), job.spec.pick().as_str(), &task, &rows, args.json)
}

/// The variants of `job`/`task` (picked by the rule `pick`) as a table, or JSON.
fn print(job: &str, pick: &str, task: &str, rows: &[TaskRow], json: bool) -> anyhow::Result<ExitCode> {
    let duration = |t: &TaskRow| t.train.started_at.zip(t.train.finished_at).map(|(s, f)| (f - s).max(0));
    let checks = |t: &TaskRow| match t.state {
        TaskState::Succeeded => Some(true),
        TaskState::Failed => Some(false),
        _ => None,
    };
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|t| {
                serde_json::json!({
                    "variant": t.train.variant,
                    "task": t.slug,
                    "branch": t.branch,
                    "state": t.state.as_str(),
                    "shown": shown_state(t.state, t.merge_state),
                    "checks_passed": checks(t),
                    "files": t.stat.files,
                    "insertions": t.stat.insertions,
                    "deletions": t.stat.deletions,
                    "duration_secs": duration(t),
                    "turns": t.turns,
                    "attempt": t.attempt,
                    "tokens": t.agent.usage.map(|u| u.tokens()),
                    "cost_usd": t.agent.usage.and_then(|u| u.cost_usd),
                    "usage": super::status::usage_json(t.agent.usage.as_ref()),
                    "picked": t.train.picked,
                    "reason": t.reason,
                })
            })
            .collect();
        let v = serde_json::json!({"job": job, "task": task, "pick": pick, "variants": list});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let color = color_enabled_stdout();
    writeln!(out, "{job}/{task}: {} variant(s), pick {pick}", rows.len())?;
    writeln!(out)?;
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|t| {
            vec![
                t.train.variant.clone().unwrap_or_default(),
                paint(shown_state(t.state, t.merge_state), state_color(t.state), color),
                match checks(t) {
                    Some(true) => "passed".into(),
                    Some(false) => "failed".into(),
                    None => "-".into(),
                },
                t.stat.files.to_string(),
                format!("+{} -{}", t.stat.insertions, t.stat.deletions),
                duration(t).map_or_else(|| "-".into(), |d| format!("{d}s")),
                t.turns.to_string(),
                t.agent.usage.map_or_else(|| "-".into(), |u| grove_core::usage::tokens_text(u.tokens())),
                super::status::cost_cell(t.agent.usage.as_ref()),
                if t.train.picked { "picked".into() } else { String::new() },
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        table(
            &["VARIANT", "STATE", "CHECKS", "FILES", "LINES", "TIME", "TURNS", "TOKENS", "COST", ""],
            &table_rows
        )
    )?;
    Ok(ExitCode::SUCCESS)
}
