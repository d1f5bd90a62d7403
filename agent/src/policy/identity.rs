//! Prefixes to identities. An LPM lookup yields only the most specific prefix
//! containing an address, yet the address belongs to every group containing it;
//! so each distinct prefix gets the identity of the whole set of groups that
//! contain it (minus excepts), as Cilium's CIDR identities do.
//!
//! For every address the longest collected prefix P containing it has exactly
//! the address's groups: collected prefixes nest or are disjoint, so every group
//! CIDR (or except) containing the address contains P too.

use std::borrow::Cow;
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
pub(super) struct Source<'p> {
    pub name: String,
    /// Counts against `world` (user groups and `host`; literal CIDRs do not, so
    /// that writing one into a rule does not change what `world` means in others).
    pub named: bool,
    /// Borrowed from the policy's groups: a compile with thousands of pods
    /// copies no address lists.
    pub cidrs: Cow<'p, [IpNet]>,
    pub except: Cow<'p, [IpNet]>,
}

#[derive(Clone)]
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

pub(super) fn sources<'p>(
    policy: &'p Policy,
    host_addrs: &[IpAddr],
    node_cidrs: &[IpNet],
) -> Result<Vec<Source<'p>>, CompileError> {
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
            cidrs: Cow::Borrowed(&g.cidrs),
            except: Cow::Borrowed(&g.except),
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
        cidrs: Cow::Owned(vec![n]),
        except: Cow::Owned(Vec::new()),
    }));
    out.push(Source {
        name: BUILTIN_HOST.to_string(),
        named: true,
        cidrs: Cow::Owned(host_addrs.iter().map(|a| IpNet::from(*a)).collect()),
        except: Cow::Owned(Vec::new()),
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
        cidrs: Cow::Owned(nodes),
        except: Cow::Owned(Vec::new()),
    });
    Ok(out)
}

pub(super) fn ancestors(p: &IpNet) -> impl Iterator<Item = IpNet> + '_ {
    (0..=p.prefix_len()).rev().map(|len| {
        IpNet::new(p.addr(), len)
            .expect("shorter than a valid prefix")
            .trunc()
    })
}

/// Prefix to the (source, is an except) pairs naming it, for every prefix
/// some source names.
pub(super) type PrefixIndex = HashMap<IpNet, Vec<(usize, bool)>>;

pub(super) fn index_of(sources: &[Source]) -> PrefixIndex {
    let mut index = PrefixIndex::new();
    for (i, s) in sources.iter().enumerate() {
        let tagged = s.cidrs.iter().map(|n| (n, false));
        for (n, except) in tagged.chain(s.except.iter().map(|n| (n, true))) {
            index.entry(*n).or_default().push((i, except));
        }
    }
    index
}

/// The roots every policy collects, so every address has an identity.
pub(super) fn roots() -> [IpNet; 2] {
    [
        "0.0.0.0/0".parse().expect("valid"),
        "::/0".parse().expect("valid"),
    ]
}

/// The sources (indices, sorted; `world` as `sources.len()`) holding `p`:
/// every source naming `p` or a shorter prefix containing it, minus excepts.
pub(super) fn set_of(index: &PrefixIndex, sources: &[Source], p: &IpNet) -> Vec<usize> {
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
        members.push(sources.len());
    }
    members
}

/// The sorted group names of a set of sources.
pub(super) fn names_of(sources: &[Source], set: &[usize]) -> Vec<String> {
    let mut names: Vec<String> = set
        .iter()
        .map(|&i| {
            if i == sources.len() {
                BUILTIN_WORLD.to_string()
            } else {
                sources[i].name.clone()
            }
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The order ids are given in: plain `world` (everything outside the
/// policy) first, for readable dumps, then by group list.
pub(super) fn id_order(names: &[String]) -> (bool, &[String]) {
    (!(names.len() == 1 && names[0] == BUILTIN_WORLD), names)
}

/// What `build` works out on the way: every collected prefix with its set
/// of sources, and each distinct set's id.
pub(super) struct Parts {
    pub index: PrefixIndex,
    pub sets: BTreeMap<IpNet, Vec<usize>>,
    pub ids: HashMap<Vec<usize>, u32>,
}

pub(crate) fn build(
    policy: &Policy,
    host_addrs: &[IpAddr],
    node_cidrs: &[IpNet],
) -> Result<Identities, CompileError> {
    let sources = sources(policy, host_addrs, node_cidrs)?;
    Ok(build_parts(policy, &sources).0)
}

/// `build` over sources already listed, with what it worked out.
pub(super) fn build_parts(policy: &Policy, sources: &[Source]) -> (Identities, Parts) {
    let index = index_of(sources);
    let mut prefixes: BTreeSet<IpNet> = index.keys().copied().collect();
    prefixes.extend(roots());

    // Sets of source indices (with `world` as one past the last): group names
    // are compared and cloned once per distinct set, not once per prefix.
    let mut sets: BTreeMap<IpNet, Vec<usize>> = BTreeMap::new();
    for p in &prefixes {
        sets.insert(*p, set_of(&index, sources, p));
    }
    let mut names: HashMap<&Vec<usize>, Vec<String>> = HashMap::new();
    for set in sets.values() {
        names.entry(set).or_insert_with(|| names_of(sources, set));
    }

    let mut distinct: Vec<&Vec<String>> = names
        .values()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    distinct.sort_by(|a, b| id_order(a).cmp(&id_order(b)));
    let by_names: BTreeMap<&Vec<String>, u32> =
        distinct.iter().zip(1..).map(|(g, id)| (*g, id)).collect();
    let ids: HashMap<Vec<usize>, u32> = names
        .iter()
        .map(|(set, names)| ((*set).clone(), by_names[names]))
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
    let identities = Identities {
        infos,
        members,
        defined,
        v4,
        v6,
    };
    (identities, Parts { index, sets, ids })
}
