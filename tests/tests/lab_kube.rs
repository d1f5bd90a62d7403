//! Workload identity from Kubernetes objects, enforced by the real agent in
//! the namespace lab with real sockets: groups written by namespace and
//! labels (`{namespace: ...}`, `namespaces:` selectors, `pods:` labels), pod
//! addresses deliberately mixed across the lab's /24s as the VPC CNI mixes
//! them, and a pod relabel plus a namespace label change reaching the kernel
//! without a restart.
use netpol_tests::files::{write_atomically, TempDir};
use netpol_tests::Family::{V4, V6};
use netpol_tests::Proto::{Tcp, Udp};
use netpol_tests::{assert_enforced, require_root, serve, AgentProcess, Edge, Lab, NODE_NAME};

const POLICY: &str = r#"
groups:
  ledger: {namespace: svc-ledger}
  wallet: {namespace: svc-wallet, pods: {app: wallet}}
  gateway: {namespace: platform, pods: {matchLabels: {app: gateway}}}
  apps:
    namespaces:
      matchExpressions: [{key: tier, operator: In, values: [app]}]
rules:
  - name: gateway-to-apps
    from: gateway
    to: apps
    ports: [8080/tcp]
  - name: ledger-to-wallet
    from: ledger
    to: wallet
    ports: [50051/tcp]
  - name: intra-ledger
    within: [ledger]
"#;

/// The lab's pods in namespaces that cut across their address ranges:
/// merchant (10.0.3.10) is a ledger pod, ledger-b (10.0.1.11) a wallet worker.
fn objects(lab: &Lab, wallet_app: &str, wallet_ns_tier: &str) -> String {
    let pod = |name: &str, ns: &str, app: &str, node: &str| {
        let ep = lab.ep(name);
        let v6 = ep
            .v6
            .map(|a| format!(", {{ip: \"{a}\"}}"))
            .unwrap_or_default();
        format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\n  \
             spec: {{nodeName: {node}}}\n  status: {{phase: Running, podIP: \"{v4}\", podIPs: [{{ip: \"{v4}\"}}{v6}]}}\n",
            v4 = ep.v4
        )
    };
    let mut out = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for (ns, tier) in [
        ("svc-ledger", "app"),
        ("svc-wallet", wallet_ns_tier),
        ("platform", "edge"),
        ("observability", "ops"),
    ] {
        out += &format!(
            "- {{apiVersion: v1, kind: Namespace, metadata: {{name: {ns}, labels: {{tier: {tier}}}}}}}\n"
        );
    }
    out += &pod("ledger-a", "svc-ledger", "ledger", NODE_NAME);
    out += &pod("merchant", "svc-ledger", "ledger", NODE_NAME);
    out += &pod("wallet", "svc-wallet", wallet_app, NODE_NAME);
    out += &pod("ledger-b", "svc-wallet", "wallet-worker", NODE_NAME);
    out += &pod("otel", "observability", "otel", NODE_NAME);
    // A pod of another node: its address is behind the uplink.
    out += &pod("gateway", "platform", "gateway", "node-b");
    out
}

#[test]
fn namespace_policies_follow_the_pods() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let root = TempDir::new("lab-kube-selectors");
    let (policy_dir, objects_dir) = (root.join("policy"), root.join("objects"));
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::create_dir_all(&objects_dir).unwrap();
    std::fs::write(policy_dir.join("policy.yaml"), POLICY).unwrap();
    write_atomically(
        &objects_dir,
        "objects.yaml",
        &objects(&lab, "wallet", "app"),
    );

    let before = [
        Edge::allow("gateway", "ledger-a", V4, Tcp, 8080),
        Edge::allow("gateway", "merchant", V4, Tcp, 8080),
        Edge::allow("gateway", "wallet", V4, Tcp, 8080),
        Edge::allow("gateway", "ledger-b", V4, Tcp, 8080),
        Edge::allow("gateway", "ledger-a", V6, Tcp, 8080),
        Edge::allow("ledger-a", "wallet", V4, Tcp, 50051),
        Edge::allow("merchant", "wallet", V4, Tcp, 50051),
        Edge::allow("ledger-a", "wallet", V6, Tcp, 50051),
        // Same namespace, whatever the address.
        Edge::allow("ledger-a", "merchant", V4, Tcp, 7777),
        Edge::allow("merchant", "ledger-a", V6, Tcp, 7777),
        // ledger-b sits in ledger-a's /24 but in another namespace.
        Edge::deny("ledger-a", "ledger-b", V4, Tcp, 7777),
        Edge::deny("ledger-b", "wallet", V4, Tcp, 50051),
        Edge::deny("otel", "wallet", V4, Tcp, 50051),
        Edge::deny("otel", "ledger-a", V4, Tcp, 8080),
        Edge::deny("world", "ledger-a", V4, Tcp, 8080),
        Edge::deny("wallet", "ledger-a", V4, Tcp, 50051),
    ];
    let _servers = serve(&lab, &before);
    let objects_arg = objects_dir.to_str().unwrap();
    let agent = AgentProcess::spawn(
        &lab,
        &policy_dir,
        &["--kube-objects", objects_arg, "--node-name", NODE_NAME],
    );
    assert_enforced(&lab, &before, &agent, "objects as first read");

    // The wallet pod is relabelled and its namespace leaves the app tier:
    // both rules stop covering it, without a restart.
    agent.after_new_generation("the objects changed", || {
        write_atomically(
            &objects_dir,
            "objects.yaml",
            &objects(&lab, "other", "none"),
        );
    });
    let after = [
        Edge::deny("ledger-a", "wallet", V4, Tcp, 50051),
        Edge::deny("ledger-a", "wallet", V6, Tcp, 50051),
        Edge::deny("gateway", "wallet", V4, Tcp, 8080),
        Edge::deny("gateway", "ledger-b", V4, Tcp, 8080),
        Edge::allow("gateway", "ledger-a", V4, Tcp, 8080),
        Edge::allow("ledger-a", "merchant", V4, Tcp, 7777),
    ];
    // Every server these edges need is already up (same ends and ports).
    assert_enforced(&lab, &after, &agent, "after the relabel");
}

const WALLET_INGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: wallet-from-ledger, namespace: svc-wallet}
spec:
  podSelector: {matchLabels: {app: wallet}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {tier: app}}
      podSelector: {matchLabels: {app: ledger}}
    ports: [{protocol: TCP, port: 50051}, {protocol: UDP, port: 5353}]
";

const LEDGER_EGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ledger-egress, namespace: svc-ledger}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: svc-wallet}}
    ports: [{port: 50051}]
";

/// NetworkPolicies alone, with Kubernetes' semantics (TCP and UDP): only
/// what a policy selects is isolated, a connection needs both ends' sides, and adding an
/// egress policy later takes effect without a restart.
#[test]
fn network_policies_isolate_what_they_select() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let root = TempDir::new("lab-kube-netpol");
    let (policy_dir, objects_dir) = (root.join("policy"), root.join("objects"));
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::create_dir_all(&objects_dir).unwrap();
    write_atomically(
        &objects_dir,
        "objects.yaml",
        &objects(&lab, "wallet", "app"),
    );
    write_atomically(&objects_dir, "wallet.yaml", WALLET_INGRESS);

    let before = [
        Edge::allow("ledger-a", "wallet", V4, Tcp, 50051),
        Edge::allow("merchant", "wallet", V6, Tcp, 50051),
        Edge::deny("ledger-b", "wallet", V4, Tcp, 50051),
        Edge::deny("gateway", "wallet", V4, Tcp, 50051),
        Edge::deny("ledger-a", "wallet", V4, Tcp, 7777),
        // UDP: the port the policy names, from the peers it names only.
        Edge::allow("ledger-a", "wallet", V4, Udp, 5353),
        Edge::allow("merchant", "wallet", V6, Udp, 5353),
        Edge::deny("ledger-b", "wallet", V4, Udp, 5353),
        Edge::deny("ledger-a", "wallet", V4, Udp, 7777),
        // Pods no policy selects stay open, as in Kubernetes.
        Edge::allow("otel", "ledger-a", V4, Tcp, 7777),
        Edge::allow("ledger-a", "merchant", V4, Tcp, 7777),
        Edge::allow("wallet", "ledger-b", V4, Tcp, 7777),
        Edge::allow("world", "ledger-a", V4, Tcp, 7777),
        Edge::allow("ledger-a", "ledger-b", V4, Tcp, 50051),
    ];
    let _servers = serve(&lab, &before);
    let objects_arg = objects_dir.to_str().unwrap();
    let agent = AgentProcess::spawn(
        &lab,
        &policy_dir,
        &["--kube-objects", objects_arg, "--node-name", NODE_NAME],
    );
    assert_enforced(&lab, &before, &agent, "ingress policy on the wallet");

    agent.after_new_generation("a NetworkPolicy was added", || {
        write_atomically(&objects_dir, "ledger.yaml", LEDGER_EGRESS);
    });
    let after = [
        // Both sides allow it.
        Edge::allow("ledger-a", "wallet", V4, Tcp, 50051),
        // The ledger's egress now refuses what the destination would accept.
        Edge::deny("ledger-a", "merchant", V4, Tcp, 7777),
        Edge::deny("merchant", "ledger-a", V4, Tcp, 7777),
        // Into the ledger namespace is still open.
        Edge::allow("otel", "ledger-a", V4, Tcp, 7777),
        // The egress side allows 50051 to svc-wallet, the ingress side of
        // ledger-b (not selected) does not judge: allowed.
        Edge::allow("ledger-a", "ledger-b", V4, Tcp, 50051),
    ];
    assert_enforced(&lab, &after, &agent, "after the egress policy");
}
