//! The random policy generator: groups, peers, ports and rules.

use ipnet::IpNet;
use netpol_agent::policy::{Peer, PortSpec};
use netpol_tests::packet::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use crate::addrs::{addr_inside, dense_addr, prefix_inside, rand_prefix};
use crate::policy::{GGroup, GPeer, GPolicy, GPort, GRule};
use crate::rng::Rng;

const GROUP_NAMES: [&str; 12] = [
    "svc-ledger",
    "svc-wallet",
    "gateway",
    "prometheus",
    "aiven",
    "coredns",
    "vpc-endpoints",
    "tempo",
    "loki",
    "db_2",
    "Web",
    "x.y",
];

const PORT_POOL: [u16; 16] = [
    0, 1, 22, 53, 80, 443, 1023, 1024, 3868, 5432, 8080, 30000, 32767, 49151, 65534, 65535,
];

pub fn rand_port(rng: &mut Rng) -> u16 {
    if rng.chance(60) {
        *rng.pick(&PORT_POOL)
    } else {
        rng.below(65536) as u16
    }
}

fn gen_group(rng: &mut Rng, name: &str) -> GGroup {
    let n = if rng.chance(3) { 0 } else { rng.range(1, 3) };
    let mut cidrs = Vec::new();
    for _ in 0..n {
        let is_v6 = rng.chance(35);
        cidrs.push(rand_prefix(rng, is_v6));
    }
    // Now and then the same prefix twice (the parser keeps one).
    if !cidrs.is_empty() && rng.chance(5) {
        cidrs.push(cidrs[0]);
    }
    let mut except = Vec::new();
    if !cidrs.is_empty() && rng.chance(35) {
        for _ in 0..rng.range(1, 2) {
            let c = *rng.pick(&cidrs);
            let extra = if rng.chance(5) {
                0
            } else {
                rng.range(1, 8) as u8
            };
            except.push(prefix_inside(rng, &c, extra));
        }
    }
    GGroup {
        name: name.to_string(),
        long_form: !except.is_empty() || rng.chance(15),
        cidrs,
        except,
    }
}

fn cidr_text(rng: &mut Rng, net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() && rng.chance(40) {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn gen_peer(rng: &mut Rng, groups: &[GGroup]) -> GPeer {
    let r = rng.below(100);
    let simple = |peer: Peer| GPeer {
        text: peer.to_string(),
        peer,
    };
    match r {
        0..=49 if !groups.is_empty() => simple(Peer::Group(rng.pick(groups).name.clone())),
        0..=57 => simple(Peer::Any),
        58..=69 => simple(Peer::World),
        70..=74 => simple(Peer::Host),
        75..=77 => simple(Peer::Nodes),
        _ => {
            // Half the time a prefix some group also names.
            let named: Vec<IpNet> = groups
                .iter()
                .flat_map(|g| g.cidrs.iter().chain(&g.except))
                .copied()
                .collect();
            let net = if !named.is_empty() && rng.chance(50) {
                let n = *rng.pick(&named);
                if rng.chance(50) {
                    n
                } else {
                    let extra = rng.range(0, 4) as u8;
                    prefix_inside(rng, &n, extra)
                }
            } else {
                let is_v6 = rng.chance(35);
                rand_prefix(rng, is_v6)
            };
            GPeer {
                peer: Peer::Cidr(net),
                text: cidr_text(rng, &net),
            }
        }
    }
}

fn gen_port(rng: &mut Rng) -> GPort {
    let l4 = |rng: &mut Rng| -> (u8, String) {
        let (proto, names): (u8, &[&str]) = *rng.pick(&[
            (PROTO_TCP, &["tcp", "tcp", "tcp", "6", "TCP"][..]),
            (PROTO_UDP, &["udp", "udp", "17"][..]),
            (PROTO_SCTP, &["sctp", "sctp", "132"][..]),
        ]);
        (proto, rng.pick(names).to_string())
    };
    let icmp_type = |rng: &mut Rng, v6: bool| -> u16 {
        if rng.chance(70) {
            if v6 {
                *rng.pick(&[1, 2, 3, 4, 128, 128, 129, 135, 143])
            } else {
                *rng.pick(&[0, 3, 5, 8, 8, 11, 13])
            }
        } else {
            rng.below(256) as u16
        }
    };
    let code = |rng: &mut Rng| -> u16 {
        if rng.chance(60) {
            rng.below(5) as u16
        } else {
            rng.below(256) as u16
        }
    };
    match rng.below(100) {
        0..=24 => {
            let (proto, name) = l4(rng);
            let p = rand_port(rng);
            GPort {
                spec: PortSpec::port(proto, p),
                text: format!("{p}/{name}"),
            }
        }
        25..=44 => {
            let (proto, name) = l4(rng);
            let lo = rand_port(rng);
            let width = match rng.below(4) {
                0 => rng.below(4),
                1 => rng.below(300),
                2 => rng.below(5000),
                _ => rng.below(65536),
            };
            let hi = (u64::from(lo) + width).min(65535) as u16;
            GPort {
                spec: PortSpec::range(proto, lo, hi),
                text: format!("{lo}-{hi}/{name}"),
            }
        }
        45..=56 => {
            let (proto, text) = *rng.pick(&[
                (PROTO_TCP, "tcp"),
                (PROTO_UDP, "udp"),
                (PROTO_SCTP, "sctp"),
                (PROTO_ICMP, "icmp"),
                (PROTO_ICMPV6, "icmpv6"),
                (47, "\"47\""),
                (50, "'50'"),
                (PROTO_UDP, "\"17\""),
            ]);
            GPort {
                spec: PortSpec::proto(proto),
                text: text.to_string(),
            }
        }
        57..=61 => GPort {
            spec: PortSpec::ANY,
            text: "any".into(),
        },
        62..=73 => {
            let t = icmp_type(rng, false);
            GPort {
                spec: PortSpec::range(PROTO_ICMP, t << 8, t << 8 | 0xff),
                text: format!("icmp/{t}"),
            }
        }
        74..=81 => {
            let (t, c) = (icmp_type(rng, false), code(rng));
            GPort {
                spec: PortSpec::port(PROTO_ICMP, t << 8 | c),
                text: format!("icmp/{t}:{c}"),
            }
        }
        82..=93 => {
            let t = icmp_type(rng, true);
            GPort {
                spec: PortSpec::range(PROTO_ICMPV6, t << 8, t << 8 | 0xff),
                text: format!("icmpv6/{t}"),
            }
        }
        _ => {
            let (t, c) = (icmp_type(rng, true), code(rng));
            GPort {
                spec: PortSpec::port(PROTO_ICMPV6, t << 8 | c),
                text: format!("icmpv6/{t}:{c}"),
            }
        }
    }
}

pub fn gen_policy(rng: &mut Rng) -> GPolicy {
    let mut names: Vec<&str> = GROUP_NAMES.to_vec();
    let n_groups = rng.range(1, 8) as usize;
    let mut groups = Vec::new();
    for _ in 0..n_groups {
        let name = names.remove(rng.below(names.len() as u64) as usize);
        groups.push(gen_group(rng, name));
    }
    let n_rules = rng.range(1, 6);
    let mut rules = Vec::new();
    for i in 0..n_rules {
        let name = format!("{}{i}", rng.pick(&["r", "allow-", "edge_"]));
        let side = |rng: &mut Rng| -> Vec<GPeer> {
            (0..rng.range(1, 3))
                .map(|_| gen_peer(rng, &groups))
                .collect()
        };
        if rng.chance(18) {
            rules.push(GRule::Within {
                name,
                peers: side(rng),
            });
        } else {
            let from = side(rng);
            let to = side(rng);
            let ports = if rng.chance(28) {
                None
            } else {
                Some((0..rng.range(1, 4)).map(|_| gen_port(rng)).collect())
            };
            rules.push(GRule::Edge {
                name,
                from,
                to,
                ports,
            });
        }
    }
    let mut gp = GPolicy {
        groups,
        rules,
        settings: match rng.below(100) {
            0..=14 => Some(true),
            15..=24 => Some(false),
            _ => None,
        },
        host: Vec::new(),
        nodes: Vec::new(),
        enforce_opt: rng.chance(10),
        split: match rng.below(100) {
            0..=69 => 0,
            70..=84 => 1,
            _ => 2,
        },
        split_groups: 0,
        split_rules: 0,
        style: rng.next(),
    };
    gp.split_groups = rng.range(0, gp.groups.len() as u64) as usize;
    gp.split_rules = rng.range(0, gp.rules.len() as u64) as usize;
    let prefixes = gp.prefixes();
    for _ in 0..rng.range(0, 3) {
        let a = if !prefixes.is_empty() && rng.chance(50) {
            let p = *rng.pick(&prefixes);
            addr_inside(rng, &p)
        } else {
            let is_v6 = rng.chance(35);
            dense_addr(rng, is_v6)
        };
        gp.host.push(a);
    }
    // Node prefixes: where tunnels to the node may come from.
    for _ in 0..rng.range(0, 2) {
        let a = if !prefixes.is_empty() && rng.chance(50) {
            let p = *rng.pick(&prefixes);
            addr_inside(rng, &p)
        } else {
            let is_v6 = rng.chance(35);
            dense_addr(rng, is_v6)
        };
        let len = if a.is_ipv6() { 112 } else { 24 };
        gp.nodes
            .push(IpNet::new(a, len).expect("valid length").trunc());
    }
    gp
}
