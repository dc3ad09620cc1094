//! Gitea and Forgejo, REST v1. A draft is a `WIP: ` title prefix; labels are ids, looked up
//! by name; reviewers are requested after the create.

use std::collections::HashMap;

use hyper::Method;
use serde_json::{Value, json};

use crate::http::{Api, enc, query, str_at};
use crate::{Checks, Error, MergeOutcome, Pr, PrSpec, PrState, PrStatus, Run, missing, same_text};

const DRAFT: &str = "WIP: ";
/// The most pages of open pull requests [`find`] reads.
const MAX_PAGES: usize = 20;

fn repo(project: &str) -> Result<(&str, &str), Error> {
    match project.split_once('/') {
        Some((o, r)) if !o.is_empty() && !r.is_empty() && !r.contains('/') => Ok((o, r)),
        _ => Err(Error::Config(format!("{project:?} is not owner/repo, as Gitea projects are"))),
    }
}

fn base(project: &str) -> Result<String, Error> {
    let (o, r) = repo(project)?;
    Ok(format!("/repos/{}/{}", enc(o), enc(r)))
}

fn is_draft_title(title: &str) -> bool {
    ["WIP:", "[WIP]", "Draft:", "[Draft]"]
        .iter()
        .any(|p| title.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p)))
}

fn title(spec: &PrSpec) -> String {
    let mut bare = spec.title.as_str();
    while is_draft_title(bare) {
        bare = bare.split_once([':', ']']).map_or("", |(_, rest)| rest.trim_start());
    }
    if spec.draft { format!("{DRAFT}{bare}") } else { bare.to_owned() }
}

fn names(v: &Value, list: &str, field: &str) -> Vec<String> {
    v.get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.get(field).and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn pr_from(v: &Value, what: &str) -> Result<Pr, Error> {
    let shape = |message: &str| Error::Shape { what: what.to_owned(), message: message.to_owned() };
    let number = v.get("number").and_then(Value::as_u64).ok_or_else(|| shape("no number"))?;
    let url = str_at(v, &["html_url"]).ok_or_else(|| shape("no html_url"))?.to_owned();
    let title = str_at(v, &["title"]).unwrap_or_default().to_owned();
    let draft = v.get("draft").and_then(Value::as_bool).unwrap_or(false) || is_draft_title(&title);
    let merged = v.get("merged").and_then(Value::as_bool).unwrap_or(false);
    let state = match (str_at(v, &["state"]), merged, draft) {
        (_, true, _) => PrState::Merged,
        (Some("closed"), _, _) => PrState::Closed,
        (_, _, true) => PrState::Draft,
        _ => PrState::Open,
    };
    Ok(Pr {
        number,
        url,
        state,
        draft,
        created: false,
        title,
        body: str_at(v, &["body"]).unwrap_or_default().to_owned(),
        head_sha: str_at(v, &["head", "sha"]).map(str::to_owned),
        labels: names(v, "labels", "name"),
        reviewers: names(v, "requested_reviewers", "login"),
    })
}

/// The open pull request head → base, or with `any_state` the latest in any state.
pub async fn find(
    api: &Api,
    project: &str,
    head: &str,
    base_branch: &str,
    any_state: bool,
) -> Result<Option<Pr>, Error> {
    let base = base(project)?;
    let state = if any_state { "all" } else { "open" };
    let mut latest: Option<(Value, String)> = None;
    for page in 1..=MAX_PAGES {
        let path = format!(
            "{base}/pulls?{}",
            query(&[("state", state), ("limit", "50"), ("page", &page.to_string())])
        );
        let v = api.call(Method::GET, &path, None).await?;
        let list =
            v.as_array().ok_or_else(|| Error::Shape { what: path.clone(), message: "not a list".into() })?;
        let number = |p: &Value| p.get("number").and_then(Value::as_u64);
        for p in list {
            let matches =
                str_at(p, &["head", "ref"]) == Some(head) && str_at(p, &["base", "ref"]) == Some(base_branch);
            if matches && latest.as_ref().is_none_or(|(l, _)| number(l) < number(p)) {
                latest = Some((p.clone(), path.clone()));
            }
        }
        // Only one can be open for a head and base.
        if list.len() < 50 || (!any_state && latest.is_some()) {
            break;
        }
    }
    latest.map(|(p, path)| pr_from(&p, &path)).transpose()
}

/// The ids of the repository's labels named `wanted`.
async fn label_ids(api: &Api, project: &str, wanted: &[&String]) -> Result<Vec<u64>, Error> {
    let path = format!("{}/labels?limit=100", base(project)?);
    let v = api.call(Method::GET, &path, None).await?;
    let by_name: HashMap<String, u64> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((str_at(l, &["name"])?.to_lowercase(), l.get("id")?.as_u64()?)))
        .collect();
    wanted
        .iter()
        .map(|w| {
            by_name
                .get(&w.to_lowercase())
                .copied()
                .ok_or_else(|| Error::NoLabel { project: project.to_owned(), label: (*w).clone() })
        })
        .collect()
}

/// Opens the pull request; `None` when Gitea says one is open for head → base (409).
pub async fn create(api: &Api, project: &str, spec: &PrSpec) -> Result<Option<Pr>, Error> {
    let path = format!("{}/pulls", base(project)?);
    let labels: Vec<&String> = missing(&spec.labels, &[]);
    let mut body = json!({ "head": spec.head, "base": spec.base, "title": title(spec), "body": spec.body });
    if !labels.is_empty() {
        body["labels"] = json!(label_ids(api, project, &labels).await?);
    }
    let reply = api.send(Method::POST, &path, Some(&body)).await?;
    if reply.status.as_u16() == 409 {
        return Ok(None);
    }
    if !reply.status.is_success() {
        return Err(api.status_error(&Method::POST, &path, &reply));
    }
    let mut pr = pr_from(&reply.json(), &path)?;
    pr.created = true;
    tracing::info!(project, number = pr.number, url = pr.url, "opened a pull request");
    request_reviewers(api, project, &mut pr, spec).await?;
    Ok(Some(pr))
}

/// Brings `pr` to `spec`: title and body when they differ, labels and reviewers it lacks.
pub async fn update(api: &Api, project: &str, mut pr: Pr, spec: &PrSpec) -> Result<Pr, Error> {
    let want_title = title(spec);
    if pr.title != want_title || !same_text(&pr.body, &spec.body) {
        let path = format!("{}/pulls/{}", base(project)?, pr.number);
        let v =
            api.call(Method::PATCH, &path, Some(&json!({ "title": want_title, "body": spec.body }))).await?;
        let created = pr.created;
        pr = pr_from(&v, &path)?;
        pr.created = created;
        tracing::info!(project, number = pr.number, "updated the pull request's title and body");
    }
    let labels = missing(&spec.labels, &pr.labels);
    if !labels.is_empty() {
        let ids = label_ids(api, project, &labels).await?;
        let path = format!("{}/issues/{}/labels", base(project)?, pr.number);
        let v = api.call(Method::POST, &path, Some(&json!({ "labels": ids }))).await?;
        if let Some(list) = v.as_array() {
            pr.labels = list.iter().filter_map(|l| str_at(l, &["name"]).map(str::to_owned)).collect();
        }
    }
    request_reviewers(api, project, &mut pr, spec).await?;
    Ok(pr)
}

async fn request_reviewers(api: &Api, project: &str, pr: &mut Pr, spec: &PrSpec) -> Result<(), Error> {
    let mut wanted = missing(&spec.reviewers, &pr.reviewers);
    if !pr.created && !wanted.is_empty() {
        // Who has reviewed may have left requested_reviewers: do not ask them again.
        let path = format!("{}/pulls/{}/reviews?limit=50", base(project)?, pr.number);
        let done = crate::github::reviewed(&api.call(Method::GET, &path, None).await?);
        wanted.retain(|r| r.contains('/') || !done.iter().any(|d| d.eq_ignore_ascii_case(r)));
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let users: Vec<&String> = wanted.iter().copied().filter(|r| !r.contains('/')).collect();
    let teams: Vec<&str> = wanted.iter().filter_map(|t| t.split_once('/').map(|(_, team)| team)).collect();
    let path = format!("{}/pulls/{}/requested_reviewers", base(project)?, pr.number);
    let reply =
        api.send(Method::POST, &path, Some(&json!({ "reviewers": users, "team_reviewers": teams }))).await?;
    if matches!(reply.status.as_u16(), 422 | 404) {
        tracing::warn!(project, number = pr.number, message = reply.message(), "reviewers not requested");
    } else if !reply.status.is_success() {
        return Err(api.status_error(&Method::POST, &path, &reply));
    } else {
        pr.reviewers.extend(users.into_iter().cloned());
    }
    Ok(())
}

pub async fn status(api: &Api, project: &str, number: u64) -> Result<PrStatus, Error> {
    let base = base(project)?;
    let path = format!("{base}/pulls/{number}");
    let v = api.call(Method::GET, &path, None).await?;
    let pr = pr_from(&v, &path)?;
    let mut runs = Vec::new();
    if let Some(sha) = &pr.head_sha {
        let combined = api.call(Method::GET, &format!("{base}/commits/{}/status", enc(sha)), None).await?;
        runs.extend(combined.get("statuses").and_then(Value::as_array).into_iter().flatten().filter_map(
            |s| {
                let name = str_at(s, &["context"])?.to_owned();
                let run = match str_at(s, &["status"]).or_else(|| str_at(s, &["state"])) {
                    Some("success" | "warning") => Run::Pass,
                    Some("failure" | "error") => Run::Fail,
                    _ => Run::Pending,
                };
                Some((name, run))
            },
        ));
    }
    Ok(PrStatus {
        state: pr.state,
        checks: Checks::from_runs(runs),
        mergeable: v.get("mergeable").and_then(Value::as_bool),
        merge_detail: None,
        url: pr.url,
        head_sha: pr.head_sha,
    })
}

pub async fn merge(api: &Api, project: &str, pr: &Pr, head_sha: Option<&str>) -> Result<MergeOutcome, Error> {
    let path = format!("{}/pulls/{}/merge", base(project)?, pr.number);
    let mut body = json!({ "Do": "merge" });
    if let Some(sha) = head_sha {
        body["head_commit_id"] = json!(sha);
    }
    let reply = api.send(Method::POST, &path, Some(&body)).await?;
    api.merged(&Method::POST, &path, &reply, pr, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_titles() {
        let spec = |t: &str, draft| PrSpec { title: t.into(), draft, ..PrSpec::default() };
        assert_eq!(title(&spec("Fix", true)), "WIP: Fix");
        assert_eq!(title(&spec("WIP: Fix", true)), "WIP: Fix");
        assert_eq!(title(&spec("[WIP] Fix", false)), "Fix");
        assert_eq!(title(&spec("Fix", false)), "Fix");
    }
}
