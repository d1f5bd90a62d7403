//! Map values that describe an identity, a rule or a flow: what a lookup in
//! the identity and rule tries, conntrack, the flow cache, the fragment map
//! and the denied-flow maps returns, and the flag bits inside them.

use crate::{
    Config, Counter, CtKey4, CtKey6, FLOW_COUNTER_SLOTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
};

/// Protocol classes used by the identity fast-path flags.
pub const PROTO_CLASS_TCP: u32 = 0;
pub const PROTO_CLASS_UDP: u32 = 1;
pub const PROTO_CLASS_ICMP: u32 = 2;
pub const PROTO_CLASS_ICMPV6: u32 = 3;
pub const PROTO_CLASS_SCTP: u32 = 4;
pub const PROTO_CLASS_OTHER: u32 = 5;
pub const PROTO_CLASSES: u32 = 6;

#[inline(always)]
pub const fn proto_class(proto: u8) -> u32 {
    match proto {
        IPPROTO_TCP => PROTO_CLASS_TCP,
        IPPROTO_UDP => PROTO_CLASS_UDP,
        IPPROTO_ICMP => PROTO_CLASS_ICMP,
        IPPROTO_ICMPV6 => PROTO_CLASS_ICMPV6,
        IPPROTO_SCTP => PROTO_CLASS_SCTP,
        _ => PROTO_CLASS_OTHER,
    }
}

/// `IdentityValue::flags` bit: this identity is the source of at least one rule
/// entry for protocol class `c`.
#[inline(always)]
pub const fn id_flag_src(class: u32) -> u32 {
    1 << class
}

/// `IdentityValue::flags` bit: this identity is the destination of at least one
/// rule entry for protocol class `c`.
#[inline(always)]
pub const fn id_flag_dst(class: u32) -> u32 {
    1 << (8 + class)
}

/// `IdentityValue::flags` bit: the identity belongs to an audit-only group, so
/// a packet from or to it that the policy denies passes and counts as audit.
pub const ID_FLAG_AUDIT: u32 = 1 << 16;
/// `IdentityValue::flags` bit set on every identity when any group is audit-only:
/// only then does a fast-path deny look the destination up to see its flag.
pub const ID_FLAG_ANY_AUDIT: u32 = 1 << 17;

/// Value of the identity tries: the identity standing for the set of groups that
/// contain the matched prefix, plus flags that let the datapath deny without the
/// rule lookup when an identity has no rule at all for the packet's protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityValue {
    pub id: u32,
    pub flags: u32,
}

/// What a policy slot's identity trie says about every address whose first
/// byte is one value (a block: a /8 of IPv4, one of 00::/8 to ff00::/8 of
/// IPv6), `ID_BLOCKS` holding one per family, slot and block. Most blocks
/// hold no prefix longer than the block: all their addresses then share one
/// answer, which the datapath reads instead of walking the trie (where a
/// flood's random sources land).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdBlock {
    /// The identity of every address of the block (`ID_BLOCK_ONE`).
    pub value: IdentityValue,
    /// `ID_BLOCK_*`.
    pub state: u32,
    pub _pad: u32,
}

/// `IdBlock::state`: the block holds a longer prefix; ask the trie.
pub const ID_BLOCK_TRIE: u32 = 0;
/// `IdBlock::state`: no prefix covers any address of the block.
pub const ID_BLOCK_NONE: u32 = 1;
/// `IdBlock::state`: every address of the block has `IdBlock::value`.
pub const ID_BLOCK_ONE: u32 = 2;
/// Blocks per family and slot; `ID_BLOCKS` is indexed
/// `(family * 2 + slot) * ID_BLOCK_COUNT + first byte`, IPv4 being family 0.
pub const ID_BLOCK_COUNT: u32 = 256;

/// `RuleValue::flags` bit: the entry is allowed only by an audit-only rule.
/// The datapath passes it like any rule; readers report its traffic with
/// verdict `audit` (the rule id tells them, see `RuleName::flags`).
pub const RULE_FLAG_AUDIT: u32 = 1;
/// `RuleValue::flags` bit: the entry refuses what it matches. The compiler
/// writes such entries where a broad allow must not reach a more specific
/// key (encapsulation to the node from outside `nodes`); being more specific,
/// the LPM lookup returns them instead of the allow, and the datapath denies.
pub const RULE_FLAG_DENY: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    /// Index of the rule in the compiled policy (0 is never a rule).
    pub rule_id: u32,
    pub flags: u32,
}

/// The flow was opened by endpoint B (the larger one); otherwise by A.
pub const CT_F_ORIG_B: u32 = 1 << 0;
/// TCP: SYN seen from the originator / SYN-ACK seen from the responder.
pub const CT_F_SYN: u32 = 1 << 1;
pub const CT_F_SYNACK: u32 = 1 << 2;
/// TCP: FIN seen from the originator / from the responder.
pub const CT_F_FIN_ORIG: u32 = 1 << 3;
pub const CT_F_FIN_REPLY: u32 = 1 << 4;
/// TCP: RST seen.
pub const CT_F_RST: u32 = 1 << 5;
/// A packet was seen in the reply direction.
pub const CT_F_REPLY_SEEN: u32 = 1 << 6;

/// Idle timeout, in jiffies, of a conntrack entry in its current state. Shared so the
/// datapath and the userspace sweeper can never disagree.
#[inline(always)]
pub fn ct_timeout(cfg: &Config, proto: u8, flags: u32) -> u64 {
    match proto {
        IPPROTO_TCP => {
            if flags & CT_F_RST != 0
                || flags & (CT_F_FIN_ORIG | CT_F_FIN_REPLY) == CT_F_FIN_ORIG | CT_F_FIN_REPLY
            {
                cfg.tcp_close_timeout
            } else if flags & (CT_F_SYNACK | CT_F_REPLY_SEEN) != 0 {
                cfg.tcp_established_timeout
            } else {
                cfg.tcp_syn_timeout
            }
        }
        IPPROTO_UDP | IPPROTO_SCTP => cfg.udp_timeout,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => cfg.icmp_timeout,
        _ => cfg.other_timeout,
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// In jiffies.
    pub created: u64,
    pub last_seen: u64,
    /// Policy generation this flow was last checked against.
    pub policy_gen: u32,
    /// Rule that allowed the flow.
    pub rule_id: u32,
    /// `CT_F_*`.
    pub flags: u32,
    /// Destination port (or ICMP `type << 8 | code`) of the opening packet, in
    /// host order, so a re-check after a policy change asks the same question.
    pub orig_port: u16,
    pub _pad: u16,
    /// Per-flow packets and bytes, indexed by `flow_counter_index`. Packets
    /// answered by the flow cache reach these when the cache slot is flushed
    /// (see `FlowCache::counters`).
    pub counters: [Counter; FLOW_COUNTER_SLOTS],
}

/// One slot of the per-CPU flow cache in front of conntrack: a two-way flow
/// seen in conntrack recently (within `Config::refresh_interval`) under the live
/// policy generation. A hit costs an inlined array read instead of a hash-map
/// call; every miss, expiry or policy change falls back to conntrack.
/// `K` is a conntrack key (8-aligned, a multiple of 8 bytes), so the slot has
/// no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCache<K> {
    pub key: K,
    pub valid_until: u64,
    pub policy_gen: u32,
    /// The rule the conntrack entry carries, for the per-rule counters.
    pub rule_id: u32,
    /// The interface through which endpoint A's (`[0]`) and B's (`[1]`)
    /// packets passed the source check under `sources_gen`; 0 for none (and
    /// for an ifindex past `u16`, never remembered: the slot stays small). A
    /// hit entering through that interface skips the check (a `SOURCES`
    /// hash call), one entering through any other interface still pays it.
    pub src_ifindex: [u16; 2],
    /// `Config::sources_gen` the two facts above were checked under.
    pub sources_gen: u32,
    /// Packets and bytes of `key` answered from this slot and not yet added
    /// to its conntrack entry (`flow_counter_index`). They are flushed when
    /// the flow next goes to conntrack (about once a second, FIN/RST) or when
    /// another flow takes the slot; readers add pending deltas themselves.
    pub counters: [Counter; FLOW_COUNTER_SLOTS],
}

/// `FlowCache::policy_gen` of a slot that holds a denied flow's pending
/// counts instead of an allowed flow: `rule_id` is 0 (no allowing rule is),
/// `counters` the packets not yet added to the flow's `DENIED4`/`DENIED6`
/// record, `valid_until` the jiffies of its last packet (never in the
/// future, so no lookup answers from the slot), and `sources_gen` the low
/// 32 bits of the jiffies when the slot last met the record: a packet a
/// `Config::refresh_interval` later goes to the record again (which keeps
/// it fresh in the LRU), taking the pending counts along. Readers add these
/// counts to the denied record of the same key, and take its last packet as
/// its last seen when later.
pub const FLOW_CACHE_DENIED: u32 = u32::MAX;

/// Whether a flow-cache slot holds a denied flow's pending counts.
#[inline(always)]
pub fn is_denied_slot<K>(c: &FlowCache<K>) -> bool {
    c.rule_id == 0 && c.policy_gen == FLOW_CACHE_DENIED
}

pub type FlowCache4 = FlowCache<CtKey4>;
pub type FlowCache6 = FlowCache<CtKey6>;

/// Slots per CPU in each flow cache (a power of two). Each CPU sees only
/// its share of the flows, and the caches cost this many slots per possible
/// CPU (about 232 bytes each for both families).
pub const FLOW_CACHE_SLOTS: u32 = 1024;

/// Recorded when a first fragment passes: later fragments of the same datagram
/// pass while the entry is fresh.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    /// In jiffies.
    pub seen: u64,
}

/// A denied (or audited would-deny) flow in the bounded `DENIED4`/`DENIED6`
/// LRU maps, keyed by the normalised conntrack key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeniedValue {
    /// In jiffies.
    pub first_seen: u64,
    pub last_seen: u64,
    /// Reason of the first packet (`reason::*`).
    pub reason: u32,
    /// `DENIED_F_*`.
    pub flags: u32,
    /// `flow_counter_index`.
    pub counters: [Counter; FLOW_COUNTER_SLOTS],
}

/// `DeniedValue::flags`: the first packet came from endpoint B.
pub const DENIED_F_ORIG_B: u32 = 1 << 0;
/// `DeniedValue::flags`: the flow passed because of audit (mode or group).
pub const DENIED_F_AUDIT: u32 = 1 << 1;
