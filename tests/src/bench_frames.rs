//! The canned frames of the microbenchmark, against the LOCAL-PLUS policy plus a
//! `bench-extra` group (prefixes in 172.16.0.0/12, allowed only to svc-wallet
//! 9999/tcp, so it has TCP rules and the identity fast path cannot skip it).
use std::net::Ipv4Addr;

use crate::packet::{Packet, TCP_ACK, TCP_SYN};

/// A source inside the extra prefixes (always one of them).
pub const EXTRA_SRC: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

pub struct Scenario {
    pub name: &'static str,
    /// Frames run once before measuring (e.g. the SYN that opens the flow).
    pub setup: Vec<Vec<u8>>,
    pub frame: Vec<u8>,
    pub pass: bool,
}

/// 64-byte frames (padded), as pktgen would send them.
pub(crate) fn frame(p: Packet) -> Vec<u8> {
    let mut f = p.build();
    if f.len() < 64 {
        f.resize(64, 0);
    }
    f
}

/// SYN from `client`, SYN-ACK back: a flow conntrack has seen both ways.
fn handshake(client: &str, server: &str, sport: u16) -> Vec<Vec<u8>> {
    handshake_to(client, server, sport, 8080)
}

pub(crate) fn handshake_to(client: &str, server: &str, sport: u16, dport: u16) -> Vec<Vec<u8>> {
    vec![
        frame(Packet::ip(client, server).tcp(sport, dport, TCP_SYN)),
        frame(Packet::ip(server, client).tcp(dport, sport, TCP_SYN | TCP_ACK)),
    ]
}

pub fn scenarios() -> Vec<Scenario> {
    let gw = "10.0.4.10";
    let ledger = "10.0.1.10";
    let (gw6, ledger6) = ("fd00:0:4::10", "fd00:0:1::10");
    vec![
        Scenario {
            name: "established TCP ACK (IPv4)",
            setup: handshake(gw, ledger, 40000),
            frame: frame(Packet::ip(gw, ledger).tcp(40000, 8080, TCP_ACK)),
            pass: true,
        },
        Scenario {
            name: "established, reply direction (IPv4)",
            setup: handshake(gw, ledger, 40001),
            frame: frame(Packet::ip(ledger, gw).tcp(8080, 40001, TCP_ACK)),
            pass: true,
        },
        Scenario {
            name: "half-open flow, no reply yet (IPv4)",
            setup: vec![frame(Packet::ip(gw, ledger).tcp(40003, 8080, TCP_SYN))],
            frame: frame(Packet::ip(gw, ledger).tcp(40003, 8080, TCP_ACK)),
            pass: true,
        },
        Scenario {
            name: "denied SYN, source in extra prefixes",
            setup: vec![],
            frame: frame(
                Packet::ipv4(EXTRA_SRC, ledger.parse().unwrap()).tcp(40000, 8080, TCP_SYN),
            ),
            pass: false,
        },
        Scenario {
            name: "denied SYN from world (IPv4)",
            setup: vec![],
            frame: frame(Packet::ip("203.0.113.10", ledger).tcp(40000, 8080, TCP_SYN)),
            pass: false,
        },
        Scenario {
            name: "allowed SYN: policy + ct write (IPv4)",
            setup: vec![],
            frame: frame(Packet::ip(gw, ledger).tcp(40002, 8080, TCP_SYN)),
            pass: true,
        },
        Scenario {
            name: "established TCP ACK (IPv6)",
            setup: handshake(gw6, ledger6, 40000),
            frame: frame(Packet::ip(gw6, ledger6).tcp(40000, 8080, TCP_ACK)),
            pass: true,
        },
        Scenario {
            name: "denied SYN from world (IPv6)",
            setup: vec![],
            frame: frame(Packet::ip("2001:db8::10", ledger6).tcp(40000, 8080, TCP_SYN)),
            pass: false,
        },
    ]
}

/// The first source port of `fresh_syns`, above every port `scenarios` uses.
const FRESH_SPORT: u16 = 20000;

/// `n` SYNs of the allowed-SYN scenario's question (gateway -> ledger
/// 8080/tcp), each from its own source port: `n` distinct flows.
pub fn fresh_syns(n: u16) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| frame(Packet::ip("10.0.4.10", "10.0.1.10").tcp(FRESH_SPORT + i, 8080, TCP_SYN)))
        .collect()
}
