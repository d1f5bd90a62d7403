//! A reference evaluator of workload identity (docs/design.md, "Workload
//! identity and how policies combine"): selector groups, native rules and
//! Kubernetes NetworkPolicies over a set of Namespaces and Pods, written from
//! the Kubernetes API reference and that section alone. It keeps its own
//! model of the objects and resolves every peer to the pods it stands for
//! directly, rule by rule: no identities, no side rules, nothing of
//! `netpol_agent::policy`.
//!
//! The semantics, as implemented here:
//! - a label selector matches when every `matchLabels` pair is present and
//!   every expression holds (`In`: present with a listed value; `NotIn`:
//!   absent or not listed; `Exists`; `DoesNotExist`); an empty one matches
//!   everything; a namespace carries `kubernetes.io/metadata.name`;
//! - a NetworkPolicy selects the pods of its namespace its podSelector
//!   matches; its types are `policyTypes`, or Ingress plus Egress when it has
//!   egress rules;
//! - a peer is an ipBlock (inside the cidr, in no except: any address) or
//!   pods: podSelector alone in the policy's namespace, namespaceSelector
//!   alone in every matching namespace, both ANDed; no peer list: every
//!   address. A port is a protocol with every port, one port, a range up to
//!   endPort, or a name resolved on the destination pod (same protocol);
//!   no port list: everything;
//! - native rules: `from` x `to` on their ports, `within` each group to
//!   itself; groups are CIDRs minus excepts, or the pods a namespace (or
//!   namespace selector) and pod selector pick; `world` is every address in
//!   no group that is no pod and not the node's;
//! - the node's addresses pass both ways (the built-in host rules), except
//!   tunnels to the node (`reference::is_tunnel`) from elsewhere, which the
//!   other rules judge (`nodes` is the node's addresses here);
//! - with native rules every pod is isolated both ways, and a matching
//!   native rule allows both ends' sides; otherwise a pod is isolated in a
//!   direction when a policy of that type selects it. A pod's side allows
//!   when it is not isolated, or a native rule matches, or a rule of a policy
//!   selecting it allows the other end and port. Pod to pod needs both sides,
//!   a pod and a non-pod the pod's side only, two non-pods a native rule.
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::reference::{inside, is_tunnel};

pub type Labels = BTreeMap<String, String>;
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub labels: Labels,
    pub exprs: Vec<Expr>,
}

impl Selector {
    pub fn matches(&self, l: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| l.get(k) == Some(v))
            && self.exprs.iter().all(|e| {
                let have = l.get(&e.key);
                match e.op {
                    Op::In => have.is_some_and(|v| e.values.contains(v)),
                    Op::NotIn => !have.is_some_and(|v| e.values.contains(v)),
                    Op::Exists => have.is_some(),
                    Op::DoesNotExist => have.is_none(),
                }
            })
    }
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    /// Named container ports: (name, protocol, port).
    pub ports: Vec<(String, u8, u16)>,
}

#[derive(Clone, Debug)]
pub enum NpPeer {
    IpBlock {
        cidr: IpNet,
        except: Vec<IpNet>,
    },
    Pods {
        pods: Option<Selector>,
        namespaces: Option<Selector>,
    },
}

#[derive(Clone, Debug)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug)]
pub struct NpPort {
    pub proto: u8,
    pub port: Option<PortRef>,
    pub end_port: Option<u16>,
}

#[derive(Clone, Debug, Default)]
pub struct NpRule {
    /// `None`: the list is absent (every peer).
    pub peers: Option<Vec<NpPeer>>,
    /// `None`: the list is absent (every port).
    pub ports: Option<Vec<NpPort>>,
}

#[derive(Clone, Debug)]
pub struct NetPol {
    pub namespace: String,
    pub name: String,
    pub pod_selector: Selector,
    pub types: Option<(bool /* ingress */, bool /* egress */)>,
    pub ingress: Option<Vec<NpRule>>,
    pub egress: Option<Vec<NpRule>>,
}

impl NetPol {
    fn types(&self) -> (bool, bool) {
        self.types
            .unwrap_or((true, self.egress.as_ref().is_some_and(|e| !e.is_empty())))
    }
}

#[derive(Clone, Debug)]
pub enum GroupDef {
    Cidrs {
        cidrs: Vec<IpNet>,
        except: Vec<IpNet>,
    },
    Pods {
        /// `Ok(name)`: one namespace; `Err(selector)`: namespaces by labels.
        namespace: Result<String, Selector>,
        pods: Option<Selector>,
    },
}

#[derive(Clone, Debug)]
pub enum Peer {
    Any,
    World,
    Host,
    Group(String),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub from: Vec<Peer>,
    pub to: Vec<Peer>,
    /// (protocol, inclusive range; `None`: every port); empty: everything.
    pub ports: Vec<(u8, Option<(u16, u16)>)>,
    pub within: bool,
}

/// Everything a verdict depends on.
#[derive(Clone, Debug, Default)]
pub struct Workloads {
    /// Namespace name to its labels (the name label is added here).
    pub namespaces: BTreeMap<String, Labels>,
    pub pods: Vec<Pod>,
    pub groups: Vec<(String, GroupDef)>,
    pub rules: Vec<Rule>,
    pub netpols: Vec<NetPol>,
    pub host: Vec<IpAddr>,
}

impl Workloads {
    fn ns_labels(&self, ns: &str) -> Labels {
        let mut l = self.namespaces.get(ns).cloned().unwrap_or_default();
        l.insert(NAME_LABEL.into(), ns.into());
        l
    }

    pub fn pod_at(&self, a: IpAddr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.ips.contains(&a))
    }

    fn in_group(&self, def: &GroupDef, a: IpAddr) -> bool {
        match def {
            GroupDef::Cidrs { cidrs, except } => {
                cidrs.iter().any(|n| inside(n, a)) && !except.iter().any(|n| inside(n, a))
            }
            GroupDef::Pods { namespace, pods } => self.pod_at(a).is_some_and(|p| {
                let ns_ok = match namespace {
                    Ok(n) => &p.namespace == n,
                    Err(sel) => sel.matches(&self.ns_labels(&p.namespace)),
                };
                ns_ok && pods.as_ref().is_none_or(|s| s.matches(&p.labels))
            }),
        }
    }

    fn peer_has(&self, peer: &Peer, a: IpAddr) -> bool {
        match peer {
            Peer::Any => true,
            Peer::Host => self.host.contains(&a),
            Peer::World => {
                !self.host.contains(&a)
                    && self.pod_at(a).is_none()
                    && !self.groups.iter().any(|(_, g)| self.in_group(g, a))
            }
            Peer::Group(name) => self
                .groups
                .iter()
                .any(|(n, g)| n == name && self.in_group(g, a)),
        }
    }

    fn native_allows(&self, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> bool {
        self.rules.iter().any(|r| {
            if r.within {
                return r
                    .from
                    .iter()
                    .any(|p| self.peer_has(p, src) && self.peer_has(p, dst));
            }
            let port_ok = r.ports.is_empty()
                || r.ports.iter().any(|(p, range)| {
                    *p == proto && range.is_none_or(|(lo, hi)| lo <= port && port <= hi)
                });
            port_ok
                && r.from.iter().any(|p| self.peer_has(p, src))
                && r.to.iter().any(|p| self.peer_has(p, dst))
        })
    }

    fn selects(&self, np: &NetPol, pod: &Pod) -> bool {
        pod.namespace == np.namespace && np.pod_selector.matches(&pod.labels)
    }

    fn np_peer_has(&self, np: &NetPol, peer: &NpPeer, a: IpAddr) -> bool {
        match peer {
            NpPeer::IpBlock { cidr, except } => {
                inside(cidr, a) && !except.iter().any(|n| inside(n, a))
            }
            NpPeer::Pods { pods, namespaces } => self.pod_at(a).is_some_and(|p| {
                let ns_ok = match namespaces {
                    None => p.namespace == np.namespace,
                    Some(sel) => sel.matches(&self.ns_labels(&p.namespace)),
                };
                ns_ok && pods.as_ref().is_none_or(|s| s.matches(&p.labels))
            }),
        }
    }

    fn np_port_has(port: &NpPort, dst_pod: Option<&Pod>, proto: u8, n: u16) -> bool {
        if port.proto != proto {
            return false;
        }
        match &port.port {
            None => true,
            Some(PortRef::Number(p)) => match port.end_port {
                Some(end) => *p <= n && n <= end,
                None => *p == n,
            },
            Some(PortRef::Name(name)) => dst_pod.is_some_and(|d| {
                d.ports
                    .iter()
                    .any(|(pn, pp, num)| pn == name && *pp == proto && *num == n)
            }),
        }
    }

    /// Whether `pod`'s side in `egress` (or ingress) direction allows talking
    /// with `other` on `proto`/`port` (the destination's port).
    fn side_allows(
        &self,
        pod: &Pod,
        egress: bool,
        other: IpAddr,
        proto: u8,
        port: u16,
        native_match: bool,
    ) -> bool {
        // Named ports resolve on the destination: the other end for egress.
        let dst_pod = if egress {
            self.pod_at(other)
        } else {
            Some(pod)
        };
        let native = !self.rules.is_empty();
        let policies: Vec<&NetPol> = self
            .netpols
            .iter()
            .filter(|np| {
                let (i, e) = np.types();
                (if egress { e } else { i }) && self.selects(np, pod)
            })
            .collect();
        if !native && policies.is_empty() {
            return true;
        }
        if native_match {
            return true;
        }
        policies.iter().any(|np| {
            let rules = if egress { &np.egress } else { &np.ingress };
            rules.iter().flatten().any(|r| {
                let peer_ok = r
                    .peers
                    .as_ref()
                    .is_none_or(|ps| ps.iter().any(|p| self.np_peer_has(np, p, other)));
                let port_ok = r.ports.as_ref().is_none_or(|ps| {
                    ps.iter()
                        .any(|p| Self::np_port_has(p, dst_pod, proto, port))
                });
                peer_ok && port_ok
            })
        })
    }

    /// Whether a packet opening a flow from `src` to `dst` is allowed.
    pub fn allows(&self, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> bool {
        let tunnel = is_tunnel(proto, port);
        if self.host.contains(&src) || (self.host.contains(&dst) && !tunnel) {
            return true;
        }
        let native_match = self.native_allows(src, dst, proto, port);
        let (sp, dp) = (self.pod_at(src), self.pod_at(dst));
        let egress = |s: &Pod| self.side_allows(s, true, dst, proto, port, native_match);
        let ingress = |d: &Pod| self.side_allows(d, false, src, proto, port, native_match);
        match (sp, dp) {
            (None, None) => native_match,
            (Some(s), None) => egress(s),
            (None, Some(d)) => ingress(d),
            (Some(s), Some(d)) => egress(s) && ingress(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)], addr: &str) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            labels: l(labels),
            ips: vec![ip(addr)],
            ports: vec![("http".into(), 6, 80)],
        }
    }

    fn world() -> Workloads {
        Workloads {
            namespaces: BTreeMap::from([("x".into(), l(&[("team", "a")])), ("y".into(), l(&[]))]),
            pods: vec![
                pod("x", "a", &[("app", "a")], "10.0.0.1"),
                pod("x", "b", &[("app", "b")], "10.0.0.2"),
                pod("y", "a", &[("app", "a")], "10.0.0.3"),
            ],
            host: vec![ip("10.0.9.1")],
            ..Workloads::default()
        }
    }

    #[test]
    fn selectors_follow_kubernetes() {
        let sel = Selector {
            exprs: vec![Expr {
                key: "app".into(),
                op: Op::NotIn,
                values: vec!["a".into()],
            }],
            ..Selector::default()
        };
        assert!(sel.matches(&l(&[])));
        assert!(sel.matches(&l(&[("app", "b")])));
        assert!(!sel.matches(&l(&[("app", "a")])));
        assert!(Selector::default().matches(&l(&[("x", "y")])));
    }

    #[test]
    fn isolation_needs_both_sides() {
        let mut w = world();
        // No policy: everything open between pods, nothing between non-pods.
        assert!(w.allows(ip("10.0.0.1"), ip("10.0.0.3"), 6, 80));
        assert!(!w.allows(ip("192.168.0.1"), ip("192.168.0.2"), 6, 80));
        // x/b only from app=a of its namespace, on the named port.
        w.netpols.push(NetPol {
            namespace: "x".into(),
            name: "b".into(),
            pod_selector: Selector {
                labels: l(&[("app", "b")]),
                ..Selector::default()
            },
            types: None,
            ingress: Some(vec![NpRule {
                peers: Some(vec![NpPeer::Pods {
                    pods: Some(Selector {
                        labels: l(&[("app", "a")]),
                        ..Selector::default()
                    }),
                    namespaces: None,
                }]),
                ports: Some(vec![NpPort {
                    proto: 6,
                    port: Some(PortRef::Name("http".into())),
                    end_port: None,
                }]),
            }]),
            egress: None,
        });
        assert!(w.allows(ip("10.0.0.1"), ip("10.0.0.2"), 6, 80));
        assert!(!w.allows(ip("10.0.0.1"), ip("10.0.0.2"), 6, 81));
        assert!(!w.allows(ip("10.0.0.3"), ip("10.0.0.2"), 6, 80));
        assert!(w.allows(ip("10.0.9.1"), ip("10.0.0.2"), 6, 81));
        // A native rule isolates everything else.
        w.rules.push(Rule {
            name: "r".into(),
            from: vec![Peer::World],
            to: vec![Peer::Any],
            ports: vec![(17, None)],
            within: false,
        });
        assert!(!w.allows(ip("10.0.0.1"), ip("10.0.0.3"), 6, 80));
        assert!(w.allows(ip("192.168.0.1"), ip("10.0.0.3"), 17, 5));
        assert!(!w.allows(ip("10.0.0.1"), ip("10.0.0.3"), 17, 5));
    }
}
