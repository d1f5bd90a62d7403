//! Rule ids that survive reloads. The compiler numbers rules by position, but
//! the kernel keeps per-rule counters by id: if a reload reordered the rules,
//! the counts gathered so far would be credited to whichever rule took the id.
//! The agent therefore renumbers every compiled policy so that a rule name
//! keeps its id for the agent's lifetime; a removed rule keeps its id and name
//! (its counters stay readable and never go backwards), and ids are never
//! reused.
use std::collections::HashMap;

use crate::policy::Compiled;

#[derive(Debug)]
pub struct StableRuleIds {
    /// Name -> (id, audit-only as last compiled).
    known: HashMap<String, (u32, bool)>,
    next: u32,
}

impl Default for StableRuleIds {
    fn default() -> Self {
        Self {
            known: HashMap::new(),
            next: 1,
        }
    }
}

impl StableRuleIds {
    /// Ids an earlier agent gave (its published rule names, by id), so a
    /// restarted agent credits the per-rule counters it adopted to the same
    /// rules even if the policy was reordered meanwhile.
    pub fn seeded(names: &[crate::datapath::RuleInfo]) -> Self {
        let mut ids = Self::default();
        for (id, r) in names.iter().enumerate().skip(1) {
            if !r.name.is_empty() {
                ids.known.insert(r.name.clone(), (id as u32, r.audit));
                ids.next = ids.next.max(id as u32 + 1);
            }
        }
        ids
    }

    /// Rewrites the rule ids of `c` (trie values, names, audit flags) to the
    /// stable ones. `c.rule_names` then lists every rule seen so far by id,
    /// removed ones included.
    pub fn renumber(&mut self, c: &mut Compiled) {
        let mut map = vec![0u32; c.rule_names.len()];
        for (old, name) in c.rule_names.iter().enumerate().skip(1) {
            let audit = c.rule_audit.get(old).copied().unwrap_or(false);
            let next = &mut self.next;
            let entry = self.known.entry(name.clone()).or_insert_with(|| {
                let id = *next;
                *next += 1;
                (id, audit)
            });
            entry.1 = audit;
            map[old] = entry.0;
        }
        for (_, _, v) in c.rules.iter_mut() {
            v.rule_id = map.get(v.rule_id as usize).copied().unwrap_or(0);
        }
        let len = self.next as usize;
        let mut names = vec![String::new(); len];
        let mut audit = vec![false; len];
        for (name, &(id, a)) in &self.known {
            names[id as usize].clone_from(name);
            audit[id as usize] = a;
        }
        c.rule_names = names;
        c.rule_audit = audit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::RuleInfo;

    #[test]
    fn seeded_ids_follow_the_names_an_earlier_agent_published() {
        let earlier = [
            RuleInfo::default(),
            RuleInfo {
                name: "b-to-a".into(),
                audit: false,
            },
            RuleInfo {
                name: "a-to-b".into(),
                audit: false,
            },
        ];
        let mut ids = StableRuleIds::seeded(&earlier);
        let mut c = compiled(A_THEN_B);
        ids.renumber(&mut c);
        assert_eq!(id_of(&c, "b-to-a"), 1);
        assert_eq!(id_of(&c, "a-to-b"), 2);
        let mut c = compiled(B_ONLY);
        ids.renumber(&mut c);
        assert_eq!(id_of(&c, "b-to-a"), 1);
        // A rule the earlier agent never saw gets an id it never gave.
        assert!(id_of(&c, "new-rule") > 2);
    }
    use crate::policy::{compile, merge, parse_str, CompileOptions};

    fn compiled(yaml: &str) -> Compiled {
        let f = parse_str("p.yaml", yaml).unwrap();
        compile(&merge(vec![f]).unwrap(), &CompileOptions::default()).unwrap()
    }

    fn id_of(c: &Compiled, name: &str) -> u32 {
        c.rule_names.iter().position(|n| n == name).unwrap() as u32
    }

    const A_THEN_B: &str = "groups:\n  a: [10.0.1.0/24]\n  b: [10.0.2.0/24]\nrules:\n  - name: a-to-b\n    from: a\n    to: b\n    ports: [80/tcp]\n  - name: b-to-a\n    from: b\n    to: a\n    ports: [81/tcp]\n";
    const B_ONLY: &str = "groups:\n  a: [10.0.1.0/24]\n  b: [10.0.2.0/24]\nrules:\n  - name: new-rule\n    from: a\n    to: a\n  - name: b-to-a\n    from: b\n    to: a\n    ports: [81/tcp]\n    audit: true\n";

    #[test]
    fn names_keep_their_ids_across_reorders_and_removals() {
        let mut ids = StableRuleIds::default();
        let mut first = compiled(A_THEN_B);
        ids.renumber(&mut first);
        let (ab, ba) = (id_of(&first, "a-to-b"), id_of(&first, "b-to-a"));
        let mut second = compiled(B_ONLY);
        // Positionally b-to-a is rule 2 here too, new-rule is 1 (a-to-b's old id).
        ids.renumber(&mut second);
        assert_eq!(id_of(&second, "b-to-a"), ba);
        assert_eq!(
            id_of(&second, "a-to-b"),
            ab,
            "a removed rule keeps its name"
        );
        let new = id_of(&second, "new-rule");
        assert!(new != ab && new != ba, "ids are never reused");
        assert!(second.rule_audit[ba as usize]);
        // Every trie value carries a stable id of a rule of this policy.
        let live: Vec<u32> = second.rules.iter().map(|(_, _, v)| v.rule_id).collect();
        assert!(live.contains(&ba) && live.contains(&new));
        assert!(!live.contains(&ab), "the removed rule allows nothing");
        let builtin = id_of(&second, crate::policy::HOST_INGRESS_RULE);
        assert_eq!(builtin, id_of(&first, crate::policy::HOST_INGRESS_RULE));
    }
}
