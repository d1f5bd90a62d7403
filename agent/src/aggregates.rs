//! The never-evicted verdict totals: per (direction, verdict, reason) and per
//! rule, plus the datapath's bookkeeping (map fill, creations, events).
use agent_common::{
    map_names, reason, stat, Counter, CtKey4, CtKey6, CtValue, DeniedValue, RuleName,
    RULE_COUNTER_STRIDE, RULE_FLAG_AUDIT, RULE_NAME_LEN, RULE_REASONS,
};
use anyhow::Context as _;
use aya::maps::PerCpuValues;

use crate::{datapath::read_counters, pinned::Pinned, policy::Compiled};

/// Rule ids the datapath keeps per-rule counters for (the size of
/// `RULE_COUNTERS` / `RULE_NAMES`); passes by higher ids count without a rule.
pub const RULE_IDS: u32 = 4096;

/// One aggregate series: what `stats` prints and `/metrics` exports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AggRow {
    pub direction: &'static str,
    /// `pass`, `drop`, or `audit` (would have been dropped).
    pub verdict: &'static str,
    pub reason: &'static str,
    /// The rule credited with a pass; empty for everything else.
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// A rule as readers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleInfo {
    pub name: String,
    pub audit: bool,
}

/// Publishes the rule names of `compiled` for readers of the pinned maps.
/// Entry 0 (never a rule) carries the number of ids in its flags.
pub fn publish_rule_names(pinned: &Pinned, compiled: &Compiled) -> anyhow::Result<()> {
    let mut map = pinned.array::<RuleName>(map_names::RULE_NAMES)?;
    let n = compiled.rule_names.len().min(RULE_IDS as usize);
    let header = RuleName {
        flags: n as u32,
        ..RuleName::default()
    };
    map.set(0, header, 0).context("writing RULE_NAMES")?;
    for (id, name) in compiled.rule_names.iter().enumerate().take(n).skip(1) {
        let mut v = RuleName::default();
        let bytes = name.as_bytes();
        let len = bytes.len().min(RULE_NAME_LEN);
        v.name[..len].copy_from_slice(&bytes[..len]);
        if compiled.rule_audit.get(id).copied().unwrap_or(false) {
            v.flags = RULE_FLAG_AUDIT;
        }
        map.set(id as u32, v, 0).context("writing RULE_NAMES")?;
    }
    Ok(())
}

/// Rule names by id (index 0 is empty).
pub fn rule_names(pinned: &Pinned) -> anyhow::Result<Vec<RuleInfo>> {
    let map = pinned.array::<RuleName>(map_names::RULE_NAMES)?;
    let n = map.get(&0, 0)?.flags.min(RULE_IDS);
    let mut out = vec![RuleInfo::default()];
    for id in 1..n {
        let v = map.get(&id, 0)?;
        let end = v.name.iter().position(|&b| b == 0).unwrap_or(RULE_NAME_LEN);
        out.push(RuleInfo {
            name: String::from_utf8_lossy(&v.name[..end]).into_owned(),
            audit: v.flags & RULE_FLAG_AUDIT != 0,
        });
    }
    Ok(out)
}

/// Adds the per-rule counters of rule ids `1..=max_rule` to `rows` by
/// (direction, reason), for readers that want the per-reason totals only.
pub fn fold_rule_counters<T: std::borrow::Borrow<aya::maps::MapData>>(
    rows: &mut Vec<crate::datapath::CounterRow>,
    by_rule: &aya::maps::PerCpuArray<T, Counter>,
    max_rule: u32,
) -> Result<(), aya::maps::MapError> {
    for id in 1..=max_rule.min(RULE_IDS - 1) {
        for (dir, direction) in [(0u32, "ingress"), (1, "egress")] {
            for (kind, why) in RULE_REASONS.iter().enumerate() {
                let idx = id * RULE_COUNTER_STRIDE + dir * 4 + kind as u32;
                let (packets, bytes) = sum(&by_rule.get(&idx, 0)?);
                if packets == 0 {
                    continue;
                }
                let name = reason::NAMES[*why as usize];
                match rows
                    .iter_mut()
                    .find(|r| r.direction == direction && r.reason == name)
                {
                    Some(r) => {
                        r.packets += packets;
                        r.bytes += bytes;
                    }
                    None => rows.push(crate::datapath::CounterRow {
                        direction,
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

fn sum(values: &PerCpuValues<Counter>) -> (u64, u64) {
    values
        .iter()
        .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
}

/// Every non-zero aggregate: the per-reason array (rule empty) and the
/// per-rule array, which together count each packet exactly once.
pub fn read_rows(pinned: &Pinned, rules: &[RuleInfo]) -> anyhow::Result<Vec<AggRow>> {
    let counters = pinned.per_cpu_array::<Counter>(map_names::COUNTERS)?;
    let mut rows: Vec<AggRow> = read_counters(&counters)?
        .into_iter()
        .map(|r| AggRow {
            direction: r.direction,
            verdict: if r.verdict == "audit-deny" {
                "audit"
            } else {
                r.verdict
            },
            reason: r.reason,
            rule: String::new(),
            packets: r.packets,
            bytes: r.bytes,
        })
        .collect();
    let by_rule = pinned.per_cpu_array::<Counter>(map_names::RULE_COUNTERS)?;
    for (id, info) in rules.iter().enumerate().skip(1) {
        for (dir, direction) in [(0u32, "ingress"), (1, "egress")] {
            for (kind, why) in RULE_REASONS.iter().enumerate() {
                let idx = id as u32 * RULE_COUNTER_STRIDE + dir * 4 + kind as u32;
                let (packets, bytes) = sum(&by_rule.get(&idx, 0)?);
                if packets == 0 {
                    continue;
                }
                rows.push(AggRow {
                    direction,
                    verdict: if info.audit { "audit" } else { "pass" },
                    reason: reason::NAMES[*why as usize],
                    rule: info.name.clone(),
                    packets,
                    bytes,
                });
            }
        }
    }
    Ok(rows)
}

/// Fill of a bounded map and what the kernel created in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
    pub created: u64,
    /// Entries created and gone without being deleted: LRU evictions. For
    /// conntrack, deletions by the sweeper and by revocation are taken out.
    pub evicted: u64,
}

/// The datapath's bookkeeping counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Bookkeeping {
    pub maps: Vec<MapFill>,
    pub events_sent: u64,
    pub events_rate_limited: u64,
    pub events_ring_full: u64,
    /// New denied flows counted but not recorded (record rate exceeded).
    pub denied_not_recorded: u64,
}

pub fn read_stats(pinned: &Pinned) -> anyhow::Result<[u64; stat::COUNT as usize]> {
    let m = pinned.per_cpu_array::<u64>(map_names::STATS)?;
    let mut out = [0u64; stat::COUNT as usize];
    for (i, v) in out.iter_mut().enumerate() {
        *v = m.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}

pub fn read_bookkeeping(pinned: &Pinned) -> anyhow::Result<Bookkeeping> {
    let s = read_stats(pinned)?;
    let ct4 = pinned
        .lru::<CtKey4, CtValue>(map_names::CT4)?
        .keys()
        .count() as u64;
    let ct6 = pinned
        .lru::<CtKey6, CtValue>(map_names::CT6)?
        .keys()
        .count() as u64;
    let d4 = pinned
        .lru::<CtKey4, DeniedValue>(map_names::DENIED4)?
        .keys()
        .count() as u64;
    let d6 = pinned
        .lru::<CtKey6, DeniedValue>(map_names::DENIED6)?
        .keys()
        .count() as u64;
    // Deletions are counted for both families together, so conntrack fill
    // and evictions are reported for IPv4 and IPv6 together too.
    let ct_deleted = s[stat::CT_REMOVED as usize] + s[stat::CT_GC_REMOVED as usize];
    let ct_created = s[stat::CT4_CREATED as usize] + s[stat::CT6_CREATED as usize];
    let ct_evicted = ct_created.saturating_sub(ct4 + ct6 + ct_deleted);
    let cap = |n: &str| pinned.capacity(n).map(u64::from);
    let maps = vec![
        MapFill {
            map: "conntrack",
            entries: ct4 + ct6,
            capacity: cap(map_names::CT4)? + cap(map_names::CT6)?,
            created: ct_created,
            evicted: ct_evicted,
        },
        MapFill {
            map: "denied_flows",
            entries: d4 + d6,
            capacity: cap(map_names::DENIED4)? + cap(map_names::DENIED6)?,
            created: s[stat::DENIED4_CREATED as usize] + s[stat::DENIED6_CREATED as usize],
            evicted: (s[stat::DENIED4_CREATED as usize] + s[stat::DENIED6_CREATED as usize])
                .saturating_sub(d4 + d6),
        },
    ];
    Ok(Bookkeeping {
        maps,
        events_sent: s[stat::EVENTS_SENT as usize],
        events_rate_limited: s[stat::EVENTS_RATE_LIMITED as usize],
        events_ring_full: s[stat::EVENTS_RING_FULL as usize],
        denied_not_recorded: s[stat::DENIED_NOT_RECORDED as usize],
    })
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
