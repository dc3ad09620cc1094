//! Cargo: packages found through workspace `members` (globs) and `exclude`, path dependencies
//! that cargo makes members on its own, and standalone packages outside any workspace. Edges
//! come from `path` dependencies (normal, dev, build, target-specific) and from
//! `workspace = true` dependencies whose `[workspace.dependencies]` entry has a path, and from
//! registry dependencies that a `[patch.<registry>]` entry replaces with a local path.
//!
//! A `Cargo.toml` under a workspace that is neither a member nor a workspace itself (a test
//! fixture, an excluded folder) is not a module: its files belong to the package around it.

use std::collections::HashMap;

use globset::{GlobBuilder, GlobSetBuilder};
use toml::{Table, Value};

use super::{Modules, PLAIN, SourceTree, TreeError, located, named, read_text};
use crate::plan::paths::{is_within, join, parent};
use crate::spec::SplitRule;

const DEP_TABLES: [&str; 5] =
    ["dependencies", "dev-dependencies", "build-dependencies", "dev_dependencies", "build_dependencies"];

struct Manifest {
    dir: String,
    path: String,
    table: Table,
}

impl Manifest {
    fn package(&self) -> Option<&Table> {
        self.table.get("package").and_then(Value::as_table)
    }
    fn workspace(&self) -> Option<&Table> {
        self.table.get("workspace").and_then(Value::as_table)
    }
}

pub(super) fn discover(
    tree: &dyn SourceTree,
    mods: &mut Modules,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    let mut ms: Vec<Manifest> = Vec::new();
    for f in named(tree, "Cargo.toml") {
        let dir = parent(&f.path);
        let Some(text) = read_text(tree, &f.path, warnings)? else {
            mods.add_plain(dir, SplitRule::Cargo);
            continue;
        };
        match parse(&f.path, &text) {
            Ok(table) => ms.push(Manifest { dir: dir.to_owned(), path: f.path.clone(), table }),
            Err(e) => {
                warnings.push(format!("{e}; {PLAIN}"));
                mods.add_plain(dir, SplitRule::Cargo);
            }
        }
    }
    let by_dir: HashMap<&str, usize> = ms.iter().enumerate().map(|(i, m)| (m.dir.as_str(), i)).collect();
    let workspaces: Vec<usize> = (0..ms.len()).filter(|&i| ms[i].workspace().is_some()).collect();

    // The workspace each manifest belongs to: an explicit `package.workspace`, else the innermost
    // workspace root at or above it.
    let ws_of: Vec<Option<usize>> = ms
        .iter()
        .map(|m| {
            if let Some(w) = m.package().and_then(|p| p.get("workspace")).and_then(Value::as_str) {
                return join(&m.dir, w).and_then(|d| by_dir.get(d.as_str()).copied());
            }
            workspaces
                .iter()
                .copied()
                .filter(|&w| is_within(&m.dir, &ms[w].dir))
                .max_by_key(|&w| ms[w].dir.len())
        })
        .collect();

    let mut member = vec![false; ms.len()];
    let mut excluded: Vec<Vec<String>> = vec![Vec::new(); ms.len()];
    for &w in &workspaces {
        let wm = &ms[w];
        let Some(wt) = wm.workspace() else { continue };
        excluded[w] = strings(wt.get("exclude")).filter_map(|e| join(&wm.dir, e)).collect();
        if wm.package().is_some() {
            member[w] = true;
        }
        // All member globs in one set: one pass over the manifests, however many members.
        let mut set = GlobSetBuilder::new();
        let mut pats = Vec::new();
        for pat in strings(wt.get("members")) {
            let Some(full) = join(&wm.dir, pat) else {
                warnings.push(format!("{}: workspace member {pat:?} leaves the repository", wm.path));
                continue;
            };
            match GlobBuilder::new(&full).literal_separator(true).build() {
                Ok(g) => {
                    set.add(g);
                    pats.push(pat);
                }
                Err(e) => warnings.push(format!("{}: workspace member {pat:?}: {e}", wm.path)),
            }
        }
        let set = match set.build() {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("{}: workspace members: {e}", wm.path));
                continue;
            }
        };
        let mut hit = vec![false; pats.len()];
        let mut scratch = Vec::new();
        for (i, m) in ms.iter().enumerate() {
            if m.package().is_none()
                || !is_within(&m.dir, &wm.dir)
                || excluded[w].iter().any(|e| is_within(&m.dir, e))
            {
                continue;
            }
            set.matches_into(&m.dir, &mut scratch);
            for &g in &scratch {
                hit[g] = true;
                member[i] = true;
            }
        }
        for (pat, hit) in pats.iter().zip(hit) {
            if !hit {
                warnings.push(format!("{}: workspace member {pat:?} matches no package", wm.path));
            }
        }
    }

    // Path dependencies inside a member's workspace are members too (cargo does the same), and
    // so are local crates the workspace patches in.
    for &w in &workspaces {
        for dir in patches(&ms[w]).values() {
            if let Some(&j) = by_dir.get(dir.as_str())
                && ms[j].package().is_some()
                && !excluded[w].iter().any(|e| is_within(dir, e))
            {
                member[j] = true;
            }
        }
    }
    let mut work: Vec<usize> = (0..ms.len()).filter(|&i| member[i]).collect();
    while let Some(i) = work.pop() {
        let ws = ws_of[i];
        for dir in dep_dirs(&ms[i], ws.map(|w| &ms[w])) {
            let Some(&j) = by_dir.get(dir.as_str()) else { continue };
            if member[j] || ms[j].package().is_none() {
                continue;
            }
            if let Some(w) = ws
                && is_within(&ms[j].dir, &ms[w].dir)
                && !excluded[w].iter().any(|e| is_within(&ms[j].dir, e))
            {
                member[j] = true;
                work.push(j);
            }
        }
    }

    let mut index: Vec<Option<usize>> = vec![None; ms.len()];
    for (i, m) in ms.iter().enumerate() {
        let Some(pkg) = m.package() else { continue };
        if !(member[i] || ws_of[i].is_none()) {
            continue;
        }
        let name = pkg.get("name").and_then(Value::as_str);
        index[i] = Some(match name {
            Some(n) => mods.add(&m.dir, n, SplitRule::Cargo, true),
            None => mods.add(&m.dir, &m.dir, SplitRule::Cargo, false),
        });
    }
    for (i, m) in ms.iter().enumerate() {
        let Some(from) = index[i] else { continue };
        for dir in dep_dirs(m, ws_of[i].map(|w| &ms[w])) {
            if let Some(to) = mods.at(&dir) {
                mods.edge(from, to);
            }
        }
    }
    Ok(())
}

/// A Cargo.toml's table, or the parser's message naming the file and line.
pub(crate) fn parse(path: &str, text: &str) -> Result<Table, String> {
    text.parse::<Table>().map_err(|e| located(path, text, e.span().map(|s| s.start), e.message()))
}

/// The dependency tables of a manifest: normal, dev and build, at the top and under each
/// `[target.<cfg>]` (`[workspace.dependencies]` is not one of them).
pub(crate) fn dep_tables(table: &Table) -> Vec<&Table> {
    let mut tables: Vec<&Table> = DEP_TABLES.iter().filter_map(|k| table.get(*k)?.as_table()).collect();
    if let Some(targets) = table.get("target").and_then(Value::as_table) {
        for t in targets.values().filter_map(Value::as_table) {
            tables.extend(DEP_TABLES.iter().filter_map(|k| t.get(*k)?.as_table()));
        }
    }
    tables
}

fn strings(v: Option<&Value>) -> impl Iterator<Item = &str> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

/// `[patch.<registry>]` entries with a path, by package name, as folders.
fn patches(m: &Manifest) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for reg in m.table.get("patch").and_then(Value::as_table).into_iter().flat_map(|t| t.values()) {
        for (name, v) in reg.as_table().into_iter().flatten() {
            if let Some(p) = v.get("path").and_then(Value::as_str)
                && let Some(dir) = join(&m.dir, p)
            {
                let name = v.get("package").and_then(Value::as_str).unwrap_or(name);
                out.insert(name.to_owned(), dir);
            }
        }
    }
    out
}

/// The folders of `m`'s local dependencies: `path` ones, `workspace = true` ones resolved
/// through `ws`, and registry ones that `ws` (or `m`) patches with a local path.
fn dep_dirs(m: &Manifest, ws: Option<&Manifest>) -> Vec<String> {
    let tables = dep_tables(&m.table);
    let ws_deps = ws.and_then(|w| Some((w, w.workspace()?.get("dependencies")?.as_table()?)));
    let mut patched = ws.map(patches).unwrap_or_default();
    if ws.is_none_or(|w| w.dir != m.dir) {
        patched.extend(patches(m));
    }
    let mut out = Vec::new();
    for t in tables {
        for (key, v) in t {
            let d = v.as_table();
            let mut name = field(d, "package").and_then(Value::as_str).unwrap_or(key);
            if let Some(p) = field(d, "path").and_then(Value::as_str) {
                out.extend(join(&m.dir, p));
                continue;
            }
            if field(d, "workspace").and_then(Value::as_bool) == Some(true)
                && let Some((w, deps)) = ws_deps
                && let Some(entry) = deps.get(key)
            {
                let e = entry.as_table();
                if let Some(p) = field(e, "path").and_then(Value::as_str) {
                    out.extend(join(&w.dir, p));
                    continue;
                }
                name = field(e, "package").and_then(Value::as_str).unwrap_or(key);
            }
            if let Some(dir) = patched.get(name) {
                out.push(dir.clone());
            }
        }
    }
    out
}

fn field<'t>(d: Option<&'t Table>, f: &str) -> Option<&'t Value> {
    d.and_then(|d| d.get(f))
}
