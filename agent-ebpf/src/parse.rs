//! Header parsing: Ethernet, up to two VLAN tags, IPv4 (with options), IPv6 (a
//! bounded walk over extension headers), and the L4 fields policy needs. Every
//! read is bounds-checked; a failure names the layer so it is counted.
use agent_common::{reason, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

use crate::nd::{self, Nd};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;
const IPV6_HLEN: usize = 40;
/// Extension headers walked before giving up (HbH, Dest, Routing, Frag, AH, Dest).
const MAX_IPV6_EXT_HDRS: usize = 6;
/// Upper bound on where the L4 header may start; keeps offsets verifier-friendly.
pub const MAX_L4_OFFSET: usize = 512;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// What conntrack does with a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Opens a flow (TCP SYN, ICMP echo request): straight to policy, then create.
    Open,
    /// May belong to a flow: conntrack first, then policy, then create.
    Lookup,
    /// May close a flow but never opens one (TCP RST): conntrack first, then
    /// policy, never create.
    LookupNoCreate,
    /// Only ever a reply (ICMP echo reply): conntrack in the reply direction,
    /// then policy, never create.
    Reply,
    /// An ICMP or ICMPv6 error: passes only if the packet it quotes belongs to
    /// a tracked flow (`related`), whatever the policy.
    Related,
    /// Stateless (other ICMP): policy only.
    PolicyOnly,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    None,
    /// Offset 0 with more fragments: has the L4 header; remember its verdict.
    First(u32),
    /// Offset > 0: no L4 header; judged by the first fragment's verdict.
    Later(u32),
}

pub struct L4 {
    pub proto: u8,
    /// Conntrack ports, host order (ICMP echo: the identifier on both sides).
    /// An ICMP error (`Track::Related`) has no ports of its own: there `sport`
    /// is the offset of the IP header it quotes and `dport` the bytes of the
    /// IP packet from there on, which spares the stack two fields on every
    /// packet's path.
    pub sport: u16,
    pub dport: u16,
    /// What rules match on: destination port, or ICMP `type << 8 | code`.
    pub policy_port: u16,
    pub tcp_flags: u8,
    pub track: Track,
}

/// The addresses lead, at aligned offsets of an 8-aligned struct, so the
/// conntrack key and its comparison are built from them with word loads and
/// stores (an IPv6 address is two words, not 16 bytes).
#[repr(C, align(8))]
pub struct Ip<A> {
    pub src: A,
    pub dst: A,
    pub frag: Frag,
    /// The protocol every fragment of the datagram names: the IPv4 protocol, or
    /// the IPv6 fragment header's next header (later fragments see no further).
    pub frag_proto: u8,
    pub l4: L4,
}

/// Where the network header starts and what it is.
pub enum L3 {
    V4(usize),
    V6(usize),
    /// ARP and every other non-IP frame.
    NonIp,
}

/// Outcome of parsing an IPv6 packet.
pub enum Parsed6 {
    Ip(Ip<[u8; 16]>),
    /// ICMPv6 neighbour or multicast listener discovery, and what it is
    /// (`nd::shape`).
    NeighbourDiscovery(Nd),
}

/// Bounds of the packet: [start, end) readable, `len` bytes in total (TC may
/// hold part of the packet outside the linear area).
#[derive(Clone, Copy)]
pub struct Bounds {
    pub start: usize,
    pub end: usize,
    pub len: usize,
}

impl Bounds {
    /// A reference to the `N` header bytes at `off`, if all are in the packet.
    /// Whole headers are read through one bounds check; single-byte checks at
    /// variable offsets get rewritten by LLVM into a form the verifier rejects.
    #[inline(always)]
    fn hdr<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        if self.start + off + N > self.end {
            return None;
        }
        // SAFETY: bounds checked against the packet end just above.
        Some(unsafe { &*((self.start + off) as *const [u8; N]) })
    }
}

#[inline(always)]
fn be16(h: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([h[i], h[i + 1]])
}

#[inline(always)]
fn be32(h: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]])
}

#[inline(always)]
fn addr<const N: usize>(h: &[u8], i: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&h[i..i + N]);
    a
}

/// Parses the link layer; `Err(reason)` is a drop reason for a malformed packet.
#[inline(always)]
pub fn parse_l2(b: &Bounds) -> Result<L3, u32> {
    let mut off = ETH_HLEN;
    let eth = b.hdr::<ETH_HLEN>(0).ok_or(reason::DROP_MALFORMED_L2)?;
    let mut ethertype = be16(eth, 12);
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag = b.hdr::<VLAN_HLEN>(off).ok_or(reason::DROP_MALFORMED_L2)?;
        ethertype = be16(tag, 2);
        off += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IP => Ok(L3::V4(off)),
        ETH_P_IPV6 => Ok(L3::V6(off)),
        ETH_P_8021Q | ETH_P_8021AD => Err(reason::DROP_MALFORMED_L2),
        _ => Ok(L3::NonIp),
    }
}

#[inline(always)]
pub fn parse_ipv4(b: &Bounds, l3: usize) -> Result<Ip<[u8; 4]>, u32> {
    const BAD: u32 = reason::DROP_MALFORMED_IPV4;
    let h = b.hdr::<20>(l3).ok_or(BAD)?;
    let ihl = (h[0] & 0x0f) as usize * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Err(BAD);
    }
    let tot_len = be16(h, 2) as usize;
    if tot_len < ihl || l3 + tot_len > b.len {
        return Err(BAD);
    }
    // Bytes past the IP packet (link padding) are never parsed as headers.
    let ip_end = l3 + tot_len;
    let frag_off = be16(h, 6);
    let id = be16(h, 4) as u32;
    let proto = h[9];
    let src = addr::<4>(h, 12);
    let dst = addr::<4>(h, 16);
    // Options must be present too, even though nothing reads them.
    b.hdr::<4>(l3 + ihl - 4).ok_or(BAD)?;
    let frag = if frag_off & 0x1fff != 0 {
        Frag::Later(id)
    } else if frag_off & 0x2000 != 0 {
        Frag::First(id)
    } else {
        Frag::None
    };
    let l4 = if let Frag::Later(_) = frag {
        no_l4(proto)
    } else {
        parse_l4(b, l3 + ihl, ip_end, proto, false)?
    };
    Ok(Ip {
        src,
        dst,
        frag,
        frag_proto: proto,
        l4,
    })
}

/// `entering`: the packet enters the node (XDP), which neighbour discovery's
/// scope rules need.
#[inline(always)]
pub fn parse_ipv6(b: &Bounds, l3: usize, entering: bool) -> Result<Parsed6, u32> {
    const BAD: u32 = reason::DROP_MALFORMED_IPV6;
    let h = b.hdr::<IPV6_HLEN>(l3).ok_or(BAD)?;
    if h[0] >> 4 != 6 {
        return Err(BAD);
    }
    let payload_len = be16(h, 4) as usize;
    // Payload length 0 (jumbograms) has no place on these links.
    if payload_len == 0 || l3 + IPV6_HLEN + payload_len > b.len {
        return Err(BAD);
    }
    let ip_end = l3 + IPV6_HLEN + payload_len;
    let mut next = h[6];
    let hop_limit = h[7];
    let src = addr::<16>(h, 8);
    let dst = addr::<16>(h, 24);
    let mut off = l3 + IPV6_HLEN;
    let mut frag = Frag::None;
    let mut frag_proto = 0;
    let mut done = false;
    // One more round than headers walked: the last one finds the L4 protocol.
    for _ in 0..=MAX_IPV6_EXT_HDRS {
        match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let e = b.hdr::<2>(off).ok_or(BAD)?;
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                let e = b.hdr::<2>(off).ok_or(BAD)?;
                next = e[0];
                off += (e[1] as usize + 2) * 4;
            }
            44 => {
                let e = b.hdr::<8>(off).ok_or(BAD)?;
                next = e[0];
                frag_proto = e[0];
                let offset_flags = be16(e, 2);
                let id = be32(e, 4);
                off += 8;
                if offset_flags & 0xfff8 != 0 {
                    if off > ip_end {
                        return Err(BAD);
                    }
                    frag = Frag::Later(id);
                    done = true;
                    break;
                }
                if offset_flags & 1 != 0 {
                    frag = Frag::First(id);
                }
            }
            _ => {
                done = true;
                break;
            }
        }
        // A header that claims more bytes than the packet holds is cut.
        if off > MAX_L4_OFFSET || off > ip_end {
            return Err(BAD);
        }
    }
    if !done || off > MAX_L4_OFFSET {
        // The chain is longer than we walk: refuse rather than guess the L4.
        return Err(BAD);
    }
    let l4 = if let Frag::Later(_) = frag {
        no_l4(next)
    } else {
        parse_l4(b, off, ip_end, next, true)?
    };
    // Neighbour discovery (133-137) and the multicast listener messages it
    // relies on (130-132, 143: joining solicited-node groups, which
    // MLD-snooping switches need to see) are link infrastructure, if they
    // have its shape. (A later fragment has no L4 header: its policy_port is 0.)
    let ty = (l4.policy_port >> 8) as u8;
    if next == IPPROTO_ICMPV6 && matches!(ty, 130..=137 | 143) {
        // RFC 6980: discovery messages are never fragmented.
        let shape = if frag == Frag::None {
            nd::shape(ty, hop_limit, &src, &dst, entering)
        } else {
            Nd::Invalid
        };
        return Ok(Parsed6::NeighbourDiscovery(shape));
    }
    Ok(Parsed6::Ip(Ip {
        src,
        dst,
        frag,
        frag_proto,
        l4,
    }))
}

/// The header an ICMP error quotes: the packet that caused it, as its sender
/// sent it, as far as conntrack needs it. The addresses stay in the packet:
/// the programs have no stack to spare for copies.
pub struct Quote<'a, A> {
    pub src: &'a A,
    pub dst: &'a A,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// The `M` bytes at `i` of header `h`, in place.
#[inline(always)]
fn sub<const N: usize, const M: usize>(h: &[u8; N], i: usize) -> &[u8; M] {
    const { assert!(M <= N) };
    assert!(i + M <= N);
    // SAFETY: inside `h` (asserted; every caller's `i` is a constant).
    unsafe { &*(h.as_ptr().add(i) as *const [u8; M]) }
}

/// Bytes of the quoted transport header every error carries (RFC 792's "64
/// bits of data"): ports, or an echo request's identifier.
const QUOTED_L4: usize = 8;

/// The conntrack ports of a quoted transport header; `None` when it opens no
/// flow conntrack tracks (an ICMP message other than an echo request).
#[inline(always)]
fn quoted_ports(proto: u8, l4: &[u8; QUOTED_L4], v6: bool) -> Option<(u16, u16)> {
    match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => Some((be16(l4, 0), be16(l4, 2))),
        IPPROTO_ICMP if !v6 && l4[0] == 8 => Some((be16(l4, 4), be16(l4, 4))),
        IPPROTO_ICMPV6 if v6 && l4[0] == 128 => Some((be16(l4, 4), be16(l4, 4))),
        _ => None,
    }
}

/// The IPv4 header and 8 transport bytes an ICMP error quotes, at `off`,
/// `len` bytes of the outer IP packet long. `Err`: cut or not IPv4 (a
/// malformed error); `Ok(None)`: well-formed but of no flow (a later
/// fragment, an untracked protocol).
#[inline(always)]
pub fn parse_quote_v4(
    b: &Bounds,
    off: usize,
    len: usize,
) -> Result<Option<Quote<'_, [u8; 4]>>, u32> {
    const BAD: u32 = reason::DROP_MALFORMED_L4;
    // Bounded, so the verifier can follow the offsets derived from it.
    if off > MAX_L4_OFFSET + 8 {
        return Err(BAD);
    }
    let h = b.hdr::<20>(off).ok_or(BAD)?;
    let ihl = (h[0] & 0x0f) as usize * 4;
    if h[0] >> 4 != 4 || ihl < 20 || ihl + QUOTED_L4 > len {
        return Err(BAD);
    }
    let l4 = b.hdr::<QUOTED_L4>(off + ihl).ok_or(BAD)?;
    if be16(h, 6) & 0x1fff != 0 {
        return Ok(None);
    }
    Ok(quoted_ports(h[9], l4, false).map(|(sport, dport)| Quote {
        src: sub::<20, 4>(h, 12),
        dst: sub::<20, 4>(h, 16),
        sport,
        dport,
        proto: h[9],
    }))
}

/// As `parse_quote_v4`, for the IPv6 header an ICMPv6 error quotes. Quoted
/// extension headers are not walked: such a quote matches no flow.
#[inline(always)]
pub fn parse_quote_v6(
    b: &Bounds,
    off: usize,
    len: usize,
) -> Result<Option<Quote<'_, [u8; 16]>>, u32> {
    const BAD: u32 = reason::DROP_MALFORMED_L4;
    if off > MAX_L4_OFFSET + 8 {
        return Err(BAD);
    }
    let h = b.hdr::<IPV6_HLEN>(off).ok_or(BAD)?;
    if h[0] >> 4 != 6 || IPV6_HLEN + QUOTED_L4 > len {
        return Err(BAD);
    }
    let l4 = b.hdr::<QUOTED_L4>(off + IPV6_HLEN).ok_or(BAD)?;
    Ok(quoted_ports(h[6], l4, true).map(|(sport, dport)| Quote {
        src: sub::<IPV6_HLEN, 16>(h, 8),
        dst: sub::<IPV6_HLEN, 16>(h, 24),
        sport,
        dport,
        proto: h[6],
    }))
}

#[inline(always)]
fn no_l4(proto: u8) -> L4 {
    L4 {
        proto,
        sport: 0,
        dport: 0,
        policy_port: 0,
        tcp_flags: 0,
        track: Track::Lookup,
    }
}

#[inline(always)]
fn parse_l4(b: &Bounds, off: usize, ip_end: usize, proto: u8, v6: bool) -> Result<L4, u32> {
    const BAD: u32 = reason::DROP_MALFORMED_L4;
    // The header must lie inside the IP packet, not just inside the frame.
    let within = |len: usize| {
        if off + len <= ip_end {
            Ok(())
        } else {
            Err(BAD)
        }
    };
    match proto {
        IPPROTO_TCP => {
            let h = b.hdr::<20>(off).ok_or(BAD)?;
            let doff = (h[12] >> 4) as usize * 4;
            let flags = h[13];
            if doff < 20 {
                return Err(BAD);
            }
            within(doff)?;
            let track = if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                Track::Open
            } else if flags & TCP_RST != 0 {
                // A reset may close a tracked flow but never opens one.
                Track::LookupNoCreate
            } else {
                Track::Lookup
            };
            Ok(L4 {
                proto,
                sport: be16(h, 0),
                dport: be16(h, 2),
                policy_port: be16(h, 2),
                tcp_flags: flags,
                track,
            })
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            // UDP header is 8 bytes, SCTP common header 12.
            let h = if proto == IPPROTO_UDP {
                b.hdr::<8>(off).map(|h| &h[..])
            } else {
                b.hdr::<12>(off).map(|h| &h[..])
            }
            .ok_or(BAD)?;
            within(h.len())?;
            Ok(L4 {
                proto,
                sport: be16(h, 0),
                dport: be16(h, 2),
                policy_port: be16(h, 2),
                tcp_flags: 0,
                track: Track::Lookup,
            })
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let h = b.hdr::<8>(off).ok_or(BAD)?;
            within(8)?;
            let (ty, code) = (h[0], h[1]);
            let (request, reply) = if v6 { (128, 129) } else { (8, 0) };
            // Errors: destination unreachable, source quench, time exceeded,
            // parameter problem; ICMPv6 adds packet too big (1-4).
            let error = if v6 {
                matches!(ty, 1..=4)
            } else {
                matches!(ty, 3 | 4 | 11 | 12)
            };
            let (sport, dport, track) = if ty == request {
                (be16(h, 4), be16(h, 4), Track::Open)
            } else if ty == reply {
                (be16(h, 4), be16(h, 4), Track::Reply)
            } else if error {
                let quote = off + 8;
                (quote as u16, (ip_end - quote) as u16, Track::Related)
            } else {
                (0, 0, Track::PolicyOnly)
            };
            Ok(L4 {
                proto,
                sport,
                dport,
                policy_port: (ty as u16) << 8 | code as u16,
                tcp_flags: 0,
                track,
            })
        }
        _ => Ok(no_l4(proto)),
    }
}
