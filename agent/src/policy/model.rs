//! The policy as plain data: what the files say, after parsing and merging.

use std::fmt;

use ipnet::IpNet;

use super::error::Origin;
use super::netpol::{NetworkPolicy, Workloads};
use super::selector::LabelSelector;

/// Names the policy language reserves for built-in groups.
pub const BUILTIN_ANY: &str = "any";
pub const BUILTIN_WORLD: &str = "world";
pub const BUILTIN_HOST: &str = "host";
/// The cluster's nodes: `--node-cidr` prefixes and the node's own addresses,
/// the only sources encapsulated traffic to the node is accepted from.
pub const BUILTIN_NODES: &str = "nodes";
pub const BUILTIN_GROUPS: [&str; 4] = [BUILTIN_ANY, BUILTIN_WORLD, BUILTIN_HOST, BUILTIN_NODES];

/// Prefix of the names of rules the compiler adds itself; files may not use it.
pub const BUILTIN_RULE_PREFIX: &str = "builtin:";

/// Why `name` cannot name a group, if it cannot.
pub fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a group name may not be empty".into());
    }
    if BUILTIN_GROUPS.contains(&name) {
        return Err(format!(
            "{name:?} is a built-in group and cannot be redefined"
        ));
    }
    // Rules read such a word as a prefix, so the group could never be named.
    if super::cidr::looks_like_cidr(name) {
        return Err(format!(
            "{name:?} cannot be a group name: rules would read it as a CIDR"
        ));
    }
    Ok(())
}

/// Why `name` cannot name a rule, if it cannot.
pub fn check_rule_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a rule name may not be empty".into());
    }
    if name.starts_with(BUILTIN_RULE_PREFIX) {
        return Err(format!(
            "rule names starting with {BUILTIN_RULE_PREFIX:?} are reserved for the agent's own rules"
        ));
    }
    Ok(())
}

/// The merged policy of a directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// In file order (files sorted by name), then document order.
    pub groups: Vec<Group>,
    /// In the same order; a rule's id is 1 + its index here.
    pub rules: Vec<Rule>,
    /// Some file asked for traffic from and to the node itself to be enforced.
    pub enforce_host: bool,
    /// NetworkPolicies read with the Kubernetes objects (selectors kept).
    pub netpols: Vec<NetworkPolicy>,
    /// What they mean over the pods, once resolved (`load::with_cluster`):
    /// then the compiler applies Kubernetes' isolation semantics.
    pub workloads: Option<Workloads>,
}

impl Policy {
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// One parsed file, before merging.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyFile {
    /// The name errors use for the file (its path as given).
    pub name: String,
    pub groups: Vec<Group>,
    pub rules: Vec<Rule>,
    pub enforce_host: bool,
    pub netpols: Vec<NetworkPolicy>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    /// Canonical (host bits zero), deduplicated, in file order.
    pub cidrs: Vec<IpNet>,
    /// Each inside one of `cidrs`.
    pub except: Vec<IpNet>,
    /// Made up by the agent for a peer that is not a named set of addresses (an
    /// `ipBlock` with `except` of a Kubernetes NetworkPolicy). Like a literal CIDR
    /// in a rule it does not take its addresses out of `world`: importing
    /// `0.0.0.0/0 except 10.0.0.0/8` must not change what `world` means elsewhere.
    pub anonymous: bool,
    /// `audit: true`: traffic from or to the group's addresses that the policy
    /// denies passes and is counted as would-deny (verdict `audit`).
    pub audit: bool,
    /// A selector group (`{namespace: ..., pods: ...}`): its `cidrs` are the
    /// addresses of the pods it selects, filled in from the Kubernetes objects
    /// before compiling (empty without them).
    pub selector: Option<GroupSelector>,
    pub origin: Option<Origin>,
}

/// Which pods a selector group stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupSelector {
    pub namespaces: NamespaceSelector,
    pub pods: LabelSelector,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceSelector {
    /// `namespace: NAME`.
    Named(String),
    /// `namespaces: SELECTOR`, on the namespaces' labels.
    Matching(LabelSelector),
}

impl fmt::Display for GroupSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespaces {
            NamespaceSelector::Named(n) => write!(f, "namespace {n}")?,
            NamespaceSelector::Matching(s) => write!(f, "namespaces {s}")?,
        }
        write!(f, ", pods {}", self.pods)
    }
}

impl Group {
    pub fn new(name: &str, cidrs: &[IpNet], except: &[IpNet]) -> Self {
        Self {
            name: name.to_string(),
            cidrs: cidrs.to_vec(),
            except: except.to_vec(),
            anonymous: false,
            audit: false,
            selector: None,
            origin: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub from: Vec<Peer>,
    pub to: Vec<Peer>,
    /// Empty: every protocol and port.
    pub ports: Vec<PortSpec>,
    /// `within: [a, b]`: `from` and `to` both hold `[a, b]`, and the rule allows
    /// a -> a and b -> b (not a -> b), on every port.
    pub within: bool,
    /// `audit: true`: the rule allows its traffic, but what it alone allows is
    /// reported with verdict `audit` (it would be denied without the rule).
    pub audit: bool,
    pub origin: Option<RuleOrigin>,
}

impl Rule {
    pub fn new(name: &str, from: &[Peer], to: &[Peer], ports: &[PortSpec]) -> Self {
        Self {
            name: name.to_string(),
            from: from.to_vec(),
            to: to.to_vec(),
            ports: ports.to_vec(),
            within: false,
            audit: false,
            origin: None,
        }
    }

    pub fn within(name: &str, peers: &[Peer]) -> Self {
        Self {
            within: true,
            ..Self::new(name, peers, peers, &[])
        }
    }

    /// What the rule allows on one line: `from a, b to c ports 80/tcp` (ports
    /// `any` when it has none), or `within a, b`.
    pub fn summary(&self) -> String {
        let list = |items: Vec<String>| items.join(", ");
        let peers = |p: &[Peer]| list(p.iter().map(Peer::to_string).collect());
        if self.within {
            return format!("within {}", peers(&self.from));
        }
        let ports = if self.ports.is_empty() {
            "any".to_string()
        } else {
            list(self.ports.iter().map(PortSpec::to_string).collect())
        };
        format!(
            "from {} to {} ports {ports}",
            peers(&self.from),
            peers(&self.to)
        )
    }
}

/// Where a rule and each of its peers were written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleOrigin {
    pub rule: Origin,
    /// Parallel to `Rule::from` / `Rule::to` (for `within`, both point at `within`).
    pub from: Vec<Origin>,
    pub to: Vec<Origin>,
}

/// One side of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// A user group, by name.
    Group(String),
    /// Every address.
    Any,
    /// Every address in no user group and not the node's own.
    World,
    /// The node's own addresses.
    Host,
    /// The cluster's nodes (`--node-cidr`) and the node's own addresses.
    Nodes,
    /// A literal prefix, which behaves as an anonymous group.
    Cidr(IpNet),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Group(g) => f.write_str(g),
            Peer::Any => f.write_str(BUILTIN_ANY),
            Peer::World => f.write_str(BUILTIN_WORLD),
            Peer::Host => f.write_str(BUILTIN_HOST),
            Peer::Nodes => f.write_str(BUILTIN_NODES),
            Peer::Cidr(n) => write!(f, "{n}"),
        }
    }
}

/// What a rule allows of a packet's protocol and destination port.
///
/// For ICMP and ICMPv6 the 16-bit "port" is `type << 8 | code`, as in the rule
/// map key, so `icmp/8` is the range `0x0800..=0x08ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    /// `None`: every protocol (then `range` is `None` too).
    pub proto: Option<u8>,
    /// Inclusive; `None`: every port of `proto`.
    pub range: Option<(u16, u16)>,
}

impl PortSpec {
    pub const ANY: PortSpec = PortSpec {
        proto: None,
        range: None,
    };

    pub const fn proto(proto: u8) -> Self {
        Self {
            proto: Some(proto),
            range: None,
        }
    }

    pub const fn port(proto: u8, port: u16) -> Self {
        Self::range(proto, port, port)
    }

    pub const fn range(proto: u8, low: u16, high: u16) -> Self {
        Self {
            proto: Some(proto),
            range: Some((low, high)),
        }
    }

    pub fn matches(&self, proto: u8, port: u16) -> bool {
        match (self.proto, self.range) {
            (None, _) => true,
            (Some(p), None) => p == proto,
            (Some(p), Some((lo, hi))) => p == proto && (lo..=hi).contains(&port),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::ports::format(self, f)
    }
}
