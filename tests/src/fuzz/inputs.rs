//! The byte targets: a policy file, and a Kubernetes objects file, through
//! everything `check` and `run` do with them (parse, merge, resolve,
//! compile, capacity and lockout checks, error formatting). Rejecting an
//! input is fine; a panic, or time or memory past the limits, is a finding.
use std::net::IpAddr;

use netpol_agent::policy::{
    check_capacity, compile, merge, objects_from_str, parse_str_with, refuse_lockout, with_cluster,
    Cluster, CompileOptions, MapLimits, Policy,
};

use super::Target;

/// Seeds no example has: alias fan-out, deep nesting, the odd scalars.
pub(super) fn crafted(target: Target) -> &'static [&'static str] {
    match target {
        Target::Policy => &[
            "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\ngroups: {g: *c}\n",
            "groups:\n  a: [10.0.0.0/8, \"fd00::/8\"]\n  b: {namespace: x, pods: {app: y}}\nrules:\n  - name: r\n    from: a\n    to: [b, world, host]\n    ports: [1-65535/tcp, icmp/3:4, icmpv6/128, 53/udp]\n  - name: w\n    within: [a, b]\nsettings:\n  enforce-host: true\n",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
            "rules:\n  - {name: a, from: 0.0.0.0/0, to: \"::/0\", ports: [0/tcp]}\n",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n, namespace: ns}\nspec:\n  podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [a]}]}\n  policyTypes: [Ingress, Egress]\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: http, protocol: TCP}, {port: 1000, endPort: 2000}]}]\n  egress: [{to: [{namespaceSelector: {}}]}]\n",
        ],
        Target::Objects => &[
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: svc-ledger, labels: {team: a}}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p, namespace: svc-ledger, labels: {app: ledger}}\n  spec: {nodeName: n, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\n  status: {phase: Running, podIP: 10.0.1.10, podIPs: [{ip: 10.0.1.10}, {ip: \"fd00:0:1::10\"}]}\n",
            "{\"apiVersion\": \"networking.k8s.io/v1\", \"kind\": \"NetworkPolicy\", \"metadata\": {\"name\": \"n\", \"namespace\": \"svc-ledger\"}, \"spec\": {\"podSelector\": {}, \"ingress\": [{\"ports\": [{\"port\": \"http\"}]}]}}\n",
        ],
        Target::Packets => &[],
    }
}

/// The limits `run` uses by default: a compiled fuzz input must be checked
/// against them like a real one.
const MAP_LIMITS: MapLimits = MapLimits {
    prefix_max: 65_536,
    rule_max: 1 << 20,
};

fn host() -> Vec<IpAddr> {
    vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]
}

/// Everything after parsing that `run` does with a policy.
fn compile_all(policy: &Policy) {
    for enforce_host in [false, true] {
        let opts = CompileOptions {
            host_addrs: host(),
            enforce_host,
            // A node prefix around the host: the tunnel entries are built too.
            node_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
        };
        match compile(policy, &opts) {
            Ok(c) => {
                let _ = check_capacity(&c, &MAP_LIMITS).map_err(|e| e.to_string());
                let _ = refuse_lockout(policy, &c, &opts, false, false).map_err(|e| e.to_string());
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// A policy file, as `check` and `run` read it (native, then with
/// NetworkPolicies keeping their selectors, as `--kubernetes` reads it).
pub fn check_policy(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    for kube in [false, true] {
        let file = match parse_str_with("fuzz.yaml", &text, kube) {
            Ok(f) => f,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        let mut policy = match merge(vec![file]) {
            Ok(p) => p,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        if kube {
            with_cluster(&mut policy, &Cluster::default());
        }
        compile_all(&policy);
    }
    Ok(())
}

/// A policy whose groups select workloads, for the objects to resolve.
const SELECTOR_POLICY: &str = "groups:\n  ledger: {namespace: svc-ledger}\n  \
    wallet: {namespace: svc-wallet, pods: {app: wallet}}\nrules:\n  - name: l-w\n    \
    from: ledger\n    to: wallet\n    ports: [50051/tcp, 8080/tcp]\n  - name: in\n    within: [ledger]\n";

/// A Kubernetes objects file, as `--kube-objects` reads it (and as each
/// object from the API server is read), resolved against a selector policy.
pub fn check_objects(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let (cluster, netpols) = match objects_from_str("fuzz.yaml", &text) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return Ok(());
        }
    };
    let base = parse_str_with("policy.yaml", SELECTOR_POLICY, true)
        .map_err(|e| format!("setup: the selector policy does not parse: {e}"))?;
    let mut files = vec![base];
    files.extend(netpols);
    let mut policy = match merge(files) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return Ok(());
        }
    };
    with_cluster(&mut policy, &cluster);
    compile_all(&policy);
    Ok(())
}
