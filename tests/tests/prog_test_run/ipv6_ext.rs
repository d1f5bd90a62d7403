//! IPv6 extension headers: chains the datapath walks to the transport
//! header, longer chains and headers cut short (malformed-ipv6).

use agent_common::reason::*;
use netpol_tests::packet::{fix_ipv6_len, Ext, Packet, PROTO_NONE, PROTO_UDP, TCP_ACK, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{Bench, Hook, BASE, V6};

#[test]
fn ipv6_extension_headers() {
    let Some(b) = Bench::new("ipv6_extension_headers", BASE) else {
        return;
    };
    let (web, db) = (V6.web, V6.db);
    let three = |p: Packet| {
        p.ext(Ext::hop_by_hop())
            .ext(Ext::dest_opts())
            .ext(Ext::routing())
    };
    b.xdp(
        "HbH+Dest+Routing, SYN to 5432",
        &three(Packet::ip(web, db).tcp(45000, 5432, TCP_SYN)),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "SYN-ACK reply without extension headers",
        &Packet::ip(db, web).tcp(5432, 45000, TCP_SYN | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "HbH+Dest+Routing, SYN to 5433",
        &three(Packet::ip(web, db).tcp(45001, 5433, TCP_SYN)),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "HbH+Dest+Routing, UDP to 53",
        &three(Packet::ip(web, db).udp(45002, 53)),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "a 32-byte hop-by-hop header, UDP to 53",
        &Packet::ip(web, db)
            .ext(Ext::HopByHop { extra8: 3 })
            .udp(45003, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "AH, SYN to 5432",
        &Packet::ip(web, db).ext(Ext::ah()).tcp(45004, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "AH, SYN to 5433",
        &Packet::ip(web, db).ext(Ext::ah()).tcp(45005, 5433, TCP_SYN),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "atomic fragment header (offset 0, no M), SYN to 5432",
        &Packet::ip(web, db)
            .ext(Ext::fragment(0, false, 1))
            .tcp(45006, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    let five = Packet::ip(web, db)
        .ext(Ext::hop_by_hop())
        .ext(Ext::dest_opts())
        .ext(Ext::routing())
        .ext(Ext::fragment(0, false, 2))
        .ext(Ext::ah());
    b.xdp(
        "five extension headers, SYN to 5432",
        &five.clone().tcp(45007, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "five extension headers, SYN to 5433",
        &five.clone().tcp(45008, 5433, TCP_SYN),
        Drop(DROP_POLICY),
    );
    let seven = five
        .ext(Ext::dest_opts())
        .ext(Ext::dest_opts())
        .tcp(45009, 5432, TCP_SYN);
    b.xdp(
        "seven extension headers (more than the datapath walks)",
        &seven,
        Drop(DROP_MALFORMED_IPV6),
    );
    b.xdp(
        "a 520-byte hop-by-hop header (L4 beyond the parse window)",
        &Packet::ip(web, db)
            .ext(Ext::HopByHop { extra8: 64 })
            .tcp(45010, 5432, TCP_SYN),
        Drop(DROP_MALFORMED_IPV6),
    );
    b.xdp(
        "no next header after a destination options header",
        &Packet::ip(web, db).ext(Ext::dest_opts()).proto(PROTO_NONE),
        Drop(DROP_POLICY),
    );
}

/// parse.rs walks MAX_IPV6_EXT_HDRS = 6 extension headers and names the chain
/// it means (HbH, Dest, Routing, Frag, AH, Dest): such a chain must reach the
/// transport header.
#[test]
fn ipv6_six_extension_headers_are_walked() {
    let Some(b) = Bench::new("ipv6_six_extension_headers_are_walked", BASE) else {
        return;
    };
    let six = |port: u16| {
        Packet::ip(V6.web, V6.db)
            .ext(Ext::hop_by_hop())
            .ext(Ext::dest_opts())
            .ext(Ext::routing())
            .ext(Ext::fragment(0, false, 3))
            .ext(Ext::ah())
            .ext(Ext::dest_opts())
            .tcp(46000, port, TCP_SYN)
    };
    b.record(b.check(
        Hook::Xdp,
        "six extension headers, SYN to 5432",
        &six(5432).build(),
        Pass(PASS_POLICY),
    ));
    b.record(b.check(
        Hook::Xdp,
        "six extension headers, SYN to 5433",
        &six(5433).build(),
        Drop(DROP_POLICY),
    ));
}

/// An extension header that runs past the end of the packet is a broken chain
/// (malformed-ipv6), whatever follows it.
#[test]
fn ipv6_truncated_extension_header_is_malformed() {
    let yaml = r#"
groups:
  web: ["fd00:1::/64"]
  db: ["fd00:2::/64"]
rules:
  - name: web-to-db-anything
    from: web
    to: db
"#;
    let Some(b) = Bench::new("ipv6_truncated_extension_header_is_malformed", yaml) else {
        return;
    };
    let l3 = 14;
    for (what, l4) in [("no next header", None), ("UDP", Some(PROTO_UDP))] {
        // A destination options header claiming 40 bytes, of which 8 are present.
        let p = Packet::ip(V6.web, V6.db).ext(Ext::DestOpts { extra8: 4 });
        let p = match l4 {
            Some(_) => p.udp(5353, 53),
            None => p.proto(PROTO_NONE),
        };
        let mut f = p.build();
        f.truncate(l3 + 40 + 8);
        fix_ipv6_len(&mut f, l3);
        let scenario = format!("destination options header cut after 8 of 40 bytes, then {what}");
        b.record(b.check(Hook::Xdp, &scenario, &f, Drop(DROP_MALFORMED_IPV6)));
    }
}
