//! Regressions and fixed examples: one packet against one policy, in a
//! datapath of its own.

use std::net::IpAddr;

use ipnet::IpNet;

use netpol_agent::policy::{compile, CompileOptions, Policy};
use netpol_tests::require_root;

use crate::judges::{apply_all, fresh_datapath, observe, parse_files, strip_origins, Prepared};
use crate::packets::Pkt;
use crate::report::files_text;

/// One packet against one policy, in a datapath of its own: the reference, the
/// compiled-map evaluator and the datapath (XDP and TC) must all say
/// `want_pass`, and a conntrack entry's rule must be the one `evaluate` names.
/// `packet` is (src, dst, protocol, port), with the port as `Pkt::port`
/// (ICMP: `type << 8 | code`; protocols without ports: 0).
pub fn check_packet(
    files: &[(&str, &str)],
    host: &[&str],
    enforce_host: bool,
    packet: (&str, &str, u8, u16),
    want_pass: bool,
) {
    check_packet_after(&[], files, host, enforce_host, packet, want_pass);
}

/// `check_packet` with node prefixes (`CompileOptions::node_cidrs`).
pub fn check_packet_nodes(
    files: &[(&str, &str)],
    host: &[&str],
    nodes: &[&str],
    enforce_host: bool,
    packet: (&str, &str, u8, u16),
    want_pass: bool,
) {
    check_packet_after_nodes(&[], files, host, nodes, enforce_host, packet, want_pass);
}

/// `check_packet` after the policies of `history` were applied, in order, to
/// the same datapath (each compiled with the same host options).
pub fn check_packet_after(
    history: &[&[(&str, &str)]],
    files: &[(&str, &str)],
    host: &[&str],
    enforce_host: bool,
    packet: (&str, &str, u8, u16),
    want_pass: bool,
) {
    check_packet_after_nodes(history, files, host, &[], enforce_host, packet, want_pass);
}

/// `check_packet_after` with node prefixes.
pub fn check_packet_after_nodes(
    history: &[&[(&str, &str)]],
    files: &[(&str, &str)],
    host: &[&str],
    nodes: &[&str],
    enforce_host: bool,
    packet: (&str, &str, u8, u16),
    want_pass: bool,
) {
    if !require_root() {
        return;
    }
    let owned = |files: &[(&str, &str)]| -> Vec<(String, String)> {
        files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    let load = |files: &[(String, String)]| {
        strip_origins(parse_files(files).unwrap_or_else(|e| panic!("policy does not load:\n{e}")))
    };
    let earlier: Vec<Policy> = history.iter().map(|f| load(&owned(f))).collect();
    let files = owned(files);
    let policy = load(&files);
    let host: Vec<IpAddr> = host
        .iter()
        .map(|a| a.parse().expect("host address"))
        .collect();
    let nodes: Vec<IpNet> = nodes
        .iter()
        .map(|n| n.parse().expect("node prefix"))
        .collect();
    let opts = CompileOptions {
        host_addrs: host.clone(),
        enforce_host,
        node_cidrs: nodes.clone(),
    };
    let compiled = compile(&policy, &opts).unwrap_or_else(|e| panic!("compile: {e}"));
    let prep = Prepared {
        files,
        policy,
        compiled,
    };
    let mut dp = fresh_datapath();
    apply_all(&mut dp, &earlier, &opts, &prep);
    let (src, dst, proto, port) = packet;
    let pkt = Pkt {
        src: src.parse().expect("src"),
        dst: dst.parse().expect("dst"),
        proto,
        port,
        sport: 40000,
    };
    let obs = observe(&mut dp, &prep, &host, &nodes, enforce_host, &pkt);
    let failed = obs.failures();
    assert!(
        failed.is_empty() && obs.passes() == want_pass,
        "{}: want {}; failed checks {failed:?}\n{}\n{}",
        pkt.describe(),
        if want_pass { "pass" } else { "drop" },
        obs.report(&prep.compiled),
        files_text(&prep.files),
    );
}

const EXAMPLE: &str = r#"
groups:
  svc-ledger: [10.0.1.0/24, "fd00:0:1::/64"]
  aiven:
    cidrs: [10.1.0.0/16]
    except: [10.1.3.0/24]
rules:
  - name: ledger-to-aiven
    from: svc-ledger
    to: aiven
    ports: [5432/tcp, 5400-5499/udp, icmp/8]
  - name: intra
    within: [svc-ledger]
  - name: world-in
    from: world
    to: [10.0.1.0/26]
    ports: ["47", icmpv6/128]
"#;

#[test]
fn fixed_examples() {
    let f = &[("example.yaml", EXAMPLE)];
    let host = &["10.0.1.1", "fd00:0:1::1"];
    check_packet(f, host, false, ("10.0.1.5", "10.1.0.9", 6, 5432), true);
    check_packet(f, host, false, ("10.0.1.5", "10.1.3.9", 6, 5432), false);
    check_packet(f, host, false, ("10.0.1.5", "10.1.0.9", 17, 5499), true);
    check_packet(f, host, false, ("10.0.1.5", "10.1.0.9", 17, 5500), false);
    check_packet(f, host, false, ("10.0.1.5", "10.1.0.9", 1, 0x0800), true);
    check_packet(f, host, false, ("10.0.1.5", "10.1.0.9", 1, 0x0d00), false);
    check_packet(f, host, false, ("10.0.1.5", "10.0.1.200", 132, 9), true);
    check_packet(f, host, false, ("10.1.3.9", "10.0.1.7", 47, 0), true);
    check_packet(f, host, false, ("10.1.0.9", "10.0.1.7", 47, 0), false);
    check_packet(f, host, false, ("10.1.0.9", "10.0.1.1", 6, 22), true);
    check_packet(f, host, true, ("10.1.0.9", "10.0.1.1", 6, 22), false);
    check_packet(
        f,
        host,
        false,
        ("2001:db8::1", "fd00:0:1::1", 58, 0x8000),
        true,
    );
    check_packet(
        f,
        host,
        false,
        ("fd00:0:1::9", "fd00:0:1::1:2", 17, 53),
        true,
    );
    check_packet(f, host, true, ("fd00:0:1::1", "2001:db8::1", 17, 53), false);
    // Neighbour discovery and MLD are judged by link rules alone: these
    // frames have the builder's hop limit (64) and a global source, so they
    // were routed, and are dropped whatever the policy; other ICMPv6 follows
    // the policy.
    check_packet(
        f,
        host,
        true,
        ("2001:db8::1", "fd00:0:2::1", 58, 0x8700),
        false,
    );
    check_packet(
        f,
        host,
        true,
        ("2001:db8::1", "ff02::16", 58, 0x8f00),
        false,
    );
    check_packet(
        f,
        host,
        true,
        ("2001:db8::1", "fd00:0:2::1", 58, 0x8e00),
        false,
    );
}

/// The host exemption stops short of tunnels: VXLAN, Geneve, IP-in-IP and
/// GRE reach the node only from `nodes`, or by a rule naming them.
const TUNNELS: &str = r#"
groups:
  partner: [198.51.100.0/24]
rules:
  - name: partner-vxlan
    from: partner
    to: host
    ports: [4789/udp]
"#;

#[test]
fn tunnels_to_the_node_only_from_nodes() {
    let files = [("p.yaml", TUNNELS)];
    let (host, nodes) = (["10.9.9.9", "fd00::9"], ["10.8.0.0/16"]);
    for (proto, port) in [(17, 4789), (17, 8472), (17, 6081), (4, 0), (41, 0), (47, 0)] {
        let check = |src, want| {
            check_packet_nodes(
                &files,
                &host,
                &nodes,
                false,
                (src, "10.9.9.9", proto, port),
                want,
            )
        };
        check("203.0.113.1", false);
        check("10.8.1.2", true);
    }
    let check = |src, proto, port, want| {
        check_packet_nodes(
            &files,
            &host,
            &nodes,
            false,
            (src, "10.9.9.9", proto, port),
            want,
        )
    };
    check("198.51.100.7", 17, 4789, true);
    check("198.51.100.7", 17, 8472, false);
    check("203.0.113.1", 17, 4790, true);
    check("203.0.113.1", 17, 53, true);
}
