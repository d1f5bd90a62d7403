//! Successive compiles of one agent. Identities keep their ids for as long as
//! their group list exists (a pod event rewrites only what it changes, and
//! per-identity state in the kernel keeps its meaning), and the rule entries
//! of a compile are reused by the next when only group members changed.
//!
//! A rule entry depends on nothing but the group lists of its two identities
//! and the rules: so when a pod is created, deleted or relabelled, or a node
//! address changes, and the policy is otherwise the same, the entries between
//! identities that already existed are the ones computed last time. Only the
//! entries of new identities are computed, and those of identities that are
//! gone are dropped. With thousands of identities that is a few entries
//! instead of the whole product.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use agent_common::RuleKey;

use super::compile::{compile_with, set_identity_values, CompileOptions, Compiled, IdSet};
use super::error::CompileError;
use super::identity::{self, Identities};
use super::identity_update::{IdentityIndex, Ids};
use super::model::{Group, Policy};

/// Compiles policies one after another, as `run` does.
#[derive(Clone, Debug)]
pub struct Compiler {
    /// Group list to the identity id it keeps.
    known: HashMap<Arc<[String]>, u32>,
    next: u32,
    last: Option<Last>,
    /// The identities of the last compile, updated in place when only host
    /// prefixes moved.
    index: Option<Arc<IdentityIndex>>,
}

#[derive(Clone, Debug)]
struct Last {
    /// The policy without the members of its groups.
    shape: Policy,
    enforce_host: bool,
    /// What the last compile gave, without its identities and prefixes
    /// (the index holds those): only its entries are reused.
    compiled: Arc<Compiled>,
}

impl Default for Compiler {
    fn default() -> Self {
        Self {
            known: HashMap::new(),
            next: 1,
            last: None,
            index: None,
        }
    }
}

impl std::fmt::Debug for IdentityIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityIndex")
    }
}

impl Compiler {
    /// What `compile` returns, with identity ids stable across calls.
    pub fn compile(
        &mut self,
        policy: &Policy,
        opts: &CompileOptions,
    ) -> Result<Compiled, CompileError> {
        let sources = identity::sources(policy, &opts.host_addrs, &opts.node_cidrs)?;
        let mut index = self.index.take();
        let ids = Ids {
            known: &mut self.known,
            next: &mut self.next,
        };
        let change = index
            .as_mut()
            .and_then(|ix| Arc::make_mut(ix).update(&sources, ids));
        let (index, added, removed) = match change {
            Some(c) => (index.expect("updated"), c.added, c.removed),
            None => {
                let (mut ids, parts) = identity::build_parts(policy, &sources);
                let (added, removed, renamed) = self.renumber(&mut ids);
                let ix = IdentityIndex::new(&sources, parts, &renamed, ids);
                (Arc::new(ix), added, removed)
            }
        };
        let ids = index.identities();
        let shape = shape(policy);
        let last = self
            .last
            .take()
            .filter(|l| l.enforce_host == opts.enforce_host && l.shape == shape);
        let compiled = match last {
            Some(last) => {
                let fresh = compile_with(policy, opts, ids, Some(&added))?;
                if fresh.rule_names == last.compiled.rule_names
                    && fresh.rule_audit == last.compiled.rule_audit
                {
                    let mut kept = with_kept_entries(fresh, &last.compiled, &removed);
                    set_identity_values(&mut kept, policy, ids);
                    kept
                } else {
                    compile_with(policy, opts, ids, None)?
                }
            }
            None => compile_with(policy, opts, ids, None)?,
        };
        self.index = Some(index);
        self.last = Some(Last {
            shape,
            enforce_host: opts.enforce_host,
            compiled: Arc::new(Compiled {
                rules: compiled.rules.clone(),
                rule_names: compiled.rule_names.clone(),
                rule_audit: compiled.rule_audit.clone(),
                ..Compiled::default()
            }),
        });
        Ok(compiled)
    }

    /// The next compile computes everything again (ids are kept).
    pub fn forget_entries(&mut self) {
        self.last = None;
        self.index = None;
    }

    /// Gives `ids` the ids their group lists had last time (new ones get
    /// fresh ids). Returns the ids that are new, those that are gone, and
    /// the id each id of `ids` as it was (the index) has now.
    fn renumber(&mut self, ids: &mut Identities) -> (IdSet, IdSet, Vec<u32>) {
        let mut known = HashMap::with_capacity(ids.infos.len());
        // A fresh build numbers its identities from 1 up.
        let mut map: Vec<u32> = vec![0; ids.infos.len() + 1];
        let mut added = IdSet::new();
        for info in &ids.infos {
            let id = match self.known.get(&info.groups) {
                Some(&id) => id,
                None => {
                    let id = self.next;
                    self.next += 1;
                    added.insert(id);
                    id
                }
            };
            known.insert(info.groups.clone(), id);
            map[info.id as usize] = id;
        }
        // By id, not by group list: hashing every list again costs more.
        let kept: IdSet = known.values().copied().collect();
        let removed = self
            .known
            .values()
            .filter(|id| !kept.contains(id))
            .copied()
            .collect();
        self.known = known;
        let new = |old: u32| map[old as usize];
        for info in &mut ids.infos {
            info.id = new(info.id);
        }
        ids.infos.sort_by_key(|i| i.id);
        for set in ids.members.values_mut() {
            *set = set.iter().map(|&id| new(id)).collect::<BTreeSet<u32>>();
        }
        for (_, id) in ids.v4.iter_mut() {
            *id = new(*id);
        }
        for (_, id) in ids.v6.iter_mut() {
            *id = new(*id);
        }
        (added, removed, map)
    }
}

/// The policy with its groups emptied: two policies of one shape differ
/// only in which addresses their groups hold.
fn shape(policy: &Policy) -> Policy {
    Policy {
        groups: policy
            .groups
            .iter()
            .map(|g| Group {
                name: g.name.clone(),
                cidrs: Vec::new(),
                except: Vec::new(),
                anonymous: g.anonymous,
                audit: g.audit,
                selector: g.selector.clone(),
                origin: g.origin.clone(),
            })
            .collect(),
        rules: policy.rules.clone(),
        enforce_host: policy.enforce_host,
        netpols: policy.netpols.clone(),
        workloads: policy.workloads.clone(),
    }
}

/// `fresh` (entries of new identities only) with the entries of `last`
/// between identities that remain. Both are sorted by key then prefix and
/// share no key, so a merge keeps the order.
fn with_kept_entries(mut fresh: Compiled, last: &Compiled, removed: &IdSet) -> Compiled {
    let gone = |k: &RuleKey| {
        removed.contains(&u32::from_be_bytes(k.src_id))
            || removed.contains(&u32::from_be_bytes(k.dst_id))
    };
    let new = std::mem::take(&mut fresh.rules);
    let mut rules = Vec::with_capacity(last.rules.len() + new.len());
    let mut new = new.into_iter().peekable();
    for kept in last.rules.iter().filter(|(_, k, _)| !gone(k)) {
        while let Some(n) = new.next_if(|n| (n.1, n.0) < (kept.1, kept.0)) {
            rules.push(n);
        }
        rules.push(*kept);
    }
    rules.extend(new);
    fresh.rules = rules;
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{merge, parse_str};

    fn policy(yaml: &str) -> Policy {
        merge(vec![parse_str("p.yaml", yaml).unwrap()]).unwrap()
    }

    /// Compiles `p` with reuse and, from the same id state, without; both
    /// must be the same.
    fn step(c: &mut Compiler, p: &Policy) -> Compiled {
        let mut cold = c.clone();
        cold.forget_entries();
        let opts = CompileOptions::default();
        let warm = c.compile(p, &opts).unwrap();
        assert_eq!(warm, cold.compile(p, &opts).unwrap());
        warm
    }

    const BASE: &str = "
groups:
  b: [10.0.2.0/24]
  c: [10.0.3.0/24]
rules:
  - {name: b-to-c, from: b, to: c, ports: [80/tcp]}
";

    #[test]
    fn a_new_identity_does_not_shift_the_others() {
        let mut c = Compiler::default();
        let first = step(&mut c, &policy(BASE));
        // A group sorting before the others adds an identity.
        let second = step(
            &mut c,
            &policy(&BASE.replace("groups:\n", "groups:\n  a: [10.0.1.0/24]\n")),
        );
        for info in &first.identities {
            assert!(second.identities.contains(info), "{info:?} kept its id");
        }
        let old: BTreeSet<_> = first.rules.iter().map(|r| r.1).collect();
        assert!(second.rules.iter().all(|r| old.contains(&r.1)));
    }

    #[test]
    fn an_identity_that_comes_back_gets_a_new_id() {
        let mut c = Compiler::default();
        let with_a = BASE.replace("groups:\n", "groups:\n  a: [10.0.1.0/24]\n");
        let first = step(&mut c, &policy(&with_a));
        step(&mut c, &policy(BASE));
        let third = step(&mut c, &policy(&with_a));
        let id = |c: &Compiled| {
            c.identities
                .iter()
                .find(|i| *i.groups == ["a"])
                .map(|i| i.id)
                .unwrap()
        };
        assert_ne!(id(&first), id(&third));
    }

    /// Members moving between groups, groups emptied and filled, identities
    /// appearing and going, then the rules changing: every step equals a
    /// compile from scratch.
    #[test]
    fn reused_entries_equal_a_full_compile() {
        let variants = [
            "groups:\n  b: [10.0.2.0/24]\n  c: [10.0.3.0/24, 10.0.4.1/32]\n",
            "groups:\n  b: [10.0.2.0/24, 10.0.4.1/32]\n  c: [10.0.3.0/24]\n",
            "groups:\n  b: [10.0.2.0/24, 10.0.4.1/32]\n  c: [10.0.3.0/24, 10.0.4.1/32]\n",
            "groups:\n  b: [10.0.2.0/24]\n  c: [10.0.3.0/24]\n",
            "groups:\n  b: [10.0.2.0/24, 10.0.2.5/32]\n  c: []\n",
            "groups:\n  b: [10.0.9.0/24]\n  c: [10.0.2.0/25, 10.0.3.0/24]\n",
        ];
        let rules = [
            "rules:\n  - {name: b-to-c, from: b, to: c, ports: [80/tcp]}\n  - {name: c-any, from: c, to: any, ports: [53/udp]}\n",
            "rules:\n  - {name: b-to-c, from: b, to: c, ports: [80/tcp, 443/tcp]}\n",
        ];
        let mut c = Compiler::default();
        for r in rules {
            for g in variants.iter().chain(variants.iter().rev()) {
                step(&mut c, &policy(&format!("{g}{r}")));
            }
        }
    }

    /// NetworkPolicies over pods created, relabelled, moved between
    /// namespaces and deleted: every step equals a compile from scratch.
    #[test]
    fn pod_events_under_network_policies_equal_a_full_compile() {
        use crate::policy::{objects_from_str, with_cluster};
        let netpols = "\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {tier: front}}
      podSelector: {matchLabels: {role: client}}
    ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
      namespaceSelector: {}
  egress:
  - to:
    - ipBlock: {cidr: 10.1.0.0/16, except: [10.1.2.0/24]}
";
        let pods = |moves: &[(&str, &str, &str, &str)]| {
            let mut o = String::from(
                "apiVersion: v1\nkind: List\nitems:\n\
                 - {kind: Namespace, metadata: {name: x, labels: {tier: front}}}\n\
                 - {kind: Namespace, metadata: {name: y, labels: {tier: back}}}\n",
            );
            for (i, (name, ns, app, role)) in moves.iter().enumerate() {
                o.push_str(&format!(
                    "- {{kind: Pod, metadata: {{name: {name}, namespace: {ns}, labels: \
                     {{app: {app}, role: {role}}}}}, status: {{podIP: 10.1.2.{}}}}}\n",
                    i + 1
                ));
            }
            o
        };
        let steps: [&[(&str, &str, &str, &str)]; 6] = [
            &[("a", "x", "web", "server"), ("b", "x", "cli", "client")],
            &[
                ("a", "x", "web", "server"),
                ("b", "x", "cli", "client"),
                ("c", "y", "db", "server"),
            ],
            &[
                ("a", "x", "web", "client"),
                ("b", "x", "cli", "client"),
                ("c", "y", "db", "server"),
            ],
            &[
                ("a", "x", "web", "client"),
                ("b", "y", "web", "client"),
                ("c", "y", "db", "server"),
            ],
            &[("b", "y", "web", "client"), ("c", "y", "db", "server")],
            &[("a", "x", "web", "server"), ("b", "x", "cli", "client")],
        ];
        let (_, files) = objects_from_str("np.yaml", netpols).unwrap();
        let mut c = Compiler::default();
        for s in steps.iter().chain(steps.iter().rev()) {
            let (cluster, _) = objects_from_str("objects.yaml", &pods(s)).unwrap();
            let mut p = merge(files.clone()).unwrap();
            with_cluster(&mut p, &cluster);
            step(&mut c, &p);
        }
    }

    /// A small deterministic generator (xorshift): the sequences must be
    /// the same on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// (namespace, app, role, address numbers)
    type TestPod = (usize, usize, usize, Vec<usize>);

    /// A cluster as object texts: namespaces with a tier, pods with an app,
    /// a role and one or two addresses (some shared, some none).
    #[derive(Clone)]
    struct World {
        tiers: Vec<usize>,
        pods: Vec<Option<TestPod>>,
        host: Vec<usize>,
    }

    impl World {
        /// One text per object, as the API view keeps them.
        fn objects(&self) -> Vec<(String, String)> {
            let mut o = Vec::new();
            for (n, t) in self.tiers.iter().enumerate() {
                o.push((
                    format!("ns/n{n}"),
                    format!(
                        "{{kind: Namespace, metadata: {{name: n{n}, labels: {{tier: t{t}}}}}}}"
                    ),
                ));
            }
            for (j, p) in self.pods.iter().enumerate() {
                let Some((ns, app, role, ips)) = p else {
                    continue;
                };
                let ips: Vec<String> = ips
                    .iter()
                    .map(|a| match a % 3 {
                        0 => format!("{{ip: \"fd00::{a}\"}}"),
                        _ => format!("{{ip: 10.1.{}.{}}}", a / 200, a % 200),
                    })
                    .collect();
                o.push((
                    format!("pod/p{j}"),
                    format!(
                        "{{kind: Pod, metadata: {{name: p{j}, namespace: n{ns}, labels: \
                         {{app: a{app}, role: r{role}}}}}, spec: {{containers: [{{name: c, ports: \
                         [{{name: web, containerPort: {}}}]}}]}}, status: {{podIPs: [{}]}}}}",
                        8000 + app,
                        ips.join(", ")
                    ),
                ));
            }
            o
        }

        fn step(&mut self, rng: &mut Rng) {
            let j = rng.below(self.pods.len());
            let ips = |rng: &mut Rng| -> Vec<usize> {
                (0..rng.below(3)).map(|_| rng.below(40)).collect()
            };
            match rng.below(8) {
                0 => self.pods[j] = None,
                1 => {
                    let ns = rng.below(self.tiers.len());
                    self.pods[j] = Some((ns, rng.below(4), rng.below(3), ips(rng)));
                }
                2 => {
                    let n = rng.below(self.tiers.len());
                    self.tiers[n] = rng.below(3);
                }
                3 => {
                    if let Some(p) = &mut self.pods[j] {
                        p.3 = ips(rng);
                    }
                }
                4 => self.host = (0..rng.below(2)).map(|_| rng.below(40)).collect(),
                _ => {
                    if let Some(p) = &mut self.pods[j] {
                        p.1 = rng.below(4);
                        p.2 = rng.below(3);
                    }
                }
            }
        }

        fn host_addrs(&self) -> Vec<std::net::IpAddr> {
            self.host
                .iter()
                .map(|a| format!("10.1.{}.{}", a / 200, a % 200).parse().unwrap())
                .collect()
        }
    }

    /// Random pod, namespace and node-address events under NetworkPolicies
    /// (selectors, namespace selectors, named ports, ipBlocks with excepts)
    /// and selector groups: after every event the compiler that kept its
    /// state gives what a compiler that forgot it gives, and enforces what a
    /// compile from scratch enforces.
    #[test]
    fn random_events_equal_a_full_compile() {
        use crate::policy::{
            objects_from_parts, objects_from_str, parse_str_with, with_cluster,
            with_cluster_cached, ObjectCache, Selections,
        };
        let netpols = "\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: n0}
spec:
  podSelector: {matchLabels: {app: a1}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {tier: t1}}
      podSelector: {matchLabels: {role: r0}}
    ports: [{port: web}, {port: 53, protocol: UDP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: n1}
spec:
  podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [a0]}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: a2}}
      namespaceSelector: {}
  egress:
  - to:
    - ipBlock: {cidr: 10.1.0.0/16, except: [10.1.0.0/24]}
    ports: [{port: web}]
  - to:
    - podSelector: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: all, namespace: n2}
spec:
  podSelector: {}
  ingress:
  - {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: out, namespace: n0}
spec:
  podSelector: {matchLabels: {role: r0}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {}
    ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in, namespace: n1}
spec:
  podSelector: {matchLabels: {role: r1}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {tier: t0}}
    ports: [{port: 80}]
";
        let native = "\
groups:
  fronts: {namespaces: {matchLabels: {tier: t0}}, pods: {role: r1}}
  n2: {namespace: n2}
rules:
  - {name: front-to-n2, from: fronts, to: n2, ports: [80/tcp]}
  - {name: world-dns, from: n2, to: world, ports: [53/udp]}
";
        let with_native = |native_rules: bool| {
            let mut files = vec![];
            if native_rules {
                files.push(parse_str_with("native.yaml", native, true).unwrap());
            }
            files.extend(objects_from_str("np.yaml", netpols).unwrap().1);
            files
        };
        for seed in 1..=6u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut world = World {
                tiers: vec![0, 1, 2, 1],
                pods: (0..14).map(|_| None).collect(),
                host: vec![],
            };
            let mut c = Compiler::default();
            let mut parsed = ObjectCache::default();
            let mut selections = Selections::default();
            let files = with_native(seed % 2 == 0);
            for _ in 0..60 {
                world.step(&mut rng);
                let objects = world.objects();
                let whole: Vec<String> = objects.iter().map(|(_, t)| format!("- {t}")).collect();
                let whole = format!("kind: List\nitems:\n{}\n", whole.join("\n"));
                let (cluster, _) = objects_from_str("objects.yaml", &whole).unwrap();
                let parts = objects.into_iter().map(|(n, t)| parsed.parse(&n, t));
                let (kept, _) = objects_from_parts(parts.collect::<Vec<_>>()).unwrap();
                assert_eq!(kept, cluster, "seed {seed}");
                let mut p = merge(files.clone()).unwrap();
                with_cluster(&mut p, &cluster);
                let mut warm_p = merge(files.clone()).unwrap();
                with_cluster_cached(&mut warm_p, &kept, &mut selections);
                assert_eq!(warm_p, p, "seed {seed}");
                let opts = CompileOptions {
                    host_addrs: world.host_addrs(),
                    ..CompileOptions::default()
                };
                let mut cold = c.clone();
                cold.forget_entries();
                let warm = c.compile(&warm_p, &opts).unwrap();
                assert_eq!(warm, cold.compile(&p, &opts).unwrap(), "seed {seed}");
                let scratch = crate::policy::compile(&p, &opts).unwrap();
                assert_eq!(
                    warm.canonical_text(),
                    scratch.canonical_text(),
                    "seed {seed}"
                );
            }
        }
    }
}
