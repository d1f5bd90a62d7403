//! Counting primitives: counters shared between CPUs (flow entries) take atomic
//! adds, per-CPU ones plain adds, and the bookkeeping slots (`STATS`) one
//! helper, so every count in the datapath is made the same way.
use agent_common::{counter_index, rule_counter_index, Counter, FLOW_COUNTER_SLOTS};

use crate::maps::{COUNTERS, RULE_COUNTERS, STATS};

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

/// Counts one packet in slot `idx` of a flow entry other CPUs also write.
#[inline(always)]
pub fn count_shared(counters: &mut [Counter; FLOW_COUNTER_SLOTS], idx: usize, len: u64) {
    if let Some(c) = counters.get_mut(idx) {
        shared_add(c, 1, len);
    }
}

/// Zeroes a counter with word stores: LLVM turns a plain zeroing into a call
/// to a byte-wise `memset`, which costs the packet a call and which the
/// verifier walks byte by byte at every call site.
#[inline(always)]
pub fn clear(c: &mut Counter) {
    // SAFETY: both fields of a live `&mut`.
    unsafe {
        core::ptr::write_volatile(&mut c.packets, 0);
        core::ptr::write_volatile(&mut c.bytes, 0);
    }
}

/// Makes one packet the first count of a flow entry not yet in its map.
#[inline(always)]
pub fn first_count(counters: &mut [Counter; FLOW_COUNTER_SLOTS], idx: usize, len: u64) {
    if let Some(c) = counters.get_mut(idx) {
        *c = Counter {
            packets: 1,
            bytes: len,
        };
    }
}

#[inline(always)]
pub fn bump_stat(idx: u32) {
    if let Some(v) = STATS.get_ptr_mut(idx) {
        // SAFETY: this CPU's slot.
        unsafe { *v += 1 };
    }
}

/// Counts a frame's verdict in the aggregates. A pass by a rule is counted
/// once, under its rule (the per-reason totals are sums over rules);
/// everything else by traffic side and reason. Either array is per-CPU and
/// never evicts, so the aggregates lose no count.
#[inline(always)]
pub fn count_verdict(dir: u32, pass: bool, why: u32, rule_id: u32, audited: bool, len: u64) {
    let by_rule = match rule_counter_index(rule_id, dir, why) {
        Some(i) if pass && rule_id != 0 => RULE_COUNTERS.get_ptr_mut(i),
        _ => None,
    };
    let slot = match by_rule {
        Some(c) => Some(c),
        None => COUNTERS.get_ptr_mut(counter_index(dir, audited, why)),
    };
    if let Some(c) = slot {
        // SAFETY: per-CPU slot of this CPU; no other writer.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}
