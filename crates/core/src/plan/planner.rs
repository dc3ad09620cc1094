//! Placeholder planner: `single` and `dirs` only. Replaced by the module-aware planner.

use std::collections::BTreeMap;

use super::{Plan, PlanError, PlannedTask, SourceTree};
use crate::names::slugify;
use crate::spec::{Selection, Split, SplitRule};

pub fn plan(tree: &dyn SourceTree, select: &Selection, split: &Split) -> Result<Plan, PlanError> {
    let glob = |field, pats: &[String]| -> Result<globset::GlobSet, PlanError> {
        let mut b = globset::GlobSetBuilder::new();
        for p in pats {
            b.add(globset::Glob::new(p).map_err(|e| PlanError::Selection { field, message: e.to_string() })?);
        }
        b.build().map_err(|e| PlanError::Selection { field, message: e.to_string() })
    };
    let inc = glob("select.include", &select.include)?;
    let exc = glob("select.exclude", &select.exclude)?;
    let mut paths: Vec<&str> = tree
        .files()
        .iter()
        .filter(|f| f.kind == super::FileKind::Regular || f.kind == super::FileKind::Executable)
        .map(|f| f.path.as_str())
        .filter(|p| (select.include.is_empty() || inc.is_match(p)) && !exc.is_match(p))
        .filter(|p| select.files.is_empty() || select.files.iter().any(|f| f == p))
        .collect();
    if let Some(re) = &select.grep {
        let re = regex::bytes::Regex::new(re)
            .map_err(|e| PlanError::Selection { field: "select.grep", message: e.to_string() })?;
        let hits = tree.grep(&re, &paths)?;
        paths.retain(|p| hits.iter().any(|h| h == p));
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &paths {
        let key = match split.rule {
            SplitRule::Single => String::new(),
            _ => {
                let parts: Vec<&str> = p.split('/').collect();
                let depth = (split.depth as usize).min(parts.len() - 1);
                parts[..depth].join("/")
            }
        };
        groups.entry(key).or_default().push((*p).to_owned());
    }
    let tasks = groups
        .into_iter()
        .map(|(dir, files)| PlannedTask {
            slug: if dir.is_empty() { "root".into() } else { slugify(&dir, 60) },
            title: if dir.is_empty() { "(root)".into() } else { dir.clone() },
            sparse: Some(if dir.is_empty() { vec![] } else { vec![dir] }),
            files,
            lines: 0,
            depends_on: vec![],
            level: 0,
        })
        .collect();
    Ok(Plan { tasks, selected_files: paths.len(), ..Plan::default() })
}
