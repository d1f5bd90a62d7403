//! Counting primitives: counters shared between CPUs (flow entries) take atomic
//! adds, per-CPU ones plain adds, and the bookkeeping slots (`STATS`) one
//! helper, so every count in the datapath is made the same way.
use agent_common::Counter;

use crate::maps::STATS;

/// An atomic add whose result is unused, which the BPF backend emits as one
/// `lock xadd` (core's `AtomicU64::fetch_add` is missing on this target
/// because it has no compare-and-swap).
#[inline(always)]
pub fn atomic_add(p: *mut u64, v: u64) {
    use core::intrinsics::{atomic_xadd, AtomicOrdering};
    // SAFETY: `p` points into a map value; the kernel keeps it alive for the
    // program's run, and other CPUs only touch it atomically too.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// Adds to a counter shared between CPUs (a conntrack or denied-flow entry).
#[inline(always)]
pub fn shared_add(c: &mut Counter, packets: u64, bytes: u64) {
    atomic_add(&mut c.packets, packets);
    atomic_add(&mut c.bytes, bytes);
}

#[inline(always)]
pub fn bump_stat(idx: u32) {
    if let Some(v) = STATS.get_ptr_mut(idx) {
        // SAFETY: this CPU's slot.
        unsafe { *v += 1 };
    }
}
