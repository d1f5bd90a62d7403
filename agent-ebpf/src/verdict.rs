//! One decision for both hooks: conntrack first (one lookup, direction-normalised
//! key), then identities and the rule trie, then counters.
use agent_common::{
    ct_timeout, flow_counter_index, id_flag_dst, id_flag_src, proto_class, reason,
    rule_counter_index, stat, Config, Counter, CtKey4, CtKey6, CtValue, DeniedValue, FlowCache,
    FragKey4, FragKey6, FragValue, IdKey4, IdKey6, IdentityValue, RuleKey, RuleValue, TokenBucket,
    VerdictEvent, BUCKET_EVENTS, BUCKET_RECORDS, CFG_F_EVENTS_ALLOWED, CFG_F_FLOW_COUNTERS,
    CFG_F_HOSTS4, CFG_F_HOSTS6, CT_F_FIN_ORIG, CT_F_FIN_REPLY, CT_F_ORIG_B, CT_F_REPLY_SEEN,
    CT_F_RST, CT_F_SYN, CT_F_SYNACK, DENIED_F_AUDIT, DENIED_F_ORIG_B, EVENT_VERDICT_AUDIT,
    EVENT_VERDICT_DROP, EVENT_VERDICT_PASS, FLOW_CACHE_SLOTS, ID_FLAG_ANY_AUDIT, ID_FLAG_AUDIT,
    IPPROTO_TCP, MODE_AUDIT, RULE_PREFIX_FULL, SLOT_BITS,
};
use aya_ebpf::{
    helpers::bpf_jiffies64,
    maps::{lpm_trie::Key, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};

use crate::{
    maps::{
        BUCKETS, CONFIG, COUNTERS, CT4, CT6, DENIED4, DENIED6, EVENTS, FLOWCACHE4, FLOWCACHE6,
        FRAG4, FRAG6, HOSTS4, HOSTS6, IDS4, IDS6, RULES, RULE_COUNTERS, STATS,
    },
    parse::{
        parse_ipv4, parse_ipv6, parse_l2, Bounds, Frag, Ip, Parsed6, Track, L3, TCP_ACK, TCP_FIN,
        TCP_RST, TCP_SYN,
    },
};

/// Per address family: which maps to use and how to build keys.
trait Family {
    type Addr: Copy + 'static;
    type CtKey: 'static;
    type FragKey: 'static;
    type IdKey: 'static;
    const BITS: u32;
    fn cache() -> &'static PerCpuArray<FlowCache<Self::CtKey>>;
    /// The flow-cache slot of a conntrack key.
    fn cache_slot(key: &Self::CtKey) -> u32;
    /// Key equality as whole words (no memcmp in BPF).
    fn key_eq(a: &Self::CtKey, b: &Self::CtKey) -> bool;
    fn ids() -> &'static LpmTrie<Self::IdKey, IdentityValue>;
    fn hosts() -> &'static HashMap<Self::IdKey, IdentityValue>;
    /// `Config::flags` bit of slot 0's host prefixes (slot 1's is `<< 1`).
    const HOSTS_FLAG: u32;
    fn id_key(slot: u8, addr: &Self::Addr) -> Self::IdKey;
    fn ct() -> &'static LruHashMap<Self::CtKey, CtValue>;
    fn frag() -> &'static LruHashMap<Self::FragKey, FragValue>;
    /// Whether address `a` sorts after `b` (compared as big-endian bytes).
    fn addr_gt(a: &Self::Addr, b: &Self::Addr) -> Option<bool>;
    fn make_ct_key(a: &Self::Addr, b: &Self::Addr, pa: u16, pb: u16, proto: u8) -> Self::CtKey;
    /// (A, B) addresses of a key.
    fn ct_addrs(key: &Self::CtKey) -> (Self::Addr, Self::Addr);
    fn frag_key(src: &Self::Addr, dst: &Self::Addr, id: u32, proto: u8) -> Self::FragKey;
    fn denied() -> &'static LruHashMap<Self::CtKey, DeniedValue>;
    /// `stat` slots counting conntrack and denied-flow creations.
    const CT_CREATED: u32;
    const DENIED_CREATED: u32;
    /// 4 or 6, for events.
    const FAMILY: u8;
    fn addr16(a: &Self::Addr) -> [u8; 16];
}

struct V4;
struct V6;

impl Family for V4 {
    type Addr = [u8; 4];
    type CtKey = CtKey4;
    type FragKey = FragKey4;
    type IdKey = IdKey4;
    const BITS: u32 = 32;
    const CT_CREATED: u32 = stat::CT4_CREATED;
    const DENIED_CREATED: u32 = stat::DENIED4_CREATED;
    const FAMILY: u8 = 4;

    #[inline(always)]
    fn denied() -> &'static LruHashMap<CtKey4, DeniedValue> {
        &DENIED4
    }
    #[inline(always)]
    fn addr16(a: &[u8; 4]) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(a);
        out
    }

    #[inline(always)]
    fn cache() -> &'static PerCpuArray<FlowCache<CtKey4>> {
        &FLOWCACHE4
    }
    #[inline(always)]
    fn cache_slot(key: &CtKey4) -> u32 {
        let w = words::<2, CtKey4>(key);
        hash_slot(w[0] ^ w[1].rotate_left(29))
    }
    #[inline(always)]
    fn key_eq(a: &CtKey4, b: &CtKey4) -> bool {
        words::<2, CtKey4>(a) == words::<2, CtKey4>(b)
    }

    #[inline(always)]
    fn ids() -> &'static LpmTrie<IdKey4, IdentityValue> {
        &IDS4
    }
    #[inline(always)]
    fn hosts() -> &'static HashMap<IdKey4, IdentityValue> {
        &HOSTS4
    }
    const HOSTS_FLAG: u32 = CFG_F_HOSTS4;
    #[inline(always)]
    fn id_key(slot: u8, addr: &[u8; 4]) -> IdKey4 {
        IdKey4 { slot, addr: *addr }
    }
    #[inline(always)]
    fn ct() -> &'static LruHashMap<CtKey4, CtValue> {
        &CT4
    }
    #[inline(always)]
    fn frag() -> &'static LruHashMap<FragKey4, FragValue> {
        &FRAG4
    }
    #[inline(always)]
    fn addr_gt(a: &[u8; 4], b: &[u8; 4]) -> Option<bool> {
        let (a, b) = (u32::from_be_bytes(*a), u32::from_be_bytes(*b));
        (a != b).then_some(a > b)
    }
    #[inline(always)]
    fn make_ct_key(a: &[u8; 4], b: &[u8; 4], pa: u16, pb: u16, proto: u8) -> CtKey4 {
        CtKey4 {
            addr_a: *a,
            addr_b: *b,
            port_a: pa.to_be_bytes(),
            port_b: pb.to_be_bytes(),
            proto,
            _pad: [0; 3],
        }
    }
    #[inline(always)]
    fn ct_addrs(key: &CtKey4) -> ([u8; 4], [u8; 4]) {
        (key.addr_a, key.addr_b)
    }
    #[inline(always)]
    fn frag_key(src: &[u8; 4], dst: &[u8; 4], id: u32, proto: u8) -> FragKey4 {
        FragKey4 {
            src: *src,
            dst: *dst,
            id: (id as u16).to_be_bytes(),
            proto,
            _pad: 0,
        }
    }
}

#[inline(always)]
fn v6_words(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

impl Family for V6 {
    type Addr = [u8; 16];
    type CtKey = CtKey6;
    type FragKey = FragKey6;
    type IdKey = IdKey6;
    const BITS: u32 = 128;
    const CT_CREATED: u32 = stat::CT6_CREATED;
    const DENIED_CREATED: u32 = stat::DENIED6_CREATED;
    const FAMILY: u8 = 6;

    #[inline(always)]
    fn denied() -> &'static LruHashMap<CtKey6, DeniedValue> {
        &DENIED6
    }
    #[inline(always)]
    fn addr16(a: &[u8; 16]) -> [u8; 16] {
        *a
    }

    #[inline(always)]
    fn cache() -> &'static PerCpuArray<FlowCache<CtKey6>> {
        &FLOWCACHE6
    }
    #[inline(always)]
    fn cache_slot(key: &CtKey6) -> u32 {
        let w = words::<5, CtKey6>(key);
        hash_slot(w[0] ^ w[1].rotate_left(13) ^ w[2].rotate_left(29) ^ w[3].rotate_left(41) ^ w[4])
    }
    #[inline(always)]
    fn key_eq(a: &CtKey6, b: &CtKey6) -> bool {
        words::<5, CtKey6>(a) == words::<5, CtKey6>(b)
    }

    #[inline(always)]
    fn ids() -> &'static LpmTrie<IdKey6, IdentityValue> {
        &IDS6
    }
    #[inline(always)]
    fn hosts() -> &'static HashMap<IdKey6, IdentityValue> {
        &HOSTS6
    }
    const HOSTS_FLAG: u32 = CFG_F_HOSTS6;
    #[inline(always)]
    fn id_key(slot: u8, addr: &[u8; 16]) -> IdKey6 {
        IdKey6 { slot, addr: *addr }
    }
    #[inline(always)]
    fn ct() -> &'static LruHashMap<CtKey6, CtValue> {
        &CT6
    }
    #[inline(always)]
    fn frag() -> &'static LruHashMap<FragKey6, FragValue> {
        &FRAG6
    }
    #[inline(always)]
    fn addr_gt(a: &[u8; 16], b: &[u8; 16]) -> Option<bool> {
        let (a, b) = (v6_words(a), v6_words(b));
        (a != b).then_some(a > b)
    }
    #[inline(always)]
    fn make_ct_key(a: &[u8; 16], b: &[u8; 16], pa: u16, pb: u16, proto: u8) -> CtKey6 {
        CtKey6 {
            addr_a: *a,
            addr_b: *b,
            port_a: pa.to_be_bytes(),
            port_b: pb.to_be_bytes(),
            proto,
            _pad: [0; 3],
        }
    }
    #[inline(always)]
    fn ct_addrs(key: &CtKey6) -> ([u8; 16], [u8; 16]) {
        (key.addr_a, key.addr_b)
    }
    #[inline(always)]
    fn frag_key(src: &[u8; 16], dst: &[u8; 16], id: u32, proto: u8) -> FragKey6 {
        FragKey6 {
            src: *src,
            dst: *dst,
            id: id.to_be_bytes(),
            proto,
            _pad: [0; 3],
        }
    }
}

/// The direction-normalised conntrack key of a packet, and whether its source
/// is endpoint B (the larger one), so both directions share one entry.
#[inline(always)]
fn ct_key<F: Family>(
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

/// A conntrack key as 64-bit words, so comparing two is a few loads rather
/// than a byte loop (and never a call to memcmp, which BPF does not have).
#[inline(always)]
fn words<const N: usize, T>(k: &T) -> [u64; N] {
    const { assert!(N * 8 == core::mem::size_of::<T>() && core::mem::align_of::<T>() == 8) };
    // SAFETY: T is 8-aligned and exactly N words long (checked above).
    unsafe { core::ptr::read(k as *const T as *const [u64; N]) }
}

/// Whether `c` caches `key`, under generation `gen`, still valid at `now`.
#[inline(always)]
fn cache_hit<F: Family>(c: &FlowCache<F::CtKey>, key: &F::CtKey, gen: u32, now: u64) -> bool {
    F::key_eq(&c.key, key) && c.policy_gen == gen && now < c.valid_until
}

/// Fibonacci hashing: the top bits of a multiplication spread nearby keys.
#[inline(always)]
fn hash_slot(x: u64) -> u32 {
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32 & (FLOW_CACHE_SLOTS - 1)
}

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_jiffies64() }
}

/// The identity of `addr` in policy slot `slot`: its host prefix if it has
/// one (a hash probe, only when the slot has any), else the longest prefix in
/// the trie, which holds every shorter prefix. The split is exact: a host
/// prefix is the longest possible match.
#[inline(always)]
fn identity<F: Family>(flags: u32, slot: u8, addr: &F::Addr) -> Option<IdentityValue> {
    let key = F::id_key(slot, addr);
    if flags & (F::HOSTS_FLAG << slot) != 0 {
        // SAFETY: the value is copied out at once; the agent only replaces
        // entries of the idle slot.
        if let Some(v) = unsafe { F::hosts().get(&key) } {
            return Some(*v);
        }
    }
    F::ids().get(Key::new(SLOT_BITS + F::BITS, key)).copied()
}

/// Looks a (src, dst, proto, port) question up in the live policy. A denial
/// says whether either side belongs to an audit-only group (then it passes).
#[inline(always)]
fn policy<F: Family>(
    gen: u32,
    flags: u32,
    src: &F::Addr,
    dst: &F::Addr,
    proto: u8,
    port: u16,
) -> Result<RuleValue, bool> {
    // The live slot is the generation's parity (agent-common's Config docs).
    let slot = (gen & 1) as u8;
    let class = proto_class(proto);
    let s = identity::<F>(flags, slot, src).ok_or(false)?;
    // Identities with no rule for this protocol are denied without further lookups:
    // a SYN flood from addresses that may not talk TCP costs one identity lookup
    // (unless some group is audit-only: then the destination's flag matters).
    if s.flags & id_flag_src(class) == 0 {
        if s.flags & ID_FLAG_ANY_AUDIT == 0 {
            return Err(false);
        }
        let d = identity::<F>(flags, slot, dst);
        let dflags = d.map_or(0, |d| d.flags);
        return Err((s.flags | dflags) & ID_FLAG_AUDIT != 0);
    }
    let Some(d) = identity::<F>(flags, slot, dst) else {
        return Err(s.flags & ID_FLAG_AUDIT != 0);
    };
    let audit = (s.flags | d.flags) & ID_FLAG_AUDIT != 0;
    if d.flags & id_flag_dst(class) == 0 {
        return Err(audit);
    }
    RULES
        .get(Key::new(
            RULE_PREFIX_FULL,
            RuleKey::new(s.id, d.id, proto, port).in_slot(slot),
        ))
        .copied()
        .ok_or(audit)
}

/// What the packet is, for counting: hook direction and frame length.
pub struct Pkt {
    pub dir: u32,
    pub len: u64,
}

/// `Ok((pass reason, rule id))`, or `Err((drop reason, audited))`: an audited
/// drop passes (audit mode, or an audit-only group on either side).
type Decision = Result<(u32, u32), (u32, bool)>;

/// An atomic add whose result is unused, which the BPF backend emits as one
/// `lock xadd` (core's `AtomicU64::fetch_add` is missing on this target
/// because it has no compare-and-swap).
#[inline(always)]
fn atomic_add(p: *mut u64, v: u64) {
    use core::intrinsics::{atomic_xadd, AtomicOrdering};
    // SAFETY: `p` points into a map value; the kernel keeps it alive for the
    // program's run, and other CPUs only touch it atomically too.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// Adds to a counter shared between CPUs (a conntrack or denied-flow entry).
#[inline(always)]
fn shared_add(c: &mut Counter, packets: u64, bytes: u64) {
    atomic_add(&mut c.packets, packets);
    atomic_add(&mut c.bytes, bytes);
}

/// Moves a flow-cache slot's pending deltas into the flow's conntrack entry.
#[inline(always)]
fn flush(pending: &mut [Counter; 4], into: &mut [Counter; 4]) {
    for (p, c) in pending.iter_mut().zip(into.iter_mut()) {
        if p.packets != 0 {
            shared_add(c, p.packets, p.bytes);
            *p = Counter::default();
        }
    }
}

#[inline(always)]
fn bump_stat(idx: u32) {
    if let Some(v) = STATS.get_ptr_mut(idx) {
        // SAFETY: this CPU's slot.
        unsafe { *v += 1 };
    }
}

/// This CPU's bucket `idx` (`rate` per second, at most `burst` saved up),
/// refilled up to now.
#[inline(always)]
fn refilled(idx: u32, rate: u64, burst: u64, hz: u64, t: u64) -> Option<&'static mut TokenBucket> {
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
fn send_event(cfg: &Config, t: u64, ev: VerdictEvent) {
    if cfg.event_rate == 0 {
        return;
    }
    if !take_token(BUCKET_EVENTS, cfg.event_rate, cfg.event_burst, cfg.hz, t) {
        bump_stat(stat::EVENTS_RATE_LIMITED);
        return;
    }
    match EVENTS.reserve::<VerdictEvent>(0) {
        Some(mut e) => {
            e.write(ev);
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

/// Counts a denied (or audited) packet on its flow in the bounded denied-flow
/// map; a flow seen for the first time sends an event.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn deny<F: Family>(
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

/// `bpf_map_update_elem` flag: create only.
const BPF_NOEXIST: u64 = 1;

/// Folds this packet's TCP flags into the entry's state.
#[inline(always)]
fn ct_flags_after(flags: u32, is_orig: bool, proto: u8, tcp_flags: u8) -> u32 {
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

/// Verdict of an IP packet, counting it on its flow.
#[inline(always)]
fn decide_ip<F: Family>(cfg: &Config, ip: &Ip<F::Addr>, pkt: &Pkt) -> Decision {
    let l4 = &ip.l4;
    // One read of the generation for the whole packet: the slot it looks up and
    // the generation it stamps must be the same policy, even if a swap lands
    // while the packet is being judged.
    // SAFETY: a field of the CONFIG map value, read once.
    let gen = unsafe { core::ptr::read_volatile(&cfg.policy_gen) };
    let flags = cfg.flags;
    if let Frag::Later(id) = ip.frag {
        let key = F::frag_key(&ip.src, &ip.dst, id, ip.frag_proto);
        return match F::frag().get_ptr(&key) {
            Some(v) if now().saturating_sub(unsafe { (*v).seen }) < cfg.frag_timeout => {
                Ok((reason::PASS_FRAGMENT, 0))
            }
            _ => Err((reason::DROP_FRAGMENT, cfg.mode == MODE_AUDIT)),
        };
    }
    let counting = cfg.flags & CFG_F_FLOW_COUNTERS != 0;

    let (key, src_is_b) = ct_key::<F>(&ip.src, &ip.dst, l4.sport, l4.dport, l4.proto);
    let idx = flow_counter_index(pkt.dir, src_is_b);
    // Packets that may change a flow's state (FIN, RST, and everything but
    // plain Lookup) always go to conntrack; the rest may be answered by the cache.
    let cacheable = l4.track == Track::Lookup && l4.tcp_flags & (TCP_FIN | TCP_RST) == 0;
    let slot = F::cache_slot(&key);
    let t = now();
    if cacheable {
        if let Some(c) = F::cache().get_ptr_mut(slot) {
            // SAFETY: this CPU's slot of a per-CPU array.
            let c = unsafe { &mut *c };
            if cache_hit::<F>(c, &key, gen, t) {
                // Counting on the hot path is two adds on the slot's own line;
                // conntrack gets them at the next flush.
                if counting {
                    if let Some(d) = c.counters.get_mut(idx) {
                        d.packets += 1;
                        d.bytes += pkt.len;
                    }
                }
                return Ok((reason::PASS_ESTABLISHED, c.rule_id));
            }
        }
    }
    if l4.track != Track::Open && l4.track != Track::PolicyOnly {
        if let Some(entry) = F::ct().get_ptr_mut(&key) {
            // SAFETY: map value pointer from a successful lookup.
            let e = unsafe { &mut *entry };
            // Saturating: another CPU may have stamped the entry after this one read
            // the clock.
            let age = t.saturating_sub(e.last_seen);
            let is_orig = src_is_b == (e.flags & CT_F_ORIG_B != 0);
            // An echo reply travelling the way its request did is not a reply.
            let usable = !(is_orig && l4.track == Track::Reply);
            if usable && age < ct_timeout(cfg, l4.proto, e.flags) {
                let cslot = F::cache().get_ptr_mut(slot);
                if counting {
                    if let Some(c) = cslot {
                        // SAFETY: this CPU's slot of a per-CPU array.
                        let c = unsafe { &mut *c };
                        if F::key_eq(&c.key, &key) {
                            flush(&mut c.counters, &mut e.counters);
                        }
                    }
                }
                let f = ct_flags_after(e.flags, is_orig, l4.proto, l4.tcp_flags);
                if e.policy_gen != gen {
                    // Policy changed since this flow was checked: ask the live
                    // policy the flow's original question once (revocation).
                    let (a, b) = F::ct_addrs(&key);
                    let (osrc, odst) = if e.flags & CT_F_ORIG_B != 0 {
                        (b, a)
                    } else {
                        (a, b)
                    };
                    let rule = match policy::<F>(gen, flags, &osrc, &odst, l4.proto, e.orig_port) {
                        Ok(rule) => rule,
                        Err(audit) => {
                            let _ = F::ct().remove(&key);
                            bump_stat(stat::CT_REMOVED);
                            return deny::<F>(
                                cfg,
                                &key,
                                src_is_b,
                                ip,
                                pkt,
                                reason::DROP_REVOKED,
                                audit,
                                t,
                            );
                        }
                    };
                    e.policy_gen = gen;
                    e.rule_id = rule.rule_id;
                    e.flags = f;
                    e.last_seen = t;
                    if counting {
                        if let Some(c) = e.counters.get_mut(idx) {
                            shared_add(c, 1, pkt.len);
                        }
                    }
                    return Ok((reason::PASS_RECHECKED, rule.rule_id));
                }
                if counting {
                    if let Some(c) = e.counters.get_mut(idx) {
                        shared_add(c, 1, pkt.len);
                    }
                }
                let changed = f != e.flags;
                if changed {
                    e.flags = f;
                }
                if changed || age > cfg.refresh_interval {
                    e.last_seen = t;
                }
                // Two-way flows only: until a reply is seen, every packet must
                // reach conntrack to record the reply's state change.
                if cacheable && f & CT_F_REPLY_SEEN != 0 {
                    if let Some(c) = cslot {
                        // SAFETY: this CPU's slot of a per-CPU array.
                        let c = unsafe { &mut *c };
                        // Another flow's pending counts go to its own entry
                        // before it loses the slot (only on a slot collision).
                        if counting && !F::key_eq(&c.key, &key) {
                            let pending = c.counters.iter().any(|p| p.packets != 0);
                            if pending {
                                if let Some(other) = F::ct().get_ptr_mut(&c.key) {
                                    // SAFETY: map value pointer from a successful lookup.
                                    flush(&mut c.counters, unsafe { &mut (*other).counters });
                                }
                            }
                        }
                        *c = FlowCache {
                            key,
                            valid_until: t + cfg.refresh_interval,
                            policy_gen: gen,
                            rule_id: e.rule_id,
                            counters: [Counter::default(); 4],
                        };
                    }
                }
                return Ok((reason::PASS_ESTABLISHED, e.rule_id));
            }
        }
    }

    let rule = match policy::<F>(gen, flags, &ip.src, &ip.dst, l4.proto, l4.policy_port) {
        Ok(rule) => rule,
        Err(audit) => {
            return deny::<F>(cfg, &key, src_is_b, ip, pkt, reason::DROP_POLICY, audit, t)
        }
    };
    if l4.track == Track::Open || l4.track == Track::Lookup {
        let mut flags = if src_is_b { CT_F_ORIG_B } else { 0 };
        if l4.proto == IPPROTO_TCP {
            // A flow picked up mid-stream (agent restart, evicted entry) counts as
            // established; a SYN starts a fresh handshake.
            flags |= if l4.tcp_flags & TCP_SYN != 0 {
                CT_F_SYN
            } else {
                CT_F_SYN | CT_F_SYNACK
            };
        }
        let mut value = CtValue {
            created: t,
            last_seen: t,
            policy_gen: gen,
            rule_id: rule.rule_id,
            flags,
            orig_port: l4.policy_port,
            _pad: 0,
            counters: [Counter::default(); 4],
        };
        if counting {
            if let Some(c) = value.counters.get_mut(idx) {
                *c = Counter {
                    packets: 1,
                    bytes: pkt.len,
                };
            }
        }
        // Create-only first, so creations (for fill and eviction figures) are
        // counted once; a SYN reusing a live flow's ports then replaces it.
        if F::ct().insert(&key, value, BPF_NOEXIST).is_ok() {
            bump_stat(F::CT_CREATED);
            if cfg.flags & CFG_F_EVENTS_ALLOWED != 0 {
                let ev = event::<F>(
                    ip,
                    pkt,
                    reason::PASS_POLICY,
                    rule.rule_id,
                    EVENT_VERDICT_PASS,
                );
                send_event(cfg, t, ev);
            }
        } else {
            let _ = F::ct().insert(&key, value, 0);
        }
    }
    Ok((reason::PASS_POLICY, rule.rule_id))
}

/// Remembers a passed first fragment so the rest of its datagram follows it.
#[inline(always)]
fn note_first_fragment<F: Family>(ip: &Ip<F::Addr>) {
    if let Frag::First(id) = ip.frag {
        let key = F::frag_key(&ip.src, &ip.dst, id, ip.frag_proto);
        let _ = F::frag().insert(&key, FragValue { seen: now() }, 0);
    }
}

#[inline(always)]
fn decide_family<F: Family>(cfg: &Config, ip: &Ip<F::Addr>, pkt: &Pkt) -> Decision {
    let r = decide_ip::<F>(cfg, ip, pkt);
    if r.is_ok() {
        note_first_fragment::<F>(ip);
    }
    r
}

#[inline(always)]
fn judge_v4(b: &Bounds, l3: usize, cfg: &Config, pkt: &Pkt) -> Decision {
    let ip = parse_ipv4(b, l3).map_err(|r| (r, false))?;
    decide_family::<V4>(cfg, &ip, pkt)
}

#[inline(always)]
fn judge_v6(b: &Bounds, l3: usize, cfg: &Config, pkt: &Pkt) -> Decision {
    match parse_ipv6(b, l3).map_err(|r| (r, false))? {
        Parsed6::Ip(ip) => decide_family::<V6>(cfg, &ip, pkt),
        Parsed6::NeighbourDiscovery => Ok((reason::PASS_NEIGHBOUR_DISCOVERY, 0)),
    }
}

/// Judges one frame. Returns true when it may pass, after counting it.
#[inline(always)]
pub fn judge(b: &Bounds, dir: u32) -> bool {
    let Some(cfg) = CONFIG.get(0) else {
        return false;
    };
    let pkt = Pkt {
        dir,
        len: b.len as u64,
    };
    // Everything is inlined into the entry point: a BPF-to-BPF call returns
    // through the kernel's return thunk, which costs real time on CPUs that
    // need SRSO mitigation (as these do).
    let verdict = match parse_l2(b) {
        Ok(L3::V4(l3)) => judge_v4(b, l3, cfg, &pkt),
        Ok(L3::V6(l3)) => judge_v6(b, l3, cfg, &pkt),
        Ok(L3::NonIp) => Ok((reason::PASS_NON_IP, 0)),
        Err(r) => Err((r, false)),
    };
    let (pass, why, rule_id, audited) = match verdict {
        Ok((r, rule_id)) => (true, r, rule_id, false),
        Err((r, audit)) => (false, r, 0, audit || cfg.mode == MODE_AUDIT),
    };
    // A pass by a rule is counted once, under its rule (the per-reason totals
    // are sums over rules); everything else by direction and reason. Either
    // array is per-CPU and never evicts, so the aggregates lose no count.
    let by_rule = match rule_counter_index(rule_id, dir, why) {
        Some(i) if pass && rule_id != 0 => RULE_COUNTERS.get_ptr_mut(i),
        _ => None,
    };
    let slot = match by_rule {
        Some(c) => Some(c),
        None => COUNTERS.get_ptr_mut(agent_common::counter_index(dir, audited, why)),
    };
    if let Some(c) = slot {
        // SAFETY: per-CPU slot of this CPU; no other writer.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += pkt.len;
        }
    }
    pass || audited
}
