//! Generated policies: what the generator means, with the text it writes.

use std::net::IpAddr;

use ipnet::IpNet;
use netpol_agent::policy::{CompileOptions, Group, Peer, Policy, PortSpec, Rule};

#[derive(Clone, Debug)]
pub struct GGroup {
    pub name: String,
    pub cidrs: Vec<IpNet>,
    pub except: Vec<IpNet>,
    pub long_form: bool,
}

#[derive(Clone, Debug)]
pub struct GPeer {
    pub peer: Peer,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct GPort {
    pub spec: PortSpec,
    pub text: String,
}

#[derive(Clone, Debug)]
pub enum GRule {
    Within {
        name: String,
        peers: Vec<GPeer>,
    },
    Edge {
        name: String,
        from: Vec<GPeer>,
        to: Vec<GPeer>,
        ports: Option<Vec<GPort>>,
    },
}

impl GRule {
    pub fn name(&self) -> &str {
        match self {
            GRule::Within { name, .. } | GRule::Edge { name, .. } => name,
        }
    }

    pub fn peers(&self) -> Vec<&GPeer> {
        match self {
            GRule::Within { peers, .. } => peers.iter().collect(),
            GRule::Edge { from, to, .. } => from.iter().chain(to).collect(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GPolicy {
    pub groups: Vec<GGroup>,
    pub rules: Vec<GRule>,
    /// `settings: {enforce-host: ...}` as written, if written.
    pub settings: Option<bool>,
    /// The node's addresses (`CompileOptions::host_addrs`).
    pub host: Vec<IpAddr>,
    /// The node prefixes (`CompileOptions::node_cidrs`).
    pub nodes: Vec<IpNet>,
    /// `CompileOptions::enforce_host`.
    pub enforce_opt: bool,
    /// 0: one file; 1: two files; 2: two documents in one file. The first part
    /// holds the first `split_groups` groups and `split_rules` rules.
    pub split: u8,
    pub split_groups: usize,
    pub split_rules: usize,
    /// Seeds the YAML writer's choices of style (flow or block lists, quotes).
    pub style: u64,
}

impl GPolicy {
    /// Every prefix the policy names, and the host addresses.
    pub fn prefixes(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = Vec::new();
        for g in &self.groups {
            out.extend(&g.cidrs);
            out.extend(&g.except);
        }
        for r in &self.rules {
            for p in r.peers() {
                if let Peer::Cidr(n) = p.peer {
                    out.push(n);
                }
            }
        }
        out.extend(self.host.iter().map(|a| IpNet::from(*a)));
        out.extend(&self.nodes);
        out
    }

    /// The `Policy` the YAML must parse into.
    pub fn expected(&self) -> Policy {
        fn dedup<T: PartialEq + Clone>(xs: &[T]) -> Vec<T> {
            let mut out: Vec<T> = Vec::new();
            for x in xs {
                if !out.contains(x) {
                    out.push(x.clone());
                }
            }
            out
        }
        let peers = |ps: &[GPeer]| ps.iter().map(|p| p.peer.clone()).collect::<Vec<_>>();
        Policy {
            groups: self
                .groups
                .iter()
                .map(|g| Group::new(&g.name, &dedup(&g.cidrs), &dedup(&g.except)))
                .collect(),
            rules: self
                .rules
                .iter()
                .map(|r| match r {
                    GRule::Within { name, peers: ps } => Rule::within(name, &peers(ps)),
                    GRule::Edge {
                        name,
                        from,
                        to,
                        ports,
                    } => {
                        let specs: Vec<PortSpec> =
                            ports.iter().flatten().map(|p| p.spec).collect::<Vec<_>>();
                        Rule::new(name, &peers(from), &peers(to), &dedup(&specs))
                    }
                })
                .collect(),
            enforce_host: self.settings == Some(true),
            ..Policy::default()
        }
    }

    pub fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            host_addrs: self.host.clone(),
            enforce_host: self.enforce_opt,
            node_cidrs: self.nodes.clone(),
        }
    }
}
