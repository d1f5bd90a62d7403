//! The never-evicted verdict totals: per (traffic, verdict, reason) and per
//! rule, plus the datapath's bookkeeping (map fill, creations, events).
use agent_common::{
    map_names, reason, rule_counter_index, stat, Counter, CtKey4, CtKey6, CtValue, DeniedValue,
    FragKey4, FragKey6, FragValue, IdKey4, IdKey6, IdentityValue, RuleKey, RuleValue, SourceKey,
    SourceValue, RULE_REASONS, TRAFFIC_EGRESS, TRAFFIC_INGRESS,
};

use crate::{
    bpffs::Pinned,
    datapath::{read_counters, sum_counters as sum, RuleInfo},
};

/// One aggregate series: what `stats` prints and `/metrics` exports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AggRow {
    /// `ingress` (entering the workload: a pod, or the node from the
    /// network) or `egress` (leaving it), whichever hook counted it.
    pub traffic: &'static str,
    /// `pass`, `drop`, or `audit` (would have been dropped).
    pub verdict: &'static str,
    pub reason: &'static str,
    /// The rule credited with a pass; empty for everything else.
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Every non-zero aggregate: the per-reason array (rule empty) and the
/// per-rule array, which together count each packet exactly once.
pub fn read_rows(pinned: &Pinned, rules: &[RuleInfo]) -> anyhow::Result<Vec<AggRow>> {
    let counters = pinned.per_cpu_array::<Counter>(map_names::COUNTERS)?;
    let mut rows: Vec<AggRow> = read_counters(&counters)?
        .into_iter()
        .map(|r| AggRow {
            traffic: r.traffic,
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
        for (dir, traffic) in [(TRAFFIC_INGRESS, "ingress"), (TRAFFIC_EGRESS, "egress")] {
            for why in RULE_REASONS.iter() {
                let Some(idx) = rule_counter_index(id as u32, dir, *why) else {
                    continue;
                };
                let (packets, bytes) = sum(&by_rule.get(&idx, 0)?);
                if packets == 0 {
                    continue;
                }
                rows.push(AggRow {
                    traffic,
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
    /// Entries the datapath created: for the maps it fills (conntrack,
    /// denied flows); `None` for the maps the agent writes.
    pub created: Option<u64>,
    /// Entries created and gone without being deleted: LRU evictions. For
    /// conntrack, deletions by the sweeper and by revocation are taken out.
    /// Derived from readings taken one after the other, so it may dip under
    /// churn: `/metrics` reports the highest value seen.
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
    let d_created = s[stat::DENIED4_CREATED as usize] + s[stat::DENIED6_CREATED as usize];
    let mut maps = vec![
        MapFill {
            map: "conntrack",
            entries: ct4 + ct6,
            capacity: cap(map_names::CT4)? + cap(map_names::CT6)?,
            created: Some(ct_created),
            evicted: ct_evicted,
        },
        MapFill {
            map: "denied_flows",
            entries: d4 + d6,
            capacity: cap(map_names::DENIED4)? + cap(map_names::DENIED6)?,
            created: Some(d_created),
            evicted: d_created.saturating_sub(d4 + d6),
        },
    ];
    // The maps the agent writes: full ones refuse a reload (the policy maps)
    // or a pod's addresses (sources), so their fill is worth an alert too.
    // The policy maps hold both slots, the live policy and the idle one.
    let agent_maps: [(&'static str, [&str; 2], u64); 5] = [
        (
            "fragments",
            [map_names::FRAG4, map_names::FRAG6],
            pinned
                .lru::<FragKey4, FragValue>(map_names::FRAG4)?
                .keys()
                .count() as u64
                + pinned
                    .lru::<FragKey6, FragValue>(map_names::FRAG6)?
                    .keys()
                    .count() as u64,
        ),
        (
            "identities",
            [map_names::IDS4, map_names::IDS6],
            pinned
                .lpm_trie::<IdKey4, IdentityValue>(map_names::IDS4)?
                .keys()
                .count() as u64
                + pinned
                    .lpm_trie::<IdKey6, IdentityValue>(map_names::IDS6)?
                    .keys()
                    .count() as u64,
        ),
        (
            "hosts",
            [map_names::HOSTS4, map_names::HOSTS6],
            pinned
                .hash::<IdKey4, IdentityValue>(map_names::HOSTS4)?
                .keys()
                .count() as u64
                + pinned
                    .hash::<IdKey6, IdentityValue>(map_names::HOSTS6)?
                    .keys()
                    .count() as u64,
        ),
        (
            "rules",
            [map_names::RULES, ""],
            pinned
                .lpm_trie::<RuleKey, RuleValue>(map_names::RULES)?
                .keys()
                .count() as u64,
        ),
        (
            "sources",
            [map_names::SOURCES, ""],
            pinned
                .hash::<SourceKey, SourceValue>(map_names::SOURCES)?
                .keys()
                .count() as u64,
        ),
    ];
    for (map, names, entries) in agent_maps {
        let mut capacity = 0;
        for n in names.iter().filter(|n| !n.is_empty()) {
            capacity += cap(n)?;
        }
        maps.push(MapFill {
            map,
            // Listing a map being written may see an entry twice.
            entries: entries.min(capacity),
            capacity,
            created: None,
            evicted: 0,
        });
    }
    Ok(Bookkeeping {
        maps,
        events_sent: s[stat::EVENTS_SENT as usize],
        events_rate_limited: s[stat::EVENTS_RATE_LIMITED as usize],
        events_ring_full: s[stat::EVENTS_RING_FULL as usize],
        denied_not_recorded: s[stat::DENIED_NOT_RECORDED as usize],
    })
}
