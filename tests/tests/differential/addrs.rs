//! Addresses and prefixes: a small space, so prefixes overlap a lot.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::rng::Rng;

pub fn v4(x: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(x))
}

pub fn v6(x: u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(x))
}

/// An address of the dense space: mostly 10.0.0.0/21, some 10.128.0.0/24 (a
/// different second byte) and 172.16.0.0/26; IPv6 alike, over several bytes.
pub fn dense_addr(rng: &mut Rng, is_v6: bool) -> IpAddr {
    if is_v6 {
        let base: u128 = match rng.below(100) {
            0..=59 => 0xfd00 << 112,
            60..=79 => (0xfd00 << 112) | (1 << 64),
            80..=89 => (0xfd00 << 112) | (0x8000 << 96),
            _ => 0x2001_0db8 << 96,
        };
        v6(base + u128::from(rng.below(2048)))
    } else {
        let x = match rng.below(100) {
            0..=69 => 0x0a00_0000 + rng.below(2048),
            70..=84 => 0x0a80_0000 + rng.below(256),
            _ => 0xac10_0000 + rng.below(64),
        };
        v4(x as u32)
    }
}

pub fn prefix_len(rng: &mut Rng, is_v6: bool) -> u8 {
    let r = rng.below(100);
    let n = if is_v6 {
        match r {
            0 => 0,
            1..=3 => *rng.pick(&[16, 32, 48]),
            4..=9 => 64,
            10..=14 => 96,
            15..=19 => rng.range(97, 116),
            20..=49 => rng.range(117, 120),
            50..=79 => rng.range(121, 124),
            80..=89 => rng.range(125, 127),
            _ => 128,
        }
    } else {
        match r {
            0 => 0,
            1..=3 => 8,
            4..=5 => rng.range(9, 15),
            6..=11 => 16,
            12..=17 => rng.range(17, 20),
            18..=39 => rng.range(21, 24),
            40..=69 => rng.range(25, 28),
            70..=84 => rng.range(29, 31),
            _ => 32,
        }
    };
    n as u8
}

fn prefix_of(addr: IpAddr, len: u8) -> IpNet {
    IpNet::new(addr, len).expect("valid prefix length").trunc()
}

pub fn rand_prefix(rng: &mut Rng, is_v6: bool) -> IpNet {
    let a = dense_addr(rng, is_v6);
    let len = prefix_len(rng, is_v6);
    prefix_of(a, len)
}

pub fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn same_family(a: IpAddr, bits: u128) -> IpAddr {
    match a {
        IpAddr::V4(_) => v4(bits as u32),
        IpAddr::V6(_) => v6(bits),
    }
}

/// (first, last) address of `net`, as bits.
pub fn bounds(net: &IpNet) -> (u128, u128) {
    (addr_bits(net.network()), addr_bits(net.broadcast()))
}

/// An address inside `net`, from the dense space when possible.
pub fn addr_inside(rng: &mut Rng, net: &IpNet) -> IpAddr {
    let is_v6 = matches!(net, IpNet::V6(_));
    for _ in 0..8 {
        let a = dense_addr(rng, is_v6);
        if net.contains(&a) {
            return a;
        }
    }
    let (lo, hi) = bounds(net);
    let span = hi - lo;
    let r = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    let off = if span == u128::MAX { r } else { r % (span + 1) };
    same_family(net.network(), lo + off)
}

/// A prefix inside `net`, `extra` bits longer (capped at the family's width).
pub fn prefix_inside(rng: &mut Rng, net: &IpNet, extra: u8) -> IpNet {
    let len = (net.prefix_len() + extra).min(net.max_prefix_len());
    prefix_of(addr_inside(rng, net), len)
}
