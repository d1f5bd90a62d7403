//! The randomised run over workload identity: a small generated cluster
//! (namespaces x, y, z with random labels; pods with random labels, IPv4 and
//! IPv6 addresses and named container ports), random selector groups and
//! native rules over them, and random NetworkPolicies (podSelector,
//! namespaceSelector, both, matchExpressions, ipBlock with except, ports with
//! endPort and names, policyTypes). The objects and policies are written as
//! files and read by the agent's loader (`load_dir_with_objects`); then the
//! reference (`netpol_tests::reference_k8s`, which resolves every peer from
//! the objects itself), `policy::evaluate` and the datapath (XDP and TC) must
//! agree on random TCP, UDP and SCTP packets between pods, world addresses
//! and the node.
//!
//! Knobs: NETPOL_DIFF_K8S_CASES (default `K8S_CASES`), NETPOL_DIFF_SEED,
//! NETPOL_DIFF_PACKETS; the run also stops starting cases after
//! `K8S_TIME_LIMIT`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use netpol_agent::policy::{compile, evaluate, load_dir_with_objects, CompileOptions, ReadLimits};
use netpol_tests::packet::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use netpol_tests::progrun::{TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS};
use netpol_tests::reference_k8s::{
    Expr, GroupDef, Labels, NetPol, NpPeer, NpPort, NpRule, Op, Peer, Pod, PortRef, Rule, Selector,
    Workloads,
};
use netpol_tests::require_root;

use crate::addrs::{v4, v6};
use crate::harness::Harness;
use crate::packets::Pkt;
use crate::rng::Rng;
use crate::DEFAULT_SEED;

/// Cases per run: about 15 s here (debug build, 2 busy vCPUs).
const K8S_CASES: u64 = 300;
const K8S_PACKETS: u64 = 40;
const K8S_TIME_LIMIT: Duration = Duration::from_secs(40);

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const HOST_V4: u32 = 0x0a00_0901; // 10.0.9.1
const HOST_V6: u128 = 0xfd00_0009 << 96 | 1;
/// Pod addresses: 10.0.0.N and fd00::N.
const POD_V4: u32 = 0x0a00_0000;
const POD_V6: u128 = 0xfd00 << 112;
/// Addresses of no pod: 10.0.1.N and fd00:1::N.
const OUT_V4: u32 = 0x0a00_0100;
const OUT_V6: u128 = (0xfd00 << 112) | (1 << 96);
const PORTS: [u16; 7] = [53, 80, 81, 85, 443, 8080, 9000];

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?}: expected a number")))
}

/// A random label selector over `keys` (each with its possible values).
fn gen_selector(rng: &mut Rng, keys: &[(&str, &[&str])]) -> Selector {
    let mut s = Selector::default();
    let pick = |rng: &mut Rng| {
        let (k, vals) = *rng.pick(keys);
        (k.to_string(), rng.pick(vals).to_string(), vals)
    };
    let r = rng.below(100);
    if (15..70).contains(&r) || r >= 85 {
        let (k, v, _) = pick(rng);
        s.labels.insert(k, v);
    }
    if r >= 55 {
        for _ in 0..rng.range(1, 3) {
            let (key, v, vals) = pick(rng);
            let op = *rng.pick(&[Op::In, Op::NotIn, Op::Exists, Op::DoesNotExist]);
            let values = match op {
                Op::In | Op::NotIn => {
                    let mut vs = vec![v];
                    if rng.chance(40) {
                        let w = rng.pick(vals).to_string();
                        if !vs.contains(&w) {
                            vs.push(w);
                        }
                    }
                    vs
                }
                _ => Vec::new(),
            };
            s.exprs.push(Expr { key, op, values });
        }
    }
    s
}

const POD_KEYS: &[(&str, &[&str])] = &[("app", &["a", "b", "c"]), ("role", &["web", "db"])];
const NS_KEYS: &[(&str, &[&str])] = &[
    ("team", &["red", "blue"]),
    ("tier", &["app"]),
    ("kubernetes.io/metadata.name", &["x", "y", "z"]),
];

fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "TCP",
        PROTO_UDP => "UDP",
        _ => "SCTP",
    }
}

fn rand_proto(rng: &mut Rng) -> u8 {
    *rng.pick(&[PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_SCTP])
}

fn gen_np_peer(rng: &mut Rng) -> NpPeer {
    match rng.below(100) {
        0..=29 => NpPeer::Pods {
            pods: Some(gen_selector(rng, POD_KEYS)),
            namespaces: None,
        },
        30..=54 => NpPeer::Pods {
            pods: None,
            namespaces: Some(gen_selector(rng, NS_KEYS)),
        },
        55..=79 => NpPeer::Pods {
            pods: Some(gen_selector(rng, POD_KEYS)),
            namespaces: Some(gen_selector(rng, NS_KEYS)),
        },
        _ => {
            // Over pod and non-pod addresses alike, with a hole or two.
            let (cidr, holes): (IpNet, Vec<IpNet>) = if rng.chance(70) {
                let len = *rng.pick(&[23u8, 24, 28, 29]);
                let base = if rng.chance(50) { POD_V4 } else { OUT_V4 };
                let cidr = IpNet::new(v4(base), len).unwrap().trunc();
                let holes = (0..rng.below(3))
                    .map(|_| {
                        let a = base + rng.range(1, 9) as u32;
                        IpNet::new(v4(a), *rng.pick(&[30u8, 31, 32]))
                            .unwrap()
                            .trunc()
                    })
                    .collect();
                (cidr, holes)
            } else {
                let base = if rng.chance(50) { POD_V6 } else { OUT_V6 };
                let len = *rng.pick(&[64u8, 124, 125]);
                let cidr = IpNet::new(v6(base), len).unwrap().trunc();
                let holes = (0..rng.below(2))
                    .map(|_| {
                        let a = base + u128::from(rng.range(1, 9));
                        IpNet::new(v6(a), *rng.pick(&[126u8, 127, 128]))
                            .unwrap()
                            .trunc()
                    })
                    .collect();
                (cidr, holes)
            };
            // Kubernetes wants every except strictly inside the cidr.
            let mut except: Vec<IpNet> = holes
                .into_iter()
                .filter(|h: &IpNet| cidr.contains(h) && h.prefix_len() > cidr.prefix_len())
                .collect();
            except.sort();
            except.dedup();
            NpPeer::IpBlock { cidr, except }
        }
    }
}

fn gen_np_port(rng: &mut Rng) -> NpPort {
    let proto = rand_proto(rng);
    let (port, end_port) = match rng.below(100) {
        0..=14 => (None, None),
        15..=49 => (Some(PortRef::Number(*rng.pick(&PORTS))), None),
        50..=69 => {
            let lo = *rng.pick(&PORTS);
            (Some(PortRef::Number(lo)), Some(lo + rng.below(400) as u16))
        }
        _ => (
            Some(PortRef::Name(rng.pick(&["http", "dns", "alt"]).to_string())),
            None,
        ),
    };
    NpPort {
        proto,
        port,
        end_port,
    }
}

fn gen_np_rules(rng: &mut Rng) -> Option<Vec<NpRule>> {
    if rng.chance(25) {
        return None;
    }
    let rules = (0..rng.below(3))
        .map(|_| NpRule {
            peers: rng
                .chance(75)
                .then(|| (0..rng.range(1, 3)).map(|_| gen_np_peer(rng)).collect()),
            ports: rng
                .chance(65)
                .then(|| (0..rng.range(1, 3)).map(|_| gen_np_port(rng)).collect()),
        })
        .collect();
    Some(rules)
}

fn gen_netpol(rng: &mut Rng, i: usize) -> NetPol {
    let types = match rng.below(4) {
        0 => None,
        1 => Some((true, false)),
        2 => Some((false, true)),
        _ => Some((true, true)),
    };
    // Rules of a type `policyTypes` leaves out are refused by the reader
    // (Kubernetes would ignore them silently), so none are generated.
    let (ingress, egress) = (gen_np_rules(rng), gen_np_rules(rng));
    let (i_ok, e_ok) = types.unwrap_or((true, true));
    NetPol {
        namespace: rng.pick(&NAMESPACES).to_string(),
        name: format!("np{i}"),
        pod_selector: gen_selector(rng, POD_KEYS),
        types,
        ingress: ingress.filter(|_| i_ok),
        egress: egress.filter(|_| e_ok),
    }
}

fn gen_peer(rng: &mut Rng, groups: &[(String, GroupDef)]) -> Peer {
    match rng.below(100) {
        0..=69 if !groups.is_empty() => Peer::Group(rng.pick(groups).0.clone()),
        0..=79 => Peer::World,
        80..=89 => Peer::Any,
        _ => Peer::Host,
    }
}

/// A cluster, its native policy and NetworkPolicies.
pub fn gen_workloads(rng: &mut Rng) -> Workloads {
    let mut w = Workloads {
        host: vec![v4(HOST_V4), v6(HOST_V6)],
        ..Workloads::default()
    };
    for ns in NAMESPACES {
        let mut l = Labels::new();
        if rng.chance(60) {
            l.insert("team".into(), rng.pick(&["red", "blue"]).to_string());
        }
        if rng.chance(50) {
            l.insert("tier".into(), "app".into());
        }
        w.namespaces.insert(ns.to_string(), l);
    }
    for i in 0..rng.range(3, 8) {
        let mut l = Labels::new();
        if rng.chance(80) {
            l.insert("app".into(), rng.pick(&["a", "b", "c"]).to_string());
        }
        if rng.chance(50) {
            l.insert("role".into(), rng.pick(&["web", "db"]).to_string());
        }
        let n = i as u32 + 1;
        let mut ips = vec![v4(POD_V4 + n)];
        if rng.chance(70) {
            ips.push(v6(POD_V6 + u128::from(n)));
        }
        let mut ports = Vec::new();
        if rng.chance(60) {
            ports.push(("http".to_string(), PROTO_TCP, *rng.pick(&[80u16, 8080])));
        }
        if rng.chance(40) {
            ports.push(("dns".to_string(), PROTO_UDP, 53));
        }
        if rng.chance(40) {
            ports.push(("alt".to_string(), rand_proto(rng), 81));
        }
        w.pods.push(Pod {
            namespace: rng.pick(&NAMESPACES).to_string(),
            name: format!("p{i}"),
            labels: l,
            ips,
            ports,
        });
    }
    for i in 0..rng.below(4) {
        let def = match rng.below(100) {
            0..=34 => GroupDef::Pods {
                namespace: Ok(rng.pick(&NAMESPACES).to_string()),
                pods: rng.chance(60).then(|| gen_selector(rng, POD_KEYS)),
            },
            35..=79 => GroupDef::Pods {
                namespace: Err(gen_selector(rng, NS_KEYS)),
                pods: rng.chance(60).then(|| gen_selector(rng, POD_KEYS)),
            },
            _ => GroupDef::Cidrs {
                cidrs: vec![IpNet::new(v4(OUT_V4), 28).unwrap()],
                except: if rng.chance(50) {
                    vec![IpNet::new(v4(OUT_V4 + 4), 30).unwrap()]
                } else {
                    Vec::new()
                },
            },
        };
        w.groups.push((format!("g{i}"), def));
    }
    if rng.chance(40) {
        for i in 0..rng.range(1, 3) {
            let within = rng.chance(15) && !w.groups.is_empty();
            let from: Vec<Peer> = (0..rng.range(1, 3))
                .map(|_| gen_peer(rng, &w.groups))
                .collect();
            let (from, to, ports) = if within {
                let g = Peer::Group(rng.pick(&w.groups).0.clone());
                (vec![g], Vec::new(), Vec::new())
            } else {
                let to = (0..rng.range(1, 3))
                    .map(|_| gen_peer(rng, &w.groups))
                    .collect();
                let ports = (0..rng.below(3))
                    .map(|_| {
                        let p = rand_proto(rng);
                        let range = match rng.below(3) {
                            0 => None,
                            1 => {
                                let n = *rng.pick(&PORTS);
                                Some((n, n))
                            }
                            _ => {
                                let n = *rng.pick(&PORTS);
                                Some((n, n + rng.below(200) as u16))
                            }
                        };
                        (p, range)
                    })
                    .collect();
                (from, to, ports)
            };
            w.rules.push(Rule {
                name: format!("r{i}"),
                from,
                to,
                ports,
                within,
            });
        }
    }
    let nps = if w.rules.is_empty() {
        rng.range(1, 4)
    } else {
        rng.below(3)
    };
    for i in 0..nps {
        w.netpols.push(gen_netpol(rng, i as usize));
    }
    w
}

fn selector_yaml(s: &Selector) -> String {
    let mut parts = Vec::new();
    if !s.labels.is_empty() {
        let l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        parts.push(format!("matchLabels: {{{}}}", l.join(", ")));
    }
    if !s.exprs.is_empty() {
        let e: Vec<String> = s
            .exprs
            .iter()
            .map(|e| {
                let op = match e.op {
                    Op::In => "In",
                    Op::NotIn => "NotIn",
                    Op::Exists => "Exists",
                    Op::DoesNotExist => "DoesNotExist",
                };
                if e.values.is_empty() {
                    format!("{{key: {}, operator: {op}}}", e.key)
                } else {
                    format!(
                        "{{key: {}, operator: {op}, values: [{}]}}",
                        e.key,
                        e.values.join(", ")
                    )
                }
            })
            .collect();
        parts.push(format!("matchExpressions: [{}]", e.join(", ")));
    }
    format!("{{{}}}", parts.join(", "))
}

fn peer_yaml(p: &Peer) -> String {
    match p {
        Peer::Any => "any".into(),
        Peer::World => "world".into(),
        Peer::Host => "host".into(),
        Peer::Group(g) => g.clone(),
    }
}

/// The native policy file, or `None` when there is nothing native.
fn policy_yaml(w: &Workloads) -> Option<String> {
    if w.groups.is_empty() && w.rules.is_empty() {
        return None;
    }
    let mut y = String::new();
    if !w.groups.is_empty() {
        y += "groups:\n";
        for (name, def) in &w.groups {
            match def {
                GroupDef::Cidrs { cidrs, except } => {
                    let c: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                    let e: Vec<String> = except.iter().map(ToString::to_string).collect();
                    writeln!(
                        y,
                        "  {name}: {{cidrs: [{}], except: [{}]}}",
                        c.join(", "),
                        e.join(", ")
                    )
                    .unwrap();
                }
                GroupDef::Pods { namespace, pods } => {
                    let mut parts = vec![match namespace {
                        Ok(n) => format!("namespace: {n}"),
                        Err(s) => format!("namespaces: {}", selector_yaml(s)),
                    }];
                    if let Some(p) = pods {
                        parts.push(format!("pods: {}", selector_yaml(p)));
                    }
                    writeln!(y, "  {name}: {{{}}}", parts.join(", ")).unwrap();
                }
            }
        }
    }
    if !w.rules.is_empty() {
        y += "rules:\n";
        for r in &w.rules {
            writeln!(y, "  - name: {}", r.name).unwrap();
            let peers = |ps: &[Peer]| ps.iter().map(peer_yaml).collect::<Vec<_>>().join(", ");
            if r.within {
                writeln!(y, "    within: [{}]", peers(&r.from)).unwrap();
                continue;
            }
            writeln!(y, "    from: [{}]", peers(&r.from)).unwrap();
            writeln!(y, "    to: [{}]", peers(&r.to)).unwrap();
            if !r.ports.is_empty() {
                let ps: Vec<String> = r
                    .ports
                    .iter()
                    .map(|(p, range)| {
                        let n = proto_name(*p).to_lowercase();
                        match range {
                            None => n,
                            Some((lo, hi)) if lo == hi => format!("{lo}/{n}"),
                            Some((lo, hi)) => format!("{lo}-{hi}/{n}"),
                        }
                    })
                    .collect();
                writeln!(y, "    ports: [{}]", ps.join(", ")).unwrap();
            }
        }
    }
    Some(y)
}

fn np_rules_yaml(y: &mut String, key: &str, peer_key: &str, rules: &[NpRule]) {
    if rules.is_empty() {
        writeln!(y, "    {key}: []").unwrap();
        return;
    }
    writeln!(y, "    {key}:").unwrap();
    for r in rules {
        let mut first = true;
        let mut item = |y: &mut String, line: String| {
            let lead = if first { "    - " } else { "      " };
            first = false;
            writeln!(y, "{lead}{line}").unwrap();
        };
        if let Some(peers) = &r.peers {
            let ps: Vec<String> = peers
                .iter()
                .map(|p| match p {
                    NpPeer::IpBlock { cidr, except } => {
                        let e: Vec<String> = except.iter().map(ToString::to_string).collect();
                        format!("{{ipBlock: {{cidr: \"{cidr}\", except: [{}]}}}}", {
                            e.iter()
                                .map(|x| format!("\"{x}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                    }
                    NpPeer::Pods { pods, namespaces } => {
                        let mut parts = Vec::new();
                        if let Some(s) = pods {
                            parts.push(format!("podSelector: {}", selector_yaml(s)));
                        }
                        if let Some(s) = namespaces {
                            parts.push(format!("namespaceSelector: {}", selector_yaml(s)));
                        }
                        format!("{{{}}}", parts.join(", "))
                    }
                })
                .collect();
            item(y, format!("{peer_key}: [{}]", ps.join(", ")));
        }
        if let Some(ports) = &r.ports {
            let ps: Vec<String> = ports
                .iter()
                .map(|p| {
                    let mut parts = vec![format!("protocol: {}", proto_name(p.proto))];
                    match &p.port {
                        Some(PortRef::Number(n)) => parts.push(format!("port: {n}")),
                        Some(PortRef::Name(n)) => parts.push(format!("port: {n}")),
                        None => {}
                    }
                    if let Some(e) = p.end_port {
                        parts.push(format!("endPort: {e}"));
                    }
                    format!("{{{}}}", parts.join(", "))
                })
                .collect();
            item(y, format!("ports: [{}]", ps.join(", ")));
        }
        if first {
            y.push_str("    - {}\n");
        }
    }
}

/// Namespaces, pods and NetworkPolicies as one multi-document file.
fn objects_yaml(w: &Workloads) -> String {
    let mut y = String::new();
    for (ns, l) in &w.namespaces {
        let l: Vec<String> = l.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        writeln!(
            y,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{{}}}}}",
            l.join(", ")
        )
        .unwrap();
    }
    for p in &w.pods {
        let l: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|(n, proto, port)| {
                format!(
                    "{{name: {n}, containerPort: {port}, protocol: {}}}",
                    proto_name(*proto)
                )
            })
            .collect();
        let ips: Vec<String> = p.ips.iter().map(|a| format!("{{ip: \"{a}\"}}")).collect();
        writeln!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}, labels: {{{}}}}}\n\
             spec: {{nodeName: node-a, containers: [{{name: main, ports: [{}]}}]}}\n\
             status: {{phase: Running, podIP: \"{}\", podIPs: [{}]}}",
            p.name,
            p.namespace,
            l.join(", "),
            ports.join(", "),
            p.ips[0],
            ips.join(", ")
        )
        .unwrap();
    }
    for np in &w.netpols {
        writeln!(
            y,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {}, namespace: {}}}\nspec:\n  podSelector: {}",
            np.name,
            np.namespace,
            selector_yaml(&np.pod_selector)
        )
        .unwrap();
        if let Some((i, e)) = np.types {
            let mut t = Vec::new();
            if i {
                t.push("Ingress");
            }
            if e {
                t.push("Egress");
            }
            writeln!(y, "  policyTypes: [{}]", t.join(", ")).unwrap();
        }
        // np_rules_yaml writes keys four spaces deep; under spec they sit at two.
        let mut rules = String::new();
        if let Some(r) = &np.ingress {
            np_rules_yaml(&mut rules, "ingress", "from", r);
        }
        if let Some(r) = &np.egress {
            np_rules_yaml(&mut rules, "egress", "to", r);
        }
        for line in rules.lines() {
            writeln!(y, "{}", &line[2..]).unwrap();
        }
    }
    y
}

/// A packet end: mostly pods, some addresses of no pod, a few of the node.
fn gen_end(rng: &mut Rng, w: &Workloads, is_v6: bool) -> IpAddr {
    let r = rng.below(100);
    if r < 65 {
        let fam: Vec<IpAddr> = w
            .pods
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .filter(|a| a.is_ipv6() == is_v6)
            .collect();
        if !fam.is_empty() {
            return *rng.pick(&fam);
        }
    }
    if r < 92 {
        let n = rng.range(1, 20);
        return if is_v6 {
            v6(OUT_V6 + u128::from(n))
        } else {
            v4(OUT_V4 + n as u32)
        };
    }
    if is_v6 {
        v6(HOST_V6)
    } else {
        v4(HOST_V4)
    }
}

fn gen_packet(rng: &mut Rng, w: &Workloads) -> Pkt {
    let is_v6 = rng.chance(30);
    let port = if rng.chance(85) {
        *rng.pick(&PORTS)
    } else {
        rng.range(1, 65536) as u16
    };
    Pkt {
        src: gen_end(rng, w, is_v6),
        dst: gen_end(rng, w, is_v6),
        proto: rand_proto(rng),
        port,
        sport: rng.range(1024, 65536) as u16,
    }
}

/// A scratch directory holding `policy/` and `objects/`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let d = std::env::temp_dir().join(format!("netpol-diff-k8s-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("policy")).unwrap();
        std::fs::create_dir_all(d.join("objects")).unwrap();
        Scratch(d)
    }

    fn write(&self, w: &Workloads) -> (Option<String>, String) {
        let policy = policy_yaml(w);
        let file = self.0.join("policy/policy.yaml");
        match &policy {
            Some(text) => std::fs::write(&file, text).unwrap(),
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
        let objects = objects_yaml(w);
        std::fs::write(self.0.join("objects/objects.yaml"), &objects).unwrap();
        (policy, objects)
    }

    fn dir(&self, sub: &str) -> PathBuf {
        self.0.join(sub)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn describe_case(policy: &Option<String>, objects: &str) -> String {
    format!(
        "--- policy/policy.yaml ---\n{}\n--- objects/objects.yaml ---\n{objects}",
        policy.as_deref().unwrap_or("(no native policy)\n")
    )
}

fn load(
    dir: &Path,
    objects: &Path,
    w: &Workloads,
) -> Result<netpol_agent::policy::Compiled, String> {
    let (policy, _) =
        load_dir_with_objects(dir, objects, &ReadLimits::default()).map_err(|e| e.to_string())?;
    let opts = CompileOptions {
        host_addrs: w.host.clone(),
        enforce_host: false,
        node_cidrs: Vec::new(),
    };
    compile(&policy, &opts).map_err(|e| e.to_string())
}

#[test]
fn workloads_vs_datapath() {
    if !require_root() {
        return;
    }
    let seed = env_u64("NETPOL_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("NETPOL_DIFF_K8S_CASES").unwrap_or(K8S_CASES);
    let packets = env_u64("NETPOL_DIFF_PACKETS").unwrap_or(K8S_PACKETS);
    let started = Instant::now();
    let scratch = Scratch::new();
    let mut h = Harness::new();
    let (mut done, mut sent, mut allowed) = (0u64, 0u64, 0u64);
    let mut by_kind: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for case in 0..cases {
        if started.elapsed() > K8S_TIME_LIMIT {
            eprintln!("differential (workloads): time limit reached after {done} cases");
            break;
        }
        // Streams of their own, apart from the CIDR run's cases.
        let mut rng = Rng::for_case(seed ^ 0x6b38_7300, case);
        let w = gen_workloads(&mut rng);
        let (policy, objects) = scratch.write(&w);
        let compiled =
            load(&scratch.dir("policy"), &scratch.dir("objects"), &w).unwrap_or_else(|e| {
                panic!(
                    "differential (workloads): seed {seed:#x} case {case}: generated objects and \
                     policies refused:\n{e}\n{}",
                    describe_case(&policy, &objects)
                )
            });
        h.dp.apply(&compiled).unwrap_or_else(|e| {
            panic!(
                "apply: {:#}\n{}",
                anyhow::Error::from(e),
                describe_case(&policy, &objects)
            )
        });
        done += 1;
        for _ in 0..packets {
            let mut p = gen_packet(&mut rng, &w);
            if !h.freshen(&mut rng, &mut p) {
                continue;
            }
            let want = w.allows(p.src, p.dst, p.proto, p.port);
            let eval = evaluate(&compiled, p.src, p.dst, p.proto, p.port);
            let frame = p.frame();
            let (xdp, _) = h.dp.xdp_test_run(&frame, 1).expect("XDP test run");
            let tc = h.dp.tc_test_run(&frame).expect("TC test run");
            let xdp_pass = match xdp {
                XDP_PASS => Some(true),
                XDP_DROP => Some(false),
                _ => None,
            };
            let tc_pass = match tc {
                TC_ACT_UNSPEC => Some(true),
                TC_ACT_SHOT => Some(false),
                _ => None,
            };
            sent += 1;
            allowed += u64::from(want);
            let kind = match (w.pod_at(p.src).is_some(), w.pod_at(p.dst).is_some()) {
                _ if w.host.contains(&p.src) || w.host.contains(&p.dst) => "node",
                (true, true) => "pod-pod",
                (true, false) => "pod-other",
                (false, true) => "other-pod",
                (false, false) => "other-other",
            };
            let k = by_kind.entry(kind).or_default();
            k.0 += 1;
            k.1 += u64::from(want);
            if eval.is_some() != want || xdp_pass != Some(want) || tc_pass != Some(want) {
                let rule = eval
                    .and_then(|id| compiled.rule_name(id).map(str::to_owned))
                    .map_or("drop".to_string(), |n| format!("allow ({n})"));
                panic!(
                    "differential (workloads): seed {seed:#x} case {case}: the judges disagree on \
                     {}\n  reference:         {}\n  policy::evaluate:  {rule}\n  datapath XDP:      \
                     {xdp}\n  datapath TC:       {tc}\nsource pod: {:?}\ndestination pod: {:?}\n\
                     Replay: NETPOL_DIFF_SEED={seed:#x} NETPOL_DIFF_K8S_CASES={}\n{}",
                    p.describe(),
                    if want { "allow" } else { "drop" },
                    w.pod_at(p.src).map(|p| format!("{}/{} {:?}", p.namespace, p.name, p.labels)),
                    w.pod_at(p.dst).map(|p| format!("{}/{} {:?} ports {:?}", p.namespace, p.name, p.labels, p.ports)),
                    case + 1,
                    describe_case(&policy, &objects)
                );
            }
        }
    }
    eprintln!(
        "differential (workloads): NETPOL_DIFF_SEED={seed:#x}: {done} clusters, {sent} packets \
         ({allowed} allowed) in {:.1?}; per kind (sent, allowed): {by_kind:?}",
        started.elapsed()
    );
    assert!(done > 0, "no case ran");
    for kind in ["pod-pod", "pod-other", "other-pod"] {
        let (n, a) = by_kind.get(kind).copied().unwrap_or_default();
        assert!(
            a > 0 && a < n,
            "{kind} packets: {n} sent, {a} allowed: the generator should produce both verdicts"
        );
    }
}

#[test]
fn generated_objects_reach_the_reference_as_written() {
    // The generator's YAML, read back by the agent's object reader, names the
    // same pods and addresses the reference judges with.
    let mut rng = Rng::for_case(DEFAULT_SEED, 7);
    for _ in 0..20 {
        let w = gen_workloads(&mut rng);
        let (cluster, netpols) =
            netpol_agent::policy::objects_from_str("objects.yaml", &objects_yaml(&w))
                .unwrap_or_else(|e| panic!("{e}\n{}", objects_yaml(&w)));
        assert_eq!(cluster.pods.len(), w.pods.len());
        assert_eq!(netpols.is_empty(), w.netpols.is_empty());
        for p in &w.pods {
            let got = cluster.pod(&p.namespace, &p.name).expect("pod read");
            assert_eq!(got.ips, p.ips);
            assert_eq!(got.labels, p.labels);
        }
        if let Some(text) = policy_yaml(&w) {
            netpol_agent::policy::parse_str("policy.yaml", &text)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }
}
