//! `cargo xtask demo`: a node-shaped lab enforcing the LOCAL-PLUS policy, a
//! handful of allowed and denied connections, and the agent's counters.
use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::Context as _;

use netpol_tests::{
    agent_bin, check, serve, AgentProcess, Edge, Expect, Family::*, Lab, Proto::*, ALLOWED_TIMEOUT,
    DENIED_TIMEOUT, NODE_NAME,
};

const EDGES: &[Edge] = &[
    Edge::allow("gateway", "ledger-a", V4, Tcp, 8080),
    Edge::allow("ledger-a", "wallet", V4, Tcp, 50051),
    Edge::allow("prometheus", "merchant", V4, Tcp, 8080),
    Edge::allow("ledger-a", "ledger-b", V4, Udp, 7777),
    Edge::allow("wallet", "postgres", V4, Tcp, 5432),
    Edge::allow("merchant", "coredns", V4, Udp, 53),
    Edge::allow("otel", "tempo", V4, Tcp, 4317),
    Edge::allow("gateway", "wallet", V6, Tcp, 50051),
    Edge::deny("world", "ledger-a", V4, Tcp, 8080),
    Edge::deny("wallet", "ledger-a", V4, Tcp, 50051),
    Edge::deny("prometheus", "ledger-a", V4, Tcp, 50051),
    Edge::deny("merchant", "wallet", V4, Tcp, 50051),
    Edge::deny("ledger-a", "aiven-other", V4, Tcp, 5432),
    Edge::deny("ledger-a", "world", V4, Tcp, 443),
    Edge::deny("world", "ledger-a", V6, Tcp, 8080),
];

fn main() -> anyhow::Result<()> {
    if !netpol_tests::require_root() {
        anyhow::bail!("the demo builds network namespaces and loads eBPF: run it as root");
    }
    let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus");
    let objects = policy.join("objects");
    println!("== Lab: a node namespace, pods ledger-a/ledger-b/wallet/merchant/otel, and a");
    println!("   remote namespace for the gateway, Prometheus, CoreDNS, Aiven, VPC endpoints,");
    println!("   Tempo/Loki and the world.");
    println!(
        "   Policy (by namespace): {}\n   Kubernetes objects: {} (node {NODE_NAME})\n",
        policy.display(),
        objects.display()
    );
    let lab = Lab::localplus();
    let objects_arg = objects.to_str().context("objects path is not UTF-8")?;
    let agent = AgentProcess::spawn(
        &lab,
        &policy,
        &["--kube-objects", objects_arg, "--node-name", NODE_NAME],
    );
    println!(
        "== netpol-agent enforcing on {} (XDP ingress + TC egress)\n",
        lab.node_ifaces.join(", ")
    );

    let _servers = serve(&lab, EDGES);
    let mut wrong = 0;
    for edge in EDGES {
        let timeout = match edge.expect {
            Expect::Allow => ALLOWED_TIMEOUT,
            Expect::Deny => DENIED_TIMEOUT,
        };
        let result = check(&lab, edge, timeout);
        let (what, ok) = match (&result, edge.expect) {
            (Ok(()), Expect::Allow) => ("allowed: connected, data echoed both ways", true),
            (Err(e), Expect::Deny) if e.is_timeout() => ("denied: no answer (dropped)", true),
            (Ok(()), Expect::Deny) => ("UNEXPECTED: connected", false),
            (Err(_), _) => ("UNEXPECTED: failed", false),
        };
        wrong += usize::from(!ok);
        let err = result.err().map(|e| format!(" [{e}]")).unwrap_or_default();
        println!(
            "  {:<44} {what}{}",
            edge.to_string(),
            if ok { String::new() } else { err }
        );
    }

    std::thread::sleep(Duration::from_millis(100));
    println!(
        "\n== Counters (netpol-agent stats --pin-path {}):",
        agent.pin_path().display()
    );
    let out = Command::new(agent_bin())
        .args(["stats", "--pin-path"])
        .arg(agent.pin_path())
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    drop(agent);
    drop(lab);
    println!("\n== Lab removed.");
    if wrong > 0 {
        anyhow::bail!("{wrong} edge(s) did not behave as the policy says");
    }
    Ok(())
}
