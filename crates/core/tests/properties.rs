//! Property tests: the job spec parser and every manifest parser take any input without
//! panicking, and valid specs come back from TOML as they went in. 64 cases each by default;
//! `PROPTEST_CASES=10000 cargo test -p grove-core --test properties` runs more.

use std::collections::BTreeMap;
use std::time::Duration;

use grove_core::plan::{FileKind, SourceTree, TreeError, TreeFile, plan};
use grove_core::spec::{
    AgentKind, JobSpec, KeepWorktrees, MergeMode, OnConflict, Pick, Selection, Split, SplitRule, VariantSpec,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// Pieces of TOML, JSON, YAML, XML, go.mod, Gradle and CODEOWNERS, to be strung together.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "[[",
    "]]",
    "(",
    ")",
    "<",
    ">",
    "/>",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "=",
    ":",
    ",",
    ".",
    "\n",
    " ",
    "\t",
    "#",
    "//",
    "/*",
    "*/",
    "\\",
    "\\u",
    "!",
    "*",
    "**",
    "../",
    "./",
    "@",
    "&a",
    "*a",
    "-",
    "=>",
    "0",
    "1.5",
    "true",
    "1979-05-27",
    "\u{0}",
    "\u{feff}",
    "é",
    "name",
    "version",
    "members",
    "exclude",
    "workspace",
    "package",
    "dependencies",
    "path",
    "[workspace]",
    "[package]",
    "[project]",
    "[tool.poetry]",
    "[patch.crates-io]",
    "\"crates/*\"",
    "workspaces",
    "packages",
    "\"packages/*\"",
    "workspace:*",
    "file:../a",
    "<project>",
    "</project>",
    "<modules>",
    "<module>",
    "</module>",
    "<artifactId>",
    "</artifactId>",
    "<!DOCTYPE x [<!ENTITY e \"e\">]>",
    "&e;",
    "<![CDATA[",
    "module",
    "require",
    "replace",
    "go 1.22",
    "include",
    "include(",
    "project(",
    "\":a\"",
    "':b'",
    "projectDir",
    "rootProject.name",
    "projects.a",
    "@org/team",
    "@bob",
    "/docs/",
    "*.rs",
    "[metadata]",
    "install_requires",
    "dependency-groups",
    "sources",
    "setup(",
];

fn soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|t| t.concat().into_bytes())
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..400), soup()]
}

/// A tree held in memory; any content, any kind.
struct Tree {
    files: Vec<TreeFile>,
    content: BTreeMap<String, Vec<u8>>,
}

impl Tree {
    fn new(entries: Vec<(String, Vec<u8>, FileKind)>) -> Tree {
        let mut content = BTreeMap::new();
        let mut kinds = BTreeMap::new();
        for (p, c, k) in entries {
            kinds.insert(p.clone(), k);
            content.insert(p, c);
        }
        let files = content
            .iter()
            .map(|(p, c)| TreeFile { path: p.clone(), size: c.len() as u64, kind: kinds[p] })
            .collect();
        Tree { files, content }
    }
}

/// Paths, kinds and contents (lossy), for a failing case's report.
impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for t in &self.files {
            m.entry(&format!("{} ({:?})", t.path, t.kind), &String::from_utf8_lossy(&self.content[&t.path]));
        }
        m.finish()
    }
}

impl SourceTree for Tree {
    fn files(&self) -> &[TreeFile] {
        &self.files
    }
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        Ok(self.content.get(path).cloned())
    }
}

/// Where each rule looks for its manifests.
const MANIFESTS: &[(SplitRule, &str)] = &[
    (SplitRule::Cargo, "Cargo.toml"),
    (SplitRule::Cargo, "crates/a/Cargo.toml"),
    (SplitRule::Npm, "package.json"),
    (SplitRule::Npm, "packages/a/package.json"),
    (SplitRule::Npm, "pnpm-workspace.yaml"),
    (SplitRule::Npm, "lerna.json"),
    (SplitRule::Go, "go.mod"),
    (SplitRule::Go, "crates/a/go.mod"),
    (SplitRule::Python, "pyproject.toml"),
    (SplitRule::Python, "crates/a/setup.cfg"),
    (SplitRule::Maven, "pom.xml"),
    (SplitRule::Maven, "crates/a/pom.xml"),
    (SplitRule::Gradle, "settings.gradle"),
    (SplitRule::Gradle, "crates/a/build.gradle.kts"),
    (SplitRule::Codeowners, ".github/CODEOWNERS"),
    (SplitRule::Codeowners, "CODEOWNERS"),
];

fn kind() -> impl Strategy<Value = FileKind> {
    prop_oneof![
        8 => Just(FileKind::Regular),
        1 => Just(FileKind::Executable),
        1 => Just(FileKind::Symlink),
        1 => Just(FileKind::Submodule),
    ]
}

/// A tree with every manifest grove reads, each holding arbitrary bytes, beside source files.
fn hostile_tree() -> impl Strategy<Value = Tree> {
    prop::collection::vec((bytes(), kind()), MANIFESTS.len()).prop_map(|contents| {
        let mut entries: Vec<(String, Vec<u8>, FileKind)> =
            MANIFESTS.iter().zip(contents).map(|((_, p), (c, k))| ((*p).to_owned(), c, k)).collect();
        for src in ["crates/a/src/lib.rs", "packages/a/index.js", "src/main.go", "README"] {
            entries.push((src.to_owned(), b"FileId\n".to_vec(), FileKind::Regular));
        }
        Tree::new(entries)
    })
}

fn rules() -> impl Strategy<Value = SplitRule> {
    prop::sample::select(vec![
        SplitRule::Auto,
        SplitRule::Dirs,
        SplitRule::Cargo,
        SplitRule::Npm,
        SplitRule::Go,
        SplitRule::Python,
        SplitRule::Maven,
        SplitRule::Gradle,
        SplitRule::Codeowners,
        SplitRule::Single,
    ])
}

proptest! {
    #![proptest_config(config())]

    /// Every manifest parser, on anything: a plan (with warnings), never a panic, and every
    /// selected file in exactly one task.
    #[test]
    fn manifests_of_any_content_plan_without_panicking(tree in hostile_tree(), rule in rules()) {
        let p = plan(&tree, &Selection::default(), &Split { rule, ..Split::default() }).expect("a memory tree reads");
        let mut planned: Vec<&str> = p.tasks.iter().flat_map(|t| t.files.iter().map(String::as_str)).collect();
        planned.sort_unstable();
        let before = planned.len();
        planned.dedup();
        prop_assert_eq!(before, planned.len(), "a file in two tasks");
        prop_assert_eq!(planned.len(), p.selected_files);
    }

    /// The job spec parser on any text, and on TOML-like text: a spec or an error naming the
    /// file, never a panic; a parsed spec validates or is refused, never a panic.
    #[test]
    fn any_text_is_a_spec_or_an_error(text in prop_oneof![any::<String>(), soup().prop_map(|b| String::from_utf8_lossy(&b).into_owned())]) {
        match JobSpec::from_toml("job.toml", &text) {
            Ok(spec) => {
                let _ = spec.validate(Some(("job.toml", &text)));
            }
            Err(e) => prop_assert!(e.to_string().starts_with("job.toml: "), "{e}"),
        }
    }

    /// A spec written as TOML reads back field for field, and validates the same.
    #[test]
    fn specs_round_trip_through_toml(spec in specs()) {
        let text = toml::to_string(&spec).expect("serializes");
        let back = JobSpec::from_toml("job.toml", &text).expect("parses back");
        prop_assert_eq!(&back, &spec, "{}", text);
        prop_assert_eq!(back.validate(None).is_ok(), spec.validate(None).is_ok());
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9*/._-]{1,12}"]
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop::option::of(s)
}

fn duration() -> impl Strategy<Value = Duration> {
    (1u64..1_000_000).prop_map(Duration::from_secs)
}

fn specs() -> impl Strategy<Value = JobSpec> {
    let top = (opt(text()), opt(text()), opt(text()), opt(text()));
    let select = (prop::collection::vec(text(), 0..3), prop::collection::vec(text(), 0..3), opt(text()));
    let split = (rules(), 0u32..5, opt(any::<u32>()), opt(any::<u64>()), opt(any::<u32>()));
    let agent = (
        opt(prop::sample::select(vec![AgentKind::Replace, AgentKind::Command])),
        opt(text()),
        opt(text()),
        prop::collection::vec(text(), 0..3),
        prop::collection::btree_map("[A-Z_]{1,8}", text(), 0..3),
        opt(duration()),
        opt(any::<u32>()),
    );
    let run = (
        opt(any::<u32>()),
        prop::collection::vec(text(), 0..2),
        opt(any::<u16>()),
        opt(prop::sample::select(vec![KeepWorktrees::None, KeepWorktrees::Failed, KeepWorktrees::All])),
        opt(duration()),
        opt(duration()),
        opt(text()),
    );
    let merge = (
        opt(text()),
        opt(prop::sample::select(vec![MergeMode::Merge, MergeMode::Squash, MergeMode::Manual])),
        opt(prop::sample::select(vec![OnConflict::Redo, OnConflict::Attention, OnConflict::Abort])),
        opt(any::<u32>()),
        opt(prop::sample::select(vec![Pick::FirstPassing, Pick::SmallestDiff, Pick::Manual])),
        opt(text()),
        opt(text()),
    );
    let variants =
        prop::collection::vec(("[a-z0-9-]{1,8}", opt(text()), prop::collection::vec(text(), 0..2)), 0..3);
    (top, select, split, agent, run, merge, variants).prop_map(
        |(top, select, split, agent, run, merge, variants)| {
            let mut s = JobSpec::default();
            (s.name, s.prompt, s.repo.source, s.repo.base) = top;
            (s.select.include, s.select.exclude, s.select.grep) = select;
            (s.split.rule, s.split.depth, s.split.max_files, s.split.max_lines, s.split.max_tasks) = split;
            (
                s.agent.kind,
                s.agent.pattern,
                s.agent.replace,
                s.agent.command,
                s.agent.env,
                s.agent.turn_timeout,
                s.agent.max_turns,
            ) = agent;
            (
                s.run.concurrency,
                s.run.include_ignored,
                s.run.port_base,
                s.run.keep_worktrees,
                s.run.deadline,
                s.run.retry_backoff,
                s.run.pool,
            ) = run;
            let (branch, mode, on_conflict, max_redos, pick, task_check, integration_check) = merge;
            (s.merge.branch, s.merge.mode, s.merge.on_conflict, s.merge.max_redos, s.merge.pick) =
                (branch, mode, on_conflict, max_redos, pick);
            (s.checks.task, s.checks.integration) = (task_check, integration_check);
            s.variants = variants
                .into_iter()
                .map(|(name, prompt, command)| VariantSpec {
                    name,
                    prompt,
                    command,
                    ..VariantSpec::default()
                })
                .collect();
            s
        },
    )
}
