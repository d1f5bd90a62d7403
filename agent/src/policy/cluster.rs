//! The Kubernetes objects workload identity is read from: Namespaces (their
//! labels) and Pods (namespace, labels, addresses, named ports), from manifest
//! files as `kubectl get -o yaml` prints them (single objects, multi-document
//! files, `kind: List`). Selector groups are resolved against them.
//!
//! Only the fields identity needs are read, and the rest of an object is left
//! alone: these files are dumps of live objects, full of status and managed
//! fields. A field that is read and malformed is an error with its position.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::error::PolicyErrors;
use super::model::{Group, GroupSelector, NamespaceSelector, Policy};
use super::parse::{join, Ctx, Entry};
use super::selector::Labels;
use super::yaml::{Kind, Node};

/// A container port with a name, which NetworkPolicy may refer to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: String,
    pub proto: u8,
    pub port: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// Empty for host-network pods (they are the node) and finished pods.
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    pub node_name: Option<String>,
    pub ports: Vec<NamedPort>,
}

/// What the Kubernetes objects say about the workloads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Namespace name to its labels (with `kubernetes.io/metadata.name`, which
    /// the API server sets on every namespace).
    pub namespaces: BTreeMap<String, Labels>,
    /// Sorted by namespace and name. Shared: the objects read are kept from
    /// one event to the next, and each event assembles every pod again.
    pub pods: Vec<Arc<Pod>>,
}

/// The label the API server gives every namespace, holding its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Cluster {
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .map(|p| &**p)
    }

    /// Labels of a namespace; a namespace no object describes still has its
    /// name label (pods may name it before its object is read).
    pub fn namespace_labels(&self, namespace: &str) -> std::borrow::Cow<'_, Labels> {
        match self.namespaces.get(namespace) {
            Some(l) => std::borrow::Cow::Borrowed(l),
            None => std::borrow::Cow::Owned(Labels::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                namespace.to_string(),
            )])),
        }
    }

    /// The pods a selector group stands for.
    pub fn select<'a>(&'a self, sel: &'a GroupSelector) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods
            .iter()
            .filter(move |p| {
                let ns_ok = match &sel.namespaces {
                    NamespaceSelector::Named(n) => &p.namespace == n,
                    NamespaceSelector::Matching(s) => {
                        s.matches(&self.namespace_labels(&p.namespace))
                    }
                };
                ns_ok && sel.pods.matches(&p.labels)
            })
            .map(|p| &**p)
    }

    fn add_pod(&mut self, pod: Pod) {
        match self
            .pods
            .binary_search_by(|p| (&p.namespace, &p.name).cmp(&(&pod.namespace, &pod.name)))
        {
            Ok(i) => self.pods[i] = Arc::new(pod),
            Err(i) => self.pods.insert(i, Arc::new(pod)),
        }
    }
}

/// Fills in the addresses of every selector group of `policy` from `cluster`:
/// each selected pod's addresses as host prefixes.
pub fn resolve(policy: &mut Policy, cluster: &Cluster) {
    for g in &mut policy.groups {
        let Some(sel) = &g.selector else { continue };
        let mut cidrs: Vec<IpNet> = cluster
            .select(sel)
            .flat_map(|p| p.ips.iter().map(|ip| IpNet::from(*ip)))
            .collect();
        cidrs.sort();
        cidrs.dedup();
        g.cidrs = cidrs;
        g.except.clear();
    }
}

/// The group naming every pod address the objects know, so that no pod
/// address counts as `world`: a pod is a workload of the cluster even when
/// no group of the policy selects it.
pub const PODS_GROUP: &str = "k8s:pods";

pub fn pods_group(cluster: &Cluster) -> Group {
    let mut cidrs: Vec<IpNet> = cluster
        .pods
        .iter()
        .flat_map(|p| p.ips.iter().map(|ip| IpNet::from(*ip)))
        .collect();
    cidrs.sort();
    cidrs.dedup();
    Group::new(PODS_GROUP, &cidrs, &[])
}

/// What a document of an objects file holds.
pub(super) enum Object<'n> {
    Namespace(String, Labels),
    Pod(Pod),
    /// A NetworkPolicy: parsed by the policy reader.
    NetworkPolicy(&'n Node),
    /// Any other kind (Services, Deployments, ...): not about identity.
    Other,
}

fn kind_of(doc: &Node) -> Option<&str> {
    let Kind::Map(pairs) = &doc.kind else {
        return None;
    };
    pairs.iter().find_map(|(k, v)| match (&k.kind, &v.kind) {
        (Kind::Scalar(k), Kind::Scalar(v)) if k.text == "kind" => Some(v.text.as_str()),
        _ => None,
    })
}

fn get<'n>(entries: &[Entry<'n>], key: &str) -> Option<&'n Node> {
    entries.iter().find(|e| e.key == key).map(|e| e.value)
}

impl Ctx<'_> {
    /// Every object of a document, `kind: List` (and `PodList`, ...) unrolled.
    pub(super) fn objects<'n>(&mut self, doc: &'n Node, field: &str, out: &mut Vec<Object<'n>>) {
        match kind_of(doc) {
            Some(k) if k == "List" || k.ends_with("List") => {
                let Some(entries) = self.mapping(doc, field, None, "a List") else {
                    return;
                };
                let Some(items) = get(&entries, "items") else {
                    return;
                };
                if super::parse::is_null(items) {
                    return;
                }
                let Kind::Seq(items) = &items.kind else {
                    self.expected(items, &join(field, "items"), "a list of objects");
                    return;
                };
                for (i, item) in items.iter().enumerate() {
                    self.objects(item, &format!("{}items[{i}]", prefix(field)), out);
                }
            }
            Some("Namespace") => {
                if let Some((name, labels)) = self.namespace_object(doc, field) {
                    out.push(Object::Namespace(name, labels));
                }
            }
            Some("Pod") => {
                if let Some(pod) = self.pod_object(doc, field) {
                    out.push(Object::Pod(pod));
                }
            }
            Some("NetworkPolicy") => out.push(Object::NetworkPolicy(doc)),
            Some(_) => out.push(Object::Other),
            None => {
                if !super::parse::is_null(doc) {
                    self.err(doc.pos, field, "expected a Kubernetes object (with kind)");
                }
            }
        }
    }

    /// (namespace, name, labels) of an object's metadata.
    fn object_meta(&mut self, doc: &Node, field: &str) -> Option<(String, String, Labels)> {
        let entries = self.mapping(doc, field, None, "a Kubernetes object")?;
        let Some(meta) = get(&entries, "metadata") else {
            self.err(doc.pos, field, "missing \"metadata\"");
            return None;
        };
        let f = join(field, "metadata");
        let meta = self.mapping(meta, &f, None, "a mapping")?;
        let Some(name) = get(&meta, "name") else {
            self.err(doc.pos, &f, "missing \"name\"");
            return None;
        };
        let name = self.string(name, &join(&f, "name"), "a name")?;
        let namespace = match get(&meta, "namespace") {
            Some(n) => self.string(n, &join(&f, "namespace"), "a namespace")?,
            None => "default".to_string(),
        };
        let labels = match get(&meta, "labels") {
            Some(l) => self.labels(l, &join(&f, "labels"))?,
            None => Labels::new(),
        };
        Some((namespace, name, labels))
    }

    fn namespace_object(&mut self, doc: &Node, field: &str) -> Option<(String, Labels)> {
        let (_, name, mut labels) = self.object_meta(doc, field)?;
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Some((name, labels))
    }

    fn pod_object(&mut self, doc: &Node, field: &str) -> Option<Pod> {
        let (namespace, name, labels) = self.object_meta(doc, field)?;
        let entries = self.mapping(doc, field, None, "a Pod")?;
        let mut pod = Pod {
            namespace,
            name,
            labels,
            ..Pod::default()
        };
        if let Some(spec) = get(&entries, "spec") {
            let f = join(field, "spec");
            let spec = self.mapping(spec, &f, None, "a Pod spec")?;
            if let Some(h) = get(&spec, "hostNetwork") {
                pod.host_network = matches!(&h.kind, Kind::Scalar(s) if s.as_bool() == Some(true));
            }
            if let Some(n) = get(&spec, "nodeName") {
                pod.node_name = self.string(n, &join(&f, "nodeName"), "a node name");
            }
            if let Some(c) = get(&spec, "containers") {
                pod.ports = self.container_ports(c, &join(&f, "containers"))?;
            }
        }
        let mut finished = false;
        let mut ips = Vec::new();
        if let Some(status) = get(&entries, "status") {
            let f = join(field, "status");
            let status = self.mapping(status, &f, None, "a Pod status")?;
            if let Some(phase) = get(&status, "phase") {
                finished = matches!(&phase.kind, Kind::Scalar(s) if s.text == "Succeeded" || s.text == "Failed");
            }
            if let Some(list) = get(&status, "podIPs") {
                let lf = join(&f, "podIPs");
                if let Kind::Seq(items) = &list.kind {
                    for (i, item) in items.iter().enumerate() {
                        let itf = format!("{lf}[{i}]");
                        let m = self.mapping(item, &itf, None, "a mapping with ip")?;
                        if let Some(ip) = get(&m, "ip") {
                            ips.push(self.ip(ip, &join(&itf, "ip"))?);
                        }
                    }
                } else if !super::parse::is_null(list) {
                    self.expected(list, &lf, "a list of {ip: ...}");
                    return None;
                }
            }
            if ips.is_empty() {
                if let Some(ip) = get(&status, "podIP") {
                    if !super::parse::is_null(ip) {
                        ips.push(self.ip(ip, &join(&f, "podIP"))?);
                    }
                }
            }
        }
        // A host-network pod's addresses are the node's (the built-in `host`);
        // a finished pod's may already belong to another pod.
        if !pod.host_network && !finished {
            ips.sort();
            ips.dedup();
            pod.ips = ips;
        }
        Some(pod)
    }

    fn ip(&mut self, node: &Node, field: &str) -> Option<IpAddr> {
        let text = self.string(node, field, "an IP address")?;
        match text.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(node.pos, field, format!("{text:?} is not an IP address"));
                None
            }
        }
    }

    fn container_ports(&mut self, node: &Node, field: &str) -> Option<Vec<NamedPort>> {
        let mut out = Vec::new();
        let Kind::Seq(containers) = &node.kind else {
            return Some(out);
        };
        for (i, c) in containers.iter().enumerate() {
            let cf = format!("{field}[{i}]");
            let c = self.mapping(c, &cf, None, "a container")?;
            let Some(Kind::Seq(ports)) = get(&c, "ports").map(|n| &n.kind) else {
                continue;
            };
            for (j, p) in ports.iter().enumerate() {
                let pf = format!("{cf}.ports[{j}]");
                let p = self.mapping(p, &pf, None, "a container port")?;
                let Some(name) = get(&p, "name") else {
                    continue;
                };
                let name = self.string(name, &join(&pf, "name"), "a port name")?;
                let Some(number) = get(&p, "containerPort") else {
                    continue;
                };
                let nf = join(&pf, "containerPort");
                let port = match &number.kind {
                    Kind::Scalar(s) if s.is_int() => s.text.parse::<u16>().ok(),
                    _ => None,
                };
                let Some(port) = port.filter(|p| *p > 0) else {
                    self.expected(number, &nf, "a port number 1-65535");
                    return None;
                };
                let proto = match get(&p, "protocol").map(|n| &n.kind) {
                    None => agent_common::IPPROTO_TCP,
                    Some(Kind::Scalar(s)) => match s.text.as_str() {
                        "TCP" => agent_common::IPPROTO_TCP,
                        "UDP" => agent_common::IPPROTO_UDP,
                        "SCTP" => agent_common::IPPROTO_SCTP,
                        _ => continue,
                    },
                    Some(_) => continue,
                };
                out.push(NamedPort { name, proto, port });
            }
        }
        out.sort();
        out.dedup();
        Some(out)
    }
}

fn prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}.")
    }
}

/// The objects of one file's text; NetworkPolicy documents are returned to the
/// caller as native policy (the policy reader parses them).
pub(super) fn parse_objects(name: &str, text: &str) -> Result<(Cluster, Vec<Node>), PolicyErrors> {
    let docs = super::parse::parse_yaml(name, text)?;
    let mut cx = Ctx::new(name);
    let mut cluster = Cluster::default();
    let mut netpols = Vec::new();
    for doc in &docs {
        let mut objects = Vec::new();
        cx.objects(doc, "", &mut objects);
        for o in objects {
            match o {
                Object::Namespace(n, l) => {
                    cluster.namespaces.insert(n, l);
                }
                Object::Pod(p) => cluster.add_pod(p),
                Object::NetworkPolicy(n) => netpols.push(n.clone()),
                Object::Other => {}
            }
        }
    }
    PolicyErrors::check(cx.into_errors())?;
    Ok((cluster, netpols))
}

/// Merges the objects of several files (later files win for the same object).
pub fn merge_clusters(parts: impl IntoIterator<Item = Cluster>) -> Cluster {
    let mut out = Cluster::default();
    for c in parts {
        out.namespaces.extend(c.namespaces);
        out.pods.extend(c.pods);
    }
    // One sort, not an insertion per pod: objects from the API arrive one
    // per part, ten thousand of them, in no useful order. The sort is
    // stable, so the last of equal keys is the later file's.
    out.pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut pods: Vec<Arc<Pod>> = Vec::with_capacity(out.pods.len());
    for p in out.pods.drain(..) {
        match pods.last_mut() {
            Some(last) if last.namespace == p.namespace && last.name == p.name => *last = p,
            _ => pods.push(p),
        }
    }
    out.pods = pods;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::selector::LabelSelector;

    const OBJECTS: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: svc-ledger, labels: {tier: app}}
- apiVersion: v1
  kind: Pod
  metadata: {name: ledger-0, namespace: svc-ledger, labels: {app: ledger}}
  spec:
    nodeName: node-a
    containers:
    - name: main
      ports: [{name: grpc, containerPort: 50051}, {containerPort: 9090}]
  status:
    phase: Running
    podIP: 10.0.1.5
    podIPs: [{ip: 10.0.1.5}, {ip: "fd00::5"}]
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: svc-ledger}
status: {phase: Succeeded, podIP: 10.0.1.6}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: kube-system}
spec: {hostNetwork: true}
status: {podIP: 10.0.0.10}
---
kind: Service
metadata: {name: ignored}
"#;

    #[test]
    fn reads_pods_namespaces_and_lists() {
        let (c, netpols) = parse_objects("objects.yaml", OBJECTS).unwrap();
        assert!(netpols.is_empty());
        assert_eq!(c.namespaces["svc-ledger"]["tier"], "app");
        assert_eq!(
            c.namespaces["svc-ledger"][NAMESPACE_NAME_LABEL],
            "svc-ledger"
        );
        let ledger = c.pod("svc-ledger", "ledger-0").unwrap();
        assert_eq!(
            ledger.ips,
            [
                "10.0.1.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(ledger.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            ledger.ports,
            [NamedPort {
                name: "grpc".into(),
                proto: agent_common::IPPROTO_TCP,
                port: 50051
            }]
        );
        assert!(c.pod("svc-ledger", "done").unwrap().ips.is_empty());
        assert!(c.pod("kube-system", "agent").unwrap().ips.is_empty());
    }

    #[test]
    fn selector_groups_resolve_to_pod_addresses() {
        let (c, _) = parse_objects("objects.yaml", OBJECTS).unwrap();
        let sel = |namespaces, pods| GroupSelector { namespaces, pods };
        let named = sel(
            NamespaceSelector::Named("svc-ledger".into()),
            LabelSelector::from_labels(&[("app", "ledger")]),
        );
        assert_eq!(c.select(&named).count(), 1);
        let by_label = sel(
            NamespaceSelector::Matching(LabelSelector::from_labels(&[("tier", "app")])),
            LabelSelector::everything(),
        );
        assert_eq!(c.select(&by_label).count(), 2);
        let mut policy = Policy::default();
        policy.groups.push(Group {
            selector: Some(named),
            ..Group::new("ledger", &[], &[])
        });
        resolve(&mut policy, &c);
        let want: Vec<IpNet> = vec![
            "10.0.1.5/32".parse().unwrap(),
            "fd00::5/128".parse().unwrap(),
        ];
        assert_eq!(policy.groups[0].cidrs, want);
    }

    #[test]
    fn a_malformed_field_that_is_read_is_an_error_with_its_place() {
        let text = "kind: Pod\nmetadata: {name: a}\nstatus:\n  podIP: 10.0.0.300\n";
        let e = parse_objects("o.yaml", text).unwrap_err();
        let line = e.0[0].to_string();
        assert!(line.starts_with("o.yaml:4:"), "{line}");
        assert!(line.contains("status.podIP"), "{line}");
        assert!(line.contains("not an IP address"), "{line}");
    }
}
