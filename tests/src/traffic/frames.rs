//! Frame templates of the traffic generator and how `lab_gen` varies each.
//!
//! Addresses follow the LOCAL-PLUS policy (examples/localplus-cidr): the gateway
//! (10.0.4.0/26) may open TCP 8080 to svc-ledger (10.0.1.0/24); services may
//! send DNS to coredns (10.0.4.96/28); 172.16.0.0/12 is where the benchmark's
//! extra prefixes live, and has no rule to svc-ledger.
use crate::packet::{Packet, TCP_ACK, TCP_SYN};

/// Established flows per family: source ports FLOW_PORT .. FLOW_PORT+FLOWS.
pub const FLOWS: u32 = 1024;
pub const FLOW_PORT: u32 = 20000;
const SYN_SEQ: u32 = 1000;
const SYNACK_SEQ: u32 = 5000;

/// One frame and the rewrite `lab_gen` applies to each copy of it.
#[derive(Clone, Debug)]
pub struct Template {
    pub name: &'static str,
    pub frame: Vec<u8>,
    /// GEN_CFG of lab-progs: [source bits to randomise, random source port,
    /// flow count (power of two), first source port of the flows].
    pub vary: [u32; 4],
}

fn frame(p: Packet, dst_mac: [u8; 6]) -> Vec<u8> {
    let mut p = p;
    p.dst_mac = dst_mac;
    let mut f = p.build();
    // 64 bytes on the wire, as pktgen sends by default.
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Packet {
    Packet::ip(src, dst).tcp(sport, dport, flags).tcp_mut(|t| {
        t.seq = seq;
        t.ack = ack;
    })
}

/// Templates aimed at the interface under test (`dst_mac` is its MAC).
pub struct Templates {
    pub denied_syn: Template,
    pub allowed_syn: Template,
    pub established_ack: Template,
    pub udp_dns: Template,
    pub established_ack6: Template,
    pub denied_syn6: Template,
}

impl Templates {
    pub fn new(dst_mac: [u8; 6]) -> Templates {
        Templates {
            denied_syn: Template {
                name: "denied SYN flood, random sources in 172.16.0.0/12",
                frame: frame(
                    tcp("172.16.0.1", "10.0.1.10", 1024, 8080, TCP_SYN, SYN_SEQ, 0),
                    dst_mac,
                ),
                vary: [20, 1, 0, 0],
            },
            allowed_syn: Template {
                name: "allowed SYN, new flows gateway -> svc-ledger:8080",
                frame: frame(
                    tcp("10.0.4.1", "10.0.1.10", 1024, 8080, TCP_SYN, SYN_SEQ, 0),
                    dst_mac,
                ),
                vary: [6, 1, 0, 0],
            },
            established_ack: Template {
                name: "ACK of 1024 established flows (IPv4)",
                frame: frame(
                    tcp(
                        "10.0.4.10",
                        "10.0.1.10",
                        FLOW_PORT as u16,
                        8080,
                        TCP_ACK,
                        SYN_SEQ + 1,
                        SYNACK_SEQ + 1,
                    ),
                    dst_mac,
                ),
                vary: [0, 0, FLOWS, FLOW_PORT],
            },
            udp_dns: Template {
                name: "UDP DNS, new flows svc-ledger -> coredns:53",
                frame: frame(Packet::ip("10.0.1.1", "10.0.4.100").udp(1024, 53), dst_mac),
                vary: [8, 1, 0, 0],
            },
            established_ack6: Template {
                name: "ACK of 1024 established flows (IPv6)",
                frame: frame(
                    tcp(
                        "fd00:0:4::10",
                        "fd00:0:1::10",
                        FLOW_PORT as u16,
                        8080,
                        TCP_ACK,
                        SYN_SEQ + 1,
                        SYNACK_SEQ + 1,
                    ),
                    dst_mac,
                ),
                vary: [0, 0, FLOWS, FLOW_PORT],
            },
            denied_syn6: Template {
                name: "denied SYN flood, random sources in 2001:db8::/104 (IPv6)",
                frame: frame(
                    tcp(
                        "2001:db8::1",
                        "fd00:0:1::10",
                        1024,
                        8080,
                        TCP_SYN,
                        SYN_SEQ,
                        0,
                    ),
                    dst_mac,
                ),
                vary: [24, 1, 0, 0],
            },
        }
    }
}

/// The SYNs (from gen, `to_dut` = the dut's MAC) and SYN-ACKs (from the pod
/// side, `to_fwd` = the dut's forwarding interface) that open the FLOWS flows
/// the established templates then send on, for IPv4 and IPv6.
pub fn handshake(to_dut: [u8; 6], to_fwd: [u8; 6]) -> (Vec<Template>, Vec<Template>) {
    let flows = [0, 0, FLOWS, FLOW_PORT];
    let mut syns = Vec::new();
    let mut synacks = Vec::new();
    for (client, server) in [("10.0.4.10", "10.0.1.10"), ("fd00:0:4::10", "fd00:0:1::10")] {
        syns.push(Template {
            name: "handshake SYN",
            frame: frame(
                tcp(client, server, FLOW_PORT as u16, 8080, TCP_SYN, SYN_SEQ, 0),
                to_dut,
            ),
            vary: flows,
        });
        synacks.push(Template {
            name: "handshake SYN-ACK",
            frame: frame(
                tcp(
                    server,
                    client,
                    8080,
                    FLOW_PORT as u16,
                    TCP_SYN | TCP_ACK,
                    SYNACK_SEQ,
                    SYN_SEQ + 1,
                ),
                to_fwd,
            ),
            // The flow port is the destination of a reply.
            vary: [0, 2, FLOWS, FLOW_PORT],
        });
    }
    (syns, synacks)
}
