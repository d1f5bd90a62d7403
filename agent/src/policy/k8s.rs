//! Kubernetes NetworkPolicy objects (`networking.k8s.io/v1`) mapped onto the
//! policy model, so a policy directory can hold them next to native files.
//!
//! The agent has no Kubernetes API, so only what can be decided from the file
//! alone is accepted; anything else is an error naming the field, never skipped
//! (a skipped peer or port would silently change what is allowed):
//!
//! - The pods `spec.podSelector` selects are named by the annotation
//!   `netpol-agent/cidrs: "10.0.1.0/24, fd00:0:1::/64"` (CIDRs or addresses,
//!   separated by commas or spaces). They become a group named
//!   `<namespace>/<name>` (namespace `default` when absent), which counts as a
//!   user group (its addresses are not `world`) and which native rules may name.
//! - `policyTypes` lists `Ingress` and/or `Egress`; when absent it is `Ingress`,
//!   plus `Egress` if there is an `egress` section (the Kubernetes defaults).
//!   Rules under a direction policyTypes does not list would have no effect in
//!   Kubernetes, so they are an error here rather than ignored.
//! - `spec.ingress[i]` becomes rule `<namespace>/<name>/ingress[i]`: from its
//!   `from` peers to the selected group; `spec.egress[i]` becomes
//!   `<namespace>/<name>/egress[i]`: from the selected group to its `to` peers.
//!   A direction listed with no rules adds no rule: default deny.
//! - A peer is an `ipBlock`: `cidr` alone becomes that prefix as a literal peer;
//!   with `except` it becomes an anonymous group `<namespace>/<name>/ingress[i].from[j]`
//!   which, like a literal prefix, does not take addresses out of `world`.
//!   `except` must lie strictly inside `cidr`. An absent or empty `from`/`to`
//!   means every address (`any`). `podSelector` and `namespaceSelector` peers
//!   need the Kubernetes API and are rejected.
//! - `ports[k]`: `protocol` TCP (default), UDP or SCTP; `port` a number (named
//!   ports are rejected), optionally with `endPort` for a range; no `port` means
//!   every port of the protocol. An absent or empty `ports` means every protocol
//!   and port.
//!
//! One difference remains by design: Kubernetes leaves pods that no policy
//! selects (and directions no policy lists) open, while the agent denies
//! everything no rule allows, NetworkPolicy or native.

use agent_common::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};
use ipnet::IpNet;

use super::cidr;
use super::error::Origin;
use super::model::{check_group_name, Group, Peer, PortSpec, Rule, RuleOrigin};
use super::parse::{is_null, join, Ctx, Entry};
use super::yaml::{Kind, Node};

pub const API_VERSION: &str = "networking.k8s.io/v1";
pub const KIND: &str = "NetworkPolicy";
/// Annotation naming the addresses of the pods the policy selects.
pub const CIDRS_ANNOTATION: &str = "netpol-agent/cidrs";
const DEFAULT_NAMESPACE: &str = "default";

const OBJECT_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const SPEC_KEYS: &[&str] = &["podSelector", "policyTypes", "ingress", "egress"];
const PEER_KEYS: &[&str] = &["ipBlock", "podSelector", "namespaceSelector"];
const IPBLOCK_KEYS: &[&str] = &["cidr", "except"];
const PORT_KEYS: &[&str] = &["protocol", "port", "endPort"];
const NEEDS_API: &str = "needs the Kubernetes API; use ipBlock";

/// Whether a YAML document is a Kubernetes object rather than native policy.
pub(super) fn is_object(doc: &Node) -> bool {
    let Kind::Map(pairs) = &doc.kind else {
        return false;
    };
    pairs.iter().any(
        |(k, _)| matches!(&k.kind, Kind::Scalar(s) if s.text == "apiVersion" || s.text == "kind"),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn policy_type(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }

    /// The key of a rule's peers: the other end of the traffic.
    fn peers_key(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

/// The pods the policy selects, as a group.
struct Selected {
    /// `<namespace>/<name>`: the group's name and the prefix of rule names.
    name: String,
    origin: Origin,
}

fn get<'a, 'n>(entries: &'a [Entry<'n>], key: &str) -> Option<&'a Entry<'n>> {
    entries.iter().find(|e| e.key == key)
}

/// A DNS-1123 label, as Kubernetes requires of namespaces.
fn dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| ok(c) || c == '-')
        && s.starts_with(ok)
        && s.ends_with(ok)
}

/// A DNS-1123 subdomain, as Kubernetes requires of object names.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

impl Ctx<'_> {
    /// One Kubernetes object: a NetworkPolicy, or an error saying what is understood.
    pub(super) fn k8s_object(&mut self, doc: &Node) {
        let what = "a Kubernetes object";
        let Some(entries) = self.mapping(doc, "", Some(OBJECT_KEYS), what) else {
            return;
        };
        let mut text = |key: &str| {
            let e = get(&entries, key)?;
            let s = self.string(e.value, key, &format!("a {key}"))?;
            Some((s, e.value))
        };
        let (api, kind) = (text("apiVersion"), text("kind"));
        let (Some((api, api_node)), Some((kind, kind_node))) = (api, kind) else {
            let msg = format!("a Kubernetes object needs apiVersion and kind (only {KIND} of {API_VERSION} is understood)");
            self.err(doc.pos, "", msg);
            return;
        };
        if kind != KIND {
            let msg = format!(
                "{kind:?} is not understood: policy files hold native policy or {KIND} objects ({API_VERSION})"
            );
            self.err(kind_node.pos, "kind", msg);
            return;
        }
        if api != API_VERSION {
            let msg = format!("{KIND} of apiVersion {api:?} is not understood: use {API_VERSION}");
            self.err(api_node.pos, "apiVersion", msg);
            return;
        }
        if self.kube() {
            self.kube_netpol(doc, &entries);
            return;
        }
        let selected = self.metadata(doc, get(&entries, "metadata"));
        let Some(spec) = get(&entries, "spec") else {
            self.err(doc.pos, "", "missing \"spec\"");
            return;
        };
        // Without a usable name and annotation the spec is still checked, so
        // that one run reports every problem of the file.
        let selected = selected.unwrap_or_else(|| Selected {
            name: "?".into(),
            origin: self.origin(doc.pos, "metadata"),
        });
        self.spec(spec.value, &selected);
    }

    /// With the Kubernetes objects at hand: name and namespace, and the spec
    /// with its selectors (no annotation needed).
    fn kube_netpol(&mut self, doc: &Node, entries: &[Entry]) {
        let Some(meta) = get(entries, "metadata") else {
            self.err(doc.pos, "", "missing \"metadata\"");
            return;
        };
        let Some(m) = self.mapping(meta.value, "metadata", None, "a mapping") else {
            return;
        };
        let name = match get(&m, "name") {
            None => {
                self.err(meta.value.pos, "metadata", "missing \"name\"");
                None
            }
            Some(e) => self.k8s_name(e.value, "metadata.name", dns_subdomain),
        };
        let namespace = match get(&m, "namespace") {
            None => Some(DEFAULT_NAMESPACE.to_string()),
            Some(e) => self.k8s_name(e.value, "metadata.namespace", dns_label),
        };
        let Some(spec) = get(entries, "spec") else {
            self.err(doc.pos, "", "missing \"spec\"");
            return;
        };
        let (Some(name), Some(namespace)) = (name, namespace) else {
            return;
        };
        if let Some(np) = self.netpol(doc, namespace, name, spec.value) {
            self.out.netpols.push(np);
        }
    }

    /// The selected pods' group, from the name, namespace and annotation.
    fn metadata(&mut self, doc: &Node, meta: Option<&Entry>) -> Option<Selected> {
        let Some(meta) = meta else {
            self.err(doc.pos, "", "missing \"metadata\"");
            return None;
        };
        // Other metadata (labels, uid, managedFields, ...) is descriptive.
        let entries = self.mapping(meta.value, "metadata", None, "a mapping")?;
        let name = match get(&entries, "name") {
            None => {
                self.err(meta.value.pos, "metadata", "missing \"name\"");
                None
            }
            Some(e) => self.k8s_name(e.value, "metadata.name", dns_subdomain),
        };
        let namespace = match get(&entries, "namespace") {
            None => Some(DEFAULT_NAMESPACE.to_string()),
            Some(e) => self.k8s_name(e.value, "metadata.namespace", dns_label),
        };
        let cidrs = self.cidrs_annotation(meta.value, get(&entries, "annotations"));
        let (name, namespace, (origin, cidrs)) = (name?, namespace?, cidrs?);
        let group = format!("{namespace}/{name}");
        if let Err(msg) = check_group_name(&group) {
            self.err(meta.value.pos, "metadata.name", msg);
            return None;
        }
        self.out.groups.push(Group {
            origin: Some(origin.clone()),
            ..Group::new(&group, &cidrs, &[])
        });
        Some(Selected {
            name: group,
            origin,
        })
    }

    fn k8s_name(&mut self, node: &Node, field: &str, valid: fn(&str) -> bool) -> Option<String> {
        let s = self.string(node, field, "a name")?;
        if valid(&s) {
            return Some(s);
        }
        let msg = format!("{s:?} is not a valid Kubernetes name (lower-case letters, digits, '-')");
        self.err(node.pos, field, msg);
        None
    }

    /// The `netpol-agent/cidrs` annotation's prefixes, with where it was written.
    fn cidrs_annotation(
        &mut self,
        meta: &Node,
        annotations: Option<&Entry>,
    ) -> Option<(Origin, Vec<IpNet>)> {
        let field = "metadata.annotations";
        let value = match annotations {
            Some(a) => {
                let entries = self.mapping(a.value, field, None, "a mapping")?;
                get(&entries, CIDRS_ANNOTATION).map(|e| e.value)
            }
            None => None,
        };
        let Some(value) = value else {
            let at = annotations.map_or(meta.pos, |a| a.key_node.pos);
            let msg = format!(
                "missing annotation {CIDRS_ANNOTATION:?}: without the Kubernetes API the agent cannot find the pods \
                 spec.podSelector selects; list their addresses, e.g. {CIDRS_ANNOTATION}: \"10.0.1.0/24, fd00:0:1::/64\""
            );
            self.err(at, field, msg);
            return None;
        };
        let field = join(field, CIDRS_ANNOTATION);
        let text = self.string(value, &field, "a string of CIDRs")?;
        let mut out: Vec<IpNet> = Vec::new();
        let mut ok = true;
        for item in text.split([',', ' ', '\t', '\n']).filter(|s| !s.is_empty()) {
            match cidr::parse(item) {
                Ok(n) if !out.contains(&n) => out.push(n),
                Ok(_) => {}
                Err(msg) => {
                    self.err(value.pos, &field, format!("{item:?}: {msg}"));
                    ok = false;
                }
            }
        }
        if ok && out.is_empty() {
            self.err(value.pos, &field, "names no addresses");
            ok = false;
        }
        ok.then(|| (self.origin(value.pos, &field), out))
    }

    fn spec(&mut self, node: &Node, selected: &Selected) {
        let Some(entries) = self.mapping(node, "spec", Some(SPEC_KEYS), "a mapping") else {
            return;
        };
        match get(&entries, "podSelector") {
            None => self.err(node.pos, "spec", "missing \"podSelector\""),
            // What it selects is given by the annotation; its content is not read.
            Some(e) if !is_null(e.value) && !matches!(e.value.kind, Kind::Map(_)) => {
                self.expected(e.value, "spec.podSelector", "a label selector");
            }
            Some(_) => {}
        }
        let types = self.policy_types(&entries);
        for dir in [Direction::Ingress, Direction::Egress] {
            let Some(section) = get(&entries, dir.key()) else {
                continue; // listed without rules: deny
            };
            let field = join("spec", dir.key());
            if is_null(section.value) || matches!(&section.value.kind, Kind::Seq(v) if v.is_empty())
            {
                continue;
            }
            if !types.contains(&dir) {
                let t = dir.policy_type();
                let msg = format!(
                    "policyTypes does not list {t}, so Kubernetes would ignore these rules; add {t} or remove them"
                );
                self.err(section.key_node.pos, &field, msg);
                continue;
            }
            let Kind::Seq(items) = &section.value.kind else {
                self.expected(section.value, &field, "a list of rules");
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                if let Some(rule) = self.k8s_rule(item, &format!("{field}[{i}]"), dir, i, selected)
                {
                    self.out.rules.push(rule);
                }
            }
        }
    }

    /// The directions the policy covers (Kubernetes' defaults when absent).
    /// After an error, both: the rules are still checked, and no second error
    /// blames them for a direction the typo left out.
    fn policy_types(&mut self, entries: &[Entry]) -> Vec<Direction> {
        let Some(e) = get(entries, "policyTypes") else {
            let mut out = vec![Direction::Ingress];
            if get(entries, "egress").is_some() {
                out.push(Direction::Egress);
            }
            return out;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (f, item) in self.items(e.value, "spec.policyTypes", "a list of Ingress, Egress") {
            match self.string(item, &f, "Ingress or Egress").as_deref() {
                Some("Ingress") => out.push(Direction::Ingress),
                Some("Egress") => out.push(Direction::Egress),
                Some(t) => {
                    let msg = format!("{t:?}: expected Ingress or Egress");
                    self.err(item.pos, &f, msg);
                    ok = false;
                }
                None => ok = false,
            }
        }
        if ok {
            out
        } else {
            vec![Direction::Ingress, Direction::Egress]
        }
    }

    fn k8s_rule(
        &mut self,
        node: &Node,
        field: &str,
        dir: Direction,
        index: usize,
        selected: &Selected,
    ) -> Option<Rule> {
        let keys = [dir.peers_key(), "ports"];
        let entries = self.mapping(node, field, Some(&keys[..]), "a rule")?;
        let peers_field = join(field, dir.peers_key());
        let name = format!("{}/{}[{index}]", selected.name, dir.key());
        let mut ok = true;
        let peers = match get(&entries, dir.peers_key()) {
            Some(e)
                if !is_null(e.value) && !matches!(&e.value.kind, Kind::Seq(v) if v.is_empty()) =>
            {
                let prefix = format!(
                    "{}/{}[{index}].{}",
                    selected.name,
                    dir.key(),
                    dir.peers_key()
                );
                let peers = self.k8s_peers(e.value, &peers_field, &prefix);
                ok &= peers.is_some();
                peers.unwrap_or_default()
            }
            // No peers: every address, as in Kubernetes.
            _ => vec![(Peer::Any, self.origin(node.pos, &peers_field))],
        };
        let ports = match get(&entries, "ports") {
            Some(e) => self.k8s_ports(e.value, &join(field, "ports")),
            None => Some(Vec::new()),
        };
        ok &= ports.is_some();
        let pods = vec![(Peer::Group(selected.name.clone()), selected.origin.clone())];
        let (from, to) = match dir {
            Direction::Ingress => (peers, pods),
            Direction::Egress => (pods, peers),
        };
        let (from, from_at): (Vec<Peer>, Vec<Origin>) = from.into_iter().unzip();
        let (to, to_at): (Vec<Peer>, Vec<Origin>) = to.into_iter().unzip();
        let mut rule = Rule::new(&name, &from, &to, &ports.unwrap_or_default());
        rule.origin = Some(RuleOrigin {
            rule: self.origin(node.pos, field),
            from: from_at,
            to: to_at,
        });
        ok.then_some(rule)
    }

    /// `None` after an error.
    fn k8s_peers(&mut self, node: &Node, field: &str, prefix: &str) -> Option<Vec<(Peer, Origin)>> {
        let Kind::Seq(items) = &node.kind else {
            self.expected(node, field, "a list of peers");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (j, item) in items.iter().enumerate() {
            let f = format!("{field}[{j}]");
            match self.k8s_peer(item, &f, &format!("{prefix}[{j}]")) {
                Some(p) => out.push((p, self.origin(item.pos, &f))),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn k8s_peer(&mut self, node: &Node, field: &str, group_name: &str) -> Option<Peer> {
        let entries = self.mapping(node, field, Some(PEER_KEYS), "a peer with ipBlock")?;
        let mut ok = true;
        for e in entries.iter().filter(|e| e.key != "ipBlock") {
            self.err(e.key_node.pos, &join(field, &e.key), NEEDS_API);
            ok = false;
        }
        let Some(block) = get(&entries, "ipBlock") else {
            if ok {
                self.err(node.pos, field, "a peer needs ipBlock");
            }
            return None;
        };
        let peer = self.ip_block(block, &join(field, "ipBlock"), group_name);
        peer.filter(|_| ok)
    }

    pub(super) fn ip_block(
        &mut self,
        block: &Entry,
        field: &str,
        group_name: &str,
    ) -> Option<Peer> {
        let what = "a mapping with cidr and except";
        let entries = self.mapping(block.value, field, Some(IPBLOCK_KEYS), what)?;
        let Some(c) = get(&entries, "cidr") else {
            self.err(block.value.pos, field, "missing \"cidr\"");
            return None;
        };
        let cidr_field = join(field, "cidr");
        let text = self.string(c.value, &cidr_field, "a CIDR")?;
        let net = match cidr::parse(&text) {
            Ok(n) => n,
            Err(msg) => {
                self.err(c.value.pos, &cidr_field, format!("{text:?}: {msg}"));
                return None;
            }
        };
        let Some(except) = get(&entries, "except").filter(|e| !is_null(e.value)) else {
            return Some(Peer::Cidr(net));
        };
        let mut carved = Vec::new();
        let mut ok = true;
        for (pos, f, x) in self.cidr_list(except.value, &join(field, "except")) {
            if !(net.contains(&x) && x.prefix_len() > net.prefix_len()) {
                self.err(pos, &f, format!("{x} is not strictly inside cidr {net}"));
                ok = false;
            } else if !carved.contains(&x) {
                carved.push(x);
            }
        }
        if !ok {
            return None;
        }
        if carved.is_empty() {
            return Some(Peer::Cidr(net));
        }
        self.out.groups.push(Group {
            anonymous: true,
            origin: Some(self.origin(block.key_node.pos, field)),
            ..Group::new(group_name, &[net], &carved)
        });
        Some(Peer::Group(group_name.to_string()))
    }

    /// Empty: every protocol and port. `None` after an error.
    fn k8s_ports(&mut self, node: &Node, field: &str) -> Option<Vec<PortSpec>> {
        if is_null(node) {
            return Some(Vec::new());
        }
        let Kind::Seq(items) = &node.kind else {
            self.expected(node, field, "a list of ports");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (k, item) in items.iter().enumerate() {
            match self.k8s_port(item, &format!("{field}[{k}]")) {
                Some(spec) if !out.contains(&spec) => out.push(spec),
                Some(_) => {}
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(super) fn k8s_port(&mut self, node: &Node, field: &str) -> Option<PortSpec> {
        let what = "a mapping with protocol, port and endPort";
        let entries = self.mapping(node, field, Some(PORT_KEYS), what)?;
        let proto = match get(&entries, "protocol") {
            None => Some(IPPROTO_TCP),
            Some(e) => self.k8s_protocol(e.value, &join(field, "protocol")),
        };
        let port =
            get(&entries, "port").map(|e| (e, self.port_number(e.value, &join(field, "port"))));
        let end = get(&entries, "endPort")
            .map(|e| (e, self.port_number(e.value, &join(field, "endPort"))));
        let proto = proto?;
        match (port, end) {
            (None, None) => Some(PortSpec::proto(proto)),
            (None, Some((e, _))) => {
                self.err(
                    e.key_node.pos,
                    &join(field, "endPort"),
                    "endPort needs port",
                );
                None
            }
            (Some((_, p)), None) => Some(PortSpec::port(proto, p?)),
            (Some((_, p)), Some((e, end))) => {
                let (p, end) = (p?, end?);
                if end < p {
                    let msg = format!("endPort {end} is below port {p}");
                    self.err(e.value.pos, &join(field, "endPort"), msg);
                    return None;
                }
                Some(PortSpec::range(proto, p, end))
            }
        }
    }

    pub(super) fn k8s_protocol(&mut self, node: &Node, field: &str) -> Option<u8> {
        let text = self.string(node, field, "TCP, UDP or SCTP")?;
        match text.as_str() {
            "TCP" => Some(IPPROTO_TCP),
            "UDP" => Some(IPPROTO_UDP),
            "SCTP" => Some(IPPROTO_SCTP),
            t => {
                let upper = t.to_ascii_uppercase();
                let hint = if ["TCP", "UDP", "SCTP"].contains(&upper.as_str()) {
                    format!(" (Kubernetes writes it {upper})")
                } else {
                    String::new()
                };
                self.err(
                    node.pos,
                    field,
                    format!("{t:?}: expected TCP, UDP or SCTP{hint}"),
                );
                None
            }
        }
    }

    /// A port number; names need the pods' container specs, so they are rejected.
    fn port_number(&mut self, node: &Node, field: &str) -> Option<u16> {
        let Kind::Scalar(s) = &node.kind else {
            self.expected(node, field, "a port number");
            return None;
        };
        if !s.is_int() {
            let msg = format!(
                "named port {:?} needs the Kubernetes API (the pods' container ports); use the port number",
                s.text
            );
            self.err(node.pos, field, msg);
            return None;
        }
        match s.text.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.err(node.pos, field, format!("{}: port must be 1-65535", s.text));
                None
            }
        }
    }
}
