//! Sharding bounds: splitting, grouping, `max_tasks`, and slug stability.

use super::*;

fn entries(spec: &[(&str, usize)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (dir, n) in spec {
        for i in 0..*n {
            out.push((format!("{dir}/f{i}.rs"), format!("line\n{}", "x\n".repeat(i))));
        }
    }
    out
}

fn tree_of(extra: &[(&str, &str)], spec: &[(&str, usize)]) -> MemTree {
    let owned = entries(spec);
    let mut all: Vec<(&str, &str)> = owned.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    all.extend_from_slice(extra);
    MemTree::new(&all)
}

#[test]
fn a_big_module_is_split_by_sub_folder_and_small_pieces_packed() {
    let t = tree_of(
        &[
            ("Cargo.toml", "[workspace]\nmembers = [\"core\", \"app\"]\n"),
            ("core/Cargo.toml", "[package]\nname = \"core\"\n"),
            ("core/src/lib.rs", "lib\n"),
            ("app/Cargo.toml", "[package]\nname = \"app\"\n[dependencies]\ncore = { path = \"../core\" }\n"),
        ],
        &[("core/src/a", 3), ("core/src/b", 3), ("core/src/c/deep", 5)],
    );
    let s = Split { max_files: Some(4), ..split(SplitRule::Cargo) };
    let p = run(&t, &Selection::default(), &s);
    assert_eq!(
        layout(&p),
        [
            "core-src-a: core/src/a/f0.rs core/src/a/f1.rs core/src/a/f2.rs",
            "core-src-b: core/src/b/f0.rs core/src/b/f1.rs core/src/b/f2.rs",
            "core-src-c-deep-part-1: core/src/c/deep/f0.rs core/src/c/deep/f1.rs core/src/c/deep/f2.rs core/src/c/deep/f3.rs",
            "core-src-c-deep-part-2: core/src/c/deep/f4.rs",
            "core-to-src: core/Cargo.toml core/src/lib.rs",
            "root: Cargo.toml",
            "app: app/Cargo.toml",
        ]
    );
    let app = task(&p, "app");
    assert_eq!(app.depends_on.len(), 5, "{:?}", app.depends_on);
    assert_eq!(app.level, 1);
    assert_eq!(task(&p, "core-src-a").title, "core (src/a/)");
    assert_eq!(task(&p, "core-to-src").title, "core (./ to src/)");
    assert_eq!(task(&p, "core-src-a").sparse.as_deref(), Some(&["core".to_owned()][..]));
    assert!(p.tasks.iter().all(|t| t.files.len() <= 4));
}

#[test]
fn lines_bound_splits_too() {
    let t = tree_of(&[], &[("m/a", 3), ("m/b", 3)]);
    // f0 has 1 line, f1 2, f2 3: 6 lines per folder.
    let s = Split { max_lines: Some(6), ..split(SplitRule::Dirs) };
    let p = run(&t, &Selection::default(), &s);
    assert_eq!(layout(&p), ["m-a: m/a/f0.rs m/a/f1.rs m/a/f2.rs", "m-b: m/b/f0.rs m/b/f1.rs m/b/f2.rs"]);
    assert!(p.tasks.iter().all(|t| t.lines == 6));
}

#[test]
fn tiny_siblings_are_grouped_up_to_the_bound() {
    let t = tree_of(
        &[("README.md", "r\n")],
        &[("libs/a", 1), ("libs/b", 1), ("libs/c", 1), ("libs/d", 3), ("apps/x", 1)],
    );
    let s = Split { depth: 2, max_files: Some(3), ..split(SplitRule::Dirs) };
    let p = run(&t, &Selection::default(), &s);
    assert_eq!(
        layout(&p),
        [
            "apps-x: apps/x/f0.rs",
            "libs-a-to-libs-c: libs/a/f0.rs libs/b/f0.rs libs/c/f0.rs",
            "libs-d: libs/d/f0.rs libs/d/f1.rs libs/d/f2.rs",
            "root: README.md",
        ]
    );
    assert_eq!(task(&p, "libs-a-to-libs-c").title, "libs/a, libs/b, libs/c");
    assert_eq!(
        task(&p, "libs-a-to-libs-c").sparse.as_deref(),
        Some(&["libs/a".to_owned(), "libs/b".to_owned(), "libs/c".to_owned()][..])
    );
}

#[test]
fn grouping_never_joins_a_module_with_its_dependency() {
    let t = MemTree::new(&[
        ("Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\n"),
        ("crates/a/Cargo.toml", "[package]\nname = \"a\"\n"),
        ("crates/b/Cargo.toml", "[package]\nname = \"b\"\n[dependencies]\na = { path = \"../a\" }\n"),
        ("crates/c/Cargo.toml", "[package]\nname = \"c\"\n"),
    ]);
    let s = Split { max_files: Some(10), ..split(SplitRule::Cargo) };
    let p = run(&t, &Selection::default(), &s);
    assert_eq!(
        layout(&p),
        ["a-to-c: crates/a/Cargo.toml crates/c/Cargo.toml", "root: Cargo.toml", "b: crates/b/Cargo.toml",]
    );
    assert_eq!(task(&p, "b").depends_on, ["a-to-c"]);
}

#[test]
fn max_tasks_groups_within_levels_then_along_the_order() {
    let mut files = vec![("Cargo.toml".to_owned(), "[workspace]\nmembers = [\"*\"]\n".to_owned())];
    // A chain a <- b <- c and three independent crates x, y, z.
    for (name, dep) in [("a", ""), ("b", "a"), ("c", "b"), ("x", ""), ("y", ""), ("z", "")] {
        let deps = if dep.is_empty() { String::new() } else { format!("{dep} = {{ path = \"../{dep}\" }}") };
        files.push((
            format!("{name}/Cargo.toml"),
            format!("[package]\nname = \"{name}\"\n[dependencies]\n{deps}\n"),
        ));
        files.push((format!("{name}/lib.rs"), String::new()));
    }
    let entries: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let t = MemTree::new(&entries);
    let sel = Selection { exclude: vec!["/Cargo.toml".into()], ..Selection::default() };

    let s = Split { max_tasks: Some(4), ..split(SplitRule::Cargo) };
    let p = run(&t, &sel, &s);
    let slugs: Vec<&str> = p.tasks.iter().map(|t| t.slug.as_str()).collect();
    assert_eq!(slugs, ["a-to-x", "y-to-z", "b", "c"]);
    assert_eq!(task(&p, "c").depends_on, ["b"]);
    assert_eq!(task(&p, "b").depends_on, ["a-to-x"]);

    let s = Split { max_tasks: Some(2), ..split(SplitRule::Cargo) };
    let p = run(&t, &sel, &s);
    assert_eq!(p.tasks.len(), 2);
    assert_eq!(p.tasks.iter().map(|t| t.files.len()).sum::<usize>(), 12);
    assert_eq!(p.tasks[1].depends_on, [p.tasks[0].slug.clone()]);

    let s = Split { max_tasks: Some(1), ..split(SplitRule::Cargo) };
    let p = run(&t, &sel, &s);
    assert_eq!(p.tasks.len(), 1);
    assert_eq!(p.tasks[0].files.len(), 12);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    let s = Split { max_tasks: Some(2), max_files: Some(4), ..split(SplitRule::Cargo) };
    let p = run(&t, &sel, &s);
    assert_eq!(p.tasks.len(), 2);
    assert_eq!(
        p.warnings,
        ["split.max_tasks = 2 wins over the size bounds: 1 task(s) are bigger than max_files/max_lines"]
    );
}

#[test]
fn re_planning_after_a_change_keeps_slugs_and_moves_few_files() {
    let before = tree_of(&[], &[("m/a", 3), ("m/b", 3), ("m/c", 2), ("n", 2)]);
    let after = tree_of(&[], &[("m/a", 4), ("m/b", 3), ("m/c", 2), ("n", 2)]);
    let s = Split { max_files: Some(4), ..split(SplitRule::Dirs) };
    let a = run(&before, &Selection::default(), &s);
    let b = run(&after, &Selection::default(), &s);
    assert_eq!(
        layout(&a),
        [
            "m-a: m/a/f0.rs m/a/f1.rs m/a/f2.rs",
            "m-b: m/b/f0.rs m/b/f1.rs m/b/f2.rs",
            "m-c: m/c/f0.rs m/c/f1.rs",
            "n: n/f0.rs n/f1.rs",
        ]
    );
    assert_eq!(layout(&b)[0], "m-a: m/a/f0.rs m/a/f1.rs m/a/f2.rs m/a/f3.rs");
    assert_eq!(layout(&a)[1..], layout(&b)[1..]);
}

/// Which task each file is in, by slug.
fn owners(p: &Plan) -> BTreeMap<String, String> {
    p.tasks.iter().flat_map(|t| t.files.iter().map(|f| (f.clone(), t.slug.clone()))).collect()
}

#[test]
fn a_change_early_in_a_long_run_of_siblings_moves_few_files() {
    // Plain greedy packing would move nearly every file after the change; anchored cuts
    // resynchronise within a few tasks.
    let spec: Vec<(String, usize)> = (0..60).map(|i| (format!("pkgs/p{i:02}"), 1 + i % 3)).collect();
    let spec_ref: Vec<(&str, usize)> = spec.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let before = tree_of(&[], &spec_ref);
    let mut changed = spec_ref.clone();
    changed[1].1 += 3;
    let after = tree_of(&[], &changed);
    let s = Split { depth: 2, max_files: Some(8), ..split(SplitRule::Dirs) };
    let (a, b) = (run(&before, &Selection::default(), &s), run(&after, &Selection::default(), &s));
    let (oa, ob) = (owners(&a), owners(&b));
    let moved = oa.iter().filter(|(f, slug)| ob.get(*f) != Some(slug)).count();
    assert!(a.tasks.iter().all(|t| t.files.len() <= 8));
    assert!(moved <= 16, "{moved} of {} files moved:\n{:#?}\n{:#?}", oa.len(), layout(&a), layout(&b));
}
