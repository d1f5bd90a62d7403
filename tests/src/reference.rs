//! A reference evaluator for the policy contract (docs/design.md section 2),
//! written from the contract alone in the plainest Rust: no identities, no
//! tries, no masks shared with the compiler. It answers "would policy allow a
//! packet that opens a flow" by walking the rules in order, for differential
//! tests against the compiler and the datapath.
//!
//! It reads the policy model (`Policy`, `Group`, `Rule`, `Peer`, `PortSpec`)
//! but nothing of `netpol_agent::policy`'s compiler or evaluator, and not even
//! `ipnet`'s containment or `PortSpec::matches`: a bug there must not be shared.
//!
//! The contract, as implemented here:
//! - an address is in a group iff it is inside one of the group's CIDRs and
//!   inside none of its `except` prefixes;
//! - `any` is every address; `host` is the node's addresses (each one a /32 or
//!   /128); `world` is every address that is in no user group and is not a host
//!   address (literal CIDRs written into rules, and groups the agent makes up
//!   for them, `Group::anonymous`, do not count against `world`);
//! - a literal CIDR peer is the addresses inside it;
//! - a rule allows `from` x `to` on its ports (no ports: everything); a `within`
//!   rule allows each of its peers to itself on everything;
//! - a port spec matches by protocol and inclusive range; for ICMP and ICMPv6
//!   the "port" is `type << 8 | code`; protocols without ports are asked with
//!   port 0 (a spec with a protocol and no range matches every port of it);
//! - `nodes` is the node's addresses and the node prefixes (`--node-cidr`);
//!   it does not count against `world`;
//! - unless the policy (or the agent's option) enforces the host, three
//!   built-in rules follow the user's: `builtin:host-ingress` (any -> host, on
//!   everything but tunnels: UDP 4789, 8472 and 6081, IP protocols 4, 41 and
//!   47), `builtin:host-egress` (host -> any, on everything) and
//!   `builtin:node-encap` (nodes -> host, on those tunnels only).

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use netpol_agent::policy::{Group, Peer, Policy, PortSpec, Rule};

/// Name of the built-in rule letting anything reach the node.
pub const HOST_INGRESS: &str = "builtin:host-ingress";
/// Name of the built-in rule letting the node reach anything.
pub const HOST_EGRESS: &str = "builtin:host-egress";
/// Name of the built-in rule letting tunnels reach the node from `nodes`.
pub const NODE_ENCAP: &str = "builtin:node-encap";

/// Whether a packet is a tunnel the kernel decapsulates: VXLAN (UDP 4789 and
/// 8472), Geneve (UDP 6081), IP-in-IP (4), IPv6-in-IP (41), GRE (47).
pub fn is_tunnel(proto: u8, port: u16) -> bool {
    match proto {
        4 | 41 | 47 => true,
        17 => port == 4789 || port == 8472 || port == 6081,
        _ => false,
    }
}

/// An address as (is IPv6, 128-bit value); IPv4 keeps its 32 bits in the low end.
fn bits(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// Whether `addr` lies inside `net` (same family, first `len` bits equal).
pub fn inside(net: &IpNet, addr: IpAddr) -> bool {
    let (net_v6, net_bits) = bits(net.addr());
    let (addr_v6, addr_bits) = bits(addr);
    if net_v6 != addr_v6 {
        return false;
    }
    let width: u32 = if net_v6 { 128 } else { 32 };
    let len = u32::from(net.prefix_len());
    if len == 0 {
        return true;
    }
    let shift = width - len;
    (net_bits >> shift) == (addr_bits >> shift)
}

/// Whether `addr` belongs to `group`: inside a CIDR, inside no except.
pub fn in_group(group: &Group, addr: IpAddr) -> bool {
    group.cidrs.iter().any(|n| inside(n, addr)) && !group.except.iter().any(|n| inside(n, addr))
}

fn is_host(host: &[IpAddr], addr: IpAddr) -> bool {
    host.contains(&addr)
}

/// Whether `addr` is in `world`: in no user group and not the node's own.
/// Groups the agent makes up itself (`anonymous`, for a Kubernetes `ipBlock`)
/// are no user's named groups: like literal CIDRs, they do not count.
pub fn in_world(policy: &Policy, host: &[IpAddr], addr: IpAddr) -> bool {
    let mut named = policy.groups.iter().filter(|g| !g.anonymous);
    !named.any(|g| in_group(g, addr)) && !is_host(host, addr)
}

/// Whether `peer` (one side of a rule) stands for `addr`.
pub fn peer_has(
    policy: &Policy,
    host: &[IpAddr],
    nodes: &[IpNet],
    peer: &Peer,
    addr: IpAddr,
) -> bool {
    match peer {
        Peer::Any => true,
        Peer::World => in_world(policy, host, addr),
        Peer::Host => is_host(host, addr),
        Peer::Nodes => is_host(host, addr) || nodes.iter().any(|n| inside(n, addr)),
        Peer::Cidr(n) => inside(n, addr),
        // An unknown group is a load error; here it simply holds nothing.
        Peer::Group(name) => policy
            .groups
            .iter()
            .filter(|g| &g.name == name)
            .any(|g| in_group(g, addr)),
    }
}

/// Whether one port spec allows protocol `proto`, port `port`.
pub fn spec_allows(spec: &PortSpec, proto: u8, port: u16) -> bool {
    match spec.proto {
        None => true,
        Some(p) if p != proto => false,
        Some(_) => match spec.range {
            None => true,
            Some((lo, hi)) => lo <= port && port <= hi,
        },
    }
}

/// Whether `rule` allows the packet.
#[allow(clippy::too_many_arguments)]
pub fn rule_allows(
    policy: &Policy,
    host: &[IpAddr],
    nodes: &[IpNet],
    rule: &Rule,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
) -> bool {
    let has = |peer: &Peer, addr| peer_has(policy, host, nodes, peer, addr);
    if rule.within {
        // Each group to itself, on every port.
        return rule.from.iter().any(|p| has(p, src) && has(p, dst));
    }
    let ports_ok = rule.ports.is_empty() || rule.ports.iter().any(|s| spec_allows(s, proto, port));
    // The host exemption stops short of tunnels (node-encap takes them).
    if rule.name == HOST_INGRESS && is_tunnel(proto, port) {
        return false;
    }
    ports_ok && rule.from.iter().any(|p| has(p, src)) && rule.to.iter().any(|p| has(p, dst))
}

/// The built-in rules the agent adds after the user's, if any.
pub fn builtin_rules(policy: &Policy, enforce_host: bool) -> Vec<Rule> {
    if enforce_host || policy.enforce_host {
        return Vec::new();
    }
    vec![
        Rule::new(HOST_INGRESS, &[Peer::Any], &[Peer::Host], &[]),
        Rule::new(HOST_EGRESS, &[Peer::Host], &[Peer::Any], &[]),
        Rule::new(NODE_ENCAP, &[Peer::Nodes], &[Peer::Host], &tunnel_specs()),
    ]
}

/// The tunnels of `is_tunnel` as port specs, written out by hand.
fn tunnel_specs() -> Vec<PortSpec> {
    let udp = |p: u16| PortSpec {
        proto: Some(17),
        range: Some((p, p)),
    };
    let ip = |p: u8| PortSpec {
        proto: Some(p),
        range: None,
    };
    vec![udp(4789), udp(8472), udp(6081), ip(4), ip(41), ip(47)]
}

/// Every rule (user rules in policy order, then the built-ins) that allows a
/// packet opening a flow from `src` to `dst` with protocol `proto` and
/// destination port `port` (ICMP: `type << 8 | code`; no ports: 0).
#[allow(clippy::too_many_arguments)]
pub fn allowing_rules(
    policy: &Policy,
    host: &[IpAddr],
    nodes: &[IpNet],
    enforce_host: bool,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
) -> Vec<String> {
    let builtins = builtin_rules(policy, enforce_host);
    policy
        .rules
        .iter()
        .chain(&builtins)
        .filter(|r| rule_allows(policy, host, nodes, r, src, dst, proto, port))
        .map(|r| r.name.clone())
        .collect()
}

/// The first rule, in policy order (user rules before the built-ins), that
/// allows the packet; `None` when policy drops it.
#[allow(clippy::too_many_arguments)]
pub fn verdict(
    policy: &Policy,
    host: &[IpAddr],
    nodes: &[IpNet],
    enforce_host: bool,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
) -> Option<String> {
    allowing_rules(policy, host, nodes, enforce_host, src, dst, proto, port)
        .into_iter()
        .next()
}

/// Whether ICMP or ICMPv6 `port` (`type << 8 | code`) is an error
/// (destination unreachable, source quench, time exceeded, parameter problem;
/// ICMPv6 1-4). An error passes only when the header it quotes belongs to a
/// tracked flow, whatever the policy (docs/datapath.md).
pub fn is_icmp_error(proto: u8, port: u16) -> bool {
    let ty = port >> 8;
    match proto {
        1 => matches!(ty, 3 | 4 | 11 | 12),
        58 => matches!(ty, 1..=4),
        _ => false,
    }
}

/// Whether ICMPv6 `port` (`type << 8 | code`) is neighbour discovery
/// (133-137) or the multicast listener discovery it relies on (130-132, 143).
pub fn is_discovery(proto: u8, port: u16) -> bool {
    proto == 58 && matches!(port >> 8, 130..=137 | 143)
}

/// The verdict on IPv6 neighbour or listener discovery, which is link
/// infrastructure (docs/datapath.md): `Some(true)` when it has the shape of
/// link traffic and passes whatever the policy, `Some(false)` when it breaks
/// RFC 4861 / RFC 3810 or is addressed off the link, and is dropped whatever
/// the policy, `None` when it is not discovery. `entering`: an XDP packet entering the node (a router
/// advertisement or redirect entering a pod interface is also dropped; this
/// model has no pod interfaces). Fragmented messages are dropped too; this
/// model sends none.
pub fn discovery(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
    hop_limit: u8,
    entering: bool,
) -> Option<bool> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
        return None;
    };
    if !is_discovery(proto, port) {
        return None;
    }
    let ty = port >> 8;
    let link_local = |a: Ipv6Addr| a.segments()[0] & 0xffc0 == 0xfe80;
    let multicast = |a: Ipv6Addr| a.octets()[0] == 0xff;
    let link_multicast = |a: Ipv6Addr| a.segments()[0] & 0xff0f == 0xff02;
    if ty < 133 || ty == 143 {
        let src_ok = link_local(s) || (ty == 143 && s.is_unspecified());
        return Some(hop_limit == 1 && src_ok && multicast(d));
    }
    if hop_limit != 255 {
        return Some(false);
    }
    if (ty == 134 || ty == 137) && !link_local(s) {
        return Some(false);
    }
    if s.is_unspecified() {
        let seg = d.segments();
        let solicited = seg[..6] == [0xff02, 0, 0, 0, 0, 1] && seg[6] >> 8 == 0xff;
        if !(ty == 133 || (ty == 135 && solicited)) {
            return Some(false);
        }
    }
    if multicast(d) {
        return Some(link_multicast(d));
    }
    let same_64 = s.segments()[..4] == d.segments()[..4];
    Some(link_local(d) || !entering || same_64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn policy() -> Policy {
        Policy {
            groups: vec![
                Group::new("web", &[net("10.0.1.0/24"), net("fd00:1::/64")], &[]),
                Group::new(
                    "aiven",
                    &[net("10.1.0.0/16")],
                    &[net("10.1.3.0/24"), net("10.1.0.7/32")],
                ),
            ],
            rules: vec![
                Rule::new(
                    "web-to-aiven",
                    &[Peer::Group("web".into())],
                    &[Peer::Group("aiven".into())],
                    &[PortSpec::port(6, 5432), PortSpec::range(1, 0x0800, 0x08ff)],
                ),
                Rule::new(
                    "world-to-literal",
                    &[Peer::World],
                    &[Peer::Cidr(net("10.9.0.0/16"))],
                    &[PortSpec::proto(17)],
                ),
                Rule::within("intra", &[Peer::Group("web".into())]),
            ],
            enforce_host: false,
            ..Policy::default()
        }
    }

    #[test]
    fn containment() {
        assert!(inside(&net("0.0.0.0/0"), ip("255.255.255.255")));
        assert!(!inside(&net("0.0.0.0/0"), ip("::1")));
        assert!(inside(&net("::/0"), ip("fd00::1")));
        assert!(inside(&net("10.0.1.0/24"), ip("10.0.1.255")));
        assert!(!inside(&net("10.0.1.0/24"), ip("10.0.2.0")));
        assert!(inside(&net("10.0.1.7/32"), ip("10.0.1.7")));
        assert!(!inside(&net("10.0.1.7/32"), ip("10.0.1.6")));
        assert!(inside(&net("fd00:1::/64"), ip("fd00:1::ffff:1")));
        assert!(!inside(&net("fd00:1::/64"), ip("fd00:2::1")));
        assert!(inside(&net("fd00::1/128"), ip("fd00::1")));
        assert!(!inside(&net("10.0.0.0/8"), ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn groups_excepts_world_host() {
        let p = policy();
        let aiven = p.group("aiven").unwrap();
        assert!(in_group(aiven, ip("10.1.0.6")));
        assert!(!in_group(aiven, ip("10.1.0.7")));
        assert!(!in_group(aiven, ip("10.1.3.1")));
        let host = [ip("10.0.1.1"), ip("192.168.0.1")];
        assert!(!in_world(&p, &host, ip("10.0.1.5")));
        assert!(!in_world(&p, &host, ip("192.168.0.1")));
        assert!(in_world(&p, &host, ip("192.168.0.2")));
        // Carved out of its only group: world again.
        assert!(in_world(&p, &host, ip("10.1.3.1")));
        // A literal CIDR of a rule does not take addresses out of world.
        assert!(in_world(&p, &host, ip("10.9.0.1")));
        // Nor does a group the agent made up.
        let mut p = p;
        p.groups.push(Group {
            anonymous: true,
            ..Group::new("import", &[net("10.9.0.0/16")], &[])
        });
        assert!(in_world(&p, &host, ip("10.9.0.1")));
        assert!(peer_has(
            &p,
            &host,
            &[],
            &Peer::Group("import".into()),
            ip("10.9.0.1")
        ));
    }

    #[test]
    fn rules_in_order_then_builtins() {
        let p = policy();
        let host = [ip("10.0.1.1")];
        let nodes = [net("10.8.0.0/16")];
        let v = |s, d, proto, port, enforce| {
            verdict(&p, &host, &nodes, enforce, ip(s), ip(d), proto, port)
        };
        assert_eq!(
            v("10.0.1.5", "10.1.0.6", 6, 5432, false).as_deref(),
            Some("web-to-aiven")
        );
        assert_eq!(v("10.0.1.5", "10.1.0.6", 6, 5433, false), None);
        assert_eq!(v("10.0.1.5", "10.1.0.7", 6, 5432, false), None);
        assert_eq!(
            v("10.0.1.5", "10.1.0.6", 1, 0x0803, false).as_deref(),
            Some("web-to-aiven")
        );
        assert_eq!(v("10.0.1.5", "10.1.0.6", 1, 0x0900, false), None);
        assert_eq!(
            v("8.8.8.8", "10.9.1.1", 17, 53, false).as_deref(),
            Some("world-to-literal")
        );
        assert_eq!(v("10.0.1.9", "10.9.1.1", 17, 53, false), None);
        assert_eq!(
            v("10.0.1.9", "10.0.1.3", 132, 1, false).as_deref(),
            Some("intra")
        );
        assert_eq!(
            v("10.0.1.9", "10.0.1.1", 132, 1, false).as_deref(),
            Some("intra")
        );
        assert_eq!(
            v("8.8.8.8", "10.0.1.1", 50, 0, false).as_deref(),
            Some(HOST_INGRESS)
        );
        // Tunnels reach the node only from nodes.
        for (proto, port) in [(47, 0), (4, 0), (41, 0), (17, 4789), (17, 8472), (17, 6081)] {
            assert_eq!(v("8.8.8.8", "10.0.1.1", proto, port, false), None);
            assert_eq!(
                v("10.8.0.9", "10.0.1.1", proto, port, false).as_deref(),
                Some(NODE_ENCAP)
            );
        }
        assert_eq!(
            v("8.8.8.8", "10.0.1.1", 17, 4790, false).as_deref(),
            Some(HOST_INGRESS)
        );
        assert_eq!(
            v("10.0.1.1", "8.8.8.8", 47, 0, false).as_deref(),
            Some(HOST_EGRESS)
        );
        assert_eq!(v("10.0.1.1", "8.8.8.8", 47, 0, true), None);
        assert_eq!(
            allowing_rules(&p, &host, &[], false, ip("10.0.1.1"), ip("10.0.1.2"), 6, 80),
            vec!["intra".to_string(), HOST_EGRESS.to_string()]
        );
    }
}
