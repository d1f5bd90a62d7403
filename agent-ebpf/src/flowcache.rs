//! The per-CPU flow cache in front of conntrack: a hit on an established
//! two-way flow costs an inlined array read instead of a hash-map call. Its
//! slots also hold per-flow counts not yet added to conntrack, so the hot path
//! never writes a line another CPU shares.
use agent_common::{
    is_denied_slot, Counter, FlowCache, FLOW_CACHE_DENIED, FLOW_CACHE_SLOTS, FLOW_COUNTER_SLOTS,
};

use crate::{
    counting::{clear, shared_add},
    family::Family,
    flow::Flow,
    parse::{Frag, Track, L4, TCP_FIN, TCP_RST},
    sources,
};

/// This CPU's slot for a flow (`Flow::slot`), if the per-CPU array has it.
pub type Slot<F> = Option<*mut FlowCache<<F as Family>::CtKey>>;

/// A conntrack key as 64-bit words, so comparing two is a few loads rather
/// than a byte loop (and never a call to memcmp, which BPF does not have).
#[inline(always)]
pub fn words<const N: usize, T>(k: &T) -> [u64; N] {
    const { assert!(N * 8 == core::mem::size_of::<T>() && core::mem::align_of::<T>() == 8) };
    // SAFETY: T is 8-aligned and exactly N words long (checked above).
    unsafe { core::ptr::read(k as *const T as *const [u64; N]) }
}

/// Whether two keys of `N` words are equal: the words' differences folded
/// into one, so the comparison is a few loads and one branch (an array `==`
/// becomes a call to a byte-wise memcmp, which costs an IPv6 key 40 rounds).
#[inline(always)]
pub fn words_eq<const N: usize, T>(a: &T, b: &T) -> bool {
    let (a, b) = (words::<N, T>(a), words::<N, T>(b));
    let mut diff = 0;
    for i in 0..N {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// A value of type `T` (plain bytes: a map key) made of `N` words `W`, so
/// it is built with word stores. Byte arrays of zeros, as in a key's padding,
/// would become calls to a byte-wise memset.
#[inline(always)]
pub fn from_words<W: Copy, T, const N: usize>(w: [W; N]) -> T {
    const {
        assert!(
            N * core::mem::size_of::<W>() == core::mem::size_of::<T>()
                && core::mem::align_of::<T>() <= core::mem::align_of::<W>()
        )
    };
    // SAFETY: same size, `w` at least as aligned as `T`; `T` is plain bytes.
    unsafe { core::ptr::read(&w as *const [W; N] as *const T) }
}

/// The `N` bytes at `i` of `a` as one native-order word `W`: a word load
/// wherever `a` is aligned (an address in `Ip`), byte loads where it is not
/// (an address quoted in the packet).
#[inline(always)]
pub fn word_at<W: Copy, const N: usize>(a: &[u8; N], i: usize) -> W {
    assert!(i + core::mem::size_of::<W>() <= N);
    // SAFETY: inside `a` (asserted; every caller's `i` is a constant).
    unsafe { core::ptr::read_unaligned(a.as_ptr().add(i) as *const W) }
}

/// Whether the flow cache may answer a packet of this shape. Packets that may
/// change a flow's state (FIN, RST, and everything but plain Lookup) always go
/// to conntrack; so do later fragments, which have no transport header.
#[inline(always)]
pub fn cacheable(frag: Frag, l4: &L4) -> bool {
    !matches!(frag, Frag::Later(_))
        && l4.track == Track::Lookup
        && l4.tcp_flags & (TCP_FIN | TCP_RST) == 0
}

/// The source check a packet owes: the interface it entered through (0: the
/// hook checks none) and the `SOURCES` generation read before any lookup.
#[derive(Clone, Copy)]
pub struct SrcCheck {
    pub ifindex: u32,
    pub gen: u32,
}

impl SrcCheck {
    /// The check itself (`sources::check`), where the hook asks for one.
    #[inline(always)]
    pub fn run<F: Family>(self, src: &F::Addr) -> Result<(), u32> {
        if self.ifindex != 0 {
            sources::check::<F>(self.ifindex, src)?;
        }
        Ok(())
    }
}

/// The rule of a flow the cache answers for; the packet is counted in the
/// slot. `Ok(None)` sends the packet on to conntrack. The packet's source
/// check runs here, unless the slot holds the flow and remembers this side's
/// source passing it on this interface under the live `SOURCES` generation:
/// so the fact is exact per (interface, source), and a forged packet entering
/// elsewhere still pays the check and fails it.
#[inline(always)]
pub fn lookup<F: Family>(fl: &Flow<F>, sc: SrcCheck) -> Result<Option<u32>, u32> {
    let Some(c) = F::cache().get_ptr_mut(fl.slot) else {
        sc.run::<F>(&fl.ip.src)?;
        return Ok(None);
    };
    // SAFETY: this CPU's slot of a per-CPU array.
    let c = unsafe { &mut *c };
    let hit = cache_hit::<F>(c, fl.key, fl.gen, fl.t);
    let side = fl.src_is_b as usize & 1;
    if sc.ifindex != 0 && !(hit && checked(c, side, sc)) {
        sources::check::<F>(sc.ifindex, &fl.ip.src)?;
        if hit {
            remember(c, side, sc);
        }
    }
    if !hit {
        return Ok(None);
    }
    // Counting on the hot path is two adds on the slot's own line; conntrack
    // gets them at the next flush.
    if fl.counting {
        if let Some(d) = c.counters.get_mut(fl.idx) {
            d.packets += 1;
            d.bytes += fl.pkt.len;
        }
    }
    Ok(Some(c.rule_id))
}

/// `ifindex` as a slot stores it: 0 (nothing remembered) past `u16`.
#[inline(always)]
fn slot_ifindex(ifindex: u32) -> u16 {
    if ifindex <= u16::MAX as u32 {
        ifindex as u16
    } else {
        0
    }
}

/// Whether side `side`'s source passed the check `sc` asks for.
#[inline(always)]
fn checked<K>(c: &FlowCache<K>, side: usize, sc: SrcCheck) -> bool {
    let stored = c.src_ifindex.get(side).copied().unwrap_or(0);
    c.sources_gen == sc.gen && stored != 0 && stored as u32 == sc.ifindex
}

/// Records that side `side`'s source passed `sc`. A fact of an older
/// generation about the other side is dropped, not carried into this one.
#[inline(always)]
fn remember<K>(c: &mut FlowCache<K>, side: usize, sc: SrcCheck) {
    if c.sources_gen != sc.gen {
        c.sources_gen = sc.gen;
        c.src_ifindex = [0; 2];
    }
    if let Some(i) = c.src_ifindex.get_mut(side) {
        *i = slot_ifindex(sc.ifindex);
    }
}

/// Whether `c` caches `key`, under generation `gen`, still valid at `now`.
#[inline(always)]
fn cache_hit<F: Family>(c: &FlowCache<F::CtKey>, key: &F::CtKey, gen: u32, now: u64) -> bool {
    F::key_eq(&c.key, key) && c.policy_gen == gen && now < c.valid_until
}

/// Fibonacci hashing: the top bits of a multiplication spread nearby keys.
#[inline(always)]
pub fn hash_slot(x: u64) -> u32 {
    const SHIFT: u32 = 64 - FLOW_CACHE_SLOTS.trailing_zeros();
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> SHIFT) as u32 & (FLOW_CACHE_SLOTS - 1)
}

/// Moves a flow-cache slot's pending deltas into the flow's conntrack entry.
#[inline(always)]
fn flush(pending: &mut [Counter; FLOW_COUNTER_SLOTS], into: &mut [Counter; FLOW_COUNTER_SLOTS]) {
    for (p, c) in pending.iter_mut().zip(into.iter_mut()) {
        if p.packets != 0 {
            shared_add(c, p.packets, p.bytes);
            clear(p);
        }
    }
}

/// Moves the deltas `slot` holds for `key` into `key`'s conntrack entry, so
/// the entry is complete whenever the flow reaches conntrack.
#[inline(always)]
pub fn flush_own<F: Family>(
    slot: Slot<F>,
    key: &F::CtKey,
    into: &mut [Counter; FLOW_COUNTER_SLOTS],
) {
    if let Some(c) = slot {
        // SAFETY: this CPU's slot of a per-CPU array.
        let c = unsafe { &mut *c };
        // A denied flow's counts go to its denied record, when another flow
        // takes the slot.
        if F::key_eq(&c.key, key) && !is_denied_slot(c) {
            flush(&mut c.counters, into);
        }
    }
}

/// Caches a flow conntrack has just confirmed, under `rule_id`, until the
/// entry's next refresh is due, with the source check this packet passed
/// (`sc`; none when the hook checks none).
#[inline(always)]
pub fn fill<F: Family>(fl: &Flow<F>, slot: Slot<F>, rule_id: u32, sc: SrcCheck) {
    if let Some(c) = slot {
        // SAFETY: this CPU's slot of a per-CPU array.
        let c = unsafe { &mut *c };
        // Another flow's pending counts go to its own entry before it loses
        // the slot (only on a slot collision).
        if fl.counting && (is_denied_slot(c) || !F::key_eq(&c.key, fl.key)) {
            evict::<F>(c);
        }
        let ifindex = slot_ifindex(sc.ifindex);
        let src_ifindex = if fl.src_is_b {
            [0, ifindex]
        } else {
            [ifindex, 0]
        };
        take::<F>(
            c,
            fl.key,
            fl.t + fl.cfg.refresh_interval,
            fl.gen,
            rule_id,
            src_ifindex,
            sc.gen,
        );
    }
}

/// Moves the pending counts of the flow `c` holds into its record: its
/// conntrack entry, or its denied record for a denied slot (whose last
/// packet then becomes the record's last seen). Counts of a record gone
/// meanwhile are dropped with it (the aggregates keep them).
#[inline(always)]
fn evict<F: Family>(c: &mut FlowCache<F::CtKey>) {
    if !c.counters.iter().any(|p| p.packets != 0) {
        return;
    }
    if is_denied_slot(c) {
        if let Some(d) = F::denied().get_ptr_mut(&c.key) {
            // SAFETY: map value pointer from a successful lookup.
            let d = unsafe { &mut *d };
            flush(&mut c.counters, &mut d.counters);
            if d.last_seen < c.valid_until {
                d.last_seen = c.valid_until;
            }
        }
    } else if let Some(other) = F::ct().get_ptr_mut(&c.key) {
        // SAFETY: map value pointer from a successful lookup.
        flush(&mut c.counters, unsafe { &mut (*other).counters });
    }
}

/// Counts a denied packet of `fl` in slot `idx` of this CPU's flow-cache
/// slot, when the slot holds the flow's pending denied counts: two plain
/// adds on this CPU's line instead of a lookup and two atomic adds on the
/// record every CPU shares. False: the record must count it.
#[inline(always)]
pub fn count_denied<F: Family>(fl: &Flow<F>, idx: usize) -> bool {
    let Some(c) = F::cache().get_ptr_mut(fl.slot) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array.
    let c = unsafe { &mut *c };
    // Once a refresh interval the packet goes to the record instead, which
    // `claim_denied` then hands the pending counts and the slot again.
    let due = (fl.t as u32).wrapping_sub(c.sources_gen) >= fl.cfg.refresh_interval as u32;
    if !(is_denied_slot(c) && F::key_eq(&c.key, fl.key)) || due {
        return false;
    }
    let Some(d) = c.counters.get_mut(idx) else {
        return false;
    };
    d.packets += 1;
    d.bytes += fl.pkt.len;
    c.valid_until = fl.t;
    true
}

/// Lets the flow's next denied packets count in its flow-cache slot, unless
/// the slot holds an allowed flow (a denied flow never takes a slot from
/// one, so denied traffic cannot push established flows out of the cache).
#[inline(always)]
pub fn claim_denied<F: Family>(fl: &Flow<F>) {
    let Some(c) = F::cache().get_ptr_mut(fl.slot) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array.
    let c = unsafe { &mut *c };
    if c.rule_id != 0 {
        return;
    }
    evict::<F>(c);
    take::<F>(c, fl.key, fl.t, FLOW_CACHE_DENIED, 0, [0; 2], fl.t as u32);
}

/// Gives slot `c` to the flow `key` with no pending counts (the fields as
/// `FlowCache` names them), field by field: a whole new `FlowCache` would
/// be zeroed through a call to a byte-wise `memset`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn take<F: Family>(
    c: &mut FlowCache<F::CtKey>,
    key: &F::CtKey,
    valid_until: u64,
    policy_gen: u32,
    rule_id: u32,
    src_ifindex: [u16; 2],
    sources_gen: u32,
) {
    c.key = key.clone();
    c.valid_until = valid_until;
    c.policy_gen = policy_gen;
    c.rule_id = rule_id;
    c.src_ifindex = src_ifindex;
    c.sources_gen = sources_gen;
    c.counters.iter_mut().for_each(clear);
}
