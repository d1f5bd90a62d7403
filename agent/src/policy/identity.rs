//! Prefixes to identities. An LPM lookup yields only the most specific prefix
//! containing an address, yet the address belongs to every group containing it;
//! so each distinct prefix gets the identity of the whole set of groups that
//! contain it (minus excepts), as Cilium's CIDR identities do.
//!
//! For every address the longest collected prefix P containing it has exactly
//! the address's groups: collected prefixes nest or are disjoint, so every group
//! CIDR (or except) containing the address contains P too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::CompileError;
use super::model::{check_group_name, Peer, Policy, BUILTIN_HOST, BUILTIN_NODES, BUILTIN_WORLD};

/// One identity: a distinct set of groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityInfo {
    pub id: u32,
    /// Sorted. User groups, literal CIDRs of rules (as their text), `host` for the
    /// node's addresses, `nodes` for node addresses, and `world` when there is
    /// no user group and no `host`.
    pub groups: Vec<String>,
}

/// A set of addresses an identity can stand for part of.
struct Source {
    name: String,
    /// Counts against `world` (user groups and `host`; literal CIDRs do not, so
    /// that writing one into a rule does not change what `world` means in others).
    named: bool,
    cidrs: Vec<IpNet>,
    except: Vec<IpNet>,
}

pub(crate) struct Identities {
    /// Sorted by id.
    pub infos: Vec<IdentityInfo>,
    /// Group name to the ids of the identities holding it: rules name groups
    /// thousands of times with workloads, so each is looked up, not scanned.
    pub members: HashMap<String, BTreeSet<u32>>,
    /// Every group the policy defines (also those holding no address).
    pub defined: std::collections::HashSet<String>,
    pub v4: Vec<(Ipv4Net, u32)>,
    pub v6: Vec<(Ipv6Net, u32)>,
}

/// The name a literal CIDR of a rule goes by as an anonymous group.
pub(crate) fn cidr_group_name(net: &IpNet) -> String {
    net.trunc().to_string()
}

fn sources(
    policy: &Policy,
    host_addrs: &[IpAddr],
    node_cidrs: &[IpNet],
) -> Result<Vec<Source>, CompileError> {
    let mut out: Vec<Source> = Vec::new();
    for g in &policy.groups {
        let bad = |message: String| CompileError::BadGroup {
            group: g.name.clone(),
            message,
        };
        check_group_name(&g.name).map_err(bad)?;
        if out.iter().any(|s| s.name == g.name) {
            return Err(bad("defined twice".into()));
        }
        if let Some(n) = g.cidrs.iter().chain(&g.except).find(|n| n.trunc() != **n) {
            return Err(bad(format!("{n} has host bits set")));
        }
        out.push(Source {
            name: g.name.clone(),
            named: !g.anonymous,
            cidrs: g.cidrs.clone(),
            except: g.except.clone(),
        });
    }
    let mut literals = BTreeSet::new();
    // NetworkPolicy sides name literal CIDRs too (an ipBlock without except).
    let sides = policy.workloads.iter().flat_map(|w| &w.sides);
    let side_peers = sides.flat_map(|s| s.peers.iter().chain(std::iter::once(&s.selected)));
    for p in policy
        .rules
        .iter()
        .flat_map(|r| r.from.iter().chain(&r.to))
        .chain(side_peers)
    {
        if let Peer::Cidr(n) = p {
            literals.insert(n.trunc());
        }
    }
    out.extend(literals.into_iter().map(|n| Source {
        name: cidr_group_name(&n),
        named: false,
        cidrs: vec![n],
        except: Vec::new(),
    }));
    out.push(Source {
        name: BUILTIN_HOST.to_string(),
        named: true,
        cidrs: host_addrs.iter().map(|a| IpNet::from(*a)).collect(),
        except: Vec::new(),
    });
    // Not named: node subnets often hold pods and services too (a VPC), and
    // declaring them must not change what `world` means in any rule.
    let mut nodes: Vec<IpNet> = node_cidrs.iter().map(IpNet::trunc).collect();
    nodes.extend(host_addrs.iter().map(|a| IpNet::from(*a)));
    nodes.sort();
    nodes.dedup();
    out.push(Source {
        name: BUILTIN_NODES.to_string(),
        named: false,
        cidrs: nodes,
        except: Vec::new(),
    });
    Ok(out)
}

fn ancestors(p: &IpNet) -> impl Iterator<Item = IpNet> + '_ {
    (0..=p.prefix_len()).rev().map(|len| {
        IpNet::new(p.addr(), len)
            .expect("shorter than a valid prefix")
            .trunc()
    })
}

pub(crate) fn build(
    policy: &Policy,
    host_addrs: &[IpAddr],
    node_cidrs: &[IpNet],
) -> Result<Identities, CompileError> {
    let sources = sources(policy, host_addrs, node_cidrs)?;
    // prefix -> (source, is an except) for every prefix some source names.
    let mut index: HashMap<IpNet, Vec<(usize, bool)>> = HashMap::new();
    let mut prefixes: BTreeSet<IpNet> = BTreeSet::new();
    prefixes.insert("0.0.0.0/0".parse().expect("valid"));
    prefixes.insert("::/0".parse().expect("valid"));
    for (i, s) in sources.iter().enumerate() {
        let tagged = s.cidrs.iter().map(|n| (n, false));
        for (n, except) in tagged.chain(s.except.iter().map(|n| (n, true))) {
            index.entry(*n).or_default().push((i, except));
            prefixes.insert(*n);
        }
    }

    // Sets of source indices (with `world` as one past the last): group names
    // are compared and cloned once per distinct set, not once per prefix.
    let world_index = sources.len();
    let mut sets: BTreeMap<IpNet, Vec<usize>> = BTreeMap::new();
    for p in &prefixes {
        let (mut inside, mut carved) = (BTreeSet::new(), BTreeSet::new());
        for a in ancestors(p) {
            for &(i, except) in index.get(&a).into_iter().flatten() {
                if except {
                    carved.insert(i)
                } else {
                    inside.insert(i)
                };
            }
        }
        let mut members: Vec<usize> = inside.difference(&carved).copied().collect();
        if !members.iter().any(|&i| sources[i].named) {
            members.push(world_index);
        }
        sets.insert(*p, members);
    }
    let name = |i: usize| -> &str {
        if i == world_index {
            BUILTIN_WORLD
        } else {
            &sources[i].name
        }
    };
    let mut names_of: HashMap<&Vec<usize>, Vec<String>> = HashMap::new();
    for set in sets.values() {
        names_of.entry(set).or_insert_with(|| {
            let mut names: Vec<String> = set.iter().map(|&i| name(i).to_string()).collect();
            names.sort();
            names.dedup();
            names
        });
    }

    // Ids in the order of the sorted group lists, except that plain `world`
    // (everything outside the policy) is always 1, for readable dumps.
    let world = vec![BUILTIN_WORLD.to_string()];
    let mut distinct: Vec<&Vec<String>> = names_of
        .values()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    distinct.sort_by_key(|g| (**g != world, *g));
    let by_names: BTreeMap<&Vec<String>, u32> =
        distinct.iter().zip(1..).map(|(g, id)| (*g, id)).collect();
    let ids: HashMap<&Vec<usize>, u32> = names_of
        .iter()
        .map(|(set, names)| (*set, by_names[names]))
        .collect();
    let infos: Vec<IdentityInfo> = distinct
        .iter()
        .map(|g| IdentityInfo {
            id: by_names[g],
            groups: (*g).clone(),
        })
        .collect();

    // A prefix with the same identity as the nearest shorter one changes no
    // lookup result, so it stays out of the maps.
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (p, set) in &sets {
        let id = ids[set];
        let parent = ancestors(p).skip(1).find(|a| sets.contains_key(a));
        if parent.is_some_and(|a| ids[&sets[&a]] == id) {
            continue;
        }
        match p {
            IpNet::V4(n) => v4.push((*n, id)),
            IpNet::V6(n) => v6.push((*n, id)),
        }
    }
    let mut members: HashMap<String, BTreeSet<u32>> = HashMap::new();
    for i in &infos {
        for g in &i.groups {
            members.entry(g.clone()).or_default().insert(i.id);
        }
    }
    let defined = policy.groups.iter().map(|g| g.name.clone()).collect();
    Ok(Identities {
        infos,
        members,
        defined,
        v4,
        v6,
    })
}
