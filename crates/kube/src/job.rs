//! The pure builders: the `batch/v1` Job that runs one ephemeral worker of a pool, the
//! Secret that carries the pods' git token, and the names and labels that tie them to this
//! coordinator. No I/O: every field is decided here and tested as a value.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, LocalObjectReference,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    Secret, SecretEnvSource, SecretKeySelector, SecretVolumeSource, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::{PoolSettings, Settings};

/// The worker container's name (always given to exec and logs: a pod may carry sidecars).
pub const CONTAINER: &str = "worker";
/// Where the pod's git token is mounted (a directory, so the kubelet updates it in place).
pub const GIT_TOKEN_DIR: &str = "/var/run/grove/git";
/// The token file in it.
pub const GIT_TOKEN_FILE: &str = "/var/run/grove/git/token";
/// The workspace volume: the worker's GROVE_HOME (workspaces, logs).
pub const WORKSPACE_DIR: &str = "/workspace";
/// HOME, writable (agent CLIs keep their config there).
pub const HOME_DIR: &str = "/home/grove";
/// The non-root user and group of the worker image.
pub const UID: i64 = 1000;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_POOL: &str = "grove.dev/pool";
pub const LABEL_SLOT: &str = "grove.dev/slot";
/// When the token in the git Secret stops being accepted (unix seconds).
pub const ANNOTATION_EXPIRES: &str = "grove.dev/token-expires-at";

/// A pool name as a DNS label piece: lower case, `_` as `-`; a name that had to change gets a
/// short hash so that `Cloud` and `cloud` stay apart.
pub fn pool_label(pool: &str) -> String {
    let mut s: String =
        pool.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.truncate(30);
    let s = s.trim_matches('-').to_owned();
    if s == pool && !s.is_empty() {
        return s;
    }
    let h = pool.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{}{}{:06x}", s, if s.is_empty() { "" } else { "-" }, h & 0xff_ffff)
}

/// The Job of `slot` in `pool`: `<instance>-<pool>-<slot>`. The same slot always has the same
/// name, so a create that finds it there (409) means it is already launched.
pub fn job_name(instance: &str, pool: &str, slot: u32) -> String {
    format!("{instance}-{}-{slot}", pool_label(pool))
}

/// The slot of one of this pool's Job names.
pub fn slot_of(instance: &str, pool: &str, name: &str) -> Option<u32> {
    name.strip_prefix(&format!("{instance}-{}-", pool_label(pool)))?.parse().ok()
}

/// The labels every object of this coordinator's pool carries.
pub fn labels(instance: &str, pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.into(), "grove-worker".into()),
        (LABEL_INSTANCE.into(), instance.into()),
        (LABEL_MANAGED_BY.into(), "grove".into()),
        (LABEL_COMPONENT.into(), "worker".into()),
        (LABEL_POOL.into(), pool_label(pool)),
    ])
}

/// The label selector of a pool's Jobs and pods.
pub fn selector(instance: &str, pool: &str) -> String {
    format!("{LABEL_MANAGED_BY}=grove,{LABEL_INSTANCE}={instance},{LABEL_POOL}={}", pool_label(pool))
}

/// The Secret holding the pods' git token.
pub fn token_secret_name(instance: &str) -> String {
    format!("{instance}-worker-git")
}

/// What one Job is made from besides the settings.
#[derive(Debug, Clone)]
pub struct JobParams<'a> {
    pub settings: &'a Settings,
    pub pool: &'a PoolSettings,
    pub slot: u32,
    /// The NATS URL as pods reach it.
    pub nats_url: &'a str,
    /// `activeDeadlineSeconds`: from the queued tasks' deadlines, else `max_lifetime`.
    pub deadline: Duration,
}

/// How long running tasks get when the pod is stopped: most of the grace period, leaving the
/// rest to push the checkpoint and hand the task back.
pub fn drain_timeout(grace: Duration) -> Duration {
    let keep = (grace / 5).max(Duration::from_secs(5));
    grace.saturating_sub(keep)
}

/// The worker's command line after the image's entrypoint (`grove`).
pub fn worker_args(settings: &Settings, pool: &str) -> Vec<String> {
    vec![
        "worker".into(),
        "--pool".into(),
        pool.into(),
        "--capacity".into(),
        "1".into(),
        "--clone".into(),
        "--exit-when-idle".into(),
        secs(settings.idle_exit),
        "--drain-timeout".into(),
        secs(drain_timeout(settings.termination_grace)),
        "--git-token-file".into(),
        GIT_TOKEN_FILE.into(),
        "--id".into(),
        "$(GROVE_POD_NAME)".into(),
    ]
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect())
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// The Job for one worker pod of `p.pool`.
pub fn job(p: &JobParams<'_>) -> Job {
    let s = p.settings;
    let pool = p.pool;
    let name = job_name(&s.instance, &pool.name, p.slot);
    let mut labels = labels(&s.instance, &pool.name);
    labels.insert(LABEL_SLOT.into(), p.slot.to_string());
    let mut annotations = pool.annotations.clone();
    // A long task must not be moved for bin-packing: neither autoscaler evicts these pods.
    annotations.insert("cluster-autoscaler.kubernetes.io/safe-to-evict".into(), "false".into());
    annotations.insert("karpenter.sh/do-not-disrupt".into(), "true".into());

    let mut env_vars = vec![
        env("GROVE_NATS", p.nats_url),
        env("GROVE_HOME", WORKSPACE_DIR),
        env("HOME", HOME_DIR),
        env("NO_COLOR", "1"),
        EnvVar {
            name: "GROVE_POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(t) = &s.nats_token_secret {
        env_vars.push(EnvVar {
            name: "GROVE_NATS_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: t.name.clone(),
                    key: t.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let env_from: Vec<EnvFromSource> = s
        .agent_secrets
        .iter()
        .map(|name| EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: name.clone(), optional: Some(false) }),
            ..Default::default()
        })
        .collect();
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(s.image.clone()),
        image_pull_policy: Some(s.pull_policy.clone()),
        // The image's entrypoint runs `grove` under an init that reaps the agents' orphans.
        args: Some(worker_args(s, &pool.name)),
        env: Some(env_vars),
        env_from: (!env_from.is_empty()).then_some(env_from),
        resources: Some(ResourceRequirements {
            requests: quantities(&pool.resources.requests),
            limits: quantities(&pool.resources.limits),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(UID),
            run_as_group: Some(UID),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("workspace", WORKSPACE_DIR, false),
            mount("home", HOME_DIR, false),
            mount("tmp", "/tmp", false),
            mount("git-token", GIT_TOKEN_DIR, true),
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let empty = |size: Option<&str>| EmptyDirVolumeSource {
        size_limit: size.map(|s| Quantity(s.to_owned())),
        ..Default::default()
    };
    let volumes = vec![
        Volume {
            name: "workspace".into(),
            empty_dir: Some(empty(Some(&pool.workspace_size))),
            ..Default::default()
        },
        Volume { name: "home".into(), empty_dir: Some(empty(Some("1Gi"))), ..Default::default() },
        Volume { name: "tmp".into(), empty_dir: Some(empty(Some("1Gi"))), ..Default::default() },
        Volume {
            name: "git-token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(token_secret_name(&s.instance)),
                // Readable by the worker's group (fsGroup) only.
                default_mode: Some(0o440),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let tolerations: Vec<Toleration> = pool
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone(),
            operator: t.operator.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
            toleration_seconds: t.toleration_seconds,
        })
        .collect();
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: s.service_account.clone(),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(s.termination_grace.as_secs() as i64),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(UID),
            run_as_group: Some(UID),
            fs_group: Some(UID),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: Some(volumes),
        node_selector: (!pool.node_selector.is_empty()).then(|| pool.node_selector.clone()),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        priority_class_name: pool.priority_class.clone(),
        runtime_class_name: pool.runtime_class.clone(),
        image_pull_secrets: (!s.pull_secrets.is_empty())
            .then(|| s.pull_secrets.iter().map(|n| LocalObjectReference { name: n.clone() }).collect()),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: None,
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // Retries are grove's (the task goes back to NATS), not the Job's.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(p.deadline.as_secs().max(60) as i64),
            ttl_seconds_after_finished: Some(s.ttl_after_finished.as_secs().min(i32::MAX as u64) as i32),
            pod_replacement_policy: Some("Failed".into()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The Secret with the pods' git token; written again (in place) before the token expires.
pub fn token_secret(instance: &str, token: &str, expires_at: i64) -> Secret {
    let mut labels = BTreeMap::from([
        (LABEL_NAME.to_owned(), "grove-worker".to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), "grove".to_owned()),
    ]);
    labels.insert(LABEL_COMPONENT.into(), "worker-credentials".into());
    Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(instance)),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(ANNOTATION_EXPIRES.to_owned(), expires_at.to_string())])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([("token".to_owned(), ByteString(token.as_bytes().to_vec()))])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layers, Overrides};

    fn settings(extra: &str) -> Settings {
        let text = format!(
            "[kube]\nimage = \"reg.example/grove-worker:1\"\ngit_url = \"http://grove:7070/git\"\n{extra}"
        );
        Layers { file: Layers::parse(&text, "t").expect("parse"), overrides: Overrides::default() }
            .validate()
            .expect("valid")
    }

    fn built(extra: &str, pool: &str) -> serde_json::Value {
        let s = settings(extra);
        let p = s.pool(pool).expect("pool").clone();
        let params = JobParams {
            settings: &s,
            pool: &p,
            slot: 3,
            nats_url: "nats://nats:4222",
            deadline: Duration::from_secs(7200),
        };
        serde_json::to_value(job(&params)).expect("json")
    }

    fn at<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
        v.pointer(path).unwrap_or_else(|| panic!("no {path} in {v:#}"))
    }

    /// Every field the launcher promises, as the API server will read it.
    #[test]
    fn the_job_has_every_field() {
        let j = built("", "cloud");
        let pod = "/spec/template/spec";
        let c = "/spec/template/spec/containers/0";
        let cases: &[(&str, serde_json::Value)] = &[
            ("/metadata/name", "grove-cloud-3".into()),
            ("/metadata/labels/app.kubernetes.io~1managed-by", "grove".into()),
            ("/metadata/labels/app.kubernetes.io~1instance", "grove".into()),
            ("/metadata/labels/grove.dev~1pool", "cloud".into()),
            ("/metadata/labels/grove.dev~1slot", "3".into()),
            ("/spec/backoffLimit", 0.into()),
            ("/spec/activeDeadlineSeconds", 7200.into()),
            ("/spec/ttlSecondsAfterFinished", 3600.into()),
            ("/spec/podReplacementPolicy", "Failed".into()),
            ("/spec/template/metadata/labels/grove.dev~1pool", "cloud".into()),
            (
                "/spec/template/metadata/annotations/cluster-autoscaler.kubernetes.io~1safe-to-evict",
                "false".into(),
            ),
            ("/spec/template/metadata/annotations/karpenter.sh~1do-not-disrupt", "true".into()),
            (&format!("{pod}/restartPolicy"), "Never".into()),
            (&format!("{pod}/automountServiceAccountToken"), false.into()),
            (&format!("{pod}/enableServiceLinks"), false.into()),
            (&format!("{pod}/terminationGracePeriodSeconds"), 300.into()),
            (&format!("{pod}/securityContext/runAsNonRoot"), true.into()),
            (&format!("{pod}/securityContext/runAsUser"), 1000.into()),
            (&format!("{pod}/securityContext/fsGroup"), 1000.into()),
            (&format!("{pod}/securityContext/seccompProfile/type"), "RuntimeDefault".into()),
            (&format!("{c}/name"), "worker".into()),
            (&format!("{c}/image"), "reg.example/grove-worker:1".into()),
            (&format!("{c}/imagePullPolicy"), "IfNotPresent".into()),
            (&format!("{c}/securityContext/allowPrivilegeEscalation"), false.into()),
            (&format!("{c}/securityContext/readOnlyRootFilesystem"), true.into()),
            (&format!("{c}/securityContext/runAsNonRoot"), true.into()),
            (&format!("{c}/securityContext/capabilities/drop/0"), "ALL".into()),
            (&format!("{c}/securityContext/seccompProfile/type"), "RuntimeDefault".into()),
            (&format!("{c}/resources/requests/cpu"), "1".into()),
            (&format!("{c}/resources/requests/memory"), "2Gi".into()),
            (&format!("{c}/resources/limits/memory"), "4Gi".into()),
            (&format!("{c}/volumeMounts/0/mountPath"), "/workspace".into()),
            (&format!("{c}/volumeMounts/3/mountPath"), "/var/run/grove/git".into()),
            (&format!("{c}/volumeMounts/3/readOnly"), true.into()),
            (&format!("{pod}/volumes/0/emptyDir/sizeLimit"), "20Gi".into()),
            (&format!("{pod}/volumes/3/secret/secretName"), "grove-worker-git".into()),
            (&format!("{pod}/volumes/3/secret/defaultMode"), 0o440.into()),
        ];
        for (path, want) in cases {
            assert_eq!(at(&j, path), want, "{path}");
        }
        // No command: the image's entrypoint (an init, then grove) runs these arguments.
        assert!(j.pointer(&format!("{c}/command")).is_none());
        let args: Vec<&str> = at(&j, &format!("{c}/args"))
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(
            args,
            [
                "worker",
                "--pool",
                "cloud",
                "--capacity",
                "1",
                "--clone",
                "--exit-when-idle",
                "60s",
                "--drain-timeout",
                "240s",
                "--git-token-file",
                "/var/run/grove/git/token",
                "--id",
                "$(GROVE_POD_NAME)"
            ]
        );
        let env = at(&j, &format!("{c}/env"));
        let var = |n: &str| env.as_array().and_then(|e| e.iter().find(|v| v["name"] == n)).cloned();
        assert_eq!(var("GROVE_NATS").expect("nats")["value"], "nats://nats:4222");
        assert_eq!(var("GROVE_HOME").expect("home")["value"], "/workspace");
        assert_eq!(
            var("GROVE_POD_NAME").expect("pod")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert!(var("GROVE_NATS_TOKEN").is_none(), "no NATS token unless configured");
        // What is not configured is left out rather than empty.
        for absent in
            ["nodeSelector", "tolerations", "priorityClassName", "runtimeClassName", "imagePullSecrets"]
        {
            assert!(j.pointer(&format!("{pod}/{absent}")).is_none(), "{absent}");
        }
        assert!(j.pointer(&format!("{c}/envFrom")).is_none());
    }

    /// What a pool's config adds, field by field.
    #[test]
    fn pool_settings_reach_the_pod() {
        let j = built(
            "agent_secrets = [\"agent-keys\"]\nnats_token_secret = { name = \"nats\", key = \"token\" }\n\
             image_pull_secrets = [\"reg\"]\nservice_account = \"grove-worker\"\nidle_exit = \"2m\"\n\
             termination_grace = \"10m\"\nttl_after_finished = \"5m\"\n\
             [kube.pools.big]\nmax_pods = 2\nworkspace_size = \"100Gi\"\n\
             resources = { requests = { cpu = \"8\", memory = \"32Gi\" }, limits = { memory = \"64Gi\", \"nvidia.com/gpu\" = \"1\" } }\n\
             node_selector = { \"grove.dev/agents\" = \"big\" }\n\
             tolerations = [{ key = \"agents\", operator = \"Equal\", value = \"big\", effect = \"NoSchedule\" }]\n\
             priority_class = \"grove-agents\"\nruntime_class = \"gvisor\"\nannotations = { \"example.com/team\" = \"infra\" }\n",
            "big",
        );
        let pod = "/spec/template/spec";
        let c = "/spec/template/spec/containers/0";
        let cases: &[(&str, serde_json::Value)] = &[
            ("/metadata/name", "grove-big-3".into()),
            ("/spec/ttlSecondsAfterFinished", 300.into()),
            (&format!("{pod}/terminationGracePeriodSeconds"), 600.into()),
            (&format!("{pod}/serviceAccountName"), "grove-worker".into()),
            (&format!("{pod}/automountServiceAccountToken"), false.into()),
            (&format!("{pod}/nodeSelector/grove.dev~1agents"), "big".into()),
            (&format!("{pod}/tolerations/0/key"), "agents".into()),
            (&format!("{pod}/tolerations/0/effect"), "NoSchedule".into()),
            (&format!("{pod}/priorityClassName"), "grove-agents".into()),
            (&format!("{pod}/runtimeClassName"), "gvisor".into()),
            (&format!("{pod}/imagePullSecrets/0/name"), "reg".into()),
            (&format!("{pod}/volumes/0/emptyDir/sizeLimit"), "100Gi".into()),
            ("/spec/template/metadata/annotations/example.com~1team", "infra".into()),
            (&format!("{c}/resources/requests/cpu"), "8".into()),
            (&format!("{c}/resources/limits/nvidia.com~1gpu"), "1".into()),
            (&format!("{c}/envFrom/0/secretRef/name"), "agent-keys".into()),
            (&format!("{c}/args/7"), "120s".into()),
            (&format!("{c}/args/9"), "480s".into()),
        ];
        for (path, want) in cases {
            assert_eq!(at(&j, path), want, "{path}");
        }
        let env = at(&j, &format!("{c}/env")).as_array().expect("env").clone();
        let token = env.iter().find(|v| v["name"] == "GROVE_NATS_TOKEN").expect("NATS token");
        assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], "nats");
        assert_eq!(token["valueFrom"]["secretKeyRef"]["key"], "token");
    }

    #[test]
    fn names_are_deterministic_dns_labels() {
        assert_eq!(job_name("grove", "cloud", 0), "grove-cloud-0");
        assert_eq!(slot_of("grove", "cloud", "grove-cloud-12"), Some(12));
        assert_eq!(slot_of("grove", "cloud", "grove-cloudy-1"), None);
        assert_eq!(slot_of("other", "cloud", "grove-cloud-1"), None);
        let odd = pool_label("Big_GPU");
        assert!(odd.starts_with("big-gpu-") && odd.len() <= 40, "{odd}");
        assert_ne!(pool_label("Cloud"), pool_label("cloud"));
        assert_eq!(pool_label("cloud"), "cloud");
        let long = job_name("grove", &"x".repeat(80), 999);
        assert!(long.len() <= 63, "{long}");
        assert_eq!(
            selector("grove", "cloud"),
            "app.kubernetes.io/managed-by=grove,app.kubernetes.io/instance=grove,grove.dev/pool=cloud"
        );
    }

    #[test]
    fn the_drain_leaves_time_to_push() {
        assert_eq!(drain_timeout(Duration::from_secs(300)), Duration::from_secs(240));
        assert_eq!(drain_timeout(Duration::from_secs(10)), Duration::from_secs(5));
    }

    #[test]
    fn the_token_secret() {
        let s = serde_json::to_value(token_secret("grove", "t0k", 1234)).expect("json");
        assert_eq!(s["metadata"]["name"], "grove-worker-git");
        assert_eq!(s["data"]["token"], "dDBr", "base64 of the token");
        assert_eq!(s["metadata"]["annotations"]["grove.dev/token-expires-at"], "1234");
        assert_eq!(s["metadata"]["labels"]["app.kubernetes.io/managed-by"], "grove");
    }
}
