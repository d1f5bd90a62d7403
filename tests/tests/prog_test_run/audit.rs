//! Audit mode: denied frames are counted as audit-deny and pass.

use agent_common::reason::*;
use netpol_agent::datapath::{LoadOptions, Mode};
use netpol_agent::policy::CompileOptions;
use netpol_tests::packet::{Packet, ETH_P_ARP, PROTO_UDP, TCP_ACK, TCP_SYN};
use netpol_tests::progrun::Want::{Audit, Pass};
use netpol_tests::progrun::{small_maps, Bench, BASE, V4, V6};

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
