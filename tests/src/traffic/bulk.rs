//! Bulk TCP through a node (iperf3 between a pod and a remote host), side by
//! side: no filter, netpol-agent (once per ingress hook asked for), and
//! nftables with the same policy. Each measurement has its peer set up
//! fresh, and the peers take turns within every round (the order rotating),
//! so a noisy neighbour hits them alike; the median of the rounds is kept.
//!
//! Goodput is what the receiving socket got; CPU per byte is every CPU's
//! busy time over the transfer divided by those bytes: the whole cost of a
//! byte (both TCP stacks, the node's forwarding, the filter), machine-wide.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::agent::NetpolAgent;
use super::bulk_lab::{policy_yaml, BulkLab, POD_ADDR, POD_IF, REMOTE_ADDR, UPLINK_IF};
use super::iperf::{self, Server, Transfer};
use super::measure::{clock_ticks_per_sec, CpuTimes};
use super::nft::NftPolicy;
use super::targets::{Bound, Target, Unit};
use crate::netns::{unique_suffix, Netns};

pub const INGRESS_HOOK_FLAG: &str = "--ingress-hook";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    PodToRemote,
    RemoteToPod,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::PodToRemote, Direction::RemoteToPod];

    pub fn key(self) -> &'static str {
        match self {
            Direction::PodToRemote => "pod-to-remote",
            Direction::RemoteToPod => "remote-to-pod",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Direction> {
        Direction::ALL
            .into_iter()
            .find(|d| d.key() == s)
            .with_context(|| format!("unknown direction {s:?} (pod-to-remote, remote-to-pod)"))
    }

    /// The node interface the data enters by: where the ingress hook judges it.
    pub fn ingress_iface(self) -> &'static str {
        match self {
            Direction::PodToRemote => POD_IF,
            Direction::RemoteToPod => UPLINK_IF,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BulkPeer {
    None,
    /// `hook`: the `--ingress-hook` value passed, None for the agent's own
    /// choice.
    Netpol {
        hook: Option<String>,
    },
    Nft,
}

impl BulkPeer {
    pub fn key(&self) -> &'static str {
        match self {
            BulkPeer::None => "none",
            BulkPeer::Netpol { .. } => "netpol",
            BulkPeer::Nft => "nftables",
        }
    }

    fn requested_hook(&self) -> Option<String> {
        match self {
            BulkPeer::Netpol { hook } => hook.clone(),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BulkOptions {
    pub mtus: Vec<u32>,
    pub streams: Vec<u32>,
    pub directions: Vec<Direction>,
    /// Seconds of each transfer.
    pub secs: u32,
    /// Measurements per (peer, case); the median is reported.
    pub rounds: u32,
    /// `--ingress-hook` values the netpol peer is measured with; empty for
    /// the agent's own choice only.
    pub hooks: Vec<String>,
    /// Peer keys: none, netpol, nftables.
    pub peers: Vec<String>,
    /// A cap per stream (iperf3 `-b`, e.g. `2G`): below what every peer
    /// reaches, the CPUs are not saturated and CPU per byte shows what each
    /// filter adds; None for as fast as TCP goes.
    pub rate: Option<String>,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            mtus: vec![1500, 9000],
            streams: vec![1, 4],
            directions: Direction::ALL.to_vec(),
            secs: 4,
            rounds: 3,
            hooks: vec!["xdp".into(), "tcx".into()],
            peers: vec!["none".into(), "netpol".into(), "nftables".into()],
            rate: None,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BulkRow {
    /// `bulk-tcp-<mtu>`.
    pub scenario: String,
    pub peer: &'static str,
    pub direction: &'static str,
    pub streams: u32,
    pub mtu: u32,
    /// Receiver goodput, bits per second (median of the rounds).
    pub goodput_bps: f64,
    /// Busy time of all CPUs per byte received, ns (median of the rounds).
    /// Machine-wide: on a shared machine other tenants' work lands in it
    /// (see `machine_busy`).
    pub cpu_ns_per_byte: f64,
    /// CPU time of the iperf3 client and server per byte received, ns
    /// (median of the rounds): the lab's own share (see iperf::Transfer).
    pub process_cpu_ns_per_byte: f64,
    /// Share of all CPUs busy during the transfer (median of the rounds):
    /// near 1, CPU per byte is the machine's capacity over goodput rather
    /// than the transfer's cost.
    pub machine_busy: f64,
    /// The hook that judged the traffic where it entered the node, as the
    /// agent reported it (`xdp-native`, `xdp-generic`, `tcx`); null for the
    /// peers without one.
    pub hook: Option<String>,
    /// The `--ingress-hook` value the agent was started with; null when
    /// none was passed.
    pub hook_requested: Option<String>,
    pub secs: u32,
    /// The cap per stream (iperf3 `-b`), null for none.
    pub rate: Option<String>,
    /// Bytes received and sender retransmissions, summed over the rounds.
    pub bytes: u64,
    pub retransmits: u64,
    pub runs: u32,
    /// Every round's values, in the order measured.
    pub goodput_bps_runs: Vec<f64>,
    pub cpu_ns_per_byte_runs: Vec<f64>,
    pub process_cpu_ns_per_byte_runs: Vec<f64>,
    pub machine_busy_runs: Vec<f64>,
}

impl BulkRow {
    fn same_case(&self, o: &BulkRow) -> bool {
        self.scenario == o.scenario
            && self.peer == o.peer
            && self.hook_requested == o.hook_requested
            && self.direction == o.direction
            && self.streams == o.streams
    }
}

pub struct BulkReport {
    /// One row per (MTU, peer, requested hook, direction, streams): medians.
    pub rows: Vec<BulkRow>,
    /// Every measurement.
    pub raw: Vec<BulkRow>,
    /// Peers or measurements that failed, and fallbacks taken.
    pub notes: Vec<String>,
}

/// What one peer put in place; torn down on drop.
enum Active<'a> {
    Nothing,
    Netpol(NetpolAgent),
    Nft(#[allow(dead_code)] NftPolicy<'a>),
}

struct PolicyFiles {
    dir: PathBuf,
}

impl PolicyFiles {
    fn write() -> anyhow::Result<PolicyFiles> {
        let dir = std::env::temp_dir().join(format!("netpol-bulk-policy-{}", unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let files = PolicyFiles { dir };
        std::fs::write(files.dir.join("bulk.yaml"), policy_yaml())?;
        Ok(files)
    }
}

impl Drop for PolicyFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Run<'o> {
    opts: &'o BulkOptions,
    policy: PolicyFiles,
    notes: Vec<String>,
}

impl Run<'_> {
    fn setup<'l>(&mut self, lab: &'l BulkLab, peer: &BulkPeer) -> anyhow::Result<Active<'l>> {
        let ifaces = lab.node_ifaces();
        Ok(match peer {
            BulkPeer::None => {
                let left = lab.filters_left();
                anyhow::ensure!(left.is_empty(), "a filter is still on the node: {left:?}");
                Active::Nothing
            }
            BulkPeer::Nft => Active::Nft(NftPolicy::load_on(&lab.node, &self.policy.dir, &ifaces)?),
            BulkPeer::Netpol { hook } => {
                let extra: Vec<&str> = match hook.as_deref() {
                    Some(h) => vec![INGRESS_HOOK_FLAG, h],
                    None => Vec::new(),
                };
                Active::Netpol(NetpolAgent::start_on(
                    &lab.node,
                    &ifaces,
                    &self.policy.dir,
                    &extra,
                    Duration::from_secs(60),
                )?)
            }
        })
    }
}

/// Runs every case of `opts`, one lab per MTU.
pub fn run(opts: &BulkOptions) -> anyhow::Result<BulkReport> {
    anyhow::ensure!(
        iperf::available(),
        "iperf3 is missing: run `cargo xtask setup`"
    );
    let mut run = Run {
        opts,
        policy: PolicyFiles::write()?,
        notes: Vec::new(),
    };
    let mut peers = Vec::new();
    for key in &opts.peers {
        match key.as_str() {
            "none" => peers.push(BulkPeer::None),
            "nftables" => peers.push(BulkPeer::Nft),
            "netpol" if opts.hooks.is_empty() => peers.push(BulkPeer::Netpol { hook: None }),
            "netpol" => peers.extend(opts.hooks.iter().map(|h| BulkPeer::Netpol {
                hook: Some(h.clone()),
            })),
            other => anyhow::bail!("unknown bulk peer {other:?} (none, netpol, nftables)"),
        }
    }
    let mut raw = Vec::new();
    for &mtu in &opts.mtus {
        let lab = BulkLab::new(mtu);
        for &direction in &opts.directions {
            for &streams in &opts.streams {
                for round in 0..opts.rounds as usize {
                    for i in 0..peers.len() {
                        let peer = &peers[(i + round) % peers.len()];
                        match run.one(&lab, peer, direction, streams) {
                            Ok(row) => {
                                eprintln!(
                                    "#   bulk mtu {mtu} {:<13} P{streams} {:<8} {:<12} {:>6.2} Gbit/s {:>6.3} CPU ns/byte {} retr",
                                    direction.key(),
                                    peer.key(),
                                    row.hook.as_deref().unwrap_or("-"),
                                    row.goodput_bps / 1e9,
                                    row.cpu_ns_per_byte,
                                    row.retransmits
                                );
                                raw.push(row);
                            }
                            Err(e) => {
                                let note = format!(
                                    "bulk mtu {mtu} {} P{streams} {}{}: {e:#}",
                                    direction.key(),
                                    peer.key(),
                                    peer.requested_hook()
                                        .map(|h| format!(" ({INGRESS_HOOK_FLAG} {h})"))
                                        .unwrap_or_default()
                                );
                                eprintln!("#   {note}");
                                run.notes.push(note);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(BulkReport {
        rows: medians(&raw),
        raw,
        notes: run.notes,
    })
}

impl Run<'_> {
    fn one(
        &mut self,
        lab: &BulkLab,
        peer: &BulkPeer,
        direction: Direction,
        streams: u32,
    ) -> anyhow::Result<BulkRow> {
        let mut active = self.setup(lab, peer)?;
        let hook = match &active {
            Active::Netpol(a) => a.ingress_hook(direction.ingress_iface())?,
            _ => None,
        };
        let measured = transfer(
            lab,
            direction,
            streams,
            self.opts.secs,
            self.opts.rate.as_deref(),
        );
        if let (Err(_), Active::Netpol(a)) = (&measured, &mut active) {
            eprintln!("#   netpol-agent log:\n{}", a.log());
        }
        let (t, busy_ns, busy_share) = measured?;
        drop(active);
        anyhow::ensure!(t.bytes > 0, "no byte received");
        let per_byte = busy_ns / t.bytes as f64;
        let proc_per_byte = t.process_cpu_ns / t.bytes as f64;
        Ok(BulkRow {
            scenario: format!("bulk-tcp-{}", lab.mtu),
            peer: peer.key(),
            direction: direction.key(),
            streams,
            mtu: lab.mtu,
            goodput_bps: t.bits_per_second,
            cpu_ns_per_byte: per_byte,
            process_cpu_ns_per_byte: proc_per_byte,
            machine_busy: busy_share,
            hook,
            hook_requested: peer.requested_hook(),
            secs: self.opts.secs,
            rate: self.opts.rate.clone(),
            bytes: t.bytes,
            retransmits: t.retransmits,
            runs: 1,
            goodput_bps_runs: vec![t.bits_per_second],
            cpu_ns_per_byte_runs: vec![per_byte],
            process_cpu_ns_per_byte_runs: vec![proc_per_byte],
            machine_busy_runs: vec![busy_share],
        })
    }
}

/// One iperf3 transfer, the busy time of every CPU while it ran (ns), and
/// the busy share of all CPUs.
fn transfer(
    lab: &BulkLab,
    direction: Direction,
    streams: u32,
    secs: u32,
    rate: Option<&str>,
) -> anyhow::Result<(Transfer, f64, f64)> {
    let (server_ns, server_addr, client_ns, client_addr): (&Netns, _, &Netns, _) = match direction {
        Direction::PodToRemote => (&lab.remote, REMOTE_ADDR, &lab.pod, POD_ADDR),
        Direction::RemoteToPod => (&lab.pod, POD_ADDR, &lab.remote, REMOTE_ADDR),
    };
    // The sender is the client: the side that sends data also opens the
    // connection, so each direction uses the policy's rule for it.
    let _server = Server::start(server_ns, server_addr)?;
    let before = CpuTimes::now();
    let t0 = Instant::now();
    let t = iperf::client(client_ns, client_addr, server_addr, secs, streams, rate)?;
    let after = CpuTimes::now();
    let ticks = after.busy.saturating_sub(before.busy) as f64;
    let busy_ns = ticks * 1e9 / clock_ticks_per_sec();
    let share = ticks / after.total.saturating_sub(before.total).max(1) as f64;
    anyhow::ensure!(
        t0.elapsed() >= Duration::from_secs(u64::from(secs)),
        "iperf3 returned before its {secs} s"
    );
    Ok((t, busy_ns, share))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// One row per case: the median goodput and the median CPU per byte
/// (each on its own: the rounds are alike, so neither picks the other's
/// round), the hook most often reported.
pub fn medians(raw: &[BulkRow]) -> Vec<BulkRow> {
    let mut out: Vec<BulkRow> = Vec::new();
    for r in raw {
        match out.iter_mut().find(|o| o.same_case(r)) {
            Some(o) => {
                o.goodput_bps_runs.extend(&r.goodput_bps_runs);
                o.cpu_ns_per_byte_runs.extend(&r.cpu_ns_per_byte_runs);
                o.process_cpu_ns_per_byte_runs
                    .extend(&r.process_cpu_ns_per_byte_runs);
                o.machine_busy_runs.extend(&r.machine_busy_runs);
                o.bytes += r.bytes;
                o.retransmits += r.retransmits;
                o.runs += r.runs;
            }
            None => out.push(r.clone()),
        }
    }
    for o in &mut out {
        o.goodput_bps = median(&o.goodput_bps_runs);
        o.cpu_ns_per_byte = median(&o.cpu_ns_per_byte_runs);
        o.process_cpu_ns_per_byte = median(&o.process_cpu_ns_per_byte_runs);
        o.machine_busy = median(&o.machine_busy_runs);
        let hooks: Vec<&BulkRow> = raw.iter().filter(|r| r.same_case(o)).collect();
        o.hook = hooks
            .iter()
            .max_by_key(|r| hooks.iter().filter(|x| x.hook == r.hook).count())
            .and_then(|r| r.hook.clone());
    }
    out
}

fn peer_label(r: &BulkRow) -> String {
    match (r.peer, &r.hook_requested) {
        ("none", _) => "no filter".into(),
        ("netpol", Some(h)) => format!("netpol ({INGRESS_HOOK_FLAG} {h})"),
        (p, _) => p.into(),
    }
}

fn reference<'r>(rows: &'r [BulkRow], r: &BulkRow) -> Option<&'r BulkRow> {
    rows.iter().find(|o| {
        o.peer == "none"
            && o.scenario == r.scenario
            && o.direction == r.direction
            && o.streams == r.streams
    })
}

/// The bulk tables, one per MTU, with each peer's ratios to no filter.
pub fn markdown(rows: &[BulkRow], secs: u32, rounds: u32, rate: Option<&str>) -> String {
    let cap = rate
        .map(|r| format!(", each stream capped at {r}bit/s"))
        .unwrap_or_default();
    let mut md = String::new();
    let mut scenarios: Vec<(u32, &str)> =
        rows.iter().map(|r| (r.mtu, r.scenario.as_str())).collect();
    scenarios.sort();
    scenarios.dedup();
    for (mtu, sc) in scenarios {
        md.push_str(&format!(
            "\n**bulk TCP, MTU {mtu}** (`{sc}`: iperf3, {secs} s per transfer{cap}, median of {rounds})\n\n| direction | streams | peer | hook | goodput Gbit/s | x no filter | CPU ns/byte | x no filter | iperf3 CPU ns/byte | x no filter | CPUs busy | retransmits |\n|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        ));
        for r in rows.iter().filter(|r| r.scenario == sc) {
            let none = reference(rows, r).filter(|_| r.peer != "none");
            let ratio = |a: f64, b: Option<f64>| {
                b.filter(|b| *b > 0.0)
                    .map(|b| format!("{:.2}x", a / b))
                    .unwrap_or_else(|| "–".into())
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {:.3} | {} | {:.3} | {} | {:.0}% | {} |\n",
                r.direction,
                r.streams,
                peer_label(r),
                r.hook.as_deref().unwrap_or("–"),
                r.goodput_bps / 1e9,
                ratio(r.goodput_bps, none.map(|n| n.goodput_bps)),
                r.cpu_ns_per_byte,
                ratio(r.cpu_ns_per_byte, none.map(|n| n.cpu_ns_per_byte)),
                r.process_cpu_ns_per_byte,
                ratio(
                    r.process_cpu_ns_per_byte,
                    none.map(|n| n.process_cpu_ns_per_byte)
                ),
                r.machine_busy * 100.0,
                r.retransmits,
            ));
        }
    }
    md
}

/// Bulk TCP pod -> remote, one stream, per MTU and per hook: goodput >=
/// 0.95x and CPU per byte <= 1.1x no filter.
pub fn targets(rows: &[BulkRow]) -> Vec<Target> {
    let mut out = Vec::new();
    let judged = rows.iter().filter(|r| {
        r.peer == "netpol" && r.direction == Direction::PodToRemote.key() && r.streams == 1
    });
    for r in judged {
        let Some(none) = reference(rows, r) else {
            continue;
        };
        let hook = match (&r.hook_requested, &r.hook) {
            (Some(req), Some(got)) => format!("{INGRESS_HOOK_FLAG} {req}: {got}"),
            (None, Some(got)) => got.clone(),
            (Some(req), None) => format!("{INGRESS_HOOK_FLAG} {req}"),
            (None, None) => "hook unknown".into(),
        };
        let what = format!(
            "bulk TCP pod->remote, 1 stream, MTU {}, netpol ({hook})",
            r.mtu
        );
        if none.goodput_bps > 0.0 {
            out.push(Target::new(
                format!("{what}: goodput vs no filter"),
                r.goodput_bps / none.goodput_bps,
                Bound::AtLeast(0.95),
                Unit::Times,
            ));
        }
        if none.cpu_ns_per_byte > 0.0 {
            out.push(Target::new(
                format!("{what}: CPU per byte vs no filter"),
                r.cpu_ns_per_byte / none.cpu_ns_per_byte,
                Bound::AtMost(1.1),
                Unit::Times,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(peer: &'static str, hook: Option<&str>, goodput: f64, cpu: f64) -> BulkRow {
        BulkRow {
            scenario: "bulk-tcp-1500".into(),
            peer,
            direction: "pod-to-remote",
            streams: 1,
            mtu: 1500,
            goodput_bps: goodput,
            cpu_ns_per_byte: cpu,
            process_cpu_ns_per_byte: cpu / 2.0,
            machine_busy: 0.5,
            hook: hook.map(str::to_string),
            hook_requested: None,
            secs: 4,
            rate: None,
            bytes: 100,
            retransmits: 0,
            runs: 1,
            goodput_bps_runs: vec![goodput],
            cpu_ns_per_byte_runs: vec![cpu],
            process_cpu_ns_per_byte_runs: vec![cpu / 2.0],
            machine_busy_runs: vec![0.5],
        }
    }

    #[test]
    fn medians_per_case_and_targets_against_no_filter() {
        let raw = vec![
            row("none", None, 10.0, 1.0),
            row("netpol", Some("tcx"), 9.0, 1.3),
            row("none", None, 12.0, 1.2),
            row("netpol", Some("tcx"), 9.8, 1.0),
            row("none", None, 11.0, 0.9),
            row("netpol", Some("xdp-generic"), 9.7, 1.05),
        ];
        let rows = medians(&raw);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].goodput_bps, rows[0].cpu_ns_per_byte), (11.0, 1.0));
        assert_eq!((rows[1].goodput_bps, rows[1].cpu_ns_per_byte), (9.7, 1.05));
        assert_eq!(rows[1].hook.as_deref(), Some("tcx"));
        assert_eq!(rows[1].runs, 3);
        let t = targets(&rows);
        assert_eq!(t.len(), 2);
        assert!(!t[0].met, "9.7/11 < 0.95: {t:?}");
        assert!(t[1].met, "1.05 <= 1.1: {t:?}");
        let md = markdown(&rows, 4, 3, None);
        assert!(
            md.contains("| pod-to-remote | 1 | netpol | tcx | 0.00 | 0.88x | 1.050 | 1.05x | 0.525 | 1.05x | 50% | 0 |"),
            "{md}"
        );
    }
}
