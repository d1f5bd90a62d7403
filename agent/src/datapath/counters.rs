//! The verdict counters as the loaded object holds them, summed over CPUs.

use agent_common::{map_names, reason, Counter, CtKey4, CtKey6, CtValue, COUNTER_SLOTS};
use agent_common::{
    rule_counter_index, stat, RULE_IDS, RULE_REASONS, TRAFFIC_EGRESS, TRAFFIC_INGRESS,
};
use anyhow::Context as _;
use aya::maps::PerCpuValues;
use aya::maps::{HashMap, MapData, PerCpuArray};

use super::{error::*, handles::*, Datapath};

/// Counter totals for one (traffic, audited, reason) slot, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CounterRow {
    /// `ingress` (entering the workload) or `egress` (leaving it).
    pub traffic: &'static str,
    pub verdict: &'static str,
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

impl Datapath {
    /// Every non-zero counter, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<CounterRow>> {
        let map = self
            .ebpf
            .map(map_names::COUNTERS)
            .ok_or_else(|| DatapathError::MissingMap(map_names::COUNTERS.into()))?;
        let counters: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(map).map_err(map_err(map_names::COUNTERS))?;
        let mut rows = read_counters(&counters)?;
        // Passes by a rule are counted per rule: fold them back by reason.
        let max_rule = self
            .slots
            .iter()
            .flat_map(|s| s.rules.iter().map(|(_, v)| v.rule_id))
            .max()
            .unwrap_or(0);
        let by_rule: PerCpuArray<&MapData, Counter> =
            typed_map_ref(&self.ebpf, map_names::RULE_COUNTERS)?;
        crate::datapath::fold_rule_counters(&mut rows, &by_rule, max_rule)
            .map_err(map_err(map_names::RULE_COUNTERS))?;
        Ok(rows)
    }

    /// Live conntrack entries (IPv4, IPv6).
    pub fn ct_counts(&self) -> Result<(usize, usize)> {
        let v4: HashMap<&MapData, CtKey4, CtValue> = typed_map_ref(&self.ebpf, map_names::CT4)?;
        let v6: HashMap<&MapData, CtKey6, CtValue> = typed_map_ref(&self.ebpf, map_names::CT6)?;
        Ok((v4.keys().count(), v6.keys().count()))
    }
}

/// Reads the counter array into rows, skipping zeros.
pub fn read_counters<T: std::borrow::Borrow<MapData>>(
    counters: &PerCpuArray<T, Counter>,
) -> Result<Vec<CounterRow>> {
    let mut rows = Vec::new();
    for idx in 0..COUNTER_SLOTS {
        let per_cpu = counters
            .get(&idx, 0)
            .map_err(map_err(map_names::COUNTERS))?;
        let (packets, bytes) = per_cpu
            .iter()
            .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
        if packets == 0 {
            continue;
        }
        let r = idx % reason::COUNT;
        let audited = (idx / reason::COUNT) % 2 == 1;
        let dir = idx / (2 * reason::COUNT);
        rows.push(CounterRow {
            traffic: if dir == TRAFFIC_INGRESS {
                "ingress"
            } else {
                "egress"
            },
            verdict: if r < reason::FIRST_DROP_REASON {
                "pass"
            } else if audited {
                "audit-deny"
            } else {
                "drop"
            },
            reason: reason::NAMES[r as usize],
            packets,
            bytes,
        });
    }
    Ok(rows)
}

/// Adds the per-rule counters of rule ids `1..=max_rule` to `rows` by
/// (traffic, reason), for readers that want the per-reason totals only.
pub fn fold_rule_counters<T: std::borrow::Borrow<aya::maps::MapData>>(
    rows: &mut Vec<CounterRow>,
    by_rule: &aya::maps::PerCpuArray<T, Counter>,
    max_rule: u32,
) -> std::result::Result<(), aya::maps::MapError> {
    for id in 1..=max_rule.min(RULE_IDS - 1) {
        for (dir, traffic) in [(TRAFFIC_INGRESS, "ingress"), (TRAFFIC_EGRESS, "egress")] {
            for why in RULE_REASONS.iter() {
                let Some(idx) = rule_counter_index(id, dir, *why) else {
                    continue;
                };
                let (packets, bytes) = sum_counters(&by_rule.get(&idx, 0)?);
                if packets == 0 {
                    continue;
                }
                let name = reason::NAMES[*why as usize];
                match rows
                    .iter_mut()
                    .find(|r| r.traffic == traffic && r.reason == name)
                {
                    Some(r) => {
                        r.packets += packets;
                        r.bytes += bytes;
                    }
                    None => rows.push(CounterRow {
                        traffic,
                        verdict: "pass",
                        reason: name,
                        packets,
                        bytes,
                    }),
                }
            }
        }
    }
    Ok(())
}

pub fn sum_counters(values: &PerCpuValues<Counter>) -> (u64, u64) {
    values
        .iter()
        .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
}

/// Adds the sweeper's conntrack deletions to `STATS` (a slot the datapath
/// never writes), so readers can tell deletions from evictions.
pub fn note_gc_removed(ebpf: &mut aya::Ebpf, removed: usize) -> anyhow::Result<()> {
    if removed == 0 {
        return Ok(());
    }
    let Some(map) = ebpf.map_mut(map_names::STATS) else {
        return Ok(());
    };
    let mut m: aya::maps::PerCpuArray<_, u64> = aya::maps::PerCpuArray::try_from(map)?;
    let idx = stat::CT_GC_REMOVED;
    let mut values: Vec<u64> = m.get(&idx, 0)?.iter().copied().collect();
    if let Some(first) = values.first_mut() {
        *first += removed as u64;
    }
    let values = PerCpuValues::try_from(values).context("STATS values")?;
    m.set(idx, values, 0).context("writing STATS")?;
    Ok(())
}
