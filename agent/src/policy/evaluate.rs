//! The datapath's lookups, done in plain Rust over compiled maps: what the
//! kernel would decide for a packet that opens a flow (tests and `explain`).

use std::net::IpAddr;

use agent_common::{IdentityValue, RuleKey, RuleValue, RULE_FLAG_DENY};

use super::compile::Compiled;

/// The identity an address gets: the value of the longest prefix containing it.
pub fn identity_of(compiled: &Compiled, addr: IpAddr) -> Option<IdentityValue> {
    match addr {
        IpAddr::V4(a) => compiled
            .ids_v4
            .iter()
            .filter(|(n, _)| n.contains(&a))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, v)| *v),
        IpAddr::V6(a) => compiled
            .ids_v6
            .iter()
            .filter(|(n, _)| n.contains(&a))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, v)| *v),
    }
}

fn key_bytes(k: &RuleKey) -> [u8; 12] {
    k.to_bytes()
}

/// Whether the first `bits` bits of `a` and `b` agree, compared as the kernel's
/// LPM trie does: bytes from the front, bits from the most significant.
fn prefix_eq(a: &[u8; 12], b: &[u8; 12], bits: u32) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// The longest rule-trie entry matching the key.
pub fn lookup_entry(compiled: &Compiled, key: &RuleKey) -> Option<RuleValue> {
    let want = key_bytes(key);
    compiled
        .rules
        .iter()
        .filter(|(len, k, _)| prefix_eq(&key_bytes(k), &want, *len))
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, _, v)| *v)
}

/// The rule id of the longest rule-trie entry matching the key, unless that
/// entry denies (`RULE_FLAG_DENY`), as the datapath reads it.
pub fn lookup_rule(compiled: &Compiled, key: &RuleKey) -> Option<u32> {
    lookup_entry(compiled, key)
        .filter(|v| v.flags & RULE_FLAG_DENY == 0)
        .map(|v| v.rule_id)
}

/// The rule a deny entry refusing this packet was carved from, if the
/// packet's longest match is one.
pub fn refusing_rule(
    compiled: &Compiled,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
) -> Option<u32> {
    packet_entry(compiled, src, dst, proto, port)
        .filter(|v| v.flags & RULE_FLAG_DENY != 0)
        .map(|v| v.rule_id)
}

/// The rule that allows a packet opening a flow from `src` to `dst` with
/// protocol `proto` and destination port `port` (ICMP: `type << 8 | code`), or
/// `None` when policy drops it.
pub fn evaluate(
    compiled: &Compiled,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
) -> Option<u32> {
    packet_entry(compiled, src, dst, proto, port)
        .filter(|v| v.flags & RULE_FLAG_DENY == 0)
        .map(|v| v.rule_id)
}

/// The longest rule entry matching a packet, as the datapath looks it up.
fn packet_entry(
    compiled: &Compiled,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
) -> Option<RuleValue> {
    let s = identity_of(compiled, src)?;
    let d = identity_of(compiled, dst)?;
    lookup_entry(compiled, &RuleKey::new(s.id, d.id, proto, port))
}
