//! Agents: what runs in a task's workspace for one turn. `replace` is builtin (a regex rewrite
//! of the task's files, deterministic, for codemods and tests); `command` runs any program,
//! its arguments filled in from the task; the CLI kinds (`claude`, `codex`...) run an agent CLI
//! through its adapter ([`crate::adapter`]), whose output is read as it streams
//! ([`run_cli_turn`]).

use std::path::Path;
use std::time::Instant;

use grove_core::spec::{AgentKind, AgentSpec};
use grove_core::usage::{Budget, TurnOutcome, TurnReport, Usage};
use tokio_util::sync::CancellationToken;

use crate::adapter::{self, Plan, Prices};
use crate::process::{self, End, Finished, Log, ProcessError, Stream};

/// What one turn is given.
pub struct Turn<'a> {
    pub agent: &'a AgentSpec,
    pub workdir: &'a Path,
    /// The task's files, repository-relative.
    pub files: &'a [String],
    pub prompt: &'a str,
    /// The task's slug (`{task}`).
    pub task: &'a str,
    /// The task's scope for people and templates (`{scope}`): its folders, space-separated.
    pub scope: &'a str,
    /// GROVE_* variables and the agent's own `env`.
    pub env: Vec<(String, String)>,
    pub timeout: std::time::Duration,
}

/// Run one turn of the agent.
pub async fn run_turn(
    turn: &Turn<'_>,
    log: &mut Log,
    cancel: &CancellationToken,
) -> Result<Finished, ProcessError> {
    match turn.agent.kind {
        Some(AgentKind::Command) => {
            let argv: Vec<String> = turn.agent.command.iter().map(|a| fill(a, turn)).collect();
            let Some((program, args)) = argv.split_first() else {
                return Err(ProcessError::Spawn {
                    program: String::new(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty agent command"),
                });
            };
            let mut env = turn.env.clone();
            env.extend(turn.agent.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            process::run(program, args, turn.workdir, &env, turn.timeout, log, cancel).await
        }
        Some(AgentKind::Replace) | None => replace(turn, log).await,
        Some(kind) => {
            // The CLI kinds run through `run_cli_turn`; this is their bare form, without a
            // session or a budget (a prompt as given, output to the log).
            let plan = Plan {
                kind,
                program: turn.agent.program.as_deref(),
                model: turn.agent.model.as_deref(),
                args: &fill_all(&turn.agent.args, turn),
                prompt: turn.prompt,
                resume: None,
                workdir: turn.workdir,
                run_dir: turn.workdir,
                usd_left: None,
                as_root: running_as_root(),
                persona: None,
            };
            let cli = run_cli_turn(
                turn,
                &plan,
                &Budget::default(),
                &Usage::zero(),
                Prices::new(&Default::default()),
                log,
                cancel,
            )
            .await?;
            Ok(cli.finished)
        }
    }
}

/// What one turn of a CLI adapter did.
pub struct CliTurn {
    pub finished: Finished,
    /// What the adapter read from the CLI's output.
    pub report: TurnReport,
    /// The CLI could not find the session it was told to resume.
    pub resume_failed: bool,
}

/// Run one turn of a CLI adapter: its command line, its output read line by line as it
/// streams. When what the stream shows (with `spent`, what the attempt spent before this turn)
/// goes over `budget`, the CLI is stopped at once and the turn ends as a budget failure.
#[allow(clippy::too_many_arguments)] // the turn, its plan, its money, its output, its stop
pub async fn run_cli_turn(
    turn: &Turn<'_>,
    plan: &Plan<'_>,
    budget: &Budget,
    spent: &Usage,
    prices: Prices,
    log: &mut Log,
    cancel: &CancellationToken,
) -> Result<CliTurn, ProcessError> {
    let inv = adapter::invocation(plan);
    for n in &inv.notes {
        log.note(n).await?;
    }
    let mut parser = adapter::parser(plan, prices);
    let stop = cancel.child_token();
    let mut over: Option<String> = None;
    let mut env = turn.env.clone();
    env.extend(turn.agent.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(inv.env.iter().cloned());
    let finished = {
        let mut hook = |s: Stream, line: &str| {
            parser.line(s, line);
            if over.is_none()
                && !budget.is_empty()
                && let Some(why) = budget.exceeded(&spent.add(&parser.spent()))
            {
                over = Some(why);
                stop.cancel();
            }
        };
        process::run_streaming(
            &inv.program,
            &inv.args,
            turn.workdir,
            &env,
            turn.timeout,
            log,
            &stop,
            Some(&mut hook),
        )
        .await?
    };
    if let Some(why) = &over {
        // Said in the log: the turn was cut short by grove, not ended by the CLI.
        log.note(&format!("{why}: the agent was stopped mid-turn")).await?;
    }
    let mut report = parser.finish(&finished.end, &finished.tail, unix_now());
    if over.is_none() && !budget.is_empty() {
        // The turn's last figures (the CLI's own cost at its end) may put it over, too.
        over = budget.exceeded(&spent.add(&report.usage));
    }
    let resume_failed = parser.resume_failed();
    if let Some(why) = over {
        report.outcome = TurnOutcome::Budget(why);
    }
    Ok(CliTurn { finished, report, resume_failed })
}

/// Whether this process runs as root (Claude Code refuses to skip its permission prompts then).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Every argument with `{prompt}`, `{scope}` and `{task}` filled in.
pub fn fill_all(args: &[String], turn: &Turn<'_>) -> Vec<String> {
    args.iter().map(|a| fill(a, turn)).collect()
}

/// Fill `{prompt}`, `{scope}` and `{task}` into one argument.
fn fill(arg: &str, turn: &Turn<'_>) -> String {
    arg.replace("{prompt}", turn.prompt).replace("{scope}", turn.scope).replace("{task}", turn.task)
}

/// The builtin rewrite: apply `pattern` → `replace` to every regular file of the task that is
/// in the workspace. Symlinks are never followed or written.
async fn replace(turn: &Turn<'_>, log: &mut Log) -> Result<Finished, ProcessError> {
    let started = Instant::now();
    let (Some(pattern), Some(with)) = (&turn.agent.pattern, &turn.agent.replace) else {
        log.note("replace: no pattern or replacement given").await?;
        return Ok(Finished { end: End::Exited(2), tail: log.tail(), duration: started.elapsed() });
    };
    let re = match regex::bytes::Regex::new(pattern) {
        Ok(re) => re,
        Err(e) => {
            log.note(&format!("replace: invalid pattern: {e}")).await?;
            return Ok(Finished { end: End::Exited(2), tail: log.tail(), duration: started.elapsed() });
        }
    };
    let (mut changed, mut hits) = (0usize, 0usize);
    for f in turn.files {
        let path = grove_git::worktree::file_path(turn.workdir, f);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.file_type().is_file() => {}
            _ => continue,
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                log.note(&format!("replace: cannot read {f}: {e}")).await?;
                return Ok(Finished { end: End::Exited(1), tail: log.tail(), duration: started.elapsed() });
            }
        };
        let Some((out, n)) = rewrite_bytes(&re, with.as_bytes(), &bytes) else { continue };
        if let Err(e) = tokio::fs::write(&path, &out).await {
            log.note(&format!("replace: cannot write {f}: {e}")).await?;
            return Ok(Finished { end: End::Exited(1), tail: log.tail(), duration: started.elapsed() });
        }
        changed += 1;
        hits += n;
        log.write(replaced_line(f, n).as_bytes()).await?;
    }
    log.note(&replace_summary(hits, changed, turn.files.len())).await?;
    log.flush().await?;
    Ok(Finished { end: End::Exited(0), tail: log.tail(), duration: started.elapsed() })
}

/// The builtin rewrite of one file's bytes: the new bytes and the number of matches, or `None`
/// when nothing matched or the replacement left the bytes as they were.
pub fn rewrite_bytes(re: &regex::bytes::Regex, with: &[u8], bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let n = re.find_iter(bytes).count();
    if n == 0 {
        return None;
    }
    let out = re.replace_all(bytes, with);
    (out.as_ref() != bytes).then(|| (out.into_owned(), n))
}

/// The log line of one file the builtin rewrite changed.
pub fn replaced_line(file: &str, n: usize) -> String {
    format!("{file}: {n} replacement(s)\n")
}

/// The builtin rewrite's closing note.
pub fn replace_summary(hits: usize, changed: usize, files: usize) -> String {
    format!("replace: {hits} replacement(s) in {changed} of {files} file(s)")
}

/// The builtin rewrite's regex, when the agent is `replace` with a pattern that compiles and a
/// replacement: what a turn can run without a checkout ([`crate::direct`]).
pub fn replacer(agent: &AgentSpec) -> Option<(regex::bytes::Regex, Vec<u8>)> {
    if !matches!(agent.kind, Some(AgentKind::Replace) | None) {
        return None;
    }
    let (Some(pattern), Some(with)) = (&agent.pattern, &agent.replace) else { return None };
    let re = regex::bytes::Regex::new(pattern).ok()?;
    Some((re, with.clone().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replace_rewrites_only_task_files_and_skips_symlinks() {
        let d = tempfile::tempdir().expect("tmp");
        let wt = d.path().join("wt");
        std::fs::create_dir_all(wt.join("a")).expect("mkdir");
        std::fs::write(wt.join("a/x.rs"), "use FileId; // FileIdx\n").expect("write");
        std::fs::write(wt.join("a/y.rs"), "FileId\n").expect("write");
        std::fs::write(d.path().join("outside.rs"), "FileId\n").expect("write");
        std::os::unix::fs::symlink(d.path().join("outside.rs"), wt.join("a/link.rs")).expect("symlink");
        let agent = AgentSpec {
            kind: Some(AgentKind::Replace),
            pattern: Some(r"\bFileId\b".into()),
            replace: Some("SourceFileId".into()),
            ..AgentSpec::default()
        };
        let files = vec!["a/x.rs".to_owned(), "a/link.rs".to_owned(), "a/gone.rs".to_owned()];
        let turn = Turn {
            agent: &agent,
            workdir: &wt,
            files: &files,
            prompt: "",
            task: "a",
            scope: "a",
            env: vec![],
            timeout: std::time::Duration::from_secs(5),
        };
        let mut log = Log::open(&d.path().join("log"), 1 << 20).await.expect("log");
        let f = run_turn(&turn, &mut log, &CancellationToken::new()).await.expect("turn");
        assert_eq!(f.end, End::Exited(0));
        assert_eq!(std::fs::read_to_string(wt.join("a/x.rs")).expect("r"), "use SourceFileId; // FileIdx\n");
        assert_eq!(std::fs::read_to_string(wt.join("a/y.rs")).expect("r"), "FileId\n", "not a task file");
        assert_eq!(std::fs::read_to_string(d.path().join("outside.rs")).expect("r"), "FileId\n");
        assert!(f.tail.contains("1 replacement(s) in 1 of 3 file(s)"), "{}", f.tail);
    }

    #[tokio::test]
    async fn command_arguments_are_filled_in() {
        let d = tempfile::tempdir().expect("tmp");
        let agent = AgentSpec {
            kind: Some(AgentKind::Command),
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo \"$0|$GROVE_TASK\"".into(),
                "{task}:{scope}:{prompt}".into(),
            ],
            ..AgentSpec::default()
        };
        let turn = Turn {
            agent: &agent,
            workdir: d.path(),
            files: &[],
            prompt: "do it",
            task: "core",
            scope: "crates/core",
            env: vec![("GROVE_TASK".into(), "core".into())],
            timeout: std::time::Duration::from_secs(5),
        };
        let mut log = Log::open(&d.path().join("log"), 1 << 20).await.expect("log");
        let f = run_turn(&turn, &mut log, &CancellationToken::new()).await.expect("turn");
        assert_eq!(f.end, End::Exited(0));
        assert_eq!(f.tail, "core:crates/core:do it|core");
    }
}
