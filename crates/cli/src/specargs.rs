//! The job spec from a file and flags: the file first, then each flag given overrides its
//! field. Every field of the spec has a flag.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use grove_core::spec::{
    AgentKind, JobSpec, KeepWorktrees, MergeMode, OnConflict, Pick, SplitRule, VariantSpec, parse_duration,
};

#[derive(Args, Debug, Clone, Default)]
pub struct SpecArgs {
    /// The job spec (TOML); see examples/job.toml. Flags override its fields.
    pub spec: Option<PathBuf>,

    /// The repository: a path or a git URL [repo.source]; repeated, the repositories of a
    /// job that changes several [[[repos]] source]
    #[arg(long, value_name = "PATH|URL", help_heading = "Job")]
    pub repo: Vec<String>,
    /// The repositories of the job, one path or URL per line (`#` comments) [[[repos]] source]
    #[arg(long, value_name = "FILE", help_heading = "Job")]
    pub repos_from: Option<PathBuf>,
    /// The commit tasks start from [repo.base; default HEAD]
    #[arg(long, value_name = "REV", help_heading = "Job")]
    pub base: Option<String>,
    /// A short name for the job [name]
    #[arg(long, help_heading = "Job")]
    pub name: Option<String>,
    /// What the agent is asked to do [prompt]
    #[arg(long, help_heading = "Job")]
    pub prompt: Option<String>,

    /// Only files matching this glob (repeatable) [select.include]
    #[arg(long, value_name = "GLOB", help_heading = "Selection")]
    pub include: Vec<String>,
    /// Leave out files matching this glob (repeatable) [select.exclude]
    #[arg(long, value_name = "GLOB", help_heading = "Selection")]
    pub exclude: Vec<String>,
    /// Only files whose content matches this regex [select.grep]
    #[arg(long, value_name = "REGEX", help_heading = "Selection")]
    pub grep: Option<String>,
    /// Only these files (repeatable) [select.files]
    #[arg(long = "file", value_name = "PATH", help_heading = "Selection")]
    pub files: Vec<String>,
    /// Only the files listed in FILE, one a line; `-` reads standard input [select.files]
    #[arg(long, value_name = "FILE", help_heading = "Selection")]
    pub files_from: Option<PathBuf>,

    /// How to split into tasks: auto, dirs, cargo, npm, go, python, maven, gradle, codeowners, single [split.rule]
    #[arg(long, value_name = "RULE", help_heading = "Split")]
    pub split: Option<SplitRule>,
    /// Folder depth for --split dirs [split.depth]
    #[arg(long, help_heading = "Split")]
    pub depth: Option<u32>,
    /// Largest number of files per task [split.max_files]
    #[arg(long, help_heading = "Split")]
    pub max_files: Option<u32>,
    /// Largest number of lines per task [split.max_lines]
    #[arg(long, help_heading = "Split")]
    pub max_lines: Option<u64>,
    /// Largest number of tasks [split.max_tasks]
    #[arg(long, help_heading = "Split")]
    pub max_tasks: Option<u32>,

    /// The agent: replace (builtin regex rewrite), command (any program), or an agent CLI:
    /// claude, codex, copilot, gemini, aider, opencode [agent.kind]
    #[arg(long, value_name = "KIND", help_heading = "Agent")]
    pub agent: Option<AgentKind>,
    /// For an agent CLI: the model, as the CLI names it [agent.model]
    #[arg(long, value_name = "MODEL", help_heading = "Agent")]
    pub model: Option<String>,
    /// For an agent CLI: its executable, when not the usual name on PATH [agent.program]
    #[arg(long, value_name = "PATH", help_heading = "Agent")]
    pub agent_program: Option<String>,
    /// For --agent replace: the regex to find [agent.pattern]
    #[arg(long, value_name = "REGEX", help_heading = "Agent")]
    pub pattern: Option<String>,
    /// For --agent replace: the replacement ($1 for groups) [agent.replace]
    #[arg(long, value_name = "TEXT", help_heading = "Agent")]
    pub replace: Option<String>,
    /// How long a turn may run [agent.turn_timeout; default 30m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Agent")]
    pub turn_timeout: Option<std::time::Duration>,
    /// Turns per task while its check fails [agent.max_turns; default 1]
    #[arg(long, help_heading = "Agent")]
    pub max_turns: Option<u32>,
    /// Run as a repository-defined agent: NAME of .github/agents/NAME.agent.md or
    /// .claude/agents/NAME.md at the base commit (see `grove agents`) [agent.custom]
    #[arg(long, value_name = "NAME", help_heading = "Agent")]
    pub custom_agent: Option<String>,
    /// For --agent command: the program and its arguments, after `--`; for an agent CLI: extra
    /// arguments for it. {prompt}, {scope} and {task} are filled in [agent.command, agent.args]
    #[arg(last = true, value_name = "COMMAND", help_heading = "Agent")]
    pub command: Vec<String>,

    /// Dollars one task may spend on its agent, over all its turns; over it the task is
    /// stopped, its work committed, and failed [budget.task_usd]
    #[arg(long, value_name = "USD", help_heading = "Budget")]
    pub max_task_cost: Option<f64>,
    /// Dollars the whole job may spend; over it nothing more is dispatched (raise it with
    /// `grove run --job JOB --max-job-cost USD`) [budget.job_usd]
    #[arg(long, value_name = "USD", help_heading = "Budget")]
    pub max_job_cost: Option<f64>,
    /// Tokens one task may use, of every kind [budget.task_tokens]
    #[arg(long, value_name = "N", help_heading = "Budget")]
    pub max_task_tokens: Option<u64>,

    /// Tasks at once [run.concurrency; default 4]
    #[arg(long, short = 'j', help_heading = "Run")]
    pub concurrency: Option<u32>,
    /// Copy these git-ignored files into workspaces (repeatable, gitignore style) [run.include_ignored]
    #[arg(long, value_name = "PATTERN", help_heading = "Run")]
    pub include_ignored: Vec<String>,
    /// Which worktrees to keep: none, failed, all [run.keep_worktrees; default failed]
    #[arg(long, value_name = "POLICY", help_heading = "Run")]
    pub keep_worktrees: Option<KeepWorktrees>,
    /// A task's wall-clock budget from its first dispatch, across attempts, e.g. 10h; past it
    /// the task is stopped and failed [run.deadline; default none]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Run")]
    pub deadline: Option<std::time::Duration>,
    /// Attempts per task for failures that are not the job's verdict (workspace, push, lost
    /// worker) [run.max_attempts; default 3]
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub max_attempts: Option<u32>,
    /// The wait before a task's second attempt, doubled for each further one, at most 10m
    /// [run.retry_backoff; default 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Run")]
    pub retry_backoff: Option<std::time::Duration>,
    /// Times a task may be parked on a usage limit before the next limit fails it
    /// [run.max_parks; default 10]
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub max_parks: Option<u32>,
    /// The most time a task may spend parked in all, e.g. 2d [run.max_parked; default 7d]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Run")]
    pub max_parked: Option<std::time::Duration>,
    /// The pool tasks run in: local, cloud, a named pool, or auto (by --local-max,
    /// --expected, --cloud-lines) [run.pool; default local]
    #[arg(long, value_name = "POOL", help_heading = "Placement")]
    pub pool: Option<String>,
    /// With --pool auto: tasks placed local at once, at most; the rest overflow to cloud
    /// [placement.local_max; default the concurrency]
    #[arg(long, value_name = "N", help_heading = "Placement")]
    pub local_max: Option<u32>,
    /// With --pool auto: how long a task is expected to take, e.g. 8h; at least
    /// placement.long (2h) goes to cloud [placement.expected]
    #[arg(long, value_name = "DURATION", value_parser = grove_core::spec::parse_duration, help_heading = "Placement")]
    pub expected: Option<std::time::Duration>,
    /// With --pool auto: tasks with more lines in scope go to cloud [placement.cloud_lines]
    #[arg(long, value_name = "LINES", help_heading = "Placement")]
    pub cloud_lines: Option<u64>,
    /// A shell command run in each workspace after the agent; failing fails the task [checks.task]
    #[arg(long, value_name = "SHELL", help_heading = "Run")]
    pub check: Option<String>,
    /// The integration branch; {job} is the job id [merge.branch; default grove/{job}/integration]
    #[arg(long, value_name = "NAME", help_heading = "Merge")]
    pub branch: Option<String>,
    /// How branches go in: merge (a merge commit each), squash, or manual (wait for
    /// `grove merge`) [merge.mode; default merge]
    #[arg(long, value_name = "MODE", help_heading = "Merge")]
    pub merge_mode: Option<MergeMode>,
    /// A conflicting branch: redo (again on the integration head), attention (set aside) or
    /// abort (stop merging) [merge.on_conflict; default redo]
    #[arg(long, value_name = "POLICY", help_heading = "Merge")]
    pub on_conflict: Option<OnConflict>,
    /// Redos per task after conflicts [merge.max_redos; default 2]
    #[arg(long, value_name = "N", help_heading = "Merge")]
    pub max_redos: Option<u32>,
    /// Merges per run of the integration check; a failing batch is bisected [merge.batch; default 1]
    #[arg(long, value_name = "K", help_heading = "Merge")]
    pub batch: Option<u32>,
    /// A shell command run on the integration result; a merge that breaks it is set aside
    /// [checks.integration]
    #[arg(long, value_name = "SHELL", help_heading = "Merge")]
    pub integration_check: Option<String>,
    /// A variant of every task running SHELL with `sh -c` (repeatable; other agents: [[variants]]
    /// in the spec) [variants]
    #[arg(long = "variant", value_name = "NAME=SHELL", value_parser = parse_variant, help_heading = "Variants")]
    pub variants: Vec<(String, String)>,
    /// Which variant merges: first-passing, smallest-diff or manual (`grove pick`)
    /// [merge.pick; default first-passing]
    #[arg(long, value_name = "RULE", help_heading = "Variants")]
    pub pick: Option<Pick>,

    /// POST each notification (a task needs attention, a task failed, the job finished) to
    /// URL as JSON, Slack- and Discord-compatible (`text`, `content`) [notify.webhook]
    #[arg(long, value_name = "URL", help_heading = "Notify")]
    pub notify_webhook: Option<String>,
    /// POST each notification's summary to this ntfy topic [notify.ntfy]
    #[arg(long, value_name = "TOPIC", help_heading = "Notify")]
    pub notify_ntfy: Option<String>,
    /// The ntfy server [notify.ntfy_server; default https://ntfy.sh]
    #[arg(long, value_name = "URL", help_heading = "Notify")]
    pub notify_ntfy_server: Option<String>,
    /// Run CMD with each notification as one JSON object on stdin; split into words as a
    /// shell would, but no shell runs it unless you say so: 'sh -c "jq -r .text >> log"'
    /// [notify.command]
    #[arg(long, value_name = "CMD", help_heading = "Notify")]
    pub notify_command: Option<String>,
    /// Ring the terminal bell when a task needs attention or fails and when the job ends
    /// (when stderr is a terminal) [notify.bell]
    #[arg(long, help_heading = "Notify")]
    pub notify_bell: bool,
}

fn parse_variant(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, shell)) if !name.is_empty() && !shell.trim().is_empty() => {
            Ok((name.to_owned(), shell.to_owned()))
        }
        _ => Err(format!("{s:?} is not NAME=SHELL (for example fast='sed -i s/a/b/ f.txt')")),
    }
}

/// A spec ready to validate, and its file's name and text for error locations.
pub struct Loaded {
    pub spec: JobSpec,
    pub file: Option<(String, String)>,
    /// The folder relative paths in the spec are read from.
    pub dir: PathBuf,
}

impl SpecArgs {
    /// The budget flags given, over `spec`'s `[budget]`.
    pub fn apply_budget(&self, spec: &mut JobSpec) {
        spec.budget.task_usd = self.max_task_cost.or(spec.budget.task_usd);
        spec.budget.job_usd = self.max_job_cost.or(spec.budget.job_usd);
        spec.budget.task_tokens = self.max_task_tokens.or(spec.budget.task_tokens);
    }

    /// The `--notify-*` flags given, over `spec`'s `[notify]`.
    pub fn apply_notify(&self, spec: &mut JobSpec) -> anyhow::Result<()> {
        let n = &mut spec.notify;
        n.webhook = self.notify_webhook.clone().or(n.webhook.take());
        n.ntfy = self.notify_ntfy.clone().or(n.ntfy.take());
        n.ntfy_server = self.notify_ntfy_server.clone().or(n.ntfy_server.take());
        if let Some(cmd) = &self.notify_command {
            let words = shlex::split(cmd)
                .with_context(|| format!("--notify-command {cmd:?}: unbalanced quotes (notify.command)"))?;
            n.command = Some(words);
        }
        if self.notify_bell {
            n.bell = Some(true);
        }
        Ok(())
    }

    pub fn load(&self, cwd: &Path) -> anyhow::Result<Loaded> {
        let (mut spec, file, dir) = match &self.spec {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the job spec {}", path.display()))?;
                let name = path.display().to_string();
                let spec = JobSpec::from_toml(&name, &text)?;
                // Paths in a spec file are relative to the file's folder.
                let dir = path.parent().map(|p| cwd.join(p)).unwrap_or_else(|| cwd.to_path_buf());
                (spec, Some((name, text)), dir)
            }
            None => (JobSpec::default(), None, cwd.to_path_buf()),
        };
        // A flag given on the command line is relative to where grove runs.
        let dir = if self.repo.len() == 1 { cwd.to_path_buf() } else { dir };
        let set = |field: &mut Option<String>, v: &Option<String>| {
            if v.is_some() {
                field.clone_from(v);
            }
        };
        let mut sources = self.repo.clone();
        if let Some(list) = &self.repos_from {
            let text = std::fs::read_to_string(list)
                .with_context(|| format!("reading the repository list {} (--repos-from)", list.display()))?;
            sources.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        match sources.as_slice() {
            [] => {}
            [one] if self.repos_from.is_none() && spec.repos.is_empty() => {
                spec.repo.source = Some(one.clone())
            }
            many => {
                // Several: paths from the command line or the list are relative to where grove
                // runs, whatever folder the spec file is in.
                spec.repo.source = None;
                spec.repos = many
                    .iter()
                    .map(|s| grove_core::spec::RepoEntry { source: absolute(cwd, s), ..Default::default() })
                    .collect();
            }
        }
        set(&mut spec.repo.base, &self.base);
        set(&mut spec.name, &self.name);
        set(&mut spec.prompt, &self.prompt);
        if !self.include.is_empty() {
            spec.select.include.clone_from(&self.include);
        }
        if !self.exclude.is_empty() {
            spec.select.exclude.clone_from(&self.exclude);
        }
        set(&mut spec.select.grep, &self.grep);
        if !self.files.is_empty() {
            spec.select.files.clone_from(&self.files);
        }
        if let Some(list) = &self.files_from {
            let text = if list.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the file list from standard input")?
            } else {
                std::fs::read_to_string(list)
                    .with_context(|| format!("reading the file list {}", list.display()))?
            };
            spec.select.files.extend(
                text.lines()
                    .map(|l| l.trim().trim_start_matches("./"))
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        if let Some(r) = self.split {
            spec.split.rule = r;
        }
        if let Some(d) = self.depth {
            spec.split.depth = d;
        }
        spec.split.max_files = self.max_files.or(spec.split.max_files);
        spec.split.max_lines = self.max_lines.or(spec.split.max_lines);
        spec.split.max_tasks = self.max_tasks.or(spec.split.max_tasks);
        if self.agent.is_some() {
            spec.agent.kind = self.agent;
        }
        set(&mut spec.agent.pattern, &self.pattern);
        set(&mut spec.agent.replace, &self.replace);
        set(&mut spec.agent.model, &self.model);
        set(&mut spec.agent.program, &self.agent_program);
        if !self.command.is_empty() {
            // After `--`: an agent CLI's extra arguments, else the command to run.
            if spec.agent.kind.is_some_and(AgentKind::is_cli) {
                spec.agent.args.clone_from(&self.command);
            } else {
                spec.agent.command.clone_from(&self.command);
                spec.agent.kind.get_or_insert(AgentKind::Command);
            }
        }
        self.apply_budget(&mut spec);
        spec.agent.turn_timeout = self.turn_timeout.or(spec.agent.turn_timeout);
        spec.agent.max_turns = self.max_turns.or(spec.agent.max_turns);
        spec.agent.custom = self.custom_agent.clone().or(spec.agent.custom);
        spec.run.concurrency = self.concurrency.or(spec.run.concurrency);
        if !self.include_ignored.is_empty() {
            spec.run.include_ignored.clone_from(&self.include_ignored);
        }
        spec.run.keep_worktrees = self.keep_worktrees.or(spec.run.keep_worktrees);
        spec.run.deadline = self.deadline.or(spec.run.deadline);
        spec.run.max_attempts = self.max_attempts.or(spec.run.max_attempts);
        spec.run.retry_backoff = self.retry_backoff.or(spec.run.retry_backoff);
        spec.run.max_parks = self.max_parks.or(spec.run.max_parks);
        spec.run.max_parked = self.max_parked.or(spec.run.max_parked);
        set(&mut spec.checks.task, &self.check);
        set(&mut spec.run.pool, &self.pool);
        spec.placement.local_max = self.local_max.or(spec.placement.local_max);
        spec.placement.expected = self.expected.or(spec.placement.expected);
        spec.placement.cloud_lines = self.cloud_lines.or(spec.placement.cloud_lines);
        set(&mut spec.merge.branch, &self.branch);
        spec.merge.mode = self.merge_mode.or(spec.merge.mode);
        spec.merge.on_conflict = self.on_conflict.or(spec.merge.on_conflict);
        spec.merge.max_redos = self.max_redos.or(spec.merge.max_redos);
        spec.merge.batch = self.batch.or(spec.merge.batch);
        set(&mut spec.checks.integration, &self.integration_check);
        if !self.variants.is_empty() {
            spec.variants = self
                .variants
                .iter()
                .map(|(name, shell)| VariantSpec {
                    name: name.clone(),
                    kind: Some(AgentKind::Command),
                    command: vec!["sh".into(), "-c".into(), shell.clone()],
                    ..VariantSpec::default()
                })
                .collect();
        }
        spec.merge.pick = self.pick.or(spec.merge.pick);
        self.apply_notify(&mut spec)?;
        if spec.repo.source.is_none() && spec.repos.is_empty() {
            spec.repo.source = Some(".".into());
        }
        Ok(Loaded { spec, file, dir })
    }
}

/// `s` as given when it is a URL or absolute, else joined to `cwd`.
fn absolute(cwd: &Path, s: &str) -> String {
    if grove_git::Source::is_url(s) || Path::new(s).is_absolute() {
        s.to_owned()
    } else {
        cwd.join(s).display().to_string()
    }
}
