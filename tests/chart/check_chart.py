"""The Helm chart charts/grove, checked offline (run by the e2e test `chart::`, which passes
the grove binary of this checkout):

- rendered with helm-python-sdk (Helm's Go SDK) and linted, strict, for a matrix of values;
- every object validated with kubernetes-validate, strict (unknown fields refused), for
  Kubernetes 1.33 and 1.37; the KEDA ScaledJob against KEDA's CRD schema
  (@kubernetes-models/keda under Node, GROVE_TEST_NODE_MODULES), its jobTargetRef as a
  batch/v1 JobSpec and its trigger by the fields KEDA's nats-jetstream scaler reads;
- the coordinator's and the worker's command lines as rendered parse with the binary
  (`--dry-run`), with the rendered grove.toml; and the worker pod the builtin launcher makes
  from that grove.toml is the KEDA ScaledJob's pod, field for field;
- values that cannot work together are refused.

Usage: python check_chart.py CHART_DIR GROVE_BINARY
"""

import copy
import json
import os
import subprocess
import sys
import tempfile

import helm_python
import kubernetes_validate
import yaml

KUBE_VERSIONS = ["1.33.0", "1.37.0"]
NAMESPACE = "agents"
RELEASE = "grove"

MATRIX = {
    "default": {},
    "external-nats": {
        "nats": {"enabled": False},
        "externalNats": {"url": "nats://nats.shared.svc:4222", "tokenSecret": {"name": "nats-auth", "key": "token"}},
    },
    "keda": {"cloud": {"launcher": "keda", "maxPods": 30}},
    "tls": {"tls": {"enabled": True, "secretName": "grove-tls"}, "token": {"existingSecret": "my-grove-token"}},
    "custom-resources": {
        "cloud": {
            "pool": "big",
            "maxPods": 4,
            "resources": {
                "requests": {"cpu": 4, "memory": "16Gi", "ephemeral-storage": "10Gi"},
                "limits": {"memory": "32Gi", "nvidia.com/gpu": 1},
            },
            "workspaceSize": "200Gi",
            "nodeSelector": {"grove.dev/agents": "true"},
            "tolerations": [
                {"key": "agents", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
            ],
            "priorityClassName": "grove-agents",
            "runtimeClassName": "gvisor",
            "podAnnotations": {"example.com/team": "platform"},
            "agentSecrets": ["grove-agent-keys"],
            "terminationGracePeriodSeconds": 600,
        },
        "coordinator": {"resources": {"requests": {"cpu": "2", "memory": "4Gi"}}, "gcEvery": "6h"},
        "imagePullSecrets": ["registry"],
    },
    "keda-custom-resources": None,
    "launcher-none": {"cloud": {"launcher": "none"}, "networkPolicy": {"enabled": False}},
    "keda-external-nats": {
        "cloud": {"launcher": "keda", "keda": {"monitoringEndpoint": "nats-headless.shared.svc:8222"}},
        "nats": {"enabled": False},
        "externalNats": {"url": "tls://nats.shared.svc:4222"},
    },
}

# Values the chart must refuse, and a word of why it says so.
REFUSED = {
    "two NATS": ({"externalNats": {"url": "nats://elsewhere:4222"}}, "choose one"),
    "no NATS": ({"nats": {"enabled": False}}, "no NATS"),
    "no JetStream": ({"nats": {"config": {"jetstream": {"enabled": False}}}}, "JetStream"),
    "TLS without a certificate": ({"tls": {"enabled": True}}, "tls.secretName"),
    "KEDA without a monitoring endpoint": (
        {"cloud": {"launcher": "keda"}, "nats": {"enabled": False}, "externalNats": {"url": "nats://n:4222"}},
        "monitoringEndpoint",
    ),
    "an unknown launcher": ({"cloud": {"launcher": "both"}}, "launcher"),
    "an unknown value": ({"cloud": {"maxPod": 3}}, "maxPod"),
    "a short grace period": ({"cloud": {"terminationGracePeriodSeconds": 5}}, "terminationGracePeriodSeconds"),
    "builtin without RBAC or account": ({"rbac": {"create": False}}, "serviceAccount.name"),
}

failures = []


def fail(case, message):
    failures.append(f"[{case}] {message}")


def merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def render(chart, values):
    with helm_python.Chart.load(chart) as c:
        return c.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(rendered):
    out = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")) or "/tests/" in path:
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


def validate(case, path, obj):
    name = f"{path}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if obj.get("apiVersion") == "keda.sh/v1alpha1":
        check_scaled_job(case, name, obj)
        return
    for v in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(case, f"{name} on Kubernetes {v}: {e.message} at {list(e.path)}")
        except Exception as e:  # noqa: BLE001 (a schema the validator lacks is a failure too)
            fail(case, f"{name} on Kubernetes {v}: {type(e).__name__}: {e}")


def keda_schema(case, name, obj):
    """The ScaledJob against KEDA's CRD schema (@kubernetes-models/keda, under Node)."""
    modules = os.environ.get("GROVE_TEST_NODE_MODULES")
    if not modules or not os.path.isdir(os.path.join(modules, "@kubernetes-models", "keda")):
        fail(case, f"{name}: KEDA's CRD schema is not installed (@kubernetes-models/keda in "
                   f"{modules}): run scripts/test, which installs it")
        return
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "validate_keda.mjs")
    r = subprocess.run(["node", script, modules], input=json.dumps([obj]), capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        fail(case, f"{name} against KEDA's CRD schema: {(r.stdout + r.stderr).strip()}")
    else:
        checked_against_crd.append(r.stdout.strip())


checked_against_crd = []


def check_scaled_job(case, name, obj):
    """Against KEDA's CRD schema; and, stricter than it: its jobTargetRef as a batch/v1 JobSpec
    (validated as one), its top-level fields and trigger the ones KEDA 2.20 reads."""
    keda_schema(case, name, obj)
    spec = obj["spec"]
    known = {
        "jobTargetRef", "pollingInterval", "minReplicaCount", "maxReplicaCount", "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit", "rollout", "scalingStrategy", "triggers", "envSourceContainerName",
    }
    if set(spec) - known:
        fail(case, f"{name}: fields KEDA does not know: {sorted(set(spec) - known)}")
    if spec.get("rollout", {}).get("strategy") not in ("gradual", None):
        fail(case, f"{name}: rollout.strategy must be gradual (the default kills running Jobs)")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "keda-target"}, "spec": spec["jobTargetRef"]}
    validate(case, f"{name} jobTargetRef", job)
    (trigger,) = spec["triggers"]
    md = trigger["metadata"]
    if trigger["type"] != "nats-jetstream":
        fail(case, f"{name}: trigger {trigger['type']}")
    allowed = {"natsServerMonitoringEndpoint", "account", "accountID", "stream", "consumer", "lagThreshold",
               "activationLagThreshold", "useHttps"}
    if set(md) - allowed or not all(isinstance(v, str) for v in md.values()):
        fail(case, f"{name}: trigger metadata must be strings of {sorted(allowed)}: {md}")
    for k in ("natsServerMonitoringEndpoint", "stream", "consumer"):
        if not md.get(k):
            fail(case, f"{name}: trigger needs {k}")
    if "://" in md.get("natsServerMonitoringEndpoint", ""):
        fail(case, f"{name}: natsServerMonitoringEndpoint is host:port, without a scheme")
    if md.get("stream") != "GROVE_TASKS":
        fail(case, f"{name}: the tasks stream is GROVE_TASKS")


def by_kind(objs, kind):
    return [o for _, o in objs if o.get("kind") == kind]


def grove(binary, args, env, cwd):
    full_env = {"PATH": os.environ.get("PATH", ""), "HOME": cwd, "LC_ALL": "C"}
    full_env.update(env)
    return subprocess.run([binary, *args], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=60)


def container_env(container, pod_name):
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod_name
        else:
            env[e["name"]] = "from-a-secret"
    return env


def remap(args, mounts):
    out = []
    for a in args:
        for at, to in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if a == at or a.startswith(at + "/"):
                a = to + a[len(at):]
                break
        out.append(a)
    return out


def expand(args, env):
    out = []
    for a in args:
        for k, v in env.items():
            a = a.replace(f"$({k})", v)
        out.append(a)
    return out


def check_worker(case, binary, pod_spec, tmp):
    """The worker container's command line parses with this binary, and says what it should."""
    (c,) = pod_spec["containers"]
    env = container_env(c, "grove-cloud-0-x7k2p")
    mounts = {m["mountPath"]: os.path.join(tmp, m["name"]) for m in c["volumeMounts"]}
    args = remap(expand(c["args"], env), mounts)
    env = {k: remap([v], mounts)[0] for k, v in env.items()}
    r = grove(binary, [*args, "--dry-run", "--json"], env, tmp)
    if r.returncode != 0:
        fail(case, f"the worker's command line {args} does not parse: {r.stderr.strip()}")
        return None
    got = json.loads(r.stdout)
    want = {"capacity": 1, "workspace": "clone", "id": "grove-cloud-0-x7k2p"}
    for k, v in want.items():
        if got.get(k) != v:
            fail(case, f"the worker runs with {k} {got.get(k)!r}, not {v!r}: {got}")
    if got.get("nats") != env.get("GROVE_NATS"):
        fail(case, f"the worker's NATS {got.get('nats')!r} is not the pod's GROVE_NATS")
    return got


def check_coordinator(case, binary, objs, tmp):
    """The coordinator's command line and grove.toml as rendered: `--dry-run` parses both,
    validates [kube] and prints the Jobs the builtin launcher would make."""
    sts = [o for o in by_kind(objs, "StatefulSet")
           if o["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "grove-coordinator"]
    if len(sts) != 1:
        fail(case, f"{len(sts)} coordinator StatefulSets")
        return None
    (sts,) = sts
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    (cm,) = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-config")
             and "grove.toml" in o.get("data", {})]
    mounts = {m["mountPath"]: os.path.join(tmp, "coordinator", m["name"]) for m in c["volumeMounts"]}
    for d in mounts.values():
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(mounts["/etc/grove/config"], "grove.toml"), "w") as f:
        f.write(cm["data"]["grove.toml"])
    with open(os.path.join(mounts["/etc/grove/token"], "token"), "w") as f:
        f.write("t0ken\n")
    if "/etc/grove/tls" in mounts:
        for n in ("tls.crt", "tls.key"):
            open(os.path.join(mounts["/etc/grove/tls"], n), "w").close()
    env = {k: remap([v], mounts)[0] for k, v in container_env(c, "grove-0").items()}
    args = remap(c["args"], mounts)
    r = grove(binary, [*args, "--dry-run", "--json"], env, tmp)
    if r.returncode != 0:
        fail(case, f"the coordinator's command line {args} does not parse: {r.stderr.strip()}")
        return None
    return json.loads(r.stdout)


def same_pod(case, job, scaled_job):
    """The builtin launcher's Job (slot 0) and the ScaledJob's target run the same pod."""
    a = copy.deepcopy(job["spec"])
    b = copy.deepcopy(scaled_job["spec"]["jobTargetRef"])
    a["template"]["metadata"]["labels"].pop("grove.dev/slot", None)
    # The launcher's pods read a worker token it writes; KEDA's the API token.
    for spec in (a, b):
        for v in spec["template"]["spec"]["volumes"]:
            if v["name"] == "git-token":
                v["secret"]["secretName"] = "<token>"
    if a != b:
        fail(case, "the builtin launcher's pod and the ScaledJob's differ:\n"
             f"builtin: {json.dumps(a, sort_keys=True)}\nkeda:    {json.dumps(b, sort_keys=True)}")


def main():
    chart, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    MATRIX["keda-custom-resources"] = merge(MATRIX["custom-resources"], {"cloud": {"launcher": "keda"}})
    with open(os.path.join(chart, "values.yaml")) as f:
        defaults = yaml.safe_load(f)
    for case, values in MATRIX.items():
        before = len(failures)
        for v in KUBE_VERSIONS:
            result = helm_python.lint(chart, values, strict=True, namespace=NAMESPACE, kube_version=v)
            # Severity 1 is INFO ("icon is recommended"); strict lint fails on warnings (2) too.
            problems = [m for m in result.get("messages", []) if m.get("severity", 0) >= 2]
            if problems or result.get("errors"):
                fail(case, f"helm lint (strict, {v}): {(problems or result['errors'])[0]}")
        try:
            objs = objects(render(chart, values))
        except helm_python.HelmError as e:
            fail(case, f"render: {e}")
            continue
        for path, obj in objs:
            validate(case, path, obj)
        kinds = sorted({o["kind"] for _, o in objs})
        effective = merge(defaults, values)
        launcher = effective["cloud"]["launcher"]
        expect = {"StatefulSet", "Service", "ConfigMap"}
        if launcher == "builtin":
            expect |= {"Role", "RoleBinding"}
        if launcher == "keda":
            expect |= {"ScaledJob"}
        if not effective["token"]["existingSecret"]:
            expect |= {"Secret"}
        if effective["networkPolicy"]["enabled"] and launcher != "none":
            expect |= {"NetworkPolicy"}
        if not expect <= set(kinds):
            fail(case, f"missing kinds {sorted(expect - set(kinds))} (rendered {kinds})")
        if launcher != "builtin" and {"Role", "RoleBinding"} & set(kinds):
            fail(case, "a Role without the builtin launcher")
        if launcher != "keda" and "ScaledJob" in kinds:
            fail(case, "a ScaledJob without cloud.launcher=keda")
        nats_objs = [o for p, o in objs if "/charts/nats/" in p]
        if effective["nats"]["enabled"] != bool(nats_objs):
            fail(case, f"nats.enabled={effective['nats']['enabled']} but {len(nats_objs)} NATS objects")
        with tempfile.TemporaryDirectory() as tmp:
            dry = check_coordinator(case, binary, objs, tmp)
            if dry is None:
                continue
            kube = dry.get("kube")
            if (kube is not None) != (launcher == "builtin"):
                fail(case, f"the coordinator's launcher is {'on' if kube else 'off'} with cloud.launcher={launcher}")
            jobs = kube["jobs"] if kube else []
            for j in jobs:
                check_worker(case, binary, j["spec"]["template"]["spec"], tmp)
                validate(case, "the builtin launcher's Job", j)
            for sj in by_kind(objs, "ScaledJob"):
                check_worker(case, binary, sj["spec"]["jobTargetRef"]["template"]["spec"], tmp)
                # What the launcher would have made from these very values.
                builtin = merge(values, {"cloud": {"launcher": "builtin"}})
                bobjs = objects(render(chart, builtin))
                bdry = check_coordinator(case + "/as-builtin", binary, bobjs, os.path.join(tmp, "b"))
                if bdry and bdry.get("kube"):
                    same_pod(case, bdry["kube"]["jobs"][0], sj)
        print(f"{'ok' if len(failures) == before else 'FAILED'} {case}: {len(objs)} objects ({', '.join(kinds)})")
    for case, (values, word) in REFUSED.items():
        try:
            render(chart, values)
            fail(case, "rendered, should have been refused")
        except helm_python.HelmError as e:
            if word not in str(e):
                fail(case, f"refused without saying {word!r}: {e}")
        else:
            continue
        print(f"ok refused: {case}")
    for line in sorted(set(checked_against_crd)):
        print(f"crd: {line}")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
