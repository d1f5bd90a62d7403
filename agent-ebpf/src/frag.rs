//! Fragments: only the first fragment of a datagram carries ports, so its
//! verdict is remembered and applied to the fragments that follow it.
use agent_common::FragValue;

use crate::{
    family::Family,
    flow::now,
    parse::{Frag, Ip},
};

/// Remembers a passed first fragment so the rest of its datagram follows it.
#[inline(always)]
pub fn note_first_fragment<F: Family>(ip: &Ip<F::Addr>) {
    if let Frag::First(id) = ip.frag {
        let key = F::frag_key(&ip.src, &ip.dst, id, ip.frag_proto);
        let _ = F::frag().insert(&key, FragValue { seen: now() }, 0);
    }
}
