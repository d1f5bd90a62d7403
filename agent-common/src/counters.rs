//! The never-evicted aggregates (per direction and reason, per rule), the
//! per-flow counter slots, and the datapath's bookkeeping slots. The index
//! functions live here so the datapath and every reader compute one layout.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Counters each flow entry and flow-cache slot holds: one per
/// `flow_counter_index`.
pub const FLOW_COUNTER_SLOTS: usize = 4;

/// Per-flow counter slot: hook direction (`DIR_*`) and whether the packet went
/// from endpoint B to endpoint A of the normalised key.
#[inline(always)]
pub const fn flow_counter_index(dir: u32, from_b: bool) -> usize {
    (dir as usize & 1) * 2 + from_b as usize
}

/// The hook's direction: XDP sees packets entering an interface, TC (TCX
/// egress) packets leaving it.
pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

/// The aggregates' side, read from the workload: `TRAFFIC_INGRESS` enters
/// it (a pod, or the node from the network), `TRAFFIC_EGRESS` leaves it.
/// On an uplink that is the hook's direction; on a pod interface (the host
/// side of the pod's veth) it is the other way round: what enters the
/// veth's XDP hook is leaving the pod. See `traffic_of`.
pub const TRAFFIC_INGRESS: u32 = 0;
pub const TRAFFIC_EGRESS: u32 = 1;

/// The traffic side of a packet seen by the hook of direction `dir` on an
/// interface that is (`pod_side`) or is not a pod interface.
#[inline(always)]
pub const fn traffic_of(dir: u32, pod_side: bool) -> u32 {
    (dir & 1) ^ (pod_side as u32)
}

/// Counters are indexed by traffic side, whether the drop was only audited,
/// and reason.
pub const COUNTER_SLOTS: u32 = 2 * 2 * reason::COUNT;

#[inline(always)]
pub const fn counter_index(dir: u32, audited: bool, reason: u32) -> u32 {
    (dir * 2 + audited as u32) * reason::COUNT + reason
}

/// Rule ids the datapath keeps per-rule counters and names for: the size of
/// `RULE_NAMES` and, times `RULE_COUNTER_STRIDE`, of `RULE_COUNTERS`. Fixed
/// arrays, so a rule's counts are never evicted; passes by higher ids are
/// counted by direction and reason only. Every id costs 128 bytes per
/// possible CPU; 1,000 NetworkPolicies compile to about 1,300 rules.
pub const RULE_IDS: u32 = 2048;

/// Per-rule counters: per rule id, `RULE_COUNTER_STRIDE` slots of (traffic
/// side, rule reason), half of them per side.
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
    Some(rule_id * RULE_COUNTER_STRIDE + (dir & 1) * (RULE_COUNTER_STRIDE / 2) + kind)
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
    /// discovery (130-132, 143), which neighbour discovery relies on, confined
    /// to the link (see `DROP_ND_INVALID`).
    pub const PASS_NEIGHBOUR_DISCOVERY: u32 = 3;
    /// A later fragment of a datagram whose first fragment passed.
    pub const PASS_FRAGMENT: u32 = 4;
    /// A conntrack entry from an older policy was re-checked and still allowed.
    pub const PASS_RECHECKED: u32 = 5;
    /// An ICMP or ICMPv6 error quoting a packet of a live conntrack entry's
    /// flow, sent back to that packet's source.
    pub const PASS_RELATED: u32 = 6;

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
    /// Truncated TCP/UDP/SCTP/ICMP header or bad TCP data offset, or an ICMP
    /// error whose quoted IP header and 8 transport bytes are cut or bad.
    pub const DROP_MALFORMED_L4: u32 = 14;
    /// Entered a pod interface with a source address not routed to it, or an
    /// uplink with the address of a pod of this node (see `SOURCES`).
    pub const DROP_SPOOFED: u32 = 15;
    /// Entered a pod interface whose addresses are not known yet.
    pub const DROP_UNKNOWN_ENDPOINT: u32 = 16;
    /// ICMPv6 neighbour or multicast listener discovery without the shape
    /// RFC 4861 / RFC 3810 require of link traffic (hop limit, source and
    /// destination scope), fragmented, or a router advertisement or redirect
    /// entering a pod interface.
    pub const DROP_ND_INVALID: u32 = 17;
    /// An ICMP or ICMPv6 error whose quoted header belongs to no live flow
    /// (or is not sent back to the quoted packet's source).
    pub const DROP_ICMP_UNRELATED: u32 = 18;
    /// A new flow whose source has used up its conntrack quota
    /// (`Config::ct_source_rate`).
    pub const DROP_CT_QUOTA: u32 = 19;

    pub const COUNT: u32 = 20;

    pub const NAMES: [&str; COUNT as usize] = [
        "established",
        "policy",
        "non-ip",
        "neighbour-discovery",
        "fragment",
        "rechecked",
        "related",
        "unused-7",
        "policy-denied",
        "revoked",
        "fragment-untracked",
        "malformed-l2",
        "malformed-ipv4",
        "malformed-ipv6",
        "malformed-l4",
        "spoofed",
        "unknown-endpoint",
        "nd-invalid",
        "icmp-unrelated",
        "ct-quota",
    ];
}

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
