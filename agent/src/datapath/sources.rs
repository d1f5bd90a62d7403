//! The `SOURCES` map (anti-spoofing): which interfaces are pod interfaces or
//! uplinks, and which source addresses each pod interface owns. Written
//! entry by entry, in an order that never refuses a packet the old or the new
//! contents would both allow (see `Datapath::sync_sources`).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use agent_common::{
    filter_add, filter_key4, filter_key6_bytes, map_names, Config, SourceKey, SourceValue,
    CFG_F_SOURCE_INDEX, IFACE_ROLE_SLOTS, SOURCE_FILTER_WORDS, SRC_IFACE_POD,
    SRC_IFACE_POD_UNCHECKED, SRC_IFACE_UNKNOWN, SRC_IFACE_UPLINK, SRC_LOCAL_POD, SRC_OWNED,
};
use aya::maps::{Array, HashMap, MapData};

use super::{error::*, handles::*, load::write_config, Datapath};

/// What an enforced interface is, for the source check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaceRole {
    /// The host side of a pod's link: packets entering it come from the pod
    /// and must carry one of its addresses.
    Pod,
    /// The node's link to the network: packets entering it must not carry the
    /// address of a pod of this node.
    Uplink,
}

/// The contents `SOURCES` should have: interface roles, and the addresses
/// owned by each pod interface with where each claim came from
/// (`SRC_ORIGIN_*`: the node's routes today; the Kubernetes API may add its
/// own claims to the same plan).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcePlan {
    pub roles: BTreeMap<u32, IfaceRole>,
    pub owned: BTreeMap<u32, BTreeMap<IpAddr, u32>>,
    /// A pod interface without a known address is not checked (instead of
    /// dropping its traffic as `unknown-endpoint`).
    pub allow_unknown: bool,
}

/// The key form of an address (IPv4-mapped for IPv4).
pub fn source_addr(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => SourceKey::mapped_v4(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl SourcePlan {
    /// Records that `addr` belongs behind `ifindex`, claimed by `origin`.
    pub fn own(&mut self, ifindex: u32, addr: IpAddr, origin: u32) {
        *self
            .owned
            .entry(ifindex)
            .or_default()
            .entry(addr)
            .or_default() |= origin;
    }

    /// Addresses owned by pod interfaces (claims on other interfaces are
    /// ignored), deduplicated.
    pub fn pod_addresses(&self) -> BTreeSet<IpAddr> {
        self.owned
            .iter()
            .filter(|(i, _)| self.roles.get(i) == Some(&IfaceRole::Pod))
            .flat_map(|(_, a)| a.keys().copied())
            .collect()
    }

    /// The map entries this plan stands for.
    pub fn entries(&self) -> BTreeMap<SourceKey, SourceValue> {
        let mut out = BTreeMap::new();
        let local: BTreeMap<IpAddr, u32> = {
            let mut m = BTreeMap::new();
            for (i, addrs) in &self.owned {
                if self.roles.get(i) == Some(&IfaceRole::Pod) {
                    for (a, o) in addrs {
                        *m.entry(*a).or_default() |= *o;
                    }
                }
            }
            m
        };
        for (&ifindex, role) in &self.roles {
            let kind = match role {
                IfaceRole::Uplink => {
                    for (a, &origin) in &local {
                        let v = SourceValue {
                            kind: SRC_LOCAL_POD,
                            origin,
                        };
                        out.insert(SourceKey::new(ifindex, source_addr(*a)), v);
                    }
                    SRC_IFACE_UPLINK
                }
                IfaceRole::Pod => {
                    let owned = self.owned.get(&ifindex).filter(|a| !a.is_empty());
                    match owned {
                        Some(addrs) => {
                            for (a, &origin) in addrs {
                                let v = SourceValue {
                                    kind: SRC_OWNED,
                                    origin,
                                };
                                out.insert(SourceKey::new(ifindex, source_addr(*a)), v);
                            }
                            SRC_IFACE_POD
                        }
                        // Unchecked, but still known as a pod's (counters).
                        None if self.allow_unknown => SRC_IFACE_POD_UNCHECKED,
                        None => SRC_IFACE_UNKNOWN,
                    }
                }
            };
            out.insert(SourceKey::iface(ifindex), SourceValue { kind, origin: 0 });
        }
        out
    }
}

/// What one sync changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSync {
    pub written: usize,
    pub removed: usize,
}

/// The order in which differences are applied: new and changed addresses
/// first (an interface never refuses an address it is about to own), then
/// interface roles, then removed roles, then removed addresses (a departing
/// interface stops being checked before its addresses go).
pub fn sync_steps(
    have: &BTreeMap<SourceKey, SourceValue>,
    want: &BTreeMap<SourceKey, SourceValue>,
) -> (Vec<(SourceKey, SourceValue)>, Vec<SourceKey>) {
    let changed = |k: &SourceKey, v: &SourceValue| have.get(k) != Some(v);
    let mut writes: Vec<(SourceKey, SourceValue)> = want
        .iter()
        .filter(|(k, v)| !k.is_iface() && changed(k, v))
        .map(|(k, v)| (*k, *v))
        .collect();
    writes.extend(
        want.iter()
            .filter(|(k, v)| k.is_iface() && changed(k, v))
            .map(|(k, v)| (*k, *v)),
    );
    let mut removes: Vec<SourceKey> = have
        .keys()
        .filter(|k| k.is_iface() && !want.contains_key(k))
        .copied()
        .collect();
    removes.extend(
        have.keys()
            .filter(|k| !k.is_iface() && !want.contains_key(k))
            .copied(),
    );
    (writes, removes)
}

/// What `IFACE_ROLES` should say for every interface `have` or `want` has an
/// entry for: the kind of its interface entry in `want`, 0 when it has none.
/// Interfaces past the array are left to `SOURCES`.
pub fn role_slots(
    have: &BTreeMap<SourceKey, SourceValue>,
    want: &BTreeMap<SourceKey, SourceValue>,
) -> BTreeMap<u32, u32> {
    let mut out: BTreeMap<u32, u32> = have
        .keys()
        .filter(|k| k.is_iface())
        .map(|k| (k.ifindex(), 0))
        .collect();
    for (k, v) in want.iter().filter(|(k, _)| k.is_iface()) {
        out.insert(k.ifindex(), v.kind);
    }
    out.retain(|&i, _| i < IFACE_ROLE_SLOTS);
    out
}

/// The `SOURCE_FILTER` words of the address entries among `keys` (interface
/// entries are never probed by address).
pub fn source_filter<'a>(keys: impl Iterator<Item = &'a SourceKey>) -> Vec<u64> {
    let mut f = vec![0u64; SOURCE_FILTER_WORDS as usize];
    for k in keys.filter(|k| !k.is_iface()) {
        let a = k.addr;
        let x = match a {
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b0, b1, b2, b3] => {
                filter_key4([b0, b1, b2, b3])
            }
            _ => filter_key6_bytes(&a),
        };
        filter_add(&mut f, x);
    }
    f
}

impl Datapath {
    /// Makes `SOURCE_FILTER` hold `want`, writing the words that differ from
    /// what this agent last wrote (all of them the first time, and after a
    /// write that failed midway, which leaves the map's words unknown).
    fn write_source_filter(&mut self, want: Vec<u64>) -> Result<()> {
        let have = std::mem::take(&mut self.source_filter);
        write_changed(
            &mut self.ebpf,
            map_names::SOURCE_FILTER,
            &have,
            &want,
            |i| i as u32,
        )?;
        self.source_filter = want;
        Ok(())
    }

    /// The current contents of `SOURCES`.
    pub fn sources(&self) -> Result<BTreeMap<SourceKey, SourceValue>> {
        let map: HashMap<&MapData, SourceKey, SourceValue> =
            typed_map_ref(&self.ebpf, map_names::SOURCES)?;
        map.iter()
            .map(|r| r.map_err(map_err(map_names::SOURCES)))
            .collect()
    }

    /// Makes `SOURCES` hold `plan`, diffing against what the map holds now
    /// (which an earlier agent may have written: the map is pinned).
    pub fn sync_sources(&mut self, plan: &SourcePlan) -> Result<SourceSync> {
        let have = self.sources()?;
        let want = plan.entries();
        let (writes, removes) = sync_steps(&have, &want);
        // The filter covers both contents while they change, and only what
        // stays once the removals are done: it never rules out an address
        // `SOURCES` holds.
        let after = source_filter(want.keys());
        let mut during = source_filter(have.keys());
        for (d, a) in during.iter_mut().zip(&after) {
            *d |= a;
        }
        self.write_source_filter(during)?;
        let mut map: HashMap<&mut MapData, SourceKey, SourceValue> =
            typed_map(&mut self.ebpf, map_names::SOURCES)?;
        for (k, v) in &writes {
            map.insert(k, v, 0).map_err(map_err(map_names::SOURCES))?;
        }
        // The datapath's copy of the roles, between the writes and the
        // removals: a role is gone from it before `SOURCES` loses it, so a
        // sync that stops midway leaves `have` naming every interface the
        // next one must fix. Compared entry by entry rather than diffed with
        // `have`: an adopted `SOURCES` may come with a fresh array.
        let mut roles: Array<&mut MapData, u32> =
            typed_map(&mut self.ebpf, map_names::IFACE_ROLES)?;
        for (i, kind) in role_slots(&have, &want) {
            let now = roles.get(&i, 0).map_err(map_err(map_names::IFACE_ROLES))?;
            if now != kind {
                roles
                    .set(i, kind, 0)
                    .map_err(map_err(map_names::IFACE_ROLES))?;
            }
        }
        let mut map: HashMap<&mut MapData, SourceKey, SourceValue> =
            typed_map(&mut self.ebpf, map_names::SOURCES)?;
        for k in &removes {
            match map.remove(k) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(map_names::SOURCES)(e)),
            }
        }
        self.write_source_filter(after)?;
        // After the last change: the datapath's flow caches remember checks
        // passed under the old generation, and a packet that checked
        // `SOURCES` before a change read the old generation before it.
        // The first sync that gets here has made the filter and the roles
        // array complete: the datapath may use them from now on.
        let indexed = self.config.flags & CFG_F_SOURCE_INDEX != 0;
        if !writes.is_empty() || !removes.is_empty() || !indexed {
            let next = Config {
                sources_gen: self.config.sources_gen.wrapping_add(1),
                flags: self.config.flags | CFG_F_SOURCE_INDEX,
                ..self.config
            };
            write_config(&mut self.ebpf, &next)?;
            self.config = next;
        }
        Ok(SourceSync {
            written: writes.len(),
            removed: removes.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{SRC_ORIGIN_KUBE, SRC_ORIGIN_ROUTE};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn plan() -> SourcePlan {
        let mut p = SourcePlan::default();
        p.roles.insert(2, IfaceRole::Uplink);
        p.roles.insert(5, IfaceRole::Pod);
        p.roles.insert(6, IfaceRole::Pod);
        p.own(5, ip("10.0.1.10"), SRC_ORIGIN_ROUTE);
        p.own(5, ip("fd00:0:1::10"), SRC_ORIGIN_ROUTE);
        p.own(5, ip("10.0.1.10"), SRC_ORIGIN_KUBE);
        // Routed to an interface that is not a pod interface: ignored.
        p.own(9, ip("10.9.9.9"), SRC_ORIGIN_ROUTE);
        p
    }

    #[test]
    fn entries_of_pods_and_uplinks() {
        let e = plan().entries();
        let v4 = SourceKey::new(5, SourceKey::mapped_v4([10, 0, 1, 10]));
        assert_eq!(
            e[&v4],
            SourceValue {
                kind: SRC_OWNED,
                origin: SRC_ORIGIN_ROUTE | SRC_ORIGIN_KUBE
            }
        );
        assert_eq!(
            e[&SourceKey::new(5, source_addr(ip("fd00:0:1::10")))].kind,
            SRC_OWNED
        );
        assert_eq!(e[&SourceKey::iface(5)].kind, SRC_IFACE_POD);
        // No address yet: fails closed.
        assert_eq!(e[&SourceKey::iface(6)].kind, SRC_IFACE_UNKNOWN);
        assert_eq!(e[&SourceKey::iface(2)].kind, SRC_IFACE_UPLINK);
        assert_eq!(
            e[&SourceKey::new(2, SourceKey::mapped_v4([10, 0, 1, 10]))].kind,
            SRC_LOCAL_POD
        );
        assert!(!e.contains_key(&SourceKey::new(2, SourceKey::mapped_v4([10, 9, 9, 9]))));
        assert!(!e.contains_key(&SourceKey::iface(9)));
        // Three interface entries, two owned addresses, two on the uplink.
        assert_eq!(e.len(), 3 + 2 + 2);
    }

    #[test]
    fn allow_unknown_leaves_addressless_pods_unchecked() {
        let mut p = plan();
        p.allow_unknown = true;
        let e = p.entries();
        assert_eq!(e[&SourceKey::iface(6)].kind, SRC_IFACE_POD_UNCHECKED);
        assert_eq!(e[&SourceKey::iface(5)].kind, SRC_IFACE_POD);
    }

    #[test]
    fn sync_order_never_refuses_an_address_early() {
        let mut before = SourcePlan::default();
        before.roles.insert(6, IfaceRole::Pod);
        before.roles.insert(7, IfaceRole::Pod);
        before.own(7, ip("10.0.7.1"), SRC_ORIGIN_ROUTE);
        let mut after = SourcePlan::default();
        after.roles.insert(6, IfaceRole::Pod);
        after.own(6, ip("10.0.6.1"), SRC_ORIGIN_ROUTE);
        let (writes, removes) = sync_steps(&before.entries(), &after.entries());
        // The new address, then the role that refuses everything else.
        assert_eq!(
            writes.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [
                SourceKey::new(6, SourceKey::mapped_v4([10, 0, 6, 1])),
                SourceKey::iface(6)
            ]
        );
        // The departed interface's role, then its address.
        assert_eq!(
            removes,
            [
                SourceKey::iface(7),
                SourceKey::new(7, SourceKey::mapped_v4([10, 0, 7, 1]))
            ]
        );
        let (w, r) = sync_steps(&after.entries(), &after.entries());
        assert!(w.is_empty() && r.is_empty());
    }

    #[test]
    fn role_slots_cover_every_interface_either_side_names() {
        let mut before = SourcePlan::default();
        before.roles.insert(6, IfaceRole::Pod);
        before.roles.insert(7, IfaceRole::Pod);
        before.roles.insert(IFACE_ROLE_SLOTS, IfaceRole::Pod);
        before.own(7, ip("10.0.7.1"), SRC_ORIGIN_ROUTE);
        let mut after = SourcePlan::default();
        after.roles.insert(6, IfaceRole::Pod);
        after.roles.insert(2, IfaceRole::Uplink);
        after.own(6, ip("10.0.6.1"), SRC_ORIGIN_ROUTE);
        let slots = role_slots(&before.entries(), &after.entries());
        // 7 departs (0), 6 gains an address, 2 is new; the interface past the
        // array is left to `SOURCES`.
        assert_eq!(
            slots.into_iter().collect::<Vec<_>>(),
            [(2, SRC_IFACE_UPLINK), (6, SRC_IFACE_POD), (7, 0)]
        );
    }
}
