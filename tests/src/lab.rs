//! A node-shaped lab built from namespaces and veths, routed the way Calico
//! routes pods: /32 and /128 pod addresses, a link-local gateway the node
//! answers for (proxy ARP for 169.254.1.1, a real fe80::1 for IPv6), and
//! per-pod host routes on the node.
//!
//! ```text
//!  pod ns (eth0) ══ lxc<pod> ┐
//!  pod ns (eth0) ══ lxc<pod> ┼─ node ns ── uplink0 ══ eth0 ── remote ns
//!                            ┘  (forwarding)                (gateway, aiven,
//!                                                             world ... on lo)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::netns::Netns;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        })
    }
}

/// A named address pair and the namespace that owns it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: &'static str,
    pub ns: Arc<Netns>,
    pub v4: Ipv4Addr,
    /// `None` for the few v4-only addresses (such as the Aiven address
    /// outside the three services).
    pub v6: Option<Ipv6Addr>,
}

impl Endpoint {
    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.v4),
            Family::V6 => IpAddr::V6(
                self.v6
                    .unwrap_or_else(|| panic!("endpoint {} has no IPv6 address", self.name)),
            ),
        }
    }

    pub fn sock(&self, family: Family, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(family), port)
    }
}

/// The pods of the LOCAL-PLUS lab: (name, host veth in node, v4, v6).
const PODS: &[(&str, &str, &str, &str)] = &[
    ("ledger-a", "lxcledgera", "10.0.1.10", "fd00:0:1::10"),
    ("ledger-b", "lxcledgerb", "10.0.1.11", "fd00:0:1::11"),
    ("wallet", "lxcwallet", "10.0.2.10", "fd00:0:2::10"),
    ("merchant", "lxcmerchant", "10.0.3.10", "fd00:0:3::10"),
    ("otel", "lxcotel", "10.0.4.85", "fd00:0:4::210"),
];

/// Everything beyond the node, held on the remote namespace's loopback.
const REMOTE: &[(&str, &str, Option<&str>)] = &[
    ("gateway", "10.0.4.10", Some("fd00:0:4::10")),
    ("prometheus", "10.0.4.70", Some("fd00:0:4::110")),
    ("coredns", "10.0.4.100", Some("fd00:0:4::310")),
    ("postgres", "10.1.0.10", Some("fd00:1:0::10")),
    ("kafka", "10.1.1.10", Some("fd00:1:1::10")),
    ("valkey", "10.1.2.10", Some("fd00:1:2::10")),
    ("aiven-other", "10.1.9.10", None),
    ("vpce", "10.0.16.10", Some("fd00:0:16::10")),
    ("tempo", "10.0.5.5", Some("fd00:0:5::5")),
    ("loki", "10.0.5.20", Some("fd00:0:5::120")),
    ("world", "203.0.113.10", Some("2001:db8::10")),
];

/// Pod ranges the remote side routes back through the node.
const POD_RANGES: &[&str] = &[
    "10.0.1.0/24",
    "10.0.2.0/24",
    "10.0.3.0/24",
    "10.0.4.80/28",
    "fd00:0:1::/64",
    "fd00:0:2::/64",
    "fd00:0:3::/64",
    "fd00:0:4::200/120",
];

const NODE_V4: &str = "10.0.0.5";
const NODE_V6: &str = "fd00::5";
const REMOTE_V4: &str = "10.0.0.2";
const REMOTE_V6: &str = "fd00::2";
pub const UPLINK: &str = "uplink0";
/// The lab node's name for Kubernetes (`--node-name`): the `spec.nodeName`
/// of the lab's own pods in examples/localplus/objects.
pub const NODE_NAME: &str = "node-a";

pub struct Lab {
    pub node: Arc<Netns>,
    pub remote: Arc<Netns>,
    /// Pod namespaces by pod name ("ledger-a", ...).
    pub pods: BTreeMap<&'static str, Arc<Netns>>,
    /// Interfaces in `node` the agent attaches to: every host veth and the uplink.
    pub node_ifaces: Vec<String>,
    endpoints: BTreeMap<&'static str, Endpoint>,
}

impl Lab {
    pub fn localplus() -> Lab {
        let node = Arc::new(Netns::new("node"));
        let remote = Arc::new(Netns::new("remote"));
        // Kernel defaults for new interfaces come from conf/default, so these
        // must be set before any veth exists.
        for ns in [&node, &remote] {
            quiet_defaults(ns);
        }
        node.sysctl("net.ipv4.ip_forward", "1");
        node.sysctl("net.ipv6.conf.all.forwarding", "1");

        let mut lab = Lab {
            node,
            remote,
            pods: BTreeMap::new(),
            node_ifaces: Vec::new(),
            endpoints: BTreeMap::new(),
        };
        for &(name, host_if, v4, v6) in PODS {
            lab.add_pod(name, host_if, v4, v6, None);
        }
        let Lab {
            node,
            remote,
            pods,
            mut node_ifaces,
            mut endpoints,
        } = lab;

        wire_uplink(&node, &remote);
        node_ifaces.push(UPLINK.to_string());
        endpoints.insert(
            "node",
            Endpoint {
                name: "node",
                ns: node.clone(),
                v4: NODE_V4.parse().unwrap(),
                v6: Some(NODE_V6.parse().unwrap()),
            },
        );

        for &(name, v4, v6) in REMOTE {
            remote.ip(&["addr", "add", &format!("{v4}/32"), "dev", "lo"]);
            if let Some(v6) = v6 {
                remote.ip(&["addr", "add", &format!("{v6}/128"), "dev", "lo", "nodad"]);
            }
            endpoints.insert(
                name,
                Endpoint {
                    name,
                    ns: remote.clone(),
                    v4: v4.parse().unwrap(),
                    v6: v6.map(|a| a.parse().unwrap()),
                },
            );
        }

        Lab {
            node,
            remote,
            pods,
            node_ifaces,
            endpoints,
        }
    }

    /// The endpoint called `name`; panics listing the known names otherwise.
    pub fn ep(&self, name: &str) -> &Endpoint {
        self.endpoints.get(name).unwrap_or_else(|| {
            panic!(
                "no endpoint {name:?} in the lab; known: {:?}",
                self.endpoints.keys().collect::<Vec<_>>()
            )
        })
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    pub fn pod(&self, name: &str) -> &Arc<Netns> {
        self.pods
            .get(name)
            .unwrap_or_else(|| panic!("no pod {name:?} in the lab"))
    }

    /// Plugs a new pod into the running lab (as a CNI would): its namespace,
    /// a host veth `host_if` in the node, addresses and routes.
    /// `mtu` sets both ends (a jumbo MTU makes veth refuse native XDP, as
    /// ENA does above 3498).
    pub fn add_pod(
        &mut self,
        name: &'static str,
        host_if: &str,
        v4: &str,
        v6: &str,
        mtu: Option<u32>,
    ) {
        self.plug_pod(name, host_if, v4, v6, mtu, true);
    }

    /// `add_pod` without the node's host routes to the pod: the moment of a
    /// CNI's work before it routes the pod's addresses to its veth.
    pub fn add_unrouted_pod(&mut self, name: &'static str, host_if: &str, v4: &str, v6: &str) {
        self.plug_pod(name, host_if, v4, v6, None, false);
    }

    fn plug_pod(
        &mut self,
        name: &'static str,
        host_if: &str,
        v4: &str,
        v6: &str,
        mtu: Option<u32>,
        routed: bool,
    ) {
        let label: String = name.chars().filter(|c| c.is_alphanumeric()).collect();
        let pod = Arc::new(Netns::new(&label));
        quiet_defaults(&pod);
        wire_pod(&self.node, &pod, host_if, v4, v6, mtu);
        if routed {
            self.node
                .ip(&["route", "add", &format!("{v4}/32"), "dev", host_if]);
            self.node
                .ip(&["-6", "route", "add", &format!("{v6}/128"), "dev", host_if]);
        }
        self.node_ifaces.push(host_if.to_string());
        self.endpoints.insert(
            name,
            Endpoint {
                name,
                ns: pod.clone(),
                v4: v4.parse().unwrap(),
                v6: Some(v6.parse().unwrap()),
            },
        );
        self.pods.insert(name, pod);
    }

    /// Deletes a pod: its veth (both ends), then its namespace.
    pub fn remove_pod(&mut self, name: &str, host_if: &str) {
        self.node.ip(&["link", "del", host_if]);
        self.node_ifaces.retain(|i| i != host_if);
        self.endpoints.remove(name);
        let pod = self
            .pods
            .remove(name)
            .unwrap_or_else(|| panic!("no pod {name:?} in the lab"));
        drop(pod);
    }

    /// Node, remote and every pod namespace.
    pub fn namespaces(&self) -> Vec<&Arc<Netns>> {
        let mut all = vec![&self.node, &self.remote];
        all.extend(self.pods.values());
        all
    }
}

/// rp_filter would drop the asymmetric-looking flows of /32 pod routing, and
/// DAD would leave fresh IPv6 addresses tentative (unbindable) for a second.
fn quiet_defaults(ns: &Netns) {
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
        "net.ipv6.conf.all.accept_dad",
        "net.ipv6.conf.default.accept_dad",
    ] {
        ns.sysctl(key, "0");
    }
}

/// Creates the pod's veth with both ends born in their namespaces (nothing
/// passes through the root namespace), then applies Calico-style routing
/// inside the pod (the node's host routes to it are the caller's).
fn wire_pod(node: &Netns, pod: &Netns, host_if: &str, v4: &str, v6: &str, mtu: Option<u32>) {
    let mtu = mtu.map(|m| m.to_string());
    let mtu_args: Vec<&str> = mtu.iter().flat_map(|m| ["mtu", m.as_str()]).collect();
    let mut add = vec!["link", "add", host_if];
    add.extend(&mtu_args);
    add.extend(["type", "veth", "peer", "name", "eth0"]);
    add.extend(&mtu_args);
    add.extend(["netns", pod.name()]);
    node.ip(&add);
    // The host veth has no IPv4 address: it answers ARP for 169.254.1.1 (and
    // anything else routed elsewhere) by proxy. proxy_delay=0 makes the reply
    // immediate instead of queued for up to 0.8 s, as Calico configures it.
    node.sysctl(&format!("net.ipv4.conf.{host_if}.proxy_arp"), "1");
    node.sysctl(&format!("net.ipv4.neigh.{host_if}.proxy_delay"), "0");
    node.ip(&["link", "set", host_if, "up"]);
    node.ip(&["addr", "add", "fe80::1/64", "dev", host_if, "nodad"]);

    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["addr", "add", &format!("{v4}/32"), "dev", "eth0"]);
    pod.ip(&["addr", "add", &format!("{v6}/128"), "dev", "eth0", "nodad"]);
    pod.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    pod.ip(&[
        "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
    ]);
}

fn wire_uplink(node: &Netns, remote: &Netns) {
    node.ip(&[
        "link",
        "add",
        UPLINK,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        remote.name(),
    ]);
    node.ip(&["link", "set", UPLINK, "up"]);
    remote.ip(&["link", "set", "eth0", "up"]);
    node.ip(&["addr", "add", &format!("{NODE_V4}/24"), "dev", UPLINK]);
    node.ip(&[
        "addr",
        "add",
        &format!("{NODE_V6}/64"),
        "dev",
        UPLINK,
        "nodad",
    ]);
    remote.ip(&["addr", "add", &format!("{REMOTE_V4}/24"), "dev", "eth0"]);
    remote.ip(&[
        "addr",
        "add",
        &format!("{REMOTE_V6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    node.ip(&["route", "add", "default", "via", REMOTE_V4]);
    node.ip(&["-6", "route", "add", "default", "via", REMOTE_V6]);
    for range in POD_RANGES {
        let via = if range.contains(':') {
            NODE_V6
        } else {
            NODE_V4
        };
        remote.ip(&["route", "add", range, "via", via]);
    }
}
