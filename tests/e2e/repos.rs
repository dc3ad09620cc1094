//! Cross-repository jobs (`[[repos]]`, `--repo` repeated, `--repos-from`): a library and the
//! repositories that consume it, ordered by their manifests, run level by level, each
//! consumer's checks built against its upstream's integration head (`GROVE_UPSTREAM_<NAME>`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::Env;

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, c)| ((*p).to_owned(), (*c).to_owned())).collect()
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// The Rust toolchain this test runs with, as absolute paths: grove's processes get a cleared
/// environment, without rustup's variables, so the checks name the real binaries.
fn sysroot() -> PathBuf {
    let out = Command::new("rustc").args(["--print", "sysroot"]).output().expect("rustc --print sysroot");
    assert!(out.status.success(), "rustc --print sysroot: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `sh -c script` in `cwd`, hermetic, with `env` added, as a check runs.
fn sh(env: &Env, cwd: &Path, script: &str, vars: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("sh");
    grove_tests::hermetic(&mut cmd).env("HOME", env.path().join("home"));
    cmd.current_dir(cwd).args(["-c", script]).envs(vars.iter().map(|(k, v)| (*k, *v)));
    cmd.output().expect("run sh")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A checkout of `repo`'s `branch` at `env.path()/name`, outside grove.
fn checkout(env: &Env, repo: &Path, branch: &str, name: &str) -> PathBuf {
    env.git(env.path(), &["clone", "--quiet", "--branch", branch, utf8(repo), name]);
    env.path().join(name)
}

/// Names of the `grove/...` branches of `repo`.
fn grove_branches(env: &Env, repo: &Path) -> String {
    env.git(repo, &["for-each-ref", "--format=%(refname)", "refs/heads/grove"])
}

/// The repository named `name` in a group's JSON.
fn repository<'a>(group: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    group["repositories"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["repository"]["name"] == name))
        .unwrap_or_else(|| panic!("no repository {name} in {group:#}"))
}

/// A Cargo library `mylib` (in `lib`) with `old_name`, and two binaries (`app1`, `app2`) that
/// call it through a git dependency on `lib`.
fn cargo_repos(env: &Env) -> (PathBuf, PathBuf, PathBuf) {
    let lib = env.repo(
        "lib",
        &files(&[
            ("Cargo.toml", "[package]\nname = \"mylib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
            ("src/lib.rs", "pub fn old_name() -> u32 {\n    1\n}\n"),
            (".gitignore", "/target\n"),
        ]),
    );
    let app = |name: &str| {
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nmylib = {{ git = \"file://{}\" }}\n",
            lib.display()
        );
        env.repo(
            name,
            &[
                ("Cargo.toml".to_owned(), manifest),
                (
                    "src/main.rs".to_owned(),
                    "fn main() {\n    println!(\"{}\", mylib::old_name());\n}\n".to_owned(),
                ),
                (".gitignore".to_owned(), "/target\n".to_owned()),
            ],
        )
    };
    let (app1, app2) = (app("app1"), app("app2"));
    (lib, app1, app2)
}

/// `cargo check` of the workspace it runs in; given GROVE_UPSTREAM_LIB, with `mylib` patched
/// to that checkout (else `mylib` is what its git source, `lib`'s HEAD, has).
fn cargo_check(env: &Env, lib: &Path) -> String {
    let sys = sysroot();
    let t = env.path();
    format!(
        "echo \"upstream: ${{GROVE_UPSTREAM_LIB:-none}}\"; CARGO_HOME={t}/cargo-home CARGO_TARGET_DIR={t}/target RUSTC={sys}/bin/rustc {sys}/bin/cargo check -q \
         ${{GROVE_UPSTREAM_LIB:+--config \"patch.'file://{lib}'.mylib.path='$GROVE_UPSTREAM_LIB'\"}}",
        t = t.display(),
        sys = sys.display(),
        lib = lib.display()
    )
}

/// A `[[repos]]` spec renaming `from` to `to` in `repos`, one task each, with `check`.
fn rename_spec(env: &Env, repos: &[&str], from: &str, to: &str, check: &str) -> PathBuf {
    let mut spec = String::from("name = \"rename\"\n");
    for r in repos {
        spec.push_str(&format!("\n[[repos]]\nsource = \"{r}\"\n"));
    }
    spec.push_str(&format!(
        "\n[split]\nrule = \"single\"\n\n[agent]\nkind = \"replace\"\npattern = '\\b{from}\\b'\nreplace = \"{to}\"\n\n[checks]\ntask = '''{check}'''\n"
    ));
    let path = env.path().join("job.toml");
    std::fs::write(&path, spec).expect("write spec");
    path
}

#[test]
fn cargo_library_and_two_consumers_rename_across_repositories() {
    let env = Env::new();
    let (lib, app1, app2) = cargo_repos(&env);
    let check = cargo_check(&env, &lib);
    // app2 first in the spec: the order comes from the manifests, not the spec.
    let spec = rename_spec(&env, &["app2", "lib", "app1"], "old_name", "new_name", &check);
    let spec = utf8(&spec);

    // The plan: lib first, each consumer needing it because of its Cargo.toml.
    let plan = env.grove(env.path(), &["plan", spec, "--json"]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stderr, plan.stdout);
    let p = plan.json();
    assert_eq!(p["order"][0], "lib", "{p:#}");
    let mut consumers: Vec<&str> =
        p["order"].as_array().expect("order")[1..].iter().filter_map(|v| v.as_str()).collect();
    consumers.sort_unstable();
    assert_eq!(consumers, ["app1", "app2"], "{p:#}");
    for app in ["app1", "app2"] {
        let edge = p["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .find(|e| e["from"] == app)
            .unwrap_or_else(|| panic!("no edge from {app}: {p:#}"));
        assert_eq!(edge["to"], "lib", "{p:#}");
        let why = edge["why"].as_str().expect("why");
        assert!(why.contains("Cargo.toml") && why.contains("cargo:mylib"), "{why}");
    }
    let repos = p["repositories"].as_array().expect("repositories");
    assert_eq!(repos.len(), 3, "{p:#}");
    for r in repos {
        let name = r["name"].as_str().expect("name");
        assert_eq!(r["level"], if name == "lib" { 0 } else { 1 }, "{r:#}");
        let tasks = r["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 1, "split single: one task per repository: {r:#}");
        assert_eq!(tasks[0]["repository"], name);
    }
    let human = env.grove(env.path(), &["plan", spec]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    // By level: lib, then both consumers (in the JSON's order).
    let order = p["order"].as_array().expect("order").iter().filter_map(|v| v.as_str()).collect::<Vec<_>>();
    assert!(
        human
            .stdout
            .contains(&format!("3 repositories, merged in this order: lib, then {}", order[1..].join(" + "))),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("  app1 needs lib: ") && human.stdout.contains("  app2 needs lib: "),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("REPOSITORY"), "{}", human.stdout);
    let dot = env.grove(env.path(), &["plan", spec, "--dot"]);
    assert_eq!(dot.code, 0, "{}", dot.stderr);
    for want in [
        "subgraph \"cluster_lib\"",
        "subgraph \"cluster_app1\"",
        "\"app1\" -> \"lib\"",
        "\"app2\" -> \"lib\"",
    ] {
        assert!(dot.stdout.contains(want), "{want:?} in {}", dot.stdout);
    }
    assert!(!env.grove_home().exists(), "grove plan created state");

    // The run: every repository's one task merged, consumers checked against lib's head.
    let run = env.grove(env.path(), &["run", spec, "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let g = run.json();
    let group = g["id"].as_str().expect("id").to_owned();
    assert!(group.starts_with("rename-"), "{group}");
    assert_eq!(g["state"], "done", "{g:#}");
    let branch = format!("grove/{group}/integration");
    let tasks = g["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 3, "{g:#}");
    assert!(tasks.iter().all(|t| t["shown"] == "merged"), "{g:#}");
    let mut named: Vec<&str> = tasks.iter().filter_map(|t| t["repository"].as_str()).collect();
    named.sort_unstable();
    assert_eq!(named, ["app1", "app2", "lib"], "{g:#}");
    for (name, repo, file, want) in [
        ("lib", &lib, "src/lib.rs", "pub fn new_name() -> u32"),
        ("app1", &app1, "src/main.rs", "mylib::new_name()"),
        ("app2", &app2, "src/main.rs", "mylib::new_name()"),
    ] {
        let r = repository(&g, name);
        assert_eq!(r["id"], format!("{group}.{name}"), "{r:#}");
        assert_eq!(r["integration_branch"], branch.as_str(), "{r:#}");
        assert_eq!(r["repository"]["group"], group.as_str(), "{r:#}");
        assert_eq!(r["repository"]["level"], if name == "lib" { 0 } else { 1 }, "{r:#}");
        let deps = if name == "lib" { serde_json::json!([]) } else { serde_json::json!(["lib"]) };
        assert_eq!(r["repository"]["depends_on"], deps, "{r:#}");
        // grove published the branch back into the person's repository.
        let head = env.git(repo, &["rev-parse", &branch]);
        assert_eq!(r["integration_head"], head.as_str(), "{r:#}");
        let changed = env.git(repo, &["show", &format!("{branch}:{file}")]);
        assert!(changed.contains(want) && !changed.contains("old_name"), "{name}: {changed}");
        assert!(env.git(repo, &["show", &format!("main:{file}")]).contains("old_name"), "main moved");
        assert_eq!(env.git(repo, &["status", "--porcelain"]), "", "{name}'s checkout was touched");
    }
    let status = env.grove(env.path(), &["status", &group, "--json"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let s = status.json();
    assert_eq!(s["id"], group.as_str());
    assert_eq!(s["repositories"].as_array().map(Vec::len), Some(3), "{s:#}");
    assert_eq!(repository(&s, "app2")["integration_head"], repository(&g, "app2")["integration_head"]);
    // Each check ran, the consumers' with a checkout of lib, lib's with none.
    for (name, want) in [("lib", "upstream: none"), ("app1", "upstream: /"), ("app2", "upstream: /")] {
        let t = tasks.iter().find(|t| t["repository"] == name).expect("task");
        let logs = env
            .grove(env.path(), &["logs", &format!("{group}.{name}/{}", t["task"].as_str().expect("slug"))]);
        assert_eq!(logs.code, 0, "{}", logs.stderr);
        assert!(logs.stdout.contains("check: ") && logs.stdout.contains(want), "{name}: {}", logs.stdout);
    }

    // The consumers' checks passed only because of the upstream: app1's integration head does
    // not build against mylib at its own source (lib's main, old_name only), and builds
    // against lib's integration head.
    let app1_int = checkout(&env, &app1, &branch, "app1-int");
    let lib_int = checkout(&env, &lib, &branch, "lib-int");
    let alone = sh(&env, &app1_int, &check, &[]);
    assert!(!alone.status.success(), "app1 built without its upstream: {}", text(&alone));
    assert!(text(&alone).contains("new_name"), "{}", text(&alone));
    let with = sh(&env, &app1_int, &check, &[("GROVE_UPSTREAM_LIB", &lib_int)]);
    assert!(with.status.success(), "app1 against lib's integration head: {}", text(&with));
}

/// A Go module `example.com/lib` with `OldName`, and two commands (`app1`, `app2`) that
/// require it.
fn go_repos(env: &Env) -> (PathBuf, PathBuf, PathBuf) {
    let lib = env.repo(
        "lib",
        &files(&[
            ("go.mod", "module example.com/lib\n\ngo 1.19\n"),
            ("lib.go", "package lib\n\nfunc OldName() int { return 1 }\n"),
        ]),
    );
    let app = |name: &str| {
        env.repo(
            name,
            &[
                (
                    "go.mod".to_owned(),
                    format!("module example.com/{name}\n\ngo 1.19\n\nrequire example.com/lib v0.0.0\n"),
                ),
                (
                    "main.go".to_owned(),
                    "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/lib\"\n)\n\nfunc main() { fmt.Println(lib.OldName()) }\n"
                        .to_owned(),
                ),
            ],
        )
    };
    let (app1, app2) = (app("app1"), app("app2"));
    (lib, app1, app2)
}

/// `go build` of the module it runs in; given GROVE_UPSTREAM_LIB, in a Go workspace (made
/// outside the task's workspace) with that checkout as `example.com/lib`. No network.
fn go_check(env: &Env) -> String {
    format!(
        "export HOME={t}/home GOCACHE={t}/gocache GOPATH={t}/gopath GOPROXY=off GOFLAGS=; \
         if [ -n \"$GROVE_UPSTREAM_LIB\" ]; then \
           w=$(mktemp -d {t}/gowork.XXXXXX) && (cd \"$w\" && go work init \"$OLDPWD\" \"$GROVE_UPSTREAM_LIB\") \
           && GOWORK=\"$w/go.work\" go build -o /dev/null .; \
         else go build -o /dev/null ./...; fi",
        t = env.path().display()
    )
}

#[test]
fn go_modules_library_and_two_consumers() {
    let env = Env::new();
    let (lib, app1, app2) = go_repos(&env);
    let check = go_check(&env);
    let spec = rename_spec(&env, &["app1", "app2", "lib"], "OldName", "NewName", &check);
    let spec = utf8(&spec);

    let plan = env.grove(env.path(), &["plan", spec, "--json"]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stderr, plan.stdout);
    let p = plan.json();
    assert_eq!(p["order"][0], "lib", "{p:#}");
    let edges = p["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 2, "{p:#}");
    for e in edges {
        assert_eq!(e["to"], "lib", "{p:#}");
        let why = e["why"].as_str().expect("why");
        assert!(why.contains("go.mod") && why.contains("go:example.com/lib"), "{why}");
    }

    let run = env.grove(env.path(), &["run", spec, "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let g = run.json();
    let group = g["id"].as_str().expect("id");
    let branch = format!("grove/{group}/integration");
    assert!(g["tasks"].as_array().expect("tasks").iter().all(|t| t["shown"] == "merged"), "{g:#}");
    assert!(env.git(&lib, &["show", &format!("{branch}:lib.go")]).contains("func NewName() int"));
    for app in [&app1, &app2] {
        let main = env.git(app, &["show", &format!("{branch}:main.go")]);
        assert!(main.contains("lib.NewName()") && !main.contains("OldName"), "{main}");
    }

    // app1's integration head builds only in a workspace with lib's integration head: not on
    // its own (its go.mod's requirement resolves nowhere), not with lib's main (OldName).
    let app1_int = checkout(&env, &app1, &branch, "app1-int");
    let lib_int = checkout(&env, &lib, &branch, "lib-int");
    let env_go = format!(
        "export HOME={t}/home GOCACHE={t}/gocache GOPATH={t}/gopath GOPROXY=off GOFLAGS=; go build -o /dev/null .",
        t = env.path().display()
    );
    let alone = sh(&env, &app1_int, &env_go, &[]);
    assert!(!alone.status.success(), "app1 built on its own: {}", text(&alone));
    assert!(text(&alone).contains("missing go.sum entry"), "{}", text(&alone));
    let old = sh(&env, &app1_int, &check, &[("GROVE_UPSTREAM_LIB", &lib)]);
    assert!(!old.status.success(), "app1 built against lib's main: {}", text(&old));
    assert!(text(&old).contains("NewName"), "{}", text(&old));
    let with = sh(&env, &app1_int, &check, &[("GROVE_UPSTREAM_LIB", &lib_int)]);
    assert!(with.status.success(), "app1 against lib's integration head: {}", text(&with));
}

#[test]
fn a_consumer_does_not_start_when_its_library_did_not_merge() {
    let env = Env::new();
    let lib = env.repo("lib", &files(&[("LIBRARY", "the library\n"), ("api.txt", "old_name\n")]));
    let app1 = env.repo("app1", &files(&[("use.txt", "calls old_name\n")]));
    let app2 = env.repo("app2", &files(&[("use.txt", "calls old_name\n")]));
    let docs = env.repo("docs", &files(&[("guide.txt", "about old_name\n")]));
    // The check fails only in lib (the one repository with a LIBRARY file); app1 and app2 need
    // lib by depends_on; docs needs nothing.
    let spec = env.path().join("job.toml");
    std::fs::write(
        &spec,
        r#"name = "rename"

[[repos]]
source = "lib"

[[repos]]
source = "app1"
depends_on = ["lib"]

[[repos]]
source = "app2"
depends_on = ["lib"]

[[repos]]
source = "docs"

[split]
rule = "single"

[agent]
kind = "replace"
pattern = '\bold_name\b'
replace = "new_name"

[checks]
task = '''if [ -f LIBRARY ]; then echo "the library's check fails" >&2; exit 4; fi'''
"#,
    )
    .expect("write spec");
    let run = env.grove(env.path(), &["run", utf8(&spec), "--json"]);
    assert_eq!(
        run.code, 1,
        "a repository that did not merge makes the run exit 1: {}\n{}",
        run.stderr, run.stdout
    );
    let g = run.json();
    let group = g["id"].as_str().expect("id").to_owned();
    let branch = format!("grove/{group}/integration");
    let tasks = g["tasks"].as_array().expect("tasks");
    let of = |name: &str| {
        tasks.iter().find(|t| t["repository"] == name).unwrap_or_else(|| panic!("{name}: {g:#}"))
    };

    let lib_task = of("lib");
    assert_eq!(lib_task["state"], "failed", "{lib_task:#}");
    assert!(lib_task["reason"].as_str().expect("reason").contains("failed (exit 4)"), "{lib_task:#}");
    let slug = lib_task["task"].as_str().expect("slug");
    for app in ["app1", "app2"] {
        let t = of(app);
        assert_eq!(t["state"], "cancelled", "{t:#}");
        let reason = t["reason"].as_str().expect("reason");
        assert!(
            reason.contains(&format!("not started: it needs lib ended with tasks not merged: {slug}")),
            "{app}: {reason}"
        );
        assert_eq!(repository(&g, app)["state"], "cancelled", "{g:#}");
    }
    assert_eq!(repository(&g, "lib")["state"], "done", "{g:#}");
    assert_eq!(g["state"], "cancelled", "a repository of the job was cancelled: {g:#}");
    // A repository that needs nothing of lib's ran and merged.
    assert_eq!(of("docs")["shown"], "merged", "{g:#}");
    assert!(env.git(&docs, &["show", &format!("{branch}:guide.txt")]).contains("new_name"));

    // Neither consumer's agent ran: nothing of theirs was published. lib's failed task keeps
    // its branch (with the rename, for a person to look at); its integration branch is main.
    assert_eq!(grove_branches(&env, &app1), "", "app1 started");
    assert_eq!(grove_branches(&env, &app2), "", "app2 started");
    if grove_branches(&env, &lib).lines().any(|b| b == format!("refs/heads/{branch}")) {
        assert_eq!(
            env.git(&lib, &["rev-parse", &format!("{branch}^{{tree}}")]),
            env.git(&lib, &["rev-parse", "main^{tree}"]),
            "lib's integration branch has something merged"
        );
    }

    // status says the same, later.
    let status = env.grove(env.path(), &["status", &group, "--json"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let s = status.json();
    assert_eq!(repository(&s, "app2")["state"], "cancelled", "{s:#}");
    let human = env.grove(env.path(), &["status", &group]);
    assert!(human.stdout.contains("not started: it needs lib"), "{}", human.stdout);
}

/// Every refusal of a cross-repository job exits 2, says what was wrong (naming the
/// repository), and leaves nothing behind: no grove state, no branch in any repository.
#[test]
fn cross_repository_refusals_create_nothing() {
    let env = Env::new();
    let lib = env.repo("lib", &files(&[("src/api.txt", "old_name\n")]));
    let app1 = env.repo("app1", &files(&[("use.txt", "calls old_name\n")]));
    // Another repository whose folder is also called lib.
    let other = env.repo("other/lib", &files(&[("more.txt", "old_name\n")]));
    // A folder that is no repository.
    std::fs::create_dir_all(env.path().join("notrepo")).expect("mkdir");
    std::fs::write(env.path().join("notrepo/f.txt"), "old_name\n").expect("write");
    let repos = [&lib, &app1, &other];

    let tail = "\n[split]\nrule = \"single\"\n\n[agent]\nkind = \"replace\"\npattern = \"old_name\"\nreplace = \"new_name\"\n";
    let specs: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unreachable",
            "[[repos]]\nsource = \"lib\"\n\n[[repos]]\nsource = \"notrepo\"\n".into(),
            vec!["repository notrepo"],
        ),
        (
            "unknown-base",
            "[[repos]]\nsource = \"lib\"\n\n[[repos]]\nsource = \"app1\"\nbase = \"no-such-branch\"\n".into(),
            vec!["repository app1", "no-such-branch"],
        ),
        (
            "same-name",
            "[[repos]]\nsource = \"lib\"\n\n[[repos]]\nsource = \"other/lib\"\n".into(),
            vec!["two repositories are named", "lib"],
        ),
        (
            "same-repository",
            "[[repos]]\nsource = \"lib\"\n\n[[repos]]\nname = \"lib2\"\nsource = \"./lib\"\n".into(),
            vec!["lib and lib2 are the same repository"],
        ),
        (
            "unknown-dependency",
            "[[repos]]\nsource = \"lib\"\ndepends_on = [\"nowhere\"]\n\n[[repos]]\nsource = \"app1\"\n".into(),
            vec!["repository lib depends on \"nowhere\"", "which is not a repository of the job"],
        ),
        (
            "cycle",
            "[[repos]]\nsource = \"lib\"\ndepends_on = [\"app1\"]\n\n[[repos]]\nsource = \"app1\"\ndepends_on = [\"lib\"]\n"
                .into(),
            vec!["cycle", "lib", "app1"],
        ),
        (
            "repo-and-repos",
            "[repo]\nsource = \"lib\"\n\n[[repos]]\nsource = \"lib\"\n\n[[repos]]\nsource = \"app1\"\n".into(),
            vec!["[repo]", "[[repos]]", "not both"],
        ),
    ];
    let mut cases: Vec<(String, Vec<String>, Vec<&str>)> = Vec::new();
    for (name, body, expected) in specs {
        let path = env.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("name = \"{name}\"\n\n{body}{tail}")).expect("write spec");
        cases.push((name.to_owned(), vec![utf8(&path).to_owned()], expected));
    }
    // The same refusals from flags.
    let agent = ["--split", "single", "--agent", "replace", "--pattern", "old_name", "--replace", "new_name"];
    let flags = |repos: &[&str]| -> Vec<String> {
        repos
            .iter()
            .flat_map(|r| ["--repo".to_owned(), (*r).to_owned()])
            .chain(agent.iter().map(|a| (*a).to_owned()))
            .collect()
    };
    cases.push(("flags-unreachable".into(), flags(&["lib", "notrepo"]), vec!["repository notrepo"]));
    cases.push(("flags-same-name".into(), flags(&["lib", "other/lib"]), vec!["two repositories are named"]));
    // A folder inside a repository is that repository.
    cases.push((
        "flags-same-repository".into(),
        flags(&["lib", "app1", "lib/src"]),
        vec!["lib and src are the same repository"],
    ));
    std::fs::write(env.path().join("list.txt"), "# the job's repositories\nlib\n\nnotrepo\n")
        .expect("write list");
    let mut listed: Vec<String> = vec!["--repos-from".into(), "list.txt".into()];
    listed.extend(agent.iter().map(|a| (*a).to_owned()));
    cases.push(("repos-from-unreachable".into(), listed, vec!["repository notrepo"]));

    for verb in ["plan", "run"] {
        for (name, args, expected) in &cases {
            let mut all = vec![verb];
            all.extend(args.iter().map(String::as_str));
            let run = env.grove(env.path(), &all);
            assert_eq!(run.code, 2, "{verb} {name} should be refused: {}\n{}", run.stderr, run.stdout);
            for e in expected {
                assert!(run.stderr.contains(e), "{verb} {name}: expected {e:?} in: {}", run.stderr);
            }
            assert!(!env.grove_home().exists(), "{verb} {name}: grove created state for a refused job");
            for r in repos {
                assert_eq!(grove_branches(&env, r), "", "{verb} {name}: a branch in {}", r.display());
            }
        }
    }
}

/// The plan's JSON without what differs between two plans of one job (its id's salt).
fn comparable(mut plan: serde_json::Value) -> serde_json::Value {
    plan.as_object_mut().expect("object").remove("integration_branch");
    plan
}

#[test]
fn flags_and_repos_from_make_the_same_job() {
    let env = Env::new();
    let (lib, _app1, app2) = cargo_repos(&env);
    let agent =
        ["--split", "single", "--agent", "replace", "--pattern", r"\bold_name\b", "--replace", "new_name"];
    let plan = |args: &[&str]| {
        let mut all = vec!["plan"];
        all.extend(args);
        all.extend(["--name", "rename", "--json"]);
        all.extend(agent);
        let run = env.grove(env.path(), &all);
        assert_eq!(run.code, 0, "{args:?}: {}\n{}", run.stderr, run.stdout);
        run.json()
    };

    // Flags, in an order the manifests overrule.
    let flags = plan(&["--repo", "app2", "--repo", "app1", "--repo", "lib"]);
    assert_eq!(flags["order"][0], "lib", "{flags:#}");
    let names: Vec<&str> = flags["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{flags:#}");
    assert_eq!(names[0], "lib", "repositories are listed in the order they merge: {flags:#}");
    assert_eq!(flags["edges"].as_array().map(Vec::len), Some(2), "{flags:#}");
    let lib_entry = &flags["repositories"][0];
    assert_eq!(lib_entry["source"], utf8(&lib.canonicalize().expect("canonical")), "{lib_entry:#}");
    assert_eq!(lib_entry["tasks"][0]["files"], serde_json::json!([".gitignore", "Cargo.toml", "src/lib.rs"]));

    // The same repositories from a list: comments, blank lines, a path relative to where
    // grove runs and an absolute one.
    let list = env.path().join("list.txt");
    std::fs::write(&list, format!("# the consumers\napp2\n  app1  \n\n# the library\n{}\n", lib.display()))
        .expect("write list");
    let listed = plan(&["--repos-from", utf8(&list)]);
    assert_eq!(comparable(listed), comparable(flags.clone()));

    // And from a spec in another folder: its paths are relative to its own folder.
    std::fs::create_dir_all(env.path().join("jobs")).expect("mkdir");
    let spec = env.path().join("jobs/job.toml");
    std::fs::write(
        &spec,
        "name = \"rename\"\n\n[[repos]]\nsource = \"../app2\"\n\n[[repos]]\nsource = \"../app1\"\n\n[[repos]]\nsource = \"../lib\"\n",
    )
    .expect("write spec");
    let from_spec = plan(&[utf8(&spec)]);
    assert_eq!(comparable(from_spec), comparable(flags));

    // The listed job runs as the spec's would: every repository's integration branch renamed.
    let mut args = vec!["run", "--repos-from", utf8(&list), "--json"];
    args.extend(agent);
    let run = env.grove(env.path(), &args);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, run.stdout);
    let g = run.json();
    assert_eq!(g["repositories"].as_array().map(Vec::len), Some(3), "{g:#}");
    let branch = format!("grove/{}/integration", g["id"].as_str().expect("id"));
    assert!(env.git(&app2, &["show", &format!("{branch}:src/main.rs")]).contains("mylib::new_name()"));
    assert!(env.git(&lib, &["show", &format!("{branch}:src/lib.rs")]).contains("pub fn new_name()"));
}

/// One repository named through its `.git` folder, or through a linked worktree of it, is
/// still the repository another entry names: refused like `./lib` is.
#[test]

fn one_repository_through_its_git_dir_or_a_linked_worktree_is_refused() {
    let env = Env::new();
    let lib = env.repo("lib", &files(&[("api.txt", "old_name\n")]));
    env.repo("app1", &files(&[("use.txt", "calls old_name\n")]));
    env.git(&lib, &["worktree", "add", "--quiet", "-b", "elsewhere", "../lib-wt"]);
    let agent = ["--split", "single", "--agent", "replace", "--pattern", "old_name", "--replace", "new_name"];
    for verb in ["plan", "run"] {
        for same in ["lib/.git", "lib-wt"] {
            let mut args = vec![verb, "--repo", "lib", "--repo", "app1", "--repo", same];
            args.extend(agent);
            let run = env.grove(env.path(), &args);
            assert_eq!(
                run.code, 2,
                "{verb} with lib and {same} should be refused: {}\n{}",
                run.stderr, run.stdout
            );
            // `lib/.git` is named `lib` too, so its name is refused first; the worktree has a
            // name of its own and is found to be lib's repository.
            let why = if same == "lib/.git" {
                "two repositories are named \"lib\""
            } else {
                "are the same repository"
            };
            assert!(run.stderr.contains(why), "{verb} {same}: {}", run.stderr);
            assert_eq!(grove_branches(&env, &lib), "", "{verb} {same}: a branch in lib");
        }
    }
    assert!(!env.grove_home().exists(), "grove created state for a refused job");
}

/// Two upstream repositories whose names make one variable (`my-lib`, `my_lib`: both
/// GROVE_UPSTREAM_MY_LIB) are refused: a consumer of both would see only one checkout.
#[test]

fn upstream_names_that_make_one_variable_are_refused() {
    let env = Env::new();
    for r in ["my-lib", "my_lib", "app"] {
        env.repo(r, &files(&[("f.txt", "old_name\n")]));
    }
    let spec = env.path().join("job.toml");
    std::fs::write(
        &spec,
        "[[repos]]\nsource = \"my-lib\"\n\n[[repos]]\nsource = \"my_lib\"\n\n[[repos]]\nsource = \"app\"\ndepends_on = [\"my-lib\", \"my_lib\"]\n\n[split]\nrule = \"single\"\n\n[agent]\nkind = \"replace\"\npattern = \"old_name\"\nreplace = \"new_name\"\n",
    )
    .expect("write spec");
    for verb in ["plan", "run"] {
        let run = env.grove(env.path(), &[verb, utf8(&spec)]);
        assert_eq!(run.code, 2, "{verb}: {}\n{}", run.stderr, run.stdout);
        assert!(run.stderr.contains("GROVE_UPSTREAM_MY_LIB"), "{verb}: {}", run.stderr);
    }
    assert!(!env.grove_home().exists(), "grove created state for a refused job");
}

/// A refused job leaves nothing in the grove home, also when one of its repositories is a URL
/// (grove mirrors those while it prepares the job).
#[test]

fn a_refused_job_with_a_url_repository_leaves_no_mirror() {
    let env = Env::new();
    let lib = env.repo("lib", &files(&[("api.txt", "old_name\n")]));
    env.repo("app1", &files(&[("use.txt", "calls old_name\n")]));
    let tail = "\n[split]\nrule = \"single\"\n\n[agent]\nkind = \"replace\"\npattern = \"old_name\"\nreplace = \"new_name\"\n";
    let cases = [
        // A URL nothing answers at.
        (
            format!(
                "[[repos]]\nsource = \"app1\"\n\n[[repos]]\nsource = \"file://{}/nowhere\"\n",
                env.path().display()
            ),
            "repository nowhere",
        ),
        // A reachable URL, then a cycle through depends_on.
        (
            format!(
                "[[repos]]\nsource = \"file://{}\"\ndepends_on = [\"app1\"]\n\n[[repos]]\nsource = \"app1\"\ndepends_on = [\"lib\"]\n",
                lib.display()
            ),
            "cycle",
        ),
    ];
    for verb in ["plan", "run"] {
        for (i, (body, expected)) in cases.iter().enumerate() {
            let spec = env.path().join(format!("job{i}.toml"));
            std::fs::write(&spec, format!("{body}{tail}")).expect("write spec");
            let run = env.grove(env.path(), &[verb, utf8(&spec)]);
            assert_eq!(run.code, 2, "{verb} {i}: {}\n{}", run.stderr, run.stdout);
            assert!(run.stderr.contains(expected), "{verb} {i}: {}", run.stderr);
            assert!(
                !env.grove_home().exists(),
                "{verb} {i}: the refused job left {}",
                env.grove_home().display()
            );
        }
    }
}
