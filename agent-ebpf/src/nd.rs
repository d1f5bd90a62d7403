//! IPv6 neighbour discovery (ICMPv6 133-137) and multicast listener discovery
//! (130-132, 143) pass whatever the policy, because the link needs them; so
//! they pass only with the shape RFC 4861 and RFC 3810 give link traffic.
//! Anything else with those types would carry a payload the policy never
//! judged to an address off the link.
use crate::sources;

/// What a discovery message is, from its headers alone.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nd {
    /// Link traffic: passes whatever the policy.
    Link,
    /// A router advertisement or redirect shaped as link traffic: passes
    /// unless it enters a pod interface.
    RouterMessage,
    /// Not what the RFCs allow: dropped (`nd-invalid`).
    Invalid,
}

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const NEIGHBOUR_SOLICITATION: u8 = 135;
const REDIRECT: u8 = 137;
const MLDV2_REPORT: u8 = 143;

/// The address as two big-endian words: compared as integers, never as
/// slices (which LLVM may turn into a memcmp call BPF does not have).
#[inline(always)]
fn words(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

#[inline(always)]
fn link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

#[inline(always)]
fn unspecified(a: &[u8; 16]) -> bool {
    words(a) == (0, 0)
}

/// ff02::/16: link-scope multicast (all-nodes, all-routers, solicited-node,
/// MLDv2 routers).
#[inline(always)]
fn link_multicast(a: &[u8; 16]) -> bool {
    a[0] == 0xff && a[1] & 0x0f == 0x02
}

/// ff02::1:ff00:0/104 (RFC 4291 section 2.7.1).
#[inline(always)]
fn solicited_node(a: &[u8; 16]) -> bool {
    let (hi, lo) = words(a);
    hi == 0xff02_0000_0000_0000 && lo >> 24 == 0x01ff
}

/// Whether `a` and `b` share their first 64 bits: the on-link prefix of any
/// link with interface identifiers (RFC 4291 section 2.5.1).
#[inline(always)]
fn same_64(a: &[u8; 16], b: &[u8; 16]) -> bool {
    words(a).0 == words(b).0
}

/// What an unfragmented discovery message of type `ty` is (RFC 6980: a
/// fragmented one is invalid whatever its headers). `entering`: the packet enters
/// the node (XDP); otherwise it leaves it (TC). A function of its own (not
/// inlined, unlike the rest of the datapath): discovery is rare, so the
/// call's cost does not matter, and inlined it costs the programs stack and
/// verifier work on every path.
#[inline(never)]
pub fn shape(ty: u8, hop_limit: u8, src: &[u8; 16], dst: &[u8; 16], entering: bool) -> Nd {
    if ty < ROUTER_SOLICITATION || ty == MLDV2_REPORT {
        // RFC 2710 section 3 and RFC 3810 section 5: hop limit 1 (so no
        // router forwards it), a link-local source (an MLDv2 report may use
        // the unspecified one while its address is tentative), a multicast
        // destination.
        let src_ok = link_local(src) || (ty == MLDV2_REPORT && unspecified(src));
        return if hop_limit == 1 && src_ok && dst[0] == 0xff {
            Nd::Link
        } else {
            Nd::Invalid
        };
    }
    // RFC 4861 sections 6.1, 7.1 and 8.1: hop limit 255, which no routed
    // packet has (every router on the way decrements it).
    if hop_limit != 255 {
        return Nd::Invalid;
    }
    // Advertisements and redirects come from a router's link-local address.
    let router_msg = ty == ROUTER_ADVERTISEMENT || ty == REDIRECT;
    if router_msg && !link_local(src) {
        return Nd::Invalid;
    }
    if unspecified(src) {
        // Only a solicitation may come from a node with no address yet, and
        // a neighbour solicitation then only goes to a solicited-node group
        // (duplicate address detection, RFC 4862 section 5.4.2).
        let ok = ty == ROUTER_SOLICITATION || (ty == NEIGHBOUR_SOLICITATION && solicited_node(dst));
        if !ok {
            return Nd::Invalid;
        }
    }
    // Unicast destinations: reachability probes, solicited advertisements,
    // redirects. Leaving the node (TC) with hop limit 255 a packet was made
    // here or bridged, never routed. Entering it, a global destination is on
    // the link only if it shares the sender's /64; otherwise the node would
    // route it on, and discovery never leaves its link.
    let on_link = if dst[0] == 0xff {
        link_multicast(dst)
    } else {
        link_local(dst) || !entering || same_64(src, dst)
    };
    match (on_link, router_msg) {
        (false, _) => Nd::Invalid,
        (true, true) => Nd::RouterMessage,
        (true, false) => Nd::Link,
    }
}

/// Whether a discovery message of shape `nd` passes on `ifindex` (the
/// interface an XDP packet entered on; 0 on TC). A pod is no router: its
/// advertisements and redirects would misdirect its neighbours on a bridge.
#[inline(always)]
pub fn passes(nd: Nd, ifindex: u32) -> bool {
    match nd {
        Nd::Link => true,
        Nd::RouterMessage => ifindex == 0 || !sources::is_pod(ifindex),
        Nd::Invalid => false,
    }
}
