//! Who a rule names: overlapping groups, the `any` and `world` peers, and
//! the `host` built-in, enforced by option or by the policy's setting.

use agent_common::reason::*;
use netpol_agent::policy::CompileOptions;
use netpol_tests::packet::{Packet, TCP_SYN};
use netpol_tests::progrun::Want::{self, Drop, Pass};
use netpol_tests::progrun::{small_maps, Bench, BASE, V4, V6};

const OVERLAP: &str = r#"
groups:
  web: [10.0.1.0/24, "fd00:1::/64"]
  canary: [10.0.1.128/25, "fd00:1:0:0:8000::/65"]
  db: [10.0.2.0/24, "fd00:2::/64"]
  db-primary: [10.0.2.10/32, "fd00:2::10/128"]
rules:
  - name: web-to-db
    from: web
    to: db
    ports: [5432/tcp]
  - name: canary-to-db
    from: canary
    to: db
    ports: [8080/tcp]
  - name: web-to-primary
    from: web
    to: db-primary
    ports: [6432/tcp]
"#;

#[test]
fn overlapping_groups() {
    let Some(b) = Bench::new("overlapping_groups", OVERLAP) else {
        return;
    };
    let cases = [
        // (web only, web + canary, db only, db + db-primary)
        ("10.0.1.5", "10.0.1.200", "10.0.2.7", "10.0.2.10"),
        ("fd00:1::5", "fd00:1::8000:0:0:1", "fd00:2::7", "fd00:2::10"),
    ];
    let mut sport = 41000;
    for (web, canary, db, primary) in cases {
        let mut syn = |src: &str, dst: &str, port: u16, want: Want| {
            sport += 1;
            let scenario = format!("{src} -> {dst}:{port}");
            b.xdp(
                &scenario,
                &Packet::ip(src, dst).tcp(sport, port, TCP_SYN),
                want,
            );
        };
        syn(web, db, 5432, Pass(PASS_POLICY));
        syn(web, db, 8080, Drop(DROP_POLICY));
        syn(web, db, 6432, Drop(DROP_POLICY));
        // The canary address is in web and canary: both groups' rules.
        syn(canary, db, 5432, Pass(PASS_POLICY));
        syn(canary, db, 8080, Pass(PASS_POLICY));
        syn(canary, db, 6432, Drop(DROP_POLICY));
        // The primary is in db and db-primary.
        syn(web, primary, 5432, Pass(PASS_POLICY));
        syn(web, primary, 6432, Pass(PASS_POLICY));
        syn(web, primary, 8080, Drop(DROP_POLICY));
        syn(canary, primary, 8080, Pass(PASS_POLICY));
        syn(canary, primary, 6432, Pass(PASS_POLICY));
        syn(db, web, 5432, Drop(DROP_POLICY));
    }
}

const ANY_WORLD: &str = r#"
groups:
  web: [10.0.1.0/24, "fd00:1::/64"]
  db: [10.0.2.0/24, "fd00:2::/64"]
rules:
  - name: world-to-web
    from: world
    to: web
    ports: [80/tcp]
  - name: web-to-anything
    from: web
    to: any
    ports: [443/tcp]
"#;

#[test]
fn any_and_world_peers() {
    let Some(b) = Bench::new("any_and_world_peers", ANY_WORLD) else {
        return;
    };
    for f in [V4, V6] {
        let syn = |src: &str, dst: &str, port: u16, want: Want| {
            let scenario = format!("{src} -> {dst}:{port}");
            b.xdp(
                &scenario,
                &Packet::ip(src, dst).tcp(42000, port, TCP_SYN),
                want,
            );
        };
        syn(f.world, f.web, 80, Pass(PASS_POLICY));
        syn(f.db, f.web, 80, Drop(DROP_POLICY)); // db is not world
        syn(f.web2, f.web, 80, Drop(DROP_POLICY)); // nor is web
        syn(f.world, f.db, 80, Drop(DROP_POLICY));
        syn(f.web, f.world, 443, Pass(PASS_POLICY));
        syn(f.web, f.db, 443, Pass(PASS_POLICY));
        syn(f.web, f.web2, 443, Pass(PASS_POLICY));
        syn(f.db, f.world, 443, Drop(DROP_POLICY));
        syn(f.world, f.web, 443, Drop(DROP_POLICY));
    }
}

fn host_opts(enforce_host: bool) -> CompileOptions {
    CompileOptions {
        host_addrs: vec!["10.0.9.1".parse().unwrap(), "fd00:9::1".parse().unwrap()],
        enforce_host,
        node_cidrs: Vec::new(),
    }
}

fn host_frames() -> Vec<(&'static str, Packet)> {
    vec![
        (
            "world -> host:22",
            Packet::ip("192.0.2.1", "10.0.9.1").tcp(54000, 22, TCP_SYN),
        ),
        (
            "db -> host:10250",
            Packet::ip("10.0.2.7", "10.0.9.1").tcp(54001, 10250, TCP_SYN),
        ),
        (
            "host -> db:9999/udp",
            Packet::ip("10.0.9.1", "10.0.2.7").udp(54002, 9999),
        ),
        (
            "host -> world echo",
            Packet::ip("10.0.9.1", "192.0.2.1").icmp(8, 0, 1),
        ),
        (
            "IPv6 world -> host:22",
            Packet::ip("2001:db8::1", "fd00:9::1").tcp(54003, 22, TCP_SYN),
        ),
        (
            "IPv6 host -> web:8080",
            Packet::ip("fd00:9::1", "fd00:1::5").tcp(54004, 8080, TCP_SYN),
        ),
    ]
}

#[test]
fn host_traffic_passes_unless_enforced() {
    let test = "host_traffic_passes_unless_enforced";
    let Some(mut b) = Bench::with(test, BASE, &small_maps(), &host_opts(false)) else {
        return;
    };
    for (name, p) in host_frames() {
        b.xdp(&format!("not enforced: {name}"), &p, Pass(PASS_POLICY));
    }
    b.tc(
        "not enforced, TC: host -> db:9999/udp",
        &host_frames()[2].1,
        Pass(PASS_ESTABLISHED),
    );
    // The built-in covers the host only.
    b.xdp(
        "web -> db:9999/udp",
        &Packet::ip("10.0.1.5", "10.0.2.7").udp(54005, 9999),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "world -> 10.0.9.2:22",
        &Packet::ip("192.0.2.1", "10.0.9.2").tcp(54006, 22, TCP_SYN),
        Drop(DROP_POLICY),
    );

    b.apply(BASE, &host_opts(true));
    for (i, (name, p)) in host_frames().into_iter().enumerate() {
        // The UDP flow (a lookup, not an opening packet) is tracked from above:
        // re-checked against the enforcing policy, it is revoked. The others
        // open flows and go straight to policy.
        let want = if i == 2 {
            Drop(DROP_REVOKED)
        } else {
            Drop(DROP_POLICY)
        };
        b.xdp(&format!("enforce_host: {name}"), &p, want);
    }
}

#[test]
fn host_enforced_by_policy_setting() {
    let yaml = format!(
        "{BASE}  - name: world-ssh-to-host\n    from: world\n    to: host\n    ports: [22/tcp]\nsettings:\n  enforce-host: true\n"
    );
    let test = "host_enforced_by_policy_setting";
    let Some(b) = Bench::with(test, &yaml, &small_maps(), &host_opts(false)) else {
        return;
    };
    let frames = host_frames();
    b.xdp(frames[0].0, &frames[0].1, Pass(PASS_POLICY));
    b.xdp(frames[4].0, &frames[4].1, Pass(PASS_POLICY));
    for i in [1, 2, 3, 5] {
        b.xdp(frames[i].0, &frames[i].1, Drop(DROP_POLICY));
    }
}

/// `BASE`, plus web allowed to send VXLAN to the node: an operator's rule
/// naming a tunnel port.
const TUNNELS: &str = r#"
groups:
  web: [10.0.1.0/24, "fd00:1::/64"]
  db: [10.0.2.0/24, "fd00:2::/64"]
rules:
  - name: web-to-db
    from: web
    to: db
    ports: [5432/tcp, 53/udp, 3868/sctp, icmp/8, icmpv6/128]
  - name: web-vxlan-to-node
    from: web
    to: host
    ports: [4789/udp]
"#;

/// The node 10.0.9.1 / fd00:9::1 in a cluster whose nodes are 10.0.8.0/24
/// and fd00:8::/64.
fn tunnel_opts() -> CompileOptions {
    CompileOptions {
        node_cidrs: vec![
            "10.0.8.0/24".parse().unwrap(),
            "fd00:8::/64".parse().unwrap(),
        ],
        ..host_opts(false)
    }
}

/// A tunnel packet of each kind the kernel decapsulates, from `src` to `dst`:
/// VXLAN on 4789 and 8472, Geneve, IP-in-IP, IPv6-in-IP, GRE.
fn tunnel_frames(src: &str, dst: &str) -> Vec<(&'static str, Packet)> {
    let p = || Packet::ip(src, dst);
    vec![
        (
            "VXLAN udp/4789",
            p().udp(40000, 4789).payload(&[0x08, 0, 0, 0, 0, 0, 1, 0]),
        ),
        (
            "VXLAN udp/8472",
            p().udp(40001, 8472).payload(&[0x08, 0, 0, 0, 0, 0, 1, 0]),
        ),
        (
            "Geneve udp/6081",
            p().udp(40002, 6081)
                .payload(&[0, 0, 0x65, 0x58, 0, 0, 1, 0]),
        ),
        ("IP-in-IP", p().proto(4).payload(&[0x45; 20])),
        ("IPv6-in-IP", p().proto(41).payload(&[0x60; 40])),
        ("GRE", p().proto(47).payload(&[0, 0, 0x08, 0])),
    ]
}

#[test]
fn host_exemption_stops_short_of_tunnels() {
    let test = "host_exemption_stops_short_of_tunnels";
    let Some(mut b) = Bench::with(test, TUNNELS, &small_maps(), &tunnel_opts()) else {
        return;
    };
    // From the world, and from a pod not named by a rule: dropped.
    for src in ["192.0.2.1", "10.0.2.7"] {
        for (name, p) in tunnel_frames(src, "10.0.9.1") {
            b.xdp(&format!("{src} -> host {name}"), &p, Drop(DROP_POLICY));
        }
    }
    for (name, p) in tunnel_frames("2001:db8::1", "fd00:9::1") {
        b.xdp(&format!("IPv6 world -> host {name}"), &p, Drop(DROP_POLICY));
    }
    // From a node prefix, and from the node itself: the tunnels of the cluster.
    for src in ["10.0.8.20", "10.0.9.1"] {
        for (name, p) in tunnel_frames(src, "10.0.9.1") {
            b.xdp(&format!("node {src} -> host {name}"), &p, Pass(PASS_POLICY));
        }
    }
    for (name, p) in tunnel_frames("fd00:8::20", "fd00:9::1") {
        b.xdp(&format!("IPv6 node -> host {name}"), &p, Pass(PASS_POLICY));
    }
    // The rest of the node's ports still pass from anywhere.
    for (port, sport) in [(4788, 41000), (4790, 41001), (53, 41002), (6082, 41003)] {
        b.xdp(
            &format!("world -> host udp/{port}"),
            &Packet::ip("192.0.2.1", "10.0.9.1").udp(sport, port),
            Pass(PASS_POLICY),
        );
    }
    b.xdp(
        "world -> host ESP",
        &Packet::ip("192.0.2.1", "10.0.9.1").proto(50),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "world -> host tcp/4789",
        &Packet::ip("192.0.2.1", "10.0.9.1").tcp(41004, 4789, TCP_SYN),
        Pass(PASS_POLICY),
    );
    // The operator's rule for web wins on its port, and only there.
    b.xdp(
        "web -> host VXLAN udp/4789 (web-vxlan-to-node)",
        &Packet::ip("10.0.1.5", "10.0.9.1").udp(42000, 4789),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "web -> host VXLAN udp/8472",
        &Packet::ip("10.0.1.5", "10.0.9.1").udp(42001, 8472),
        Drop(DROP_POLICY),
    );
    // Only traffic to the node: the node's own tunnels out still pass.
    b.xdp(
        "host -> world VXLAN",
        &Packet::ip("10.0.9.1", "192.0.2.1").udp(42002, 4789),
        Pass(PASS_POLICY),
    );

    // `--enforce-host`: no built-in rule; only the operator's rule remains.
    b.apply(
        TUNNELS,
        &CompileOptions {
            enforce_host: true,
            ..tunnel_opts()
        },
    );
    b.xdp(
        "enforce_host: node -> host VXLAN",
        &Packet::ip("10.0.8.20", "10.0.9.1").udp(43000, 4789),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "enforce_host: web -> host VXLAN (web-vxlan-to-node)",
        &Packet::ip("10.0.1.5", "10.0.9.1").udp(43001, 4789),
        Pass(PASS_POLICY),
    );
}
