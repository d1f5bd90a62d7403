//! The same policy as nftables does it best, for the side-by-side run.
//!
//! Two stages, because no single nftables hook is both early and stateful:
//! - `netdev` ingress on the interface under test (the earliest hook, before
//!   the IP stack and before conntrack allocates anything): one lookup of
//!   (saddr . daddr . l4proto . dport) in a concatenated interval set (the
//!   pipapo set type) marks packets a rule allows; packets whose reversed tuple
//!   is allowed (replies) go on unmarked; every other TCP/UDP/SCTP packet is
//!   dropped here, so a denied flood never reaches conntrack.
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

/// (source, destination, protocol, low port, high port) per family.
fn elements(p: &Policy) -> (BTreeSet<String>, BTreeSet<String>) {
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
            Peer::Host => vec![],
            Peer::Cidr(n) => vec![*n],
        }
    };
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for rule in &p.rules {
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
        for (a, b) in pairs {
            let same_family = matches!(
                (a, b),
                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
            );
            if !same_family {
                continue;
            }
            for &(pr, lo, hi) in &ports {
                let port = if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                };
                let e = format!("{a} . {b} . {pr} . {port}");
                if a.addr().is_ipv4() {
                    v4.insert(e);
                } else {
                    v6.insert(e);
                }
            }
        }
    }
    (v4, v6)
}

/// The ruleset for `iface` from the policy directory `dir`.
pub fn ruleset(dir: &Path, iface: &str) -> anyhow::Result<(String, usize)> {
    let p = policy::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (v4, v6) = elements(&p);
    let n = v4.len() + v6.len();
    let set = |name: &str, ty: &str, els: &BTreeSet<String>| {
        let mut s = format!("  set {name} {{\n    type {ty} . {ty} . inet_proto . inet_service\n    flags interval\n");
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
    };
    let mut r = String::new();
    r.push_str("table netdev np_pre {\n");
    r.push_str(&set("allow4", "ipv4_addr", &v4));
    r.push_str(&set("allow6", "ipv6_addr", &v6));
    r.push_str(&format!(
        "  counter pre_drop {{}}
  chain ingress {{
    type filter hook ingress device \"{iface}\" priority 0; policy accept;
    meta protocol ip meta l4proto {{ tcp, udp, sctp }} jump v4
    meta protocol ip6 meta l4proto {{ tcp, udp, sctp }} jump v6
  }}
  chain v4 {{
    ip saddr . ip daddr . meta l4proto . th dport @allow4 meta mark set 0x1 accept
    ip daddr . ip saddr . meta l4proto . th sport @allow4 accept
    counter name pre_drop drop
  }}
  chain v6 {{
    ip6 saddr . ip6 daddr . meta l4proto . th dport @allow6 meta mark set 0x1 accept
    ip6 daddr . ip6 saddr . meta l4proto . th sport @allow6 accept
    counter name pre_drop drop
  }}
}}
table inet np_ct {{
  counter est {{}}
  counter new_ok {{}}
  counter ct_drop {{}}
  chain pre {{
    type filter hook prerouting priority -150; policy accept;
    iifname != \"{iface}\" accept
    ct state established,related counter name est accept
    ct state new meta mark 0x1 counter name new_ok accept
    meta l4proto {{ icmp, ipv6-icmp }} accept
    counter name ct_drop drop
  }}
}}
"
    ));
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
        let (text, elements) = ruleset(dir, iface)?;
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
