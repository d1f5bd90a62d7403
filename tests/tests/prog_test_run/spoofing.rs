//! The source check (anti-spoofing) on XDP ingress: a pod interface admits
//! only the addresses routed to it, an uplink refuses this node's pod
//! addresses, and the check runs before the flow cache and conntrack.
//!
//! Frames enter on loopback (ifindex 1, present in every network namespace),
//! which each test makes a pod interface or an uplink in the `SOURCES` map;
//! the other pods' interfaces exist only as map entries (IFINDEX_OTHER_POD).

use agent_common::{
    reason::*, SourceKey, SourceValue, CFG_F_SOURCE_INDEX, SRC_IFACE_POD_UNCHECKED,
    SRC_ORIGIN_ROUTE,
};
use netpol_agent::datapath::{IfaceRole, SourcePlan};
use netpol_agent::policy::CompileOptions;
use netpol_tests::packet::{Packet, TCP_ACK, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{small_maps, Bench, Fam, Hook, BASE, V4, V6};

/// Loopback: the interface test-run frames enter on.
const LO: u32 = 1;
/// Another pod's interface (only in the map: no frame enters it here).
const IFINDEX_OTHER_POD: u32 = 4000;

const NODE_V4: &str = "10.0.9.1";
const NODE_V6: &str = "fd00:9::1";

/// BASE, with the node's addresses as the `host` group (traffic from them
/// passes by the built-in host rules).
fn with_node(test: &'static str) -> Option<Bench> {
    let opts = CompileOptions {
        host_addrs: vec![NODE_V4.parse().unwrap(), NODE_V6.parse().unwrap()],
        enforce_host: false,
        node_cidrs: Vec::new(),
    };
    Bench::with(test, BASE, &small_maps(), &opts)
}

/// Loopback as the pod interface of `owner` (both families' addresses), and
/// `other` behind another pod interface.
fn pod_plan(owner: [&str; 2], other: [&str; 2]) -> SourcePlan {
    let mut p = SourcePlan::default();
    p.roles.insert(LO, IfaceRole::Pod);
    p.roles.insert(IFINDEX_OTHER_POD, IfaceRole::Pod);
    for a in owner {
        p.own(LO, a.parse().unwrap(), SRC_ORIGIN_ROUTE);
    }
    for a in other {
        p.own(IFINDEX_OTHER_POD, a.parse().unwrap(), SRC_ORIGIN_ROUTE);
    }
    p
}

fn sync(b: &mut Bench, plan: &SourcePlan) {
    let test = b.test;
    b.dp.sync_sources(plan)
        .unwrap_or_else(|e| panic!("{test}: writing SOURCES: {e}"));
}

fn node(f: Fam) -> &'static str {
    if f.v6 {
        NODE_V6
    } else {
        NODE_V4
    }
}

#[test]
fn pod_interface_admits_only_its_own_sources() {
    let Some(mut b) = with_node("pod_interface_admits_only_its_own_sources") else {
        return;
    };
    // Without the check (nothing in SOURCES), every forged source below is
    // judged by policy alone, and the policy allows it.
    b.ingress_on(Some(LO));
    for f in [V4, V6] {
        let n = f.name;
        b.xdp(
            &format!("{n}: no check: another pod's address"),
            &Packet::ip(f.web2, f.db).tcp(41000, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{n}: no check: the node's address"),
            &Packet::ip(node(f), f.db).tcp(41001, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
    }
    sync(&mut b, &pod_plan([V4.web, V6.web], [V4.web2, V6.web2]));
    for f in [V4, V6] {
        let n = f.name;
        b.xdp(
            &format!("{n}: the pod's own address"),
            &Packet::ip(f.web, f.db).tcp(42000, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{n}: another pod's address"),
            &Packet::ip(f.web2, f.db).tcp(42001, 5432, TCP_SYN),
            Drop(DROP_SPOOFED),
        );
        b.xdp(
            &format!("{n}: the node's address (never `host` from a pod)"),
            &Packet::ip(node(f), f.db).tcp(42002, 5432, TCP_SYN),
            Drop(DROP_SPOOFED),
        );
        b.xdp(
            &format!("{n}: an address of no pod"),
            &Packet::ip(f.world, f.db).udp(42003, 53),
            Drop(DROP_SPOOFED),
        );
        b.xdp(
            &format!("{n}: a later fragment from another pod's address"),
            &f.fragment(Packet::ip(f.web2, f.db).udp(42004, 53), 0x77, 8, false),
            Drop(DROP_SPOOFED),
        );
        b.tc(
            &format!("{n}: TC egress is not checked (packets towards the pod)"),
            &Packet::ip(f.web2, f.db).tcp(42005, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
    }
    let unspecified = Packet::ip("::", V6.db).udp(546, 547);
    b.xdp(
        "IPv6: the unspecified address",
        &unspecified,
        Drop(DROP_SPOOFED),
    );
    // Not routed traffic: link-local sources and neighbour discovery, ARP.
    b.xdp(
        "IPv6 link-local source: judged by policy, not refused as forged",
        &Packet::ip("fe80::2", "fe80::1").udp(42006, 53),
        Drop(DROP_POLICY),
    );
    let target: std::net::Ipv6Addr = V6.db.parse().unwrap();
    b.xdp(
        "neighbour solicitation from another pod's address",
        &Packet::ip(V6.web2, "ff02::1:ff00:7")
            .icmpv6(135, 0, 0)
            .payload(&target.octets())
            .ipv6_mut(|h| h.hop_limit = 255),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    b.xdp(
        "ARP claiming another pod's address",
        &Packet::arp_request(V4.web2.parse().unwrap(), V4.db.parse().unwrap()),
        Pass(PASS_NON_IP),
    );
    // Malformed before forged: the header must parse to have a source.
    b.xdp(
        "IPv4 header with IHL 4 from another pod's address",
        &Packet::ip(V4.web2, V4.db)
            .udp(42007, 53)
            .ipv4_mut(|h| h.ihl = Some(4)),
        Drop(DROP_MALFORMED_IPV4),
    );
}

/// A forged packet must not ride on a flow its real owner opened a moment
/// before: the check comes before the flow cache and conntrack.
#[test]
fn forged_packet_on_another_pods_established_flow() {
    let Some(mut b) = with_node("forged_packet_on_another_pods_established_flow") else {
        return;
    };
    b.ingress_on(Some(LO));
    let run = |b: &mut Bench, checked: bool| {
        for (i, f) in [V4, V6].into_iter().enumerate() {
            let n = f.name;
            let (tp, up) = (
                43000 + i as u16 * 10 + checked as u16,
                44000 + i as u16 * 10,
            );
            let up = up + checked as u16;
            // The owner (web2) opens a TCP and a UDP flow from its interface
            // (loopback plays it here); the replies leave towards it (TC).
            if checked {
                sync(b, &pod_plan([V4.web2, V6.web2], [V4.web, V6.web]));
            }
            b.xdp(
                &format!("{n}: owner's SYN"),
                &Packet::ip(f.web2, f.db).tcp(tp, 5432, TCP_SYN),
                Pass(PASS_POLICY),
            );
            b.tc(
                &format!("{n}: SYN-ACK to the owner"),
                &Packet::ip(f.db, f.web2).tcp(5432, tp, TCP_SYN | TCP_ACK),
                Pass(PASS_ESTABLISHED),
            );
            for k in 0..3 {
                b.xdp(
                    &format!("{n}: owner's ACK {k} (fills the flow cache)"),
                    &Packet::ip(f.web2, f.db).tcp(tp, 5432, TCP_ACK),
                    Pass(PASS_ESTABLISHED),
                );
            }
            b.xdp(
                &format!("{n}: owner's datagram"),
                &Packet::ip(f.web2, f.db).udp(up, 53),
                Pass(PASS_POLICY),
            );
            b.tc(
                &format!("{n}: reply to the owner"),
                &Packet::ip(f.db, f.web2).udp(53, up),
                Pass(PASS_ESTABLISHED),
            );
            // Now loopback is web's interface: web forges web2's packets,
            // matching the ports of web2's flows.
            if checked {
                sync(b, &pod_plan([V4.web, V6.web], [V4.web2, V6.web2]));
            }
            let want = if checked {
                Drop(DROP_SPOOFED)
            } else {
                Pass(PASS_ESTABLISHED)
            };
            b.xdp(
                &format!("{n}: forged ACK on the owner's TCP flow (checked: {checked})"),
                &Packet::ip(f.web2, f.db).tcp(tp, 5432, TCP_ACK),
                want,
            );
            b.xdp(
                &format!("{n}: forged datagram on the owner's UDP flow (checked: {checked})"),
                &Packet::ip(f.web2, f.db).udp(up, 53),
                want,
            );
            if checked {
                b.xdp(
                    &format!("{n}: the pod's own traffic still passes"),
                    &Packet::ip(f.web, f.db).tcp(tp + 100, 5432, TCP_SYN),
                    Pass(PASS_POLICY),
                );
            }
        }
    };
    // Without the check the forged packets pass as established; with it,
    // they are refused.
    run(&mut b, false);
    run(&mut b, true);
}

#[test]
fn pod_interface_without_addresses_fails_closed() {
    let Some(mut b) = with_node("pod_interface_without_addresses_fails_closed") else {
        return;
    };
    b.ingress_on(Some(LO));
    let mut p = SourcePlan::default();
    p.roles.insert(LO, IfaceRole::Pod);
    sync(&mut b, &p);
    for f in [V4, V6] {
        b.xdp(
            &format!("{}: a pod whose route is not there yet", f.name),
            &Packet::ip(f.web, f.db).tcp(45000, 5432, TCP_SYN),
            Drop(DROP_UNKNOWN_ENDPOINT),
        );
    }
    b.xdp(
        "ARP passes",
        &Packet::arp_request(V4.web.parse().unwrap(), V4.db.parse().unwrap()),
        Pass(PASS_NON_IP),
    );
    let target: std::net::Ipv6Addr = V6.db.parse().unwrap();
    b.xdp(
        "neighbour solicitation passes",
        &Packet::ip("fe80::5", "ff02::1:ff00:7")
            .icmpv6(135, 0, 0)
            .payload(&target.octets())
            .ipv6_mut(|h| h.hop_limit = 255),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    // The route appears: the pod's address passes.
    p.own(LO, V4.web.parse().unwrap(), SRC_ORIGIN_ROUTE);
    sync(&mut b, &p);
    b.xdp(
        "IPv4: the route is learnt",
        &Packet::ip(V4.web, V4.db).tcp(45001, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "IPv6: still no route for it",
        &Packet::ip(V6.web, V6.db).tcp(45002, 5432, TCP_SYN),
        Drop(DROP_SPOOFED),
    );
    // --allow-unknown-endpoints: an addressless pod interface is not checked.
    let mut open = SourcePlan {
        allow_unknown: true,
        ..SourcePlan::default()
    };
    open.roles.insert(LO, IfaceRole::Pod);
    sync(&mut b, &open);
    b.xdp(
        "allowed unknown endpoint: judged by policy",
        &Packet::ip(V4.web, V4.db).tcp(45003, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    // Unchecked, but still a pod's: its packets count from the pod's side.
    b.same(
        "SOURCES after --allow-unknown-endpoints",
        b.dp.sources().unwrap().into_iter().collect::<Vec<_>>(),
        vec![(
            SourceKey::iface(LO),
            SourceValue {
                kind: SRC_IFACE_POD_UNCHECKED,
                origin: 0,
            },
        )],
    );
}

#[test]
fn uplink_refuses_this_nodes_pod_addresses() {
    let Some(mut b) = with_node("uplink_refuses_this_nodes_pod_addresses") else {
        return;
    };
    b.ingress_on(Some(LO));
    let forged = |f: Fam| Packet::ip(f.web, f.db).tcp(46000, 5432, TCP_SYN);
    for f in [V4, V6] {
        b.xdp(
            &format!("{}: no check: a local pod's address from outside", f.name),
            &forged(f),
            Pass(PASS_POLICY),
        );
    }
    let mut p = SourcePlan::default();
    p.roles.insert(LO, IfaceRole::Uplink);
    p.roles.insert(IFINDEX_OTHER_POD, IfaceRole::Pod);
    for a in [V4.web, V6.web] {
        p.own(IFINDEX_OTHER_POD, a.parse().unwrap(), SRC_ORIGIN_ROUTE);
    }
    sync(&mut b, &p);
    for f in [V4, V6] {
        let n = f.name;
        b.xdp(
            &format!("{n}: a local pod's address from outside"),
            &forged(f),
            Drop(DROP_SPOOFED),
        );
        b.xdp(
            &format!("{n}: another node's pod (same group) from outside"),
            &Packet::ip(f.web2, f.db).tcp(46001, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{n}: the world, judged by policy"),
            &Packet::ip(f.world, f.web).tcp(46002, 5432, TCP_SYN),
            Drop(DROP_POLICY),
        );
    }
}

/// TCX ingress, the ingress hook of veth pairs: the same source check and
/// policy as XDP, frame for frame. Without the source check on that hook,
/// the forged frames pass by policy.
#[test]
fn tcx_ingress_checks_like_xdp() {
    for hook in [Hook::Xdp, Hook::TcIngress] {
        let Some(mut b) = with_node("tcx_ingress_checks_like_xdp") else {
            return;
        };
        b.ingress_on(Some(LO));
        sync(&mut b, &pod_plan([V4.web, V6.web], [V4.web2, V6.web2]));
        for f in [V4, V6] {
            let n = format!("{hook:?}: {}", f.name);
            let cases = [
                (
                    "the pod's own address",
                    Packet::ip(f.web, f.db).tcp(43000, 5432, TCP_SYN),
                    Pass(PASS_POLICY),
                ),
                (
                    "the pod's own address, no rule",
                    Packet::ip(f.web, f.db).tcp(43001, 9, TCP_SYN),
                    Drop(DROP_POLICY),
                ),
                (
                    "another pod's address",
                    Packet::ip(f.web2, f.db).tcp(43002, 5432, TCP_SYN),
                    Drop(DROP_SPOOFED),
                ),
                (
                    "the node's address",
                    Packet::ip(node(f), f.db).tcp(43003, 5432, TCP_SYN),
                    Drop(DROP_SPOOFED),
                ),
                (
                    "the flow's next packet",
                    Packet::ip(f.web, f.db).tcp(43000, 5432, TCP_ACK),
                    Pass(PASS_ESTABLISHED),
                ),
            ];
            for (what, p, want) in cases {
                let frame = p.build();
                b.record(b.check(hook, &format!("{n}: {what}"), &frame, want));
            }
        }
    }
}

/// `SOURCE_FILTER` in front of the address probe: the datapath skips the
/// probe for a source the filter rules out, so every sync must leave the
/// filter covering each address `SOURCES` holds.
#[test]
fn source_filter_follows_sources_and_gates_the_probe() {
    let test = "source_filter_follows_sources_and_gates_the_probe";
    let Some(mut b) = with_node(test) else {
        return;
    };
    b.ingress_on(Some(LO));
    let plan = |owned: &[&str]| {
        let mut p = SourcePlan::default();
        p.roles.insert(LO, IfaceRole::Pod);
        for a in owned {
            p.own(LO, a.parse().unwrap(), SRC_ORIGIN_ROUTE);
        }
        p
    };
    sync(&mut b, &plan(&[V4.web, V6.web]));
    b.same(
        "the filter is marked complete after the first sync",
        b.dp.config().flags & CFG_F_SOURCE_INDEX != 0,
        true,
    );
    for f in [V4, V6] {
        b.xdp(
            &format!("{}: an address the pod does not own yet", f.name),
            &Packet::ip(f.web2, f.db).tcp(43000, 5432, TCP_SYN),
            Drop(DROP_SPOOFED),
        );
    }
    // The pod gains an address: the filter must gain it too, or the probe
    // that finds it is skipped and the pod's own packets are refused.
    sync(&mut b, &plan(&[V4.web, V6.web, V4.web2, V6.web2]));
    for f in [V4, V6] {
        b.xdp(
            &format!("{}: the address the pod gained", f.name),
            &Packet::ip(f.web2, f.db).tcp(43001, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
    }
    // With the filter emptied behind the agent's back, even the pod's first
    // address is refused: the datapath does consult the filter.
    b.zero_words(
        agent_common::map_names::SOURCE_FILTER,
        agent_common::SOURCE_FILTER_WORDS,
    );
    for f in [V4, V6] {
        b.xdp(
            &format!("{}: the pod's own address, filter emptied", f.name),
            &Packet::ip(f.web, f.db).tcp(43002, 5432, TCP_SYN),
            Drop(DROP_SPOOFED),
        );
    }
}
