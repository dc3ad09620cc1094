use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use grove_coordinator::rerun::Rerun;
use grove_coordinator::{Coordinator, JobRow, Store};
use grove_core::layout::Layout;
use grove_core::placement;
use tokio_util::sync::CancellationToken;

use crate::embedded::Embedded;
use crate::specargs::SpecArgs;

/// Plan a change, run an agent on every task in its own worktree, merge the results in order.
///
/// Runs embedded: the coordinator and the workers in this process, state under the grove
/// home. With --job, --only or --failed it goes on with an existing job instead. Exits 0 when
/// every task merged (or had nothing to change), 1 when some did not, 2 on bad input, 3 when
/// --coordinator's daemon went away and did not come back within --reconnect-for (the job
/// goes on there), 130 when cancelled.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove run examples/job.toml
  grove run --split cargo --grep FileId --agent replace --pattern '\\bFileId\\b' --replace SourceFileId
  grove run --split dirs --depth 2 --check 'cargo check' --agent command -- claude -p {prompt}
  grove run job.toml --agent-env ANTHROPIC_API_KEY   # a command agent gets only the credentials named
  grove run job.toml --canary 2        # the first 2 tasks of the order, then ask before the rest
  grove run --failed                   # run the failed tasks of the latest job again, from its base
  grove run --job rename-1a2b --only core --only ide-db
  grove run --job rename-1a2b          # go on with a job that was cancelled or paused
  grove run --agent claude --model sonnet --max-task-cost 2 --check 'cargo check' --max-turns 3
  grove run --agent codex --split cargo --prompt 'Rename FileId to SourceFileId' -- -c model_reasoning_effort=high
  grove run --job rename-1a2b --max-job-cost 50   # raise a spent job budget; the job goes on
  grove run job.toml --coordinator http://coord:7070 --detach --json | jq -r .id
  grove run job.toml --notify-webhook https://hooks.slack.com/services/T0/B0/XYZ --notify-bell
  grove run job.toml --notify-ntfy my-jobs --notify-command 'sh -c \"jq -r .text >> log\"'

Notifications ([notify] in the spec, or the --notify-* flags) go out when a task needs
attention (its question, its conflict paths), when a task fails (its reason) and when the job
finishes (counts by state, merged count, cost when known), once each; a sink that fails is
retried a few times and never changes the job or its exit code.")]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print the finished job as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Go on with this existing job (default with --only/--failed: the latest job)
    #[arg(long, value_name = "JOB", help_heading = "Re-runs")]
    pub job: Option<String>,
    /// Run these tasks of the job again, from the job's base (repeatable)
    #[arg(long, value_name = "TASK", help_heading = "Re-runs")]
    pub only: Vec<String>,
    /// Run the job's failed, set-aside and cancelled tasks again, from the job's base
    #[arg(long, conflicts_with = "only", help_heading = "Re-runs")]
    pub failed: bool,
    /// Run only the first N tasks of the order, then wait for your go before the rest
    #[arg(long, value_name = "N", help_heading = "Re-runs")]
    pub canary: Option<usize>,
    /// With --canary: go on without asking
    #[arg(long, short = 'y', help_heading = "Re-runs")]
    pub yes: bool,
    /// Dispatch over NATS JetStream, so `grove worker` processes elsewhere take the tasks
    /// [env: GROVE_NATS]
    #[arg(long, env = "GROVE_NATS", value_name = "URL", help_heading = "Distributed")]
    pub nats: Option<String>,
    /// With --nats: the lease of a task on a worker without a heartbeat (the pools' consumers
    /// this coordinator makes keep it; workers heartbeat and fence by it)
    #[arg(long, value_parser = grove_core::spec::parse_duration, default_value = "60s", requires = "nats", help_heading = "Distributed")]
    pub ack_wait: std::time::Duration,
    /// Submit to a coordinator daemon instead of running here (see `grove coordinator`)
    /// [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL", help_heading = "Distributed", conflicts_with_all = ["nats", "job", "only", "failed", "canary"])]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
    #[command(flatten)]
    pub follow: crate::remote::Follow,
    #[command(flatten)]
    pub nats_tls: super::worker::NatsTls,
    /// The credentials of this process's workers' agents (not sent with --coordinator or to
    /// workers elsewhere: those use their own)
    #[command(flatten)]
    pub agent_env: crate::secrets::AgentEnvArgs,
    /// With --coordinator: submit, print the job (its id first) and return; the job goes on
    /// there (follow it with `grove status JOB`, `grove logs -f`)
    #[arg(long, requires = "coordinator", help_heading = "Distributed")]
    pub detach: bool,
    /// Workers in this process (default: the job's concurrency; 0 with --nats)
    #[arg(long, value_name = "N", help_heading = "Distributed")]
    pub local_workers: Option<usize>,
}

impl RunArgs {
    fn nats(&self) -> anyhow::Result<Option<grove_bus::nats::NatsConfig>> {
        let Some(url) = self.nats.as_deref() else { return Ok(None) };
        let mut config = super::worker::nats_config(url, None, self.ack_wait, &self.nats_tls)?;
        // A consumer of this run's own: it follows the job before dispatching it, so it needs
        // only what comes from then on; the server forgets it an hour after the run ends.
        let started =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        config.reader = Some(grove_bus::nats::EventReader {
            id: format!("run-{}-{}-{started}", grove_worker::host_name(), std::process::id()),
            replay: false,
            forget_after: std::time::Duration::from_secs(3600),
        });
        Ok(Some(config))
    }

    fn workers(&self, concurrency: usize) -> usize {
        self.local_workers.unwrap_or(if self.nats.is_some() { 0 } else { concurrency.max(1) })
    }
}

pub async fn cmd_run(home: PathBuf, args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = args.coordinator.clone() {
        return remote_run(&url, args).await;
    }
    // Refused at once while a coordinator daemon serves this home: a job run here would race it.
    let _home =
        tokio::task::block_in_place(|| grove_coordinator::home::HomeLock::share(&Layout::new(&home), false))?;
    let existing = args.job.is_some() || !args.only.is_empty() || args.failed;
    if existing {
        if args.spec.spec.is_some() {
            anyhow::bail!(
                "give either a job spec (a new job) or --job/--only/--failed (an existing job), not both"
            );
        }
        return rerun(home, args).await;
    }
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let loaded = args.spec.load(&cwd)?;
    if !loaded.spec.repos.is_empty() {
        return run_group(home, args, loaded).await;
    }
    let concurrency = loaded.spec.concurrency() as usize;
    let file = loaded.file.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
    embedded_pool(&loaded.spec, args.nats.is_some())?;
    // Everything that can refuse the job runs before grove opens or creates its state.
    let git = grove_git::Git::detect()?;
    let layout = Layout::new(&home);
    let prepared = tokio::task::block_in_place(|| {
        grove_coordinator::submit::prepare(&git, &layout, loaded.spec.clone(), file, &loaded.dir)
    })?;
    let mut emb = Embedded::open(home, args.nats()?).await?;
    emb.credentials(&args.agent_env)?;
    let coord = emb.coordinator.clone();
    let concurrency = args.workers(concurrency);
    let (job, tasks) = tokio::task::block_in_place(|| coord.submit(prepared))?;
    for w in &job.warnings {
        eprintln!("warning: {w}");
    }
    let files: usize = tasks.iter().map(|t| t.files.len()).sum();
    eprintln!(
        "job {}: {} task(s), {files} file(s), base {}, integration branch {}",
        job.id,
        tasks.len(),
        &job.base[..job.base.len().min(12)],
        job.integration_branch
    );
    if let Some(n) = args.canary.filter(|n| *n < tasks.len()) {
        let first: BTreeSet<String> = tasks.iter().take(n).map(|t| t.slug.clone()).collect();
        eprintln!("canary: running the first {n} task(s) of the order alone");
        let (row, cancelled) = drive(&emb, &job.id, Some(&first), concurrency).await?;
        let done = coord.store.tasks(&row.id)?;
        let ok = done.iter().filter(|t| first.contains(&t.slug)).all(|t| t.needs_nothing_more());
        if cancelled || !go_on(ok, args.yes, &row)? {
            return finish(&coord.store, &row, args.json, cancelled);
        }
    }
    let (row, cancelled) = drive(&emb, &job.id, None, concurrency).await?;
    finish(&coord.store, &row, args.json, cancelled)
}

/// A cross-repository job (`[[repos]]`), embedded: every repository prepared and ordered
/// before anything is recorded, then the repositories run level by level (those that need
/// none first, each next level once its upstream repositories merged), one set of workers
/// for all.
async fn run_group(
    home: PathBuf,
    args: RunArgs,
    loaded: crate::specargs::Loaded,
) -> anyhow::Result<ExitCode> {
    if args.canary.is_some() {
        anyhow::bail!(
            "--canary takes the first tasks of one repository's order; it does not apply to [[repos]] jobs"
        );
    }
    embedded_pool(&loaded.spec, args.nats.is_some())?;
    let file = loaded.file.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
    let git = grove_git::Git::detect()?;
    let layout = Layout::new(&home);
    let prepared = tokio::task::block_in_place(|| {
        grove_coordinator::group::prepare(&git, &layout, loaded.spec.clone(), file, &loaded.dir)
    })?;
    let concurrency = args.workers(loaded.spec.concurrency() as usize);
    let mut emb = Embedded::open(home, args.nats()?).await?;
    emb.credentials(&args.agent_env)?;
    let coord = emb.coordinator.clone();
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    let order = prepared.order.clone();
    let members = tokio::task::block_in_place(|| coord.submit_group(prepared))?;
    let Some(group) = members.first().and_then(|(j, _)| j.repo.as_ref()).map(|r| r.group.clone()) else {
        anyhow::bail!("the job has no repository");
    };
    let tasks: usize = members.iter().map(|(_, t)| t.len()).sum();
    eprintln!(
        "job {group}: {} repositories, {tasks} task(s), integration branch {} in each; order {}",
        members.len(),
        members.first().map_or("", |(j, _)| j.integration_branch.as_str()),
        super::plan::levels(&order)
    );
    for (j, t) in &members {
        let r = j.repo.as_ref();
        eprintln!(
            "  {}: {} task(s), base {}{}",
            r.map_or("", |r| r.name.as_str()),
            t.len(),
            &j.base[..j.base.len().min(12)],
            r.filter(|r| !r.upstream.is_empty())
                .map(|r| format!(", after {}", r.upstream.join(", ")))
                .unwrap_or_default()
        );
    }
    for e in &order.edges {
        eprintln!("  {} needs {}: {}", e.from, e.to, e.why);
    }
    let cancelled = drive_group(&emb, &group, tasks, concurrency).await?;
    let members = super::status::local_jobs(&coord.store, Some(group.as_str()))?;
    super::status::print_group(group.as_str(), &members, args.json)?;
    if !args.json {
        println!();
        println!("  grove status {group}        # again, later");
        println!("  grove pr {group}            # one pull request per repository, linked in order");
        println!("  grove diff {group}.REPO/TASK  # review one task's branch");
    }
    let all: Vec<&grove_coordinator::TaskRow> = members.iter().flat_map(|(_, t)| t).collect();
    Ok(if cancelled {
        ExitCode::from(130)
    } else if all.iter().all(|t| t.needs_nothing_more()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Drive a cross-repository job's repositories level by level with one set of embedded
/// workers; returns whether it was cancelled (repositories still waiting are then cancelled).
async fn drive_group(
    emb: &Embedded,
    group: &grove_core::JobId,
    total: usize,
    concurrency: usize,
) -> anyhow::Result<bool> {
    let coord: &Coordinator = &emb.coordinator;
    let bell =
        coord.store.group(group.as_str())?.first().is_some_and(|j| j.spec.notify.bell.unwrap_or(false));
    let (result, cancelled) = with_workers(emb, total, bell, concurrency, |notes, cancel| async move {
        loop {
            let ready = tokio::task::block_in_place(|| coord.start_ready(group, &notes))?;
            if ready.is_empty() {
                break;
            }
            coord.drive_jobs(&ready, None, cancel.clone(), notes.clone()).await?;
            if cancel.is_cancelled() {
                tokio::task::block_in_place(|| {
                    coord.cancel_waiting(group, "cancelled before it started", &notes)
                })?;
                break;
            }
        }
        anyhow::Ok(())
    })
    .await;
    result?;
    Ok(cancelled)
}

/// The embedded mode has only the local pool (and `auto`, which places there), unless its
/// bus is NATS.
fn embedded_pool(spec: &grove_core::spec::JobSpec, nats: bool) -> anyhow::Result<()> {
    if !nats
        && let Some(pool) = spec.run.pool.as_deref()
        && ![placement::LOCAL, placement::AUTO].contains(&pool)
    {
        anyhow::bail!(
            "run.pool is {pool:?}, but the embedded mode only has the local pool: give --nats URL (with \
             workers serving {pool}) or --coordinator URL, or use --pool local or auto"
        );
    }
    Ok(())
}

/// --coordinator: submit to the daemon, watch the job, print it. Ctrl-C cancels the job there.
async fn remote_run(url: &str, args: RunArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let loaded = args.spec.load(&cwd)?;
    let text = toml::to_string(&loaded.spec).context("writing the job spec as TOML")?;
    let base_dir = loaded.dir.canonicalize().unwrap_or(loaded.dir.clone());
    let name = loaded.file.as_ref().map_or_else(|| "flags".to_owned(), |(n, _)| n.clone());
    let mut link = crate::remote::Link::open(url, &args.tls, &args.follow).await?;
    let req = grove_proto::v1::SubmitJobRequest {
        spec_toml: text,
        spec_name: name,
        base_dir: base_dir.display().to_string(),
    };
    let job = link.client.submit_job(req).await.map_err(|s| crate::remote::status(url, s))?.into_inner();
    for w in &job.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "job {}: {} task(s) on the coordinator at {url}, integration branch {}",
        job.id,
        job.tasks.len(),
        job.integration_branch
    );
    let bell = loaded.spec.notify.bell.unwrap_or(false);
    if let Some(r) = &job.repo {
        // A cross-repository job: its repositories' jobs, watched in turn.
        let group = grove_core::JobId::parse(&r.group)?;
        let ids: Vec<String> =
            loaded.spec.repos.iter().map(|e| group.of_repo(&e.name()).to_string()).collect();
        return watch_group(&mut link, &group, &ids, args.json, bell, args.detach).await;
    }
    if args.detach {
        let (row, tasks) = crate::remote::rows(&job)?;
        super::status::print_job(&row, &tasks, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    watch_remote(&mut link, &job.id, job.tasks.len(), args.json, bell).await
}

/// A cross-repository job on a coordinator: each repository's job is followed until it ends
/// (in the order given; one that waits for others is simply still going), then the whole job
/// is printed as `grove status GROUP` does. Ctrl-C cancels the repositories not over.
async fn watch_group(
    link: &mut crate::remote::Link,
    group: &grove_core::JobId,
    ids: &[String],
    json: bool,
    bell: bool,
    detach: bool,
) -> anyhow::Result<ExitCode> {
    let mut cancelled = false;
    if !detach {
        for id in ids {
            let total = crate::remote::fetch_job(&mut link.client, id)
                .await
                .map_err(|s| crate::remote::status(&link.url, s))?
                .tasks
                .len();
            if follow_remote(link, id, total, bell).await? {
                cancelled = true;
                for other in ids {
                    let req = grove_proto::v1::GetJobRequest { id: other.clone(), ..Default::default() };
                    // Those over already refuse nothing: cancelling an ended job is a no-op there.
                    let _ = link.client.cancel_job(req).await;
                }
                break;
            }
        }
    }
    let mut members = Vec::new();
    for id in ids {
        let j = crate::remote::fetch_job(&mut link.client, id)
            .await
            .map_err(|s| crate::remote::status(&link.url, s))?;
        members.push(crate::remote::rows(&j)?);
    }
    members.sort_by_key(|(j, _)| j.repo.as_ref().map_or(0, |r| r.ord));
    super::status::print_group(group.as_str(), &members, json)?;
    let all = members.iter().flat_map(|(_, t)| t).all(|t| t.needs_nothing_more());
    Ok(if cancelled {
        ExitCode::from(130)
    } else if detach || all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Watch a job on the coordinator at `url` until it ends (progress on stderr; Ctrl-C cancels
/// it there), then print it as `grove status` does. `total` is how many tasks the progress
/// counts. The exit code is `grove run`'s; a coordinator that goes away is waited for (up to
/// `--reconnect-for`, then exit 3) and the watch resumes where it was, no note missed or shown
/// twice. `bell`: ring the terminal bell on what needs a person (the daemon sends the job's
/// other notifications).
pub(crate) async fn watch_remote(
    link: &mut crate::remote::Link,
    id: &str,
    total: usize,
    json: bool,
    bell: bool,
) -> anyhow::Result<ExitCode> {
    let cancelled = follow_remote(link, id, total, bell).await?;
    let job = link
        .call(|mut c| {
            let id = id.to_owned();
            async move { crate::remote::fetch_job(&mut c, &id).await }
        })
        .await?;
    let (row, tasks) = crate::remote::rows(&job)?;
    super::status::print_job(&row, &tasks, json)?;
    Ok(if cancelled {
        ExitCode::from(130)
    } else if tasks.iter().all(|t| t.needs_nothing_more()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Follow job `id` on the coordinator until it ends, with progress on stderr; returns whether
/// Ctrl-C cancelled it (there).
async fn follow_remote(
    link: &mut crate::remote::Link,
    id: &str,
    total: usize,
    bell: bool,
) -> anyhow::Result<bool> {
    use tokio_stream::StreamExt;
    let cancel = CancellationToken::new();
    crate::signal::install(cancel.clone());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let progress = tokio::spawn(crate::progress::show(rx, total, bell));
    let mut cancelled = false;
    let mut cancel_sent = false;
    // The last journaled note seen: a watch opened again resumes after it.
    let mut cursor: Option<u64> = None;
    'watching: loop {
        if cancelled && !cancel_sent {
            let req = grove_proto::v1::GetJobRequest { id: id.to_owned(), ..Default::default() };
            link.call(|mut c| {
                let req = req.clone();
                async move { c.cancel_job(req).await }
            })
            .await?;
            cancel_sent = true;
        }
        let req = grove_proto::v1::GetJobRequest { id: id.to_owned(), after: cursor, ..Default::default() };
        let mut notes = match link.client.watch_job(req).await {
            Ok(n) => n.into_inner(),
            Err(s) if crate::remote::transient(&s) => {
                link.again(s.message()).await?;
                continue;
            }
            Err(s) => return Err(crate::remote::status(&link.url, s)),
        };
        link.ok();
        // Notes can be missed (a note the coordinator died before journaling); the job's
        // state is the truth, so look at it now and then too.
        let mut check = tokio::time::interval(std::time::Duration::from_secs(3));
        let why = loop {
            tokio::select! {
                _ = check.tick() => {
                    match link.client.get_job(grove_proto::v1::GetJobRequest { id: id.to_owned(), ..Default::default() }).await {
                        Ok(now) if matches!(now.get_ref().state.as_str(), "done" | "cancelled" | "paused") => break 'watching,
                        Ok(_) => {}
                        Err(s) if crate::remote::transient(&s) => break s.message().to_owned(),
                        Err(s) => return Err(crate::remote::status(&link.url, s)),
                    }
                }
                n = notes.next() => match n {
                    Some(Ok(n)) => {
                        if n.seq > 0 {
                            cursor = Some(n.seq);
                        }
                        if let Some(n) = crate::remote::note(&n) { let _ = tx.send(n); }
                    }
                    Some(Err(s)) if crate::remote::transient(&s) => break s.message().to_owned(),
                    Some(Err(s)) => return Err(crate::remote::status(&link.url, s)),
                    // The stream ends when the job is over; or the coordinator is stopping.
                    None => break "the watch ended".to_owned(),
                },
                () = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    continue 'watching;
                }
            }
        };
        match link
            .client
            .get_job(grove_proto::v1::GetJobRequest { id: id.to_owned(), ..Default::default() })
            .await
        {
            Ok(now) if matches!(now.get_ref().state.as_str(), "done" | "cancelled" | "paused") => break,
            Ok(_) => {}
            Err(s) if !crate::remote::transient(&s) => return Err(crate::remote::status(&link.url, s)),
            Err(_) => {}
        }
        link.again(&why).await?;
    }
    drop(tx);
    let _ = progress.await;
    Ok(cancelled)
}

/// --job / --only / --failed: go on with an existing job.
async fn rerun(home: PathBuf, args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut emb = Embedded::open(home, args.nats()?).await?;
    emb.credentials(&args.agent_env)?;
    let coord = emb.coordinator.clone();
    let mut job = coord.store.job_or_latest(args.job.as_deref())?;
    // Budget flags change the job's budget (raising a spent one lets it go on); notify flags
    // its notifications.
    let mut spec = job.spec.clone();
    args.spec.apply_budget(&mut spec);
    args.spec.apply_notify(&mut spec)?;
    if spec.notify != job.spec.notify {
        spec.validate(None)?;
        coord.store.set_spec(&job.id, &spec)?;
        eprintln!("job {}: notifications changed for what happens from now on", job.id);
        job = coord.store.job(job.id.as_str())?;
    }
    if spec.budget != job.spec.budget {
        spec.validate(None)?;
        coord.store.set_spec(&job.id, &spec)?;
        let b = &spec.budget;
        let show = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), grove_core::usage::dollars);
        eprintln!(
            "job {}: budget now {} per task, {} for the job{}",
            job.id,
            show(b.task_usd),
            show(b.job_usd),
            b.task_tokens.map(|t| format!(", {t} tokens per task")).unwrap_or_default()
        );
        job = coord.store.job(job.id.as_str())?;
    }
    let which = if args.failed {
        Some(Rerun::Failed)
    } else if !args.only.is_empty() {
        Some(Rerun::Only(args.only.clone()))
    } else {
        None
    };
    if let Some(which) = which {
        let queued = tokio::task::block_in_place(|| coord.rerun(&job.id, &which))?;
        if queued.is_empty() {
            eprintln!("job {}: nothing to run again", job.id);
            return finish(&coord.store, &job, args.json, false);
        }
        eprintln!("job {}: running again from its base: {}", job.id, queued.join(", "));
    }
    let concurrency = args.workers(
        args.spec.concurrency.map_or_else(|| job.spec.concurrency() as usize, |c| c.max(1) as usize),
    );
    let (row, cancelled) = drive(&emb, &job.id, None, concurrency).await?;
    finish(&coord.store, &row, args.json, cancelled)
}

/// How long `grove run` waits at the end for notifications not tried yet.
const NOTIFY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Drive a job with `concurrency` embedded workers and progress; returns the job and whether it
/// was cancelled.
pub(crate) async fn drive(
    emb: &Embedded,
    job: &grove_core::JobId,
    only: Option<&BTreeSet<String>>,
    concurrency: usize,
) -> anyhow::Result<(JobRow, bool)> {
    let coord: &Coordinator = &emb.coordinator;
    let total = coord
        .store
        .tasks(job)?
        .iter()
        .filter(|t| !t.state.is_terminal() && only.is_none_or(|o| o.contains(&t.slug)))
        .count();
    let bell = coord.store.job(job.as_str())?.spec.notify.bell.unwrap_or(false);
    let (result, cancelled) = with_workers(emb, total, bell, concurrency, |notes, cancel| async move {
        coord.drive(job, only, cancel, notes).await
    })
    .await;
    Ok((result?, cancelled))
}

/// Run `body` with `concurrency` embedded workers, Ctrl-C cancelling, and progress over `total`
/// tasks; returns what it returned and whether it was cancelled. Notes are journaled and the
/// jobs' notifications sent as in the daemon (`journal::writer`); the ones not tried yet when
/// `body` ends get [`NOTIFY_GRACE`].
async fn with_workers<'a, T, E, F, Fut>(
    emb: &'a Embedded,
    total: usize,
    bell: bool,
    concurrency: usize,
    body: F,
) -> (Result<T, E>, bool)
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<grove_coordinator::Note>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>> + 'a,
{
    let cancel = CancellationToken::new();
    crate::signal::install(cancel.clone());
    let mut workers = emb.start_workers(concurrency, &cancel);
    let notifier = emb.notifier();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let notes =
        grove_coordinator::journal::writer(emb.coordinator.clone(), Some(notifier.clone()), move |j| {
            let _ = tx.send(j.note);
        });
    let progress = tokio::spawn(crate::progress::show(rx, total, bell));
    let result = body(notes, cancel.clone()).await;
    let cancelled = cancel.is_cancelled();
    cancel.cancel();
    while workers.join_next().await.is_some() {}
    // The progress ends when the journal's writer has taken every note (and the notifier
    // has queued what they make).
    let _ = progress.await;
    notifier.flush(NOTIFY_GRACE).await;
    (result, cancelled)
}

/// Ask whether to go on after the canary tasks.
fn go_on(ok: bool, yes: bool, job: &JobRow) -> anyhow::Result<bool> {
    let verdict = if ok { "all merged" } else { "not all merged (see grove status)" };
    if yes {
        eprintln!("canary: {verdict}; going on (--yes)");
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("canary: {verdict}; the rest waits. Go on with: grove run --job {}", job.id);
        return Ok(false);
    }
    eprint!("canary: {verdict}. Run the remaining tasks? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let go = matches!(answer.trim(), "y" | "Y" | "yes");
    if !go {
        eprintln!("the rest waits. Go on later with: grove run --job {}", job.id);
    }
    Ok(go)
}

/// Print the job and pick the exit code.
pub(crate) fn finish(store: &Store, row: &JobRow, json: bool, cancelled: bool) -> anyhow::Result<ExitCode> {
    let tasks = store.tasks(&row.id)?;
    super::status::print_job(row, &tasks, json)?;
    if !json {
        println!();
        println!("  grove status {}        # again, later", row.id);
        println!("  grove diff {}/TASK     # review one task's branch", row.id);
        println!("  grove logs {}/TASK     # what its agent printed", row.id);
        if row.spec.merge_mode() == grove_core::spec::MergeMode::Manual && !row.train.approved {
            println!("  grove merge {}         # merge the checked branches, in order", row.id);
        }
        if tasks.iter().any(|t| t.train.variant_of.is_some() && !t.merge_state.is_settled()) {
            println!("  grove compare TASK; grove pick TASK VARIANT   # keep one variant");
        }
        println!("  grove discard {}/TASK  # throw a task's worktree and branch away", row.id);
        println!("  grove push {}          # push the integration branch to origin", row.id);
        if let Some(dir) = &row.source_dir {
            println!("  git -C {dir} log --oneline {}", row.integration_branch);
        }
    }
    Ok(if cancelled {
        ExitCode::from(130)
    } else if tasks.iter().all(|t| t.needs_nothing_more()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
