//! `netpol-agent explain`: whether the policy allows a packet that opens a
//! flow, with the identities of both ends and every rule that allows it, or
//! "default deny" and the rules that nearly matched (saying which part failed).
//! Needs no privileges or kernel: it reads the files as `check` does.
use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::Context as _;
use serde::Serialize;

use super::{check, output};
use crate::{
    cli::{Endpoint, ExplainArgs, UsageError},
    policy::{self, Cluster, CompileOptions, Explanation, Packet, Part, RuleCheck, Side},
};

/// Rules listed as near misses at most; the rest are counted.
const MAX_NEAR: usize = 10;

/// Prints the explanation; `Ok(true)` when the packet is allowed.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<bool> {
    // An answer about a file `run` would not read would mislead.
    check::readable_by_run(&args.policy_dir)?;
    let (policy, cluster) = check::load(
        &args.policy_dir,
        args.kube_objects.as_deref(),
        &args.read.limits(),
    )?;
    let (src, dst) = addresses(&args.src, &args.dst, &cluster)?;
    if src.is_ipv4() != dst.is_ipv4() {
        let msg = format!("{src} and {dst} are of different address families: a packet has one");
        return Err(UsageError(msg).into());
    }
    let opts = CompileOptions {
        host_addrs: args.host_addr.clone(),
        enforce_host: args.enforce_host,
        node_cidrs: args.node_cidr.clone(),
    };
    let compiled = policy::compile(&policy, &opts).context("compiling")?;
    let (proto, port) = args.target;
    let packet = Packet {
        src,
        dst,
        proto,
        port,
    };
    let e = policy::explain(&policy, &compiled, &opts, &packet);
    let doc = ExplainDoc::new(&e, &compiled);
    print!(
        "{}",
        output::render(args.output.format(), &doc, |_| render(&e, &compiled))?
    );
    if !e.agrees() {
        anyhow::bail!(
            "bug: the rule-by-rule verdict and the compiled maps disagree (maps: {:?}); please report it with the policy",
            e.datapath_rule
        );
    }
    Ok(e.allowed())
}

/// What `explain -o json|yaml` prints: the verdict, both ends, and the
/// rules that allow the packet or, when none does, the nearest ones (every
/// one, where the table stops at ten).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExplainDoc {
    /// `allowed` or `denied`.
    pub verdict: String,
    pub packet: PacketDoc,
    pub source: SideDoc,
    pub destination: SideDoc,
    /// Every rule that allows the packet, in rule id order.
    pub allowing: Vec<RuleDoc>,
    /// The rule the datapath counts the flow under (its most specific entry).
    pub datapath_rule: Option<String>,
    /// When denied by an entry carved out of a built-in rule: that rule and
    /// why, `builtin:host-ingress (encapsulation only from nodes)`.
    pub refused_by: Option<String>,
    /// When denied: the rules that failed on the fewest parts, those that
    /// allow the packet's protocol first.
    pub near_misses: Vec<NearMissDoc>,
    /// Set when the datapath does not judge such a packet by the rules (an
    /// ICMP error, IPv6 neighbour discovery): the verdict above is what the
    /// rules alone would say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketDoc {
    pub src: String,
    pub dst: String,
    /// The IP protocol number.
    pub protocol: u8,
    /// `tcp/443`, `icmp/3:4`, `47`: as `explain` takes it.
    pub target: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SideDoc {
    pub address: String,
    /// `None`: in no group the policy knows.
    pub identity: Option<u32>,
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleDoc {
    pub id: u32,
    pub name: String,
    pub summary: String,
    /// Added by the agent: the node's own traffic passes unless --enforce-host.
    pub builtin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NearMissDoc {
    #[serde(flatten)]
    pub rule: RuleDoc,
    /// The parts that failed: `from`, `to`, `ports`, `within`.
    pub failed: Vec<String>,
    /// One line per failed part saying what did not match.
    pub why: Vec<String>,
}

impl ExplainDoc {
    pub fn new(e: &Explanation, compiled: &policy::Compiled) -> Self {
        let p = &e.packet;
        let side = |s: &Side| SideDoc {
            address: s.addr.to_string(),
            identity: s.identity.as_ref().map(|i| i.id),
            groups: s
                .identity
                .as_ref()
                .map_or_else(Vec::new, |i| i.groups.to_vec()),
        };
        let rule = |r: &RuleCheck| RuleDoc {
            id: r.id,
            name: r.rule.name.clone(),
            summary: r.rule.summary(),
            builtin: r.is_builtin(),
            origin: r.rule.origin.as_ref().map(|o| o.rule.to_string()),
        };
        let part = |part: &Part| {
            match part {
                Part::From => "from",
                Part::To => "to",
                Part::Ports => "ports",
                Part::Within => "within",
                Part::Encap => "encapsulation",
            }
            .to_string()
        };
        Self {
            verdict: if e.allowed() { "allowed" } else { "denied" }.into(),
            packet: PacketDoc {
                src: p.src.to_string(),
                dst: p.dst.to_string(),
                protocol: p.proto,
                target: policy::format_target(p.proto, p.port),
            },
            source: side(&e.src),
            destination: side(&e.dst),
            note: policy::judged_without_rules(p.proto, p.port).map(str::to_string),
            allowing: e.allowing.iter().map(rule).collect(),
            datapath_rule: e
                .datapath_rule
                .and_then(|id| compiled.rule_name(id))
                .map(str::to_string),
            refused_by: refusal(e, compiled),
            near_misses: e
                .near
                .iter()
                .map(|r| NearMissDoc {
                    rule: rule(r),
                    failed: r.failed.iter().map(part).collect(),
                    why: r.why(p),
                })
                .collect(),
        }
    }
}

/// The addresses of both ends: a pod stands for its address of the family
/// both ends have (IPv4 first).
fn addresses(
    src: &Endpoint,
    dst: &Endpoint,
    cluster: &Cluster,
) -> anyhow::Result<(IpAddr, IpAddr)> {
    let ips = |e: &Endpoint| -> anyhow::Result<Vec<IpAddr>> {
        match e {
            Endpoint::Addr(a) => Ok(vec![*a]),
            Endpoint::Pod { namespace, name } => {
                let Some(pod) = cluster.pod(namespace, name) else {
                    let hint = if cluster.pods.is_empty() {
                        " (give the Kubernetes objects with --kube-objects DIR)"
                    } else {
                        ""
                    };
                    return Err(
                        UsageError(format!("no pod {e} in the Kubernetes objects{hint}")).into(),
                    );
                };
                if pod.ips.is_empty() {
                    let why = if pod.host_network {
                        "it uses the host network: give the node's address"
                    } else {
                        "it has no address (not running)"
                    };
                    return Err(UsageError(format!("pod {e}: {why}")).into());
                }
                Ok(pod.ips.clone())
            }
        }
    };
    let (s, d) = (ips(src)?, ips(dst)?);
    for v4 in [true, false] {
        let pick = |l: &[IpAddr]| l.iter().copied().find(|a| a.is_ipv4() == v4);
        if let (Some(a), Some(b)) = (pick(&s), pick(&d)) {
            return Ok((a, b));
        }
    }
    Ok((s[0], d[0]))
}

/// `builtin:host-ingress (encapsulation only from nodes)` when a deny entry
/// carved out of that rule refuses the packet.
fn refusal(e: &Explanation, compiled: &policy::Compiled) -> Option<String> {
    let name = e.refused_by.and_then(|id| compiled.rule_name(id))?;
    Some(if name == policy::HOST_INGRESS_RULE {
        format!("{name} ({})", policy::ENCAP_REFUSAL)
    } else {
        name.to_string()
    })
}

/// The text `explain` prints.
pub fn render(e: &Explanation, compiled: &policy::Compiled) -> String {
    let p = &e.packet;
    let target = policy::format_target(p.proto, p.port);
    let mut out = String::new();
    let refused = refusal(e, compiled);
    let verdict = match &refused {
        _ if e.allowed() => "allowed".to_string(),
        Some(by) => format!("denied by {by}"),
        None => "denied (default deny)".to_string(),
    };
    let _ = writeln!(out, "{verdict}: {} -> {} {target}", p.src, p.dst);
    let _ = writeln!(out, "  source       {}", side(&e.src));
    let _ = writeln!(out, "  destination  {}", side(&e.dst));
    if let Some(note) = policy::judged_without_rules(p.proto, p.port) {
        let _ = writeln!(
            out,
            "  note         {note}; the verdict above is the rules' alone"
        );
    }
    if let Some(w) = e
        .workload
        .as_ref()
        .filter(|w| w.egress.pod || w.ingress.pod)
    {
        out += &workload_lines(w);
    }
    if e.allowed() {
        let n = e.allowing.len();
        let _ = writeln!(out, "allowed by {n} rule{}:", if n == 1 { "" } else { "s" });
        for r in &e.allowing {
            out += &rule_line(r);
        }
        if let Some(name) = e.datapath_rule.and_then(|id| compiled.rule_name(id)) {
            let _ = writeln!(
                out,
                "the datapath counts the flow under {name} (its most specific entry)"
            );
        }
        return out;
    }
    if refused.is_some() {
        let _ = writeln!(
            out,
            "  {target} is a tunnel the kernel decapsulates: the node accepts it only from \
             nodes (--node-cidr, builtin:node-encap) or by a rule of the policy that names it"
        );
    }
    if e.near.is_empty() {
        out += "no rule allows it, and none matches any of its source, destination or ports\n";
        return out;
    }
    let parts = if e.near[0].score() == 2 {
        "one part"
    } else {
        "two parts"
    };
    let _ = writeln!(
        out,
        "no rule allows it; nearest rules (failing on {parts}):"
    );
    for r in e.near.iter().take(MAX_NEAR) {
        out += &rule_line(r);
        for why in r.why(p) {
            let _ = writeln!(out, "      {why}");
        }
    }
    if e.near.len() > MAX_NEAR {
        let _ = writeln!(out, "  ... and {} more", e.near.len() - MAX_NEAR);
    }
    out
}

/// How each end's NetworkPolicy side judged the packet.
fn workload_lines(w: &policy::WorkloadVerdict) -> String {
    let line = |what: &str, s: &policy::SideVerdict| -> String {
        let judged = if !s.pod {
            "not a pod: not judged".to_string()
        } else if !s.isolated {
            "not isolated: allowed".to_string()
        } else if s.allowing.is_empty() {
            "isolated: REFUSED, no rule of this side allows it".to_string()
        } else {
            let names: Vec<&str> = s.allowing.iter().map(|r| r.rule.name.as_str()).collect();
            format!("isolated: allowed by {}", names.join(", "))
        };
        format!("  {what:<20} {judged}\n")
    };
    line("source egress", &w.egress) + &line("destination ingress", &w.ingress)
}

fn side(s: &Side) -> String {
    match &s.identity {
        Some(i) => format!("{}: identity {} ({})", s.addr, i.id, i.groups.join(", ")),
        None => format!("{}: no identity", s.addr),
    }
}

fn rule_line(r: &RuleCheck) -> String {
    let at = match r.rule.origin.as_ref() {
        Some(o) => format!("  ({})", o.rule),
        None if r.rule.name == policy::NOT_ISOLATED_RULE => {
            "  (built in: pods no NetworkPolicy isolates are open, as in Kubernetes)".into()
        }
        None if r.rule.name == policy::NODE_ENCAP_RULE => {
            "  (built in: encapsulation reaches the node from nodes, unless --enforce-host)".into()
        }
        None if r.is_builtin() => {
            "  (built in: the node's own traffic passes unless --enforce-host)".into()
        }
        None => String::new(),
    };
    format!("  {}: {}{at}\n", r.rule.name, r.rule.summary())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::policy::{Part, Policy};

    const TEXT: &str = "
groups:
  ledger: [10.0.1.0/24, \"fd00:0:1::/64\"]
  wallet: [10.0.2.0/24]
  aiven:
    cidrs: [10.1.0.0/16]
    except: [10.1.3.0/24]
rules:
  - name: ledger-to-wallet
    from: [ledger]
    to: wallet
    ports: [50051/tcp]
  - name: grpc-anywhere
    from: any
    to: [10.0.0.0/16]
    ports: [50000-50100/tcp]
  - name: to-aiven
    from: [ledger, wallet]
    to: aiven
    ports: [5432/tcp]
  - name: intra
    within: [ledger, wallet]
  - name: ping
    from: any
    to: any
    ports: [icmp/8, icmpv6/128]
";

    fn setup(host: &[&str]) -> (Policy, policy::Compiled, CompileOptions) {
        let policy = policy::merge(vec![policy::parse_str("p.yaml", TEXT).unwrap()]).unwrap();
        let opts = CompileOptions {
            host_addrs: host.iter().map(|a| a.parse().unwrap()).collect(),
            enforce_host: false,
            node_cidrs: Vec::new(),
        };
        let compiled = policy::compile(&policy, &opts).unwrap();
        (policy, compiled, opts)
    }

    fn run(src: &str, dst: &str, target: &str) -> (Explanation, String) {
        let (policy, compiled, opts) = setup(&["10.0.0.5"]);
        let (proto, port) = policy::parse_target(target).unwrap();
        let src: IpAddr = src.parse().unwrap();
        let dst: IpAddr = dst.parse().unwrap();
        let e = policy::explain(
            &policy,
            &compiled,
            &opts,
            &Packet {
                src,
                dst,
                proto,
                port,
            },
        );
        assert!(e.agrees(), "{e:#?}");
        let text = render(&e, &compiled);
        (e, text)
    }

    fn names(rules: &[RuleCheck]) -> Vec<&str> {
        rules.iter().map(|r| r.rule.name.as_str()).collect()
    }

    #[test]
    fn allowed_lists_every_rule() {
        let (e, text) = run("10.0.1.5", "10.0.2.7", "tcp/50051");
        assert!(e.allowed());
        assert_eq!(names(&e.allowing), ["ledger-to-wallet", "grpc-anywhere"]);
        assert!(
            text.starts_with("allowed: 10.0.1.5 -> 10.0.2.7 tcp/50051\n"),
            "{text}"
        );
        assert!(
            text.contains("  source       10.0.1.5: identity "),
            "{text}"
        );
        assert!(text.contains("(10.0.0.0/16, ledger)"), "{text}");
        assert!(text.contains("allowed by 2 rules:\n  ledger-to-wallet: from ledger to wallet ports 50051/tcp  (p.yaml:9:5)\n"), "{text}");
        assert!(
            text.contains("the datapath counts the flow under ledger-to-wallet"),
            "{text}"
        );
    }

    #[test]
    fn within_allows_only_to_the_same_group() {
        let (e, _) = run("10.0.1.5", "10.0.1.6", "udp/9999");
        assert_eq!(names(&e.allowing), ["intra"]);
        let (e, text) = run("10.0.1.5", "10.0.2.6", "udp/9999");
        assert!(!e.allowed());
        let intra = e.near.iter().find(|r| r.rule.name == "intra").unwrap();
        assert_eq!(intra.failed, [Part::Within]);
        assert!(text.contains("within: source 10.0.1.5 and destination 10.0.2.6 are not in the same one of ledger, wallet"), "{text}");
    }

    #[test]
    fn denied_shows_near_misses_and_what_failed() {
        let (e, text) = run("10.0.1.5", "10.0.2.7", "tcp/80");
        assert!(!e.allowed());
        assert!(
            text.starts_with("denied (default deny): 10.0.1.5 -> 10.0.2.7 tcp/80\n"),
            "{text}"
        );
        // Port misses and the within pair all fail on one part only.
        assert_eq!(
            names(&e.near),
            ["ledger-to-wallet", "grpc-anywhere", "intra", "ping"]
        );
        assert!(
            text.contains("nearest rules (failing on one part):"),
            "{text}"
        );
        assert!(
            text.contains("      ports: tcp/80 is not among 50051/tcp\n"),
            "{text}"
        );
        assert!(!text.contains("builtin:"), "{text}");

        // The right port, the wrong destination.
        let (e, text) = run("10.0.1.5", "10.1.3.9", "tcp/5432");
        assert!(!e.allowed());
        let miss = e.near.iter().find(|r| r.rule.name == "to-aiven").unwrap();
        assert_eq!(miss.failed, [Part::To]);
        assert!(
            text.contains("      to: destination 10.1.3.9 is in none of aiven\n"),
            "{text}"
        );
    }

    #[test]
    fn icmp_and_families() {
        let (e, _) = run("192.0.2.1", "10.0.2.7", "icmp/8");
        assert_eq!(names(&e.allowing), ["ping"]);
        let (e, text) = run("192.0.2.1", "10.0.2.7", "icmp/3:4");
        assert!(!e.allowed());
        assert!(
            text.contains("ports: icmp/3:4 is not among icmp/8, icmpv6/128"),
            "{text}"
        );
        // The datapath judges errors by the flow they quote: explain says so.
        assert!(
            text.contains("note         the datapath passes an ICMP error only when"),
            "{text}"
        );
        let (e, text) = run("fd00:0:1::5", "fd00:0:1::6", "icmpv6/128");
        assert_eq!(names(&e.allowing), ["intra", "ping"]);
        assert!(!text.contains("note "), "{text}");
        let (_, text) = run("fd00:0:1::5", "ff02::1:ff00:6", "icmpv6/135");
        assert!(
            text.contains("note         the datapath passes IPv6 neighbour"),
            "{text}"
        );
    }

    #[test]
    fn the_node_passes_by_builtin_rule() {
        let (e, text) = run("10.0.0.5", "192.0.2.1", "tcp/443");
        assert_eq!(names(&e.allowing), [policy::HOST_EGRESS_RULE]);
        assert!(
            text.contains("built in: the node's own traffic passes"),
            "{text}"
        );
    }

    #[test]
    fn nothing_close() {
        let (policy, compiled, opts) = setup(&[]);
        let p = Packet {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            proto: 6,
            port: 1,
        };
        let e = policy::explain(&policy, &compiled, &opts, &p);
        // `ping` (any to any) fails only on the port.
        assert_eq!(e.near.iter().map(|r| r.score()).max(), Some(2));
        assert!(render(&e, &compiled).contains("nearest rules (failing on one part)"));
        let empty = Policy::default();
        let c = policy::compile(&empty, &opts).unwrap();
        let e = policy::explain(&empty, &c, &opts, &p);
        assert!(render(&e, &c).contains("none matches any of"));
    }

    #[test]
    fn a_tcp_packet_is_not_led_by_icmp_rules() {
        // `ping` comes first by id, but says nothing about TCP.
        let text = "
groups:
  web: [10.0.1.0/24]
  db: [10.0.2.0/24]
rules:
  - name: ping
    from: web
    to: db
    ports: [icmp/8]
  - name: web-to-db
    from: web
    to: db
    ports: [5432/tcp]
  - name: web-to-db-any
    from: web
    to: 10.0.3.0/24
";
        let policy = policy::merge(vec![policy::parse_str("p.yaml", text).unwrap()]).unwrap();
        let opts = CompileOptions::default();
        let compiled = policy::compile(&policy, &opts).unwrap();
        let packet = |proto, port| Packet {
            src: "10.0.1.5".parse().unwrap(),
            dst: "10.0.2.7".parse().unwrap(),
            proto,
            port,
        };
        let e = policy::explain(&policy, &compiled, &opts, &packet(6, 80));
        assert_eq!(names(&e.near), ["web-to-db", "web-to-db-any", "ping"]);
        let out = render(&e, &compiled);
        let first = out.lines().nth(4).unwrap();
        assert!(first.starts_with("  web-to-db: "), "{out}");
        // For an ICMP packet the ICMP rule leads.
        let e = policy::explain(&policy, &compiled, &opts, &packet(1, 0x0300));
        assert_eq!(names(&e.near), ["ping", "web-to-db-any", "web-to-db"]);
    }

    #[test]
    fn the_document_of_an_explanation() {
        let (policy, compiled, opts) = setup(&["10.0.0.5"]);
        let p = Packet {
            src: "10.0.1.5".parse().unwrap(),
            dst: "10.0.2.7".parse().unwrap(),
            proto: 6,
            port: 50051,
        };
        let e = policy::explain(&policy, &compiled, &opts, &p);
        let doc = serde_json::to_value(ExplainDoc::new(&e, &compiled)).unwrap();
        assert_eq!(doc["verdict"], "allowed");
        assert_eq!(
            doc["packet"],
            serde_json::json!({"src": "10.0.1.5", "dst": "10.0.2.7", "protocol": 6, "target": "tcp/50051"})
        );
        assert_eq!(
            doc["source"]["groups"],
            serde_json::json!(["10.0.0.0/16", "ledger"])
        );
        assert!(doc["source"]["identity"].is_u64(), "{doc}");
        assert_eq!(doc["allowing"][0]["name"], "ledger-to-wallet");
        assert_eq!(doc["allowing"][0]["origin"], "p.yaml:9:5");
        assert_eq!(doc["allowing"][0]["builtin"], false);
        assert_eq!(doc["datapath_rule"], "ledger-to-wallet");
        assert_eq!(doc["near_misses"], serde_json::json!([]));

        let denied = Packet { port: 80, ..p };
        let e = policy::explain(&policy, &compiled, &opts, &denied);
        let doc = serde_json::to_value(ExplainDoc::new(&e, &compiled)).unwrap();
        assert_eq!(doc["verdict"], "denied");
        assert_eq!(doc["datapath_rule"], serde_json::Value::Null);
        assert_eq!(doc["allowing"], serde_json::json!([]));
        let first = &doc["near_misses"][0];
        assert_eq!(first["name"], "ledger-to-wallet");
        assert_eq!(first["failed"], serde_json::json!(["ports"]));
        assert_eq!(
            first["why"],
            serde_json::json!(["ports: tcp/80 is not among 50051/tcp"])
        );
    }

    #[test]
    fn targets() {
        let t = |s: &str| policy::parse_target(s);
        assert_eq!(t("tcp/443"), Ok((6, 443)));
        assert_eq!(t("443/tcp"), Ok((6, 443)));
        assert_eq!(t("udp/53"), Ok((17, 53)));
        assert_eq!(t("sctp/3868"), Ok((132, 3868)));
        assert_eq!(t("icmp/8"), Ok((1, 0x0800)));
        assert_eq!(t("icmp/3:4"), Ok((1, 0x0304)));
        assert_eq!(t("icmpv6/128"), Ok((58, 0x8000)));
        assert_eq!(t("47"), Ok((47, 0)));
        assert_eq!(
            t("tcp").unwrap_err(),
            "a tcp packet has a destination port: write tcp/PORT"
        );
        assert_eq!(
            t("icmp").unwrap_err(),
            "an icmp packet has a type: write icmp/TYPE or icmp/TYPE:CODE"
        );
        assert_eq!(
            t("any").unwrap_err(),
            "a packet has one protocol: write tcp/443, udp/53, icmp/8, ..."
        );
        assert_eq!(
            t("tcp/80-90").unwrap_err(),
            "a packet has one port, not a range"
        );
        assert_eq!(t("tcp/70000").unwrap_err(), "port must be 0-65535");
        for s in ["tcp/443", "icmp/3:4", "icmpv6/128:0", "47", "udp/0"] {
            let (proto, port) = t(s).unwrap();
            assert_eq!(
                t(&policy::format_target(proto, port)),
                Ok((proto, port)),
                "{s}"
            );
        }
    }
}
