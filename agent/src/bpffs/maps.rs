//! Opens the maps a running agent pinned, for everything that reads verdicts
//! (the HTTP endpoint, `flows`, `stats`): readers never need the agent's
//! `Ebpf` handle, only its pin directory.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, RingBuf},
    Pod,
};

#[derive(Clone, Debug)]
pub struct Pinned {
    dir: PathBuf,
}

impl Pinned {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open(&self, name: &str) -> anyhow::Result<MapData> {
        let path = crate::bpffs::PinLayout::new(&self.dir).map(name);
        MapData::from_pin(&path).with_context(|| {
            format!(
                "opening {} (is the agent running with --pin-path {}?)",
                path.display(),
                self.dir.display()
            )
        })
    }

    pub fn per_cpu_array<V: Pod>(&self, name: &str) -> anyhow::Result<PerCpuArray<MapData, V>> {
        let map = Map::PerCpuArray(self.open(name)?);
        PerCpuArray::try_from(map).with_context(|| format!("map {name}"))
    }

    pub fn array<V: Pod>(&self, name: &str) -> anyhow::Result<Array<MapData, V>> {
        Array::try_from(Map::Array(self.open(name)?)).with_context(|| format!("map {name}"))
    }

    /// An LRU hash map (conntrack, denied flows).
    pub fn lru<K: Pod, V: Pod>(&self, name: &str) -> anyhow::Result<HashMap<MapData, K, V>> {
        HashMap::try_from(Map::LruHashMap(self.open(name)?)).with_context(|| format!("map {name}"))
    }

    /// A hash map (the node's addresses, sources).
    pub fn hash<K: Pod, V: Pod>(&self, name: &str) -> anyhow::Result<HashMap<MapData, K, V>> {
        HashMap::try_from(Map::HashMap(self.open(name)?)).with_context(|| format!("map {name}"))
    }

    /// An LPM trie (identities, rules).
    pub fn lpm_trie<K: Pod, V: Pod>(&self, name: &str) -> anyhow::Result<LpmTrie<MapData, K, V>> {
        LpmTrie::try_from(Map::LpmTrie(self.open(name)?)).with_context(|| format!("map {name}"))
    }

    pub fn ring_buf(&self, name: &str) -> anyhow::Result<RingBuf<MapData>> {
        RingBuf::try_from(Map::RingBuf(self.open(name)?)).with_context(|| format!("map {name}"))
    }

    /// A map's capacity (`max_entries`), as the kernel holds it.
    pub fn capacity(&self, name: &str) -> anyhow::Result<u32> {
        let info = self
            .open(name)?
            .info()
            .with_context(|| format!("map {name}"))?;
        Ok(info.max_entries())
    }
}

/// The kernel's jiffies (the clock the datapath stamps flows with), from
/// /proc/timer_list; `None` where that file is missing.
pub fn kernel_jiffies() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/timer_list").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("jiffies: "))
        .and_then(|v| v.trim().parse().ok())
}
