//! Why a packet is allowed or denied, rule by rule.
//!
//! The datapath answers with one rule (the most specific trie entry); operators
//! want every rule that allows a packet, and for a denied one the rules that
//! nearly did. So each rule is evaluated on its own over the policy model, with
//! group membership computed from the groups' CIDRs rather than from identities:
//! being independent of the compiler, it also cross-checks `evaluate`.

use std::net::IpAddr;

use agent_common::{IPPROTO_ICMP, IPPROTO_ICMPV6};

use super::compile::{
    builtin_rules, is_encap, CompileOptions, Compiled, ENCAP_REFUSAL, HOST_INGRESS_RULE,
};
use super::evaluate::{evaluate, identity_of, refusing_rule};
use super::identity::IdentityInfo;
use super::model::{Group, Peer, Policy, PortSpec, Rule, BUILTIN_RULE_PREFIX};
use super::ports;

/// A packet that opens a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Destination port; ICMP and ICMPv6: `type << 8 | code`; 0 for protocols
    /// without ports.
    pub port: u16,
}

/// Parses what `explain` takes for a packet's protocol and port: `tcp/443`
/// (or `443/tcp`), `udp/53`, `sctp/3868`, `icmp/8` (code 0), `icmp/3:4`,
/// `icmpv6/128`, or a protocol number without ports (`47`). A protocol with
/// ports needs one: a packet has a single destination port.
pub fn parse_target(text: &str) -> Result<(u8, u16), String> {
    // The policy writes PORT/PROTO; PROTO/PORT reads more naturally for a packet.
    let swapped = match text.split_once('/') {
        Some((l, r)) if ports::parse(l).is_ok_and(|s| s.proto.is_some_and(ports::has_ports)) => {
            format!("{r}/{l}")
        }
        _ => text.to_string(),
    };
    let spec = ports::parse(&swapped)?;
    let name = |p: u8| ports::proto_name(p).map_or_else(|| p.to_string(), str::to_string);
    match (spec.proto, spec.range) {
        (None, _) => Err("a packet has one protocol: write tcp/443, udp/53, icmp/8, ...".into()),
        (Some(p), None) if ports::has_ports(p) => {
            let n = name(p);
            Err(format!(
                "a {n} packet has a destination port: write {n}/PORT"
            ))
        }
        (Some(p), None) if is_icmp(p) => {
            let n = name(p);
            Err(format!(
                "an {n} packet has a type: write {n}/TYPE or {n}/TYPE:CODE"
            ))
        }
        (Some(p), None) => Ok((p, 0)),
        (Some(p), Some((lo, hi))) if lo == hi => Ok((p, lo)),
        // `icmp/8`: every code of the type as a rule, code 0 as a packet.
        (Some(p), Some((lo, _))) if is_icmp(p) => Ok((p, lo)),
        (Some(_), Some(_)) => Err("a packet has one port, not a range".into()),
    }
}

/// Why the datapath judges a packet of this protocol and port without the
/// rules, if it does: ICMP errors pass only when the header they quote
/// belongs to a tracked flow, and IPv6 neighbour and listener discovery
/// passes when it has the shape of link traffic (RFC 4861, RFC 3810).
pub fn judged_without_rules(proto: u8, port: u16) -> Option<&'static str> {
    let ty = port >> 8;
    match proto {
        IPPROTO_ICMP if matches!(ty, 3 | 4 | 11 | 12) => Some(ICMP_ERROR_NOTE),
        IPPROTO_ICMPV6 if matches!(ty, 1..=4) => Some(ICMP_ERROR_NOTE),
        IPPROTO_ICMPV6 if matches!(ty, 130..=137 | 143) => Some(
            "the datapath passes IPv6 neighbour and listener discovery that has the shape \
             of link traffic, and drops the rest, whatever the rules",
        ),
        _ => None,
    }
}

const ICMP_ERROR_NOTE: &str = "the datapath passes an ICMP error only when the header it quotes \
     belongs to a tracked flow, whatever the rules: explain the flow it quotes";

fn is_icmp(proto: u8) -> bool {
    matches!(proto, IPPROTO_ICMP | IPPROTO_ICMPV6)
}

/// `tcp/443`, `icmp/3:4`, `47`: the packet's protocol and port as `parse_target` reads them.
pub fn format_target(proto: u8, port: u16) -> String {
    let Some(name) = ports::proto_name(proto) else {
        return proto.to_string();
    };
    if is_icmp(proto) {
        format!("{name}/{}:{}", port >> 8, port & 0xff)
    } else if ports::has_ports(proto) {
        format!("{name}/{port}")
    } else {
        name.to_string()
    }
}

/// A part of a rule a packet can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The source is in none of `from`.
    From,
    /// The destination is in none of `to`.
    To,
    /// The protocol and port are in none of `ports`.
    Ports,
    /// `within`: both ends are in its groups, but not in the same one.
    Within,
    /// `builtin:host-ingress`: the packet is encapsulation, which reaches
    /// the node only from `nodes` (`builtin:node-encap`).
    Encap,
}

/// One rule judged against a packet.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleCheck {
    /// The rule id the compiler gives it (1 + index; built-in rules follow).
    pub id: u32,
    pub rule: Rule,
    /// Empty when the rule allows the packet.
    pub failed: Vec<Part>,
}

impl RuleCheck {
    pub fn allows(&self) -> bool {
        self.failed.is_empty()
    }

    /// Parts of from, to and ports the packet satisfies: 2 is a near miss.
    pub fn score(&self) -> usize {
        if matches!(self.failed[..], [Part::Within] | [Part::Encap]) {
            return 2;
        }
        3 - self.failed.len()
    }

    pub fn is_builtin(&self) -> bool {
        self.rule.name.starts_with(BUILTIN_RULE_PREFIX)
    }

    /// One line per failed part saying what did not match.
    pub fn why(&self, p: &Packet) -> Vec<String> {
        let peers = |list: &[Peer]| join(list.iter().map(Peer::to_string));
        let kw = if self.rule.within { "within" } else { "from" };
        self.failed
            .iter()
            .map(|part| match part {
                Part::From => format!("{kw}: source {} is in none of {}", p.src, peers(&self.rule.from)),
                Part::To => {
                    let kw = if self.rule.within { "within" } else { "to" };
                    format!("{kw}: destination {} is in none of {}", p.dst, peers(&self.rule.to))
                }
                Part::Ports => format!(
                    "ports: {} is not among {}",
                    format_target(p.proto, p.port),
                    join(self.rule.ports.iter().map(PortSpec::to_string))
                ),
                Part::Within => format!(
                    "within: source {} and destination {} are not in the same one of {} (within allows each group only to itself)",
                    p.src, p.dst, peers(&self.rule.from)
                ),
                Part::Encap => format!(
                    "{ENCAP_REFUSAL}: {} is a tunnel the kernel decapsulates, and {} is not in nodes",
                    format_target(p.proto, p.port),
                    p.src
                ),
            })
            .collect()
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Whether `addr` is in the group: inside one of its CIDRs and none of its excepts.
fn in_group(g: &Group, addr: IpAddr) -> bool {
    g.cidrs.iter().any(|n| n.contains(&addr)) && !g.except.iter().any(|n| n.contains(&addr))
}

/// Whether `addr` is one of the addresses `peer` stands for (docs/design.md
/// section 2), with the node's addresses and node prefixes of `opts`.
pub fn in_peer(policy: &Policy, opts: &CompileOptions, peer: &Peer, addr: IpAddr) -> bool {
    let host = &opts.host_addrs;
    match peer {
        Peer::Any => true,
        Peer::Host => host.contains(&addr),
        Peer::Nodes => host.contains(&addr) || opts.node_cidrs.iter().any(|n| n.contains(&addr)),
        Peer::Cidr(n) => n.contains(&addr),
        Peer::Group(name) => policy.group(name).is_some_and(|g| in_group(g, addr)),
        // In no user group (anonymous ones stand for literal prefixes) and not the node's.
        Peer::World => {
            !host.contains(&addr)
                && !policy
                    .groups
                    .iter()
                    .any(|g| !g.anonymous && in_group(g, addr))
        }
    }
}

fn check_rule(
    policy: &Policy,
    opts: &CompileOptions,
    id: u32,
    rule: &Rule,
    p: &Packet,
) -> RuleCheck {
    let holds = |peer: &Peer, addr| in_peer(policy, opts, peer, addr);
    let src_ok = rule.from.iter().any(|peer| holds(peer, p.src));
    let dst_ok = rule.to.iter().any(|peer| holds(peer, p.dst));
    let ports_ok = rule.ports.is_empty() || rule.ports.iter().any(|s| s.matches(p.proto, p.port));
    let mut failed = Vec::new();
    if !src_ok {
        failed.push(Part::From);
    }
    if !dst_ok {
        failed.push(Part::To);
    }
    if !ports_ok {
        failed.push(Part::Ports);
    }
    let same_group = || {
        rule.from
            .iter()
            .any(|peer| holds(peer, p.src) && holds(peer, p.dst))
    };
    if rule.within && failed.is_empty() && !same_group() {
        failed.push(Part::Within);
    }
    // The exemption stops short of tunnels: `builtin:node-encap` takes those.
    if rule.name == HOST_INGRESS_RULE && is_encap(p.proto, p.port) {
        failed.push(Part::Encap);
    }
    RuleCheck {
        id,
        rule: rule.clone(),
        failed,
    }
}

/// Every rule the compiler would enforce (the policy's, then the built-in
/// ones), judged against `p`, in rule id order.
pub fn check_rules(policy: &Policy, opts: &CompileOptions, p: &Packet) -> Vec<RuleCheck> {
    let builtins = builtin_rules(policy, opts);
    policy
        .rules
        .iter()
        .chain(&builtins)
        .zip(1u32..)
        .map(|(rule, id)| check_rule(policy, opts, id, rule, p))
        .collect()
}

/// An identity as the datapath looks it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Side {
    pub addr: IpAddr,
    pub identity: Option<IdentityInfo>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    pub packet: Packet,
    pub src: Side,
    pub dst: Side,
    /// Every rule that allows the packet, in id order.
    pub allowing: Vec<RuleCheck>,
    /// When none does: the policy's rules that failed on the fewest parts
    /// (one, or two when no rule failed on one only); those that allow the
    /// packet's protocol first, each part in id order.
    pub near: Vec<RuleCheck>,
    /// The rule the compiled maps decide by (`evaluate`), which the datapath
    /// counts the flow under.
    pub datapath_rule: Option<u32>,
    /// When the compiled maps refuse the packet with a deny entry: the rule
    /// it was carved from (`builtin:host-ingress`, for encapsulation).
    pub refused_by: Option<u32>,
    /// With NetworkPolicies: how each side judged the packet.
    pub workload: Option<WorkloadVerdict>,
}

/// One end's side of a connection under NetworkPolicy semantics.
#[derive(Clone, Debug, PartialEq)]
pub struct SideVerdict {
    /// The end is a pod.
    pub pod: bool,
    /// A policy (or the presence of native rules) isolates it in this
    /// direction, so its side must allow the packet.
    pub isolated: bool,
    /// The NetworkPolicy rules of this side that allow the packet.
    pub allowing: Vec<RuleCheck>,
}

impl SideVerdict {
    /// This side lets the packet through (or does not judge it).
    pub fn allows(&self) -> bool {
        !self.isolated || !self.allowing.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadVerdict {
    /// The source's egress side.
    pub egress: SideVerdict,
    /// The destination's ingress side.
    pub ingress: SideVerdict,
}

impl Explanation {
    pub fn allowed(&self) -> bool {
        !self.allowing.is_empty()
    }

    /// Whether the rule-by-rule verdict and the compiled maps agree: a
    /// disagreement is a compiler (or explain) bug.
    pub fn agrees(&self) -> bool {
        match self.datapath_rule {
            None => self.allowing.is_empty(),
            Some(id) => self.allowing.iter().any(|r| r.id == id),
        }
    }
}

/// Whether `rule` allows some traffic of `proto` (on some port).
fn allows_proto(rule: &Rule, proto: u8) -> bool {
    rule.ports.is_empty()
        || rule
            .ports
            .iter()
            .any(|s| s.proto.is_none_or(|p| p == proto))
}

/// Explains `p` under `policy` compiled with `opts` into `compiled`.
pub fn explain(
    policy: &Policy,
    compiled: &Compiled,
    opts: &CompileOptions,
    p: &Packet,
) -> Explanation {
    let checks = check_rules(policy, opts, p);
    let first_side_id = checks.len() as u32 + 1;
    let (mut allowing, mut rest): (Vec<RuleCheck>, Vec<RuleCheck>) =
        checks.into_iter().partition(RuleCheck::allows);
    let workload = policy
        .workloads
        .as_ref()
        .map(|w| workload_verdict(policy, opts, w, p, first_side_id, &allowing));
    if let Some((v, credited, missed)) = &workload {
        if v.egress.pod || v.ingress.pod {
            allowing.extend(credited.iter().cloned());
            allowing.sort_by_key(|r| r.id);
        }
        rest.extend(missed.iter().cloned());
    }
    let workload = workload.map(|(v, _, _)| v);
    // Built-in rules would show up as near misses of every packet.
    let rest: Vec<RuleCheck> = rest.into_iter().filter(|r| !r.is_builtin()).collect();
    let best = rest.iter().map(RuleCheck::score).max().unwrap_or(0);
    let mut near: Vec<RuleCheck> = if allowing.is_empty() && best >= 1 {
        rest.into_iter().filter(|r| r.score() == best).collect()
    } else {
        Vec::new()
    };
    // A TCP packet's nearest rule is not an ICMP rule that only shares its
    // peers: rules that speak the packet's protocol lead (a stable sort keeps
    // id order within each part).
    near.sort_by_key(|r| !allows_proto(&r.rule, p.proto));
    let side = |addr: IpAddr| Side {
        addr,
        identity: identity_of(compiled, addr).and_then(|v| compiled.identity(v.id).cloned()),
    };
    Explanation {
        packet: *p,
        src: side(p.src),
        dst: side(p.dst),
        allowing,
        near,
        datapath_rule: evaluate(compiled, p.src, p.dst, p.proto, p.port),
        refused_by: refusing_rule(compiled, p.src, p.dst, p.proto, p.port),
        workload,
    }
}

/// Both sides of `p` under NetworkPolicy semantics; the rules credited with
/// it when both sides let it through (the ones the compiler credits), and
/// the side rules that did not match (near-miss candidates).
fn workload_verdict(
    policy: &Policy,
    opts: &CompileOptions,
    w: &super::netpol::Workloads,
    p: &Packet,
    first_id: u32,
    native_allowing: &[RuleCheck],
) -> (WorkloadVerdict, Vec<RuleCheck>, Vec<RuleCheck>) {
    use super::netpol::Direction;
    let in_g = |g: &str, a: IpAddr| policy.group(g).is_some_and(|g| in_group(g, a));
    let native = !policy.rules.is_empty();
    let pod = |a: IpAddr| in_g(super::cluster::PODS_GROUP, a);
    let isolated = |dir: Direction, a: IpAddr| {
        pod(a) && (native || w.isolated.iter().any(|(d, g)| *d == dir && in_g(g, a)))
    };
    // The NetworkPolicy rules of each side that allow `p` (egress, ingress).
    let mut by_side: [Vec<RuleCheck>; 2] = [Vec::new(), Vec::new()];
    let mut missed = Vec::new();
    for (side, id) in w.sides.iter().zip(first_id..) {
        let check = check_rule(policy, opts, id, &super::combine::side_rule(side), p);
        let i = usize::from(side.direction == Direction::Ingress);
        if check.allows() {
            by_side[i].push(check);
        } else {
            missed.push(check);
        }
    }
    let (eg_iso, in_iso) = (
        isolated(Direction::Egress, p.src),
        isolated(Direction::Ingress, p.dst),
    );
    // What the compiler credits (native rules are credited on their own).
    let credited = if in_iso {
        if !eg_iso || !by_side[0].is_empty() {
            by_side[1].clone()
        } else {
            Vec::new()
        }
    } else if eg_iso {
        by_side[0].clone()
    } else {
        let id = first_id + w.sides.len() as u32;
        let rule = Rule::new(
            super::combine::NOT_ISOLATED_RULE,
            &[Peer::Any],
            &[Peer::Any],
            &[],
        );
        vec![check_rule(policy, opts, id, &rule, p)]
    };
    // For the operator, a native rule allows both sides of its traffic.
    let side = |pod: bool, isolated: bool, own: &[RuleCheck]| SideVerdict {
        pod,
        isolated,
        allowing: native_allowing.iter().chain(own).cloned().collect(),
    };
    let v = WorkloadVerdict {
        egress: side(pod(p.src), eg_iso, &by_side[0]),
        ingress: side(pod(p.dst), in_iso, &by_side[1]),
    };
    (v, credited, missed)
}
