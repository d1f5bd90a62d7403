//! What the datapath counts per flow and how many verdict events it may send:
//! the options `run` passes to `Datapath::load`.
use agent_common::{CFG_F_EVENTS_ALLOWED, CFG_F_FLOW_COUNTERS};

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

/// `run` flags for per-flow counting, events and the endpoint.
#[derive(clap::Args, Debug, Clone)]
pub struct CountingArgs {
    /// Address and port of the HTTP endpoint (/metrics, /flows, /events,
    /// /healthz, /readyz, /status).
    #[arg(long, default_value = crate::http::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Keep only the aggregate counters, no per-flow packets and bytes (and
    /// then no denied-flow events).
    #[arg(long)]
    pub no_flow_counters: bool,
    /// Denied flows remembered per address family (LRU: a flood evicts the
    /// oldest; the aggregates still count every packet).
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    pub denied_flow_max: u32,
    /// Verdict events each CPU may send per second (0: none).
    #[arg(long, default_value_t = 100)]
    pub event_rate: u32,
    /// Events a CPU may send at once above the rate.
    #[arg(long, default_value_t = 200)]
    pub event_burst: u32,
    /// Also send events for new allowed flows (`monitor --allowed` shows them).
    #[arg(long)]
    pub events_allowed: bool,
    /// New denied flows each CPU may record per second (0: every one). While
    /// new denied flows come faster (a flood), denied packets are counted in
    /// the aggregates only, without a lookup in (or churn of) the denied-flow
    /// map.
    #[arg(long, default_value_t = DEFAULT_DENIED_FLOW_RATE)]
    pub denied_flow_rate: u32,
    /// New denied flows a CPU may record at once above the rate.
    #[arg(long, default_value_t = DEFAULT_DENIED_FLOW_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub denied_flow_burst: u32,
    /// Add per-flow series for the N busiest flows to /metrics (at most 100).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub metrics_top_flows: u64,
}

impl CountingArgs {
    pub fn options(&self) -> CountingOptions {
        CountingOptions {
            flow_counters: !self.no_flow_counters,
            denied_flow_max: self.denied_flow_max,
            event_rate: self.event_rate,
            event_burst: self.event_burst,
            events_allowed: self.events_allowed,
            denied_flow_rate: self.denied_flow_rate,
            denied_flow_burst: self.denied_flow_burst,
        }
    }
}
