//! Per-flow verdict counters, read from the pinned maps: allowed flows from
//! conntrack (plus the deltas still pending in the per-CPU flow caches),
//! denied and audited flows from the bounded denied-flow maps (plus the
//! counts pending in the same caches).
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap as StdHashMap},
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use agent_common::{
    is_denied_slot, map_names, reason, Config, Counter, CtKey4, CtKey6, CtValue, DeniedValue,
    FlowCache, CT_F_ORIG_B, DENIED_F_AUDIT, DENIED_F_ORIG_B,
};
use aya::Pod;
use ipnet::IpNet;

use crate::{
    bpffs::{kernel_jiffies, Pinned},
    datapath::RuleInfo,
};

/// Packets one endpoint sent to the other, judged at one hook.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FlowRecord {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: String,
    /// Host order; for ICMP echo the identifier.
    pub sport: u16,
    pub dport: u16,
    /// Hook that judged these packets: `ingress` (XDP) or `egress` (TC).
    pub direction: &'static str,
    /// `pass`, `drop`, or `audit` (passed, but the policy would deny it).
    pub verdict: &'static str,
    /// The rule that allowed the flow (allowed flows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why it was denied (denied and audited flows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// These packets went from the responder back to the originator.
    pub reply: bool,
    pub packets: u64,
    pub bytes: u64,
    /// Seconds since the flow was first and last seen (the last-seen stamp of
    /// a busy allowed flow is refreshed about once a second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen_secs_ago: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_secs_ago: Option<f64>,
}

/// A normalised conntrack key of either family, as plain endpoints.
trait FlowKey: Pod + Eq + Hash {
    fn endpoints(&self) -> (IpAddr, u16, IpAddr, u16, u8);
}

impl FlowKey for CtKey4 {
    fn endpoints(&self) -> (IpAddr, u16, IpAddr, u16, u8) {
        (
            IpAddr::V4(Ipv4Addr::from(self.addr_a)),
            u16::from_be_bytes(self.port_a),
            IpAddr::V4(Ipv4Addr::from(self.addr_b)),
            u16::from_be_bytes(self.port_b),
            self.proto,
        )
    }
}

impl FlowKey for CtKey6 {
    fn endpoints(&self) -> (IpAddr, u16, IpAddr, u16, u8) {
        (
            IpAddr::V6(Ipv6Addr::from(self.addr_a)),
            u16::from_be_bytes(self.port_a),
            IpAddr::V6(Ipv6Addr::from(self.addr_b)),
            u16::from_be_bytes(self.port_b),
            self.proto,
        )
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// How to turn jiffies into ages.
#[derive(Clone, Copy)]
struct Clock {
    now: Option<u64>,
    hz: u64,
}

impl Clock {
    fn ago(&self, j: u64) -> Option<f64> {
        let now = self.now?;
        Some(now.saturating_sub(j) as f64 / self.hz.max(1) as f64)
    }
}

struct Entry<'a> {
    counters: [Counter; agent_common::FLOW_COUNTER_SLOTS],
    /// The originator is endpoint B.
    orig_b: bool,
    verdict: &'static str,
    rule: Option<&'a str>,
    reason: Option<&'static str>,
    first: u64,
    last: u64,
}

fn records<K: FlowKey>(key: &K, e: &Entry, clock: Clock, out: &mut Selection) {
    let (a, pa, b, pb, proto) = key.endpoints();
    for (i, c) in e.counters.iter().enumerate() {
        if c.packets == 0 {
            continue;
        }
        let from_b = i % 2 == 1;
        let (src, sport, dst, dport) = if from_b {
            (b, pb, a, pa)
        } else {
            (a, pa, b, pb)
        };
        out.offer(FlowRecord {
            src,
            dst,
            proto: proto_name(proto),
            sport,
            dport,
            direction: if i / 2 == 0 { "ingress" } else { "egress" },
            verdict: e.verdict,
            rule: e.rule.map(str::to_owned),
            reason: e.reason,
            reply: from_b != e.orig_b,
            packets: c.packets,
            bytes: c.bytes,
            first_seen_secs_ago: clock.ago(e.first),
            last_seen_secs_ago: clock.ago(e.last),
        });
    }
}

/// What the per-CPU flow caches hold for each flow, summed over CPUs: the
/// deltas of allowed flows not yet in conntrack, and the counts of denied
/// flows not yet in their denied records (with their last packet).
struct Pending<K> {
    allowed: StdHashMap<K, [Counter; agent_common::FLOW_COUNTER_SLOTS]>,
    denied: StdHashMap<K, ([Counter; agent_common::FLOW_COUNTER_SLOTS], u64)>,
}

fn add(acc: &mut [Counter], d: &[Counter]) {
    for (a, d) in acc.iter_mut().zip(d.iter()) {
        a.packets += d.packets;
        a.bytes += d.bytes;
    }
}

fn pending<K: FlowKey>(pinned: &Pinned, name: &str) -> anyhow::Result<Pending<K>>
where
    FlowCache<K>: Pod,
{
    let cache = pinned.per_cpu_array::<FlowCache<K>>(name)?;
    let mut out = Pending {
        allowed: StdHashMap::new(),
        denied: StdHashMap::new(),
    };
    for slot in cache.iter() {
        for c in slot?.iter() {
            if c.counters.iter().all(|d| d.packets == 0) {
                continue;
            }
            if is_denied_slot(c) {
                let acc = out.denied.entry(c.key).or_default();
                add(&mut acc.0, &c.counters);
                acc.1 = acc.1.max(c.valid_until);
            } else {
                add(out.allowed.entry(c.key).or_default(), &c.counters);
            }
        }
    }
    Ok(out)
}

fn allowed<K: FlowKey>(
    pinned: &Pinned,
    ct: &str,
    mut pend: StdHashMap<K, [Counter; agent_common::FLOW_COUNTER_SLOTS]>,
    rules: &[RuleInfo],
    clock: Clock,
    out: &mut Selection,
) -> anyhow::Result<()>
where
    FlowCache<K>: Pod,
{
    let map = pinned.lru::<K, CtValue>(ct)?;
    for item in map.iter() {
        // An entry deleted while listing is skipped, not an error.
        let Ok((k, v)) = item else { continue };
        let mut counters = v.counters;
        if let Some(p) = pend.remove(&k) {
            add(&mut counters, &p);
        }
        let info = rules.get(v.rule_id as usize);
        let e = Entry {
            counters,
            orig_b: v.flags & CT_F_ORIG_B != 0,
            verdict: if info.is_some_and(|r| r.audit) {
                "audit"
            } else {
                "pass"
            },
            rule: info.map(|r| r.name.as_str()).filter(|n| !n.is_empty()),
            reason: None,
            first: v.created,
            last: v.last_seen,
        };
        records(&k, &e, clock, out);
    }
    Ok(())
}

fn denied<K: FlowKey>(
    pinned: &Pinned,
    name: &str,
    mut pending: StdHashMap<K, ([Counter; agent_common::FLOW_COUNTER_SLOTS], u64)>,
    clock: Clock,
    out: &mut Selection,
) -> anyhow::Result<()> {
    let map = pinned.lru::<K, DeniedValue>(name)?;
    for item in map.iter() {
        let Ok((k, v)) = item else { continue };
        let mut counters = v.counters;
        let mut last = v.last_seen;
        if let Some((p, seen)) = pending.remove(&k) {
            add(&mut counters, &p);
            last = last.max(seen);
        }
        let e = Entry {
            counters,
            orig_b: v.flags & DENIED_F_ORIG_B != 0,
            verdict: if v.flags & DENIED_F_AUDIT != 0 {
                "audit"
            } else {
                "drop"
            },
            rule: None,
            reason: reason::NAMES.get(v.reason as usize).copied(),
            first: v.first_seen,
            last,
        };
        records(&k, &e, clock, out);
    }
    Ok(())
}

/// Offers every flow record the maps hold to `out`, one at a time: the maps
/// may hold millions, and only what `out` keeps stays in memory.
pub fn read_flows(pinned: &Pinned, rules: &[RuleInfo], out: &mut Selection) -> anyhow::Result<()> {
    let cfg: Config = pinned.array::<Config>(map_names::CONFIG)?.get(&0, 0)?;
    let clock = Clock {
        now: kernel_jiffies(),
        hz: cfg.hz,
    };
    let p4 = pending::<CtKey4>(pinned, map_names::FLOWCACHE4)?;
    let p6 = pending::<CtKey6>(pinned, map_names::FLOWCACHE6)?;
    allowed::<CtKey4>(pinned, map_names::CT4, p4.allowed, rules, clock, out)?;
    allowed::<CtKey6>(pinned, map_names::CT6, p6.allowed, rules, clock, out)?;
    let (d4, d6) = (p4.denied, p6.denied);
    denied::<CtKey4>(pinned, map_names::DENIED4, d4, clock, out)?;
    denied::<CtKey6>(pinned, map_names::DENIED6, d6, clock, out)?;
    Ok(())
}

/// Records `/flows` and `flows` return at most (the busiest); `limit` asks
/// for fewer.
pub const FLOW_RECORDS_MAX: usize = 10_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    #[default]
    Packets,
    Bytes,
}

/// Which records to show (every field optional), shared by `/flows` and the
/// `flows` command.
#[derive(Clone, Debug, Default, serde::Deserialize, clap::Args)]
pub struct FlowFilter {
    /// Only this verdict: pass, drop or audit.
    #[arg(long)]
    pub verdict: Option<String>,
    /// Only flows with the source or destination in this CIDR (or address).
    #[arg(long)]
    pub cidr: Option<String>,
    /// Only flows with this source or destination port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only this protocol: tcp, udp, sctp, icmp, icmpv6 or a number.
    #[arg(long)]
    pub proto: Option<String>,
    /// Only this hook direction: ingress or egress.
    #[arg(long)]
    pub direction: Option<String>,
    /// At most this many records, the busiest (10000 at most, and by default).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Order by packets or bytes, descending.
    #[arg(long, value_enum)]
    pub sort: Option<SortBy>,
}

/// A filter whose values are invalid, named by field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: &'static str,
    pub message: String,
}

fn parse_net(text: &str) -> Result<IpNet, FilterError> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| FilterError {
            field: "cidr",
            message: format!("{text:?} is not a CIDR or an address"),
        })
}

impl FlowFilter {
    /// The filter checked, ready to keep the records it selects as they are
    /// read.
    pub fn selection(&self) -> Result<Selection, FilterError> {
        let net = self.cidr.as_deref().map(parse_net).transpose()?;
        let check = |field: &'static str, v: &Option<String>, allowed: &[&str]| match v {
            Some(v) if !allowed.contains(&v.as_str()) => Err(FilterError {
                field,
                message: format!("{v:?} is not one of {}", allowed.join(", ")),
            }),
            _ => Ok(()),
        };
        check("verdict", &self.verdict, &["pass", "drop", "audit"])?;
        check("direction", &self.direction, &["ingress", "egress"])?;
        let proto = match self.proto.as_deref() {
            None => None,
            Some(p) => Some(match p.parse::<u8>() {
                Ok(n) => proto_name(n),
                Err(_) if ["tcp", "udp", "sctp", "icmp", "icmpv6"].contains(&p) => p.to_owned(),
                Err(_) => {
                    return Err(FilterError {
                        field: "proto",
                        message: format!("{p:?} is not tcp, udp, sctp, icmp, icmpv6 or 0-255"),
                    })
                }
            }),
        };
        let limit = match self.limit {
            Some(n) if n > FLOW_RECORDS_MAX => {
                return Err(FilterError {
                    field: "limit",
                    message: format!("{n} is more than the {FLOW_RECORDS_MAX} records returned"),
                })
            }
            Some(n) => n,
            None => FLOW_RECORDS_MAX,
        };
        Ok(Selection {
            filter: self.clone(),
            net,
            proto,
            sort: self.sort.unwrap_or_default(),
            limit,
            kept: BinaryHeap::new(),
            offered: 0,
        })
    }

    /// Filters, sorts and truncates `flows`.
    pub fn apply(&self, flows: Vec<FlowRecord>) -> Result<Vec<FlowRecord>, FilterError> {
        let mut s = self.selection()?;
        for f in flows {
            s.offer(f);
        }
        Ok(s.into_records())
    }
}

/// A record ranked by the sort key; among equals, the one offered first
/// ranks higher (as a stable sort would order them).
struct Ranked {
    rank: ((u64, u64), Reverse<u64>),
    record: FlowRecord,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank.cmp(&other.rank)
    }
}

/// The records a filter selects, at most `limit` of them, the busiest: it
/// never holds more than that, however many records it is offered.
pub struct Selection {
    filter: FlowFilter,
    net: Option<IpNet>,
    proto: Option<String>,
    sort: SortBy,
    limit: usize,
    /// The lowest ranked on top, to be replaced by a busier one.
    kept: BinaryHeap<Reverse<Ranked>>,
    offered: u64,
}

impl Selection {
    fn selects(&self, f: &FlowRecord) -> bool {
        let c = &self.filter;
        c.verdict.as_deref().is_none_or(|v| f.verdict == v)
            && c.direction.as_deref().is_none_or(|d| f.direction == d)
            && self.proto.as_deref().is_none_or(|p| f.proto == p)
            && c.port.is_none_or(|p| f.sport == p || f.dport == p)
            && self
                .net
                .is_none_or(|n| n.contains(&f.src) || n.contains(&f.dst))
    }

    pub fn offer(&mut self, record: FlowRecord) {
        if self.limit == 0 || !self.selects(&record) {
            return;
        }
        let key = match self.sort {
            SortBy::Packets => (record.packets, record.bytes),
            SortBy::Bytes => (record.bytes, record.packets),
        };
        self.offered += 1;
        let ranked = Ranked {
            rank: (key, Reverse(self.offered)),
            record,
        };
        if self.kept.len() < self.limit {
            self.kept.push(Reverse(ranked));
        } else if self.kept.peek().is_some_and(|Reverse(low)| ranked > *low) {
            self.kept.pop();
            self.kept.push(Reverse(ranked));
        }
    }

    /// The records kept, busiest first.
    pub fn into_records(self) -> Vec<FlowRecord> {
        // Ascending order of Reverse(rank) is descending order of rank.
        self.kept
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(r)| r.record)
            .collect()
    }
}

/// The `flows` table.
pub fn table(flows: &[FlowRecord]) -> String {
    let mut out = format!(
        "{:<7} {:<7} {:<6} {:<45} {:<45} {:<24} {:>10} {:>12}\n",
        "DIR", "VERDICT", "PROTO", "SOURCE", "DESTINATION", "RULE/REASON", "PACKETS", "BYTES"
    );
    for f in flows {
        let why = f
            .rule
            .clone()
            .or(f.reason.map(str::to_owned))
            .unwrap_or_default();
        let ep = |a: &IpAddr, p: u16| match a {
            IpAddr::V4(_) => format!("{a}:{p}"),
            IpAddr::V6(_) => format!("[{a}]:{p}"),
        };
        out.push_str(&format!(
            "{:<7} {:<7} {:<6} {:<45} {:<45} {:<24} {:>10} {:>12}\n",
            f.direction,
            f.verdict,
            f.proto,
            ep(&f.src, f.sport),
            ep(&f.dst, f.dport),
            why,
            f.packets,
            f.bytes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(src: &str, dport: u16, packets: u64, verdict: &'static str) -> FlowRecord {
        FlowRecord {
            src: src.parse().unwrap(),
            dst: "10.0.1.10".parse().unwrap(),
            proto: "udp".into(),
            sport: 40000,
            dport,
            direction: "ingress",
            verdict,
            rule: None,
            reason: None,
            reply: false,
            packets,
            bytes: packets * 100,
            first_seen_secs_ago: None,
            last_seen_secs_ago: None,
        }
    }

    #[test]
    fn filter_sorts_limits_and_rejects_bad_values() {
        let flows = vec![
            rec("203.0.113.10", 8080, 5, "drop"),
            rec("10.0.2.10", 53, 50, "pass"),
            rec("203.0.113.11", 8080, 7, "drop"),
        ];
        let f = FlowFilter {
            verdict: Some("drop".into()),
            cidr: Some("203.0.113.0/24".into()),
            limit: Some(1),
            ..FlowFilter::default()
        };
        let got = f.apply(flows.clone()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].packets, 7);
        let f = FlowFilter {
            port: Some(53),
            proto: Some("17".into()),
            ..FlowFilter::default()
        };
        assert_eq!(f.apply(flows.clone()).unwrap().len(), 1);
        let bad = FlowFilter {
            verdict: Some("allow".into()),
            ..FlowFilter::default()
        };
        assert_eq!(bad.apply(flows.clone()).unwrap_err().field, "verdict");
        let bad = FlowFilter {
            cidr: Some("10.0.0.0/33".into()),
            ..FlowFilter::default()
        };
        assert_eq!(bad.apply(flows.clone()).unwrap_err().field, "cidr");
        let bad = FlowFilter {
            limit: Some(FLOW_RECORDS_MAX + 1),
            ..FlowFilter::default()
        };
        assert_eq!(bad.apply(flows).unwrap_err().field, "limit");
    }

    /// However many records are offered, a selection holds at most its
    /// limit: the busiest, in order, ties in the order offered.
    #[test]
    fn selection_keeps_only_the_busiest_records() {
        let f = FlowFilter {
            limit: Some(3),
            ..FlowFilter::default()
        };
        let mut s = f.selection().unwrap();
        for i in 0..100_000u64 {
            s.offer(rec("10.0.2.10", 53, i % 1000, "pass"));
            assert!(s.kept.len() <= 3);
        }
        let got: Vec<u64> = s.into_records().iter().map(|r| r.packets).collect();
        assert_eq!(got, [999, 999, 999]);
        let mut s = FlowFilter::default().selection().unwrap();
        for i in 0..(FLOW_RECORDS_MAX as u64 + 500) {
            s.offer(rec("10.0.2.10", 53, i, "pass"));
        }
        let got = s.into_records();
        assert_eq!(got.len(), FLOW_RECORDS_MAX, "the default cap");
        assert_eq!(got[0].packets, FLOW_RECORDS_MAX as u64 + 499);
        let ties = FlowFilter::default()
            .apply(vec![
                rec("10.0.0.1", 1, 5, "pass"),
                rec("10.0.0.2", 1, 5, "pass"),
            ])
            .unwrap();
        assert_eq!(ties[0].src.to_string(), "10.0.0.1", "stable among equals");
    }
}
