//! Selection, `dirs` and `single`, ordering helpers.

use super::*;

fn tree() -> MemTree {
    MemTree::new(&[
        ("README.md", "hello\n"),
        ("a/x.rs", "fn x() {}\nfn FileId() {}\n"),
        ("a/b/y.rs", "y\n"),
        ("a/b/c/z.rs", "z\nFileId\n"),
        ("d/w.md", "w"),
        ("d/link@", "a/x.rs"),
        ("vendor/sub#", ""),
    ])
}

#[test]
fn dirs_at_depth_one() {
    let p = run(&tree(), &Selection::default(), &split(SplitRule::Dirs));
    assert_eq!(layout(&p), ["a: a/b/c/z.rs a/b/y.rs a/x.rs", "d: d/w.md", "root: README.md"]);
    assert_eq!(p.selected_files, 5);
    assert_eq!(task(&p, "a").sparse.as_deref(), Some(&["a".to_owned()][..]));
    assert_eq!(task(&p, "root").sparse.as_deref(), Some(&[][..]));
    assert_eq!(task(&p, "a").lines, 5);
    assert_eq!(task(&p, "d").lines, 1);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn dirs_at_depth_two_keep_shallow_files_with_their_folder() {
    let s = Split { depth: 2, ..split(SplitRule::Dirs) };
    let p = run(&tree(), &Selection::default(), &s);
    assert_eq!(layout(&p), ["a: a/x.rs", "a-b: a/b/c/z.rs a/b/y.rs", "d: d/w.md", "root: README.md"]);
    assert!(p.tasks.iter().all(|t| t.level == 0 && t.depends_on.is_empty()));
    assert_sparse_covers(&p);
}

#[test]
fn single_takes_everything_with_a_checkout_covering_it() {
    let p = run(&tree(), &Selection::default(), &split(SplitRule::Single));
    assert_eq!(p.tasks.len(), 1);
    assert_eq!(p.tasks[0].slug, "all");
    assert_eq!(p.tasks[0].sparse.as_deref(), Some(&["a".to_owned(), "d".to_owned()][..]));
    assert_sparse_covers(&p);
}

#[test]
fn include_exclude_and_unmatched_globs() {
    let sel = Selection {
        include: vec!["a/**".into(), "*.md".into(), "nothing/**".into()],
        exclude: vec!["a/b/c".into(), "*.tmp".into()],
        ..Selection::default()
    };
    let p = run(&tree(), &sel, &split(SplitRule::Dirs));
    assert_eq!(layout(&p), ["a: a/b/y.rs a/x.rs", "d: d/w.md", "root: README.md"]);
    assert_eq!(
        p.warnings,
        ["select.include: \"nothing/**\" matches no file", "select.exclude: \"*.tmp\" matches no file"]
    );
}

#[test]
fn grep_keeps_matching_files_only() {
    let sel = Selection { grep: Some(r"\bFileId\b".into()), ..Selection::default() };
    let p = run(&tree(), &sel, &split(SplitRule::Dirs));
    assert_eq!(layout(&p), ["a: a/b/c/z.rs a/x.rs"]);
    assert_eq!(p.selected_files, 2);
}

#[test]
fn explicit_files_warn_about_unknown_and_links() {
    let sel = Selection {
        files: vec!["./d/w.md".into(), "a/x.rs".into(), "gone.rs".into(), "d/link".into()],
        ..Selection::default()
    };
    let p = run(&tree(), &sel, &split(SplitRule::Dirs));
    assert_eq!(layout(&p), ["a: a/x.rs", "d: d/w.md"]);
    assert_eq!(
        p.warnings,
        ["select.files: not in the tree: gone.rs", "select.files: symlinks or submodules, left out: d/link"]
    );
}

#[test]
fn bad_patterns_are_errors() {
    let sel = Selection { grep: Some("(".into()), ..Selection::default() };
    let e = plan(&tree(), &sel, &split(SplitRule::Dirs)).unwrap_err();
    assert!(e.to_string().starts_with("select.grep: "), "{e}");
    let sel = Selection { include: vec!["a/[".into()], ..Selection::default() };
    let e = plan(&tree(), &sel, &split(SplitRule::Dirs)).unwrap_err();
    assert!(e.to_string().starts_with("select.include: "), "{e}");
}

#[test]
fn nothing_selected_gives_no_task() {
    let sel = Selection { include: vec!["zzz".into()], ..Selection::default() };
    let p = run(&tree(), &sel, &split(SplitRule::Dirs));
    assert!(p.tasks.is_empty());
    assert_eq!(p.selected_files, 0);
    assert_eq!(p.modules.len(), 3);
}

#[test]
fn tasks_name_their_modules_and_the_graph_renders_as_dot() {
    let t = MemTree::new(&[
        ("Cargo.toml", "[workspace]\nmembers = [\"a\", \"b\", \"c\"]\n"),
        ("a/Cargo.toml", "[package]\nname = \"a\"\n"),
        ("b/Cargo.toml", "[package]\nname = \"b\\\"q\"\n[dependencies]\na = { path = \"../a\" }\n"),
        ("c/Cargo.toml", "[package]\nname = \"c\"\n"),
    ]);
    let sel = Selection { exclude: vec!["c".into()], ..Selection::default() };
    let p = run(&t, &sel, &split(SplitRule::Cargo));
    let names = |t: &crate::plan::PlannedTask| {
        t.modules.iter().map(|&m| p.modules[m].name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(task(&p, "a")), ["a"]);
    assert_eq!(names(task(&p, "root")), ["(root)"]);
    let dot = p.dot();
    assert!(dot.starts_with("digraph modules {\n"), "{dot}");
    assert!(dot.contains("[label=\"b\\\"q\\nb\\ntask: b-q\"];"), "{dot}");
    assert!(dot.contains("[label=\"c\\nc\" style=dashed];"), "{dot}");
    assert!(dot.contains(" -> "), "{dot}");
    assert!(dot.ends_with("}\n"));
}

#[test]
fn a_checkout_of_too_many_folders_is_a_full_one() {
    let files: Vec<(String, String)> =
        (0..150).map(|i| (format!("d{i:03}/x/f.txt"), String::new())).collect();
    let entries: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let p = run(&MemTree::new(&entries), &Selection::default(), &split(SplitRule::Single));
    assert_eq!(p.tasks[0].sparse, None);
    let sel = Selection { include: vec!["d00*".into()], ..Selection::default() };
    let p = run(&MemTree::new(&entries), &sel, &split(SplitRule::Single));
    assert_eq!(p.tasks[0].sparse.as_ref().map(Vec::len), Some(10));
}
