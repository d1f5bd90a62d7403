//! Which pods each selector selects, kept from one resolve to the next. A
//! pod event changes one pod; matching every selector of a thousand
//! NetworkPolicies against every pod again would cost more than the rest
//! of the reload. So each selector keeps its members, and a new view of the
//! cluster is diffed against the last: only the pods that changed (and the
//! pods of namespaces whose labels changed) are matched again, and only the
//! selectors whose members changed list their addresses again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;

use super::cluster::{Cluster, Pod, NAMESPACE_NAME_LABEL};
use super::model::{GroupSelector, NamespaceSelector};
use super::selector::{LabelSelector, Labels};

/// The pods of one selector and their addresses.
#[derive(Clone, Debug)]
struct Members {
    /// Slots, sorted.
    pods: Vec<u32>,
    /// Sorted, deduplicated; `None` until listed again after a change.
    addrs: Option<Arc<Vec<IpNet>>>,
}

#[derive(Clone, Debug, Default)]
pub struct Selections {
    /// Pods as last seen, by slot: a pod keeps its slot while it exists.
    pods: Vec<Option<Arc<Pod>>>,
    free: Vec<u32>,
    /// Namespace, then pod name, to slot.
    slots: HashMap<String, HashMap<String, u32>>,
    namespaces: BTreeMap<String, Labels>,
    selectors: HashMap<GroupSelector, Members>,
}

/// The labels of `ns` (a namespace no object describes has its name label).
fn ns_labels<'a>(namespaces: &'a BTreeMap<String, Labels>, ns: &str) -> Option<&'a Labels> {
    namespaces.get(ns)
}

fn matches(sel: &GroupSelector, pod: &Pod, namespaces: &BTreeMap<String, Labels>) -> bool {
    let ns_ok = match &sel.namespaces {
        NamespaceSelector::Named(n) => &pod.namespace == n,
        NamespaceSelector::Matching(s) => match ns_labels(namespaces, &pod.namespace) {
            Some(l) => s.matches(l),
            None => s.matches(&Labels::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                pod.namespace.clone(),
            )])),
        },
    };
    ns_ok && sel.pods.matches(&pod.labels)
}

/// The selector of every pod.
pub(super) fn every_pod() -> GroupSelector {
    GroupSelector {
        namespaces: NamespaceSelector::Matching(LabelSelector::everything()),
        pods: LabelSelector::everything(),
    }
}

impl Selections {
    /// Takes `cluster` as the current view and makes `wanted` (and only
    /// those) the selectors kept, each with its members.
    pub(super) fn sync<'s>(
        &mut self,
        cluster: &Cluster,
        wanted: impl IntoIterator<Item = &'s GroupSelector>,
    ) {
        let wanted: HashSet<&GroupSelector> = wanted.into_iter().collect();
        self.selectors.retain(|s, _| wanted.contains(s));
        let old_namespaces = std::mem::replace(&mut self.namespaces, cluster.namespaces.clone());
        let relabelled: HashSet<&str> = old_namespaces
            .keys()
            .chain(self.namespaces.keys())
            .filter(|n| old_namespaces.get(*n) != self.namespaces.get(*n))
            .map(String::as_str)
            .collect();

        // (slot, the pod as it was): pods that came, went, changed, or whose
        // namespace's labels changed.
        let mut changed: Vec<(u32, Option<Arc<Pod>>)> = Vec::new();
        let mut seen = vec![false; self.pods.len()];
        let mut added: Vec<&Arc<Pod>> = Vec::new();
        for p in &cluster.pods {
            match self.slots.get(&p.namespace).and_then(|m| m.get(&p.name)) {
                Some(&slot) => {
                    seen[slot as usize] = true;
                    let have = self.pods[slot as usize].as_mut().expect("a live slot");
                    // The objects read are kept between events, so a pod
                    // that did not change is most often the same allocation.
                    if !Arc::ptr_eq(have, p) && **have != **p {
                        changed.push((slot, Some(std::mem::replace(have, p.clone()))));
                    } else if relabelled.contains(p.namespace.as_str()) {
                        changed.push((slot, Some(p.clone())));
                    }
                }
                None => added.push(p),
            }
        }
        for (slot, was) in seen.iter().enumerate() {
            if !was && self.pods[slot].is_some() {
                let old = self.pods[slot].take().expect("live");
                if let Some(m) = self.slots.get_mut(&old.namespace) {
                    m.remove(&old.name);
                    if m.is_empty() {
                        self.slots.remove(&old.namespace);
                    }
                }
                changed.push((slot as u32, Some(old)));
            }
        }
        let freed: Vec<u32> = changed
            .iter()
            .filter(|(s, _)| self.pods[*s as usize].is_none())
            .map(|(s, _)| *s)
            .collect();
        for p in added {
            let slot = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.pods.push(None);
                    (self.pods.len() - 1) as u32
                }
            };
            self.pods[slot as usize] = Some(p.clone());
            self.slots
                .entry(p.namespace.clone())
                .or_default()
                .insert(p.name.clone(), slot);
            changed.push((slot, None));
        }
        // Freed only now: a slot is never both a pod that went and one that
        // came within one change.
        self.free.extend(freed);

        for (sel, m) in self.selectors.iter_mut() {
            for (slot, old) in &changed {
                let was = old
                    .as_ref()
                    .is_some_and(|o| matches(sel, o, &old_namespaces));
                let new = self.pods[*slot as usize].as_ref();
                let now = new.is_some_and(|n| matches(sel, n, &self.namespaces));
                match (was, now) {
                    (false, false) => continue,
                    (true, false) => {
                        if let Ok(i) = m.pods.binary_search(slot) {
                            m.pods.remove(i);
                        }
                    }
                    (false, true) => {
                        if let Err(i) = m.pods.binary_search(slot) {
                            m.pods.insert(i, *slot);
                        }
                    }
                    (true, true) => {
                        if old.as_ref().map(|o| &o.ips) == new.map(|n| &n.ips) {
                            continue;
                        }
                    }
                }
                m.addrs = None;
            }
        }
        for sel in wanted {
            if !self.selectors.contains_key(sel) {
                let pods = self.scan(sel);
                self.selectors
                    .insert(sel.clone(), Members { pods, addrs: None });
            }
        }
        let pods = &self.pods;
        for m in self.selectors.values_mut() {
            if m.addrs.is_none() {
                let mut addrs: Vec<IpNet> = m
                    .pods
                    .iter()
                    .filter_map(|s| pods[*s as usize].as_ref())
                    .flat_map(|p| p.ips.iter().map(|ip| IpNet::from(*ip)))
                    .collect();
                addrs.sort_unstable();
                addrs.dedup();
                m.addrs = Some(Arc::new(addrs));
            }
        }
    }

    /// The slots of the pods `sel` selects, found by looking at every pod
    /// of the namespaces it can select.
    fn scan(&self, sel: &GroupSelector) -> Vec<u32> {
        let in_ns = |ns: &str| -> Vec<u32> {
            self.slots
                .get(ns)
                .map(|m| m.values().copied().collect())
                .unwrap_or_default()
        };
        let candidates: Vec<u32> = match &sel.namespaces {
            NamespaceSelector::Named(n) => in_ns(n),
            NamespaceSelector::Matching(_) => (0..self.pods.len() as u32).collect(),
        };
        let mut out: Vec<u32> = candidates
            .into_iter()
            .filter(|s| {
                self.pods[*s as usize]
                    .as_ref()
                    .is_some_and(|p| matches(sel, p, &self.namespaces))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The addresses of the pods `sel` selects (a selector `sync` kept).
    pub(super) fn addresses(&self, sel: &GroupSelector) -> Vec<IpNet> {
        self.selectors
            .get(sel)
            .and_then(|m| m.addrs.as_deref().cloned())
            .expect("a selector synced")
    }

    /// The pods `sel` selects (a selector `sync` kept).
    pub(super) fn pods(&self, sel: &GroupSelector) -> Vec<&Pod> {
        let m = self.selectors.get(sel).expect("a selector synced");
        m.pods
            .iter()
            .filter_map(|s| self.pods[*s as usize].as_deref())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::objects_from_str;

    fn cluster(pods: &[(&str, &str, &str, &str)], tier_b: &str) -> Cluster {
        let mut o = format!(
            "apiVersion: v1\nkind: List\nitems:\n\
             - {{kind: Namespace, metadata: {{name: a, labels: {{tier: front}}}}}}\n\
             - {{kind: Namespace, metadata: {{name: b, labels: {{tier: {tier_b}}}}}}}\n"
        );
        for (name, ns, app, ip) in pods {
            o.push_str(&format!(
                "- {{kind: Pod, metadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}, status: {{podIP: {ip}}}}}\n"
            ));
        }
        objects_from_str("o.yaml", &o).unwrap().0
    }

    /// After every change the kept members are those of a fresh look.
    #[test]
    fn kept_members_follow_every_change() {
        let sels = [
            GroupSelector {
                namespaces: NamespaceSelector::Named("a".into()),
                pods: LabelSelector::from_labels(&[("app", "web")]),
            },
            GroupSelector {
                namespaces: NamespaceSelector::Matching(LabelSelector::from_labels(&[(
                    "tier", "front",
                )])),
                pods: LabelSelector::everything(),
            },
            every_pod(),
        ];
        let steps = [
            cluster(
                &[("x", "a", "web", "10.0.0.1"), ("y", "b", "web", "10.0.0.2")],
                "back",
            ),
            cluster(
                &[("x", "a", "db", "10.0.0.1"), ("y", "b", "web", "10.0.0.2")],
                "front",
            ),
            cluster(
                &[("y", "b", "web", "10.0.0.3"), ("z", "a", "web", "10.0.0.4")],
                "front",
            ),
            cluster(&[("x", "a", "web", "10.0.0.1")], "back"),
            cluster(&[], "back"),
            cluster(
                &[("x", "b", "web", "10.0.0.1"), ("w", "c", "web", "10.0.0.9")],
                "front",
            ),
        ];
        let mut kept = Selections::default();
        for c in steps.iter().chain(steps.iter().rev()) {
            kept.sync(c, &sels);
            for s in &sels {
                let mut want: Vec<IpNet> = c
                    .select(s)
                    .flat_map(|p| p.ips.iter().map(|ip| IpNet::from(*ip)))
                    .collect();
                want.sort();
                want.dedup();
                assert_eq!(kept.addresses(s), want, "{s}");
                let mut names: Vec<&str> = kept.pods(s).iter().map(|p| p.name.as_str()).collect();
                names.sort();
                let mut fresh: Vec<&str> = c.select(s).map(|p| p.name.as_str()).collect();
                fresh.sort();
                assert_eq!(names, fresh, "{s}");
            }
        }
    }
}
