//! Agents: what runs in a task's workspace for one turn. `replace` is builtin (a regex rewrite
//! of the task's files, deterministic, for codemods and tests); `command` runs any program,
//! its arguments filled in from the task.

use std::path::Path;
use std::time::Instant;

use grove_core::spec::{AgentKind, AgentSpec};
use tokio_util::sync::CancellationToken;

use crate::process::{self, End, Finished, Log, ProcessError};

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
    }
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
        let n = re.find_iter(&bytes).count();
        if n == 0 {
            continue;
        }
        let out = re.replace_all(&bytes, with.as_bytes());
        if out.as_ref() != bytes.as_slice() {
            if let Err(e) = tokio::fs::write(&path, out.as_ref()).await {
                log.note(&format!("replace: cannot write {f}: {e}")).await?;
                return Ok(Finished { end: End::Exited(1), tail: log.tail(), duration: started.elapsed() });
            }
            changed += 1;
            hits += n;
            log.write(format!("{f}: {n} replacement(s)\n").as_bytes()).await?;
        }
    }
    log.note(&format!("replace: {hits} replacement(s) in {changed} of {} file(s)", turn.files.len())).await?;
    log.flush().await?;
    Ok(Finished { end: End::Exited(0), tail: log.tail(), duration: started.elapsed() })
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
