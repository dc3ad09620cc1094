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
  grove plan --split auto --dot | dot -Tsvg > modules.svg
  grove plan job.toml --coordinator http://coord:7070")]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print the plan as JSON on stdout
    #[arg(long, conflicts_with = "dot")]
    pub json: bool,
    /// Print the module graph in Graphviz DOT (`grove plan --dot | dot -Tsvg > plan.svg`)
    #[arg(long)]
    pub dot: bool,
    /// Plan on a coordinator daemon (its view of the repository) [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
}

/// A plan as printed, whether made here or by a coordinator.
struct View {
    base: String,
    selected_files: u64,
    warnings: Vec<String>,
    dot: String,
    tasks: Vec<grove_proto::v1::PlannedTask>,
}

pub async fn cmd_plan(home: PathBuf, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let mut loaded = args.spec.load(&cwd)?;
    let view = if let Some(url) = &args.coordinator {
        let text = toml::to_string(&loaded.spec).context("writing the job spec as TOML")?;
        let base_dir = loaded.dir.canonicalize().unwrap_or(loaded.dir.clone());
        let name = loaded.file.as_ref().map_or_else(|| "flags".to_owned(), |(n, _)| n.clone());
        let mut client = crate::remote::connect(url, &args.tls).await?;
        let req = grove_proto::v1::SubmitJobRequest {
            spec_toml: text,
            spec_name: name,
            base_dir: base_dir.display().to_string(),
        };
        let r = client.plan_job(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
        View {
            base: r.base,
            selected_files: r.selected_files,
            warnings: r.warnings,
            dot: r.dot,
            tasks: r.tasks,
        }
    } else {
        // A plan needs no agent; fill one in so validation passes when none was given.
        if loaded.spec.agent.kind.is_none() {
            loaded.spec.agent.kind = Some(grove_core::spec::AgentKind::Command);
            loaded.spec.agent.command = vec!["true".into()];
        }
        if !loaded.spec.repos.is_empty() {
            return plan_group(home, loaded, &args);
        }
        let git = grove_git::Git::detect()?;
        let layout = grove_core::layout::Layout::new(home);
        let file = loaded.file.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
        let p = tokio::task::block_in_place(|| {
            grove_coordinator::submit::prepare(&git, &layout, loaded.spec, file, &loaded.dir)
        })?;
        let pool = p.spec.run.pool.clone().unwrap_or_else(|| grove_core::placement::LOCAL.to_owned());
        let tasks = p
            .plan
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| grove_proto::v1::PlannedTask {
                order: i as u32,
                slug: t.slug.clone(),
                title: t.title.clone(),
                level: t.level,
                sparse: t.sparse.as_ref().map(|d| grove_proto::v1::Folders { dirs: d.clone() }),
                files: t.files.clone(),
                lines: t.lines,
                depends_on: t.depends_on.clone(),
                pool: pool.clone(),
            })
            .collect();
        View {
            base: p.base.clone(),
            selected_files: p.plan.selected_files as u64,
            dot: p.plan.dot(),
            warnings: p.plan.warnings,
            tasks,
        }
    };
    print(&view, &args)
}

fn print(p: &View, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    if args.dot {
        write!(out, "{}", p.dot)?;
        return Ok(ExitCode::SUCCESS);
    }
    let sparse = |t: &grove_proto::v1::PlannedTask| t.sparse.as_ref().map(|f| f.dirs.clone());
    if args.json {
        let tasks: Vec<_> = p
            .tasks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "order": t.order, "task": t.slug, "title": t.title, "level": t.level, "sparse": sparse(t),
                    "files": t.files, "lines": t.lines, "depends_on": t.depends_on, "pool": t.pool,
                })
            })
            .collect();
        let v = serde_json::json!({"base": p.base, "selected_files": p.selected_files,
            "warnings": p.warnings, "tasks": tasks});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = p
        .tasks
        .iter()
        .map(|t| {
            vec![
                (t.order + 1).to_string(),
                t.slug.clone(),
                t.level.to_string(),
                match sparse(t) {
                    None => "(all)".into(),
                    Some(d) if d.is_empty() => "(top level)".into(),
                    Some(d) => d.join(" "),
                },
                t.files.len().to_string(),
                t.lines.to_string(),
                t.depends_on.join(","),
                t.pool.clone(),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        table(&["#", "TASK", "LEVEL", "SCOPE", "FILES", "LINES", "DEPENDS ON", "POOL"], &rows)
    )?;
    let levels = p.tasks.iter().map(|t| t.level).max().map_or(0, |l| l + 1);
    writeln!(
        out,
        "\n{} task(s) in {levels} level(s), {} file(s) selected, base {}",
        p.tasks.len(),
        p.selected_files,
        &p.base[..p.base.len().min(12)]
    )?;
    Ok(ExitCode::SUCCESS)
}

/// A cross-repository job's plan: the order across repositories and why, then each
/// repository's tasks (each naming its repository); `--dot`: one cluster per repository and
/// the edges between them.
fn plan_group(home: PathBuf, loaded: crate::specargs::Loaded, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let git = grove_git::Git::detect()?;
    let layout = grove_core::layout::Layout::new(home);
    let file = loaded.file.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
    let g = tokio::task::block_in_place(|| {
        grove_coordinator::group::prepare(&git, &layout, loaded.spec.clone(), file, &loaded.dir)
    })?;
    for w in &g.warnings {
        eprintln!("warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    let pool = g.spec.run.pool.clone().unwrap_or_else(|| grove_core::placement::LOCAL.to_owned());
    if args.dot {
        writeln!(out, "digraph plan {{\n  rankdir=LR;\n  compound=true;")?;
        for (name, p) in &g.repos {
            writeln!(out, "  subgraph \"cluster_{name}\" {{\n    label=\"{name}\";")?;
            writeln!(
                out,
                "    \"{name}\" [shape=box, style=dashed, label=\"{name} ({} task(s))\"];",
                p.plan.tasks.len()
            )?;
            for t in &p.plan.tasks {
                writeln!(out, "    \"{name}/{}\" [label=\"{}\"];", t.slug, t.slug)?;
                for d in &t.depends_on {
                    writeln!(out, "    \"{name}/{}\" -> \"{name}/{d}\";", t.slug)?;
                }
            }
            writeln!(out, "  }}")?;
        }
        for e in &g.order.edges {
            writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\", style=bold];",
                e.from,
                e.to,
                e.why.replace('"', "'")
            )?;
        }
        writeln!(out, "}}")?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        let repos: Vec<_> = g
            .repos
            .iter()
            .map(|(name, p)| {
                let tasks: Vec<_> = p
                    .plan
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        serde_json::json!({
                            "repository": name, "order": i, "task": t.slug, "title": t.title, "level": t.level,
                            "sparse": t.sparse, "files": t.files, "lines": t.lines, "depends_on": t.depends_on,
                            "pool": pool,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": name, "source": p.source.fetch_url(), "base": p.base,
                    "level": g.order.level.get(name), "selected_files": p.plan.selected_files, "tasks": tasks,
                })
            })
            .collect();
        let v = serde_json::json!({
            "order": g.order.order, "edges": g.order.edges, "integration_branch": g.integration_branch(),
            "warnings": g.warnings, "repositories": repos,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{} repositories, merged in this order: {}", g.repos.len(), levels(&g.order))?;
    for e in &g.order.edges {
        writeln!(out, "  {} needs {}: {}", e.from, e.to, e.why)?;
    }
    let mut rows = Vec::new();
    for (name, p) in &g.repos {
        for (i, t) in p.plan.tasks.iter().enumerate() {
            rows.push(vec![
                name.clone(),
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
                pool.clone(),
            ]);
        }
    }
    writeln!(out)?;
    write!(
        out,
        "{}",
        table(&["REPOSITORY", "#", "TASK", "LEVEL", "SCOPE", "FILES", "LINES", "DEPENDS ON", "POOL"], &rows)
    )?;
    let tasks: usize = g.repos.iter().map(|(_, p)| p.plan.tasks.len()).sum();
    writeln!(
        out,
        "\n{tasks} task(s) in {} repositories; integration branch {} in each",
        g.repos.len(),
        g.integration_branch()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The order across repositories by level: `lib, then app1 + app2`.
pub(crate) fn levels(order: &grove_core::plan::repos::RepoOrder) -> String {
    let mut by_level: std::collections::BTreeMap<u32, Vec<&str>> = std::collections::BTreeMap::new();
    for name in &order.order {
        by_level.entry(order.level.get(name).copied().unwrap_or(0)).or_default().push(name);
    }
    by_level.values().map(|names| names.join(" + ")).collect::<Vec<_>>().join(", then ")
}
