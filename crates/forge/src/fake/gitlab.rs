//! GitLab REST v4 merge requests, as grove uses them.

use serde_json::{Value, json};

use super::github::strings;
use super::{Answer, Call, Check, FakePr, State, answer};
use crate::Kind;

const K: Kind = Kind::GitLab;

fn is_draft(title: &str) -> bool {
    ["Draft:", "[Draft]", "(Draft)", "WIP:", "[WIP]"]
        .iter()
        .any(|p| title.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p)))
}

fn pipeline_id(sha: &str) -> u64 {
    u64::from_str_radix(sha.get(32..).unwrap_or("0"), 16).unwrap_or(0)
}

fn pipeline_status(checks: &[(String, Check)]) -> Option<&'static str> {
    if checks.is_empty() {
        None
    } else if checks.iter().any(|(_, c)| *c == Check::Failed) {
        Some("failed")
    } else if checks.iter().any(|(_, c)| *c == Check::Pending) {
        Some("running")
    } else {
        Some("success")
    }
}

fn labels(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => {
            s.split(',').map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
        }
        other => strings(other),
    }
}

fn mr_json(s: &mut State, project: &str, pr: &FakePr) -> Value {
    let web = s.web();
    let checks = s.checks(K, project, &pr.head_sha);
    let pipeline = match pipeline_status(&checks) {
        Some(status) => json!({
            "id": pipeline_id(&pr.head_sha), "sha": pr.head_sha, "ref": pr.head, "status": status,
            "web_url": format!("{web}/{project}/-/pipelines/{}", pipeline_id(&pr.head_sha)),
        }),
        None => Value::Null,
    };
    let reviewers: Vec<Value> = pr
        .reviewers
        .iter()
        .map(|r| json!({"id": s.user_id(r), "username": r, "name": r, "state": "active"}))
        .collect();
    let state = if pr.merged {
        "merged"
    } else if pr.state == "open" {
        "opened"
    } else {
        "closed"
    };
    let detailed = match (pr.state.as_str(), pr.mergeable, is_draft(&pr.title)) {
        ("open", _, true) => "draft_status",
        ("open", true, _) => "mergeable",
        ("open", false, _) => "conflict",
        _ => "not_open",
    };
    json!({
        "id": 5000 + pr.number,
        "iid": pr.number,
        "project_id": 77,
        "title": pr.title,
        "description": pr.body,
        "state": state,
        "draft": is_draft(&pr.title),
        "work_in_progress": is_draft(&pr.title),
        "source_branch": pr.head,
        "target_branch": pr.base,
        "sha": pr.head_sha,
        "merge_commit_sha": if pr.merged { json!("f".repeat(40)) } else { Value::Null },
        "web_url": format!("{web}/{project}/-/merge_requests/{}", pr.number),
        "labels": pr.labels,
        "reviewers": reviewers,
        "author": {"id": 1, "username": "grove-bot"},
        "merge_status": if pr.mergeable { "can_be_merged" } else { "cannot_be_merged" },
        "detailed_merge_status": detailed,
        "has_conflicts": !pr.mergeable,
        "head_pipeline": pipeline,
        "references": {"short": format!("!{}", pr.number), "full": format!("{project}!{}", pr.number)},
    })
}

pub(super) fn route(s: &mut State, c: &Call) -> Option<Answer> {
    let segs: Vec<&str> = c.segs.iter().map(String::as_str).collect();
    if c.method == "GET" && segs == ["users"] {
        let Some(name) = c.q("username") else { return Some(answer(200, json!([]))) };
        let id = s.user_id(name);
        return Some(answer(200, json!([{"id": id, "username": name, "name": name, "state": "active"}])));
    }
    let ["projects", project, rest @ ..] = segs.as_slice() else { return None };
    let project = *project;
    Some(match (c.method, rest) {
        ("GET", ["merge_requests"]) => {
            if s.hide_finds > 0 {
                s.hide_finds -= 1;
                return Some(answer(200, json!([])));
            }
            let state = c.q("state").unwrap_or("all").to_owned();
            let prs: Vec<FakePr> = s
                .repo(K, project)
                .prs
                .iter()
                .filter(|p| c.q("source_branch").is_none_or(|b| b == p.head))
                .filter(|p| c.q("target_branch").is_none_or(|b| b == p.base))
                .filter(|p| match state.as_str() {
                    "opened" => p.state == "open",
                    "merged" => p.merged,
                    "closed" => p.state == "closed" && !p.merged,
                    _ => true,
                })
                .cloned()
                .collect();
            answer(200, Value::Array(prs.iter().map(|p| mr_json(s, project, p)).collect()))
        }
        ("POST", ["merge_requests"]) => {
            let (Some(head), Some(base), Some(title)) =
                (c.s("source_branch"), c.s("target_branch"), c.s("title"))
            else {
                return Some(answer(
                    400,
                    json!({"error": "source_branch, target_branch, title are missing"}),
                ));
            };
            if let Some(existing) = s.open_pr_for(K, project, head, base) {
                return Some(answer(
                    409,
                    json!({"message": [format!("Another open merge request already exists for this source branch: !{}", existing.number)]}),
                ));
            }
            let pr = s.open(K, project, head, base, title, c.s("description").unwrap_or_default());
            let ids: Vec<u64> = c
                .body
                .get("reviewer_ids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .collect();
            let reviewers: Vec<String> =
                ids.iter().filter_map(|id| s.users.get((*id as usize).wrapping_sub(1)).cloned()).collect();
            let p = s.pr_mut(K, project, pr.number)?;
            p.labels = labels(c.body.get("labels"));
            p.reviewers = reviewers;
            let p = p.clone();
            answer(201, mr_json(s, project, &p))
        }
        ("GET", ["pipelines", pid, "jobs"]) => {
            let pid: u64 = pid.parse().ok()?;
            let checks = s
                .repo(K, project)
                .checks
                .iter()
                .find(|(sha, _)| pipeline_id(sha) == pid)
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            let jobs: Vec<Value> = checks
                .iter()
                .enumerate()
                .map(|(i, (n, c))| {
                    let status = match c {
                        Check::Passed => "success",
                        Check::Failed => "failed",
                        Check::Pending => "running",
                    };
                    json!({"id": i + 1, "name": n, "stage": "test", "status": status, "allow_failure": false})
                })
                .collect();
            answer(200, Value::Array(jobs))
        }
        (method, ["merge_requests", iid, tail @ ..]) => {
            let iid: u64 = iid.parse().ok()?;
            let new_reviewers: Option<Vec<String>> =
                c.body.get("reviewer_ids").and_then(Value::as_array).map(|ids| {
                    ids.iter()
                        .filter_map(Value::as_u64)
                        .filter_map(|id| s.users.get((id as usize).wrapping_sub(1)).cloned())
                        .collect()
                });
            let pr = s.pr_mut(K, project, iid)?;
            match (method, tail) {
                ("GET", []) => {}
                ("PUT", []) => {
                    if let Some(t) = c.s("title") {
                        pr.title = t.to_owned();
                    }
                    if let Some(d) = c.s("description") {
                        pr.body = d.to_owned();
                    }
                    if c.body.get("labels").is_some() {
                        pr.labels = labels(c.body.get("labels"));
                    }
                    for l in labels(c.body.get("add_labels")) {
                        if !pr.labels.contains(&l) {
                            pr.labels.push(l);
                        }
                    }
                    if let Some(r) = new_reviewers {
                        pr.reviewers = r;
                    }
                    match c.s("state_event") {
                        Some("close") => pr.state = "closed".into(),
                        Some("reopen") => pr.state = "open".into(),
                        _ => {}
                    }
                }
                ("PUT", ["merge"]) => {
                    if pr.state != "open" {
                        return Some(answer(405, json!({"message": "405 Method Not Allowed"})));
                    }
                    if !pr.mergeable || is_draft(&pr.title) {
                        return Some(answer(406, json!({"message": "Branch cannot be merged"})));
                    }
                    if c.s("sha").is_some_and(|sha| sha != pr.head_sha) {
                        return Some(answer(
                            409,
                            json!({"message": "SHA does not match HEAD of source branch: ".to_owned() + &pr.head_sha}),
                        ));
                    }
                    s.merge(K, project, iid);
                }
                _ => return None,
            }
            let pr = s.pr_mut(K, project, iid)?.clone();
            answer(200, mr_json(s, project, &pr))
        }
        _ => return None,
    })
}
