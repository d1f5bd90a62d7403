//! How the rendered installs fit together: the base (the agent alone), the
//! LOCAL-PLUS overlay (its policy and node pools), the cleanup DaemonSet;
//! namespace, service account, the settings and policy ConfigMaps, the image.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::kustomize::{
    args_of, flag, kustomization, render, the_container, Install, BASE, UNINSTALL,
};
use crate::support::{arr, deploy, example_policy, policy_files, read, repo, s, workspace_version};

/// Where the DaemonSet mounts its settings, and the flag that reads them.
const CONFIG_PATH: &str = "/etc/netpol-agent/config.yaml";

fn kinds(install: &Install) -> BTreeSet<String> {
    install
        .docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                s(&d["kind"], "kind"),
                d["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn tolerations(ds: &Value) -> BTreeSet<(String, String, String, String)> {
    let pod = &ds["spec"]["template"]["spec"];
    if pod["tolerations"].is_null() {
        return BTreeSet::new();
    }
    arr(&pod["tolerations"], "tolerations")
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap_or_default().to_owned(),
                t["operator"].as_str().unwrap_or("Equal").to_owned(),
                t["value"].as_str().unwrap_or_default().to_owned(),
                t["effect"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The image deploy/DIR runs the agent with: `newName:newTag` of its
/// kustomization, as rendered into the pods.
fn agent_image(install: &Install) -> String {
    let ds = install.resource("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = if pod["initContainers"].is_array() {
        arr(&pod["initContainers"], "initContainers")[0].clone()
    } else {
        the_container(pod, "DaemonSet containers")
    };
    s(&c["image"], "image").to_owned()
}

#[test]
fn the_base_is_the_agent_alone_with_its_settings_in_a_configmap() {
    let Some(base) = render(BASE) else { return };
    let names = kinds(&base);
    let config = base.configmap("netpol-agent-config");
    let config_name = s(&config["metadata"]["name"], "name").to_owned();
    let expected: BTreeSet<String> = [
        "Namespace/netpol-agent".to_owned(),
        "ServiceAccount/netpol-agent".into(),
        "ClusterRole/netpol-agent".into(),
        "ClusterRoleBinding/netpol-agent".into(),
        "ConfigMap/netpol-agent-policy".into(),
        format!("ConfigMap/{config_name}"),
        "DaemonSet/netpol-agent".into(),
    ]
    .into();
    assert_eq!(
        names, expected,
        "deploy/base renders the agent and nothing else"
    );

    let namespace = "netpol-agent";
    let ns = base.resource("Namespace");
    // hostNetwork, hostPath and added capabilities are refused below the
    // "privileged" Pod Security level.
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let sa = base.resource("ServiceAccount");
    let ds = base.resource("DaemonSet");
    let policy = base.configmap("netpol-agent-policy");
    for r in [&sa, &ds, &config, &policy] {
        assert_eq!(r["metadata"]["namespace"], namespace, "{}", r["kind"]);
    }
    // Only the pods that ask get a token: the agent's, for --kubernetes.
    assert_eq!(sa["automountServiceAccountToken"], false);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(pod["automountServiceAccountToken"], true);

    // No site in the base: no policy file, no node pool's toleration.
    assert!(
        policy["data"].as_object().is_none_or(|d| d.is_empty()),
        "deploy/base ships a policy: {}",
        policy["data"]
    );
    // The agent's own taint only: it removes it from each node itself.
    let own = (
        "netpol-agent.io/agent-not-ready".to_owned(),
        "Exists".to_owned(),
        String::new(),
        "NoSchedule".to_owned(),
    );
    assert_eq!(
        tolerations(&ds),
        BTreeSet::from([own.clone()]),
        "tolerations in the base"
    );

    // The settings: `run --config` and nothing else on the command line, the
    // file a hash-named ConfigMap (an edit rolls the agents, which read it
    // once), mounted read-only where the flag points.
    let c = the_container(pod, "DaemonSet containers");
    let args = args_of(&c);
    assert_eq!(args[0], "run");
    assert_eq!(flag(&args, "--config"), Some(CONFIG_PATH));
    assert_eq!(
        args.len(),
        2,
        "every other setting in the ConfigMap: {args:?}"
    );
    assert_ne!(
        config_name, "netpol-agent-config",
        "the settings' name carries a hash"
    );
    let (mounted, _) = base.mounted_file(pod, &c, CONFIG_PATH);
    assert_eq!(mounted["metadata"]["name"], config_name.as_str());
    let mount = arr(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == CONFIG_PATH)
        .unwrap()
        .clone();
    assert_eq!(mount["readOnly"], true);
    // The policy volume keeps the stable name the operator fills, so that an
    // edit is a live reload rather than a roll.
    let policy_volume = arr(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == "netpol-agent-policy")
        .expect("the policy ConfigMap is mounted");
    assert!(policy_volume["name"].is_string());

    // The image: kustomize rewrites the DaemonSet's image name, so a
    // mismatch would leave it unset.
    assert_eq!(
        agent_image(&base),
        format!("ghcr.io/localplus/netpol-agent:{}", workspace_version())
    );
}

#[test]
fn the_localplus_overlay_adds_its_policy_and_node_pools_only() {
    let Some(base) = render(BASE) else { return };
    let Some(site) = kustomization() else { return };
    assert_eq!(kinds(&site), kinds(&base), "the overlay adds no resource");

    // The policy: byte-identical copies of the namespace-written example,
    // all of them, in the base's stable ConfigMap.
    let example = example_policy(true);
    let copies = deploy().join("overlays/localplus/policy");
    let names = policy_files(&example);
    assert!(!names.is_empty());
    assert_eq!(
        policy_files(&copies),
        names,
        "deploy/overlays/localplus/policy holds exactly {}",
        example.display()
    );
    let policy = site.configmap("netpol-agent-policy");
    assert_eq!(policy["metadata"]["name"], "netpol-agent-policy");
    let data = policy["data"].as_object().expect("policy data");
    assert_eq!(
        data.keys().cloned().collect::<Vec<_>>(),
        names,
        "the ConfigMap's keys"
    );
    for name in &names {
        let original = read(&example.join(name));
        assert_eq!(
            read(&copies.join(name)),
            original,
            "deploy/overlays/localplus/policy/{name} differs from {}: copy it again",
            example.display()
        );
        assert_eq!(data[name], original.as_str(), "{name} as rendered");
    }

    // Every LOCAL-PLUS node pool: platform (NoSchedule) and spot
    // (PreferNoSchedule) by toleration, application has no taint.
    let ds = site.resource("DaemonSet");
    let mut want: BTreeSet<_> = [("platform", "NoSchedule"), ("spot", "PreferNoSchedule")]
        .iter()
        .map(|(k, e)| {
            (
                k.to_string(),
                "Equal".to_owned(),
                "true".to_owned(),
                e.to_string(),
            )
        })
        .collect();
    // And the base's own: a patch replaces the list.
    want.insert((
        "netpol-agent.io/agent-not-ready".to_owned(),
        "Exists".to_owned(),
        String::new(),
        "NoSchedule".to_owned(),
    ));
    assert_eq!(tolerations(&ds), want);

    // Everything else is the base's: the same DaemonSet but for the
    // tolerations and labels, the same settings.
    let strip = |mut v: Value| {
        v["metadata"]["labels"] = Value::Null;
        v["spec"]["template"]["spec"]["tolerations"] = Value::Null;
        v
    };
    assert_eq!(strip(ds), strip(base.resource("DaemonSet")));
    assert_eq!(site.agent_args(), base.agent_args());
}

#[test]
fn the_uninstall_daemonset_cleans_every_node_with_the_agents_image() {
    let Some(base) = render(BASE) else { return };
    let Some(uninstall) = render(UNINSTALL) else {
        return;
    };
    let ds = uninstall.resource("DaemonSet");
    assert_eq!(uninstall.docs.len(), 1, "the cleanup DaemonSet only");
    assert_eq!(ds["metadata"]["namespace"], "netpol-agent");
    assert_ne!(
        ds["metadata"]["name"], "netpol-agent",
        "its own name, so it cannot replace the agent's DaemonSet"
    );
    let pod = &ds["spec"]["template"]["spec"];
    // Every node whatever its taints: a node left out keeps enforcing.
    let all = arr(&pod["tolerations"], "tolerations");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["operator"], "Exists");
    assert!(all[0]["key"].is_null() && all[0]["effect"].is_null());

    // The work is the init container, so Ready means done; then the pod
    // only holds its place.
    let inits = arr(&pod["initContainers"], "initContainers");
    assert_eq!(inits.len(), 1);
    let work = &inits[0];
    assert_eq!(
        agent_image(&uninstall),
        agent_image(&base),
        "the agent's image"
    );
    let args = args_of(work);
    assert_eq!(args[0], "uninstall");
    assert_eq!(
        flag(&args, "--pin-path"),
        flag(&base.agent_args(), "--pin-path"),
        "it removes the agent's pins"
    );
    let sc = &work["securityContext"];
    let agent = the_container(
        &base.resource("DaemonSet")["spec"]["template"]["spec"],
        "DaemonSet containers",
    );
    assert_eq!(
        *sc, agent["securityContext"],
        "the agent's security context"
    );
    let holder = the_container(pod, "containers");
    assert!(holder["args"].is_null() && holder["command"].is_null());
    assert_eq!(holder["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(holder["securityContext"]["capabilities"]["add"].is_null());

    // The kind end-to-end script uses it too, not a per-node Job.
    let e2e = read(&repo().join("tests/e2e/kind.sh"));
    assert!(e2e.contains("deploy/uninstall") && !e2e.contains("job.yaml"));
    assert!(e2e.contains("deploy/overlays/localplus"));
}
