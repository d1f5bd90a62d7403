//! What the agent tells operators: aggregate counters, flows, verdict events,
//! its status, Prometheus metrics and the HTTP endpoint serving them. Reads
//! `datapath`, `bpffs` and `policy`; nothing below imports it.
//!
//! - `aggregates`: the never-evicted verdict totals and map bookkeeping.
//! - `flows`: conntrack and denied-flow entries as flow records.
//! - `events`: the verdict-event ring buffer, fanned out to subscribers.
//! - `status`: the agent's state shared with the endpoint.
//! - `metrics`: the Prometheus rendering.
//! - `http`: `/metrics`, `/flows`, `/events`, `/status`, health.
pub mod aggregates;
pub mod events;
pub mod flows;
pub mod http;
pub mod metrics;
pub mod status;
