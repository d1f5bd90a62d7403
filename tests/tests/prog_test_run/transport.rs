//! Verdict paths of TCP, UDP and SCTP, per family: allowed and denied
//! edges, replies through conntrack, flows picked up mid-stream.

use agent_common::reason::*;
use netpol_tests::packet::{Packet, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{Bench, Fam, BASE, V4, V6};

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
