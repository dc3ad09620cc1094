//! The fan-out benchmark of issue #2, on a generated Cargo workspace of 200 crates × 20 `.rs`
//! files (about half use `FileId`), committed with git and repacked as a cloned repository is:
//!
//! 1. Preparing one module's workspace: grove's sparse worktree of the mirror
//!    (`grove_git::worktree::add`, cone `crates/m042`) against a full `git worktree add`,
//!    each repeated on a fresh branch; medians and their ratio.
//! 2. A 200-task `replace` fan-out with the real `grove run` binary (embedded, `-j 4`; three
//!    runs alternating with three of the sed limit, each after a `sync`, medians) against
//!    the same work as a serial script of plain git commands (full `git worktree add` per
//!    module, the regex rewrite, `git commit -am`, then `git checkout integration && git merge
//!    --no-ff` of every branch in order in one checkout), and against the serial sed limit (the
//!    whole rename in one checkout: `git grep -l | xargs sed -i`, one commit; goal: grove
//!    within 3x of it); all final trees must be equal.
//! 3. The first run on a repository with history (the same modules after `GROVE_BENCH_HISTORY`
//!    = COMMITSxKIB commits of incompressible files, default 5000x20: about 100 MiB of packs):
//!    the mirror as `Mirror::ensure` makes it against `git init --bare` + fetch; a pod's
//!    workspace (`worktree::clone_sparse`) against a full clone; and `grove run` with a new
//!    home against the fan-out script a person would write (`git worktree add` per module
//!    with `xargs -P4`, sed, commit, then a merge of each branch in one checkout).
//!
//! Run with `cargo bench -p grove-cli --bench fanout`. Every git and grove process runs with a
//! hermetic environment (temp HOME and GROVE_HOME, no global or system git config): the bench
//! starts itself again with that environment, so the git commands grove's library runs in
//! part 1 get it too. `GROVE_BENCH_SIZE=MODULESxFILES` (e.g. `20x10`) runs a smaller repository,
//! for trying the bench out; the issue's figures are the default 200x20.
//! `GROVE_BENCH_BIN=PATH` runs that grove binary instead of this build's (a before/after pair).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use grove_git::worktree;
use grove_git::{Git, Mirror, Source};

/// Set in the environment of the bench's second start; its value is the sandbox folder.
const SANDBOX_VAR: &str = "GROVE_FANOUT_BENCH_SANDBOX";
const PATTERN: &str = r"\bFileId\b";
const REPLACEMENT: &str = "SourceFileId";
/// The module whose workspace part 1 prepares.
const MODULE: usize = 42;
/// Timed worktree preparations of each kind in part 1 (after one untimed warm-up of each).
const PREPARE_RUNS: usize = 10;
const CONCURRENCY: &str = "4";
/// Timed runs of grove and of the sed limit in part 2 (their figures are the medians).
const PART2_RUNS: usize = 3;

fn main() -> ExitCode {
    let result = match std::env::var_os(SANDBOX_VAR) {
        None => restart_hermetic(),
        Some(dir) => bench(Path::new(&dir)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fanout bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Start this bench again in a sandbox with a hermetic environment, and clean up after it.
fn restart_hermetic() -> Result<ExitCode> {
    let sandbox = tempfile::Builder::new().prefix("grove-fanout-").tempdir().context("making the sandbox")?;
    let home = sandbox.path().join("home");
    std::fs::create_dir_all(&home).context("making the sandbox HOME")?;
    let me = std::env::current_exe().context("finding the bench executable")?;
    let mut cmd = Command::new(me);
    cmd.env_clear();
    for keep in
        ["PATH", "TMPDIR", "RUST_BACKTRACE", "GROVE_BENCH_SIZE", "GROVE_BENCH_HISTORY", "GROVE_BENCH_BIN"]
    {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    let status = cmd
        .env(SANDBOX_VAR, sandbox.path())
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .env("NO_COLOR", "1")
        .env("LC_ALL", "C")
        .status()
        .context("starting the bench in its sandbox")?;
    let t = Instant::now();
    sandbox.close().context("removing the sandbox")?;
    eprintln!("(sandbox removed in {})", secs(t.elapsed()));
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn bench(sandbox: &Path) -> Result<ExitCode> {
    let (modules, files) = size()?;
    let git = Git::detect().context("finding git")?;
    let version = plain_git(sandbox, &["version"])?;
    let repo = sandbox.join("repo");
    let t = Instant::now();
    let (total_files, with_id) = generate(&repo, modules, files)?;
    println!(
        "fanout bench: {modules} modules x {files} .rs files ({total_files} files in the tree, {with_id} with \
         FileId); {}; {} cores; repository generated in {}",
        version.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        secs(t.elapsed())
    );
    let module = format!("crates/m{:03}", MODULE.min(modules - 1));

    println!(
        "\n1. one module's workspace ({module}), {PREPARE_RUNS} runs each after a warm-up, fresh branch each"
    );
    let prep = prepare_one(&git, sandbox, &repo, &module)?;
    println!("   mirror made and fetched once (Mirror::ensure): {}", secs(prep.mirror));
    println!(
        "   sparse (grove_git::worktree::add, cone {module}): median {} (min {}, max {}), {} files",
        ms(median(&prep.sparse)),
        ms(min(&prep.sparse)),
        ms(max(&prep.sparse)),
        prep.sparse_files
    );
    println!(
        "   full (git worktree add):                     median {} (min {}, max {}), {} files",
        ms(median(&prep.full)),
        ms(min(&prep.full)),
        ms(max(&prep.full)),
        prep.full_files
    );

    println!(
        "\n2. {modules}-task replace fan-out, {PATTERN} -> {REPLACEMENT}; grove and the sed limit {PART2_RUNS} \
         times each, alternating, each after a sync (medians)"
    );
    // Each grove run on its own copy of the repository (a run publishes its branches into
    // it), with a new home; the sed limit right after it, in a fresh clone.
    let (mut groves, mut limits) = (Vec::new(), Vec::new());
    for run in 0..PART2_RUNS {
        let copy = sandbox.join(format!("part2-repo-{run}"));
        copy_dir(&repo, &copy)?;
        sync()?;
        groves.push(grove_fanout(sandbox, &sandbox.join(format!("grove-home-{run}")), &copy, modules)?);
        sync()?;
        limits.push(sed_limit(sandbox, &repo)?);
    }
    let grove_walls: Vec<Duration> = groves.iter().map(|g| g.wall).collect();
    let limit_walls: Vec<Duration> = limits.iter().map(|l| l.wall).collect();
    let grove = GroveRun {
        wall: median(&grove_walls),
        tree: groves[0].tree.clone(),
        leftover: groves.iter().any(|g| g.leftover),
    };
    let grove_trees_agree = groves.iter().all(|g| g.tree == grove.tree);
    let limit_trees_agree = limits.iter().all(|l| l.tree == limits[0].tree);
    println!(
        "   grove run -j {CONCURRENCY} (embedded; plan, mirror, worktrees, agents, commits, merges, publish): {} \
         (runs: {})",
        secs(grove.wall),
        grove_walls.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", ")
    );
    let script = script_fanout(sandbox, &repo, modules)?;
    println!(
        "   script, serial, one command at a time: {} = worktree add {} + rewrite {} + commit {} + \
         checkout/merge {}",
        secs(script.total()),
        secs(script.add),
        secs(script.rewrite),
        secs(script.commit),
        secs(script.merge)
    );
    println!(
        "   (not counted: cloning the repository for the script {}, removing its {modules} worktrees \
         afterwards {})",
        secs(script.setup),
        secs(script.cleanup)
    );
    let limit = SedLimit { wall: median(&limit_walls), tree: limits[0].tree.clone() };
    println!(
        "   serial sed limit, one checkout (git grep -l | xargs sed -i, one git commit -a): {} (runs: {})",
        secs(limit.wall),
        limit_walls.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", ")
    );
    println!(
        "   ratios: grove / script {:.2}x, grove / sed limit {:.2}x (goal <= 3x)",
        ratio(grove.wall, script.total()),
        ratio(grove.wall, limit.wall)
    );
    let equal =
        grove.tree == script.tree && grove.tree == limit.tree && grove_trees_agree && limit_trees_agree;
    println!(
        "   trees equal: {} (grove {}, script {}, sed {}); FileId left in grove's tree: {}",
        if equal { "yes" } else { "NO" },
        &grove.tree[..12],
        &script.tree[..12],
        &limit.tree[..12],
        if grove.leftover { "yes" } else { "none" }
    );

    let (commits, kib) = history_size()?;
    println!(
        "\n3. the first run (a new grove home) on a repository with history: the same {modules} modules \
         after {commits} commits that each change a {kib} KiB binary file of one module"
    );
    let hist = sandbox.join("history-repo");
    let t = Instant::now();
    generate(&hist, modules, files)?;
    let pack = add_history(&hist, modules, commits, kib)?;
    println!("   generated in {} ({} MiB of packs)", secs(t.elapsed()), pack >> 20);
    let mirror = mirror_both_ways(&git, sandbox, &hist)?;
    println!(
        "   making the mirror: Mirror::ensure {} (objects linked: {}, copied: {}); git init --bare + fetch, as \
         before, {}",
        secs(mirror.ensure),
        mirror.seeded.linked,
        mirror.seeded.copied,
        secs(mirror.fetch)
    );
    let pod = clone_both_ways(&git, sandbox, &hist, &module)?;
    println!(
        "   a pod's workspace of {module} over file://: worktree::clone_sparse {} ({} KiB), \
         a full git clone {} ({} KiB)",
        ms(pod.sparse),
        pod.sparse_kib,
        ms(pod.full),
        pod.full_kib
    );
    let cold = grove_fanout(sandbox, &sandbox.join("grove-home-cold"), &hist, modules)?;
    println!("   grove run -j {CONCURRENCY}, new grove home: {}", secs(cold.wall));
    let fan = script_parallel(sandbox, &hist)?;
    println!(
        "   plain-git fan-out script (worktree add per module with xargs -P{CONCURRENCY}, sed, commit; then \
         merge each branch in one checkout): {}",
        secs(fan.wall)
    );
    let cold_equal = cold.tree == fan.tree;
    println!(
        "   trees equal: {} (grove {}, script {})",
        if cold_equal { "yes" } else { "NO" },
        &cold.tree[..12],
        &fan.tree[..12]
    );

    let (sparse, full) = (median(&prep.sparse), median(&prep.full));
    println!("\nsummary");
    let rows = [
        ("prepare one module workspace, sparse (grove)", ms(sparse)),
        ("prepare one module workspace, full git worktree add", ms(full)),
        ("  ratio full / sparse", format!("{:.1}x", ratio(full, sparse))),
        (&*format!("{modules}-task fan-out, grove run -j {CONCURRENCY}"), secs(grove.wall)),
        (&*format!("{modules}-task fan-out, git script (serial)"), secs(script.total())),
        ("  ratio grove / script", format!("{:.2}x", ratio(grove.wall, script.total()))),
        (&*format!("{modules}-task fan-out, serial sed limit (one checkout)"), secs(limit.wall)),
        ("  ratio grove / sed limit (goal <= 3)", format!("{:.2}x", ratio(grove.wall, limit.wall))),
        (
            "  per task: grove (wall x 4 workers / tasks), script",
            format!("{} , {}", ms(grove.wall * 4 / modules as u32), ms(script.total() / modules as u32)),
        ),
        ("trees equal", (if equal { "yes" } else { "NO" }).to_owned()),
        (&*format!("mirror of a repository with {commits} commits, Mirror::ensure"), secs(mirror.ensure)),
        ("mirror the way before (init --bare + fetch)", secs(mirror.fetch)),
        ("  ratio ensure / fetch", format!("{:.3}x", ratio(mirror.ensure, mirror.fetch))),
        ("pod workspace, shallow partial sparse clone", ms(pod.sparse)),
        ("pod workspace, full clone", ms(pod.full)),
        ("  ratio sparse / full (goal <= 0.1)", format!("{:.3}x", ratio(pod.sparse, pod.full))),
        ("first run, grove run -j 4 with a new home", secs(cold.wall)),
        ("first run, plain-git fan-out script (xargs -P4)", secs(fan.wall)),
        ("  ratio grove / script (goal <= 0.5)", format!("{:.2}x", ratio(cold.wall, fan.wall))),
        ("first run trees equal", (if cold_equal { "yes" } else { "NO" }).to_owned()),
    ];
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in &rows {
        println!("  {label:<width$}  {value:>14}");
    }
    let ok = equal && !grove.leftover && cold_equal && !cold.leftover;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `GROVE_BENCH_HISTORY=COMMITSxKIB`, default 5000x20 (about 100 MiB of packs).
fn history_size() -> Result<(usize, usize)> {
    let Ok(s) = std::env::var("GROVE_BENCH_HISTORY") else { return Ok((5000, 20)) };
    let (c, k) = s.split_once('x').context("GROVE_BENCH_HISTORY is COMMITSxKIB, e.g. 500x4")?;
    Ok((c.parse().context("GROVE_BENCH_HISTORY commits")?, k.parse().context("GROVE_BENCH_HISTORY KiB")?))
}

/// Put `commits` commits on top of `repo`'s main with `git fast-import`, each rewriting
/// `crates/mNNN/assets/blob.bin` of one module (round robin) with `kib` KiB that do not
/// compress; returns the size of the packs.
fn add_history(repo: &Path, modules: usize, commits: usize, kib: usize) -> Result<u64> {
    use std::io::Write;
    let mut child = Command::new("git")
        .current_dir(repo)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting git fast-import")?;
    let mut stdin = std::io::BufWriter::new(child.stdin.take().context("fast-import's stdin")?);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut blob = vec![0u8; kib * 1024];
    for i in 0..commits {
        for chunk in blob.chunks_mut(8) {
            // xorshift64*: bytes that do not compress, the same on every run.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        let msg = format!("history {i}");
        write!(
            stdin,
            "commit refs/heads/main\ncommitter Bench <bench@example.invalid> {} +0000\ndata {}\n{msg}\n",
            1_767_225_600 + i,
            msg.len()
        )?;
        if i == 0 {
            writeln!(stdin, "from refs/heads/main^0")?;
        }
        writeln!(stdin, "M 100644 inline crates/m{:03}/assets/blob.bin\ndata {}", i % modules, blob.len())?;
        stdin.write_all(&blob)?;
        writeln!(stdin)?;
    }
    writeln!(stdin, "done")?;
    stdin.flush()?;
    drop(stdin);
    let status = child.wait().context("waiting for git fast-import")?;
    ensure!(status.success(), "git fast-import failed: {status}");
    plain_git(repo, &["reset", "--quiet", "--hard", "main"])?;
    let mut size = 0;
    for e in std::fs::read_dir(repo.join(".git/objects/pack")).context("listing the packs")? {
        size += e.context("listing the packs")?.metadata().context("a pack's size")?.len();
    }
    Ok(size)
}

struct MirrorTimes {
    ensure: Duration,
    seeded: grove_git::mirror::Seeded,
    fetch: Duration,
}

/// The mirror made by `Mirror::ensure` (objects linked, then fetched), and the way it was
/// made before (`git init --bare`, then a fetch of everything), one after the other.
fn mirror_both_ways(git: &Git, sandbox: &Path, repo: &Path) -> Result<MirrorTimes> {
    let dir = sandbox.join("part3-mirrors");
    let source =
        Source::parse(git, &repo.display().to_string(), sandbox).context("reading the repository")?;
    let t = Instant::now();
    let mirror = Mirror::ensure(git, &dir.join("new"), &source).context("making the mirror")?;
    let ensure = t.elapsed();
    // Count what seeding a second, empty mirror would link (not timed).
    let probe = dir.join("probe.git");
    plain_git(&dir, &["init", "--quiet", "--bare", "probe.git"])?;
    let seeded = Mirror { path: probe }.seed_objects(git, repo).context("seeding the probe")?;
    let old = dir.join("old.git");
    let t = Instant::now();
    plain_git(&dir, &["init", "--quiet", "--bare", "old.git"])?;
    let url = repo.to_str().context("the sandbox path is UTF-8")?;
    plain_git(
        &old,
        &["fetch", "--quiet", "--no-write-fetch-head", url, "+refs/heads/*:refs/remotes/origin/*"],
    )?;
    let fetch = t.elapsed();
    ensure!(mirror.resolve(git, "main").is_ok(), "the mirror has main");
    Ok(MirrorTimes { ensure, seeded, fetch })
}

struct PodTimes {
    sparse: Duration,
    sparse_kib: u64,
    full: Duration,
    full_kib: u64,
}

/// One module's workspace as a pod makes it (`worktree::clone_sparse`: shallow at the base,
/// no blobs but the module's) against a full `git clone`, both of the repository's URL.
fn clone_both_ways(git: &Git, sandbox: &Path, repo: &Path, module: &str) -> Result<PodTimes> {
    let dir = sandbox.join("part3-pods");
    // A pod clones the coordinator's mirror (a bare repository that serves commits by id and
    // partial fetches), here over file://.
    let mirror = Mirror::ensure(git, &dir.join("mirrors"), &Source::Local(repo.to_path_buf()))
        .context("the mirror the pods clone")?;
    let url = format!("file://{}", mirror.path.display());
    let base = git.resolve_commit(repo, "main").context("the base")?;
    let sparse_dir = dir.join("sparse");
    let t = Instant::now();
    worktree::clone_sparse(git, &url, &sparse_dir, "bench/pod", &base, Some(&[module.to_owned()]))
        .context("the pod's clone")?;
    let sparse = t.elapsed();
    ensure!(sparse_dir.join(module).join("src/lib.rs").is_file(), "the module is checked out");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let t = Instant::now();
    // The baseline is a full clone of the repository itself (the mirror keeps the source's
    // branches as remote-tracking refs, so a clone of it would check out nothing).
    plain_git(&dir, &["clone", "--quiet", &format!("file://{}", repo.display()), "full"])?;
    let full = t.elapsed();
    Ok(PodTimes { sparse, sparse_kib: disk_kib(&sparse_dir)?, full, full_kib: disk_kib(&dir.join("full"))? })
}

/// What `du -sk` says a folder takes.
fn disk_kib(dir: &Path) -> Result<u64> {
    let out = Command::new("du").arg("-sk").arg(dir).output().context("running du")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().and_then(|n| n.parse().ok()).context("du's answer")
}

struct FanOut {
    wall: Duration,
    tree: String,
}

/// The fan-out script a person would write instead, timed whole: in their repository, one
/// `git worktree add` per module that has the word (`xargs -P4`), `sed` over its files,
/// `git commit -am`; then every branch merged in order in one more worktree.
fn script_parallel(sandbox: &Path, repo: &Path) -> Result<FanOut> {
    let work = sandbox.join("part3-script");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let script = r#"set -eu
repo=$1 work=$2
cd "$repo"
base=$(git rev-parse HEAD)
git grep -l -w FileId "$base" -- crates | sed "s/^$base://" | cut -d/ -f1-2 | sort -u > "$work/modules"
xargs -P4 -I{} sh -c '
  set -eu
  m={}; n=$(basename "$m")
  git worktree add -q -b "fan/$n" "$0/wt/$n" "$1"
  cd "$0/wt/$n"
  git grep -l -w FileId -- "$m" | xargs sed -i -E "s/\bFileId\b/SourceFileId/g"
  git commit -q -am "$n: FileId -> SourceFileId"
' "$work" "$base" < "$work/modules"
git worktree add -q -b fan-integration "$work/integration" "$base"
cd "$work/integration"
while read -r m; do git merge -q --no-ff --no-edit "fan/$(basename "$m")"; done < "$work/modules"
git rev-parse 'HEAD^{tree}'
"#;
    let t = Instant::now();
    let out = Command::new("sh")
        .args(["-c", script, "fan-out"])
        .arg(repo)
        .arg(&work)
        .stdin(Stdio::null())
        .output()
        .context("running the fan-out script")?;
    let wall = t.elapsed();
    ensure!(
        out.status.success(),
        "the fan-out script failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let tree = String::from_utf8(out.stdout).context("the script printed UTF-8")?.trim().to_owned();
    Ok(FanOut { wall, tree })
}

/// `GROVE_BENCH_SIZE=MODULESxFILES`, default 200x20.
fn size() -> Result<(usize, usize)> {
    let Ok(s) = std::env::var("GROVE_BENCH_SIZE") else { return Ok((200, 20)) };
    let (m, f) = s.split_once('x').context("GROVE_BENCH_SIZE is MODULESxFILES, e.g. 20x10")?;
    let (m, f): (usize, usize) =
        (m.parse().context("GROVE_BENCH_SIZE modules")?, f.parse().context("GROVE_BENCH_SIZE files")?);
    ensure!(m >= 1 && f >= 2, "GROVE_BENCH_SIZE needs at least 1 module of 2 files");
    Ok((m, f))
}

/// Write and commit the workspace: `crates/mNNN/Cargo.toml` and `files` `.rs` files per
/// module (`m000` is a library every other module depends on); returns the number of files
/// and how many contain `FileId`.
fn generate(repo: &Path, modules: usize, files: usize) -> Result<(usize, usize)> {
    let write = |rel: &str, text: &str| -> Result<()> {
        let path = repo.join(rel);
        let dir = path.parent().context("a file has a folder")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\nresolver = \"3\"\n")?;
    let (mut total, mut with_id) = (1, 0);
    for m in 0..modules {
        let deps = if m == 0 { String::new() } else { "m000 = { path = \"../m000\" }\n".to_owned() };
        let manifest = format!(
            "[package]\nname = \"m{m:03}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n{deps}"
        );
        write(&format!("crates/m{m:03}/Cargo.toml"), &manifest)?;
        total += 1;
        for f in 0..files {
            let name = match f {
                0 => "lib.rs".to_owned(),
                f if f % 3 == 0 => format!("inner/f{f:02}.rs"),
                f => format!("f{f:02}.rs"),
            };
            let body = if (m + f) % 2 == 0 {
                with_id += 1;
                format!(
                    "use m000::FileId;\n\n// FileIdx and FileIds stay as they are.\npub fn f{f}(id: FileId) -> \
                     FileId {{\n    let _keep = \"FileIdx\";\n    id\n}}\n"
                )
            } else {
                format!("/// Number {f}.\npub fn g{f}() -> u32 {{\n    {f}\n}}\n")
            };
            write(&format!("crates/m{m:03}/src/{name}"), &body)?;
            total += 1;
        }
    }
    plain_git(repo, &["init", "--quiet", "--initial-branch=main"])?;
    plain_git(repo, &["add", "--all"])?;
    plain_git(repo, &["commit", "--quiet", "-m", "generated workspace"])?;
    // As a cloned repository is: packed, no loose objects.
    plain_git(repo, &["repack", "-a", "-d", "-q"])?;
    plain_git(repo, &["prune-packed"])?;
    Ok((total, with_id))
}

struct Prepare {
    mirror: Duration,
    sparse: Vec<Duration>,
    full: Vec<Duration>,
    sparse_files: usize,
    full_files: usize,
}

/// Part 1: grove's sparse worktree of one module against a full `git worktree add`, both of
/// the same bare mirror, alternating, each on a fresh branch from the base; the worktrees are
/// removed between runs (not timed).
fn prepare_one(git: &Git, sandbox: &Path, repo: &Path, module: &str) -> Result<Prepare> {
    let dir = sandbox.join("part1");
    let source =
        Source::parse(git, &repo.display().to_string(), sandbox).context("reading the repository")?;
    let t = Instant::now();
    let mirror = Mirror::ensure(git, &dir.join("mirrors"), &source).context("making the mirror")?;
    let mirror_time = t.elapsed();
    let base = mirror.resolve(git, "HEAD").context("resolving the base")?;
    let scope = [module.to_owned()];
    let mut out =
        Prepare { mirror: mirror_time, sparse: Vec::new(), full: Vec::new(), sparse_files: 0, full_files: 0 };
    for run in 0..=PREPARE_RUNS {
        let path = dir.join("wt").join(format!("sparse-{run}"));
        let t = Instant::now();
        worktree::add(git, &mirror.path, &path, &format!("bench/sparse-{run}"), &base, Some(&scope))
            .context("grove's sparse worktree")?;
        let took = t.elapsed();
        if run == 0 {
            out.sparse_files = count_files(&path)?;
            ensure!(path.join(module).join("src/lib.rs").is_file(), "the module is checked out");
            ensure!(!path.join("crates/m000").exists() || module == "crates/m000", "other modules are not");
        } else {
            out.sparse.push(took);
        }
        worktree::remove(git, &mirror.path, &path).context("removing the sparse worktree")?;

        let path = dir.join("wt").join(format!("full-{run}"));
        let branch = format!("bench/full-{run}");
        let t = Instant::now();
        git.run(
            &mirror.path,
            [
                "worktree".as_ref(),
                "add".as_ref(),
                "--quiet".as_ref(),
                "-b".as_ref(),
                branch.as_ref(),
                path.as_os_str(),
                base.as_ref(),
            ],
        )
        .context("a full git worktree add")?;
        let took = t.elapsed();
        if run == 0 {
            out.full_files = count_files(&path)?;
        } else {
            out.full.push(took);
        }
        worktree::remove(git, &mirror.path, &path).context("removing the full worktree")?;
    }
    Ok(out)
}

struct GroveRun {
    wall: Duration,
    tree: String,
    /// Whether `FileId` as a word is still in the integration branch.
    leftover: bool,
}

/// Part 2, grove: the real binary, embedded, on the generated repository.
fn grove_fanout(sandbox: &Path, home: &Path, repo: &Path, modules: usize) -> Result<GroveRun> {
    let repo_arg = repo.to_str().context("the sandbox path is UTF-8")?;
    // `GROVE_BENCH_BIN`: another build's grove (say, the commit before a change), same bench.
    let grove = std::env::var_os("GROVE_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_grove").into());
    let mut cmd = Command::new(grove);
    cmd.current_dir(sandbox).env("GROVE_HOME", home).stdin(Stdio::null()).args([
        "run",
        "--repo",
        repo_arg,
        "--split",
        "cargo",
        "--grep",
        PATTERN,
        "--agent",
        "replace",
        "--pattern",
        PATTERN,
        "--replace",
        REPLACEMENT,
        "-j",
        CONCURRENCY,
        "--json",
    ]);
    let t = Instant::now();
    let out = cmd.output().context("running grove")?;
    let wall = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "grove run failed ({}):\n{stderr}\n{stdout}", out.status);
    let job: serde_json::Value =
        serde_json::from_str(&stdout).with_context(|| format!("grove's JSON: {stdout}\n{stderr}"))?;
    let tasks = job["tasks"].as_array().context("the job's tasks")?;
    ensure!(tasks.len() == modules, "{} tasks for {modules} modules", tasks.len());
    let not_merged: Vec<&str> =
        tasks.iter().filter(|t| t["shown"] != "merged").filter_map(|t| t["task"].as_str()).collect();
    ensure!(not_merged.is_empty(), "tasks not merged: {not_merged:?}");
    let branch = job["integration_branch"].as_str().context("the integration branch")?;
    let tree = plain_git(repo, &["rev-parse", &format!("{branch}^{{tree}}")])?;
    let leftover = git_grep(repo, "FileId", branch)?;
    Ok(GroveRun { wall, tree: tree.trim().to_owned(), leftover })
}

#[derive(Default)]
struct ScriptRun {
    setup: Duration,
    add: Duration,
    rewrite: Duration,
    commit: Duration,
    merge: Duration,
    cleanup: Duration,
    tree: String,
}

impl ScriptRun {
    fn total(&self) -> Duration {
        self.add + self.rewrite + self.commit + self.merge
    }
}

/// Part 2, the script: what a person would write with plain git, one command after another,
/// in a clone of the repository (the clone is not timed).
fn script_fanout(sandbox: &Path, repo: &Path, modules: usize) -> Result<ScriptRun> {
    let mut run = ScriptRun::default();
    let dir = sandbox.join("part2-script");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let t = Instant::now();
    let repo_arg = repo.to_str().context("the sandbox path is UTF-8")?;
    plain_git(&dir, &["clone", "--quiet", repo_arg, "checkout"])?;
    let main = dir.join("checkout");
    let base = plain_git(&main, &["rev-parse", "HEAD"])?.trim().to_owned();
    run.setup = t.elapsed();
    let re = regex::Regex::new(PATTERN).context("the pattern")?;
    let worktrees = dir.join("worktrees");
    for m in 0..modules {
        let wt = worktrees.join(format!("m{m:03}"));
        let wt_arg = wt.to_str().context("the sandbox path is UTF-8")?;
        let t = Instant::now();
        plain_git(&main, &["worktree", "add", "--quiet", "-b", &format!("b{m}"), wt_arg, &base])?;
        run.add += t.elapsed();
        let t = Instant::now();
        let changed = rewrite(&wt.join(format!("crates/m{m:03}")), &re)?;
        run.rewrite += t.elapsed();
        ensure!(changed > 0, "module m{m:03} has FileId");
        let t = Instant::now();
        plain_git(&wt, &["commit", "--quiet", "-am", &format!("m{m:03}: FileId -> SourceFileId")])?;
        run.commit += t.elapsed();
    }
    let t = Instant::now();
    plain_git(&main, &["branch", "integration", &base])?;
    for m in 0..modules {
        plain_git(&main, &["checkout", "--quiet", "integration"])?;
        plain_git(&main, &["merge", "--quiet", "--no-ff", "--no-edit", &format!("b{m}")])?;
    }
    run.merge = t.elapsed();
    run.tree = plain_git(&main, &["rev-parse", "integration^{tree}"])?.trim().to_owned();
    let t = Instant::now();
    std::fs::remove_dir_all(&worktrees).with_context(|| format!("removing {}", worktrees.display()))?;
    plain_git(&main, &["worktree", "prune"])?;
    run.cleanup = t.elapsed();
    Ok(run)
}

struct SedLimit {
    wall: Duration,
    tree: String,
}

/// Part 2, the limit: the whole rename in one checkout with nothing per module: `git grep -l`,
/// `sed -i` over what it found, one `git commit -a`. The clone is not timed.
fn sed_limit(sandbox: &Path, repo: &Path) -> Result<SedLimit> {
    let dir = sandbox.join("part2-sed");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let repo_arg = repo.to_str().context("the sandbox path is UTF-8")?;
    plain_git(&dir, &["clone", "--quiet", repo_arg, "checkout"])?;
    sync()?;
    let checkout = dir.join("checkout");
    let script = r#"set -eu
git grep -l -w FileId -- crates | xargs sed -i -E "s/\bFileId\b/SourceFileId/g"
git commit -q -am "FileId -> SourceFileId"
git rev-parse 'HEAD^{tree}'
"#;
    let t = Instant::now();
    let out = Command::new("sh")
        .current_dir(&checkout)
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .context("running the sed script")?;
    let wall = t.elapsed();
    ensure!(out.status.success(), "the sed script failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    let tree = String::from_utf8(out.stdout).context("git printed UTF-8")?.trim().to_owned();
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(SedLimit { wall, tree })
}

/// Apply the rewrite to every file under `dir`; returns how many files changed.
fn rewrite(dir: &Path, re: &regex::Regex) -> Result<usize> {
    let mut changed = 0;
    for path in files_under(dir)? {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let new = re.replace_all(&text, REPLACEMENT);
        if new != text {
            std::fs::write(&path, new.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Every file under `dir`, `.git` left out.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry.with_context(|| format!("listing {}", d.display()))?;
            let kind = entry.file_type().with_context(|| format!("reading {}", entry.path().display()))?;
            if entry.file_name() == ".git" {
                continue;
            }
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// Copy the folder `from` (a repository and its `.git`) to `to`, which must not exist.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = stack.pop() {
        std::fs::create_dir(&dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in std::fs::read_dir(&src).with_context(|| format!("listing {}", src.display()))? {
            let entry = entry.with_context(|| format!("listing {}", src.display()))?;
            let kind = entry.file_type().with_context(|| format!("reading {}", entry.path().display()))?;
            let target = dst.join(entry.file_name());
            if kind.is_dir() {
                stack.push((entry.path(), target));
            } else {
                std::fs::copy(entry.path(), &target)
                    .with_context(|| format!("copying {} to {}", entry.path().display(), target.display()))?;
            }
        }
    }
    Ok(())
}

/// Flush what earlier steps wrote, so that their write-back does not land in a timed run.
fn sync() -> Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

fn count_files(dir: &Path) -> Result<usize> {
    Ok(files_under(dir)?.len())
}

/// Run git as a script would: the inherited (hermetic) environment, nothing else.
fn plain_git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!("git {args:?} in {} failed: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).context("git printed UTF-8")
}

/// Whether the whole word `word` occurs in `rev`'s tree.
fn git_grep(repo: &Path, word: &str, rev: &str) -> Result<bool> {
    let status = Command::new("git")
        .current_dir(repo)
        .args(["grep", "--quiet", "-w", "-e", word, rev])
        .stdin(Stdio::null())
        .status()
        .context("running git grep")?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!("git grep failed: {status}"),
    }
}

fn median(d: &[Duration]) -> Duration {
    let mut v = d.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn min(d: &[Duration]) -> Duration {
    d.iter().copied().min().unwrap_or_default()
}

fn max(d: &[Duration]) -> Duration {
    d.iter().copied().max().unwrap_or_default()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
