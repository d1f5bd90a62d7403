//! The kernel memory of the maps this process holds, as the kernel accounts
//! it (`memlock` in each map fd's fdinfo, what `bpftool map show` prints as
//! `bytes_memlock`), split into what every node pays and what each possible
//! CPU adds, so the total can be projected to a larger node.
use std::{collections::BTreeMap, os::fd::RawFd};

/// One map, as the kernel reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MapMemory {
    pub name: String,
    pub id: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// The kernel's accounting of the map's memory, in bytes.
    pub memlock: u64,
    /// Allocated per possible CPU (per-CPU values), within `memlock`.
    pub per_cpu: u64,
    /// Entries present, for maps that allocate per entry (counted by
    /// walking the keys); `None` for preallocated maps and arrays.
    pub entries: Option<u64>,
    #[serde(skip)]
    fd: RawFd,
}

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_F_NO_PREALLOC: u32 = 1;

pub fn type_name(t: u32) -> &'static str {
    match t {
        1 => "hash",
        2 => "array",
        5 => "percpu_hash",
        6 => "percpu_array",
        9 => "lru_hash",
        10 => "lru_percpu_hash",
        11 => "lpm_trie",
        27 => "ringbuf",
        _ => "other",
    }
}

impl MapMemory {
    /// What the map costs whatever the CPU count.
    pub fn fixed(&self, cpus: u64) -> u64 {
        self.memlock.saturating_sub(self.per_cpu * cpus)
    }

    /// The map's bytes on a node with `cpus` possible CPUs.
    pub fn at(&self, cpus: u64, this_machine: u64) -> u64 {
        self.fixed(this_machine) + self.per_cpu * cpus
    }

    /// Whether the map allocates an element per entry as it fills (hash maps
    /// with `BPF_F_NO_PREALLOC`, LPM tries) instead of all of them at load.
    pub fn grows(&self) -> bool {
        self.map_type == BPF_MAP_TYPE_LPM_TRIE
            || (self.map_type == BPF_MAP_TYPE_HASH && self.map_flags & BPF_F_NO_PREALLOC != 0)
    }

    pub fn is_per_cpu(&self) -> bool {
        self.per_cpu > 0
    }

    /// Counts the entries of a map that allocates per entry.
    pub fn count_entries(&mut self) -> std::io::Result<()> {
        if self.grows() {
            self.entries = Some(count_keys(self.fd, self.key_size)?);
        }
        Ok(())
    }
}

fn round8(n: u32) -> u64 {
    (u64::from(n) + 7) & !7
}

/// Bytes each possible CPU adds: the kernel sizes per-CPU values as
/// `round_up(value_size, 8)` per entry per CPU. (LRU maps also keep a list
/// head per CPU and hash maps a lock word per CPU: tens of bytes, outside
/// `memlock`.)
fn per_cpu_bytes(map_type: u32, value_size: u32, max_entries: u32) -> u64 {
    match map_type {
        BPF_MAP_TYPE_PERCPU_ARRAY | BPF_MAP_TYPE_PERCPU_HASH | BPF_MAP_TYPE_LRU_PERCPU_HASH => {
            round8(value_size) * u64::from(max_entries)
        }
        _ => 0,
    }
}

/// The possible CPUs (`/sys/devices/system/cpu/possible`, e.g. `0-95`):
/// what the kernel sizes per-CPU maps by, not the online count.
pub fn possible_cpus() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim())
}

fn parse_cpu_list(text: &str) -> anyhow::Result<u64> {
    let mut n = 0;
    for part in text.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>()? - a.parse::<u64>()? + 1,
            None => {
                part.parse::<u64>()?;
                1
            }
        };
    }
    Ok(n)
}

/// Every map this process holds a file descriptor of, once each.
pub fn maps_of_process() -> anyhow::Result<Vec<MapMemory>> {
    let mut maps = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let entry = entry?;
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // A descriptor closed since the listing is simply gone.
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let fields: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let num = |k: &str| -> Option<u64> {
            let v = fields.get(k)?;
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        };
        let (Some(id), Some(map_type), Some(memlock)) =
            (num("map_id"), num("map_type"), num("memlock"))
        else {
            continue;
        };
        let id = id as u32;
        if maps.contains_key(&id) {
            continue;
        }
        let (key_size, value_size, max_entries, map_flags) = (
            num("key_size").unwrap_or(0) as u32,
            num("value_size").unwrap_or(0) as u32,
            num("max_entries").unwrap_or(0) as u32,
            num("map_flags").unwrap_or(0) as u32,
        );
        let name = aya::maps::MapInfo::from_id(id)
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("id {id}"));
        let map_type = map_type as u32;
        maps.insert(
            id,
            MapMemory {
                name,
                id,
                map_type,
                key_size,
                value_size,
                max_entries,
                map_flags,
                memlock,
                per_cpu: per_cpu_bytes(map_type, value_size, max_entries),
                entries: None,
                fd,
            },
        );
    }
    Ok(maps.into_values().collect())
}

/// Walks the map's keys with BPF_MAP_GET_NEXT_KEY.
fn count_keys(fd: RawFd, key_size: u32) -> std::io::Result<u64> {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    let mut key = vec![0u8; key_size as usize];
    let mut next = vec![0u8; key_size as usize];
    let mut n = 0u64;
    let mut first = true;
    loop {
        let attr = Attr {
            map_fd: fd as u32,
            _pad: 0,
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: `attr` points at two buffers of the map's key size that
        // outlive the call; the kernel reads `key` and writes `next_key`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENOENT) {
                Ok(n)
            } else {
                Err(e)
            };
        }
        n += 1;
        first = false;
        std::mem::swap(&mut key, &mut next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0").unwrap(), 1);
        assert_eq!(parse_cpu_list("0-1").unwrap(), 2);
        assert_eq!(parse_cpu_list("0-3,8-11,16").unwrap(), 9);
    }

    #[test]
    fn per_cpu_values_are_rounded_to_words() {
        assert_eq!(per_cpu_bytes(BPF_MAP_TYPE_PERCPU_ARRAY, 12, 10), 160);
        assert_eq!(per_cpu_bytes(BPF_MAP_TYPE_HASH, 12, 10), 0);
    }
}
