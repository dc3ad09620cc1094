//! Where each CLI keeps a session's transcript, so a session can travel with its task: after
//! a turn the worker takes the transcript's files ([`collect`]) onto the task's session ref,
//! and an attempt on another machine, or in another workspace, puts them where that
//! workspace's CLI looks ([`restore`]).
//!
//! - Claude Code: `$CLAUDE_CONFIG_DIR/projects/<slug of the workspace path>/<id>.jsonl` (and
//!   `<id>/` for subagents), `~/.claude` by default; the slug is the absolute path with every
//!   character other than a letter or a digit made `-`. A resumed session is looked up under
//!   the new workspace's slug, so the files move there (verified with 2.1.328).
//! - Codex: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl`, `~/.codex` by
//!   default; `exec resume <id>` finds it from any folder (verified with 0.169).
//! - Copilot CLI: `$COPILOT_HOME/session-state/<id>/`, `~/.copilot` by default.
//! - Gemini CLI: `~/.gemini/tmp/<project>/chats/session-*-<id prefix>.json`, restored under
//!   the same project folder (a workspace at another path may not find it).
//! - aider: its chat history, in grove's scratch folder for the task.
//! - OpenCode keeps sessions in its own database: only the id travels.

use std::path::{Path, PathBuf};

use grove_core::spec::AgentKind;

/// The largest transcript file carried (bigger ones stay behind; the session then starts
/// afresh elsewhere).
const MAX_FILE: u64 = 256 << 20;

/// The folders the CLIs keep their state in, from the agent's environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dirs {
    pub home: Option<PathBuf>,
    pub claude: Option<PathBuf>,
    pub codex: Option<PathBuf>,
    pub copilot: Option<PathBuf>,
    pub gemini: Option<PathBuf>,
}

impl Dirs {
    /// From the variables an agent CLI sees (`lookup` answers for the agent's environment:
    /// the job's `agent.env` first, then the worker's).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Dirs {
        let home = lookup("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let or_home = |var: &str, sub: &str| {
            lookup(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(sub)))
        };
        Dirs {
            claude: or_home("CLAUDE_CONFIG_DIR", ".claude"),
            codex: or_home("CODEX_HOME", ".codex"),
            copilot: or_home("COPILOT_HOME", ".copilot"),
            gemini: home.as_ref().map(|h| h.join(".gemini")),
            home,
        }
    }
}

/// Claude Code's folder name for a workspace path.
pub fn claude_slug(workdir: &Path) -> String {
    workdir.display().to_string().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

/// The files of session `id`, each as (a name relative to the CLI's own folder, the file on
/// this machine).
pub fn collect(
    kind: AgentKind,
    id: &str,
    workdir: &Path,
    run_dir: &Path,
    dirs: &Dirs,
) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if id.is_empty() || id.contains('/') || id.contains("..") {
        return out;
    }
    match kind {
        AgentKind::Claude => {
            let Some(root) = &dirs.claude else { return out };
            let project = root.join("projects").join(claude_slug(workdir));
            let file = project.join(format!("{id}.jsonl"));
            if file.is_file() {
                out.push((format!("{id}.jsonl"), file));
            }
            walk(&project.join(id), id, &mut out);
        }
        AgentKind::Codex => {
            let Some(root) = &dirs.codex else { return out };
            let sessions = root.join("sessions");
            let mut found = Vec::new();
            walk(&sessions, "sessions", &mut found);
            out.extend(found.into_iter().filter(|(name, _)| name.ends_with(&format!("-{id}.jsonl"))));
        }
        AgentKind::Copilot => {
            let Some(root) = &dirs.copilot else { return out };
            walk(&root.join("session-state").join(id), &format!("session-state/{id}"), &mut out);
        }
        AgentKind::Gemini => {
            let Some(root) = &dirs.gemini else { return out };
            let prefix: String = id.chars().take(8).collect();
            let mut found = Vec::new();
            walk(&root.join("tmp"), "tmp", &mut found);
            out.extend(found.into_iter().filter(|(name, _)| {
                name.contains("/chats/") && name.ends_with(".json") && name.contains(&prefix)
            }));
        }
        AgentKind::Aider => {
            let file = run_dir.join(super::aider::HISTORY);
            if file.is_file() {
                out.push((super::aider::HISTORY.to_owned(), file));
            }
        }
        AgentKind::Opencode | AgentKind::Replace | AgentKind::Command => {}
    }
    out.retain(|(_, p)| std::fs::metadata(p).is_ok_and(|m| m.len() <= MAX_FILE));
    out
}

/// Where a file [`collect`] named goes on this machine, for a session resumed in `workdir`.
pub fn restore_path(
    kind: AgentKind,
    name: &str,
    workdir: &Path,
    run_dir: &Path,
    dirs: &Dirs,
) -> Option<PathBuf> {
    if name.is_empty() || name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return None;
    }
    let under =
        |root: &Option<PathBuf>| root.as_ref().map(|r| name.split('/').fold(r.clone(), |p, c| p.join(c)));
    match kind {
        AgentKind::Claude => {
            let root = dirs.claude.as_ref()?.join("projects").join(claude_slug(workdir));
            Some(name.split('/').fold(root, |p, c| p.join(c)))
        }
        AgentKind::Codex | AgentKind::Copilot | AgentKind::Gemini => under(match kind {
            AgentKind::Codex => &dirs.codex,
            AgentKind::Copilot => &dirs.copilot,
            _ => &dirs.gemini,
        }),
        AgentKind::Aider => (name == super::aider::HISTORY).then(|| run_dir.join(name)),
        AgentKind::Opencode | AgentKind::Replace | AgentKind::Command => None,
    }
}

/// Every regular file under `dir`, named `prefix/<relative path>` (no symlinks followed).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}/{name}");
        if ft.is_dir() {
            walk(&e.path(), &rel, out);
        } else if ft.is_file() {
            out.push((rel, e.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_sessions_move_to_the_new_workspace_slug() {
        let d = tempfile::tempdir().expect("tmp");
        let dirs = Dirs::from_env(|k| (k == "HOME").then(|| d.path().display().to_string()));
        assert_eq!(claude_slug(Path::new("/tmp/adx/ws_2.x")), "-tmp-adx-ws-2-x");
        let old = Path::new("/w/one");
        let project = d.path().join(".claude/projects").join(claude_slug(old));
        std::fs::create_dir_all(project.join("s1/subagents")).expect("mkdir");
        std::fs::write(project.join("s1.jsonl"), "{}\n").expect("write");
        std::fs::write(project.join("s1/subagents/agent-a.jsonl"), "{}\n").expect("write");
        std::fs::write(project.join("other.jsonl"), "{}\n").expect("write");
        let mut got = collect(AgentKind::Claude, "s1", old, Path::new("/r"), &dirs);
        got.sort();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["s1.jsonl", "s1/subagents/agent-a.jsonl"]);
        let to = restore_path(AgentKind::Claude, "s1.jsonl", Path::new("/w/two"), Path::new("/r"), &dirs);
        assert_eq!(to, Some(d.path().join(".claude/projects/-w-two/s1.jsonl")));
        assert_eq!(restore_path(AgentKind::Claude, "../x", Path::new("/w"), Path::new("/r"), &dirs), None);
    }

    #[test]
    fn codex_rollouts_are_found_by_thread_id() {
        let d = tempfile::tempdir().expect("tmp");
        let dirs = Dirs::from_env(|k| (k == "CODEX_HOME").then(|| d.path().display().to_string()));
        let day = d.path().join("sessions/2026/12/02");
        std::fs::create_dir_all(&day).expect("mkdir");
        std::fs::write(day.join("rollout-2026-12-02T05-12-30-01a2352b-26cc.jsonl"), "{}\n").expect("write");
        std::fs::write(day.join("rollout-2026-12-02T05-12-31-ffff.jsonl"), "{}\n").expect("write");
        let got = collect(AgentKind::Codex, "01a2352b-26cc", Path::new("/w"), Path::new("/r"), &dirs);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "sessions/2026/12/02/rollout-2026-12-02T05-12-30-01a2352b-26cc.jsonl");
        let to = restore_path(AgentKind::Codex, &got[0].0, Path::new("/x"), Path::new("/r"), &dirs);
        assert_eq!(to.as_deref(), Some(got[0].1.as_path()));
    }
}
