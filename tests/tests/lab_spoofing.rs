//! The source check with real sockets: a pod that claims another pod's
//! addresses (or the node's) on its own interface gets its packets
//! delivered when no agent runs, and dropped and counted `spoofed` when the
//! agent enforces; a pod interface whose route is not there yet fails closed
//! (`unknown-endpoint`) until the agent learns it from the routes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netpol_tests::observe::cli_json;
use netpol_tests::{
    connect_from, require_root, udp_exchange, AgentProcess, Lab, Netns, ALLOWED_TIMEOUT,
    DENIED_TIMEOUT,
};

const PORT: u16 = 7777;
/// The node's IPv6 address in the lab (uplink0).
const NODE_V6: &str = "fd00::5";

fn policy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus")
}

/// Datagrams received: (payload, sender).
type Received = Arc<Mutex<Vec<(Vec<u8>, SocketAddr)>>>;

/// A UDP server in a namespace that records every datagram it receives (and
/// echoes it, so an allowed flow is two-way).
struct Sink {
    got: Received,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Sink {
    fn spawn(ns: &Netns, addrs: &[SocketAddr]) -> Sink {
        let got: Received = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for &addr in addrs {
            let sock = ns
                .run_in(|| UdpSocket::bind(addr))
                .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()));
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let (got, stop) = (got.clone(), stop.clone());
            workers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                        got.lock().unwrap().push((buf[..n].to_vec(), peer));
                        let _ = sock.send_to(&buf[..n], peer);
                    }
                }
            }));
        }
        Sink { got, stop, workers }
    }

    /// Whether `payload` arrived within `wait` (bounded poll).
    fn received(&self, payload: &[u8], wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.got.lock().unwrap().iter().any(|(p, _)| p == payload) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Sends one datagram from `src:sport` (0: any port) to `dst` inside `ns`.
fn send_from(ns: &Netns, src: IpAddr, sport: u16, dst: SocketAddr, payload: &[u8]) {
    let sock = ns
        .run_in(|| UdpSocket::bind(SocketAddr::new(src, sport)))
        .unwrap_or_else(|e| panic!("bind {src}:{sport} in {}: {e}", ns.name()));
    sock.send_to(payload, dst)
        .unwrap_or_else(|e| panic!("send {src} -> {dst}: {e}"));
}

/// Verdict counters of the agent: (traffic, verdict, reason) -> packets.
fn counters(agent: &AgentProcess) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for r in cli_json(agent, &["stats", "--json"]).as_array().unwrap() {
        let key = (
            r["traffic"].as_str().unwrap_or("").to_owned(),
            r["verdict"].as_str().unwrap_or("").to_owned(),
            r["reason"].as_str().unwrap_or("").to_owned(),
        );
        *out.entry(key).or_default() += r["packets"].as_u64().unwrap();
    }
    out
}

/// Drops of packets a pod sent: they enter the host side of its veth, and
/// count as traffic leaving the workload (`egress`).
fn dropped(agent: &AgentProcess, reason: &str) -> u64 {
    counters(agent)
        .get(&("egress".into(), "drop".into(), reason.into()))
        .copied()
        .unwrap_or(0)
}

#[test]
fn forged_sources_are_delivered_without_the_agent_and_dropped_with_it() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let (victim, owner, attacker) = (lab.ep("ledger-a"), lab.ep("ledger-b"), lab.ep("wallet"));
    let attacker_ns = attacker.ns.clone();
    let owner_v6 = IpAddr::V6(owner.v6.unwrap());
    let owner_v4 = IpAddr::V4(owner.v4);
    let node_v6: IpAddr = NODE_V6.parse().unwrap();
    // The attack: wallet puts ledger-b's addresses and the node's IPv6
    // address on its own interface. ledger-b may talk to ledger-a on any
    // port (intra-namespace); wallet may not; the node passes as `host`.
    attacker_ns.ip(&["addr", "add", &format!("{owner_v4}/32"), "dev", "eth0"]);
    for a in [owner_v6, node_v6] {
        attacker_ns.ip(&["addr", "add", &format!("{a}/128"), "dev", "eth0", "nodad"]);
    }
    let dst4 = SocketAddr::new(IpAddr::V4(victim.v4), PORT);
    let dst6 = SocketAddr::new(IpAddr::V6(victim.v6.unwrap()), PORT);
    let sink = Sink::spawn(&victim.ns, &[dst4, dst6]);
    let forged = [
        ("ledger-b's IPv4 address", owner_v4, dst4),
        ("ledger-b's IPv6 address", owner_v6, dst6),
        ("the node's IPv6 address", node_v6, dst6),
    ];

    // Without the agent the attack works: every forged datagram arrives.
    for (what, src, dst) in forged {
        let payload = format!("no agent: forged {what}").into_bytes();
        send_from(&attacker_ns, src, 0, dst, &payload);
        assert!(
            sink.received(&payload, ALLOWED_TIMEOUT),
            "the lab cannot show the attack: a datagram from {what} ({src}) sent by wallet \
             did not reach {dst} without an agent"
        );
    }

    let agent = AgentProcess::spawn(&lab, &policy_dir(), &[]);
    let before = dropped(&agent, "spoofed");
    // The real owner opens a flow first; the attacker then forges packets of
    // that very flow (same addresses and ports).
    let owner_port = 40777;
    for dst in [dst4, dst6] {
        let src = if dst.is_ipv4() { owner_v4 } else { owner_v6 };
        let payload = format!("owner's flow {src}:{owner_port} -> {dst}").into_bytes();
        let owner_sock = owner
            .ns
            .run_in(|| UdpSocket::bind(SocketAddr::new(src, owner_port)))
            .unwrap();
        owner_sock.connect(dst).unwrap();
        owner_sock.set_read_timeout(Some(ALLOWED_TIMEOUT)).unwrap();
        owner_sock.send(&payload).unwrap();
        let mut buf = [0u8; 2048];
        let n = owner_sock.recv(&mut buf).unwrap_or_else(|e| {
            panic!("the owner's own flow to {dst} failed: {e}\n{}", agent.log())
        });
        assert_eq!(&buf[..n], &payload[..]);
    }
    let mut sent = 0;
    for (what, src, dst) in forged {
        let payload = format!("agent: forged {what}").into_bytes();
        send_from(&attacker_ns, src, 0, dst, &payload);
        sent += 1;
        assert!(
            !sink.received(&payload, DENIED_TIMEOUT),
            "a datagram from {what} ({src}) sent by wallet reached {dst} under the agent\n{}",
            agent.log()
        );
    }
    for (what, src, dst) in &forged[..2] {
        let payload = format!("agent: forged {what} on the owner's flow").into_bytes();
        send_from(&attacker_ns, *src, owner_port, *dst, &payload);
        sent += 1;
        assert!(
            !sink.received(&payload, DENIED_TIMEOUT),
            "a forged datagram on ledger-b's established flow ({src}:{owner_port} -> {dst}) \
             reached ledger-a\n{}",
            agent.log()
        );
    }
    // TCP: the forged SYN never gets an answer (each attempt is at least one SYN).
    for (what, src, dst) in forged {
        let r = attacker_ns.run_in(|| connect_from(src, dst, DENIED_TIMEOUT));
        assert!(r.is_err(), "wallet connected to {dst} as {what}");
        sent += 1;
    }
    let spoofed = dropped(&agent, "spoofed") - before;
    assert!(
        spoofed >= sent,
        "{sent} forged packets sent, {spoofed} counted spoofed: {:?}\n{}",
        counters(&agent),
        agent.log()
    );
    // The owner's own traffic and the attacker's own address are unaffected
    // (the latter is judged by policy: wallet may not reach ledger-a).
    udp_exchange(&owner.ns, owner_v4, dst4, ALLOWED_TIMEOUT)
        .unwrap_or_else(|e| panic!("ledger-b -> ledger-a after the attack: {e}"));
    let denied = dropped(&agent, "policy-denied");
    let payload = b"wallet as itself".to_vec();
    send_from(&attacker_ns, IpAddr::V4(attacker.v4), 0, dst4, &payload);
    assert!(!sink.received(&payload, DENIED_TIMEOUT));
    assert!(
        dropped(&agent, "policy-denied") > denied,
        "{:?}",
        counters(&agent)
    );
    assert_eq!(
        dropped(&agent, "spoofed") - before,
        spoofed,
        "a packet from wallet's own address was counted spoofed"
    );
}

/// A new pod interface is checked from its first packet: until its host
/// route exists, its IP traffic is dropped as `unknown-endpoint`; once the
/// route is added, the agent learns it from the route event. Prints the
/// window (route added to first datagram delivered).
#[test]
fn new_pod_fails_closed_until_its_route_is_learnt() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let victim = lab.ep("ledger-a");
    let dst4 = SocketAddr::new(IpAddr::V4(victim.v4), PORT);
    let sink = Sink::spawn(&victim.ns, &[dst4]);
    let agent = AgentProcess::spawn_custom(&lab, &policy_dir(), &["lxc*", "uplink0"], None, &[]);

    // A CNI's work, split where the agent must hold the line: the veth up
    // and the pod addressed, but no host route on the node yet.
    let (host_if, v4) = ("lxcledgerc", "10.0.1.12");
    let pod = Netns::new("ledgerc");
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ] {
        pod.sysctl(key, "0");
    }
    lab.node.ip(&[
        "link",
        "add",
        host_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ]);
    lab.node
        .sysctl(&format!("net.ipv4.conf.{host_if}.proxy_arp"), "1");
    lab.node
        .sysctl(&format!("net.ipv4.neigh.{host_if}.proxy_delay"), "0");
    lab.node.ip(&["link", "set", host_if, "up"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["addr", "add", &format!("{v4}/32"), "dev", "eth0"]);
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

    let deadline = Instant::now() + Duration::from_secs(10);
    let marker = format!("{host_if}: pod interface, no address yet");
    while !agent.log().contains(&marker) {
        assert!(
            Instant::now() < deadline,
            "the agent did not take {host_if} as an addressless pod interface:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Attached too (the source check is written first).
    while !agent.log().contains(&format!("{host_if}: XDP")) {
        assert!(
            Instant::now() < deadline,
            "{host_if} not attached:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let src: IpAddr = v4.parse().unwrap();
    let before = dropped(&agent, "unknown-endpoint");
    let early = b"before the route".to_vec();
    send_from(&pod, src, 0, dst4, &early);
    assert!(
        !sink.received(&early, DENIED_TIMEOUT),
        "a pod with no route yet reached ledger-a\n{}",
        agent.log()
    );
    let unknown = dropped(&agent, "unknown-endpoint") - before;
    assert!(
        unknown >= 1,
        "counted unknown-endpoint: {unknown}: {:?}",
        counters(&agent)
    );

    // The CNI adds the route: time until the first datagram passes.
    lab.node
        .ip(&["route", "add", &format!("{v4}/32"), "dev", host_if]);
    let added = Instant::now();
    let mut n = 0u32;
    let window = loop {
        let payload = format!("after the route #{n}").into_bytes();
        n += 1;
        send_from(&pod, src, 0, dst4, &payload);
        if sink.received(&payload, Duration::from_millis(2)) {
            break added.elapsed();
        }
        assert!(
            added.elapsed() < Duration::from_secs(10),
            "the pod's traffic still dropped 10 s after its route was added:\n{}",
            agent.log()
        );
    };
    eprintln!("unknown-endpoint window: route added -> first datagram delivered in {window:?} ({n} datagrams sent)");
    assert!(
        window < Duration::from_secs(2),
        "the route event should be seen at once, not at the host tick: {window:?}"
    );
    drop(agent);
    lab.node.ip(&["link", "del", host_if]);
    drop(pod);
}
