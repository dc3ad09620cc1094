//! A hostile repository's manifests: each is a named warning or a documented skip, never a
//! panic, a stack overflow, an entity expansion or a long run.

use super::*;
use crate::plan::discover::MANIFEST_MAX;

fn plans(tree: &MemTree, rule: SplitRule) -> Plan {
    run(tree, &Selection::default(), &split(rule))
}

fn warned(p: &Plan, needles: &[&str]) {
    assert!(
        p.warnings.iter().any(|w| needles.iter().all(|n| w.contains(n))),
        "no warning with {needles:?} in {:#?}",
        p.warnings
    );
}

/// The module folders a plan found.
fn folders(p: &Plan) -> Vec<&str> {
    p.modules.iter().map(|m| m.path.as_str()).collect()
}

#[test]
fn a_manifest_over_the_cap_is_not_read_and_its_folder_is_a_plain_module() {
    let huge = format!("[package]\nname = \"huge\"\n#{}\n", "x".repeat(MANIFEST_MAX as usize));
    let tree = MemTree::new(&[("big/Cargo.toml", huge.as_str()), ("big/src/lib.rs", "x\n")]);
    let p = plans(&tree, SplitRule::Cargo);
    warned(&p, &["big/Cargo.toml", "more than the 4 MiB", "plain module"]);
    assert_eq!(folders(&p), ["big"]);
    assert_eq!(p.modules[0].name, "big", "not the name inside the file");
    // A tree that says a file is huge is believed before anything is read.
    let tree = MemTree::new(&[("package.json", r#"{"name":"small"}"#), ("a.js", "x\n")])
        .with_size("package.json", 1 << 40);
    warned(&plans(&tree, SplitRule::Npm), &["package.json", "1099511627776 bytes"]);
}

#[test]
fn deep_nesting_is_a_parse_warning() {
    let n = 100_000;
    let toml_arrays = format!("[package]\nname = \"a\"\nx = {}{}\n", "[".repeat(n), "]".repeat(n));
    let toml_tables = format!("[project]\nname = \"p\"\n{} = 1\n", vec!["k"; n].join("."));
    let toml_inline = format!("[package]\nname = \"b\"\nx = {}{}\n", "{y = ".repeat(n), "}".repeat(n));
    let json = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let json_objects = format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    let yaml_flow = format!("packages: {}{}\n", "[".repeat(n), "]".repeat(n));
    let yaml_block: String = (0..2_000).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    let xml = format!("<project>{}{}</project>", "<a>".repeat(n), "</a>".repeat(n));
    let cases: Vec<(SplitRule, &str, String, &str)> = vec![
        (SplitRule::Cargo, "a/Cargo.toml", toml_arrays, "a/Cargo.toml"),
        (SplitRule::Python, "p/pyproject.toml", toml_tables, "p/pyproject.toml"),
        (SplitRule::Cargo, "b/Cargo.toml", toml_inline, "b/Cargo.toml"),
        (SplitRule::Npm, "j/package.json", json, "j/package.json"),
        (SplitRule::Npm, "o/package.json", json_objects, "o/package.json"),
        (SplitRule::Npm, "pnpm-workspace.yaml", yaml_flow, "nested deeper than 64"),
        (SplitRule::Npm, "pnpm-workspace.yaml", yaml_block, "pnpm-workspace.yaml"),
    ];
    for (rule, path, text, needle) in cases {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        let src = if dir.is_empty() { "src.rs".to_owned() } else { format!("{dir}/src.rs") };
        let tree = MemTree::new(&[(path, text.as_str()), (src.as_str(), "x\n")]);
        let p = plans(&tree, rule);
        warned(&p, &[needle]);
    }
    // roxmltree builds deep XML without recursion: a deep pom is a module like any other.
    let tree = MemTree::new(&[("pom.xml", xml.as_str()), ("src/A.java", "x\n")]);
    assert_eq!(folders(&plans(&tree, SplitRule::Maven)), [""]);
}

#[test]
fn yaml_aliases_that_expand_without_end_are_refused() {
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for c in 'b'..='j' {
        laughs.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        prev = c;
    }
    laughs.push_str("packages: *j\n");
    let tree = MemTree::new(&[("pnpm-workspace.yaml", laughs.as_str()), ("package.json", "{}")]);
    warned(&plans(&tree, SplitRule::Npm), &["pnpm-workspace.yaml", "repetition limit"]);
}

#[test]
fn xml_entities_are_never_expanded() {
    let lol = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<project><artifactId>&lol3;</artifactId></project>"#;
    let external = r#"<?xml version="1.0"?>
<!DOCTYPE project [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<project><artifactId>&xxe;</artifactId></project>"#;
    for pom in [lol, external] {
        let tree = MemTree::new(&[("svc/pom.xml", pom), ("svc/A.java", "x\n")]);
        let p = plans(&tree, SplitRule::Maven);
        warned(&p, &["svc/pom.xml", "DTD"]);
        assert_eq!(p.modules[0].name, "svc", "the entity named nothing");
    }
}

#[test]
fn symlinked_and_submodule_manifests_are_not_read() {
    // A symlinked Cargo.toml is no manifest: its folder is no module, nothing is read through it.
    let tree = MemTree::new(&[
        ("Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\n"),
        ("crates/a/Cargo.toml", "[package]\nname = \"a\"\n"),
        ("crates/evil/Cargo.toml@", "../../../../etc/passwd"),
        ("crates/evil/src/lib.rs", "x\n"),
        ("crates/a/src/lib.rs", "x\n"),
    ]);
    let p = plans(&tree, SplitRule::Cargo);
    assert_eq!(folders(&p), ["crates/a", ""], "crates/evil is no package; its file goes to the root");
    // Files read by name (CODEOWNERS, a project's build.gradle) say why they were not read.
    let tree = MemTree::new(&[(".github/CODEOWNERS@", "/etc/shadow"), ("a/x.rs", "x\n")]);
    let p = plans(&tree, SplitRule::Codeowners);
    warned(&p, &[".github/CODEOWNERS", "a symlink"]);
    warned(&p, &["no CODEOWNERS file"]);
    let tree = MemTree::new(&[
        ("settings.gradle", "include ':app', ':lib'\n"),
        ("app/build.gradle@", "../lib/build.gradle"),
        ("lib/build.gradle#", ""),
        ("app/A.java", "x\n"),
        ("lib/L.java", "x\n"),
    ]);
    let p = plans(&tree, SplitRule::Gradle);
    warned(&p, &["app/build.gradle", "a symlink"]);
    warned(&p, &["lib/build.gradle", "a submodule"]);
}

#[test]
fn manifests_that_are_not_utf8_are_plain_modules() {
    let bad = b"[package]\nname = \"\xff\xfe\"\n";
    for (rule, path) in [
        (SplitRule::Cargo, "m/Cargo.toml"),
        (SplitRule::Npm, "m/package.json"),
        (SplitRule::Go, "m/go.mod"),
        (SplitRule::Python, "m/pyproject.toml"),
        (SplitRule::Maven, "m/pom.xml"),
    ] {
        let tree = MemTree::new(&[(path, ""), ("m/x.txt", "x\n")]).with_bytes(path, bad);
        let p = plans(&tree, rule);
        warned(&p, &[path, "not UTF-8"]);
        assert_eq!(folders(&p), ["m"], "{rule}");
    }
    let tree = MemTree::new(&[("CODEOWNERS", ""), ("x.txt", "x\n")]).with_bytes("CODEOWNERS", b"* @a\xff\n");
    warned(&plans(&tree, SplitRule::Codeowners), &["CODEOWNERS", "not UTF-8"]);
}

/// `include 'a',` on every line: each include's arguments run on to the end of the file. Read
/// once, not once per include (300,000 lines, near the cap, took minutes when it was quadratic).
#[test]
fn a_settings_file_of_endless_includes_is_read_in_one_pass() {
    let settings = "include 'a',\n".repeat(300_000);
    let tree = MemTree::new(&[("settings.gradle", settings.as_str()), ("a/A.java", "x\n")]);
    let p = plans(&tree, SplitRule::Gradle);
    assert!(folders(&p).contains(&"a"), "{:?}", folders(&p));
}

#[test]
fn a_huge_selected_file_is_not_read_to_count_lines() {
    let tree =
        MemTree::new(&[("a/big.bin", "x\n"), ("a/small.rs", "1\n2\n")]).with_size("a/big.bin", 1 << 40);
    let p = plans(&tree, SplitRule::Dirs);
    warned(&p, &["lines not counted", "a/big.bin"]);
    assert_eq!(p.tasks[0].lines, 2);
}
