//! One policy file's YAML tree to a `PolicyFile`, collecting every error with
//! the position and path of the node it is about. Anything not understood is an
//! error: a misspelt key silently ignored could weaken the policy.

use std::collections::HashSet;

use ipnet::IpNet;

use super::cidr;
use super::error::{Origin, PolicyError, PolicyErrors, Pos};
use super::model::{
    check_group_name, check_rule_name, Group, GroupSelector, NamespaceSelector, Peer, PolicyFile,
    PortSpec, Rule, RuleOrigin, BUILTIN_ANY, BUILTIN_HOST, BUILTIN_NODES, BUILTIN_WORLD,
};
use super::ports;
use super::selector::LabelSelector;
use super::suggest::did_you_mean;
use super::yaml::{self, Kind, Node};

const TOP_KEYS: &[&str] = &["groups", "rules", "settings"];
const GROUP_KEYS: &[&str] = &[
    "cidrs",
    "except",
    "audit",
    "namespace",
    "namespaces",
    "pods",
];
const SELECTOR_GROUP_KEYS: &[&str] = &["namespace", "namespaces", "pods"];
const RULE_KEYS: &[&str] = &["name", "from", "to", "ports", "within", "audit"];
const SETTINGS_KEYS: &[&str] = &["enforce-host"];

/// Parses the text of one policy file; `name` is what errors call the file.
pub fn parse_str(name: &str, text: &str) -> Result<PolicyFile, PolicyErrors> {
    parse_str_with(name, text, false)
}

/// `parse_str`; with `kube`, NetworkPolicies keep their selectors, to be
/// resolved against the Kubernetes objects.
pub fn parse_str_with(name: &str, text: &str, kube: bool) -> Result<PolicyFile, PolicyErrors> {
    let (file, errors) = parse_partial(name, text, kube);
    PolicyErrors::check(errors)?;
    // Only invalid YAML leaves no file, and that is an error.
    Ok(file.unwrap_or_default())
}

/// Parses as much of one policy file as it can, so that a directory's
/// cross-file errors (unknown groups, duplicate names) can be reported in the
/// same pass as each file's own: the file holds every group whose name is
/// valid (even when its CIDRs are not) and every rule without errors. `None`
/// when the YAML itself is invalid: then nothing is known of the file.
pub(super) fn parse_partial(
    name: &str,
    text: &str,
    kube: bool,
) -> (Option<PolicyFile>, Vec<PolicyError>) {
    let docs = match parse_yaml(name, text) {
        Ok(docs) => docs,
        Err(e) => return (None, vec![e]),
    };
    let mut cx = Ctx::new(name);
    cx.kube = kube;
    for doc in &docs {
        cx.document(doc);
    }
    let (file, errors) = cx.take();
    (Some(file), errors)
}

/// Every document of `text`, or the syntax error with its position in `name`.
pub(super) fn parse_yaml(name: &str, text: &str) -> Result<Vec<Node>, PolicyError> {
    yaml::parse(text).map_err(|e| PolicyError {
        file: name.to_string(),
        line: e.pos.line,
        column: e.pos.column,
        field: String::new(),
        message: format!("invalid YAML: {}", e.message),
    })
}

pub(super) struct Ctx<'a> {
    file: &'a str,
    /// The Kubernetes objects are at hand: NetworkPolicy selectors resolve.
    kube: bool,
    errors: Vec<PolicyError>,
    pub(super) out: PolicyFile,
}

/// A mapping entry whose key is a string.
pub(super) struct Entry<'n> {
    pub key: String,
    pub key_node: &'n Node,
    pub value: &'n Node,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(file: &'a str) -> Self {
        Ctx {
            file,
            kube: false,
            errors: Vec::new(),
            out: PolicyFile {
                name: file.to_string(),
                ..PolicyFile::default()
            },
        }
    }

    /// A reader for object files: NetworkPolicies keep their selectors.
    pub(super) fn new_kube(file: &'a str) -> Self {
        Ctx {
            kube: true,
            ..Ctx::new(file)
        }
    }

    pub(super) fn kube(&self) -> bool {
        self.kube
    }

    pub(super) fn into_errors(self) -> Vec<PolicyError> {
        self.errors
    }

    /// Reads one more document into `out` (native policy or a NetworkPolicy).
    pub(super) fn read_document(&mut self, doc: &Node) {
        self.document(doc);
    }

    pub(super) fn take(self) -> (PolicyFile, Vec<PolicyError>) {
        (self.out, self.errors)
    }
}

impl Ctx<'_> {
    pub(super) fn origin(&self, pos: Pos, field: &str) -> Origin {
        Origin {
            file: self.file.to_string(),
            pos,
            field: field.to_string(),
        }
    }

    pub(super) fn err(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        let e = PolicyError::at(&self.origin(pos, field), message);
        self.errors.push(e);
    }

    pub(super) fn expected(&mut self, node: &Node, field: &str, what: &str) {
        self.err(
            node.pos,
            field,
            format!("expected {what}, found {}", node.describe()),
        );
    }

    /// The entries of a mapping with string keys, after reporting repeated keys
    /// and (when `allowed` is given) keys outside it. `None` if not a mapping.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        allowed: Option<&[&str]>,
        what: &str,
    ) -> Option<Vec<Entry<'n>>> {
        let Kind::Map(pairs) = &node.kind else {
            self.expected(node, field, what);
            return None;
        };
        let mut out: Vec<Entry<'n>> = Vec::new();
        for (k, v) in pairs {
            let key = match &k.kind {
                Kind::Scalar(s) if !s.is_null() => s.text.clone(),
                _ => {
                    self.expected(k, field, "a string key");
                    continue;
                }
            };
            let path = join(field, &key);
            if let Some(first) = out.iter().find(|e| e.key == key) {
                let line = first.key_node.pos.line;
                self.err(
                    k.pos,
                    &path,
                    format!("{key:?} appears twice (first on line {line})"),
                );
                continue;
            }
            if let Some(allowed) = allowed {
                if !allowed.contains(&key.as_str()) {
                    let hint = did_you_mean(&key, allowed.iter().copied());
                    self.err(
                        k.pos,
                        &path,
                        format!(
                            "unknown key {key:?}{hint} (expected {})",
                            allowed.join(", ")
                        ),
                    );
                    continue;
                }
            }
            out.push(Entry {
                key,
                key_node: k,
                value: v,
            });
        }
        Some(out)
    }

    /// A list, or a single item standing alone; each with its field path.
    pub(super) fn items<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        what: &str,
    ) -> Vec<(String, &'n Node)> {
        match &node.kind {
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("{field}[{i}]"), n))
                .collect(),
            Kind::Scalar(s) if !s.is_null() => vec![(field.to_string(), node)],
            _ => {
                self.expected(node, field, what);
                Vec::new()
            }
        }
    }

    pub(super) fn string(&mut self, node: &Node, field: &str, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar(s) if !s.is_null() && s.as_bool().is_none() => Some(s.text.clone()),
            _ => {
                self.expected(node, field, what);
                None
            }
        }
    }

    fn document(&mut self, doc: &Node) {
        if let Kind::Scalar(s) = &doc.kind {
            if s.is_null() {
                return; // an empty document (only comments) is an empty policy
            }
        }
        // A document with apiVersion/kind is a Kubernetes object (k8s.rs).
        if super::k8s::is_object(doc) {
            self.k8s_object(doc);
            return;
        }
        let what = "a mapping with groups, rules or settings";
        let Some(entries) = self.mapping(doc, "", Some(TOP_KEYS), what) else {
            return;
        };
        for e in entries {
            match e.key.as_str() {
                "groups" => self.groups(e.value),
                "rules" => self.rules(e.value),
                _ => self.settings(e.value),
            }
        }
    }

    fn settings(&mut self, node: &Node) {
        if is_null(node) {
            return;
        }
        let what = "a mapping of settings";
        let Some(entries) = self.mapping(node, "settings", Some(SETTINGS_KEYS), what) else {
            return;
        };
        for e in entries {
            let field = join("settings", &e.key);
            match &e.value.kind {
                Kind::Scalar(s) if s.as_bool().is_some() => {
                    self.out.enforce_host |= s.as_bool() == Some(true);
                }
                _ => self.expected(e.value, &field, "true or false"),
            }
        }
    }

    fn groups(&mut self, node: &Node) {
        if is_null(node) {
            return;
        }
        let what = "a mapping of group names to CIDR lists";
        let Some(entries) = self.mapping(node, "groups", None, what) else {
            return;
        };
        for e in entries {
            let field = join("groups", &e.key);
            if let Err(msg) = check_group_name(&e.key) {
                self.err(e.key_node.pos, &field, msg);
                continue;
            }
            let group = self.group(&e.key, &field, e.value);
            self.out.groups.push(Group {
                origin: Some(self.origin(e.key_node.pos, &field)),
                ..group
            });
        }
    }

    fn group(&mut self, name: &str, field: &str, node: &Node) -> Group {
        let mut group = Group::new(name, &[], &[]);
        let what =
            "a list of CIDRs, a mapping with cidrs and except, or a selector (namespace, pods)";
        let (cidrs, except) = match &node.kind {
            Kind::Map(_) => {
                let Some(entries) = self.mapping(node, field, Some(GROUP_KEYS), what) else {
                    return group;
                };
                let get = |k: &str| entries.iter().find(|e| e.key == k).map(|e| e.value);
                if let Some(n) = get("audit") {
                    group.audit = self.flag(n, &join(field, "audit"));
                }
                if entries
                    .iter()
                    .any(|e| SELECTOR_GROUP_KEYS.contains(&e.key.as_str()))
                {
                    group.selector = self.group_selector(node, field, &entries);
                    return group;
                }
                let Some(cidrs) = get("cidrs") else {
                    self.err(
                        node.pos,
                        field,
                        "missing \"cidrs\" (or \"namespace\"/\"namespaces\" for a selector group)",
                    );
                    return group;
                };
                (
                    self.cidr_list(cidrs, &join(field, "cidrs")),
                    get("except")
                        .map_or_else(Vec::new, |n| self.cidr_list(n, &join(field, "except"))),
                )
            }
            _ => (self.cidr_list(node, field), Vec::new()),
        };
        // Sets, not list scans: a group may list tens of thousands of CIDRs.
        let mut seen = HashSet::new();
        for (_, _, net) in &cidrs {
            if seen.insert(*net) {
                group.cidrs.push(*net);
            }
        }
        let networks: HashSet<IpNet> = seen.iter().map(IpNet::trunc).collect();
        let mut seen_except = HashSet::new();
        for (pos, f, net) in except {
            let inside = (0..=net.prefix_len())
                .filter_map(|len| IpNet::new(net.addr(), len).ok())
                .any(|n| networks.contains(&n.trunc()));
            if !inside {
                self.err(
                    pos,
                    &f,
                    format!("{net} is not inside any of the group's CIDRs"),
                );
            } else if seen_except.insert(net) {
                group.except.push(net);
            }
        }
        group
    }

    /// `{namespace: NAME | namespaces: SELECTOR, pods: SELECTOR}`.
    fn group_selector(
        &mut self,
        node: &Node,
        field: &str,
        entries: &[Entry<'_>],
    ) -> Option<GroupSelector> {
        let get = |k: &str| entries.iter().find(|e| e.key == k);
        for other in ["cidrs", "except"] {
            if let Some(e) = get(other) {
                let msg = "a selector group takes no cidrs or except: write a second group";
                self.err(e.key_node.pos, &join(field, other), msg);
                return None;
            }
        }
        let namespaces = match (get("namespace"), get("namespaces")) {
            (Some(a), Some(_)) => {
                let msg = "write either \"namespace\" (a name) or \"namespaces\" (a selector)";
                self.err(a.key_node.pos, field, msg);
                return None;
            }
            (Some(e), None) => {
                let name = self.string(e.value, &join(field, "namespace"), "a namespace name")?;
                NamespaceSelector::Named(name)
            }
            (None, Some(e)) => NamespaceSelector::Matching(self.label_selector(
                e.value,
                &join(field, "namespaces"),
                true,
            )?),
            (None, None) => {
                let msg = "a selector group needs \"namespace\" or \"namespaces\" (write namespaces: {} for every namespace)";
                self.err(node.pos, field, msg);
                return None;
            }
        };
        let pods = match get("pods") {
            Some(e) => self.label_selector(e.value, &join(field, "pods"), true)?,
            None => LabelSelector::everything(),
        };
        Some(GroupSelector { namespaces, pods })
    }

    pub(super) fn cidr_list(&mut self, node: &Node, field: &str) -> Vec<(Pos, String, IpNet)> {
        if matches!(&node.kind, Kind::Seq(v) if v.is_empty()) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (f, item) in self.items(node, field, "a list of CIDRs") {
            let Some(text) = self.string(item, &f, "a CIDR") else {
                continue;
            };
            match cidr::parse(&text) {
                Ok(net) => out.push((item.pos, f, net)),
                Err(msg) => self.err(item.pos, &f, format!("{text:?}: {msg}")),
            }
        }
        out
    }

    fn rules(&mut self, node: &Node) {
        if is_null(node) {
            return;
        }
        let Kind::Seq(items) = &node.kind else {
            self.expected(node, "rules", "a list of rules");
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let field = format!("rules[{i}]");
            if let Some(rule) = self.rule(item, &field) {
                self.out.rules.push(rule);
            }
        }
    }

    /// A `true`/`false` value; an error (and false) for anything else.
    fn flag(&mut self, node: &Node, field: &str) -> bool {
        match &node.kind {
            Kind::Scalar(s) if s.as_bool().is_some() => s.as_bool() == Some(true),
            _ => {
                self.expected(node, field, "true or false");
                false
            }
        }
    }

    fn rule(&mut self, node: &Node, field: &str) -> Option<Rule> {
        let what = "a rule (name, from, to, ports or name, within)";
        let entries = self.mapping(node, field, Some(RULE_KEYS), what)?;
        let get = |k: &str| entries.iter().find(|e| e.key == k);
        let mut ok = true;
        let name = match get("name") {
            None => {
                self.err(node.pos, field, "missing \"name\"");
                ok = false;
                String::new()
            }
            Some(e) => {
                let f = join(field, "name");
                let name = self.string(e.value, &f, "a rule name").unwrap_or_default();
                if let Err(msg) = check_rule_name(&name) {
                    self.err(e.value.pos, &f, msg);
                    ok = false;
                }
                name
            }
        };
        let mut rule = Rule::new(&name, &[], &[], &[]);
        let mut origin = RuleOrigin {
            rule: self.origin(node.pos, field),
            ..RuleOrigin::default()
        };
        if let Some(within) = get("within") {
            for other in ["from", "to", "ports"] {
                if let Some(e) = get(other) {
                    let msg = "a rule with \"within\" takes no from, to or ports";
                    self.err(e.key_node.pos, &join(field, other), msg);
                    ok = false;
                }
            }
            let peers = self.peers(within.value, &join(field, "within"));
            ok &= !peers.is_empty();
            rule.within = true;
            (rule.from, origin.from) = peers.into_iter().unzip();
            (rule.to, origin.to) = (rule.from.clone(), origin.from.clone());
        } else {
            for (key, side) in [("from", 0), ("to", 1)] {
                let Some(e) = get(key) else {
                    let msg = format!("missing \"{key}\" (or use \"within\")");
                    self.err(node.pos, field, msg);
                    ok = false;
                    continue;
                };
                let peers = self.peers(e.value, &join(field, key));
                ok &= !peers.is_empty();
                let (p, o) = peers.into_iter().unzip();
                if side == 0 {
                    (rule.from, origin.from) = (p, o);
                } else {
                    (rule.to, origin.to) = (p, o);
                }
            }
            if let Some(e) = get("ports") {
                let (ports, good) = self.ports(e.value, &join(field, "ports"));
                rule.ports = ports;
                ok &= good;
            }
        }
        if let Some(e) = get("audit") {
            rule.audit = self.flag(e.value, &join(field, "audit"));
        }
        rule.origin = Some(origin);
        ok.then_some(rule)
    }

    /// Peers with their origins; empty after an error.
    fn peers(&mut self, node: &Node, field: &str) -> Vec<(Peer, Origin)> {
        if matches!(&node.kind, Kind::Seq(v) if v.is_empty()) {
            self.err(node.pos, field, "an empty list matches nothing");
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut failed = false;
        let what = "a group name, built-in or CIDR";
        for (f, item) in self.items(node, field, &format!("{what}, or a list of them")) {
            let Some(text) = self.string(item, &f, what) else {
                failed = true;
                continue;
            };
            let peer = match text.as_str() {
                BUILTIN_ANY => Peer::Any,
                BUILTIN_WORLD => Peer::World,
                BUILTIN_HOST => Peer::Host,
                BUILTIN_NODES => Peer::Nodes,
                t if cidr::looks_like_cidr(t) => match cidr::parse(t) {
                    Ok(net) => Peer::Cidr(net),
                    Err(msg) => {
                        self.err(item.pos, &f, format!("{t:?}: {msg}"));
                        failed = true;
                        continue;
                    }
                },
                t => Peer::Group(t.to_string()),
            };
            out.push((peer, self.origin(item.pos, &f)));
        }
        if failed {
            Vec::new()
        } else {
            out
        }
    }

    /// The port specs and whether all were valid.
    fn ports(&mut self, node: &Node, field: &str) -> (Vec<PortSpec>, bool) {
        if matches!(&node.kind, Kind::Seq(v) if v.is_empty()) {
            let msg = "an empty list allows nothing; leave out \"ports\" or write [any] to allow every port";
            self.err(node.pos, field, msg);
            return (Vec::new(), false);
        }
        let items = self.items(node, field, "a list of ports such as 443/tcp");
        let mut ok = !items.is_empty();
        let mut out = Vec::new();
        for (f, item) in items {
            if let Kind::Scalar(s) = &item.kind {
                if s.is_int() {
                    let t = &s.text;
                    let msg = format!("{t}: a port needs its protocol: write {t}/tcp");
                    self.err(item.pos, &f, msg);
                    ok = false;
                    continue;
                }
            }
            let Some(text) = self.string(item, &f, "a port such as 443/tcp") else {
                ok = false;
                continue;
            };
            match ports::parse(&text) {
                Ok(spec) if !out.contains(&spec) => out.push(spec),
                Ok(_) => {}
                Err(msg) => {
                    self.err(item.pos, &f, format!("{text:?}: {msg}"));
                    ok = false;
                }
            }
        }
        (out, ok)
    }
}

pub(super) fn is_null(node: &Node) -> bool {
    matches!(&node.kind, Kind::Scalar(s) if s.is_null())
}

pub(super) fn join(field: &str, key: &str) -> String {
    if field.is_empty() {
        key.to_string()
    } else {
        format!("{field}.{key}")
    }
}
