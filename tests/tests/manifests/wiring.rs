//! How the resources of deploy/ fit together: namespace, service account,
//! the policy ConfigMap, the image.

use std::collections::BTreeSet;

use crate::kustomize::{kustomization, the_container};
use crate::support::{arr, deploy, read, repo, require_python, s, workspace_version, yaml_doc};

#[test]
fn kustomization_ties_the_resources_together() {
    if !require_python() {
        return;
    }
    let k = kustomization();
    let namespace = s(&k.doc["namespace"], "kustomization.yaml: namespace");

    let ns = k.resource("Namespace");
    assert_eq!(ns["metadata"]["name"], namespace);
    // hostNetwork, hostPath and added capabilities are refused below the
    // "privileged" Pod Security level.
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let sa = k.resource("ServiceAccount");
    let ds = k.resource("DaemonSet");
    for r in [&sa, &ds] {
        assert_eq!(r["metadata"]["namespace"], namespace, "{}", r["kind"]);
    }
    // Only the pods that ask get a token: the agent's, for --kubernetes.
    assert_eq!(sa["automountServiceAccountToken"], false);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(pod["automountServiceAccountToken"], true);

    // The policy ConfigMap: byte-identical copies of examples/localplus-cidr, all
    // of them, under a stable name the DaemonSet mounts.
    let gen = k.generator();
    assert_eq!(
        gen["options"]["disableNameSuffixHash"], true,
        "a hash suffix would roll every agent on a policy edit instead of a live reload"
    );
    let listed: BTreeSet<String> = arr(&gen["files"], "configMapGenerator[0].files")
        .iter()
        .map(|f| s(f, "files[]").to_owned())
        .collect();
    let examples = repo().join("examples/localplus-cidr");
    let mut expected = BTreeSet::new();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            let copy = deploy().join("policy").join(&name);
            assert_eq!(
                read(&copy),
                read(&examples.join(&name)),
                "{} differs from examples/localplus-cidr/{name}: copy it again",
                copy.display()
            );
            expected.insert(format!("policy/{name}"));
        }
    }
    assert!(!expected.is_empty());
    assert_eq!(
        listed, expected,
        "the generator lists exactly examples/localplus-cidr"
    );
    let policy_volume = arr(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["configMap"].is_object())
        .expect("a ConfigMap volume");
    assert_eq!(policy_volume["configMap"]["name"], gen["name"]);

    // The image: kustomize rewrites the DaemonSet's image name, so the two
    // must match exactly or the tag silently stays unset.
    let images = arr(&k.doc["images"], "kustomization.yaml: images");
    assert_eq!(images.len(), 1);
    let container = the_container(pod, "DaemonSet containers");
    assert_eq!(images[0]["name"], container["image"]);
    assert_eq!(images[0]["newTag"], workspace_version().as_str());
    let image = format!(
        "{}:{}",
        s(&images[0]["newName"], "images[0].newName"),
        s(&images[0]["newTag"], "images[0].newTag")
    );
    // The uninstall Job runs the same image; the e2e overlay retags it by name.
    let job = yaml_doc(&deploy().join("uninstall/job.yaml"));
    let job_container = the_container(&job["spec"]["template"]["spec"], "Job containers");
    assert_eq!(job_container["image"], image.as_str());
    assert_eq!(job["metadata"]["namespace"], namespace);
    let e2e = read(&repo().join("tests/e2e/kind.sh"));
    assert!(
        e2e.contains(&format!("name: {}", s(&images[0]["newName"], "newName"))),
        "tests/e2e/kind.sh retags {}",
        images[0]["newName"]
    );
}
