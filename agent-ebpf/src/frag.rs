//! Fragments: only the first fragment of a datagram carries ports, so its
//! verdict is remembered and applied to the fragments that follow it.
use agent_common::{reason, Config, FragValue, MODE_AUDIT};

use crate::{
    family::Family,
    flow::{now, Decision},
    parse::{Frag, Ip},
};

/// Verdict of a later fragment (datagram `id`): it passes while its first
/// fragment's pass is fresh, and is dropped otherwise.
#[inline(always)]
pub fn later_fragment<F: Family>(cfg: &Config, ip: &Ip<F::Addr>, id: u32) -> Decision {
    let key = F::frag_key(&ip.src, &ip.dst, id, ip.frag_proto);
    match F::frag().get_ptr(&key) {
        Some(v) if now().saturating_sub(unsafe { (*v).seen }) < cfg.frag_timeout => {
            Ok((reason::PASS_FRAGMENT, 0))
        }
        _ => Err((reason::DROP_FRAGMENT, cfg.mode == MODE_AUDIT)),
    }
}

/// Remembers a passed first fragment so the rest of its datagram follows it.
#[inline(always)]
pub fn note_first_fragment<F: Family>(ip: &Ip<F::Addr>) {
    if let Frag::First(id) = ip.frag {
        let key = F::frag_key(&ip.src, &ip.dst, id, ip.frag_proto);
        let _ = F::frag().insert(&key, FragValue { seen: now() }, 0);
    }
}
