use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use grove_core::agents::{AgentDefinition, Found};

use crate::output::{color_enabled_stdout, paint, table};

/// List a repository's own agents and which agent CLIs can run each.
///
/// grove reads `.github/agents/NAME.agent.md` (the format of VS Code, Copilot CLI and
/// GitHub's coding agent) and `.claude/agents/NAME.md` (Claude Code's subagents) at the base
/// commit, as a job would. Run one with `grove run --custom-agent NAME`: its instructions,
/// model and tools go to the chosen CLI. A definition that does not parse is listed with what
/// is wrong (file, line, field), and the exit code is 1.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove agents
  grove agents --repo ../service --base release --json | jq '.agents[].name'
  grove run --custom-agent review --agent command -- \\
    sh -c 'claude -p \"$1\" --append-system-prompt \"$(cat \"$GROVE_AGENT_FILE\")\"' sh {prompt}")]
pub struct AgentsArgs {
    /// The repository: a path or a git URL [default: the current directory]
    #[arg(long, value_name = "PATH|URL")]
    pub repo: Option<String>,
    /// The commit to read the definitions from [default: HEAD]
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn cmd_agents(home: PathBuf, args: AgentsArgs) -> anyhow::Result<ExitCode> {
    let git = grove_git::Git::detect()?;
    let layout = grove_core::layout::Layout::new(home);
    let cwd = std::env::current_dir()?;
    let location = args.repo.as_deref().unwrap_or(".");
    let base = args.base.as_deref().unwrap_or("HEAD");
    let (commit, found) = tokio::task::block_in_place(|| {
        grove_coordinator::submit::repository_agents(&git, &layout, location, base, &cwd)
    })?;
    print(&commit, &found, args.json)?;
    Ok(if found.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn runs(d: &AgentDefinition) -> Vec<&'static str> {
    d.runners().iter().map(|r| r.cli).collect()
}

fn print(commit: &str, found: &Found, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let agents: Vec<_> = found
            .definitions
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name,
                    "display_name": d.display_name,
                    "path": d.path,
                    "format": d.format.as_str(),
                    "description": d.description,
                    "model": d.model,
                    "tools": d.tools,
                    "claude_tools": d.claude_tools(),
                    "disallowed_tools": d.disallowed_tools,
                    "target": d.target,
                    "body_chars": d.body.chars().count(),
                    "runners": d.runners(),
                })
            })
            .collect();
        let errors: Vec<_> = found
            .errors
            .iter()
            .map(|e| serde_json::json!({ "path": e.path(), "error": e.to_string() }))
            .collect();
        let doc = serde_json::json!({ "base": commit, "agents": agents, "errors": errors });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    if found.definitions.is_empty() && found.errors.is_empty() {
        writeln!(
            out,
            "no agents defined at {} (.github/agents/NAME.agent.md or .claude/agents/NAME.md)",
            &commit[..12.min(commit.len())]
        )?;
        return Ok(());
    }
    if !found.definitions.is_empty() {
        let rows: Vec<Vec<String>> = found
            .definitions
            .iter()
            .map(|d| {
                vec![
                    d.name.clone(),
                    d.path.clone(),
                    d.model.clone().unwrap_or_else(|| "-".into()),
                    match &d.tools {
                        None => "all".into(),
                        Some(t) if t.is_empty() => "none".into(),
                        Some(t) => t.join(","),
                    },
                    runs(d).join(","),
                    d.description.clone(),
                ]
            })
            .collect();
        write!(out, "{}", table(&["NAME", "FILE", "MODEL", "TOOLS", "RUNS WITH", "DESCRIPTION"], &rows))?;
    }
    let color = color_enabled_stdout();
    for e in &found.errors {
        writeln!(out, "{} {e}", paint("error:", "31", color))?;
    }
    if let Some(d) = found.definitions.first() {
        writeln!(out, "\n  grove run --custom-agent {} ...   # a job run as this agent", d.name)?;
    }
    Ok(())
}
