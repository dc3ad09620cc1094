//! The planner: from a commit's files and a job's selection and split rule, the tasks of a
//! job, each owning a module's selected files, in logical order (dependencies first).
//!
//! API boundary: the planner sees the repository only through [`SourceTree`]; it never reads
//! the disk or runs git. `grove-git` implements `SourceTree` over a commit's tree.
//!
//! # Steps
//!
//! 1. `select`: the files in the change (include/exclude globs, an explicit list, a grep).
//! 2. `discover`: the modules of the repository, from its manifests, and their dependency
//!    edges; each file belongs to its innermost module folder, the rest to a `root` module.
//! 3. `graph`: dependency cycles (strongly connected components) merged into one unit with a
//!    warning; what each unit depends on, also through modules that got no file.
//! 4. `shard`: units to tasks within `max_files` / `max_lines` (big ones split by sub-folder,
//!    small siblings grouped) and `max_tasks`.
//! 5. `order` (here): a topological order, level by level, by slug within a level; each task's
//!    `depends_on` with redundant (implied) edges dropped.
//!
//! Across the repositories of a job, [`repos`] orders the repositories themselves from what
//! their manifests define and need.
//!
//! # Split rules, one example each
//!
//! | rule | modules | edges |
//! | --- | --- | --- |
//! | `dirs` (`depth = 2`) | `libs/json/**` is task `libs-json`; `libs/README.md` is task `libs`; `Makefile` is `root` | none |
//! | `single` | everything selected is task `all` | none |
//! | `cargo` | `members = ["crates/*"]`, `exclude = ["crates/fixtures"]`: one task per package (`ide-db`) | `path = "../syntax"`, `syntax.workspace = true`, `[patch]` paths |
//! | `npm` | `"workspaces": ["packages/*"]`, pnpm-workspace.yaml, lerna.json: one task per package (`@acme/ui` is `acme-ui`) | `"@acme/core": "workspace:*"`, `"file:../core"` |
//! | `go` | every go.mod (`app/go.mod` is `app`); packages are sub-scopes when too big | `replace example.com/lib => ../lib`, `require` of a sibling module |
//! | `python` | pyproject.toml / setup.cfg / setup.py projects; else `__init__.py` packages | `dependencies = ["acme-core>=1"]`, poetry and uv paths |
//! | `maven` | `<modules><module>core</module></modules>`: one task per artifact | `<dependency><artifactId>core</artifactId>` |
//! | `gradle` | settings.gradle(.kts) `include(":app", ":libs:json")` | `project(":libs:json")`, `projects.libs.json` |
//! | `codeowners` | one task per owner set (`@org/web @bob` is `bob-org-web`), last matching rule wins | none |
//! | `auto` | all of cargo, npm, go, python, maven and gradle at once; a folder found twice is one module; nothing found: `dirs` | all of theirs |

mod discover;
mod graph;
mod paths;
pub mod repos;
mod select;
mod shard;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::spec::{Selection, Split, SplitRule};
use graph::BitSet;

/// One file of the tree being planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Repository-relative, `/`-separated, no leading `./`.
    pub path: String,
    /// Size in bytes (for symlinks: the length of the target).
    pub size: u64,
    pub kind: FileKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Executable,
    Symlink,
    Submodule,
}

/// A tree could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TreeError(pub String);

/// A read-only view of the files of one commit.
pub trait SourceTree: Sync {
    /// Every file of the tree, sorted by path.
    fn files(&self) -> &[TreeFile];

    /// The content of one file, or `None` when the tree has no such file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError>;

    /// The paths among `paths` whose content matches `re`, in the order given. The default reads
    /// each file; implementations may search faster.
    fn grep(&self, re: &regex::bytes::Regex, paths: &[&str]) -> Result<Vec<String>, TreeError> {
        let mut out = Vec::new();
        for p in paths {
            if let Some(bytes) = self.read(p)?
                && re.is_match(&bytes)
            {
                out.push((*p).to_owned());
            }
        }
        Ok(out)
    }
}

/// The result of planning: tasks in merge order, and what was learnt on the way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Tasks in logical order: every task comes after the tasks it depends on; ties are broken
    /// deterministically (by slug).
    pub tasks: Vec<PlannedTask>,
    /// Modules discovered in the repository (including those that got no task).
    pub modules: Vec<Module>,
    /// Module dependency edges, `(dependent, dependency)` as indexes into `modules`.
    pub edges: Vec<(usize, usize)>,
    /// Things a person should know: unparsable manifests, globs matching nothing, cycles.
    pub warnings: Vec<String>,
    /// How many files the selection kept.
    pub selected_files: usize,
}

/// One task of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTask {
    /// Unique in the plan, stable across re-plans, readable (`ide-db`, `crates-foo`).
    pub slug: String,
    /// The module name(s) for people.
    pub title: String,
    /// Folders to check out (cone-mode sparse checkout; top-level files are always there),
    /// or `None` for a full checkout.
    pub sparse: Option<Vec<String>>,
    /// The selected files this task owns: what the agent is asked to change.
    pub files: Vec<String>,
    /// Lines in `files` (0 when not counted).
    pub lines: u64,
    /// Slugs of the tasks this task depends on (they come earlier in the order).
    pub depends_on: Vec<String>,
    /// 0 for tasks with no dependency among the tasks; otherwise 1 + the highest level of its
    /// dependencies. Tasks of one level are independent of each other.
    pub level: u32,
    /// The modules whose files this task holds, as indexes into [`Plan::modules`] (a module
    /// split by sub-folder appears in several tasks).
    pub modules: Vec<usize>,
}

/// A module found in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The module's own name (package name) or its path.
    pub name: String,
    /// Its folder, repository-relative (`""` for the root).
    pub path: String,
    /// Which rule found it.
    pub rule: SplitRule,
}

/// Planning failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The tree could not be read.
    #[error("reading the tree: {0}")]
    Tree(#[from] TreeError),
    /// A selection pattern is unusable.
    #[error("{field}: {message}")]
    Selection { field: &'static str, message: String },
}

impl Plan {
    /// The module graph in Graphviz DOT: one node per module (dashed when it got no task),
    /// labelled with its name, folder and task(s); an arrow from each module to what it depends
    /// on.
    pub fn dot(&self) -> String {
        let mut tasks_of: Vec<Vec<&str>> = vec![Vec::new(); self.modules.len()];
        for t in &self.tasks {
            for &m in &t.modules {
                if let Some(v) = tasks_of.get_mut(m) {
                    v.push(&t.slug);
                }
            }
        }
        // Escaped for a DOT string; lines joined with DOT's `\n`.
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("digraph modules {\n  rankdir=BT;\n  node [shape=box];\n");
        for (i, m) in self.modules.iter().enumerate() {
            let folder = if m.path.is_empty() { "." } else { m.path.as_str() };
            let mut lines = vec![esc(&m.name), esc(folder)];
            let style = if tasks_of[i].is_empty() {
                " style=dashed"
            } else {
                lines.push(esc(&format!("task: {}", tasks_of[i].join(", "))));
                ""
            };
            out.push_str(&format!("  m{i} [label=\"{}\"{style}];\n", lines.join("\\n")));
        }
        for (a, b) in &self.edges {
            out.push_str(&format!("  m{a} -> m{b};\n"));
        }
        out.push_str("}\n");
        out
    }
}

/// A task's sparse checkout lists at most this many folders; more means a full checkout.
const SPARSE_MAX: usize = 100;

/// Lines are counted when the selection has at most this many files (or `max_lines` is set):
/// counting reads every selected file.
const LINE_COUNT_MAX_FILES: usize = 20_000;

/// A selected file larger than this is not read to count its lines (it counts 0, with a
/// warning): counting holds one file in memory at a time.
const LINE_COUNT_MAX_BYTES: u64 = 64 << 20;

/// Plan a job: select files, find modules with `split`'s rule, give each module with selected
/// files a task (cycles merged, big modules split, small ones grouped within the bounds), and
/// order the tasks dependencies first.
pub fn plan(tree: &dyn SourceTree, select: &Selection, split: &Split) -> Result<Plan, PlanError> {
    let mut warnings = Vec::new();
    let selected = select::select(tree, select, &mut warnings)?;
    let mut found = discover::discover(tree, split, &mut warnings)?;
    let files = tree.files();
    let paths: Vec<&str> = selected.iter().map(|&i| files[i].path.as_str()).collect();

    // Each selected file's module; files outside every module go to a root module.
    let mut owner = Vec::with_capacity(paths.len());
    for (k, p) in paths.iter().enumerate() {
        let m = match &found.by_file {
            Some(by_file) => Some(by_file[selected[k]]),
            None => found.owner(p),
        };
        owner.push(match m {
            Some(m) => m,
            None => found.add("", "", split.rule, false),
        });
    }

    let lines = if split.max_lines.is_some() || paths.len() <= LINE_COUNT_MAX_FILES {
        let mut lines = Vec::with_capacity(paths.len());
        let mut huge = Vec::new();
        for (k, p) in paths.iter().enumerate() {
            if files[selected[k]].size > LINE_COUNT_MAX_BYTES {
                huge.push(*p);
                lines.push(0);
                continue;
            }
            lines.push(tree.read(p)?.map_or(0, |b| count_lines(&b)));
        }
        if !huge.is_empty() {
            warnings.push(format!(
                "lines not counted in files over {} MiB (counted as 0): {}",
                LINE_COUNT_MAX_BYTES >> 20,
                select::list(&huge)
            ));
        }
        lines
    } else {
        vec![0; paths.len()]
    };

    let edges: Vec<(usize, usize)> = found.edges.iter().copied().collect();
    let slugs = unique_module_slugs(&found.list);
    let units = graph::units(&found.list, &edges, &owner, &mut warnings);
    let ctx = shard::Ctx { modules: &found.list, slugs: &slugs, paths: &paths, lines: &lines, owner: &owner };
    let mut drafts = shard::shard(&units, &ctx, split, &mut warnings);
    unique_task_slugs(&mut drafts);
    let tasks = order(&units, drafts, &ctx);

    let modules =
        found.list.into_iter().map(|f| Module { name: f.name, path: f.path, rule: f.rule }).collect();
    Ok(Plan { tasks, modules, edges, warnings, selected_files: paths.len() })
}

fn count_lines(b: &[u8]) -> u64 {
    let n = b.iter().filter(|&&c| c == b'\n').count() as u64;
    n + u64::from(b.last().is_some_and(|&c| c != b'\n'))
}

/// Module slugs made unique: colliding names fall back to their paths, then to a number in
/// path order.
fn unique_module_slugs(mods: &[discover::Found]) -> Vec<String> {
    let mut slugs: Vec<String> = mods.iter().map(|m| m.slug.clone()).collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for s in &slugs {
        *count.entry(s.as_str()).or_default() += 1;
    }
    // `root` stays free for the root task, whether or not this selection needs one, so that a
    // package named `root` keeps one slug across selections.
    let clash: Vec<bool> = slugs
        .iter()
        .zip(mods)
        .map(|(s, m)| count[s.as_str()] > 1 || (s == "root" && !m.path.is_empty()))
        .collect();
    for (i, m) in mods.iter().enumerate() {
        if clash[i] && !m.path.is_empty() {
            let by_path = crate::names::slugify(&m.path, discover::SLUG_MAX);
            if !by_path.is_empty() {
                slugs[i] = by_path;
            }
        }
    }
    let mut order: Vec<usize> = (0..mods.len()).collect();
    order.sort_by(|&a, &b| (&slugs[a], &mods[a].path).cmp(&(&slugs[b], &mods[b].path)));
    dedup_numbered(&mut slugs, &order);
    slugs
}

/// Task slugs made unique (pieces and groups can collide with module slugs).
fn unique_task_slugs(drafts: &mut [shard::Draft]) {
    let mut slugs: Vec<String> = drafts.iter().map(|d| d.slug.clone()).collect();
    let mut order: Vec<usize> = (0..drafts.len()).collect();
    order.sort_by(|&a, &b| (&slugs[a], &drafts[a].files).cmp(&(&slugs[b], &drafts[b].files)));
    dedup_numbered(&mut slugs, &order);
    for (d, s) in drafts.iter_mut().zip(slugs) {
        d.slug = s;
    }
}

/// Give the second and later of equal slugs (in `order`) a `-2`, `-3`… suffix that is free, and
/// keep slugs usable as branch names.
fn dedup_numbered(slugs: &mut [String], order: &[usize]) {
    let mut taken: std::collections::HashSet<String> = slugs.iter().cloned().collect();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for &i in order {
        if slugs[i].ends_with(".lock") {
            let s = format!("{}-lock", slugs[i].trim_end_matches(".lock"));
            taken.insert(s.clone());
            slugs[i] = s;
        }
        if seen.insert(slugs[i].clone()) {
            continue;
        }
        let base = slugs[i].clone();
        let mut n = 2;
        let s = loop {
            let cand = format!("{base}-{n}");
            if !taken.contains(&cand) {
                break cand;
            }
            n += 1;
        };
        taken.insert(s.clone());
        seen.insert(s.clone());
        slugs[i] = s;
    }
}

/// Order the drafts dependencies first (ties by slug), with levels and reduced dependencies.
fn order(units: &[graph::Unit], drafts: Vec<shard::Draft>, ctx: &shard::Ctx) -> Vec<PlannedTask> {
    let n = drafts.len();
    let mut tasks_of_unit: Vec<Vec<usize>> = vec![Vec::new(); units.len()];
    for (t, d) in drafts.iter().enumerate() {
        for &u in &d.units {
            tasks_of_unit[u].push(t);
        }
    }
    // Direct dependencies of each draft, on drafts.
    let mut deps: Vec<BitSet> = Vec::with_capacity(n);
    for (t, d) in drafts.iter().enumerate() {
        let mut reach = BitSet::default();
        for &u in &d.units {
            reach.union_with(&units[u].reach);
        }
        let mut ds = BitSet::default();
        for u in reach.iter() {
            for &s in &tasks_of_unit[u] {
                if s != t {
                    ds.insert(s);
                }
            }
        }
        deps.push(ds);
    }
    // Kahn's algorithm (smallest slug first among the ready) for a first topological order.
    let mut waiting: Vec<usize> = deps.iter().map(|d| d.iter().count()).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (t, ds) in deps.iter().enumerate() {
        for s in ds.iter() {
            users[s].push(t);
        }
    }
    let mut ready: BinaryHeap<Reverse<(&str, usize)>> =
        (0..n).filter(|&t| waiting[t] == 0).map(|t| Reverse((drafts[t].slug.as_str(), t))).collect();
    let mut sequence = Vec::with_capacity(n);
    while let Some(Reverse((_, t))) = ready.pop() {
        sequence.push(t);
        for &u in &users[t] {
            waiting[u] -= 1;
            if waiting[u] == 0 {
                ready.push(Reverse((drafts[u].slug.as_str(), u)));
            }
        }
    }
    // Grouping keeps the draft graph acyclic; should it ever not, keep every draft anyway.
    if sequence.len() < n {
        let mut rest: Vec<usize> = (0..n).filter(|t| !sequence.contains(t)).collect();
        rest.sort_by(|&a, &b| drafts[a].slug.cmp(&drafts[b].slug));
        sequence.extend(rest);
    }
    let mut position = vec![0; n];
    for (i, &t) in sequence.iter().enumerate() {
        position[t] = i;
    }
    // Transitive closure in order, then drop the dependencies implied by another one.
    let mut closure: Vec<BitSet> = vec![BitSet::default(); n];
    let mut level = vec![0u32; n];
    let mut reduced: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &t in &sequence {
        let mut implied = BitSet::default();
        let mut all = BitSet::default();
        let mut lv = 0;
        for s in deps[t].iter().filter(|&s| position[s] < position[t]) {
            implied.union_with(&closure[s]);
            all.union_with(&closure[s]);
            all.insert(s);
            lv = lv.max(level[s] + 1);
        }
        reduced[t] = deps[t].iter().filter(|&s| position[s] < position[t] && !implied.contains(s)).collect();
        closure[t] = all;
        level[t] = lv;
    }
    // Level by level, by slug within a level: still dependencies first, and the tasks that may
    // run side by side stand together.
    sequence.sort_by(|&a, &b| (level[a], &drafts[a].slug).cmp(&(level[b], &drafts[b].slug)));
    let mut drafts: Vec<Option<shard::Draft>> = drafts.into_iter().map(Some).collect();
    let slugs: Vec<String> =
        drafts.iter().map(|d| d.as_ref().map(|d| d.slug.clone()).unwrap_or_default()).collect();
    sequence
        .iter()
        .filter_map(|&t| {
            let d = drafts[t].take()?;
            let mut modules: Vec<usize> =
                d.units.iter().flat_map(|&u| units[u].modules.iter().copied()).collect();
            if d.units.iter().any(|&u| units[u].modules.len() > 1) {
                // A piece of a merged cycle holds the files of some of its modules only.
                let mut own: Vec<usize> = d.files.iter().map(|&f| ctx.owner[f]).collect();
                own.sort_unstable();
                own.dedup();
                modules = own;
            }
            modules.sort_unstable();
            modules.dedup();
            let mut depends_on: Vec<String> = reduced[t].iter().map(|&s| slugs[s].clone()).collect();
            depends_on.sort();
            Some(PlannedTask {
                sparse: sparse(&d, ctx),
                lines: d.files.iter().map(|&f| ctx.lines[f]).sum(),
                files: d.files.iter().map(|&f| ctx.paths[f].to_owned()).collect(),
                slug: d.slug,
                title: d.title,
                depends_on,
                level: level[t],
                modules,
            })
        })
        .collect()
}

/// The folders a task's checkout needs: each module's folder, and for files of the root (or of
/// an owner set) their own folders.
fn sparse(d: &shard::Draft, ctx: &shard::Ctx) -> Option<Vec<String>> {
    let mut dirs: Vec<String> = Vec::new();
    let mut last: Option<&str> = None;
    for &f in &d.files {
        let m = &ctx.modules[ctx.owner[f]];
        let p = ctx.paths[f];
        let dir = if !m.path.is_empty() && paths::is_within(p, &m.path) {
            m.path.as_str()
        } else {
            paths::parent(p)
        };
        if last != Some(dir) {
            dirs.push(dir.to_owned());
            last = Some(dir);
        }
    }
    let cover = paths::cover(dirs);
    (cover.len() <= SPARSE_MAX).then_some(cover)
}
