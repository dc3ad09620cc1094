use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use grove_coordinator::JobRow;
use grove_forge::{Forge, Forges, Hosts, MergeItem, MergeStep, OpenItem, Pr, PrSpec, Remote};

use crate::embedded::Embedded;

/// Open one pull request per repository of a job, linked in dependency order; show their
/// state and checks; merge them in order.
///
/// For each repository of the job (a `[[repos]]` job's, dependencies first; or the one of a
/// plain job) `grove pr` pushes the integration branch to the repository's remote (never
/// forced) and opens a pull request (GitHub, GitHub Enterprise, Gitea/Forgejo) or merge request
/// (GitLab) from it into the base branch. Each body links the pull requests to merge before
/// and after it. Run again, it updates them instead of opening others. The code host comes
/// from the remote's URL: github.com, gitlab.com and codeberg.org are known; any other host is
/// configured in grove.toml (see below). Tokens are never printed. Writes go at most one per
/// second per host; Retry-After and rate limits are waited out.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove pr rename-1a2b --draft --label refactor --reviewer alice
  grove pr rename-1a2b --status
  grove pr rename-1a2b --merge     # in dependency order; stops at the first that cannot
  grove pr rename-1a2b --repo app1 --title 'Rename FileId' --body-file notes.md
  grove pr rename-1a2b --status --json | jq -r '.[] | \"\\(.repository) \\(.checks)\"'

A host of your own, in $GROVE_HOME/grove.toml (or --config):
  [forge.\"git.example.com\"]
  kind = \"gitlab\"                          # github | gitlab | gitea
  api = \"https://git.example.com/api/v4\"
  token_env = \"EXAMPLE_TOKEN\"              # else GITHUB_TOKEN (GH_TOKEN), GITLAB_TOKEN, GITEA_TOKEN
  credentials = \"/path/to/tokens.toml\"     # or a file of \"host\" = \"token\" lines
  min_write_interval = \"1s\"")]
pub struct PrArgs {
    /// The job (a cross-repository job's id, or one job's; default: the latest)
    pub job: Option<String>,
    /// Show each repository's pull request, its state and its checks; change nothing
    #[arg(long, conflicts_with = "merge")]
    pub status: bool,
    /// Merge the pull requests in dependency order, each only when its checks passed; stop at
    /// the first that cannot merge, saying why
    #[arg(long)]
    pub merge: bool,
    /// With --merge: also merge a pull request whose head commit has no checks at all
    #[arg(long, requires = "merge")]
    pub allow_no_checks: bool,
    /// Only these repositories of the job (repeatable)
    #[arg(long = "repo", value_name = "NAME")]
    pub repos: Vec<String>,
    /// Open them as drafts
    #[arg(long)]
    pub draft: bool,
    /// The title [default: the job's prompt's first line, else its name]
    #[arg(long)]
    pub title: Option<String>,
    /// The body, from this file (`-`: standard input) [default: what the job did]
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Add this label (repeatable)
    #[arg(long, value_name = "LABEL")]
    pub label: Vec<String>,
    /// Ask this user (or org/team on GitHub) to review (repeatable)
    #[arg(long, value_name = "USER")]
    pub reviewer: Vec<String>,
    /// The git remote of a local repository to push to and read the code host from
    #[arg(long, value_name = "NAME", default_value = "origin")]
    pub remote: String,
    /// The branch the pull requests merge into [default: the remote's default branch]
    #[arg(long, value_name = "BRANCH")]
    pub base: Option<String>,
    /// The file with the [forge] hosts [default: $GROVE_HOME/grove.toml, when it exists]
    /// [env: GROVE_CONFIG]
    #[arg(long, env = "GROVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// One repository of the job, with where its pull request lives.
struct Target {
    name: String,
    job: JobRow,
    /// The remote's URL as configured (what the code host is read from).
    url: String,
    remote: Remote,
    forge: Forge,
    base: String,
}

pub async fn cmd_pr(home: PathBuf, args: PrArgs) -> anyhow::Result<ExitCode> {
    let emb = Embedded::unlocked(home.clone(), None, None, &[]).await?;
    let coord = emb.coordinator.clone();
    let mut jobs = match args.job.as_deref() {
        Some(id) => match coord.store.group(id)? {
            g if g.is_empty() => vec![coord.store.job(id)?],
            g => g,
        },
        None => vec![coord.store.job_or_latest(None)?],
    };
    let name_of = |j: &JobRow| j.repo.as_ref().map_or_else(|| j.id.to_string(), |r| r.name.clone());
    if !args.repos.is_empty() {
        let known: Vec<String> = jobs.iter().map(name_of).collect();
        for r in &args.repos {
            if !known.contains(r) {
                anyhow::bail!("--repo {r}: the job has no such repository (it has {})", known.join(", "));
            }
        }
        jobs.retain(|j| args.repos.contains(&name_of(j)));
    }
    let hosts = hosts(&home, args.config.as_deref())?;
    let mut forges = Forges::new(hosts, |k| std::env::var(k).ok());
    let git = grove_git::Git::detect()?;
    let mut targets = Vec::new();
    for job in jobs {
        let name = name_of(&job);
        let url = remote_url(&git, &job, &args.remote).with_context(|| format!("repository {name}"))?;
        let remote = Remote::parse(&url).with_context(|| format!("repository {name}: its remote {url}"))?;
        let forge = forges.get(&remote).with_context(|| format!("repository {name} ({})", remote.host))?;
        let base = match &args.base {
            Some(b) => b.clone(),
            None => base_branch(&git, &job, &args.remote).with_context(|| format!("repository {name}"))?,
        };
        targets.push(Target { name, job, url, remote, forge, base });
    }
    if args.status {
        return status(&targets, args.json).await;
    }
    if args.merge {
        return merge(&targets, args.allow_no_checks, args.json).await;
    }
    open(&coord, &targets, &args).await
}

/// The `[forge]` hosts of the config file (the one named, else the home's grove.toml).
fn hosts(home: &Path, config: Option<&Path>) -> anyhow::Result<Hosts> {
    let Some(file) = crate::launcher::config_file(home, config)? else { return Ok(Hosts::default()) };
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    Hosts::from_toml(&text).with_context(|| format!("reading the [forge] hosts of {}", file.display()))
}

/// Where a repository's pull request goes: a local repository's remote as configured (not
/// rewritten by `insteadOf`), else the URL the job was made from.
fn remote_url(git: &grove_git::Git, job: &JobRow, remote: &str) -> anyhow::Result<String> {
    let Some(dir) = &job.source_dir else { return Ok(grove_core::urls::split_credential(&job.source).0) };
    let out = git
        .run(Path::new(dir), ["config", "--get", &format!("remote.{remote}.url")])
        .map_err(|e| anyhow::anyhow!("{dir} has no remote {remote:?} (--remote names another): {e}"))?;
    Ok(grove_core::urls::split_credential(out.stdout.trim()).0)
}

/// The branch pull requests merge into: the job's base when it names a branch, else the
/// remote's default branch.
fn base_branch(git: &grove_git::Git, job: &JobRow, remote: &str) -> anyhow::Result<String> {
    if let Some(b) = job.spec.repo.base.as_deref().filter(|b| *b != "HEAD" && !is_commit_id(b)) {
        return Ok(b.strip_prefix("refs/heads/").unwrap_or(b).to_owned());
    }
    let (dir, from) = match &job.source_dir {
        Some(d) => (d.clone(), remote.to_owned()),
        None => (job.mirror.clone(), job.source.clone()),
    };
    let out = git
        .run(Path::new(&dir), ["ls-remote", "--symref", "--", &from, "HEAD"])
        .map_err(|e| anyhow::anyhow!("reading the default branch of {from}: {e} (give --base BRANCH)"))?;
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("ref: refs/heads/").and_then(|r| r.split_whitespace().next()))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("{from} names no default branch (give --base BRANCH)"))
}

fn is_commit_id(s: &str) -> bool {
    s.len() >= 7 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Push every integration branch, then open or update the pull requests (links in order).
async fn open(
    coord: &grove_coordinator::Coordinator,
    targets: &[Target],
    args: &PrArgs,
) -> anyhow::Result<ExitCode> {
    let body = match &args.body_file {
        None => None,
        Some(p) if p.as_os_str() == "-" => {
            Some(std::io::read_to_string(std::io::stdin()).context("reading the body from standard input")?)
        }
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
    };
    let mut items = Vec::new();
    for t in targets {
        let remote = t.job.source_dir.as_ref().map(|_| args.remote.as_str());
        let to = tokio::task::block_in_place(|| coord.push(&t.job.id, remote))
            .with_context(|| format!("repository {}: pushing {}", t.name, t.job.integration_branch))?;
        eprintln!("{}: pushed {} to {}", t.name, t.job.integration_branch, grove_core::urls::redact(&to));
        let tasks = coord.store.tasks(&t.job.id)?;
        let title = args.title.clone().unwrap_or_else(|| default_title(&t.job));
        items.push(OpenItem {
            name: t.name.clone(),
            forge: t.forge.clone(),
            project: t.remote.project.clone(),
            spec: PrSpec {
                head: t.job.integration_branch.clone(),
                base: t.base.clone(),
                title,
                body: body.clone().unwrap_or_else(|| default_body(&t.job, &tasks)),
                draft: args.draft,
                labels: args.label.clone(),
                reviewers: args.reviewer.clone(),
            },
        });
    }
    let prs = grove_forge::open_all(&items).await?;
    for (t, pr) in targets.iter().zip(&prs) {
        let kept = serde_json::json!({
            "number": pr.number, "url": pr.url, "state": pr.state.to_string(), "host": t.remote.host,
            "project": t.remote.project, "head": t.job.integration_branch, "base": t.base,
        });
        coord.store.set_pr(&t.job.id, Some(&kept.to_string()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<_> = targets
            .iter()
            .zip(&prs)
            .map(|(t, pr)| {
                serde_json::json!({
                    "repository": t.name, "job": t.job.id.as_str(), "number": pr.number, "url": pr.url,
                    "state": pr.state.to_string(), "draft": pr.draft, "created": pr.created,
                    "head": t.job.integration_branch, "base": t.base, "remote": t.url,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else {
        for (t, pr) in targets.iter().zip(&prs) {
            let verb = if pr.created { "opened" } else { "updated" };
            writeln!(out, "{}: {verb} {} ({}) {}", t.name, t.forge.reference(&t.name, pr), pr.state, pr.url)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Each repository's pull request (the latest for its branch, in any state).
async fn latest(targets: &[Target]) -> anyhow::Result<Vec<Option<Pr>>> {
    let mut out = Vec::new();
    for t in targets {
        let pr = t
            .forge
            .find_latest(&t.remote.project, &t.job.integration_branch, &t.base)
            .await
            .with_context(|| format!("repository {}", t.name))?;
        out.push(pr);
    }
    Ok(out)
}

async fn status(targets: &[Target], json: bool) -> anyhow::Result<ExitCode> {
    let prs = latest(targets).await?;
    let mut rows = Vec::new();
    let mut list = Vec::new();
    for (t, pr) in targets.iter().zip(&prs) {
        let Some(pr) = pr else {
            rows.push(vec![t.name.clone(), "-".into(), "none".into(), "-".into(), "-".into(), "-".into()]);
            list.push(serde_json::json!({"repository": t.name, "number": null, "state": "none"}));
            continue;
        };
        let s =
            t.forge.status(&t.remote.project, pr).await.with_context(|| format!("repository {}", t.name))?;
        let mergeable = match s.mergeable {
            Some(true) => "yes".to_owned(),
            Some(false) => {
                format!("no{}", s.merge_detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())
            }
            None => "unknown".into(),
        };
        rows.push(vec![
            t.name.clone(),
            t.forge.reference(&t.name, pr),
            s.state.to_string(),
            s.checks.to_string(),
            mergeable.clone(),
            s.url.clone(),
        ]);
        list.push(serde_json::json!({
            "repository": t.name, "number": pr.number, "url": s.url, "state": s.state.to_string(),
            "checks": s.checks.to_string(), "mergeable": s.mergeable, "merge_detail": s.merge_detail,
        }));
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else {
        write!(
            out,
            "{}",
            crate::output::table(
                &["REPOSITORY", "PULL REQUEST", "STATE", "CHECKS", "MERGEABLE", "URL"],
                &rows
            )
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn merge(targets: &[Target], allow_no_checks: bool, json: bool) -> anyhow::Result<ExitCode> {
    let prs = latest(targets).await?;
    let mut items = Vec::new();
    for (t, pr) in targets.iter().zip(prs) {
        let Some(pr) = pr else {
            anyhow::bail!(
                "repository {} has no pull request for {} yet: run `grove pr` first",
                t.name,
                t.job.integration_branch
            );
        };
        items.push(MergeItem {
            name: t.name.clone(),
            forge: t.forge.clone(),
            project: t.remote.project.clone(),
            pr,
        });
    }
    let steps = grove_forge::merge_in_order(&items, allow_no_checks).await;
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<_> = steps
            .iter()
            .zip(&items)
            .map(|((name, step), item)| {
                serde_json::json!({
                    "repository": name, "url": item.pr.url, "merged": matches!(step, MergeStep::Merged(_) | MergeStep::AlreadyMerged),
                    "step": step.to_string(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else {
        for ((name, step), item) in steps.iter().zip(&items) {
            writeln!(out, "{name}: {step} ({})", item.pr.url)?;
        }
    }
    let all = steps.iter().all(|(_, s)| matches!(s, MergeStep::Merged(_) | MergeStep::AlreadyMerged));
    Ok(if all { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn default_title(job: &JobRow) -> String {
    let group = job.repo.as_ref().map_or_else(|| job.id.to_string(), |r| r.group.to_string());
    match job.spec.prompt.as_deref().and_then(|p| p.lines().map(str::trim).find(|l| !l.is_empty())) {
        Some(line) => line.chars().take(72).collect(),
        None => format!("grove: {}", job.spec.name.clone().unwrap_or(group)),
    }
}

/// What the job did in this repository: its tasks, what they changed, and how to follow it.
fn default_body(job: &JobRow, tasks: &[grove_coordinator::TaskRow]) -> String {
    let mut b = String::new();
    if let Some(p) = &job.spec.prompt {
        b.push_str(p.trim());
        b.push_str("\n\n");
    }
    let group = job.repo.as_ref().map_or_else(|| job.id.to_string(), |r| r.group.to_string());
    b.push_str(&format!(
        "Made by grove, job `{group}`: {} task(s), merged in order into `{}`.\n\n",
        tasks.len(),
        job.integration_branch
    ));
    for t in tasks {
        let stat = if t.stat.is_empty() { "no change".to_owned() } else { t.stat.to_string() };
        b.push_str(&format!(
            "- `{}`: {} ({stat})\n",
            t.slug,
            crate::output::shown_state(t.state, t.merge_state)
        ));
    }
    if let Some(r) = &job.repo {
        for e in &r.edges {
            b.push_str(&format!("\nThis repository {e}."));
        }
    }
    b
}
