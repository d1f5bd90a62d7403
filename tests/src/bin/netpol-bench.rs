//! `cargo xtask bench`: the XDP program under BPF_PROG_TEST_RUN on canned
//! frames, beside a no-op XDP program from the same toolchain, in one run.
//!
//! Each scenario alternates no-op and netpol runs (`--rounds` times) and takes
//! the median of each, so drift on a shared machine hits both sides alike.
use std::{net::Ipv4Addr, path::PathBuf, time::Instant};

use agent_common::SRC_ORIGIN_ROUTE;
use anyhow::Context as _;
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use clap::Parser;
use netpol_agent::{
    datapath::{CountingOptions, Datapath, IfaceRole, LoadOptions, SourcePlan},
    policy::{self, CompileOptions, Group, Policy},
};
use netpol_tests::bench_frames as frames;

#[derive(Parser)]
struct Args {
    /// Packets per BPF_PROG_TEST_RUN call.
    #[arg(long, default_value_t = 2_000_000)]
    repeat: u32,
    /// Alternating no-op/netpol measurement rounds per scenario (median taken).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Extra CIDR prefixes loaded beside the LOCAL-PLUS policy.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,100000")]
    prefixes: Vec<usize>,
    /// Conntrack entries per family (the agent's --ct-max).
    #[arg(long, default_value_t = LoadOptions::default().ct_max)]
    ct_max: u32,
    /// Prefix counts for the reload table (compile, map write, swap).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    reload_prefixes: Vec<usize>,
    /// Extra prefixes for the counters on/off table.
    #[arg(long, default_value_t = 1000)]
    counters_prefixes: usize,
    /// Where the JSON results go.
    /// Workload identity scales: PODS:NAMESPACES:POLICIES, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000:10:100,10000:100:1000"
    )]
    identity: Vec<String>,
    /// Pod events timed per identity scale.
    #[arg(long, default_value_t = 20)]
    identity_events: usize,
    #[arg(long, default_value = "target/bench/microbench.json")]
    json: PathBuf,
    /// What the source check sees on the interface the frames enter
    /// (loopback): `pod` (a pod interface owning every frame's source: one
    /// hash hit per packet), `uplink` (one miss, then the interface's role),
    /// `none` (an interface that is not checked: two misses).
    #[arg(long, value_enum, default_value_t = SourcesMode::Pod)]
    sources: SourcesMode,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SourcesMode {
    Pod,
    Uplink,
    None,
}

/// Loopback's ifindex: BPF_PROG_TEST_RUN frames enter on it.
const LO: u32 = 1;

/// The source address of an Ethernet + IPv4/IPv6 frame.
fn frame_source(f: &[u8]) -> Option<std::net::IpAddr> {
    match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        0x0800 => {
            let a: [u8; 4] = f.get(26..30)?.try_into().ok()?;
            Some(a.into())
        }
        0x86dd => {
            let a: [u8; 16] = f.get(22..38)?.try_into().ok()?;
            Some(a.into())
        }
        _ => None,
    }
}

/// Writes `SOURCES` for `mode`, so every scenario keeps its verdict.
fn set_sources(dp: &mut Datapath, mode: SourcesMode) -> anyhow::Result<()> {
    let mut plan = SourcePlan::default();
    match mode {
        SourcesMode::None => {}
        SourcesMode::Pod => {
            plan.roles.insert(LO, IfaceRole::Pod);
            for s in frames::scenarios() {
                for f in s.setup.iter().chain([&s.frame]) {
                    if let Some(a) = frame_source(f) {
                        plan.own(LO, a, SRC_ORIGIN_ROUTE);
                    }
                }
            }
        }
        SourcesMode::Uplink => {
            // Pods elsewhere on the node, none of them a frame's source.
            plan.roles.insert(LO, IfaceRole::Uplink);
            plan.roles.insert(4000, IfaceRole::Pod);
            plan.own(4000, "10.0.3.10".parse()?, SRC_ORIGIN_ROUTE);
            plan.own(4000, "fd00:0:3::10".parse()?, SRC_ORIGIN_ROUTE);
        }
    }
    dp.sync_sources(&plan)?;
    Ok(())
}

#[derive(serde::Serialize)]
struct Row {
    prefixes: usize,
    scenario: &'static str,
    noop_ns: f64,
    netpol_ns: f64,
    ratio: f64,
    verdict: &'static str,
}

/// `n` distinct /32s in 172.16.0.0/12, from a fixed seed; the first is the
/// source of the "denied, deep in the trie" scenario.
fn extra_prefixes(n: usize) -> Vec<ipnet::IpNet> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut seen = std::collections::BTreeSet::new();
    seen.insert(u32::from(frames::EXTRA_SRC));
    while seen.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seen.insert(0xac10_0000 | (x as u32 & 0x000f_ffff));
    }
    seen.into_iter()
        .map(|a| ipnet::IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(a))))
        .collect()
}

fn policy_with(n: usize) -> anyhow::Result<Policy> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus-cidr");
    let mut p = policy::load_dir(&dir, &policy::ReadLimits::default())?;
    let extra = policy::parse_str(
        "bench.yaml",
        "rules:\n  - name: bench-extra-to-wallet\n    from: bench-extra\n    to: svc-wallet\n    ports: [9999/tcp]\n",
    )?;
    p.groups
        .push(Group::new("bench-extra", &extra_prefixes(n), &[]));
    p.rules.extend(extra.rules);
    Ok(p)
}

#[derive(serde::Serialize)]
struct ReloadRow {
    prefixes: usize,
    compile_ms: f64,
    first_write_ms: f64,
    first_changes: usize,
    reload_compile_ms: f64,
    reload_write_ms: f64,
    reload_changes: usize,
    swap_us: f64,
    reload_total_ms: f64,
}

/// What a reload costs: compiling, writing the idle slot (all of it the first
/// time, only the difference after), and the swap. The second policy moves 1%
/// of the extra prefixes, as a routine edit would.
fn reload_table(args: &Args) -> anyhow::Result<Vec<ReloadRow>> {
    println!(
        "\n{:>9}  {:>10} {:>12} {:>10} {:>14} {:>12} {:>10} {:>9} {:>13}",
        "prefixes",
        "compile",
        "first write",
        "entries",
        "reload compile",
        "reload write",
        "changes",
        "swap",
        "reload total"
    );
    let mut rows = Vec::new();
    for &n in &args.reload_prefixes {
        let opts = LoadOptions {
            prefix_max: LoadOptions::default().prefix_max.max(2 * n as u32),
            ..LoadOptions::default()
        };
        let mut dp = Datapath::load(&opts)?;
        let t = Instant::now();
        let first = policy::compile(&policy_with(n)?, &CompileOptions::default())?;
        let compile = t.elapsed();
        let a = dp.apply_timed(&first)?;
        // A second policy (slot 1 was empty: a full write), then the edit that
        // lands on slot 0 again and is written as a difference.
        let second = policy_with_moved(n, 0)?;
        dp.apply_timed(&policy::compile(&second, &CompileOptions::default())?)?;
        let t = Instant::now();
        let edited = policy::compile(&policy_with_moved(n, 1)?, &CompileOptions::default())?;
        let reload_compile = t.elapsed();
        let b = dp.apply_timed(&edited)?;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let row = ReloadRow {
            prefixes: n,
            compile_ms: ms(compile),
            first_write_ms: ms(a.write),
            first_changes: a.changes,
            reload_compile_ms: ms(reload_compile),
            reload_write_ms: ms(b.write),
            reload_changes: b.changes,
            swap_us: b.swap.as_secs_f64() * 1e6,
            reload_total_ms: ms(reload_compile + b.write + b.swap),
        };
        println!(
            "{:>9}  {:>8.1}ms {:>10.1}ms {:>10} {:>12.1}ms {:>10.1}ms {:>10} {:>7.1}us {:>11.1}ms",
            row.prefixes,
            row.compile_ms,
            row.first_write_ms,
            row.first_changes,
            row.reload_compile_ms,
            row.reload_write_ms,
            row.reload_changes,
            row.swap_us,
            row.reload_total_ms
        );
        rows.push(row);
    }
    Ok(rows)
}

/// `policy_with(n)`, with 1% of the extra prefixes replaced by others when
/// `edit` is odd (a routine change between two reloads).
fn policy_with_moved(n: usize, edit: u32) -> anyhow::Result<Policy> {
    let mut p = policy_with(n)?;
    if edit % 2 == 1 {
        let g = p
            .groups
            .iter_mut()
            .find(|g| g.name == "bench-extra")
            .context("bench-extra group")?;
        let moved = (n / 100).max(1);
        for (i, c) in g.cidrs.iter_mut().rev().take(moved).enumerate() {
            // 100.64.0.0/10 never overlaps the extra prefixes' 172.16.0.0/12.
            let a = Ipv4Addr::from(0x6440_0000u32 + i as u32);
            *c = ipnet::IpNet::from(std::net::IpAddr::V4(a));
        }
    }
    Ok(p)
}

/// Building blocks measured alone, beside the same no-op.
#[derive(serde::Serialize)]
struct CountersRow {
    scenario: &'static str,
    noop_ns: f64,
    off_ns: f64,
    on_ns: f64,
    /// Median of the per-round differences (on - off), in ns per packet.
    delta_ns: f64,
}

/// The cost of per-flow counting: the same scenarios on two datapaths, one
/// with flow counters on (the default) and one with them off (`run
/// --no-flow-counters`), measured alternately with the no-op in one run.
fn counters_table(args: &Args, noop: &Xdp) -> anyhow::Result<Vec<CountersRow>> {
    let n = args.counters_prefixes;
    let compiled = policy::compile(&policy_with(n)?, &CompileOptions::default())?;
    let load = |on: bool| -> anyhow::Result<Datapath> {
        let opts = LoadOptions {
            prefix_max: LoadOptions::default().prefix_max.max(2 * n as u32),
            ct_max: args.ct_max,
            ct_source_burst: u32::MAX,
            counting: CountingOptions {
                flow_counters: on,
                ..CountingOptions::default()
            },
            ..LoadOptions::default()
        };
        let mut dp = Datapath::load(&opts)?;
        dp.apply(&compiled)?;
        set_sources(&mut dp, args.sources)?;
        Ok(dp)
    };
    let (on, off) = (load(true)?, load(false)?);
    println!(
        "\ncounters on/off, {n} extra prefixes\n{:<38} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "noop ns", "off ns", "on ns", "on-off"
    );
    let mut rows = Vec::new();
    for s in frames::scenarios() {
        for dp in [&on, &off] {
            for setup in &s.setup {
                dp.xdp_test_run(setup, 1)?;
            }
        }
        let (mut noop_ns, mut off_ns, mut on_ns, mut delta) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            noop_ns.push(run_xdp(noop, &s.frame, args.repeat)?.1);
            let o = off.xdp_test_run(&s.frame, args.repeat)?.1.as_nanos() as f64;
            let c = on.xdp_test_run(&s.frame, args.repeat)?.1.as_nanos() as f64;
            off_ns.push(o);
            on_ns.push(c);
            delta.push(c - o);
        }
        let row = CountersRow {
            scenario: s.name,
            noop_ns: median(noop_ns),
            off_ns: median(off_ns),
            on_ns: median(on_ns),
            delta_ns: median(delta),
        };
        println!(
            "{:<38} {:>9.1} {:>9.1} {:>9.1} {:>+9.1}",
            row.scenario, row.noop_ns, row.off_ns, row.on_ns, row.delta_ns
        );
        rows.push(row);
    }
    Ok(rows)
}

const REFERENCES: &[&str] = &["ref_lru_lookup", "ref_ktime"];

fn print_row(row: &Row) {
    println!(
        "{:>9}  {:<38} {:>9.1} {:>10.1} {:>6.2}x  {}",
        row.prefixes, row.scenario, row.noop_ns, row.netpol_ns, row.ratio, row.verdict
    );
}

fn reference_points(
    lab: &Ebpf,
    noop: &Xdp,
    args: &Args,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let frame = [0u8; 64];
    for (name, label) in REFERENCES.iter().zip([
        "ref: one LRU hash lookup (16B key)",
        "ref: one ktime_get_coarse_ns call",
    ]) {
        let prog: &Xdp = lab.program(name).context(*name)?.try_into()?;
        let (mut noop_ns, mut ref_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            let n = run_xdp(noop, &frame, args.repeat)?.1;
            let r = run_xdp(prog, &frame, args.repeat)?.1;
            noop_ns.push(n);
            ref_ns.push(r);
            ratios.push(r / n);
        }
        let row = Row {
            prefixes: 0,
            scenario: label,
            noop_ns: median(noop_ns),
            netpol_ns: median(ref_ns),
            ratio: median(ratios),
            verdict: "drop",
        };
        print_row(&row);
        rows.push(row);
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run_xdp(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, f64)> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat;
    let r = prog.test_run(opts)?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

#[derive(serde::Serialize)]
struct IdentityRow {
    pods: usize,
    namespaces: usize,
    policies: usize,
    identities: usize,
    rule_entries: usize,
    /// Every object read again, the policy compiled from scratch (ids
    /// kept) and written.
    resync_ms: f64,
    /// Every object read again (a relist after the watch lost its place),
    /// with what the agent keeps between reloads.
    relist_ms: f64,
    /// One pod relabelled: everything from reading the objects to the swap.
    event_p50_ms: f64,
    event_p99_ms: f64,
}

/// Objects in the e2e suite's spirit at scale: namespaces labelled by tier,
/// pods by app and role, and NetworkPolicies that each isolate one app of
/// a namespace for ingress from one role of one tier (a third also limit
/// egress to DNS-like UDP in their tier). `relabel` moves that many pods to
/// another app. One text per object, named as the API view names it: a pod
/// event changes one of them.
fn identity_objects(
    pods: usize,
    namespaces: usize,
    policies: usize,
    relabel: usize,
) -> Vec<(String, String)> {
    use std::fmt::Write as _;
    let mut out = Vec::with_capacity(namespaces + pods + policies);
    for n in 0..namespaces {
        out.push((
            format!("kubernetes:namespaces//ns{n}"),
            format!(
                "{{kind: Namespace, metadata: {{name: ns{n}, labels: {{tier: t{}}}}}}}",
                n % 5
            ),
        ));
    }
    for j in 0..pods {
        let app = if j < relabel {
            99
        } else {
            (j / namespaces) % 20
        };
        let ns = j % namespaces;
        out.push((
            format!("kubernetes:pods/ns{ns}/p{j}"),
            format!(
                "{{kind: Pod, metadata: {{name: p{j}, namespace: ns{ns}, labels: {{app: a{app}, role: r{}}}}}, status: {{podIP: 10.{}.{}.{}}}}}",
                j % 7,
                64 + j / 65536,
                (j / 256) % 256,
                j % 256
            ),
        ));
    }
    for k in 0..policies {
        let ns = k % namespaces;
        let mut np = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{k}, namespace: ns{ns}}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: a{}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{tier: t{}}}}}\n      podSelector: {{matchLabels: {{role: r{}}}}}\n    ports: [{{port: {}}}]\n",
            (k / namespaces) % 20,
            k % 5,
            k % 7,
            8000 + k % 20
        );
        if k % 3 == 0 {
            let _ = write!(
                np,
                "  egress:\n  - to:\n    - namespaceSelector: {{matchLabels: {{tier: t{}}}}}\n    ports: [{{port: 53, protocol: UDP}}]\n",
                k % 5
            );
        }
        out.push((format!("kubernetes:networkpolicies/ns{ns}/np{k}"), np));
    }
    out
}

/// Where an event's time goes (milliseconds).
#[derive(Default)]
struct Stages {
    read: f64,
    resolve: f64,
    compile: f64,
    write: f64,
}

/// Reads, resolves, compiles and writes as the agent does on every change
/// of the Kubernetes objects: each object is parsed again only when its
/// text changed (the API view keeps every object as it was read), and only
/// the pods that changed are matched against the selectors again.
fn identity_apply(
    state: &mut IdentityState,
    dp: &mut Datapath,
    objects: &[(String, String)],
) -> anyhow::Result<(policy::Compiled, Stages)> {
    let mut stages = Stages::default();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let parts: Vec<_> = objects
        .iter()
        .map(|(name, text)| state.objects.parse(name, text.clone()))
        .collect();
    let (cluster, files) = policy::objects_from_parts(parts)?;
    let mut p = policy::merge(files)?;
    stages.read = ms(t);
    let t = Instant::now();
    policy::with_cluster_cached(&mut p, &cluster, &mut state.selections);
    stages.resolve = ms(t);
    let t = Instant::now();
    let compiled = state.compiler.compile(&p, &CompileOptions::default())?;
    stages.compile = ms(t);
    let t = Instant::now();
    dp.apply(&compiled)?;
    stages.write = ms(t);
    Ok((compiled, stages))
}

/// What the agent keeps from one compile of the objects to the next.
#[derive(Clone, Default)]
struct IdentityState {
    compiler: policy::Compiler,
    objects: policy::ObjectCache,
    selections: policy::Selections,
}

fn identity_table(args: &Args) -> anyhow::Result<Vec<IdentityRow>> {
    println!(
        "\n{:>7} {:>5} {:>8} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "pods",
        "ns",
        "policies",
        "identities",
        "entries",
        "resync",
        "relist",
        "event p50",
        "event p99"
    );
    let mut rows = Vec::new();
    for scale in &args.identity {
        let parts: Vec<usize> = scale
            .split(':')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("--identity {scale}: expected PODS:NAMESPACES:POLICIES"))?;
        let [pods, namespaces, policies] = parts[..] else {
            anyhow::bail!("--identity {scale}: expected PODS:NAMESPACES:POLICIES");
        };
        let opts = LoadOptions {
            prefix_max: LoadOptions::default().prefix_max.max(2 * pods as u32),
            rule_max: 4 * 1_048_576,
            ..LoadOptions::default()
        };
        let mut dp = Datapath::load(&opts)?;
        // One state across swaps, as the agent keeps it. The resync parses
        // and computes everything again (with the ids the live policy has).
        let mut state = IdentityState::default();
        let objects = identity_objects(pods, namespaces, policies, 0);
        identity_apply(&mut state, &mut dp, &objects)?;
        let t = Instant::now();
        let mut fresh = IdentityState {
            compiler: state.compiler.clone(),
            ..IdentityState::default()
        };
        fresh.compiler.forget_entries();
        let (compiled, _) = identity_apply(&mut fresh, &mut dp, &objects)?;
        let resync = t.elapsed();
        let t = Instant::now();
        state.objects = policy::ObjectCache::default();
        identity_apply(&mut state, &mut dp, &objects)?;
        let relist = t.elapsed();
        let mut events = Vec::new();
        let mut total = Stages::default();
        for i in 1..=args.identity_events {
            // Alternately relabel one more pod and put it back: each event
            // moves one address between identities.
            let objects = identity_objects(pods, namespaces, policies, i % 2);
            let t = Instant::now();
            let (_, s) = identity_apply(&mut state, &mut dp, &objects)?;
            events.push(t.elapsed().as_secs_f64() * 1e3);
            total.read += s.read;
            total.resolve += s.resolve;
            total.compile += s.compile;
            total.write += s.write;
        }
        let n = args.identity_events.max(1) as f64;
        eprintln!(
            "# {pods} pods: per event, read {:.1} ms, resolve {:.1} ms, compile {:.1} ms, write {:.1} ms (means)",
            total.read / n,
            total.resolve / n,
            total.compile / n,
            total.write / n
        );
        events.sort_by(f64::total_cmp);
        let pct = |q: f64| events[((events.len() as f64 - 1.0) * q).round() as usize];
        let row = IdentityRow {
            pods,
            namespaces,
            policies,
            identities: compiled.identities.len(),
            rule_entries: compiled.rules.len(),
            resync_ms: resync.as_secs_f64() * 1e3,
            relist_ms: relist.as_secs_f64() * 1e3,
            event_p50_ms: pct(0.5),
            event_p99_ms: pct(0.99),
        };
        println!(
            "{:>7} {:>5} {:>8} {:>10} {:>8} {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>8.0}ms",
            row.pods,
            row.namespaces,
            row.policies,
            row.identities,
            row.rule_entries,
            row.resync_ms,
            row.relist_ms,
            row.event_p50_ms,
            row.event_p99_ms
        );
        rows.push(row);
    }
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !netpol_tests::require_root() {
        anyhow::bail!("BPF_PROG_TEST_RUN needs root");
    }
    let mut rows = Vec::new();
    println!(
        "{:>9}  {:<38} {:>9} {:>10} {:>7}  verdict",
        "prefixes", "scenario", "noop ns", "netpol ns", "ratio"
    );
    let mut lab = Ebpf::load(netpol_agent::LAB_EBPF).context("loading lab-progs")?;
    let noop: &mut Xdp = lab
        .program_mut("noop_drop")
        .context("noop_drop")?
        .try_into()?;
    noop.load()?;
    for name in REFERENCES {
        let p: &mut Xdp = lab.program_mut(name).context(*name)?.try_into()?;
        p.load()?;
    }
    let noop: &Xdp = lab.program("noop_drop").context("noop_drop")?.try_into()?;
    reference_points(&lab, noop, &args, &mut rows)?;

    let scenarios = frames::scenarios();
    for &n in &args.prefixes {
        let t = Instant::now();
        let compiled = policy::compile(&policy_with(n)?, &CompileOptions::default())?;
        let compile_s = t.elapsed().as_secs_f64();
        let opts = LoadOptions {
            prefix_max: LoadOptions::default().prefix_max.max(2 * n as u32),
            ct_max: args.ct_max,
            // The allowed-SYN scenario repeats one source: a bucket that never
            // runs dry keeps the quota's cost in the figure without its drops.
            ct_source_burst: u32::MAX,
            ..LoadOptions::default()
        };
        let mut dp = Datapath::load(&opts)?;
        set_sources(&mut dp, args.sources)?;
        let t = Instant::now();
        dp.apply(&compiled)?;
        eprintln!(
            "# {n} extra prefixes: {} IPv4 prefixes, {} rule entries; compile {compile_s:.3}s, map load {:.3}s",
            compiled.ids_v4.len(),
            compiled.rules.len(),
            t.elapsed().as_secs_f64()
        );
        for s in &scenarios {
            for setup in &s.setup {
                dp.xdp_test_run(setup, 1)?;
            }
            let (mut noop_ns, mut netpol_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            let mut verdict = 0;
            for _ in 0..args.rounds {
                let (_, n) = run_xdp(noop, &s.frame, args.repeat)?;
                let (v, d) = dp.xdp_test_run(&s.frame, args.repeat)?;
                let d = d.as_nanos() as f64;
                verdict = v;
                noop_ns.push(n);
                netpol_ns.push(d);
                ratios.push(d / n);
            }
            let expected = if s.pass { 2 } else { 1 };
            anyhow::ensure!(
                verdict == expected,
                "{}: XDP returned {verdict}, expected {expected}",
                s.name
            );
            let row = Row {
                prefixes: n,
                scenario: s.name,
                noop_ns: median(noop_ns),
                netpol_ns: median(netpol_ns),
                // Each round's pair was measured back to back; the median of
                // the per-round ratios resists drift better than a ratio of
                // medians.
                ratio: median(ratios),
                verdict: if s.pass { "pass" } else { "drop" },
            };
            print_row(&row);
            rows.push(row);
        }
    }
    let counters = counters_table(&args, noop)?;
    let reloads = reload_table(&args)?;
    let identity = identity_table(&args)?;
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let meta = serde_json::json!({
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        "sources": format!("{:?}", args.sources).to_lowercase(),
        "repeat": args.repeat,
        "rounds": args.rounds,
        "results": rows,
        "reload": reloads,
        "counters_on_off": counters,
        "identity": identity,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&meta)?)?;
    eprintln!("# results written to {}", args.json.display());
    Ok(())
}
