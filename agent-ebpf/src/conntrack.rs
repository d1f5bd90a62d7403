//! Connection tracking: one entry per flow for both directions (the key is
//! normalised), so a reply finds its request's entry and the policy is asked
//! once per flow, not once per packet.
use agent_common::{
    CT_F_FIN_ORIG, CT_F_FIN_REPLY, CT_F_REPLY_SEEN, CT_F_RST, CT_F_SYNACK, IPPROTO_TCP,
};

use crate::{
    family::Family,
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// The direction-normalised conntrack key of a packet, and whether its source
/// is endpoint B (the larger one), so both directions share one entry.
#[inline(always)]
pub fn ct_key<F: Family>(
    src: &F::Addr,
    dst: &F::Addr,
    sp: u16,
    dp: u16,
    proto: u8,
) -> (F::CtKey, bool) {
    let src_is_b = F::addr_gt(src, dst).unwrap_or(sp > dp);
    let key = if src_is_b {
        F::make_ct_key(dst, src, dp, sp, proto)
    } else {
        F::make_ct_key(src, dst, sp, dp, proto)
    };
    (key, src_is_b)
}

/// Folds this packet's TCP flags into the entry's state.
#[inline(always)]
pub fn ct_flags_after(flags: u32, is_orig: bool, proto: u8, tcp_flags: u8) -> u32 {
    let mut f = flags;
    if !is_orig {
        f |= CT_F_REPLY_SEEN;
    }
    if proto == IPPROTO_TCP {
        if tcp_flags & TCP_RST != 0 {
            f |= CT_F_RST;
        }
        if tcp_flags & TCP_FIN != 0 {
            f |= if is_orig {
                CT_F_FIN_ORIG
            } else {
                CT_F_FIN_REPLY
            };
        }
        if !is_orig && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
            f |= CT_F_SYNACK;
        }
    }
    f
}
