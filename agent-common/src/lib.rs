//! Map keys and values shared by the eBPF programs and the userspace agent.
//!
//! Every type is `#[repr(C)]` with explicit padding fields, so both sides and the
//! verifier agree on every byte. Keys that the kernel compares byte-wise (LPM trie
//! keys, hash keys) hold their multi-byte fields as big-endian byte arrays.
#![no_std]

/// Map names, shared so userspace never spells one differently.
pub mod map_names {
    pub const CONFIG: &str = "CONFIG";
    pub const IDS4: &str = "IDS4";
    pub const IDS6: &str = "IDS6";
    pub const RULES: &str = "RULES";
    pub const CT4: &str = "CT4";
    pub const CT6: &str = "CT6";
    pub const FRAG4: &str = "FRAG4";
    pub const FRAG6: &str = "FRAG6";
    pub const COUNTERS: &str = "COUNTERS";
    pub const CLOCK: &str = "CLOCK";
    pub const FLOWCACHE4: &str = "FLOWCACHE4";
    pub const FLOWCACHE6: &str = "FLOWCACHE6";
    pub const DENIED4: &str = "DENIED4";
    pub const DENIED6: &str = "DENIED6";
    pub const RULE_COUNTERS: &str = "RULE_COUNTERS";
    pub const STATS: &str = "STATS";
    pub const EVENTS: &str = "EVENTS";
    pub const BUCKETS: &str = "BUCKETS";
    pub const RULE_NAMES: &str = "RULE_NAMES";
    pub const HOSTS4: &str = "HOSTS4";
    pub const HOSTS6: &str = "HOSTS6";
}

/// Version of the pinned map layout: the shared types below and what their
/// fields mean. Bump it whenever either changes, even when the sizes do not:
/// an agent never adopts maps pinned under another version (it builds fresh
/// ones beside them), so old state is never misread.
pub const LAYOUT_VERSION: u32 = 2;

/// Program names (the Rust function names in agent-ebpf).
pub mod prog_names {
    pub const XDP: &str = "netpol_xdp";
    pub const TC: &str = "netpol_tc";
    /// Run (never attached) by the agent to read the kernel's jiffies.
    pub const CLOCK: &str = "netpol_clock";
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

pub const MODE_ENFORCE: u32 = 0;
pub const MODE_AUDIT: u32 = 1;

/// `Config::flags`: keep per-flow packet and byte counters (conntrack entries,
/// flow-cache deltas, the denied-flow maps). Aggregates are always kept.
pub const CFG_F_FLOW_COUNTERS: u32 = 1 << 0;
/// `Config::flags`: also send an event for every new allowed flow (denied new
/// flows always send one, within the rate limit).
pub const CFG_F_EVENTS_ALLOWED: u32 = 1 << 1;
/// `Config::flags`: the policy in slot 0 has exact IPv4 host prefixes (/32),
/// held in `HOSTS4` rather than the trie; `<< 1` is the same for slot 1. The
/// datapath probes the hash only when the live slot's bit is set. A slot's
/// bit is written (in its own config update) before the swap that makes the
/// slot live, so a reader that sees the new slot also sees its bit.
pub const CFG_F_HOSTS4: u32 = 1 << 2;
/// As `CFG_F_HOSTS4`, for IPv6 host prefixes (/128) in `HOSTS6`.
pub const CFG_F_HOSTS6: u32 = 1 << 4;
/// Every per-slot host bit.
pub const CFG_F_HOSTS_ALL: u32 = (0b11 * CFG_F_HOSTS4) | (0b11 * CFG_F_HOSTS6);

/// Single-entry array read once per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `MODE_ENFORCE` or `MODE_AUDIT`.
    pub mode: u32,
    /// Which of the two policies held in the identity and rule tries is live:
    /// every trie key starts with its slot byte. Always `policy_gen & 1`: the
    /// datapath derives it from the generation, so one read gives both.
    pub active_slot: u32,
    /// Bumped on every policy swap; conntrack entries checked under an older
    /// generation are re-checked once against the live policy.
    pub policy_gen: u32,
    /// `CFG_F_*`.
    pub flags: u32,
    /// Conntrack idle timeouts, in jiffies: the datapath reads the clock with
    /// bpf_jiffies64(), which the verifier inlines into one load, where a
    /// ktime helper call costs as much as a quarter of the established path.
    pub tcp_syn_timeout: u64,
    pub tcp_established_timeout: u64,
    pub tcp_close_timeout: u64,
    pub udp_timeout: u64,
    pub icmp_timeout: u64,
    pub other_timeout: u64,
    /// How long a first fragment's verdict applies to later fragments.
    pub frag_timeout: u64,
    /// A busy flow's last_seen is rewritten at most this often (one second), so
    /// it does not bounce its cache line between CPUs on every packet.
    pub refresh_interval: u64,
    /// Verdict events each CPU may send per second (token bucket refill), and
    /// the bucket's depth. 0 turns events off.
    pub event_rate: u64,
    pub event_burst: u64,
    /// CONFIG_HZ as measured by the agent, to turn jiffies into seconds.
    pub hz: u64,
    /// New denied-flow records each CPU may create per second, and the
    /// bucket's depth (0: no limit). Under a flood of new flows every record
    /// would evict another within milliseconds, at the price of a cold lookup,
    /// an LRU insert and an eviction per packet; while the bucket is empty,
    /// denied packets are counted in the aggregates only.
    pub record_rate: u64,
    pub record_burst: u64,
}

// ---------------------------------------------------------------------------
// Identities (address -> identity LPM tries)
// ---------------------------------------------------------------------------

/// Protocol classes used by the identity fast-path flags.
pub const PROTO_CLASS_TCP: u32 = 0;
pub const PROTO_CLASS_UDP: u32 = 1;
pub const PROTO_CLASS_ICMP: u32 = 2;
pub const PROTO_CLASS_ICMPV6: u32 = 3;
pub const PROTO_CLASS_SCTP: u32 = 4;
pub const PROTO_CLASS_OTHER: u32 = 5;
pub const PROTO_CLASSES: u32 = 6;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

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

/// Identity trie key: the policy slot, then the address. The slot is the
/// first byte so one lookup sees one policy; prefix lengths count its 8 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IdKey4 {
    pub slot: u8,
    pub addr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IdKey6 {
    pub slot: u8,
    pub addr: [u8; 16],
}

/// Bits of an identity or rule trie key taken by the slot byte.
pub const SLOT_BITS: u32 = 8;

/// Value of the identity tries: the identity standing for the set of groups that
/// contain the matched prefix, plus flags that let the datapath deny without the
/// rule lookup when an identity has no rule at all for the packet's protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityValue {
    pub id: u32,
    pub flags: u32,
}

// ---------------------------------------------------------------------------
// Rules (identity pair, protocol, port -> verdict)
// ---------------------------------------------------------------------------

/// Data part of the rule LPM trie key. Compared byte by byte from the front, so
/// the fields are big-endian and the maskable port comes last. The policy slot
/// leads, as in the identity tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    pub slot: u8,
    pub src_id: [u8; 4],
    pub dst_id: [u8; 4],
    pub proto: u8,
    /// Destination port for TCP/UDP/SCTP; `type << 8 | code` for ICMP/ICMPv6.
    pub port: [u8; 2],
}

/// Prefix length covering slot and both identities (any protocol, any port).
pub const RULE_PREFIX_IDS: u32 = SLOT_BITS + 64;
/// Prefix length covering slot, identities and protocol (any port).
pub const RULE_PREFIX_PROTO: u32 = SLOT_BITS + 72;
/// Prefix length of a fully specified key.
pub const RULE_PREFIX_FULL: u32 = SLOT_BITS + 88;

impl RuleKey {
    /// A key in slot 0; the agent sets the slot when it writes the map.
    #[inline(always)]
    pub const fn new(src_id: u32, dst_id: u32, proto: u8, port: u16) -> Self {
        Self {
            slot: 0,
            src_id: src_id.to_be_bytes(),
            dst_id: dst_id.to_be_bytes(),
            proto,
            port: port.to_be_bytes(),
        }
    }

    #[inline(always)]
    pub const fn in_slot(mut self, slot: u8) -> Self {
        self.slot = slot;
        self
    }

    /// The key as the kernel compares it.
    pub const fn to_bytes(&self) -> [u8; 12] {
        [
            self.slot,
            self.src_id[0],
            self.src_id[1],
            self.src_id[2],
            self.src_id[3],
            self.dst_id[0],
            self.dst_id[1],
            self.dst_id[2],
            self.dst_id[3],
            self.proto,
            self.port[0],
            self.port[1],
        ]
    }
}

/// `RuleValue::flags` bit: the entry is allowed only by an audit-only rule.
/// The datapath passes it like any rule; readers report its traffic with
/// verdict `audit` (the rule id tells them, see `RuleName::flags`).
pub const RULE_FLAG_AUDIT: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    /// Index of the rule in the compiled policy (0 is never a rule).
    pub rule_id: u32,
    pub flags: u32,
}

// ---------------------------------------------------------------------------
// Connection tracking
// ---------------------------------------------------------------------------

/// Conntrack key, normalised so both directions of a flow hit the same entry:
/// (`addr_a`, `port_a`) is the smaller endpoint compared as bytes. Aligned to 8
/// (its size is a multiple of 8, so no padding) so the datapath can compare and
/// hash it as whole words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey4 {
    pub addr_a: [u8; 4],
    pub addr_b: [u8; 4],
    pub port_a: [u8; 2],
    pub port_b: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey6 {
    pub addr_a: [u8; 16],
    pub addr_b: [u8; 16],
    pub port_a: [u8; 2],
    pub port_b: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
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
    pub counters: [Counter; 4],
}

/// Per-flow counter slot: hook direction (`DIR_*`) and whether the packet went
/// from endpoint B to endpoint A of the normalised key.
#[inline(always)]
pub const fn flow_counter_index(dir: u32, from_b: bool) -> usize {
    (dir as usize & 1) * 2 + from_b as usize
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
    /// Packets and bytes of `key` answered from this slot and not yet added
    /// to its conntrack entry (`flow_counter_index`). They are flushed when
    /// the flow next goes to conntrack (about once a second, FIN/RST) or when
    /// another flow takes the slot; readers add pending deltas themselves.
    pub counters: [Counter; 4],
}

pub type FlowCache4 = FlowCache<CtKey4>;
pub type FlowCache6 = FlowCache<CtKey6>;

/// Slots per CPU in each flow cache (a power of two).
pub const FLOW_CACHE_SLOTS: u32 = 4096;

// ---------------------------------------------------------------------------
// Fragments
// ---------------------------------------------------------------------------

/// Identifies the fragments of one IPv4 datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub id: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: [u8; 4],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Recorded when a first fragment passes: later fragments of the same datagram
/// pass while the entry is fresh.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    /// In jiffies.
    pub seen: u64,
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
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
    pub counters: [Counter; 4],
}

/// `DeniedValue::flags`: the first packet came from endpoint B.
pub const DENIED_F_ORIG_B: u32 = 1 << 0;
/// `DeniedValue::flags`: the flow passed because of audit (mode or group).
pub const DENIED_F_AUDIT: u32 = 1 << 1;

/// Per-CPU `STATS` slots: map fill bookkeeping and event accounting.
pub mod stat {
    /// Conntrack entries created (not counting a SYN replacing a live entry).
    pub const CT4_CREATED: u32 = 0;
    pub const CT6_CREATED: u32 = 1;
    /// Conntrack entries the datapath deleted (revoked flows).
    pub const CT_REMOVED: u32 = 2;
    /// Denied-flow entries created (the maps are only ever evicted from).
    pub const DENIED4_CREATED: u32 = 3;
    pub const DENIED6_CREATED: u32 = 4;
    /// Verdict events written to the ring buffer.
    pub const EVENTS_SENT: u32 = 5;
    /// Events the per-CPU token bucket refused.
    pub const EVENTS_RATE_LIMITED: u32 = 6;
    /// Events lost because the ring buffer was full.
    pub const EVENTS_RING_FULL: u32 = 7;
    /// Conntrack entries the agent's sweeper deleted (written by the agent).
    pub const CT_GC_REMOVED: u32 = 8;
    /// Denied packets counted in the aggregates only, because new denied
    /// flows were arriving faster than `record_rate` (per-flow denied
    /// counting pauses while that lasts).
    pub const DENIED_NOT_RECORDED: u32 = 9;
    pub const COUNT: u32 = 10;
}

/// `BUCKETS` slot limiting verdict events.
pub const BUCKET_EVENTS: u32 = 0;
/// `BUCKETS` slot limiting new denied-flow records.
pub const BUCKET_RECORDS: u32 = 1;

/// Per-CPU token bucket limiting verdict events or denied-flow records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens scaled by `hz`, so a refill of `elapsed_jiffies * rate` is exact.
    pub tokens: u64,
    /// Jiffies of the last refill.
    pub last: u64,
}

pub const EVENT_VERDICT_PASS: u8 = 0;
pub const EVENT_VERDICT_DROP: u8 = 1;
pub const EVENT_VERDICT_AUDIT: u8 = 2;

/// One new flow's verdict, sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictEvent {
    /// IPv4 addresses use the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host order; ICMP: `type << 8 | code` in `dport`.
    pub sport: u16,
    pub dport: u16,
    pub rule_id: u32,
    pub reason: u32,
    /// Frame length of the packet.
    pub len: u32,
    /// 4 or 6.
    pub family: u8,
    pub proto: u8,
    /// `DIR_*`.
    pub dir: u8,
    /// `EVENT_VERDICT_*`.
    pub verdict: u8,
    pub _pad: u32,
}

/// Bytes of a rule name in `RULE_NAMES` (longer names are cut, NUL-padded).
pub const RULE_NAME_LEN: usize = 120;

/// A rule's name and flags, as the agent publishes them for readers of the
/// pinned maps (the datapath never reads this).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleName {
    /// `RULE_FLAG_AUDIT` for an audit-only rule.
    pub flags: u32,
    pub _pad: u32,
    pub name: [u8; RULE_NAME_LEN],
}

impl Default for RuleName {
    fn default() -> Self {
        Self {
            flags: 0,
            _pad: 0,
            name: [0; RULE_NAME_LEN],
        }
    }
}

/// Per-rule counters: per rule id, `RULE_COUNTER_STRIDE` slots of (direction,
/// rule reason).
pub const RULE_COUNTER_STRIDE: u32 = 8;
/// Reasons a rule is credited with, in `rule_counter_index` order.
pub const RULE_REASONS: [u32; 3] = [
    reason::PASS_ESTABLISHED,
    reason::PASS_POLICY,
    reason::PASS_RECHECKED,
];

/// Slot of a pass by `rule_id`; `None` for a reason no rule is credited with.
#[inline(always)]
pub const fn rule_counter_index(rule_id: u32, dir: u32, why: u32) -> Option<u32> {
    let kind = match why {
        reason::PASS_ESTABLISHED => 0,
        reason::PASS_POLICY => 1,
        reason::PASS_RECHECKED => 2,
        _ => return None,
    };
    Some(rule_id * RULE_COUNTER_STRIDE + (dir & 1) * 4 + kind)
}

/// Why a packet got its verdict. Values below `FIRST_DROP_REASON` pass.
pub mod reason {
    /// Matched a live conntrack entry.
    pub const PASS_ESTABLISHED: u32 = 0;
    /// Allowed by a rule; a conntrack entry was created.
    pub const PASS_POLICY: u32 = 1;
    /// ARP and other non-IP frames.
    pub const PASS_NON_IP: u32 = 2;
    /// IPv6 neighbour discovery (ICMPv6 133-137) and multicast listener
    /// discovery (130-132, 143), which neighbour discovery relies on.
    pub const PASS_NEIGHBOUR_DISCOVERY: u32 = 3;
    /// A later fragment of a datagram whose first fragment passed.
    pub const PASS_FRAGMENT: u32 = 4;
    /// A conntrack entry from an older policy was re-checked and still allowed.
    pub const PASS_RECHECKED: u32 = 5;

    pub const FIRST_DROP_REASON: u32 = 8;
    /// No rule allows the packet (default deny).
    pub const DROP_POLICY: u32 = 8;
    /// An established flow whose rule was removed by a reload.
    pub const DROP_REVOKED: u32 = 9;
    /// A later fragment with no passed first fragment.
    pub const DROP_FRAGMENT: u32 = 10;
    /// Truncated Ethernet or VLAN header, or too many VLAN tags.
    pub const DROP_MALFORMED_L2: u32 = 11;
    /// Truncated IPv4 header, IHL below 5, bad version or total length.
    pub const DROP_MALFORMED_IPV4: u32 = 12;
    /// Truncated IPv6 header, bad version, or broken/too long extension chain.
    pub const DROP_MALFORMED_IPV6: u32 = 13;
    /// Truncated TCP/UDP/SCTP/ICMP header or bad TCP data offset.
    pub const DROP_MALFORMED_L4: u32 = 14;

    pub const COUNT: u32 = 15;

    pub const NAMES: [&str; COUNT as usize] = [
        "established",
        "policy",
        "non-ip",
        "neighbour-discovery",
        "fragment",
        "rechecked",
        "unused-6",
        "unused-7",
        "policy-denied",
        "revoked",
        "fragment-untracked",
        "malformed-l2",
        "malformed-ipv4",
        "malformed-ipv6",
        "malformed-l4",
    ];
}

pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

/// Counters are indexed by direction, whether the drop was only audited, and reason.
pub const COUNTER_SLOTS: u32 = 2 * 2 * reason::COUNT;

#[inline(always)]
pub const fn counter_index(dir: u32, audited: bool, reason: u32) -> u32 {
    (dir * 2 + audited as u32) * reason::COUNT + reason
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), Copy, and have no implicit padding.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for IdentityValue {}
    unsafe impl aya::Pod for IdKey4 {}
    unsafe impl aya::Pod for IdKey6 {}
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for RuleValue {}
    unsafe impl aya::Pod for CtKey4 {}
    unsafe impl aya::Pod for CtKey6 {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for FragKey4 {}
    unsafe impl aya::Pod for FragKey6 {}
    unsafe impl aya::Pod for FragValue {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for FlowCache4 {}
    unsafe impl aya::Pod for FlowCache6 {}
    unsafe impl aya::Pod for DeniedValue {}
    unsafe impl aya::Pod for TokenBucket {}
    unsafe impl aya::Pod for VerdictEvent {}
    unsafe impl aya::Pod for RuleName {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // Sizes equal the sum of the fields: no implicit padding anywhere.
    #[test]
    fn no_implicit_padding() {
        assert_eq!(size_of::<Config>(), 4 * 4 + 8 * 13);
        assert_eq!(size_of::<IdentityValue>(), 8);
        assert_eq!(size_of::<RuleKey>(), 1 + 4 + 4 + 1 + 2);
        assert_eq!(size_of::<IdKey4>(), 1 + 4);
        assert_eq!(size_of::<IdKey6>(), 1 + 16);
        assert_eq!(size_of::<RuleValue>(), 8);
        assert_eq!(size_of::<CtKey4>(), 4 + 4 + 2 + 2 + 1 + 3);
        assert_eq!(size_of::<CtKey6>(), 16 + 16 + 2 + 2 + 1 + 3);
        assert_eq!(size_of::<CtValue>(), 8 + 8 + 4 + 4 + 4 + 2 + 2 + 64);
        assert_eq!(size_of::<DeniedValue>(), 8 + 8 + 4 + 4 + 64);
        assert_eq!(size_of::<TokenBucket>(), 16);
        assert_eq!(
            size_of::<VerdictEvent>(),
            16 + 16 + 2 + 2 + 4 + 4 + 4 + 4 + 4
        );
        assert_eq!(size_of::<RuleName>(), 8 + RULE_NAME_LEN);
        assert_eq!(size_of::<FragKey4>(), 4 + 4 + 2 + 1 + 1);
        assert_eq!(size_of::<FragKey6>(), 16 + 16 + 4 + 1 + 3);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<FlowCache4>(), 16 + 8 + 4 + 4 + 64);
        assert_eq!(size_of::<FlowCache6>(), 40 + 8 + 4 + 4 + 64);
    }

    #[test]
    fn rule_key_is_big_endian_with_port_last() {
        let k = RuleKey::new(0x0102_0304, 0x0506_0708, 6, 0x1f90).in_slot(1);
        let bytes: [u8; 12] = unsafe { core::mem::transmute(k) };
        assert_eq!(bytes, [1, 1, 2, 3, 4, 5, 6, 7, 8, 6, 0x1f, 0x90]);
        assert_eq!(bytes, k.to_bytes());
    }

    #[test]
    fn counter_index_is_dense() {
        assert_eq!(
            counter_index(DIR_EGRESS, true, reason::COUNT - 1),
            COUNTER_SLOTS - 1
        );
        assert_eq!(counter_index(DIR_INGRESS, false, 0), 0);
    }
}
