//! npm, yarn and pnpm workspaces: `workspaces` in package.json (an array, or an object with
//! `packages`), pnpm-workspace.yaml and lerna.json `packages`, with `!` negations. Edges come from
//! dependencies, devDependencies, peerDependencies and optionalDependencies naming a workspace
//! package (any version, `workspace:` protocol included) or pointing at one with `file:`,
//! `link:` or `portal:`.
//!
//! Without any workspace, every package.json is a module. A package.json under a workspace
//! root that its patterns do not take is not a module (a fixture, an example).

use std::collections::HashMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde_json::Value;

use super::{Modules, SourceTree, TreeError, named, parse_warning, read_text};
use crate::plan::paths::{is_within, join, parent};
use crate::spec::SplitRule;

/// The deepest flow nesting (`[`, `{`) read in a pnpm-workspace.yaml (real ones have 1 or 2).
const YAML_FLOW_MAX: usize = 64;

/// The fields of a package.json that name its dependencies.
pub(crate) const DEP_FIELDS: [&str; 4] =
    ["dependencies", "devDependencies", "peerDependencies", "optionalDependencies"];

struct Package {
    dir: String,
    json: Value,
}

impl Package {
    fn name(&self) -> Option<&str> {
        self.json.get("name").and_then(Value::as_str).filter(|n| !n.is_empty())
    }
}

/// A workspace root and its member patterns.
struct Root {
    dir: String,
    file: String,
    include: Vec<String>,
    exclude: Vec<String>,
}

pub(super) fn discover(
    tree: &dyn SourceTree,
    mods: &mut Modules,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    let mut pkgs: Vec<Package> = Vec::new();
    for f in named(tree, "package.json") {
        let dir = parent(&f.path);
        let Some(text) = read_text(tree, &f.path, warnings)? else {
            mods.add_plain(dir, SplitRule::Npm);
            continue;
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(json) => pkgs.push(Package { dir: dir.to_owned(), json }),
            Err(e) => {
                warnings.push(parse_warning(&f.path, &text, None, &e.to_string()));
                mods.add_plain(dir, SplitRule::Npm);
            }
        }
    }

    let mut roots: Vec<Root> = Vec::new();
    // Folders of broken workspace files: plain modules unless a package.json makes them more.
    let mut plain: Vec<&str> = Vec::new();
    for p in &pkgs {
        let list = match p.json.get("workspaces") {
            Some(Value::Array(a)) => Some(a),
            Some(Value::Object(o)) => o.get("packages").and_then(Value::as_array),
            _ => None,
        };
        if let Some(list) = list {
            let pats: Vec<String> = list.iter().filter_map(Value::as_str).map(str::to_owned).collect();
            let file =
                if p.dir.is_empty() { "package.json".to_owned() } else { format!("{}/package.json", p.dir) };
            roots.push(root(&p.dir, file, pats));
        }
    }
    for f in named(tree, "lerna.json") {
        let dir = parent(&f.path);
        let Some(text) = read_text(tree, &f.path, warnings)? else { continue };
        match serde_json::from_str::<Value>(&text) {
            // Without `packages`, lerna uses the npm workspaces (or its default, packages/*).
            Ok(json) => {
                let pats: Vec<String> = match json.get("packages").and_then(Value::as_array) {
                    Some(a) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                    None if roots.iter().any(|r| r.dir == dir) => continue,
                    None => vec!["packages/*".to_owned()],
                };
                roots.push(root(dir, f.path.clone(), pats));
            }
            Err(e) => warnings.push(parse_warning(&f.path, &text, None, &e.to_string())),
        }
    }
    for f in named(tree, "pnpm-workspace.yaml") {
        let dir = parent(&f.path);
        let Some(text) = read_text(tree, &f.path, warnings)? else { continue };
        // libyaml's scanner slows down with every open flow level (100,000 took most of a
        // minute), long before serde's recursion limit is reached: refuse deep flow first.
        if let Some(at) = super::too_deep(&text, YAML_FLOW_MAX) {
            let why = format!("brackets nested deeper than {YAML_FLOW_MAX}");
            warnings.push(parse_warning(&f.path, &text, Some(at), &why));
            plain.push(dir);
            continue;
        }
        match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) {
            Ok(y) => {
                let pats = y
                    .get("packages")
                    .and_then(|v| v.as_sequence())
                    .map(|s| s.iter().filter_map(|v| v.as_str()).map(str::to_owned).collect())
                    .unwrap_or_default();
                roots.push(root(dir, f.path.clone(), pats));
            }
            Err(e) => {
                let at = e.location().map(|l| l.index());
                warnings.push(parse_warning(&f.path, &text, at, &e.to_string()));
                plain.push(dir);
            }
        }
    }

    let mut is_module = vec![false; pkgs.len()];
    let mut under_root = vec![false; pkgs.len()];
    for r in &roots {
        let (inc, exc) = (globs(&r.include, r, warnings), globs(&r.exclude, r, warnings));
        let mut hit = false;
        for (i, p) in pkgs.iter().enumerate() {
            if !is_within(&p.dir, &r.dir) {
                continue;
            }
            under_root[i] = true;
            if p.dir == r.dir {
                is_module[i] = true;
            } else if inc.is_match(&p.dir) && !exc.is_match(&p.dir) {
                is_module[i] = true;
                hit = true;
            }
        }
        if !hit && !r.include.is_empty() {
            warnings.push(format!("{}: the workspace patterns match no package", r.file));
        }
    }

    let mut index: Vec<Option<usize>> = vec![None; pkgs.len()];
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, p) in pkgs.iter().enumerate() {
        if under_root[i] && !is_module[i] {
            continue;
        }
        let m = match p.name() {
            Some(n) => mods.add(&p.dir, n, SplitRule::Npm, true),
            None => mods.add(&p.dir, &p.dir, SplitRule::Npm, false),
        };
        index[i] = Some(m);
        if let Some(n) = p.name() {
            by_name.entry(n).or_insert(m);
        }
    }
    for dir in plain {
        mods.add_plain(dir, SplitRule::Npm);
    }
    for (i, p) in pkgs.iter().enumerate() {
        let Some(from) = index[i] else { continue };
        for field in DEP_FIELDS {
            let Some(deps) = p.json.get(field).and_then(Value::as_object) else { continue };
            for (name, spec) in deps {
                let spec = spec.as_str().unwrap_or("");
                let to = if let Some(path) =
                    ["file:", "link:", "portal:"].iter().find_map(|pre| spec.strip_prefix(pre))
                {
                    join(&p.dir, path).and_then(|d| mods.at(&d))
                } else {
                    // `workspace:other@^1` aliases another workspace package.
                    let alias = spec
                        .strip_prefix("workspace:")
                        .and_then(|s| s.rsplit_once('@'))
                        .map(|(n, _)| n)
                        .filter(|n| !n.is_empty());
                    by_name.get(alias.unwrap_or(name.as_str())).copied()
                };
                if let Some(to) = to {
                    mods.edge(from, to);
                }
            }
        }
    }
    Ok(())
}

fn root(dir: &str, file: String, pats: Vec<String>) -> Root {
    let (mut include, mut exclude) = (Vec::new(), Vec::new());
    for p in pats {
        match p.strip_prefix('!') {
            Some(neg) => exclude.push(neg.to_owned()),
            None => include.push(p),
        }
    }
    Root { dir: dir.to_owned(), file, include, exclude }
}

/// Patterns relative to the root, as globs over package folders.
fn globs(pats: &[String], r: &Root, warnings: &mut Vec<String>) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for p in pats {
        let Some(full) = join(&r.dir, p.trim_end_matches("/package.json")) else {
            warnings.push(format!("{}: workspace pattern {p:?} leaves the repository", r.file));
            continue;
        };
        match GlobBuilder::new(&full).literal_separator(true).build() {
            Ok(g) => {
                b.add(g);
            }
            Err(e) => warnings.push(format!("{}: workspace pattern {p:?}: {e}", r.file)),
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}
