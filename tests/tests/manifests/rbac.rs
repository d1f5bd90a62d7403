//! What `run --kubernetes` may do with the API: get, list and watch on
//! exactly namespaces, pods and networkpolicies, get and patch on nodes
//! (`--remove-taint`), granted to the DaemonSet's service account; and the
//! DaemonSet asks for the API, names its node and removes its taint.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::kustomize::{kustomization, the_container};
use crate::support::{arr, read, repo, s};

fn strings(v: &Value, what: &str) -> BTreeSet<String> {
    arr(v, what).iter().map(|x| s(x, what).to_owned()).collect()
}

#[test]
fn the_cluster_role_reads_exactly_what_the_watcher_watches() {
    let Some(k) = kustomization() else { return };
    let role = k.resource("ClusterRole");
    let read_only = BTreeSet::from(["get".to_owned(), "list".into(), "watch".into()]);
    let mut granted = BTreeSet::new();
    let taint = BTreeSet::from(["get".to_owned(), "patch".into()]);
    for rule in arr(&role["rules"], "ClusterRole rules") {
        let verbs = strings(&rule["verbs"], "verbs");
        if strings(&rule["resources"], "resources") == BTreeSet::from(["nodes".to_owned()]) {
            assert_eq!(verbs, taint, "{rule}");
        } else {
            assert_eq!(verbs, read_only, "{rule}");
        }
        assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null());
        for group in strings(&rule["apiGroups"], "apiGroups") {
            for res in strings(&rule["resources"], "resources") {
                granted.insert(format!("{group}/{res}"));
            }
        }
    }
    let expected: BTreeSet<String> = [
        "/namespaces",
        "/pods",
        "/nodes",
        "networking.k8s.io/networkpolicies",
    ]
    .map(String::from)
    .into();
    assert_eq!(granted, expected);
    // The watcher asks for exactly these (agent/src/kube/view.rs).
    let view = read(&repo().join("agent/src/kube/view.rs"));
    for kind in ["Namespace", "Pod", "NetworkPolicy"] {
        assert!(view.contains(&format!("follow::<{kind}>")), "{kind}");
    }

    let binding = k.resource("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let sa = k.resource("ServiceAccount");
    let subjects = arr(&binding["subjects"], "subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], sa["metadata"]["name"]);
    assert_eq!(subjects[0]["namespace"], sa["metadata"]["namespace"]);
}

#[test]
fn the_daemonset_watches_the_api_as_its_node() {
    let Some(k) = kustomization() else { return };
    let ds = k.resource("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = the_container(pod, "containers");
    let args = k.agent_args();
    assert!(args.iter().any(|a| a == "--kubernetes"), "{args:?}");
    // It starts on a node still tainted, and removes the taint.
    assert!(args.iter().any(|a| a == "--remove-taint"), "{args:?}");
    assert!(
        arr(&pod["tolerations"], "tolerations")
            .iter()
            .any(|t| t["key"] == "netpol-agent.io/agent-not-ready" && t["operator"] == "Exists"),
        "no toleration of netpol-agent.io/agent-not-ready"
    );
    // The last good policy outlives the pod.
    let state = args
        .iter()
        .find_map(|a| a.strip_prefix("--state-dir="))
        .expect("--state-dir");
    let mount = arr(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == state)
        .expect("a volume at --state-dir");
    let volume = arr(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the --state-dir volume");
    assert_eq!(volume["hostPath"]["path"], state, "{volume}");
    assert!(
        !args.iter().any(|a| a.starts_with("--kube-objects")),
        "--kube-objects and --kubernetes exclude each other"
    );
    let env = arr(&c["env"], "env");
    let node = env
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME in the container's env");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(pod["automountServiceAccountToken"], true);
}

/// The kind end-to-end script exercises the API path: NetworkPolicies
/// applied with kubectl, a pod relabelled back and forth, the sync logged.
#[test]
fn the_kind_script_checks_network_policies_and_relabels() {
    let script = read(&repo().join("tests/e2e/kind.sh"));
    for needle in [
        "kind: NetworkPolicy",
        "policyTypes: [Ingress]",
        "policyTypes: [Egress]",
        "label pod denied e2e-client=yes",
        "label pod denied e2e-client-",
        "delete networkpolicy",
        "Kubernetes API: synced",
    ] {
        assert!(
            script.contains(needle),
            "tests/e2e/kind.sh lacks {needle:?}"
        );
    }
}
