//! Reclaims expired conntrack and fragment entries. The datapath already
//! ignores expired entries; sweeping them keeps the LRU maps for live flows.
use agent_common::{
    ct_timeout, map_names, Config, CtKey4, CtKey6, CtValue, FragKey4, FragKey6, FragValue,
};
use aya::{
    maps::{HashMap, MapData},
    Pod,
};

trait CtProto {
    fn proto(&self) -> u8;
}
impl CtProto for CtKey4 {
    fn proto(&self) -> u8 {
        self.proto
    }
}
impl CtProto for CtKey6 {
    fn proto(&self) -> u8 {
        self.proto
    }
}

fn sweep<K: Pod, V: Pod>(
    map: &mut HashMap<&mut MapData, K, V>,
    expired: impl Fn(&K, &V) -> bool,
) -> usize {
    let dead: Vec<K> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| expired(k, v))
        .map(|(k, _)| k)
        .collect();
    // Listing a big map takes a while; a flow re-created or resumed since it
    // was listed must not be deleted, so each entry is read again first. (A
    // packet can still land between this read and the delete: the window is
    // one syscall, not the whole sweep.)
    let mut removed = 0;
    for k in &dead {
        if map.get(k, 0).is_ok_and(|v| expired(k, &v)) && map.remove(k).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// What one sweep deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub conntrack: usize,
    pub fragments: usize,
}

/// Deletes entries idle longer than their timeout at `now` (jiffies); returns
/// how many were removed.
pub fn collect(ebpf: &mut aya::Ebpf, cfg: &Config, now: u64) -> Result<Swept, aya::maps::MapError> {
    let ct_expired = |k: &dyn CtProto, v: &CtValue| {
        now.saturating_sub(v.last_seen) >= ct_timeout(cfg, k.proto(), v.flags)
    };
    let mut removed = 0;
    if let Some(m) = ebpf.map_mut(map_names::CT4) {
        let mut m: HashMap<_, CtKey4, CtValue> = HashMap::try_from(m)?;
        removed += sweep(&mut m, |k, v| ct_expired(k, v));
    }
    if let Some(m) = ebpf.map_mut(map_names::CT6) {
        let mut m: HashMap<_, CtKey6, CtValue> = HashMap::try_from(m)?;
        removed += sweep(&mut m, |k, v| ct_expired(k, v));
    }
    // Readers tell sweeper deletions from LRU evictions by this count.
    if let Err(e) = crate::datapath::note_gc_removed(ebpf, removed) {
        log::warn!("recording conntrack sweeper deletions: {e:#}");
    }
    let conntrack = removed;
    removed = 0;
    let frag_expired = |v: &FragValue| now.saturating_sub(v.seen) >= cfg.frag_timeout;
    if let Some(m) = ebpf.map_mut(map_names::FRAG4) {
        let mut m: HashMap<_, FragKey4, FragValue> = HashMap::try_from(m)?;
        removed += sweep(&mut m, |_, v| frag_expired(v));
    }
    if let Some(m) = ebpf.map_mut(map_names::FRAG6) {
        let mut m: HashMap<_, FragKey6, FragValue> = HashMap::try_from(m)?;
        removed += sweep(&mut m, |_, v| frag_expired(v));
    }
    Ok(Swept {
        conntrack,
        fragments: removed,
    })
}

use super::{error::map_err, Datapath};

impl Datapath {
    /// Deletes expired conntrack and fragment entries; returns how many.
    pub fn collect_expired(&mut self) -> super::error::Result<Swept> {
        let now = self.jiffies()?;
        let cfg = self.config;
        collect(&mut self.ebpf, &cfg, now).map_err(map_err("conntrack"))
    }
}
