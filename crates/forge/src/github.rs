//! GitHub and GitHub Enterprise, REST v3.
//!
//! Labels and reviewers are not fields of a create: they are added after it
//! (`POST /issues/{n}/labels`, `POST /pulls/{n}/requested_reviewers`). A draft cannot be
//! turned into a ready pull request (or back) over REST; an existing one keeps its draft flag.

use hyper::Method;
use serde_json::{Value, json};

use crate::http::{Api, enc, query, str_at};
use crate::{Checks, Error, MergeOutcome, Pr, PrSpec, PrState, PrStatus, Run, missing, same_text};

fn repo(project: &str) -> Result<(&str, &str), Error> {
    match project.split_once('/') {
        Some((o, r)) if !o.is_empty() && !r.is_empty() && !r.contains('/') => Ok((o, r)),
        _ => Err(Error::Config(format!("{project:?} is not owner/repo, as GitHub projects are"))),
    }
}

fn base(project: &str) -> Result<String, Error> {
    let (o, r) = repo(project)?;
    Ok(format!("/repos/{}/{}", enc(o), enc(r)))
}

fn names(v: &Value, list: &str, field: &str) -> Vec<String> {
    v.get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.get(field).and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Requested users by login and teams as `org/slug`.
fn reviewers(v: &Value) -> Vec<String> {
    let mut out = names(v, "requested_reviewers", "login");
    let org = str_at(v, &["base", "repo", "owner", "login"]).unwrap_or_default();
    out.extend(names(v, "requested_teams", "slug").into_iter().map(|slug| format!("{org}/{slug}")));
    out
}

fn pr_from(v: &Value, what: &str) -> Result<Pr, Error> {
    let shape = |message: &str| Error::Shape { what: what.to_owned(), message: message.to_owned() };
    let number = v.get("number").and_then(Value::as_u64).ok_or_else(|| shape("no number"))?;
    let url = str_at(v, &["html_url"]).ok_or_else(|| shape("no html_url"))?.to_owned();
    let draft = v.get("draft").and_then(Value::as_bool).unwrap_or(false);
    let merged = v.get("merged").and_then(Value::as_bool).unwrap_or(false)
        || v.get("merged_at").is_some_and(|m| !m.is_null());
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
        title: str_at(v, &["title"]).unwrap_or_default().to_owned(),
        body: str_at(v, &["body"]).unwrap_or_default().to_owned(),
        head_sha: str_at(v, &["head", "sha"]).map(str::to_owned),
        labels: names(v, "labels", "name"),
        reviewers: reviewers(v),
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
    let (owner, _) = repo(project)?;
    let head = if head.contains(':') { head.to_owned() } else { format!("{owner}:{head}") };
    let path = format!(
        "{}/pulls?{}",
        base(project)?,
        query(&[
            ("head", &head),
            ("base", base_branch),
            ("state", if any_state { "all" } else { "open" }),
            ("per_page", "100")
        ])
    );
    let v = api.call(Method::GET, &path, None).await?;
    let list =
        v.as_array().ok_or_else(|| Error::Shape { what: path.clone(), message: "not a list".into() })?;
    let latest = list.iter().max_by_key(|p| p.get("number").and_then(Value::as_u64));
    latest.map(|p| pr_from(p, &path)).transpose()
}

/// Opens the pull request; `None` when GitHub says one exists for head → base (422).
pub async fn create(api: &Api, project: &str, spec: &PrSpec) -> Result<Option<Pr>, Error> {
    let path = format!("{}/pulls", base(project)?);
    let body = json!({
        "title": spec.title, "head": spec.head, "base": spec.base, "body": spec.body, "draft": spec.draft,
    });
    let reply = api.send(Method::POST, &path, Some(&body)).await?;
    if reply.status.as_u16() == 422 && reply.message().contains("already exists") {
        return Ok(None);
    }
    if !reply.status.is_success() {
        return Err(api.status_error(&Method::POST, &path, &reply));
    }
    let mut pr = pr_from(&reply.json(), &path)?;
    pr.created = true;
    tracing::info!(project, number = pr.number, url = pr.url, "opened a pull request");
    add_labels_and_reviewers(api, project, &mut pr, spec).await?;
    Ok(Some(pr))
}

/// Brings `pr` to `spec`: title and body when they differ, labels and reviewers it lacks.
pub async fn update(api: &Api, project: &str, mut pr: Pr, spec: &PrSpec) -> Result<Pr, Error> {
    if pr.title != spec.title || !same_text(&pr.body, &spec.body) {
        let path = format!("{}/pulls/{}", base(project)?, pr.number);
        let v =
            api.call(Method::PATCH, &path, Some(&json!({ "title": spec.title, "body": spec.body }))).await?;
        let created = pr.created;
        pr = pr_from(&v, &path)?;
        pr.created = created;
        tracing::info!(project, number = pr.number, "updated the pull request's title and body");
    }
    add_labels_and_reviewers(api, project, &mut pr, spec).await?;
    Ok(pr)
}

async fn add_labels_and_reviewers(api: &Api, project: &str, pr: &mut Pr, spec: &PrSpec) -> Result<(), Error> {
    let labels = missing(&spec.labels, &pr.labels);
    if !labels.is_empty() {
        let path = format!("{}/issues/{}/labels", base(project)?, pr.number);
        let v = api.call(Method::POST, &path, Some(&json!({ "labels": labels }))).await?;
        if let Some(list) = v.as_array() {
            pr.labels = list
                .iter()
                .filter_map(|l| l.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect();
        }
    }
    let mut wanted = missing(&spec.reviewers, &pr.reviewers);
    if !pr.created && wanted.iter().any(|r| !r.contains('/')) {
        // Who has reviewed leaves requested_reviewers: asking again would notify them again.
        let path = format!("{}/pulls/{}/reviews?per_page=100", base(project)?, pr.number);
        let done = reviewed(&api.call(Method::GET, &path, None).await?);
        wanted.retain(|r| r.contains('/') || !done.iter().any(|d| d.eq_ignore_ascii_case(r)));
    }
    let users: Vec<&String> = wanted.iter().copied().filter(|r| !r.contains('/')).collect();
    let teams: Vec<&str> = wanted.iter().filter_map(|t| t.split_once('/').map(|(_, slug)| slug)).collect();
    if !users.is_empty() || !teams.is_empty() {
        let path = format!("{}/pulls/{}/requested_reviewers", base(project)?, pr.number);
        let reply = api
            .send(Method::POST, &path, Some(&json!({ "reviewers": users, "team_reviewers": teams })))
            .await?;
        if reply.status.as_u16() == 422 {
            // The author, or someone without access: GitHub refuses the whole request.
            tracing::warn!(project, number = pr.number, message = reply.message(), "reviewers not requested");
        } else if !reply.status.is_success() {
            return Err(api.status_error(&Method::POST, &path, &reply));
        } else {
            pr.reviewers = reviewers(&reply.json());
        }
    }
    Ok(())
}

/// The logins of a review list's authors.
pub(crate) fn reviewed(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| str_at(r, &["user", "login"]).map(str::to_owned))
        .collect()
}

fn check_run(v: &Value) -> Option<(String, Run)> {
    let name = str_at(v, &["name"])?.to_owned();
    let run = match (str_at(v, &["status"]), str_at(v, &["conclusion"])) {
        (Some("completed"), Some("success" | "neutral" | "skipped")) => Run::Pass,
        (Some("completed"), _) => Run::Fail,
        _ => Run::Pending,
    };
    Some((name, run))
}

fn commit_status(v: &Value) -> Option<(String, Run)> {
    let name = str_at(v, &["context"])?.to_owned();
    let run = match str_at(v, &["state"]) {
        Some("success") => Run::Pass,
        Some("failure" | "error") => Run::Fail,
        _ => Run::Pending,
    };
    Some((name, run))
}

pub async fn status(api: &Api, project: &str, number: u64) -> Result<PrStatus, Error> {
    let base = base(project)?;
    let path = format!("{base}/pulls/{number}");
    let v = api.call(Method::GET, &path, None).await?;
    let pr = pr_from(&v, &path)?;
    let mut runs = Vec::new();
    if let Some(sha) = &pr.head_sha {
        let statuses =
            api.call(Method::GET, &format!("{base}/commits/{}/status?per_page=100", enc(sha)), None).await?;
        runs.extend(
            statuses
                .get("statuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(commit_status),
        );
        let checks = api
            .call(Method::GET, &format!("{base}/commits/{}/check-runs?per_page=100", enc(sha)), None)
            .await?;
        runs.extend(
            checks.get("check_runs").and_then(Value::as_array).into_iter().flatten().filter_map(check_run),
        );
    }
    Ok(PrStatus {
        state: pr.state,
        checks: Checks::from_runs(runs),
        mergeable: v.get("mergeable").and_then(Value::as_bool),
        merge_detail: str_at(&v, &["mergeable_state"]).map(str::to_owned),
        url: pr.url,
        head_sha: pr.head_sha,
    })
}

pub async fn merge(api: &Api, project: &str, pr: &Pr, head_sha: Option<&str>) -> Result<MergeOutcome, Error> {
    let path = format!("{}/pulls/{}/merge", base(project)?, pr.number);
    let mut body = json!({ "merge_method": "merge" });
    if let Some(sha) = head_sha {
        body["sha"] = json!(sha);
    }
    let reply = api.send(Method::PUT, &path, Some(&body)).await?;
    api.merged(&Method::PUT, &path, &reply, pr, Some("sha"))
}
