//! Module discovery: the modules of a repository, found by reading its real manifests, and the
//! dependency edges between them.
//!
//! Every discoverer adds to one [`Modules`]: a module is a folder (`""` for the root), and a file
//! belongs to its innermost module folder. Two discoverers finding the same folder (a Cargo
//! package that is also an npm package) share one module, so `auto` can run them all. A manifest
//! that does not parse gives a warning naming the file and the parser's message, and its folder
//! becomes a plain module.

pub(super) mod cargo;
mod codeowners;
mod dirs;
pub(super) mod go;
mod gradle;
pub(super) mod maven;
pub(super) mod npm;
mod python;

use std::collections::{BTreeSet, HashMap};

use super::paths::parent;
use super::{FileKind, SourceTree, TreeError, TreeFile};
use crate::names::slugify;
use crate::spec::{Split, SplitRule};

/// The longest slug grove makes.
pub(crate) const SLUG_MAX: usize = 60;

/// One module as found.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub name: String,
    pub path: String,
    pub rule: SplitRule,
    /// The slug it would like; made unique later.
    pub slug: String,
    /// Known only as a folder (its manifest did not parse): a later discoverer that knows its
    /// name may name it.
    pub plain: bool,
}

/// The modules of a repository and their dependency edges.
#[derive(Debug, Default)]
pub(crate) struct Modules {
    pub list: Vec<Found>,
    by_path: HashMap<String, usize>,
    /// `(dependent, dependency)`.
    pub edges: BTreeSet<(usize, usize)>,
    /// When ownership is not by folder (CODEOWNERS): the module of each file of the tree.
    pub by_file: Option<Vec<usize>>,
}

impl Modules {
    /// Add a module at folder `path` named `name`, with a slug made from the name when
    /// `named` (package names), else from the path. A folder already known keeps its module.
    pub fn add(&mut self, path: &str, name: &str, rule: SplitRule, named: bool) -> usize {
        if let Some(&i) = self.by_path.get(path) {
            if self.list[i].plain && named && !name.is_empty() {
                let slug = slugify(name, SLUG_MAX);
                if !slug.is_empty() {
                    self.list[i] =
                        Found { name: name.to_owned(), path: path.to_owned(), rule, slug, plain: false };
                }
            }
            return i;
        }
        let slug = if path.is_empty() && !named {
            "root".to_owned()
        } else {
            let s = slugify(if named { name } else { path }, SLUG_MAX);
            if s.is_empty() { slugify(path, SLUG_MAX) } else { s }
        };
        let slug = if slug.is_empty() { "module".to_owned() } else { slug };
        let name = if name.is_empty() { "(root)" } else { name };
        self.add_found(Found { name: name.to_owned(), path: path.to_owned(), rule, slug, plain: false })
    }

    /// Add folder `path` as a plain module (its manifest could not be read).
    pub fn add_plain(&mut self, path: &str, rule: SplitRule) -> usize {
        if let Some(&i) = self.by_path.get(path) {
            return i;
        }
        let i = self.add(path, path, rule, false);
        self.list[i].plain = true;
        i
    }

    fn add_found(&mut self, f: Found) -> usize {
        let i = self.list.len();
        self.by_path.insert(f.path.clone(), i);
        self.list.push(f);
        i
    }

    /// The module whose folder is exactly `path`.
    pub fn at(&self, path: &str) -> Option<usize> {
        self.by_path.get(path).copied()
    }

    pub fn edge(&mut self, dependent: usize, dependency: usize) {
        if dependent != dependency {
            self.edges.insert((dependent, dependency));
        }
    }

    /// The innermost module holding the file `path`, if any.
    pub fn owner(&self, path: &str) -> Option<usize> {
        let mut d = parent(path);
        loop {
            if let Some(&i) = self.by_path.get(d) {
                return Some(i);
            }
            if d.is_empty() {
                return None;
            }
            d = parent(d);
        }
    }
}

/// Find the modules of `tree` with `split`'s rule.
pub(crate) fn discover(
    tree: &dyn SourceTree,
    split: &Split,
    warnings: &mut Vec<String>,
) -> Result<Modules, TreeError> {
    let mut m = Modules::default();
    let found = match split.rule {
        SplitRule::Single => {
            m.add_found(Found {
                name: "(all selected files)".into(),
                path: String::new(),
                rule: SplitRule::Single,
                slug: "all".into(),
                plain: false,
            });
            true
        }
        SplitRule::Dirs => {
            dirs::discover(tree, split.depth, &mut m);
            true
        }
        SplitRule::Cargo => {
            cargo::discover(tree, &mut m, warnings)?;
            !m.list.is_empty()
        }
        SplitRule::Npm => {
            npm::discover(tree, &mut m, warnings)?;
            !m.list.is_empty()
        }
        SplitRule::Go => {
            go::discover(tree, &mut m, warnings)?;
            !m.list.is_empty()
        }
        SplitRule::Python => {
            if !python::discover(tree, &mut m, warnings)? {
                python::packages(tree, &mut m);
            }
            !m.list.is_empty()
        }
        SplitRule::Maven => {
            maven::discover(tree, &mut m, warnings)?;
            !m.list.is_empty()
        }
        SplitRule::Gradle => {
            gradle::discover(tree, &mut m, warnings)?;
            !m.list.is_empty()
        }
        SplitRule::Codeowners => codeowners::discover(tree, &mut m, warnings)?,
        SplitRule::Auto => {
            // Every ecosystem the repository has; a folder found twice is one module.
            cargo::discover(tree, &mut m, warnings)?;
            npm::discover(tree, &mut m, warnings)?;
            go::discover(tree, &mut m, warnings)?;
            python::discover(tree, &mut m, warnings)?;
            maven::discover(tree, &mut m, warnings)?;
            gradle::discover(tree, &mut m, warnings)?;
            if m.list.is_empty() {
                python::packages(tree, &mut m);
            }
            if m.list.is_empty() {
                dirs::discover(tree, split.depth, &mut m);
            }
            true
        }
    };
    if !found {
        let what = match split.rule {
            SplitRule::Codeowners => "no CODEOWNERS file",
            _ => "no module",
        };
        warnings.push(format!(
            "split {}: {what} found; planned by folders at depth {}",
            split.rule,
            split.depth.max(1)
        ));
        m = Modules::default();
        dirs::discover(tree, split.depth, &mut m);
    }
    Ok(m)
}

/// Folders holding test data or installed dependencies: manifests inside them are not modules
/// (their files belong to the module around them), and their parse errors are nobody's concern.
const NOT_MODULES: [&str; 5] = ["node_modules", "testdata", "test_data", "fixtures", "__fixtures__"];

/// The regular files of the tree named `name` (at any depth), outside [`NOT_MODULES`] folders.
pub(crate) fn named<'t>(tree: &'t dyn SourceTree, name: &'t str) -> impl Iterator<Item = &'t TreeFile> + 't {
    tree.files().iter().filter(move |f| {
        matches!(f.kind, FileKind::Regular | FileKind::Executable)
            && (f.path == name || f.path.strip_suffix(name).is_some_and(|p| p.ends_with('/')))
            && !parent(&f.path).split('/').any(|c| NOT_MODULES.contains(&c))
    })
}

/// The largest manifest the planner reads. A bigger one (a hostile or generated file) is not
/// read: a warning names it and its folder is planned as a plain module. Parsers then hold at
/// most a few times this in memory; each one also limits nesting by itself (TOML, JSON and
/// YAML to about 100 levels, a "recursion limit" error), and XML with a DTD is refused (no
/// entity is ever expanded), so a manifest is a warning at worst, never a panic.
pub(crate) const MANIFEST_MAX: u64 = 4 << 20;

/// What becomes of a folder whose manifest is not read, in discovery's warnings.
const PLAIN: &str = "its folder is planned as a plain module";

/// A manifest's text, or `None` with a warning when it is not read: not a regular file (a
/// symlink is never followed, a submodule has no content here), larger than [`MANIFEST_MAX`],
/// or not UTF-8. `None` without a warning when the tree has no such file.
pub(crate) fn read_text(
    tree: &dyn SourceTree,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, TreeError> {
    read_manifest(tree, path, PLAIN, warnings)
}

/// [`read_text`] for any reader of manifests: `then` ends each warning and says what comes of
/// the file not being read.
pub(crate) fn read_manifest(
    tree: &dyn SourceTree,
    path: &str,
    then: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, TreeError> {
    let files = tree.files();
    let Ok(i) = files.binary_search_by(|f| f.path.as_str().cmp(path)) else { return Ok(None) };
    let not_read = |why: String| format!("{path}: {why}; not read, {then}");
    match files[i].kind {
        FileKind::Regular | FileKind::Executable => {}
        FileKind::Symlink => {
            warnings.push(not_read("a symlink (grove follows no symlink of a repository)".into()));
            return Ok(None);
        }
        FileKind::Submodule => {
            warnings.push(not_read("a submodule, not a file".into()));
            return Ok(None);
        }
    }
    let too_big = |size: u64| {
        not_read(format!("{size} bytes, more than the {} MiB grove reads of a manifest", MANIFEST_MAX >> 20))
    };
    if files[i].size > MANIFEST_MAX {
        warnings.push(too_big(files[i].size));
        return Ok(None);
    }
    let Some(bytes) = tree.read(path)? else { return Ok(None) };
    if bytes.len() as u64 > MANIFEST_MAX {
        warnings.push(too_big(bytes.len() as u64));
        return Ok(None);
    }
    match String::from_utf8(bytes) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            warnings.push(format!("{path}: not UTF-8 ({e}); {then}"));
            Ok(None)
        }
    }
}

/// The byte offset where `[`/`{` nesting first goes deeper than `max`, outside quotes and `#`
/// comments (YAML's and TOML's rules, near enough for a guard), or `None`.
pub(crate) fn too_deep(text: &str, max: usize) -> Option<usize> {
    let (mut depth, mut quote, mut comment, mut escaped) = (0usize, None::<u8>, false, false);
    for (i, &b) in text.as_bytes().iter().enumerate() {
        if comment {
            comment = b != b'\n';
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' && q == b'"' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
            continue;
        }
        match b {
            b'"' | b'\'' => quote = Some(b),
            b'#' => comment = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// `path:line: message; its folder is planned as a plain module` for a parser error at byte
/// `offset` of `text`.
pub(crate) fn parse_warning(path: &str, text: &str, offset: Option<usize>, message: &str) -> String {
    format!("{}; {PLAIN}", located(path, text, offset, message))
}

/// `path:line: message` (`path: message` without an offset) for a parser error at byte `offset`
/// of `text`, on one line.
pub(crate) fn located(path: &str, text: &str, offset: Option<usize>, message: &str) -> String {
    let message = message.trim().replace('\n', " ");
    match offset {
        Some(o) => {
            let line = text.as_bytes()[..o.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1;
            format!("{path}:{line}: {message}")
        }
        None => format!("{path}: {message}"),
    }
}
