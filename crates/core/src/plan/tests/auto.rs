//! The `auto` rule: several ecosystems in one repository.

use super::*;

#[test]
fn several_ecosystems_at_once() {
    let t = MemTree::new(&[
        ("Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\n"),
        ("crates/engine/Cargo.toml", "[package]\nname = \"engine\"\n"),
        ("crates/engine/src/lib.rs", ""),
        // A crate that is also an npm package (wasm bindings): one module.
        (
            "crates/wasm/Cargo.toml",
            "[package]\nname = \"engine-wasm\"\n[dependencies]\nengine = { path = \"../engine\" }\n",
        ),
        ("crates/wasm/package.json", r#"{"name": "@x/wasm"}"#),
        ("package.json", r#"{"name": "site", "workspaces": ["web", "crates/wasm"]}"#),
        ("web/package.json", r#"{"name": "web", "dependencies": {"@x/wasm": "workspace:*"}}"#),
        ("web/index.ts", ""),
        ("svc/go.mod", "module example.com/svc\n"),
        ("svc/main.go", ""),
        ("py/pyproject.toml", "[project]\nname = \"tools\"\n"),
        ("docs/index.md", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Auto));
    assert_eq!(
        layout(&p),
        [
            "engine: crates/engine/Cargo.toml crates/engine/src/lib.rs",
            "site: Cargo.toml docs/index.md package.json",
            "svc: svc/go.mod svc/main.go",
            "tools: py/pyproject.toml",
            "engine-wasm: crates/wasm/Cargo.toml crates/wasm/package.json",
            "web: web/index.ts web/package.json",
        ]
    );
    assert_eq!(task(&p, "web").depends_on, ["engine-wasm"]);
    assert_eq!(task(&p, "web").level, 2);
    let rules: Vec<String> = p.modules.iter().map(|m| format!("{} {}", m.rule, m.path)).collect();
    assert!(rules.contains(&"cargo crates/wasm".to_owned()), "{rules:?}");
    assert!(rules.contains(&"go svc".to_owned()), "{rules:?}");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn a_plain_repository_is_split_by_folders() {
    let t = MemTree::new(&[("a/x", ""), ("b/y", ""), ("z", "")]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Auto));
    assert_eq!(layout(&p), ["a: a/x", "b: b/y", "root: z"]);
    assert!(p.warnings.is_empty());
}

#[test]
fn a_folder_with_a_broken_manifest_is_named_by_another_ecosystem() {
    let t = MemTree::new(&[
        ("ext/Cargo.toml", "[package\n"),
        ("ext/package.json", r#"{"name": "ext-js"}"#),
        ("ext/lib.rs", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Auto));
    assert_eq!(layout(&p), ["ext-js: ext/Cargo.toml ext/lib.rs ext/package.json"]);
    assert_eq!(p.modules[0].rule, SplitRule::Npm);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
}
