//! What the datapath counts per flow and how many verdict events it may send:
//! the options `run` passes to `Datapath::load`.
use std::time::Duration;

use agent_common::{CFG_F_EVENTS_ALLOWED, CFG_F_FLOW_COUNTERS};

use super::slots::HOST_HASH_MIN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountingOptions {
    /// Keep per-flow packets and bytes (conntrack entries, the denied-flow
    /// maps). Off leaves only the aggregates (and no denied-flow events).
    pub flow_counters: bool,
    /// Entries of each denied-flow LRU map (IPv4 and IPv6 each).
    pub denied_flow_max: u32,
    /// Verdict events per second each CPU may send (0: none).
    pub event_rate: u32,
    /// Events a CPU may send in a burst above the rate.
    pub event_burst: u32,
    /// Send events for new allowed flows too, not only denied ones.
    pub events_allowed: bool,
    /// New denied-flow records each CPU may create per second (0: no limit).
    pub denied_flow_rate: u32,
    /// Records a CPU may create at once above the rate.
    pub denied_flow_burst: u32,
}

impl Default for CountingOptions {
    fn default() -> Self {
        Self {
            flow_counters: true,
            denied_flow_max: 16_384,
            event_rate: 100,
            event_burst: 200,
            events_allowed: false,
            denied_flow_rate: DEFAULT_DENIED_FLOW_RATE,
            denied_flow_burst: DEFAULT_DENIED_FLOW_BURST,
        }
    }
}

/// A flood of new denied flows would churn the whole denied-flow map every
/// few milliseconds (an LRU insert and eviction per packet, several times the
/// cost of the verdict itself); recording at most this many new flows per
/// second per CPU keeps the map readable and the flood cheap.
pub const DEFAULT_DENIED_FLOW_RATE: u32 = 5_000;
pub const DEFAULT_DENIED_FLOW_BURST: u32 = 10_000;

impl CountingOptions {
    /// The `Config::flags` bits these options set.
    pub fn config_flags(&self) -> u32 {
        let mut f = 0;
        if self.flow_counters {
            f |= CFG_F_FLOW_COUNTERS;
        }
        if self.events_allowed {
            f |= CFG_F_EVENTS_ALLOWED;
        }
        f
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop what the policy does not allow.
    Enforce,
    /// Count what would be dropped; drop nothing.
    Audit,
}

/// Which program judges traffic entering an interface, as the operator asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressHook {
    /// TCX on veth pairs (native XDP there takes a pod's large TCP segments
    /// apart and costs most of its bulk throughput); native XDP on other
    /// interfaces, TCX where the driver refuses it. Generic XDP never.
    #[default]
    Auto,
    /// XDP everywhere: native, or generic (with a warning) where the driver
    /// refuses native mode.
    Xdp,
    /// TCX ingress everywhere.
    Tcx,
}

/// The ingress attachment to try on one interface, from the operator's
/// choice and what the interface is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressPlan {
    Tcx,
    /// Native XDP; TCX if the driver refuses it.
    NativeXdpElseTcx,
    /// Native XDP; generic XDP if the driver refuses it.
    XdpElseGeneric,
}

impl IngressHook {
    pub fn plan(self, is_veth: bool) -> IngressPlan {
        match self {
            IngressHook::Auto if is_veth => IngressPlan::Tcx,
            IngressHook::Auto => IngressPlan::NativeXdpElseTcx,
            IngressHook::Xdp => IngressPlan::XdpElseGeneric,
            IngressHook::Tcx => IngressPlan::Tcx,
        }
    }
}

/// Conntrack idle timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    pub tcp_close: Duration,
    pub udp: Duration,
    pub icmp: Duration,
    pub other: Duration,
    pub fragment: Duration,
}

impl Default for Timeouts {
    // Cilium's defaults, which operators of this kind of agent expect.
    fn default() -> Self {
        Self {
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_close: Duration::from_secs(10),
            udp: Duration::from_secs(60),
            icmp: Duration::from_secs(30),
            other: Duration::from_secs(60),
            fragment: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub mode: Mode,
    pub timeouts: Timeouts,
    /// Entries per conntrack map (IPv4 and IPv6 each).
    pub ct_max: u32,
    /// Prefixes per identity trie (IPv4 and IPv6 each, per slot).
    pub prefix_max: u32,
    /// Entries per rule trie (per slot).
    pub rule_max: u32,
    /// Pending first fragments tracked (per family).
    pub frag_max: u32,
    /// Per-flow counters and verdict events.
    pub counting: crate::datapath::CountingOptions,
    /// Host prefixes of a family from which they go to the hash map instead
    /// of the trie (`HOST_HASH_MIN`; tests lower it to cover both layouts).
    pub host_hash_min: usize,
    /// New conntrack entries each source address may create per second (0:
    /// no limit), and how many at once above the rate.
    pub ct_source_rate: u32,
    pub ct_source_burst: u32,
}

/// One workload opening flows (or sending bare ACKs) as fast as it can must
/// not evict every other workload's flows from the shared conntrack table:
/// at this rate a source fills under half of the default table within the
/// handshake timeout, while a connection pool of thousands still opens at
/// once.
pub const DEFAULT_CT_SOURCE_RATE: u32 = 1_000;
pub const DEFAULT_CT_SOURCE_BURST: u32 = 5_000;

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            timeouts: Timeouts::default(),
            // Each entry is preallocated (about 180 bytes for IPv4, 200 for
            // IPv6): the two tables are most of the maps' kernel memory.
            ct_max: 131_072,
            prefix_max: 262_144,
            rule_max: 1_048_576,
            frag_max: 8192,
            counting: Default::default(),
            host_hash_min: HOST_HASH_MIN,
            ct_source_rate: DEFAULT_CT_SOURCE_RATE,
            ct_source_burst: DEFAULT_CT_SOURCE_BURST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_options() {
        let on = CountingOptions::default();
        assert_eq!(on.config_flags(), CFG_F_FLOW_COUNTERS);
        let off = CountingOptions {
            flow_counters: false,
            events_allowed: true,
            ..on
        };
        assert_eq!(off.config_flags(), CFG_F_EVENTS_ALLOWED);
    }
}
