//! A small Ethernet frame builder for BPF_PROG_TEST_RUN tests: one job, bytes out.
//!
//! ```
//! use netpol_tests::packet::{Packet, TCP_SYN};
//! let frame = Packet::ip("10.0.1.5", "10.0.2.7").tcp(40000, 5432, TCP_SYN).build();
//! assert_eq!(frame.len(), 14 + 20 + 20);
//! ```
//!
//! Lengths, the IPv4 header checksum and the TCP/UDP/ICMP/ICMPv6 checksums are
//! computed unless a field overrides them (`ipv4_mut`, `ipv6_mut`, `tcp_mut`), so
//! malformed frames are one override away from well-formed ones. The SCTP
//! checksum (CRC32c) is left zero: nothing under test reads it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_LLDP: u16 = 0x88cc;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

pub const PROTO_HOPOPTS: u8 = 0;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ROUTING: u8 = 43;
pub const PROTO_FRAGMENT: u8 = 44;
pub const PROTO_AH: u8 = 51;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_NONE: u8 = 59;
pub const PROTO_DSTOPTS: u8 = 60;
pub const PROTO_SCTP: u8 = 132;

/// IPv4 header fields. `None` overrides mean "compute the right value".
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub frag_offset: u16,
    /// Raw option bytes, padded with zeros (end of options) to a multiple of 4.
    pub options: Vec<u8>,
    pub version: Option<u8>,
    /// In 32-bit words.
    pub ihl: Option<u8>,
    pub total_len: Option<u16>,
    pub protocol: Option<u8>,
    pub checksum: Option<u16>,
}

/// An IPv6 extension header, in the order it appears in the chain.
#[derive(Clone, Debug)]
pub enum Ext {
    /// Hop-by-hop options: `(extra8 + 1) * 8` bytes of padding options.
    HopByHop { extra8: u8 },
    /// Destination options: `(extra8 + 1) * 8` bytes of padding options.
    DestOpts { extra8: u8 },
    /// Routing header carrying `addrs` (8 + 16 * n bytes).
    Routing {
        routing_type: u8,
        segments_left: u8,
        addrs: Vec<Ipv6Addr>,
    },
    /// Fragment header; `offset` in 8-byte units.
    Fragment { offset: u16, more: bool, id: u32 },
    /// Authentication header with an `icv_len`-byte ICV (12 + icv_len bytes; keep it
    /// a multiple of 8 for IPv6).
    Ah { spi: u32, icv_len: usize },
}

impl Ext {
    pub fn hop_by_hop() -> Self {
        Ext::HopByHop { extra8: 0 }
    }

    pub fn dest_opts() -> Self {
        Ext::DestOpts { extra8: 0 }
    }

    /// A segment-routing-shaped routing header (type 4) with one address and no
    /// segments left, so every node ignores it.
    pub fn routing() -> Self {
        Ext::Routing {
            routing_type: 4,
            segments_left: 0,
            addrs: vec![Ipv6Addr::LOCALHOST],
        }
    }

    pub fn fragment(offset: u16, more: bool, id: u32) -> Self {
        Ext::Fragment { offset, more, id }
    }

    pub fn ah() -> Self {
        Ext::Ah {
            spi: 0x100,
            icv_len: 12,
        }
    }

    pub fn proto(&self) -> u8 {
        match self {
            Ext::HopByHop { .. } => PROTO_HOPOPTS,
            Ext::DestOpts { .. } => PROTO_DSTOPTS,
            Ext::Routing { .. } => PROTO_ROUTING,
            Ext::Fragment { .. } => PROTO_FRAGMENT,
            Ext::Ah { .. } => PROTO_AH,
        }
    }

    fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop { extra8 } | Ext::DestOpts { extra8 } => {
                let total = (*extra8 as usize + 1) * 8;
                let mut b = vec![next, *extra8];
                // PadN options (255 padding bytes at most each) fill the rest.
                let mut left = total - 2;
                while left > 0 {
                    if left == 1 {
                        b.push(0); // Pad1
                        left = 0;
                    } else {
                        let n = (left - 2).min(255);
                        b.extend([1, n as u8]);
                        b.extend(std::iter::repeat_n(0, n));
                        left -= n + 2;
                    }
                }
                b
            }
            Ext::Routing {
                routing_type,
                segments_left,
                addrs,
            } => {
                let mut b = vec![next, (addrs.len() * 2) as u8, *routing_type, *segments_left];
                b.extend([0; 4]);
                for a in addrs {
                    b.extend(a.octets());
                }
                b
            }
            Ext::Fragment { offset, more, id } => {
                let mut b = vec![next, 0];
                b.extend((offset << 3 | *more as u16).to_be_bytes());
                b.extend(id.to_be_bytes());
                b
            }
            Ext::Ah { spi, icv_len } => {
                let total = 12 + icv_len;
                let mut b = vec![next, (total / 4 - 2) as u8, 0, 0];
                b.extend(spi.to_be_bytes());
                b.extend(1u32.to_be_bytes()); // sequence number
                b.extend(std::iter::repeat_n(0xa5, *icv_len));
                b
            }
        }
    }
}

/// IPv6 header fields and extension headers.
#[derive(Clone, Debug)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub flow_label: u32,
    pub ext: Vec<Ext>,
    pub version: Option<u8>,
    pub payload_len: Option<u16>,
    /// Next header of the fixed header (default: the first extension header or L4).
    pub next_header: Option<u8>,
}

#[derive(Clone, Debug)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Raw option bytes, padded with zeros to a multiple of 4.
    pub options: Vec<u8>,
    /// In 32-bit words.
    pub data_offset: Option<u8>,
}

#[derive(Clone, Debug)]
pub enum L4 {
    /// No transport header; the IP protocol number is given, the payload follows.
    Raw(u8),
    Tcp(Tcp),
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
        vtag: u32,
    },
    /// ICMP (IPv4) or ICMPv6 (`v6`): type, code, then identifier and sequence.
    Icmp {
        v6: bool,
        ty: u8,
        code: u8,
        id: u16,
        seq: u16,
    },
}

impl L4 {
    pub fn proto(&self) -> u8 {
        match self {
            L4::Raw(p) => *p,
            L4::Tcp(_) => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Sctp { .. } => PROTO_SCTP,
            L4::Icmp { v6: false, .. } => PROTO_ICMP,
            L4::Icmp { v6: true, .. } => PROTO_ICMPV6,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Net {
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    /// An ARP request (Ethernet/IPv4) for `target`.
    Arp {
        sender: Ipv4Addr,
        target: Ipv4Addr,
    },
    /// Any other ethertype; the payload follows the Ethernet header as is.
    Ether(u16),
}

/// One frame: Ethernet, VLAN tags, a network layer, a transport layer, payload.
#[derive(Clone, Debug)]
pub struct Packet {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// (TPID, TCI) outermost first.
    pub vlans: Vec<(u16, u16)>,
    pub net: Net,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Packet {
    fn with_net(net: Net) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            vlans: Vec::new(),
            net,
            l4: L4::Raw(PROTO_NONE),
            payload: Vec::new(),
        }
    }

    /// An IPv4 or IPv6 packet, by the family of the two addresses (which must match).
    pub fn ip(src: &str, dst: &str) -> Self {
        let parse = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{s:?}: {e}"));
        match (parse(src), parse(dst)) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Self::ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => Self::ipv6(s, d),
            _ => panic!("mixed address families: {src} -> {dst}"),
        }
    }

    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self::with_net(Net::Ipv4(Ipv4 {
            src,
            dst,
            ttl: 64,
            id: 1,
            dont_fragment: false,
            more_fragments: false,
            frag_offset: 0,
            options: Vec::new(),
            version: None,
            ihl: None,
            total_len: None,
            protocol: None,
            checksum: None,
        }))
    }

    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self::with_net(Net::Ipv6(Ipv6 {
            src,
            dst,
            hop_limit: 64,
            flow_label: 0,
            ext: Vec::new(),
            version: None,
            payload_len: None,
            next_header: None,
        }))
    }

    pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        let mut p = Self::with_net(Net::Arp { sender, target });
        p.dst_mac = [0xff; 6];
        p
    }

    /// A frame of another ethertype carrying only the payload.
    pub fn ethertype(ethertype: u16) -> Self {
        Self::with_net(Net::Ether(ethertype))
    }

    /// Adds a VLAN tag inside the ones already there (call outermost first).
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlans.push((tpid, vid & 0x0fff));
        self
    }

    pub fn tcp(mut self, sport: u16, dport: u16, flags: u8) -> Self {
        self.l4 = L4::Tcp(Tcp {
            sport,
            dport,
            flags,
            seq: 1000,
            ack: if flags & TCP_ACK != 0 { 2000 } else { 0 },
            window: 65535,
            options: Vec::new(),
            data_offset: None,
        });
        self
    }

    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Udp { sport, dport };
        self
    }

    pub fn sctp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Sctp {
            sport,
            dport,
            vtag: 0,
        };
        self
    }

    pub fn icmp(mut self, ty: u8, code: u8, id: u16) -> Self {
        self.l4 = L4::Icmp {
            v6: false,
            ty,
            code,
            id,
            seq: 1,
        };
        self
    }

    pub fn icmpv6(mut self, ty: u8, code: u8, id: u16) -> Self {
        self.l4 = L4::Icmp {
            v6: true,
            ty,
            code,
            id,
            seq: 1,
        };
        self
    }

    /// No transport header: IP protocol `proto`, then the payload.
    pub fn proto(mut self, proto: u8) -> Self {
        self.l4 = L4::Raw(proto);
        self
    }

    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Appends an IPv6 extension header (after those already there).
    pub fn ext(mut self, e: Ext) -> Self {
        self.ipv6_fields().ext.push(e);
        self
    }

    /// Edits the IPv4 header fields (panics on another network layer).
    pub fn ipv4_mut(mut self, f: impl FnOnce(&mut Ipv4)) -> Self {
        match &mut self.net {
            Net::Ipv4(h) => f(h),
            other => panic!("not an IPv4 packet: {other:?}"),
        }
        self
    }

    /// Edits the IPv6 header fields (panics on another network layer).
    pub fn ipv6_mut(mut self, f: impl FnOnce(&mut Ipv6)) -> Self {
        f(self.ipv6_fields());
        self
    }

    /// Edits the TCP header fields (panics on another transport).
    pub fn tcp_mut(mut self, f: impl FnOnce(&mut Tcp)) -> Self {
        match &mut self.l4 {
            L4::Tcp(t) => f(t),
            other => panic!("not a TCP packet: {other:?}"),
        }
        self
    }

    fn ipv6_fields(&mut self) -> &mut Ipv6 {
        match &mut self.net {
            Net::Ipv6(h) => h,
            other => panic!("not an IPv6 packet: {other:?}"),
        }
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend(self.dst_mac);
        f.extend(self.src_mac);
        for (tpid, tci) in &self.vlans {
            f.extend(tpid.to_be_bytes());
            f.extend(tci.to_be_bytes());
        }
        match &self.net {
            Net::Ipv4(h) => {
                f.extend(ETH_P_IP.to_be_bytes());
                let l4 = self.l4_bytes(&Pseudo::V4(h.src, h.dst));
                f.extend(ipv4_header(h, self.l4.proto(), l4.len()));
                f.extend(l4);
            }
            Net::Ipv6(h) => {
                f.extend(ETH_P_IPV6.to_be_bytes());
                let l4 = self.l4_bytes(&Pseudo::V6(h.src, h.dst));
                let mut exts = Vec::new();
                for (i, e) in h.ext.iter().enumerate() {
                    let next = h.ext.get(i + 1).map_or(self.l4.proto(), Ext::proto);
                    exts.extend(e.bytes(next));
                }
                let first = h.ext.first().map_or(self.l4.proto(), Ext::proto);
                let payload_len = h.payload_len.unwrap_or((exts.len() + l4.len()) as u16);
                let version = h.version.unwrap_or(6) as u32;
                let word0 = version << 28 | (h.flow_label & 0xf_ffff);
                f.extend(word0.to_be_bytes());
                f.extend(payload_len.to_be_bytes());
                f.push(h.next_header.unwrap_or(first));
                f.push(h.hop_limit);
                f.extend(h.src.octets());
                f.extend(h.dst.octets());
                f.extend(exts);
                f.extend(l4);
            }
            Net::Arp { sender, target } => {
                f.extend(ETH_P_ARP.to_be_bytes());
                f.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
                f.extend(self.src_mac);
                f.extend(sender.octets());
                f.extend([0; 6]);
                f.extend(target.octets());
                f.extend(&self.payload);
            }
            Net::Ether(t) => {
                f.extend(t.to_be_bytes());
                f.extend(&self.payload);
            }
        }
        f
    }

    /// Transport header plus payload, checksummed over `pseudo`.
    fn l4_bytes(&self, pseudo: &Pseudo) -> Vec<u8> {
        let mut b = Vec::new();
        // Offset of the checksum field, if the protocol has one we fill in.
        let csum_at = match &self.l4 {
            L4::Raw(_) => None,
            L4::Tcp(t) => {
                let mut options = t.options.clone();
                options.resize(options.len().div_ceil(4) * 4, 0);
                let doff = t.data_offset.unwrap_or((5 + options.len() / 4) as u8);
                b.extend(t.sport.to_be_bytes());
                b.extend(t.dport.to_be_bytes());
                b.extend(t.seq.to_be_bytes());
                b.extend(t.ack.to_be_bytes());
                b.push(doff << 4);
                b.push(t.flags);
                b.extend(t.window.to_be_bytes());
                b.extend([0, 0, 0, 0]); // checksum, urgent pointer
                b.extend(options);
                Some(16)
            }
            L4::Udp { sport, dport } => {
                b.extend(sport.to_be_bytes());
                b.extend(dport.to_be_bytes());
                b.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                b.extend([0, 0]);
                Some(6)
            }
            L4::Sctp { sport, dport, vtag } => {
                b.extend(sport.to_be_bytes());
                b.extend(dport.to_be_bytes());
                b.extend(vtag.to_be_bytes());
                b.extend([0; 4]); // CRC32c, left zero
                None
            }
            L4::Icmp {
                ty, code, id, seq, ..
            } => {
                b.extend([*ty, *code, 0, 0]);
                b.extend(id.to_be_bytes());
                b.extend(seq.to_be_bytes());
                Some(2)
            }
        };
        b.extend(&self.payload);
        if let Some(at) = csum_at {
            let proto = self.l4.proto();
            // ICMP (IPv4) has no pseudo-header; the others do.
            let sum = if proto == PROTO_ICMP {
                checksum(&[&b])
            } else {
                checksum(&[&pseudo.bytes(proto, b.len()), &b])
            };
            let sum = if proto == PROTO_UDP && sum == 0 {
                0xffff
            } else {
                sum
            };
            b[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        b
    }
}

enum Pseudo {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Pseudo {
    fn bytes(&self, proto: u8, len: usize) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Pseudo::V4(s, d) => {
                b.extend(s.octets());
                b.extend(d.octets());
                b.extend([0, proto]);
                b.extend((len as u16).to_be_bytes());
            }
            Pseudo::V6(s, d) => {
                // The routing header's final destination is ignored: frames here
                // carry routing headers with no segments left.
                b.extend(s.octets());
                b.extend(d.octets());
                b.extend((len as u32).to_be_bytes());
                b.extend([0, 0, 0, proto]);
            }
        }
        b
    }
}

fn ipv4_header(h: &Ipv4, proto: u8, l4_len: usize) -> Vec<u8> {
    let mut options = h.options.clone();
    options.resize(options.len().div_ceil(4) * 4, 0);
    let hlen = 20 + options.len();
    let ihl = h.ihl.unwrap_or((hlen / 4) as u8);
    let version = h.version.unwrap_or(4);
    let total = h.total_len.unwrap_or((hlen + l4_len) as u16);
    let flags_frag =
        (h.dont_fragment as u16) << 14 | (h.more_fragments as u16) << 13 | (h.frag_offset & 0x1fff);
    let mut b = vec![version << 4 | (ihl & 0x0f), 0];
    b.extend(total.to_be_bytes());
    b.extend(h.id.to_be_bytes());
    b.extend(flags_frag.to_be_bytes());
    b.push(h.ttl);
    b.push(h.protocol.unwrap_or(proto));
    b.extend([0, 0]);
    b.extend(h.src.octets());
    b.extend(h.dst.octets());
    b.extend(options);
    let sum = h.checksum.unwrap_or_else(|| checksum(&[&b]));
    b[10..12].copy_from_slice(&sum.to_be_bytes());
    b
}

/// The Internet checksum (RFC 1071) of the concatenated parts.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &byte in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, byte])),
                None => odd = Some(byte),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites the IPv4 total length (and header checksum) of the IPv4 header at
/// `l3` to cover exactly the bytes of `frame` after `l3`, as far as the header is
/// present. For truncated frames whose lengths still agree.
pub fn fix_ipv4_len(frame: &mut [u8], l3: usize) {
    if frame.len() >= l3 + 4 {
        let total = (frame.len() - l3) as u16;
        frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    }
    let hlen = frame
        .get(l3)
        .map_or(20, |b| (b & 0x0f) as usize * 4)
        .max(20);
    if frame.len() >= l3 + hlen {
        frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let sum = checksum(&[&frame[l3..l3 + hlen]]);
        frame[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Rewrites the IPv6 payload length of the header at `l3` to cover exactly the
/// bytes of `frame` after the fixed header (0 when there are none).
pub fn fix_ipv6_len(frame: &mut [u8], l3: usize) {
    if frame.len() >= l3 + 6 {
        let payload = frame.len().saturating_sub(l3 + 40) as u16;
        frame[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
    }
}

/// `frame` as hex, 16 bytes a line, for failure messages.
pub fn hex(frame: &[u8]) -> String {
    frame
        .chunks(16)
        .enumerate()
        .map(|(i, line)| {
            let bytes: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}: {}", i * 16, bytes.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_tcp_layout_and_checksums() {
        let f = Packet::ip("10.0.1.5", "10.0.2.7")
            .tcp(40000, 5432, TCP_SYN)
            .build();
        assert_eq!(f.len(), 54);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14], 0x45);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 40);
        assert_eq!(f[23], PROTO_TCP);
        // A correct header sums to zero.
        assert_eq!(checksum(&[&f[14..34]]), 0);
        let pseudo = Pseudo::V4([10, 0, 1, 5].into(), [10, 0, 2, 7].into());
        assert_eq!(checksum(&[&pseudo.bytes(PROTO_TCP, 20), &f[34..]]), 0);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 5432);
        assert_eq!(f[46], 0x50);
        assert_eq!(f[47], TCP_SYN);
    }

    #[test]
    fn vlan_tags_and_ipv6_extension_chain() {
        let f = Packet::ip("fd00:1::5", "fd00:2::7")
            .vlan(ETH_P_8021AD, 100)
            .vlan(ETH_P_8021Q, 200)
            .ext(Ext::hop_by_hop())
            .ext(Ext::routing())
            .ext(Ext::fragment(0, true, 7))
            .ext(Ext::ah())
            .udp(5353, 53)
            .payload(b"abcd")
            .build();
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        assert_eq!(&f[16..18], &[0x81, 0x00]);
        assert_eq!(&f[20..22], &[0x86, 0xdd]);
        let l3 = 22;
        let exts = 8 + 24 + 8 + 24;
        assert_eq!(f.len(), l3 + 40 + exts + 8 + 4);
        assert_eq!(
            u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]) as usize,
            exts + 12
        );
        assert_eq!(f[l3 + 6], PROTO_HOPOPTS);
        let e = l3 + 40;
        assert_eq!((f[e], f[e + 1]), (PROTO_ROUTING, 0));
        assert_eq!((f[e + 8], f[e + 9]), (PROTO_FRAGMENT, 2));
        assert_eq!(f[e + 32], PROTO_AH);
        assert_eq!(&f[e + 34..e + 36], &[0, 1]); // offset 0, M
        assert_eq!((f[e + 40], f[e + 41]), (PROTO_UDP, 4));
        assert_eq!(&f[e + 64 + 2..e + 64 + 4], &53u16.to_be_bytes());
    }

    #[test]
    fn truncation_helpers_keep_lengths_consistent() {
        let mut f = Packet::ip("10.0.1.5", "10.0.2.7")
            .ipv4_mut(|h| h.options = vec![0x94, 0x04, 0, 0])
            .udp(1, 2)
            .build();
        f.truncate(40);
        fix_ipv4_len(&mut f, 14);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 26);
        assert_eq!(checksum(&[&f[14..38]]), 0);
        let mut f = Packet::ip("::1", "::2").udp(1, 2).build();
        f.truncate(14 + 40 + 3);
        fix_ipv6_len(&mut f, 14);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 3);
    }
}
