//! `/metrics`: the aggregates, map fill, events and the agent's own state in
//! the Prometheus text exposition format, encoded by the `prometheus` crate
//! (its text encoder writes HELP and TYPE on the `_total` names, which
//! `promtool check metrics` requires). Label sets are bounded: rules,
//! reasons, traffic sides, maps, hooks and modes, never interfaces; per-flow
//! series only for the `--metrics-top-flows` busiest flows (hard cap 100).
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::{
    aggregates::{read_bookkeeping, read_rows},
    flows::{read_flows, FlowFilter},
    status::{AgentState, Attached},
};

/// The most per-flow series `/metrics` will ever carry.
pub const TOP_FLOWS_MAX: usize = 100;

/// Bucket bounds of the reload duration, in seconds: a small policy compiles
/// and swaps in milliseconds, a large one (hundreds of thousands of prefixes)
/// in seconds.
const RELOAD_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket bounds of a conntrack sweep, in seconds: it lists the whole map,
/// about a microsecond per entry.
const GC_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What the agent measures about itself, kept across scrapes (each scrape
/// builds a fresh registry of the map readings and registers these in it).
pub struct OwnMetrics {
    reload_duration: Histogram,
    last_reload_success: Gauge,
    gc_runs: IntCounter,
    gc_duration: Histogram,
    gc_deleted: IntCounter,
    /// The highest eviction count each map has shown (see `evictions`).
    evictions_seen: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for OwnMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OwnMetrics {
    pub fn new() -> Self {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(
                HistogramOpts::new(format!("netpol_agent_{name}"), help).buckets(buckets.to_vec()),
            )
            .expect("valid histogram options")
        };
        let counter = |name: &str, help: &str| {
            IntCounter::new(format!("netpol_agent_{name}"), help).expect("valid counter")
        };
        Self {
            reload_duration: histogram(
                "reload_duration_seconds",
                "Time a policy reload took (read, compile, write the maps), successful or not",
                RELOAD_BUCKETS,
            ),
            last_reload_success: Gauge::new(
                "netpol_agent_last_reload_success_timestamp_seconds",
                "Unix time at which a policy last went live (start-up or a successful reload)",
            )
            .expect("valid gauge"),
            gc_runs: counter("ct_gc_runs_total", "Conntrack sweeps run"),
            gc_duration: histogram(
                "ct_gc_duration_seconds",
                "Time a conntrack sweep took",
                GC_BUCKETS,
            ),
            gc_deleted: counter(
                "ct_gc_deleted_total",
                "Expired conntrack entries the sweeps deleted",
            ),
            evictions_seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// A policy went live now (at start-up, or by a reload that took
    /// `took`).
    pub fn policy_live(&self, took: Option<Duration>) {
        if let Some(d) = took {
            self.reload_duration.observe(d.as_secs_f64());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_reload_success.set(now.as_secs_f64());
    }

    /// A reload that took `took` was rejected.
    pub fn reload_failed(&self, took: Duration) {
        self.reload_duration.observe(took.as_secs_f64());
    }

    /// A conntrack sweep ran for `took` and deleted `deleted` entries.
    pub fn swept(&self, took: Duration, deleted: u64) {
        self.gc_runs.inc();
        self.gc_duration.observe(took.as_secs_f64());
        self.gc_deleted.inc_by(deleted);
    }

    /// The eviction count to report for `map`, given the one just derived
    /// from the maps. The derivation (created - live - deleted) reads its
    /// three terms at different moments, so under churn it can come out
    /// below an earlier reading; a counter must never go down (`rate()`
    /// would read it as a reset), so the highest value seen is reported.
    pub fn evictions(&self, map: &'static str, derived: u64) -> u64 {
        let mut seen = self
            .evictions_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let max = seen.entry(map).or_default();
        *max = (*max).max(derived);
        *max
    }

    fn register(&self, reg: &Registry) -> anyhow::Result<()> {
        reg.register(Box::new(self.reload_duration.clone()))?;
        reg.register(Box::new(self.last_reload_success.clone()))?;
        reg.register(Box::new(self.gc_runs.clone()))?;
        reg.register(Box::new(self.gc_duration.clone()))?;
        reg.register(Box::new(self.gc_deleted.clone()))?;
        Ok(())
    }
}

/// The hook and mode of each enforced interface, as counts: (hook, mode,
/// interfaces). Every (hook, mode) pair the agent can use is listed, at 0
/// when no interface is in it, so that an alert on the slow one has a
/// series to read.
pub fn interface_counts(attached: &[Attached]) -> Vec<(&'static str, &'static str, i64)> {
    let n = |hook: &str| attached.iter().filter(|a| a.hook == hook).count() as i64;
    vec![
        // Ingress: XDP in the driver (native) or, where the driver refuses
        // it and XDP was asked for, in the generic (skb) path, several times
        // slower; or a TCX ingress link.
        ("xdp", "native", n("xdp-native")),
        ("xdp", "generic", n("xdp-generic")),
        ("tcx", "ingress", n("tcx")),
        // Egress is always a TCX link.
        ("tcx", "egress", attached.len() as i64),
    ]
}

/// The `reason` label of a datapath reason: the four kinds of malformed
/// packet (`malformed-l2`, `-ipv4`, `-ipv6`, `-l4`) are one `malformed`
/// series, which is what an alert on a rise of malformed drops reads;
/// `netpol-agent stats` keeps the layer.
pub fn metric_reason(reason: &'static str) -> &'static str {
    if reason.starts_with("malformed-") {
        "malformed"
    } else {
        reason
    }
}

/// Builds metric families in a registry of one scrape.
struct Scrape {
    reg: Registry,
}

impl Scrape {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> anyhow::Result<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(format!("netpol_agent_{name}"), help), labels)?;
        self.reg.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> anyhow::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(format!("netpol_agent_{name}"), help), labels)?;
        self.reg.register(Box::new(g.clone()))?;
        Ok(g)
    }

    fn gauge(&self, name: &str, help: &str, value: i64) -> anyhow::Result<()> {
        let g = IntGauge::new(format!("netpol_agent_{name}"), help)?;
        g.set(value);
        self.reg.register(Box::new(g))?;
        Ok(())
    }
}

/// `netpol_agent_build_info`'s labels: the version, the git revision and the
/// SHA-256 of the embedded eBPF object, as `netpol-agent version` prints
/// them.
fn build_info() -> [(&'static str, String); 3] {
    [
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("revision", env!("NETPOL_GIT_REVISION").to_owned()),
        ("ebpf_sha256", crate::ebpf_sha256().to_owned()),
    ]
}

/// Reads the maps and encodes one scrape.
pub fn render(state: &AgentState) -> anyhow::Result<String> {
    let s = Scrape {
        reg: Registry::new(),
    };
    let rules = state.rules();
    let status = state.status();

    let info = build_info();
    let names: Vec<&str> = info.iter().map(|(k, _)| *k).collect();
    let values: Vec<&str> = info.iter().map(|(_, v)| v.as_str()).collect();
    s.gauges(
        "build_info",
        "Always 1: the agent's version, git revision and the SHA-256 of its eBPF object",
        &names,
    )?
    .with_label_values(&values)
    .set(1);
    // CPU seconds, resident memory, open and maximum fds, start time, threads.
    s.reg.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    state.own.register(&s.reg)?;

    let series = ["traffic", "verdict", "reason", "rule"];
    let packets = s.counter(
        "packets_total",
        "Packets judged, by traffic (egress: leaving the workload or node, ingress: entering it), verdict (pass, drop, audit = passed but would be dropped), reason and the rule credited with a pass",
        &series,
    )?;
    let bytes = s.counter(
        "bytes_total",
        "Bytes of the packets in netpol_agent_packets_total",
        &series,
    )?;
    for r in read_rows(&state.pinned, &rules)? {
        let l = [
            r.traffic,
            r.verdict,
            metric_reason(r.reason),
            r.rule.as_str(),
        ];
        packets.with_label_values(&l).inc_by(r.packets);
        bytes.with_label_values(&l).inc_by(r.bytes);
    }

    s.gauge(
        "policy_generation",
        "Generation of the live policy",
        i64::from(status.policy_generation),
    )?;
    let reloads = s.counter(
        "policy_reloads_total",
        "Policy reloads by result",
        &["result"],
    )?;
    reloads
        .with_label_values(&["success"])
        .inc_by(status.reloads_succeeded);
    reloads
        .with_label_values(&["failure"])
        .inc_by(status.reloads_failed);
    if !status.policy_hash.is_empty() {
        s.gauges(
            "policy_hash_info",
            "Always 1: the hash of the live policy's content, equal on nodes enforcing the same policy",
            &["hash"],
        )?
        .with_label_values(&[status.policy_hash.as_str()])
        .set(1);
    }
    s.gauge(
        "ready",
        "1 once programs are attached and a policy is live",
        i64::from(status.ready),
    )?;
    s.gauge(
        "policy_fallback",
        "1 while the last good policy kept on disk is enforced because the policy directory was rejected at start",
        i64::from(status.policy_fallback),
    )?;
    s.gauge(
        "last_reload_failed",
        "1 when the last reload was rejected (the error is in /status)",
        i64::from(status.last_reload_error.is_some()),
    )?;
    if let Some(synced) = status.kubernetes_synced {
        s.gauge(
            "kubernetes_synced",
            "With --kubernetes: 1 when every watched resource's list from the API server has completed",
            i64::from(synced),
        )?;
    }

    let interfaces = s.gauges(
        "interfaces",
        "Enforced interfaces by hook and mode (xdp: native or generic, on ingress; tcx: ingress or egress)",
        &["hook", "mode"],
    )?;
    for (hook, mode, n) in interface_counts(&status.attached) {
        interfaces.with_label_values(&[hook, mode]).set(n);
    }
    let by_iface = s.gauges(
        "interface_ingress_hook",
        "1 per enforced interface, labelled with what judges traffic entering it (xdp-native, xdp-generic, tcx)",
        &["interface", "hook"],
    )?;
    for a in &status.attached {
        by_iface.with_label_values(&[&a.interface, &a.hook]).set(1);
    }

    let book = read_bookkeeping(&state.pinned)?;
    let entries = s.gauges(
        "map_entries",
        "Entries in a bounded map (conntrack, denied_flows, fragments, identities, hosts, rules, sources; both address families together)",
        &["map"],
    )?;
    let capacity = s.gauges("map_capacity", "Capacity of a bounded map", &["map"])?;
    let created = s.counter(
        "map_created_total",
        "Entries the datapath created in a bounded map",
        &["map"],
    )?;
    let evicted = s.counter(
        "map_evictions_total",
        "LRU evictions (conntrack, denied_flows): entries created and gone without a deletion",
        &["map"],
    )?;
    for m in &book.maps {
        entries.with_label_values(&[m.map]).set(m.entries as i64);
        capacity.with_label_values(&[m.map]).set(m.capacity as i64);
        if let Some(c) = m.created {
            created.with_label_values(&[m.map]).inc_by(c);
            evicted
                .with_label_values(&[m.map])
                .inc_by(state.own.evictions(m.map, m.evicted));
        }
    }
    let events = s.counter(
        "events_total",
        "Verdict events by outcome (sent, rate_limited by the per-CPU token bucket, ring_full)",
        &["outcome"],
    )?;
    for (outcome, n) in [
        ("sent", book.events_sent),
        ("rate_limited", book.events_rate_limited),
        ("ring_full", book.events_ring_full),
    ] {
        events.with_label_values(&[outcome]).inc_by(n);
    }
    s.counter(
        "denied_flows_not_recorded_total",
        "Denied packets counted in the aggregates only, while new denied flows came faster than --denied-flow-rate",
        &[],
    )?
    .with_label_values::<&str>(&[])
    .inc_by(book.denied_not_recorded);

    let top = state.top_flows.min(TOP_FLOWS_MAX);
    if top > 0 {
        let flow_packets = s.gauges(
            "top_flow_packets",
            "Packets of the busiest flows (at most --metrics-top-flows series)",
            &[
                "src",
                "dst",
                "proto",
                "sport",
                "dport",
                "direction",
                "verdict",
            ],
        )?;
        let filter = FlowFilter {
            limit: Some(top),
            ..FlowFilter::default()
        };
        let mut busiest = filter.selection()?;
        read_flows(&state.pinned, &rules, &mut busiest)?;
        for f in busiest.into_records() {
            let (src, dst, sport, dport) = (
                f.src.to_string(),
                f.dst.to_string(),
                f.sport.to_string(),
                f.dport.to_string(),
            );
            flow_packets
                .with_label_values(&[
                    src.as_str(),
                    &dst,
                    &f.proto,
                    &sport,
                    &dport,
                    f.direction,
                    f.verdict,
                ])
                .set(f.packets as i64);
        }
    }

    let mut out = Vec::new();
    TextEncoder::new().encode(&s.reg.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_never_go_down() {
        let own = OwnMetrics::new();
        // Readings as churn gives them: the derivation dips when a read of
        // the live entries lands after creations its counter read missed.
        let derived = [0, 5, 12, 9, 12, 30, 29, 0, 31];
        let mut last = 0;
        for d in derived {
            let shown = own.evictions("conntrack", d);
            assert!(shown >= last, "{shown} after {last}");
            assert!(shown >= d);
            last = shown;
        }
        assert_eq!(last, 31);
        // Each map has its own.
        assert_eq!(own.evictions("denied_flows", 3), 3);
    }

    #[test]
    fn malformed_reasons_are_one_series() {
        for r in agent_common::reason::NAMES {
            let label = metric_reason(r);
            if r.starts_with("malformed") {
                assert_eq!(label, "malformed", "{r}");
            } else {
                assert_eq!(label, r);
            }
        }
        assert_eq!(
            agent_common::reason::NAMES
                .iter()
                .filter(|r| metric_reason(r) == "malformed")
                .count(),
            4
        );
    }

    #[test]
    fn interfaces_are_counted_by_hook_and_mode() {
        let a = |i: &str, h: &str| Attached {
            interface: i.into(),
            hook: h.into(),
        };
        let counts = interface_counts(&[
            a("uplink0", "xdp-native"),
            a("lxc1", "xdp-generic"),
            a("lxc2", "tcx"),
            a("lxc3", "tcx"),
        ]);
        assert_eq!(
            counts,
            vec![
                ("xdp", "native", 1),
                ("xdp", "generic", 1),
                ("tcx", "ingress", 2),
                ("tcx", "egress", 4)
            ]
        );
        assert_eq!(
            interface_counts(&[]),
            vec![
                ("xdp", "native", 0),
                ("xdp", "generic", 0),
                ("tcx", "ingress", 0),
                ("tcx", "egress", 0)
            ]
        );
    }

    #[test]
    fn own_metrics_encode_with_their_names() {
        let own = OwnMetrics::new();
        own.policy_live(None);
        own.policy_live(Some(Duration::from_millis(3)));
        own.reload_failed(Duration::from_millis(1));
        own.swept(Duration::from_millis(2), 7);
        let reg = Registry::new();
        own.register(&reg).unwrap();
        let mut out = Vec::new();
        TextEncoder::new().encode(&reg.gather(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in [
            "netpol_agent_reload_duration_seconds_count 2",
            "netpol_agent_ct_gc_runs_total 1",
            "netpol_agent_ct_gc_deleted_total 7",
            "netpol_agent_ct_gc_duration_seconds_count 1",
            "# TYPE netpol_agent_last_reload_success_timestamp_seconds gauge",
        ] {
            assert!(text.contains(line), "{line}:\n{text}");
        }
        let ts = text
            .lines()
            .find_map(|l| l.strip_prefix("netpol_agent_last_reload_success_timestamp_seconds "))
            .unwrap();
        assert!(ts.parse::<f64>().unwrap() > 1.7e9, "{ts}");
    }
}
