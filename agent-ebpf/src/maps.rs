//! Maps shared by the XDP and TC programs. Sizes here are defaults; the agent
//! resizes them at load time from its flags.
use agent_common::{
    Config, Counter, CtKey4, CtKey6, CtValue, FlowCache4, FlowCache6, FragKey4, FragKey6,
    FragValue, IdKey4, IdKey6, IdentityValue, RuleKey, RuleValue, COUNTER_SLOTS, FLOW_CACHE_SLOTS,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray},
};

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
