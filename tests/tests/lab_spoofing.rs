//! The source check with real sockets: a pod that claims another pod's
//! addresses (or the node's) on its own interface gets its packets
//! delivered when no agent runs, and dropped and counted `spoofed` when the
//! agent enforces; a pod interface whose route is not there yet fails closed
//! (`unknown-endpoint`) until the agent learns it from the routes, and with
//! Kubernetes objects, until the pod's object names it too (and again once
//! that object is deleted).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netpol_tests::files::write_atomically;
use netpol_tests::observe::cli_json;
use netpol_tests::{
    connect_from, require_root, udp_exchange, AgentProcess, Lab, Netns, ALLOWED_TIMEOUT,
    DENIED_TIMEOUT, NODE_NAME,
};

const PORT: u16 = 7777;
/// The node's IPv6 address in the lab (uplink0).
const NODE_V6: &str = "fd00::5";

fn policy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus-cidr")
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

/// Waits (10 s at most) until the agent has logged each of `markers`.
fn wait_for_log(agent: &AgentProcess, markers: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for marker in markers {
        while !agent.log().contains(marker.as_str()) {
            assert!(
                Instant::now() < deadline,
                "no \"{marker}\" in the agent's log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
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
    let mut lab = Lab::localplus();
    let victim = lab.ep("ledger-a");
    let dst4 = SocketAddr::new(IpAddr::V4(victim.v4), PORT);
    let sink = Sink::spawn(&victim.ns, &[dst4]);
    let agent = AgentProcess::spawn_custom(&lab, &policy_dir(), &["lxc*", "uplink0"], None, &[]);

    // A CNI's work, split where the agent must hold the line: the veth up
    // and the pod addressed, but no host route on the node yet.
    let (host_if, v4) = ("lxcledgerc", "10.0.1.12");
    lab.add_unrouted_pod("ledger-c", host_if, v4, "fd00:0:1::12");
    let pod = lab.pod("ledger-c").clone();
    wait_for_log(
        &agent,
        &[
            format!("{host_if}: pod interface, no address yet"),
            // Attached too (the source check is written first).
            format!("{host_if}: enforced"),
        ],
    );
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

/// A directory removed when the test ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn generations(agent: &AgentProcess) -> usize {
    agent.log().matches(" enforced").count()
}

/// Waits (bounded) until the agent has logged more than `seen` enforced
/// policy generations; returns the new count.
fn wait_generation_after(agent: &AgentProcess, seen: usize, what: &str) -> usize {
    let start = Instant::now();
    loop {
        let now = generations(agent);
        if now > seen {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no new policy generation after {what}:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A pod object for the lab's node.
fn pod_object(name: &str, namespace: &str, app: &str, v4: &str, v6: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: {app}}}}}\n\
         spec: {{nodeName: {NODE_NAME}}}\n\
         status: {{phase: Running, podIP: {v4}, podIPs: [{{ip: {v4}}}, {{ip: \"{v6}\"}}]}}\n"
    )
}

/// Sends numbered datagrams from `src` in `ns` until one reaches `sink`
/// (bounded: `limit`); the time from `since` to that delivery.
fn first_delivery(
    ns: &Netns,
    src: IpAddr,
    dst: SocketAddr,
    sink: &Sink,
    since: Instant,
    limit: Duration,
    agent: &AgentProcess,
) -> (Duration, u32) {
    let mut n = 0u32;
    loop {
        let payload = format!("probe #{n} from {src}").into_bytes();
        n += 1;
        send_from(ns, src, 0, dst, &payload);
        if sink.received(&payload, Duration::from_millis(2)) {
            return (since.elapsed(), n);
        }
        assert!(
            since.elapsed() < limit,
            "{src} still dropped {limit:?} later ({n} datagrams):\n{}",
            agent.log()
        );
    }
}

/// With Kubernetes identity on, a host route is not enough: a pod interface
/// is checked only once a pod of this node holds its routed address. Until
/// the pod object arrives its traffic is dropped as `unknown-endpoint`; the
/// object makes it pass (the window is printed); deleting the object drops
/// it again; a new pod given the same address gets its own rights, not the
/// deleted pod's.
#[test]
fn unknown_pod_fails_closed_until_its_object_arrives() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::localplus();
    let victim = lab.ep("ledger-a");
    let dst4 = SocketAddr::new(IpAddr::V4(victim.v4), PORT);
    let sink = Sink::spawn(&victim.ns, &[dst4]);
    let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus");
    let objects = TempDir(std::env::temp_dir().join(format!(
        "netpol-lab-spoofing-objects-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&objects.0);
    std::fs::create_dir_all(&objects.0).unwrap();
    std::fs::copy(policy.join("objects/lab.yaml"), objects.0.join("lab.yaml")).unwrap();
    let agent = AgentProcess::spawn_custom(
        &lab,
        &policy,
        &["lxc*", "uplink0"],
        None,
        &[
            "--kube-objects",
            objects.0.to_str().unwrap(),
            "--node-name",
            NODE_NAME,
        ],
    );

    // The CNI's whole work (veth, addresses, host routes), but the pod's
    // object is not known to the agent yet.
    let (host_if, v4, v6) = ("lxcledgerc", "10.0.1.12", "fd00:0:1::12");
    lab.add_pod("ledger-c", host_if, v4, v6, None);
    let pod = lab.pod("ledger-c").clone();
    wait_for_log(
        &agent,
        &[
            format!("{host_if}: pod interface"),
            format!("{host_if}: enforced"),
        ],
    );
    let src: IpAddr = v4.parse().unwrap();
    let before = dropped(&agent, "unknown-endpoint");
    let early = b"routed, but no pod object".to_vec();
    send_from(&pod, src, 0, dst4, &early);
    assert!(
        !sink.received(&early, DENIED_TIMEOUT),
        "a pod interface with a route but no pod object reached ledger-a\n{}",
        agent.log()
    );
    let unknown = dropped(&agent, "unknown-endpoint") - before;
    assert!(
        unknown >= 1,
        "counted unknown-endpoint: {unknown}: {:?}",
        counters(&agent)
    );

    // The pod object arrives: ledger-c is a ledger pod, which may reach
    // ledger-a on any port (intra-namespace).
    let gens = generations(&agent);
    write_atomically(
        &objects.0,
        "ledger-c.yaml",
        &pod_object("ledger-c", "svc-ledger", "ledger", v4, v6),
    );
    let written = Instant::now();
    let (window, n) = first_delivery(
        &pod,
        src,
        dst4,
        &sink,
        written,
        Duration::from_secs(10),
        &agent,
    );
    eprintln!(
        "unknown-endpoint window with Kubernetes objects: pod object written -> first datagram \
         delivered in {window:?} ({n} datagrams sent)"
    );

    // The source check is written before the generation is logged: wait
    // for the log line, so the next wait sees the deletion's generation.
    let gens = wait_generation_after(&agent, gens, "the pod object was written");

    // The pod is deleted: its address is owned by nobody again.
    std::fs::remove_file(objects.0.join("ledger-c.yaml")).unwrap();
    let gens = wait_generation_after(&agent, gens, "the pod object was deleted");
    let before = dropped(&agent, "unknown-endpoint");
    let late = b"pod object deleted".to_vec();
    send_from(&pod, src, 0, dst4, &late);
    assert!(
        !sink.received(&late, DENIED_TIMEOUT),
        "a deleted pod's interface still reached ledger-a\n{}",
        agent.log()
    );
    assert!(
        dropped(&agent, "unknown-endpoint") > before,
        "the deleted pod's datagram was not counted unknown-endpoint: {:?}",
        counters(&agent)
    );

    // A wallet pod takes the address over: it passes the source check but
    // has a wallet pod's rights, which do not include ledger-a.
    let policy_denied = dropped(&agent, "policy-denied");
    write_atomically(
        &objects.0,
        "wallet-2.yaml",
        &pod_object("wallet-2", "svc-wallet", "wallet", v4, v6),
    );
    wait_generation_after(&agent, gens, "the wallet pod was added");
    let unknown = dropped(&agent, "unknown-endpoint");
    let reused = b"same address, another pod".to_vec();
    send_from(&pod, src, 0, dst4, &reused);
    assert!(
        !sink.received(&reused, DENIED_TIMEOUT),
        "a new pod reusing ledger-c's address got ledger-c's rights\n{}",
        agent.log()
    );
    assert!(
        dropped(&agent, "policy-denied") > policy_denied,
        "the new pod's datagram was not judged by policy: {:?}",
        counters(&agent)
    );
    assert_eq!(
        dropped(&agent, "unknown-endpoint"),
        unknown,
        "the new pod's address is known: no unknown-endpoint drop expected"
    );
    drop(agent);
    lab.remove_pod("ledger-c", host_if);
}
