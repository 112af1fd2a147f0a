//! Runs the conformance runner over the PyTorch-generated suite, as CI does.
//!
//! The suite's directory is `KILN_CONFORMANCE_DIR` if set (then it must exist), else
//! `../shared/conformance` beside the checkout when present. Without either, the test says
//! so and passes: the suite is not part of this repository.

use std::path::PathBuf;
use std::process::Command;

fn suite_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("KILN_CONFORMANCE_DIR") {
        let dir = PathBuf::from(dir);
        assert!(dir.join("manifest.json").exists(), "KILN_CONFORMANCE_DIR={} has no manifest.json", dir.display());
        return Some(dir);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance");
    beside.join("manifest.json").exists().then_some(beside)
}

#[test]
fn conformance_suite_has_no_failures() {
    let Some(dir) = suite_dir() else {
        eprintln!("conformance suite not found (set KILN_CONFORMANCE_DIR); skipping");
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-conformance")).arg(&dir).output().expect("runner starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    let summary = stdout.lines().last().unwrap_or_default();
    eprintln!("conformance: {summary}");
    assert!(out.status.success() && failures.is_empty(), "{}\n{summary}", failures.join("\n"));
    assert!(summary.ends_with("skipped") && summary.contains("passed"), "unexpected runner output: {stdout}");
}

#[test]
fn runner_rejects_a_missing_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-conformance")).arg("/nonexistent/kiln/suite").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest.json"));
}
