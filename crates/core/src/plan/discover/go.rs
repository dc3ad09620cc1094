//! Go: every go.mod is a module (multi-module repositories). Edges come from `replace`
//! directives to local paths and from `require` of another module of the repository. Inside a
//! module, packages (folders) become sub-scopes when the module is over the job's bounds (the
//! sharder splits by sub-folder).
//!
//! go.mod has its own small line-based grammar, read here directive by directive.

use std::collections::HashMap;

use super::{Modules, SourceTree, TreeError, named, read_text};
use crate::plan::paths::{join, parent};
use crate::spec::SplitRule;

/// What one go.mod says.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct GoMod {
    pub module: Option<String>,
    pub require: Vec<String>,
    /// `(module path, local replacement)` for replacements by a folder.
    pub replace_local: Vec<(String, String)>,
}

pub(super) fn discover(
    tree: &dyn SourceTree,
    mods: &mut Modules,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    let mut found: Vec<(String, GoMod, usize)> = Vec::new();
    for f in named(tree, "go.mod") {
        if f.path.split('/').any(|c| c == "vendor") {
            continue;
        }
        let dir = parent(&f.path).to_owned();
        let Some(text) = read_text(tree, &f.path, warnings)? else {
            mods.add_plain(&dir, SplitRule::Go);
            continue;
        };
        let gm = parse(&text);
        let m = match &gm.module {
            Some(name) => mods.add(&dir, name, SplitRule::Go, false),
            None => {
                warnings.push(format!(
                    "{}: no module directive; its folder is planned as a plain module",
                    f.path
                ));
                mods.add_plain(&dir, SplitRule::Go)
            }
        };
        found.push((dir, gm, m));
    }
    let by_path: HashMap<&str, usize> =
        found.iter().filter_map(|(_, gm, m)| Some((gm.module.as_deref()?, *m))).collect();
    let mut edges = Vec::new();
    for (dir, gm, m) in &found {
        for r in &gm.require {
            if let Some(&to) = by_path.get(r.as_str()) {
                edges.push((*m, to));
            }
        }
        for (_, local) in &gm.replace_local {
            if let Some(to) = join(dir, local).and_then(|d| mods.at(&d)) {
                edges.push((*m, to));
            }
        }
    }
    for (a, b) in edges {
        mods.edge(a, b);
    }
    Ok(())
}

/// Read the directives of a go.mod.
pub(crate) fn parse(text: &str) -> GoMod {
    let mut gm = GoMod::default();
    let mut block: Option<String> = None;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(b) = &block {
            if line == ")" {
                block = None;
            } else {
                directive(&mut gm, &b.clone(), line);
            }
            continue;
        }
        let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        if rest == "(" {
            block = Some(verb.to_owned());
        } else {
            directive(&mut gm, verb, rest);
        }
    }
    gm
}

fn directive(gm: &mut GoMod, verb: &str, args: &str) {
    let unquote = |s: &str| s.trim().trim_matches('"').trim_matches('`').to_owned();
    match verb {
        "module" => gm.module = Some(unquote(args)),
        "require" => {
            if let Some(m) = args.split_whitespace().next() {
                gm.require.push(unquote(m));
            }
        }
        "replace" => {
            let Some((from, to)) = args.split_once("=>") else { return };
            let from = from.split_whitespace().next().map(unquote).unwrap_or_default();
            let to: Vec<&str> = to.split_whitespace().collect();
            // A local replacement is a path with no version; it starts with ./ or ../ .
            if let [path] = to[..] {
                let path = unquote(path);
                if path.starts_with("./") || path.starts_with("../") || path == "." || path == ".." {
                    gm.replace_local.push((from, path));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_mod_directives() {
        let gm = super::parse(
            "module example.com/app // the app\n\ngo 1.22\n\nrequire (\n\texample.com/lib v0.0.0\n\tgolang.org/x/text v0.3.0 // indirect\n)\nrequire example.com/util v1.0.0\nreplace example.com/lib => ../lib\nreplace (\n  example.com/util v1.0.0 => ./util\n  golang.org/x/net => golang.org/x/net v1.2.3\n)\n",
        );
        assert_eq!(gm.module.as_deref(), Some("example.com/app"));
        assert_eq!(gm.require, ["example.com/lib", "golang.org/x/text", "example.com/util"]);
        assert_eq!(
            gm.replace_local,
            [
                ("example.com/lib".to_owned(), "../lib".to_owned()),
                ("example.com/util".to_owned(), "./util".to_owned())
            ]
        );
    }
}
