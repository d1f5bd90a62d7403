//! The per-CPU flow cache in front of conntrack: a hit on an established
//! two-way flow costs an inlined array read instead of a hash-map call. Its
//! slots also hold per-flow counts not yet added to conntrack, so the hot path
//! never writes a line another CPU shares.
use agent_common::{Counter, FlowCache, FLOW_CACHE_SLOTS};

use crate::{counting::shared_add, family::Family};

/// A conntrack key as 64-bit words, so comparing two is a few loads rather
/// than a byte loop (and never a call to memcmp, which BPF does not have).
#[inline(always)]
pub fn words<const N: usize, T>(k: &T) -> [u64; N] {
    const { assert!(N * 8 == core::mem::size_of::<T>() && core::mem::align_of::<T>() == 8) };
    // SAFETY: T is 8-aligned and exactly N words long (checked above).
    unsafe { core::ptr::read(k as *const T as *const [u64; N]) }
}

/// Whether `c` caches `key`, under generation `gen`, still valid at `now`.
#[inline(always)]
pub fn cache_hit<F: Family>(c: &FlowCache<F::CtKey>, key: &F::CtKey, gen: u32, now: u64) -> bool {
    F::key_eq(&c.key, key) && c.policy_gen == gen && now < c.valid_until
}

/// Fibonacci hashing: the top bits of a multiplication spread nearby keys.
#[inline(always)]
pub fn hash_slot(x: u64) -> u32 {
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32 & (FLOW_CACHE_SLOTS - 1)
}

/// Moves a flow-cache slot's pending deltas into the flow's conntrack entry.
#[inline(always)]
pub fn flush(pending: &mut [Counter; 4], into: &mut [Counter; 4]) {
    for (p, c) in pending.iter_mut().zip(into.iter_mut()) {
        if p.packets != 0 {
            shared_add(c, p.packets, p.bytes);
            *p = Counter::default();
        }
    }
}
