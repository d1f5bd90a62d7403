//! Random policies and packets: the compiled maps, looked up as the datapath
//! does, must allow exactly what the definition of the semantics allows. The
//! definition here is written from docs/design.md directly and shares no code with
//! the compiler.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::policy::*;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const GRE: u8 = 47;
const IPIP: u8 = 4;

/// A seeded linear congruential generator (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Addresses come from a small space (10.0.0.0/22 and fd00::/118) so that
/// random prefixes overlap and nest often.
fn addr(rng: &mut Lcg, v6: bool) -> IpAddr {
    let low = rng.below(1 << 10) as u32;
    if v6 {
        IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(low)))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | low))
    }
}

fn prefix(rng: &mut Lcg) -> IpNet {
    let v6 = rng.chance(30);
    let a = addr(rng, v6);
    let host_bits = rng.below(11) as u8;
    let len = if v6 { 128 - host_bits } else { 32 - host_bits };
    IpNet::new(a, len).unwrap().trunc()
}

/// A prefix inside `outer`, possibly `outer` itself.
fn sub_prefix(rng: &mut Lcg, outer: IpNet) -> IpNet {
    let max = outer.max_prefix_len();
    let len = outer.prefix_len() + rng.below(u64::from(max - outer.prefix_len()) + 1) as u8;
    let host_mask = |bits: u8| if bits >= 128 { 0 } else { u128::MAX >> bits };
    let a = match outer.network() {
        IpAddr::V4(n) => {
            let free = host_mask(96 + outer.prefix_len()) as u32;
            IpAddr::V4(Ipv4Addr::from(u32::from(n) | (rng.next() as u32 & free)))
        }
        IpAddr::V6(n) => {
            let free = host_mask(outer.prefix_len());
            IpAddr::V6(Ipv6Addr::from(
                u128::from(n) | (u128::from(rng.next()) & free),
            ))
        }
    };
    IpNet::new(a, len).unwrap().trunc()
}

fn port_spec(rng: &mut Lcg) -> PortSpec {
    match rng.below(8) {
        0 => PortSpec::ANY,
        1 => PortSpec::proto(*rng.pick(&[TCP, UDP, ICMP, GRE, IPIP])),
        2 if rng.chance(30) => PortSpec::port(UDP, *rng.pick(&[4789, 8472, 6081])),
        2 | 3 => PortSpec::port(*rng.pick(&[TCP, UDP]), rng.below(70) as u16),
        4 | 5 => {
            let a = rng.below(70) as u16;
            let b = rng.below(70) as u16;
            PortSpec::range(*rng.pick(&[TCP, UDP]), a.min(b), a.max(b))
        }
        6 => {
            let ty = rng.below(4) as u16;
            PortSpec::range(ICMP, ty << 8, ty << 8 | 0xff)
        }
        _ => PortSpec::port(ICMP, (rng.below(4) as u16) << 8 | rng.below(4) as u16),
    }
}

fn random_policy(rng: &mut Lcg) -> (Policy, Vec<IpAddr>, Vec<IpNet>) {
    let mut groups = Vec::new();
    for i in 0..1 + rng.below(5) {
        let cidrs: Vec<IpNet> = (0..rng.below(4)).map(|_| prefix(rng)).collect();
        let mut except = Vec::new();
        if !cidrs.is_empty() {
            for _ in 0..rng.below(3) {
                let outer = *rng.pick(&cidrs);
                except.push(sub_prefix(rng, outer));
            }
        }
        // Anonymous groups (imported ipBlocks) do not count against `world`.
        groups.push(Group {
            anonymous: rng.chance(15),
            ..Group::new(&format!("g{i}"), &cidrs, &except)
        });
    }
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let peer = |rng: &mut Lcg| match rng.below(10) {
        0 => Peer::Any,
        1 => Peer::World,
        2 if rng.chance(50) => Peer::Host,
        2 => Peer::Nodes,
        3 => Peer::Cidr(prefix(rng)),
        _ => Peer::Group(rng.pick(&names).clone()),
    };
    let mut rules = Vec::new();
    for i in 0..1 + rng.below(6) {
        let name = format!("r{i}");
        if rng.chance(20) {
            let peers: Vec<Peer> = (0..1 + rng.below(2)).map(|_| peer(rng)).collect();
            rules.push(Rule::within(&name, &peers));
        } else {
            let from: Vec<Peer> = (0..1 + rng.below(2)).map(|_| peer(rng)).collect();
            let to: Vec<Peer> = (0..1 + rng.below(2)).map(|_| peer(rng)).collect();
            let ports: Vec<PortSpec> = (0..rng.below(4)).map(|_| port_spec(rng)).collect();
            rules.push(Rule::new(&name, &from, &to, &ports));
        }
    }
    let host: Vec<IpAddr> = (0..rng.below(3))
        .map(|_| {
            let v6 = rng.chance(30);
            addr(rng, v6)
        })
        .collect();
    let nodes: Vec<IpNet> = (0..rng.below(3)).map(|_| prefix(rng)).collect();
    let policy = Policy {
        groups,
        rules,
        enforce_host: rng.chance(30),
        ..Policy::default()
    };
    (policy, host, nodes)
}

// ---- The definition ------------------------------------------------------

fn in_group(p: &Policy, name: &str, a: IpAddr) -> bool {
    let g = p
        .groups
        .iter()
        .find(|g| g.name == name)
        .expect("known group");
    g.cidrs.iter().any(|c| c.contains(&a)) && !g.except.iter().any(|e| e.contains(&a))
}

/// The node's addresses and the node prefixes.
struct Node<'a> {
    host: &'a [IpAddr],
    nodes: &'a [IpNet],
}

fn peer_contains(p: &Policy, node: &Node, peer: &Peer, a: IpAddr) -> bool {
    let host = node.host;
    match peer {
        Peer::Any => true,
        Peer::Nodes => host.contains(&a) || node.nodes.iter().any(|n| n.contains(&a)),
        Peer::Group(name) => in_group(p, name, a),
        Peer::Cidr(n) => n.contains(&a),
        Peer::Host => host.contains(&a),
        Peer::World => {
            !host.contains(&a)
                && !p
                    .groups
                    .iter()
                    .any(|g| !g.anonymous && in_group(p, &g.name, a))
        }
    }
}

fn port_allows(spec: &PortSpec, proto: u8, port: u16) -> bool {
    match spec.proto {
        None => true,
        Some(p) if p != proto => false,
        Some(_) => spec.range.is_none_or(|(lo, hi)| lo <= port && port <= hi),
    }
}

/// Ids of every rule allowing the packet (1-based, built-ins after the policy's).
fn allowing_rules(
    p: &Policy,
    node: &Node,
    enforce: bool,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, r) in p.rules.iter().enumerate() {
        let has = |peer: &Peer, a| peer_contains(p, node, peer, a);
        let pair = if r.within {
            r.from.iter().any(|g| has(g, src) && has(g, dst))
        } else {
            r.from.iter().any(|g| has(g, src)) && r.to.iter().any(|g| has(g, dst))
        };
        let ports = r.ports.is_empty() || r.ports.iter().any(|s| port_allows(s, proto, port));
        if pair && ports {
            out.push(i as u32 + 1);
        }
    }
    let n = p.rules.len() as u32;
    let host = node.host;
    // Tunnels reach the node only from `nodes` (builtin:node-encap).
    let encap =
        [4, 41, 47].contains(&proto) || (proto == UDP && [4789, 8472, 6081].contains(&port));
    if !enforce && host.contains(&dst) && !encap {
        out.push(n + 1);
    }
    if !enforce && host.contains(&src) {
        out.push(n + 2);
    }
    if !enforce && host.contains(&dst) && encap && peer_contains(p, node, &Peer::Nodes, src) {
        out.push(n + 3);
    }
    out
}

// ---- The check -----------------------------------------------------------

fn packet(rng: &mut Lcg, p: &Policy, node: &Node) -> (IpAddr, IpAddr, u8, u16) {
    let v6 = rng.chance(30);
    // Half the addresses are drawn from the policy's own prefixes and hosts so
    // that edges and excepts are hit, not just the space between them.
    let known: Vec<IpNet> = p
        .groups
        .iter()
        .flat_map(|g| g.cidrs.iter().chain(&g.except).copied())
        .chain(node.host.iter().map(|a| IpNet::from(*a)))
        .chain(node.nodes.iter().copied())
        .filter(|n| n.addr().is_ipv6() == v6)
        .collect();
    let pick = |rng: &mut Lcg| -> IpAddr {
        if !known.is_empty() && rng.chance(50) {
            let outer = *rng.pick(&known);
            sub_prefix(rng, outer).network()
        } else {
            addr(rng, v6)
        }
    };
    let (src, dst) = (pick(rng), pick(rng));
    let proto = *rng.pick(&[TCP, UDP, UDP, ICMP, GRE, IPIP]);
    let port = match proto {
        ICMP => (rng.below(5) as u16) << 8 | rng.below(5) as u16,
        GRE | IPIP => 0,
        UDP if rng.chance(20) => *rng.pick(&[4789, 8472, 6081]),
        _ => rng.below(75) as u16,
    };
    (src, dst, proto, port)
}

#[test]
fn compiled_maps_agree_with_the_definition() {
    let mut rng = Lcg(0x5eed_2024);
    let (mut allowed, mut denied) = (0, 0);
    for case in 0..400 {
        let (p, host, nodes) = random_policy(&mut rng);
        let enforce_opt = rng.chance(20);
        let opts = CompileOptions {
            host_addrs: host.clone(),
            enforce_host: enforce_opt,
            node_cidrs: nodes.clone(),
        };
        let c = compile(&p, &opts).unwrap_or_else(|e| panic!("case {case}: {e}\n{p:#?}"));
        let enforce = enforce_opt || p.enforce_host;
        for _ in 0..150 {
            let node = Node {
                host: &host,
                nodes: &nodes,
            };
            let (src, dst, proto, port) = packet(&mut rng, &p, &node);
            let want = allowing_rules(&p, &node, enforce, src, dst, proto, port);
            let got = evaluate(&c, src, dst, proto, port);
            // `explain` lists every allowing rule: exactly the definition's.
            let e = explain(
                &p,
                &c,
                &opts,
                &Packet {
                    src,
                    dst,
                    proto,
                    port,
                },
            );
            let listed: Vec<u32> = e.allowing.iter().map(|r| r.id).collect();
            let mut sorted = want.clone();
            sorted.sort();
            assert_eq!(
                listed, sorted,
                "case {case}: explain of {src} -> {dst} {proto}/{port}\n{p:#?}"
            );
            assert!(e.agrees() && e.datapath_rule == got, "case {case}: {e:#?}");
            let ok = match got {
                None => want.is_empty(),
                Some(id) => want.contains(&id),
            };
            assert!(
                ok,
                "case {case}: {src} -> {dst} proto {proto} port {port}: compiled says {got:?}, \
                 definition allows {want:?}\nhost {host:?} enforce {enforce}\n{p:#?}\n{c:#?}"
            );
            if got.is_some() {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
    }
    // Both outcomes must be common, or the check proves little.
    assert!(
        allowed > 5_000 && denied > 5_000,
        "allowed {allowed}, denied {denied}"
    );
}
