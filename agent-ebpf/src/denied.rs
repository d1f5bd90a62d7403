//! Denied flows: packets the policy refuses are counted per flow in a bounded
//! LRU map, so the agent can show which flows were denied; a flood of new ones
//! is rate-limited rather than allowed to churn that map.
use agent_common::{
    flow_counter_index, stat, Config, Counter, DeniedValue, BUCKET_RECORDS, CFG_F_FLOW_COUNTERS,
    DENIED_F_AUDIT, DENIED_F_ORIG_B, EVENT_VERDICT_AUDIT, EVENT_VERDICT_DROP, MODE_AUDIT,
};

use crate::{
    counting::{bump_stat, shared_add},
    events::{event, refilled, send_event},
    family::Family,
    flow::{Decision, Pkt},
    maps::BPF_NOEXIST,
    parse::Ip,
};

/// Counts a denied (or audited) packet on its flow in the bounded denied-flow
/// map; a flow seen for the first time sends an event.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn deny<F: Family>(
    cfg: &Config,
    key: &F::CtKey,
    src_is_b: bool,
    ip: &Ip<F::Addr>,
    pkt: &Pkt,
    why: u32,
    audit: bool,
    t: u64,
) -> Decision {
    let audit = audit || cfg.mode == MODE_AUDIT;
    if cfg.flags & CFG_F_FLOW_COUNTERS != 0 {
        // While new denied flows arrive faster than they may be recorded (a
        // flood from random sources), per-flow denied counting pauses: each
        // packet would otherwise pay a lookup in a map too big to stay in
        // cache, then an insert and an eviction. The aggregates count on.
        let bucket = if cfg.record_rate != 0 {
            match refilled(BUCKET_RECORDS, cfg.record_rate, cfg.record_burst, cfg.hz, t) {
                Some(b) if b.tokens >= cfg.hz => Some(b),
                _ => {
                    bump_stat(stat::DENIED_NOT_RECORDED);
                    return Err((why, audit));
                }
            }
        } else {
            None
        };
        let idx = flow_counter_index(pkt.dir, src_is_b);
        if let Some(v) = F::denied().get_ptr_mut(key) {
            // SAFETY: map value pointer from a successful lookup.
            let v = unsafe { &mut *v };
            if let Some(c) = v.counters.get_mut(idx) {
                shared_add(c, 1, pkt.len);
            }
            if v.last_seen != t {
                v.last_seen = t;
            }
        } else {
            if let Some(b) = bucket {
                b.tokens -= cfg.hz;
            }
            let mut v = DeniedValue {
                first_seen: t,
                last_seen: t,
                reason: why,
                flags: if src_is_b { DENIED_F_ORIG_B } else { 0 }
                    | if audit { DENIED_F_AUDIT } else { 0 },
                counters: [Counter::default(); 4],
            };
            if let Some(c) = v.counters.get_mut(idx) {
                *c = Counter {
                    packets: 1,
                    bytes: pkt.len,
                };
            }
            // NOEXIST: two CPUs racing on a new flow create it once; the
            // loser's packet is still in the aggregates.
            if F::denied().insert(key, v, BPF_NOEXIST).is_ok() {
                bump_stat(F::DENIED_CREATED);
                let verdict = if audit {
                    EVENT_VERDICT_AUDIT
                } else {
                    EVENT_VERDICT_DROP
                };
                send_event(cfg, t, event::<F>(ip, pkt, why, 0, verdict));
            }
        }
    }
    Err((why, audit))
}
