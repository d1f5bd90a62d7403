//! ICMP and ICMPv6 errors pass when they belong to a tracked flow (Cilium's
//! CT_RELATED, Calico's RELATED): the header an error quotes must be a packet
//! of a live conntrack entry's flow, and the error must go back to that
//! packet's source. Judging errors by type and code would let anyone forge
//! "fragmentation needed" about any flow, or use errors as a data channel.
use agent_common::{ct_timeout, reason, Config};

use crate::{
    conntrack::{self, ct_key},
    family::Family,
    flow::{now, Decision},
    parse::{Bounds, Ip},
};

/// Verdict of an ICMP error (`Track::Related`): passes (`related`, under the
/// flow's rule) or is dropped (`icmp-unrelated`; a cut or malformed quote is
/// `malformed-l4`). The policy is not asked: an error of an allowed flow
/// passes without an ICMP rule, and no rule lets an unrelated one through.
#[inline(always)]
pub fn judge<F: Family>(b: &Bounds, cfg: &Config, ip: &Ip<F::Addr>) -> Decision {
    const UNRELATED: (u32, bool) = (reason::DROP_ICMP_UNRELATED, false);
    // Where the quote starts and how long it may be (see `parse::L4`).
    let (off, len) = (ip.l4.sport as usize, ip.l4.dport as usize);
    let q = F::quote(b, off, len).map_err(|r| (r, false))?;
    let Some(q) = q else {
        return Err(UNRELATED);
    };
    // An error goes back to whoever sent the packet it quotes.
    if F::addr_gt(q.src, &ip.dst).is_some() {
        return Err(UNRELATED);
    }
    let slot = F::quote_key().ok_or(UNRELATED)?;
    // SAFETY: this CPU's scratch slot; nothing else runs on it meanwhile.
    let key = unsafe { &mut *slot };
    *key = ct_key::<F>(q.src, q.dst, q.sport, q.dport, q.proto).0;
    match conntrack::entry::<F>(key) {
        Some(e) if now().saturating_sub(e.last_seen) < ct_timeout(cfg, q.proto, e.flags) => {
            Ok((reason::PASS_RELATED, e.rule_id))
        }
        _ => Err(UNRELATED),
    }
}
