use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::output::table;
use crate::specargs::SpecArgs;

/// Preview a job: its tasks, their scopes and sizes, and the merge order. Creates nothing.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove plan examples/job.toml
  grove plan --split cargo --grep FileId --json
  grove plan --split auto --dot | dot -Tsvg > modules.svg")]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print the plan as JSON on stdout
    #[arg(long, conflicts_with = "dot")]
    pub json: bool,
    /// Print the module graph in Graphviz DOT (`grove plan --dot | dot -Tsvg > plan.svg`)
    #[arg(long)]
    pub dot: bool,
}

pub fn cmd_plan(home: PathBuf, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let mut loaded = args.spec.load(&cwd)?;
    // A plan needs no agent; fill one in so validation passes when none was given.
    if loaded.spec.agent.kind.is_none() {
        loaded.spec.agent.kind = Some(grove_core::spec::AgentKind::Command);
        loaded.spec.agent.command = vec!["true".into()];
    }
    let git = grove_git::Git::detect()?;
    let layout = grove_core::layout::Layout::new(home);
    let file = loaded.file.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
    let p = grove_coordinator::submit::prepare(&git, &layout, loaded.spec, file, &loaded.dir)?;
    let mut out = std::io::stdout().lock();
    for w in &p.plan.warnings {
        eprintln!("warning: {w}");
    }
    if args.dot {
        write!(out, "{}", p.plan.dot())?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        let tasks: Vec<_> = p
            .plan
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({
                    "order": i, "task": t.slug, "title": t.title, "level": t.level, "sparse": t.sparse,
                    "files": t.files, "lines": t.lines, "depends_on": t.depends_on, "pool": "local",
                })
            })
            .collect();
        let v = serde_json::json!({"base": p.base, "selected_files": p.plan.selected_files,
            "warnings": p.plan.warnings, "tasks": tasks});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = p
        .plan
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            vec![
                (i + 1).to_string(),
                t.slug.clone(),
                t.level.to_string(),
                match &t.sparse {
                    None => "(all)".into(),
                    Some(d) if d.is_empty() => "(top level)".into(),
                    Some(d) => d.join(" "),
                },
                t.files.len().to_string(),
                t.lines.to_string(),
                t.depends_on.join(","),
                "local".into(),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        table(&["#", "TASK", "LEVEL", "SCOPE", "FILES", "LINES", "DEPENDS ON", "POOL"], &rows)
    )?;
    let levels = p.plan.tasks.iter().map(|t| t.level).max().map_or(0, |l| l + 1);
    writeln!(
        out,
        "\n{} task(s) in {levels} level(s), {} file(s) selected, base {}",
        p.plan.tasks.len(),
        p.plan.selected_files,
        &p.base[..p.base.len().min(12)]
    )?;
    Ok(ExitCode::SUCCESS)
}
