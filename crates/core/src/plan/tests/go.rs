//! The `go` rule: multi-module repositories.

use super::*;

fn repo() -> MemTree {
    MemTree::new(&[
        ("go.work", "go 1.22\nuse (./app ./lib ./util)\n"),
        (
            "app/go.mod",
            "module example.com/app\n\nrequire example.com/lib v0.0.0\n\nreplace example.com/lib => ../lib\n",
        ),
        ("app/main.go", "package main\n"),
        ("app/cmd/serve/serve.go", "package serve\n"),
        ("app/internal/db/db.go", "package db\n"),
        ("app/internal/db/conn.go", "package db\n"),
        ("app/internal/http/h.go", "package http\n"),
        ("lib/go.mod", "module example.com/lib\nrequire (\n\texample.com/util v1.0.0\n)\n"),
        ("lib/lib.go", "package lib\n"),
        ("util/go.mod", "module example.com/util\n"),
        ("util/u.go", "package util\n"),
        ("util/testdata/go.mod", "module fixture\n"),
    ])
}

#[test]
fn modules_replace_and_require_edges() {
    let p = run(&repo(), &Selection::default(), &split(SplitRule::Go));
    assert_eq!(
        layout(&p),
        [
            "root: go.work",
            "util: util/go.mod util/testdata/go.mod util/u.go",
            "lib: lib/go.mod lib/lib.go",
            "app: app/cmd/serve/serve.go app/go.mod app/internal/db/conn.go app/internal/db/db.go app/internal/http/h.go app/main.go",
        ]
    );
    assert_eq!(task(&p, "app").depends_on, ["lib"]);
    assert_eq!(task(&p, "lib").depends_on, ["util"]);
    assert_eq!(task(&p, "app").title, "example.com/app");
}

#[test]
fn a_big_module_is_split_by_package() {
    let s = Split { max_files: Some(2), ..split(SplitRule::Go) };
    let p = run(&repo(), &Selection { include: vec!["app".into()], ..Selection::default() }, &s);
    // Packages fitting the bound whole stay whole (cmd/serve under cmd); neighbours too big
    // to share a task stay apart.
    assert_eq!(
        layout(&p),
        [
            "app: app/go.mod app/main.go",
            "app-cmd: app/cmd/serve/serve.go",
            "app-internal-db: app/internal/db/conn.go app/internal/db/db.go",
            "app-internal-http: app/internal/http/h.go",
        ]
    );
}

#[test]
fn a_go_mod_without_module_warns() {
    let t = MemTree::new(&[("a/go.mod", "go 1.22\n"), ("a/a.go", ""), ("b/go.mod", "module b\n")]);
    let p = run(&t, &Selection::default(), &split(SplitRule::Go));
    assert_eq!(layout(&p), ["a: a/a.go a/go.mod", "b: b/go.mod"]);
    assert_eq!(p.warnings, ["a/go.mod: no module directive; its folder is planned as a plain module"]);
}
