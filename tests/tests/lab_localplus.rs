//! The LOCAL-PLUS reference policy (docs/design.md section 2) enforced by the
//! real agent in a node-shaped namespace lab, checked with real sockets:
//! written by namespace with the lab's Kubernetes objects, and with address
//! groups for hosts without Kubernetes.

use std::path::PathBuf;

use netpol_tests::Family::{V4, V6};
use netpol_tests::Proto::{Tcp, Udp};
use netpol_tests::{
    check, check_all, ping, require_root, serve, AgentProcess, Edge, Lab, Mode, ALLOWED_TIMEOUT,
    NODE_NAME,
};

const SERVICES: [&str; 3] = ["ledger-a", "wallet", "merchant"];

/// Every edge both tests exercise. Without the agent all of them must carry
/// data; with it, `expect` says which ones.
fn localplus_edges() -> Vec<Edge> {
    let mut e = Vec::new();
    for svc in SERVICES {
        e.push(Edge::allow("gateway", svc, V4, Tcp, 8080));
        e.push(Edge::allow("gateway", svc, V4, Tcp, 50051));
        e.push(Edge::allow("prometheus", svc, V4, Tcp, 8080));
        e.push(Edge::allow(svc, "postgres", V4, Tcp, 5432));
        e.push(Edge::allow(svc, "kafka", V4, Tcp, 9092));
        e.push(Edge::allow(svc, "valkey", V4, Tcp, 6379));
        e.push(Edge::allow(svc, "vpce", V4, Tcp, 443));
        e.push(Edge::allow(svc, "coredns", V4, Udp, 53));
        e.push(Edge::allow(svc, "coredns", V4, Tcp, 53));
    }
    e.extend([
        Edge::allow("ledger-a", "wallet", V4, Tcp, 50051),
        Edge::allow("otel", "tempo", V4, Tcp, 4317),
        Edge::allow("otel", "loki", V4, Tcp, 3100),
        // Intra-namespace, on a port no rule names.
        Edge::allow("ledger-a", "ledger-b", V4, Tcp, 7777),
        Edge::allow("ledger-a", "ledger-b", V4, Udp, 7777),
        Edge::allow("ledger-b", "ledger-a", V4, Tcp, 7777),
        Edge::allow("ledger-b", "ledger-a", V4, Udp, 7777),
        // Host traffic passes unless the policy enforces it.
        Edge::allow("node", "ledger-a", V4, Tcp, 9999),
        Edge::allow("ledger-a", "node", V4, Tcp, 9999),
        Edge::deny("world", "ledger-a", V4, Tcp, 8080),
        // The reverse of an allowed edge.
        Edge::deny("wallet", "ledger-a", V4, Tcp, 50051),
        Edge::deny("merchant", "wallet", V4, Tcp, 50051),
        // Right peers, port outside the rule.
        Edge::deny("prometheus", "ledger-a", V4, Tcp, 50051),
        // Inside aiven's /16 but outside the three service ranges.
        Edge::deny("ledger-a", "aiven-other", V4, Tcp, 5432),
        Edge::deny("ledger-a", "world", V4, Tcp, 443),
        Edge::deny("otel", "tempo", V4, Tcp, 3100),
        Edge::deny("ledger-a", "coredns", V4, Udp, 54),
        // IPv6: a representative subset.
        Edge::allow("gateway", "ledger-a", V6, Tcp, 8080),
        Edge::allow("ledger-a", "wallet", V6, Tcp, 50051),
        Edge::allow("ledger-a", "ledger-b", V6, Tcp, 7777),
        Edge::allow("ledger-b", "ledger-a", V6, Udp, 7777),
        Edge::allow("ledger-a", "postgres", V6, Tcp, 5432),
        Edge::allow("ledger-a", "coredns", V6, Udp, 53),
        Edge::allow("node", "ledger-a", V6, Tcp, 9999),
        Edge::allow("ledger-a", "node", V6, Tcp, 9999),
        Edge::deny("world", "ledger-a", V6, Tcp, 8080),
        Edge::deny("wallet", "ledger-a", V6, Tcp, 50051),
        Edge::deny("ledger-a", "world", V6, Tcp, 443),
    ]);
    e
}

/// The LOCAL-PLUS policy as it is written, by namespace and labels.
fn policy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus")
}

/// The lab's Kubernetes objects, for the lab's node.
fn objects_args() -> Vec<String> {
    let objects = policy_dir().join("objects");
    vec![
        "--kube-objects".into(),
        objects.to_str().unwrap().into(),
        "--node-name".into(),
        NODE_NAME.into(),
    ]
}

#[test]
fn lab_topology_without_agent() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let edges = localplus_edges();
    let _servers = serve(&lab, &edges);

    let failures = check_all(&lab, &edges, Mode::Open);
    assert!(
        failures.is_empty(),
        "the lab itself is broken (no agent running), {} of {} edges failed:\n{}",
        failures.len(),
        edges.len(),
        failures.join("\n")
    );

    // ICMP is optional on these machines: ping is checked only if installed.
    for (from, to) in [("ledger-a", "gateway"), ("node", "wallet")] {
        for family in [V4, V6] {
            let dst = lab.ep(to).ip(family);
            if let Some(ok) = ping(&lab.ep(from).ns, dst) {
                assert!(ok, "ping {from} -> {to} ({family}) failed without an agent");
            }
        }
    }

    neighbour_discovery_survives(&lab, &|| String::from("(no agent running)"));
}

/// The policy by namespace, with the lab's Kubernetes objects.
#[test]
fn localplus_policy_enforced() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let edges = localplus_edges();
    let _servers = serve(&lab, &edges);
    let args = objects_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = AgentProcess::spawn(&lab, &policy_dir(), &args);

    let failures = check_all(&lab, &edges, Mode::Enforced);
    assert!(
        failures.is_empty(),
        "{} of {} edges behaved wrongly under the LOCAL-PLUS policy:\n{}\n--- agent log ---\n{}",
        failures.len(),
        edges.len(),
        failures.join("\n"),
        agent.log()
    );

    neighbour_discovery_survives(&lab, &|| agent.log());
}

/// The same policy written by address (examples/localplus-cidr), for hosts
/// without Kubernetes: exactly the same edges hold.
#[test]
fn localplus_policy_by_address_enforced() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let edges = localplus_edges();
    let _servers = serve(&lab, &edges);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus-cidr");
    let agent = AgentProcess::spawn(&lab, &dir, &[]);

    let failures = check_all(&lab, &edges, Mode::Enforced);
    assert!(
        failures.is_empty(),
        "{} of {} edges behaved wrongly under the LOCAL-PLUS policy by address:\n{}\n--- agent log ---\n{}",
        failures.len(),
        edges.len(),
        failures.join("\n"),
        agent.log()
    );

    neighbour_discovery_survives(&lab, &|| agent.log());
}

/// ARP and IPv6 ND must pass the agent: with every neighbour table emptied,
/// an allowed edge has to resolve its way through again. `agent_log` is
/// printed with any failure.
fn neighbour_discovery_survives(lab: &Lab, agent_log: &dyn Fn() -> String) {
    for ns in lab.namespaces() {
        ns.ip(&["neigh", "flush", "all"]);
    }
    for family in [V4, V6] {
        let edge = Edge::allow("gateway", "ledger-a", family, Tcp, 8080);
        if let Err(e) = check(lab, &edge, ALLOWED_TIMEOUT) {
            panic!(
                "after flushing neighbour tables, {edge} failed: {e}\n--- agent log ---\n{}",
                agent_log()
            );
        }
    }
    let neigh = lab.pod("ledger-a").ip(&["neigh", "show", "dev", "eth0"]);
    for gateway in ["169.254.1.1", "fe80::1"] {
        let line = neigh
            .lines()
            .find(|l| l.split_whitespace().next() == Some(gateway));
        let resolved = line.is_some_and(|l| {
            ["REACHABLE", "STALE", "DELAY"]
                .iter()
                .any(|state| l.contains(state))
        });
        assert!(
            resolved,
            "ledger-a has not resolved its gateway {gateway} (ARP/ND blocked?); \
             ip neigh show:\n{neigh}\n--- agent log ---\n{}",
            agent_log()
        );
    }
}
