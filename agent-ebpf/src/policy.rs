//! Policy lookups: address to identity (host hash, block table, then the LPM
//! trie), then the (identity pair, protocol, port) rule trie, with the
//! identity flags that deny most unwanted traffic before the rule lookup.
use agent_common::{
    filter_bits, id_flag_dst, id_flag_src, proto_class, IdentityValue, RuleKey, RuleValue,
    CFG_F_SLOT_INDEX, HOST_FILTER_WORDS, ID_BLOCK_COUNT, ID_BLOCK_NONE, ID_BLOCK_ONE,
    ID_FLAG_ANY_AUDIT, ID_FLAG_AUDIT, RULE_FLAG_DENY, RULE_PREFIX_FULL,
};
use aya_ebpf::maps::{lpm_trie::Key, PerCpuArray};

use crate::{
    family::Family,
    flowcache::SrcCheck,
    maps::{Answer, ANSWER_SLOTS, HOST_FILTER, ID_BLOCKS, RULES, RULE_KEY},
};

/// Whether an address (filter key `x`) may have a host prefix in `slot`:
/// false only when the slot's (complete) filter rules it out.
#[inline(always)]
fn maybe_host(slot: u8, x: u64) -> bool {
    let (w, m) = filter_bits(x, HOST_FILTER_WORDS);
    match HOST_FILTER.get(slot as u32 * HOST_FILTER_WORDS + w) {
        Some(v) => *v & m == m,
        None => true,
    }
}

/// The identity of the address in `key` (this CPU's identity-key scratch,
/// `Family::id_key`) in policy slot `slot`: its host prefix if it has one (a
/// hash probe, only when the slot has any and its filter does not rule the
/// address out), else its block's answer when the block holds no long
/// prefix, else the longest prefix in the trie, which holds every shorter
/// prefix. The split is exact: a host prefix is the longest possible match,
/// and the trie's answer is the block's for every address of a block that
/// no prefix longer than the block reaches.
#[inline(always)]
pub fn identity_at<F: Family>(flags: u32, slot: u8, key: &Key<F::IdKey>) -> Option<IdentityValue> {
    let addr = F::key_addr(key);
    let indexed = flags & (CFG_F_SLOT_INDEX << slot) != 0;
    if flags & (F::HOSTS_FLAG << slot) != 0 && (!indexed || maybe_host(slot, F::filter_key(addr))) {
        // SAFETY: the value is copied out at once; the agent only replaces
        // entries of the idle slot.
        if let Some(v) = unsafe { F::hosts().get(F::host_key(key)) } {
            return Some(*v);
        }
    }
    if indexed {
        if let Some(answer) = block_answer::<F>(slot, addr) {
            return answer;
        }
    }
    F::ids().get(key).copied()
}

/// What the block table says of `addr` in `slot` without a hash probe or a
/// trie walk: `Some` of its identity (or of none) when the slot's indexes
/// are complete, the filter rules out a host prefix and the address's block
/// holds no long prefix; `None` when only the maps can say. Inlined before
/// the lookup function is called: a flood from the internet's addresses is
/// answered here, without the call.
#[inline(always)]
pub fn block_identity<F: Family>(
    flags: u32,
    slot: u8,
    addr: &F::Addr,
) -> Option<Option<IdentityValue>> {
    if flags & (CFG_F_SLOT_INDEX << slot) == 0
        || (flags & (F::HOSTS_FLAG << slot) != 0 && maybe_host(slot, F::filter_key(addr)))
    {
        return None;
    }
    block_answer::<F>(slot, addr)
}

/// The answer of `addr`'s block in `slot` (whose block table is complete),
/// if the block holds no prefix longer than itself.
#[inline(always)]
fn block_answer<F: Family>(slot: u8, addr: &F::Addr) -> Option<Option<IdentityValue>> {
    let i = F::BLOCKS_BASE + slot as u32 * ID_BLOCK_COUNT + F::first_byte(addr);
    let b = ID_BLOCKS.get(i)?;
    match b.state {
        ID_BLOCK_NONE => Some(None),
        ID_BLOCK_ONE => Some(Some(b.value)),
        _ => None,
    }
}

/// Looks a (src, dst, proto, port) question up in the live policy. A denial
/// says whether either side belongs to an audit-only group (then it passes).
/// `sc` is the source check `src` passed or, with `owed`, still owes
/// (ifindex 0: none, or a question that is not the packet's), which a
/// cached answer then vouches for. An owed check runs between the answer
/// cache's read and the answer, and not at all when the cached answer
/// vouches for it, so a repeated question costs one read of the cache;
/// `Err(drop reason)` when it fails.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn lookup<F: Family>(
    gen: u32,
    flags: u32,
    src: &F::Addr,
    dst: &F::Addr,
    proto: u8,
    port: u16,
    sc: SrcCheck,
    owed: bool,
) -> Result<Result<RuleValue, bool>, u32> {
    F::answer(gen, flags, src, dst, proto, port, sc, owed)
}

/// The IPv4 question as the answer cache holds it: both addresses in one
/// word, then the generation, protocol and port.
#[inline(always)]
pub fn question_v4(gen: u32, src: &[u8; 4], dst: &[u8; 4], proto: u8, port: u16) -> [u64; 2] {
    [
        u32::from_ne_bytes(*src) as u64 | (u32::from_ne_bytes(*dst) as u64) << 32,
        question_meta(gen, proto, port),
    ]
}

/// The slot of a question in its family's answer cache.
#[inline(always)]
fn answer_slot<const N: usize>(q: &[u64; N]) -> u32 {
    let mut x = 0;
    for (i, w) in q.iter().enumerate() {
        x ^= w.rotate_left(i as u32 * 29);
    }
    answer_index(x)
}

/// The answer cache in front of the maps, for two-word questions: `new`
/// answers a repeated question; `fill` stores the answer the maps gave to
/// one it could not (both through `through_cache!`). New flows ask the same few questions over and over (a
/// client opening connection after connection to a service, a flood from
/// one address), and each answer costs two identity lookups and a rule
/// lookup, all kernel calls. A per-CPU, direct-mapped cache keyed by the
/// whole question and the policy generation answers a repeat with an
/// inlined array read; a swap changes the generation, so no answer outlives
/// its policy (the live slot's maps and flags never change while it is
/// live). Two functions rather than one taking the lookup as a closure: a
/// closure is not always inlined, and a BPF-to-BPF call would add its frame
/// to a stack already near its limit.
pub struct Probe {
    slot: Option<*mut Answer<2>>,
}

impl Probe {
    /// Looks question `q` up: on a hit, its answer as a word (`from_answer`)
    /// and whether the slot vouches for its source passing the check `sc`
    /// (the same interface and `SOURCES` generation). Words rather than
    /// `Result`s: every path then meets again on one scalar, which keeps the
    /// verifier's walk of what follows from doubling.
    #[inline(always)]
    pub fn new(
        answers: &PerCpuArray<Answer<2>>,
        q: [u64; 2],
        sc: SrcCheck,
    ) -> (Self, Option<u64>, bool) {
        // The question stays in two registers, compared and stored word by
        // word: the TC program's stack has no room for a copy of it.
        let [q0, q1] = q;
        let slot = answers.get_ptr_mut(answer_slot(&[q0, q1]));
        if let Some(c) = slot {
            // SAFETY: this CPU's slot of a per-CPU array.
            let c = unsafe { &*c };
            if (c.question[0] ^ q0) | (c.question[1] ^ q1) == 0 {
                let vouched = c.src_ifindex == sc.ifindex && c.sources_gen == sc.gen;
                return (Probe { slot }, Some(c.answer), vouched);
            }
        }
        (Probe { slot }, None, false)
    }

    /// Remembers, on a hit, that the question's source passed the check `sc`
    /// (ifindex 0: none), which the slot then vouches for.
    #[inline(always)]
    pub fn vouch(&self, sc: SrcCheck) {
        if let (Some(c), true) = (self.slot, sc.ifindex != 0) {
            // SAFETY: this CPU's slot of a per-CPU array.
            let c = unsafe { &mut *c };
            c.src_ifindex = sc.ifindex;
            c.sources_gen = sc.gen;
        }
    }

    /// Stores `a`, the maps' answer to `q` as a word, in the slot the probe
    /// read.
    #[inline(always)]
    pub fn fill(self, q: [u64; 2], a: u64, sc: SrcCheck) {
        if let Some(c) = self.slot {
            // SAFETY: this CPU's slot of a per-CPU array; whatever ran since
            // the probe (another question's fill) is done with it.
            let c = unsafe { &mut *c };
            c.question[0] = q[0];
            c.question[1] = q[1];
            c.answer = a;
            c.src_ifindex = sc.ifindex;
            c.sources_gen = sc.gen;
        }
    }
}

/// The answer to question `q` from the answer cache `answers`, or else
/// `$ask` (an answer as a word, evaluated only on a miss), stored there,
/// with the source check `sc` remembered in the slot. `$check` runs the
/// check the source owes (`Err(drop reason)`) unless the slot vouches for
/// it; the macro's value is `Ok(answer)` or that `Err`. A macro rather than
/// a function taking the lookup as a closure, for the reason `Probe` gives.
macro_rules! through_cache {
    ($answers:expr, $q:expr, $sc:expr, $check:expr, $ask:expr) => {{
        let (q, sc) = ($q, $sc);
        let (probe, hit, vouched) = $crate::policy::Probe::new($answers, q, sc);
        let checked: Result<(), u32> = if vouched { Ok(()) } else { $check };
        match checked {
            Err(r) => Err(r),
            Ok(()) => {
                let a = match hit {
                    Some(a) => {
                        if !vouched {
                            probe.vouch(sc);
                        }
                        a
                    }
                    None => {
                        let a: u64 = $ask;
                        probe.fill(q, a, sc);
                        a
                    }
                };
                Ok($crate::policy::from_answer(a))
            }
        }
    }};
}
pub(crate) use through_cache;

/// Marks an identity question (`question_id_v4`) apart from the address
/// questions, whose top byte is 1.
const ID_QUESTION: u64 = 1 << 57;

/// The IPv4 question a source identity asks (`ask_dst`): the identity and
/// the destination in one word, then the generation, protocol and port,
/// marked apart from the address questions of `question_v4`. A flood from
/// random sources asks a new address question with every packet, but they
/// all resolve to a few identities (the world's, mostly): this question
/// then spares each packet the destination's identity and the rule lookup.
#[inline(always)]
pub fn question_id_v4(gen: u32, src_id: u32, dst: &[u8; 4], proto: u8, port: u16) -> [u64; 2] {
    [
        src_id as u64 | (u32::from_ne_bytes(*dst) as u64) << 32,
        question_meta(gen, proto, port) | ID_QUESTION,
    ]
}

/// Fibonacci hashing onto the answer cache's slots.
#[inline(always)]
fn answer_index(x: u64) -> u32 {
    const SHIFT: u32 = 64 - ANSWER_SLOTS.trailing_zeros();
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> SHIFT) as u32 & (ANSWER_SLOTS - 1)
}

/// The non-address half of a cached question. The top byte is never zero, so
/// a slot never written matches no question.
#[inline(always)]
fn question_meta(gen: u32, proto: u8, port: u16) -> u64 {
    (1 << 56) | (proto as u64) << 48 | (port as u64) << 32 | gen as u64
}

/// The generation and the `Config` flags of a question, as one argument of
/// a global function (`family::netpol_ask_dst4`).
#[inline(always)]
pub fn gen_flags(gen: u32, flags: u32) -> u64 {
    gen as u64 | (flags as u64) << 32
}

/// The protocol and port of a question, as one argument of a global
/// function.
#[inline(always)]
pub fn proto_port(proto: u8, port: u16) -> u32 {
    proto as u32 | (port as u32) << 16
}

/// No identity, as `identity_word` returns it: bit 31 of an identity's
/// flags (`ID_FLAG_*`) is never set.
const NO_IDENTITY: u64 = 1 << 63;

/// An identity lookup's result as one word, as a global function returns it.
#[inline(always)]
pub fn identity_word(v: Option<IdentityValue>) -> u64 {
    match v {
        Some(v) => v.id as u64 | (v.flags as u64) << 32,
        None => NO_IDENTITY,
    }
}

#[inline(always)]
pub fn from_identity_word(w: u64) -> Option<IdentityValue> {
    (w & NO_IDENTITY == 0).then_some(IdentityValue {
        id: w as u32,
        flags: (w >> 32) as u32,
    })
}

/// An answer as one word: an allowing rule's id (never 0) and flags, or 0
/// and whether the denial is audited.
#[inline(always)]
pub fn to_answer(r: &Result<RuleValue, bool>) -> u64 {
    match r {
        Ok(v) => v.rule_id as u64 | (v.flags as u64) << 32,
        Err(audit) => (*audit as u64) << 32,
    }
}

#[inline(always)]
pub fn from_answer(a: u64) -> Result<RuleValue, bool> {
    let rule_id = a as u32;
    if rule_id != 0 {
        Ok(RuleValue {
            rule_id,
            flags: (a >> 32) as u32,
        })
    } else {
        Err(a >> 32 != 0)
    }
}

/// The policy's answer, from the identity and rule maps.
#[inline(always)]
pub fn ask<F: Family>(
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
    let s = F::identity(flags, slot, src).ok_or(false)?;
    // Identities with no rule for this protocol are denied without further lookups:
    // a SYN flood from addresses that may not talk TCP costs one identity lookup
    // (unless some group is audit-only: then the destination's flag matters).
    if s.flags & id_flag_src(class) == 0 {
        if s.flags & ID_FLAG_ANY_AUDIT == 0 {
            return Err(false);
        }
        let d = F::identity(flags, slot, dst);
        let dflags = d.map_or(0, |d| d.flags);
        return Err((s.flags | dflags) & ID_FLAG_AUDIT != 0);
    }
    F::answer_for(gen, flags, s, dst, proto, port)
}

/// The rest of `ask`, for a source of identity `s` that may send this
/// protocol: the destination's identity (its address in this CPU's
/// identity-key scratch, `dst`), then the rule. Inlined only into
/// `family::netpol_ask_dst4`/`6`, with the identity lookup it makes.
#[inline(always)]
pub fn ask_dst<F: Family>(
    gen: u32,
    flags: u32,
    s: IdentityValue,
    dst: &Key<F::IdKey>,
    proto: u8,
    port: u16,
) -> Result<RuleValue, bool> {
    let slot = (gen & 1) as u8;
    let class = proto_class(proto);
    let Some(d) = identity_at::<F>(flags, slot, dst) else {
        return Err(s.flags & ID_FLAG_AUDIT != 0);
    };
    let audit = (s.flags | d.flags) & ID_FLAG_AUDIT != 0;
    if d.flags & id_flag_dst(class) == 0 {
        return Err(audit);
    }
    let Some(k) = RULE_KEY.get_ptr_mut(0) else {
        return Err(audit);
    };
    // SAFETY: this CPU's scratch slot; nothing else runs on it meanwhile.
    let k = unsafe {
        (*k).prefix_len = RULE_PREFIX_FULL;
        (*k).data = RuleKey::new(s.id, d.id, proto, port).in_slot(slot);
        &*k
    };
    // A deny entry is a refusal the compiler carved out of a broader allow:
    // it ends where no entry does, so the verifier sees one denial path.
    match RULES.get(k) {
        Some(v) if v.flags & RULE_FLAG_DENY == 0 => Ok(*v),
        _ => Err(audit),
    }
}
