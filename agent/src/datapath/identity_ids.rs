//! Identity ids that survive reloads. The compiler numbers identities by the
//! sorted list of their groups, so one pod that appears, leaves or is
//! relabelled can shift every id after it, and the next swap would rewrite
//! nearly every identity and rule entry. The agent renumbers each compiled
//! policy so that a set of groups keeps its id while it exists: a pod event
//! then changes only the entries of the identities it touches.
//!
//! Ids of identities that are gone are not reused (a fresh id for a new set
//! of groups), so no entry written for an old identity can be read as
//! another's.
use std::collections::HashMap;

use crate::policy::Compiled;

#[derive(Debug)]
pub struct StableIdentityIds {
    known: HashMap<Vec<String>, u32>,
    next: u32,
}

impl Default for StableIdentityIds {
    fn default() -> Self {
        Self {
            known: HashMap::new(),
            next: 1,
        }
    }
}

impl StableIdentityIds {
    /// Rewrites every identity id of `c` (identity tries, rule keys, the
    /// identity list) to the stable ones.
    pub fn renumber(&mut self, c: &mut Compiled) {
        let mut known = HashMap::with_capacity(c.identities.len());
        let mut map: HashMap<u32, u32> = HashMap::with_capacity(c.identities.len());
        for info in &c.identities {
            let id = match self.known.get(&info.groups) {
                Some(&id) => id,
                None => {
                    let id = self.next;
                    self.next += 1;
                    id
                }
            };
            known.insert(info.groups.clone(), id);
            map.insert(info.id, id);
        }
        // Only identities that exist now are remembered: memory follows the
        // policy, not its history.
        self.known = known;
        let new = |old: u32| map.get(&old).copied().unwrap_or(old);
        for info in &mut c.identities {
            info.id = new(info.id);
        }
        c.identities.sort_by_key(|i| i.id);
        for (_, v) in c.ids_v4.iter_mut() {
            v.id = new(v.id);
        }
        for (_, v) in c.ids_v6.iter_mut() {
            v.id = new(v.id);
        }
        for (_, key, _) in c.rules.iter_mut() {
            let (src, dst) = (
                u32::from_be_bytes(key.src_id),
                u32::from_be_bytes(key.dst_id),
            );
            key.src_id = new(src).to_be_bytes();
            key.dst_id = new(dst).to_be_bytes();
        }
        c.rules.sort_by_key(|(prefix, key, _)| (*key, *prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile, merge, parse_str, CompileOptions};

    fn compiled(yaml: &str) -> Compiled {
        let p = merge(vec![parse_str("p.yaml", yaml).unwrap()]).unwrap();
        compile(&p, &CompileOptions::default()).unwrap()
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
        let mut ids = StableIdentityIds::default();
        let mut first = compiled(BASE);
        ids.renumber(&mut first);
        // `a` sorts before `b` and `c`: the compiler alone would shift them.
        let mut second = compiled(&format!("{BASE}\n---\ngroups:\n  a: [10.0.1.0/24]\n"));
        let shifted = second.identities.clone();
        ids.renumber(&mut second);
        let id_of = |c: &Compiled, g: &str| {
            c.identities
                .iter()
                .find(|i| i.groups == [g])
                .map(|i| i.id)
                .unwrap()
        };
        assert_ne!(
            shifted.iter().find(|i| i.groups == ["b"]).unwrap().id,
            id_of(&first, "b"),
            "the compiler's own numbering shifts (otherwise this test proves nothing)"
        );
        for g in ["b", "c"] {
            assert_eq!(id_of(&second, g), id_of(&first, g), "{g}");
        }
        // The rule entries and identity tries follow: b -> c keeps its key.
        assert_eq!(first.rules, second.rules);
        let a = id_of(&second, "a");
        assert!(
            a > id_of(&first, "c"),
            "a new set of groups gets a fresh id"
        );
        assert!(second.ids_v4.iter().any(|(_, v)| v.id == a));
    }
}
