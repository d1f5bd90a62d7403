//! The link layer: non-IP frames pass, VLAN-tagged frames (802.1Q, QinQ)
//! get the verdicts of untagged ones, more tags than the parser walks drop.

use agent_common::reason::*;
use netpol_tests::packet::{Packet, ETH_P_8021AD, ETH_P_8021Q, ETH_P_LLDP, TCP_ACK, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{Bench, BASE, V4, V6};

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
