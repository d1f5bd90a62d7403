//! NetworkPolicy with the Kubernetes objects, judged by the kernel: the
//! combined egress/ingress semantics compiled into the maps give the
//! programs the verdicts Kubernetes defines, for every pod pair of the e2e
//! suite's layout (namespaces x, y, z; pods a, b, c) on ports 80 and 81.

use agent_common::reason::*;
use netpol_agent::policy::{self, compile, merge, objects_from_str, CompileOptions};
use netpol_tests::packet::{Packet, TCP_SYN};
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
                 spec: {{containers: [{{name: c, ports: [{{name: serve-80, containerPort: 80}}]}}]}}, \
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
