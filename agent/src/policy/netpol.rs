//! NetworkPolicy objects with the Kubernetes objects at hand: podSelector,
//! namespaceSelector and named ports resolved from the pods, and Kubernetes'
//! own semantics, combined with native rules the way Cilium combines its own
//! policies with NetworkPolicy (docs/design.md section 2):
//!
//! - A pod is isolated for ingress (egress) only when a policy of that type
//!   selects it, or when the policy has native rules (they isolate every
//!   workload in both directions).
//! - A connection between two pods needs the source's egress side (unless it
//!   is not egress-isolated) and the destination's ingress side (unless it is
//!   not ingress-isolated). A native rule allows both sides of its traffic.
//! - Traffic between a pod and an address that is no pod is judged on the
//!   pod's side only; between two addresses that are no pods, by native
//!   rules alone.
//!
//! Parsing keeps the Kubernetes structure (`NetworkPolicy`); `lower` turns it
//! into groups of pod addresses and side rules the compiler combines.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::cluster::{Cluster, Pod};
use super::error::Origin;
use super::model::{Group, GroupSelector, NamespaceSelector, Peer, Policy, PortSpec};
use super::parse::{is_null, join, Ctx, Entry};
use super::selection::Selections;
use super::selector::LabelSelector;
use super::yaml::{Kind, Node};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// A port of a NetworkPolicy rule: a number (with `endPort`) or a name that
/// each destination pod's containers give a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NpPort {
    Spec(PortSpec),
    Named { proto: u8, name: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NpPeer {
    /// An ipBlock: a literal prefix, or an anonymous group with its excepts.
    Block(Peer),
    /// Pods: of the namespaces `namespaces` selects (the policy's own when
    /// `None`) whose labels `pods` selects (every pod when `None`).
    Pods {
        namespaces: Option<LabelSelector>,
        pods: Option<LabelSelector>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct NpRule {
    /// `None`: every source (ingress) or destination (egress).
    pub peers: Option<Vec<NpPeer>>,
    /// Empty: every port of every protocol.
    pub ports: Vec<NpPort>,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: LabelSelector,
    /// `None` when the policy does not cover ingress; `Some([])` isolates.
    pub ingress: Option<Vec<NpRule>>,
    pub egress: Option<Vec<NpRule>>,
    pub origin: Origin,
}

impl NetworkPolicy {
    fn rules(&self, dir: Direction) -> Option<&Vec<NpRule>> {
        match dir {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }
}

/// One side of a connection a NetworkPolicy rule allows, over groups the
/// compiler knows: for ingress, traffic from `peers` to the `selected` pods;
/// for egress, from the `selected` pods to `peers`.
#[derive(Clone, Debug, PartialEq)]
pub struct SideRule {
    /// `<namespace>/<policy>/<ingress|egress>[i]`, plus `:<port name>=<n>`
    /// for the part of a named port that resolves to `n`.
    pub name: String,
    pub direction: Direction,
    pub selected: Peer,
    pub peers: Vec<Peer>,
    /// Empty: every port.
    pub ports: Vec<PortSpec>,
    pub origin: Origin,
}

/// What the NetworkPolicies add to a policy, for the compiler.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workloads {
    /// Groups of pods isolated per direction.
    pub isolated: Vec<(Direction, String)>,
    pub sides: Vec<SideRule>,
}

const SPEC_KEYS: &[&str] = &["podSelector", "policyTypes", "ingress", "egress"];
const PEER_KEYS: &[&str] = &["ipBlock", "podSelector", "namespaceSelector"];
const PORT_KEYS: &[&str] = &["protocol", "port", "endPort"];

fn get<'a, 'n>(entries: &'a [Entry<'n>], key: &str) -> Option<&'a Entry<'n>> {
    entries.iter().find(|e| e.key == key)
}

impl Ctx<'_> {
    /// A NetworkPolicy read with the Kubernetes objects at hand: selectors are
    /// kept, not refused.
    pub(super) fn netpol(
        &mut self,
        doc: &Node,
        namespace: String,
        name: String,
        spec: &Node,
    ) -> Option<NetworkPolicy> {
        let entries = self.mapping(spec, "spec", Some(SPEC_KEYS), "a mapping")?;
        let pod_selector = match get(&entries, "podSelector") {
            None => {
                self.err(spec.pos, "spec", "missing \"podSelector\"");
                return None;
            }
            Some(e) => self.label_selector(e.value, "spec.podSelector", false)?,
        };
        let types = self.netpol_types(&entries)?;
        let mut np = NetworkPolicy {
            namespace,
            name,
            pod_selector,
            ingress: None,
            egress: None,
            origin: self.origin(doc.pos, ""),
        };
        let mut ok = true;
        for dir in [Direction::Ingress, Direction::Egress] {
            let section = get(&entries, dir.key());
            let field = join("spec", dir.key());
            if !types.contains(&dir) {
                if let Some(s) = section.filter(|s| !is_empty(s.value)) {
                    let t = if dir == Direction::Ingress {
                        "Ingress"
                    } else {
                        "Egress"
                    };
                    let msg = format!(
                        "policyTypes does not list {t}, so Kubernetes would ignore these rules; add {t} or remove them"
                    );
                    self.err(s.key_node.pos, &field, msg);
                    ok = false;
                }
                continue;
            }
            let mut rules = Vec::new();
            if let Some(s) = section.filter(|s| !is_empty(s.value)) {
                let Kind::Seq(items) = &s.value.kind else {
                    self.expected(s.value, &field, "a list of rules");
                    ok = false;
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let base = format!("netpol/{}/{}/{}[{i}]", np.namespace, np.name, dir.key());
                    match self.np_rule(item, &format!("{field}[{i}]"), dir, &base) {
                        Some(r) => rules.push(r),
                        None => ok = false,
                    }
                }
            }
            match dir {
                Direction::Ingress => np.ingress = Some(rules),
                Direction::Egress => np.egress = Some(rules),
            }
        }
        ok.then_some(np)
    }

    fn netpol_types(&mut self, entries: &[Entry]) -> Option<Vec<Direction>> {
        // The API server's defaulting: no (or an empty) policyTypes is
        // Ingress, plus Egress when there is at least one egress rule; an
        // empty `egress: []` does not isolate egress.
        let Some(e) = get(entries, "policyTypes").filter(|e| !is_empty(e.value)) else {
            let mut out = vec![Direction::Ingress];
            if get(entries, "egress").is_some_and(|e| !is_empty(e.value)) {
                out.push(Direction::Egress);
            }
            return Some(out);
        };
        let mut out = Vec::new();
        for (f, item) in self.items(e.value, "spec.policyTypes", "a list of Ingress, Egress") {
            match self.string(item, &f, "Ingress or Egress").as_deref() {
                Some("Ingress") => out.push(Direction::Ingress),
                Some("Egress") => out.push(Direction::Egress),
                Some(t) => {
                    self.err(item.pos, &f, format!("{t:?}: expected Ingress or Egress"));
                    return None;
                }
                None => return None,
            }
        }
        Some(out)
    }

    fn np_rule(&mut self, node: &Node, field: &str, dir: Direction, base: &str) -> Option<NpRule> {
        let peers_key = match dir {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        let keys = [peers_key, "ports"];
        let entries = self.mapping(node, field, Some(&keys[..]), "a rule")?;
        let peers_field = join(field, peers_key);
        let peers = match get(&entries, peers_key).filter(|e| !is_empty(e.value)) {
            None => None,
            Some(e) => {
                let Kind::Seq(items) = &e.value.kind else {
                    self.expected(e.value, &peers_field, "a list of peers");
                    return None;
                };
                let mut out = Vec::new();
                for (j, item) in items.iter().enumerate() {
                    let f = format!("{peers_field}[{j}]");
                    let anon = format!("{base}.{peers_key}[{j}]");
                    out.push(self.np_peer(item, &f, &anon)?);
                }
                Some(out)
            }
        };
        let mut ports = Vec::new();
        if let Some(e) = get(&entries, "ports").filter(|e| !is_null(e.value)) {
            let pf = join(field, "ports");
            let Kind::Seq(items) = &e.value.kind else {
                self.expected(e.value, &pf, "a list of ports");
                return None;
            };
            for (k, item) in items.iter().enumerate() {
                let p = self.np_port(item, &format!("{pf}[{k}]"))?;
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
        }
        Some(NpRule {
            peers,
            ports,
            origin: self.origin(node.pos, field),
        })
    }

    fn np_peer(&mut self, node: &Node, field: &str, anon: &str) -> Option<NpPeer> {
        let what = "a peer (ipBlock, podSelector, namespaceSelector)";
        let entries = self.mapping(node, field, Some(PEER_KEYS), what)?;
        if let Some(block) = get(&entries, "ipBlock") {
            if entries.len() > 1 {
                let msg = "ipBlock stands alone: Kubernetes refuses it beside a selector";
                self.err(node.pos, field, msg);
                return None;
            }
            return self
                .ip_block(block, &join(field, "ipBlock"), anon)
                .map(NpPeer::Block);
        }
        let sel = |cx: &mut Self, key: &str| -> Option<Option<LabelSelector>> {
            match get(&entries, key) {
                None => Some(None),
                Some(e) => cx
                    .label_selector(e.value, &join(field, key), false)
                    .map(Some),
            }
        };
        let namespaces = sel(self, "namespaceSelector")?;
        let pods = sel(self, "podSelector")?;
        if namespaces.is_none() && pods.is_none() {
            self.err(
                node.pos,
                field,
                "a peer needs ipBlock, podSelector or namespaceSelector",
            );
            return None;
        }
        Some(NpPeer::Pods { namespaces, pods })
    }

    fn np_port(&mut self, node: &Node, field: &str) -> Option<NpPort> {
        let what = "a mapping with protocol, port and endPort";
        let entries = self.mapping(node, field, Some(PORT_KEYS), what)?;
        let proto = match get(&entries, "protocol") {
            None => agent_common::IPPROTO_TCP,
            Some(e) => self.k8s_protocol(e.value, &join(field, "protocol"))?,
        };
        let named = get(&entries, "port").and_then(|e| match &e.value.kind {
            Kind::Scalar(s) if !s.is_int() && !s.is_null() => Some((e, s.text.clone())),
            _ => None,
        });
        if let Some((e, name)) = named {
            if let Some(end) = get(&entries, "endPort") {
                let msg = "endPort needs a numeric port";
                self.err(end.key_node.pos, &join(field, "endPort"), msg);
                return None;
            }
            let _ = e;
            return Some(NpPort::Named { proto, name });
        }
        self.k8s_port(node, field).map(NpPort::Spec)
    }
}

fn is_empty(node: &Node) -> bool {
    is_null(node) || matches!(&node.kind, Kind::Seq(v) if v.is_empty())
}

/// The selector of the pods a NetworkPolicy applies to.
fn selected_selector(np: &NetworkPolicy) -> GroupSelector {
    GroupSelector {
        namespaces: NamespaceSelector::Named(np.namespace.clone()),
        pods: np.pod_selector.clone(),
    }
}

/// The selector of a pod peer, seen from the policy's namespace.
fn peer_selector(
    policy_ns: &str,
    namespaces: &Option<LabelSelector>,
    pods: &Option<LabelSelector>,
) -> GroupSelector {
    GroupSelector {
        namespaces: match namespaces {
            None => NamespaceSelector::Named(policy_ns.to_string()),
            Some(s) => NamespaceSelector::Matching(s.clone()),
        },
        pods: pods.clone().unwrap_or_default(),
    }
}

/// Every selector `lower` resolves for `netpols`.
pub(super) fn selectors(netpols: &[NetworkPolicy]) -> Vec<GroupSelector> {
    let mut out = Vec::new();
    for np in netpols {
        out.push(selected_selector(np));
        for dir in [Direction::Ingress, Direction::Egress] {
            for rule in np.rules(dir).into_iter().flatten() {
                for p in rule.peers.iter().flatten() {
                    if let NpPeer::Pods { namespaces, pods } = p {
                        out.push(peer_selector(&np.namespace, namespaces, pods));
                    }
                }
            }
        }
    }
    out
}

fn addresses<'a>(pods: impl Iterator<Item = &'a Pod>) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = pods
        .flat_map(|p| p.ips.iter().map(|ip| IpNet::from(*ip)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether an ipBlock peer holds `a`: a literal prefix, or the anonymous
/// group a block with excepts became.
fn block_has(policy: &Policy, block: &Peer, a: std::net::IpAddr) -> bool {
    match block {
        Peer::Cidr(n) => n.contains(&a),
        Peer::Group(g) => policy.groups.iter().any(|x| {
            &x.name == g
                && x.cidrs.iter().any(|n| n.contains(&a))
                && !x.except.iter().any(|n| n.contains(&a))
        }),
        _ => false,
    }
}

/// A group of pod addresses the agent makes up for a NetworkPolicy.
fn pods_group(name: String, cidrs: Vec<IpNet>, origin: &Origin) -> Group {
    Group {
        anonymous: true,
        origin: Some(origin.clone()),
        ..Group::new(&name, &cidrs, &[])
    }
}

/// Adds the groups and side rules of `netpols` to `policy`, resolved against
/// `cluster`, whose pods `selections` holds for every selector of
/// `selectors(netpols)`.
pub(super) fn lower(
    policy: &mut Policy,
    netpols: &[NetworkPolicy],
    cluster: &Cluster,
    selections: &Selections,
) {
    let mut w = Workloads::default();
    let at = Index {
        cluster,
        selections,
    };
    for np in netpols {
        let base = format!("{}/{}", np.namespace, np.name);
        let sel = selected_selector(np);
        let sel_name = format!("netpol/{base}");
        policy.groups.push(pods_group(
            sel_name.clone(),
            selections.addresses(&sel),
            &np.origin,
        ));
        for dir in [Direction::Ingress, Direction::Egress] {
            let Some(rules) = np.rules(dir) else { continue };
            w.isolated.push((dir, sel_name.clone()));
            for (i, rule) in rules.iter().enumerate() {
                let name = format!("{base}/{}[{i}]", dir.key());
                lower_rule(policy, &mut w, &at, np, dir, &name, &sel_name, &sel, rule);
            }
        }
    }
    policy.workloads = Some(w);
}

/// What rules are resolved against.
struct Index<'a> {
    cluster: &'a Cluster,
    selections: &'a Selections,
}

#[allow(clippy::too_many_arguments)]
fn lower_rule(
    policy: &mut Policy,
    w: &mut Workloads,
    index: &Index,
    np: &NetworkPolicy,
    dir: Direction,
    name: &str,
    sel_name: &str,
    selected: &GroupSelector,
    rule: &NpRule,
) {
    // Peers as groups; the selectors of pod peers are kept for named ports.
    let mut peers = Vec::new();
    let mut peer_selectors: Vec<GroupSelector> = Vec::new();
    let mut blocks: Vec<&Peer> = Vec::new();
    let mut any_peer = false;
    match &rule.peers {
        None => {
            peers.push(Peer::Any);
            any_peer = true;
        }
        Some(list) => {
            for (j, p) in list.iter().enumerate() {
                match p {
                    NpPeer::Block(peer) => {
                        peers.push(peer.clone());
                        blocks.push(peer);
                    }
                    NpPeer::Pods { namespaces, pods } => {
                        let found = peer_selector(&np.namespace, namespaces, pods);
                        let g = format!("netpol/{name}.peer[{j}]");
                        policy.groups.push(pods_group(
                            g.clone(),
                            index.selections.addresses(&found),
                            &rule.origin,
                        ));
                        peers.push(Peer::Group(g));
                        peer_selectors.push(found);
                    }
                }
            }
        }
    }
    let numbered: Vec<PortSpec> = rule
        .ports
        .iter()
        .filter_map(|p| match p {
            NpPort::Spec(s) => Some(*s),
            NpPort::Named { .. } => None,
        })
        .collect();
    // Deduplicated: a name listed twice is one port.
    let named: BTreeSet<(u8, &str)> = rule
        .ports
        .iter()
        .filter_map(|p| match p {
            NpPort::Named { proto, name } => Some((*proto, name.as_str())),
            NpPort::Spec(_) => None,
        })
        .collect();
    let side = |name: String, selected: Peer, peers: Vec<Peer>, ports: Vec<PortSpec>| SideRule {
        name,
        direction: dir,
        selected,
        peers,
        ports,
        origin: rule.origin.clone(),
    };
    if rule.ports.is_empty() || !numbered.is_empty() {
        w.sides.push(side(
            name.to_string(),
            Peer::Group(sel_name.to_string()),
            peers.clone(),
            numbered,
        ));
    }
    // A named port means, for each destination pod, the number its own
    // containers give that name with that protocol (and nothing for a pod
    // without it, or for an address that is no pod).
    for (proto, port_name) in named {
        let destinations: Vec<&Pod> = match dir {
            Direction::Ingress => index.selections.pods(selected),
            Direction::Egress if any_peer => index.cluster.pods.iter().map(|p| &**p).collect(),
            Direction::Egress => peer_selectors
                .iter()
                .flat_map(|s| index.selections.pods(s))
                .collect(),
        };
        let number_of = |pod: &Pod| {
            pod.ports
                .iter()
                .find(|p| p.name == port_name && p.proto == proto)
                .map(|p| p.port)
        };
        let mut by_number: BTreeMap<u16, Vec<IpNet>> = BTreeMap::new();
        for pod in destinations {
            if let Some(n) = number_of(pod) {
                by_number
                    .entry(n)
                    .or_default()
                    .extend(addresses([pod].into_iter()));
            }
        }
        // A pod an egress ipBlock covers is a destination pod too, through
        // its addresses inside the block only.
        if dir == Direction::Egress && !any_peer {
            for pod in &index.cluster.pods {
                let Some(n) = number_of(pod) else { continue };
                let inside = pod
                    .ips
                    .iter()
                    .filter(|a| blocks.iter().any(|b| block_has(policy, b, **a)))
                    .map(|a| IpNet::from(*a));
                by_number.entry(n).or_default().extend(inside);
            }
        }
        for (number, mut addrs) in by_number {
            addrs.sort();
            addrs.dedup();
            if addrs.is_empty() {
                continue;
            }
            // The protocol too: one name may resolve under several.
            let proto_name = super::ports::proto_name(proto).unwrap_or("ip");
            let part = format!("{name}:{port_name}={number}/{proto_name}");
            let g = format!("netpol/{part}");
            policy
                .groups
                .push(pods_group(g.clone(), addrs, &rule.origin));
            let spec = PortSpec::port(proto, number);
            let s = match dir {
                // Only the selected pods that give the name this number.
                Direction::Ingress => side(part, Peer::Group(g), peers.clone(), vec![spec]),
                // Only the destinations that give the name this number.
                Direction::Egress => side(
                    part,
                    Peer::Group(sel_name.to_string()),
                    vec![Peer::Group(g)],
                    vec![spec],
                ),
            };
            w.sides.push(s);
        }
    }
}
