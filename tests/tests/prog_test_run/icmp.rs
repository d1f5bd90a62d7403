//! ICMP and ICMPv6: echo flows, errors judged by type and code, and IPv6
//! neighbour discovery and MLD, which pass whatever the policy.

use agent_common::reason::*;
use netpol_tests::packet::{Ext, Packet, ETH_P_8021Q};
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

#[test]
fn ipv6_neighbour_discovery_passes() {
    // An empty policy: nothing is allowed, ND must still pass.
    let Some(b) = Bench::new("ipv6_neighbour_discovery_passes", "{}") else {
        return;
    };
    let target: std::net::Ipv6Addr = "fd00:2::7".parse().unwrap();
    let nd = |ty: u8, src: &str, dst: &str| {
        Packet::ip(src, dst)
            .icmpv6(ty, 0, 0)
            .payload(&target.octets())
            .ipv6_mut(|h| h.hop_limit = 255)
    };
    b.xdp(
        "router solicitation",
        &nd(133, "fe80::1", "ff02::2"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    b.xdp(
        "router advertisement",
        &nd(134, "fe80::2", "ff02::1"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    b.xdp(
        "neighbour solicitation",
        &nd(135, "fd00:1::5", "ff02::1:ff00:7"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    b.xdp(
        "neighbour advertisement",
        &nd(136, "fd00:2::7", "fd00:1::5"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    b.xdp(
        "redirect",
        &nd(137, "fe80::2", "fd00:1::5"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    b.xdp(
        "neighbour solicitation, 802.1Q-tagged",
        &nd(135, "::", "ff02::1:ff00:7").vlan(ETH_P_8021Q, 10),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    b.xdp(
        "neighbour solicitation behind a hop-by-hop header",
        &nd(135, "fe80::1", "ff02::1:ff00:7").ext(Ext::hop_by_hop()),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    // Multicast listener discovery: ND relies on it to join solicited-node
    // groups (MLD-snooping switches forward NS only to members).
    for (ty, name) in [
        (130, "MLD query"),
        (131, "MLD report"),
        (132, "MLD done"),
        (143, "MLDv2 report"),
    ] {
        b.xdp(
            name,
            &nd(ty, "fe80::1", "ff02::16"),
            Pass(PASS_NEIGHBOUR_DISCOVERY),
        );
    }
    // Just outside those ranges: ordinary ICMPv6, judged by policy.
    b.xdp(
        "node information query (139)",
        &nd(139, "fe80::1", "ff02::2"),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "ICMPv6 type 129 without a request",
        &nd(129, "fe80::1", "ff02::2"),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "router renumbering (138)",
        &nd(138, "fe80::1", "ff02::2"),
        Drop(DROP_POLICY),
    );
    b.tc(
        "neighbour solicitation",
        &nd(135, "fe80::1", "ff02::1:ff00:7"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
}
