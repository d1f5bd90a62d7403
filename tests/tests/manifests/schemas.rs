//! Every manifest against the Kubernetes schemas, and the validator's
//! strictness.

use std::path::PathBuf;
use std::process::Command;

use crate::kustomize::{render, BASE, LOCALPLUS, UNINSTALL};
use crate::support::{assert_success, deploy, read, require_tool, run, TempDir};
use crate::{K8S_VERSION, VENV};

#[test]
fn every_install_renders_and_validates_against_the_kubernetes_schemas() {
    let validator = PathBuf::from(VENV).join("bin/kubernetes-validate");
    if !require_tool(&validator, "run `cargo xtask setup` as root") {
        return;
    }
    let tmp = TempDir::new("manifests");
    let mut files = Vec::new();
    for dir in [BASE, LOCALPLUS, UNINSTALL] {
        let Some(install) = render(dir) else { return };
        for (i, doc) in install.docs.iter().enumerate() {
            let path = tmp.0.join(format!("{}-{i}.json", dir.replace('/', "-")));
            std::fs::write(&path, doc.to_string()).unwrap();
            files.push(path);
        }
    }
    let out = run(Command::new(&validator)
        .args(["--kubernetes-version", K8S_VERSION, "--strict"])
        .args(&files));
    assert_success(&out, "kubernetes-validate");
    let report = String::from_utf8_lossy(&out.stdout);
    // One "passed" line per resource: nothing was skipped as unknown.
    assert_eq!(
        report.matches(" passed ").count(),
        files.len(),
        "every resource validated:\n{report}"
    );
}

/// The validator is strict: a misspelled field in an otherwise valid
/// DaemonSet fails, naming the field.
#[test]
fn the_validator_rejects_a_misspelled_field() {
    let validator = PathBuf::from(VENV).join("bin/kubernetes-validate");
    if !require_tool(&validator, "run `cargo xtask setup` as root") {
        return;
    }
    let good = read(&deploy().join("base/daemonset.yaml"));
    let bad = good.replacen("hostNetwork: true", "hostNetwrk: true", 1);
    assert_ne!(good, bad);
    let tmp = TempDir::new("manifests-bad");
    let path = tmp.0.join("daemonset.yaml");
    std::fs::write(&path, bad).unwrap();
    let out = run(Command::new(&validator)
        .args(["--kubernetes-version", K8S_VERSION, "--strict"])
        .arg(&path));
    assert!(!out.status.success(), "a misspelled field validated");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hostNetwrk"),
        "the error names the field: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
