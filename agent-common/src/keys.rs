//! Map keys. The kernel compares LPM trie and hash keys byte by byte, so
//! multi-byte fields are big-endian byte arrays and every padding byte is an
//! explicit field the datapath zeroes.

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

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
