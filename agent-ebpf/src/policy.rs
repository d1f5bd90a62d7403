//! Policy lookups: address to identity (host hash, then the LPM trie), then
//! the (identity pair, protocol, port) rule trie, with the identity flags that
//! deny most unwanted traffic before the rule lookup.
use agent_common::{
    id_flag_dst, id_flag_src, proto_class, IdentityValue, RuleKey, RuleValue, ID_FLAG_ANY_AUDIT,
    ID_FLAG_AUDIT, RULE_FLAG_DENY, RULE_PREFIX_FULL, SLOT_BITS,
};
use aya_ebpf::maps::lpm_trie::Key;

use crate::{family::Family, maps::RULES};

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
pub fn lookup<F: Family>(
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
    let key = RuleKey::new(s.id, d.id, proto, port).in_slot(slot);
    // A deny entry is a refusal the compiler carved out of a broader allow:
    // it ends where no entry does, so the verifier sees one denial path.
    match RULES.get(Key::new(RULE_PREFIX_FULL, key)) {
        Some(v) if v.flags & RULE_FLAG_DENY == 0 => Ok(*v),
        _ => Err(audit),
    }
}
