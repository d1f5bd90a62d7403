//! The same policy as nftables does it best, for the side-by-side run.
//!
//! Two stages, because no single nftables hook is both early and stateful:
//! - `netdev` ingress on the interface under test (the earliest hook, before
//!   the IP stack and before conntrack allocates anything): one lookup of
//!   (saddr . daddr . l4proto . dport) in a concatenated interval set (the
//!   pipapo set type) marks packets a rule allows (rules with many source
//!   prefixes get their own sets, see `elements`); packets whose reversed
//!   tuple is allowed (replies) go on unmarked; every other TCP/UDP/SCTP
//!   packet is dropped here, so a denied flood never reaches conntrack.
//! - `inet` prerouting after conntrack (priority -150): established flows
//!   pass, new flows pass only with the mark, everything else is dropped. This
//!   is what makes replies of allowed flows work and fakes fail.
//!
//! Approximations (the LOCAL-PLUS policy needs none of them but ICMP): `world`
//! is treated as `any`, `except` is ignored, `host` rules are skipped (host
//! traffic is not filtered), and ICMP passes the first stage unchecked.
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context as _};
use ipnet::IpNet;
use netpol_agent::policy::{self, Peer, Policy};

use crate::netns::Netns;

const PROTOS_ANY_PORT: [u8; 3] = [6, 17, 132];

/// A rule with more source prefixes than this gets its own pair of sets
/// (see `Compiled::big`).
const BIG_FROM: usize = 64;

#[derive(Default)]
struct Family {
    /// `saddr . daddr . proto . dport` elements of the small rules.
    pairs: BTreeSet<String>,
    /// Per big rule: (source prefixes, `daddr . proto . dport` elements).
    big: Vec<(BTreeSet<String>, BTreeSet<String>)>,
}

/// The policy as set elements, per family. Rules are crossed out into one
/// concatenated interval set (one lookup per packet), except rules with many
/// source prefixes: crossing those out makes the set as large as the prefix
/// count, and a pipapo set of 100,000 elements cost 6.7 µs per lookup here,
/// so each gets a set of its sources (a hash set when they are all host
/// prefixes) and a small concatenated set of the rest, as an administrator
/// would write it.
fn elements(p: &Policy) -> (Family, Family) {
    let resolve = |peer: &Peer| -> Vec<IpNet> {
        match peer {
            Peer::Group(name) => p
                .groups
                .iter()
                .filter(|g| &g.name == name)
                .flat_map(|g| g.cidrs.iter().copied())
                .collect(),
            Peer::Any | Peer::World => {
                vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
            }
            // The benchmark has no node addresses of its own.
            Peer::Host | Peer::Nodes => vec![],
            Peer::Cidr(n) => vec![*n],
        }
    };
    let (mut v4, mut v6) = (Family::default(), Family::default());
    for rule in &p.rules {
        let big = !rule.within && rule.from.iter().flat_map(&resolve).count() > BIG_FROM;
        let pairs: Vec<(IpNet, IpNet)> = if rule.within {
            rule.from
                .iter()
                .flat_map(|g| {
                    let nets = resolve(g);
                    nets.iter()
                        .flat_map(|a| nets.iter().map(move |b| (*a, *b)))
                        .collect::<Vec<_>>()
                })
                .collect()
        } else {
            let from: Vec<IpNet> = rule.from.iter().flat_map(&resolve).collect();
            let to: Vec<IpNet> = rule.to.iter().flat_map(&resolve).collect();
            from.iter()
                .flat_map(|a| to.iter().map(move |b| (*a, *b)))
                .collect()
        };
        let mut ports: Vec<(u8, u16, u16)> = Vec::new();
        if rule.ports.is_empty() {
            ports.extend(PROTOS_ANY_PORT.iter().map(|&pr| (pr, 0, 65535)));
        }
        for spec in &rule.ports {
            match spec.proto {
                None => ports.extend(PROTOS_ANY_PORT.iter().map(|&pr| (pr, 0, 65535))),
                Some(pr) if PROTOS_ANY_PORT.contains(&pr) => {
                    let (lo, hi) = spec.range.unwrap_or((0, 65535));
                    ports.push((pr, lo, hi));
                }
                // ICMP and other protocols: see the module comment.
                Some(_) => {}
            }
        }
        let port_text = |lo: u16, hi: u16| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        };
        if big {
            let from: Vec<IpNet> = rule.from.iter().flat_map(&resolve).collect();
            let to: Vec<IpNet> = rule.to.iter().flat_map(&resolve).collect();
            for (fam, v6fam) in [(&mut v4, false), (&mut v6, true)] {
                let srcs: BTreeSet<String> = from
                    .iter()
                    .filter(|n| n.addr().is_ipv6() == v6fam)
                    .map(|n| n.to_string())
                    .collect();
                let rest: BTreeSet<String> = to
                    .iter()
                    .filter(|n| n.addr().is_ipv6() == v6fam)
                    .flat_map(|b| {
                        ports
                            .iter()
                            .map(move |&(pr, lo, hi)| format!("{b} . {pr} . {}", port_text(lo, hi)))
                    })
                    .collect();
                if !srcs.is_empty() && !rest.is_empty() {
                    fam.big.push((srcs, rest));
                }
            }
            continue;
        }
        for (a, b) in pairs {
            let same_family = matches!(
                (a, b),
                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
            );
            if !same_family {
                continue;
            }
            for &(pr, lo, hi) in &ports {
                let e = format!("{a} . {b} . {pr} . {}", port_text(lo, hi));
                if a.addr().is_ipv4() {
                    v4.pairs.insert(e);
                } else {
                    v6.pairs.insert(e);
                }
            }
        }
    }
    (v4, v6)
}

fn set(name: &str, ty: &str, els: &BTreeSet<String>) -> String {
    set_of(name, ty, els, true)
}

fn set_of(name: &str, ty: &str, els: &BTreeSet<String>, interval: bool) -> String {
    let flags = if interval { "    flags interval\n" } else { "" };
    let mut s = format!("  set {name} {{\n    type {ty}\n{flags}");
    if !els.is_empty() {
        s.push_str("    elements = {\n");
        for e in els {
            s.push_str("      ");
            s.push_str(e);
            s.push_str(",\n");
        }
        s.push_str("    }\n");
    }
    s.push_str("  }\n");
    s
}

/// The sets and the stage-one chain of one family.
fn family(f: &Family, v6: bool, sets: &mut String) -> String {
    let (fam, addr, ip) = if v6 {
        ("6", "ipv6_addr", "ip6")
    } else {
        ("4", "ipv4_addr", "ip")
    };
    sets.push_str(&set(
        &format!("allow{fam}"),
        &format!("{addr} . {addr} . inet_proto . inet_service"),
        &f.pairs,
    ));
    let mut chain = format!(
        "  chain v{fam} {{\n    {ip} saddr . {ip} daddr . meta l4proto . th dport @allow{fam} meta mark set 0x1 accept\n    {ip} daddr . {ip} saddr . meta l4proto . th sport @allow{fam} accept\n"
    );
    for (i, (srcs, rest)) in f.big.iter().enumerate() {
        let from = format!("big{i}_from{fam}");
        let to = format!("big{i}_to{fam}");
        // Host prefixes only (the benchmark's extra prefixes): a hash set,
        // which nftables loads and looks up in constant time; an interval
        // set of 100,000 prefixes took 104 s to load here and 8 µs a lookup.
        let hosts: Option<BTreeSet<String>> = srcs
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .ok()
                    .filter(|n| n.prefix_len() == n.max_prefix_len())
                    .map(|n| n.addr().to_string())
            })
            .collect();
        match hosts {
            Some(h) => sets.push_str(&set_of(&from, addr, &h, false)),
            None => sets.push_str(&set(&from, addr, srcs)),
        }
        sets.push_str(&set(
            &to,
            &format!("{addr} . inet_proto . inet_service"),
            rest,
        ));
        chain.push_str(&format!(
            "    {ip} saddr @{from} {ip} daddr . meta l4proto . th dport @{to} meta mark set 0x1 accept\n    {ip} daddr @{from} {ip} saddr . meta l4proto . th sport @{to} accept\n"
        ));
    }
    chain.push_str("    counter name pre_drop drop\n  }\n");
    chain
}

/// The ruleset for `iface` from the policy directory `dir`, and how many set
/// elements it has.
pub fn ruleset(dir: &Path, iface: &str) -> anyhow::Result<(String, usize)> {
    ruleset_on(dir, &[iface])
}

/// `ruleset` on several interfaces: one netdev chain for all of them (a
/// node's pod veths and its uplink all take traffic into the node).
pub fn ruleset_on(dir: &Path, ifaces: &[&str]) -> anyhow::Result<(String, usize)> {
    let quoted: Vec<String> = ifaces.iter().map(|i| format!("\"{i}\"")).collect();
    let hook_devices = match quoted.as_slice() {
        [one] => format!("device {one}"),
        _ => format!("devices = {{ {} }}", quoted.join(", ")),
    };
    let iifnames = format!("{{ {} }}", quoted.join(", "));
    // The same room as the agent is given (agent::POLICY_FILE_MAX).
    let limits = policy::ReadLimits {
        file_size_max: 16 << 20,
        ..policy::ReadLimits::default()
    };
    let p = policy::load_dir(dir, &limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (v4, v6) = elements(&p);
    let count =
        |f: &Family| f.pairs.len() + f.big.iter().map(|(a, b)| a.len() + b.len()).sum::<usize>();
    let n = count(&v4) + count(&v6);
    let mut sets = String::new();
    let c4 = family(&v4, false, &mut sets);
    let c6 = family(&v6, true, &mut sets);
    let r = format!(
        "table netdev np_pre {{
{sets}  counter pre_drop {{}}
  chain ingress {{
    type filter hook ingress {hook_devices} priority 0; policy accept;
    meta protocol ip meta l4proto {{ tcp, udp, sctp }} jump v4
    meta protocol ip6 meta l4proto {{ tcp, udp, sctp }} jump v6
  }}
{c4}{c6}}}
table inet np_ct {{
  counter est {{}}
  counter new_ok {{}}
  counter ct_drop {{}}
  chain pre {{
    type filter hook prerouting priority -150; policy accept;
    iifname != {iifnames} accept
    ct state established,related counter name est accept
    ct state new meta mark 0x1 counter name new_ok accept
    meta l4proto {{ icmp, ipv6-icmp }} accept
    counter name ct_drop drop
  }}
}}
"
    );
    Ok((r, n))
}

/// The ruleset loaded into a namespace; removed on drop.
pub struct NftPolicy<'a> {
    ns: &'a Netns,
    pub elements: usize,
}

/// Counter totals of the ruleset: (passed, dropped).
impl<'a> NftPolicy<'a> {
    pub fn load(ns: &'a Netns, dir: &Path, iface: &str) -> anyhow::Result<NftPolicy<'a>> {
        Self::load_on(ns, dir, &[iface])
    }

    /// The ruleset judging traffic that enters the node on any of `ifaces`.
    pub fn load_on(ns: &'a Netns, dir: &Path, ifaces: &[&str]) -> anyhow::Result<NftPolicy<'a>> {
        let (text, elements) = ruleset_on(dir, ifaces)?;
        let file = std::env::temp_dir().join(format!(
            "netpol-traffic-{}.nft",
            crate::netns::unique_suffix()
        ));
        std::fs::write(&file, &text)?;
        let out = ns.exec(&["nft", "-f", file.to_str().context("temp path")?]);
        let _ = std::fs::remove_file(&file);
        if !out.status.success() {
            bail!("nft -f failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(NftPolicy { ns, elements })
    }

    pub fn verdicts(&self) -> anyhow::Result<(u64, u64)> {
        let out = self.ns.exec(&["nft", "-j", "list", "counters"]);
        if !out.status.success() {
            bail!(
                "nft list counters: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let (mut pass, mut drop) = (0, 0);
        for item in v["nftables"].as_array().context("nft -j output")? {
            let c = &item["counter"];
            let n = c["packets"].as_u64().unwrap_or(0);
            match c["name"].as_str() {
                Some("est") | Some("new_ok") => pass += n,
                Some("pre_drop") | Some("ct_drop") => drop += n,
                _ => {}
            }
        }
        Ok((pass, drop))
    }
}

impl Drop for NftPolicy<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .exec(&["nft", "delete", "table", "netdev", "np_pre"]);
        let _ = self.ns.exec(&["nft", "delete", "table", "inet", "np_ct"]);
    }
}
