//! Planning speed on generated repositories (in memory): a 2,500-file, 50-crate Cargo
//! workspace and a 100,000-file, 2,000-crate one. Targets: under 200 ms and under 3 s.
//!
//! Run with `cargo bench -p grove-core`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use grove_core::plan::{FileKind, SourceTree, TreeError, TreeFile, plan};
use grove_core::spec::{Selection, Split, SplitRule};

struct MemTree {
    files: Vec<TreeFile>,
    content: HashMap<String, Vec<u8>>,
}

impl SourceTree for MemTree {
    fn files(&self) -> &[TreeFile] {
        &self.files
    }
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        Ok(self.content.get(path).cloned())
    }
}

/// A Cargo workspace of `crates` crates with `files` files in all; crate `i` depends on the
/// crates `i / 2` and `i - 1` (a deep, branching graph).
fn workspace(crates: usize, files: usize) -> MemTree {
    let mut content: HashMap<String, Vec<u8>> = HashMap::new();
    content.insert("Cargo.toml".into(), b"[workspace]\nmembers = [\"crates/*\"]\n".to_vec());
    let per = files / crates - 1;
    for i in 0..crates {
        let mut deps = String::new();
        for d in [i / 2, i.wrapping_sub(1)] {
            if d < i {
                deps.push_str(&format!("c{d:04} = {{ path = \"../c{d:04}\" }}\n"));
            }
        }
        let manifest =
            format!("[package]\nname = \"c{i:04}\"\nversion = \"0.1.0\"\n\n[dependencies]\n{deps}");
        content.insert(format!("crates/c{i:04}/Cargo.toml"), manifest.into_bytes());
        for f in 0..per {
            let dir = if f % 3 == 0 { "src" } else { "src/inner" };
            let body = format!("// file {f}\npub fn f{f}() -> u32 {{\n    {f}\n}}\n");
            content.insert(format!("crates/c{i:04}/{dir}/f{f:04}.rs"), body.into_bytes());
        }
    }
    let mut files: Vec<TreeFile> = content
        .iter()
        .map(|(p, c)| TreeFile { path: p.clone(), size: c.len() as u64, kind: FileKind::Regular })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    MemTree { files, content }
}

/// A monorepo of `n` pnpm packages and `n` Go modules with `files` files in all, each package
/// and module depending on its predecessor.
fn polyglot(n: usize, files: usize) -> MemTree {
    let mut content: HashMap<String, Vec<u8>> = HashMap::new();
    content.insert("package.json".into(), br#"{"name": "mono", "private": true}"#.to_vec());
    content.insert("pnpm-workspace.yaml".into(), b"packages:\n  - 'js/*'\n".to_vec());
    let per = files / (2 * n) - 1;
    for i in 0..n {
        let dep = if i > 0 { format!(r#""p{:04}": "workspace:*""#, i - 1) } else { String::new() };
        let pkg = format!(r#"{{"name": "p{i:04}", "dependencies": {{{dep}}}}}"#);
        content.insert(format!("js/p{i:04}/package.json"), pkg.into_bytes());
        let req = if i > 0 {
            format!(
                "require example.com/g{:04} v0.0.0\nreplace example.com/g{:04} => ../g{:04}\n",
                i - 1,
                i - 1,
                i - 1
            )
        } else {
            String::new()
        };
        content
            .insert(format!("go/g{i:04}/go.mod"), format!("module example.com/g{i:04}\n{req}").into_bytes());
        for f in 0..per {
            content.insert(
                format!("js/p{i:04}/src/f{f:03}.ts"),
                format!("export const f{f} = {f};\n").into_bytes(),
            );
            content.insert(format!("go/g{i:04}/pkg{}/f{f:03}.go", f % 4), b"package p\n".to_vec());
        }
    }
    let mut files: Vec<TreeFile> = content
        .iter()
        .map(|(p, c)| TreeFile { path: p.clone(), size: c.len() as u64, kind: FileKind::Regular })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    MemTree { files, content }
}

fn time(label: &str, tree: &MemTree, select: &Selection, split: &Split, target: Duration) {
    let runs = 5;
    let mut best = Duration::MAX;
    let mut tasks = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let p = plan(tree, select, split).expect("plans");
        best = best.min(t.elapsed());
        tasks = p.tasks.len();
    }
    let verdict = if best <= target { "ok" } else { "OVER TARGET" };
    println!(
        "{label}: {} files -> {tasks} tasks in {:.1} ms (best of {runs}; target {} ms) {verdict}",
        tree.files.len(),
        best.as_secs_f64() * 1e3,
        target.as_millis()
    );
}

fn main() {
    let auto = Split { rule: SplitRule::Auto, ..Split::default() };
    let small = workspace(50, 2_500);
    time("cargo 50 crates", &small, &Selection::default(), &auto, Duration::from_millis(200));
    let big = workspace(2_000, 100_000);
    time("cargo 2,000 crates", &big, &Selection::default(), &auto, Duration::from_secs(3));
    let sharded = Split { max_files: Some(20), max_tasks: Some(3_000), ..auto.clone() };
    time("  sharded to 20 files", &big, &Selection::default(), &sharded, Duration::from_secs(3));
    let lines = Split { max_lines: Some(2_000), ..auto.clone() };
    time(
        "  bounded by lines (reads every file)",
        &big,
        &Selection::default(),
        &lines,
        Duration::from_secs(3),
    );
    let grep = Selection { grep: Some(r"fn f1\d\b".into()), ..Selection::default() };
    time("  with a grep", &big, &grep, &auto, Duration::from_secs(3));
    let poly = polyglot(1_000, 100_000);
    time("pnpm + go, 2,000 modules", &poly, &Selection::default(), &auto, Duration::from_secs(3));
    let dirs = Split { rule: SplitRule::Dirs, depth: 2, ..Split::default() };
    time("  dirs at depth 2", &big, &Selection::default(), &dirs, Duration::from_secs(3));
}
