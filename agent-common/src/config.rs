//! The single-entry `CONFIG` map: everything the agent tells the datapath
//! besides the policy itself, read once per packet.

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
/// `Config::flags`: slot 0's indexes are complete (`<< 1`: slot 1's): its
/// part of `HOST_FILTER` holds every host prefix of the slot, so an address
/// the filter rules out skips the host-prefix probe; and its part of
/// `ID_BLOCKS` describes its trie, so an address in a block no long prefix
/// reaches skips the trie walk. Set with the host bits, in the same config
/// update, after the agent wrote the slot's indexes; never carried over a
/// restart (the first swap writes them again).
pub const CFG_F_SLOT_INDEX: u32 = 1 << 6;
/// `Config::flags`: the datapath's indexes of `SOURCES` are complete:
/// `SOURCE_FILTER` covers every address entry, and `IFACE_ROLES` holds the
/// kind of every interface entry below `IFACE_ROLE_SLOTS`. A source the
/// filter rules out then skips the address probe, and its interface's role is
/// read from the array instead of a second probe. Set at the end of the
/// agent's first complete sync; never carried over a restart.
pub const CFG_F_SOURCE_INDEX: u32 = 1 << 8;

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
    /// Bumped by the agent after every change to `SOURCES`: a flow-cache slot
    /// remembers the source check its flow passed under one generation only.
    pub sources_gen: u32,
    pub _pad: u32,
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
    /// New conntrack entries each source address may create per second, and
    /// the bucket's depth (0: no limit), kept per address in `CT_SOURCES`:
    /// the conntrack table is shared by every workload of the node, so one
    /// source opening flows (or sending bare ACKs) as fast as it can must not
    /// evict everyone else's. Over the limit, a new flow is dropped
    /// (`ct-quota`); established flows never pay for it.
    pub ct_source_rate: u64,
    pub ct_source_burst: u64,
}
