//! Gitea / Forgejo REST v1 pull requests, as grove uses them.

use serde_json::{Value, json};

use super::github::strings;
use super::{Answer, Call, Check, FakePr, State, answer};
use crate::Kind;

const K: Kind = Kind::Gitea;

fn pr_json(s: &State, project: &str, pr: &FakePr) -> Value {
    let web = s.web();
    let (owner, _) = project.split_once('/').unwrap_or((project, ""));
    json!({
        "id": 3000 + pr.number,
        "number": pr.number,
        "url": format!("{web}/{project}/pulls/{}", pr.number),
        "html_url": format!("{web}/{project}/pulls/{}", pr.number),
        "state": pr.state,
        "title": pr.title,
        "body": pr.body,
        "user": {"login": "grove-bot"},
        "merged": pr.merged,
        "mergeable": pr.mergeable,
        "draft": pr.title.starts_with("WIP:"),
        "head": {"label": pr.head, "ref": pr.head, "sha": pr.head_sha},
        "base": {"label": pr.base, "ref": pr.base, "repo": {"full_name": project, "owner": {"login": owner}}},
        "labels": pr.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
        "requested_reviewers": pr.reviewers.iter().map(|r| json!({"login": r})).collect::<Vec<_>>(),
    })
}

fn label_names(s: &mut State, project: &str, ids: Option<&Value>) -> Result<Vec<String>, Answer> {
    let known = s.repo(K, project).labels.clone();
    let mut out = Vec::new();
    for id in ids.and_then(Value::as_array).into_iter().flatten() {
        match id.as_u64().and_then(|i| known.get((i as usize).wrapping_sub(1))) {
            Some(name) => out.push(name.clone()),
            None => {
                return Err(answer(
                    422,
                    json!({"message": format!("label does not exist [id: {id}]"), "url": ""}),
                ));
            }
        }
    }
    Ok(out)
}

pub(super) fn route(s: &mut State, c: &Call) -> Option<Answer> {
    let segs: Vec<&str> = c.segs.iter().map(String::as_str).collect();
    let ["repos", owner, name, rest @ ..] = segs.as_slice() else { return None };
    let project = format!("{owner}/{name}");
    let project = project.as_str();
    Some(match (c.method, rest) {
        ("GET", ["labels"]) => {
            let labels: Vec<Value> = s
                .repo(K, project)
                .labels
                .iter()
                .enumerate()
                .map(|(i, l)| json!({"id": i + 1, "name": l, "color": "ededed"}))
                .collect();
            answer(200, Value::Array(labels))
        }
        ("GET", ["pulls"]) => {
            if s.hide_finds > 0 {
                s.hide_finds -= 1;
                return Some(answer(200, json!([])));
            }
            let state = c.q("state").unwrap_or("open").to_owned();
            let limit: usize = c.q("limit").and_then(|l| l.parse().ok()).unwrap_or(30);
            let page: usize = c.q("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
            let prs: Vec<FakePr> = s
                .repo(K, project)
                .prs
                .iter()
                .filter(|p| state == "all" || p.state == state)
                .skip((page - 1) * limit)
                .take(limit)
                .cloned()
                .collect();
            answer(200, Value::Array(prs.iter().map(|p| pr_json(s, project, p)).collect()))
        }
        ("POST", ["pulls"]) => {
            let (Some(head), Some(base), Some(title)) = (c.s("head"), c.s("base"), c.s("title")) else {
                return Some(answer(
                    422,
                    json!({"message": "[Head]: Required; [Base]: Required; [Title]: Required"}),
                ));
            };
            if let Some(existing) = s.open_pr_for(K, project, head, base) {
                let message = format!(
                    "pull request already exists for these targets [id: {}, issue_id: {}, head_repo_id: 1, base_repo_id: 1, head_branch: {head}, base_branch: {base}]",
                    3000 + existing.number,
                    existing.number
                );
                return Some(answer(409, json!({"message": message, "url": ""})));
            }
            let labels = match label_names(s, project, c.body.get("labels")) {
                Ok(l) => l,
                Err(a) => return Some(a),
            };
            let pr = s.open(K, project, head, base, title, c.s("body").unwrap_or_default());
            let p = s.pr_mut(K, project, pr.number)?;
            p.labels = labels;
            let p = p.clone();
            answer(201, pr_json(s, project, &p))
        }
        ("GET", ["commits", sha, "status"]) => {
            let checks = s.checks(K, project, sha);
            let word = |c: Check| match c {
                Check::Passed => "success",
                Check::Failed => "failure",
                Check::Pending => "pending",
            };
            let state = if checks.iter().any(|(_, c)| *c == Check::Failed) {
                "failure"
            } else if checks.is_empty() || checks.iter().any(|(_, c)| *c == Check::Pending) {
                "pending"
            } else {
                "success"
            };
            let list: Vec<Value> = checks
                .iter()
                .enumerate()
                .map(|(i, (n, c))| json!({"id": i + 1, "context": n, "status": word(*c), "description": ""}))
                .collect();
            answer(200, json!({"state": state, "sha": sha, "total_count": list.len(), "statuses": list}))
        }
        (method, [kind @ ("pulls" | "issues"), n, tail @ ..]) => {
            let n: u64 = n.parse().ok()?;
            let ids = c.body.get("labels").cloned();
            let label_list = match (method, *kind, tail) {
                ("POST", "issues", ["labels"]) => match label_names(s, project, ids.as_ref()) {
                    Ok(l) => l,
                    Err(a) => return Some(a),
                },
                _ => Vec::new(),
            };
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
                    let pr = pr.clone();
                    return Some(answer(201, pr_json(s, project, &pr)));
                }
                ("POST", "pulls", ["merge"]) => {
                    if pr.merged {
                        return Some(answer(405, json!({"message": "The PR is already merged", "url": ""})));
                    }
                    if pr.state != "open" || !pr.mergeable {
                        return Some(answer(405, json!({"message": "Please try again later", "url": ""})));
                    }
                    if c.s("head_commit_id").is_some_and(|sha| !sha.is_empty() && sha != pr.head_sha) {
                        return Some(answer(409, json!({"message": "head out of date", "url": ""})));
                    }
                    s.merge(K, project, n);
                    return Some(answer(200, Value::Null));
                }
                ("POST", "pulls", ["requested_reviewers"]) => {
                    for u in strings(c.body.get("reviewers")) {
                        if !pr.reviewers.contains(&u) {
                            pr.reviewers.push(u);
                        }
                    }
                    return Some(answer(201, json!([])));
                }
                ("POST", "issues", ["labels"]) => {
                    for l in label_list {
                        if !pr.labels.contains(&l) {
                            pr.labels.push(l);
                        }
                    }
                    let labels: Vec<Value> = pr.labels.iter().map(|l| json!({"name": l})).collect();
                    return Some(answer(200, Value::Array(labels)));
                }
                _ => return None,
            }
            let pr = pr.clone();
            answer(200, pr_json(s, project, &pr))
        }
        _ => return None,
    })
}
