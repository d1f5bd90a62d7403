//! Membership filters the datapath asks before a hash probe that would
//! usually miss. A hash map's probe for an absent key still costs a cache
//! miss on its bucket array, and a flood from random sources makes every
//! probe one; a filter word in a small array answers most of them with one
//! inlined read. A filter may say yes for an absent key (then the probe
//! runs, as without it) but never no for a present one: the agent sets a
//! key's bits before the key enters its map and clears them only after it
//! has left, so every answer stays exact.
//!
//! One 64-bit word per key, three bits in it (a blocked Bloom filter): one
//! cache line read per question.

/// Words of the host-prefix filter per policy slot (`HOST_FILTER` holds both
/// slots, slot 0 first): 1 Mbit, under 3% false positives at 100,000 host
/// prefixes.
pub const HOST_FILTER_WORDS: u32 = 1 << 14;

/// Words of the `SOURCES` address filter: 64 kbit for the few hundred
/// addresses of a node's pods.
pub const SOURCE_FILTER_WORDS: u32 = 1 << 10;

/// The word (below `words`, a power of two) and the bits of filter key `x`.
#[inline(always)]
pub fn filter_bits(x: u64, words: u32) -> (u32, u64) {
    // Two multiply-xorshift rounds: every output bit depends on every input
    // bit, so neighbouring addresses land in unrelated words.
    let mut z = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z ^= z >> 32;
    z = z.wrapping_mul(0xd6e8_feb8_6659_fd93);
    z ^= z >> 29;
    let word = (z >> 40) as u32 & (words - 1);
    let mask = 1u64 << (z & 63) | 1u64 << ((z >> 6) & 63) | 1u64 << ((z >> 12) & 63);
    (word, mask)
}

/// Sets the bits of filter key `x` in filter `f` (its length a power of two).
#[inline(always)]
pub fn filter_add(f: &mut [u64], x: u64) {
    let (w, m) = filter_bits(x, f.len() as u32);
    if let Some(word) = f.get_mut(w as usize) {
        *word |= m;
    }
}

/// The filter key of an IPv4 address (its four bytes as one native-order
/// word, as the datapath loads them).
#[inline(always)]
pub fn filter_key4(a: [u8; 4]) -> u64 {
    u32::from_ne_bytes(a) as u64
}

/// The filter key of an IPv6 address given as its two native-order words
/// (bytes 0..8 and 8..16). The top bit set keeps IPv6 keys apart from IPv4
/// ones, which share the filters.
#[inline(always)]
pub fn filter_key6(hi: u64, lo: u64) -> u64 {
    (hi ^ lo.rotate_left(31)) | 1 << 63
}

/// The filter key of an IPv6 address.
#[inline(always)]
pub fn filter_key6_bytes(a: &[u8; 16]) -> u64 {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    filter_key6(u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_stay_in_range_and_are_one_to_three() {
        for x in 0..10_000u64 {
            let (w, m) = filter_bits(x.wrapping_mul(0x1234_5678_9abc_def1), HOST_FILTER_WORDS);
            assert!(w < HOST_FILTER_WORDS);
            assert!((1..=3).contains(&m.count_ones()));
        }
    }

    /// The advertised false-positive rate, at the size the bench uses.
    #[test]
    fn false_positives_stay_under_three_percent_at_100k_keys() {
        let mut f = [0u64; HOST_FILTER_WORDS as usize];
        let key = |i: u32| filter_key4((0xac10_0000 | ((i * 7 + 3) % 0x10_0000)).to_be_bytes());
        for i in 0..100_000 {
            filter_add(&mut f, key(i));
        }
        let mut hits = 0;
        let probes = 100_000;
        for i in 0..probes {
            let x = filter_key4((0x0a00_0000u32 + i).to_be_bytes());
            let (w, m) = filter_bits(x, HOST_FILTER_WORDS);
            hits += (f[w as usize] & m == m) as u32;
        }
        assert!(hits * 100 < probes * 3, "{hits} of {probes}");
    }

    #[test]
    fn families_do_not_share_keys() {
        assert_ne!(filter_key4([0, 0, 0, 1]), filter_key6_bytes(&[0; 16]));
        assert_eq!(filter_key6_bytes(&[0; 16]) >> 63, 1);
        assert_eq!(filter_key4([255; 4]) >> 63, 0);
    }
}
