//! Per-flow counters of the datapath under BPF_PROG_TEST_RUN: packets answered
//! by the per-CPU flow cache are pending there until the flow next reaches
//! conntrack, which flushes them into the entry; readers (`flows`) see the
//! same exact totals before and after; denied flows land in their own map;
//! with counting off only the aggregates move.
//!
//! The datapath is loaded with the map sizes of the BPF_PROG_TEST_RUN harness
//! (`netpol_tests::progrun`), but pinned, as the agent pins it, so the readers
//! of per-flow records see what they see there.

use std::path::PathBuf;

use aya::maps::PerCpuValues;

use agent_common::{is_denied_slot, map_names, CtKey4, CtValue, DeniedValue, FlowCache4};
use netpol_agent::bpffs::PinLayout;
use netpol_agent::bpffs::Pinned;
use netpol_agent::datapath::CountingOptions;
use netpol_agent::datapath::RuleInfo;
use netpol_agent::datapath::{Datapath, LoadOptions};
use netpol_agent::policy::CompileOptions;
use netpol_agent::telemetry::flows::{read_flows, FlowFilter, FlowRecord};
use netpol_tests::netns::unique_suffix;
use netpol_tests::packet::{Packet, TCP_ACK, TCP_FIN, TCP_SYN};
use netpol_tests::progrun::{compiled, small_maps, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS};
use netpol_tests::{ensure_bpffs, require_root};

const POLICY: &str = "
groups:
  web: [10.0.1.0/24]
  db: [10.0.2.0/24]
rules:
  - name: web-to-db
    from: web
    to: db
    ports: [5432/tcp]
";

/// A loaded datapath with its maps pinned in a directory of its own, removed
/// on drop.
struct PinnedDatapath {
    dp: Datapath,
    dir: PathBuf,
    rules: Vec<RuleInfo>,
}

impl Drop for PinnedDatapath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn load(flow_counters: bool) -> PinnedDatapath {
    load_with(CountingOptions {
        flow_counters,
        ..CountingOptions::default()
    })
}

fn load_with(counting: CountingOptions) -> PinnedDatapath {
    ensure_bpffs();
    let dir = PathBuf::from("/sys/fs/bpf").join(format!("netpol-test-flows-{}", unique_suffix()));
    let opts = LoadOptions {
        counting,
        ..small_maps()
    };
    // Pinned as the agent pins them, so the readers see what they see there.
    let (mut dp, _) = Datapath::load_pinned(&opts, &PinLayout::new(&dir))
        .unwrap_or_else(|e| panic!("loading the datapath: {:#}", anyhow::Error::from(e)));
    let compiled = compiled("prog_flow_counters", POLICY, &CompileOptions::default());
    dp.apply(&compiled).unwrap();
    let rules = compiled
        .rule_names
        .iter()
        .map(|n| RuleInfo {
            name: n.clone(),
            audit: false,
        })
        .collect();
    PinnedDatapath { dp, dir, rules }
}

fn flows(p: &PinnedDatapath) -> Vec<FlowRecord> {
    let mut all = FlowFilter::default().selection().unwrap();
    read_flows(&Pinned::new(&p.dir), &p.rules, &mut all).unwrap();
    all.into_records()
}

fn find<'a>(f: &'a [FlowRecord], src: &str, dst: &str, dir: &str) -> Option<&'a FlowRecord> {
    f.iter()
        .find(|r| r.src.to_string() == src && r.dst.to_string() == dst && r.direction == dir)
}

/// Packets and bytes held by the conntrack entries themselves (no pending
/// flow-cache deltas).
fn ct_totals(p: &PinnedDatapath) -> (u64, u64) {
    let ct = Pinned::new(&p.dir)
        .lru::<CtKey4, CtValue>(map_names::CT4)
        .unwrap();
    ct.iter()
        .filter_map(Result::ok)
        .flat_map(|(_, v)| v.counters)
        .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
}

/// Keeps this thread on one CPU, so every test run uses the same per-CPU
/// flow-cache slot.
fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn cached_packets_are_counted_exactly_before_and_after_the_flush() {
    if !require_root() {
        return;
    }
    pin_to_one_cpu();
    let p = load(true);
    let syn = Packet::ip("10.0.1.5", "10.0.2.7")
        .tcp(40000, 5432, TCP_SYN)
        .build();
    let synack = Packet::ip("10.0.2.7", "10.0.1.5")
        .tcp(5432, 40000, TCP_SYN | TCP_ACK)
        .build();
    let ack = Packet::ip("10.0.1.5", "10.0.2.7")
        .tcp(40000, 5432, TCP_ACK)
        .payload(&[7; 100])
        .build();
    let fin = Packet::ip("10.0.1.5", "10.0.2.7")
        .tcp(40000, 5432, TCP_FIN | TCP_ACK)
        .build();
    const K: u64 = 1000;
    assert_eq!(p.dp.xdp_test_run(&syn, 1).unwrap().0, XDP_PASS);
    assert_eq!(p.dp.xdp_test_run(&synack, 1).unwrap().0, XDP_PASS);
    // The SYN-ACK (the first reply) filled the cache: all K ACKs are answered
    // by it and wait there as deltas.
    assert_eq!(p.dp.xdp_test_run(&ack, K as u32).unwrap().0, XDP_PASS);
    let (syn_b, ack_b, fin_b) = (syn.len() as u64, ack.len() as u64, fin.len() as u64);

    let f = flows(&p);
    let fwd = find(&f, "10.0.1.5", "10.0.2.7", "ingress").expect("forward record");
    assert_eq!(
        (fwd.packets, fwd.bytes),
        (1 + K, syn_b + K * ack_b),
        "SYN + K ACKs, pending deltas included: {fwd:?}"
    );
    assert_eq!(fwd.rule.as_deref(), Some("web-to-db"));
    assert_eq!(fwd.verdict, "pass");
    assert!(!fwd.reply);
    let rev = find(&f, "10.0.2.7", "10.0.1.5", "ingress").expect("reply record");
    assert_eq!((rev.packets, rev.reply), (1, true));
    let (in_ct, _) = ct_totals(&p);
    assert_eq!(
        in_ct, 2,
        "cache hits must not touch conntrack until a flush: SYN and SYN-ACK only"
    );

    // FIN always reaches conntrack: it flushes this CPU's pending deltas.
    assert_eq!(p.dp.xdp_test_run(&fin, 1).unwrap().0, XDP_PASS);
    let f = flows(&p);
    let fwd = find(&f, "10.0.1.5", "10.0.2.7", "ingress").unwrap();
    assert_eq!(
        (fwd.packets, fwd.bytes),
        (2 + K, syn_b + K * ack_b + fin_b),
        "after the flush: {fwd:?}"
    );
    let all: u64 = f.iter().map(|r| r.packets).sum();
    assert_eq!(all, 3 + K, "SYN, SYN-ACK, K ACKs, FIN: {f:?}");
    // The pending deltas moved into the entry: none left behind or doubled.
    assert_eq!(ct_totals(&p), (3 + K, 2 * syn_b + K * ack_b + fin_b));
}

#[test]
fn denied_flows_are_recorded_and_counting_off_keeps_only_aggregates() {
    if !require_root() {
        return;
    }
    let bad = Packet::ip("10.9.0.1", "10.0.2.7")
        .tcp(41000, 5432, TCP_SYN)
        .build();
    let ok = Packet::ip("10.0.1.5", "10.0.2.7")
        .tcp(40001, 5432, TCP_SYN)
        .build();
    for on in [true, false] {
        let p = load(on);
        assert_eq!(p.dp.xdp_test_run(&bad, 3).unwrap().0, XDP_DROP);
        assert_eq!(p.dp.tc_test_run(&ok).unwrap(), TC_ACT_UNSPEC);
        let f = flows(&p);
        let denied = Pinned::new(&p.dir)
            .lru::<CtKey4, DeniedValue>(map_names::DENIED4)
            .unwrap()
            .keys()
            .count();
        let rows = p.dp.counters().unwrap();
        let drops: u64 = rows
            .iter()
            .filter(|r| r.verdict == "drop" && r.reason == "policy-denied")
            .map(|r| r.packets)
            .sum();
        assert_eq!(
            drops, 3,
            "aggregates count every packet (counters on: {on})"
        );
        if on {
            let d = find(&f, "10.9.0.1", "10.0.2.7", "ingress").expect("denied record");
            assert_eq!(
                (d.verdict, d.reason, d.packets),
                ("drop", Some("policy-denied"), 3)
            );
            assert_eq!(d.bytes, 3 * bad.len() as u64);
            let e = find(&f, "10.0.1.5", "10.0.2.7", "egress").expect("TC egress record");
            assert_eq!(e.packets, 1);
            assert_eq!(denied, 1);
        } else {
            assert!(f.is_empty(), "no per-flow counts with counting off: {f:?}");
            assert_eq!(denied, 0);
        }
    }
}

/// Under a flood of new denied flows only `--denied-flow-burst` (then
/// `--denied-flow-rate` a second) get a record, and while the bucket is empty
/// per-flow denied counting pauses; every packet is still in the aggregates.
#[test]
fn new_denied_flow_records_are_rate_limited_and_aggregates_stay_exact() {
    if !require_root() {
        return;
    }
    pin_to_one_cpu();
    // One record a second, three at once: the ten SYNs below take well under
    // the second a fourth token needs.
    let p = load_with(CountingOptions {
        denied_flow_rate: 1,
        denied_flow_burst: 3,
        ..CountingOptions::default()
    });
    let syn = |sport: u16| {
        Packet::ip("10.9.0.1", "10.0.2.7")
            .tcp(sport, 5432, TCP_SYN)
            .build()
    };
    for sport in 42000..42010 {
        assert_eq!(p.dp.xdp_test_run(&syn(sport), 1).unwrap().0, XDP_DROP);
    }
    // The bucket is empty: even the first (recorded) flow's next packets are
    // counted in the aggregates only.
    assert_eq!(p.dp.xdp_test_run(&syn(42000), 5).unwrap().0, XDP_DROP);

    let pinned = Pinned::new(&p.dir);
    let recorded: Vec<DeniedValue> = pinned
        .lru::<CtKey4, DeniedValue>(map_names::DENIED4)
        .unwrap()
        .iter()
        .map(|e| e.unwrap().1)
        .collect();
    assert_eq!(recorded.len(), 3, "the burst, no more: {recorded:?}");
    let packets: Vec<u64> = recorded
        .iter()
        .map(|v| v.counters.iter().map(|c| c.packets).sum())
        .collect();
    assert_eq!(packets, [1, 1, 1], "one packet each, recorded: {packets:?}");
    let book = netpol_agent::telemetry::aggregates::read_bookkeeping(&pinned).unwrap();
    assert_eq!(book.denied_not_recorded, 12, "7 new flows and 5 packets");
    let dropped: u64 =
        p.dp.counters()
            .unwrap()
            .iter()
            .filter(|r| r.reason == "policy-denied")
            .map(|r| r.packets)
            .sum();
    assert_eq!(dropped, 15, "every packet in the aggregates");
}

/// The flow-cache slot (of 1,024) a normalised IPv4 conntrack key falls in,
/// as the datapath works it out (`Family::key_word`, then `hash_slot`).
fn cache_slot(k: &CtKey4) -> u64 {
    let w0 = u64::from_ne_bytes([
        k.addr_a[0],
        k.addr_a[1],
        k.addr_a[2],
        k.addr_a[3],
        k.addr_b[0],
        k.addr_b[1],
        k.addr_b[2],
        k.addr_b[3],
    ]);
    let w1 = u64::from_ne_bytes([
        k.port_a[0],
        k.port_a[1],
        k.port_b[0],
        k.port_b[1],
        k.proto,
        0,
        0,
        0,
    ]);
    let x = w0 ^ w1.rotate_left(29);
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) & 1023
}

/// A flow denied again and again counts its packets in this CPU's flow-cache
/// slot; another denied flow taking the slot first moves them into the
/// record, so the record alone is exact again.
#[test]
fn pending_denied_counts_move_into_the_record_when_the_slot_changes_hands() {
    if !require_root() {
        return;
    }
    pin_to_one_cpu();
    let p = load(true);
    // 10.0.2.7:5432 sorts first, so it is the key's endpoint A.
    let key = |sport: u16| CtKey4 {
        addr_a: [10, 0, 2, 7],
        addr_b: [10, 9, 0, 1],
        port_a: 5432u16.to_be_bytes(),
        port_b: sport.to_be_bytes(),
        proto: 6,
        _pad: [0; 3],
    };
    let first = 41000u16;
    let other = (41001..u16::MAX)
        .find(|s| cache_slot(&key(*s)) == cache_slot(&key(first)))
        .expect("a source port whose flow shares the slot");
    let syn = |sport: u16| {
        Packet::ip("10.9.0.1", "10.0.2.7")
            .tcp(sport, 5432, TCP_SYN)
            .build()
    };
    let record = |sport: u16| -> u64 {
        Pinned::new(&p.dir)
            .lru::<CtKey4, DeniedValue>(map_names::DENIED4)
            .unwrap()
            .get(&key(sport), 0)
            .map(|v| v.counters.iter().map(|c| c.packets).sum())
            .unwrap_or(0)
    };
    assert_eq!(p.dp.xdp_test_run(&syn(first), 3).unwrap().0, XDP_DROP);
    assert_eq!(
        record(first),
        1,
        "the first packet in the record, two pending"
    );
    let d = find(&flows(&p), "10.9.0.1", "10.0.2.7", "ingress").map(|r| r.packets);
    assert_eq!(d, Some(3), "readers add the pending counts");
    assert_eq!(p.dp.xdp_test_run(&syn(other), 1).unwrap().0, XDP_DROP);
    assert_eq!(record(first), 3, "the pending counts moved into the record");
    assert_eq!(record(other), 1);
}

/// A denied flow whose counts pend in the flow-cache slot still meets its
/// record once a refresh interval: the packet then counts there, with the
/// pending counts, and refreshes the record in the LRU (which would
/// otherwise evict it while its flow goes on being denied).
#[test]
fn pending_denied_counts_reach_the_record_once_a_refresh_interval() {
    if !require_root() {
        return;
    }
    pin_to_one_cpu();
    let p = load(true);
    let key = CtKey4 {
        addr_a: [10, 0, 2, 7],
        addr_b: [10, 9, 0, 1],
        port_a: 5432u16.to_be_bytes(),
        port_b: 41000u16.to_be_bytes(),
        proto: 6,
        _pad: [0; 3],
    };
    let syn = Packet::ip("10.9.0.1", "10.0.2.7")
        .tcp(41000, 5432, TCP_SYN)
        .build();
    let pinned = Pinned::new(&p.dir);
    let record = || -> u64 {
        pinned
            .lru::<CtKey4, DeniedValue>(map_names::DENIED4)
            .unwrap()
            .get(&key, 0)
            .map(|v| v.counters.iter().map(|c| c.packets).sum())
            .unwrap_or(0)
    };
    assert_eq!(p.dp.xdp_test_run(&syn, 3).unwrap().0, XDP_DROP);
    assert_eq!(record(), 1, "the first packet in the record, two pending");
    assert_eq!(p.dp.xdp_test_run(&syn, 1).unwrap().0, XDP_DROP);
    assert_eq!(record(), 1, "within the interval the slot counts");
    // A refresh interval passes for the slot: its last meeting with the
    // record moves back by one.
    let interval = p.dp.config().refresh_interval as u32;
    let slot = cache_slot(&key) as u32;
    let mut cache = pinned
        .per_cpu_array::<FlowCache4>(map_names::FLOWCACHE4)
        .unwrap();
    let mut values: Vec<FlowCache4> = cache.get(&slot, 0).unwrap().to_vec();
    let mut moved = 0;
    for v in values.iter_mut() {
        if is_denied_slot(v) && v.key == key {
            v.sources_gen = v.sources_gen.wrapping_sub(interval);
            moved += 1;
        }
    }
    assert_eq!(moved, 1, "one CPU's slot holds the flow's pending counts");
    cache
        .set(slot, PerCpuValues::try_from(values).unwrap(), 0)
        .unwrap();
    assert_eq!(p.dp.xdp_test_run(&syn, 1).unwrap().0, XDP_DROP);
    assert_eq!(
        record(),
        5,
        "the packet and the three pending in the record"
    );
    let d = find(&flows(&p), "10.9.0.1", "10.0.2.7", "ingress").map(|r| r.packets);
    assert_eq!(d, Some(5), "nothing counted twice");
}
