//! `grove pr`: one pull request per repository of a cross-repository job, against the fake
//! code host of grove-forge (GitHub and GitLab shapes on loopback), pushed to real bare
//! remotes.

use std::path::{Path, PathBuf};

use grove_forge::Kind;
use grove_forge::fake::{Check, Server, TOKEN};

use crate::harness::Env;

/// A repository `name` whose `origin` is `https://<host>/acme/<name>.git`, which git rewrites
/// (`insteadOf`) to a bare repository of the test: pushes land there, and grove reads the
/// code host from the URL as configured.
fn repo_with_remote(env: &Env, name: &str, host: &str, files: &[(String, String)]) -> PathBuf {
    let repo = env.repo(name, files);
    let bare = env.path().join("remotes").join(format!("{name}.git"));
    std::fs::create_dir_all(&bare).expect("remote dir");
    env.git(&bare, &["init", "--quiet", "--bare", "--initial-branch=main"]);
    env.git(&repo, &["push", "--quiet", bare.to_str().expect("utf8"), "main"]);
    let url = format!("https://{host}/acme/{name}.git");
    env.git(&repo, &["remote", "add", "origin", &url]);
    let from = format!("https://{host}/acme/{name}.git");
    env.git(&repo, &["config", &format!("url.{}.insteadOf", bare.display()), &from]);
    env.git(&repo, &["fetch", "--quiet", "origin"]);
    repo
}

fn files(manifest: &str, code: (&str, &str)) -> Vec<(String, String)> {
    vec![("Cargo.toml".into(), manifest.into()), (code.0.into(), code.1.into())]
}

fn pr_env() -> Vec<(String, String)> {
    vec![("GITHUB_TOKEN".into(), TOKEN.into()), ("GITLAB_TOKEN".into(), TOKEN.into())]
}

fn branch_in(env: &Env, bare: &Path, branch: &str) -> bool {
    !env.git(bare, &["branch", "--list", branch]).is_empty()
}

#[test]
fn one_pull_request_per_repository_linked_in_order_updated_on_rerun_merged_until_a_red_check() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fake = rt.block_on(Server::start()).expect("fake code host");
    let env = Env::new();
    let lib = repo_with_remote(
        &env,
        "lib",
        "github.example.test",
        &files(
            "[package]\nname = \"mylib\"\nversion = \"0.1.0\"\n",
            ("src/lib.rs", "pub fn old_name() {}\n"),
        ),
    );
    let dep = format!("mylib = {{ git = \"file://{}\" }}\n", lib.display());
    let app_files = |n: &str| {
        files(
            &format!("[package]\nname = \"{n}\"\nversion = \"0.1.0\"\n\n[dependencies]\n{dep}"),
            ("src/main.rs", "fn main() { mylib::old_name() }\n"),
        )
    };
    repo_with_remote(&env, "app1", "github.example.test", &app_files("app1"));
    // The second consumer lives on a GitLab: one job, two code hosts.
    repo_with_remote(&env, "app2", "gitlab.example.test", &app_files("app2"));
    std::fs::create_dir_all(env.grove_home()).expect("home");
    std::fs::write(
        env.grove_home().join("grove.toml"),
        format!(
            "[forge.\"github.example.test\"]\nkind = \"github\"\napi = \"{}\"\nmin_write_interval = \"50ms\"\n\n\
             [forge.\"gitlab.example.test\"]\nkind = \"gitlab\"\napi = \"{}\"\nmin_write_interval = \"50ms\"\n",
            fake.api(Kind::GitHub),
            fake.api(Kind::GitLab)
        ),
    )
    .expect("grove.toml");
    let spec = env.path().join("job.toml");
    std::fs::write(
        &spec,
        "name = \"rename\"\nprompt = \"Rename old_name to new_name\"\n\n[[repos]]\nsource = \"app2\"\n[[repos]]\nsource = \"app1\"\n\
         [[repos]]\nsource = \"lib\"\n\n[split]\nrule = \"single\"\n\n[agent]\nkind = \"replace\"\npattern = \"old_name\"\nreplace = \"new_name\"\n",
    )
    .expect("spec");
    let run = env.grove(env.path(), &["run", "job.toml", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let group = run.json()["id"].as_str().expect("group id").to_owned();
    let branch = format!("grove/{group}/integration");

    // Open: pushed to every remote, one pull request each, the bodies linking in order.
    let opened = env.grove_with(env.path(), &["pr", &group, "--label", "refactor", "--json"], &pr_env());
    assert_eq!(opened.code, 0, "{}\n{}", opened.stdout, opened.stderr);
    let list = opened.json();
    let names: Vec<&str> =
        list.as_array().expect("list").iter().filter_map(|p| p["repository"].as_str()).collect();
    // The library first; its consumers after it, as the spec lists them.
    assert_eq!(names, ["lib", "app2", "app1"], "dependency order");
    assert!(list.as_array().expect("list").iter().all(|p| p["created"] == true), "{list}");
    for name in ["lib", "app1", "app2"] {
        assert!(
            branch_in(&env, &env.path().join("remotes").join(format!("{name}.git")), &branch),
            "{name} pushed"
        );
    }
    let gh = |p: &str| fake.prs(Kind::GitHub, p);
    let (lib_prs, app1_prs, app2_prs) =
        (gh("acme/lib"), gh("acme/app1"), fake.prs(Kind::GitLab, "acme/app2"));
    assert_eq!((lib_prs.len(), app1_prs.len(), app2_prs.len()), (1, 1, 1));
    let (lib_pr, app1_pr, app2_pr) = (&lib_prs[0], &app1_prs[0], &app2_prs[0]);
    assert_eq!((lib_pr.head.as_str(), lib_pr.base.as_str()), (branch.as_str(), "main"));
    assert_eq!(lib_pr.title, "Rename old_name to new_name");
    assert!(lib_pr.labels.contains(&"refactor".to_owned()));
    let url = |kind: Kind, project: &str, n: u64| {
        list.as_array()
            .expect("list")
            .iter()
            .find(|p| p["number"] == n && p["url"].as_str().is_some_and(|u| u.contains(project)))
            .and_then(|p| p["url"].as_str())
            .unwrap_or_else(|| panic!("{kind:?} {project} #{n} in {list}"))
            .to_owned()
    };
    let (lib_url, app1_url, app2_url) = (
        url(Kind::GitHub, "acme/lib", lib_pr.number),
        url(Kind::GitHub, "acme/app1", app1_pr.number),
        url(Kind::GitLab, "acme/app2", app2_pr.number),
    );
    assert!(lib_pr.body.contains(&app1_url) && lib_pr.body.contains(&app2_url), "{}", lib_pr.body);
    assert!(app1_pr.body.contains(&lib_url) && app1_pr.body.contains(&app2_url), "{}", app1_pr.body);
    assert!(app2_pr.body.contains(&lib_url) && app2_pr.body.contains(&app1_url), "{}", app2_pr.body);
    assert!(lib_pr.body.contains("Made by grove"), "{}", lib_pr.body);
    // The token is never printed.
    assert!(!opened.stdout.contains(TOKEN) && !opened.stderr.contains(TOKEN));
    // grove status shows each repository's pull request.
    let status = env.grove(env.path(), &["status", &group, "--json"]);
    let repos = status.json()["repositories"].clone();
    assert_eq!(repos[0]["repository"]["pull_request"]["url"], lib_url.as_str(), "{repos}");

    // Again: the same pull requests, updated, none opened.
    let again =
        env.grove_with(env.path(), &["pr", &group, "--title", "Rename, take two", "--json"], &pr_env());
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.json().as_array().expect("list").iter().all(|p| p["created"] == false));
    assert_eq!(
        (gh("acme/lib").len(), gh("acme/app1").len(), fake.prs(Kind::GitLab, "acme/app2").len()),
        (1, 1, 1)
    );
    assert_eq!(gh("acme/lib")[0].title, "Rename, take two");

    // Status, then merge: lib's checks passed, app2's `ci/test` is red, app1 green.
    fake.set_check(Kind::GitHub, "acme/lib", lib_pr.number, "ci/test", Check::Passed);
    fake.set_check(Kind::GitLab, "acme/app2", app2_pr.number, "ci/test", Check::Failed);
    fake.set_check(Kind::GitHub, "acme/app1", app1_pr.number, "ci/test", Check::Passed);
    let st = env.grove_with(env.path(), &["pr", &group, "--status", "--json"], &pr_env());
    assert_eq!(st.code, 0, "{}", st.stderr);
    let st = st.json();
    assert_eq!(st[0]["checks"], "passed", "{st}");
    assert_eq!(st[1]["checks"], "failed: ci/test", "{st}");
    let merged = env.grove_with(env.path(), &["pr", &group, "--merge"], &pr_env());
    assert_eq!(merged.code, 1, "{}\n{}", merged.stdout, merged.stderr);
    assert!(merged.stdout.contains("lib: merged"), "{}", merged.stdout);
    assert!(merged.stdout.contains("app2: not merged: checks failed: ci/test"), "{}", merged.stdout);
    assert!(merged.stdout.contains("app1: not tried"), "{}", merged.stdout);
    assert!(
        gh("acme/lib")[0].merged
            && !fake.prs(Kind::GitLab, "acme/app2")[0].merged
            && !gh("acme/app1")[0].merged
    );

    // Fixed: the rest merges, in order.
    fake.set_check(Kind::GitLab, "acme/app2", app2_pr.number, "ci/test", Check::Passed);
    let rest = env.grove_with(env.path(), &["pr", &group, "--merge"], &pr_env());
    assert_eq!(rest.code, 0, "{}\n{}", rest.stdout, rest.stderr);
    let (a2, a1) = (fake.prs(Kind::GitLab, "acme/app2")[0].merge_seq, gh("acme/app1")[0].merge_seq);
    assert!(gh("acme/lib")[0].merge_seq < a2 && a2 < a1, "merged in dependency order: {a2:?} {a1:?}");
}

#[test]
fn pr_refuses_without_a_token_or_a_known_host_naming_what_is_missing() {
    let env = Env::new();
    let repo = repo_with_remote(
        &env,
        "solo",
        "code.example.test",
        &files("[package]\nname = \"solo\"\n", ("src/lib.rs", "x\n")),
    );
    let run = env.grove(
        &repo,
        &["run", "--split", "single", "--agent", "replace", "--pattern", "x", "--replace", "y", "--json"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let job = run.json()["id"].as_str().expect("id").to_owned();
    let unknown = env.grove(&repo, &["pr", &job]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("code.example.test"), "{}", unknown.stderr);
    std::fs::write(
        env.grove_home().join("grove.toml"),
        "[forge.\"code.example.test\"]\nkind = \"github\"\napi = \"http://127.0.0.1:9/api\"\n",
    )
    .expect("grove.toml");
    let no_token = env.grove(&repo, &["pr", &job]);
    assert_eq!(no_token.code, 2);
    assert!(no_token.stderr.contains("GITHUB_TOKEN"), "{}", no_token.stderr);
    // Nothing was pushed before the refusal.
    assert!(!branch_in(&env, &env.path().join("remotes/solo.git"), &format!("grove/{job}/integration")));
}
