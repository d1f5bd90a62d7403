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
    IdentityValue, RuleKey, RuleValue, CFG_F_HOSTS4, CFG_F_HOSTS6, CFG_F_HOSTS_ALL, COUNTER_SLOTS,
    MODE_AUDIT, MODE_ENFORCE, SLOT_BITS,
};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader, Pod,
};
use ipnet::{Ipv4Net, Ipv6Net};
use log::{info, warn};

use crate::{
    adopt::{self, Plan, Repin, Shape},
    linkinfo,
    pin::{LinkKind, PinLayout},
    policy::Compiled,
};

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
    #[error("link of {iface}: {source}")]
    Link {
        iface: String,
        #[source]
        source: LinkError,
    },
    #[error("interface {iface}: {source}")]
    Iface {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("carrying {name} over to its resized map: {source}")]
    Migrate {
        name: String,
        #[source]
        source: aya::maps::MapError,
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
    /// Host prefixes of a family from which they go to the hash map instead
    /// of the trie (`HOST_HASH_MIN`; tests lower it to cover both layouts).
    pub host_hash_min: usize,
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
            host_hash_min: HOST_HASH_MIN,
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
    /// The host prefixes of this slot live in the hash maps (not the tries).
    hash4: bool,
    hash6: bool,
}

/// Host prefixes of one family that move them from the trie to the hash map.
/// A probe of the hash costs a cache miss on its bucket array whatever it
/// holds (about as much as a walk of a trie with this many host routes), so
/// a policy with fewer keeps them in the trie and the datapath skips the probe.
pub const HOST_HASH_MIN: usize = 1024;

/// The two links enforcing one interface. Dropping them closes our handles
/// only: pinned links stay attached until their pins are removed.
struct IfaceLinks {
    ifindex: u32,
    xdp_mode: XdpMode,
    xdp: (FdLink, Option<PathBuf>),
    tc: (FdLink, Option<PathBuf>),
    adopted: bool,
}

/// One enforced interface, as reported to the operator.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// `driver` (native) or `generic` (skb) XDP.
    pub xdp_mode: &'static str,
    /// The links were pinned by an earlier agent and now run this one's
    /// programs (a link update, no detach).
    pub adopted: bool,
}

/// What start-up found pinned and did with it.
#[derive(Debug, Default)]
pub struct Adoption {
    pub adopted: Vec<String>,
    pub created: Vec<String>,
    pub resized: Vec<String>,
    pub rebuilt: Vec<String>,
    /// Map directories of another layout version, removed by `commit_pins`.
    pub foreign: Vec<PathBuf>,
    /// The policy generation an earlier agent left live.
    pub previous_generation: Option<u32>,
}

pub struct Datapath {
    ebpf: Ebpf,
    slots: [SlotContents; 2],
    /// A slot whose write failed midway: its map contents are unknown, so the
    /// next write clears it first instead of diffing.
    dirty: [bool; 2],
    config: Config,
    links: std::collections::BTreeMap<String, IfaceLinks>,
    pins: Option<PinLayout>,
    /// Maps created beside a pinned one they replace; re-pinned by `commit_pins`.
    repins: Vec<Repin>,
    foreign: Vec<PathBuf>,
    host_hash_min: usize,
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
    /// Loads the programs and maps into the kernel without attaching or
    /// pinning anything (tests and benchmarks).
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let ebpf = sized_loader(opts).load(crate::NETPOL_EBPF)?;
        Self::finish_load(ebpf, opts, None, Vec::new(), Vec::new(), None)
    }

    /// Loads the programs, reusing every map an earlier agent pinned under
    /// `pins` that has exactly this build's shape (conntrack, counters and
    /// the live policy carry over), and pins the rest. Nothing is attached:
    /// `attach` adopts pinned links, then `commit_pins` finishes the switch.
    pub fn load_pinned(opts: &LoadOptions, pins: &PinLayout) -> Result<(Self, Adoption)> {
        pins.create().map_err(|source| DatapathError::PinDir {
            path: pins.root().to_owned(),
            source,
        })?;
        // What this build creates, learnt from a throw-away load (maps only:
        // programs are verified later, by `load` on the real one).
        let wanted: Vec<(String, Option<Shape>)> = {
            let probe = sized_loader(opts).load(crate::NETPOL_EBPF)?;
            probe
                .maps()
                .map(|(n, m)| (n.to_owned(), Shape::of_map(m)))
                .collect()
        };
        let mut report = Adoption {
            foreign: pins.foreign_map_dirs(),
            ..Adoption::default()
        };
        let mut plans = Vec::new();
        for (name, want) in &wanted {
            let path = pins.map(name);
            let plan = match want {
                Some(want) => adopt::plan(*want, Shape::of_pin(&path), path.exists()),
                None => Plan::Rebuild,
            };
            match &plan {
                Plan::Create => report.created.push(name.clone()),
                Plan::Adopt => report.adopted.push(name.clone()),
                Plan::Resize { from, to } => {
                    info!("map {name}: capacity {from} -> {to}, carrying entries over");
                    report.resized.push(name.clone());
                }
                Plan::Rebuild => {
                    warn!("map {name}: pinned with another layout; starting it empty");
                    report.rebuilt.push(name.clone());
                }
            }
            plans.push((name.as_str(), path, plan));
        }
        let mut loader = sized_loader(opts);
        let mut repins = Vec::new();
        for (name, path, plan) in &plans {
            match plan {
                Plan::Create | Plan::Adopt => {
                    loader.map_pin_path(name, path.as_path());
                }
                Plan::Resize { .. } | Plan::Rebuild => repins.push(Repin {
                    name: (*name).to_owned(),
                    path: path.clone(),
                }),
            }
        }
        let mut ebpf = loader.load(crate::NETPOL_EBPF)?;
        for (name, path, plan) in &plans {
            if matches!(plan, Plan::Resize { .. }) {
                carry_over(&mut ebpf, name, path)?;
            }
        }
        let previous = if report.adopted.iter().any(|n| n == map_names::CONFIG) {
            let cfg: Array<&MapData, Config> = typed_map_ref(&ebpf, map_names::CONFIG)?;
            let c = cfg.get(&0, 0).map_err(map_err(map_names::CONFIG))?;
            // A zero generation is a map no agent finished writing.
            (c.policy_gen != 0).then_some(c)
        } else {
            None
        };
        report.previous_generation = previous.map(|c| c.policy_gen);
        let dp = Self::finish_load(
            ebpf,
            opts,
            Some(pins.clone()),
            repins,
            report.foreign.clone(),
            previous,
        )?;
        Ok((dp, report))
    }

    fn finish_load(
        mut ebpf: Ebpf,
        opts: &LoadOptions,
        pins: Option<PinLayout>,
        repins: Vec<Repin>,
        foreign: Vec<PathBuf>,
        previous: Option<Config>,
    ) -> Result<Self> {
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

        if let Some(pins) = &pins {
            for name in [prog_names::XDP, prog_names::TC, prog_names::CLOCK] {
                let path = pins.prog(name);
                let _ = std::fs::remove_file(&path);
                let prog = ebpf.program_mut(name).ok_or(DatapathError::Program {
                    name,
                    source: ProgramError::NotLoaded,
                })?;
                prog.pin(&path)
                    .map_err(|source| DatapathError::Pin { path, source })?;
            }
        }

        let t = &opts.timeouts;
        let config = Config {
            mode: match opts.mode {
                Mode::Enforce => MODE_ENFORCE,
                Mode::Audit => MODE_AUDIT,
            },
            // An adopted policy stays live (and its slot untouched) until the
            // first apply swaps in the new one.
            active_slot: previous.map_or(0, |c| c.active_slot),
            policy_gen: previous.map_or(0, |c| c.policy_gen),
            // The live slot's host bits stay with the policy they describe.
            flags: opts.counting.config_flags() | previous.map_or(0, |c| c.flags & CFG_F_HOSTS_ALL),
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
            record_rate: opts.counting.denied_flow_rate.into(),
            record_burst: opts.counting.denied_flow_burst.into(),
        };
        let mut dp = Self {
            ebpf,
            slots: Default::default(),
            // Adopted tries hold whatever an earlier agent wrote: unknown
            // contents, cleared before their first write.
            dirty: [pins.is_some(); 2],
            config,
            links: Default::default(),
            pins,
            repins,
            foreign,
            host_hash_min: opts.host_hash_min.max(1),
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
        let is_host4 = |n: &Ipv4Net| n.prefix_len() == 32;
        let is_host6 = |n: &Ipv6Net| n.prefix_len() == 128;
        let want = SlotContents {
            ids4: compiled.ids_v4.iter().copied().collect(),
            ids6: compiled.ids_v6.iter().copied().collect(),
            rules: compiled
                .rules
                .iter()
                .map(|(len, key, value)| ((*len, *key), *value))
                .collect(),
            hash4: compiled.ids_v4.iter().filter(|(n, _)| is_host4(n)).count()
                >= self.host_hash_min,
            hash6: compiled.ids_v6.iter().filter(|(n, _)| is_host6(n)).count()
                >= self.host_hash_min,
        };
        let started = Instant::now();
        let mut have = std::mem::take(&mut self.slots[idle]);
        if std::mem::replace(&mut self.dirty[idle], true) {
            self.clear_slot(idle as u8)?;
            have = SlotContents::default();
        }
        let mut changes = 0;

        let slot = idle as u8;
        // Where each side put an entry: host prefixes in the hash when that
        // policy has enough of them, everything else in the trie.
        let (h4, w4) = (have.hash4, want.hash4);
        let (h6, w6) = (have.hash6, want.hash6);
        let in_hash4 = |hash: bool| move |n: &Ipv4Net| hash && is_host4(n);
        let in_hash6 = |hash: bool| move |n: &Ipv6Net| hash && is_host6(n);
        let in_trie4 = |hash: bool| move |n: &Ipv4Net| !(hash && is_host4(n));
        let in_trie6 = |hash: bool| move |n: &Ipv6Net| !(hash && is_host6(n));
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
            changes += sync(
                (&have.ids4, in_trie4(h4)),
                (&want.ids4, in_trie4(w4)),
                key,
                &mut trie,
                map_names::IDS4,
            )?;
        }
        {
            let mut hosts: HashMap<&mut MapData, IdKey4, IdentityValue> =
                typed_map(&mut self.ebpf, map_names::HOSTS4)?;
            let key = |net: &Ipv4Net| IdKey4 {
                slot,
                addr: net.network().octets(),
            };
            changes += sync(
                (&have.ids4, in_hash4(h4)),
                (&want.ids4, in_hash4(w4)),
                key,
                &mut hosts,
                map_names::HOSTS4,
            )?;
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
            changes += sync(
                (&have.ids6, in_trie6(h6)),
                (&want.ids6, in_trie6(w6)),
                key,
                &mut trie,
                map_names::IDS6,
            )?;
        }
        {
            let mut hosts: HashMap<&mut MapData, IdKey6, IdentityValue> =
                typed_map(&mut self.ebpf, map_names::HOSTS6)?;
            let key = |net: &Ipv6Net| IdKey6 {
                slot,
                addr: net.network().octets(),
            };
            changes += sync(
                (&have.ids6, in_hash6(h6)),
                (&want.ids6, in_hash6(w6)),
                key,
                &mut hosts,
                map_names::HOSTS6,
            )?;
        }
        {
            let mut trie: LpmTrie<&mut MapData, RuleKey, RuleValue> =
                typed_map(&mut self.ebpf, map_names::RULES)?;
            let key = |(len, k): &(u32, RuleKey)| Key::new(*len, k.in_slot(slot));
            changes += sync(
                (&have.rules, |_: &(u32, RuleKey)| true),
                (&want.rules, |_: &(u32, RuleKey)| true),
                key,
                &mut trie,
                map_names::RULES,
            )?;
        }
        // The idle slot's host bits go live in a config update of their own,
        // before the swap: a packet that sees the new slot sees its bits.
        let idle_bits = (CFG_F_HOSTS4 | CFG_F_HOSTS6) << idle;
        let bits = if want.hash4 { CFG_F_HOSTS4 << idle } else { 0 }
            | if want.hash6 { CFG_F_HOSTS6 << idle } else { 0 };
        let flags = (self.config.flags & !idle_bits) | bits;
        if flags != self.config.flags {
            let pre = Config {
                flags,
                ..self.config
            };
            write_config(&mut self.ebpf, &pre)?;
            self.config = pre;
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

    /// Removes every trie and host entry of `slot` (after a failed write left
    /// it unknown).
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
        fn clear_hash<K: Pod, V: Pod>(
            ebpf: &mut Ebpf,
            name: &str,
            in_slot: impl Fn(&K) -> bool,
        ) -> Result<()> {
            let mut hash: HashMap<&mut MapData, K, V> = typed_map(ebpf, name)?;
            let keys: Vec<K> = hash.keys().filter_map(|k| k.ok()).collect();
            for k in keys.iter().filter(|k| in_slot(k)) {
                hash.remove(k).map_err(map_err(name))?;
            }
            Ok(())
        }
        clear::<IdKey4, IdentityValue>(&mut self.ebpf, map_names::IDS4, |k| k.slot == slot)?;
        clear::<IdKey6, IdentityValue>(&mut self.ebpf, map_names::IDS6, |k| k.slot == slot)?;
        clear_hash::<IdKey4, IdentityValue>(&mut self.ebpf, map_names::HOSTS4, |k| k.slot == slot)?;
        clear_hash::<IdKey6, IdentityValue>(&mut self.ebpf, map_names::HOSTS6, |k| k.slot == slot)?;
        clear::<RuleKey, RuleValue>(&mut self.ebpf, map_names::RULES, |k| k.slot == slot)
    }

    /// Enforces on `iface`: XDP on ingress, TCX on egress. A link an earlier
    /// agent pinned for this same interface is adopted and switched to this
    /// agent's programs atomically (bpf_link_update: no packet goes
    /// unenforced); otherwise new links are attached (native XDP first,
    /// generic with a warning when the driver refuses) and pinned.
    pub fn attach(&mut self, iface: &str) -> Result<Attachment> {
        let ifindex = ifindex(iface)?;
        if let Some(l) = self.links.get(iface) {
            if l.ifindex == ifindex {
                return Ok(attachment(iface, l));
            }
            // Same name, new interface: the old links died with the old one.
            self.detach(iface);
        }
        let pins = self.pins.clone();
        let attach_err = |source| DatapathError::Attach {
            iface: iface.to_owned(),
            source,
        };
        let link_err = |source| DatapathError::Link {
            iface: iface.to_owned(),
            source,
        };

        let pinned_xdp = pins.as_ref().and_then(|p| p.xdp_link(iface));
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, prog_names::XDP)?;
        let (xdp_link, xdp_mode, xdp_adopted) =
            match adoptable(pinned_xdp, linkinfo::LINK_TYPE_XDP, ifindex) {
                Some((kind, link)) => {
                    let link = XdpLink::try_from(link).map_err(link_err)?;
                    let id = xdp.attach_to_link(link).map_err(attach_err)?;
                    let link = FdLink::try_from(xdp.take_link(id).map_err(attach_err)?)
                        .map_err(link_err)?;
                    let mode = if kind == LinkKind::XdpDriver {
                        XdpMode::Driver
                    } else {
                        XdpMode::Skb
                    };
                    (link, mode, true)
                }
                None => {
                    let (id, mode) = match xdp.attach(iface, XdpMode::Driver) {
                        Ok(id) => (id, XdpMode::Driver),
                        Err(native) => {
                            let id = xdp.attach(iface, XdpMode::Skb).map_err(attach_err)?;
                            warn!(
                                "{iface}: native XDP refused ({native}); using generic XDP (slower)"
                            );
                            (id, XdpMode::Skb)
                        }
                    };
                    let link = FdLink::try_from(xdp.take_link(id).map_err(attach_err)?)
                        .map_err(link_err)?;
                    (link, mode, false)
                }
            };
        let xdp_kind = if xdp_mode == XdpMode::Driver {
            LinkKind::XdpDriver
        } else {
            LinkKind::XdpGeneric
        };
        let xdp_pin = pins.as_ref().map(|p| p.link(iface, xdp_kind));
        let xdp_link = keep_pinned(xdp_link, xdp_pin.as_deref(), xdp_adopted)?;

        let pinned_tc = pins
            .as_ref()
            .map(|p| (LinkKind::Tc, p.link(iface, LinkKind::Tc)));
        let tc: &mut SchedClassifier = program_mut(&mut self.ebpf, prog_names::TC)?;
        let (tc_link, tc_adopted) = match adoptable(
            pinned_tc.filter(|(_, p)| p.exists()),
            linkinfo::LINK_TYPE_TCX,
            ifindex,
        ) {
            Some((_, link)) => {
                let link = SchedClassifierLink::try_from(link).map_err(link_err)?;
                let id = tc.attach_to_link(link).map_err(attach_err)?;
                let link =
                    FdLink::try_from(tc.take_link(id).map_err(attach_err)?).map_err(link_err)?;
                (link, true)
            }
            None => {
                let id = tc.attach(iface, TcAttachType::Egress).map_err(attach_err)?;
                // TCX links are fd-based; the netlink fallback of older
                // kernels could not be pinned.
                let link =
                    FdLink::try_from(tc.take_link(id).map_err(attach_err)?).map_err(link_err)?;
                (link, false)
            }
        };
        let tc_pin = pins.as_ref().map(|p| p.link(iface, LinkKind::Tc));
        let tc_link = keep_pinned(tc_link, tc_pin.as_deref(), tc_adopted)?;

        let links = IfaceLinks {
            ifindex,
            xdp_mode,
            xdp: (xdp_link, xdp_pin),
            tc: (tc_link, tc_pin),
            adopted: xdp_adopted && tc_adopted,
        };
        let a = attachment(iface, &links);
        self.links.insert(iface.to_owned(), links);
        Ok(a)
    }

    /// Stops enforcing on `iface` (or forgets an interface that is gone):
    /// removes its pins and drops its links.
    pub fn detach(&mut self, iface: &str) -> bool {
        let Some(l) = self.links.remove(iface) else {
            return false;
        };
        for pin in [l.xdp.1, l.tc.1].into_iter().flatten() {
            if let Err(e) = std::fs::remove_file(&pin) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!("removing {}: {e}", pin.display());
                }
            }
        }
        true
    }

    /// Pinned links of interfaces this agent does not enforce (any more):
    /// gone, or no longer matched by --iface. Removing their pins detaches
    /// them.
    pub fn stale_pinned_links(&self) -> Vec<(String, PathBuf)> {
        let Some(pins) = &self.pins else {
            return Vec::new();
        };
        pins.links()
            .into_iter()
            .filter(|(iface, _, _)| !self.links.contains_key(iface))
            .map(|(iface, _, path)| (iface, path))
            .collect()
    }

    /// Finishes a start-up on pinned state, once every link runs this
    /// agent's programs: maps that were resized or rebuilt take over their
    /// pins, and map directories of another layout version go.
    pub fn commit_pins(&mut self) -> Result<()> {
        for r in std::mem::take(&mut self.repins) {
            let _ = std::fs::remove_file(&r.path);
            let map = self
                .ebpf
                .map(&r.name)
                .ok_or_else(|| DatapathError::MissingMap(r.name.clone()))?;
            map.pin(&r.path).map_err(|source| DatapathError::Pin {
                path: r.path.clone(),
                source,
            })?;
        }
        for dir in std::mem::take(&mut self.foreign) {
            info!("removing maps of another layout version: {}", dir.display());
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!("removing {}: {e}", dir.display());
            }
        }
        Ok(())
    }

    /// Interfaces being enforced.
    pub fn attached(&self) -> Vec<String> {
        self.links.keys().cloned().collect()
    }

    pub fn attachments(&self) -> Vec<Attachment> {
        self.links.iter().map(|(i, l)| attachment(i, l)).collect()
    }

    /// Ifindex an interface had when it was attached.
    pub fn attached_ifindex(&self, iface: &str) -> Option<u32> {
        self.links.get(iface).map(|l| l.ifindex)
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

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

fn sized_loader<'a>(opts: &LoadOptions) -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    for n in [map_names::CT4, map_names::CT6] {
        loader.map_max_entries(n, opts.ct_max);
    }
    // Each trie holds two policies (the live one and the previous one).
    for n in [
        map_names::IDS4,
        map_names::IDS6,
        map_names::HOSTS4,
        map_names::HOSTS6,
    ] {
        loader.map_max_entries(n, opts.prefix_max.saturating_mul(2));
    }
    loader.map_max_entries(map_names::RULES, opts.rule_max.saturating_mul(2));
    loader.map_max_entries(map_names::FRAG4, opts.frag_max);
    loader.map_max_entries(map_names::FRAG6, opts.frag_max);
    for n in [map_names::DENIED4, map_names::DENIED6] {
        loader.map_max_entries(n, opts.counting.denied_flow_max);
    }
    loader
}

/// Copies a resized map's entries from its old pin. Only conntrack is worth
/// it: policy tries are rewritten by the first apply, and the rest is
/// short-lived or fixed-size.
fn carry_over(ebpf: &mut Ebpf, name: &str, old: &Path) -> Result<()> {
    fn copy<K: Pod, V: Pod>(ebpf: &mut Ebpf, name: &str, old: &Path) -> Result<()> {
        let migrate = |source| DatapathError::Migrate {
            name: name.to_owned(),
            source,
        };
        let old = MapData::from_pin(old).map_err(migrate)?;
        let old: HashMap<MapData, K, V> =
            HashMap::try_from(aya::maps::Map::LruHashMap(old)).map_err(migrate)?;
        let mut new: HashMap<&mut MapData, K, V> = typed_map(ebpf, name)?;
        let mut n = 0usize;
        for entry in old.iter().filter_map(|e| e.ok()) {
            // Shrinking: the LRU evicts what no longer fits.
            new.insert(entry.0, entry.1, 0).map_err(migrate)?;
            n += 1;
        }
        info!("map {name}: carried {n} entries over");
        Ok(())
    }
    match name {
        map_names::CT4 => copy::<CtKey4, CtValue>(ebpf, name, old),
        map_names::CT6 => copy::<CtKey6, CtValue>(ebpf, name, old),
        _ => Ok(()),
    }
}

fn ifindex(iface: &str) -> Result<u32> {
    let err = |source| DatapathError::Iface {
        iface: iface.to_owned(),
        source,
    };
    let c = std::ffi::CString::new(iface)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(err(std::io::Error::last_os_error())),
        i => Ok(i),
    }
}

/// The pinned link at `pinned`, if it is of `link_type` and still attached to
/// the interface with `ifindex`. Any other pin there is stale (its interface
/// went away, or was re-created) and is removed.
fn adoptable(
    pinned: Option<(LinkKind, PathBuf)>,
    link_type: u32,
    ifindex: u32,
) -> Option<(LinkKind, FdLink)> {
    let (kind, path) = pinned?;
    match linkinfo::pinned_link_info(&path) {
        Ok(i) if i.link_type == link_type && i.ifindex == ifindex => {
            match PinnedLink::from_pin(&path) {
                Ok(p) => Some((kind, FdLink::from(p))),
                Err(e) => {
                    warn!("{}: cannot open: {e}", path.display());
                    None
                }
            }
        }
        other => {
            info!(
                "{}: stale link ({other:?}); attaching afresh",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

/// Pins a new link (an adopted one already is); returns our handle to it.
fn keep_pinned(link: FdLink, pin: Option<&Path>, adopted: bool) -> Result<FdLink> {
    match pin {
        Some(path) if !adopted => {
            let _ = std::fs::remove_file(path);
            let pinned = link.pin(path).map_err(|source| DatapathError::Pin {
                path: path.to_owned(),
                source,
            })?;
            Ok(FdLink::from(pinned))
        }
        _ => Ok(link),
    }
}

fn attachment(iface: &str, l: &IfaceLinks) -> Attachment {
    Attachment {
        iface: iface.to_owned(),
        ifindex: l.ifindex,
        xdp_mode: if l.xdp_mode == XdpMode::Driver {
            "driver"
        } else {
            "generic"
        },
        adopted: l.adopted,
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

/// A map a policy slot is written into: the identity and rule tries, and the
/// host-prefix hashes.
trait SlotMap<K, V> {
    fn put(&mut self, key: &K, value: &V) -> std::result::Result<(), aya::maps::MapError>;
    fn del(&mut self, key: &K) -> std::result::Result<(), aya::maps::MapError>;
}

impl<K: Pod, V: Pod> SlotMap<Key<K>, V> for LpmTrie<&mut MapData, K, V> {
    fn put(&mut self, key: &Key<K>, value: &V) -> std::result::Result<(), aya::maps::MapError> {
        self.insert(key, value, 0)
    }
    fn del(&mut self, key: &Key<K>) -> std::result::Result<(), aya::maps::MapError> {
        self.remove(key)
    }
}

impl<K: Pod, V: Pod> SlotMap<K, V> for HashMap<&mut MapData, K, V> {
    fn put(&mut self, key: &K, value: &V) -> std::result::Result<(), aya::maps::MapError> {
        self.insert(key, value, 0)
    }
    fn del(&mut self, key: &K) -> std::result::Result<(), aya::maps::MapError> {
        self.remove(key)
    }
}

/// Brings `map` from holding the entries of `have` that its predicate puts
/// there to holding those of `want` (an entry may move between maps: a host
/// prefix between trie and hash): removes what is gone, writes what is new
/// or changed.
fn sync<N, K, V>(
    have: (&StdHashMap<N, V>, impl Fn(&N) -> bool),
    want: (&StdHashMap<N, V>, impl Fn(&N) -> bool),
    key: impl Fn(&N) -> K,
    map: &mut impl SlotMap<K, V>,
    name: &str,
) -> Result<usize>
where
    N: Eq + Hash,
    V: PartialEq,
{
    let ((have, had), (want, wants)) = (have, want);
    let mut changes = 0;
    for n in have
        .keys()
        .filter(|n| had(n) && !(wants(n) && want.contains_key(*n)))
    {
        map.del(&key(n)).map_err(map_err(name))?;
        changes += 1;
    }
    for (n, v) in want.iter().filter(|(n, _)| wants(n)) {
        if !(had(n) && have.get(n) == Some(v)) {
            map.put(&key(n), v).map_err(map_err(name))?;
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
