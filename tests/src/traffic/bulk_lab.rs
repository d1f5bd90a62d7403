//! The lab of the bulk TCP scenario: a pod, a node that routes it as Calico
//! does (/32 pod address, proxy ARP for a link-local gateway, a host route
//! per pod), and a remote host behind the node's uplink. Real sockets at
//! both ends, so the node forwards TCP with GSO and GRO as a node does.
//!
//! ```text
//!  pod ns (eth0) ══ lxcbulk ─ node ns (forwarding) ─ uplink0 ══ eth0 ─ remote ns
//!  10.0.1.10/32                10.0.0.5/24                   10.0.0.2/24, 10.1.0.10 on lo
//! ```
//!
//! IPv4 only, IPv6 off on every interface: no neighbour discovery or MLD
//! beside the measured transfer.
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::netns::Netns;

/// The pod's veth on the node side (the agent attaches here).
pub const POD_IF: &str = "lxcbulk";
/// The node's uplink (the agent attaches here too).
pub const UPLINK_IF: &str = "uplink0";
pub const POD_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
/// The remote endpoint, on the remote namespace's loopback.
pub const REMOTE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const NODE_V4: &str = "10.0.0.5";
const REMOTE_LINK_V4: &str = "10.0.0.2";
/// The pod's gateway, answered by the node's proxy ARP.
const GATEWAY: &str = "169.254.1.1";

pub struct BulkLab {
    pub pod: Arc<Netns>,
    pub node: Arc<Netns>,
    pub remote: Arc<Netns>,
    pub mtu: u32,
}

impl BulkLab {
    /// The three namespaces with `mtu` on every veth end of the path.
    pub fn new(mtu: u32) -> BulkLab {
        let pod = Arc::new(Netns::new("bpod"));
        let node = Arc::new(Netns::new("bnode"));
        let remote = Arc::new(Netns::new("bremote"));
        // Defaults first: a veth takes its settings from conf/default when
        // it is created.
        for ns in [&pod, &node, &remote] {
            for key in [
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.conf.default.rp_filter",
            ] {
                ns.sysctl(key, "0");
            }
            for key in [
                "net.ipv6.conf.all.disable_ipv6",
                "net.ipv6.conf.default.disable_ipv6",
            ] {
                ns.sysctl(key, "1");
            }
            // Each measurement starts from the same congestion state, not
            // from what the previous peer's run left in the route cache.
            ns.sysctl("net.ipv4.tcp_no_metrics_save", "1");
        }
        node.sysctl("net.ipv4.ip_forward", "1");

        veth_to(&node, POD_IF, &pod, mtu);
        node.sysctl(&format!("net.ipv4.conf.{POD_IF}.proxy_arp"), "1");
        node.sysctl(&format!("net.ipv4.neigh.{POD_IF}.proxy_delay"), "0");
        node.ip(&["link", "set", POD_IF, "up"]);
        node.ip(&["route", "add", &format!("{POD_ADDR}/32"), "dev", POD_IF]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["addr", "add", &format!("{POD_ADDR}/32"), "dev", "eth0"]);
        pod.ip(&["route", "add", GATEWAY, "dev", "eth0", "scope", "link"]);
        pod.ip(&["route", "add", "default", "via", GATEWAY, "dev", "eth0"]);

        veth_to(&node, UPLINK_IF, &remote, mtu);
        node.ip(&["link", "set", UPLINK_IF, "up"]);
        node.ip(&["addr", "add", &format!("{NODE_V4}/24"), "dev", UPLINK_IF]);
        node.ip(&["route", "add", "default", "via", REMOTE_LINK_V4]);
        remote.ip(&["link", "set", "eth0", "up"]);
        remote.ip(&[
            "addr",
            "add",
            &format!("{REMOTE_LINK_V4}/24"),
            "dev",
            "eth0",
        ]);
        remote.ip(&["addr", "add", &format!("{REMOTE_ADDR}/32"), "dev", "lo"]);
        remote.ip(&["route", "add", "10.0.1.0/24", "via", NODE_V4]);
        BulkLab {
            pod,
            node,
            remote,
            mtu,
        }
    }

    /// The node's interfaces a filter attaches to.
    pub fn node_ifaces(&self) -> [&'static str; 2] {
        [POD_IF, UPLINK_IF]
    }

    /// Whether any XDP program or TCX link is left on the node's
    /// interfaces: the unfiltered peer is only unfiltered if none is.
    pub fn filters_left(&self) -> Vec<String> {
        let mut left = Vec::new();
        for ifname in self.node_ifaces() {
            let out = self.node.ip(&["-j", "link", "show", "dev", ifname]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            if !v[0]["xdp"].is_null() {
                left.push(format!("xdp on {ifname}"));
            }
        }
        let out = self.node.exec(&["bpftool", "-j", "net", "show"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for entry in v.as_array().into_iter().flatten() {
            for key in ["tc", "tcx"] {
                if let Some(list) = entry[key].as_array() {
                    for p in list {
                        left.push(format!("{key}: {p}"));
                    }
                }
            }
        }
        left
    }
}

/// The bulk policy: the pod and the remote host may open TCP to each
/// other's iperf3 port, nothing else.
pub fn policy_yaml() -> String {
    format!(
        "groups:
  bulk-pod: [{POD_ADDR}/32]
  bulk-remote: [{REMOTE_ADDR}/32]
rules:
  - name: pod-to-remote-iperf
    from: bulk-pod
    to: bulk-remote
    ports: [{port}/tcp]
  - name: remote-to-pod-iperf
    from: bulk-remote
    to: bulk-pod
    ports: [{port}/tcp]
",
        port = super::iperf::PORT
    )
}

/// A veth pair at `mtu`: `host_if` in `node`, `eth0` in `peer`.
fn veth_to(node: &Netns, host_if: &str, peer: &Netns, mtu: u32) {
    let mtu = mtu.to_string();
    node.ip(&[
        "link",
        "add",
        host_if,
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "mtu",
        &mtu,
        "netns",
        peer.name(),
    ]);
}
