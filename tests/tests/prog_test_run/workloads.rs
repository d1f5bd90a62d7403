//! NetworkPolicy with the Kubernetes objects, judged by the kernel: the
//! combined egress/ingress semantics compiled into the maps give the
//! programs the verdicts Kubernetes defines, for every pod pair of the e2e
//! suite's layout (namespaces x, y, z; pods a, b, c) on ports 80 and 81.
//! `e2e_cases_in_the_kernel` transcribes the cases of the Kubernetes e2e
//! netpol suite (test/e2e/network/netpol) with their truth tables, each
//! checked over TCP, UDP and SCTP.

use agent_common::reason::*;
use netpol_agent::policy::{self, compile, merge, objects_from_str, CompileOptions};
use netpol_tests::packet::{Packet, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TCP_SYN};
use netpol_tests::progrun::Bench;
use netpol_tests::progrun::Want::{Drop, Pass};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn ip(ns: &str, pod: &str) -> String {
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap() + 1;
    let p = PODS.iter().position(|x| *x == pod).unwrap() + 1;
    format!("10.{n}.0.{p}")
}

fn objects() -> String {
    let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for ns in NAMESPACES {
        text += &format!("- {{kind: Namespace, metadata: {{name: {ns}, labels: {{ns: {ns}}}}}}}\n");
        for pod in PODS {
            text += &format!(
                "- {{kind: Pod, metadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}, \
                 spec: {{containers: [{{name: c, ports: [{{name: serve-80, containerPort: 80}}, \
                 {{name: serve-81-udp, containerPort: 81, protocol: UDP}}]}}]}}, \
                 status: {{podIP: {}}}}}\n",
                ip(ns, pod)
            );
        }
    }
    text
}

/// Both sides must allow between isolated pods; y/b's egress is limited to
/// x/a on the named port; x/a accepts only y/b.
const BOTH_SIDES: &str = "
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
    ports: [{port: serve-80}]
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

#[test]
fn network_policy_sides_in_the_kernel() {
    let (cluster, _) = objects_from_str("objects.yaml", &objects()).unwrap();
    let (_, netpols) = objects_from_str("np.yaml", BOTH_SIDES).unwrap();
    let mut p = merge(netpols).unwrap();
    policy::with_cluster(&mut p, &cluster);
    let compiled = compile(&p, &CompileOptions::default()).unwrap();
    let Some(mut b) = Bench::new("network_policy_sides_in_the_kernel", "") else {
        return;
    };
    b.apply_compiled(&compiled);
    let mut sport = 40000;
    let mut checked = 0;
    for sns in NAMESPACES {
        for spod in PODS {
            for dns in NAMESPACES {
                for dpod in PODS {
                    if (sns, spod) == (dns, dpod) {
                        continue;
                    }
                    for port in [80, 81] {
                        let (s, d) = ((sns, spod), (dns, dpod));
                        let egress_ok = s != ("y", "b") || (d == ("x", "a") && port == 80);
                        let ingress_ok = d != ("x", "a") || s == ("y", "b");
                        let want = if egress_ok && ingress_ok {
                            Pass(PASS_POLICY)
                        } else {
                            Drop(DROP_POLICY)
                        };
                        sport += 1;
                        let scenario = format!("{sns}/{spod} -> {dns}/{dpod} tcp/{port}");
                        let frame =
                            Packet::ip(&ip(sns, spod), &ip(dns, dpod)).tcp(sport, port, TCP_SYN);
                        b.xdp(&scenario, &frame, want);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 144);
}

type End<'a> = (&'a str, &'a str);
type Truth = fn(End, End, u8, u16) -> bool;

const NP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n";

/// The e2e suite's cases: (name, NetworkPolicies, who may reach whom).
/// Pods are labelled `pod: <name>`, namespaces `ns: <name>`; every pod
/// serves the named ports `serve-80` (TCP 80) and `serve-81-udp` (UDP 81).
fn e2e_cases() -> Vec<(&'static str, String, Truth)> {
    vec![
        (
            "default deny ingress",
            format!("{NP}metadata: {{name: deny, namespace: x}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress]}}"),
            (|_, d, _, _| d.0 != "x") as Truth,
        ),
        (
            "default deny egress",
            format!("{NP}metadata: {{name: deny, namespace: x}}\nspec: {{podSelector: {{}}, policyTypes: [Egress]}}"),
            |s, _, _, _| s.0 != "x",
        ),
        (
            "default deny ingress and egress",
            format!("{NP}metadata: {{name: deny, namespace: x}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}"),
            |s, d, _, _| s.0 != "x" && d.0 != "x",
        ),
        (
            "podSelector: x/a from pods b of its namespace",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]"),
            |s, d, _, _| d != ("x", "a") || s == ("x", "b"),
        ),
        (
            "namespaceSelector: x/a from namespace y",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]}}]"),
            |s, d, _, _| d != ("x", "a") || s.0 == "y",
        ),
        (
            "both in one peer (AND): x/a from y/b only",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: b}}}}}}]}}]"),
            |s, d, _, _| d != ("x", "a") || s == ("y", "b"),
        ),
        (
            "two peers (OR): x/a from namespace y or pods c of x",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}, {{podSelector: {{matchLabels: {{pod: c}}}}}}]}}]"),
            |s, d, _, _| d != ("x", "a") || s.0 == "y" || s == ("x", "c"),
        ),
        (
            "matchExpressions: x/a from namespaces not in [y], pods in [b, c]",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [a]}}]}}\n  ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: ns, operator: NotIn, values: [y]}}]}}, podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b, c]}}]}}}}]}}]"),
            |s, d, _, _| d != ("x", "a") || (s.0 != "y" && s.1 != "a"),
        ),
        (
            "named ports: x/a on serve-80 (TCP) and serve-81-udp (UDP)",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{ports: [{{port: serve-80}}, {{protocol: UDP, port: serve-81-udp}}]}}]"),
            |_, d, proto, port| {
                d != ("x", "a") || (proto, port) == (PROTO_TCP, 80) || (proto, port) == (PROTO_UDP, 81)
            },
        ),
        (
            "endPort: x/a on TCP 80-81, UDP 81-90",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{ports: [{{protocol: TCP, port: 80, endPort: 81}}, {{protocol: UDP, port: 81, endPort: 90}}]}}]"),
            |_, d, proto, port| d != ("x", "a") || proto == PROTO_TCP || (proto == PROTO_UDP && port == 81),
        ),
        (
            "ipBlock with except: x/a's egress to 10.0.0.0/8 except namespace y's range",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress: [{{to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.2.0.0/16]}}}}]}}]"),
            |s, d, _, _| s != ("x", "a") || d.0 != "y",
        ),
        (
            "several policies on one pod: x/a from y on 80, from z on 81",
            format!("{NP}metadata: {{name: p1, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: 80}}]}}]\n---\n{NP}metadata: {{name: p2, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: z}}}}}}], ports: [{{port: 81}}]}}]"),
            |s, d, proto, port| {
                d != ("x", "a")
                    || (proto == PROTO_TCP && ((s.0 == "y" && port == 80) || (s.0 == "z" && port == 81)))
            },
        ),
        (
            "policyTypes without rules: x/a isolated for egress with no egress rule",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]}}]"),
            |s, d, _, _| s != ("x", "a") && (d != ("x", "a") || s.0 == "y"),
        ),
        (
            "UDP only: x/a on UDP 81",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{ports: [{{protocol: UDP, port: 81}}]}}]"),
            |_, d, proto, port| d != ("x", "a") || (proto, port) == (PROTO_UDP, 81),
        ),
        (
            "SCTP only: x/a on SCTP 80",
            format!("{NP}metadata: {{name: p, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{ports: [{{protocol: SCTP, port: 80}}]}}]"),
            |_, d, proto, port| d != ("x", "a") || (proto, port) == (PROTO_SCTP, 80),
        ),
        (
            "egress and ingress sides both: y/b out to x/a only, x/a in from namespace y",
            format!("{NP}metadata: {{name: out, namespace: y}}\nspec:\n  podSelector: {{matchLabels: {{pod: b}}}}\n  policyTypes: [Egress]\n  egress: [{{to: [{{namespaceSelector: {{matchLabels: {{ns: x}}}}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]\n---\n{NP}metadata: {{name: in, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]}}]"),
            |s, d, _, _| (s != ("y", "b") || d == ("x", "a")) && (d != ("x", "a") || s.0 == "y"),
        ),
    ]
}

/// Every e2e case, every pod pair, TCP, UDP and SCTP on ports 80 and 81,
/// through the XDP program.
#[test]
fn e2e_cases_in_the_kernel() {
    let (cluster, _) = objects_from_str("objects.yaml", &objects()).unwrap();
    let Some(mut b) = Bench::new("e2e_cases_in_the_kernel", "") else {
        return;
    };
    // Source ports never repeat, so no flow finds another's conntrack entry.
    let mut sport = 10000u16;
    let mut checked = 0;
    for (case, yaml, truth) in e2e_cases() {
        let (_, netpols) =
            objects_from_str("np.yaml", &yaml).unwrap_or_else(|e| panic!("{case}: {e}\n{yaml}"));
        let mut p = merge(netpols).unwrap();
        policy::with_cluster(&mut p, &cluster);
        let compiled =
            compile(&p, &CompileOptions::default()).unwrap_or_else(|e| panic!("{case}: {e}"));
        b.apply_compiled(&compiled);
        for sns in NAMESPACES {
            for spod in PODS {
                for dns in NAMESPACES {
                    for dpod in PODS {
                        if (sns, spod) == (dns, dpod) {
                            continue;
                        }
                        for proto in [PROTO_TCP, PROTO_UDP, PROTO_SCTP] {
                            for port in [80, 81] {
                                let want = if truth((sns, spod), (dns, dpod), proto, port) {
                                    Pass(PASS_POLICY)
                                } else {
                                    Drop(DROP_POLICY)
                                };
                                sport += 1;
                                let base = Packet::ip(&ip(sns, spod), &ip(dns, dpod));
                                let frame = match proto {
                                    PROTO_TCP => base.tcp(sport, port, TCP_SYN),
                                    PROTO_UDP => base.udp(sport, port),
                                    _ => base.sctp(sport, port),
                                };
                                let scenario =
                                    format!("{case}: {sns}/{spod} -> {dns}/{dpod} {proto}/{port}");
                                b.xdp(&scenario, &frame, want);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, e2e_cases().len() * 72 * 6);
}
