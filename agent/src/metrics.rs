//! `/metrics`: the aggregates, map fill, events and the agent's own state in
//! the Prometheus exposition format, encoded by `prometheus-client`. Label
//! sets are bounded: rules, reasons, directions, interfaces, maps; per-flow
//! series only for the `--metrics-top-flows` busiest flows (hard cap 100).
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    aggregates::{read_bookkeeping, read_rows},
    flows::{read_flows, FlowFilter},
    status::AgentState,
};

/// The most per-flow series `/metrics` will ever carry.
pub const TOP_FLOWS_MAX: usize = 100;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Reads the maps and encodes one scrape.
pub fn render(state: &AgentState) -> anyhow::Result<String> {
    let mut reg = Registry::with_prefix("netpol_agent");
    let rules = state.rules();
    let status = state.status();

    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    reg.register(
        "packets",
        "Packets judged, by hook direction, verdict (pass, drop, audit = passed but would be dropped), reason and the rule credited with a pass",
        packets.clone(),
    );
    reg.register(
        "bytes",
        "Bytes of the packets in netpol_agent_packets_total",
        bytes.clone(),
    );
    for r in read_rows(&state.pinned, &rules)? {
        let l = labels(&[
            ("direction", r.direction),
            ("verdict", r.verdict),
            ("reason", r.reason),
            ("rule", &r.rule),
        ]);
        packets.get_or_create(&l).inc_by(r.packets);
        bytes.get_or_create(&l).inc_by(r.bytes);
    }

    let gen = Gauge::<i64>::default();
    gen.set(i64::from(status.policy_generation));
    reg.register("policy_generation", "Generation of the live policy", gen);
    let reloads = Family::<Labels, Counter>::default();
    reg.register(
        "policy_reloads",
        "Policy reloads by result",
        reloads.clone(),
    );
    reloads
        .get_or_create(&labels(&[("result", "success")]))
        .inc_by(status.reloads_succeeded);
    reloads
        .get_or_create(&labels(&[("result", "failure")]))
        .inc_by(status.reloads_failed);
    let ready = Gauge::<i64>::default();
    ready.set(i64::from(status.ready));
    reg.register(
        "ready",
        "1 once programs are attached and a policy is live",
        ready,
    );
    let last_err = Gauge::<i64>::default();
    last_err.set(i64::from(status.last_reload_error.is_some()));
    reg.register(
        "last_reload_failed",
        "1 when the last reload was rejected (see /status)",
        last_err,
    );

    let attached = Family::<Labels, Gauge>::default();
    reg.register(
        "programs_attached",
        "Programs attached, by interface and program",
        attached.clone(),
    );
    for a in &status.attached {
        for prog in ["xdp", "tc"] {
            attached
                .get_or_create(&labels(&[("interface", &a.interface), ("program", prog)]))
                .set(1);
        }
    }

    let book = read_bookkeeping(&state.pinned)?;
    let entries = Family::<Labels, Gauge>::default();
    let capacity = Family::<Labels, Gauge>::default();
    let created = Family::<Labels, Counter>::default();
    let evicted = Family::<Labels, Counter>::default();
    reg.register(
        "map_entries",
        "Entries in a bounded map (conntrack, denied_flows)",
        entries.clone(),
    );
    reg.register(
        "map_capacity",
        "Capacity of a bounded map",
        capacity.clone(),
    );
    reg.register(
        "map_created",
        "Entries the datapath created in a bounded map",
        created.clone(),
    );
    reg.register(
        "map_evictions",
        "LRU evictions: entries created and gone without a deletion",
        evicted.clone(),
    );
    for m in &book.maps {
        let l = labels(&[("map", m.map)]);
        entries.get_or_create(&l).set(m.entries as i64);
        capacity.get_or_create(&l).set(m.capacity as i64);
        created.get_or_create(&l).inc_by(m.created);
        evicted.get_or_create(&l).inc_by(m.evicted);
    }
    let events = Family::<Labels, Counter>::default();
    reg.register(
        "events",
        "Verdict events by outcome (sent, rate_limited by the per-CPU token bucket, ring_full)",
        events.clone(),
    );
    for (outcome, n) in [
        ("sent", book.events_sent),
        ("rate_limited", book.events_rate_limited),
        ("ring_full", book.events_ring_full),
    ] {
        events
            .get_or_create(&labels(&[("outcome", outcome)]))
            .inc_by(n);
    }

    let top = state.top_flows.min(TOP_FLOWS_MAX);
    if top > 0 {
        let flow_packets = Family::<Labels, Gauge>::default();
        reg.register(
            "top_flow_packets",
            "Packets of the busiest flows (at most --metrics-top-flows series)",
            flow_packets.clone(),
        );
        let filter = FlowFilter {
            limit: Some(top),
            ..FlowFilter::default()
        };
        for f in filter.apply(read_flows(&state.pinned, &rules)?)? {
            let (src, dst, sport, dport) = (
                f.src.to_string(),
                f.dst.to_string(),
                f.sport.to_string(),
                f.dport.to_string(),
            );
            let l = labels(&[
                ("src", &src),
                ("dst", &dst),
                ("proto", &f.proto),
                ("sport", &sport),
                ("dport", &dport),
                ("direction", f.direction),
                ("verdict", f.verdict),
            ]);
            flow_packets.get_or_create(&l).set(f.packets as i64);
        }
    }

    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}
