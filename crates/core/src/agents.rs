//! Repository-defined agents: `.github/agents/NAME.agent.md` (the format VS Code, Copilot CLI
//! and GitHub's coding agent read) and `.claude/agents/NAME.md` (Claude Code's subagents).
//! Each is YAML front matter between `---` lines, then a Markdown body that is the agent's
//! instructions. This module parses them (no I/O: the files come through
//! [`SourceTree`](crate::plan::SourceTree), read from a job's base commit) into
//! [`AgentDefinition`], which travels with the job to the adapter that runs it.
//!
//! A job names one with `agent.custom` (`--custom-agent NAME`): NAME is the file's name
//! without `.agent.md` / `.md` (GitHub's key), or the `name` its front matter gives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::plan::{FileKind, SourceTree, TreeError};

/// Where definitions live in a repository, and in which format.
pub const DIRS: [(&str, Format); 2] =
    [(".github/agents", Format::Github), (".claude/agents", Format::Claude)];

/// The two file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `.github/agents/NAME.agent.md`: `description` required; `tools` are GitHub's aliases
    /// (`read`, `edit`, `search`, `execute`, ...) or tool names.
    Github,
    /// `.claude/agents/NAME.md`: `name` and `description` required; `tools` are Claude Code's
    /// tool names (`Read`, `Edit`, `Bash(git:*)`, ...).
    Claude,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Github => "github",
            Format::Claude => "claude",
        }
    }
}

/// One repository-defined agent, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AgentDefinition {
    /// The key `--custom-agent` takes: the file name without `.agent.md` / `.md`.
    pub name: String,
    /// The `name` of the front matter, when it differs from the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The file, repository-relative.
    pub path: String,
    pub format: Format,
    pub description: String,
    /// The tools the agent may use as the file names them; `None` means all (the field is
    /// absent or `*`), an empty list none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Tools it may not use (`disallowedTools`, Claude format).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_tools: Vec<String>,
    /// The model it asks for (the first, when the file gives a list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `vscode` or `github-copilot` (GitHub format): where the agent is meant to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The instructions (the Markdown after the front matter), trimmed.
    pub body: String,
}

/// A definition that cannot be used. Every variant names the file; field errors name the
/// field and, where it can be found, the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// The file does not start with a `---` line, or its front matter is never closed.
    #[error("{path}: {message}")]
    FrontMatter { path: String, message: String },
    /// The front matter is not YAML, or not a mapping of keys to values.
    #[error("{path}: front matter is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    /// A field is missing, or has the wrong type or a value grove refuses.
    #[error("{path}{}: {field}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Field { path: String, line: Option<usize>, field: String, message: String },
    /// The file is not UTF-8.
    #[error("{path}: not UTF-8 text")]
    Encoding { path: String },
}

/// What `grove agents` and `submit` find in a tree.
#[derive(Debug, Default)]
pub struct Found {
    /// The definitions that parsed, by path.
    pub definitions: Vec<AgentDefinition>,
    /// The files that did not.
    pub errors: Vec<DefinitionError>,
}

impl Found {
    /// The definition `name` names (its key, or its front matter's `name`), or the error of a
    /// file that would have been it. `Ok(None)`: there is none.
    /// A broken file of that name refuses it even when the other folder has a good one; of two
    /// good ones, `.github/agents` wins.
    pub fn get(&self, name: &str) -> Result<Option<&AgentDefinition>, &DefinitionError> {
        if let Some(e) = self.errors.iter().find(|e| definition_key(e.path()).is_some_and(|(_, k)| k == name))
        {
            return Err(e);
        }
        let by_key = |f: Format| self.definitions.iter().find(|d| d.name == name && d.format == f);
        if let Some(d) = by_key(Format::Github).or_else(|| by_key(Format::Claude)) {
            return Ok(Some(d));
        }
        Ok(self.definitions.iter().find(|d| d.display_name.as_deref() == Some(name)))
    }
}

impl DefinitionError {
    /// The file the error is about.
    pub fn path(&self) -> &str {
        match self {
            DefinitionError::FrontMatter { path, .. }
            | DefinitionError::Yaml { path, .. }
            | DefinitionError::Field { path, .. }
            | DefinitionError::Encoding { path } => path,
        }
    }
}

/// Whether `path` is a definition file, and if so its format and key. Only files directly in
/// one of [`DIRS`] count; in `.github/agents` only `*.agent.md` (GitHub's rule).
pub fn definition_key(path: &str) -> Option<(Format, &str)> {
    for (dir, format) in DIRS {
        let Some(file) = path.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) else { continue };
        if file.contains('/') {
            return None;
        }
        let key = match format {
            Format::Github => file.strip_suffix(".agent.md"),
            Format::Claude => file.strip_suffix(".md"),
        }?;
        return (!key.is_empty()).then_some((format, key));
    }
    None
}

/// Every definition in `tree`, sorted by path; files that do not parse are in `errors`.
pub fn discover(tree: &dyn SourceTree) -> Result<Found, TreeError> {
    let mut found = Found::default();
    for f in tree.files() {
        // Only files: a symlink's target is not a definition grove will follow.
        if definition_key(&f.path).is_none() || !matches!(f.kind, FileKind::Regular | FileKind::Executable) {
            continue;
        }
        let Some(bytes) = tree.read(&f.path)? else { continue };
        let parsed = match String::from_utf8(bytes) {
            Ok(text) => parse(&f.path, &text),
            Err(_) => Err(DefinitionError::Encoding { path: f.path.clone() }),
        };
        match parsed {
            Ok(d) => found.definitions.push(d),
            Err(e) => found.errors.push(e),
        }
    }
    Ok(found)
}

/// Parse the definition at `path` (repository-relative; it decides the format and the key).
pub fn parse(path: &str, text: &str) -> Result<AgentDefinition, DefinitionError> {
    let (format, key) = definition_key(path).ok_or_else(|| DefinitionError::FrontMatter {
        path: path.to_owned(),
        message: "not an agent definition (.github/agents/NAME.agent.md or .claude/agents/NAME.md)".into(),
    })?;
    let (front, body) = split_front_matter(path, text)?;
    let fm_err = |field: &str, message: String| DefinitionError::Field {
        path: path.to_owned(),
        line: locate(front, field),
        field: field.to_owned(),
        message,
    };
    let map: BTreeMap<String, Value> = match serde_yaml_ng::from_str::<Value>(front) {
        Ok(Value::Mapping(m)) => m
            .into_iter()
            .map(|(k, v)| match k {
                Value::String(k) => Ok((k, v)),
                other => Err(DefinitionError::Yaml {
                    path: path.to_owned(),
                    message: format!("a key is not a string: {}", describe(&other)),
                }),
            })
            .collect::<Result<_, _>>()?,
        Ok(Value::Null) => BTreeMap::new(),
        Ok(other) => {
            return Err(DefinitionError::Yaml {
                path: path.to_owned(),
                message: format!("expected key: value lines, found {}", describe(&other)),
            });
        }
        Err(e) => {
            // The front matter starts on the file's second line.
            let message = match e.location() {
                Some(l) => format!("line {}: {}", l.line() + 1, strip_location(&e.to_string())),
                None => e.to_string(),
            };
            return Err(DefinitionError::Yaml { path: path.to_owned(), message });
        }
    };
    let string = |field: &str| -> Result<Option<String>, DefinitionError> {
        match map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(fm_err(field, format!("expected text, found {}", describe(other)))),
        }
    };
    let description = string("description")?
        .filter(|d| !d.is_empty())
        .ok_or_else(|| fm_err("description", "is required: say what the agent is for (one line)".into()))?;
    let display_name = string("name")?;
    if format == Format::Claude {
        match &display_name {
            None => {
                return Err(fm_err("name", "is required in .claude/agents (lowercase letters and -)".into()));
            }
            Some(n) if n.is_empty() => return Err(fm_err("name", "is empty".into())),
            Some(_) => {}
        }
    }
    let model = match map.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => return Err(fm_err("model", "is empty".into())),
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        // VS Code takes a prioritized list: the first is the one asked for.
        Some(Value::Sequence(items)) => match items.first() {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(other) => {
                return Err(fm_err("model", format!("expected model names, found {}", describe(other))));
            }
            None => None,
        },
        Some(other) => {
            return Err(fm_err("model", format!("expected a model name, found {}", describe(other))));
        }
    };
    let tools = tool_list(map.get("tools")).map_err(|m| fm_err("tools", m))?;
    let tools = match tools {
        Some(t) if t.iter().any(|n| n == "*") => None,
        t => t,
    };
    let disallowed_key =
        if map.contains_key("disallowedTools") { "disallowedTools" } else { "disallowed-tools" };
    let disallowed_tools =
        tool_list(map.get(disallowed_key)).map_err(|m| fm_err(disallowed_key, m))?.unwrap_or_default();
    let target = string("target")?;
    if let Some(t) = &target
        && t != "vscode"
        && t != "github-copilot"
    {
        return Err(fm_err("target", format!("{t:?}: expected vscode or github-copilot")));
    }
    Ok(AgentDefinition {
        name: key.to_owned(),
        display_name: display_name.filter(|n| n != key),
        path: path.to_owned(),
        format,
        description,
        tools,
        disallowed_tools,
        model: model.filter(|m| m != "inherit"),
        target,
        body: body.trim().to_owned(),
    })
}

/// A list of tool names: a YAML list of strings, or one comma-separated string.
fn tool_list(v: Option<&Value>) -> Result<Option<Vec<String>>, String> {
    let names: Vec<String> = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => split_tools(s),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.trim().to_owned()),
                other => Err(format!("expected tool names, found {} in the list", describe(other))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!("expected a list or a comma-separated string, found {}", describe(other)));
        }
    };
    Ok(Some(names.into_iter().filter(|n| !n.is_empty()).collect()))
}

/// `Read, Grep, Bash(git log:*)`: split on commas outside parentheses.
fn split_tools(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0u32);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_owned());
    out
}

/// The front matter (without its `---` lines) and the body.
fn split_front_matter<'a>(path: &str, text: &'a str) -> Result<(&'a str, &'a str), DefinitionError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let err =
        |message: &str| DefinitionError::FrontMatter { path: path.to_owned(), message: message.to_owned() };
    let first_end = text.find('\n').map_or(text.len(), |i| i + 1);
    if text[..first_end].trim_end() != "---" {
        return Err(err("no front matter: the file must start with a `---` line, then `description: ...`"));
    }
    let rest = &text[first_end..];
    let mut at = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Ok((&rest[..at], &rest[at + line.len()..]));
        }
        at += line.len();
    }
    Err(err("the front matter is never closed (no second `---` line)"))
}

/// The 1-based file line of `key:` in the front matter (which starts on line 2).
fn locate(front: &str, key: &str) -> Option<usize> {
    front
        .lines()
        .position(|l| l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with(':')))
        .map(|i| i + 2)
}

fn strip_location(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// The CLIs that can run a definition, and how: for `grove agents` and the adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Runner {
    /// The `--agent` kind.
    pub cli: &'static str,
    /// How the definition reaches it.
    pub how: &'static str,
}

impl AgentDefinition {
    /// The agent kinds that can run this definition, and how each takes it.
    pub fn runners(&self) -> Vec<Runner> {
        let mut out =
            vec![Runner { cli: "claude", how: "body as --append-system-prompt, tools as --allowedTools" }];
        if self.target.as_deref() != Some("vscode") {
            out.push(Runner { cli: "copilot", how: "--agent NAME (Copilot CLI reads the file itself)" });
        }
        for cli in ["codex", "gemini", "opencode", "aider"] {
            out.push(Runner { cli, how: "body before the prompt; tools not enforced" });
        }
        out.push(Runner { cli: "command", how: "GROVE_AGENT_FILE, GROVE_AGENT_MODEL, GROVE_AGENT_TOOLS" });
        out
    }

    /// The tools as Claude Code names them, for `--allowedTools`; `None` means all. GitHub's
    /// aliases become Claude Code's tools (`edit` → Edit, MultiEdit, Write, NotebookEdit);
    /// other names pass as given (GitHub ignores names it does not know, so does Claude).
    pub fn claude_tools(&self) -> Option<Vec<String>> {
        let tools = self.tools.as_ref()?;
        if self.format == Format::Claude {
            return Some(tools.clone());
        }
        let mut out: Vec<String> = Vec::new();
        for t in tools {
            let mapped: &[&str] = match t.to_ascii_lowercase().as_str() {
                "execute" | "shell" | "bash" | "powershell" => &["Bash"],
                "read" | "notebookread" => &["Read", "NotebookRead"],
                "edit" | "multiedit" | "write" | "notebookedit" => {
                    &["Edit", "MultiEdit", "Write", "NotebookEdit"]
                }
                "search" | "grep" | "glob" => &["Grep", "Glob"],
                "agent" | "custom-agent" | "task" => &["Task"],
                "web" | "websearch" | "webfetch" => &["WebSearch", "WebFetch"],
                "todo" | "todowrite" => &["TodoWrite"],
                _ => {
                    if !out.contains(t) {
                        out.push(t.clone());
                    }
                    continue;
                }
            };
            for m in mapped {
                if !out.iter().any(|o| o == m) {
                    out.push((*m).to_owned());
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVIEW: &str = "---\ndescription: Reviews a change for bugs\nname: Reviewer\ntools: ['read', 'search', 'edit']\nmodel: claude-sonnet-4-5\n---\n\nYou review code. Be terse.\n";

    #[test]
    fn a_github_definition_parses() {
        let d = parse(".github/agents/review.agent.md", REVIEW).expect("parses");
        assert_eq!(d.name, "review");
        assert_eq!(d.display_name.as_deref(), Some("Reviewer"));
        assert_eq!(d.format, Format::Github);
        assert_eq!(d.description, "Reviews a change for bugs");
        assert_eq!(d.tools, Some(vec!["read".into(), "search".into(), "edit".into()]));
        assert_eq!(d.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(d.body, "You review code. Be terse.");
        assert_eq!(
            d.claude_tools().expect("tools"),
            ["Read", "NotebookRead", "Grep", "Glob", "Edit", "MultiEdit", "Write", "NotebookEdit"]
        );
        assert!(d.runners().iter().any(|r| r.cli == "copilot"));
    }

    #[test]
    fn a_claude_definition_parses_with_a_comma_string_of_tools() {
        let text = "---\nname: code-architect\ndescription: Designs features\ntools: Glob, Grep, Bash(git log:*, git diff:*), Read\nmodel: inherit\ncolor: green\n---\nDesign it.\n";
        let d = parse(".claude/agents/code-architect.md", text).expect("parses");
        assert_eq!(d.name, "code-architect");
        assert_eq!(d.display_name, None, "the same as the key");
        assert_eq!(
            d.tools.as_deref().expect("tools"),
            ["Glob", "Grep", "Bash(git log:*, git diff:*)", "Read"]
        );
        assert_eq!(d.claude_tools(), d.tools, "Claude's own names pass as they are");
        assert_eq!(d.model, None, "inherit is no model");
    }

    #[test]
    fn odd_but_valid_front_matter() {
        // CRLF line ends, a BOM, `*` for all tools, a model list, no body, an unknown key.
        let text = "\u{feff}---\r\ndescription: \"Plans\"\r\ntools: ['*']\r\nmodel: [gpt-5, claude-sonnet-4-5]\r\nhandoffs: []\r\n---\r\n";
        let d = parse(".github/agents/plan.agent.md", text).expect("parses");
        assert_eq!((d.tools, d.model.as_deref(), d.body.as_str()), (None, Some("gpt-5"), ""));
        // An empty list means no tools at all.
        let d =
            parse(".github/agents/none.agent.md", "---\ndescription: x\ntools: []\n---\n").expect("parses");
        assert_eq!(d.tools, Some(vec![]));
        // `---` inside the body is the body's.
        let d = parse(".github/agents/r.agent.md", "---\ndescription: x\n---\na\n---\nb\n").expect("parses");
        assert_eq!(d.body, "a\n---\nb");
        // target vscode: not for Copilot CLI.
        let d =
            parse(".github/agents/v.agent.md", "---\ndescription: x\ntarget: vscode\n---\n").expect("parses");
        assert!(!d.runners().iter().any(|r| r.cli == "copilot"));
    }

    #[test]
    fn bad_definitions_name_the_file_and_the_field() {
        let cases = [
            (".github/agents/a.agent.md", "no front matter\n", ".github/agents/a.agent.md: no front matter"),
            (".github/agents/a.agent.md", "---\ndescription: x\n", "never closed"),
            (
                ".github/agents/a.agent.md",
                "---\nname: a\n---\n",
                ".github/agents/a.agent.md: description: is required",
            ),
            (
                ".github/agents/a.agent.md",
                "---\ndescription: x\ntools: 3\n---\n",
                ".github/agents/a.agent.md:3: tools: expected a list or a comma-separated string, found the number 3",
            ),
            (
                ".github/agents/a.agent.md",
                "---\ndescription: x\ntools: [read, 4]\n---\n",
                ":3: tools: expected tool names, found the number 4",
            ),
            (
                ".github/agents/a.agent.md",
                "---\ndescription: [x]\n---\n",
                ":2: description: expected text, found a list",
            ),
            (
                ".github/agents/a.agent.md",
                "---\ndescription: x\nmodel: {a: 1}\n---\n",
                ":3: model: expected a model name",
            ),
            (
                ".github/agents/a.agent.md",
                "---\ndescription: x\ntarget: emacs\n---\n",
                ":3: target: \"emacs\": expected vscode or github-copilot",
            ),
            (
                ".github/agents/a.agent.md",
                "---\ndescription: x\n  bad: [\n---\n",
                ".github/agents/a.agent.md: front matter is not valid YAML: line ",
            ),
            (".github/agents/a.agent.md", "---\n- a\n- b\n---\n", "expected key: value lines, found a list"),
            (".claude/agents/a.md", "---\ndescription: x\n---\n", ".claude/agents/a.md: name: is required"),
        ];
        for (path, text, expect) in cases {
            let e = parse(path, text).expect_err(text).to_string();
            assert!(e.contains(expect), "{text:?}: {e}");
            assert!(e.starts_with(path), "{e}");
        }
    }

    #[test]
    fn only_definition_files_count() {
        assert_eq!(definition_key(".github/agents/review.agent.md"), Some((Format::Github, "review")));
        assert_eq!(definition_key(".claude/agents/review.md"), Some((Format::Claude, "review")));
        assert_eq!(definition_key(".github/agents/README.md"), None);
        assert_eq!(definition_key(".github/agents/sub/x.agent.md"), None);
        assert_eq!(definition_key(".github/agents/.agent.md"), None);
        assert_eq!(definition_key("docs/.claude/agents/x.md"), None);
    }
}
