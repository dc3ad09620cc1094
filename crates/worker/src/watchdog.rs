//! Agents do not outlive the process that runs them, even when it is killed with SIGKILL.
//!
//! Each agent runs in its own process group, which the worker kills when the attempt ends,
//! times out or is cancelled. A worker killed outright cannot do that, and its agents would
//! go on changing a workspace while the task is redelivered to another worker. So the first
//! agent a process starts also starts a watchdog: a small `sh` in a process group of its own
//! that ignores INT/TERM/HUP and reads, on a pipe only this process holds, `+PGID` when a
//! group starts and `-PGID` when it is gone. When the pipe closes (the process ended, however
//! it ended), the watchdog sends SIGTERM to the groups still listed and SIGKILL 2s later, the
//! same grace an agent gets when it is cancelled. (PR_SET_PDEATHSIG would be Linux-only,
//! tied to the spawning thread, and reach only the group's leader.)

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The watchdog: POSIX sh. The group list is " PGID PGID ... " with a space on each side of
/// every entry, so removal is two pattern expansions and no other process.
const SCRIPT: &str = r#"trap '' INT TERM HUP
groups=" "
while IFS= read -r line; do
  case $line in
    +*) groups="$groups${line#+} " ;;
    -*) g=${line#-}
        case $groups in *" $g "*) groups="${groups%% $g *} ${groups#* $g }" ;; esac ;;
  esac
done
[ "$groups" = " " ] && exit 0
for g in $groups; do kill -TERM "-$g" 2>/dev/null; done
sleep 2
for g in $groups; do kill -KILL "-$g" 2>/dev/null; done
"#;

struct Watchdog {
    stdin: ChildStdin,
    /// Kept so the handle is not dropped; the watchdog is reaped when this process ends.
    _child: Child,
}

static WATCHDOG: OnceLock<Mutex<Option<Watchdog>>> = OnceLock::new();

fn start() -> Option<Watchdog> {
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: a Ctrl-C or a kill of this process's group does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| tracing::warn!("cannot start the agents' watchdog (sh): {e}"))
        .ok()?;
    // std makes the pipe close-on-exec: no agent inherits the write end and keeps it open.
    let stdin = child.stdin.take()?;
    Some(Watchdog { stdin, _child: child })
}

fn send(line: String) {
    let cell = WATCHDOG.get_or_init(|| Mutex::new(start()));
    let Ok(mut guard) = cell.lock() else { return };
    if let Some(w) = guard.as_mut()
        && let Err(e) = w.stdin.write_all(line.as_bytes())
    {
        tracing::warn!("the agents' watchdog is gone ({e}); agents may outlive a killed worker");
        *guard = None;
    }
}

/// A process group the watchdog kills if this process ends before it is released.
#[derive(Debug)]
pub struct Watched(u32);

impl Watched {
    /// Watch the group `pgid` (an agent's, just started).
    pub fn new(pgid: u32) -> Watched {
        send(format!("+{pgid}\n"));
        Watched(pgid)
    }
}

impl Drop for Watched {
    /// The run is over (or was dropped half-way): no member of the group may stay behind, and
    /// the watchdog forgets it.
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0) {
            // ESRCH: the group is already gone, as it is after a run that ended normally.
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
        send(format!("-{}\n", self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn group() -> Child {
        Command::new("sleep").arg("30").process_group(0).spawn().expect("sleep")
    }

    /// The script itself: of the groups it was told about, it ends the ones not released once
    /// its pipe closes, and leaves the released one alone.
    #[test]
    fn the_watchdog_ends_the_groups_still_listed_when_its_pipe_closes() {
        let (mut kept, mut released, mut other) = (group(), group(), group());
        let mut dog = Command::new("sh").args(["-c", SCRIPT]).stdin(Stdio::piped()).spawn().expect("sh");
        let mut stdin = dog.stdin.take().expect("stdin");
        let lines = format!("+{}\n+{}\n+{}\n-{}\n", kept.id(), released.id(), other.id(), released.id());
        stdin.write_all(lines.as_bytes()).expect("write");
        drop(stdin);
        let started = Instant::now();
        let status = dog.wait().expect("watchdog");
        assert!(status.success());
        assert!(started.elapsed() < Duration::from_secs(5));
        // SIGTERM ends `sleep` at once.
        assert!(kept.wait().expect("wait").code().is_none(), "killed by a signal");
        assert!(other.wait().expect("wait").code().is_none(), "killed by a signal");
        assert!(released.try_wait().expect("try_wait").is_none(), "the released group runs on");
        let _ = released.kill();
        let _ = released.wait();
    }
}
