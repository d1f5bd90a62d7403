//! `/metrics`: the aggregates, map fill, events and the agent's own state in
//! the Prometheus text exposition format, encoded by the `prometheus` crate
//! (its text encoder writes HELP and TYPE on the `_total` names, which
//! `promtool check metrics` requires). Label sets are bounded: rules,
//! reasons, directions, interfaces, maps; per-flow series only for the
//! `--metrics-top-flows` busiest flows (hard cap 100).
use prometheus::{Encoder as _, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::{
    aggregates::{read_bookkeeping, read_rows},
    flows::{read_flows, FlowFilter},
    status::AgentState,
};

/// The most per-flow series `/metrics` will ever carry.
pub const TOP_FLOWS_MAX: usize = 100;

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

/// Reads the maps and encodes one scrape.
pub fn render(state: &AgentState) -> anyhow::Result<String> {
    let s = Scrape {
        reg: Registry::new(),
    };
    let rules = state.rules();
    let status = state.status();

    let series = ["direction", "verdict", "reason", "rule"];
    let packets = s.counter(
        "packets_total",
        "Packets judged, by hook direction, verdict (pass, drop, audit = passed but would be dropped), reason and the rule credited with a pass",
        &series,
    )?;
    let bytes = s.counter(
        "bytes_total",
        "Bytes of the packets in netpol_agent_packets_total",
        &series,
    )?;
    for r in read_rows(&state.pinned, &rules)? {
        let l = [r.direction, r.verdict, r.reason, r.rule.as_str()];
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

    let attached = s.gauges(
        "programs_attached",
        "Programs attached, by interface and program",
        &["interface", "program"],
    )?;
    for a in &status.attached {
        for prog in ["xdp", "tc"] {
            attached.with_label_values(&[&a.interface, prog]).set(1);
        }
    }

    let book = read_bookkeeping(&state.pinned)?;
    let entries = s.gauges(
        "map_entries",
        "Entries in a bounded map (conntrack, denied_flows)",
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
        "LRU evictions: entries created and gone without a deletion",
        &["map"],
    )?;
    for m in &book.maps {
        entries.with_label_values(&[m.map]).set(m.entries as i64);
        capacity.with_label_values(&[m.map]).set(m.capacity as i64);
        created.with_label_values(&[m.map]).inc_by(m.created);
        evicted.with_label_values(&[m.map]).inc_by(m.evicted);
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
