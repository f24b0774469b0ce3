//! The Helm chart's tests (`charts/tests/test_chart.py`): lint, rendering for a matrix of
//! values, validation against the Kubernetes schemas, structure, schema refusals. They need
//! `python3` and `pip install -r charts/requirements-test.txt`; a missing interpreter or
//! package fails this test rather than skipping it.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn helm_chart_renders_validates_and_has_the_skupper_layout() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("charts/tests/test_chart.py");
    assert!(script.is_file(), "{} is missing", script.display());
    let output = Command::new("python3")
        .arg(&script)
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 (needed for the chart tests; CI installs it): {e}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chart tests failed ({}); install their packages with \
         `pip install -r charts/requirements-test.txt`\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "chart tests printed no summary\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}
