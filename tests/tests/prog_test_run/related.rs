//! ICMP and ICMPv6 errors (destination unreachable, source quench, time
//! exceeded, parameter problem; packet too big) pass only when the header
//! they quote belongs to a live conntrack entry's flow and they go back to
//! that packet's source (`related`), whatever the policy; otherwise they are
//! dropped (`icmp-unrelated`), and a cut or malformed quote is `malformed-l4`.

use agent_common::reason::*;
use netpol_tests::packet::{Packet, TCP_ACK, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{Bench, Fam, BASE, V4, V6};

/// The quote an error about `p` carries: its IP header and the first 8
/// bytes of its transport header (RFC 792), as sent (no Ethernet header).
fn quote(f: Fam, p: &Packet) -> Vec<u8> {
    let frame = p.build();
    let ip = if f.v6 { 40 } else { 20 };
    frame[14..14 + ip + 8].to_vec()
}

/// "Fragmentation needed" (ICMP 3/4) or "packet too big" (ICMPv6 2), from
/// `src` to `dst`, quoting `quoted`.
fn too_big(f: Fam, src: &str, dst: &str, quoted: &[u8]) -> Packet {
    let p = Packet::ip(src, dst);
    let p = if f.v6 {
        p.icmpv6(2, 0, 0)
    } else {
        p.icmp(3, 4, 0)
    };
    p.payload(quoted)
}

/// Port unreachable (ICMP 3/3, ICMPv6 1/4).
fn unreachable(f: Fam, src: &str, dst: &str, quoted: &[u8]) -> Packet {
    let p = Packet::ip(src, dst);
    let p = if f.v6 {
        p.icmpv6(1, 4, 0)
    } else {
        p.icmp(3, 3, 0)
    };
    p.payload(quoted)
}

/// A policy that allows the errors by type and code: it must not matter.
fn with_error_rules() -> String {
    format!(
        "{BASE}  - name: pmtu\n    from: any\n    to: any\n    ports: [icmp/3, icmp/11, icmpv6/1, icmpv6/2, icmpv6/3]\n"
    )
}

fn related(test: &'static str, f: Fam, yaml: &str) {
    let Some(b) = Bench::new(test, yaml) else {
        return;
    };
    let (web, db, world) = (f.web, f.db, f.world);
    let syn = Packet::ip(web, db).tcp(40000, 5432, TCP_SYN);
    b.xdp("SYN web->db:5432", &syn, Pass(PASS_POLICY));
    let reply = Packet::ip(db, web).tcp(5432, 40000, TCP_SYN | TCP_ACK);
    b.xdp("SYN-ACK", &reply, Pass(PASS_ESTABLISHED));
    let data = Packet::ip(web, db).tcp(40000, 5432, TCP_ACK);
    // Related: about the flow's packets, back to their sender, from a router
    // on the way or from the peer.
    b.xdp(
        "too big from a router, quoting web->db",
        &too_big(f, world, web, &quote(f, &data)),
        Pass(PASS_RELATED),
    );
    b.xdp(
        "too big from db, quoting web->db",
        &too_big(f, db, web, &quote(f, &data)),
        Pass(PASS_RELATED),
    );
    b.xdp(
        "too big to db about its reply",
        &too_big(f, world, db, &quote(f, &reply)),
        Pass(PASS_RELATED),
    );
    b.tc(
        "too big leaving towards web",
        &too_big(f, world, web, &quote(f, &data)),
        Pass(PASS_RELATED),
    );
    b.xdp(
        "the quote may be longer than 8 transport bytes",
        &too_big(f, world, web, &syn.build()[14..]),
        Pass(PASS_RELATED),
    );
    // A UDP flow and an echo flow: their errors are related too.
    let dns = Packet::ip(web, db).udp(41000, 53);
    b.xdp("UDP web->db:53", &dns, Pass(PASS_POLICY));
    b.xdp(
        "port unreachable about the UDP flow",
        &unreachable(f, db, web, &quote(f, &dns)),
        Pass(PASS_RELATED),
    );
    let echo = f.echo_request(web, db, 77);
    b.xdp("echo request web->db", &echo, Pass(PASS_POLICY));
    b.xdp(
        "unreachable about the echo request",
        &unreachable(f, world, web, &quote(f, &echo)),
        Pass(PASS_RELATED),
    );
    // Unrelated: dropped even though the policy may allow them by type.
    let other_port = Packet::ip(web, db).tcp(40000, 5433, TCP_ACK);
    b.xdp(
        "forged too big quoting no flow",
        &too_big(f, world, web, &quote(f, &other_port)),
        Drop(DROP_ICMP_UNRELATED),
    );
    b.xdp(
        "too big quoting the flow, sent to a third host",
        &too_big(f, world, f.web2, &quote(f, &data)),
        Drop(DROP_ICMP_UNRELATED),
    );
    b.xdp(
        "too big quoting the reply, sent to web (not its sender)",
        &too_big(f, world, web, &quote(f, &reply)),
        Drop(DROP_ICMP_UNRELATED),
    );
    b.xdp(
        "unreachable quoting an echo reply",
        &unreachable(f, world, db, &quote(f, &f.echo_reply(db, web, 77))),
        Drop(DROP_ICMP_UNRELATED),
    );
    b.tc(
        "forged too big leaving",
        &too_big(f, world, web, &quote(f, &other_port)),
        Drop(DROP_ICMP_UNRELATED),
    );
    let later = f.fragment(Packet::ip(web, db).udp(41000, 53), 9, 4, false);
    if !f.v6 {
        // An IPv4 later fragment has no ports to match (IPv6 quotes with an
        // extension header are not walked: also unrelated).
        b.xdp(
            "quoting a later fragment",
            &too_big(f, world, web, &quote(f, &later)),
            Drop(DROP_ICMP_UNRELATED),
        );
    } else {
        b.xdp(
            "quoting a packet with a fragment header",
            &too_big(f, world, web, &later.build()[14..14 + 40 + 8 + 8]),
            Drop(DROP_ICMP_UNRELATED),
        );
    }
    // Malformed quotes: dropped and counted, never a pass.
    let q = quote(f, &data);
    b.xdp(
        "no quote at all",
        &too_big(f, world, web, &[]),
        Drop(DROP_MALFORMED_L4),
    );
    b.xdp(
        "quote cut inside the transport bytes",
        &too_big(f, world, web, &q[..q.len() - 1]),
        Drop(DROP_MALFORMED_L4),
    );
    b.xdp(
        "quote cut inside the IP header",
        &too_big(f, world, web, &q[..12]),
        Drop(DROP_MALFORMED_L4),
    );
    let mut wrong_version = q.clone();
    wrong_version[0] = if f.v6 { 0x45 } else { 0x65 };
    b.xdp(
        "quoted header of the other IP version",
        &too_big(f, world, web, &wrong_version),
        Drop(DROP_MALFORMED_L4),
    );
    if !f.v6 {
        let mut long_ihl = q.clone();
        long_ihl[0] = 0x4f; // 60 bytes of header claimed, 20 quoted
        b.xdp(
            "quoted IHL beyond the quote",
            &too_big(f, world, web, &long_ihl),
            Drop(DROP_MALFORMED_L4),
        );
        let mut short_ihl = q.clone();
        short_ihl[0] = 0x44;
        b.xdp(
            "quoted IHL below 5",
            &too_big(f, world, web, &short_ihl),
            Drop(DROP_MALFORMED_L4),
        );
    }
    // The quote may not reach past the outer IP packet into link padding.
    let mut padded = too_big(f, world, web, &q[..q.len() - 4]).build();
    padded.extend_from_slice(&q[q.len() - 4..]);
    b.xdp_bytes(
        "quote completed only by bytes past the IP length",
        &padded,
        Drop(DROP_MALFORMED_L4),
    );
    b.assert_ct(
        "three flows, errors open none",
        if f.v6 { (0, 3) } else { (3, 0) },
    );
}

#[test]
fn icmp_errors_related_ipv4() {
    related("icmp_errors_related_ipv4", V4, BASE);
}

#[test]
fn icmpv6_errors_related() {
    related("icmpv6_errors_related", V6, BASE);
}

#[test]
fn icmp_errors_unrelated_despite_rules_ipv4() {
    related(
        "icmp_errors_unrelated_despite_rules_ipv4",
        V4,
        &with_error_rules(),
    );
}

#[test]
fn icmpv6_errors_unrelated_despite_rules() {
    related(
        "icmpv6_errors_unrelated_despite_rules",
        V6,
        &with_error_rules(),
    );
}
