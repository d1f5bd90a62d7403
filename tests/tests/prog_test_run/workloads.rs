//! NetworkPolicy with the Kubernetes objects, judged by the kernel: the
//! combined egress/ingress semantics compiled into the maps give the
//! programs the verdicts Kubernetes defines, for every pod pair of the e2e
//! suite's layout (namespaces x, y, z; pods a, b, c) on ports 80 and 81.
//! `e2e_cases_in_the_kernel` transcribes the cases of the Kubernetes e2e
//! netpol suite (test/e2e/network/netpol) with their truth tables, each
//! checked over TCP, UDP and SCTP.

use agent_common::reason::*;
use netpol_agent::policy::{self, compile, merge, objects_from_str, CompileOptions};
use netpol_tests::e2e_netpol::{self, ip, NAMESPACES, PODS};
use netpol_tests::packet::{Packet, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TCP_SYN};
use netpol_tests::progrun::Bench;
use netpol_tests::progrun::Want::{Drop, Pass};

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
    let (cluster, _) = objects_from_str("objects.yaml", &e2e_netpol::objects(None)).unwrap();
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

/// Every e2e case, every pod pair, TCP, UDP and SCTP on ports 80 and 81,
/// through the XDP program.
#[test]
fn e2e_cases_in_the_kernel() {
    let (cluster, _) = objects_from_str("objects.yaml", &e2e_netpol::objects(None)).unwrap();
    let Some(mut b) = Bench::new("e2e_cases_in_the_kernel", "") else {
        return;
    };
    // Source ports never repeat, so no flow finds another's conntrack entry.
    let mut sport = 10000u16;
    let mut checked = 0;
    for (case, yaml, truth) in e2e_netpol::cases() {
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
    assert_eq!(checked, e2e_netpol::cases().len() * 72 * 6);
}
