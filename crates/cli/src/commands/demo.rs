use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use grove_core::spec::{AgentKind, SplitRule};
use grove_git::Git;

use super::run::{RunArgs, cmd_run};
use crate::specargs::SpecArgs;

/// Make a sample multi-crate repository and run a real fan-out codemod on it, embedded.
///
/// The repository (a Cargo workspace of a dozen crates that use a type `FileId`) is made in a
/// new temporary folder and kept, so you can look at the result with the commands printed at
/// the end. grove renames `FileId` to `SourceFileId` with one task per crate, in parallel
/// worktrees, and merges the branches into an integration branch in dependency order.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove demo
  grove demo --crates 40 -j 8
  grove demo --dir /tmp/grove-demo")]
pub struct DemoArgs {
    /// Where to make the repository (must not exist); default: a new temporary folder
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How many crates the sample workspace has
    #[arg(long, default_value_t = 12)]
    pub crates: usize,
    /// Tasks at once
    #[arg(long, short = 'j', default_value_t = 4)]
    pub concurrency: u32,
}

pub async fn cmd_demo(home: PathBuf, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = match &args.dir {
        Some(d) if d.exists() => {
            anyhow::bail!("{} already exists; grove demo makes a new folder", d.display())
        }
        Some(d) => d.clone(),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            std::env::temp_dir().join(format!("grove-demo-{stamp}"))
        }
    };
    let git = Git::detect()?;
    write_sample(&git, &dir, args.crates.max(2))?;
    eprintln!("sample repository: {} ({} crates)", dir.display(), args.crates.max(2));
    let spec = SpecArgs {
        repo: vec![dir.display().to_string()],
        name: Some("demo-rename".into()),
        prompt: Some("Rename FileId to SourceFileId".into()),
        grep: Some(r"\bFileId\b".into()),
        split: Some(SplitRule::Cargo),
        agent: Some(AgentKind::Replace),
        pattern: Some(r"\bFileId\b".into()),
        replace: Some("SourceFileId".into()),
        concurrency: Some(args.concurrency),
        ..SpecArgs::default()
    };
    cmd_run(
        home,
        RunArgs {
            spec,
            json: false,
            job: None,
            only: vec![],
            failed: false,
            canary: None,
            yes: false,
            nats: None,
            ack_wait: std::time::Duration::from_secs(60),
            local_workers: None,
            coordinator: None,
            tls: Default::default(),
            follow: Default::default(),
            nats_tls: Default::default(),
            agent_env: Default::default(),
            detach: false,
        },
    )
    .await
}

/// A Cargo workspace: `crates/base` defines `FileId`; every other crate depends on the one
/// before it and on `base`, and uses `FileId` in a few files.
pub fn write_sample(git: &Git, dir: &Path, crates: usize) -> anyhow::Result<()> {
    let write = |p: &str, s: String| -> anyhow::Result<()> {
        let path = dir.join(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, s).with_context(|| format!("writing {}", path.display()))
    };
    let names: Vec<String> =
        (0..crates).map(|i| if i == 0 { "base".into() } else { format!("part{i:02}") }).collect();
    write("Cargo.toml", "[workspace]\nresolver = \"2\"\nmembers = [\"crates/*\"]\n".into())?;
    write("README.md", "A sample workspace made by `grove demo`.\n".into())?;
    for (i, name) in names.iter().enumerate() {
        let mut deps = String::new();
        if i > 0 {
            deps.push_str("base = { path = \"../base\" }\n");
        }
        if i > 1 {
            deps.push_str(&format!("{0} = {{ path = \"../{0}\" }}\n", names[i - 1]));
        }
        write(
            &format!("crates/{name}/Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}"
            ),
        )?;
        if i == 0 {
            write(
                "crates/base/src/lib.rs",
                "/// Identifies a source file.\n#[derive(Clone, Copy, Debug, PartialEq, Eq)]\npub struct FileId(pub u32);\n".into(),
            )?;
            continue;
        }
        write(&format!("crates/{name}/src/lib.rs"), "pub mod ids;\npub mod walk;\npub mod text;\n".into())?;
        write(
            &format!("crates/{name}/src/ids.rs"),
            format!("use base::FileId;\n\npub fn first() -> FileId {{\n    FileId({i})\n}}\n"),
        )?;
        write(
            &format!("crates/{name}/src/walk.rs"),
            "use base::FileId;\n\npub fn walk(ids: &[FileId]) -> usize {\n    ids.iter().filter(|id| id.0 > 0).count()\n}\n".into(),
        )?;
        write(
            &format!("crates/{name}/src/text.rs"),
            "pub fn greet() -> &'static str {\n    \"no ids here\"\n}\n".into(),
        )?;
    }
    git.run(dir, ["init", "--quiet", "--initial-branch=main"])?;
    git.run(dir, ["add", "--all"])?;
    git.run(
        dir,
        [
            "-c",
            "user.name=grove demo",
            "-c",
            "user.email=demo@grove.invalid",
            "commit",
            "--quiet",
            "-m",
            "Sample workspace",
        ],
    )?;
    Ok(())
}
