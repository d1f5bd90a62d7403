//! Verdict events of new flows and the per-CPU token buckets that limit them
//! (and the creation of denied-flow records): a flood must cost the ring buffer
//! and the agent no more than the configured rate.
use agent_common::{stat, Config, TokenBucket, VerdictEvent, BUCKET_EVENTS};

use crate::{
    counting::bump_stat,
    family::Family,
    flow::Pkt,
    maps::{BUCKETS, EVENTS},
    parse::Ip,
};

/// This CPU's bucket `idx` (`rate` per second, at most `burst` saved up),
/// refilled up to now.
#[inline(always)]
pub fn refilled(
    idx: u32,
    rate: u64,
    burst: u64,
    hz: u64,
    t: u64,
) -> Option<&'static mut TokenBucket> {
    let b = BUCKETS.get_ptr_mut(idx)?;
    // SAFETY: this CPU's bucket.
    let b = unsafe { &mut *b };
    // Tokens are scaled by hz: one token costs hz, a jiffy refills `rate`.
    // Rate and burst come from u32 flags and hz is at most 1000, so nothing
    // below overflows (and no 128-bit multiply, which BPF lacks, is needed).
    let cap = burst.wrapping_mul(hz);
    let elapsed = t.saturating_sub(b.last).min(cap / rate + 1);
    b.tokens = (b.tokens + elapsed.wrapping_mul(rate)).min(cap);
    b.last = t;
    Some(b)
}

/// Takes a token from this CPU's bucket `idx`; false when it is empty.
#[inline(always)]
fn take_token(idx: u32, rate: u64, burst: u64, hz: u64, t: u64) -> bool {
    match refilled(idx, rate, burst, hz, t) {
        Some(b) if b.tokens >= hz => {
            b.tokens -= hz;
            true
        }
        _ => false,
    }
}

/// Sends a verdict event unless this CPU's token bucket is empty or the ring
/// is full; both losses are counted.
#[inline(always)]
pub fn send_event<F: Family>(
    cfg: &Config,
    t: u64,
    ip: &Ip<F::Addr>,
    pkt: &Pkt,
    why: u32,
    rule_id: u32,
    verdict: u8,
) {
    if cfg.event_rate == 0 {
        return;
    }
    if !take_token(BUCKET_EVENTS, cfg.event_rate, cfg.event_burst, cfg.hz, t) {
        bump_stat(stat::EVENTS_RATE_LIMITED);
        return;
    }
    // Built in the ring's memory rather than on the stack and copied: the
    // programs' stack is near BPF's 512 bytes.
    match EVENTS.reserve::<VerdictEvent>(0) {
        Some(mut e) => {
            e.write(event::<F>(ip, pkt, why, rule_id, verdict));
            e.submit(0);
            bump_stat(stat::EVENTS_SENT);
        }
        None => bump_stat(stat::EVENTS_RING_FULL),
    }
}

#[inline(always)]
fn event<F: Family>(
    ip: &Ip<F::Addr>,
    pkt: &Pkt,
    why: u32,
    rule_id: u32,
    verdict: u8,
) -> VerdictEvent {
    VerdictEvent {
        src: F::addr16(&ip.src),
        dst: F::addr16(&ip.dst),
        sport: ip.l4.sport,
        dport: ip.l4.policy_port,
        rule_id,
        reason: why,
        len: pkt.len as u32,
        family: F::FAMILY,
        proto: ip.l4.proto,
        dir: pkt.dir as u8,
        verdict,
        _pad: 0,
    }
}
