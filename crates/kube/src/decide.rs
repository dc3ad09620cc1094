//! What the launcher sees and what it does about it, as pure functions: [`observe`] reads a
//! Job and its pods into an [`Observed`]; [`decide`] turns a pool's demand and its Jobs into
//! a [`Decision`] (create, delete, wait); [`Backoff`] keeps a failing pool from making the
//! same failure again and again.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

/// Where a worker pod stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Made, not yet running its worker (being scheduled, pulling the image, suspended).
    Pending,
    /// The worker runs.
    Running,
    /// The worker exited by itself (idle).
    Succeeded,
    /// The pod failed: its reason says why.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
        }
    }
    pub fn finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// One of the pool's Jobs as the launcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub name: String,
    /// The API server's id of this Job: the same name may come back as another Job.
    pub uid: String,
    pub slot: Option<u32>,
    pub phase: Phase,
    /// Pending and unable to start by itself (image, scheduling, a missing Secret): the
    /// launcher makes no more pods while one is stuck.
    pub stuck: bool,
    /// Why it is stuck or failed: `ImagePullBackOff`, `Unschedulable`, `OOMKilled`,
    /// `Evicted`, `DeadlineExceeded`, `Error (exit 2)`...
    pub reason: Option<String>,
    pub message: Option<String>,
    /// The pod the Job made (the worker's id in the registry), when there is one.
    pub pod: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Waiting reasons of a container that will not go away by themselves.
const STUCK_WAITING: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

fn condition(job: &Job, kind: &str) -> Option<(Option<String>, Option<String>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// Why a pod failed, from its own status: evicted, OOM-killed, or how its worker exited.
fn pod_failure(pod: &Pod) -> Option<(String, Option<String>)> {
    let st = pod.status.as_ref()?;
    if let Some(r) = &st.reason {
        return Some((r.clone(), st.message.clone()));
    }
    for cs in st.container_statuses.iter().flatten() {
        if let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref())
            && t.exit_code != 0
        {
            let reason = match t.reason.as_deref() {
                Some("OOMKilled") => "OOMKilled".to_owned(),
                Some(r) => format!("{r} (exit {})", t.exit_code),
                None => format!("exit {}", t.exit_code),
            };
            return Some((reason, t.message.clone()));
        }
    }
    None
}

/// Why a pending pod cannot start, when it cannot by itself.
fn pod_stuck(pod: &Pod) -> Option<(String, Option<String>)> {
    let st = pod.status.as_ref()?;
    for cs in st.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(r) = &w.reason
            && STUCK_WAITING.contains(&r.as_str())
        {
            return Some((r.clone(), w.message.clone()));
        }
    }
    st.conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
        })
        .map(|c| ("Unschedulable".to_owned(), c.message.clone()))
}

fn unix(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_second()
}

/// Read `job` and the pods it made (`pods` may hold others: they are matched by the Job's
/// `job-name` label).
pub fn observe(job: &Job, pods: &[Pod], slot: Option<u32>) -> Observed {
    let name = job.metadata.name.clone().unwrap_or_default();
    let mine: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            let l = p.metadata.labels.as_ref();
            l.and_then(|l| l.get("batch.kubernetes.io/job-name").or_else(|| l.get("job-name")))
                .is_some_and(|n| *n == name)
        })
        .collect();
    // The newest pod speaks for the Job (with backoffLimit 0 there is one).
    let pod = mine.iter().max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(unix)).copied();
    let mut o = Observed {
        name: name.clone(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        slot,
        phase: Phase::Pending,
        stuck: false,
        reason: None,
        message: None,
        pod: pod.and_then(|p| p.metadata.name.clone()),
        created_at: job.metadata.creation_timestamp.as_ref().map_or(0, unix),
    };
    if condition(job, "Complete").is_some() || condition(job, "SuccessCriteriaMet").is_some() {
        o.phase = Phase::Succeeded;
        return o;
    }
    if let Some((reason, message)) = condition(job, "Failed").or_else(|| condition(job, "FailureTarget")) {
        o.phase = Phase::Failed;
        // The pod knows better than `BackoffLimitExceeded`: OOMKilled, Evicted, an exit code.
        match pod.and_then(pod_failure) {
            Some((r, m)) if reason.as_deref() != Some("DeadlineExceeded") => {
                o.reason = Some(r);
                o.message = m.or(message);
            }
            _ => {
                o.reason = reason;
                o.message = message;
            }
        }
        return o;
    }
    if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        // Kueue and the like hold Jobs suspended until there is quota: waiting, not stuck.
        o.reason = Some("Suspended".into());
        return o;
    }
    let Some(pod) = pod else {
        return o;
    };
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => o.phase = Phase::Running,
        Some("Succeeded") => o.phase = Phase::Succeeded,
        Some("Failed") => {
            o.phase = Phase::Failed;
            if let Some((r, m)) = pod_failure(pod) {
                o.reason = Some(r);
                o.message = m;
            }
        }
        _ => {
            if let Some((r, m)) = pod_stuck(pod) {
                o.stuck = true;
                o.reason = Some(r);
                o.message = m;
            }
        }
    }
    o
}

/// What a pool needs now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// Tasks dispatched to the pool and not taken yet.
    pub queued: u32,
    /// Tasks a worker of the pool is on (or was on, until the bus redelivers them).
    pub running: u32,
    /// Task slots of the pool's workers that this launcher did not make (started by hand):
    /// they serve the pool too.
    pub others: u32,
}

impl Demand {
    /// Pods wanted, at most `max`: one per task in flight beyond what other workers take.
    pub fn wanted(&self, max: u32) -> u32 {
        (self.queued + self.running).saturating_sub(self.others).min(max)
    }
}

/// Why a Job is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delete {
    /// It finished (its failure, if any, was recorded first).
    Finished,
    /// It never started and nothing needs it any more.
    NotNeeded,
}

/// What to do about one pool now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Slots to make Jobs for.
    pub create: Vec<u32>,
    pub delete: Vec<(String, Delete)>,
    /// Pods the demand asks for (at most the pool's maximum).
    pub wanted: u32,
    /// Jobs that have not finished.
    pub live: u32,
    /// Why no Job is made although more are wanted.
    pub held: Option<String>,
}

/// The pool's decision. `backoff_until` is set while the pool backs off after a failure.
pub fn decide(demand: Demand, jobs: &[Observed], max_pods: u32, backing_off: Option<Duration>) -> Decision {
    let mut d = Decision { wanted: demand.wanted(max_pods), ..Default::default() };
    for j in jobs.iter().filter(|j| j.phase.finished()) {
        d.delete.push((j.name.clone(), Delete::Finished));
    }
    let live: Vec<&Observed> = jobs.iter().filter(|j| !j.phase.finished()).collect();
    d.live = live.len() as u32;
    if d.live > d.wanted {
        // Fewer wanted than made: the ones that never started go (stuck first, then the
        // newest); running workers leave by themselves when idle, never killed mid-task.
        let mut idle: Vec<&&Observed> = live.iter().filter(|j| j.phase == Phase::Pending).collect();
        idle.sort_by_key(|j| (!j.stuck, std::cmp::Reverse(j.created_at)));
        for j in idle.into_iter().take((d.live - d.wanted) as usize) {
            d.delete.push((j.name.clone(), Delete::NotNeeded));
        }
        return d;
    }
    if d.live == d.wanted {
        return d;
    }
    if let Some(stuck) = live.iter().find(|j| j.stuck) {
        d.held = Some(format!(
            "{} cannot start: {}",
            stuck.name,
            stuck.reason.as_deref().unwrap_or("unknown reason")
        ));
        return d;
    }
    if let Some(left) = backing_off {
        d.held = Some(format!("backing off after a failed pod ({}s left)", left.as_secs().max(1)));
        return d;
    }
    let taken: std::collections::BTreeSet<u32> = jobs.iter().filter_map(|j| j.slot).collect();
    d.create = (0..).filter(|s| !taken.contains(s)).take((d.wanted - d.live) as usize).collect();
    d
}

/// A pool's wait after failures: `base`, doubling per failure in a row, at most `max`; a pod
/// that runs clears it.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, failures: 0, until: None }
    }
    /// A pod failed at `now`.
    pub fn fail(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = self.base.saturating_mul(1u32 << (self.failures - 1).min(16)).min(self.max);
        self.until = Some(now + wait);
        wait
    }
    /// A pod ran: the pool is healthy.
    pub fn clear(&mut self) {
        self.failures = 0;
        self.until = None;
    }
    /// How much of the wait is left at `now`.
    pub fn left(&self, now: Instant) -> Option<Duration> {
        self.until.filter(|u| *u > now).map(|u| u - now)
    }
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, slot: u32, phase: Phase) -> Observed {
        Observed {
            name: name.into(),
            uid: format!("uid-{name}"),
            slot: Some(slot),
            phase,
            stuck: false,
            reason: None,
            message: None,
            pod: None,
            created_at: i64::from(slot),
        }
    }

    fn stuck(name: &str, slot: u32, reason: &str) -> Observed {
        Observed { stuck: true, reason: Some(reason.into()), ..job(name, slot, Phase::Pending) }
    }

    fn demand(queued: u32, running: u32, others: u32) -> Demand {
        Demand { queued, running, others }
    }

    /// The launcher's decision, case by case: queued, live, pending, failing, backing off.
    #[test]
    fn decisions() {
        use Delete::*;
        use Phase::*;
        struct Case {
            what: &'static str,
            demand: Demand,
            jobs: Vec<Observed>,
            max: u32,
            backoff: Option<Duration>,
            create: Vec<u32>,
            delete: Vec<(&'static str, Delete)>,
            held: bool,
        }
        let cases = vec![
            Case {
                what: "nothing queued, nothing made: zero pods",
                demand: demand(0, 0, 0),
                jobs: vec![],
                max: 5,
                backoff: None,
                create: vec![],
                delete: vec![],
                held: false,
            },
            Case {
                what: "three queued: three Jobs in the lowest slots",
                demand: demand(3, 0, 0),
                jobs: vec![],
                max: 5,
                backoff: None,
                create: vec![0, 1, 2],
                delete: vec![],
                held: false,
            },
            Case {
                what: "more queued than the maximum: the maximum",
                demand: demand(9, 0, 0),
                jobs: vec![job("p-0", 0, Running)],
                max: 3,
                backoff: None,
                create: vec![1, 2],
                delete: vec![],
                held: false,
            },
            Case {
                what: "one running and one pending for two tasks: wait",
                demand: demand(1, 1, 0),
                jobs: vec![job("p-0", 0, Running), job("p-1", 1, Pending)],
                max: 5,
                backoff: None,
                create: vec![],
                delete: vec![],
                held: false,
            },
            Case {
                what: "finished Jobs go; their slots are not reused in the same round",
                demand: demand(2, 0, 0),
                jobs: vec![job("p-0", 0, Succeeded), job("p-1", 1, Failed)],
                max: 5,
                backoff: None,
                create: vec![2, 3],
                delete: vec![("p-0", Finished), ("p-1", Finished)],
                held: false,
            },
            Case {
                what: "demand gone: a pending Job goes, a running one stays to exit when idle",
                demand: demand(0, 0, 0),
                jobs: vec![job("p-0", 0, Running), job("p-1", 1, Pending)],
                max: 5,
                backoff: None,
                create: vec![],
                delete: vec![("p-1", NotNeeded)],
                held: false,
            },
            Case {
                what: "a stuck pod holds the pool and is reported",
                demand: demand(3, 0, 0),
                jobs: vec![stuck("p-0", 0, "ImagePullBackOff")],
                max: 5,
                backoff: None,
                create: vec![],
                delete: vec![],
                held: true,
            },
            Case {
                what: "a stuck pod nothing needs goes first",
                demand: demand(1, 0, 0),
                jobs: vec![job("p-1", 1, Pending), stuck("p-0", 0, "Unschedulable")],
                max: 5,
                backoff: None,
                create: vec![],
                delete: vec![("p-0", NotNeeded)],
                held: false,
            },
            Case {
                what: "backing off: no new Job",
                demand: demand(2, 0, 0),
                jobs: vec![job("p-0", 0, Failed)],
                max: 5,
                backoff: Some(Duration::from_secs(20)),
                create: vec![],
                delete: vec![("p-0", Finished)],
                held: true,
            },
            Case {
                what: "workers started by hand take their share",
                demand: demand(4, 1, 3),
                jobs: vec![],
                max: 5,
                backoff: None,
                create: vec![0, 1],
                delete: vec![],
                held: false,
            },
            Case {
                what: "a gap in the slots is filled first",
                demand: demand(2, 1, 0),
                jobs: vec![job("p-1", 1, Running)],
                max: 5,
                backoff: None,
                create: vec![0, 2],
                delete: vec![],
                held: false,
            },
        ];
        for c in cases {
            let d = decide(c.demand, &c.jobs, c.max, c.backoff);
            assert_eq!(d.create, c.create, "{}", c.what);
            let deleted: Vec<(&str, Delete)> = d.delete.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            assert_eq!(deleted, c.delete, "{}", c.what);
            assert_eq!(d.held.is_some(), c.held, "{}: {:?}", c.what, d.held);
        }
    }

    #[test]
    fn backoff_doubles_and_clears() {
        let t = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(35));
        assert_eq!(b.left(t), None);
        assert_eq!(b.fail(t), Duration::from_secs(10));
        assert_eq!(b.fail(t), Duration::from_secs(20));
        assert_eq!(b.fail(t), Duration::from_secs(35), "capped");
        assert_eq!(b.left(t), Some(Duration::from_secs(35)));
        assert_eq!(b.left(t + Duration::from_secs(40)), None);
        b.clear();
        assert_eq!((b.left(t), b.failures()), (None, 0));
    }

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("a valid object")
    }

    fn k8s_job(status: serde_json::Value) -> Job {
        parse(serde_json::json!({
            "metadata": {"name": "grove-cloud-0", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"template": {"spec": {"containers": []}}},
            "status": status,
        }))
    }

    fn pod(status: serde_json::Value) -> Pod {
        parse(serde_json::json!({
            "metadata": {"name": "grove-cloud-0-abcde", "labels": {"batch.kubernetes.io/job-name": "grove-cloud-0"},
                         "creationTimestamp": "2026-01-01T00:00:01Z"},
            "status": status,
        }))
    }

    /// Each way a pod can fail or stick is read into a phase and a reason.
    #[test]
    fn observing_jobs_and_pods() {
        let failed = serde_json::json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]});
        type Case<'a> = (&'a str, serde_json::Value, Option<serde_json::Value>, Phase, bool, Option<&'a str>);
        let cases: Vec<Case> = vec![
            ("no pod yet", serde_json::json!({}), None, Phase::Pending, false, None),
            (
                "complete",
                serde_json::json!({"conditions": [{"type": "Complete", "status": "True"}]}),
                None,
                Phase::Succeeded,
                false,
                None,
            ),
            (
                "OOM-killed",
                failed.clone(),
                Some(
                    serde_json::json!({"phase": "Failed", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
                ),
                Phase::Failed,
                false,
                Some("OOMKilled"),
            ),
            (
                "evicted",
                failed.clone(),
                Some(
                    serde_json::json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: ephemeral-storage."}),
                ),
                Phase::Failed,
                false,
                Some("Evicted"),
            ),
            (
                "the worker exited with an error",
                failed,
                Some(
                    serde_json::json!({"phase": "Failed", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}),
                ),
                Phase::Failed,
                false,
                Some("Error (exit 2)"),
            ),
            (
                "deadline",
                serde_json::json!({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}),
                Some(
                    serde_json::json!({"phase": "Failed", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 143, "reason": "Error"}}}]}),
                ),
                Phase::Failed,
                false,
                Some("DeadlineExceeded"),
            ),
            (
                "image pull",
                serde_json::json!({"active": 1}),
                Some(
                    serde_json::json!({"phase": "Pending", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}),
                ),
                Phase::Pending,
                true,
                Some("ImagePullBackOff"),
            ),
            (
                "unschedulable",
                serde_json::json!({"active": 1}),
                Some(
                    serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient memory."}]}),
                ),
                Phase::Pending,
                true,
                Some("Unschedulable"),
            ),
            (
                "pulling, not stuck yet",
                serde_json::json!({"active": 1}),
                Some(
                    serde_json::json!({"phase": "Pending", "containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
                ),
                Phase::Pending,
                false,
                None,
            ),
            (
                "running",
                serde_json::json!({"active": 1}),
                Some(serde_json::json!({"phase": "Running"})),
                Phase::Running,
                false,
                None,
            ),
        ];
        for (what, status, pod_status, phase, is_stuck, reason) in cases {
            let pods: Vec<Pod> = pod_status.map(pod).into_iter().collect();
            let o = observe(&k8s_job(status), &pods, Some(0));
            assert_eq!((o.phase, o.stuck, o.reason.as_deref()), (phase, is_stuck, reason), "{what}: {o:?}");
            assert_eq!(o.uid, "u1");
            assert_eq!(o.created_at, 1767225600);
            if !pods.is_empty() {
                assert_eq!(o.pod.as_deref(), Some("grove-cloud-0-abcde"), "{what}");
            }
        }
        let mut suspended = k8s_job(serde_json::json!({}));
        suspended.spec.as_mut().expect("spec").suspend = Some(true);
        let o = observe(&suspended, &[], None);
        assert_eq!((o.phase, o.stuck, o.reason.as_deref()), (Phase::Pending, false, Some("Suspended")));
    }
}
