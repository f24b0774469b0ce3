//! The manifests `init` applies on kubernetes are the Helm chart's render:
//! `charts/tests/cli_manifests.py --check` renders the chart again and fails on any difference
//! (and when the CLI's substitution rules no longer reproduce Helm's output). As in
//! controller/tests/chart.rs, it runs through `charts/tests/run_in_venv.py` (a virtual environment
//! under the target dir with `charts/requirements-test.txt`); a missing interpreter or
//! package fails this test rather than skipping it.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn embedded_manifests_are_the_charts_current_render() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("charts/tests/cli_manifests.py");
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart-venv");
    let output = Command::new("python3")
        .arg(root.join("charts/tests/run_in_venv.py"))
        .arg(&venv)
        .arg(&script)
        .arg("--check")
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (needed for the manifests check): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "cli/manifests/ is not the chart's render ({}); regenerate with \
         `python3 charts/tests/run_in_venv.py {} charts/tests/cli_manifests.py --write`\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status,
        venv.display()
    );
    assert!(stdout.contains("is up to date"), "{stdout}{stderr}");
}

/// The CLI's default image tag is its own version: it must be the chart's appVersion.
#[test]
fn cli_version_is_the_charts_app_version() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let chart = std::fs::read_to_string(root.join("charts/skupper/Chart.yaml")).unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&chart).unwrap();
    assert_eq!(v["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")));
}
