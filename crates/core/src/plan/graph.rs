//! The module graph: strongly connected components (dependency cycles), and which units (the
//! components holding selected files) each unit depends on, directly or through modules that
//! got no file.

use super::discover::Found;
use super::select::list;

/// A growable set of small integers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BitSet(Vec<u64>);

impl BitSet {
    pub fn insert(&mut self, i: usize) {
        let w = i / 64;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (i % 64);
    }
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    pub fn union_with(&mut self, other: &BitSet) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

/// Strongly connected components of a graph given as adjacency lists. Returns the component of
/// each node; components are numbered so that every edge goes to a component with a number no
/// higher than its own (Tarjan emits dependencies first).
pub(crate) fn scc(adj: &[Vec<usize>]) -> (Vec<usize>, usize) {
    const NONE: usize = usize::MAX;
    let n = adj.len();
    let mut index = vec![NONE; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![NONE; n];
    let mut stack = Vec::new();
    let mut calls: Vec<(usize, usize)> = Vec::new();
    let (mut next, mut ncomp) = (0, 0);
    for s in 0..n {
        if index[s] != NONE {
            continue;
        }
        index[s] = next;
        low[s] = next;
        next += 1;
        stack.push(s);
        on_stack[s] = true;
        calls.push((s, 0));
        while let Some(&(v, ei)) = calls.last() {
            if let Some(&w) = adj[v].get(ei) {
                if let Some(top) = calls.last_mut() {
                    top.1 += 1;
                }
                if index[w] == NONE {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(u, _)) = calls.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = ncomp;
                    if w == v {
                        break;
                    }
                }
                ncomp += 1;
            }
        }
    }
    (comp, ncomp)
}

/// A set of modules planned together (one module, or a dependency cycle) holding selected files.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// Module indexes, in path order.
    pub modules: Vec<usize>,
    /// Indexes of selected files, in path order.
    pub files: Vec<usize>,
    /// The units this one depends on, directly or not.
    pub reach: BitSet,
    /// Longest chain of dependencies below it.
    pub level: u32,
}

/// Group modules into units: one per module with selected files, dependency cycles merged
/// (with a warning naming the cycle). `owner[f]` is the module of selected file `f`. Units come
/// dependencies first.
pub(crate) fn units(
    modules: &[Found],
    edges: &[(usize, usize)],
    owner: &[usize],
    warnings: &mut Vec<String>,
) -> Vec<Unit> {
    let n = modules.len();
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
    }
    let (comp, ncomp) = scc(&adj);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); ncomp];
    for (m, &c) in comp.iter().enumerate() {
        members[c].push(m);
    }
    for ms in members.iter_mut().filter(|ms| ms.len() > 1) {
        ms.sort_by(|&a, &b| modules[a].path.cmp(&modules[b].path));
        let names: Vec<&str> = ms.iter().map(|&m| modules[m].name.as_str()).collect();
        warnings.push(format!(
            "dependency cycle between {}: planned as one task so they change together",
            list(&names)
        ));
    }
    let mut files: Vec<Vec<usize>> = vec![Vec::new(); ncomp];
    for (f, &m) in owner.iter().enumerate() {
        files[comp[m]].push(f);
    }
    let mut unit_of = vec![usize::MAX; ncomp];
    let mut units: Vec<Unit> = Vec::new();
    let mut cadj: Vec<Vec<usize>> = vec![Vec::new(); ncomp];
    for &(a, b) in edges {
        if comp[a] != comp[b] {
            cadj[comp[a]].push(comp[b]);
        }
    }
    // Components come dependencies first, so each one's reach is known when it is needed.
    let mut reach: Vec<BitSet> = vec![BitSet::default(); ncomp];
    for c in 0..ncomp {
        let mut r = BitSet::default();
        for &d in &cadj[c] {
            r.union_with(&reach[d]);
            if unit_of[d] != usize::MAX {
                r.insert(unit_of[d]);
            }
        }
        if !files[c].is_empty() {
            unit_of[c] = units.len();
            let level = r.iter().map(|u| units[u].level + 1).max().unwrap_or(0);
            units.push(Unit {
                modules: std::mem::take(&mut members[c]),
                files: std::mem::take(&mut files[c]),
                reach: r.clone(),
                level,
            });
        }
        reach[c] = r;
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scc_finds_cycles_dependencies_first() {
        // 0 -> 1 -> 2 -> 1, 3 -> 0
        let adj = vec![vec![1], vec![2], vec![1], vec![0]];
        let (comp, n) = scc(&adj);
        assert_eq!(n, 3);
        assert_eq!(comp[1], comp[2]);
        assert!(comp[1] < comp[0] && comp[0] < comp[3]);
    }

    #[test]
    fn bitsets_grow() {
        let mut a = BitSet::default();
        a.insert(3);
        a.insert(130);
        let mut b = BitSet::default();
        b.insert(64);
        b.union_with(&a);
        assert_eq!(b.iter().collect::<Vec<_>>(), [3, 64, 130]);
        assert!(b.contains(64) && b.contains(130) && !b.contains(4));
    }
}
