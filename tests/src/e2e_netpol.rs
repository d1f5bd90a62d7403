//! The layout and cases of the Kubernetes e2e netpol suite
//! (test/e2e/network/netpol in kubernetes/kubernetes), shared by the kernel
//! test (every case through BPF_PROG_TEST_RUN, TCP, UDP and SCTP) and the
//! lab (every case with real sockets through the running agent).
//!
//! Namespaces x, y, z, each labelled `ns: <name>`; pods a, b, c in each,
//! labelled `pod: <name>`, serving the named ports `serve-80` (TCP 80) and
//! `serve-81-udp` (UDP 81).
use crate::packet::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];

fn index(ns: &str, pod: &str) -> (usize, usize) {
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap() + 1;
    let p = PODS.iter().position(|x| *x == pod).unwrap() + 1;
    (n, p)
}

/// The pod's IPv4 address: 10.<namespace>.0.<pod>, 1-based.
pub fn ip(ns: &str, pod: &str) -> String {
    let (n, p) = index(ns, pod);
    format!("10.{n}.0.{p}")
}

/// The pod's IPv6 address: fd01:<namespace>::<pod>.
pub fn ip6(ns: &str, pod: &str) -> String {
    let (n, p) = index(ns, pod);
    format!("fd01:{n}::{p}")
}

/// The namespaces and pods as a `kind: List`, the pods on `node` (their
/// `spec.nodeName`) when given.
pub fn objects(node: Option<&str>) -> String {
    let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
    let node = node.map_or(String::new(), |n| format!("nodeName: {n}, "));
    for ns in NAMESPACES {
        text += &format!("- {{kind: Namespace, metadata: {{name: {ns}, labels: {{ns: {ns}}}}}}}\n");
        for pod in PODS {
            text += &format!(
                "- {{kind: Pod, metadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}, \
                 spec: {{{node}containers: [{{name: c, ports: [{{name: serve-80, containerPort: 80}}, \
                 {{name: serve-81-udp, containerPort: 81, protocol: UDP}}]}}]}}, \
                 status: {{podIP: {v4}, podIPs: [{{ip: {v4}}}, {{ip: \"{v6}\"}}]}}}}\n",
                v4 = ip(ns, pod),
                v6 = ip6(ns, pod),
            );
        }
    }
    text
}

/// A pod: (namespace, name).
pub type End<'a> = (&'a str, &'a str);
/// Whether a packet from one pod to another, of an IP protocol to a port,
/// is allowed.
pub type Truth = fn(End, End, u8, u16) -> bool;

pub const NP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n";

/// The e2e suite's cases: (name, NetworkPolicies, who may reach whom).
/// Pods are labelled `pod: <name>`, namespaces `ns: <name>`; every pod
/// serves the named ports `serve-80` (TCP 80) and `serve-81-udp` (UDP 81).
pub fn cases() -> Vec<(&'static str, String, Truth)> {
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
