//! grove-forge against the fake code host on loopback, for each kind of host.

use std::time::Duration;

use grove_forge::fake::{Check, Server, TOKEN};
use grove_forge::{
    Blocked, Checks, Error, Forge, Forges, Hosts, Kind, MergeItem, MergeStep, OpenItem, PrSpec, PrState,
    Remote, Token, merge_in_order, open_all,
};

const NAMES: [&str; 3] = ["lib", "app1", "app2"];
const FAST: Duration = Duration::from_millis(5);

fn project(kind: Kind, name: &str) -> String {
    match kind {
        // GitLab projects may sit in nested groups.
        Kind::GitLab => format!("acme/platform/{name}"),
        Kind::GitHub | Kind::Gitea => format!("acme/{name}"),
    }
}

fn spec(title: &str, body: &str) -> PrSpec {
    PrSpec {
        head: "grove/job-7".into(),
        base: "main".into(),
        title: title.into(),
        body: body.into(),
        draft: false,
        labels: vec!["grove".into()],
        reviewers: vec!["alice".into()],
    }
}

async fn start(kind: Kind, interval: Duration) -> (Server, Forge) {
    let server = Server::start().await.expect("fake host");
    for name in NAMES {
        server.add_label(kind, &project(kind, name), "grove");
    }
    let forge = Forge::new(server.host_config(kind, interval), &Token::new(TOKEN)).expect("forge");
    (server, forge)
}

fn items(forge: &Forge, kind: Kind, title: &str, body: &str) -> Vec<OpenItem> {
    NAMES
        .iter()
        .map(|n| OpenItem {
            name: (*n).into(),
            forge: forge.clone(),
            project: project(kind, n),
            spec: spec(title, body),
        })
        .collect()
}

fn writes(server: &Server) -> usize {
    server.requests().iter().filter(|r| r.is_write()).count()
}

async fn opens_one_per_repository_with_links(kind: Kind) {
    let (server, forge) = start(kind, FAST).await;
    let prs = open_all(&items(&forge, kind, "Rename the config key", "Why: clarity.")).await.expect("open");
    assert_eq!(prs.len(), 3);
    assert!(prs.iter().all(|p| p.created && p.state == PrState::Open), "{prs:#?}");
    let sigil = if kind == Kind::GitLab { '!' } else { '#' };
    let link = |i: usize| format!("[{}{sigil}{}]({})", NAMES[i], prs[i].number, prs[i].url);
    for (i, name) in NAMES.iter().enumerate() {
        let held = server.prs(kind, &project(kind, name));
        assert_eq!(held.len(), 1, "{name}: exactly one pull request");
        let body = &held[0].body;
        assert!(body.starts_with("Why: clarity."), "{body}");
        assert_eq!(body.matches("<!-- grove:links -->").count(), 1, "{body}");
        let after: Vec<String> = (0..i).map(link).collect();
        let before: Vec<String> = (i + 1..3).map(link).collect();
        if after.is_empty() {
            assert!(!body.contains("Merge after"), "{body}");
        } else {
            assert!(body.contains(&format!("Merge after: {}", after.join(", "))), "{name}: {body}");
        }
        if before.is_empty() {
            assert!(!body.contains("Merge before"), "{body}");
        } else {
            assert!(body.contains(&format!("Merge before: {}", before.join(", "))), "{name}: {body}");
        }
        assert!(held[0].labels.iter().any(|l| l == "grove"), "{name}: {:?}", held[0].labels);
        assert!(held[0].reviewers.iter().any(|r| r == "alice"), "{name}: {:?}", held[0].reviewers);
        assert_eq!(held[0].title, "Rename the config key");
    }
    let creates = server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.status == 201 && r.body.get("title").is_some())
        .count();
    assert_eq!(creates, 3);

    // The same again: nothing to write, nothing new.
    server.clear_requests();
    let again =
        open_all(&items(&forge, kind, "Rename the config key", "Why: clarity.")).await.expect("re-run");
    assert_eq!(writes(&server), 0, "{:#?}", server.requests());
    assert!(again.iter().all(|p| !p.created));
    assert_eq!(
        again.iter().map(|p| p.number).collect::<Vec<_>>(),
        prs.iter().map(|p| p.number).collect::<Vec<_>>()
    );

    // A new title and body: updated in place, the links kept once.
    let third = open_all(&items(&forge, kind, "Rename the key", "Why: clarity, v2.")).await.expect("update");
    for (i, name) in NAMES.iter().enumerate() {
        let held = server.prs(kind, &project(kind, name));
        assert_eq!(held.len(), 1, "{name}: no duplicate");
        assert_eq!(held[0].title, "Rename the key");
        assert!(held[0].body.starts_with("Why: clarity, v2."), "{}", held[0].body);
        assert_eq!(held[0].body.matches("<!-- grove:links -->").count(), 1);
        assert_eq!(third[i].body, held[0].body);
    }
}

#[tokio::test]
async fn github_opens_one_per_repository_with_links() {
    opens_one_per_repository_with_links(Kind::GitHub).await;
}

#[tokio::test]
async fn gitlab_opens_one_per_repository_with_links() {
    opens_one_per_repository_with_links(Kind::GitLab).await;
}

#[tokio::test]
async fn gitea_opens_one_per_repository_with_links() {
    opens_one_per_repository_with_links(Kind::Gitea).await;
}

async fn duplicate_on_create_updates(kind: Kind, refused: u16) {
    let (server, forge) = start(kind, FAST).await;
    let p = project(kind, "lib");
    server.open_pr(kind, &p, "grove/job-7", "main", "Someone else's title");
    // Lists answer empty once, as when another writer opened it between find and create.
    server.hide_next_finds(1);
    let pr = forge.upsert(&p, &spec("Ours", "Our body.")).await.expect("upsert");
    assert!(!pr.created);
    let held = server.prs(kind, &p);
    assert_eq!(held.len(), 1);
    assert_eq!((held[0].title.as_str(), held[0].body.as_str()), ("Ours", "Our body."));
    let statuses: Vec<(String, u16)> =
        server.requests().iter().map(|r| (r.method.clone(), r.status)).collect();
    assert!(statuses.contains(&("POST".to_owned(), refused)), "{statuses:?}");
}

#[tokio::test]
async fn github_422_on_create_finds_and_updates() {
    duplicate_on_create_updates(Kind::GitHub, 422).await;
}

#[tokio::test]
async fn gitlab_409_on_create_finds_and_updates() {
    duplicate_on_create_updates(Kind::GitLab, 409).await;
}

#[tokio::test]
async fn gitea_409_on_create_finds_and_updates() {
    duplicate_on_create_updates(Kind::Gitea, 409).await;
}

async fn secondary_limit_on_second_write_is_waited_out(kind: Kind) {
    let (server, forge) = start(kind, FAST).await;
    let mut s = spec("T", "B");
    s.labels.clear();
    s.reviewers.clear();
    forge.upsert(&project(kind, "lib"), &s).await.expect("first write");
    server.secondary_limit(1, Some(1));
    forge.upsert(&project(kind, "app1"), &s).await.expect("second write, after the wait");
    let posts: Vec<_> = server.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(
        posts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [201, if kind == Kind::GitHub { 403 } else { 429 }, 201]
    );
    let waited = posts[2].at - posts[1].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, before retry-after");
    assert_eq!(server.prs(kind, &project(kind, "app1")).len(), 1);
}

#[tokio::test]
async fn github_secondary_limit_is_waited_out() {
    secondary_limit_on_second_write_is_waited_out(Kind::GitHub).await;
}

#[tokio::test]
async fn gitlab_429_is_waited_out() {
    secondary_limit_on_second_write_is_waited_out(Kind::GitLab).await;
}

#[tokio::test]
async fn github_secondary_limit_without_headers_waits_the_configured_time() {
    let server = Server::start().await.expect("fake host");
    let mut config = server.host_config(Kind::GitHub, FAST);
    config.secondary_wait = Duration::from_millis(300);
    let forge = Forge::new(config, &Token::new(TOKEN)).expect("forge");
    server.secondary_limit(2, None);
    let mut s = spec("T", "B");
    s.labels.clear();
    s.reviewers.clear();
    forge.upsert("acme/lib", &s).await.expect("upsert");
    let posts: Vec<_> = server.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.iter().map(|r| r.status).collect::<Vec<_>>(), [403, 403, 201]);
    assert!(posts[1].at - posts[0].at >= Duration::from_millis(300));
    assert!(posts[2].at - posts[1].at >= Duration::from_millis(300));
}

#[tokio::test]
async fn github_primary_limit_waits_for_the_reset() {
    let (server, forge) = start(Kind::GitHub, FAST).await;
    server.primary_limit(1, 1);
    let found = forge.find("acme/lib", "grove/job-7", "main").await.expect("find after the reset");
    assert_eq!(found, None);
    let reqs = server.requests();
    assert_eq!(reqs.iter().map(|r| r.status).collect::<Vec<_>>(), [403, 200]);
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(900), "{:?}", reqs[1].at - reqs[0].at);
}

#[tokio::test]
async fn rate_limits_give_up_after_bounded_retries_and_long_waits() {
    let server = Server::start().await.expect("fake host");
    let mut config = server.host_config(Kind::GitHub, FAST);
    config.max_retries = 2;
    let forge = Forge::new(config, &Token::new(TOKEN)).expect("forge");
    server.secondary_limit(10, Some(0));
    let e = forge.upsert("acme/lib", &spec("T", "B")).await.expect_err("still limited");
    assert!(matches!(e, Error::RateLimited { tries: 3, .. }), "{e}");
    assert!(e.to_string().contains("secondary rate limit"), "{e}");
    assert_eq!(server.requests().iter().filter(|r| r.method == "POST").count(), 3);

    server.clear_requests();
    server.secondary_limit(1, Some(7200));
    let e = forge.upsert("acme/lib", &spec("T", "B")).await.expect_err("too long a wait");
    assert!(matches!(e, Error::WaitTooLong { .. }), "{e}");
    assert_eq!(server.requests().iter().filter(|r| r.method == "POST").count(), 1, "no retry");
}

#[tokio::test]
async fn a_bad_gateway_is_retried_on_reads_only() {
    let (server, forge) = start(Kind::GitHub, FAST).await;
    server.fail_next(1, 502);
    assert_eq!(forge.find("acme/lib", "grove/job-7", "main").await.expect("read retried"), None);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [502, 200]);

    server.clear_requests();
    let pr = forge.upsert("acme/lib", &spec("T", "B")).await.expect("open");
    server.fail_next(1, 502);
    let e = forge.merge("acme/lib", &pr, None).await.expect_err("a write is not retried");
    assert!(matches!(e, Error::Status { status: 502, .. }), "{e}");
    assert!(!server.prs(Kind::GitHub, "acme/lib")[0].merged);
    // A 404 is not retried either, and says what was asked.
    let e = forge.status("acme/nothing", &pr).await.expect_err("no such pull request");
    assert!(matches!(e, Error::Status { status: 404, .. }), "{e}");
    assert!(e.to_string().contains("/repos/acme/nothing/pulls/1"), "{e}");
}

#[tokio::test]
async fn writes_are_spaced_by_the_min_interval() {
    let interval = Duration::from_millis(120);
    let (server, forge) = start(Kind::GitHub, interval).await;
    open_all(&items(&forge, Kind::GitHub, "T", "B")).await.expect("open");
    let at: Vec<_> = server.requests().into_iter().filter(|r| r.is_write()).map(|r| r.at).collect();
    // 3 creates, 3 label and 3 reviewer requests, 2 body updates.
    assert_eq!(at.len(), 11);
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        // The throttle spaces the starts; arrival adds a little jitter.
        assert!(gap + Duration::from_millis(15) >= interval, "writes {gap:?} apart");
    }
}

async fn merges_in_order_and_stops_at_a_red_check(kind: Kind, red: &str) {
    let (server, forge) = start(kind, FAST).await;
    let prs = open_all(&items(&forge, kind, "T", "B")).await.expect("open");
    let p = |i: usize| project(kind, NAMES[i]);
    server.set_check(kind, &p(0), prs[0].number, "ci/test", Check::Passed);
    server.set_check(kind, &p(1), prs[1].number, "lint", Check::Passed);
    server.set_check(kind, &p(1), prs[1].number, red, Check::Failed);
    server.set_check(kind, &p(2), prs[2].number, "ci/test", Check::Passed);
    let merge_items: Vec<MergeItem> = (0..3)
        .map(|i| MergeItem { name: NAMES[i].into(), forge: forge.clone(), project: p(i), pr: prs[i].clone() })
        .collect();

    let status = forge.status(&p(1), &prs[1]).await.expect("status");
    assert_eq!(status.state, PrState::Open);
    assert_eq!(status.checks, Checks::Failed(vec![red.to_owned()]));
    assert_eq!(status.mergeable, Some(true));

    let steps = merge_in_order(&merge_items, false).await;
    assert!(matches!(steps[0], (ref n, MergeStep::Merged(_)) if n == "lib"), "{steps:?}");
    assert_eq!(
        steps[1],
        ("app1".to_owned(), MergeStep::Stopped(Blocked::ChecksFailed(vec![red.to_owned()])))
    );
    assert_eq!(steps[2], ("app2".to_owned(), MergeStep::NotTried));
    assert!(steps[1].1 != MergeStep::NotTried);
    assert_eq!(steps[1].1.to_string(), format!("not merged: checks failed: {red}"));
    assert!(server.prs(kind, &p(0))[0].merged);
    assert!(!server.prs(kind, &p(1))[0].merged);
    assert!(!server.prs(kind, &p(2))[0].merged);

    // Green again: a re-run passes over lib and merges the rest in order.
    server.set_check(kind, &p(1), prs[1].number, red, Check::Passed);
    let steps = merge_in_order(&merge_items, false).await;
    assert_eq!(steps[0].1, MergeStep::AlreadyMerged);
    assert!(
        matches!(steps[1].1, MergeStep::Merged(_)) && matches!(steps[2].1, MergeStep::Merged(_)),
        "{steps:?}"
    );
    let seq: Vec<Option<u64>> = (0..3).map(|i| server.prs(kind, &p(i))[0].merge_seq).collect();
    assert_eq!(seq, [Some(1), Some(2), Some(3)]);
}

#[tokio::test]
async fn github_merges_in_order_and_stops_at_a_red_status() {
    merges_in_order_and_stops_at_a_red_check(Kind::GitHub, "ci/test").await;
}

#[tokio::test]
async fn github_merges_in_order_and_stops_at_a_red_check_run() {
    merges_in_order_and_stops_at_a_red_check(Kind::GitHub, "build").await;
}

#[tokio::test]
async fn gitlab_merges_in_order_and_stops_at_a_red_job() {
    merges_in_order_and_stops_at_a_red_check(Kind::GitLab, "ci/test").await;
}

#[tokio::test]
async fn gitea_merges_in_order_and_stops_at_a_red_status() {
    merges_in_order_and_stops_at_a_red_check(Kind::Gitea, "ci/test").await;
}

async fn stops_for_the_other_reasons(kind: Kind) {
    let (server, forge) = start(kind, FAST).await;
    let p = project(kind, "lib");
    let item = |pr| vec![MergeItem { name: "lib".into(), forge: forge.clone(), project: p.clone(), pr }];
    let pr = forge.upsert(&p, &spec("T", "B")).await.expect("open");

    let steps = merge_in_order(&item(pr.clone()), false).await;
    assert_eq!(steps[0].1, MergeStep::Stopped(Blocked::NoChecks));

    server.set_check(kind, &p, pr.number, "ci/test", Check::Pending);
    let steps = merge_in_order(&item(pr.clone()), false).await;
    assert!(matches!(steps[0].1, MergeStep::Stopped(Blocked::ChecksPending(_))), "{steps:?}");

    server.set_check(kind, &p, pr.number, "ci/test", Check::Passed);
    server.set_mergeable(kind, &p, pr.number, false);
    let steps = merge_in_order(&item(pr.clone()), false).await;
    let detail = match kind {
        Kind::GitHub => Some("dirty".to_owned()),
        Kind::GitLab => Some("conflict".to_owned()),
        Kind::Gitea => None,
    };
    assert_eq!(steps[0].1, MergeStep::Stopped(Blocked::NotMergeable(detail)));

    // The head moved after the status was read: the host refuses, and says so.
    server.set_mergeable(kind, &p, pr.number, true);
    let status = forge.status(&p, &pr).await.expect("status");
    server.push_head(kind, &p, pr.number);
    let e = forge.merge(&p, &pr, status.head_sha.as_deref()).await.expect_err("moved");
    assert!(matches!(e, Error::HeadMoved { .. }), "{e}");
    assert!(!server.prs(kind, &p)[0].merged);
}

#[tokio::test]
async fn github_stops_for_no_checks_pending_unmergeable_and_moved_heads() {
    stops_for_the_other_reasons(Kind::GitHub).await;
}

#[tokio::test]
async fn gitlab_stops_for_no_checks_pending_unmergeable_and_moved_heads() {
    stops_for_the_other_reasons(Kind::GitLab).await;
}

#[tokio::test]
async fn gitea_stops_for_no_checks_pending_unmergeable_and_moved_heads() {
    stops_for_the_other_reasons(Kind::Gitea).await;
}

async fn drafts(kind: Kind) {
    let (server, forge) = start(kind, FAST).await;
    let p = project(kind, "lib");
    let mut s = spec("Try it", "B");
    s.draft = true;
    let pr = forge.upsert(&p, &s).await.expect("draft");
    assert!(pr.draft, "{pr:?}");
    assert_eq!(pr.state, PrState::Draft);
    server.set_check(kind, &p, pr.number, "ci/test", Check::Passed);
    let steps = merge_in_order(
        &[MergeItem { name: "lib".into(), forge: forge.clone(), project: p.clone(), pr }],
        false,
    )
    .await;
    assert_eq!(steps[0].1, MergeStep::Stopped(Blocked::Draft));
    let held = &server.prs(kind, &p)[0];
    match kind {
        Kind::GitHub => assert!(held.draft),
        Kind::GitLab => assert_eq!(held.title, "Draft: Try it"),
        Kind::Gitea => assert_eq!(held.title, "WIP: Try it"),
    }
}

#[tokio::test]
async fn github_drafts_are_not_merged() {
    drafts(Kind::GitHub).await;
}

#[tokio::test]
async fn gitlab_drafts_are_a_title_prefix() {
    drafts(Kind::GitLab).await;
}

#[tokio::test]
async fn gitea_drafts_are_a_title_prefix() {
    drafts(Kind::Gitea).await;
}

async fn wrong_token(kind: Kind) {
    let server = Server::start().await.expect("fake host");
    let forge = Forge::new(server.host_config(kind, FAST), &Token::new("wrong-secret-42")).expect("forge");
    let e = forge.upsert(&project(kind, "lib"), &spec("T", "B")).await.expect_err("refused");
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains("wrong-secret-42"), "the token leaked: {text}");
    assert!(server.prs(kind, &project(kind, "lib")).is_empty());
}

#[tokio::test]
async fn github_wrong_token_is_a_clear_error_without_the_token() {
    wrong_token(Kind::GitHub).await;
}

#[tokio::test]
async fn gitlab_wrong_token_is_a_clear_error_without_the_token() {
    wrong_token(Kind::GitLab).await;
}

#[tokio::test]
async fn gitea_wrong_token_is_a_clear_error_without_the_token() {
    wrong_token(Kind::Gitea).await;
}

#[tokio::test]
async fn config_points_a_host_at_the_fake() {
    let server = Server::start().await.expect("fake host");
    let hosts = Hosts::from_toml(&format!(
        "[forge.\"git.example.com\"]\nkind = \"gitlab\"\napi = \"{}\"\ntoken_env = \"EXAMPLE_TOKEN\"\nmin_write_interval = \"10ms\"\n",
        server.api(Kind::GitLab)
    ))
    .expect("config");
    let mut forges = Forges::new(hosts, |k| (k == "EXAMPLE_TOKEN").then(|| TOKEN.to_owned()));
    let remote = Remote::parse("ssh://git@git.example.com/acme/platform/lib.git").expect("remote");
    let forge = forges.get(&remote).expect("forge");
    assert_eq!(forge.kind(), Kind::GitLab);
    let pr = forge.upsert(&remote.project, &spec("T", "B")).await.expect("upsert");
    assert!(pr.url.ends_with("/acme/platform/lib/-/merge_requests/1"), "{}", pr.url);
    // The nested group travels URL-encoded, as GitLab wants it.
    assert!(server.requests().iter().any(|r| r.path.starts_with("/projects/acme%2Fplatform%2Flib/")));

    let unknown = forges.get(&Remote::parse("git@elsewhere.org:a/b.git").expect("remote"));
    assert!(matches!(unknown, Err(Error::UnknownHost { .. })));
    let mut no_token = Forges::new(Hosts::default(), |_| None);
    let e = no_token.get(&Remote::parse("git@github.com:a/b.git").expect("remote")).expect_err("no token");
    assert!(e.to_string().contains("GITHUB_TOKEN"), "{e}");
}

#[tokio::test]
async fn github_sends_its_headers() {
    let (server, forge) = start(Kind::GitHub, FAST).await;
    let _ = forge.find("acme/lib", "grove/job-7", "main").await.expect("find");
    let r = &server.requests()[0];
    assert_eq!(r.path, "/repos/acme/lib/pulls");
    assert!(r.query.contains("head=acme%3Agrove%2Fjob-7"), "{}", r.query);
    assert!(r.query.contains("state=open"));
    assert_eq!(r.headers["accept"], "application/vnd.github+json");
    assert_eq!(r.headers["x-github-api-version"], "2022-11-28");
    assert!(r.headers["user-agent"].starts_with("grove/"));
}

#[tokio::test]
async fn gitlab_and_gitea_send_their_auth_headers() {
    for kind in [Kind::GitLab, Kind::Gitea] {
        let (server, forge) = start(kind, FAST).await;
        let _ = forge.find(&project(kind, "lib"), "grove/job-7", "main").await.expect("find");
        let r = &server.requests()[0];
        match kind {
            Kind::GitLab => assert!(r.headers.contains_key("private-token")),
            _ => assert!(r.headers.contains_key("authorization")),
        }
    }
}

#[tokio::test]
async fn default_write_spacing_is_one_second_end_to_end() {
    let server = Server::start().await.expect("fake host");
    let config = server.host_config(Kind::GitHub, grove_forge::DEFAULT_WRITE_INTERVAL);
    let forge = Forge::new(config, &Token::new(TOKEN)).expect("forge");
    let mut s = spec("T", "B");
    s.reviewers.clear();
    forge.upsert("acme/lib", &s).await.expect("create, then labels");
    let at: Vec<_> = server.requests().into_iter().filter(|r| r.is_write()).map(|r| r.at).collect();
    assert_eq!(at.len(), 2);
    assert!(at[1] - at[0] + Duration::from_millis(15) >= Duration::from_secs(1), "{:?}", at[1] - at[0]);
}

#[tokio::test]
async fn rerun_adds_only_what_is_missing() {
    for kind in [Kind::GitHub, Kind::GitLab, Kind::Gitea] {
        let (server, forge) = start(kind, FAST).await;
        let p = project(kind, "lib");
        server.add_label(kind, &p, "needs-review");
        forge.upsert(&p, &spec("T", "B")).await.expect("open");
        server.clear_requests();
        let mut more = spec("T", "B");
        more.labels.push("needs-review".into());
        more.reviewers.push("bob".into());
        let pr = forge.upsert(&p, &more).await.expect("update");
        let held = &server.prs(kind, &p)[0];
        assert_eq!(held.labels, ["grove", "needs-review"], "{kind}");
        assert_eq!(held.reviewers, ["alice", "bob"], "{kind}: reviewers kept and added");
        assert_eq!(pr.labels, held.labels, "{kind}");
        let w = server.requests().iter().filter(|r| r.is_write()).count();
        // GitLab: one PUT; GitHub and Gitea: labels, then reviewers.
        assert_eq!(w, if kind == Kind::GitLab { 1 } else { 2 }, "{kind}: {:#?}", server.requests());
    }
}

#[tokio::test]
async fn github_team_reviewers_and_author_refusal() {
    let (server, forge) = start(Kind::GitHub, FAST).await;
    let mut s = spec("T", "B");
    s.reviewers = vec!["acme/core".into()];
    let pr = forge.upsert("acme/lib", &s).await.expect("open");
    let post =
        server.requests().into_iter().find(|r| r.path.ends_with("/requested_reviewers")).expect("asked");
    assert_eq!(post.body["team_reviewers"], serde_json::json!(["core"]));
    assert_eq!(pr.reviewers, ["acme/core"]);
    // Asking the author is refused (422) by GitHub; that is not a failure of the run.
    s.reviewers = vec!["grove-bot".into()];
    forge.upsert("acme/lib", &s).await.expect("the author is left out");
}

#[tokio::test]
async fn gitea_unknown_label_is_named() {
    let (_server, forge) = start(Kind::Gitea, FAST).await;
    let mut s = spec("T", "B");
    s.labels = vec!["nope".into()];
    let e = forge.upsert("acme/lib", &s).await.expect_err("no such label");
    assert!(matches!(e, Error::NoLabel { ref label, .. } if label == "nope"), "{e}");
}

async fn finds_the_latest_in_any_state(kind: Kind) {
    let (server, forge) = start(kind, FAST).await;
    let p = project(kind, "lib");
    let pr = forge.upsert(&p, &spec("T", "B")).await.expect("open");
    server.set_check(kind, &p, pr.number, "ci/test", Check::Passed);
    let item = MergeItem { name: "lib".into(), forge: forge.clone(), project: p.clone(), pr: pr.clone() };
    assert!(matches!(merge_in_order(&[item], false).await[0].1, MergeStep::Merged(_)));
    assert_eq!(forge.find(&p, "grove/job-7", "main").await.expect("find"), None, "no open one");
    let latest = forge.find_latest(&p, "grove/job-7", "main").await.expect("find").expect("merged one");
    assert_eq!((latest.number, latest.state), (pr.number, PrState::Merged));
    let status = forge.status(&p, &latest).await.expect("status");
    assert_eq!((status.state, status.checks), (PrState::Merged, Checks::Passed));
    assert_eq!(forge.find_latest(&p, "other", "main").await.expect("find"), None);
}

#[tokio::test]
async fn github_finds_the_latest_in_any_state() {
    finds_the_latest_in_any_state(Kind::GitHub).await;
}

#[tokio::test]
async fn gitlab_finds_the_latest_in_any_state() {
    finds_the_latest_in_any_state(Kind::GitLab).await;
}

#[tokio::test]
async fn gitea_finds_the_latest_in_any_state() {
    finds_the_latest_in_any_state(Kind::Gitea).await;
}

#[tokio::test]
async fn a_reviewer_who_reviewed_is_not_asked_again() {
    for kind in [Kind::GitHub, Kind::GitLab, Kind::Gitea] {
        let (server, forge) = start(kind, FAST).await;
        let p = project(kind, "lib");
        let pr = forge.upsert(&p, &spec("T", "B")).await.expect("open");
        server.review(kind, &p, pr.number, "alice");
        server.clear_requests();
        forge.upsert(&p, &spec("T", "B")).await.expect("re-run");
        let asked = server.requests().iter().filter(|r| r.is_write()).count();
        assert_eq!(asked, 0, "{kind}: {:#?}", server.requests());
    }
}
