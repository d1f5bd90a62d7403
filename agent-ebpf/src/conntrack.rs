//! Connection tracking: one entry per flow for both directions (the key is
//! normalised), so a reply finds its request's entry and the policy is asked
//! once per flow, not once per packet.
use agent_common::{
    ct_timeout, stat, CtValue, CT_F_FIN_ORIG, CT_F_FIN_REPLY, CT_F_ORIG_B, CT_F_REPLY_SEEN,
    CT_F_RST, CT_F_SYN, CT_F_SYNACK, IPPROTO_TCP,
};

use crate::{
    counting::{bump_stat, first_count},
    family::Family,
    flow::Flow,
    maps::{new_flow, BPF_NOEXIST, OPENED, OPENED_SLOTS},
    parse::{Track, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// The direction-normalised conntrack key of a packet, and whether its source
/// is endpoint B (the larger one), so both directions share one entry.
#[inline(always)]
pub fn ct_key<F: Family>(
    src: &F::Addr,
    dst: &F::Addr,
    sp: u16,
    dp: u16,
    proto: u8,
) -> (F::CtKey, bool) {
    let src_is_b = F::addr_gt(src, dst).unwrap_or(sp > dp);
    let key = if src_is_b {
        F::make_ct_key(dst, src, dp, sp, proto)
    } else {
        F::make_ct_key(src, dst, sp, dp, proto)
    };
    (key, src_is_b)
}

/// Folds this packet's TCP flags into the entry's state.
#[inline(always)]
pub fn ct_flags_after(flags: u32, is_orig: bool, proto: u8, tcp_flags: u8) -> u32 {
    let mut f = flags;
    if !is_orig {
        f |= CT_F_REPLY_SEEN;
    }
    if proto == IPPROTO_TCP {
        if tcp_flags & TCP_RST != 0 {
            f |= CT_F_RST;
        }
        if tcp_flags & TCP_FIN != 0 {
            f |= if is_orig {
                CT_F_FIN_ORIG
            } else {
                CT_F_FIN_REPLY
            };
        }
        if !is_orig && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
            f |= CT_F_SYNACK;
        }
    }
    f
}

/// Whether a packet may belong to a tracked flow. One that opens a flow goes
/// straight to the policy, a stateless one never has an entry, and an ICMP
/// error is matched by what it quotes (`related`).
#[inline(always)]
pub fn looks_up(track: Track) -> bool {
    matches!(track, Track::Lookup | Track::LookupNoCreate | Track::Reply)
}

/// Whether a packet the policy allows creates (or replaces) its flow's entry.
#[inline(always)]
pub fn creates(track: Track) -> bool {
    track == Track::Open || track == Track::Lookup
}

/// The flow's entry, if it has one.
#[inline(always)]
pub fn entry<F: Family>(key: &F::CtKey) -> Option<&'static mut CtValue> {
    match F::ct().get_ptr_mut(key) {
        // SAFETY: map value pointer from a successful lookup.
        Some(e) => Some(unsafe { &mut *e }),
        None => None,
    }
}

/// A flow's entry with what this packet learns from it.
pub struct Live {
    pub e: &'static mut CtValue,
    /// The packet travels the way the flow's first packet did.
    pub is_orig: bool,
    /// Jiffies since the entry was last stamped.
    pub age: u64,
}

impl Live {
    #[inline(always)]
    pub fn new<F: Family>(fl: &Flow<F>, e: &'static mut CtValue) -> Self {
        // Saturating: another CPU may have stamped the entry after this one
        // read the clock.
        let age = fl.t.saturating_sub(e.last_seen);
        let is_orig = fl.src_is_b == (e.flags & CT_F_ORIG_B != 0);
        Live { e, is_orig, age }
    }

    /// Whether the packet may use the entry: it has not been idle past its
    /// state's timeout, and an echo reply travels the reply direction (one
    /// travelling the way its request did is not a reply).
    #[inline(always)]
    pub fn usable<F: Family>(&self, fl: &Flow<F>) -> bool {
        let l4 = &fl.ip.l4;
        !(self.is_orig && l4.track == Track::Reply)
            && self.age < ct_timeout(fl.cfg, l4.proto, self.e.flags)
    }
}

/// Stamps an entry with the state this packet leaves it in. The clock stamp
/// is written at most once per `refresh` while nothing changes, so a busy
/// flow does not bounce the entry's cache line between CPUs.
#[inline(always)]
pub fn touch(e: &mut CtValue, flags: u32, age: u64, t: u64, refresh: u64) {
    let changed = flags != e.flags;
    if changed {
        e.flags = flags;
    }
    if changed || age > refresh {
        e.last_seen = t;
    }
}

/// The (source, destination) of the flow's opening packet: the question a
/// re-check after a policy change asks again.
#[inline(always)]
pub fn orig_endpoints<F: Family>(key: &F::CtKey, flags: u32) -> (F::Addr, F::Addr) {
    let (a, b) = F::ct_addrs(key);
    if flags & CT_F_ORIG_B != 0 {
        (b, a)
    } else {
        (a, b)
    }
}

/// Stamps an entry re-checked against policy generation `gen`.
#[inline(always)]
pub fn rechecked(e: &mut CtValue, gen: u32, rule_id: u32, flags: u32, t: u64) {
    e.policy_gen = gen;
    e.rule_id = rule_id;
    e.flags = flags;
    e.last_seen = t;
}

/// Deletes the entry of a flow the live policy no longer allows.
#[inline(always)]
pub fn remove<F: Family>(key: &F::CtKey) {
    let _ = F::ct().remove(key);
    bump_stat(stat::CT_REMOVED);
}

/// State of a new entry. A SYN starts a fresh handshake; a flow picked up
/// mid-stream (agent restart, evicted entry) starts in the same state, so it
/// keeps the short handshake timeout until a packet of the other direction
/// shows someone answers: otherwise one bare ACK with no flow behind it
/// would hold an entry for the established timeout (hours).
#[inline(always)]
fn opening_flags(src_is_b: bool, proto: u8) -> u32 {
    let mut flags = if src_is_b { CT_F_ORIG_B } else { 0 };
    if proto == IPPROTO_TCP {
        flags |= CT_F_SYN;
    }
    flags
}

/// Creates the flow's entry, allowed by `rule_id`; true when the flow is new.
/// `found`: the packet's lookup found an entry it could not use (idle past
/// its timeout).
///
/// An LRU update takes a node from the LRU lists even when it fails or
/// replaces an entry, so an entry that exists is rewritten through a lookup
/// instead: one the packet found, or, for a packet that opens a flow (never
/// looked up), one this CPU created last in the flow's slot (a retransmitted
/// SYN). Looked up again rather than written through the first lookup's
/// pointer: the policy and the quota run in between, time enough for an
/// eviction to hand the node to another flow. Anything else is inserted
/// straight away.
#[inline(always)]
pub fn create<F: Family>(fl: &Flow<F>, rule_id: u32, found: bool) -> bool {
    let word = F::key_word(fl.key);
    let opened = OPENED.get_ptr_mut(fl.slot & (OPENED_SLOTS - 1));
    // SAFETY: this CPU's slot of a per-CPU array.
    let seen = || opened.is_some_and(|o| unsafe { *o } == word);
    if found || (!looks_up(fl.ip.l4.track) && seen()) {
        if let Some(e) = entry::<F>(fl.key) {
            opening_value(fl, rule_id, e);
            return false;
        }
    }
    let Some(scratch) = new_flow() else {
        return false;
    };
    let value = &mut scratch.value;
    opening_value(fl, rule_id, value);
    // Passed by reference: by value it would be copied back onto the stack.
    let value: &CtValue = value;
    if let Some(o) = opened {
        // SAFETY: as above.
        unsafe { *o = word };
    }
    // Create-only, so creations (for fill and eviction figures) are counted
    // once.
    if F::ct().insert(fl.key, value, BPF_NOEXIST).is_ok() {
        bump_stat(F::CT_CREATED);
        return true;
    }
    match entry::<F>(fl.key) {
        Some(e) => copy_value(value, e),
        // Deleted between the two calls (the sweeper, an eviction).
        None => {
            let _ = F::ct().insert(fl.key, value, 0);
        }
    }
    false
}

/// `*to = *from` as word copies. Volatile: LLVM would make the copy a
/// memmove call, which on BPF is a call into a byte loop.
#[inline(always)]
fn copy_value(from: &CtValue, to: &mut CtValue) {
    const WORDS: usize = core::mem::size_of::<CtValue>() / 8;
    const { assert!(WORDS * 8 == core::mem::size_of::<CtValue>()) };
    let (from, to) = (
        from as *const CtValue as *const u64,
        to as *mut CtValue as *mut u64,
    );
    for i in 0..WORDS {
        // SAFETY: both are 8-aligned `CtValue`s, WORDS words long.
        unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
    }
}

/// Writes a new entry's value into `v`: the entry of a flow this packet opens.
#[inline(always)]
fn opening_value<F: Family>(fl: &Flow<F>, rule_id: u32, v: &mut CtValue) {
    let l4 = &fl.ip.l4;
    v.created = fl.t;
    v.last_seen = fl.t;
    v.policy_gen = fl.gen;
    v.rule_id = rule_id;
    v.flags = opening_flags(fl.src_is_b, l4.proto);
    v.orig_port = l4.policy_port;
    v._pad = 0;
    for c in v.counters.iter_mut() {
        // Volatile: LLVM would merge these stores into a memset call, which
        // on BPF is a call into a byte loop.
        // SAFETY: fields of a live map value or of this CPU's scratch.
        unsafe {
            core::ptr::write_volatile(&mut c.packets, 0);
            core::ptr::write_volatile(&mut c.bytes, 0);
        }
    }
    if fl.counting {
        first_count(&mut v.counters, fl.idx, fl.pkt.len);
    }
}
