//! Gradle: projects from settings.gradle / settings.gradle.kts `include` (`:a:b` is folder
//! `a/b`, unless `project(":a:b").projectDir` says otherwise), the settings folder being the
//! root project. Edges come from `project(":x")` / `project(path: ":x")` in each project's
//! build script and from type-safe accessors (`projects.fooBar`). Without a settings file,
//! each folder with a build.gradle(.kts) is a module.
//!
//! Build scripts are programs (Groovy, Kotlin); they are scanned for these forms only.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

use super::{Modules, SourceTree, TreeError, named, read_text};
use crate::plan::paths::{join, parent};
use crate::spec::SplitRule;

const BUILD_FILES: [&str; 2] = ["build.gradle", "build.gradle.kts"];

fn re(cell: &'static OnceLock<Option<Regex>>, pat: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pat).ok()).as_ref()
}

pub(super) fn discover(
    tree: &dyn SourceTree,
    mods: &mut Modules,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    // (gradle path, folder, module)
    let mut projects: Vec<(String, String, usize)> = Vec::new();
    let settings: Vec<String> = named(tree, "settings.gradle")
        .chain(named(tree, "settings.gradle.kts"))
        .map(|f| f.path.clone())
        .collect();
    for path in &settings {
        let dir = parent(path);
        let Some(text) = read_text(tree, path, warnings)? else { continue };
        let text = strip_comments(&text);
        let root_name = root_name(&text).unwrap_or_else(|| dir.rsplit('/').next().unwrap_or(dir).to_owned());
        let root = mods.add(
            dir,
            if root_name.is_empty() { dir } else { &root_name },
            SplitRule::Gradle,
            !root_name.is_empty(),
        );
        projects.push((":".to_owned(), dir.to_owned(), root));
        let dirs = project_dirs(&text);
        for p in includes(&text) {
            let gpath = if p.starts_with(':') { p.clone() } else { format!(":{p}") };
            let rel =
                dirs.get(&gpath).cloned().unwrap_or_else(|| gpath.trim_start_matches(':').replace(':', "/"));
            let Some(folder) = join(dir, &rel) else {
                warnings.push(format!("{path}: project {gpath:?} leaves the repository"));
                continue;
            };
            let m = mods.add(&folder, &gpath, SplitRule::Gradle, false);
            projects.push((gpath, folder, m));
        }
    }
    if settings.is_empty() {
        let dirs: Vec<String> =
            BUILD_FILES.iter().flat_map(|b| named(tree, b)).map(|f| parent(&f.path).to_owned()).collect();
        for d in dirs {
            let name = if d.is_empty() { String::new() } else { format!(":{}", d.replace('/', ":")) };
            let m = mods.add(&d, &name, SplitRule::Gradle, false);
            projects.push((if d.is_empty() { ":".into() } else { name }, d, m));
        }
    }

    let by_path: HashMap<&str, usize> = projects.iter().map(|(g, _, m)| (g.as_str(), *m)).collect();
    // Type-safe accessors: `projects.fooBar.baz` for `:foo-bar:baz`.
    let by_accessor: HashMap<String, usize> = projects.iter().map(|(g, _, m)| (accessor(g), *m)).collect();
    let mut edges = Vec::new();
    for (_, folder, m) in &projects {
        for b in BUILD_FILES {
            let file = if folder.is_empty() { b.to_owned() } else { format!("{folder}/{b}") };
            let Some(text) = read_text(tree, &file, warnings)? else { continue };
            let text = strip_comments(&text);
            for dep in project_refs(&text) {
                if let Some(&to) = by_path.get(dep.as_str()) {
                    edges.push((*m, to));
                }
            }
            for acc in accessors(&text) {
                // The longest prefix naming a project: `projects.core.dependencyProject`.
                let mut key = acc.as_str();
                loop {
                    if let Some(&to) = by_accessor.get(key) {
                        edges.push((*m, to));
                        break;
                    }
                    match key.rsplit_once('.') {
                        Some((k, _)) => key = k,
                        None => break,
                    }
                }
            }
        }
    }
    for (a, b) in edges {
        mods.edge(a, b);
    }
    Ok(())
}

/// Drop `//` line comments and `/* */` block comments (good enough for settings and builds;
/// `//` inside a string such as a URL is kept when it follows a `:`).
fn strip_comments(text: &str) -> String {
    static BLOCK: OnceLock<Option<Regex>> = OnceLock::new();
    static LINE: OnceLock<Option<Regex>> = OnceLock::new();
    let mut out = text.to_owned();
    if let Some(r) = re(&BLOCK, r"(?s)/\*.*?\*/") {
        out = r.replace_all(&out, "").into_owned();
    }
    if let Some(r) = re(&LINE, r"(?m)(^|[^:])//.*$") {
        out = r.replace_all(&out, "$1").into_owned();
    }
    out
}

fn root_name(text: &str) -> Option<String> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    let r = re(&R, r#"rootProject\.name\s*=\s*["']([^"']+)["']"#)?;
    r.captures(text).map(|c| c[1].to_owned())
}

/// Project paths named by `include` calls: `include ':a', ':b'`, `include(":a", ":b")`, over
/// several lines too (inside parentheses, or after a trailing comma).
fn includes(text: &str) -> Vec<String> {
    static WORD: OnceLock<Option<Regex>> = OnceLock::new();
    static QUOTED: OnceLock<Option<Regex>> = OnceLock::new();
    let (Some(word), Some(quoted)) = (re(&WORD, r"\binclude\b"), re(&QUOTED, r#"["']([^"']+)["']"#)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // Where the last call's arguments ended: an `include` inside them is not a call of its
    // own (and scanning it again would make a file of `include 'a',` lines quadratic).
    let mut consumed = 0;
    for m in word.find_iter(text) {
        if m.start() < consumed {
            continue;
        }
        let rest = text[m.end()..].trim_start_matches([' ', '\t']);
        let rest_at = text.len() - rest.len();
        let (args, args_at) = if let Some(inner) = rest.strip_prefix('(') {
            (inner.split(')').next().unwrap_or(""), rest_at + 1)
        } else {
            // Up to the end of the line, and on while lines end with a comma.
            let mut end = 0;
            for line in rest.split_inclusive('\n') {
                end += line.len();
                if !line.trim_end().ends_with(',') {
                    break;
                }
            }
            (&rest[..end], rest_at)
        };
        if !args.trim_start().starts_with(['"', '\'']) {
            continue;
        }
        consumed = args_at + args.len();
        out.extend(quoted.captures_iter(args).map(|q| q[1].to_owned()));
    }
    out
}

/// `project(":a").projectDir = file("libs/a")` overrides.
fn project_dirs(text: &str) -> HashMap<String, String> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    let Some(r) = re(
        &R,
        r#"project\(\s*["'](:[^"']+)["']\s*\)\.projectDir\s*=\s*(?:new\s+File\(\s*(?:rootDir|settingsDir)\s*,\s*|file\(\s*)["']([^"']+)["']"#,
    ) else {
        return HashMap::new();
    };
    r.captures_iter(text).map(|c| (c[1].to_owned(), c[2].to_owned())).collect()
}

/// Project paths in `project(":x")`, `project(path: ":x")`, `project(path = ":x")`.
fn project_refs(text: &str) -> Vec<String> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    let Some(r) = re(&R, r#"project\(\s*(?:path\s*[:=]\s*)?["'](:[^"']*)["']"#) else { return Vec::new() };
    r.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

/// Type-safe accessors used: `projects.foo.barBaz` as `foo.barbaz` (lower case, no separators).
fn accessors(text: &str) -> Vec<String> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    let Some(r) = re(&R, r"\bprojects((?:\.[A-Za-z_][A-Za-z0-9_]*)+)") else { return Vec::new() };
    r.captures_iter(text).map(|c| c[1].trim_start_matches('.').to_ascii_lowercase()).collect()
}

/// The accessor form of a gradle path: `:foo-bar:baz` as `foo.barbaz`.
fn accessor(gpath: &str) -> String {
    gpath
        .trim_start_matches(':')
        .split(':')
        .map(|c| c.chars().filter(|ch| ch.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_forms() {
        let s = strip_comments(
            "rootProject.name = \"shop\"\ninclude ':app', ':lib:core' // two\ninclude(\n  \":web\",\n  \":api\"\n)\n/* include ':old' */\ninclude \"x\"\nproject(':lib:core').projectDir = file('libs/core')\n",
        );
        assert_eq!(includes(&s), [":app", ":lib:core", ":web", ":api", "x"]);
        assert_eq!(root_name(&s).as_deref(), Some("shop"));
        assert_eq!(project_dirs(&s)[":lib:core"], "libs/core");
        let b = "dependencies {\n implementation(project(\":lib:core\"))\n api project(path: ':web')\n implementation(projects.fooBar.baz)\n}";
        assert_eq!(project_refs(b), [":lib:core", ":web"]);
        assert_eq!(accessors(b), ["foobar.baz"]);
        assert_eq!(accessor(":foo-bar:baz"), "foobar.baz");
    }
}
