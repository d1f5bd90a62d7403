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
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::CompileError;
use super::model::{check_group_name, Peer, Policy, BUILTIN_HOST, BUILTIN_NODES, BUILTIN_WORLD};

/// One identity: a distinct set of groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityInfo {
    pub id: u32,
    /// Sorted. User groups, literal CIDRs of rules (as their text), `host` for the
    /// node's addresses, `nodes` for node addresses, and `world` when there is
    /// no user group and no `host`. Shared: compiles copy the identity list,
    /// and with thousands of policies each list is long.
    pub groups: Arc<[String]>,
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

/// Prefix to the (source, is an except) pairs naming it, for every prefix
/// some source names.
#[derive(Clone, Debug)]
pub(super) struct PrefixIndex {
    map: HashMap<IpNet, Vec<(usize, bool)>>,
    /// How many prefixes of each length the map holds (IPv4 lengths, then
    /// IPv6 ones at 33 + length): a walk up a prefix's ancestors looks up
    /// only the few lengths in use instead of all 33 or 129, which is most
    /// of a full build with ten thousand pod addresses.
    lens: [u32; 33 + 129],
}

impl PrefixIndex {
    fn slot(p: &IpNet) -> usize {
        match p {
            IpNet::V4(n) => usize::from(n.prefix_len()),
            IpNet::V6(n) => 33 + usize::from(n.prefix_len()),
        }
    }

    pub fn get(&self, p: &IpNet) -> Option<&Vec<(usize, bool)>> {
        self.map.get(p)
    }

    pub fn contains_key(&self, p: &IpNet) -> bool {
        self.map.contains_key(p)
    }

    pub fn keys(&self) -> impl Iterator<Item = &IpNet> {
        self.map.keys()
    }

    pub fn push(&mut self, p: IpNet, entry: (usize, bool)) {
        let e = self.map.entry(p).or_default();
        if e.is_empty() {
            self.lens[Self::slot(&p)] += 1;
        }
        e.push(entry);
    }

    /// Removes one `entry` of `p` (which must hold it).
    pub fn remove(&mut self, p: &IpNet, entry: (usize, bool)) {
        let e = self.map.get_mut(p).expect("a prefix the source named");
        let at = e.iter().position(|x| *x == entry).expect("indexed");
        e.swap_remove(at);
        if e.is_empty() {
            self.map.remove(p);
            self.lens[Self::slot(p)] -= 1;
        }
    }

    /// `p` itself, then its shorter prefixes, longest first, of the lengths
    /// some indexed prefix has (and the root's): every prefix the index or
    /// the collected prefixes can hold on the way up.
    pub fn ancestors<'a>(&'a self, p: &'a IpNet) -> impl Iterator<Item = IpNet> + 'a {
        let own = p.prefix_len();
        let base = Self::slot(p) - usize::from(own);
        (0..=own)
            .rev()
            .filter(move |&len| len == own || len == 0 || self.lens[base + usize::from(len)] > 0)
            .map(|len| {
                IpNet::new(p.addr(), len)
                    .expect("shorter than a valid prefix")
                    .trunc()
            })
    }
}

pub(super) fn index_of(sources: &[Source]) -> PrefixIndex {
    let mut index = PrefixIndex {
        map: HashMap::new(),
        lens: [0; 33 + 129],
    };
    for (i, s) in sources.iter().enumerate() {
        let tagged = s.cidrs.iter().map(|n| (n, false));
        for (n, except) in tagged.chain(s.except.iter().map(|n| (n, true))) {
            index.push(*n, (i, except));
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
    let (mut inside, mut carved) = (Vec::new(), Vec::new());
    for a in index.ancestors(p) {
        for &(i, except) in index.get(&a).into_iter().flatten() {
            if except {
                carved.push(i)
            } else {
                inside.push(i)
            };
        }
    }
    inside.sort_unstable();
    inside.dedup();
    if !carved.is_empty() {
        carved.sort_unstable();
        inside.retain(|i| carved.binary_search(i).is_err());
    }
    if !inside.iter().any(|&i| sources[i].named) {
        inside.push(sources.len());
    }
    inside
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

    // Sets of source indices (with `world` as one past the last).
    let sets: BTreeMap<IpNet, Vec<usize>> = prefixes
        .iter()
        .map(|p| (*p, set_of(&index, sources, p)))
        .collect();
    // A set's group list as ranks among the sorted names: rank lists sort,
    // compare and hash as the name lists they stand for, and a pod in a
    // hundred groups costs no string copy until its identity is listed.
    let mut all_names: Vec<&str> = sources
        .iter()
        .map(|s| s.name.as_str())
        .chain([BUILTIN_WORLD])
        .collect();
    all_names.sort_unstable();
    all_names.dedup();
    let rank_of = |n: &str| all_names.binary_search(&n).expect("listed") as u32;
    let ranks: Vec<u32> = sources
        .iter()
        .map(|s| rank_of(&s.name))
        .chain([rank_of(BUILTIN_WORLD)])
        .collect();
    let mut keys: HashMap<&Vec<usize>, Vec<u32>> = HashMap::new();
    for set in sets.values() {
        keys.entry(set).or_insert_with(|| {
            let mut k: Vec<u32> = set.iter().map(|&i| ranks[i]).collect();
            k.sort_unstable();
            k.dedup();
            k
        });
    }
    // Ids in `id_order`: plain `world` first, then by group list.
    let plain_world = [rank_of(BUILTIN_WORLD)];
    let mut distinct: Vec<&Vec<u32>> = keys.values().collect::<BTreeSet<_>>().into_iter().collect();
    distinct.sort_by_key(|k| k.as_slice() != plain_world);
    let by_key: HashMap<&Vec<u32>, u32> =
        distinct.iter().zip(1..).map(|(k, id)| (*k, id)).collect();
    let ids: HashMap<Vec<usize>, u32> = keys
        .iter()
        .map(|(set, k)| ((*set).clone(), by_key[k]))
        .collect();
    let infos: Vec<IdentityInfo> = distinct
        .iter()
        .zip(1..)
        .map(|(k, id)| IdentityInfo {
            id,
            groups: k
                .iter()
                .map(|&r| all_names[r as usize].to_string())
                .collect(),
        })
        .collect();

    // A prefix with the same identity as the nearest shorter one changes no
    // lookup result, so it stays out of the maps.
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (p, set) in &sets {
        let id = ids[set];
        let parent = index.ancestors(p).skip(1).find(|a| sets.contains_key(a));
        if parent.is_some_and(|a| ids[&sets[&a]] == id) {
            continue;
        }
        match p {
            IpNet::V4(n) => v4.push((*n, id)),
            IpNet::V6(n) => v6.push((*n, id)),
        }
    }
    let mut by_rank: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); all_names.len()];
    for (k, id) in distinct.iter().zip(1..) {
        for &r in k.iter() {
            by_rank[r as usize].insert(id);
        }
    }
    let members: HashMap<String, BTreeSet<u32>> = by_rank
        .into_iter()
        .zip(&all_names)
        .filter(|(m, _)| !m.is_empty())
        .map(|(m, n)| (n.to_string(), m))
        .collect();
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
