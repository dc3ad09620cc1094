//! Maven: from each outermost pom.xml, the modules its `<modules>` (and its profiles'
//! `<modules>`) list, recursively. Edges come from `<dependencies>` naming another module's
//! artifact (group id compared when both give one). The `<parent>` relation is inheritance,
//! not a dependency, and gives no edge. Without any `<modules>`, every pom.xml is a module.

use std::collections::{HashMap, HashSet};

use roxmltree::{Document, Node};

use super::{Modules, PLAIN, SourceTree, TreeError, named, read_text};
use crate::plan::paths::{is_within, join, parent};
use crate::spec::SplitRule;

/// What one pom.xml says.
pub(crate) struct Pom {
    pub dir: String,
    /// Its own `groupId`, else its parent's.
    pub group: Option<String>,
    pub artifact: Option<String>,
    modules: Vec<String>,
    /// `(groupId, artifactId)` of its `<dependencies>`; no group id when it has none or it is a
    /// property (`${project.groupId}`).
    pub deps: Vec<(Option<String>, String)>,
    /// The same, of its `<dependencyManagement>` (versions and BOMs, not dependencies yet).
    pub managed: Vec<(Option<String>, String)>,
}

pub(super) fn discover(
    tree: &dyn SourceTree,
    mods: &mut Modules,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    let mut poms: Vec<Pom> = Vec::new();
    for f in named(tree, "pom.xml") {
        let dir = parent(&f.path);
        let Some(text) = read_text(tree, &f.path, warnings)? else {
            mods.add_plain(dir, SplitRule::Maven);
            continue;
        };
        match parse(&f.path, &text) {
            Ok(pom) => poms.push(pom),
            Err(e) => {
                warnings.push(format!("{e}; {PLAIN}"));
                mods.add_plain(dir, SplitRule::Maven);
            }
        }
    }
    let by_dir: HashMap<&str, usize> = poms.iter().enumerate().map(|(i, p)| (p.dir.as_str(), i)).collect();
    let aggregates = poms.iter().any(|p| !p.modules.is_empty());
    let mut keep: HashSet<usize> = HashSet::new();
    if aggregates {
        // From the outermost poms down their <modules>.
        let mut work: Vec<usize> = (0..poms.len())
            .filter(|&i| !poms.iter().any(|o| o.dir != poms[i].dir && is_within(&poms[i].dir, &o.dir)))
            .collect();
        while let Some(i) = work.pop() {
            if !keep.insert(i) {
                continue;
            }
            for m in &poms[i].modules {
                let m = m.trim_end_matches("/pom.xml").trim_end_matches("pom.xml");
                match join(&poms[i].dir, m).and_then(|d| by_dir.get(d.as_str()).copied()) {
                    Some(j) => work.push(j),
                    None => warnings.push(format!(
                        "{}: module {m:?} has no pom.xml",
                        if poms[i].dir.is_empty() {
                            "pom.xml".to_owned()
                        } else {
                            format!("{}/pom.xml", poms[i].dir)
                        }
                    )),
                }
            }
        }
    } else {
        keep.extend(0..poms.len());
    }
    let mut index: Vec<Option<usize>> = vec![None; poms.len()];
    let mut by_artifact: HashMap<&str, Vec<(Option<&str>, usize)>> = HashMap::new();
    let mut order: Vec<usize> = keep.into_iter().collect();
    order.sort_unstable();
    for &i in &order {
        let p = &poms[i];
        let m = match &p.artifact {
            Some(a) => mods.add(&p.dir, a, SplitRule::Maven, true),
            None => mods.add(&p.dir, &p.dir, SplitRule::Maven, false),
        };
        index[i] = Some(m);
        if let Some(a) = &p.artifact {
            by_artifact.entry(a).or_default().push((p.group.as_deref(), m));
        }
    }
    for &i in &order {
        let Some(from) = index[i] else { continue };
        for (g, a) in &poms[i].deps {
            for &(mg, to) in by_artifact.get(a.as_str()).into_iter().flatten() {
                if g.is_none() || mg.is_none() || g.as_deref() == mg {
                    mods.edge(from, to);
                }
            }
        }
    }
    Ok(())
}

/// The pom.xml at `path`, or the parser's message naming the file and line.
pub(crate) fn parse(path: &str, text: &str) -> Result<Pom, String> {
    match Document::parse(text) {
        Ok(doc) => Ok(read(parent(path), &doc)),
        Err(e) => Err(format!("{path}:{}: {e}", e.pos().row)),
    }
}

fn read(dir: &str, doc: &Document) -> Pom {
    let project = doc.root_element();
    let text = |n: Node, name: &str| child(n, name).and_then(|c| c.text()).map(|t| t.trim().to_owned());
    let parent_group = child(project, "parent").and_then(|p| text(p, "groupId"));
    let mut modules: Vec<String> = Vec::new();
    let mut lists: Vec<Node> = child(project, "modules").into_iter().collect();
    if let Some(profiles) = child(project, "profiles") {
        lists.extend(children(profiles, "profile").filter_map(|p| child(p, "modules")));
    }
    for list in lists {
        modules.extend(children(list, "module").filter_map(|m| m.text()).map(|t| t.trim().to_owned()));
    }
    let deps_of = |list: Option<Node>| -> Vec<(Option<String>, String)> {
        list.into_iter()
            .flat_map(|d| children(d, "dependency"))
            // `${project.groupId}` and the like: compare artifacts only.
            .filter_map(|d| {
                Some((text(d, "groupId").filter(|g| !g.starts_with("${")), text(d, "artifactId")?))
            })
            .collect()
    };
    let deps = deps_of(child(project, "dependencies"));
    let managed = deps_of(child(project, "dependencyManagement").and_then(|m| child(m, "dependencies")));
    Pom {
        dir: dir.to_owned(),
        group: text(project, "groupId").or(parent_group),
        artifact: text(project, "artifactId"),
        modules,
        deps,
        managed,
    }
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i: 'a>(n: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}
