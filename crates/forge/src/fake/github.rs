//! GitHub REST v3, as grove uses it.

use serde_json::{Value, json};

use super::{Answer, Call, Check, FakePr, State, answer};
use crate::Kind;

const K: Kind = Kind::GitHub;
/// Who the fake's token belongs to: the author of the pull requests grove opens.
const AUTHOR: &str = "grove-bot";

fn pr_json(s: &State, project: &str, pr: &FakePr) -> Value {
    let (owner, name) = project.split_once('/').unwrap_or((project, ""));
    let web = s.web();
    let repo = json!({
        "name": name, "full_name": project, "owner": {"login": owner, "type": "Organization"},
        "html_url": format!("{web}/{project}"),
    });
    json!({
        "url": format!("{web}/github/repos/{project}/pulls/{}", pr.number),
        "id": 1000 + pr.number,
        "node_id": format!("PR_fake{}", pr.number),
        "number": pr.number,
        "html_url": format!("{web}/{project}/pull/{}", pr.number),
        "state": pr.state,
        "locked": false,
        "title": pr.title,
        "body": if pr.body.is_empty() { Value::Null } else { json!(pr.body) },
        "user": {"login": AUTHOR, "type": "User"},
        "draft": pr.draft,
        "merged": pr.merged,
        "merged_at": if pr.merged { json!("2026-12-03T12:00:00Z") } else { Value::Null },
        "mergeable": if pr.state == "open" { json!(pr.mergeable) } else { Value::Null },
        "mergeable_state": if pr.mergeable { "clean" } else { "dirty" },
        "head": {"label": format!("{owner}:{}", pr.head), "ref": pr.head, "sha": pr.head_sha, "repo": repo},
        "base": {"label": format!("{owner}:{}", pr.base), "ref": pr.base, "sha": "0".repeat(40), "repo": repo},
        "labels": pr.labels.iter().enumerate().map(|(i, l)| json!({"id": i + 1, "name": l, "color": "ededed"})).collect::<Vec<_>>(),
        "requested_reviewers": pr.reviewers.iter().filter(|r| !r.contains('/')).map(|r| json!({"login": r, "type": "User"})).collect::<Vec<_>>(),
        "requested_teams": pr.reviewers.iter().filter_map(|r| r.split_once('/')).map(|(_, t)| json!({"slug": t, "name": t})).collect::<Vec<_>>(),
    })
}

fn invalid(errors: Value) -> Answer {
    answer(
        422,
        json!({"message": "Validation Failed", "errors": errors, "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request", "status": "422"}),
    )
}

pub(super) fn route(s: &mut State, c: &Call) -> Option<Answer> {
    let segs: Vec<&str> = c.segs.iter().map(String::as_str).collect();
    let ["repos", owner, name, rest @ ..] = segs.as_slice() else { return None };
    let project = format!("{owner}/{name}");
    let project = project.as_str();
    Some(match (c.method, rest) {
        ("GET", ["pulls"]) => {
            if s.hide_finds > 0 {
                s.hide_finds -= 1;
                return Some(answer(200, json!([])));
            }
            let head = c.q("head").map(|h| h.split_once(':').map_or(h, |(_, b)| b).to_owned());
            let state = c.q("state").unwrap_or("open").to_owned();
            let prs: Vec<FakePr> = s
                .repo(K, project)
                .prs
                .iter()
                .filter(|p| head.as_ref().is_none_or(|h| *h == p.head))
                .filter(|p| c.q("base").is_none_or(|b| b == p.base))
                .filter(|p| state == "all" || p.state == state)
                .cloned()
                .collect();
            answer(200, Value::Array(prs.iter().map(|p| pr_json(s, project, p)).collect()))
        }
        ("POST", ["pulls"]) => {
            let (Some(head), Some(base)) = (c.s("head"), c.s("base")) else {
                return Some(invalid(
                    json!([{"resource": "PullRequest", "field": "head", "code": "missing_field"}]),
                ));
            };
            let Some(title) = c.s("title").filter(|t| !t.is_empty()) else {
                return Some(invalid(
                    json!([{"resource": "PullRequest", "field": "title", "code": "missing_field"}]),
                ));
            };
            let branch = head.split_once(':').map_or(head, |(_, b)| b);
            if s.open_pr_for(K, project, branch, base).is_some() {
                return Some(invalid(json!([{
                    "resource": "PullRequest", "code": "custom",
                    "message": format!("A pull request already exists for {owner}:{branch}."),
                }])));
            }
            let mut pr = s.open(K, project, branch, base, title, c.s("body").unwrap_or_default());
            pr.draft = c.body.get("draft").and_then(Value::as_bool).unwrap_or(false);
            if let Some(p) = s.pr_mut(K, project, pr.number) {
                p.draft = pr.draft;
            }
            answer(201, pr_json(s, project, &pr))
        }
        (method, [kind @ ("pulls" | "issues"), n, tail @ ..]) => {
            let n: u64 = n.parse().ok()?;
            let pr = s.pr_mut(K, project, n)?;
            match (method, *kind, tail) {
                ("GET", "pulls", []) => {}
                ("GET", "pulls", ["reviews"]) => {
                    let reviews: Vec<Value> = pr
                        .reviewed
                        .iter()
                        .enumerate()
                        .map(|(i, u)| json!({"id": i + 1, "user": {"login": u}, "state": "APPROVED", "body": ""}))
                        .collect();
                    return Some(answer(200, Value::Array(reviews)));
                }
                ("PATCH", "pulls", []) => {
                    if let Some(t) = c.s("title") {
                        pr.title = t.to_owned();
                    }
                    if let Some(b) = c.s("body") {
                        pr.body = b.to_owned();
                    }
                    if let Some(st @ ("open" | "closed")) = c.s("state") {
                        pr.state = st.to_owned();
                    }
                }
                ("PUT", "pulls", ["merge"]) => {
                    if pr.state != "open" || !pr.mergeable {
                        return Some(answer(
                            405,
                            json!({"message": "Pull Request is not mergeable", "documentation_url": "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request", "status": "405"}),
                        ));
                    }
                    if c.s("sha").is_some_and(|sha| sha != pr.head_sha) {
                        return Some(answer(
                            409,
                            json!({"message": "Head branch was modified. Review and try the merge again.", "documentation_url": "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request", "status": "409"}),
                        ));
                    }
                    s.merge(K, project, n);
                    let sha = s.sha();
                    return Some(answer(
                        200,
                        json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"}),
                    ));
                }
                ("POST", "pulls", ["requested_reviewers"]) => {
                    let users = strings(c.body.get("reviewers"));
                    if users.iter().any(|u| u == AUTHOR) {
                        return Some(invalid(json!([
                            "Review cannot be requested from pull request author."
                        ])));
                    }
                    for u in users {
                        if !pr.reviewers.contains(&u) {
                            pr.reviewers.push(u);
                        }
                    }
                    for t in strings(c.body.get("team_reviewers")) {
                        let t = format!("{owner}/{t}");
                        if !pr.reviewers.contains(&t) {
                            pr.reviewers.push(t);
                        }
                    }
                    let pr = pr.clone();
                    return Some(answer(201, pr_json(s, project, &pr)));
                }
                ("POST", "issues", ["labels"]) => {
                    for l in strings(c.body.get("labels")) {
                        if !pr.labels.iter().any(|h| h.eq_ignore_ascii_case(&l)) {
                            pr.labels.push(l);
                        }
                    }
                    let labels: Vec<Value> = pr
                        .labels
                        .iter()
                        .enumerate()
                        .map(|(i, l)| json!({"id": i + 1, "name": l, "color": "ededed", "default": false}))
                        .collect();
                    return Some(answer(200, Value::Array(labels)));
                }
                _ => return None,
            }
            let pr = pr.clone();
            answer(200, pr_json(s, project, &pr))
        }
        ("GET", ["commits", sha, "status"]) => {
            let statuses: Vec<(String, Check)> =
                s.checks(K, project, sha).into_iter().filter(|(n, _)| n.contains('/')).collect();
            let word = |c: Check| match c {
                Check::Passed => "success",
                Check::Failed => "failure",
                Check::Pending => "pending",
            };
            let combined = if statuses.iter().any(|(_, c)| *c == Check::Failed) {
                "failure"
            } else if statuses.is_empty() || statuses.iter().any(|(_, c)| *c == Check::Pending) {
                "pending"
            } else {
                "success"
            };
            let list: Vec<Value> = statuses
                .iter()
                .enumerate()
                .map(|(i, (n, c))| json!({"id": i + 1, "context": n, "state": word(*c), "description": null, "target_url": null}))
                .collect();
            answer(200, json!({"state": combined, "sha": sha, "total_count": list.len(), "statuses": list}))
        }
        ("GET", ["commits", sha, "check-runs"]) => {
            let runs: Vec<Value> = s
                .checks(K, project, sha)
                .into_iter()
                .filter(|(n, _)| !n.contains('/'))
                .enumerate()
                .map(|(i, (n, c))| {
                    let (status, conclusion) = match c {
                        Check::Passed => ("completed", json!("success")),
                        Check::Failed => ("completed", json!("failure")),
                        Check::Pending => ("in_progress", Value::Null),
                    };
                    json!({"id": i + 1, "name": n, "head_sha": sha, "status": status, "conclusion": conclusion})
                })
                .collect();
            answer(200, json!({"total_count": runs.len(), "check_runs": runs}))
        }
        _ => return None,
    })
}

pub(super) fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(|x| x.as_str().map(str::to_owned)).collect()
}
