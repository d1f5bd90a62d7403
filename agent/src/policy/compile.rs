//! A `Policy` to the contents of the identity tries and the rule trie.
//!
//! The output is a pure function of the input, in a fixed order, so a reload can
//! diff old and new maps entry by entry.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use agent_common::{
    id_flag_dst, id_flag_src, proto_class, IdentityValue, RuleKey, RuleValue, ID_FLAG_ANY_AUDIT,
    ID_FLAG_AUDIT, IPPROTO_UDP, PROTO_CLASSES, RULE_FLAG_AUDIT, RULE_FLAG_DENY, RULE_PREFIX_FULL,
    RULE_PREFIX_IDS, RULE_PREFIX_PROTO,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::CompileError;
use super::identity::{self, cidr_group_name, Identities, IdentityInfo};
use super::model::{
    check_rule_name, Peer, Policy, PortSpec, Rule, BUILTIN_HOST, BUILTIN_NODES, BUILTIN_WORLD,
};
use super::ports::blocks;

/// Names of the rules that let the node's own traffic through unless the
/// policy enforces it.
pub const HOST_INGRESS_RULE: &str = "builtin:host-ingress";
pub const HOST_EGRESS_RULE: &str = "builtin:host-egress";
/// Name of the rule that lets encapsulated traffic reach the node from
/// `nodes`, the only sources `builtin:host-ingress` leaves it to.
pub const NODE_ENCAP_RULE: &str = "builtin:node-encap";
/// What `explain` adds to `builtin:host-ingress` when it refuses a packet.
pub const ENCAP_REFUSAL: &str = "encapsulation only from nodes";

/// UDP ports of the tunnels the kernel decapsulates: VXLAN (IANA 4789, and
/// 8472, the Linux default that flannel and Cilium use) and Geneve (6081).
pub const ENCAP_UDP_PORTS: [u16; 3] = [4789, 8472, 6081];
/// IP protocols the kernel decapsulates: IP-in-IP (4), IPv6-in-IP (41, also
/// SIT), GRE (47).
pub const ENCAP_PROTOS: [u8; 3] = [4, 41, 47];

/// Whether a packet with protocol `proto` and destination port `port` is a
/// tunnel the kernel would decapsulate: the inner packet is judged by its
/// own, forgeable, source, so the outer one must come from a node.
pub fn is_encap(proto: u8, port: u16) -> bool {
    ENCAP_PROTOS.contains(&proto) || (proto == IPPROTO_UDP && ENCAP_UDP_PORTS.contains(&port))
}

/// (prefix length, protocol, port) of the rule trie entries that cover
/// exactly the encapsulation protocols and ports.
fn encap_shapes() -> impl Iterator<Item = (u32, u8, u16)> {
    let udp = ENCAP_UDP_PORTS
        .into_iter()
        .map(|p| (RULE_PREFIX_FULL, IPPROTO_UDP, p));
    udp.chain(ENCAP_PROTOS.into_iter().map(|p| (RULE_PREFIX_PROTO, p, 0)))
}

/// The encapsulation protocols and ports as a rule writes them.
fn encap_specs() -> Vec<PortSpec> {
    let udp = ENCAP_UDP_PORTS.into_iter().map(|p| PortSpec {
        proto: Some(IPPROTO_UDP),
        range: Some((p, p)),
    });
    udp.chain(ENCAP_PROTOS.into_iter().map(|p| PortSpec {
        proto: Some(p),
        range: None,
    }))
    .collect()
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// The node's own addresses (the `host` group).
    pub host_addrs: Vec<IpAddr>,
    /// Enforce policy on traffic from and to `host` too; OR-ed with the policy's
    /// `settings.enforce-host`.
    pub enforce_host: bool,
    /// The cluster's node prefixes (`--node-cidr`): with the node's own
    /// addresses, the `nodes` group.
    pub node_cidrs: Vec<IpNet>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Sorted by prefix; always holds 0.0.0.0/0.
    pub ids_v4: Vec<(Ipv4Net, IdentityValue)>,
    /// Sorted by prefix; always holds ::/0.
    pub ids_v6: Vec<(Ipv6Net, IdentityValue)>,
    /// (LPM prefix length, key, value), sorted by key then prefix length.
    pub rules: Vec<(u32, RuleKey, RuleValue)>,
    /// Sorted by id.
    pub identities: Vec<IdentityInfo>,
    /// Index = rule id; index 0 is "" (never a rule).
    pub rule_names: Vec<String>,
    /// Index = rule id: the rule is audit-only (`audit: true`).
    pub rule_audit: Vec<bool>,
}

impl Compiled {
    pub fn identity(&self, id: u32) -> Option<&IdentityInfo> {
        self.identities.iter().find(|i| i.id == id)
    }

    pub fn rule_name(&self, rule_id: u32) -> Option<&str> {
        self.rule_names
            .get(rule_id as usize)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
}

pub(super) type IdSet = BTreeSet<u32>;
/// Sources, destinations and the ports allowed between them (never empty:
/// `PortSpec::ANY` for every port).
pub(super) type Pair = (IdSet, IdSet, Vec<PortSpec>);

/// The identities a peer stands for, borrowed from the group's members
/// where it names one: with thousands of identities and policies, copying
/// each side's sets on every compile was most of a pod event's time.
pub(super) fn peer_ids<'i>(
    ids: &'i Identities,
    rule: &Rule,
    peer: &Peer,
) -> Result<Cow<'i, IdSet>, CompileError> {
    let with = |name: &str| match ids.members.get(name) {
        Some(set) => Cow::Borrowed(set),
        None => Cow::Owned(IdSet::new()),
    };
    Ok(match peer {
        Peer::Any => Cow::Owned(ids.infos.iter().map(|i| i.id).collect()),
        Peer::World => with(BUILTIN_WORLD),
        Peer::Host => with(BUILTIN_HOST),
        Peer::Nodes => with(BUILTIN_NODES),
        Peer::Cidr(n) => with(&cidr_group_name(n)),
        Peer::Group(g) if ids.defined.contains(g) => with(g),
        Peer::Group(g) => {
            return Err(CompileError::UnknownGroup {
                rule: rule.name.clone(),
                group: g.clone(),
            })
        }
    })
}

/// The identities any of `peers` stands for (borrowed when there is one).
pub(super) fn peers_ids<'i>(
    ids: &'i Identities,
    rule: &Rule,
    peers: &[Peer],
) -> Result<Cow<'i, IdSet>, CompileError> {
    if let [peer] = peers {
        return peer_ids(ids, rule, peer);
    }
    let mut out = IdSet::new();
    for p in peers {
        out.extend(peer_ids(ids, rule, p)?.iter());
    }
    Ok(Cow::Owned(out))
}

/// (prefix length, protocol, first port) of the trie entries matching `spec`.
fn spec_entries(rule: &Rule, spec: &PortSpec) -> Result<Vec<(u32, u8, u16)>, CompileError> {
    Ok(match (spec.proto, spec.range) {
        (None, None) => vec![(RULE_PREFIX_IDS, 0, 0)],
        (None, Some(_)) => {
            return Err(CompileError::BadRule {
                rule: rule.name.clone(),
                message: "a port range needs a protocol".into(),
            })
        }
        (Some(p), None) => vec![(RULE_PREFIX_PROTO, p, 0)],
        (Some(p), Some((lo, hi))) if lo <= hi => blocks(lo, hi)
            .into_iter()
            .map(|(base, bits)| (RULE_PREFIX_PROTO + 16 - bits, p, base))
            .collect(),
        (Some(_), Some((lo, hi))) => {
            return Err(CompileError::BadRule {
                rule: rule.name.clone(),
                message: format!("port range {lo}-{hi} is empty"),
            })
        }
    })
}

/// Identity flag bits an entry of protocol `proto` (0 with prefix 64 meaning
/// any) sets: (source bits, destination bits).
fn entry_flags(prefix: u32, proto: u8) -> (u32, u32) {
    if prefix == RULE_PREFIX_IDS {
        let all = 0..PROTO_CLASSES;
        (
            all.clone().map(id_flag_src).sum(),
            all.map(id_flag_dst).sum(),
        )
    } else {
        (
            id_flag_src(proto_class(proto)),
            id_flag_dst(proto_class(proto)),
        )
    }
}

/// The (source ids, destination ids) pairs of a rule: the whole product, or
/// each peer to itself for `within`.
fn rule_pairs(ids: &Identities, rule: &Rule) -> Result<Vec<(IdSet, IdSet)>, CompileError> {
    if rule.within {
        rule.from
            .iter()
            .map(|p| peer_ids(ids, rule, p).map(|s| (s.clone().into_owned(), s.into_owned())))
            .collect()
    } else {
        Ok(vec![(
            peers_ids(ids, rule, &rule.from)?.into_owned(),
            peers_ids(ids, rule, &rule.to)?.into_owned(),
        )])
    }
}

/// Whether traffic from and to `host` is subject to the policy.
pub fn enforces_host(policy: &Policy, opts: &CompileOptions) -> bool {
    opts.enforce_host || policy.enforce_host
}

/// The rules the compiler adds after the policy's own (ids continue from
/// theirs): unless the host is enforced, the node's own traffic passes,
/// except encapsulation to the node from outside `nodes` (`is_encap`), which
/// `builtin:node-encap` allows from `nodes` only. `explain` evaluates them
/// like any other rule (`builtin:host-ingress` refuses encapsulation there).
pub fn builtin_rules(policy: &Policy, opts: &CompileOptions) -> Vec<Rule> {
    if enforces_host(policy, opts) {
        return Vec::new();
    }
    vec![
        Rule::new(HOST_INGRESS_RULE, &[Peer::Any], &[Peer::Host], &[]),
        Rule::new(HOST_EGRESS_RULE, &[Peer::Host], &[Peer::Any], &[]),
        Rule::new(
            NODE_ENCAP_RULE,
            &[Peer::Nodes],
            &[Peer::Host],
            &encap_specs(),
        ),
    ]
}

/// `key` with every bit after the first `len` cleared, as a trie entry of
/// that prefix length is stored.
fn masked_key(key: &[u8; 12], len: u32) -> RuleKey {
    let mut b = *key;
    for (i, byte) in b.iter_mut().enumerate() {
        let keep = len.saturating_sub(i as u32 * 8).min(8);
        *byte &= !(0xffu16 >> keep) as u8;
    }
    RuleKey {
        slot: b[0],
        src_id: [b[1], b[2], b[3], b[4]],
        dst_id: [b[5], b[6], b[7], b[8]],
        proto: b[9],
        port: [b[10], b[11]],
    }
}

/// The longest entry of `entries` matching the fully specified `key`, as the
/// LPM trie finds it: (prefix length, rule id).
fn longest_match(entries: &BTreeMap<(RuleKey, u32), u32>, key: &RuleKey) -> Option<(u32, u32)> {
    let want = key.to_bytes();
    (RULE_PREFIX_IDS..=RULE_PREFIX_FULL).rev().find_map(|len| {
        let masked = masked_key(&want, len);
        entries.get(&(masked, len)).map(|&id| (len, id))
    })
}

pub fn compile(policy: &Policy, opts: &CompileOptions) -> Result<Compiled, CompileError> {
    let ids = identity::build(policy, &opts.host_addrs, &opts.node_cidrs)?;
    compile_with(policy, opts, &ids, None)
}

/// `compile` over identities already built. With `only`, the rule entries
/// are those whose source or destination is one of `only` (everything else
/// in the output is complete but the identity flags, which follow the
/// entries: see `set_identity_values`): an entry depends on nothing but the
/// groups of its two identities and the rules, so a caller holding the
/// others from an earlier compile of the same rules can keep them.
pub(super) fn compile_with(
    policy: &Policy,
    opts: &CompileOptions,
    ids: &Identities,
    only: Option<&IdSet>,
) -> Result<Compiled, CompileError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(policy.rules.len() + 2);
    for r in &policy.rules {
        let bad = |message: String| CompileError::BadRule {
            rule: r.name.clone(),
            message,
        };
        check_rule_name(&r.name).map_err(bad)?;
        if rules.iter().any(|o| o.name == r.name) {
            return Err(bad("defined twice".into()));
        }
        if r.within && !r.ports.is_empty() {
            return Err(bad("a within rule takes no ports".into()));
        }
        rules.push(r.clone());
    }
    rules.extend(builtin_rules(policy, opts));

    // What each rule contributes: (source ids, destination ids, ports) per
    // rule id. Native and built-in rules are their own pairs; with
    // NetworkPolicies, their sides are combined by Kubernetes' semantics.
    let mut effective: Vec<(u32, Vec<Pair>)> = Vec::new();
    for (rule, rule_id) in rules.iter().zip(1u32..) {
        let ports = if rule.ports.is_empty() {
            vec![PortSpec::ANY]
        } else {
            rule.ports.clone()
        };
        let pairs = rule_pairs(ids, rule)?
            .into_iter()
            .map(|(s, d)| (s, d, ports.clone()))
            .collect();
        effective.push((rule_id, pairs));
    }
    if let Some(w) = &policy.workloads {
        super::combine::workload_rules(ids, policy, w, &mut rules, &mut effective, only)?;
    }

    let host_ingress = rules
        .iter()
        .position(|r| r.name == HOST_INGRESS_RULE)
        .map(|i| i as u32 + 1);
    // Every (entry, rule) pair the rules make, sorted once: with hundreds
    // of thousands of entries, an ordered-map insert each was most of a
    // full compile.
    let mut made: Vec<((RuleKey, u32), u32)> = Vec::new();
    for (rule_id, pairs) in &effective {
        let (rule_id, rule) = (*rule_id, &rules[*rule_id as usize - 1]);
        for (srcs, dsts, specs) in pairs {
            if srcs.is_empty() || dsts.is_empty() {
                continue;
            }
            let mut shapes = Vec::new();
            for spec in specs {
                shapes.extend(spec_entries(rule, spec)?);
            }
            for &(prefix, proto, port) in &shapes {
                let mut put = |s: u32, d: u32| {
                    made.push(((RuleKey::new(s, d, proto, port), prefix), rule_id))
                };
                for &s in srcs {
                    match only {
                        Some(only) if !only.contains(&s) => only
                            .iter()
                            .filter(|d| dsts.contains(d))
                            .for_each(|&d| put(s, d)),
                        _ => dsts.iter().for_each(|&d| put(s, d)),
                    }
                }
            }
        }
    }
    made.sort_unstable();
    made.dedup();
    // Sorted by entry, then rule id: of the rules making one entry the
    // lowest id answers, except that an enforcing rule takes it from an
    // audit-only one (audit marks only what it alone allows). `skip` leaves
    // one rule out.
    let pick = |made: &[((RuleKey, u32), u32)], skip: Option<u32>| -> Option<u32> {
        let mut ids = made
            .iter()
            .map(|(_, id)| *id)
            .filter(|id| Some(*id) != skip);
        let first = ids.next()?;
        if !rules[first as usize - 1].audit {
            return Some(first);
        }
        Some(
            ids.find(|id| !rules[*id as usize - 1].audit)
                .unwrap_or(first),
        )
    };
    let (mut entries, mut others) = (Vec::new(), Vec::new());
    for same in made.chunk_by(|a, b| a.0 == b.0) {
        let key = same[0].0;
        entries.extend(pick(same, None).map(|id| (key, id)));
        if host_ingress.is_some() {
            // The same without `builtin:host-ingress`: what else allows a key.
            others.extend(pick(same, host_ingress).map(|id| (key, id)));
        }
    }
    drop(made);
    // Sorted and distinct: both maps are built in bulk.
    let mut entries: BTreeMap<(RuleKey, u32), u32> = entries.into_iter().collect();
    let others: BTreeMap<(RuleKey, u32), u32> = others.into_iter().collect();

    // `builtin:host-ingress` (any -> host, everything) must not let
    // encapsulation in from outside `nodes`: where it is what the trie would
    // answer for an encapsulation key, a deny entry of exactly that shape
    // takes its place. Where another rule allows the key too (an operator's
    // rule, `builtin:node-encap`), that rule answers instead. Decided here,
    // so the datapath does one lookup as before and only reads a flag.
    let mut denied: BTreeSet<(RuleKey, u32)> = BTreeSet::new();
    if let Some(hi) = host_ingress {
        let hosts = ids.members.get(BUILTIN_HOST).cloned().unwrap_or_default();
        for s in ids.infos.iter().map(|i| i.id) {
            for &d in &hosts {
                if only.is_some_and(|o| !o.contains(&s) && !o.contains(&d)) {
                    continue;
                }
                for (prefix, proto, port) in encap_shapes() {
                    let key = RuleKey::new(s, d, proto, port);
                    if longest_match(&entries, &key).is_none_or(|(_, id)| id != hi) {
                        continue;
                    }
                    match longest_match(&others, &key) {
                        // Another rule allows it, but `host-ingress` took the
                        // entry (from an audit-only rule): that rule answers.
                        Some((_, id)) => entries.insert((key, prefix), id),
                        None => {
                            denied.insert((key, prefix));
                            entries.insert((key, prefix), hi)
                        }
                    };
                }
            }
        }
    }

    let mut rule_names = vec![String::new()];
    let mut rule_audit = vec![false];
    rule_audit.extend(rules.iter().map(|r| r.audit));
    rule_names.extend(rules.into_iter().map(|r| r.name));
    let mut compiled = Compiled {
        ids_v4: Vec::new(),
        ids_v6: Vec::new(),
        rules: entries
            .into_iter()
            .map(|((key, prefix), rule_id)| {
                let flags = if denied.contains(&(key, prefix)) {
                    RULE_FLAG_DENY
                } else if rule_audit[rule_id as usize] {
                    RULE_FLAG_AUDIT
                } else {
                    0
                };
                (prefix, key, RuleValue { rule_id, flags })
            })
            .collect(),
        identities: ids.infos.clone(),
        rule_names,
        rule_audit,
    };
    set_identity_values(&mut compiled, policy, ids);
    Ok(compiled)
}

/// Fills in the identity prefixes of `compiled` with their flags, from its
/// rule entries: an identity gets the source (destination) bit of a
/// protocol class when some entry allows that class from (to) it, which is
/// what every rule pair that made the entry says. Derived from the entries,
/// so that a compile that reused most of them needs no rule pair again.
pub(super) fn set_identity_values(compiled: &mut Compiled, policy: &Policy, ids: &Identities) {
    let max_id = ids.infos.iter().map(|i| i.id).max().unwrap_or(0);
    // By id: hundreds of thousands of entries set bits of a few thousand
    // identities.
    let mut flags: Vec<u32> = vec![0; max_id as usize + 1];
    for (prefix, key, _) in &compiled.rules {
        let (fs, fd) = entry_flags(*prefix, key.proto);
        for (id, bits) in [(key.src_id, fs), (key.dst_id, fd)] {
            if let Some(f) = flags.get_mut(u32::from_be_bytes(id) as usize) {
                *f |= bits;
            }
        }
    }
    // Identities of audit-only groups: a denial from or to them passes.
    let audit_groups: BTreeSet<&str> = policy
        .groups
        .iter()
        .filter(|g| g.audit)
        .map(|g| g.name.as_str())
        .collect();
    let any_audit = if audit_groups.is_empty() {
        0
    } else {
        ID_FLAG_ANY_AUDIT
    };
    let audited: BTreeSet<u32> = ids
        .infos
        .iter()
        .filter(|i| i.groups.iter().any(|g| audit_groups.contains(g.as_str())))
        .map(|i| i.id)
        .collect();
    let value = |id: u32| IdentityValue {
        id,
        flags: flags.get(id as usize).copied().unwrap_or(0)
            | any_audit
            | if audited.contains(&id) {
                ID_FLAG_AUDIT
            } else {
                0
            },
    };
    compiled.ids_v4 = ids.v4.iter().map(|&(n, id)| (n, value(id))).collect();
    compiled.ids_v6 = ids.v6.iter().map(|&(n, id)| (n, value(id))).collect();
}

impl Compiled {
    /// What this policy enforces, independent of where it came from: every
    /// identity prefix and rule entry written with group and rule names
    /// instead of ids (ids depend on the order of the files and on the
    /// agent's history, and the rule names of a renumbered policy include
    /// removed rules), one line each, sorted. A rule that allows nothing
    /// enforces nothing and does not show. Prefixes of the node's own
    /// addresses, and the entries of identities a node address splits off a
    /// group, are left out: they differ between nodes by design, while the
    /// policy does not.
    pub fn canonical_text(&self) -> String {
        let groups = |id: u32| -> String {
            self.identity(id)
                .map(|i| i.groups.join(","))
                .unwrap_or_else(|| format!("#{id}"))
        };
        let has_host = |id: u32| {
            self.identity(id)
                .is_some_and(|i| i.groups.iter().any(|g| g == BUILTIN_HOST))
        };
        // A node address inside a group's CIDRs makes an identity of its own
        // (`host` and that group), on that node only; its rule entries repeat
        // those of `host` and of the group.
        // (Every node address is in `nodes` too, on every node alike.)
        let node_split = |id: u32| {
            has_host(id)
                && self.identity(id).is_some_and(|i| {
                    i.groups
                        .iter()
                        .any(|g| g != BUILTIN_HOST && g != BUILTIN_NODES)
                })
        };
        let mut lines: Vec<String> = Vec::new();
        for (net, v) in &self.ids_v4 {
            if !has_host(v.id) {
                lines.push(format!("prefix {net} [{}] {}", groups(v.id), v.flags));
            }
        }
        for (net, v) in &self.ids_v6 {
            if !has_host(v.id) {
                lines.push(format!("prefix {net} [{}] {}", groups(v.id), v.flags));
            }
        }
        for (len, key, value) in &self.rules {
            let (src, dst) = (
                u32::from_be_bytes(key.src_id),
                u32::from_be_bytes(key.dst_id),
            );
            if node_split(src) || node_split(dst) {
                continue;
            }
            let name = self.rule_name(value.rule_id).unwrap_or("");
            lines.push(format!(
                "rule /{len} [{}] -> [{}] {} {} {name} {}",
                groups(src),
                groups(dst),
                key.proto,
                u16::from_be_bytes(key.port),
                value.flags
            ));
        }
        lines.sort();
        lines.dedup();
        lines.join("\n")
    }

    /// The first 16 hex digits of the SHA-256 of `canonical_text`: two
    /// nodes enforcing the same policy show the same hash.
    pub fn content_hash(&self) -> String {
        let mut hex = crate::sha256_hex(self.canonical_text().as_bytes());
        hex.truncate(16);
        hex
    }
}
