use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use grove_coordinator::Store;
use grove_coordinator::gc::{self, Policy, Report};
use grove_coordinator::home::HomeLock;
use grove_core::layout::Layout;
use grove_core::spec::parse_duration;
use grove_git::Git;
use grove_worker::disk::size;

use crate::output::{color_enabled_stdout, paint, table};

/// Free the disk that jobs which ended long ago still take in the grove home: their worktrees
/// and run dirs (logs), and in grove's mirrors their task branches whose commits are safe to
/// let go; then prune and pack each mirror (`git gc --auto`).
///
/// A job is collected when it ended (done or cancelled; every task merged, failed, cancelled
/// or discarded; nothing running, queued, parked or needing attention) at least --older-than
/// ago. Its task branch goes when its commits are in the integration branch; a branch (or an
/// earlier attempt's record under refs/grove/attempts/) that did not merge stays unless
/// --prune-unmerged. Only what grove made goes: the task branches it recorded, never the
/// integration branch, never your repository, nothing outside the grove home. `grove status`
/// still lists collected jobs. With --mirrors, a mirror no remaining job uses and whose
/// integration branches are all published is removed (a new job clones it again).
///
/// Local only: it works on this machine's grove home, and refuses while a coordinator daemon
/// serves it (stop the daemon, collect, start it again).
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove gc --dry-run                      # what would go, with sizes; nothing changes
  grove gc                                # jobs that ended over 7 days ago
  grove gc --older-than 1d --prune-unmerged --mirrors
  grove gc --older-than 0s --json | jq '.freed_bytes'")]
pub struct GcArgs {
    /// Collect jobs that ended at least this long ago (e.g. 12h, 7d, 0s)
    #[arg(long, value_parser = parse_duration, default_value = "7d", value_name = "DURATION")]
    pub older_than: Duration,
    /// Print what would be removed, with sizes, and change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Also delete task branches and attempt records whose commits were never merged (failed,
    /// cancelled, discarded tasks): their work is then gone from grove's mirror
    #[arg(long)]
    pub prune_unmerged: bool,
    /// Also remove mirrors no uncollected job uses (only when their integration branches are
    /// published and no other branch of grove's is left in them)
    #[arg(long)]
    pub mirrors: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn cmd_gc(home: PathBuf, args: GcArgs) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(home);
    if !layout.db().exists() {
        anyhow::bail!("{} holds no grove state: nothing to collect", layout.home().display());
    }
    let git = Git::detect()?;
    let policy = Policy {
        older_than: args.older_than,
        prune_unmerged: args.prune_unmerged,
        mirrors: args.mirrors,
        dry_run: args.dry_run,
    };
    let report = tokio::task::block_in_place(|| -> anyhow::Result<Report> {
        // Shared, as local commands hold it: `grove gc` collects only ended jobs, so it runs
        // beside a `grove run` on the same home, never beside a daemon (which collects by
        // itself with --gc-every).
        let _lock = HomeLock::share(&layout, true).map_err(|e| match e {
            grove_coordinator::CoordError::HomeServed { home, holder } => {
                grove_coordinator::CoordError::HomeHeld { home, holder }
            }
            e => e,
        })?;
        let store = Store::open(&layout.db())?;
        let now = grove_coordinator::timers::unix_now();
        let progress_on = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut progress = |line: &str| {
            if progress_on {
                eprintln!("grove gc: {line}");
            }
        };
        Ok(gc::collect(&store, &git, &layout, &policy, now, &mut progress)?)
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&json(&report))?)?;
    } else {
        print(&mut out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn json(r: &Report) -> serde_json::Value {
    let job = |j: &Option<grove_core::JobId>| j.as_ref().map(|j| j.to_string());
    serde_json::json!({
        "dry_run": r.dry_run,
        "collected": r.collected.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "removed": r.removed.iter().map(|x| serde_json::json!({
            "job": job(&x.job), "kind": x.kind.as_str(), "what": x.what, "bytes": x.bytes, "why": x.why,
        })).collect::<Vec<_>>(),
        "kept": r.kept.iter().map(|k| serde_json::json!({"job": job(&k.job), "what": k.what, "why": k.why}))
            .collect::<Vec<_>>(),
        "skipped": r.skipped.iter().map(|(j, why)| serde_json::json!({"job": j.to_string(), "why": why}))
            .collect::<Vec<_>>(),
        "packed": r.packed.iter().map(|p| serde_json::json!({
            "mirror": p.mirror, "before_bytes": p.before, "after_bytes": p.after,
        })).collect::<Vec<_>>(),
        "freed_bytes": r.freed(),
    })
}

fn print(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let color = color_enabled_stdout();
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if r.removed.is_empty() {
        writeln!(out, "nothing to remove")?;
    } else {
        let rows: Vec<Vec<String>> = r
            .removed
            .iter()
            .map(|x| {
                let bytes = if x.kind == gc::Kind::Branch || x.kind == gc::Kind::Attempt {
                    "-".to_owned()
                } else {
                    size(x.bytes)
                };
                let job = x.job.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string);
                vec![x.kind.as_str().to_owned(), job, bytes, x.what.clone()]
            })
            .collect();
        write!(out, "{}", table(&["KIND", "JOB", "SIZE", verb.to_ascii_uppercase().as_str()], &rows))?;
    }
    for k in &r.kept {
        writeln!(out, "{} {}: {}", paint("kept", "33", color), k.what, k.why)?;
    }
    for p in &r.packed {
        if p.after < p.before {
            writeln!(out, "packed {}: {} -> {}", p.mirror, size(p.before), size(p.after))?;
        }
    }
    let jobs = r.collected.len();
    let skipped = r.skipped.len();
    writeln!(
        out,
        "{} {} in {jobs} job(s) ({skipped} not collected yet, see --json); {} {}",
        if r.dry_run { "would free" } else { "freed" },
        size(r.freed()),
        r.removed.len(),
        if r.dry_run { "item(s) to remove" } else { "item(s) removed" },
    )?;
    if r.dry_run {
        writeln!(out, "(dry run: nothing changed)")?;
    }
    Ok(())
}
