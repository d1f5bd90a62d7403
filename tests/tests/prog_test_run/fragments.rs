//! IPv4 and IPv6 fragments: later fragments follow their first fragment's
//! verdict, through XDP and TC.

use agent_common::reason::*;
use netpol_tests::packet::{Ext, Packet, PROTO_TCP, PROTO_UDP, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{Bench, Fam, BASE, V4, V6};

fn fragments(test: &'static str, f: Fam) {
    let Some(b) = Bench::new(test, BASE) else {
        return;
    };
    let (web, db) = (f.web, f.db);
    let first = |src, dst, sport, dport, id| {
        let p = Packet::ip(src, dst).udp(sport, dport).payload(&[0x11; 32]);
        f.fragment(p, id, 0, true)
    };
    let later = |src, dst, id, offset, more| {
        let p = Packet::ip(src, dst).proto(PROTO_UDP).payload(&[0x22; 24]);
        f.fragment(p, id, offset, more)
    };
    b.xdp(
        "first fragment, UDP web->db:53",
        &first(web, db, 5353, 53, 0x1234),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "middle fragment",
        &later(web, db, 0x1234, 5, true),
        Pass(PASS_FRAGMENT),
    );
    b.xdp(
        "last fragment",
        &later(web, db, 0x1234, 8, false),
        Pass(PASS_FRAGMENT),
    );
    b.xdp(
        "later fragment, unknown id",
        &later(web, db, 0x4321, 5, false),
        Drop(DROP_FRAGMENT),
    );
    b.xdp(
        "later fragment, same id, other source",
        &later(f.web2, db, 0x1234, 5, false),
        Drop(DROP_FRAGMENT),
    );
    b.xdp(
        "later fragment, same id, reversed",
        &later(db, web, 0x1234, 5, false),
        Drop(DROP_FRAGMENT),
    );
    b.xdp(
        "later fragment, same id, other protocol",
        &f.fragment(
            Packet::ip(web, db).proto(PROTO_TCP).payload(&[0; 24]),
            0x1234,
            5,
            false,
        ),
        Drop(DROP_FRAGMENT),
    );
    // A denied datagram: its first fragment drops, so the rest finds nothing.
    b.xdp(
        "first fragment, UDP web->db:54 (denied)",
        &first(web, db, 5353, 54, 0x2222),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "later fragment of the denied datagram",
        &later(web, db, 0x2222, 5, false),
        Drop(DROP_FRAGMENT),
    );
    // Replies fragment too: a first fragment passing through conntrack counts.
    b.xdp(
        "first fragment of the reply",
        &first(db, web, 53, 5353, 0x3333),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "later fragment of the reply",
        &later(db, web, 0x3333, 5, false),
        Pass(PASS_FRAGMENT),
    );
    let syn = Packet::ip(web, db)
        .tcp(49500, 5432, TCP_SYN)
        .payload(&[0x33; 32]);
    b.xdp(
        "first fragment of a TCP SYN",
        &f.fragment(syn, 0x4444, 0, true),
        Pass(PASS_POLICY),
    );
    let rest = Packet::ip(web, db).proto(PROTO_TCP).payload(&[0x44; 24]);
    b.xdp(
        "later fragment of the TCP SYN",
        &f.fragment(rest, 0x4444, 7, false),
        Pass(PASS_FRAGMENT),
    );
    b.tc(
        "later fragment through TC",
        &later(web, db, 0x1234, 9, false),
        Pass(PASS_FRAGMENT),
    );
    b.tc(
        "untracked later fragment through TC",
        &later(web, db, 0x5555, 9, false),
        Drop(DROP_FRAGMENT),
    );
}

#[test]
fn fragments_ipv4() {
    fragments("fragments_ipv4", V4);
}

#[test]
fn fragments_ipv6() {
    fragments("fragments_ipv6", V6);
}

/// RFC 8200: headers after the fragment header (here destination options for
/// the final destination) belong to the fragmentable part, so every fragment's
/// fragment header names that header (60), not the transport. Later fragments
/// of an allowed datagram must still pass.
#[test]
fn ipv6_fragment_followed_by_destination_options() {
    let Some(b) = Bench::new("ipv6_fragment_followed_by_destination_options", BASE) else {
        return;
    };
    let first = Packet::ip(V6.web, V6.db)
        .ext(Ext::fragment(0, true, 0x77))
        .ext(Ext::dest_opts())
        .udp(5353, 53)
        .payload(&[0x11; 32]);
    b.xdp(
        "first fragment: Frag, Dest, UDP to 53",
        &first,
        Pass(PASS_POLICY),
    );
    let later = Packet::ip(V6.web, V6.db)
        .ext(Ext::fragment(6, false, 0x77))
        .proto(60)
        .payload(&[0x22; 24]);
    b.xdp(
        "later fragment (next header 60)",
        &later,
        Pass(PASS_FRAGMENT),
    );
}
