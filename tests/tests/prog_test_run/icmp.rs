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
    // Errors are judged by type and code; BASE allows none.
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
    b.xdp(
        "destination unreachable db->web",
        &unreach.payload(&[0x45; 28]),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "time exceeded db->web",
        &exceeded.payload(&[0x45; 28]),
        Drop(DROP_POLICY),
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
fn icmp_errors_follow_policy() {
    let yaml = format!(
        "{BASE}  - name: pmtu\n    from: any\n    to: any\n    ports: [icmp/3:4, icmpv6/2]\n"
    );
    let Some(b) = Bench::new("icmp_errors_follow_policy", &yaml) else {
        return;
    };
    let quote = [0x45; 28];
    for f in [V4, V6] {
        let p = |ty, code| {
            let p = Packet::ip(f.db, f.web);
            let p = if f.v6 {
                p.icmpv6(ty, code, 0)
            } else {
                p.icmp(ty, code, 0)
            };
            p.payload(&quote)
        };
        let n = f.name;
        if f.v6 {
            b.xdp(
                &format!("{n} packet too big (allowed)"),
                &p(2, 0),
                Pass(PASS_POLICY),
            );
            b.xdp(
                &format!("{n} port unreachable"),
                &p(1, 4),
                Drop(DROP_POLICY),
            );
            b.xdp(&format!("{n} time exceeded"), &p(3, 0), Drop(DROP_POLICY));
        } else {
            b.xdp(
                &format!("{n} fragmentation needed (allowed)"),
                &p(3, 4),
                Pass(PASS_POLICY),
            );
            b.xdp(
                &format!("{n} port unreachable (code 3)"),
                &p(3, 3),
                Drop(DROP_POLICY),
            );
            b.xdp(&format!("{n} time exceeded"), &p(11, 0), Drop(DROP_POLICY));
        }
        b.xdp(
            &format!("{n} echo request world->web (icmp/8 is web->db only)"),
            &f.echo_request(f.world, f.web, 1),
            Drop(DROP_POLICY),
        );
    }
    b.assert_ct("ICMP errors open no flow", (0, 0));
}
