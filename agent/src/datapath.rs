//! The kernel side as userspace sees it: load the eBPF object, size its maps,
//! swap compiled policy in, attach to interfaces, read counters.
use std::{
    collections::HashMap as StdHashMap,
    hash::Hash,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use agent_common::{
    map_names, prog_names, reason, Config, Counter, CtKey4, CtKey6, CtValue, IdKey4, IdKey6,
    IdentityValue, RuleKey, RuleValue, COUNTER_SLOTS, MODE_AUDIT, MODE_ENFORCE, SLOT_BITS,
};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::{
        tc::SchedClassifierLinkId, xdp::XdpLinkId, ProgramError, SchedClassifier, TcAttachType,
        TestRun, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader, Pod,
};
use ipnet::{Ipv4Net, Ipv6Net};
use log::warn;

use crate::policy::Compiled;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(String),
    #[error("attaching to {iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("creating pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, DatapathError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop what the policy does not allow.
    Enforce,
    /// Count what would be dropped; drop nothing.
    Audit,
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
    pub counting: crate::counting::CountingOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            timeouts: Timeouts::default(),
            ct_max: 262_144,
            prefix_max: 262_144,
            rule_max: 1_048_576,
            frag_max: 8192,
            counting: Default::default(),
        }
    }
}

/// What one slot of the policy maps holds, so the next swap writes only the
/// difference.
#[derive(Default)]
struct SlotContents {
    ids4: StdHashMap<Ipv4Net, IdentityValue>,
    ids6: StdHashMap<Ipv6Net, IdentityValue>,
    rules: StdHashMap<(u32, RuleKey), RuleValue>,
}

pub struct Datapath {
    ebpf: Ebpf,
    slots: [SlotContents; 2],
    /// A slot whose write failed midway: its map contents are unknown, so the
    /// next write clears it first instead of diffing.
    dirty: [bool; 2],
    config: Config,
    xdp_links: Vec<(String, XdpLinkId)>,
    tc_links: Vec<(String, SchedClassifierLinkId)>,
}

/// What one policy swap did.
#[derive(Clone, Copy, Debug)]
pub struct ApplyStats {
    pub generation: u32,
    /// Trie entries written or removed in the idle slot.
    pub changes: usize,
    /// Writing the idle slot.
    pub write: Duration,
    /// Making it live (one array update).
    pub swap: Duration,
}

/// Counter totals for one (direction, audited, reason) slot, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CounterRow {
    pub direction: &'static str,
    pub verdict: &'static str,
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

fn write_config(ebpf: &mut Ebpf, config: &Config) -> Result<()> {
    let mut cfg: Array<&mut MapData, Config> = typed_map(ebpf, map_names::CONFIG)?;
    cfg.set(0, *config, 0).map_err(map_err(map_names::CONFIG))
}

fn to_jiffies(d: Duration, hz: u64) -> u64 {
    (d.as_secs_f64() * hz as f64).ceil() as u64
}

/// The kernel's jiffies, read by running the clock program once.
fn read_jiffies(ebpf: &Ebpf) -> Result<u64> {
    let clock: &Xdp = program_ref(ebpf, prog_names::CLOCK)?;
    let frame = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    clock
        .test_run(opts)
        .map_err(|source| DatapathError::Program {
            name: prog_names::CLOCK,
            source,
        })?;
    let map: Array<&MapData, u64> = typed_map_ref(ebpf, map_names::CLOCK)?;
    map.get(&0, 0).map_err(map_err(map_names::CLOCK))
}

/// CONFIG_HZ, measured (as Cilium does): jiffies elapsed over a known
/// interval, rounded to the nearest value a kernel can be built with.
fn measure_hz(ebpf: &Ebpf) -> Result<u64> {
    let (j0, t0) = (read_jiffies(ebpf)?, std::time::Instant::now());
    std::thread::sleep(Duration::from_millis(60));
    let (j1, dt) = (read_jiffies(ebpf)?, t0.elapsed().as_secs_f64());
    let rate = j1.saturating_sub(j0) as f64 / dt;
    Ok([100u64, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            (*a as f64 - rate)
                .abs()
                .total_cmp(&(*b as f64 - rate).abs())
        })
        .unwrap_or(1000))
}

impl Datapath {
    /// Loads the programs and maps into the kernel without attaching anything.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        for n in [map_names::CT4, map_names::CT6] {
            loader.map_max_entries(n, opts.ct_max);
        }
        // Each trie holds two policies (the live one and the previous one).
        for n in [map_names::IDS4, map_names::IDS6] {
            loader.map_max_entries(n, opts.prefix_max.saturating_mul(2));
        }
        loader.map_max_entries(map_names::RULES, opts.rule_max.saturating_mul(2));
        loader.map_max_entries(map_names::FRAG4, opts.frag_max);
        loader.map_max_entries(map_names::FRAG6, opts.frag_max);
        for n in [map_names::DENIED4, map_names::DENIED6] {
            loader.map_max_entries(n, opts.counting.denied_flow_max);
        }
        let mut ebpf = loader.load(crate::NETPOL_EBPF)?;

        let xdp: &mut Xdp = program_mut(&mut ebpf, prog_names::XDP)?;
        xdp.load().map_err(|source| DatapathError::Program {
            name: prog_names::XDP,
            source,
        })?;
        let tc: &mut SchedClassifier = program_mut(&mut ebpf, prog_names::TC)?;
        tc.load().map_err(|source| DatapathError::Program {
            name: prog_names::TC,
            source,
        })?;
        let clock: &mut Xdp = program_mut(&mut ebpf, prog_names::CLOCK)?;
        clock.load().map_err(|source| DatapathError::Program {
            name: prog_names::CLOCK,
            source,
        })?;
        let hz = measure_hz(&ebpf)?;

        let t = &opts.timeouts;
        let config = Config {
            mode: match opts.mode {
                Mode::Enforce => MODE_ENFORCE,
                Mode::Audit => MODE_AUDIT,
            },
            active_slot: 0,
            policy_gen: 0,
            flags: opts.counting.config_flags(),
            tcp_syn_timeout: to_jiffies(t.tcp_syn, hz),
            tcp_established_timeout: to_jiffies(t.tcp_established, hz),
            tcp_close_timeout: to_jiffies(t.tcp_close, hz),
            udp_timeout: to_jiffies(t.udp, hz),
            icmp_timeout: to_jiffies(t.icmp, hz),
            other_timeout: to_jiffies(t.other, hz),
            frag_timeout: to_jiffies(t.fragment, hz),
            refresh_interval: hz,
            event_rate: opts.counting.event_rate.into(),
            event_burst: opts.counting.event_burst.into(),
            hz,
        };
        let mut dp = Self {
            ebpf,
            slots: Default::default(),
            dirty: [false; 2],
            config,
            xdp_links: Vec::new(),
            tc_links: Vec::new(),
        };
        write_config(&mut dp.ebpf, &dp.config)?;
        Ok(dp)
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// The clock conntrack entries are stamped with.
    pub fn jiffies(&self) -> Result<u64> {
        read_jiffies(&self.ebpf)
    }

    /// Deletes expired conntrack and fragment entries; returns how many.
    pub fn collect_expired(&mut self) -> Result<usize> {
        let now = self.jiffies()?;
        let cfg = self.config;
        crate::ct_gc::collect(&mut self.ebpf, &cfg, now).map_err(map_err("conntrack"))
    }

    /// Makes `compiled` the live policy: writes the idle slot (only what differs
    /// from the policy it held before), then flips the active slot and bumps the
    /// generation in one array write, so no packet sees a mix of two policies.
    pub fn apply(&mut self, compiled: &Compiled) -> Result<u32> {
        self.apply_timed(compiled).map(|s| s.generation)
    }

    /// `apply`, reporting what it wrote and how long the write and the swap took.
    pub fn apply_timed(&mut self, compiled: &Compiled) -> Result<ApplyStats> {
        // Sizes are checked against the map limits by policy::check_capacity
        // before anything reaches here; an insert that still fails leaves the
        // slot marked dirty and the live policy untouched.
        let idle = (1 - self.config.active_slot) as usize;
        let want = SlotContents {
            ids4: compiled.ids_v4.iter().copied().collect(),
            ids6: compiled.ids_v6.iter().copied().collect(),
            rules: compiled
                .rules
                .iter()
                .map(|(len, key, value)| ((*len, *key), *value))
                .collect(),
        };
        let started = Instant::now();
        let mut have = std::mem::take(&mut self.slots[idle]);
        if std::mem::replace(&mut self.dirty[idle], true) {
            self.clear_slot(idle as u8)?;
            have = SlotContents::default();
        }
        let mut changes = 0;

        let slot = idle as u8;
        {
            let mut trie: LpmTrie<&mut MapData, IdKey4, IdentityValue> =
                typed_map(&mut self.ebpf, map_names::IDS4)?;
            let key = |net: &Ipv4Net| {
                let addr = net.network().octets();
                Key::new(
                    SLOT_BITS + u32::from(net.prefix_len()),
                    IdKey4 { slot, addr },
                )
            };
            changes += sync(&have.ids4, &want.ids4, key, &mut trie, map_names::IDS4)?;
        }
        {
            let mut trie: LpmTrie<&mut MapData, IdKey6, IdentityValue> =
                typed_map(&mut self.ebpf, map_names::IDS6)?;
            let key = |net: &Ipv6Net| {
                let addr = net.network().octets();
                Key::new(
                    SLOT_BITS + u32::from(net.prefix_len()),
                    IdKey6 { slot, addr },
                )
            };
            changes += sync(&have.ids6, &want.ids6, key, &mut trie, map_names::IDS6)?;
        }
        {
            let mut trie: LpmTrie<&mut MapData, RuleKey, RuleValue> =
                typed_map(&mut self.ebpf, map_names::RULES)?;
            let key = |(len, k): &(u32, RuleKey)| Key::new(*len, k.in_slot(slot));
            changes += sync(&have.rules, &want.rules, key, &mut trie, map_names::RULES)?;
        }
        self.slots[idle] = want;
        self.dirty[idle] = false;
        let write = started.elapsed();

        let swap_started = Instant::now();
        let next = Config {
            active_slot: idle as u32,
            policy_gen: self.config.policy_gen.wrapping_add(1),
            ..self.config
        };
        debug_assert_eq!(next.active_slot, next.policy_gen & 1);
        // Only a config the kernel accepted becomes ours: after a failed write
        // the next apply must still see the live slot as live.
        write_config(&mut self.ebpf, &next)?;
        self.config = next;
        Ok(ApplyStats {
            generation: self.config.policy_gen,
            changes,
            write,
            swap: swap_started.elapsed(),
        })
    }

    /// Removes every trie entry of `slot` (after a failed write left it unknown).
    fn clear_slot(&mut self, slot: u8) -> Result<()> {
        fn clear<K: Pod, V: Pod>(
            ebpf: &mut Ebpf,
            name: &str,
            in_slot: impl Fn(&K) -> bool,
        ) -> Result<()> {
            let mut trie: LpmTrie<&mut MapData, K, V> = typed_map(ebpf, name)?;
            let keys: Vec<Key<K>> = trie.keys().filter_map(|k| k.ok()).collect();
            for k in keys.iter().filter(|k| in_slot(&k.data())) {
                trie.remove(k).map_err(map_err(name))?;
            }
            Ok(())
        }
        clear::<IdKey4, IdentityValue>(&mut self.ebpf, map_names::IDS4, |k| k.slot == slot)?;
        clear::<IdKey6, IdentityValue>(&mut self.ebpf, map_names::IDS6, |k| k.slot == slot)?;
        clear::<RuleKey, RuleValue>(&mut self.ebpf, map_names::RULES, |k| k.slot == slot)
    }

    /// Attaches XDP to `iface`: native mode first, generic (skb) mode with a
    /// warning when the driver refuses native XDP.
    pub fn attach_xdp(&mut self, iface: &str) -> Result<XdpMode> {
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, prog_names::XDP)?;
        let (link, mode) = match xdp.attach(iface, XdpMode::Driver) {
            Ok(link) => (link, XdpMode::Driver),
            Err(native) => {
                let link =
                    xdp.attach(iface, XdpMode::Skb)
                        .map_err(|source| DatapathError::Attach {
                            iface: iface.to_owned(),
                            source,
                        })?;
                warn!("{iface}: native XDP refused ({native}); using generic XDP (slower)");
                (link, XdpMode::Skb)
            }
        };
        self.xdp_links.push((iface.to_owned(), link));
        Ok(mode)
    }

    /// Attaches the TC program to `iface` egress (TCX on kernels >= 6.6).
    pub fn attach_tc(&mut self, iface: &str) -> Result<()> {
        let tc: &mut SchedClassifier = program_mut(&mut self.ebpf, prog_names::TC)?;
        let link =
            tc.attach(iface, TcAttachType::Egress)
                .map_err(|source| DatapathError::Attach {
                    iface: iface.to_owned(),
                    source,
                })?;
        self.tc_links.push((iface.to_owned(), link));
        Ok(())
    }

    /// Interfaces with both programs attached.
    pub fn attached(&self) -> Vec<String> {
        self.xdp_links.iter().map(|(i, _)| i.clone()).collect()
    }

    /// Runs the XDP program once on `frame` (BPF_PROG_TEST_RUN); returns the action.
    pub fn xdp_test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let xdp: &Xdp = program_ref(&self.ebpf, prog_names::XDP)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let r = xdp
            .test_run(opts)
            .map_err(|source| DatapathError::Program {
                name: prog_names::XDP,
                source,
            })?;
        Ok((r.return_value, r.duration))
    }

    /// Runs the TC program once on `frame`; returns the TC action (as i32).
    pub fn tc_test_run(&self, frame: &[u8]) -> Result<i32> {
        let tc: &SchedClassifier = program_ref(&self.ebpf, prog_names::TC)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        let r = tc.test_run(opts).map_err(|source| DatapathError::Program {
            name: prog_names::TC,
            source,
        })?;
        Ok(r.return_value as i32)
    }

    /// Every non-zero counter, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<CounterRow>> {
        let map = self
            .ebpf
            .map(map_names::COUNTERS)
            .ok_or_else(|| DatapathError::MissingMap(map_names::COUNTERS.into()))?;
        let counters: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(map).map_err(map_err(map_names::COUNTERS))?;
        let mut rows = read_counters(&counters)?;
        // Passes by a rule are counted per rule: fold them back by reason.
        let max_rule = self
            .slots
            .iter()
            .flat_map(|s| s.rules.values().map(|v| v.rule_id))
            .max()
            .unwrap_or(0);
        let by_rule: PerCpuArray<&MapData, Counter> =
            typed_map_ref(&self.ebpf, map_names::RULE_COUNTERS)?;
        crate::aggregates::fold_rule_counters(&mut rows, &by_rule, max_rule)
            .map_err(map_err(map_names::RULE_COUNTERS))?;
        Ok(rows)
    }

    /// Live conntrack entries (IPv4, IPv6).
    pub fn ct_counts(&self) -> Result<(usize, usize)> {
        let v4: HashMap<&MapData, CtKey4, CtValue> = typed_map_ref(&self.ebpf, map_names::CT4)?;
        let v6: HashMap<&MapData, CtKey6, CtValue> = typed_map_ref(&self.ebpf, map_names::CT6)?;
        Ok((v4.keys().count(), v6.keys().count()))
    }

    /// Pins every map under `dir` so `netpol-agent stats` and other tools can read them.
    pub fn pin_maps(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| DatapathError::PinDir {
            path: dir.to_owned(),
            source,
        })?;
        for (name, map) in self.ebpf.maps_mut() {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            map.pin(&path)
                .map_err(|source| DatapathError::Pin { path, source })?;
        }
        Ok(())
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// Reads the counter array into rows, skipping zeros.
pub fn read_counters<T: std::borrow::Borrow<MapData>>(
    counters: &PerCpuArray<T, Counter>,
) -> Result<Vec<CounterRow>> {
    let mut rows = Vec::new();
    for idx in 0..COUNTER_SLOTS {
        let per_cpu = counters
            .get(&idx, 0)
            .map_err(map_err(map_names::COUNTERS))?;
        let (packets, bytes) = per_cpu
            .iter()
            .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
        if packets == 0 {
            continue;
        }
        let r = idx % reason::COUNT;
        let audited = (idx / reason::COUNT) % 2 == 1;
        let dir = idx / (2 * reason::COUNT);
        rows.push(CounterRow {
            direction: if dir == 0 { "ingress" } else { "egress" },
            verdict: if r < reason::FIRST_DROP_REASON {
                "pass"
            } else if audited {
                "audit-deny"
            } else {
                "drop"
            },
            reason: reason::NAMES[r as usize],
            packets,
            bytes,
        });
    }
    Ok(rows)
}

/// Brings a trie from `have` to `want`: removes what is gone, writes what is new
/// or changed.
fn sync<N, K, V>(
    have: &StdHashMap<N, V>,
    want: &StdHashMap<N, V>,
    key: impl Fn(&N) -> Key<K>,
    trie: &mut LpmTrie<&mut MapData, K, V>,
    name: &str,
) -> Result<usize>
where
    N: Eq + Hash,
    K: Pod,
    V: Pod + PartialEq,
{
    let mut changes = 0;
    for n in have.keys().filter(|n| !want.contains_key(*n)) {
        trie.remove(&key(n)).map_err(map_err(name))?;
        changes += 1;
    }
    for (n, v) in want {
        if have.get(n) != Some(v) {
            trie.insert(&key(n), *v, 0).map_err(map_err(name))?;
            changes += 1;
        }
    }
    Ok(changes)
}

fn map_err(name: &str) -> impl Fn(aya::maps::MapError) -> DatapathError + '_ {
    move |source| DatapathError::Map {
        name: name.to_owned(),
        source,
    }
}

fn typed_map<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| DatapathError::MissingMap(name.into()))?;
    T::try_from(map).map_err(map_err(name))
}

fn typed_map_ref<'a, T>(ebpf: &'a Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map(name)
        .ok_or_else(|| DatapathError::MissingMap(name.into()))?;
    T::try_from(map).map_err(map_err(name))
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(DatapathError::Program {
        name,
        source: ProgramError::NotLoaded,
    })?;
    prog.try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

fn program_ref<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a T>
where
    &'a T: TryFrom<&'a aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program(name).ok_or(DatapathError::Program {
        name,
        source: ProgramError::NotLoaded,
    })?;
    prog.try_into()
        .map_err(|source| DatapathError::Program { name, source })
}
