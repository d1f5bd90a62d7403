//! The source check's view of the node: which enforced interfaces are pod
//! interfaces and which are uplinks, and the addresses routed to each pod
//! interface. Re-read from the routes on every link or route event and host
//! tick, and written to the datapath's `SOURCES` map when it changed.
//!
//! The rule: an enforced interface is an uplink when `--uplink` names it
//! (or, without `--uplink`, when it holds a default route); every other
//! enforced interface is a pod interface and owns exactly the addresses of
//! the main table's host routes (/32, /128) through it. With Kubernetes
//! identity on, a route alone is not enough: the address must also be held
//! by a pod of this node, so an interface whose pod object has not arrived
//! (or was deleted) fails closed, and a deleted pod's address is released
//! with the reload that removes the pod.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::Context as _;
use log::{info, warn};

use crate::{
    cli::RunArgs,
    datapath::{Datapath, IfaceRole, SourcePlan},
    host::{ifaces, routes},
    policy::Cluster,
};
use agent_common::{SRC_ORIGIN_KUBE, SRC_ORIGIN_ROUTE};

/// What the agent remembers between refreshes.
#[derive(Debug, Default)]
pub(super) struct Sources {
    /// With Kubernetes identity on: this node's name and the addresses of
    /// its pods as the last enforced policy saw them (`None` until the
    /// first objects are read).
    node: Option<String>,
    pods: Option<BTreeSet<IpAddr>>,
    /// Interfaces seen holding the default route (without `--uplink`): they
    /// stay uplinks while they exist, so a default route withdrawn for a
    /// moment does not turn the node's uplink into a pod interface.
    seen_uplinks: BTreeMap<u32, String>,
    /// The plan last written.
    written: Option<SourcePlan>,
}

/// The node as the plan needs it.
pub(super) struct NodeView<'a> {
    /// Enforced interfaces: (name, ifindex).
    pub enforced: &'a [(String, u32)],
    /// `--uplink` patterns (empty: the default route decides).
    pub uplink_patterns: &'a [String],
    /// Interfaces holding a default route now.
    pub default_oifs: &'a BTreeSet<u32>,
    /// Host routes by output interface.
    pub host_routes: &'a BTreeMap<u32, BTreeSet<IpAddr>>,
    /// With Kubernetes identity on: the addresses of this node's pods; a
    /// routed address outside this set is owned by nobody.
    pub pods: Option<&'a BTreeSet<IpAddr>>,
    pub allow_unknown: bool,
}

/// The addresses of the pods running on `node`: host-network pods are the
/// node and finished pods hold nothing, so both have no addresses here.
pub(super) fn node_pod_addresses(cluster: &Cluster, node: &str) -> BTreeSet<IpAddr> {
    cluster
        .pods
        .iter()
        .filter(|p| p.node_name.as_deref() == Some(node) && !p.host_network)
        .flat_map(|p| p.ips.iter().copied())
        .collect()
}

impl Sources {
    /// Sources for an agent whose pods are those Kubernetes places on
    /// `node` (`None`: no Kubernetes identity, routes alone decide).
    pub(super) fn new(node: Option<String>) -> Self {
        Sources {
            node,
            ..Sources::default()
        }
    }

    /// Takes the pods of the objects just enforced; the next `refresh`
    /// writes what they change.
    pub(super) fn learn_pods(&mut self, cluster: Option<&Cluster>) {
        if let (Some(node), Some(cluster)) = (&self.node, cluster) {
            self.pods = Some(node_pod_addresses(cluster, node));
        }
    }

    /// The plan for `view`; remembers default-route uplinks.
    pub(super) fn plan(&mut self, view: &NodeView) -> anyhow::Result<SourcePlan> {
        let names: Vec<String> = view.enforced.iter().map(|(n, _)| n.clone()).collect();
        let named = if view.uplink_patterns.is_empty() {
            Vec::new()
        } else {
            ifaces::select(view.uplink_patterns, &names).context("bad --uplink pattern")?
        };
        // Forget interfaces that went away (or were re-created).
        self.seen_uplinks
            .retain(|i, n| view.enforced.iter().any(|(en, ei)| ei == i && en == n));
        let mut plan = SourcePlan {
            allow_unknown: view.allow_unknown,
            ..SourcePlan::default()
        };
        for (name, ifindex) in view.enforced {
            let uplink = if view.uplink_patterns.is_empty() {
                if view.default_oifs.contains(ifindex) {
                    self.seen_uplinks.insert(*ifindex, name.clone());
                }
                self.seen_uplinks.contains_key(ifindex)
            } else {
                named.contains(name)
            };
            if uplink {
                plan.roles.insert(*ifindex, IfaceRole::Uplink);
                continue;
            }
            plan.roles.insert(*ifindex, IfaceRole::Pod);
            for a in view.host_routes.get(ifindex).into_iter().flatten() {
                match view.pods {
                    None => plan.own(*ifindex, *a, SRC_ORIGIN_ROUTE),
                    Some(pods) if pods.contains(a) => {
                        plan.own(*ifindex, *a, SRC_ORIGIN_ROUTE | SRC_ORIGIN_KUBE)
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(plan)
    }

    /// Reads the interfaces and routes and writes the plan when it changed.
    /// Run before interfaces are attached, so a new pod interface is
    /// checked from its first packet.
    pub(super) fn refresh(&mut self, dp: &mut Datapath, args: &RunArgs) -> anyhow::Result<()> {
        let available = ifaces::list().context("listing interfaces")?;
        let enforced: Vec<(String, u32)> = ifaces::select(&args.ifaces, &available)
            .context("bad --iface pattern")?
            .into_iter()
            .filter_map(|n| ifaces::index_of(&n).map(|i| (n, i)))
            .collect();
        let (uplink_patterns, allow_unknown) = (&args.uplinks, args.allow_unknown_endpoints);
        let all = routes::dump().context("reading the node's routes")?;
        let kube = self.node.is_some();
        // Kubernetes identity on but no objects read yet: nobody owns anything.
        let pods = self.pods.clone().or_else(|| kube.then(BTreeSet::new));
        let plan = self.plan(&NodeView {
            enforced: &enforced,
            uplink_patterns,
            default_oifs: &routes::default_route_ifindexes(&all),
            host_routes: &routes::host_routes(&all),
            pods: pods.as_ref(),
            allow_unknown,
        })?;
        if self.written.as_ref() == Some(&plan) {
            return Ok(());
        }
        let sync = dp
            .sync_sources(&plan)
            .context("writing the source check's map")?;
        log_changes(self.written.as_ref(), &plan, &enforced, kube);
        if !enforced.is_empty() && !plan.roles.values().any(|r| *r == IfaceRole::Uplink) {
            warn!(
                "no enforced interface is an uplink (no --uplink, and none holds the default \
                 route): every enforced interface is checked as a pod interface"
            );
        }
        if sync.written + sync.removed > 0 {
            info!(
                "source check: {} entries written, {} removed",
                sync.written, sync.removed
            );
        }
        self.written = Some(plan);
        Ok(())
    }
}

fn log_changes(old: Option<&SourcePlan>, new: &SourcePlan, enforced: &[(String, u32)], kube: bool) {
    let waiting_for = if kube {
        "no address of a pod of this node yet"
    } else {
        "no address yet"
    };
    let describe = |p: Option<&SourcePlan>, i: u32| -> Option<String> {
        let p = p?;
        let role = p.roles.get(&i)?;
        Some(match role {
            IfaceRole::Uplink => "uplink".to_owned(),
            IfaceRole::Pod => {
                let addrs: Vec<String> = p
                    .owned
                    .get(&i)
                    .map(|a| a.keys().map(|a| a.to_string()).collect())
                    .unwrap_or_default();
                if addrs.is_empty() && p.allow_unknown {
                    format!("pod interface, {waiting_for} (not checked: --allow-unknown-endpoints)")
                } else if addrs.is_empty() {
                    format!("pod interface, {waiting_for} (IP traffic dropped as unknown-endpoint)")
                } else {
                    format!("pod interface, sources {}", addrs.join(", "))
                }
            }
        })
    };
    for (name, i) in enforced {
        let now = describe(Some(new), *i);
        if describe(old, *i) != now {
            if let Some(now) = now {
                info!("{name}: {now}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn enforced() -> Vec<(String, u32)> {
        vec![
            ("uplink0".into(), 2),
            ("lxca".into(), 5),
            ("lxcb".into(), 6),
            ("eth1".into(), 8),
        ]
    }

    fn hosts() -> BTreeMap<u32, BTreeSet<IpAddr>> {
        BTreeMap::from([
            (5, BTreeSet::from([ip("10.0.1.10"), ip("fd00::10")])),
            (2, BTreeSet::from([ip("10.0.0.9")])),
        ])
    }

    #[test]
    fn default_route_makes_uplinks_and_sticks() {
        let mut s = Sources::default();
        let e = enforced();
        let h = hosts();
        let oifs = BTreeSet::from([2]);
        let p = s
            .plan(&NodeView {
                enforced: &e,
                uplink_patterns: &[],
                default_oifs: &oifs,
                host_routes: &h,
                pods: None,
                allow_unknown: false,
            })
            .unwrap();
        assert_eq!(p.roles[&2], IfaceRole::Uplink);
        assert_eq!(p.roles[&5], IfaceRole::Pod);
        assert_eq!(p.roles[&6], IfaceRole::Pod);
        assert_eq!(p.roles[&8], IfaceRole::Pod);
        assert_eq!(p.owned[&5].len(), 2);
        // The uplink's own host routes are not pod addresses.
        assert!(!p.owned.contains_key(&2));
        // The default route goes away for a moment: still an uplink.
        let none = BTreeSet::new();
        let p2 = s
            .plan(&NodeView {
                enforced: &e,
                uplink_patterns: &[],
                default_oifs: &none,
                host_routes: &h,
                pods: None,
                allow_unknown: false,
            })
            .unwrap();
        assert_eq!(p2.roles[&2], IfaceRole::Uplink);
        // Re-created under the same name with a new ifindex: forgotten.
        let e2: Vec<(String, u32)> = vec![("uplink0".into(), 12)];
        let p3 = s
            .plan(&NodeView {
                enforced: &e2,
                uplink_patterns: &[],
                default_oifs: &none,
                host_routes: &h,
                pods: None,
                allow_unknown: false,
            })
            .unwrap();
        assert_eq!(p3.roles[&12], IfaceRole::Pod);
    }

    #[test]
    fn named_uplinks_replace_the_default_route() {
        let mut s = Sources::default();
        let e = enforced();
        let h = hosts();
        let oifs = BTreeSet::from([2]);
        let pats = vec!["eth*".to_string(), "uplink0".to_string()];
        let p = s
            .plan(&NodeView {
                enforced: &e,
                uplink_patterns: &pats,
                default_oifs: &oifs,
                host_routes: &h,
                pods: None,
                allow_unknown: false,
            })
            .unwrap();
        assert_eq!(p.roles[&8], IfaceRole::Uplink);
        assert_eq!(p.roles[&2], IfaceRole::Uplink);
        assert_eq!(p.roles[&5], IfaceRole::Pod);
        let only_eth = vec!["eth1".to_string()];
        let p = s
            .plan(&NodeView {
                enforced: &e,
                uplink_patterns: &only_eth,
                default_oifs: &oifs,
                host_routes: &h,
                pods: None,
                allow_unknown: false,
            })
            .unwrap();
        // Named uplinks are the only ones: the default route no longer counts.
        assert_eq!(p.roles[&2], IfaceRole::Pod);
        assert!(s
            .plan(&NodeView {
                enforced: &e,
                uplink_patterns: &["[".to_string()],
                default_oifs: &oifs,
                host_routes: &h,
                pods: None,
                allow_unknown: false,
            })
            .is_err());
    }

    #[test]
    fn with_kubernetes_a_route_needs_a_pod_of_this_node() {
        use crate::policy::{Cluster, Pod};
        let pod = |name: &str, node: Option<&str>, ips: &[&str], host_network: bool| Pod {
            namespace: "ns".into(),
            name: name.into(),
            node_name: node.map(Into::into),
            ips: ips.iter().map(|a| ip(a)).collect(),
            host_network,
            ..Pod::default()
        };
        let cluster = Cluster {
            pods: [
                // lxca's pod, known for IPv4 only.
                pod("a", Some("node-a"), &["10.0.1.10"], false),
                // Another node's pod holding lxcb's routed address.
                pod("b", Some("node-b"), &["10.0.1.20"], false),
                pod("h", Some("node-a"), &["10.0.0.9"], true),
            ]
            .map(std::sync::Arc::new)
            .into(),
            ..Cluster::default()
        };
        let pods = node_pod_addresses(&cluster, "node-a");
        assert_eq!(pods, BTreeSet::from([ip("10.0.1.10")]));
        let e = enforced();
        let mut h = hosts();
        h.insert(6, BTreeSet::from([ip("10.0.1.20")]));
        let oifs = BTreeSet::from([2]);
        let view = |pods| NodeView {
            enforced: &e,
            uplink_patterns: &[],
            default_oifs: &oifs,
            host_routes: &h,
            pods,
            allow_unknown: false,
        };
        let p = Sources::default().plan(&view(Some(&pods))).unwrap();
        assert_eq!(
            p.owned[&5],
            BTreeMap::from([(ip("10.0.1.10"), SRC_ORIGIN_ROUTE | SRC_ORIGIN_KUBE)])
        );
        // Routed, but held by no pod of this node: unknown, and the uplink
        // does not take it for a local pod's address.
        assert!(!p.owned.contains_key(&6));
        assert_eq!(p.pod_addresses(), BTreeSet::from([ip("10.0.1.10")]));
        // No objects yet: nothing is owned.
        let none = BTreeSet::new();
        assert!(Sources::default()
            .plan(&view(Some(&none)))
            .unwrap()
            .owned
            .is_empty());
        // Kubernetes off: the routes alone.
        let p = Sources::default().plan(&view(None)).unwrap();
        assert_eq!(p.owned[&5].len(), 2);
        assert_eq!(p.owned[&6].len(), 1);
    }
}
