//! The `npm` rule: npm / yarn workspaces (array and object forms) and pnpm.

use super::*;

#[test]
fn array_workspaces_with_negation_and_edges() {
    let t = MemTree::new(&[
        (
            "package.json",
            r#"{"name": "mono", "private": true, "workspaces": ["packages/*", "!packages/skip", "tools/*"]}"#,
        ),
        (
            "packages/ui/package.json",
            r#"{"name": "@acme/ui", "dependencies": {"@acme/core": "^1.0.0", "react": "18"}}"#,
        ),
        ("packages/ui/index.js", "ui\n"),
        ("packages/core/package.json", r#"{"name": "@acme/core"}"#),
        ("packages/core/index.js", "core\n"),
        ("packages/skip/package.json", r#"{"name": "skip"}"#),
        ("packages/skip/x.js", ""),
        ("packages/core/node_modules/dep/package.json", r#"{"name": "dep"}"#),
        ("packages/ui/test/fixture/package.json", r#"{"name": "fixture"}"#),
        (
            "tools/cli/package.json",
            r#"{"name": "cli", "devDependencies": {"@acme/ui": "file:../../packages/ui"}}"#,
        ),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Npm));
    assert_eq!(
        layout(&p),
        [
            "acme-core: packages/core/index.js packages/core/node_modules/dep/package.json packages/core/package.json",
            "mono: package.json packages/skip/package.json packages/skip/x.js",
            "acme-ui: packages/ui/index.js packages/ui/package.json packages/ui/test/fixture/package.json",
            "cli: tools/cli/package.json",
        ]
    );
    assert_eq!(task(&p, "acme-ui").depends_on, ["acme-core"]);
    assert_eq!(task(&p, "cli").depends_on, ["acme-ui"]);
    assert_eq!(task(&p, "acme-ui").title, "@acme/ui");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn object_workspaces() {
    let t = MemTree::new(&[
        ("package.json", r#"{"name": "root", "workspaces": {"packages": ["apps/**"], "nohoist": ["**/x"]}}"#),
        ("apps/web/package.json", r#"{"name": "web", "peerDependencies": {"shared": "*"}}"#),
        ("apps/lib/shared/package.json", r#"{"name": "shared"}"#),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Npm));
    assert_eq!(
        layout(&p),
        ["root: package.json", "shared: apps/lib/shared/package.json", "web: apps/web/package.json"]
    );
    assert_eq!(task(&p, "web").depends_on, ["shared"]);
}

#[test]
fn pnpm_workspace_yaml_with_workspace_protocol() {
    let t = MemTree::new(&[
        ("package.json", r#"{"name": "repo"}"#),
        ("pnpm-workspace.yaml", "packages:\n  - 'packages/*'\n  - 'apps/*'\n  - '!**/test/**'\n"),
        ("packages/a/package.json", r#"{"name": "a"}"#),
        ("packages/b/package.json", r#"{"name": "b", "dependencies": {"a": "workspace:*"}}"#),
        (
            "apps/site/package.json",
            r#"{"name": "site", "dependencies": {"bee": "workspace:b@^1", "lodash": "4"}}"#,
        ),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Npm));
    let order: Vec<(&str, u32)> = p.tasks.iter().map(|t| (t.slug.as_str(), t.level)).collect();
    assert_eq!(order, [("a", 0), ("repo", 0), ("b", 1), ("site", 2)]);
    assert_eq!(task(&p, "site").depends_on, ["b"]);
}

#[test]
fn a_broken_package_json_is_a_plain_module_with_a_warning() {
    let t = MemTree::new(&[
        ("package.json", r#"{"name": "r", "workspaces": ["p/*"]}"#),
        ("p/ok/package.json", r#"{"name": "ok"}"#),
        ("p/bad/package.json", "{\"name\": \"bad\",\n  oops }"),
        ("p/bad/i.js", ""),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Npm));
    assert_eq!(
        layout(&p),
        ["ok: p/ok/package.json", "p-bad: p/bad/i.js p/bad/package.json", "r: package.json"]
    );
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].starts_with("p/bad/package.json: key must be a string at line 2"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn lerna_packages() {
    let t = MemTree::new(&[
        ("lerna.json", r#"{"packages": ["modules/*"]}"#),
        ("package.json", r#"{"name": "top"}"#),
        ("modules/a/package.json", r#"{"name": "a", "dependencies": {"b": "^2"}}"#),
        ("modules/b/package.json", r#"{"name": "b"}"#),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Npm));
    assert_eq!(
        layout(&p),
        ["b: modules/b/package.json", "top: lerna.json package.json", "a: modules/a/package.json"]
    );
}

#[test]
fn a_dev_dependency_cycle_is_one_task_and_bad_yaml_warns() {
    let t = MemTree::new(&[
        ("package.json", r#"{"name": "r"}"#),
        ("pnpm-workspace.yaml", "packages: [\n"),
        ("a/package.json", r#"{"name": "a", "devDependencies": {"b": "*"}}"#),
        ("b/package.json", r#"{"name": "b", "dependencies": {"a": "*"}}"#),
        ("c/package.json", r#"{"name": "c", "dependencies": {"b": "*"}}"#),
    ]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Npm));
    // The broken workspace file leaves every package.json a module of its own.
    assert_eq!(
        layout(&p),
        ["a-b: a/package.json b/package.json", "r: package.json pnpm-workspace.yaml", "c: c/package.json"]
    );
    assert_eq!(task(&p, "c").depends_on, ["a-b"]);
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(p.warnings[0].starts_with("pnpm-workspace.yaml:"), "{:?}", p.warnings);
    assert_eq!(p.warnings[1], "dependency cycle between a, b: planned as one task so they change together");
}
