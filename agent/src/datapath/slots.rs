//! The two policy slots: the idle one is rewritten with only what differs
//! from what it held, then one array write makes it live, so no packet sees
//! a mix of two policies.
use std::{
    cmp::Ordering,
    time::{Duration, Instant},
};

use agent_common::{
    filter_add, filter_key4, filter_key6_bytes, map_names, Config, IdBlock, IdKey4, IdKey6,
    IdentityValue, RuleKey, RuleValue, CFG_F_HOSTS4, CFG_F_HOSTS6, CFG_F_SLOT_INDEX,
    HOST_FILTER_WORDS, ID_BLOCK_COUNT, ID_BLOCK_NONE, ID_BLOCK_ONE, SLOT_BITS,
};
use aya::{
    maps::{lpm_trie::Key, HashMap, LpmTrie, MapData},
    Ebpf, Pod,
};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::policy::Compiled;

use super::{error::*, handles::*, load::*, Datapath};

/// What one slot of the policy maps holds, so the next swap writes only the
/// difference. Each list is sorted by key: the difference is one merge walk,
/// with no hashing of the hundreds of thousands of entries a large policy has.
#[derive(Default)]
pub(super) struct SlotContents {
    ids4: Vec<(Ipv4Net, IdentityValue)>,
    ids6: Vec<(Ipv6Net, IdentityValue)>,
    /// By rule key, then prefix length.
    pub(super) rules: Vec<((RuleKey, u32), RuleValue)>,
    /// The host prefixes of this slot live in the hash maps (not the tries).
    hash4: bool,
    hash6: bool,
    /// The slot's part of `HOST_FILTER` (empty: unknown, written whole).
    filter: Vec<u64>,
    /// The slot's blocks in `ID_BLOCKS`, IPv4's then IPv6's (empty: unknown,
    /// written whole).
    blocks: Vec<IdBlock>,
}

/// What a trie holding `prefixes` (first byte, length, identity) answers
/// for each block of addresses sharing a first byte: the trie itself where a
/// prefix longer than the block starts inside it, else the longest prefix
/// covering the block, else no identity.
pub fn id_blocks(prefixes: impl Iterator<Item = (u8, u8, IdentityValue)>) -> Vec<IdBlock> {
    let n = ID_BLOCK_COUNT as usize;
    let mut deep = vec![false; n];
    let mut best: Vec<Option<(u8, IdentityValue)>> = vec![None; n];
    for (first, len, v) in prefixes {
        if len > 8 {
            deep[first as usize] = true;
            continue;
        }
        // A prefix of length <= 8 covers the aligned run of blocks its
        // network starts.
        let start = first as usize;
        let span = 1usize << (8 - len);
        for b in best.iter_mut().skip(start).take(span) {
            if b.is_none_or(|(l, _)| len > l) {
                *b = Some((len, v));
            }
        }
    }
    (0..n)
        .map(|i| match (deep[i], best[i]) {
            (true, _) => IdBlock::default(),
            (false, Some((_, value))) => IdBlock {
                value,
                state: ID_BLOCK_ONE,
                _pad: 0,
            },
            (false, None) => IdBlock {
                state: ID_BLOCK_NONE,
                ..IdBlock::default()
            },
        })
        .collect()
}

/// The host-prefix filter of the host prefixes a slot keeps in its hashes.
fn host_filter<'a>(
    hosts4: impl Iterator<Item = &'a Ipv4Net>,
    hosts6: impl Iterator<Item = &'a Ipv6Net>,
) -> Vec<u64> {
    let mut f = vec![0u64; HOST_FILTER_WORDS as usize];
    for n in hosts4 {
        filter_add(&mut f, filter_key4(n.network().octets()));
    }
    for n in hosts6 {
        filter_add(&mut f, filter_key6_bytes(&n.network().octets()));
    }
    f
}

/// Host prefixes of one family that move them from the trie to the hash map.
/// The slot's host filter lets a probe through only for the hash's own
/// addresses (and under 3% of the rest), where a trie holding the host routes
/// is walked deep by every source of their blocks (a flood from a range
/// beside them); a policy with only a few keeps them in the trie, which stays
/// as shallow.
pub const HOST_HASH_MIN: usize = 64;

/// What one policy swap did.
#[derive(Clone, Copy, Debug)]
pub struct ApplyStats {
    pub generation: u32,
    /// Trie entries written or removed in the idle slot.
    pub changes: usize,
    /// Writing the idle slot.
    pub write: Duration,
    /// Making it live (one array update).
    pub swap: Duration,
}

impl Datapath {
    /// Makes `compiled` the live policy: writes the idle slot (only what differs
    /// from the policy it held before), then flips the active slot and bumps the
    /// generation in one array write, so no packet sees a mix of two policies.
    pub fn apply(&mut self, compiled: &Compiled) -> Result<u32> {
        self.apply_timed(compiled).map(|s| s.generation)
    }

    /// `apply`, reporting what it wrote and how long the write and the swap took.
    pub fn apply_timed(&mut self, compiled: &Compiled) -> Result<ApplyStats> {
        // Sizes are checked against the map limits by policy::check_capacity
        // before anything reaches here; an insert that still fails leaves the
        // slot marked dirty and the live policy untouched.
        let idle = (1 - self.config.active_slot) as usize;
        let is_host4 = |n: &Ipv4Net| n.prefix_len() == 32;
        let is_host6 = |n: &Ipv6Net| n.prefix_len() == 128;
        let mut want = SlotContents {
            ids4: sorted(compiled.ids_v4.clone()),
            ids6: sorted(compiled.ids_v6.clone()),
            rules: sorted(
                compiled
                    .rules
                    .iter()
                    .map(|(len, key, value)| ((*key, *len), *value))
                    .collect(),
            ),
            hash4: compiled.ids_v4.iter().filter(|(n, _)| is_host4(n)).count()
                >= self.host_hash_min,
            hash6: compiled.ids_v6.iter().filter(|(n, _)| is_host6(n)).count()
                >= self.host_hash_min,
            filter: Vec::new(),
            blocks: Vec::new(),
        };
        want.filter = host_filter(
            want.ids4
                .iter()
                .map(|(n, _)| n)
                .filter(|n| want.hash4 && is_host4(n)),
            want.ids6
                .iter()
                .map(|(n, _)| n)
                .filter(|n| want.hash6 && is_host6(n)),
        );
        want.blocks = id_blocks(
            want.ids4
                .iter()
                .filter(|(n, _)| !(want.hash4 && is_host4(n)))
                .map(|(n, v)| (n.network().octets()[0], n.prefix_len(), *v)),
        );
        want.blocks.extend(id_blocks(
            want.ids6
                .iter()
                .filter(|(n, _)| !(want.hash6 && is_host6(n)))
                .map(|(n, v)| (n.network().octets()[0], n.prefix_len(), *v)),
        ));
        let started = Instant::now();
        let mut have = std::mem::take(&mut self.slots[idle]);
        if std::mem::replace(&mut self.dirty[idle], true) {
            self.clear_slot(idle as u8)?;
            have = SlotContents::default();
        }
        let mut changes = 0;

        let slot = idle as u8;
        // Where each side put an entry: host prefixes in the hash when that
        // policy has enough of them, everything else in the trie.
        let (h4, w4) = (have.hash4, want.hash4);
        let (h6, w6) = (have.hash6, want.hash6);
        let in_hash4 = |hash: bool| move |n: &Ipv4Net| hash && is_host4(n);
        let in_hash6 = |hash: bool| move |n: &Ipv6Net| hash && is_host6(n);
        let in_trie4 = |hash: bool| move |n: &Ipv4Net| !(hash && is_host4(n));
        let in_trie6 = |hash: bool| move |n: &Ipv6Net| !(hash && is_host6(n));
        {
            let mut trie: LpmTrie<&mut MapData, IdKey4, IdentityValue> =
                typed_map(&mut self.ebpf, map_names::IDS4)?;
            let key = |net: &Ipv4Net| {
                let addr = net.network().octets();
                Key::new(
                    SLOT_BITS + u32::from(net.prefix_len()),
                    IdKey4 { slot, addr },
                )
            };
            changes += sync(
                (&have.ids4, in_trie4(h4)),
                (&want.ids4, in_trie4(w4)),
                key,
                &mut trie,
                map_names::IDS4,
            )?;
        }
        {
            let mut hosts: HashMap<&mut MapData, IdKey4, IdentityValue> =
                typed_map(&mut self.ebpf, map_names::HOSTS4)?;
            let key = |net: &Ipv4Net| IdKey4 {
                slot,
                addr: net.network().octets(),
            };
            changes += sync(
                (&have.ids4, in_hash4(h4)),
                (&want.ids4, in_hash4(w4)),
                key,
                &mut hosts,
                map_names::HOSTS4,
            )?;
        }
        {
            let mut trie: LpmTrie<&mut MapData, IdKey6, IdentityValue> =
                typed_map(&mut self.ebpf, map_names::IDS6)?;
            let key = |net: &Ipv6Net| {
                let addr = net.network().octets();
                Key::new(
                    SLOT_BITS + u32::from(net.prefix_len()),
                    IdKey6 { slot, addr },
                )
            };
            changes += sync(
                (&have.ids6, in_trie6(h6)),
                (&want.ids6, in_trie6(w6)),
                key,
                &mut trie,
                map_names::IDS6,
            )?;
        }
        {
            let mut hosts: HashMap<&mut MapData, IdKey6, IdentityValue> =
                typed_map(&mut self.ebpf, map_names::HOSTS6)?;
            let key = |net: &Ipv6Net| IdKey6 {
                slot,
                addr: net.network().octets(),
            };
            changes += sync(
                (&have.ids6, in_hash6(h6)),
                (&want.ids6, in_hash6(w6)),
                key,
                &mut hosts,
                map_names::HOSTS6,
            )?;
        }
        {
            let mut trie: LpmTrie<&mut MapData, RuleKey, RuleValue> =
                typed_map(&mut self.ebpf, map_names::RULES)?;
            let key = |(k, len): &(RuleKey, u32)| Key::new(*len, k.in_slot(slot));
            changes += sync(
                (&have.rules, |_: &(RuleKey, u32)| true),
                (&want.rules, |_: &(RuleKey, u32)| true),
                key,
                &mut trie,
                map_names::RULES,
            )?;
        }
        let base = idle as u32 * HOST_FILTER_WORDS;
        write_changed(
            &mut self.ebpf,
            map_names::HOST_FILTER,
            &have.filter,
            &want.filter,
            |i| base + i as u32,
        )?;
        // IPv4's blocks of both slots, then IPv6's.
        let n = ID_BLOCK_COUNT as usize;
        write_changed(
            &mut self.ebpf,
            map_names::ID_BLOCKS,
            &have.blocks,
            &want.blocks,
            |i| (((i / n) * 2 + idle) * n + i % n) as u32,
        )?;
        // The idle slot's host bits go live in a config update of their own,
        // before the swap: a packet that sees the new slot sees its bits
        // (and its complete filter).
        let idle_bits = (CFG_F_HOSTS4 | CFG_F_HOSTS6 | CFG_F_SLOT_INDEX) << idle;
        let bits = if want.hash4 { CFG_F_HOSTS4 << idle } else { 0 }
            | if want.hash6 { CFG_F_HOSTS6 << idle } else { 0 }
            | CFG_F_SLOT_INDEX << idle;
        let flags = (self.config.flags & !idle_bits) | bits;
        if flags != self.config.flags {
            let pre = Config {
                flags,
                ..self.config
            };
            write_config(&mut self.ebpf, &pre)?;
            self.config = pre;
        }
        self.slots[idle] = want;
        self.dirty[idle] = false;
        let write = started.elapsed();

        let swap_started = Instant::now();
        let next = Config {
            active_slot: idle as u32,
            policy_gen: self.config.policy_gen.wrapping_add(1),
            ..self.config
        };
        debug_assert_eq!(next.active_slot, next.policy_gen & 1);
        // Only a config the kernel accepted becomes ours: after a failed write
        // the next apply must still see the live slot as live.
        write_config(&mut self.ebpf, &next)?;
        self.config = next;
        Ok(ApplyStats {
            generation: self.config.policy_gen,
            changes,
            write,
            swap: swap_started.elapsed(),
        })
    }

    /// Removes every trie and host entry of `slot` (after a failed write left
    /// it unknown).
    fn clear_slot(&mut self, slot: u8) -> Result<()> {
        fn clear<K: Pod, V: Pod>(
            ebpf: &mut Ebpf,
            name: &str,
            in_slot: impl Fn(&K) -> bool,
        ) -> Result<()> {
            let mut trie: LpmTrie<&mut MapData, K, V> = typed_map(ebpf, name)?;
            let keys: Vec<Key<K>> = trie.keys().filter_map(|k| k.ok()).collect();
            for k in keys.iter().filter(|k| in_slot(&k.data())) {
                trie.remove(k).map_err(map_err(name))?;
            }
            Ok(())
        }
        fn clear_hash<K: Pod, V: Pod>(
            ebpf: &mut Ebpf,
            name: &str,
            in_slot: impl Fn(&K) -> bool,
        ) -> Result<()> {
            let mut hash: HashMap<&mut MapData, K, V> = typed_map(ebpf, name)?;
            let keys: Vec<K> = hash.keys().filter_map(|k| k.ok()).collect();
            for k in keys.iter().filter(|k| in_slot(k)) {
                hash.remove(k).map_err(map_err(name))?;
            }
            Ok(())
        }
        clear::<IdKey4, IdentityValue>(&mut self.ebpf, map_names::IDS4, |k| k.slot == slot)?;
        clear::<IdKey6, IdentityValue>(&mut self.ebpf, map_names::IDS6, |k| k.slot == slot)?;
        clear_hash::<IdKey4, IdentityValue>(&mut self.ebpf, map_names::HOSTS4, |k| k.slot == slot)?;
        clear_hash::<IdKey6, IdentityValue>(&mut self.ebpf, map_names::HOSTS6, |k| k.slot == slot)?;
        clear::<RuleKey, RuleValue>(&mut self.ebpf, map_names::RULES, |k| k.slot == slot)
    }
}

/// A map a policy slot is written into: the identity and rule tries, and the
/// host-prefix hashes.
pub(super) trait SlotMap<K, V> {
    fn put(&mut self, key: &K, value: &V) -> std::result::Result<(), aya::maps::MapError>;
    fn del(&mut self, key: &K) -> std::result::Result<(), aya::maps::MapError>;
}

impl<K: Pod, V: Pod> SlotMap<Key<K>, V> for LpmTrie<&mut MapData, K, V> {
    fn put(&mut self, key: &Key<K>, value: &V) -> std::result::Result<(), aya::maps::MapError> {
        self.insert(key, value, 0)
    }
    fn del(&mut self, key: &Key<K>) -> std::result::Result<(), aya::maps::MapError> {
        self.remove(key)
    }
}

impl<K: Pod, V: Pod> SlotMap<K, V> for HashMap<&mut MapData, K, V> {
    fn put(&mut self, key: &K, value: &V) -> std::result::Result<(), aya::maps::MapError> {
        self.insert(key, value, 0)
    }
    fn del(&mut self, key: &K) -> std::result::Result<(), aya::maps::MapError> {
        self.remove(key)
    }
}

/// Brings `map` from holding the entries of `have` that its predicate puts
/// there to holding those of `want` (an entry may move between maps: a host
/// prefix between trie and hash): removes what is gone, writes what is new
/// or changed.
pub(super) fn sync<N, K, V>(
    have: (&[(N, V)], impl Fn(&N) -> bool),
    want: (&[(N, V)], impl Fn(&N) -> bool),
    key: impl Fn(&N) -> K,
    map: &mut impl SlotMap<K, V>,
    name: &str,
) -> Result<usize>
where
    N: Ord,
    V: PartialEq,
{
    let ((have, had), (want, wants)) = (have, want);
    // Deletions first, so that a full map has room for what comes in.
    let mut puts = Vec::new();
    let mut changes = 0;
    let (mut i, mut j) = (0, 0);
    loop {
        let order = match (have.get(i), want.get(j)) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(h), Some(w)) => h.0.cmp(&w.0),
        };
        match order {
            Ordering::Less => {
                if had(&have[i].0) {
                    map.del(&key(&have[i].0)).map_err(map_err(name))?;
                    changes += 1;
                }
                i += 1;
            }
            Ordering::Greater => {
                if wants(&want[j].0) {
                    puts.push(j);
                }
                j += 1;
            }
            Ordering::Equal => {
                let n = &have[i].0;
                match (had(n), wants(n)) {
                    (true, true) if have[i].1 != want[j].1 => puts.push(j),
                    (true, false) => {
                        map.del(&key(n)).map_err(map_err(name))?;
                        changes += 1;
                    }
                    (false, true) => puts.push(j),
                    _ => {}
                }
                i += 1;
                j += 1;
            }
        }
    }
    for j in puts {
        let (n, v) = &want[j];
        map.put(&key(n), v).map_err(map_err(name))?;
        changes += 1;
    }
    Ok(changes)
}

/// `v` sorted by key (compiled lists already are: then this is one pass).
fn sorted<N: Ord, V>(mut v: Vec<(N, V)>) -> Vec<(N, V)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::ID_BLOCK_TRIE;

    fn v(id: u32) -> IdentityValue {
        IdentityValue { id, flags: 0 }
    }

    #[test]
    fn blocks_answer_what_the_trie_would() {
        let b = id_blocks(
            [
                (0, 0, v(1)),    // 0.0.0.0/0
                (10, 8, v(2)),   // 10.0.0.0/8
                (10, 24, v(3)),  // 10.0.1.0/24: 10/8 needs the trie
                (172, 6, v(4)),  // 172.0.0.0/6 covers 172..=175
                (173, 8, v(5)),  // a longer one inside it wins there
                (192, 16, v(6)), // 192.168.0.0/16
            ]
            .into_iter(),
        );
        let one = |id| IdBlock {
            value: v(id),
            state: ID_BLOCK_ONE,
            _pad: 0,
        };
        assert_eq!(b.len(), ID_BLOCK_COUNT as usize);
        assert_eq!(b[10].state, ID_BLOCK_TRIE);
        assert_eq!(b[192].state, ID_BLOCK_TRIE);
        assert_eq!(b[11], one(1));
        assert_eq!(b[172], one(4));
        assert_eq!(b[173], one(5));
        assert_eq!(b[175], one(4));
        assert_eq!(b[176], one(1));
        let none = id_blocks([(10, 8, v(2))].into_iter());
        assert_eq!(none[10], one(2));
        assert_eq!(none[11].state, ID_BLOCK_NONE);
    }
}
