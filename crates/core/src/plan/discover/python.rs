//! Python: projects are folders with a pyproject.toml (with `[project]`, `[tool.poetry]` or
//! `[build-system]`; a pyproject.toml holding only tool settings is not a project), a setup.cfg
//! with `[metadata] name`, or a setup.py. Edges come from requirements naming another project
//! of the repository (PEP 503 names compared), poetry path dependencies and uv path or
//! workspace sources. Without any project, the outermost folders with an `__init__.py` are the
//! modules (packages).

use std::collections::HashMap;

use toml::{Table, Value};

use super::{Modules, SourceTree, TreeError, named, parse_warning, read_text};
use crate::plan::paths::{join, parent};
use crate::spec::SplitRule;

struct Project {
    dir: String,
    module: usize,
    /// Requirement names (normalised).
    requires: Vec<String>,
    /// Folders of path dependencies.
    paths: Vec<String>,
}

/// Projects; returns whether any was found.
pub(super) fn discover(
    tree: &dyn SourceTree,
    mods: &mut Modules,
    warnings: &mut Vec<String>,
) -> Result<bool, TreeError> {
    let mut projects: Vec<Project> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut add = |mods: &mut Modules,
                   dir: &str,
                   name: Option<String>,
                   requires: Vec<String>,
                   paths: Vec<String>,
                   projects: &mut Vec<Project>| {
        let m = match &name {
            Some(n) => mods.add(dir, n, SplitRule::Python, true),
            None => mods.add(dir, dir, SplitRule::Python, false),
        };
        if let Some(n) = name {
            by_name.entry(normalise(&n)).or_insert(m);
        }
        projects.push(Project { dir: dir.to_owned(), module: m, requires, paths });
    };

    for f in named(tree, "pyproject.toml") {
        let dir = parent(&f.path);
        let Some(text) = read_text(tree, &f.path, warnings)? else {
            mods.add_plain(dir, SplitRule::Python);
            continue;
        };
        let t = match text.parse::<Table>() {
            Ok(t) => t,
            Err(e) => {
                warnings.push(parse_warning(&f.path, &text, e.span().map(|s| s.start), e.message()));
                mods.add_plain(dir, SplitRule::Python);
                continue;
            }
        };
        let project = t.get("project").and_then(Value::as_table);
        let tool = t.get("tool").and_then(Value::as_table);
        let poetry = tool.and_then(|t| t.get("poetry")).and_then(Value::as_table);
        if project.is_none() && poetry.is_none() && t.get("build-system").is_none() {
            continue;
        }
        let name = project.or(poetry).and_then(|p| p.get("name")).and_then(Value::as_str).map(str::to_owned);
        let mut requires = Vec::new();
        let mut paths = Vec::new();
        if let Some(p) = project {
            requires.extend(strs(p.get("dependencies")).map(requirement_name));
            if let Some(opt) = p.get("optional-dependencies").and_then(Value::as_table) {
                for v in opt.values() {
                    requires.extend(strs(Some(v)).map(requirement_name));
                }
            }
        }
        if let Some(groups) = t.get("dependency-groups").and_then(Value::as_table) {
            for v in groups.values() {
                requires.extend(strs(Some(v)).map(requirement_name));
            }
        }
        if let Some(po) = poetry {
            let mut tables: Vec<&Table> = Vec::new();
            tables.extend(["dependencies", "dev-dependencies"].iter().filter_map(|k| po.get(*k)?.as_table()));
            if let Some(groups) = po.get("group").and_then(Value::as_table) {
                for g in groups.values().filter_map(Value::as_table) {
                    tables.extend(g.get("dependencies").and_then(Value::as_table));
                }
            }
            for table in tables {
                for (name, v) in table {
                    requires.push(normalise(name));
                    if let Some(p) = v.get("path").and_then(Value::as_str) {
                        paths.extend(join(dir, p));
                    }
                }
            }
        }
        if let Some(sources) =
            tool.and_then(|t| t.get("uv")).and_then(|u| u.get("sources")).and_then(Value::as_table)
        {
            for (name, v) in sources {
                if let Some(p) = v.get("path").and_then(Value::as_str) {
                    paths.extend(join(dir, p));
                } else if v.get("workspace").and_then(Value::as_bool) == Some(true) {
                    requires.push(normalise(name));
                }
            }
        }
        add(mods, dir, name, requires, paths, &mut projects);
    }

    for f in named(tree, "setup.cfg") {
        let dir = parent(&f.path);
        if projects.iter().any(|p| p.dir == dir) {
            continue;
        }
        let Some(text) = read_text(tree, &f.path, warnings)? else { continue };
        let ini = ini(&text);
        let Some(name) = ini.get(&("metadata".to_owned(), "name".to_owned())) else { continue };
        let requires = ini
            .get(&("options".to_owned(), "install_requires".to_owned()))
            .map(|v| v.lines().map(str::trim).filter(|l| !l.is_empty()).map(requirement_name).collect())
            .unwrap_or_default();
        add(mods, dir, Some(name.trim().to_owned()), requires, Vec::new(), &mut projects);
    }

    for f in named(tree, "setup.py") {
        let dir = parent(&f.path);
        if projects.iter().any(|p| p.dir == dir) {
            continue;
        }
        add(mods, dir, None, Vec::new(), Vec::new(), &mut projects);
    }

    for p in &projects {
        for r in &p.requires {
            if let Some(&to) = by_name.get(r) {
                mods.edge(p.module, to);
            }
        }
        for d in &p.paths {
            if let Some(to) = mods.at(d) {
                mods.edge(p.module, to);
            }
        }
    }
    Ok(!projects.is_empty())
}

/// The outermost folders holding an `__init__.py` as modules.
pub(super) fn packages(tree: &dyn SourceTree, mods: &mut Modules) {
    let mut dirs: Vec<&str> =
        named(tree, "__init__.py").map(|f| parent(&f.path)).filter(|d| !d.is_empty()).collect();
    dirs.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    let mut kept: Vec<&str> = Vec::new();
    for d in dirs {
        if kept.last().is_some_and(|k| crate::plan::paths::is_within(d, k)) {
            continue;
        }
        kept.push(d);
        mods.add(d, &d.replace('/', "."), SplitRule::Python, false);
    }
}

fn strs(v: Option<&Value>) -> impl Iterator<Item = &str> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

/// The normalised name of a requirement (`Foo_Bar[extra]>=1; python_version<"3"` → `foo-bar`).
pub(crate) fn requirement_name(req: &str) -> String {
    let end = req
        .trim()
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(req.trim().len());
    normalise(&req.trim()[..end])
}

/// PEP 503: lower case, runs of `-`, `_` and `.` as one `-`.
pub(crate) fn normalise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.trim().chars() {
        if "-_.".contains(c) {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A small INI reader for setup.cfg: `(section, key) -> value`, continuation lines joined
/// with newlines.
fn ini(text: &str) -> HashMap<(String, String), String> {
    let mut out: HashMap<(String, String), String> = HashMap::new();
    let mut section = String::new();
    let mut last: Option<(String, String)> = None;
    for raw in text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let Some(k) = &last
                && let Some(v) = out.get_mut(k)
            {
                v.push('\n');
                v.push_str(trimmed);
            }
            continue;
        }
        if let Some(s) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.trim().to_owned();
            last = None;
            continue;
        }
        if let Some((k, v)) = trimmed.split_once(['=', ':']) {
            let key = (section.clone(), k.trim().to_owned());
            out.insert(key.clone(), v.trim().to_owned());
            last = Some(key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_names_are_normalised() {
        assert_eq!(requirement_name("Foo_Bar[extra] >= 1.0; python_version < '3.9'"), "foo-bar");
        assert_eq!(requirement_name("a.b--c"), "a-b-c");
        let cfg = ini("[metadata]\nname = pkg\n[options]\ninstall_requires =\n    core>=1\n    requests\n");
        assert_eq!(cfg[&("metadata".to_owned(), "name".to_owned())], "pkg");
        assert_eq!(cfg[&("options".to_owned(), "install_requires".to_owned())], "\ncore>=1\nrequests");
    }
}
