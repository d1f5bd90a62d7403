//! Flow-opening packets, and where their addresses and ports come from.

use std::net::IpAddr;

use ipnet::IpNet;
use netpol_agent::policy::PortSpec;
use netpol_tests::packet::{
    Packet, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TCP_SYN,
};
use netpol_tests::reference;

use crate::addrs::{addr_bits, addr_inside, bounds, dense_addr, same_family, v4, v6};
use crate::policy::{GPolicy, GRule};
use crate::policy_gen::rand_port;
use crate::rng::Rng;

/// Protocols sent with no transport header (never IPv6 extension headers).
const RAW_PROTOS: [u8; 7] = [47, 50, 4, 41, 89, 103, 253];

/// One flow-opening packet. `port` is the destination port, ICMP
/// `type << 8 | code`, or 0 for other protocols; `sport` is the source port or
/// the ICMP echo identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub port: u16,
    pub sport: u16,
}

impl Pkt {
    pub fn is_icmp(&self) -> bool {
        self.proto == PROTO_ICMP || self.proto == PROTO_ICMPV6
    }

    fn icmp_echo(&self) -> Option<bool /* request */> {
        let ty = self.port >> 8;
        match self.proto {
            PROTO_ICMP if ty == 8 || ty == 0 => Some(ty == 8),
            PROTO_ICMPV6 if ty == 128 || ty == 129 => Some(ty == 128),
            _ => None,
        }
    }

    /// The conntrack ports of the packet: (source, destination).
    pub fn ct_ports(&self) -> (u16, u16) {
        match self.proto {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => (self.sport, self.port),
            _ if self.icmp_echo().is_some() => (self.sport, self.sport),
            _ => (0, 0),
        }
    }

    /// The packet's conntrack key, direction-normalised, if the datapath looks
    /// it up in conntrack before policy (so it must never have been used).
    pub fn lookup_key(&self) -> Option<FlowKey> {
        let looked_up = match self.proto {
            PROTO_TCP => false,                                     // SYN: straight to policy
            _ if self.is_icmp() => self.icmp_echo() == Some(false), // echo reply
            _ => true,
        };
        looked_up.then(|| self.flow_key())
    }

    pub fn flow_key(&self) -> FlowKey {
        let (sp, dp) = self.ct_ports();
        let a = (addr_bits(self.src), sp);
        let b = (addr_bits(self.dst), dp);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        (lo, hi, self.proto, self.src.is_ipv6())
    }

    /// Whether an allowed packet leaves a conntrack entry behind.
    pub fn creates_entry(&self) -> bool {
        !self.is_icmp() || self.icmp_echo() == Some(true)
    }

    pub fn frame(&self) -> Vec<u8> {
        let base = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Packet::ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => Packet::ipv6(s, d),
            _ => panic!("mixed families: {self:?}"),
        };
        let (ty, code) = ((self.port >> 8) as u8, self.port as u8);
        match self.proto {
            PROTO_TCP => base.tcp(self.sport, self.port, TCP_SYN),
            PROTO_UDP => base.udp(self.sport, self.port),
            PROTO_SCTP => base.sctp(self.sport, self.port),
            PROTO_ICMP => base.icmp(ty, code, self.sport),
            PROTO_ICMPV6 => base.icmpv6(ty, code, self.sport),
            p => base.proto(p).payload(&[0x5a; 8]),
        }
        .build()
    }

    pub fn describe(&self) -> String {
        let what = match self.proto {
            PROTO_TCP => format!("TCP SYN {} -> {}", self.sport, self.port),
            PROTO_UDP => format!("UDP {} -> {}", self.sport, self.port),
            PROTO_SCTP => format!("SCTP {} -> {}", self.sport, self.port),
            PROTO_ICMP | PROTO_ICMPV6 => format!(
                "{} type {} code {} (id {})",
                if self.proto == PROTO_ICMP {
                    "ICMP"
                } else {
                    "ICMPv6"
                },
                self.port >> 8,
                self.port & 0xff,
                self.sport
            ),
            p => format!("protocol {p}"),
        };
        format!("{} -> {} {what}", self.src, self.dst)
    }
}

/// ((address, port), (address, port), protocol, IPv6), lower endpoint first.
pub type FlowKey = ((u128, u16), (u128, u16), u8, bool);

fn gen_addr(rng: &mut Rng, prefixes: &[IpNet], host: &[IpAddr], is_v6: bool) -> IpAddr {
    let fam: Vec<IpNet> = prefixes
        .iter()
        .filter(|n| matches!(n, IpNet::V6(_)) == is_v6)
        .copied()
        .collect();
    let hosts: Vec<IpAddr> = host
        .iter()
        .filter(|a| a.is_ipv6() == is_v6)
        .copied()
        .collect();
    let r = rng.below(100);
    match r {
        0..=54 if !fam.is_empty() => {
            let n = *rng.pick(&fam);
            let (lo, hi) = bounds(&n);
            let max = if is_v6 {
                u128::MAX
            } else {
                u128::from(u32::MAX)
            };
            let bits = match rng.below(6) {
                0 => lo,
                1 => hi,
                2 => lo.wrapping_sub(1) & max,
                3 => hi.wrapping_add(1) & max,
                _ => return addr_inside(rng, &n),
            };
            same_family(n.network(), bits)
        }
        55..=64 if !hosts.is_empty() => *rng.pick(&hosts),
        0..=89 => dense_addr(rng, is_v6),
        _ => match (is_v6, rng.below(5)) {
            (false, 0) => v4(0),
            (false, 1) => v4(u32::MAX),
            (false, _) => v4(rng.next() as u32),
            (true, 0) => v6(0),
            (true, 1) => v6(u128::MAX),
            (true, _) => v6((u128::from(rng.next()) << 64) | u128::from(rng.next())),
        },
    }
}

pub fn gen_packet(rng: &mut Rng, gp: &GPolicy, prefixes: &[IpNet]) -> Pkt {
    let any_v6 = prefixes.iter().any(|n| matches!(n, IpNet::V6(_)));
    let is_v6 = rng.chance(if any_v6 { 40 } else { 15 });
    let src = gen_addr(rng, prefixes, &gp.host, is_v6);
    let dst = gen_addr(rng, prefixes, &gp.host, is_v6);
    let specs: Vec<PortSpec> = gp
        .rules
        .iter()
        .filter_map(|r| match r {
            GRule::Edge { ports, .. } => ports.as_ref(),
            GRule::Within { .. } => None,
        })
        .flatten()
        .map(|p| p.spec)
        .filter(|s| s.proto.is_some())
        .collect();
    let (mut proto, mut port) = if !specs.is_empty() && rng.chance(55) {
        let s = *rng.pick(&specs);
        let proto = s.proto.expect("filtered");
        let port = match s.range {
            None => rand_port(rng),
            Some((lo, hi)) => match rng.below(6) {
                0 => lo,
                1 => hi,
                2 => lo.wrapping_sub(1),
                3 => hi.wrapping_add(1),
                _ => lo + (rng.below(u64::from(hi - lo) + 1) as u16),
            },
        };
        (proto, port)
    } else {
        match rng.below(100) {
            0..=29 => (PROTO_TCP, rand_port(rng)),
            // Now and then a tunnel port, which reaches the node only from nodes.
            30..=33 => (PROTO_UDP, *rng.pick(&[4789u16, 8472, 6081])),
            34..=51 => (PROTO_UDP, rand_port(rng)),
            52..=61 => (PROTO_SCTP, rand_port(rng)),
            62..=76 => (PROTO_ICMP, 8 << 8 | if rng.chance(85) { 0 } else { 1 }),
            77..=94 => {
                let ty = if rng.chance(70) {
                    *rng.pick(&[0u16, 3, 5, 11, 13, 1, 2, 4, 129, 143])
                } else {
                    rng.below(256) as u16
                };
                (PROTO_ICMP, ty << 8 | rng.below(6) as u16)
            }
            _ => (*rng.pick(&RAW_PROTOS), 0),
        }
    };
    // ICMP of the packet's own family (the port's type and code kept).
    if proto == PROTO_ICMP && is_v6 {
        proto = PROTO_ICMPV6;
        if port >> 8 == 8 {
            port = 128 << 8 | (port & 0xff);
        }
    } else if proto == PROTO_ICMPV6 && !is_v6 {
        proto = PROTO_ICMP;
        if port >> 8 == 128 {
            port = 8 << 8 | (port & 0xff);
        }
    }
    // IPv6 neighbour discovery and MLD are judged by link rules, not the
    // policy: keep them to one in four of the packets that draw those types.
    if src.is_ipv6() && reference::is_discovery(proto, port) && rng.chance(75) {
        port = 128 << 8 | (port & 0xff);
    }
    let port = match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_ICMP | PROTO_ICMPV6 => port,
        _ => 0,
    };
    Pkt {
        src,
        dst,
        proto,
        port,
        sport: rng.below(65536) as u16,
    }
}
