//! `cargo xtask bench --traffic`: pktgen-style traffic through a lab, side by
//! side in one run: the XDP drop-only and pass-only limits, no filter,
//! netpol-agent (LOCAL-PLUS policy plus N extra prefixes), nftables with the
//! same policy, and xdp-filter, over four scenarios; then bulk TCP with
//! iperf3 through a routing node (no filter, netpol-agent per ingress hook,
//! nftables), and the targets judged from the run's own ratios.
//!
//! Each packet measurement: handshake of the established flows, `--warmup`
//! seconds of traffic, then counters read before and after a `--window` of
//! traffic.
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use netpol_tests::traffic::{
    agent::{extra_prefixes, PolicyDir},
    bulk::{self, BulkOptions, BulkReport, Direction},
    chart::{self, Panel},
    frames::{Template, Templates, FLOWS},
    measure::{
        clock_ticks_per_sec, prog_run_stats, thread_cpu_ticks, xdp_prog_id, BpfStats, CpuTimes,
    },
    nft::NftPolicy,
    targets::{self, spread, Bound, Target, Unit},
    topo::{DUT_IF, SINK_IF},
    xdp_filter::XdpFilter,
    CountingProg, Generator, LinkStats, NetpolAgent, SendLimits, TrafficLab,
};

#[derive(Parser)]
struct Args {
    /// Seconds of traffic before the measured window.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Seconds of traffic measured.
    #[arg(long, default_value_t = 2.0)]
    window: f64,
    /// Extra prefixes beside the LOCAL-PLUS policy (0 = the policy alone).
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000,100000")]
    prefixes: Vec<usize>,
    /// Frames per BPF_PROG_TEST_RUN call (each call has a fixed set-up cost).
    #[arg(long, default_value_t = 1 << 20)]
    chunk: u32,
    /// Upper bound of frames sent per measurement, whatever the time.
    #[arg(long, default_value_t = 100_000_000)]
    max_packets: u64,
    /// Only these peers (drop, pass, none, netpol, nftables, xdp-filter).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Also measure the XDP program's own run time per packet
    /// (kernel.bpf_stats_enabled, machine-wide, on during the run; it slows
    /// every program a little, so keep it out of runs whose pps you report).
    #[arg(long)]
    prog_stats: bool,
    #[arg(long, default_value = "target/bench/traffic.json")]
    json: PathBuf,
    #[arg(long, default_value = "target/bench/traffic.png")]
    chart: PathBuf,
    /// The Markdown table (for docs/benchmarks.md).
    #[arg(long, default_value = "target/bench/traffic.md")]
    markdown: PathBuf,
    /// Only these scenarios (denied-syn, established, new-flows, mix, bulk);
    /// all when not given.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// The bulk TCP scenario alone (`--scenarios bulk`).
    #[arg(long)]
    bulk_only: bool,
    /// Seconds of each bulk transfer.
    #[arg(long, default_value_t = 4)]
    bulk_secs: u32,
    /// Measurements of each bulk case and peer; the median is reported.
    #[arg(long, default_value_t = 3)]
    bulk_rounds: u32,
    /// `--ingress-hook` values netpol-agent is measured with in the bulk
    /// scenario (empty: once, with the hook the agent picks).
    #[arg(long, value_delimiter = ',', default_value = "xdp,tcx")]
    bulk_hooks: Vec<String>,
    /// MTUs of the bulk lab (set on every veth of the path).
    #[arg(long, value_delimiter = ',', default_value = "1500,9000")]
    bulk_mtus: Vec<u32>,
    /// Parallel TCP streams of the bulk transfers (iperf3 -P).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    bulk_streams: Vec<u32>,
    /// Cap each bulk stream at this rate (iperf3 -b, e.g. 2G), so CPU per
    /// byte is compared below saturation; as fast as TCP goes by default.
    #[arg(long)]
    bulk_rate: Option<String>,
    /// Directions of the bulk transfers (pod-to-remote, remote-to-pod).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pod-to-remote,remote-to-pod"
    )]
    bulk_directions: Vec<String>,
}

const PACKET_SCENARIOS: [&str; 4] = ["denied-syn", "established", "new-flows", "mix"];

impl Args {
    fn wants(&self, scenario: &str) -> bool {
        if self.bulk_only {
            return scenario == "bulk";
        }
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == scenario)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Drop,
    Pass,
    None,
    Netpol(usize),
    Nft(usize),
    XdpFilter,
}

impl Peer {
    fn name(&self) -> &'static str {
        match self {
            Peer::Drop => "xdp drop-only (limit)",
            Peer::Pass => "xdp pass-only (limit)",
            Peer::None => "no filter",
            Peer::Netpol(_) => "netpol-agent",
            Peer::Nft(_) => "nftables",
            Peer::XdpFilter => "xdp-filter",
        }
    }
    fn key(&self) -> &'static str {
        match self {
            Peer::Drop => "drop",
            Peer::Pass => "pass",
            Peer::None => "none",
            Peer::Netpol(_) => "netpol",
            Peer::Nft(_) => "nftables",
            Peer::XdpFilter => "xdp-filter",
        }
    }
    fn prefixes(&self) -> Option<usize> {
        match self {
            Peer::Netpol(n) | Peer::Nft(n) => Some(*n),
            _ => None,
        }
    }
}

struct Scenario {
    key: &'static str,
    name: &'static str,
    templates: Vec<Template>,
    chunk: u32,
    /// The limit this scenario is judged against: its packets should be
    /// dropped (the drop-only limit) or passed (the pass-only limit).
    drops: bool,
}

fn scenarios(t: &Templates, chunk: u32) -> Vec<Scenario> {
    vec![
        Scenario {
            key: "denied-syn",
            name: "denied SYN flood, random sources",
            templates: vec![t.denied_syn.clone()],
            chunk,
            drops: true,
        },
        Scenario {
            key: "established",
            name: "established flows (ACKs, 1024 flows)",
            templates: vec![t.established_ack.clone()],
            chunk,
            drops: false,
        },
        Scenario {
            key: "new-flows",
            name: "allowed new flows (SYNs, random ports)",
            templates: vec![t.allowed_syn.clone()],
            chunk,
            drops: false,
        },
        Scenario {
            key: "mix",
            name: "mix: denied SYN, est. ACK, new SYN, UDP DNS, est. ACK v6",
            templates: vec![
                t.denied_syn.clone(),
                t.established_ack.clone(),
                t.allowed_syn.clone(),
                t.udp_dns.clone(),
                t.established_ack6.clone(),
            ],
            chunk,
            drops: false,
        },
    ]
}

/// What is set up for one peer; torn down on drop.
enum Active<'a> {
    Count(CountingProg, bool),
    Nothing,
    // The policy directories stay until the peer is torn down.
    Netpol(NetpolAgent, #[allow(dead_code)] PolicyDir),
    Nft(NftPolicy<'a>, #[allow(dead_code)] PolicyDir),
    XdpFilter(#[allow(dead_code)] XdpFilter<'a>),
}

impl Active<'_> {
    /// The program's own (passed, dropped) counters, when it has them.
    fn own(&self) -> anyhow::Result<Option<(u64, u64)>> {
        Ok(match self {
            Active::Count(p, drops) => {
                let n = p.count()?;
                Some(if *drops { (0, n) } else { (n, 0) })
            }
            Active::Netpol(a, _) => {
                let v = a.verdicts()?;
                Some((v.pass, v.drop))
            }
            Active::Nft(n, _) => Some(n.verdicts()?),
            Active::Nothing | Active::XdpFilter(_) => None,
        })
    }
}

fn setup<'a>(lab: &'a TrafficLab, peer: Peer) -> anyhow::Result<Active<'a>> {
    Ok(match peer {
        Peer::Drop => Active::Count(CountingProg::attach(&lab.dut, DUT_IF, "count_drop")?, true),
        Peer::Pass => Active::Count(CountingProg::attach(&lab.dut, DUT_IF, "count_pass")?, false),
        Peer::None => Active::Nothing,
        Peer::Netpol(n) => {
            let dir = PolicyDir::localplus_plus(&extra_prefixes(n))?;
            let t = Instant::now();
            let agent = NetpolAgent::start(&lab.dut, DUT_IF, &dir.path, Duration::from_secs(120))?;
            eprintln!(
                "#   netpol-agent ready in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            Active::Netpol(agent, dir)
        }
        Peer::Nft(n) => {
            let dir = PolicyDir::localplus_plus(&extra_prefixes(n))?;
            let t = Instant::now();
            let nft = NftPolicy::load(&lab.dut, &dir.path, DUT_IF)?;
            eprintln!(
                "#   nftables ruleset with {} set elements loaded in {:.1}s",
                nft.elements,
                t.elapsed().as_secs_f64()
            );
            Active::Nft(nft, dir)
        }
        Peer::XdpFilter => {
            // The closest stateless rule set: every source the policy lets
            // reach the benchmark's destinations, as exact addresses.
            let mut src: Vec<IpAddr> = (0..64u32)
                .map(|i| IpAddr::V4((0x0a00_0400u32 + i).into()))
                .collect();
            src.extend((0..256u32).map(|i| IpAddr::V4((0x0a00_0100u32 + i).into())));
            src.push("fd00:0:4::10".parse()?);
            Active::XdpFilter(XdpFilter::load(&lab.dut, DUT_IF, &src)?)
        }
    })
}

#[derive(Clone, Copy, Default)]
struct Sample {
    t: Option<Instant>,
    rx: u64,
    sink: u64,
    own: Option<(u64, u64)>,
    cpu: CpuTimes,
    sender_ticks: u64,
    /// (run_time_ns, run_cnt) of the XDP program on the interface under test.
    prog: Option<(u64, u64)>,
}

#[derive(Clone, Debug, serde::Serialize)]
struct Row {
    scenario: &'static str,
    peer: &'static str,
    prefixes: Option<usize>,
    /// Frames the interface under test received per second.
    seen_pps: f64,
    /// Frames that got through the node to the sink per second.
    forwarded_pps: f64,
    /// From the program's own counters.
    own_pass_pps: Option<f64>,
    own_drop_pps: Option<f64>,
    /// Sender thread CPU (the whole path runs in its softirq context) per
    /// frame seen.
    cpu_ns_per_packet: f64,
    /// Machine-wide busy share and softirq share of all CPUs in the window.
    machine_busy: f64,
    machine_softirq: f64,
    sent: u64,
    /// With --prog-stats: the XDP program's own run time per packet.
    prog_ns_per_packet: Option<f64>,
    /// Measurements averaged into this row.
    runs: u32,
}

/// One row per (scenario, peer, prefixes): repeated measurements averaged.
fn merge(raw: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in raw {
        let same = out
            .iter_mut()
            .find(|o| o.scenario == r.scenario && o.peer == r.peer && o.prefixes == r.prefixes);
        let Some(o) = same else {
            out.push(r.clone());
            continue;
        };
        let k = o.runs as f64;
        let avg = |a: f64, b: f64| (a * k + b) / (k + 1.0);
        let avg_opt = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| avg(a, b));
        o.seen_pps = avg(o.seen_pps, r.seen_pps);
        o.forwarded_pps = avg(o.forwarded_pps, r.forwarded_pps);
        o.own_pass_pps = avg_opt(o.own_pass_pps, r.own_pass_pps);
        o.own_drop_pps = avg_opt(o.own_drop_pps, r.own_drop_pps);
        o.cpu_ns_per_packet = avg(o.cpu_ns_per_packet, r.cpu_ns_per_packet);
        o.machine_busy = avg(o.machine_busy, r.machine_busy);
        o.machine_softirq = avg(o.machine_softirq, r.machine_softirq);
        o.prog_ns_per_packet = avg_opt(o.prog_ns_per_packet, r.prog_ns_per_packet);
        o.sent += r.sent;
        o.runs += 1;
    }
    out
}

struct Bench<'a> {
    lab: &'a TrafficLab,
    gen: Generator,
    sink: CountingProg,
    args: &'a Args,
}

impl Bench<'_> {
    fn measure(&mut self, peer: Peer, active: &Active, sc: &Scenario) -> anyhow::Result<Row> {
        self.lab.open_flows(&mut self.gen)?;
        let limits = SendLimits {
            max_packets: self.args.max_packets,
            max_time: Duration::from_secs_f64(self.args.warmup + self.args.window + 10.0),
            chunk: sc.chunk,
        };
        let stop = AtomicBool::new(false);
        let tid = AtomicI32::new(0);
        let (lab, gen) = (self.lab, &mut self.gen);
        let (a, b, report) = std::thread::scope(|s| -> anyhow::Result<_> {
            let sender = s.spawn(|| {
                lab.gen.run_in(|| {
                    // SAFETY: gettid has no preconditions.
                    tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
                    gen.run(&sc.templates, lab.gen_ifindex, &limits, &stop)
                })
            });
            let result = (|| {
                std::thread::sleep(Duration::from_secs_f64(self.args.warmup));
                let a = Bench::sample_with(lab, &self.sink, active, tid.load(Ordering::Relaxed))?;
                std::thread::sleep(Duration::from_secs_f64(self.args.window));
                let b = Bench::sample_with(lab, &self.sink, active, tid.load(Ordering::Relaxed))?;
                anyhow::Ok((a, b))
            })();
            stop.store(true, Ordering::Relaxed);
            let report = sender.join().expect("sender thread")?;
            let (a, b) = result?;
            Ok((a, b, report))
        })?;
        let dt = b.t.unwrap().duration_since(a.t.unwrap()).as_secs_f64();
        let seen = (b.rx - a.rx) as f64;
        let own = match (a.own, b.own) {
            (Some(x), Some(y)) => Some(((y.0 - x.0) as f64 / dt, (y.1 - x.1) as f64 / dt)),
            _ => None,
        };
        let ticks = clock_ticks_per_sec();
        let cpu_s = (b.sender_ticks - a.sender_ticks) as f64 / ticks;
        let tot = (b.cpu.total - a.cpu.total).max(1) as f64;
        Ok(Row {
            scenario: sc.key,
            peer: peer.key(),
            prefixes: peer.prefixes(),
            seen_pps: seen / dt,
            forwarded_pps: (b.sink - a.sink) as f64 / dt,
            own_pass_pps: own.map(|o| o.0),
            own_drop_pps: own.map(|o| o.1),
            cpu_ns_per_packet: if seen > 0.0 { cpu_s * 1e9 / seen } else { 0.0 },
            machine_busy: (b.cpu.busy - a.cpu.busy) as f64 / tot,
            machine_softirq: (b.cpu.softirq - a.cpu.softirq) as f64 / tot,
            sent: report.total,
            runs: 1,
            prog_ns_per_packet: match (a.prog, b.prog) {
                (Some(x), Some(y)) if y.1 > x.1 && self.args.prog_stats => {
                    Some((y.0 - x.0) as f64 / (y.1 - x.1) as f64)
                }
                _ => None,
            },
        })
    }

    fn sample_with(
        lab: &TrafficLab,
        sink: &CountingProg,
        active: &Active,
        tid: i32,
    ) -> anyhow::Result<Sample> {
        Ok(Sample {
            t: Some(Instant::now()),
            rx: LinkStats::rx_packets(&lab.dut, DUT_IF),
            sink: sink.count()?,
            own: active.own()?,
            cpu: CpuTimes::now(),
            sender_ticks: thread_cpu_ticks(tid),
            prog: xdp_prog_id(&lab.dut, DUT_IF).and_then(prog_run_stats),
        })
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{:.2}", x / 1e6))
        .unwrap_or_else(|| "–".into())
}

fn find<'r>(
    rows: &'r [Row],
    scenario: &str,
    peer: &str,
    prefixes: Option<usize>,
) -> Option<&'r Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.peer == peer && r.prefixes == prefixes)
}

/// The table, as Markdown (also printed).
fn table(rows: &[Row], scs: &[(&'static str, &'static str, bool)], prog_stats: bool) -> String {
    let (prog_head, prog_align) = if prog_stats {
        (" XDP prog ns/pkt |", "---:|")
    } else {
        ("", "")
    };
    let mut md = String::new();
    for &(key, name, drops) in scs {
        let limit_key = if drops { "drop" } else { "pass" };
        let limit = find(rows, key, limit_key, None).map(|r| r.seen_pps);
        md.push_str(&format!(
            "\n**{name}** (limit: {limit_key}-only XDP)\n\n| peer | extra prefixes | Mpps seen | x limit | x nftables | x xdp-filter | x no filter | passed Mpps (own) | dropped Mpps (own) | forwarded Mpps | CPU ns/pkt |{prog_head}\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{prog_align}\n"
        ));
        for r in rows.iter().filter(|r| r.scenario == key) {
            let ratio = |other: Option<&Row>| {
                other
                    .filter(|o| o.seen_pps > 0.0)
                    .map(|o| format!("{:.2}x", r.seen_pps / o.seen_pps))
                    .unwrap_or_else(|| "–".into())
            };
            let nft = if r.peer == "netpol" {
                find(rows, key, "nftables", r.prefixes)
            } else {
                None
            };
            let xf = if r.peer == "netpol" {
                find(rows, key, "xdp-filter", None)
            } else {
                None
            };
            let none = if r.peer != "none" {
                find(rows, key, "none", None)
            } else {
                None
            };
            let lim = limit
                .filter(|l| *l > 0.0)
                .map(|l| format!("{:.2}x", r.seen_pps / l))
                .unwrap_or_else(|| "–".into());
            md.push_str(&format!(
                "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {:.2} | {:.0} |{}\n",
                match r.peer {
                    "drop" => "XDP drop-only (limit)",
                    "pass" => "XDP pass-only (limit)",
                    "none" => "no filter",
                    p => p,
                },
                r.prefixes
                    .map(|p| if p == 0 {
                        "0 (LOCAL-PLUS)".to_string()
                    } else {
                        format!("{p}")
                    })
                    .unwrap_or_else(|| "–".into()),
                r.seen_pps / 1e6,
                lim,
                ratio(nft),
                ratio(xf),
                ratio(none),
                fmt_opt(r.own_pass_pps),
                fmt_opt(r.own_drop_pps),
                r.forwarded_pps / 1e6,
                r.cpu_ns_per_packet,
                if prog_stats {
                    r.prog_ns_per_packet
                        .map(|n| format!(" {n:.0} |"))
                        .unwrap_or_else(|| " – |".into())
                } else {
                    String::new()
                }
            ));
        }
    }
    md
}

/// The packet scenarios' targets, judged from this run's ratios.
fn targets(rows: &[Row], prefixes: &[usize]) -> Vec<Target> {
    let seen = |sc: &str, peer: &str, p: Option<usize>| find(rows, sc, peer, p).map(|r| r.seen_pps);
    let mut out = Vec::new();
    let top = prefixes.iter().copied().max();
    if let (Some(n), Some(np)) = (top, top.and_then(|n| seen("denied-syn", "netpol", Some(n)))) {
        if let Some(lim) = seen("denied-syn", "drop", None).filter(|l| *l > 0.0) {
            out.push(Target::new(
                format!("denied SYN flood, random sources, {n} prefixes: vs the drop-only limit"),
                np / lim,
                Bound::AtLeast(0.8),
                Unit::Times,
            ));
        }
        if let Some(nft) = seen("denied-syn", "nftables", Some(n)).filter(|v| *v > 0.0) {
            out.push(Target::new(
                format!("denied SYN flood, random sources, {n} prefixes: vs nftables"),
                np / nft,
                Bound::AtLeast(5.0),
                Unit::Times,
            ));
        }
    }
    // Flat from none to the most extra prefixes: every measured prefix count
    // (0 = the LOCAL-PLUS policy alone, about 30 prefixes per family).
    let v: Vec<f64> = prefixes
        .iter()
        .filter_map(|&p| seen("denied-syn", "netpol", Some(p)))
        .collect();
    if let (Some(s), Some(lo), Some(hi)) = (spread(&v), prefixes.iter().min(), top) {
        out.push(Target::new(
            format!("denied SYN flood, flat from {lo} to {hi} prefixes (netpol max/min - 1)"),
            s,
            Bound::AtMost(0.15),
            Unit::Percent,
        ));
    }
    for (sc, name) in [
        ("new-flows", "allowed new flows"),
        ("established", "established flows"),
    ] {
        let Some(lim) = seen(sc, "pass", None).filter(|l| *l > 0.0) else {
            continue;
        };
        let worst = prefixes
            .iter()
            .filter_map(|&p| seen(sc, "netpol", Some(p)).map(|v| (p, v / lim)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((p, r)) = worst {
            out.push(Target::new(
                format!("{name}: vs the pass-only limit (worst, at {p} prefixes)"),
                r,
                Bound::AtLeast(0.8),
                Unit::Times,
            ));
        }
    }
    out
}

/// What the packet scenarios produced.
#[derive(Default)]
struct PacketRun {
    rows: Vec<Row>,
    raw: Vec<Row>,
    notes: Vec<String>,
    markdown: String,
    targets: Vec<Target>,
}

/// The four packet scenarios of `keys`, every peer in turn; the chart
/// is drawn here too.
fn run_packets(args: &Args, keys: &[&str], kernel: &str) -> anyhow::Result<PacketRun> {
    let mut peers = vec![Peer::Drop, Peer::Pass, Peer::None];
    peers.extend(args.prefixes.iter().map(|&n| Peer::Netpol(n)));
    peers.extend(args.prefixes.iter().map(|&n| Peer::Nft(n)));
    peers.push(Peer::XdpFilter);
    // The limits again at the end: the load of a shared machine drifts, and
    // the table shows the mean of both.
    peers.extend([Peer::Drop, Peer::Pass, Peer::None]);
    if !args.peers.is_empty() {
        peers.retain(|p| args.peers.iter().any(|k| k == p.key()));
    }
    if peers.is_empty() {
        return Ok(PacketRun::default());
    }
    let _stats = if args.prog_stats {
        Some(BpfStats::enable().context("enabling kernel.bpf_stats_enabled")?)
    } else {
        None
    };
    let lab = TrafficLab::new();
    let templates = Templates::new(lab.dut_mac);
    let mut scs = scenarios(&templates, args.chunk);
    scs.retain(|s| keys.contains(&s.key));
    let sink = CountingProg::attach(&lab.pod, SINK_IF, "count_drop")?;
    let mut bench = Bench {
        lab: &lab,
        gen: Generator::load()?,
        sink,
        args,
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &peer in &peers {
        eprintln!(
            "# {}{}",
            peer.name(),
            peer.prefixes()
                .map(|p| format!(", {p} extra prefixes"))
                .unwrap_or_default()
        );
        let active = match setup(&lab, peer) {
            Ok(a) => a,
            Err(e) => {
                let note = format!("{} could not be set up: {e:#}", peer.name());
                eprintln!("#   {note}");
                notes.push(note);
                continue;
            }
        };
        for sc in &scs {
            let row = bench
                .measure(peer, &active, sc)
                .with_context(|| format!("{} / {}", peer.name(), sc.name))?;
            eprintln!(
                "#   {:<12} {:>6.2} Mpps seen, {:>6.2} forwarded, own pass/drop {}/{}, {:.0} CPU ns/pkt, sent {}",
                sc.key,
                row.seen_pps / 1e6,
                row.forwarded_pps / 1e6,
                fmt_opt(row.own_pass_pps),
                fmt_opt(row.own_drop_pps),
                row.cpu_ns_per_packet,
                row.sent
            );
            rows.push(row);
        }
        drop(active);
    }
    let raw = rows;
    let rows = merge(&raw);
    let sc_meta: Vec<_> = scs.iter().map(|s| (s.key, s.name, s.drops)).collect();
    let markdown = table(&rows, &sc_meta, args.prog_stats);

    // The chart: pps against prefix count for netpol, nftables and the limit.
    let prefixes = args.prefixes.clone();
    let panels: Vec<Panel> = scs
        .iter()
        .map(|s| {
            let series = |peer: &str| -> Vec<Option<f64>> {
                prefixes
                    .iter()
                    .map(|&p| find(&rows, s.key, peer, Some(p)).map(|r| r.seen_pps / 1e6))
                    .collect()
            };
            let mut limits = Vec::new();
            let lk = if s.drops { "drop" } else { "pass" };
            if let Some(r) = find(&rows, s.key, lk, None) {
                limits.push((format!("XDP {lk}-only limit"), r.seen_pps / 1e6));
            }
            if let Some(r) = find(&rows, s.key, "none", None) {
                limits.push(("no filter".to_string(), r.seen_pps / 1e6));
            }
            Panel {
                title: s.name.to_string(),
                prefixes: prefixes.clone(),
                series: vec![
                    ("netpol-agent".to_string(), series("netpol")),
                    ("nftables".to_string(), series("nftables")),
                ],
                limits,
            }
        })
        .collect();
    if !panels.is_empty() {
        if let Some(dir) = args.chart.parent() {
            std::fs::create_dir_all(dir)?;
        }
        chart::draw(
            &args.chart,
            &format!(
                "Packets per second seen by the receiving veth (Linux {kernel}, 64-byte frames)"
            ),
            &panels,
        )?;
    }
    let targets = targets(&rows, &args.prefixes);
    Ok(PacketRun {
        rows,
        raw,
        notes,
        markdown,
        targets,
    })
}

fn bulk_options(args: &Args) -> anyhow::Result<BulkOptions> {
    let mut opts = BulkOptions {
        mtus: args.bulk_mtus.clone(),
        streams: args.bulk_streams.clone(),
        directions: args
            .bulk_directions
            .iter()
            .map(|d| Direction::parse(d))
            .collect::<anyhow::Result<_>>()?,
        secs: args.bulk_secs,
        rounds: args.bulk_rounds.max(1),
        hooks: args.bulk_hooks.clone(),
        rate: args.bulk_rate.clone(),
        ..BulkOptions::default()
    };
    if !args.peers.is_empty() {
        opts.peers.retain(|p| args.peers.contains(p));
    }
    Ok(opts)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !netpol_tests::require_root() {
        anyhow::bail!("the traffic benchmark needs root (namespaces, XDP, BPF_PROG_TEST_RUN)");
    }
    for s in &args.scenarios {
        anyhow::ensure!(
            s == "bulk" || PACKET_SCENARIOS.contains(&s.as_str()),
            "unknown scenario {s:?} (denied-syn, established, new-flows, mix, bulk)"
        );
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    let started = Instant::now();
    let keys: Vec<&str> = PACKET_SCENARIOS
        .into_iter()
        .filter(|k| args.wants(k))
        .collect();
    let packets = if keys.is_empty() {
        PacketRun::default()
    } else {
        run_packets(&args, &keys, &kernel)?
    };
    let bulk_opts = bulk_options(&args)?;
    let bulk = if args.wants("bulk") && !bulk_opts.peers.is_empty() {
        eprintln!("# bulk TCP (iperf3)");
        bulk::run(&bulk_opts)?
    } else {
        BulkReport {
            rows: Vec::new(),
            raw: Vec::new(),
            notes: Vec::new(),
        }
    };

    let mut all_targets = packets.targets.clone();
    all_targets.extend(bulk::targets(&bulk.rows));
    let mut md = packets.markdown.clone();
    if !bulk.rows.is_empty() {
        md.push_str(&bulk::markdown(
            &bulk.rows,
            bulk_opts.secs,
            bulk_opts.rounds,
            bulk_opts.rate.as_deref(),
        ));
    }
    if !all_targets.is_empty() {
        md.push_str(&targets::markdown(&all_targets));
    }
    let notes: Vec<String> = packets.notes.iter().chain(&bulk.notes).cloned().collect();
    println!("{md}");
    for n in &notes {
        println!("note: {n}");
    }

    for p in [&args.json, &args.markdown] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&args.markdown, &md)?;
    let mut results = serde_json::to_value(&packets.rows)?;
    let mut raw = serde_json::to_value(&packets.raw)?;
    for (all, more) in [(&mut results, &bulk.rows), (&mut raw, &bulk.raw)] {
        if let (Some(all), serde_json::Value::Array(more)) =
            (all.as_array_mut(), serde_json::to_value(more)?)
        {
            all.extend(more);
        }
    }
    let meta = serde_json::json!({
        "kernel": kernel,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "warmup_s": args.warmup,
        "window_s": args.window,
        "flows": FLOWS,
        "bulk_secs": bulk_opts.secs,
        "bulk_rounds": bulk_opts.rounds,
        "bulk_rate": bulk_opts.rate,
        "notes": notes,
        "results": results,
        "raw": raw,
        "targets": all_targets,
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&meta)?)?;
    eprintln!(
        "# {} packet and {} bulk results in {:.0}s; JSON {}, table {}{}",
        packets.rows.len(),
        bulk.rows.len(),
        started.elapsed().as_secs_f64(),
        args.json.display(),
        args.markdown.display(),
        if packets.rows.is_empty() {
            String::new()
        } else {
            format!(", chart {}", args.chart.display())
        }
    );
    Ok(())
}
