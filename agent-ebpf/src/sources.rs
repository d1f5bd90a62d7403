//! Anti-spoofing: a packet entering a pod interface must come from an address
//! routed to that interface, and a packet entering an uplink must not come
//! from a pod of this node. Runs before conntrack, and before the flow cache
//! answers, so a forged packet cannot ride on another pod's established flow;
//! a flow-cache slot may vouch for a source it saw pass on the same interface
//! under the same `SOURCES` generation (`flowcache::lookup`).
use agent_common::{
    filter_bits, is_pod_iface, reason, SourceKey, CFG_F_SOURCE_INDEX, IFACE_ROLE_SLOTS,
    SOURCE_FILTER_WORDS, SRC_IFACE_POD, SRC_IFACE_UNKNOWN, SRC_LOCAL_POD, SRC_OWNED,
};

use crate::{
    family::Family,
    maps::{CONFIG, IFACE_ROLES, SOURCES, SOURCE_FILTER},
};

/// Whether `SOURCES` may have an address entry for filter key `x`: false only
/// when the filter rules it out (a flood's random sources on an uplink, a
/// forged one on a pod interface). `indexed`: the filter is complete.
#[inline(always)]
fn maybe_source(indexed: bool, x: u64) -> bool {
    if !indexed {
        return true;
    }
    let (w, m) = filter_bits(x, SOURCE_FILTER_WORDS);
    match SOURCE_FILTER.get(w) {
        Some(v) => *v & m == m,
        None => true,
    }
}

/// `SourceKey::iface`, built with volatile word stores: the compiler merges
/// plain stores of its 16 zero bytes into a call to a byte-wise memset.
#[inline(always)]
fn iface_key(ifindex: u32) -> SourceKey {
    let mut k = core::mem::MaybeUninit::<SourceKey>::uninit();
    let w = k.as_mut_ptr() as *mut u32;
    // SAFETY: five words fill the key (20 bytes, 4-aligned: agent-common's
    // layout tests), so every byte is written before `assume_init`.
    unsafe {
        core::ptr::write_volatile(w, u32::from_ne_bytes(ifindex.to_be_bytes()));
        for i in 1..5 {
            core::ptr::write_volatile(w.add(i), 0);
        }
        k.assume_init()
    }
}

/// What an entry of `SOURCES` says about a packet that found it.
#[inline(always)]
fn verdict(kind: u32) -> Result<(), u32> {
    match kind {
        // An uplink's own entry (and any kind this build does not know) is no
        // objection.
        SRC_OWNED => Ok(()),
        SRC_LOCAL_POD | SRC_IFACE_POD => Err(reason::DROP_SPOOFED),
        SRC_IFACE_UNKNOWN => Err(reason::DROP_UNKNOWN_ENDPOINT),
        _ => Ok(()),
    }
}

/// `Err(drop reason)` when `src` may not enter through `ifindex`. One hash
/// lookup for a pod's own address (skipped when the filter rules the address
/// out); a miss reads the interface's role (from `IFACE_ROLES` once the
/// agent has indexed `SOURCES`)
/// (none: the interface is not guarded). IPv6 link-local sources are not
/// routed traffic and are not checked.
#[inline(always)]
pub fn check<F: Family>(ifindex: u32, src: &F::Addr) -> Result<(), u32> {
    if F::link_local(src) {
        return Ok(());
    }
    let indexed = match CONFIG.get(0) {
        Some(c) => c.flags & CFG_F_SOURCE_INDEX != 0,
        None => false,
    };
    if maybe_source(indexed, F::filter_key(src)) {
        let key = F::source_key(ifindex, src);
        // SAFETY: the value is read at once; the agent replaces entries whole.
        if let Some(v) = unsafe { SOURCES.get(key) } {
            return verdict(v.kind);
        }
    }
    if indexed && ifindex < IFACE_ROLE_SLOTS {
        return match IFACE_ROLES.get(ifindex) {
            Some(kind) => verdict(*kind),
            None => Ok(()),
        };
    }
    // SAFETY: the value is read at once; the agent replaces entries whole.
    match unsafe { SOURCES.get(iface_key(ifindex)) } {
        Some(v) => verdict(v.kind),
        None => Ok(()),
    }
}

/// Whether `ifindex` is a pod interface (its interface entry says so: with
/// addresses, none yet, or left unchecked): router messages from it are
/// dropped, and its packets are counted from the pod's side. Interfaces
/// without an entry (not enforced, or a test run's) count as uplinks.
///
/// Asked for every packet, so it reads the agent's copy of the roles in an
/// array (inlined) rather than `SOURCES` (a hash call, a third of the
/// established path); only an ifindex past the array looks in `SOURCES`.
#[inline(always)]
pub fn is_pod(ifindex: u32) -> bool {
    if ifindex < IFACE_ROLE_SLOTS {
        return match IFACE_ROLES.get(ifindex) {
            Some(kind) => is_pod_iface(*kind),
            None => false,
        };
    }
    // SAFETY: the value is read at once; the agent replaces entries whole.
    match unsafe { SOURCES.get(iface_key(ifindex)) } {
        Some(v) => is_pod_iface(v.kind),
        None => false,
    }
}
