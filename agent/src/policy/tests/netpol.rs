//! NetworkPolicy semantics with the Kubernetes objects at hand, on the model
//! of the Kubernetes e2e netpol suite: namespaces x, y, z with pods a, b, c,
//! every pod pair judged on ports 80 and 81. Each case states its truth table
//! as a function; the compiled maps (`evaluate`) and `explain` must both
//! agree with it for every pair.

use std::net::IpAddr;

use crate::policy::{
    compile, evaluate, explain, load_objects, merge, parse_str_with, with_cluster, Cluster,
    CompileOptions, Packet, Policy,
};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn ip(ns: &str, pod: &str) -> IpAddr {
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap() + 1;
    let p = PODS.iter().position(|x| *x == pod).unwrap() + 1;
    format!("10.{n}.0.{p}").parse().unwrap()
}

/// Objects as the e2e suite lays them out: pods labelled `pod: <name>`,
/// namespaces `ns: <name>`; every pod serves a named port `serve-80`.
fn cluster() -> (Cluster, String) {
    let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for ns in NAMESPACES {
        text += &format!("- {{kind: Namespace, metadata: {{name: {ns}, labels: {{ns: {ns}}}}}}}\n");
        for pod in PODS {
            text += &format!(
                "- {{kind: Pod, metadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}, \
                 spec: {{containers: [{{name: c, ports: [{{name: serve-80, containerPort: 80}}]}}]}}, \
                 status: {{podIP: {}}}}}\n",
                ip(ns, pod)
            );
        }
    }
    let dir = std::env::temp_dir().join(format!(
        "netpol-np-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("objects.yaml"), &text).unwrap();
    let (c, _) = load_objects(&dir, &crate::policy::ReadLimits::default()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (c, text)
}

fn policy(yaml: &str) -> Policy {
    let (c, _) = cluster();
    let file = parse_str_with("np.yaml", yaml, true).unwrap_or_else(|e| panic!("{e}"));
    let mut p = merge(vec![file]).unwrap();
    with_cluster(&mut p, &c);
    p
}

/// Checks every pod pair on tcp/80 and tcp/81 against `want`.
fn truth(yaml: &str, want: impl Fn((&str, &str), (&str, &str), u16) -> bool) {
    let p = policy(yaml);
    let opts = CompileOptions::default();
    let compiled = compile(&p, &opts).unwrap();
    let mut wrong = Vec::new();
    for sns in NAMESPACES {
        for spod in PODS {
            for dns in NAMESPACES {
                for dpod in PODS {
                    if (sns, spod) == (dns, dpod) {
                        continue;
                    }
                    for port in [80, 81] {
                        let (src, dst) = (ip(sns, spod), ip(dns, dpod));
                        let expect = want((sns, spod), (dns, dpod), port);
                        let maps = evaluate(&compiled, src, dst, 6, port).is_some();
                        let packet = Packet {
                            src,
                            dst,
                            proto: 6,
                            port,
                        };
                        let e = explain(&p, &compiled, &opts, &packet);
                        if maps != expect || e.allowed() != expect || !e.agrees() {
                            wrong.push(format!(
                                "{sns}/{spod} -> {dns}/{dpod} tcp/{port}: want {expect}, maps {maps}, explain {} (agrees {})",
                                e.allowed(),
                                e.agrees()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}\n{}", wrong.len(), wrong.join("\n"));
}

const DENY_INGRESS_X: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
";

#[test]
fn default_deny_ingress_isolates_only_its_namespace() {
    truth(DENY_INGRESS_X, |_, (dns, _), _| dns != "x");
}

#[test]
fn default_deny_egress_and_ingress() {
    let yaml = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
";
    truth(yaml, |(sns, _), (dns, _), _| sns != "x" && dns != "x");
}

#[test]
fn pod_and_namespace_selector_in_one_peer_is_and() {
    let yaml = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-yb, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: b}}
";
    truth(yaml, |s, d, _| d != ("x", "a") || s == ("y", "b"));
}

#[test]
fn two_peers_are_or_and_a_bare_pod_selector_is_the_policys_namespace() {
    let yaml = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-b-or-z, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
    - namespaceSelector: {matchLabels: {ns: z}}
";
    truth(yaml, |s, d, _| {
        d != ("x", "a") || s == ("x", "b") || s.0 == "z"
    });
}

#[test]
fn match_expressions_and_ports() {
    let yaml = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: not-y, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: NotIn, values: [y]}]
    ports: [{protocol: TCP, port: 80}]
";
    truth(yaml, |s, d, port| d.0 != "x" || (s.0 != "y" && port == 80));
}

#[test]
fn named_ports_and_end_port() {
    let named = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: serve-80}]
";
    truth(named, |_, d, port| d.0 != "x" || port == 80);
    let range = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 81, endPort: 90}]
";
    truth(range, |_, d, port| d.0 != "x" || port == 81);
}

#[test]
fn ip_block_with_except() {
    let yaml = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: block, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.2.0.0/16, except: [10.2.0.2/32]}
";
    truth(yaml, |s, d, _| d.0 != "x" || (s.0 == "y" && s.1 != "b"));
}

#[test]
fn both_sides_must_allow_between_isolated_pods() {
    // y/b may only talk to x/a on 80; x/a only accepts y/b (any port).
    let yaml = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: yb-out, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: x}}
      podSelector: {matchLabels: {pod: a}}
    ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: xa-in, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: b}}
";
    truth(yaml, |s, d, port| {
        let egress_ok = s != ("y", "b") || (d == ("x", "a") && port == 80);
        let ingress_ok = d != ("x", "a") || s == ("y", "b");
        egress_ok && ingress_ok
    });
}

#[test]
fn native_rules_isolate_every_pod_and_allow_both_sides() {
    // A native rule from y to x on 80, and a NetworkPolicy that lets x/a
    // accept z/c on 81: with native rules every pod is isolated both ways,
    // so z/c -> x/a needs an egress allow too, which nothing gives.
    let yaml = "
groups:
  x: {namespace: x}
  y: {namespace: y}
rules:
  - {name: y-to-x, from: y, to: x, ports: [80/tcp]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: zc-in, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: z}}
      podSelector: {matchLabels: {pod: c}}
    ports: [{port: 81}]
";
    truth(yaml, |s, d, port| s.0 == "y" && d.0 == "x" && port == 80);
}

#[test]
fn a_default_deny_network_policy_is_not_refused_as_empty() {
    let p = policy(DENY_INGRESS_X);
    let opts = CompileOptions::default();
    let compiled = compile(&p, &opts).unwrap();
    assert!(crate::policy::lockout_problems(&p, &compiled, &opts).is_empty());
}

#[test]
fn objects_text_is_what_kubectl_prints() {
    // The List above round-trips through the objects reader: 3 namespaces,
    // 9 pods with their named port.
    let (c, text) = cluster();
    assert!(text.starts_with("apiVersion: v1\nkind: List"));
    assert_eq!(c.namespaces.len(), 3);
    assert_eq!(c.pods.len(), 9);
    assert!(c.pods.iter().all(|p| p.ports.len() == 1));
}

/// Without policyTypes (or with an empty list) the API server defaults to
/// Ingress, plus Egress only when there is an egress rule: an empty
/// `egress: []` isolates nothing.
#[test]
fn policy_types_default_as_the_api_server_does() {
    let empty_egress = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-types, namespace: x}
spec: {podSelector: {}, ingress: [], egress: []}
";
    truth(empty_egress, |_, (dns, _), _| dns != "x");
    let egress_rule = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: empty-types, namespace: x}
spec: {podSelector: {}, policyTypes: [], egress: [{ports: [{port: 81}]}]}
";
    truth(egress_rule, |(sns, _), (dns, _), port| {
        (sns != "x" || port == 81) && dns != "x"
    });
}

/// An ipBlock without except is a literal prefix: it must reach the
/// identities like a native rule's literal CIDR does.
#[test]
fn ip_block_without_except() {
    let yaml = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-x-range, namespace: y}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.1.0.0/16}}]}]
";
    truth(yaml, |(sns, _), (dns, _), _| dns != "y" || sns == "x");
}

/// A named port resolves on the destination pod whatever peer matched it,
/// an ipBlock covering pod addresses included.
#[test]
fn named_port_through_an_ip_block() {
    let yaml = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-y-serve, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.2.0.0/16, except: [10.2.0.3/32]}}], ports: [{port: serve-80}]}]
";
    truth(yaml, |(sns, _), (dns, dpod), port| {
        sns != "x" || (dns == "y" && dpod != "c" && port == 80)
    });
}

/// One port name listed twice, and under two protocols, is one port per
/// protocol (the pods give `serve-80` for TCP only).
#[test]
fn a_port_name_repeated_or_under_two_protocols() {
    let yaml = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: serve, namespace: y}
spec:
  podSelector: {}
  ingress: [{ports: [{port: serve-80}, {protocol: UDP, port: serve-80}, {port: serve-80}]}]
";
    truth(yaml, |_, (dns, _), port| dns != "y" || port == 80);
}
