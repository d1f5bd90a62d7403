//! The identities of one agent's compiles, kept and updated in place. A pod
//! event adds or removes host prefixes (/32, /128: pod addresses) in a few
//! groups; only those prefixes can change identity, since a host prefix
//! contains no other prefix. So only their sets of groups are worked out
//! again, instead of those of every address of the cluster.
//!
//! Anything else (a group defined or removed, a range or an except that
//! changed, a literal CIDR of a rule) is left to a full build: `update`
//! answers `None` and the caller builds from scratch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ipnet::IpNet;

use super::compile::IdSet;
use super::identity::{
    id_order, names_of, set_of, Identities, IdentityInfo, Parts, PrefixIndex, Source,
};

#[derive(Clone)]
pub(super) struct IdentityIndex {
    /// Per source: its name and whether it counts against `world`.
    shape: Vec<(String, bool)>,
    /// Per source: its prefixes and excepts as last built.
    cidrs: Vec<Vec<IpNet>>,
    except: Vec<Vec<IpNet>>,
    index: PrefixIndex,
    sets: BTreeMap<IpNet, Vec<usize>>,
    /// Each distinct set: its identity id and how many prefixes hold it.
    by_set: HashMap<Vec<usize>, (u32, usize)>,
    ids: Identities,
}

/// Identity ids as the compiler keeps them: group list to id, and the next
/// fresh one.
pub(super) struct Ids<'a> {
    pub known: &'a mut HashMap<Arc<[String]>, u32>,
    pub next: &'a mut u32,
}

/// What an update changed: ids that are new, ids that are gone.
pub(super) struct Change {
    pub added: IdSet,
    pub removed: IdSet,
}

fn is_host(p: &IpNet) -> bool {
    p.prefix_len() == p.max_prefix_len()
}

/// `a` minus `b` and `b` minus `a`, as multisets (a source may name a
/// prefix twice, and the index holds it twice).
fn diff(a: &[IpNet], b: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                only_a.push(*x);
                i += 1;
            }
            (Some(x), None) => {
                only_a.push(*x);
                i += 1;
            }
            (_, Some(y)) => {
                only_b.push(*y);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (only_a, only_b)
}

impl IdentityIndex {
    /// The state of a full build: `ids` as renumbered, `renamed[i]` the id
    /// the build's id `i` became.
    pub fn new(sources: &[Source], parts: Parts, renamed: &[u32], ids: Identities) -> Self {
        let mut by_set: HashMap<Vec<usize>, (u32, usize)> = HashMap::new();
        for set in parts.sets.values() {
            if let Some(e) = by_set.get_mut(set) {
                e.1 += 1;
            } else {
                by_set.insert(set.clone(), (renamed[parts.ids[set] as usize], 1));
            }
        }
        Self {
            shape: sources.iter().map(|s| (s.name.clone(), s.named)).collect(),
            cidrs: sources.iter().map(|s| s.cidrs.to_vec()).collect(),
            except: sources.iter().map(|s| s.except.to_vec()).collect(),
            index: parts.index,
            sets: parts.sets,
            by_set,
            ids,
        }
    }

    pub fn identities(&self) -> &Identities {
        &self.ids
    }

    /// Brings the identities to `sources`, when they differ from the last
    /// ones only by host prefixes; `None` (and nothing changed) otherwise.
    pub fn update(&mut self, sources: &[Source], ids: Ids) -> Option<Change> {
        let same_shape = sources.len() == self.shape.len()
            && sources
                .iter()
                .zip(&self.shape)
                .all(|(s, (name, named))| s.name == *name && s.named == *named);
        if !same_shape {
            return None;
        }
        let mut moves: Vec<(usize, Vec<IpNet>, Vec<IpNet>)> = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            if *s.except != *self.except[i] {
                return None;
            }
            if *s.cidrs == *self.cidrs[i] {
                continue;
            }
            let (gone, new) = diff(&self.cidrs[i], &s.cidrs);
            if !gone.iter().chain(&new).all(is_host) {
                return None;
            }
            moves.push((i, gone, new));
        }
        let mut touched: BTreeSet<IpNet> = BTreeSet::new();
        for (i, gone, new) in moves {
            for p in gone {
                self.index.remove(&p, (i, false));
                touched.insert(p);
            }
            for p in new {
                self.index.push(p, (i, false));
                touched.insert(p);
            }
            self.cidrs[i] = sources[i].cidrs.to_vec();
        }
        Some(self.rework(sources, &touched, ids))
    }

    /// Works out the sets of the `touched` host prefixes again, and the
    /// identities that appear and go with them.
    fn rework(&mut self, sources: &[Source], touched: &BTreeSet<IpNet>, ids: Ids) -> Change {
        // Holders of each set touched, before this update.
        let mut before: HashMap<Vec<usize>, usize> = HashMap::new();
        for p in touched {
            if let Some(old) = self.sets.remove(p) {
                let e = self.by_set.get_mut(&old).expect("counted");
                before.entry(old).or_insert(e.1);
                e.1 -= 1;
            }
            if self.index.contains_key(p) {
                let set = set_of(&self.index, sources, p);
                let e = self.by_set.entry(set.clone()).or_insert((0, 0));
                before.entry(set.clone()).or_insert(e.1);
                e.1 += 1;
                self.sets.insert(*p, set);
            }
        }
        let mut change = Change {
            added: IdSet::new(),
            removed: IdSet::new(),
        };
        let mut appeared: Vec<(Vec<String>, Vec<usize>)> = Vec::new();
        for (set, was) in before {
            let (id, now) = self.by_set[&set];
            if was > 0 && now == 0 {
                self.by_set.remove(&set);
                change.removed.insert(id);
                self.forget(id, ids.known);
            } else if was == 0 && now > 0 {
                appeared.push((names_of(sources, &set), set));
            }
        }
        // Fresh ids in the order a full build numbers new identities.
        appeared.sort_by(|a, b| id_order(&a.0).cmp(&id_order(&b.0)));
        for (names, set) in appeared {
            let id = *ids.next;
            *ids.next += 1;
            self.by_set.get_mut(&set).expect("counted").0 = id;
            change.added.insert(id);
            let names: Arc<[String]> = names.into();
            ids.known.insert(names.clone(), id);
            for g in names.iter() {
                self.ids.members.entry(g.clone()).or_default().insert(id);
            }
            // Fresh ids are above every id in use: the list stays sorted.
            self.ids.infos.push(IdentityInfo { id, groups: names });
        }
        for p in touched {
            self.place(p);
        }
        change
    }

    fn forget(&mut self, id: u32, known: &mut HashMap<Arc<[String]>, u32>) {
        let Ok(at) = self.ids.infos.binary_search_by_key(&id, |i| i.id) else {
            return;
        };
        let info = self.ids.infos.remove(at);
        for g in info.groups.iter() {
            if let Some(m) = self.ids.members.get_mut(g) {
                m.remove(&id);
                if m.is_empty() {
                    self.ids.members.remove(g);
                }
            }
        }
        known.remove(&info.groups);
    }

    /// The map entry of host prefix `p`: its identity, unless the nearest
    /// shorter prefix has the same one (or `p` holds no identity any more).
    fn place(&mut self, p: &IpNet) {
        let id_at = |q: &IpNet| self.sets.get(q).map(|set| self.by_set[set].0);
        let want = id_at(p).filter(|&id| {
            let parent = self
                .index
                .ancestors(p)
                .skip(1)
                .find(|a| self.sets.contains_key(a));
            parent.is_none_or(|a| id_at(&a) != Some(id))
        });
        match p {
            IpNet::V4(n) => upsert(&mut self.ids.v4, *n, want),
            IpNet::V6(n) => upsert(&mut self.ids.v6, *n, want),
        }
    }
}

fn upsert<K: Ord + Copy>(list: &mut Vec<(K, u32)>, key: K, want: Option<u32>) {
    match (list.binary_search_by_key(&key, |(k, _)| *k), want) {
        (Ok(i), Some(id)) => list[i].1 = id,
        (Ok(i), None) => {
            list.remove(i);
        }
        (Err(i), Some(id)) => list.insert(i, (key, id)),
        (Err(_), None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiset_difference() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let a = [n("10.0.0.1/32"), n("10.0.0.2/32"), n("10.0.0.2/32")];
        let b = [n("10.0.0.3/32"), n("10.0.0.2/32")];
        assert_eq!(
            diff(&a, &b),
            (
                vec![n("10.0.0.1/32"), n("10.0.0.2/32")],
                vec![n("10.0.0.3/32")]
            )
        );
    }
}
