//! Maps shared by the XDP and TC programs. Sizes here are defaults; the agent
//! resizes them at load time from its flags.
use agent_common::{
    Config, Counter, CtKey4, CtKey6, CtValue, FragKey4, FragKey6, FragValue, IdentityValue,
    RuleKey, RuleValue, COUNTER_SLOTS,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray},
};

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

// Two complete policy map sets; CONFIG.active_slot says which one is live, so a
// reload fills the idle set and flips one word.
#[map]
pub static IDS4_0: LpmTrie<[u8; 4], IdentityValue> = LpmTrie::with_max_entries(65536, 0);
#[map]
pub static IDS4_1: LpmTrie<[u8; 4], IdentityValue> = LpmTrie::with_max_entries(65536, 0);
#[map]
pub static IDS6_0: LpmTrie<[u8; 16], IdentityValue> = LpmTrie::with_max_entries(65536, 0);
#[map]
pub static IDS6_1: LpmTrie<[u8; 16], IdentityValue> = LpmTrie::with_max_entries(65536, 0);
#[map]
pub static RULES_0: LpmTrie<RuleKey, RuleValue> = LpmTrie::with_max_entries(65536, 0);
#[map]
pub static RULES_1: LpmTrie<RuleKey, RuleValue> = LpmTrie::with_max_entries(65536, 0);

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
