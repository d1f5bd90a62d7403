//! IPv6 neighbour discovery and multicast listener discovery pass whatever
//! the policy, but only as link traffic (RFC 4861, RFC 3810): hop limit 255
//! (MLD: 1), the source and destination scopes each type allows, never
//! fragmented, and no router advertisement or redirect from a pod. Anything
//! else is dropped (`nd-invalid`) whatever the policy.

use agent_common::reason::*;
use netpol_agent::datapath::{IfaceRole, SourcePlan};
use netpol_tests::packet::{Ext, Packet, ETH_P_8021Q};
use netpol_tests::progrun::Bench;
use netpol_tests::progrun::Want::{Drop, Pass};

/// Loopback: the interface test-run frames enter on.
const LO: u32 = 1;

/// A discovery message of type `ty` with hop limit `hops`, carrying a
/// target address as its body.
fn msg(ty: u8, src: &str, dst: &str, hops: u8) -> Packet {
    let target: std::net::Ipv6Addr = "fd00:2::7".parse().unwrap();
    Packet::ip(src, dst)
        .icmpv6(ty, 0, 0)
        .payload(&target.octets())
        .ipv6_mut(|h| h.hop_limit = hops)
}

fn nd(ty: u8, src: &str, dst: &str) -> Packet {
    msg(ty, src, dst, 255)
}

fn mld(ty: u8, src: &str, dst: &str) -> Packet {
    msg(ty, src, dst, 1)
}

#[test]
fn ipv6_neighbour_discovery_on_the_link_passes() {
    // An empty policy: nothing is allowed, link discovery must still pass.
    let Some(b) = Bench::new("ipv6_neighbour_discovery_on_the_link_passes", "{}") else {
        return;
    };
    let link = Pass(PASS_NEIGHBOUR_DISCOVERY);
    b.xdp("router solicitation", &nd(133, "fe80::1", "ff02::2"), link);
    b.xdp(
        "router solicitation, no address yet",
        &nd(133, "::", "ff02::2"),
        link,
    );
    b.xdp(
        "router advertisement (not from a pod)",
        &nd(134, "fe80::2", "ff02::1"),
        link,
    );
    b.xdp(
        "neighbour solicitation from a global address",
        &nd(135, "fd00:1::5", "ff02::1:ff00:7"),
        link,
    );
    b.xdp(
        "duplicate address detection",
        &nd(135, "::", "ff02::1:ff00:7"),
        link,
    );
    b.xdp(
        "reachability probe to a link-local address",
        &nd(135, "fd00:1::5", "fe80::1"),
        link,
    );
    b.xdp(
        "solicited advertisement, same /64",
        &nd(136, "fd00:1::7", "fd00:1::5"),
        link,
    );
    b.xdp(
        "unsolicited advertisement to all nodes",
        &nd(136, "fe80::7", "ff02::1"),
        link,
    );
    b.xdp(
        "redirect (not from a pod)",
        &nd(137, "fe80::2", "fe80::5"),
        link,
    );
    b.xdp(
        "neighbour solicitation, 802.1Q-tagged",
        &nd(135, "::", "ff02::1:ff00:7").vlan(ETH_P_8021Q, 10),
        link,
    );
    b.xdp(
        "neighbour solicitation behind a hop-by-hop header",
        &nd(135, "fe80::1", "ff02::1:ff00:7").ext(Ext::hop_by_hop()),
        link,
    );
    // Multicast listener discovery: ND relies on it to join solicited-node
    // groups (MLD-snooping switches forward NS only to members).
    for (ty, name) in [
        (130, "MLD query"),
        (131, "MLD report"),
        (132, "MLD done"),
        (143, "MLDv2 report"),
    ] {
        b.xdp(name, &mld(ty, "fe80::1", "ff02::16"), link);
    }
    b.xdp(
        "MLDv2 report while the address is tentative",
        &mld(143, "::", "ff02::16"),
        link,
    );
    // Leaving the node, hop limit 255 means made here or bridged, never
    // routed: a solicited advertisement to a pod's global address passes.
    b.tc(
        "advertisement from the node's link-local address to a pod",
        &nd(136, "fe80::1", "fd00:1::5"),
        link,
    );
    b.tc(
        "neighbour solicitation",
        &nd(135, "fe80::1", "ff02::1:ff00:7"),
        link,
    );
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
    b.assert_ct("discovery opens no flow", (0, 0));
}

#[test]
fn ipv6_neighbour_discovery_off_the_link_is_dropped() {
    // The policy allows nothing, so anything not link traffic is dropped.
    let Some(b) = Bench::new("ipv6_neighbour_discovery_off_the_link_is_dropped", "{}") else {
        return;
    };
    let invalid = Drop(DROP_ND_INVALID);
    for (ty, name) in [
        (133, "router solicitation"),
        (134, "router advertisement"),
        (135, "neighbour solicitation"),
        (136, "neighbour advertisement"),
        (137, "redirect"),
    ] {
        b.xdp(
            &format!("{name} with hop limit 64 (routed)"),
            &msg(ty, "fe80::1", "ff02::1", 64),
            invalid,
        );
        b.tc(
            &format!("{name} leaving with hop limit 254"),
            &msg(ty, "fe80::1", "ff02::1", 254),
            invalid,
        );
        b.xdp(
            &format!("{name} to a global multicast group"),
            &nd(ty, "fe80::1", "ff0e::1"),
            invalid,
        );
    }
    for (ty, name) in [
        (130, "MLD query"),
        (131, "MLD report"),
        (143, "MLDv2 report"),
    ] {
        b.xdp(
            &format!("{name} with hop limit 255"),
            &msg(ty, "fe80::1", "ff02::16", 255),
            invalid,
        );
        b.xdp(
            &format!("{name} from a global address"),
            &mld(ty, "fd00:1::5", "ff02::16"),
            invalid,
        );
        b.xdp(
            &format!("{name} to a unicast address"),
            &mld(ty, "fe80::1", "2001:db8::1"),
            invalid,
        );
    }
    b.xdp(
        "router advertisement from a global address",
        &nd(134, "fd00:1::1", "ff02::1"),
        invalid,
    );
    b.xdp(
        "redirect from a global address",
        &nd(137, "fd00:1::1", "fe80::5"),
        invalid,
    );
    b.xdp(
        "unspecified source, not a solicited-node group",
        &nd(135, "::", "ff02::1"),
        invalid,
    );
    b.xdp(
        "advertisement from the unspecified address",
        &nd(136, "::", "ff02::1"),
        invalid,
    );
    b.xdp(
        "fragmented neighbour solicitation",
        &nd(135, "fe80::1", "ff02::1:ff00:7").ext(Ext::fragment(0, true, 7)),
        invalid,
    );
    // Hop limit 255 to a global address outside the sender's /64: the node
    // would route it on.
    for (ty, src, name) in [
        (135, "fd00:1::5", "neighbour solicitation"),
        (136, "fd00:2::7", "neighbour advertisement"),
        (135, "fe80::1", "neighbour solicitation from link-local"),
    ] {
        b.xdp(
            &format!("{name} to a global address off the link"),
            &nd(ty, src, "2001:db8::1"),
            invalid,
        );
    }
    b.assert_ct("nothing opened a flow", (0, 0));
}

#[test]
fn ipv6_discovery_off_the_link_is_dropped_whatever_the_policy() {
    // A rule allowing all ICMPv6 does not let discovery leave its link.
    let yaml = "groups:\n  web: [\"fd00:1::/64\"]\n  world6: [\"2001:db8::/32\"]\nrules:\n  - name: web-icmpv6\n    from: web\n    to: world6\n    ports: [icmpv6]\n";
    let Some(b) = Bench::new(
        "ipv6_discovery_off_the_link_is_dropped_whatever_the_policy",
        yaml,
    ) else {
        return;
    };
    b.xdp(
        "echo request to an allowed global address",
        &Packet::ip("fd00:1::5", "2001:db8::1").icmpv6(128, 0, 1),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "solicitation to an allowed global address",
        &nd(135, "fd00:1::5", "2001:db8::1"),
        Drop(DROP_ND_INVALID),
    );
    b.xdp(
        "routed solicitation to an allowed global address",
        &msg(135, "fd00:1::5", "2001:db8::1", 64),
        Drop(DROP_ND_INVALID),
    );
}

#[test]
fn router_messages_from_pods_are_dropped() {
    let Some(mut b) = Bench::new("router_messages_from_pods_are_dropped", "{}") else {
        return;
    };
    b.ingress_on(Some(LO));
    b.xdp(
        "router advertisement entering a guarded uplink",
        &nd(134, "fe80::2", "ff02::1"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    let mut plan = SourcePlan::default();
    plan.roles.insert(LO, IfaceRole::Pod);
    let test = b.test;
    b.dp.sync_sources(&plan)
        .unwrap_or_else(|e| panic!("{test}: writing SOURCES: {e}"));
    let b = b;
    b.xdp(
        "router advertisement from a pod",
        &nd(134, "fe80::2", "ff02::1"),
        Drop(DROP_ND_INVALID),
    );
    b.xdp(
        "redirect from a pod",
        &nd(137, "fe80::2", "fe80::5"),
        Drop(DROP_ND_INVALID),
    );
    b.xdp(
        "router solicitation from a pod",
        &nd(133, "fe80::2", "ff02::2"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    b.xdp(
        "neighbour solicitation from a pod",
        &nd(135, "fe80::2", "ff02::1:ff00:1"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
    b.tc(
        "router advertisement leaving towards a pod",
        &nd(134, "fe80::1", "ff02::1"),
        Pass(PASS_NEIGHBOUR_DISCOVERY),
    );
}
