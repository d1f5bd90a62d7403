//! Per-source conntrack quota: the conntrack maps are one LRU table shared by
//! every workload of the node, so each source address may create new entries
//! only at `Config::ct_source_rate` per second (with `ct_source_burst` saved
//! up). Asked only on the new-flow path: established flows never pay for it.
use agent_common::{Config, TokenBucket};

use crate::{
    family::Family,
    flow::Flow,
    maps::{new_flow, NewFlow, CT_SOURCES},
};

/// Takes one entry's worth from the bucket of the flow's source; false when
/// it is empty.
#[inline(always)]
pub fn take<F: Family>(fl: &Flow<F>) -> bool {
    if fl.cfg.ct_source_rate == 0 {
        return true;
    }
    let Some(s) = new_flow() else {
        return true;
    };
    s.src = F::source_addr(&fl.ip.src);
    take_from(fl.cfg, s, fl.t)
}

/// The bucket of `s.src`, refilled to `t` and less one token if it has one.
/// A function of its own (the rest of the datapath is inlined): only new
/// flows call it, and inlined its locals would push the programs' stack past
/// BPF's limit. Two CPUs may race on one bucket (it is shared, not
/// per-CPU): at worst a source gets a token or two more.
#[inline(never)]
fn take_from(cfg: &Config, s: &mut NewFlow, t: u64) -> bool {
    // Tokens are scaled by hz, as in `events::refilled`: one entry costs hz,
    // a jiffy refills `rate`. Rate and burst come from u32 flags and hz is
    // at most 1000, so nothing overflows.
    let (rate, hz) = (cfg.ct_source_rate, cfg.hz);
    // Checked by the caller too; here it keeps a division-by-zero panic (a
    // path the verifier refuses) out of this function.
    if rate == 0 {
        return true;
    }
    let cap = cfg.ct_source_burst.wrapping_mul(hz);
    // Key and value are passed by reference: by value they would be copied
    // back onto the stack.
    let src = &s.src;
    match CT_SOURCES.get_ptr_mut(src) {
        Some(b) => {
            // SAFETY: map value pointer from a successful lookup.
            let b = unsafe { &mut *b };
            let elapsed = t.saturating_sub(b.last).min(cap / rate + 1);
            let tokens = (b.tokens + elapsed.wrapping_mul(rate)).min(cap);
            b.last = t;
            if tokens >= hz {
                b.tokens = tokens - hz;
                true
            } else {
                b.tokens = tokens;
                false
            }
        }
        None => {
            s.bucket = TokenBucket {
                tokens: cap.saturating_sub(hz),
                last: t,
            };
            // A full map evicts the least recently used source.
            let bucket = &s.bucket;
            let _ = CT_SOURCES.insert(src, bucket, 0);
            cap >= hz
        }
    }
}
