//! The datapath judged frame by frame through BPF_PROG_TEST_RUN: no interfaces,
//! no namespaces, no bpffs. Each test loads its own programs and maps (so tests
//! run in parallel), applies a small inline policy, runs frames through the XDP
//! (ingress) or TC (egress) program, and checks both the program's return value
//! and the exact counter change each frame causes: one packet and its bytes in
//! exactly one (direction, verdict, reason) slot.
//!
//! The harness is `netpol_tests::progrun`. Needs root (loading eBPF
//! programs); skips with a notice otherwise, and fails under CI=true.

use std::time::{Duration, Instant};

use agent_common::reason::*;
use netpol_agent::datapath::ct_gc;
use netpol_agent::datapath::{LoadOptions, Mode, Timeouts};
use netpol_agent::policy::CompileOptions;
use netpol_tests::packet::{
    fix_ipv4_len, fix_ipv6_len, Ext, Packet, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_LLDP,
    PROTO_NONE, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
};
use netpol_tests::progrun::Want::{self, Audit, Drop, Pass};
use netpol_tests::progrun::{
    small_maps, Bench, Fam, Hook, BASE, MIN_FRAME, TC_MIN_IPV4, TC_MIN_IPV6, V4, V6,
};

// ---------------------------------------------------------------------------
// The test-run interface itself
// ---------------------------------------------------------------------------

#[test]
fn minimum_frame_length() {
    let Some(b) = Bench::new("minimum_frame_length", BASE) else {
        return;
    };
    let refused = |hook: Hook, frame: &[u8]| {
        let before = b.counts();
        let r = match hook {
            Hook::Xdp => b.dp.xdp_test_run(frame, 1).map(|_| ()),
            Hook::Tc => b.dp.tc_test_run(frame).map(|_| ()),
        };
        assert_eq!(b.counts(), before, "a refused frame was counted");
        r.is_err()
    };
    let arp = Packet::ethertype(ETH_P_ARP).payload(&[0; 28]).build();
    for len in 0..MIN_FRAME {
        let f = &arp[..len];
        assert!(
            refused(Hook::Xdp, f),
            "XDP test run accepted {len} bytes: MIN_FRAME is stale"
        );
        assert!(
            refused(Hook::Tc, f),
            "TC test run accepted {len} bytes: MIN_FRAME is stale"
        );
    }
    let f = &arp[..MIN_FRAME];
    b.xdp_bytes("bare Ethernet header (ARP)", f, Pass(PASS_NON_IP));
    b.record(b.check(Hook::Tc, "bare Ethernet header (ARP)", f, Pass(PASS_NON_IP)));

    // The skb test run wants the fixed IP header of an IP ethertype.
    for (full, tc_min) in [
        (tcp4_frame().build(), TC_MIN_IPV4),
        (tcp6_frame().build(), TC_MIN_IPV6),
    ] {
        for len in MIN_FRAME..tc_min {
            let f = &full[..len];
            assert!(
                refused(Hook::Tc, f),
                "TC test run accepted {len} bytes of IP: TC_MIN_* stale"
            );
        }
        let f = &full[..tc_min];
        let why = if tc_min == TC_MIN_IPV4 {
            DROP_MALFORMED_IPV4
        } else {
            DROP_MALFORMED_IPV6
        };
        let scenario = format!("IP frame cut to {tc_min} bytes");
        b.record(b.check(Hook::Tc, &scenario, f, Drop(why)));
    }
}

// ---------------------------------------------------------------------------
// Verdict paths
// ---------------------------------------------------------------------------

fn tcp_verdicts(test: &'static str, f: Fam) {
    let Some(b) = Bench::new(test, BASE) else {
        return;
    };
    let (web, db) = (f.web, f.db);
    b.xdp(
        "allowed SYN web->db:5432",
        &Packet::ip(web, db).tcp(40000, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "SYN-ACK reply of the allowed flow",
        &Packet::ip(db, web).tcp(5432, 40000, TCP_SYN | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "client ACK",
        &Packet::ip(web, db).tcp(40000, 5432, TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "server data",
        &Packet::ip(db, web)
            .tcp(5432, 40000, TCP_PSH | TCP_ACK)
            .payload(b"hello"),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "SYN retransmit of the open flow (goes to policy again)",
        &Packet::ip(web, db).tcp(40000, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "denied SYN db->web:5432 (reverse edge)",
        &Packet::ip(db, web).tcp(40001, 5432, TCP_SYN),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "wrong port web->db:5433",
        &Packet::ip(web, db).tcp(40002, 5432 + 1, TCP_SYN),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "world->db:5432",
        &Packet::ip(f.world, db).tcp(40003, 5432, TCP_SYN),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "web->web:5432 (no intra-group rule)",
        &Packet::ip(web, f.web2).tcp(40004, 5432, TCP_SYN),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "reply-direction ACK with no flow",
        &Packet::ip(db, web).tcp(5432, 40005, TCP_ACK),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "SYN-ACK with no flow",
        &Packet::ip(db, web).tcp(5432, 40006, TCP_SYN | TCP_ACK),
        Drop(DROP_POLICY),
    );
    // A reset is judged by policy when untracked but never opens a flow.
    b.xdp(
        "RST web->db:5432 with no flow",
        &Packet::ip(web, db).tcp(40007, 5432, TCP_RST),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "reply to the RST-only flow",
        &Packet::ip(db, web).tcp(5432, 40007, TCP_ACK),
        Drop(DROP_POLICY),
    );
    // A mid-stream ACK of an allowed edge is picked up as a flow.
    b.xdp(
        "mid-stream ACK web->db:5432",
        &Packet::ip(web, db).tcp(40008, 5432, TCP_ACK),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "reply to the picked-up flow",
        &Packet::ip(db, web).tcp(5432, 40008, TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "FIN of the first flow",
        &Packet::ip(web, db).tcp(40000, 5432, TCP_FIN | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "RST of the first flow",
        &Packet::ip(db, web).tcp(5432, 40000, TCP_RST),
        Pass(PASS_ESTABLISHED),
    );
    let want = if f.v6 { (0, 2) } else { (2, 0) };
    b.assert_ct("flows 40000 and 40008 tracked, nothing else", want);
}

#[test]
fn tcp_ipv4_verdicts() {
    tcp_verdicts("tcp_ipv4_verdicts", V4);
}

#[test]
fn tcp_ipv6_verdicts() {
    tcp_verdicts("tcp_ipv6_verdicts", V6);
}

fn udp_sctp_verdicts(test: &'static str, f: Fam) {
    let Some(b) = Bench::new(test, BASE) else {
        return;
    };
    let (web, db) = (f.web, f.db);
    b.xdp(
        "UDP web->db:53",
        &Packet::ip(web, db).udp(5353, 53).payload(b"query"),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "UDP reply db:53->web",
        &Packet::ip(db, web).udp(53, 5353).payload(b"answer"),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "UDP web->db:53 again",
        &Packet::ip(web, db).udp(5353, 53),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "UDP db:53->web to another port",
        &Packet::ip(db, web).udp(53, 5354),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "UDP web->db:54",
        &Packet::ip(web, db).udp(5353, 54),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "UDP db->web:53 (reverse edge)",
        &Packet::ip(db, web).udp(5353, 53),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "TCP web->db:53 (rule is 53/udp)",
        &Packet::ip(web, db).tcp(40000, 53, TCP_SYN),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "SCTP web->db:3868",
        &Packet::ip(web, db).sctp(40000, 3868),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "SCTP reply",
        &Packet::ip(db, web).sctp(3868, 40000),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "SCTP web->db:3869",
        &Packet::ip(web, db).sctp(40001, 3869),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "UDP web->db:3868 (rule is 3868/sctp)",
        &Packet::ip(web, db).udp(40002, 3868),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "GRE web->db (no rule)",
        &Packet::ip(web, db).proto(47).payload(&[0; 8]),
        Drop(DROP_POLICY),
    );
    let want = if f.v6 { (0, 2) } else { (2, 0) };
    b.assert_ct("the UDP and SCTP flows", want);
}

#[test]
fn udp_sctp_ipv4_verdicts() {
    udp_sctp_verdicts("udp_sctp_ipv4_verdicts", V4);
}

#[test]
fn udp_sctp_ipv6_verdicts() {
    udp_sctp_verdicts("udp_sctp_ipv6_verdicts", V6);
}

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
fn non_ip_frames_pass() {
    let Some(b) = Bench::new("non_ip_frames_pass", "{}") else {
        return;
    };
    let arp = Packet::arp_request("10.0.2.7".parse().unwrap(), "10.0.2.1".parse().unwrap());
    b.xdp("ARP request", &arp, Pass(PASS_NON_IP));
    b.xdp(
        "802.1Q-tagged ARP",
        &arp.clone().vlan(ETH_P_8021Q, 10),
        Pass(PASS_NON_IP),
    );
    b.xdp(
        "LLDP",
        &Packet::ethertype(ETH_P_LLDP).payload(&[0x02; 32]),
        Pass(PASS_NON_IP),
    );
    b.xdp(
        "MPLS",
        &Packet::ethertype(0x8847).payload(&[0; 24]),
        Pass(PASS_NON_IP),
    );
    b.tc("ARP request", &arp, Pass(PASS_NON_IP));
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

const OVERLAP: &str = r#"
groups:
  web: [10.0.1.0/24, "fd00:1::/64"]
  canary: [10.0.1.128/25, "fd00:1:0:0:8000::/65"]
  db: [10.0.2.0/24, "fd00:2::/64"]
  db-primary: [10.0.2.10/32, "fd00:2::10/128"]
rules:
  - name: web-to-db
    from: web
    to: db
    ports: [5432/tcp]
  - name: canary-to-db
    from: canary
    to: db
    ports: [8080/tcp]
  - name: web-to-primary
    from: web
    to: db-primary
    ports: [6432/tcp]
"#;

#[test]
fn overlapping_groups() {
    let Some(b) = Bench::new("overlapping_groups", OVERLAP) else {
        return;
    };
    let cases = [
        // (web only, web + canary, db only, db + db-primary)
        ("10.0.1.5", "10.0.1.200", "10.0.2.7", "10.0.2.10"),
        ("fd00:1::5", "fd00:1::8000:0:0:1", "fd00:2::7", "fd00:2::10"),
    ];
    let mut sport = 41000;
    for (web, canary, db, primary) in cases {
        let mut syn = |src: &str, dst: &str, port: u16, want: Want| {
            sport += 1;
            let scenario = format!("{src} -> {dst}:{port}");
            b.xdp(
                &scenario,
                &Packet::ip(src, dst).tcp(sport, port, TCP_SYN),
                want,
            );
        };
        syn(web, db, 5432, Pass(PASS_POLICY));
        syn(web, db, 8080, Drop(DROP_POLICY));
        syn(web, db, 6432, Drop(DROP_POLICY));
        // The canary address is in web and canary: both groups' rules.
        syn(canary, db, 5432, Pass(PASS_POLICY));
        syn(canary, db, 8080, Pass(PASS_POLICY));
        syn(canary, db, 6432, Drop(DROP_POLICY));
        // The primary is in db and db-primary.
        syn(web, primary, 5432, Pass(PASS_POLICY));
        syn(web, primary, 6432, Pass(PASS_POLICY));
        syn(web, primary, 8080, Drop(DROP_POLICY));
        syn(canary, primary, 8080, Pass(PASS_POLICY));
        syn(canary, primary, 6432, Pass(PASS_POLICY));
        syn(db, web, 5432, Drop(DROP_POLICY));
    }
}

const ANY_WORLD: &str = r#"
groups:
  web: [10.0.1.0/24, "fd00:1::/64"]
  db: [10.0.2.0/24, "fd00:2::/64"]
rules:
  - name: world-to-web
    from: world
    to: web
    ports: [80/tcp]
  - name: web-to-anything
    from: web
    to: any
    ports: [443/tcp]
"#;

#[test]
fn any_and_world_peers() {
    let Some(b) = Bench::new("any_and_world_peers", ANY_WORLD) else {
        return;
    };
    for f in [V4, V6] {
        let syn = |src: &str, dst: &str, port: u16, want: Want| {
            let scenario = format!("{src} -> {dst}:{port}");
            b.xdp(
                &scenario,
                &Packet::ip(src, dst).tcp(42000, port, TCP_SYN),
                want,
            );
        };
        syn(f.world, f.web, 80, Pass(PASS_POLICY));
        syn(f.db, f.web, 80, Drop(DROP_POLICY)); // db is not world
        syn(f.web2, f.web, 80, Drop(DROP_POLICY)); // nor is web
        syn(f.world, f.db, 80, Drop(DROP_POLICY));
        syn(f.web, f.world, 443, Pass(PASS_POLICY));
        syn(f.web, f.db, 443, Pass(PASS_POLICY));
        syn(f.web, f.web2, 443, Pass(PASS_POLICY));
        syn(f.db, f.world, 443, Drop(DROP_POLICY));
        syn(f.world, f.web, 443, Drop(DROP_POLICY));
    }
}

// ---------------------------------------------------------------------------
// VLAN
// ---------------------------------------------------------------------------

#[test]
fn vlan_tags_get_untagged_verdicts() {
    let Some(b) = Bench::new("vlan_tags_get_untagged_verdicts", BASE) else {
        return;
    };
    let tagging: [(&str, &[(u16, u16)]); 4] = [
        ("untagged", &[]),
        ("802.1Q", &[(ETH_P_8021Q, 10)]),
        (
            "QinQ 802.1ad+802.1Q",
            &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10)],
        ),
        ("double 802.1Q", &[(ETH_P_8021Q, 100), (ETH_P_8021Q, 10)]),
    ];
    let tag = |p: Packet, tags: &[(u16, u16)]| tags.iter().fold(p, |p, &(t, v)| p.vlan(t, v));
    let mut sport = 43000;
    for f in [V4, V6] {
        for (name, tags) in tagging {
            sport += 1;
            let n = format!("{} {name}", f.name);
            let (web, db) = (f.web, f.db);
            b.xdp(
                &format!("{n}: allowed SYN"),
                &tag(Packet::ip(web, db).tcp(sport, 5432, TCP_SYN), tags),
                Pass(PASS_POLICY),
            );
            b.xdp(
                &format!("{n}: SYN-ACK reply"),
                &tag(
                    Packet::ip(db, web).tcp(5432, sport, TCP_SYN | TCP_ACK),
                    tags,
                ),
                Pass(PASS_ESTABLISHED),
            );
            b.xdp(
                &format!("{n}: untagged ACK of the tagged flow"),
                &Packet::ip(web, db).tcp(sport, 5432, TCP_ACK),
                Pass(PASS_ESTABLISHED),
            );
            b.xdp(
                &format!("{n}: wrong port"),
                &tag(Packet::ip(web, db).tcp(sport, 5433, TCP_SYN), tags),
                Drop(DROP_POLICY),
            );
            b.xdp(
                &format!("{n}: UDP 53"),
                &tag(Packet::ip(web, db).udp(sport, 53), tags),
                Pass(PASS_POLICY),
            );
            b.xdp(
                &format!("{n}: echo request"),
                &tag(f.echo_request(web, db, sport), tags),
                Pass(PASS_POLICY),
            );
            b.xdp(
                &format!("{n}: echo reply"),
                &tag(f.echo_reply(db, web, sport), tags),
                Pass(PASS_ESTABLISHED),
            );
        }
        let three = Packet::ip(f.web, f.db)
            .tcp(44000, 5432, TCP_SYN)
            .vlan(ETH_P_8021AD, 100)
            .vlan(ETH_P_8021Q, 10)
            .vlan(ETH_P_8021Q, 20);
        b.xdp(
            &format!("{} three VLAN tags", f.name),
            &three,
            Drop(DROP_MALFORMED_L2),
        );
    }
    let three_arp = Packet::arp_request("10.0.1.5".parse().unwrap(), "10.0.1.1".parse().unwrap())
        .vlan(ETH_P_8021Q, 1)
        .vlan(ETH_P_8021Q, 2)
        .vlan(ETH_P_8021Q, 3);
    b.xdp(
        "ARP under three VLAN tags",
        &three_arp,
        Drop(DROP_MALFORMED_L2),
    );
}

// ---------------------------------------------------------------------------
// IPv6 extension headers
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Truncation at every header boundary
// ---------------------------------------------------------------------------

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
fn tcp4_frame() -> Packet {
    Packet::ip(V4.web, V4.db)
        .ipv4_mut(|h| h.options = vec![0x94, 0x04, 0, 0])
        .tcp(47000, 5432, TCP_SYN)
        .tcp_mut(|t| t.options = vec![2, 4, 0x05, 0xb4])
}

fn tcp6_frame() -> Packet {
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

// ---------------------------------------------------------------------------
// Malformed headers
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Fragments
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// TC egress and the shared conntrack
// ---------------------------------------------------------------------------

#[test]
fn tc_egress_verdicts() {
    let Some(b) = Bench::new("tc_egress_verdicts", BASE) else {
        return;
    };
    for f in [V4, V6] {
        let n = f.name;
        let (web, db) = (f.web, f.db);
        b.tc(
            &format!("{n} allowed SYN"),
            &Packet::ip(web, db).tcp(50000, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
        b.tc(
            &format!("{n} SYN-ACK reply"),
            &Packet::ip(db, web).tcp(5432, 50000, TCP_SYN | TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
        b.tc(
            &format!("{n} denied SYN"),
            &Packet::ip(db, web).tcp(50001, 5432, TCP_SYN),
            Drop(DROP_POLICY),
        );
        b.tc(
            &format!("{n} wrong port"),
            &Packet::ip(web, db).tcp(50002, 5433, TCP_SYN),
            Drop(DROP_POLICY),
        );
        b.tc(
            &format!("{n} echo request"),
            &f.echo_request(web, db, 3),
            Pass(PASS_POLICY),
        );
        b.tc(
            &format!("{n} echo reply"),
            &f.echo_reply(db, web, 3),
            Pass(PASS_ESTABLISHED),
        );
        b.tc(
            &format!("{n} echo reply, no request"),
            &f.echo_reply(db, web, 4),
            Drop(DROP_POLICY),
        );
        b.tc(
            &format!("{n} QinQ allowed SYN"),
            &Packet::ip(web, db)
                .tcp(50003, 5432, TCP_SYN)
                .vlan(ETH_P_8021AD, 1)
                .vlan(ETH_P_8021Q, 2),
            Pass(PASS_POLICY),
        );
        b.tc(
            &format!("{n} three VLAN tags"),
            &Packet::ip(web, db)
                .tcp(50004, 5432, TCP_SYN)
                .vlan(ETH_P_8021AD, 1)
                .vlan(ETH_P_8021Q, 2)
                .vlan(ETH_P_8021Q, 3),
            Drop(DROP_MALFORMED_L2),
        );
    }
    b.tc(
        "IPv6 seven extension headers",
        &{
            let mut p = Packet::ip(V6.web, V6.db);
            for _ in 0..7 {
                p = p.ext(Ext::dest_opts());
            }
            p.tcp(50005, 5432, TCP_SYN)
        },
        Drop(DROP_MALFORMED_IPV6),
    );
    b.tc(
        "IPv4 IHL 4",
        &Packet::ip(V4.web, V4.db)
            .tcp(50006, 5432, TCP_SYN)
            .ipv4_mut(|h| h.ihl = Some(4)),
        Drop(DROP_MALFORMED_IPV4),
    );
    b.tc(
        "TCP data offset 4",
        &Packet::ip(V4.web, V4.db)
            .tcp(50007, 5432, TCP_SYN)
            .tcp_mut(|t| t.data_offset = Some(4)),
        Drop(DROP_MALFORMED_L4),
    );
    // Truncations through TC (from the shortest frame the skb test run takes),
    // lengths as built and rewritten.
    let v4 = tcp4_frame().build();
    let vlan = tcp4_frame().vlan(ETH_P_8021Q, 10).build();
    let v6 = tcp6_frame().build();
    let cuts = [
        ("TCP/IPv4", &v4, TC_MIN_IPV4, None, DROP_MALFORMED_IPV4),
        ("TCP/IPv4", &v4, 50, None, DROP_MALFORMED_IPV4),
        ("TCP/IPv4", &v4, 36, Some(14), DROP_MALFORMED_IPV4),
        ("TCP/IPv4", &v4, 50, Some(14), DROP_MALFORMED_L4),
        ("TCP/IPv4", &v4, v4.len() - 1, Some(14), DROP_MALFORMED_L4),
        ("VLAN TCP/IPv4", &vlan, 16, None, DROP_MALFORMED_L2),
        ("VLAN TCP/IPv4", &vlan, 30, None, DROP_MALFORMED_IPV4),
        ("TCP/IPv6", &v6, TC_MIN_IPV6, Some(14), DROP_MALFORMED_IPV6),
        ("TCP/IPv6", &v6, v6.len() - 1, Some(14), DROP_MALFORMED_L4),
    ];
    for (name, full, len, fix_at, why) in cuts {
        let mut f = full[..len].to_vec();
        if let Some(l3) = fix_at {
            if name.contains("IPv6") {
                fix_ipv6_len(&mut f, l3);
            } else {
                fix_ipv4_len(&mut f, l3);
            }
        }
        let fixed = if fix_at.is_some() {
            ", length rewritten"
        } else {
            ""
        };
        let scenario = format!("{name} cut to {len} bytes{fixed}");
        b.record(b.check(Hook::Tc, &scenario, &f, Drop(why)));
    }
}

#[test]
fn conntrack_shared_between_xdp_and_tc() {
    let Some(b) = Bench::new("conntrack_shared_between_xdp_and_tc", BASE) else {
        return;
    };
    for f in [V4, V6] {
        let n = f.name;
        let (web, db) = (f.web, f.db);
        b.xdp(
            &format!("{n} SYN web->db in through XDP"),
            &Packet::ip(web, db).tcp(51000, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
        b.tc(
            &format!("{n} SYN-ACK db->web out through TC"),
            &Packet::ip(db, web).tcp(5432, 51000, TCP_SYN | TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
        b.xdp(
            &format!("{n} ACK in through XDP"),
            &Packet::ip(web, db).tcp(51000, 5432, TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
        b.tc(
            &format!("{n} UDP web->db:53 out through TC"),
            &Packet::ip(web, db).udp(5353, 53),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{n} UDP reply in through XDP"),
            &Packet::ip(db, web).udp(53, 5353),
            Pass(PASS_ESTABLISHED),
        );
        b.tc(
            &format!("{n} echo request out through TC"),
            &f.echo_request(web, db, 5),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{n} echo reply in through XDP"),
            &f.echo_reply(db, web, 5),
            Pass(PASS_ESTABLISHED),
        );
    }
    b.assert_ct("three flows per family", (3, 3));
}

// ---------------------------------------------------------------------------
// Audit mode
// ---------------------------------------------------------------------------

#[test]
fn audit_mode_counts_and_passes() {
    let load = LoadOptions {
        mode: Mode::Audit,
        ..small_maps()
    };
    let Some(b) = Bench::with(
        "audit_mode_counts_and_passes",
        BASE,
        &load,
        &CompileOptions::default(),
    ) else {
        return;
    };
    let (web, db) = (V4.web, V4.db);
    b.xdp(
        "allowed SYN",
        &Packet::ip(web, db).tcp(52000, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "its reply",
        &Packet::ip(db, web).tcp(5432, 52000, TCP_SYN | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "denied SYN",
        &Packet::ip(db, web).tcp(52001, 5432, TCP_SYN),
        Audit(DROP_POLICY),
    );
    // An audited packet opens no flow: its reply is judged (and audited) again.
    b.xdp(
        "reply to the denied SYN",
        &Packet::ip(web, db).tcp(5432, 52001, TCP_SYN | TCP_ACK),
        Audit(DROP_POLICY),
    );
    b.xdp(
        "wrong port",
        &Packet::ip(web, db).tcp(52002, 5433, TCP_SYN),
        Audit(DROP_POLICY),
    );
    b.xdp(
        "IPv6 denied SYN",
        &Packet::ip(V6.db, V6.web).tcp(52003, 5432, TCP_SYN),
        Audit(DROP_POLICY),
    );
    b.xdp(
        "bad IHL",
        &Packet::ip(web, db)
            .tcp(52004, 5432, TCP_SYN)
            .ipv4_mut(|h| h.ihl = Some(4)),
        Audit(DROP_MALFORMED_IPV4),
    );
    b.xdp(
        "untracked later fragment",
        &Packet::ip(web, db)
            .proto(PROTO_UDP)
            .payload(&[0; 16])
            .ipv4_mut(|h| {
                h.id = 9;
                h.frag_offset = 3;
            }),
        Audit(DROP_FRAGMENT),
    );
    b.xdp(
        "three VLAN tags",
        &Packet::ip(web, db)
            .tcp(52005, 5432, TCP_SYN)
            .vlan(0x8100, 1)
            .vlan(0x8100, 2)
            .vlan(0x8100, 3),
        Audit(DROP_MALFORMED_L2),
    );
    b.xdp(
        "ARP",
        &Packet::ethertype(ETH_P_ARP).payload(&[0; 28]),
        Pass(PASS_NON_IP),
    );
    b.tc(
        "denied SYN through TC",
        &Packet::ip(db, web).tcp(52006, 5432, TCP_SYN),
        Audit(DROP_POLICY),
    );
    b.tc(
        "allowed UDP through TC",
        &Packet::ip(web, db).udp(52007, 53),
        Pass(PASS_POLICY),
    );
    b.assert_ct("only the allowed flows", (2, 0));
}

// ---------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------

const NARROWER: &str = r#"
groups:
  web: [10.0.1.0/24, "fd00:1::/64"]
  db: [10.0.2.0/24, "fd00:2::/64"]
rules:
  - name: web-to-db-dns
    from: web
    to: db
    ports: [53/udp, icmp/8]
"#;

#[test]
fn revocation_on_reload() {
    let Some(mut b) = Bench::new("revocation_on_reload", BASE) else {
        return;
    };
    let (web, db) = (V4.web, V4.db);
    let gen1 = b.dp.config().policy_gen;
    let open_tcp = |b: &Bench, f: Fam, sport: u16| {
        let n = format!("{} flow {sport}", f.name);
        b.xdp(
            &format!("{n}: SYN"),
            &Packet::ip(f.web, f.db).tcp(sport, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{n}: SYN-ACK"),
            &Packet::ip(f.db, f.web).tcp(5432, sport, TCP_SYN | TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
    };
    open_tcp(&b, V4, 40000);
    open_tcp(&b, V4, 40001);
    open_tcp(&b, V6, 53003);
    open_tcp(&b, V6, 53004);
    b.xdp(
        "UDP web->db:53",
        &Packet::ip(web, db).udp(53005, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "UDP reply",
        &Packet::ip(db, web).udp(53, 53005),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "echo request",
        &V4.echo_request(web, db, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "IPv6 UDP web->db:53",
        &Packet::ip(V6.web, V6.db).udp(53006, 53),
        Pass(PASS_POLICY),
    );
    b.assert_ct("before the reload", (4, 3));

    let gen2 = b.apply(NARROWER, &CompileOptions::default());
    assert_ne!(gen2, gen1, "apply must bump the policy generation");
    assert_eq!(b.dp.config().policy_gen, gen2);

    // Revoked flows drop on their next packet, from either side.
    b.xdp(
        "flow 40000: client ACK after revocation",
        &Packet::ip(web, db).tcp(40000, 5432, TCP_ACK),
        Drop(DROP_REVOKED),
    );
    b.xdp(
        "flow 40000: next client ACK (entry gone)",
        &Packet::ip(web, db).tcp(40000, 5432, TCP_ACK),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "flow 40001: server data after revocation",
        &Packet::ip(db, web).tcp(5432, 40001, TCP_ACK),
        Drop(DROP_REVOKED),
    );
    b.xdp(
        "flow 40001: client ACK (entry gone)",
        &Packet::ip(web, db).tcp(40001, 5432, TCP_ACK),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "IPv6 flow 53003: client ACK after revocation",
        &Packet::ip(V6.web, V6.db).tcp(53003, 5432, TCP_ACK),
        Drop(DROP_REVOKED),
    );
    b.tc(
        "IPv6 flow 53004: server data out through TC after revocation",
        &Packet::ip(V6.db, V6.web).tcp(5432, 53004, TCP_ACK),
        Drop(DROP_REVOKED),
    );
    b.xdp(
        "new SYN to 5432",
        &Packet::ip(web, db).tcp(53007, 5432, TCP_SYN),
        Drop(DROP_POLICY),
    );
    // Flows the new policy still allows: re-checked once, then established.
    b.xdp(
        "UDP reply after the reload",
        &Packet::ip(db, web).udp(53, 53005),
        Pass(PASS_RECHECKED),
    );
    b.xdp(
        "UDP reply again",
        &Packet::ip(db, web).udp(53, 53005),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "UDP request again",
        &Packet::ip(web, db).udp(53005, 53),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "echo reply after the reload",
        &V4.echo_reply(db, web, 53),
        Pass(PASS_RECHECKED),
    );
    b.xdp(
        "IPv6 UDP request after the reload",
        &Packet::ip(V6.web, V6.db).udp(53006, 53),
        Pass(PASS_RECHECKED),
    );
    b.assert_ct("after the reload", (2, 1));

    // Back to the first policy: the surviving flows are re-checked again.
    let gen3 = b.apply(BASE, &CompileOptions::default());
    assert_ne!(gen3, gen2);
    b.xdp(
        "UDP request after the second reload",
        &Packet::ip(web, db).udp(53005, 53),
        Pass(PASS_RECHECKED),
    );
    b.xdp(
        "new SYN to 5432 after the second reload",
        &Packet::ip(web, db).tcp(53008, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
}

/// A packet that passes by re-check after a reload still advances the flow's
/// TCP state: a handshake whose SYN-ACK came right after a reload is as
/// established as any other, and keeps the established timeout.
#[test]
fn recheck_keeps_tcp_state() {
    let load = LoadOptions {
        timeouts: Timeouts {
            tcp_syn: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..small_maps()
    };
    let test = "recheck_keeps_tcp_state";
    let Some(mut b) = Bench::with(test, BASE, &load, &CompileOptions::default()) else {
        return;
    };
    let (web, db) = (V4.web, V4.db);
    // Flow 56000 completes its handshake before the reload, 56001 across it.
    for sport in [56000, 56001] {
        let syn = Packet::ip(web, db).tcp(sport, 5432, TCP_SYN);
        b.xdp(&format!("flow {sport}: SYN"), &syn, Pass(PASS_POLICY));
    }
    let synack = |sport| Packet::ip(db, web).tcp(5432, sport, TCP_SYN | TCP_ACK);
    let ack = |sport| Packet::ip(web, db).tcp(sport, 5432, TCP_ACK);
    b.xdp(
        "flow 56000: SYN-ACK",
        &synack(56000),
        Pass(PASS_ESTABLISHED),
    );
    b.apply(BASE, &CompileOptions::default());
    b.xdp(
        "flow 56000: ACK after the reload",
        &ack(56000),
        Pass(PASS_RECHECKED),
    );
    b.xdp(
        "flow 56001: SYN-ACK after the reload",
        &synack(56001),
        Pass(PASS_RECHECKED),
    );
    b.xdp("flow 56001: ACK", &ack(56001), Pass(PASS_ESTABLISHED));
    // Past the 1 s SYN timeout: both handshakes completed, so both flows are
    // established (6 h) and the server may speak first.
    std::thread::sleep(Duration::from_millis(1250));
    for sport in [56000, 56001] {
        let data = Packet::ip(db, web)
            .tcp(5432, sport, TCP_PSH | TCP_ACK)
            .payload(b"late");
        b.xdp(
            &format!("flow {sport}: server data after 1.25 s"),
            &data,
            Pass(PASS_ESTABLISHED),
        );
    }
}

// ---------------------------------------------------------------------------
// The host built-in
// ---------------------------------------------------------------------------

fn host_opts(enforce_host: bool) -> CompileOptions {
    CompileOptions {
        host_addrs: vec!["10.0.9.1".parse().unwrap(), "fd00:9::1".parse().unwrap()],
        enforce_host,
    }
}

fn host_frames() -> Vec<(&'static str, Packet)> {
    vec![
        (
            "world -> host:22",
            Packet::ip("192.0.2.1", "10.0.9.1").tcp(54000, 22, TCP_SYN),
        ),
        (
            "db -> host:10250",
            Packet::ip("10.0.2.7", "10.0.9.1").tcp(54001, 10250, TCP_SYN),
        ),
        (
            "host -> db:9999/udp",
            Packet::ip("10.0.9.1", "10.0.2.7").udp(54002, 9999),
        ),
        (
            "host -> world echo",
            Packet::ip("10.0.9.1", "192.0.2.1").icmp(8, 0, 1),
        ),
        (
            "IPv6 world -> host:22",
            Packet::ip("2001:db8::1", "fd00:9::1").tcp(54003, 22, TCP_SYN),
        ),
        (
            "IPv6 host -> web:8080",
            Packet::ip("fd00:9::1", "fd00:1::5").tcp(54004, 8080, TCP_SYN),
        ),
    ]
}

#[test]
fn host_traffic_passes_unless_enforced() {
    let test = "host_traffic_passes_unless_enforced";
    let Some(mut b) = Bench::with(test, BASE, &small_maps(), &host_opts(false)) else {
        return;
    };
    for (name, p) in host_frames() {
        b.xdp(&format!("not enforced: {name}"), &p, Pass(PASS_POLICY));
    }
    b.tc(
        "not enforced, TC: host -> db:9999/udp",
        &host_frames()[2].1,
        Pass(PASS_ESTABLISHED),
    );
    // The built-in covers the host only.
    b.xdp(
        "web -> db:9999/udp",
        &Packet::ip("10.0.1.5", "10.0.2.7").udp(54005, 9999),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "world -> 10.0.9.2:22",
        &Packet::ip("192.0.2.1", "10.0.9.2").tcp(54006, 22, TCP_SYN),
        Drop(DROP_POLICY),
    );

    b.apply(BASE, &host_opts(true));
    for (i, (name, p)) in host_frames().into_iter().enumerate() {
        // The UDP flow (a lookup, not an opening packet) is tracked from above:
        // re-checked against the enforcing policy, it is revoked. The others
        // open flows and go straight to policy.
        let want = if i == 2 {
            Drop(DROP_REVOKED)
        } else {
            Drop(DROP_POLICY)
        };
        b.xdp(&format!("enforce_host: {name}"), &p, want);
    }
}

#[test]
fn host_enforced_by_policy_setting() {
    let yaml = format!(
        "{BASE}  - name: world-ssh-to-host\n    from: world\n    to: host\n    ports: [22/tcp]\nsettings:\n  enforce-host: true\n"
    );
    let test = "host_enforced_by_policy_setting";
    let Some(b) = Bench::with(test, &yaml, &small_maps(), &host_opts(false)) else {
        return;
    };
    let frames = host_frames();
    b.xdp(frames[0].0, &frames[0].1, Pass(PASS_POLICY));
    b.xdp(frames[4].0, &frames[4].1, Pass(PASS_POLICY));
    for i in [1, 2, 3, 5] {
        b.xdp(frames[i].0, &frames[i].1, Drop(DROP_POLICY));
    }
}

// ---------------------------------------------------------------------------
// Conntrack expiry and reclaim
// ---------------------------------------------------------------------------

#[test]
fn conntrack_expiry_and_gc() {
    let load = LoadOptions {
        timeouts: Timeouts {
            udp: Duration::from_secs(1),
            fragment: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..small_maps()
    };
    let test = "conntrack_expiry_and_gc";
    let Some(mut b) = Bench::with(test, BASE, &load, &CompileOptions::default()) else {
        return;
    };
    let start = Instant::now();
    b.xdp(
        "UDP web->db:53",
        &Packet::ip(V4.web, V4.db).udp(55000, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "UDP reply",
        &Packet::ip(V4.db, V4.web).udp(53, 55000),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "IPv6 UDP web->db:53",
        &Packet::ip(V6.web, V6.db).udp(55001, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "IPv6 UDP reply",
        &Packet::ip(V6.db, V6.web).udp(53, 55001),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "TCP SYN (60 s timeout)",
        &Packet::ip(V4.web, V4.db).tcp(55002, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    let first = V4.fragment(
        Packet::ip(V4.web, V4.db).udp(55003, 53).payload(&[0; 32]),
        0x55,
        0,
        true,
    );
    b.xdp(
        "first fragment (UDP flow + fragment entry)",
        &first,
        Pass(PASS_POLICY),
    );
    b.assert_ct("before expiry", (3, 1));

    // Past the 1 s timeouts of the newest entry, with margin for the coarse
    // clock (one tick): the only wait, bounded.
    let newest = Instant::now();
    assert!(
        newest - start < Duration::from_millis(900),
        "{test}: setting up took {:?}, so the first entries may have expired early",
        newest - start
    );
    std::thread::sleep(Duration::from_millis(1250));

    b.xdp(
        "UDP reply after the timeout",
        &Packet::ip(V4.db, V4.web).udp(53, 55000),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "IPv6 UDP reply after the timeout",
        &Packet::ip(V6.db, V6.web).udp(53, 55001),
        Drop(DROP_POLICY),
    );
    let later = V4.fragment(
        Packet::ip(V4.web, V4.db).proto(PROTO_UDP).payload(&[0; 16]),
        0x55,
        5,
        false,
    );
    b.xdp(
        "later fragment after the fragment timeout",
        &later,
        Drop(DROP_FRAGMENT),
    );
    b.xdp(
        "TCP SYN-ACK (flow still live)",
        &Packet::ip(V4.db, V4.web).tcp(5432, 55002, TCP_SYN | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    b.assert_ct("expired entries stay until collected", (3, 1));

    let cfg = b.dp.config();
    // The sweeper compares against the clock the datapath stamps entries with.
    let t = b.dp.jiffies().expect("reading the datapath clock");
    let removed = ct_gc::collect(b.dp.ebpf_mut(), &cfg, t).expect("ct_gc::collect");
    // Two UDP flows (IPv4, IPv6), the fragment's UDP flow and the fragment entry.
    b.same("entries collected", removed, 4);
    b.assert_ct("after collect: only the TCP flow", (1, 0));
    let t = b.dp.jiffies().expect("reading the datapath clock");
    let removed = ct_gc::collect(b.dp.ebpf_mut(), &cfg, t).expect("ct_gc::collect");
    b.same("entries collected by a second sweep", removed, 0);
    b.xdp(
        "UDP web->db:53 opens a new flow",
        &Packet::ip(V4.web, V4.db).udp(55000, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "its reply",
        &Packet::ip(V4.db, V4.web).udp(53, 55000),
        Pass(PASS_ESTABLISHED),
    );
}

/// The per-CPU flow cache answers two-way flows without conntrack, but must
/// never hide a state change: RST and FIN always reach conntrack, so a reset
/// flow expires on the close timeout even while its packets were cached.
#[test]
fn flow_cache_defers_state_changes_to_conntrack() {
    let load = LoadOptions {
        timeouts: Timeouts {
            tcp_close: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..small_maps()
    };
    let test = "flow_cache_defers_state_changes_to_conntrack";
    let Some(b) = Bench::with(test, BASE, &load, &CompileOptions::default()) else {
        return;
    };
    let (web, db) = (V4.web, V4.db);
    b.xdp(
        "SYN",
        &Packet::ip(web, db).tcp(56100, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "SYN-ACK",
        &Packet::ip(db, web).tcp(5432, 56100, TCP_SYN | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    // Cached from here on, in both directions.
    for i in 0..3 {
        b.xdp(
            &format!("client ACK {i}"),
            &Packet::ip(web, db).tcp(56100, 5432, TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
        b.xdp(
            &format!("server ACK {i}"),
            &Packet::ip(db, web).tcp(5432, 56100, TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
    }
    b.xdp(
        "client RST",
        &Packet::ip(web, db).tcp(56100, 5432, TCP_RST | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    // Past the 1 s close timeout and the cache's 1 s validity: the server's
    // packet must find the flow gone (the only wait, bounded).
    std::thread::sleep(Duration::from_millis(1300));
    b.xdp(
        "server ACK after the reset flow closed",
        &Packet::ip(db, web).tcp(5432, 56100, TCP_ACK),
        Drop(DROP_POLICY),
    );
}
