//! The Helm chart (charts/grove), checked offline by tests/chart/check_chart.py: rendered and
//! linted (strict) with Helm's SDK for a matrix of values, every object validated against
//! Kubernetes 1.33's and 1.37's schemas (strict), conflicting values refused, and the
//! command lines it gives the coordinator and the worker pods parsed by this checkout's
//! `grove`, whose launcher must make the same worker pod as the chart's KEDA ScaledJob.
//! scripts/test installs the Python packages (pinned) and names its Python in
//! GROVE_TEST_PYTHON; without it the repository's .tools/venv is used.

use std::path::{Path, PathBuf};

use crate::harness::Env;

#[test]
fn the_chart_renders_validates_and_runs_this_grove() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("GROVE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".tools/venv/bin/python"));
    assert!(
        python.is_file(),
        "{}: no Python with the chart test's packages (helm-python-sdk, kubernetes-validate): \
         run scripts/test, which installs them",
        python.display()
    );
    let env = Env::new();
    let mut cmd = std::process::Command::new(&python);
    grove_tests::hermetic(&mut cmd);
    // Helm's SDK keeps its caches and config under HOME and XDG folders: the test's own.
    let out = cmd
        .arg(root.join("tests/chart/check_chart.py"))
        .arg(root.join("charts/grove"))
        .arg(grove_tests::bin("grove"))
        .env("HOME", env.path())
        .env("XDG_CACHE_HOME", env.path().join("cache"))
        .env("XDG_CONFIG_HOME", env.path().join("config"))
        .env("XDG_DATA_HOME", env.path().join("data"))
        // KEDA's CRD schema, as scripts/test installs it (@kubernetes-models/keda).
        .env("GROVE_TEST_NODE_MODULES", root.join(".tools/npm/node_modules"))
        .current_dir(env.path())
        .output()
        .expect("run tests/chart/check_chart.py");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Every case of the matrix and every refusal was checked.
    for case in ["default", "external-nats", "keda", "tls", "custom-resources", "keda-custom-resources"] {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("ok {case}:"))), "{case}:\n{stdout}");
    }
    assert!(stdout.matches("ok refused:").count() >= 9, "{stdout}");
    // The ScaledJobs were checked against KEDA's CRD schema, not only by grove's own rules.
    assert!(stdout.lines().any(|l| l.starts_with("crd: valid ScaledJob/")), "{stdout}");
}
