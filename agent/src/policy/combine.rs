//! NetworkPolicy sides combined into allowed (source, destination, ports)
//! pairs over identities, so the datapath keeps one lookup per packet.
//!
//! A pair is allowed when each side that judges it allows it: the source's
//! egress side when the source is an egress-isolated pod, the destination's
//! ingress side when it is an ingress-isolated pod (see `netpol`). Native
//! rules allow both sides of their pairs and are compiled as they are; this
//! module adds what NetworkPolicy sides allow, and the traffic of pods that
//! no policy isolates.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use super::cluster::PODS_GROUP;
use super::compile::{peers_ids, IdSet, Pair};
use super::error::CompileError;
use super::identity::Identities;
use super::model::{Peer, Policy, PortSpec, Rule};
use super::netpol::{Direction, SideRule, Workloads};

/// The rule credited with traffic of pods that no policy isolates (only
/// possible when there are no native rules).
pub const NOT_ISOLATED_RULE: &str = "builtin:not-isolated";

/// `a ∩ b` of two port lists (`PortSpec::ANY` is every port).
pub(super) fn intersect(a: &[PortSpec], b: &[PortSpec]) -> Vec<PortSpec> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let spec = match (x.proto, y.proto) {
                (None, _) => Some(*y),
                (_, None) => Some(*x),
                (Some(p), Some(q)) if p != q => None,
                (Some(p), Some(_)) => match (x.range, y.range) {
                    (None, r) | (r, None) => Some(PortSpec {
                        proto: Some(p),
                        range: r,
                    }),
                    (Some((a0, a1)), Some((b0, b1))) => {
                        let (lo, hi) = (a0.max(b0), a1.min(b1));
                        (lo <= hi).then_some(PortSpec::range(p, lo, hi))
                    }
                },
            };
            if let Some(s) = spec.filter(|s| !out.contains(s)) {
                out.push(s);
            }
        }
    }
    out
}

fn ports_of(side: &SideRule) -> Vec<PortSpec> {
    if side.ports.is_empty() {
        vec![PortSpec::ANY]
    } else {
        side.ports.clone()
    }
}

struct Sides<'a> {
    side: &'a SideRule,
    selected: Cow<'a, IdSet>,
    peers: Cow<'a, IdSet>,
}

/// Appends the NetworkPolicy sides to `rules` (named for counters and
/// `explain`) and what they allow to `effective`.
pub(super) fn workload_rules(
    ids: &Identities,
    policy: &Policy,
    w: &Workloads,
    rules: &mut Vec<Rule>,
    effective: &mut Vec<(u32, Vec<Pair>)>,
    only: Option<&IdSet>,
) -> Result<(), CompileError> {
    let all: IdSet = ids.infos.iter().map(|i| i.id).collect();
    let with = |group: &str| -> IdSet { ids.members.get(group).cloned().unwrap_or_default() };
    let pods = with(PODS_GROUP);
    let others: IdSet = all.difference(&pods).copied().collect();
    // Native rules isolate every workload in both directions.
    let native = !policy.rules.is_empty();
    let isolated = |dir: Direction| -> IdSet {
        if native {
            return pods.clone();
        }
        w.isolated
            .iter()
            .filter(|(d, _)| *d == dir)
            .flat_map(|(_, g)| with(g))
            .filter(|id| pods.contains(id))
            .collect()
    };
    let (in_iso, eg_iso) = (isolated(Direction::Ingress), isolated(Direction::Egress));
    let open = |iso: &IdSet| -> IdSet { all.difference(iso).copied().collect() };
    // Ends whose side does not judge: addresses that are no pod, and pods not
    // isolated in that direction.
    let (eg_open, in_open) = (open(&eg_iso), open(&in_iso));

    let sides: Vec<Sides> = w
        .sides
        .iter()
        .map(|side| {
            let rule = side_rule(side);
            Ok(Sides {
                side,
                selected: peers_ids(ids, &rule, std::slice::from_ref(&side.selected))?,
                peers: peers_ids(ids, &rule, &side.peers)?,
            })
        })
        .collect::<Result<_, CompileError>>()?;

    // The egress sides selecting each egress-isolated identity: an ingress
    // side meets only those selecting one of its sources (with a thousand
    // policies, the others are nearly all of them, and meet nothing).
    let mut selecting: HashMap<u32, Vec<usize>> = HashMap::new();
    for (k, e) in sides.iter().enumerate() {
        if e.side.direction == Direction::Egress {
            for id in e.selected.intersection(&eg_iso) {
                selecting.entry(*id).or_default().push(k);
            }
        }
    }

    let first_id = rules.len() as u32 + 1;
    // With `only`, the caller wants the entries of those identities alone:
    // a side holding none of them on either end makes none of its pairs.
    let touches = |set: &IdSet| only.is_none_or(|o| !o.is_disjoint(set));
    for (s, rule_id) in sides.iter().zip(first_id..) {
        rules.push(side_rule(s.side));
        let ports = ports_of(s.side);
        let mut pairs: Vec<Pair> = Vec::new();
        if !touches(&s.peers) && !touches(&s.selected) {
            effective.push((rule_id, pairs));
            continue;
        }
        match s.side.direction {
            Direction::Ingress => {
                // Sources whose egress does not judge.
                let srcs = inter(&s.peers, &eg_open);
                pairs.push((srcs, IdSet::clone(&s.selected), ports.clone()));
                // Sources whose egress side allows it too.
                let meets = meeting(s, &sides, &selecting, only);
                for e in meets.into_iter().map(|k| &sides[k]) {
                    let srcs = inter(&inter(&s.peers, &e.selected), &eg_iso);
                    let dsts = inter(&s.selected, &e.peers);
                    let both = intersect(&ports, &ports_of(e.side));
                    if !both.is_empty() {
                        pairs.push((srcs, dsts, both));
                    }
                }
            }
            Direction::Egress => {
                // Destinations whose ingress does not judge.
                let dsts = inter(&s.peers, &in_open);
                pairs.push((IdSet::clone(&s.selected), dsts, ports));
            }
        }
        effective.push((rule_id, pairs));
    }

    // Pods no policy isolates: open to and from every end whose own side
    // does not judge (two addresses that are no pods stay with native rules).
    let a: IdSet = pods.difference(&eg_iso).copied().collect();
    let b: IdSet = pods.difference(&in_iso).copied().collect();
    if !a.is_empty() || !b.is_empty() {
        rules.push(Rule::new(
            NOT_ISOLATED_RULE,
            &[Peer::Any],
            &[Peer::Any],
            &[],
        ));
        let rule_id = rules.len() as u32;
        let b_or_others: IdSet = b.union(&others).copied().collect();
        effective.push((
            rule_id,
            vec![
                (a, b_or_others, vec![PortSpec::ANY]),
                (others, b, vec![PortSpec::ANY]),
            ],
        ));
    }
    Ok(())
}

/// The egress sides an ingress side `s` is combined with: those selecting
/// one of its sources. With `only`, just those whose pair with `s` holds
/// one of `only`: as a source (the egress side selects it), or as a
/// destination (the egress side's peers hold it).
fn meeting(
    s: &Sides,
    sides: &[Sides],
    selecting: &HashMap<u32, Vec<usize>>,
    only: Option<&IdSet>,
) -> BTreeSet<usize> {
    let of = |ids: &mut dyn Iterator<Item = &u32>| -> BTreeSet<usize> {
        ids.filter_map(|id| selecting.get(id))
            .flatten()
            .copied()
            .collect()
    };
    let Some(only) = only else {
        return of(&mut s.peers.iter());
    };
    let mut out = of(&mut s.peers.intersection(only));
    let dsts = inter(&s.selected, only);
    if !dsts.is_empty() {
        let all = of(&mut s.peers.iter());
        out.extend(
            all.into_iter()
                .filter(|k| !sides[*k].peers.is_disjoint(&dsts)),
        );
    }
    out
}

fn inter(a: &IdSet, b: &IdSet) -> IdSet {
    a.intersection(b).copied().collect::<BTreeSet<u32>>()
}

/// A side as a rule: what `check` and `explain` show, and what counters are
/// kept by.
pub fn side_rule(side: &SideRule) -> Rule {
    let selected = std::slice::from_ref(&side.selected);
    let (from, to) = match side.direction {
        Direction::Ingress => (&side.peers[..], selected),
        Direction::Egress => (selected, &side.peers[..]),
    };
    let mut r = Rule::new(&side.name, from, to, &side.ports);
    r.origin = Some(super::model::RuleOrigin {
        rule: side.origin.clone(),
        from: vec![side.origin.clone(); from.len()],
        to: vec![side.origin.clone(); to.len()],
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_intersect() {
        let tcp = |lo, hi| PortSpec::range(6, lo, hi);
        assert_eq!(intersect(&[PortSpec::ANY], &[tcp(80, 80)]), [tcp(80, 80)]);
        assert_eq!(intersect(&[tcp(80, 90)], &[tcp(85, 100)]), [tcp(85, 90)]);
        assert!(intersect(&[tcp(80, 80)], &[tcp(81, 81)]).is_empty());
        assert!(intersect(&[tcp(80, 80)], &[PortSpec::port(17, 80)]).is_empty());
        assert_eq!(
            intersect(
                &[PortSpec::proto(6)],
                &[tcp(443, 443), PortSpec::port(17, 53)]
            ),
            [tcp(443, 443)]
        );
    }
}
