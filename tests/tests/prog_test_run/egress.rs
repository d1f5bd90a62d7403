//! TC egress verdicts, and the conntrack XDP ingress and TC egress share.

use agent_common::reason::*;
use netpol_tests::packet::{
    fix_ipv4_len, fix_ipv6_len, Ext, Packet, ETH_P_8021AD, ETH_P_8021Q, TCP_ACK, TCP_SYN,
};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{Bench, Hook, BASE, TC_MIN_IPV4, TC_MIN_IPV6, V4, V6};

use crate::truncation::{tcp4_frame, tcp6_frame};

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
