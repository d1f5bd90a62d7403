//! Loading the eBPF object with maps sized from the options, reusing the
//! maps an earlier agent pinned when their shape matches.
use std::path::{Path, PathBuf};

use agent_common::{
    map_names, prog_names, Config, CtKey4, CtKey6, CtValue, CFG_F_HOSTS_ALL, MODE_AUDIT,
    MODE_ENFORCE,
};
use aya::{
    maps::{Array, HashMap, MapData},
    programs::{ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader, Pod,
};
use log::{info, warn};

use crate::bpffs::{self, PinLayout, Plan, Repin, Shape};

use super::{clock::*, error::*, handles::*, options::*, Datapath};

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

pub(super) fn write_config(ebpf: &mut Ebpf, config: &Config) -> Result<()> {
    let mut cfg: Array<&mut MapData, Config> = typed_map(ebpf, map_names::CONFIG)?;
    cfg.set(0, *config, 0).map_err(map_err(map_names::CONFIG))
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
                Some(want) => bpffs::adopt::plan(*want, Shape::of_pin(&path), path.exists()),
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
        for name in [prog_names::TC, prog_names::TC_INGRESS] {
            let tc: &mut SchedClassifier = program_mut(&mut ebpf, name)?;
            tc.load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let clock: &mut Xdp = program_mut(&mut ebpf, prog_names::CLOCK)?;
        clock.load().map_err(|source| DatapathError::Program {
            name: prog_names::CLOCK,
            source,
        })?;
        let hz = measure_hz(&ebpf)?;

        if let Some(pins) = &pins {
            for name in [
                prog_names::XDP,
                prog_names::TC,
                prog_names::TC_INGRESS,
                prog_names::CLOCK,
            ] {
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
            // The live slot's host bits stay with the policy they describe;
            // the filter bits do not (the filters are written again by the
            // first swap and the first source sync).
            flags: opts.counting.config_flags() | previous.map_or(0, |c| c.flags & CFG_F_HOSTS_ALL),
            // Carried on: pinned flow caches may hold facts of an earlier
            // generation, which must not match one counted again from 0.
            sources_gen: previous.map_or(0, |c| c.sources_gen),
            _pad: 0,
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
            ct_source_rate: opts.ct_source_rate.into(),
            ct_source_burst: opts.ct_source_burst.into(),
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
            source_filter: Vec::new(),
        };
        write_config(&mut dp.ebpf, &dp.config)?;
        Ok(dp)
    }
}

pub(super) fn sized_loader<'a>(opts: &LoadOptions) -> EbpfLoader<'a> {
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
pub(super) fn carry_over(ebpf: &mut Ebpf, name: &str, old: &Path) -> Result<()> {
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
