//! Malformed headers: bad IPv4, IPv6, TCP, UDP, ICMP and SCTP fields, and
//! transport headers outside the IP length.

use agent_common::reason::*;
use netpol_tests::packet::{Packet, PROTO_UDP, TCP_SYN};
use netpol_tests::progrun::Want::{self, Drop, Pass};
use netpol_tests::progrun::{Bench, Hook, BASE, V4, V6};

#[test]
fn malformed_headers() {
    let Some(b) = Bench::new("malformed_headers", BASE) else {
        return;
    };
    let syn4 = || Packet::ip(V4.web, V4.db).tcp(48000, 5432, TCP_SYN);
    let syn6 = || Packet::ip(V6.web, V6.db).tcp(48000, 5432, TCP_SYN);
    let ip4 = DROP_MALFORMED_IPV4;
    let cases: Vec<(&str, Packet, Want)> = vec![
        (
            "IPv4 IHL 4",
            syn4().ipv4_mut(|h| h.ihl = Some(4)),
            Drop(ip4),
        ),
        (
            "IPv4 IHL 0",
            syn4().ipv4_mut(|h| h.ihl = Some(0)),
            Drop(ip4),
        ),
        (
            "IPv4 IHL 15, total length covering it, frame shorter",
            syn4().ipv4_mut(|h| {
                h.ihl = Some(15);
                h.total_len = Some(60);
            }),
            Drop(ip4),
        ),
        (
            "IPv4 IHL 15 beyond total length",
            syn4().ipv4_mut(|h| h.ihl = Some(15)),
            Drop(ip4),
        ),
        (
            "IPv4 IHL 6 with total length 22",
            syn4().ipv4_mut(|h| {
                h.options = vec![1, 1, 1, 1];
                h.total_len = Some(22);
            }),
            Drop(ip4),
        ),
        (
            "IPv4 version 6",
            syn4().ipv4_mut(|h| h.version = Some(6)),
            Drop(ip4),
        ),
        (
            "IPv4 version 0",
            syn4().ipv4_mut(|h| h.version = Some(0)),
            Drop(ip4),
        ),
        (
            "IPv4 version 15",
            syn4().ipv4_mut(|h| h.version = Some(15)),
            Drop(ip4),
        ),
        (
            "IPv4 total length 19",
            syn4().ipv4_mut(|h| h.total_len = Some(19)),
            Drop(ip4),
        ),
        (
            "IPv4 total length 0",
            syn4().ipv4_mut(|h| h.total_len = Some(0)),
            Drop(ip4),
        ),
        (
            "IPv4 total length past the frame",
            syn4().ipv4_mut(|h| h.total_len = Some(41)),
            Drop(ip4),
        ),
        (
            "TCP data offset 4",
            syn4().tcp_mut(|t| t.data_offset = Some(4)),
            Drop(DROP_MALFORMED_L4),
        ),
        (
            "TCP data offset 0",
            syn4().tcp_mut(|t| t.data_offset = Some(0)),
            Drop(DROP_MALFORMED_L4),
        ),
        (
            "TCP data offset 15 past the frame",
            syn4().tcp_mut(|t| t.data_offset = Some(15)),
            Drop(DROP_MALFORMED_L4),
        ),
        (
            "UDP header of 4 bytes",
            Packet::ip(V4.web, V4.db)
                .proto(PROTO_UDP)
                .payload(&[0x14, 0xe9, 0, 53]),
            Drop(DROP_MALFORMED_L4),
        ),
        (
            "ICMP header of 4 bytes",
            Packet::ip(V4.web, V4.db).proto(1).payload(&[8, 0, 0, 0]),
            Drop(DROP_MALFORMED_L4),
        ),
        (
            "SCTP header of 8 bytes",
            Packet::ip(V4.web, V4.db)
                .proto(132)
                .payload(&[0x9c, 0x40, 0x0f, 0x1c, 0, 0, 0, 0]),
            Drop(DROP_MALFORMED_L4),
        ),
        (
            "IPv6 version 4",
            syn6().ipv6_mut(|h| h.version = Some(4)),
            Drop(DROP_MALFORMED_IPV6),
        ),
        (
            "IPv6 version 0",
            syn6().ipv6_mut(|h| h.version = Some(0)),
            Drop(DROP_MALFORMED_IPV6),
        ),
        (
            "IPv6 payload length 0",
            syn6().ipv6_mut(|h| h.payload_len = Some(0)),
            Drop(DROP_MALFORMED_IPV6),
        ),
        (
            "IPv6 payload length past the frame",
            syn6().ipv6_mut(|h| h.payload_len = Some(21)),
            Drop(DROP_MALFORMED_IPV6),
        ),
        (
            "IPv6 TCP data offset 3",
            syn6().tcp_mut(|t| t.data_offset = Some(3)),
            Drop(DROP_MALFORMED_L4),
        ),
        (
            "ICMPv6 header of 4 bytes",
            Packet::ip(V6.web, V6.db).proto(58).payload(&[135, 0, 0, 0]),
            Drop(DROP_MALFORMED_L4),
        ),
    ];
    for (name, p, want) in cases {
        b.record(b.check(Hook::Xdp, name, &p.build(), want));
    }
    // The well-formed originals pass, so the drops above are the overrides' doing.
    b.record(b.check(
        Hook::Xdp,
        "IPv4 original",
        &syn4().build(),
        Pass(PASS_POLICY),
    ));
    b.record(b.check(
        Hook::Xdp,
        "IPv6 original",
        &syn6().build(),
        Pass(PASS_POLICY),
    ));
}

/// The transport header must lie inside the IP packet as its length field
/// states; bytes after it (Ethernet padding, trailers) are not part of it.
#[test]
fn l4_header_outside_ip_length_is_malformed() {
    let Some(b) = Bench::new("l4_header_outside_ip_length_is_malformed", BASE) else {
        return;
    };
    let cases = [
        (
            "IPv4 total length 30: 10 of 20 TCP header bytes inside the packet",
            Packet::ip(V4.web, V4.db)
                .tcp(49000, 5432, TCP_SYN)
                .ipv4_mut(|h| h.total_len = Some(30)),
        ),
        (
            "IPv4 total length 20: the UDP header is all padding",
            Packet::ip(V4.web, V4.db)
                .udp(49001, 53)
                .ipv4_mut(|h| h.total_len = Some(20)),
        ),
        (
            "IPv6 payload length 10: 10 of 20 TCP header bytes inside the packet",
            Packet::ip(V6.web, V6.db)
                .tcp(49002, 5432, TCP_SYN)
                .ipv6_mut(|h| h.payload_len = Some(10)),
        ),
    ];
    for (name, p) in cases {
        b.record(b.check(Hook::Xdp, name, &p.build(), Drop(DROP_MALFORMED_L4)));
    }
}
