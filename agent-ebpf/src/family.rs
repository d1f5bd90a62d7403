//! The per-address-family glue: which maps an IPv4 or IPv6 packet uses and how
//! its keys are built. Every other module is written once, generic over
//! `Family`, and monomorphised per family, so each call site names one map
//! (which the verifier needs to inline the lookup).
use agent_common::{
    filter_key6, stat, CtKey4, CtKey6, CtValue, DeniedValue, FlowCache, FragKey4, FragKey6,
    FragValue, IdKey4, IdKey6, IdentityValue, RuleValue, SourceKey, CFG_F_HOSTS4, CFG_F_HOSTS6,
    ID_BLOCK_COUNT, SLOT_BITS,
};
use aya_ebpf::maps::{lpm_trie::Key, HashMap, LpmTrie, LruHashMap, PerCpuArray};

use crate::{
    flowcache::{from_words, hash_slot, word_at, words, words_eq, SrcCheck},
    maps::{
        ANSWERS4, CT4, CT6, DENIED4, DENIED6, FLOWCACHE4, FLOWCACHE6, FRAG4, FRAG6, HOSTS4, HOSTS6,
        IDS4, IDS6, ID_KEY4, ID_KEY6, QUOTE_KEY4, QUOTE_KEY6,
    },
    parse::{parse_quote_v4, parse_quote_v6, Bounds, Quote},
    policy::{self, through_cache},
};

/// Per address family: which maps to use and how to build keys.
pub trait Family {
    type Addr: Copy + 'static;
    type CtKey: Clone + 'static;
    type FragKey: 'static;
    type IdKey: 'static;
    const BITS: u32;
    fn cache() -> &'static PerCpuArray<FlowCache<Self::CtKey>>;
    /// A conntrack key folded into one word: equal keys fold alike, and
    /// different keys rarely do.
    fn key_word(key: &Self::CtKey) -> u64;
    /// The flow-cache slot of a conntrack key.
    #[inline(always)]
    fn cache_slot(key: &Self::CtKey) -> u32 {
        hash_slot(Self::key_word(key))
    }
    /// Key equality as whole words (no memcmp in BPF).
    fn key_eq(a: &Self::CtKey, b: &Self::CtKey) -> bool;
    fn ids() -> &'static LpmTrie<Self::IdKey, IdentityValue>;
    fn hosts() -> &'static HashMap<Self::IdKey, IdentityValue>;
    /// `Config::flags` bit of slot 0's host prefixes (slot 1's is `<< 1`).
    const HOSTS_FLAG: u32;
    /// This CPU's scratch key of an identity lookup, holding `addr` in
    /// `slot` as a full-length prefix.
    fn id_key(slot: u8, addr: &Self::Addr) -> Option<&'static Key<Self::IdKey>>;
    /// This CPU's scratch identity key, as `id_key` last wrote it.
    fn id_key_written() -> Option<&'static Key<Self::IdKey>>;
    /// The address inside an identity key.
    fn key_addr(k: &Key<Self::IdKey>) -> &Self::Addr;
    /// The host-prefix hash's key inside a trie key.
    fn host_key(k: &Key<Self::IdKey>) -> &Self::IdKey;
    /// The address's key in the membership filters (`agent_common::filter_key4`).
    fn filter_key(a: &Self::Addr) -> u64;
    /// The first byte of an address (its `ID_BLOCKS` block).
    fn first_byte(a: &Self::Addr) -> u32;
    /// Where this family's blocks start in `ID_BLOCKS`.
    const BLOCKS_BASE: u32;
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
    /// The address as `SOURCES` keys hold it (IPv4-mapped for IPv4).
    fn source_addr(a: &Self::Addr) -> [u8; 16];
    /// The `SOURCES` key of address `a` on `ifindex` (`SourceKey::new` with
    /// `source_addr`), built as words.
    fn source_key(ifindex: u32, a: &Self::Addr) -> SourceKey;
    /// IPv6 link-local (fe80::/10): not routed, never checked against `SOURCES`.
    fn link_local(a: &Self::Addr) -> bool;
    /// The header an ICMP error of this family quotes (`parse::parse_quote_v4`).
    fn quote(b: &Bounds, off: usize, len: usize) -> Result<Option<Quote<'_, Self::Addr>>, u32>;
    /// This CPU's scratch key for the flow an ICMP error quotes.
    fn quote_key() -> Option<*mut Self::CtKey>;
    /// The identity of `addr` in policy slot `slot`: the block table's
    /// answer (`policy::block_identity`), else `policy::identity_at` in a
    /// global function, with `addr` in the identity-key scratch.
    fn identity(flags: u32, slot: u8, addr: &Self::Addr) -> Option<IdentityValue>;
    /// The live policy's answer to a question (`policy::lookup`); with
    /// `check`, the source first passes the check `sc` it owes, or the
    /// answer is `Err(drop reason)`.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        gen: u32,
        flags: u32,
        src: &Self::Addr,
        dst: &Self::Addr,
        proto: u8,
        port: u16,
        sc: SrcCheck,
        check: bool,
    ) -> Result<Result<RuleValue, bool>, u32>;
    /// The policy's answer for a source of identity `s` that may send this
    /// protocol (`policy::ask_dst`).
    fn answer_for(
        gen: u32,
        flags: u32,
        s: IdentityValue,
        dst: &Self::Addr,
        proto: u8,
        port: u16,
    ) -> Result<RuleValue, bool>;
}

pub struct V4;
pub struct V6;

impl Family for V4 {
    /// Through the answer cache: an IPv4 question is two words.
    #[inline(always)]
    fn answer(
        gen: u32,
        flags: u32,
        src: &[u8; 4],
        dst: &[u8; 4],
        proto: u8,
        port: u16,
        sc: SrcCheck,
        check: bool,
    ) -> Result<Result<RuleValue, bool>, u32> {
        through_cache!(
            &ANSWERS4,
            policy::question_v4(gen, src, dst, proto, port),
            sc,
            if check { sc.run::<V4>(src) } else { Ok(()) },
            policy::to_answer(&policy::ask::<V4>(gen, flags, src, dst, proto, port))
        )
    }
    /// Through the answer cache too, as a question of the source's identity.
    #[inline(always)]
    fn answer_for(
        gen: u32,
        flags: u32,
        s: IdentityValue,
        dst: &[u8; 4],
        proto: u8,
        port: u16,
    ) -> Result<RuleValue, bool> {
        through_cache!(
            &ANSWERS4,
            policy::question_id_v4(gen, s.id, dst, proto, port),
            SrcCheck { ifindex: 0, gen: 0 },
            Ok(()),
            match Self::id_key((gen & 1) as u8, dst) {
                Some(_) => netpol_ask_dst4(
                    policy::gen_flags(gen, flags),
                    policy::identity_word(Some(s)),
                    policy::proto_port(proto, port),
                ),
                None => policy::to_answer(&Err(false)),
            }
        )
        .unwrap_or(Err(false))
    }
    #[inline(always)]
    fn identity(flags: u32, slot: u8, addr: &[u8; 4]) -> Option<IdentityValue> {
        if let Some(answer) = policy::block_identity::<Self>(flags, slot, addr) {
            return answer;
        }
        Self::id_key(slot, addr)?;
        policy::from_identity_word(netpol_identity4(flags_slot(flags, slot)))
    }
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
    fn source_addr(a: &[u8; 4]) -> [u8; 16] {
        SourceKey::mapped_v4(*a)
    }
    #[inline(always)]
    fn source_key(ifindex: u32, a: &[u8; 4]) -> SourceKey {
        from_words([
            u32::from_ne_bytes(ifindex.to_be_bytes()),
            0,
            0,
            u32::from_ne_bytes([0, 0, 0xff, 0xff]),
            u32::from_ne_bytes(*a),
        ])
    }
    #[inline(always)]
    fn link_local(_a: &[u8; 4]) -> bool {
        false
    }
    #[inline(always)]
    fn quote(b: &Bounds, off: usize, len: usize) -> Result<Option<Quote<'_, [u8; 4]>>, u32> {
        parse_quote_v4(b, off, len)
    }
    #[inline(always)]
    fn quote_key() -> Option<*mut CtKey4> {
        QUOTE_KEY4.get_ptr_mut(0)
    }

    #[inline(always)]
    fn cache() -> &'static PerCpuArray<FlowCache<CtKey4>> {
        &FLOWCACHE4
    }
    #[inline(always)]
    fn key_word(key: &CtKey4) -> u64 {
        let w = words::<2, CtKey4>(key);
        w[0] ^ w[1].rotate_left(29)
    }
    #[inline(always)]
    fn key_eq(a: &CtKey4, b: &CtKey4) -> bool {
        words_eq::<2, CtKey4>(a, b)
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
    fn id_key(slot: u8, addr: &[u8; 4]) -> Option<&'static Key<IdKey4>> {
        let k = ID_KEY4.get_ptr_mut(0)?;
        // SAFETY: this CPU's scratch slot; nothing else runs on it meanwhile.
        unsafe {
            (*k).prefix_len = SLOT_BITS + Self::BITS;
            (*k).data = IdKey4 { slot, addr: *addr };
            Some(&*k)
        }
    }
    #[inline(always)]
    fn id_key_written() -> Option<&'static Key<IdKey4>> {
        // SAFETY: this CPU's scratch slot, written by the caller just before.
        ID_KEY4.get_ptr(0).map(|k| unsafe { &*k })
    }
    #[inline(always)]
    fn key_addr(k: &Key<IdKey4>) -> &[u8; 4] {
        &k.data.addr
    }
    #[inline(always)]
    fn host_key(k: &Key<IdKey4>) -> &IdKey4 {
        // Alignment 1 (bytes only): the packed field may be borrowed.
        &k.data
    }
    #[inline(always)]
    fn filter_key(a: &[u8; 4]) -> u64 {
        word_at::<u32, 4>(a, 0) as u64
    }
    #[inline(always)]
    fn first_byte(a: &[u8; 4]) -> u32 {
        a[0] as u32
    }
    const BLOCKS_BASE: u32 = 0;
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
        let (pa, pb) = (pa.to_be_bytes(), pb.to_be_bytes());
        from_words([
            u64::from_ne_bytes([a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]),
            u64::from_ne_bytes([pa[0], pa[1], pb[0], pb[1], proto, 0, 0, 0]),
        ])
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

/// An IPv6 address as two big-endian numbers, for ordering.
#[inline(always)]
fn v6_words(a: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_be(word_at::<u64, 16>(a, 0)),
        u64::from_be(word_at::<u64, 16>(a, 8)),
    )
}

impl Family for V6 {
    /// Straight from the maps: a cache of IPv6 answers (56 bytes a slot)
    /// does not fit the maps' memory budget beside the IPv4 one.
    #[inline(always)]
    fn answer(
        gen: u32,
        flags: u32,
        src: &[u8; 16],
        dst: &[u8; 16],
        proto: u8,
        port: u16,
        sc: SrcCheck,
        check: bool,
    ) -> Result<Result<RuleValue, bool>, u32> {
        if check {
            sc.run::<V6>(src)?;
        }
        Ok(policy::ask::<V6>(gen, flags, src, dst, proto, port))
    }
    #[inline(always)]
    fn answer_for(
        gen: u32,
        flags: u32,
        s: IdentityValue,
        dst: &[u8; 16],
        proto: u8,
        port: u16,
    ) -> Result<RuleValue, bool> {
        if Self::id_key((gen & 1) as u8, dst).is_none() {
            return Err(false);
        }
        policy::from_answer(netpol_ask_dst6(
            policy::gen_flags(gen, flags),
            policy::identity_word(Some(s)),
            policy::proto_port(proto, port),
        ))
    }
    #[inline(always)]
    fn identity(flags: u32, slot: u8, addr: &[u8; 16]) -> Option<IdentityValue> {
        if let Some(answer) = policy::block_identity::<Self>(flags, slot, addr) {
            return answer;
        }
        Self::id_key(slot, addr)?;
        policy::from_identity_word(netpol_identity6(flags_slot(flags, slot)))
    }
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
    fn source_addr(a: &[u8; 16]) -> [u8; 16] {
        *a
    }
    #[inline(always)]
    fn source_key(ifindex: u32, a: &[u8; 16]) -> SourceKey {
        from_words([
            u32::from_ne_bytes(ifindex.to_be_bytes()),
            word_at::<u32, 16>(a, 0),
            word_at::<u32, 16>(a, 4),
            word_at::<u32, 16>(a, 8),
            word_at::<u32, 16>(a, 12),
        ])
    }
    #[inline(always)]
    fn link_local(a: &[u8; 16]) -> bool {
        a[0] == 0xfe && a[1] & 0xc0 == 0x80
    }
    #[inline(always)]
    fn quote(b: &Bounds, off: usize, len: usize) -> Result<Option<Quote<'_, [u8; 16]>>, u32> {
        parse_quote_v6(b, off, len)
    }
    #[inline(always)]
    fn quote_key() -> Option<*mut CtKey6> {
        QUOTE_KEY6.get_ptr_mut(0)
    }

    #[inline(always)]
    fn cache() -> &'static PerCpuArray<FlowCache<CtKey6>> {
        &FLOWCACHE6
    }
    #[inline(always)]
    fn key_word(key: &CtKey6) -> u64 {
        let w = words::<5, CtKey6>(key);
        w[0] ^ w[1].rotate_left(13) ^ w[2].rotate_left(29) ^ w[3].rotate_left(41) ^ w[4]
    }
    #[inline(always)]
    fn key_eq(a: &CtKey6, b: &CtKey6) -> bool {
        words_eq::<5, CtKey6>(a, b)
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
    fn id_key(slot: u8, addr: &[u8; 16]) -> Option<&'static Key<IdKey6>> {
        let k = ID_KEY6.get_ptr_mut(0)?;
        // SAFETY: this CPU's scratch slot; nothing else runs on it meanwhile.
        unsafe {
            (*k).prefix_len = SLOT_BITS + Self::BITS;
            (*k).data = IdKey6 { slot, addr: *addr };
            Some(&*k)
        }
    }
    #[inline(always)]
    fn id_key_written() -> Option<&'static Key<IdKey6>> {
        // SAFETY: this CPU's scratch slot, written by the caller just before.
        ID_KEY6.get_ptr(0).map(|k| unsafe { &*k })
    }
    #[inline(always)]
    fn key_addr(k: &Key<IdKey6>) -> &[u8; 16] {
        &k.data.addr
    }
    #[inline(always)]
    fn host_key(k: &Key<IdKey6>) -> &IdKey6 {
        &k.data
    }
    #[inline(always)]
    fn filter_key(a: &[u8; 16]) -> u64 {
        filter_key6(word_at::<u64, 16>(a, 0), word_at::<u64, 16>(a, 8))
    }
    #[inline(always)]
    fn first_byte(a: &[u8; 16]) -> u32 {
        a[0] as u32
    }
    const BLOCKS_BASE: u32 = 2 * ID_BLOCK_COUNT;
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
        let (pa, pb) = (pa.to_be_bytes(), pb.to_be_bytes());
        from_words([
            word_at::<u64, 16>(a, 0),
            word_at::<u64, 16>(a, 8),
            word_at::<u64, 16>(b, 0),
            word_at::<u64, 16>(b, 8),
            u64::from_ne_bytes([pa[0], pa[1], pb[0], pb[1], proto, 0, 0, 0]),
        ])
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

// The identity lookups and the rule lookup of a question the answer cache
// and the block table could not answer, as global BPF functions. The
// kernel verifies a global function once, on its own, where code inlined
// into a program is walked again for every path that reaches it: inlined at
// their call sites, these lookups were half of each program's walk through
// the verifier, which stops a program at 1,000,000 instructions. The price
// is one BPF-to-BPF call beside the map lookups that answer. A global
// function takes scalars only and cannot read its caller's stack, so the
// caller writes the address into this CPU's identity-key scratch
// (`Family::id_key`), which the lookup reads in place, and packs the rest
// into words. Each is called straight from a program, never from another:
// BPF counts the stack of a chain of calls against one 512-byte limit.

/// `Config` flags and a policy slot as one argument.
#[inline(always)]
fn flags_slot(flags: u32, slot: u8) -> u64 {
    flags as u64 | (slot as u64) << 32
}

/// The identity of the address the caller wrote with `Family::id_key`
/// (`policy::identity_at`), for the family `F`.
#[inline(always)]
fn identity_written<F: Family>(flags_slot: u64) -> u64 {
    let (flags, slot) = (flags_slot as u32, (flags_slot >> 32) as u8);
    let id = F::id_key_written().and_then(|k| policy::identity_at::<F>(flags, slot, k));
    policy::identity_word(id)
}

/// `policy::ask_dst` for the destination the caller wrote with
/// `Family::id_key`: `gen_flags` and `proto_port` as `policy::gen_flags`
/// and `policy::proto_port` build them, the source's identity as
/// `policy::identity_word`; the answer as `policy::to_answer`.
#[inline(always)]
fn ask_dst_written<F: Family>(gen_flags: u64, src_id: u64, proto_port: u32) -> u64 {
    let r = match (policy::from_identity_word(src_id), F::id_key_written()) {
        (Some(s), Some(dst)) => policy::ask_dst::<F>(
            gen_flags as u32,
            (gen_flags >> 32) as u32,
            s,
            dst,
            proto_port as u8,
            (proto_port >> 16) as u16,
        ),
        _ => Err(false),
    };
    policy::to_answer(&r)
}

/// `identity_written` for IPv4; `flags_slot` as `flags_slot` builds it.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netpol_identity4(flags_slot: u64) -> u64 {
    identity_written::<V4>(flags_slot)
}

/// `identity_written` for IPv6.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netpol_identity6(flags_slot: u64) -> u64 {
    identity_written::<V6>(flags_slot)
}

/// `ask_dst_written` for IPv4.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netpol_ask_dst4(gen_flags: u64, src_id: u64, proto_port: u32) -> u64 {
    ask_dst_written::<V4>(gen_flags, src_id, proto_port)
}

/// `ask_dst_written` for IPv6.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netpol_ask_dst6(gen_flags: u64, src_id: u64, proto_port: u32) -> u64 {
    ask_dst_written::<V6>(gen_flags, src_id, proto_port)
}
