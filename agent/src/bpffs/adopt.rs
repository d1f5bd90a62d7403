//! Deciding, map by map, whether a restarted agent may reuse what an earlier
//! one pinned. A pinned map is reused only when it has exactly the shape this
//! build creates (type, key and value size, flags, capacity) under the same
//! layout version; anything else is rebuilt beside it, so nothing is misread.
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, MapInfo};

/// The shape a map is created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl Shape {
    fn of(info: &MapInfo) -> Option<Self> {
        Some(Self {
            map_type: info.map_type().ok()? as u32,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        })
    }

    pub fn of_map(map: &Map) -> Option<Self> {
        Self::of(&map_data(map)?.info().ok()?)
    }

    pub fn of_pin(path: &Path) -> Option<Self> {
        Self::of(&MapInfo::from_pin(path).ok()?)
    }
}

/// The map types this agent uses (aya offers no generic accessor).
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::LpmTrie(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::RingBuf(m) => Some(m),
        _ => None,
    }
}

/// What happens to one map at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing pinned: create it and pin it.
    Create,
    /// Pinned with the same shape: reuse it, state and all.
    Adopt,
    /// Pinned with another capacity (a changed flag): create a new one, carry
    /// the entries over where that is meaningful, and re-pin once the links
    /// run the new programs.
    Resize { from: u32, to: u32 },
    /// Pinned with another shape: create a new one and re-pin it; the old
    /// state is dropped, never reinterpreted.
    Rebuild,
}

pub fn plan(want: Shape, pinned: Option<Shape>, pin_exists: bool) -> Plan {
    match pinned {
        None if !pin_exists => Plan::Create,
        None => Plan::Rebuild,
        Some(have) if have == want => Plan::Adopt,
        Some(have)
            if Shape {
                max_entries: want.max_entries,
                ..have
            } == want =>
        {
            Plan::Resize {
                from: have.max_entries,
                to: want.max_entries,
            }
        }
        Some(_) => Plan::Rebuild,
    }
}

/// A map created fresh whose pin must replace the old one after the switch.
pub struct Repin {
    pub name: String,
    pub path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: Shape = Shape {
        map_type: 9,
        key_size: 40,
        value_size: 32,
        max_entries: 1024,
        flags: 0,
    };

    #[test]
    fn plans() {
        assert_eq!(plan(CT, None, false), Plan::Create);
        assert_eq!(plan(CT, None, true), Plan::Rebuild);
        assert_eq!(plan(CT, Some(CT), true), Plan::Adopt);
        let small = Shape {
            max_entries: 512,
            ..CT
        };
        assert_eq!(
            plan(CT, Some(small), true),
            Plan::Resize {
                from: 512,
                to: 1024
            }
        );
        let other_value = Shape {
            value_size: 48,
            ..CT
        };
        assert_eq!(plan(CT, Some(other_value), true), Plan::Rebuild);
        let other_type = Shape { map_type: 1, ..CT };
        assert_eq!(plan(CT, Some(other_type), true), Plan::Rebuild);
    }
}
