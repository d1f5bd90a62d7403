//! ICMP and ICMPv6: echo flows and errors judged by type and code (IPv6
//! neighbour discovery and MLD are in `nd`).

use agent_common::reason::*;
use netpol_tests::packet::Packet;
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{Bench, Fam, BASE, V4, V6};

fn icmp_echo(test: &'static str, f: Fam) {
    let Some(b) = Bench::new(test, BASE) else {
        return;
    };
    let (web, db) = (f.web, f.db);
    b.xdp(
        "echo request web->db",
        &f.echo_request(web, db, 7),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "echo reply db->web",
        &f.echo_reply(db, web, 7),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "second echo request",
        &f.echo_request(web, db, 7),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "echo reply with another id",
        &f.echo_reply(db, web, 8),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "echo reply with no request",
        &f.echo_reply(f.world, web, 9),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "echo request db->web",
        &f.echo_request(db, web, 10),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "echo request web->world",
        &f.echo_request(web, f.world, 11),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "reply to the denied request",
        &f.echo_reply(f.world, web, 11),
        Drop(DROP_POLICY),
    );
    // Errors pass only when they quote a tracked flow (see `related`): these
    // quote 28 bytes of 0x45, an IPv4 header of protocol 69 (no flow), or, in
    // an ICMPv6 error, not an IPv6 header at all.
    let (unreach, exceeded) = if f.v6 {
        (
            Packet::ip(db, web).icmpv6(1, 4, 0),
            Packet::ip(db, web).icmpv6(3, 0, 0),
        )
    } else {
        (
            Packet::ip(db, web).icmp(3, 4, 0),
            Packet::ip(db, web).icmp(11, 0, 0),
        )
    };
    let bad_quote = if f.v6 {
        DROP_MALFORMED_L4
    } else {
        DROP_ICMP_UNRELATED
    };
    b.xdp(
        "destination unreachable db->web",
        &unreach.payload(&[0x45; 28]),
        Drop(bad_quote),
    );
    b.xdp(
        "time exceeded db->web",
        &exceeded.payload(&[0x45; 28]),
        Drop(bad_quote),
    );
    let want = if f.v6 { (0, 1) } else { (1, 0) };
    b.assert_ct("one echo flow", want);
}

#[test]
fn icmp_echo_ipv4() {
    icmp_echo("icmp_echo_ipv4", V4);
}

#[test]
fn icmpv6_echo() {
    icmp_echo("icmpv6_echo", V6);
}

#[test]
fn icmp_other_types_follow_policy() {
    // Types that are neither echo nor errors are judged by type and code.
    let yaml = format!(
        "{BASE}  - name: timestamps\n    from: any\n    to: any\n    ports: [icmp/13, icmpv6/139]\n"
    );
    let Some(b) = Bench::new("icmp_other_types_follow_policy", &yaml) else {
        return;
    };
    for f in [V4, V6] {
        let n = f.name;
        let p = |ty| {
            let p = Packet::ip(f.db, f.web);
            if f.v6 {
                p.icmpv6(ty, 0, 0)
            } else {
                p.icmp(ty, 0, 0)
            }
        };
        let (allowed, other) = if f.v6 { (139, 140) } else { (13, 15) };
        b.xdp(
            &format!("{n} type {allowed} (allowed)"),
            &p(allowed),
            Pass(PASS_POLICY),
        );
        b.xdp(&format!("{n} type {other}"), &p(other), Drop(DROP_POLICY));
        b.xdp(
            &format!("{n} echo request world->web (icmp/8 is web->db only)"),
            &f.echo_request(f.world, f.web, 1),
            Drop(DROP_POLICY),
        );
    }
    b.assert_ct("these ICMP types open no flow", (0, 0));
}
