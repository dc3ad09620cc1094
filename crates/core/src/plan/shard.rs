//! Sharding: from units (modules, or cycles of modules) to tasks within the job's bounds.
//!
//! - A unit over `max_files` / `max_lines` is split by sub-folder, recursively (Go packages,
//!   Rust module folders), files of one folder in path-order chunks when they alone are too
//!   many; adjacent small pieces are packed back together up to the bound.
//! - Whole modules under the bound that are siblings (same parent folder, same dependency level)
//!   are grouped up to the bound.
//! - Over `max_tasks`, tasks of one level are grouped in path order; with more levels than
//!   `max_tasks`, consecutive tasks of the (level, path) order are. Groups never join tasks of
//!   different levels except in that last case, where joining consecutive runs of a topological
//!   order cannot make a cycle.

use std::collections::BTreeMap;

use super::discover::{Found, SLUG_MAX};
use super::graph::Unit;
use super::paths::{is_within, parent};
use crate::names::slugify;
use crate::spec::Split;

/// Most names in a group's title before "and N more".
const TITLE_NAMES: usize = 4;

/// A task before ordering.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub units: Vec<usize>,
    /// Indexes of selected files, in path order.
    pub files: Vec<usize>,
    pub slug: String,
    pub title: String,
    pub level: u32,
    /// A folder to sort by.
    pub home: String,
    /// Whether it holds whole units only (not a piece of a split one).
    pub whole: bool,
}

/// What the sharder needs to know about modules and files.
pub(crate) struct Ctx<'a> {
    pub modules: &'a [Found],
    /// Unique slug of each module.
    pub slugs: &'a [String],
    /// Path, line count and module of each selected file.
    pub paths: &'a [&'a str],
    pub lines: &'a [u64],
    pub owner: &'a [usize],
}

#[derive(Clone, Copy)]
struct Bound {
    files: Option<u32>,
    lines: Option<u64>,
}

impl Bound {
    fn fits(self, n: usize, lines: u64) -> bool {
        self.files.is_none_or(|m| n <= m as usize) && self.lines.is_none_or(|m| lines <= m)
    }
    /// How full a task of this size is (1.0 = at the bound).
    fn fill(self, n: usize, lines: u64) -> f64 {
        let f = self.files.map_or(0.0, |m| n as f64 / f64::from(m));
        let l = self.lines.map_or(0.0, |m| lines as f64 / m.max(1) as f64);
        f.max(l)
    }
    fn is_set(self) -> bool {
        self.files.is_some() || self.lines.is_some()
    }
}

pub(crate) fn shard(units: &[Unit], ctx: &Ctx, split: &Split, warnings: &mut Vec<String>) -> Vec<Draft> {
    let bound = Bound { files: split.max_files.map(|m| m.max(1)), lines: split.max_lines };
    let mut drafts = Vec::new();
    for (u, unit) in units.iter().enumerate() {
        let lines: u64 = unit.files.iter().map(|&f| ctx.lines[f]).sum();
        if bound.fits(unit.files.len(), lines) {
            drafts.push(whole(u, unit, ctx));
        } else {
            split_unit(u, unit, ctx, bound, &mut drafts);
        }
    }
    if bound.is_set() {
        drafts = group_siblings(drafts, ctx, bound);
    }
    if let Some(max) = split.max_tasks {
        let max = (max as usize).max(1);
        if drafts.len() > max {
            drafts = fit_max_tasks(drafts, max);
            let over = drafts
                .iter()
                .filter(|d| !bound.fits(d.files.len(), d.files.iter().map(|&f| ctx.lines[f]).sum()))
                .count();
            if over > 0 {
                warnings.push(format!(
                    "split.max_tasks = {max} wins over the size bounds: {over} task(s) are bigger than max_files/max_lines"
                ));
            }
        }
    }
    drafts
}

fn whole(u: usize, unit: &Unit, ctx: &Ctx) -> Draft {
    let names: Vec<&str> = unit.modules.iter().map(|&m| ctx.modules[m].name.as_str()).collect();
    let slugs: Vec<&str> = unit.modules.iter().map(|&m| ctx.slugs[m].as_str()).collect();
    Draft {
        units: vec![u],
        files: unit.files.clone(),
        slug: slugify(&slugs.join("-"), SLUG_MAX),
        title: names.join(", "),
        level: unit.level,
        home: unit.modules.first().map(|&m| ctx.modules[m].path.clone()).unwrap_or_default(),
        whole: true,
    }
}

/// One piece of a split module: files under folder `first` … `last` (relative to the module).
struct Piece {
    first: String,
    last: String,
    part: Option<usize>,
    files: Vec<usize>,
}

fn split_unit(u: usize, unit: &Unit, ctx: &Ctx, bound: Bound, out: &mut Vec<Draft>) {
    for &m in &unit.modules {
        let module = &ctx.modules[m];
        let files: Vec<usize> = unit.files.iter().copied().filter(|&f| ctx.owner[f] == m).collect();
        if files.is_empty() {
            continue;
        }
        // Owner-set modules (no folder of their own) split from the root.
        let dir = if module.path.is_empty() || files.iter().all(|&f| is_within(ctx.paths[f], &module.path)) {
            module.path.as_str()
        } else {
            ""
        };
        let mut pieces = Vec::new();
        split_dir(dir, files, ctx, bound, &mut pieces);
        for p in pack(pieces, ctx, bound) {
            let rel = |d: &str| d.strip_prefix(dir).unwrap_or(d).trim_start_matches('/').to_owned();
            let (first, last) = (rel(&p.first), rel(&p.last));
            let mut label = if first == last { first.clone() } else { format!("{first}-to-{last}") };
            let show = |r: &str| if r.is_empty() { "./".to_owned() } else { format!("{r}/") };
            let mut shown =
                if first == last { show(&first) } else { format!("{} to {}", show(&first), show(&last)) };
            if let Some(n) = p.part {
                label = format!("{label}-part-{n}");
                shown = format!("{shown}, part {n}");
            }
            let slug = if label.is_empty() {
                ctx.slugs[m].clone()
            } else {
                slugify(&format!("{}-{}", ctx.slugs[m], label), SLUG_MAX)
            };
            out.push(Draft {
                units: vec![u],
                files: p.files,
                slug,
                title: format!("{} ({shown})", module.name),
                level: unit.level,
                home: p.first.clone(),
                whole: false,
            });
        }
    }
}

fn split_dir(dir: &str, files: Vec<usize>, ctx: &Ctx, bound: Bound, out: &mut Vec<Piece>) {
    let lines: u64 = files.iter().map(|&f| ctx.lines[f]).sum();
    if bound.fits(files.len(), lines) {
        out.push(Piece { first: dir.to_owned(), last: dir.to_owned(), part: None, files });
        return;
    }
    let mut own = Vec::new();
    let mut children: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for f in files {
        let p = ctx.paths[f];
        let rest = if dir.is_empty() { p } else { &p[dir.len() + 1..] };
        match rest.split_once('/') {
            Some((child, _)) => children.entry(child).or_default().push(f),
            None => own.push(f),
        }
    }
    if !own.is_empty() {
        // Files of one folder: consecutive chunks within the bound.
        let mut chunks: Vec<Vec<usize>> = Vec::new();
        let (mut cur, mut cur_lines) = (Vec::new(), 0);
        for f in own {
            if !cur.is_empty() && !bound.fits(cur.len() + 1, cur_lines + ctx.lines[f]) {
                chunks.push(std::mem::take(&mut cur));
                cur_lines = 0;
            }
            cur_lines += ctx.lines[f];
            cur.push(f);
        }
        chunks.push(cur);
        let many = chunks.len() > 1;
        for (i, files) in chunks.into_iter().enumerate() {
            let part = many.then_some(i + 1);
            out.push(Piece { first: dir.to_owned(), last: dir.to_owned(), part, files });
        }
    }
    for (child, files) in children {
        let sub = if dir.is_empty() { child.to_owned() } else { format!("{dir}/{child}") };
        split_dir(&sub, files, ctx, bound, out);
    }
}

/// On average one item in this many is an anchor (see [`runs`]).
const ANCHOR_EVERY: u64 = 4;

/// Cut a sequence of `(key, files, lines)` into consecutive runs within the bound; returns the
/// length of each run. Besides the bound, a run ends before an anchor (an item whose key hashes
/// to one in [`ANCHOR_EVERY`]) once it is half full, so that a change early in the sequence
/// moves the cuts only up to the next anchor instead of all the way down.
fn runs(items: &[(&str, usize, u64)], bound: Bound) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut len, mut n, mut lines) = (0, 0, 0);
    for &(key, fn_, fl) in items {
        let over = !bound.fits(n + fn_, lines + fl);
        let anchor = fnv(key).is_multiple_of(ANCHOR_EVERY) && bound.fill(n, lines) >= 0.5;
        if len > 0 && (over || anchor) {
            out.push(len);
            (len, n, lines) = (0, 0, 0);
        }
        len += 1;
        n += fn_;
        lines += fl;
    }
    if len > 0 {
        out.push(len);
    }
    out
}

/// FNV-1a: a hash that stays the same across runs and platforms.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Pack adjacent pieces together within the bound; chunks of one folder's files stay apart.
fn pack(pieces: Vec<Piece>, ctx: &Ctx, bound: Bound) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let mut pending: Vec<Piece> = Vec::new();
    let flush = |pending: &mut Vec<Piece>, out: &mut Vec<Piece>| {
        let items: Vec<(&str, usize, u64)> = pending
            .iter()
            .map(|p| (p.first.as_str(), p.files.len(), p.files.iter().map(|&f| ctx.lines[f]).sum()))
            .collect();
        let lens = runs(&items, bound);
        let mut it = std::mem::take(pending).into_iter();
        for len in lens {
            let mut run: Vec<Piece> = it.by_ref().take(len).collect();
            let Some(mut first) = (!run.is_empty()).then(|| run.remove(0)) else { continue };
            for p in run {
                first.files.extend(p.files);
                first.last = p.last;
            }
            out.push(first);
        }
    };
    for p in pieces {
        if p.part.is_some() {
            flush(&mut pending, &mut out);
            out.push(p);
        } else {
            pending.push(p);
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Group whole single-unit tasks with their siblings (same parent folder and level) within
/// the bound.
fn group_siblings(drafts: Vec<Draft>, ctx: &Ctx, bound: Bound) -> Vec<Draft> {
    let mut out = Vec::new();
    let mut families: BTreeMap<(u32, String), Vec<Draft>> = BTreeMap::new();
    for d in drafts {
        if d.whole && d.units.len() == 1 && !d.home.is_empty() {
            families.entry((d.level, parent(&d.home).to_owned())).or_default().push(d);
        } else {
            out.push(d);
        }
    }
    for (_, mut family) in families {
        family.sort_by(|a, b| a.home.cmp(&b.home));
        let items: Vec<(&str, usize, u64)> = family
            .iter()
            .map(|d| (d.home.as_str(), d.files.len(), d.files.iter().map(|&f| ctx.lines[f]).sum()))
            .collect();
        let lens = runs(&items, bound);
        let mut it = family.into_iter();
        for len in lens {
            out.push(merge(it.by_ref().take(len).collect()));
        }
    }
    out
}

/// Bring the number of tasks down to `max`.
fn fit_max_tasks(mut drafts: Vec<Draft>, max: usize) -> Vec<Draft> {
    drafts.sort_by(|a, b| (a.level, &a.home, &a.slug).cmp(&(b.level, &b.home, &b.slug)));
    let mut levels: BTreeMap<u32, Vec<Draft>> = BTreeMap::new();
    for d in drafts {
        levels.entry(d.level).or_default().push(d);
    }
    if levels.len() > max {
        // Consecutive runs of the (level, path) order: a topological order, so no cycle.
        let all: Vec<Draft> = levels.into_values().flatten().collect();
        return chunk(all, max);
    }
    // Share `max` among the levels: one each, the rest to the most crowded.
    let counts: Vec<usize> = levels.values().map(Vec::len).collect();
    let mut quota = vec![1; counts.len()];
    for _ in levels.len()..max {
        let best = (0..counts.len())
            .filter(|&i| quota[i] < counts[i])
            .max_by(|&a, &b| (counts[a] * quota[b]).cmp(&(counts[b] * quota[a])).then(b.cmp(&a)));
        match best {
            Some(i) => quota[i] += 1,
            None => break,
        }
    }
    levels.into_values().zip(quota).flat_map(|(ds, q)| chunk(ds, q)).collect()
}

/// Cut `drafts` into `n` consecutive runs of about equal file counts, each merged into one.
fn chunk(drafts: Vec<Draft>, n: usize) -> Vec<Draft> {
    if drafts.len() <= n {
        return drafts;
    }
    let total: usize = drafts.iter().map(|d| d.files.len()).sum();
    let mut out = Vec::new();
    let mut run: Vec<Draft> = Vec::new();
    let (mut done, mut acc) = (0usize, 0usize);
    let len = drafts.len();
    for (i, d) in drafts.into_iter().enumerate() {
        acc += d.files.len();
        run.push(d);
        let runs_left = n - out.len() - 1;
        let drafts_left = len - i - 1;
        // Close this run when it reached its share, or when every later draft must start a run.
        let share = (total * (out.len() + 1)).div_ceil(n);
        if runs_left > 0 && (done + acc >= share || drafts_left == runs_left) {
            done += acc;
            acc = 0;
            out.push(merge(std::mem::take(&mut run)));
        }
    }
    if !run.is_empty() {
        out.push(merge(run));
    }
    out
}

fn merge(mut run: Vec<Draft>) -> Draft {
    if run.len() == 1 {
        return run.remove(0);
    }
    let first = &run[0];
    let last = &run[run.len() - 1];
    let slug = slugify(&format!("{}-to-{}", first.slug, last.slug), SLUG_MAX);
    let mut title: Vec<&str> = run.iter().take(TITLE_NAMES).map(|d| d.title.as_str()).collect();
    let more = run.len().saturating_sub(TITLE_NAMES);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    let title = format!("{}{more}", std::mem::take(&mut title).join(", "));
    let level = run.iter().map(|d| d.level).min().unwrap_or(0);
    let home = first.home.clone();
    let whole = run.iter().all(|d| d.whole);
    let mut units = Vec::new();
    let mut files = Vec::new();
    for d in run {
        units.extend(d.units);
        files.extend(d.files);
    }
    units.sort_unstable();
    units.dedup();
    files.sort_unstable();
    Draft { units, files, slug, title, level, home, whole }
}
