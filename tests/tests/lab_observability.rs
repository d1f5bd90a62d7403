//! Observability in the lab with the real agent: exact per-flow and aggregate
//! counts read back from /metrics, /flows, `flows` and `stats`; promtool on
//! /metrics; health and status; a flood of more denied flows than the flow
//! map holds; audit mode and audit-only groups; `monitor` events; what the
//! network port and the unix socket each serve, and their bounds.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netpol_tests::observe::{
    cli_json, connect_port, connect_socket, http_get, http_ok, metric_sum, promtool_check,
    socket_get, socket_ok,
};
use netpol_tests::Family::V4;
use netpol_tests::{
    agent_bin, require_root, tcp_exchange, AgentProcess, Lab, Netns, TcpEcho, UdpEcho,
    ALLOWED_TIMEOUT,
};

fn localplus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus-cidr")
}

/// Ethernet + IPv4 + UDP headers in front of a payload.
const UDP_FRAME_OVERHEAD: u64 = 14 + 20 + 8;

/// Sends `n` datagrams of `len` bytes from `src` to `dst`, each waiting for
/// its echo: exactly n requests and n replies cross the node.
fn udp_echoes(ns: &Netns, src: IpAddr, dst: SocketAddr, n: usize, len: usize) {
    let sock = ns
        .run_in(|| UdpSocket::bind(SocketAddr::new(src, 0)))
        .unwrap();
    sock.connect(dst).unwrap();
    sock.set_read_timeout(Some(ALLOWED_TIMEOUT)).unwrap();
    let payload = vec![0x5a; len];
    let mut buf = vec![0u8; len + 16];
    for i in 0..n {
        sock.send(&payload).unwrap();
        let got = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("echo {i} of {n} from {dst}: {e}"));
        assert_eq!(got, len);
    }
}

/// Sends one datagram of `len` bytes from `src` to each of `dsts` (no answer
/// expected: the agent drops them).
fn udp_send(ns: &Netns, src: IpAddr, dsts: &[SocketAddr], len: usize) {
    let sock = ns
        .run_in(|| UdpSocket::bind(SocketAddr::new(src, 0)))
        .unwrap();
    let payload = vec![0xa5; len];
    for d in dsts {
        sock.send_to(&payload, d).unwrap();
    }
}

/// Policy-denied packets without a rule of one traffic side (`ingress`:
/// entering a workload, `egress`: leaving one), from /metrics.
fn denied(node: &Netns, traffic: &str) -> u64 {
    let m = http_ok(node, "/metrics");
    metric_sum(
        &m,
        "netpol_agent_packets_total",
        &[
            ("traffic", traffic),
            ("verdict", "drop"),
            ("reason", "policy-denied"),
        ],
    )
}

/// Waits (bounded) until no denied packet entering a workload has been
/// counted for 1.5 s: a fresh lab's interfaces send MLD reports for a
/// moment, which the policy drops.
fn settle(node: &Netns) -> u64 {
    settle_side(node, "ingress")
}

fn settle_side(node: &Netns, traffic: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = denied(node, traffic);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = denied(node, traffic);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(1500) {
            return last;
        }
    }
    panic!("denied counters never settled (last {last})");
}

fn flow_records<'a>(
    flows: &'a serde_json::Value,
    src: &str,
    dst: &str,
) -> Vec<&'a serde_json::Value> {
    flows
        .as_array()
        .expect("flows is a JSON array")
        .iter()
        .filter(|f| f["src"] == src && f["dst"] == dst)
        .collect()
}

/// (direction, packets, bytes) of every record of the src -> dst flow.
fn by_direction(flows: &serde_json::Value, src: &str, dst: &str) -> Vec<(String, u64, u64)> {
    let mut v: Vec<_> = flow_records(flows, src, dst)
        .into_iter()
        .map(|f| {
            (
                f["direction"].as_str().unwrap().to_owned(),
                f["packets"].as_u64().unwrap(),
                f["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn exact_counts_from_metrics_flows_and_stats() {
    if !require_root() {
        return;
    }
    const N: u64 = 25;
    const M: u64 = 7;
    const ALLOWED_LEN: usize = 100;
    const DENIED_LEN: usize = 50;
    let lab = Lab::localplus();
    let agent = AgentProcess::spawn(&lab, &localplus(), &[]);

    // Health, readiness and status before any traffic.
    assert_eq!(http_ok(&lab.node, "/healthz").trim(), "ok");
    assert_eq!(http_ok(&lab.node, "/readyz").trim(), "ready");
    let status: serde_json::Value = serde_json::from_str(&socket_ok(&agent, "/status")).unwrap();
    assert_eq!(status["mode"], "enforce", "{status}");
    assert_eq!(status["policy_generation"], 1, "{status}");
    assert_eq!(status["last_reload_error"], serde_json::Value::Null);
    let attached: Vec<&str> = status["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["interface"].as_str().unwrap())
        .collect();
    assert!(attached.contains(&"uplink0"), "{status}");
    // Every lab interface is a veth: by default TCX judges what enters it.
    for a in status["attached"].as_array().unwrap() {
        assert_eq!(a["hook"], "tcx", "{status}");
    }
    let before_denied = settle(&lab.node);
    let before_denied_out = denied(&lab.node, "egress");

    // N echoes ledger-a -> ledger-b (intra-namespace), M datagrams world ->
    // ledger-a:8080/udp (no rule).
    let a = lab.ep("ledger-a");
    let b = lab.ep("ledger-b");
    let world = lab.ep("world");
    let _echo = UdpEcho::spawn(&b.ns, b.sock(V4, 7777));
    udp_echoes(&a.ns, a.ip(V4), b.sock(V4, 7777), N as usize, ALLOWED_LEN);
    let denied_dst = a.sock(V4, 8080);
    udp_send(
        &world.ns,
        world.ip(V4),
        &vec![denied_dst; M as usize],
        DENIED_LEN,
    );
    // K datagrams ledger-a -> world:9999/udp (no rule): dropped as they
    // enter the host side of ledger-a's veth, where XDP sees them come in,
    // yet they are traffic leaving the pod.
    const K: u64 = 4;
    udp_send(
        &a.ns,
        a.ip(V4),
        &vec![world.sock(V4, 9999); K as usize],
        DENIED_LEN,
    );
    std::thread::sleep(Duration::from_millis(300));

    let allowed_frame = UDP_FRAME_OVERHEAD + ALLOWED_LEN as u64;
    let denied_frame = UDP_FRAME_OVERHEAD + DENIED_LEN as u64;
    let (sa, sb, sw) = (a.v4.to_string(), b.v4.to_string(), world.v4.to_string());
    // Each request is judged leaving ledger-a (XDP on its veth) and entering
    // ledger-b (TC on its veth); each reply the other way round.
    let both = |n: u64, bytes: u64| {
        vec![
            ("egress".to_owned(), n, n * bytes),
            ("ingress".to_owned(), n, n * bytes),
        ]
    };
    let check_flows = |flows: &serde_json::Value, source: &str| {
        assert_eq!(
            by_direction(flows, &sa, &sb),
            both(N, allowed_frame),
            "{source}: requests ledger-a -> ledger-b"
        );
        assert_eq!(
            by_direction(flows, &sb, &sa),
            both(N, allowed_frame),
            "{source}: replies ledger-b -> ledger-a"
        );
        for f in flow_records(flows, &sa, &sb) {
            assert_eq!(f["verdict"], "pass", "{source}: {f}");
            assert_eq!(f["rule"], "intra-namespace", "{source}: {f}");
            assert_eq!(f["reply"], false, "{source}: {f}");
            assert_eq!(f["proto"], "udp", "{source}: {f}");
            assert_eq!(f["dport"], 7777, "{source}: {f}");
        }
        assert_eq!(
            by_direction(flows, &sw, &sa),
            vec![("ingress".to_owned(), M, M * denied_frame)],
            "{source}: denied world -> ledger-a"
        );
        let d = flow_records(flows, &sw, &sa)[0];
        assert_eq!(d["verdict"], "drop", "{source}: {d}");
        assert_eq!(d["reason"], "policy-denied", "{source}: {d}");
        assert!(d["first_seen_secs_ago"].as_f64().unwrap() < 60.0, "{d}");
    };
    let cli_flows = cli_json(&agent, &["flows", "--json"]);
    check_flows(&cli_flows, "netpol-agent flows --json");
    let http_flows: serde_json::Value = serde_json::from_str(&socket_ok(&agent, "/flows")).unwrap();
    check_flows(&http_flows, "/flows");

    // Filters, sort and limit.
    let q = format!("/flows?verdict=drop&cidr={sw}/32&port=8080&proto=udp&direction=ingress");
    let only: serde_json::Value = serde_json::from_str(&socket_ok(&agent, &q)).unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1, "{q}: {only}");
    let top: serde_json::Value =
        serde_json::from_str(&socket_ok(&agent, "/flows?limit=1&sort=bytes")).unwrap();
    assert_eq!(top[0]["bytes"], N * allowed_frame, "{top}");
    let (status, body) = socket_get(&agent, "/flows?verdict=allow");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("verdict"), "{body}");
    let (status, body) = socket_get(&agent, "/flows?limit=10001");
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("limit: "), "{body}");

    // Aggregates from /metrics: the rule's passes and the new drops. Each
    // datagram is counted leaving its pod (XDP on the sender's veth:
    // egress) and entering the other (TC on the receiver's veth: ingress).
    let metrics = http_ok(&lab.node, "/metrics");
    for dir in ["ingress", "egress"] {
        let rule = [("traffic", dir), ("rule", "intra-namespace")];
        assert_eq!(
            metric_sum(&metrics, "netpol_agent_packets_total", &rule),
            2 * N,
            "{dir} packets of intra-namespace:\n{metrics}"
        );
        assert_eq!(
            metric_sum(&metrics, "netpol_agent_bytes_total", &rule),
            2 * N * allowed_frame,
            "{dir} bytes of intra-namespace"
        );
    }
    // world -> ledger-a is dropped where it enters the node (the uplink's
    // XDP hook): traffic entering the workload.
    let denied_in = [
        ("traffic", "ingress"),
        ("verdict", "drop"),
        ("reason", "policy-denied"),
    ];
    assert_eq!(
        metric_sum(&metrics, "netpol_agent_packets_total", &denied_in) - before_denied,
        M,
        "denied packets:\n{metrics}"
    );
    let denied_out = [
        ("traffic", "egress"),
        ("verdict", "drop"),
        ("reason", "policy-denied"),
    ];
    assert_eq!(
        metric_sum(&metrics, "netpol_agent_packets_total", &denied_out) - before_denied_out,
        K,
        "packets a pod sent, dropped on its veth, count as egress:\n{metrics}"
    );
    assert!(
        !metrics.contains("direction=\""),
        "the hook's direction is no label any more:\n{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "netpol_agent_policy_generation", &[]),
        1
    );
    // Interfaces by hook and mode, and one series per interface naming its
    // ingress hook.
    let n = attached.len() as u64;
    let on = |labels: &[(&str, &str)]| metric_sum(&metrics, "netpol_agent_interfaces", labels);
    assert_eq!(on(&[("hook", "tcx"), ("mode", "ingress")]), n, "{metrics}");
    assert_eq!(on(&[("hook", "tcx"), ("mode", "egress")]), n, "{metrics}");
    assert_eq!(on(&[("hook", "xdp")]), 0, "{metrics}");
    for iface in &attached {
        assert_eq!(
            metric_sum(
                &metrics,
                "netpol_agent_interface_ingress_hook",
                &[("interface", iface), ("hook", "tcx")]
            ),
            1,
            "{metrics}"
        );
    }
    assert!(!metrics.contains("programs_attached"), "{metrics}");
    sre_series(&agent, &metrics);
    let (ok, out) = promtool_check(&metrics);
    assert!(ok, "promtool check metrics failed:\n{out}\n{metrics}");

    // The same aggregates from `stats --json`.
    let stats = cli_json(&agent, &["stats", "--json"]);
    let rows = stats.as_array().unwrap();
    let sum = |f: &dyn Fn(&serde_json::Value) -> bool, k: &str| -> u64 {
        rows.iter()
            .filter(|r| f(r))
            .map(|r| r[k].as_u64().unwrap())
            .sum()
    };
    let rule_in =
        |r: &serde_json::Value| r["rule"] == "intra-namespace" && r["traffic"] == "ingress";
    assert_eq!(sum(&rule_in, "packets"), 2 * N, "{stats}");
    assert_eq!(sum(&rule_in, "bytes"), 2 * N * allowed_frame, "{stats}");
    let drop_in = |r: &serde_json::Value| {
        r["verdict"] == "drop" && r["reason"] == "policy-denied" && r["traffic"] == "ingress"
    };
    assert_eq!(sum(&drop_in, "packets") - before_denied, M, "{stats}");
    drop(agent);
}

/// The value of the one sample of `name` (any labels), and its line.
fn one_sample<'m>(metrics: &'m str, name: &str) -> (f64, &'m str) {
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .collect();
    assert_eq!(lines.len(), 1, "one series of {name}: {lines:?}");
    let value = lines[0].rsplit_once(' ').unwrap().1.parse().unwrap();
    (value, lines[0])
}

/// The series an SRE alerts on, as a running agent serves them.
fn sre_series(agent: &AgentProcess, metrics: &str) {
    // Build info: the version and the eBPF object's hash `version` prints.
    let version = Command::new(agent_bin())
        .args(["version", "-o", "json"])
        .output()
        .unwrap();
    let version: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap();
    let (v, line) = one_sample(metrics, "netpol_agent_build_info");
    assert_eq!(v, 1.0);
    for (label, want) in [
        ("version", &version["version"]),
        ("revision", &version["git_revision"]),
        ("ebpf_sha256", &version["ebpf_object"]["sha256"]),
    ] {
        let want = format!("{label}=\"{}\"", want.as_str().unwrap());
        assert!(line.contains(&want), "{want} in {line}");
    }
    // Process metrics.
    let (rss, _) = one_sample(metrics, "process_resident_memory_bytes");
    assert!(rss > 1e6, "{rss}");
    let (start, _) = one_sample(metrics, "process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start > now - 3600.0 && start <= now + 1.0,
        "{start} vs {now}"
    );
    assert!(one_sample(metrics, "process_open_fds").0 > 3.0);
    one_sample(metrics, "process_cpu_seconds_total");
    // The policy's content hash, the same as /status says.
    let status: serde_json::Value = serde_json::from_str(&socket_ok(agent, "/status")).unwrap();
    let hash = status["policy_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 16, "{status}");
    let (v, line) = one_sample(metrics, "netpol_agent_policy_hash_info");
    assert_eq!(v, 1.0);
    assert_eq!(
        line,
        format!("netpol_agent_policy_hash_info{{hash=\"{hash}\"}} 1")
    );
    // The first policy went live at start-up; the first sweep runs at once.
    let (live, _) = one_sample(
        metrics,
        "netpol_agent_last_reload_success_timestamp_seconds",
    );
    assert!(live > now - 600.0 && live <= now + 1.0, "{live} vs {now}");
    assert_eq!(
        one_sample(metrics, "netpol_agent_reload_duration_seconds_count").0,
        0.0
    );
    assert!(one_sample(metrics, "netpol_agent_ct_gc_runs_total").0 >= 1.0);
    assert!(one_sample(metrics, "netpol_agent_ct_gc_duration_seconds_count").0 >= 1.0);
    one_sample(metrics, "netpol_agent_ct_gc_deleted_total");
    // Every bounded map's fill and capacity.
    for map in [
        "conntrack",
        "denied_flows",
        "fragments",
        "identities",
        "hosts",
        "rules",
        "sources",
    ] {
        let m = [("map", map)];
        let capacity = metric_sum(metrics, "netpol_agent_map_capacity", &m);
        let entries = metric_sum(metrics, "netpol_agent_map_entries", &m);
        assert!(capacity > 0, "{map}:\n{metrics}");
        assert!(entries <= capacity, "{map}: {entries} > {capacity}");
        if ["conntrack", "identities", "rules", "sources"].contains(&map) {
            assert!(entries > 0, "{map} holds entries now:\n{metrics}");
        }
    }
}

#[test]
fn flood_of_denied_flows_keeps_aggregates_exact_and_map_bounded() {
    if !require_root() {
        return;
    }
    const FLOWS: u16 = 1500;
    const ROUNDS: u64 = 4;
    const MAP: u32 = 128;
    let lab = Lab::localplus();
    let map = MAP.to_string();
    let _agent = AgentProcess::spawn(&lab, &localplus(), &["--denied-flow-max", &map]);
    let before = settle(&lab.node);
    let world = lab.ep("world");
    let target = lab.ep("ledger-a");
    let dsts: Vec<SocketAddr> = (0..FLOWS).map(|i| target.sock(V4, 20000 + i)).collect();
    // ROUNDS times the same flows, paced, so the map churns (every round
    // re-creates what the last one evicted) while /metrics is scraped.
    let sender = {
        let (ns, src, dsts) = (world.ns.clone(), world.ip(V4), dsts.clone());
        std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                for chunk in dsts.chunks(100) {
                    udp_send(&ns, src, chunk, 20);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    // Evictions (and creations) never go down from one scrape to the next.
    let series = |m: &str| -> Vec<u64> {
        ["conntrack", "denied_flows"]
            .iter()
            .flat_map(|map| {
                [
                    metric_sum(m, "netpol_agent_map_evictions_total", &[("map", map)]),
                    metric_sum(m, "netpol_agent_map_created_total", &[("map", map)]),
                ]
            })
            .collect()
    };
    let mut last = series(&http_ok(&lab.node, "/metrics"));
    let mut scrapes = 0;
    while !sender.is_finished() || scrapes < 5 {
        let now = series(&http_ok(&lab.node, "/metrics"));
        for (i, (n, l)) in now.iter().zip(&last).enumerate() {
            assert!(n >= l, "series {i} went from {l} to {n} under churn");
        }
        last = now;
        scrapes += 1;
        assert!(scrapes < 2000, "the sender never finished");
    }
    sender.join().unwrap();
    assert!(
        last[2] > 0,
        "the denied-flow map evicted under churn: {last:?}"
    );
    std::thread::sleep(Duration::from_millis(300));

    let m = http_ok(&lab.node, "/metrics");
    let denied = metric_sum(
        &m,
        "netpol_agent_packets_total",
        &[
            ("traffic", "ingress"),
            ("verdict", "drop"),
            ("reason", "policy-denied"),
        ],
    );
    assert_eq!(
        denied - before,
        ROUNDS * u64::from(FLOWS),
        "every packet counted:\n{m}"
    );
    let flows = [("map", "denied_flows")];
    let entries = metric_sum(&m, "netpol_agent_map_entries", &flows);
    let capacity = metric_sum(&m, "netpol_agent_map_capacity", &flows);
    let created = metric_sum(&m, "netpol_agent_map_created_total", &flows);
    let evicted = metric_sum(&m, "netpol_agent_map_evictions_total", &flows);
    assert_eq!(capacity, 2 * u64::from(MAP), "IPv4 + IPv6 maps:\n{m}");
    assert!(
        entries <= capacity,
        "{entries} entries > capacity {capacity}"
    );
    assert!(
        created >= u64::from(FLOWS),
        "each new flow creates an entry: {created}"
    );
    assert_eq!(created - evicted, entries, "evictions = created - live");
    assert!(evicted >= u64::from(FLOWS) - u64::from(MAP), "{evicted}");
    let (ok, out) = promtool_check(&m);
    assert!(ok, "promtool:\n{out}");
}

/// A policy directory: the LOCAL-PLUS example plus `extra` as one more file.
struct PolicyDir(PathBuf);

impl PolicyDir {
    fn new(extra: &str) -> PolicyDir {
        let dir = std::env::temp_dir().join(format!(
            "netpol-obs-{}",
            netpol_tests::netns::unique_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(localplus()).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.join("zz-audit.yaml"), extra).unwrap();
        PolicyDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PolicyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn audit_packets(agent: &AgentProcess) -> u64 {
    cli_json(agent, &["stats", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "audit" && r["reason"] == "policy-denied")
        .map(|r| r["packets"].as_u64().unwrap())
        .sum()
}

#[test]
fn audit_mode_lets_a_denied_edge_connect_and_counts_it() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let agent = AgentProcess::spawn(&lab, &localplus(), &["--mode", "audit"]);
    let status: serde_json::Value = serde_json::from_str(&socket_ok(&agent, "/status")).unwrap();
    assert_eq!(status["mode"], "audit");
    let world = lab.ep("world");
    let a = lab.ep("ledger-a");
    let _srv = TcpEcho::spawn(&a.ns, a.sock(V4, 8080));
    tcp_exchange(&world.ns, world.ip(V4), a.sock(V4, 8080), ALLOWED_TIMEOUT)
        .unwrap_or_else(|e| panic!("audit mode must let world -> ledger-a:8080 through: {e}"));
    assert!(audit_packets(&agent) > 0, "would-deny packets are counted");
    let flows = cli_json(&agent, &["flows", "--json", "--verdict", "audit"]);
    let recs = flow_records(&flows, &world.v4.to_string(), &a.v4.to_string());
    assert!(!recs.is_empty(), "the flow is marked audit: {flows}");
    assert!(
        recs.iter().all(|r| r["reason"] == "policy-denied"),
        "{flows}"
    );
    let m = http_ok(&lab.node, "/metrics");
    assert!(
        metric_sum(
            &m,
            "netpol_agent_packets_total",
            &[("verdict", "audit"), ("reason", "policy-denied")]
        ) > 0,
        "{m}"
    );
}

#[test]
fn audit_only_group_passes_only_its_own_denied_traffic() {
    if !require_root() {
        return;
    }
    // The remote "world" address becomes an audit-only group: its denied
    // traffic passes (and counts as audit); other denied edges stay dropped.
    let dir = PolicyDir::new(
        "groups:\n  internet-canary:\n    cidrs: [203.0.113.0/24]\n    audit: true\n",
    );
    let lab = Lab::localplus();
    let agent = AgentProcess::spawn(&lab, dir.path(), &[]);
    let world = lab.ep("world");
    let a = lab.ep("ledger-a");
    let wallet = lab.ep("wallet");
    let _srv = TcpEcho::spawn(&a.ns, a.sock(V4, 8080));
    tcp_exchange(&world.ns, world.ip(V4), a.sock(V4, 8080), ALLOWED_TIMEOUT)
        .unwrap_or_else(|e| panic!("the audit-only group's denied edge must connect: {e}"));
    assert!(audit_packets(&agent) > 0);
    // wallet -> ledger-a:8080 is still enforced.
    let denied = tcp_exchange(&wallet.ns, wallet.ip(V4), a.sock(V4, 8080), ALLOWED_TIMEOUT);
    assert!(denied.is_err(), "wallet -> ledger-a:8080 must stay denied");
    let flows = cli_json(&agent, &["flows", "--json"]);
    let w = flow_records(&flows, &wallet.v4.to_string(), &a.v4.to_string());
    assert!(
        !w.is_empty() && w.iter().all(|r| r["verdict"] == "drop"),
        "{flows}"
    );
}

#[test]
fn monitor_prints_denied_new_flows() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let agent = AgentProcess::spawn(&lab, &localplus(), &[]);
    // The lab's own start-up drops (MLD reports) must not be the event seen.
    settle(&lab.node);
    // The socket is a path: monitor needs no network namespace.
    let mut mon = Command::new(agent_bin())
        .args(["monitor", "--json", "--count", "1", "--socket"])
        .arg(agent.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start monitor");
    // Keep opening new denied flows until monitor has printed one (bounded).
    let world = lab.ep("world");
    let a = lab.ep("ledger-a");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut port = 30000;
    while mon.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = mon.kill();
            let out = mon.wait_with_output().unwrap();
            panic!(
                "monitor printed nothing in 15 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        udp_send(&world.ns, world.ip(V4), &[a.sock(V4, port)], 10);
        port += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = mon.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let ev: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("monitor --json line {line:?}: {e}"));
    assert_eq!(ev["verdict"], "drop", "{ev}");
    assert_eq!(ev["direction"], "ingress", "{ev}");
    assert_eq!(ev["reason"], "policy-denied", "{ev}");
    assert_eq!(ev["src"], world.v4.to_string(), "{ev}");
    assert_eq!(ev["dst"], a.v4.to_string(), "{ev}");
    assert_eq!(ev["proto"], "udp", "{ev}");
}

#[test]
fn audit_only_rule_allows_and_reports_what_it_alone_allows() {
    if !require_root() {
        return;
    }
    // A broad legacy rule on probation: world may reach ledger-a on any TCP
    // port, but that traffic is reported as audit (it has no other rule).
    let dir = PolicyDir::new(
        "rules:\n  - name: legacy-world-in\n    from: world\n    to: [10.0.1.0/24]\n    ports: [tcp]\n    audit: true\n",
    );
    let lab = Lab::localplus();
    let agent = AgentProcess::spawn(&lab, dir.path(), &[]);
    let world = lab.ep("world");
    let a = lab.ep("ledger-a");
    let _srv = TcpEcho::spawn(&a.ns, a.sock(V4, 8080));
    tcp_exchange(&world.ns, world.ip(V4), a.sock(V4, 8080), ALLOWED_TIMEOUT)
        .unwrap_or_else(|e| panic!("the audit-only rule still allows: {e}"));
    let rows = cli_json(&agent, &["stats", "--json"]);
    let legacy: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rule"] == "legacy-world-in")
        .collect();
    assert!(!legacy.is_empty(), "{rows}");
    assert!(legacy.iter().all(|r| r["verdict"] == "audit"), "{rows}");
    let flows = cli_json(&agent, &["flows", "--json"]);
    let recs = flow_records(&flows, &world.v4.to_string(), &a.v4.to_string());
    assert!(
        !recs.is_empty()
            && recs
                .iter()
                .all(|r| r["verdict"] == "audit" && r["rule"] == "legacy-world-in"),
        "{flows}"
    );
    // Traffic an enforcing rule allows is credited to that rule, not audited.
    let gw = lab.ep("gateway");
    tcp_exchange(&gw.ns, gw.ip(V4), a.sock(V4, 8080), ALLOWED_TIMEOUT).unwrap();
    let m = http_ok(&lab.node, "/metrics");
    assert!(
        metric_sum(
            &m,
            "netpol_agent_packets_total",
            &[("rule", "gateway-to-services"), ("verdict", "pass")]
        ) > 0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "netpol_agent_packets_total",
            &[("rule", "gateway-to-services"), ("verdict", "audit")]
        ),
        0
    );
}

/// Polls /status until the live policy generation is `gen` (bounded).
fn wait_generation(agent: &AgentProcess, gen: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s: serde_json::Value = serde_json::from_str(&socket_ok(agent, "/status")).unwrap();
        if s["policy_generation"] == gen {
            return;
        }
        assert!(Instant::now() < deadline, "no generation {gen}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn per_rule_counters_follow_rule_names_across_a_reordering_reload() {
    if !require_root() {
        return;
    }
    const N: u64 = 5;
    const M: u64 = 3;
    let dir = PolicyDir::new("# nothing yet\n");
    let lab = Lab::localplus();
    let agent = AgentProcess::spawn(&lab, dir.path(), &[]);
    let a = lab.ep("ledger-a");
    let b = lab.ep("ledger-b");
    let _echo = UdpEcho::spawn(&b.ns, b.sock(V4, 7777));
    udp_echoes(&a.ns, a.ip(V4), b.sock(V4, 7777), N as usize, 10);
    let intra = |m: &str| {
        metric_sum(
            m,
            "netpol_agent_packets_total",
            &[("traffic", "ingress"), ("rule", "intra-namespace")],
        )
    };
    let m = http_ok(&lab.node, "/metrics");
    assert_eq!(intra(&m), 2 * N);
    let hash0 = policy_hash(&agent, &m);
    let (live0, _) = one_sample(&m, "netpol_agent_last_reload_success_timestamp_seconds");

    // A file that sorts first puts a new rule in front of all others: every
    // rule's position (the compiler's id) moves by one.
    std::fs::write(
        dir.path().join("00-first.yaml"),
        "rules:\n  - name: aaa-new-first\n    from: [10.0.9.0/24]\n    to: [10.0.9.0/24]\n",
    )
    .unwrap();
    wait_generation(&agent, 2);
    udp_echoes(&a.ns, a.ip(V4), b.sock(V4, 7777), M as usize, 10);
    let m = http_ok(&lab.node, "/metrics");
    assert_eq!(
        intra(&m),
        2 * (N + M),
        "counts stay with the rule's name:\n{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "netpol_agent_packets_total",
            &[("rule", "aaa-new-first")]
        ),
        0,
        "the new rule inherits nobody's counts"
    );
    // A new rule: a new hash, the old series gone; the reload is timed.
    let hash1 = policy_hash(&agent, &m);
    assert_ne!(hash1, hash0);
    assert_eq!(
        one_sample(&m, "netpol_agent_reload_duration_seconds_count").0,
        1.0
    );
    let (live1, _) = one_sample(&m, "netpol_agent_last_reload_success_timestamp_seconds");
    assert!(live1 >= live0, "{live1} < {live0}");

    // The same content from another file, read in another order: the hash
    // names the content, not the files or the generation.
    std::fs::rename(
        dir.path().join("00-first.yaml"),
        dir.path().join("zz-moved.yaml"),
    )
    .unwrap();
    wait_generation(&agent, 3);
    let m = http_ok(&lab.node, "/metrics");
    assert_eq!(policy_hash(&agent, &m), hash1, "{m}");
    let reloads = metric_sum(
        &m,
        "netpol_agent_policy_reloads_total",
        &[("result", "success")],
    );
    assert_eq!(
        one_sample(&m, "netpol_agent_reload_duration_seconds_count").0 as u64,
        reloads
    );
}

/// The live policy's hash: the one `netpol_agent_policy_hash_info` series,
/// the same as /status says.
fn policy_hash(agent: &AgentProcess, metrics: &str) -> String {
    let status: serde_json::Value = serde_json::from_str(&socket_ok(agent, "/status")).unwrap();
    let hash = status["policy_hash"].as_str().unwrap().to_owned();
    let (_, line) = one_sample(metrics, "netpol_agent_policy_hash_info");
    assert_eq!(
        line,
        format!("netpol_agent_policy_hash_info{{hash=\"{hash}\"}} 1")
    );
    hash
}

/// Sends `GET path` as HTTP/1.1 on `stream` and reads the answer's head
/// (bounded): the status and what came with it. The connection stays open,
/// for an `/events` stream.
fn open_get(stream: &mut (impl Read + Write), path: &str) -> (u16, String) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("GET {path}: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status in {text:?}"));
    (status, text)
}

/// Waits (bounded) for the peer to close `stream`; false if it did not
/// within `within`.
fn closed_within(stream: &mut impl Read, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn network_port_serves_metrics_and_health_only_and_both_listeners_are_bounded() {
    use netpol_agent::telemetry::http::{EVENT_SUBSCRIBERS_MAX, NETWORK_CONNECTIONS_MAX};
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};

    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let agent = AgentProcess::spawn(&lab, &localplus(), &[]);

    // What any pod could reach: metrics and health, and nothing else.
    for path in ["/metrics", "/healthz", "/readyz"] {
        http_ok(&lab.node, path);
    }
    for path in ["/flows", "/flows?limit=1", "/events", "/status"] {
        let (status, body) = http_get(&lab.node, path);
        assert_eq!(status, 404, "the network port answered {path}: {body}");
    }
    // The socket serves all of it, to root only.
    for path in ["/metrics", "/healthz", "/readyz", "/flows", "/status"] {
        socket_ok(&agent, path);
    }
    let sock = std::fs::symlink_metadata(agent.socket()).unwrap();
    assert!(sock.file_type().is_socket());
    assert_eq!(sock.mode() & 0o777, 0o600, "socket mode {:o}", sock.mode());
    assert_eq!(sock.uid(), 0);
    let dir = std::fs::metadata(agent.socket().parent().unwrap()).unwrap();
    assert_eq!(
        dir.mode() & 0o022,
        0,
        "socket directory mode {:o}",
        dir.mode()
    );

    // Event subscribers: the bound, then a 503, then a slot again once a
    // subscriber has gone.
    let mut subscribers: Vec<_> = (0..EVENT_SUBSCRIBERS_MAX)
        .map(|i| {
            let mut s = connect_socket(&agent);
            let (status, head) = open_get(&mut s, "/events");
            assert_eq!(status, 200, "subscriber {i}: {head}");
            s
        })
        .collect();
    let mut extra = connect_socket(&agent);
    let (status, head) = open_get(&mut extra, "/events");
    assert_eq!(
        status,
        503,
        "subscriber {}: {head}",
        EVENT_SUBSCRIBERS_MAX + 1
    );
    drop(extra);
    drop(subscribers.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect_socket(&agent);
        let (status, head) = open_get(&mut s, "/events");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a gone subscriber's slot never came back: {head}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(subscribers);

    // Network connections: the bound, then a 503 at once, not a hang.
    let held: Vec<_> = (0..NETWORK_CONNECTIONS_MAX)
        .map(|_| connect_port(&lab.node))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (status, body) = http_get(&lab.node, "/healthz");
    assert_eq!(
        status,
        503,
        "connection {}: {body}",
        NETWORK_CONNECTIONS_MAX + 1
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // A connection that sends no request is closed by the agent, so idle
    // connections cannot hold the bound for long.
    let mut idle = held.into_iter().next().unwrap();
    idle.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(15)),
        "an idle connection was kept open"
    );
    // Once they are gone, the port serves again.
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(&lab.node, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "the port stayed saturated");
        std::thread::sleep(Duration::from_millis(200));
    }
}
