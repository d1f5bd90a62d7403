//! Maps shared by the XDP and TC programs. Sizes here are defaults; the agent
//! resizes them at load time from its flags.
use agent_common::{
    stat, Config, Counter, CtKey4, CtKey6, CtValue, DeniedValue, FlowCache4, FlowCache6, FragKey4,
    FragKey6, FragValue, IdBlock, IdKey4, IdKey6, IdentityValue, RuleKey, RuleName, RuleValue,
    SourceKey, SourceValue, TokenBucket, BUCKET_SLOTS, COUNTER_SLOTS, FLOW_CACHE_SLOTS,
    HOST_FILTER_WORDS, ID_BLOCK_COUNT, IFACE_ROLE_SLOTS, RULE_COUNTER_STRIDE, RULE_IDS,
    SOURCE_FILTER_WORDS,
};
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

/// Per-CPU LRU lists: under a flood of new denied flows each CPU evicts from
/// its own list instead of contending for one lock.
const BPF_F_NO_COMMON_LRU: u32 = 2;
const BPF_F_NO_PREALLOC: u32 = 1;
/// `bpf_map_update_elem` flag: create only.
pub const BPF_NOEXIST: u64 = 1;

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

// The tries hold two policies, told apart by the slot byte leading every key;
// CONFIG.active_slot says which one is live, so a reload writes the idle slot
// and flips one word. One map per lookup site (rather than a map per slot)
// keeps each call site's map constant, which lets the verifier turn the lookup
// into a direct call instead of the generic helper's indirect one.
#[map]
pub static IDS4: LpmTrie<IdKey4, IdentityValue> = LpmTrie::with_max_entries(65536, 0);
#[map]
pub static IDS6: LpmTrie<IdKey6, IdentityValue> = LpmTrie::with_max_entries(65536, 0);
#[map]
pub static RULES: LpmTrie<RuleKey, RuleValue> = LpmTrie::with_max_entries(65536, 0);

/// Host prefixes (/32, /128) of both slots, by (slot, address): one hash
/// probe instead of deepening the trie every other address walks (a trie with
/// 100k host routes is deep exactly where a flood's random sources land).
/// Filled by the agent only, so not preallocated.
#[map]
pub static HOSTS4: HashMap<IdKey4, IdentityValue> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);
#[map]
pub static HOSTS6: HashMap<IdKey6, IdentityValue> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Both slots' filters of the host prefixes in `HOSTS4` and `HOSTS6`
/// (`CFG_F_HOST_FILTER`): most addresses of a flood have no host prefix, and
/// the filter spares them the probe.
#[map]
pub static HOST_FILTER: Array<u64> = Array::with_max_entries(2 * HOST_FILTER_WORDS, 0);

/// What each slot's identity trie says per block of addresses (`IdBlock`),
/// both families (`CFG_F_SLOT_INDEX`).
#[map]
pub static ID_BLOCKS: Array<IdBlock> = Array::with_max_entries(4 * ID_BLOCK_COUNT, 0);

#[map]
pub static CT4: LruHashMap<CtKey4, CtValue> = LruHashMap::with_max_entries(65536, 0);
#[map]
pub static CT6: LruHashMap<CtKey6, CtValue> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static FRAG4: LruHashMap<FragKey4, FragValue> = LruHashMap::with_max_entries(8192, 0);
#[map]
pub static FRAG6: LruHashMap<FragKey6, FragValue> = LruHashMap::with_max_entries(8192, 0);

#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Written by the clock program: the kernel's jiffies, for the agent's sweeper.
#[map]
pub static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

// Per-CPU, so a slot is only ever written by the CPU reading it: no torn entries.
#[map]
pub static FLOWCACHE4: PerCpuArray<FlowCache4> = PerCpuArray::with_max_entries(FLOW_CACHE_SLOTS, 0);
#[map]
pub static FLOWCACHE6: PerCpuArray<FlowCache6> = PerCpuArray::with_max_entries(FLOW_CACHE_SLOTS, 0);

/// Denied and audited flows, bounded (LRU): a flood evicts old entries.
#[map]
pub static DENIED4: LruHashMap<CtKey4, DeniedValue> =
    LruHashMap::with_max_entries(16384, BPF_F_NO_COMMON_LRU);
#[map]
pub static DENIED6: LruHashMap<CtKey6, DeniedValue> =
    LruHashMap::with_max_entries(16384, BPF_F_NO_COMMON_LRU);

/// Packets and bytes passed per rule id (`rule_counter_index`); never evicted.
#[map]
pub static RULE_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(RULE_IDS * RULE_COUNTER_STRIDE, 0);

/// `agent_common::stat` slots.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Verdict events of new flows, for `netpol-agent monitor`.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static BUCKETS: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(BUCKET_SLOTS, 0);

/// Rule names by id, written by the agent for readers of the pinned maps; the
/// datapath never reads it.
#[map]
pub static RULE_NAMES: Array<RuleName> = Array::with_max_entries(RULE_IDS, 0);

/// Which source addresses may enter through which interface
/// (`agent_common::sources`), written by the agent from the node's routes.
/// Not preallocated: a node holds a few entries per pod.
#[map]
pub static SOURCES: HashMap<SourceKey, SourceValue> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// The filter of the addresses `SOURCES` has entries for
/// (`CFG_F_SOURCE_FILTER`): a packet entering an uplink from anywhere but a
/// pod of this node then skips the address probe.
#[map]
pub static SOURCE_FILTER: Array<u64> = Array::with_max_entries(SOURCE_FILTER_WORDS, 0);

/// The role of each interface below `IFACE_ROLE_SLOTS` (its `SOURCES`
/// interface entry's kind, 0 for none), by ifindex: the counters ask it for
/// every packet, and an array read is inlined where a hash lookup is a call.
#[map]
pub static IFACE_ROLES: Array<u32> = Array::with_max_entries(IFACE_ROLE_SLOTS, 0);

/// Scratch space for the conntrack key an ICMP error quotes (one per CPU):
/// the programs' stack, near BPF's 512 bytes, has no room for another key.
#[map]
pub static QUOTE_KEY4: PerCpuArray<CtKey4> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static QUOTE_KEY6: PerCpuArray<CtKey6> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the key of an identity lookup (one per CPU, written
/// before each lookup and read by it alone), for the same reason.
#[map]
pub static ID_KEY4: PerCpuArray<Key<IdKey4>> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static ID_KEY6: PerCpuArray<Key<IdKey6>> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the key of a rule lookup (one per CPU), for the same
/// reason: the lookup runs in a function of its own (`policy::ask_dst`),
/// whose stack counts against the same 512 bytes as its caller's.
#[map]
pub static RULE_KEY: PerCpuArray<Key<RuleKey>> = PerCpuArray::with_max_entries(1, 0);

/// The conntrack quota of each source address that opened a flow lately
/// (`Config::ct_source_rate`). LRU: a source unseen for long enough starts
/// again with a full bucket.
#[map]
pub static CT_SOURCES: LruHashMap<[u8; 16], TokenBucket> = LruHashMap::with_max_entries(65536, 0);

/// Recent answers of the policy to IPv4 questions (`policy::cached`), per
/// CPU, direct-mapped.
#[map]
pub static ANSWERS4: PerCpuArray<Answer<2>> = PerCpuArray::with_max_entries(ANSWER_SLOTS, 0);

/// Slots of the answer cache: enough for the questions a CPU repeats, small
/// enough to stay in its cache.
pub const ANSWER_SLOTS: u32 = 1024;

/// A cached policy answer: the question as `N` words (both addresses, then
/// the generation, protocol and port) and the answer (`policy::to_answer`),
/// with the interface whose source check the question's source passed and
/// the `SOURCES` generation it passed under (0: none), as in the flow cache.
#[repr(C)]
pub struct Answer<const N: usize> {
    pub question: [u64; N],
    pub answer: u64,
    pub src_ifindex: u32,
    pub sources_gen: u32,
}

/// Per CPU and flow-cache slot (two slots sharing one), the folded key
/// (`Family::key_word`) of the flow whose entry this CPU last created there
/// (`conntrack::create`). Half as many slots as the flow cache: a
/// retransmitted SYN follows the first within seconds, and 8 bytes per slot
/// and CPU count against the node's map memory budget.
#[map]
pub static OPENED: PerCpuArray<u64> = PerCpuArray::with_max_entries(OPENED_SLOTS, 0);

pub const OPENED_SLOTS: u32 = FLOW_CACHE_SLOTS / 2;
const _: () = assert!(OPENED_SLOTS.is_power_of_two());

/// Per-CPU room for what the new-flow path builds (`NewFlow`).
#[map]
pub static NEW_FLOW: PerCpuArray<NewFlow> = PerCpuArray::with_max_entries(1, 0);

/// What the new-flow path builds before it writes a map: the conntrack quota
/// map's key and new value, and the new conntrack entry. Built here rather
/// than on the stack, which is near BPF's 512 bytes on that path.
#[repr(C)]
pub struct NewFlow {
    pub src: [u8; 16],
    pub bucket: TokenBucket,
    pub value: CtValue,
    /// A new denied-flow record (`denied::create`).
    pub denied: DeniedValue,
}

/// This CPU's `NewFlow`.
#[inline(always)]
pub fn new_flow() -> Option<&'static mut NewFlow> {
    // SAFETY: this CPU's slot; nothing else runs on it while a program does.
    NEW_FLOW.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}
