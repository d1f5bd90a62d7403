//! Truncation at every header boundary, with the IP length field as built
//! and rewritten to match the cut.

use agent_common::reason::*;
use netpol_tests::packet::{fix_ipv4_len, fix_ipv6_len, Ext, Packet, ETH_P_8021Q, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{Bench, Hook, BASE, MIN_FRAME, V4, V6};

/// Where the headers of a truncation test frame end.
struct Layout {
    /// Start of the IP header.
    l3: usize,
    v6: bool,
    /// IPv4 header with options, or IPv6 fixed header plus extension headers.
    ip_len: usize,
}

/// Every length from MIN_FRAME to full - 1 must drop with the malformed-* reason
/// of the layer the cut falls in; the full frame (an allowed SYN) must pass.
/// With `fix_lengths`, the IP length field is rewritten to match the cut, so a
/// cut inside the transport header is an L4 problem, not an IP one.
fn truncation(test: &'static str, p: Packet, layout: Layout, fix_lengths: bool) {
    let Some(b) = Bench::new(test, BASE) else {
        return;
    };
    let full = p.build();
    let ip_bad = if layout.v6 {
        DROP_MALFORMED_IPV6
    } else {
        DROP_MALFORMED_IPV4
    };
    for len in MIN_FRAME..full.len() {
        let mut f = full[..len].to_vec();
        let why = if len < layout.l3 {
            DROP_MALFORMED_L2
        } else if !fix_lengths {
            // The length field still claims the full packet.
            ip_bad
        } else {
            if layout.v6 {
                fix_ipv6_len(&mut f, layout.l3);
            } else {
                fix_ipv4_len(&mut f, layout.l3);
            }
            if len < layout.l3 + layout.ip_len {
                ip_bad
            } else {
                DROP_MALFORMED_L4
            }
        };
        let fixed = if fix_lengths {
            ", IP length rewritten"
        } else {
            ""
        };
        let scenario = format!("cut to {len} of {} bytes{fixed}", full.len());
        b.record(b.check(Hook::Xdp, &scenario, &f, Drop(why)));
    }
    b.record(b.check(Hook::Xdp, "the full frame", &full, Pass(PASS_POLICY)));
}

/// TCP SYN web->db:5432 with a 4-byte IPv4 option (router alert) and an MSS
/// option, so every header has a fixed part and a variable part to cut into.
pub fn tcp4_frame() -> Packet {
    Packet::ip(V4.web, V4.db)
        .ipv4_mut(|h| h.options = vec![0x94, 0x04, 0, 0])
        .tcp(47000, 5432, TCP_SYN)
        .tcp_mut(|t| t.options = vec![2, 4, 0x05, 0xb4])
}

pub fn tcp6_frame() -> Packet {
    Packet::ip(V6.web, V6.db)
        .ext(Ext::dest_opts())
        .tcp(47000, 5432, TCP_SYN)
        .tcp_mut(|t| t.options = vec![2, 4, 0x05, 0xa0])
}

const TCP4: Layout = Layout {
    l3: 14,
    v6: false,
    ip_len: 24,
};
const VLAN_TCP4: Layout = Layout {
    l3: 18,
    v6: false,
    ip_len: 24,
};
const TCP6: Layout = Layout {
    l3: 14,
    v6: true,
    ip_len: 48,
};

#[test]
fn truncated_tcp_ipv4() {
    truncation("truncated_tcp_ipv4", tcp4_frame(), TCP4, false);
}

#[test]
fn truncated_tcp_ipv4_lengths_rewritten() {
    truncation(
        "truncated_tcp_ipv4_lengths_rewritten",
        tcp4_frame(),
        TCP4,
        true,
    );
}

#[test]
fn truncated_vlan_tcp_ipv4() {
    let p = tcp4_frame().vlan(ETH_P_8021Q, 10);
    truncation("truncated_vlan_tcp_ipv4", p, VLAN_TCP4, false);
}

#[test]
fn truncated_vlan_tcp_ipv4_lengths_rewritten() {
    let p = tcp4_frame().vlan(ETH_P_8021Q, 10);
    truncation(
        "truncated_vlan_tcp_ipv4_lengths_rewritten",
        p,
        VLAN_TCP4,
        true,
    );
}

#[test]
fn truncated_tcp_ipv6() {
    truncation("truncated_tcp_ipv6", tcp6_frame(), TCP6, false);
}

#[test]
fn truncated_tcp_ipv6_lengths_rewritten() {
    truncation(
        "truncated_tcp_ipv6_lengths_rewritten",
        tcp6_frame(),
        TCP6,
        true,
    );
}
