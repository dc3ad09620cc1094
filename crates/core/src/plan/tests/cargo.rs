//! The `cargo` rule.

use super::*;

fn pkg(name: &str, deps: &str) -> String {
    format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n\n{deps}\n")
}

fn workspace() -> MemTree {
    let root = r#"
[workspace]
members = ["crates/*", "tools/gen"]
exclude = ["crates/fixtures"]

[workspace.dependencies]
core = { path = "crates/core", version = "0.1" }
serde = "1"
"#;
    let files = vec![
        ("Cargo.toml".to_owned(), root.to_owned()),
        ("README.md".to_owned(), "readme\n".to_owned()),
        ("docs/guide.md".to_owned(), "guide\n".to_owned()),
        ("crates/core/Cargo.toml".to_owned(), pkg("core", "[dependencies]\nserde.workspace = true")),
        ("crates/core/src/lib.rs".to_owned(), "pub fn a() {}\n".to_owned()),
        ("crates/core/macros/Cargo.toml".to_owned(), pkg("core-macros", "")),
        ("crates/core/macros/src/lib.rs".to_owned(), "m\n".to_owned()),
        (
            "crates/syntax/Cargo.toml".to_owned(),
            pkg(
                "syntax",
                "[dependencies]\ncore = { workspace = true }\n[build-dependencies]\ncore-macros = { path = \"../core/macros\" }",
            ),
        ),
        ("crates/syntax/src/lib.rs".to_owned(), "s\n".to_owned()),
        (
            "crates/ide/Cargo.toml".to_owned(),
            pkg(
                "ide",
                "[dependencies]\nsyntax = { path = \"../syntax\" }\ncore.workspace = true\n[target.'cfg(unix)'.dev-dependencies]\nhelper = { path = \"../../helper\" }",
            ),
        ),
        ("crates/ide/src/lib.rs".to_owned(), "i\n".to_owned()),
        ("crates/ide/tests/data/Cargo.toml".to_owned(), pkg("fixture-in-ide", "")),
        ("crates/ide/tests/data/src/lib.rs".to_owned(), "f\n".to_owned()),
        ("crates/fixtures/Cargo.toml".to_owned(), pkg("fixtures", "")),
        ("crates/fixtures/x.rs".to_owned(), "x\n".to_owned()),
        ("helper/Cargo.toml".to_owned(), pkg("helper", "")),
        ("helper/src/lib.rs".to_owned(), "h\n".to_owned()),
        (
            "tools/gen/Cargo.toml".to_owned(),
            pkg("gen", "[dev-dependencies]\nide = { path = \"../../crates/ide\" }"),
        ),
        ("tools/gen/main.rs".to_owned(), "g\n".to_owned()),
    ];
    let entries: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    MemTree::new(&entries)
}

#[test]
fn workspace_modules_ownership_and_order() {
    let p = run(&workspace(), &Selection::default(), &split(SplitRule::Cargo));
    assert_eq!(
        layout(&p),
        [
            "core: crates/core/Cargo.toml crates/core/src/lib.rs",
            "core-macros: crates/core/macros/Cargo.toml crates/core/macros/src/lib.rs",
            "helper: helper/Cargo.toml helper/src/lib.rs",
            // Excluded and non-member packages are not modules: fixtures go to the root task.
            "root: Cargo.toml README.md crates/fixtures/Cargo.toml crates/fixtures/x.rs docs/guide.md",
            "syntax: crates/syntax/Cargo.toml crates/syntax/src/lib.rs",
            "ide: crates/ide/Cargo.toml crates/ide/src/lib.rs crates/ide/tests/data/Cargo.toml crates/ide/tests/data/src/lib.rs",
            "gen: tools/gen/Cargo.toml tools/gen/main.rs",
        ]
    );
    let deps = |s: &str| task(&p, s).depends_on.clone();
    assert_eq!(deps("syntax"), ["core", "core-macros"]);
    // ide -> core is implied by ide -> syntax -> core: dropped.
    assert_eq!(deps("ide"), ["helper", "syntax"]);
    assert_eq!(deps("gen"), ["ide"]);
    let levels: Vec<(&str, u32)> = p.tasks.iter().map(|t| (t.slug.as_str(), t.level)).collect();
    assert_eq!(
        levels,
        [("core", 0), ("core-macros", 0), ("helper", 0), ("root", 0), ("syntax", 1), ("ide", 2), ("gen", 3)]
    );
    assert_eq!(task(&p, "core").sparse.as_deref(), Some(&["crates/core".to_owned()][..]));
    assert_eq!(
        task(&p, "root").sparse.as_deref(),
        Some(&["crates/fixtures".to_owned(), "docs".to_owned()][..])
    );
    assert_sparse_covers(&p);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let names: Vec<&str> = p.modules.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"helper") && !names.contains(&"fixtures") && !names.contains(&"fixture-in-ide"));
}

#[test]
fn selection_drops_tasks_but_keeps_order_through_unselected_modules() {
    let sel =
        Selection { include: vec!["crates/core/src/**".into(), "tools/**".into()], ..Selection::default() };
    let p = run(&workspace(), &sel, &split(SplitRule::Cargo));
    assert_eq!(layout(&p), ["core: crates/core/src/lib.rs", "gen: tools/gen/Cargo.toml tools/gen/main.rs"]);
    // gen -> ide -> syntax -> core: gen still waits for core.
    assert_eq!(task(&p, "gen").depends_on, ["core"]);
    assert_eq!(task(&p, "gen").level, 1);
}

#[test]
fn a_root_package_takes_loose_files() {
    let t = MemTree::new(&[
        (
            "Cargo.toml",
            "[package]\nname = \"app\"\n[workspace]\nmembers = [\"lib\"]\n[dependencies]\nlib = { path = \"lib\" }\n",
        ),
        ("src/main.rs", "m\n"),
        ("lib/Cargo.toml", "[package]\nname = \"lib\"\n"),
        ("lib/src/lib.rs", "l\n"),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Cargo));
    assert_eq!(layout(&p), ["lib: lib/Cargo.toml lib/src/lib.rs", "app: Cargo.toml src/main.rs"]);
    assert_eq!(task(&p, "app").depends_on, ["lib"]);
    // The root package's own folders are checked out, not the other modules'.
    assert_eq!(task(&p, "app").sparse.as_deref(), Some(&["src".to_owned()][..]));
}

#[test]
fn cycles_are_merged_with_a_warning() {
    let t = MemTree::new(&[
        ("Cargo.toml", "[workspace]\nmembers = [\"a\", \"b\", \"c\", \"d\"]\n"),
        ("a/Cargo.toml", "[package]\nname = \"a\"\n[dev-dependencies]\nb = { path = \"../b\" }\n"),
        ("a/lib.rs", ""),
        ("b/Cargo.toml", "[package]\nname = \"b\"\n[dependencies]\nc = { path = \"../c\" }\n"),
        ("b/lib.rs", ""),
        ("c/Cargo.toml", "[package]\nname = \"c\"\n[dependencies]\na = { path = \"../a\" }\n"),
        ("c/lib.rs", ""),
        ("d/Cargo.toml", "[package]\nname = \"d\"\n[dependencies]\nb = { path = \"../b\" }\n"),
        ("d/lib.rs", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Cargo));
    assert_eq!(
        layout(&p),
        [
            "a-b-c: a/Cargo.toml a/lib.rs b/Cargo.toml b/lib.rs c/Cargo.toml c/lib.rs",
            "root: Cargo.toml",
            "d: d/Cargo.toml d/lib.rs",
        ]
    );
    assert_eq!(task(&p, "d").depends_on, ["a-b-c"]);
    assert_eq!(task(&p, "a-b-c").title, "a, b, c");
    assert_eq!(
        task(&p, "a-b-c").sparse.as_deref(),
        Some(&["a".to_owned(), "b".to_owned(), "c".to_owned()][..])
    );
    assert_eq!(p.warnings, ["dependency cycle between a, b, c: planned as one task so they change together"]);
}

#[test]
fn colliding_names_fall_back_to_paths_and_bad_manifests_warn() {
    let t = MemTree::new(&[
        ("Cargo.toml", "[workspace]\nmembers = [\"x/*\", \"y/*\", \"nope/*\"]\n"),
        ("x/util/Cargo.toml", "[package]\nname = \"util\"\n"),
        ("x/util/lib.rs", ""),
        ("y/util/Cargo.toml", "[package]\nname = \"util\"\n"),
        ("y/util/lib.rs", ""),
        ("y/broken/Cargo.toml", "[package\nname = 1\n"),
        ("y/broken/lib.rs", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Cargo));
    let slugs: Vec<&str> = p.tasks.iter().map(|t| t.slug.as_str()).collect();
    assert_eq!(slugs, ["root", "x-util", "y-broken", "y-util"]);
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(p.warnings[0].starts_with("y/broken/Cargo.toml:1: "), "{:?}", p.warnings);
    assert!(p.warnings[0].ends_with("its folder is planned as a plain module"), "{:?}", p.warnings);
    assert_eq!(p.warnings[1], "Cargo.toml: workspace member \"nope/*\" matches no package");
}

#[test]
fn slugs_are_stable_across_plans() {
    let a = run(&workspace(), &Selection::default(), &split(SplitRule::Cargo));
    let b = run(&workspace(), &Selection::default(), &split(SplitRule::Cargo));
    assert_eq!(a, b);
    let sel = Selection { exclude: vec!["docs".into()], ..Selection::default() };
    let c = run(&workspace(), &sel, &split(SplitRule::Cargo));
    let slugs = |p: &Plan| p.tasks.iter().map(|t| t.slug.clone()).collect::<Vec<_>>();
    assert_eq!(slugs(&a), slugs(&c));
}

#[test]
fn patched_registry_dependencies_are_edges_and_fixtures_are_not_modules() {
    let t = MemTree::new(&[
        (
            "Cargo.toml",
            "[workspace]\nmembers = [\"app\"]\n[workspace.dependencies]\nlog = \"0.4\"\n[patch.crates-io]\nserde = { path = \"forks/serde\" }\nlog = { path = \"forks/log\" }\n",
        ),
        (
            "app/Cargo.toml",
            "[package]\nname = \"app\"\n[dependencies]\nserde = \"1\"\nlog.workspace = true\n",
        ),
        ("app/tests/fixtures/bad/Cargo.toml", "not toml ["),
        ("forks/serde/Cargo.toml", "[package]\nname = \"serde\"\n"),
        ("forks/log/Cargo.toml", "[package]\nname = \"log\"\n"),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Cargo));
    assert_eq!(
        layout(&p),
        [
            "log: forks/log/Cargo.toml",
            "root: Cargo.toml",
            "serde: forks/serde/Cargo.toml",
            "app: app/Cargo.toml app/tests/fixtures/bad/Cargo.toml"
        ]
    );
    assert_eq!(task(&p, "app").depends_on, ["log", "serde"]);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}
