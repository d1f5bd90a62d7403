//! Denied flows: packets the policy refuses are counted per flow in a bounded
//! LRU map, so the agent can show which flows were denied; a flood of new ones
//! is rate-limited rather than allowed to churn that map.
use agent_common::{
    flow_counter_index, stat, DeniedValue, BUCKET_RECORDS, CFG_F_FLOW_COUNTERS, DENIED_F_AUDIT,
    DENIED_F_ORIG_B, EVENT_VERDICT_AUDIT, EVENT_VERDICT_DROP, MODE_AUDIT,
};

use crate::{
    counting::{bump_stat, clear, count_shared, first_count},
    events::{refilled, send_event},
    family::Family,
    flow::{Decision, Flow},
    flowcache,
    maps::{new_flow, BPF_NOEXIST},
};

/// Denies (or, under audit, passes) a packet for reason `why`, counting it on
/// its flow in the bounded denied-flow map.
#[inline(always)]
pub fn deny<F: Family>(fl: &Flow<F>, why: u32, audit: bool) -> Decision {
    let audit = audit || fl.cfg.mode == MODE_AUDIT;
    if fl.cfg.flags & CFG_F_FLOW_COUNTERS != 0 {
        record::<F>(fl, why, audit);
    }
    Err((why, audit))
}

/// Counts the packet on its flow's record, creating the record (and sending
/// an event) for a flow seen for the first time.
#[inline(always)]
fn record<F: Family>(fl: &Flow<F>, why: u32, audit: bool) {
    let cfg = fl.cfg;
    // While new denied flows arrive faster than they may be recorded (a
    // flood from random sources), per-flow denied counting pauses: each
    // packet would otherwise pay a lookup in a map too big to stay in
    // cache, then an insert and an eviction. The aggregates count on.
    let bucket = if cfg.record_rate != 0 {
        match refilled(
            BUCKET_RECORDS,
            cfg.record_rate,
            cfg.record_burst,
            cfg.hz,
            fl.t,
        ) {
            Some(b) if b.tokens >= cfg.hz => Some(b),
            _ => {
                bump_stat(stat::DENIED_NOT_RECORDED);
                return;
            }
        }
    } else {
        None
    };
    // Worked out again rather than read from `fl.idx`: a value fresh from
    // two registers instead of one carried across the calls above keeps the
    // verifier's walk of the deny paths shorter (same cost per packet).
    let idx = flow_counter_index(fl.pkt.dir, fl.src_is_b);
    if flowcache::count_denied::<F>(fl, idx) {
        return;
    }
    if let Some(v) = F::denied().get_ptr_mut(fl.key) {
        // SAFETY: map value pointer from a successful lookup.
        let v = unsafe { &mut *v };
        count_shared(&mut v.counters, idx, fl.pkt.len);
        if v.last_seen != fl.t {
            v.last_seen = fl.t;
        }
    } else {
        if let Some(b) = bucket {
            b.tokens -= cfg.hz;
        }
        create::<F>(fl, idx, why, audit);
    }
    // A flow denied again and again (a client retrying, a replayed SYN)
    // counts its next packets in this CPU's flow-cache slot.
    flowcache::claim_denied::<F>(fl);
}

/// Records a new denied flow; the first CPU to record it sends its event.
#[inline(always)]
fn create<F: Family>(fl: &Flow<F>, idx: usize, why: u32, audit: bool) {
    // Built in this CPU's scratch rather than on the stack, which is near
    // BPF's 512 bytes.
    let Some(scratch) = new_flow() else {
        return;
    };
    let v = &mut scratch.denied;
    v.first_seen = fl.t;
    v.last_seen = fl.t;
    v.reason = why;
    v.flags =
        if fl.src_is_b { DENIED_F_ORIG_B } else { 0 } | if audit { DENIED_F_AUDIT } else { 0 };
    v.counters.iter_mut().for_each(clear);
    first_count(&mut v.counters, idx, fl.pkt.len);
    let v: &DeniedValue = v;
    // NOEXIST: two CPUs racing on a new flow create it once; the loser's
    // packet is still in the aggregates.
    if F::denied().insert(fl.key, v, BPF_NOEXIST).is_ok() {
        bump_stat(F::DENIED_CREATED);
        let verdict = if audit {
            EVENT_VERDICT_AUDIT
        } else {
            EVENT_VERDICT_DROP
        };
        send_event::<F>(fl.cfg, fl.t, fl.ip, fl.pkt, why, 0, verdict);
    }
}
