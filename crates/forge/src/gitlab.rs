//! GitLab merge requests, REST v4. A project is named by its URL-encoded path; a draft is
//! a `Draft: ` title prefix; labels are a comma list; reviewers are user ids, looked up by
//! username.

use hyper::Method;
use serde_json::{Value, json};

use crate::http::{Api, enc, query, str_at};
use crate::{Checks, Error, MergeOutcome, Pr, PrSpec, PrState, PrStatus, Run, missing, same_text};

const DRAFT: &str = "Draft: ";

fn base(project: &str) -> String {
    format!("/projects/{}", enc(project))
}

/// The title GitLab should have: `Draft: ` before it for a draft, no draft prefix else.
fn title(spec: &PrSpec) -> String {
    let bare = strip_draft(&spec.title);
    if spec.draft { format!("{DRAFT}{bare}") } else { bare.to_owned() }
}

fn strip_draft(title: &str) -> &str {
    for prefix in ["Draft:", "[Draft]", "(Draft)", "WIP:", "[WIP]"] {
        if let Some(head) = title.get(..prefix.len())
            && head.eq_ignore_ascii_case(prefix)
        {
            return title[prefix.len()..].trim_start();
        }
    }
    title
}

fn pr_from(v: &Value, what: &str) -> Result<Pr, Error> {
    let shape = |message: &str| Error::Shape { what: what.to_owned(), message: message.to_owned() };
    let number = v.get("iid").and_then(Value::as_u64).ok_or_else(|| shape("no iid"))?;
    let url = str_at(v, &["web_url"]).ok_or_else(|| shape("no web_url"))?.to_owned();
    let draft =
        v.get("draft").or_else(|| v.get("work_in_progress")).and_then(Value::as_bool).unwrap_or(false);
    let state = match (str_at(v, &["state"]), draft) {
        (Some("merged"), _) => PrState::Merged,
        (Some("closed" | "locked"), _) => PrState::Closed,
        (_, true) => PrState::Draft,
        _ => PrState::Open,
    };
    let list = |key: &str, field: Option<&str>| -> Vec<String> {
        v.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| match field {
                Some(f) => x.get(f).and_then(Value::as_str),
                None => x.as_str(),
            })
            .map(str::to_owned)
            .collect()
    };
    Ok(Pr {
        number,
        url,
        state,
        draft,
        created: false,
        title: str_at(v, &["title"]).unwrap_or_default().to_owned(),
        body: str_at(v, &["description"]).unwrap_or_default().to_owned(),
        head_sha: str_at(v, &["sha"]).map(str::to_owned),
        labels: list("labels", None),
        reviewers: list("reviewers", Some("username")),
    })
}

/// The open merge request head → base, or with `any_state` the latest in any state.
pub async fn find(
    api: &Api,
    project: &str,
    head: &str,
    base_branch: &str,
    any_state: bool,
) -> Result<Option<Pr>, Error> {
    let path = format!(
        "{}/merge_requests?{}",
        base(project),
        query(&[
            ("source_branch", head),
            ("target_branch", base_branch),
            ("state", if any_state { "all" } else { "opened" })
        ])
    );
    let v = api.call(Method::GET, &path, None).await?;
    let list =
        v.as_array().ok_or_else(|| Error::Shape { what: path.clone(), message: "not a list".into() })?;
    let latest = list.iter().max_by_key(|p| p.get("iid").and_then(Value::as_u64));
    latest.map(|p| pr_from(p, &path)).transpose()
}

/// The ids of these usernames.
async fn user_ids(api: &Api, users: &[&String]) -> Result<Vec<u64>, Error> {
    let mut ids = Vec::with_capacity(users.len());
    for user in users {
        let path = format!("/users?{}", query(&[("username", user)]));
        let v = api.call(Method::GET, &path, None).await?;
        let id = v.as_array().and_then(|l| l.first()).and_then(|u| u.get("id")).and_then(Value::as_u64);
        ids.push(id.ok_or_else(|| Error::NoUser { host: api.config.host.clone(), user: (*user).clone() })?);
    }
    Ok(ids)
}

/// Opens the merge request; `None` when GitLab says one is open for the branch (409).
pub async fn create(api: &Api, project: &str, spec: &PrSpec) -> Result<Option<Pr>, Error> {
    let path = format!("{}/merge_requests", base(project));
    let reviewers: Vec<&String> = spec.reviewers.iter().collect();
    let mut body = json!({
        "source_branch": spec.head,
        "target_branch": spec.base,
        "title": title(spec),
        "description": spec.body,
    });
    if !spec.labels.is_empty() {
        body["labels"] = json!(spec.labels.join(","));
    }
    if !reviewers.is_empty() {
        body["reviewer_ids"] = json!(user_ids(api, &reviewers).await?);
    }
    let reply = api.send(Method::POST, &path, Some(&body)).await?;
    let status = reply.status.as_u16();
    if status == 409 || (status == 422 && reply.message().contains("already exists")) {
        return Ok(None);
    }
    if !reply.status.is_success() {
        return Err(api.status_error(&Method::POST, &path, &reply));
    }
    let mut pr = pr_from(&reply.json(), &path)?;
    pr.created = true;
    tracing::info!(project, iid = pr.number, url = pr.url, "opened a merge request");
    Ok(Some(pr))
}

/// Brings `pr` to `spec` in one PUT, when anything differs.
pub async fn update(api: &Api, project: &str, pr: Pr, spec: &PrSpec) -> Result<Pr, Error> {
    let want_title = title(spec);
    let labels = missing(&spec.labels, &pr.labels);
    let new_reviewers = missing(&spec.reviewers, &pr.reviewers);
    if pr.title == want_title
        && same_text(&pr.body, &spec.body)
        && labels.is_empty()
        && new_reviewers.is_empty()
    {
        return Ok(pr);
    }
    let mut body = json!({ "title": want_title, "description": spec.body });
    if !labels.is_empty() {
        body["add_labels"] = json!(labels.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(","));
    }
    if !new_reviewers.is_empty() {
        // reviewer_ids replaces the set: send the ones it has too.
        let mut all: Vec<&String> = pr.reviewers.iter().collect();
        all.extend(new_reviewers);
        body["reviewer_ids"] = json!(user_ids(api, &all).await?);
    }
    let path = format!("{}/merge_requests/{}", base(project), pr.number);
    let v = api.call(Method::PUT, &path, Some(&body)).await?;
    let mut updated = pr_from(&v, &path)?;
    updated.created = pr.created;
    tracing::info!(project, iid = pr.number, "updated the merge request");
    Ok(updated)
}

pub async fn status(api: &Api, project: &str, number: u64) -> Result<PrStatus, Error> {
    let path = format!("{}/merge_requests/{number}", base(project));
    let v = api.call(Method::GET, &path, None).await?;
    let pr = pr_from(&v, &path)?;
    let pipeline = v.get("head_pipeline").filter(|p| !p.is_null());
    let checks = match pipeline.and_then(|p| Some((p.get("id")?.as_u64()?, str_at(p, &["status"])?))) {
        None => Checks::None,
        Some((_, "success")) => Checks::Passed,
        Some((_, "skipped")) => Checks::None,
        Some((id, "failed" | "canceled")) => {
            let jobs_path = format!("{}/pipelines/{id}/jobs?per_page=100", base(project));
            let jobs = api.call(Method::GET, &jobs_path, None).await?;
            let runs = jobs.as_array().into_iter().flatten().filter_map(|j| {
                let allowed = j.get("allow_failure").and_then(Value::as_bool).unwrap_or(false);
                let run = match str_at(j, &["status"])? {
                    "failed" | "canceled" if !allowed => Run::Fail,
                    "success" | "skipped" | "manual" | "failed" | "canceled" => Run::Pass,
                    _ => Run::Pending,
                };
                Some((str_at(j, &["name"])?.to_owned(), run))
            });
            match Checks::from_runs(runs) {
                Checks::Failed(names) => Checks::Failed(names),
                _ => Checks::Failed(vec![format!("pipeline {id}")]),
            }
        }
        Some(_) => Checks::Pending(Vec::new()),
    };
    let detailed = str_at(&v, &["detailed_merge_status"]);
    let mergeable = match (detailed, str_at(&v, &["merge_status"])) {
        _ if v.get("has_conflicts").and_then(Value::as_bool) == Some(true) => Some(false),
        (Some("mergeable"), _) => Some(true),
        (
            Some(
                "checking" | "unchecked" | "preparing" | "approvals_syncing" | "ci_must_pass"
                | "ci_still_running",
            ),
            _,
        ) => None,
        (Some(_), _) => Some(false),
        (None, Some("can_be_merged")) => Some(true),
        (None, Some("cannot_be_merged" | "cannot_be_merged_recheck")) => Some(false),
        (None, _) => None,
    };
    Ok(PrStatus {
        state: pr.state,
        checks,
        mergeable,
        merge_detail: detailed.or_else(|| str_at(&v, &["merge_status"])).map(str::to_owned),
        url: pr.url,
        head_sha: pr.head_sha,
    })
}

pub async fn merge(api: &Api, project: &str, pr: &Pr, head_sha: Option<&str>) -> Result<MergeOutcome, Error> {
    let path = format!("{}/merge_requests/{}/merge", base(project), pr.number);
    let body = match head_sha {
        Some(sha) => json!({ "sha": sha }),
        None => json!({}),
    };
    let reply = api.send(Method::PUT, &path, Some(&body)).await?;
    api.merged(&Method::PUT, &path, &reply, pr, Some("merge_commit_sha"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_titles() {
        let spec = |t: &str, draft| PrSpec { title: t.into(), draft, ..PrSpec::default() };
        assert_eq!(title(&spec("Fix", true)), "Draft: Fix");
        assert_eq!(title(&spec("Draft: Fix", true)), "Draft: Fix");
        assert_eq!(title(&spec("WIP: Fix", false)), "Fix");
        assert_eq!(title(&spec("Fix", false)), "Fix");
    }
}
