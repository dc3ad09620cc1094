//! The order of a job's repositories: what each one's manifests define and need
//! ([`interface`]), and from that the dependencies between the repositories, in levels
//! ([`order`]).
//!
//! A job can span several repositories; one that needs a package another defines (a Cargo git
//! or path dependency, a Go `require`, an npm dependency, a Maven dependency) comes after it.
//! Manifests are read with discovery's parsers, so a manifest means the same thing here as in
//! [`plan`](super::plan).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use toml::Value;

use super::discover::{self, cargo, go, maven, npm};
use super::paths::{join, parent};
use super::{SourceTree, TreeError, TreeFile};

/// A package a repository defines or depends on, by ecosystem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Package {
    /// A Cargo package, by package name.
    Cargo(String),
    /// A Go module, by module path.
    Go(String),
    /// An npm package, by name (scope included: `@acme/lib`).
    Npm(String),
    /// A Maven artifact.
    Maven { group: String, artifact: String },
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Package::Cargo(n) => write!(f, "cargo:{n}"),
            Package::Go(m) => write!(f, "go:{m}"),
            Package::Npm(n) => write!(f, "npm:{n}"),
            Package::Maven { group, artifact } => write!(f, "maven:{group}:{artifact}"),
        }
    }
}

/// What one repository's manifests say (at its base commit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// The packages its manifests define.
    pub defines: BTreeSet<Package>,
    /// The packages from outside it that its manifests need, each with the first manifest (by
    /// path) that says so, e.g. `app/Cargo.toml`. Never one of `defines`.
    pub needs: BTreeMap<Package, String>,
}

impl Interface {
    fn need(&mut self, p: Package, manifest: &str) {
        self.needs.entry(p).or_insert_with(|| manifest.to_owned());
    }
}

/// What comes of a manifest that is not read, in warnings.
const SKIPPED: &str = "skipped: what it defines and needs is not counted";

/// Folders of vendored dependencies and build output, besides those discovery already skips
/// (`node_modules`, test data): their manifests are someone else's.
const VENDORED: [&str; 2] = ["vendor", "target"];

/// What the manifests of `tree` define and need: every Cargo.toml, go.mod, package.json and
/// pom.xml, at the root and nested, outside vendored folders. A package the repository defines
/// itself is not a need, and neither is a Cargo path dependency on a folder of the tree. A
/// manifest that cannot be read or parsed is skipped with a warning naming it.
///
/// - Cargo: `[package] name` defines; git and path dependencies need, by their `package` key
///   when renamed: `[dependencies]`, `[dev-dependencies]`, `[build-dependencies]`, the same
///   under `[target.<cfg>]`, `[workspace.dependencies]` and `[patch.<registry>]`.
/// - Go: `module` defines; `require` and the module of a local `replace` need.
/// - npm: `name` defines; the keys of dependencies, devDependencies, peerDependencies and
///   optionalDependencies need.
/// - Maven: `groupId` (else the parent's) and `artifactId` define; `<dependencies>` and
///   `<dependencyManagement>` need, a missing or `${...}` group id read as the pom's own.
pub fn interface(tree: &dyn SourceTree, warnings: &mut Vec<String>) -> Result<Interface, TreeError> {
    let mut out = Interface::default();
    cargo_manifests(tree, &mut out, warnings)?;
    go_mods(tree, &mut out, warnings)?;
    package_jsons(tree, &mut out, warnings)?;
    poms(tree, &mut out, warnings)?;
    let Interface { defines, needs } = &mut out;
    needs.retain(|p, _| !defines.contains(p));
    Ok(out)
}

/// The manifests named `name`, outside vendored folders.
fn manifests<'t>(tree: &'t dyn SourceTree, name: &'t str) -> impl Iterator<Item = &'t TreeFile> + 't {
    discover::named(tree, name).filter(|f| !parent(&f.path).split('/').any(|c| VENDORED.contains(&c)))
}

fn read(tree: &dyn SourceTree, path: &str, warnings: &mut Vec<String>) -> Result<Option<String>, TreeError> {
    discover::read_manifest(tree, path, SKIPPED, warnings)
}

/// Whether the tree has a file inside folder `dir` (every tree has the root `""`).
fn is_folder(tree: &dyn SourceTree, dir: &str) -> bool {
    if dir.is_empty() {
        return true;
    }
    let prefix = format!("{dir}/");
    let files = tree.files();
    let i = files.partition_point(|f| f.path.as_str() < prefix.as_str());
    files.get(i).is_some_and(|f| f.path.starts_with(&prefix))
}

fn cargo_manifests(
    tree: &dyn SourceTree,
    out: &mut Interface,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    for f in manifests(tree, "Cargo.toml") {
        let Some(text) = read(tree, &f.path, warnings)? else { continue };
        let table = match cargo::parse(&f.path, &text) {
            Ok(t) => t,
            Err(e) => {
                warnings.push(format!("{e}; {SKIPPED}"));
                continue;
            }
        };
        if let Some(name) = table.get("package").and_then(|p| p.get("name")).and_then(Value::as_str) {
            out.defines.insert(Package::Cargo(name.to_owned()));
        }
        let mut tables = cargo::dep_tables(&table);
        tables.extend(table.get("workspace").and_then(|w| w.get("dependencies")).and_then(Value::as_table));
        if let Some(patch) = table.get("patch").and_then(Value::as_table) {
            tables.extend(patch.values().filter_map(Value::as_table));
        }
        let dir = parent(&f.path);
        for (key, dep) in tables.into_iter().flatten() {
            // A version alone, or `workspace = true` (its workspace's entry is read itself).
            let Some(dep) = dep.as_table() else { continue };
            let external = match dep.get("path").and_then(Value::as_str) {
                Some(p) => join(dir, p).is_none_or(|d| !is_folder(tree, &d)),
                None => dep.contains_key("git"),
            };
            if external {
                let name = dep.get("package").and_then(Value::as_str).unwrap_or(key);
                out.need(Package::Cargo(name.to_owned()), &f.path);
            }
        }
    }
    Ok(())
}

fn go_mods(tree: &dyn SourceTree, out: &mut Interface, warnings: &mut Vec<String>) -> Result<(), TreeError> {
    for f in manifests(tree, "go.mod") {
        let Some(text) = read(tree, &f.path, warnings)? else { continue };
        let gm = go::parse(&text);
        out.defines.extend(gm.module.map(Package::Go));
        for m in gm.require.into_iter().chain(gm.replace_local.into_iter().map(|(m, _)| m)) {
            out.need(Package::Go(m), &f.path);
        }
    }
    Ok(())
}

fn package_jsons(
    tree: &dyn SourceTree,
    out: &mut Interface,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    for f in manifests(tree, "package.json") {
        let Some(text) = read(tree, &f.path, warnings)? else { continue };
        let json = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(j) => j,
            Err(e) => {
                warnings
                    .push(format!("{}; {SKIPPED}", discover::located(&f.path, &text, None, &e.to_string())));
                continue;
            }
        };
        if let Some(name) = json.get("name").and_then(serde_json::Value::as_str).filter(|n| !n.is_empty()) {
            out.defines.insert(Package::Npm(name.to_owned()));
        }
        for field in npm::DEP_FIELDS {
            for name in
                json.get(field).and_then(serde_json::Value::as_object).into_iter().flat_map(|o| o.keys())
            {
                out.need(Package::Npm(name.clone()), &f.path);
            }
        }
    }
    Ok(())
}

fn poms(tree: &dyn SourceTree, out: &mut Interface, warnings: &mut Vec<String>) -> Result<(), TreeError> {
    for f in manifests(tree, "pom.xml") {
        let Some(text) = read(tree, &f.path, warnings)? else { continue };
        let pom = match maven::parse(&f.path, &text) {
            Ok(p) => p,
            Err(e) => {
                warnings.push(format!("{e}; {SKIPPED}"));
                continue;
            }
        };
        if let (Some(group), Some(artifact)) = (&pom.group, &pom.artifact) {
            out.defines.insert(Package::Maven { group: group.clone(), artifact: artifact.clone() });
        }
        for (group, artifact) in pom.deps.iter().chain(&pom.managed) {
            if let Some(group) = group.as_ref().or(pom.group.as_ref()) {
                out.need(Package::Maven { group: group.clone(), artifact: artifact.clone() }, &f.path);
            }
        }
    }
    Ok(())
}

/// One repository of a job, for [`order`].
#[derive(Debug, Clone, Copy)]
pub struct RepoNode<'a> {
    pub name: &'a str,
    pub interface: &'a Interface,
    /// Repositories it depends on whatever its manifests say, by name.
    pub depends_on: &'a [String],
}

/// One dependency between repositories: `from` needs `to`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepoEdge {
    pub from: String,
    pub to: String,
    /// Why: `app/Cargo.toml needs cargo:mylib`, or `depends_on`.
    pub why: String,
}

/// The repositories of a job in merge order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoOrder {
    /// Names, dependencies first: by level, then in the order given.
    pub order: Vec<String>,
    /// Each repository's level: 0 when it needs no other repository, else 1 + the highest level
    /// of those it needs. Repositories of one level are independent of each other.
    pub level: BTreeMap<String, u32>,
    /// Every dependency, once per pair, with its first reason: by repository in the order
    /// given, its manifests' needs (by package) before its `depends_on`.
    pub edges: Vec<RepoEdge>,
}

/// The repositories cannot be ordered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepoOrderError {
    /// A `depends_on` names no repository of the job.
    #[error("repository {from} depends on {to}, which is not a repository of the job")]
    Unknown { from: String, to: String },
    /// The repositories depend on each other in a circle: the names, each depending on the
    /// next, the first repeated at the end (`a -> b -> a`).
    #[error("the repositories depend on each other in a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Order a job's repositories, dependencies first: a repository depends on another when it
/// needs a package the other defines (on each, when two define it), or names it in its
/// `depends_on`. Names are expected to be unique (a name given twice means its first).
pub fn order(repos: &[RepoNode<'_>]) -> Result<RepoOrder, RepoOrderError> {
    let n = repos.len();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut definers: BTreeMap<&Package, Vec<usize>> = BTreeMap::new();
    for (i, r) in repos.iter().enumerate() {
        index.entry(r.name).or_insert(i);
        for p in &r.interface.defines {
            definers.entry(p).or_default().push(i);
        }
    }

    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut edges = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |from: usize, to: usize, why: String| {
        if from != to && seen.insert((from, to)) {
            deps[from].push(to);
            edges.push(RepoEdge { from: repos[from].name.to_owned(), to: repos[to].name.to_owned(), why });
        }
    };
    for (i, r) in repos.iter().enumerate() {
        for (p, manifest) in &r.interface.needs {
            for &j in definers.get(p).into_iter().flatten() {
                add(i, j, format!("{manifest} needs {p}"));
            }
        }
        for d in r.depends_on {
            let Some(&j) = index.get(d.as_str()) else {
                return Err(RepoOrderError::Unknown { from: r.name.to_owned(), to: d.clone() });
            };
            add(i, j, "depends_on".to_owned());
        }
    }

    // Kahn's algorithm: a repository is ready when all it needs is placed.
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            users[d].push(i);
        }
    }
    let mut level = vec![0u32; n];
    let mut placed = vec![false; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop() {
        placed[i] = true;
        level[i] = deps[i].iter().map(|&d| level[d] + 1).max().unwrap_or(0);
        for &u in &users[i] {
            waiting[u] -= 1;
            if waiting[u] == 0 {
                ready.push(u);
            }
        }
    }
    if let Some(start) = placed.iter().position(|p| !p) {
        return Err(RepoOrderError::Cycle(cycle(repos, &deps, &placed, start)));
    }

    let mut sequence: Vec<usize> = (0..n).collect();
    sequence.sort_by_key(|&i| (level[i], i));
    Ok(RepoOrder {
        order: sequence.iter().map(|&i| repos[i].name.to_owned()).collect(),
        level: repos.iter().zip(&level).map(|(r, &l)| (r.name.to_owned(), l)).collect(),
        edges,
    })
}

/// A cycle among the repositories Kahn's algorithm could not place (each has a dependency
/// among them), found by walking from `start`: names from its earliest repository (in the
/// order given), each depending on the next, the first repeated at the end.
fn cycle(repos: &[RepoNode<'_>], deps: &[Vec<usize>], placed: &[bool], start: usize) -> Vec<String> {
    let mut path: Vec<usize> = Vec::new();
    let mut at: HashMap<usize, usize> = HashMap::new();
    let mut cur = start;
    let ring = loop {
        if let Some(&k) = at.get(&cur) {
            break &path[k..];
        }
        at.insert(cur, path.len());
        path.push(cur);
        match deps[cur].iter().copied().find(|&d| !placed[d]) {
            Some(next) => cur = next,
            // Not reached: an unplaced repository waits on an unplaced one.
            None => break &path[path.len() - 1..],
        }
    };
    let first = ring.iter().enumerate().min_by_key(|&(_, &r)| r).map_or(0, |(k, _)| k);
    ring[first..].iter().chain(&ring[..=first]).map(|&r| repos[r].name.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::MemTree;

    fn read_tree(entries: &[(&str, &str)]) -> (Interface, Vec<String>) {
        let mut warnings = Vec::new();
        let i = interface(&MemTree::new(entries), &mut warnings).expect("reads");
        (i, warnings)
    }

    fn cargo(name: &str) -> Package {
        Package::Cargo(name.to_owned())
    }

    fn go(path: &str) -> Package {
        Package::Go(path.to_owned())
    }

    fn npm(name: &str) -> Package {
        Package::Npm(name.to_owned())
    }

    fn maven(group: &str, artifact: &str) -> Package {
        Package::Maven { group: group.to_owned(), artifact: artifact.to_owned() }
    }

    fn needs(i: &Interface) -> Vec<(String, &str)> {
        i.needs.iter().map(|(p, m)| (p.to_string(), m.as_str())).collect()
    }

    fn node<'a>(name: &'a str, interface: &'a Interface, depends_on: &'a [String]) -> RepoNode<'a> {
        RepoNode { name, interface, depends_on }
    }

    fn edges(o: &RepoOrder) -> Vec<String> {
        o.edges.iter().map(|e| format!("{} -> {}: {}", e.from, e.to, e.why)).collect()
    }

    fn levels(o: &RepoOrder) -> Vec<(&str, u32)> {
        o.level.iter().map(|(n, &l)| (n.as_str(), l)).collect()
    }

    #[test]
    fn cargo_consumers_come_after_their_library() {
        let (lib, w1) = read_tree(&[
            ("Cargo.toml", "[package]\nname = \"mylib\"\n[dependencies]\nmacros = { path = \"macros\" }\n"),
            ("macros/Cargo.toml", "[package]\nname = \"mylib-macros\"\n"),
            ("src/lib.rs", ""),
        ]);
        let (git, w2) = read_tree(&[(
            "Cargo.toml",
            "[package]\nname = \"app\"\n[dependencies]\nmylib = { git = \"https://example.com/lib\" }\nserde = \"1\"\n",
        )]);
        let (path, w3) = read_tree(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"app\"]\n"),
            (
                "app/Cargo.toml",
                "[package]\nname = \"tool\"\n[dependencies]\nmylib = { path = \"../../lib\" }\n",
            ),
        ]);
        assert!(w1.is_empty() && w2.is_empty() && w3.is_empty(), "{w1:?} {w2:?} {w3:?}");
        assert_eq!(lib.defines, [cargo("mylib"), cargo("mylib-macros")].into());
        assert!(lib.needs.is_empty(), "{lib:?}");
        assert_eq!(needs(&git), [("cargo:mylib".to_owned(), "Cargo.toml")]);
        assert_eq!(needs(&path), [("cargo:mylib".to_owned(), "app/Cargo.toml")]);

        let none: [String; 0] = [];
        let o =
            order(&[node("git-app", &git, &none), node("lib", &lib, &none), node("path-app", &path, &none)])
                .expect("orders");
        assert_eq!(o.order, ["lib", "git-app", "path-app"]);
        assert_eq!(levels(&o), [("git-app", 1), ("lib", 0), ("path-app", 1)]);
        assert_eq!(
            edges(&o),
            [
                "git-app -> lib: Cargo.toml needs cargo:mylib",
                "path-app -> lib: app/Cargo.toml needs cargo:mylib"
            ]
        );
    }

    #[test]
    fn cargo_needs_from_every_table_but_not_internal_paths() {
        let (i, w) = read_tree(&[
            (
                "Cargo.toml",
                r#"
[workspace]
members = ["app"]
[workspace.dependencies]
shared = { git = "https://example.com/shared", branch = "main" }
local = { path = "crates/local" }
[patch.crates-io]
serde = { git = "https://example.com/serde" }
"#,
            ),
            (
                "app/Cargo.toml",
                r#"
[package]
name = "app"
[dependencies]
lib = { package = "mylib", git = "https://example.com/lib" }
shared.workspace = true
local = { workspace = true }
fork = { path = "../third_party/fork" }
registry = "1"
tagged = { version = "1", features = ["x"] }
[dev-dependencies]
testkit = { path = "../../testkit" }
[build-dependencies]
codegen = { git = "https://example.com/codegen" }
[target.'cfg(unix)'.dependencies]
sys = { git = "https://example.com/sys" }
"#,
            ),
            ("crates/local/Cargo.toml", "[package]\nname = \"local\"\n"),
            // Sources of a fork kept in the tree: a folder of the tree, so internal.
            ("third_party/fork/src/lib.rs", ""),
            (
                "target/package/dep/Cargo.toml",
                "[package]\nname = \"built\"\n[dependencies]\nx = { git = \"g\" }\n",
            ),
            ("vendor/dep/Cargo.toml", "[package]\nname = \"vendored\"\n"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(i.defines, [cargo("app"), cargo("local")].into());
        assert_eq!(
            needs(&i),
            [
                ("cargo:codegen".to_owned(), "app/Cargo.toml"),
                ("cargo:mylib".to_owned(), "app/Cargo.toml"),
                ("cargo:serde".to_owned(), "Cargo.toml"),
                ("cargo:shared".to_owned(), "Cargo.toml"),
                ("cargo:sys".to_owned(), "app/Cargo.toml"),
                ("cargo:testkit".to_owned(), "app/Cargo.toml"),
            ]
        );
    }

    #[test]
    fn go_module_require_and_replace() {
        let (app, w) = read_tree(&[
            (
                "go.mod",
                "module example.com/app\n\ngo 1.22\n\nrequire (\n\texample.com/lib v0.0.0\n\tgolang.org/x/text v0.3.0 // indirect\n)\nrequire example.com/util v1.0.0\nreplace example.com/other => ../other\nreplace example.com/tools => ./tools\n",
            ),
            ("tools/go.mod", "module example.com/tools\n"),
            ("vendor/example.com/x/go.mod", "module example.com/x\n"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(app.defines, [go("example.com/app"), go("example.com/tools")].into());
        let want = ["example.com/lib", "example.com/other", "example.com/util", "golang.org/x/text"];
        assert_eq!(app.needs.keys().cloned().collect::<Vec<_>>(), want.map(go));
        let (lib, _) = read_tree(&[("lib/go.mod", "module example.com/lib\n")]);
        let o = order(&[node("app", &app, &[]), node("lib", &lib, &[])]).expect("orders");
        assert_eq!(o.order, ["lib", "app"]);
        assert_eq!(edges(&o), ["app -> lib: go.mod needs go:example.com/lib"]);
    }

    #[test]
    fn npm_scoped_names() {
        let (app, w) = read_tree(&[
            (
                "package.json",
                r#"{"name": "@acme/app", "dependencies": {"@acme/lib": "^1"}, "devDependencies": {"jest": "29"},
                    "peerDependencies": {"react": "18"}, "optionalDependencies": {"@acme/extra": "1"}}"#,
            ),
            ("web/package.json", r#"{"name": "@acme/web", "dependencies": {"@acme/app": "workspace:*"}}"#),
            ("node_modules/@acme/lib/package.json", r#"{"name": "@acme/lib"}"#),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(app.defines, [npm("@acme/app"), npm("@acme/web")].into());
        assert_eq!(
            app.needs.keys().cloned().collect::<Vec<_>>(),
            ["@acme/extra", "@acme/lib", "jest", "react"].map(npm)
        );
        let (lib, _) = read_tree(&[("package.json", r#"{"name": "@acme/lib"}"#)]);
        let o = order(&[node("app", &app, &[]), node("lib", &lib, &[])]).expect("orders");
        assert_eq!(edges(&o), ["app -> lib: package.json needs npm:@acme/lib"]);
    }

    #[test]
    fn maven_group_from_the_parent() {
        let (lib, w1) = read_tree(&[(
            "core/pom.xml",
            "<project><parent><groupId>org.acme</groupId><artifactId>parent</artifactId></parent>\
             <artifactId>lib</artifactId></project>",
        )]);
        let (app, w2) = read_tree(&[(
            "pom.xml",
            "<project><groupId>org.acme.app</groupId><artifactId>app</artifactId>\
             <dependencies>\
               <dependency><groupId>org.acme</groupId><artifactId>lib</artifactId></dependency>\
               <dependency><groupId>${project.groupId}</groupId><artifactId>app-util</artifactId></dependency>\
             </dependencies>\
             <dependencyManagement><dependencies>\
               <dependency><groupId>org.acme</groupId><artifactId>bom</artifactId><scope>import</scope></dependency>\
             </dependencies></dependencyManagement></project>",
        )]);
        assert!(w1.is_empty() && w2.is_empty(), "{w1:?} {w2:?}");
        assert_eq!(lib.defines, [maven("org.acme", "lib")].into());
        assert_eq!(app.defines, [maven("org.acme.app", "app")].into());
        assert_eq!(
            app.needs.keys().cloned().collect::<Vec<_>>(),
            [maven("org.acme", "bom"), maven("org.acme", "lib"), maven("org.acme.app", "app-util")]
        );
        let o = order(&[node("app", &app, &[]), node("lib", &lib, &[])]).expect("orders");
        assert_eq!(edges(&o), ["app -> lib: pom.xml needs maven:org.acme:lib"]);
    }

    #[test]
    fn explicit_depends_on_and_first_reasons() {
        let lib = Interface { defines: [cargo("mylib")].into(), ..Interface::default() };
        let app = Interface {
            defines: [cargo("app")].into(),
            needs: [(cargo("mylib"), "Cargo.toml".to_owned())].into(),
        };
        let empty = Interface::default();
        let (on_lib, on_docs) = (["lib".to_owned()], ["docs".to_owned(), "deploy".to_owned()]);
        let o = order(&[
            node("deploy", &empty, &on_docs),
            node("docs", &empty, &[]),
            node("app", &app, &on_lib),
            node("lib", &lib, &[]),
        ])
        .expect("orders");
        // docs and lib need nothing (deploy's depends_on on itself is ignored); the manifest's
        // reason for app -> lib comes first and is kept.
        assert_eq!(o.order, ["docs", "lib", "deploy", "app"]);
        assert_eq!(edges(&o), ["deploy -> docs: depends_on", "app -> lib: Cargo.toml needs cargo:mylib"]);
    }

    #[test]
    fn levels_are_the_longest_path_and_two_definers_give_two_edges() {
        let def = |p: &str| Interface { defines: [cargo(p)].into(), ..Interface::default() };
        let (a, b) = (def("shared"), def("shared"));
        let mut c = def("mid");
        c.needs.insert(cargo("shared"), "Cargo.toml".into());
        let mut d = def("top");
        d.needs.insert(cargo("mid"), "Cargo.toml".into());
        d.needs.insert(cargo("shared"), "x/Cargo.toml".into());
        let o = order(&[node("d", &d, &[]), node("c", &c, &[]), node("b", &b, &[]), node("a", &a, &[])])
            .expect("orders");
        assert_eq!(o.order, ["b", "a", "c", "d"]);
        assert_eq!(levels(&o), [("a", 0), ("b", 0), ("c", 1), ("d", 2)]);
        assert_eq!(
            edges(&o),
            [
                "d -> c: Cargo.toml needs cargo:mid",
                "d -> b: x/Cargo.toml needs cargo:shared",
                "d -> a: x/Cargo.toml needs cargo:shared",
                "c -> b: Cargo.toml needs cargo:shared",
                "c -> a: Cargo.toml needs cargo:shared",
            ]
        );
    }

    #[test]
    fn unknown_depends_on() {
        let empty = Interface::default();
        let on = ["nowhere".to_owned()];
        let e = order(&[node("a", &empty, &[]), node("b", &empty, &on)]).expect_err("unknown");
        assert_eq!(e, RepoOrderError::Unknown { from: "b".into(), to: "nowhere".into() });
        assert_eq!(e.to_string(), "repository b depends on nowhere, which is not a repository of the job");
    }

    #[test]
    fn a_cycle_of_three() {
        let empty = Interface::default();
        let on = |r: &str| [r.to_owned()];
        let (on_a, on_b, on_c) = (on("a"), on("b"), on("c"));
        // d leads into the cycle without being on it; the cycle starts at its earliest repository.
        let e = order(&[
            node("d", &empty, &on_c),
            node("b", &empty, &on_c),
            node("c", &empty, &on_a),
            node("a", &empty, &on_b),
        ])
        .expect_err("cycle");
        assert_eq!(e, RepoOrderError::Cycle(["b", "c", "a", "b"].map(String::from).to_vec()));
        let e = order(&[node("a", &empty, &on_b), node("b", &empty, &on_c), node("c", &empty, &on_a)])
            .expect_err("cycle");
        assert_eq!(e.to_string(), "the repositories depend on each other in a cycle: a -> b -> c -> a");
    }

    #[test]
    fn a_broken_manifest_is_a_warning_and_skipped() {
        let tree = MemTree::new(&[
            ("bad/go.mod", ""),
            ("broken/Cargo.toml", "[package\nname = \"broken\"\n"),
            ("ok/Cargo.toml", "[package]\nname = \"ok\"\n[dependencies]\nlib = { git = \"g\" }\n"),
            ("web/package.json", "{\"name\": "),
        ])
        .with_bytes("bad/go.mod", b"module \xff\n");
        let mut w = Vec::new();
        let i = interface(&tree, &mut w).expect("reads");
        assert_eq!(i.defines, [cargo("ok")].into());
        assert_eq!(needs(&i), [("cargo:lib".to_owned(), "ok/Cargo.toml")]);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("broken/Cargo.toml:1: ") && w[0].ends_with(SKIPPED), "{w:?}");
        assert!(w[1].starts_with("bad/go.mod: not UTF-8") && w[1].ends_with(SKIPPED), "{w:?}");
        assert!(w[2].starts_with("web/package.json: ") && w[2].ends_with(SKIPPED), "{w:?}");
    }

    #[test]
    fn packages_display_by_ecosystem() {
        let shown = [cargo("mylib"), go("example.com/lib"), npm("@acme/lib"), maven("org.acme", "lib")]
            .map(|p| p.to_string());
        assert_eq!(shown, ["cargo:mylib", "go:example.com/lib", "npm:@acme/lib", "maven:org.acme:lib"]);
    }
}
