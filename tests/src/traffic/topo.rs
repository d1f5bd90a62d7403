//! The three-namespace lab of the traffic generator.
use std::process::Command;
use std::sync::Arc;

use super::frames::{handshake, FLOWS};
use super::gen::{GenError, Generator};
use crate::netns::{run_checked, Netns};

/// Sender side of the pair into the device under test (in `gen`).
pub const GEN_IF: &str = "tg0";
/// The interface the program under test is attached to (in `dut`).
pub const DUT_IF: &str = "tr0";
/// Where the device under test routes the workload ranges (in `dut`).
pub const FWD_IF: &str = "tp0";
/// The sink counting what got through (in `pod`).
pub const SINK_IF: &str = "tp1";

const GEN_MAC: &str = "02:00:00:00:77:02";
const SINK_MAC: &str = "02:00:00:00:78:02";

/// gen ══ dut ══ pod. The dut forwards 10.0.0.0/8 and fd00::/16 towards the
/// pod namespace (like a node towards its pods); everything else, the gateway
/// ranges included, routes back towards gen (the node's uplink), so replies of
/// established flows cross the interface under test again, as on a node.
pub struct TrafficLab {
    pub gen: Arc<Netns>,
    pub dut: Arc<Netns>,
    pub pod: Arc<Netns>,
    pub dut_mac: [u8; 6],
    pub fwd_mac: [u8; 6],
    pub gen_ifindex: u32,
    pub sink_ifindex: u32,
}

impl TrafficLab {
    pub fn new() -> TrafficLab {
        let gen = Arc::new(Netns::new("tgen"));
        let dut = Arc::new(Netns::new("tdut"));
        let pod = Arc::new(Netns::new("tpod"));
        gen.ip(&[
            "link",
            "add",
            GEN_IF,
            "address",
            GEN_MAC,
            "type",
            "veth",
            "peer",
            "name",
            DUT_IF,
            "netns",
            dut.name(),
        ]);
        pod.ip(&[
            "link",
            "add",
            SINK_IF,
            "address",
            SINK_MAC,
            "type",
            "veth",
            "peer",
            "name",
            FWD_IF,
            "netns",
            dut.name(),
        ]);
        for (ns, ifname) in [(&gen, GEN_IF), (&pod, SINK_IF)] {
            // The peers need no addresses; without IPv6 they send no
            // neighbour discovery or MLD, so every frame the device under
            // test receives is one the generator sent.
            ns.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1");
            ns.ip(&["link", "set", ifname, "up"]);
        }
        for key in [
            "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding",
            "net.ipv6.conf.default.forwarding",
        ] {
            dut.sysctl(key, "1");
        }
        for key in ["all", "default"] {
            dut.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0");
        }
        for (ifname, v4, v6) in [
            (DUT_IF, "192.168.77.1/24", "fd77::1/64"),
            (FWD_IF, "192.168.78.1/24", "fd78::1/64"),
        ] {
            dut.ip(&["addr", "add", v4, "dev", ifname]);
            dut.ip(&["addr", "add", v6, "dev", ifname, "nodad"]);
            dut.ip(&["link", "set", ifname, "up"]);
            dut.sysctl(&format!("net.ipv4.conf.{ifname}.rp_filter"), "0");
        }
        // Permanent neighbours: no ARP/ND for the flood, and none needed from
        // the peers (they have no addresses).
        dut.ip(&[
            "neigh",
            "add",
            "192.168.77.2",
            "lladdr",
            GEN_MAC,
            "dev",
            DUT_IF,
            "nud",
            "permanent",
        ]);
        dut.ip(&[
            "neigh",
            "add",
            "fd77::2",
            "lladdr",
            GEN_MAC,
            "dev",
            DUT_IF,
            "nud",
            "permanent",
        ]);
        dut.ip(&[
            "neigh",
            "add",
            "192.168.78.2",
            "lladdr",
            SINK_MAC,
            "dev",
            FWD_IF,
            "nud",
            "permanent",
        ]);
        dut.ip(&[
            "neigh",
            "add",
            "fd78::2",
            "lladdr",
            SINK_MAC,
            "dev",
            FWD_IF,
            "nud",
            "permanent",
        ]);
        dut.ip(&[
            "route",
            "add",
            "10.0.0.0/8",
            "via",
            "192.168.78.2",
            "dev",
            FWD_IF,
        ]);
        dut.ip(&[
            "-6",
            "route",
            "add",
            "fd00::/16",
            "via",
            "fd78::2",
            "dev",
            FWD_IF,
        ]);
        // The uplink is the default route, so sources from anywhere have a
        // way back (else the route lookup of a packet from an address with no
        // route at all fails: IpExtInNoRoutes).
        dut.ip(&[
            "route",
            "add",
            "default",
            "via",
            "192.168.77.2",
            "dev",
            DUT_IF,
        ]);
        dut.ip(&[
            "-6", "route", "add", "default", "via", "fd77::2", "dev", DUT_IF,
        ]);
        dut.ip(&[
            "route",
            "add",
            "10.0.4.0/26",
            "via",
            "192.168.77.2",
            "dev",
            DUT_IF,
        ]);
        dut.ip(&[
            "-6",
            "route",
            "add",
            "fd00:0:4::/120",
            "via",
            "fd77::2",
            "dev",
            DUT_IF,
        ]);
        // Frames sent with XDP_TX land in the peer's XDP ring; a veth without
        // an XDP program only takes them when it runs NAPI, which GRO turns on.
        // So the unfiltered peers need no XDP program at all.
        for ifname in [DUT_IF, FWD_IF] {
            run_checked(Command::new("ip").args([
                "netns",
                "exec",
                dut.name(),
                "ethtool",
                "-K",
                ifname,
                "gro",
                "on",
            ]));
        }
        let dut_mac = mac(&dut, DUT_IF);
        let fwd_mac = mac(&dut, FWD_IF);
        let gen_ifindex = ifindex(&gen, GEN_IF);
        let sink_ifindex = ifindex(&pod, SINK_IF);
        TrafficLab {
            gen,
            dut,
            pod,
            dut_mac,
            fwd_mac,
            gen_ifindex,
            sink_ifindex,
        }
    }
}

impl TrafficLab {
    /// Opens the `frames::FLOWS` established flows of the ACK templates (IPv4
    /// and IPv6): SYNs from gen, then SYN-ACKs from the pod side, which the
    /// dut forwards out of the interface under test, so a stateful peer sees
    /// both directions.
    pub fn open_flows(&self, gen: &mut Generator) -> Result<(), GenError> {
        let (syns, synacks) = handshake(self.dut_mac, self.fwd_mac);
        // Paced, so no handshake frame is lost to a full veth ring.
        let at_dut = || link_packets(&self.dut, DUT_IF).0;
        let at_fwd = || link_packets(&self.dut, FWD_IF).0;
        for (syn, synack) in syns.iter().zip(&synacks) {
            self.gen.run_in(|| {
                gen.send_paced(std::slice::from_ref(syn), self.gen_ifindex, FLOWS, &at_dut)
            })?;
            self.pod.run_in(|| {
                gen.send_paced(
                    std::slice::from_ref(synack),
                    self.sink_ifindex,
                    FLOWS,
                    &at_fwd,
                )
            })?;
        }
        Ok(())
    }

    /// IPv4 datagrams the dut has forwarded (/proc/net/snmp in its namespace).
    pub fn forwarded_v4(&self) -> u64 {
        let out = self.dut.exec(&["cat", "/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
        let (Some(names), Some(values)) = (ip.next(), ip.next()) else {
            panic!("no Ip: lines in /proc/net/snmp of {}", self.dut.name());
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "ForwDatagrams")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no Ip ForwDatagrams in /proc/net/snmp: {text}"))
    }
}

impl Default for TrafficLab {
    fn default() -> Self {
        Self::new()
    }
}

fn link_json(ns: &Netns, ifname: &str) -> serde_json::Value {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("ip -j link show {ifname} in {}: {e}: {out}", ns.name()));
    v[0].clone()
}

fn mac(ns: &Netns, ifname: &str) -> [u8; 6] {
    let v = link_json(ns, ifname);
    let text = v["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{ifname} has no address: {v}"));
    let mut mac = [0u8; 6];
    for (b, part) in mac.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap_or_else(|e| panic!("MAC {text}: {e}"));
    }
    mac
}

fn ifindex(ns: &Netns, ifname: &str) -> u32 {
    let v = link_json(ns, ifname);
    v["ifindex"]
        .as_u64()
        .unwrap_or_else(|| panic!("{ifname} has no ifindex: {v}")) as u32
}

/// rx/tx packet counters of one interface, from netlink.
pub fn link_packets(ns: &Netns, ifname: &str) -> (u64, u64, u64) {
    let v = link_json(ns, ifname);
    let s = &v["stats64"];
    let n = |p: &serde_json::Value| p.as_u64().unwrap_or(0);
    (
        n(&s["rx"]["packets"]),
        n(&s["rx"]["dropped"]),
        n(&s["tx"]["packets"]),
    )
}
