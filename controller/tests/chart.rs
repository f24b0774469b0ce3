//! The Helm chart's tests (`charts/tests/test_chart.py`): lint, rendering for a matrix of
//! values, validation against the Kubernetes schemas, structure, schema refusals. They need
//! `python3`; `charts/tests/run_in_venv.py` runs them in a virtual environment under the target dir
//! with `charts/requirements-test.txt` (installed from PyPI the first time). A missing
//! interpreter or package fails this test rather than skipping it.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn helm_chart_renders_validates_and_has_the_skupper_layout() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("charts/tests/test_chart.py");
    assert!(script.is_file(), "{} is missing", script.display());
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart-venv");
    let output = Command::new("python3")
        .arg(root.join("charts/tests/run_in_venv.py"))
        .arg(&venv)
        .arg(&script)
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (needed for the chart tests): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chart tests failed ({}) in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status,
        venv.display()
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "chart tests printed no summary\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}
