//! `run --kubernetes` end to end in the namespace lab: the real agent reads
//! Namespaces, Pods and a NetworkPolicy from a stand-in API server
//! (`netpol_tests::fake_api`, plain HTTP, named by KUBECONFIG) serving in
//! the node namespace, enforces on real sockets once its lists are in, and
//! a relabel delivered as a watch event changes what the sockets can do.
use std::time::{Duration, Instant};

use netpol_tests::fake_api::FakeApi;
use netpol_tests::observe::{http_ok, socket_ok};
use netpol_tests::Family::{V4, V6};
use netpol_tests::Proto::Tcp;
use netpol_tests::{assert_enforced, require_root, serve, AgentProcess, Edge, Lab};
use serde_json::{json, Value};

/// Groups by namespace and labels, resolved from the API's objects.
const POLICY: &str = r#"
groups:
  ledger: {namespace: svc-ledger}
  wallet: {namespace: svc-wallet, pods: {app: wallet}}
rules:
  - name: ledger-to-wallet
    from: ledger
    to: wallet
    ports: [50051/tcp]
  - name: intra-ledger
    within: [ledger]
"#;

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
}

fn pod(lab: &Lab, name: &str, ns: &str, app: &str) -> Value {
    let ep = lab.ep(name);
    let mut ips = vec![json!({"ip": ep.v4.to_string()})];
    ips.extend(ep.v6.map(|a| json!({"ip": a.to_string()})));
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
           "spec": {"nodeName": "lab-node", "containers": [{"name": "main", "image": "x"}]},
           "status": {"phase": "Running", "podIP": ep.v4.to_string(), "podIPs": ips}})
}

/// A NetworkPolicy the API serves next to the native policy (it selects
/// only the otel pod, which no edge below uses).
const OTEL_INGRESS: &str = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
  "metadata": {"name": "otel-ingress", "namespace": "observability"},
  "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
           "ingress": [{"ports": [{"protocol": "TCP", "port": 4317}]}]}}"#;

#[test]
fn watch_events_reach_the_kernel() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    // The API server listens inside the node namespace, where the agent
    // runs: its socket stays there although this thread serves it.
    let listener = lab
        .node
        .run_in(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .expect("binding the fake API server in the node namespace");
    let api = FakeApi::start_on(listener);
    for ns in ["svc-ledger", "svc-wallet", "observability"] {
        api.apply(namespace(ns));
    }
    api.apply(pod(&lab, "ledger-a", "svc-ledger", "ledger"));
    api.apply(pod(&lab, "merchant", "svc-ledger", "ledger"));
    api.apply(pod(&lab, "wallet", "svc-wallet", "wallet"));
    api.apply(pod(&lab, "ledger-b", "svc-wallet", "wallet-worker"));
    api.apply(pod(&lab, "otel", "observability", "otel"));
    api.apply(serde_json::from_str(OTEL_INGRESS).unwrap());

    let dir = std::env::temp_dir().join(format!("netpol-lab-kube-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let policy_dir = dir.join("policy");
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::write(policy_dir.join("policy.yaml"), POLICY).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    // The agent inherits it; this target holds only this test.
    std::env::set_var("KUBECONFIG", &kubeconfig);
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir);

    let before = [
        Edge::allow("ledger-a", "wallet", V4, Tcp, 50051),
        Edge::allow("merchant", "wallet", V6, Tcp, 50051),
        Edge::allow("ledger-a", "merchant", V4, Tcp, 7777),
        Edge::deny("ledger-b", "wallet", V4, Tcp, 50051),
        Edge::deny("ledger-a", "ledger-b", V4, Tcp, 50051),
    ];
    let _servers = serve(&lab, &before);
    let agent = AgentProcess::spawn(
        &lab,
        &policy_dir,
        &["--kubernetes", "--node-name", "lab-node"],
    );
    let log = agent.log();
    let synced = log
        .find("Kubernetes API: synced")
        .unwrap_or_else(|| panic!("no sync line:\n{log}"));
    let enforcing = log.find(netpol_tests::READY_MARKER).unwrap();
    assert!(
        synced < enforcing,
        "enforced before the lists were in:\n{log}"
    );
    assert!(log.contains("5 pods, 5 on this node"), "{log}");
    assert!(log.contains("1 networkpolicies listed"), "{log}");
    let status: Value = serde_json::from_str(&socket_ok(&agent, "/status")).unwrap();
    assert_eq!(status["kubernetes_synced"], true, "{status}");
    let metrics = http_ok(&lab.node, "/metrics");
    assert!(
        metrics.contains("netpol_agent_kubernetes_synced 1"),
        "{metrics}"
    );
    assert_enforced(&lab, &before, &agent, "objects as first listed");
    // Every request carried the kubeconfig's credentials.
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer fake-token")),
        "{requests:?}"
    );

    // The wallet pod is relabelled by a MODIFIED watch event: ledger-to-wallet
    // stops covering it, and ledger-b becomes the wallet.
    let n = agent.log().matches(" enforced").count();
    api.apply(pod(&lab, "wallet", "svc-wallet", "retired"));
    api.apply(pod(&lab, "ledger-b", "svc-wallet", "wallet"));
    let start = Instant::now();
    while agent.log().matches(" enforced").count() == n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no new policy generation after the watch events:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = [
        Edge::deny("ledger-a", "wallet", V4, Tcp, 50051),
        Edge::deny("merchant", "wallet", V6, Tcp, 50051),
        Edge::allow("ledger-a", "ledger-b", V4, Tcp, 50051),
        Edge::allow("ledger-a", "merchant", V4, Tcp, 7777),
    ];
    assert_enforced(&lab, &after, &agent, "after the relabel");
    // Two events within the debounce window: one reload, not two.
    std::thread::sleep(Duration::from_millis(500));
    let reloads = agent.log().matches(" enforced").count() - n;
    assert_eq!(
        reloads,
        1,
        "a burst gave {reloads} reloads:\n{}",
        agent.log()
    );
}
