//! CODEOWNERS: one module per owner set, as GitHub assigns owners: the first of
//! `.github/CODEOWNERS`, `CODEOWNERS`, `docs/CODEOWNERS` is read, and for each file the last
//! matching rule wins. A rule with no owner leaves its files unowned; unowned files form one
//! module of their own. Patterns follow gitignore: `*` stays in one folder, `**` crosses
//! folders, a leading or inner `/` anchors at the root, a trailing `/` means a folder.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobSetBuilder};

use super::{Found, Modules, SourceTree, TreeError, read_text};
use crate::names::slugify;
use crate::plan::discover::SLUG_MAX;
use crate::spec::SplitRule;

const LOCATIONS: [&str; 3] = [".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"];

/// Returns whether a CODEOWNERS file was found.
pub(super) fn discover(
    tree: &dyn SourceTree,
    mods: &mut Modules,
    warnings: &mut Vec<String>,
) -> Result<bool, TreeError> {
    let files = tree.files();
    let Some(path) = LOCATIONS.iter().find(|l| files.binary_search_by(|f| f.path.as_str().cmp(l)).is_ok())
    else {
        return Ok(false);
    };
    let Some(text) = read_text(tree, path, warnings)? else { return Ok(false) };

    // Rules in file order; each compiled glob points back at its rule.
    let mut owners_of_rule: Vec<Vec<String>> = Vec::new();
    let mut set = GlobSetBuilder::new();
    let mut rule_of_glob: Vec<usize> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.split(" #").next().unwrap_or(line);
        let mut tokens = line.split_whitespace();
        let Some(pattern) = tokens.next() else { continue };
        let mut owners: Vec<String> = tokens.map(str::to_owned).collect();
        owners.sort();
        owners.dedup();
        let globs: Result<Vec<_>, _> =
            expand(pattern).iter().map(|g| GlobBuilder::new(g).literal_separator(true).build()).collect();
        match globs {
            Ok(gs) => {
                for g in gs {
                    set.add(g);
                    rule_of_glob.push(owners_of_rule.len());
                }
                owners_of_rule.push(owners);
            }
            Err(e) => warnings.push(format!("{path}:{}: pattern {pattern:?}: {e}; rule skipped", n + 1)),
        }
    }
    let set = match set.build() {
        Ok(s) => s,
        Err(e) => {
            warnings.push(format!("{path}: {e}"));
            return Ok(false);
        }
    };

    let mut module_of_set: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut by_file = Vec::with_capacity(files.len());
    let mut scratch = Vec::new();
    for f in files {
        set.matches_into(&f.path, &mut scratch);
        let owners =
            scratch.iter().map(|&g| rule_of_glob[g]).max().map_or(&[][..], |r| &owners_of_rule[r][..]);
        let m = match module_of_set.get(owners) {
            Some(&m) => m,
            None => {
                let (name, slug) = if owners.is_empty() {
                    ("(unowned)".to_owned(), "unowned".to_owned())
                } else {
                    let s = slugify(&owners.join("-"), SLUG_MAX);
                    (owners.join(" "), if s.is_empty() { "owners".into() } else { s })
                };
                mods.list.push(Found {
                    name,
                    path: String::new(),
                    rule: SplitRule::Codeowners,
                    slug,
                    plain: false,
                });
                module_of_set.insert(owners.to_vec(), mods.list.len() - 1);
                mods.list.len() - 1
            }
        };
        by_file.push(m);
    }
    mods.by_file = Some(by_file);
    Ok(true)
}

/// The globs one CODEOWNERS pattern stands for.
fn expand(pattern: &str) -> Vec<String> {
    let dir_only = pattern.ends_with('/');
    let p = pattern.trim_end_matches('/');
    let (anchored, p) = match p.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (p.contains('/'), p),
    };
    if p.is_empty() {
        return vec!["**".into()];
    }
    let base = if anchored { p.to_owned() } else { format!("**/{p}") };
    if dir_only {
        vec![format!("{base}/**")]
    } else if p.ends_with("/*") {
        // GitHub: `docs/*` owns the files of docs, not those of its sub-folders.
        vec![base]
    } else {
        vec![base.clone(), format!("{base}/**")]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_follow_github() {
        assert_eq!(super::expand("*.js"), ["**/*.js", "**/*.js/**"]);
        assert_eq!(super::expand("/docs/"), ["docs/**"]);
        assert_eq!(super::expand("apps/"), ["**/apps/**"]);
        assert_eq!(super::expand("src/app"), ["src/app", "src/app/**"]);
        assert_eq!(super::expand("*"), ["**/*", "**/*/**"]);
        assert_eq!(super::expand("docs/*"), ["docs/*"]);
    }
}
