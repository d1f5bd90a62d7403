//! The DaemonSet's scheduling, privileges, mounts, probes and resources.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::kustomize::{
    capabilities_added, flag, flags, kustomization, the_container, CAPABILITIES,
};
use crate::support::arr;

/// The maps' memlock at the default sizes, measured with `netpol-bench
/// --memory` (docs/deploy.md): 78 MiB whatever the CPU count, 0.462 MiB per
/// possible CPU; the process's peak with a small policy, with room for a
/// reload; and for a 10,000-pod cluster, its policy (613,570 rule entries,
/// 20,000 host prefixes) in both slots and the process that compiles it.
const MAPS_FIXED_MIB: f64 = 78.0;
const MAPS_PER_CPU_MIB: f64 = 0.47;
const PROCESS_MIB: f64 = 48.0;
const LARGE_POLICY_MAPS_MIB: f64 = 55.0;
const LARGE_POLICY_PROCESS_MIB: f64 = 240.0;

/// A pod interface of each common CNI, named as that CNI names it.
const CNI_INTERFACES: &[(&str, &str)] = &[
    ("AWS VPC CNI", "eni0a1b2c3d4e5"),
    ("Calico", "cali1234567890a"),
    ("Cilium", "lxc1234567890a"),
    ("bridge", "veth1234abcd"),
    ("flannel", "veth5678ef01"),
];

/// The agent's interface patterns: `*` for any run of characters, `?` for
/// one, everything else literal.
fn glob_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Ports that CNIs and node agents listen on in the host network namespace.
const HOST_PORTS_TAKEN: &[(u16, &str)] = &[
    (4240, "Cilium health"),
    (4244, "Hubble"),
    (9879, "Cilium agent health"),
    (9890, "Cilium agent gops"),
    (9962, "Cilium agent metrics"),
    (9963, "Cilium operator metrics"),
    (9964, "Cilium Envoy metrics"),
    (9965, "Hubble metrics"),
    (9091, "Calico Felix metrics"),
    (9099, "Calico Felix health"),
    (5473, "Calico Typha"),
    (61678, "AWS VPC CNI metrics"),
    (61679, "AWS VPC CNI introspection"),
    (10248, "kubelet health"),
    (10250, "kubelet"),
    (10255, "kubelet read-only"),
    (10249, "kube-proxy metrics"),
    (10256, "kube-proxy health"),
    (9100, "node-exporter"),
];

#[test]
fn daemonset_runs_on_every_pool_with_least_privilege() {
    let Some(k) = kustomization() else { return };
    let ds = k.resource("DaemonSet");
    let spec = &ds["spec"];
    let pod = &spec["template"]["spec"];

    // Every node pool of the seed: platform (NoSchedule) and spot
    // (PreferNoSchedule) by toleration, application has no taint.
    let tolerations: BTreeSet<(String, String, String, String)> =
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
            .collect();
    for (key, effect) in [("platform", "NoSchedule"), ("spot", "PreferNoSchedule")] {
        let t = (key.into(), "Equal".into(), "true".into(), effect.into());
        assert!(
            tolerations.contains(&t),
            "no toleration for {key}=true:{effect}"
        );
    }
    assert!(pod["nodeSelector"].is_null() && pod["affinity"].is_null());

    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!((5..=120).contains(&grace), "grace {grace}");

    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxSurge"], 0);

    let c = the_container(pod, "DaemonSet containers");
    let sc = &c["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        capabilities_added(&c),
        CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        "exactly the capabilities measured as needed (no SYS_ADMIN)"
    );
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsUser"], 0);
    assert!(pod["hostPID"].is_null() && pod["hostIPC"].is_null());

    // Mounts: the node's bpffs (read/write, propagation from the host) and
    // the policy (read-only), where the arguments point.
    let args = k.agent_args();
    let volumes = arr(&pod["volumes"], "volumes");
    let mounts = arr(&c["volumeMounts"], "volumeMounts");
    let mount_of = |volume: &Value| {
        mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("volume {} is not mounted", volume["name"]))
            .clone()
    };
    let bpffs = volumes
        .iter()
        .find(|v| v["hostPath"]["path"] == "/sys/fs/bpf")
        .expect("a hostPath volume of /sys/fs/bpf");
    assert_eq!(bpffs["hostPath"]["type"], "Directory");
    let bpffs_mount = mount_of(bpffs);
    assert_eq!(bpffs_mount["mountPath"], "/sys/fs/bpf");
    assert_eq!(bpffs_mount["mountPropagation"], "HostToContainer");
    assert_ne!(bpffs_mount["readOnly"], true);
    let pin_path = flag(&args, "--pin-path").expect("--pin-path");
    assert!(
        Path::new(pin_path).starts_with("/sys/fs/bpf") && pin_path != "/sys/fs/bpf",
        "--pin-path {pin_path} must be inside the bpffs mount"
    );
    let policy = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == "netpol-agent-policy")
        .expect("the policy volume");
    let policy_mount = mount_of(policy);
    assert_eq!(policy_mount["readOnly"], true);
    assert_eq!(
        flag(&args, "--policy-dir"),
        policy_mount["mountPath"].as_str()
    );
    assert_eq!(flag(&args, "--mode"), Some("enforce"));
    // The pod interfaces of the common CNIs (docs/deploy.md, "Interface
    // patterns"), each matched by a pattern.
    let patterns = flags(&args, "--iface");
    for (cni, example) in CNI_INTERFACES {
        assert!(
            patterns.iter().any(|p| glob_matches(p, example)),
            "no --iface pattern matches {example} ({cni}): {patterns:?}"
        );
    }
    let doc = crate::support::read(&crate::support::repo().join("docs/deploy.md"));
    for (cni, _) in CNI_INTERFACES {
        assert!(
            doc.contains(cni),
            "docs/deploy.md's interface table lacks {cni}"
        );
    }

    // Probes and scraping all reach the port the agent listens on.
    let listen: std::net::SocketAddr = flag(&args, "--listen")
        .expect("--listen")
        .parse()
        .expect("--listen is ADDR:PORT");
    let ports = arr(&c["ports"], "ports");
    let named = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    };
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = match &get["port"] {
            Value::String(name) => named(name),
            other => other.as_u64(),
        };
        assert_eq!(port, Some(listen.port() as u64), "{probe} port");
    }
    // The node's network is shared with every hostNetwork agent: the port
    // must be none of theirs, and below the ephemeral range (32768 and up),
    // where an outgoing connection could hold it.
    for (port, owner) in HOST_PORTS_TAKEN {
        assert_ne!(listen.port(), *port, "--listen clashes with {owner}");
    }
    assert!(
        listen.port() < 32768,
        "--listen {listen} in the ephemeral range"
    );
    // Flows, events and status go through the unix socket, whose directory
    // the agent creates in an emptyDir (the root file system is read-only).
    let place = crate::capabilities::socket_place(pod, &c, &args);
    assert!(
        place.socket.starts_with("/run/"),
        "--socket {}",
        place.socket
    );
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        listen.port().to_string().as_str()
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res} is set"
            );
        }
    }
    // Memory from the measured maps (docs/deploy.md, "Memory and CPU"): the
    // request holds a 16-CPU node's need with a small policy, the limit a
    // 96-CPU node's in a 10,000-pod cluster with 25% headroom, at the default
    // map sizes the settings keep.
    let mib = |q: &Value| {
        let q = q.as_str().expect("a quantity");
        q.strip_suffix("Mi")
            .and_then(|n| n.parse::<f64>().ok())
            .or_else(|| {
                q.strip_suffix("Gi")
                    .and_then(|n| n.parse::<f64>().ok())
                    .map(|g| g * 1024.0)
            })
            .unwrap_or_else(|| panic!("memory {q}: write it in Mi or Gi"))
    };
    let maps = |cpus: f64| MAPS_FIXED_MIB + MAPS_PER_CPU_MIB * cpus;
    assert!(mib(&c["resources"]["requests"]["memory"]) >= maps(16.0) + PROCESS_MIB);
    let large = maps(96.0) + LARGE_POLICY_MAPS_MIB + LARGE_POLICY_PROCESS_MIB;
    assert!(mib(&c["resources"]["limits"]["memory"]) >= 1.25 * large);
    for sized in [
        "--ct-max",
        "--denied-flow-max",
        "--frag-max",
        "--rule-max",
        "--prefix-max",
    ] {
        assert!(
            flag(&args, sized).is_none(),
            "{sized} changes the map memory: measure again and size the resources"
        );
    }
}
