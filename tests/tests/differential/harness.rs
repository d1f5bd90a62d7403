//! The harness of the random run: one datapath, the flows used so far,
//! statistics.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use netpol_agent::datapath::{Datapath, LoadOptions};

use crate::judges::{observe, prepare, Observation, PrepError, Prepared};
use crate::packets::{gen_packet, FlowKey, Pkt};
use crate::policy::GPolicy;
use crate::report::files_text;
use crate::rng::Rng;
use crate::shrink::simplifications;

#[derive(Default)]
pub struct Stats {
    pub policies: u64,
    pub packets: u64,
    pub allowed: u64,
    pub by_builtin: u64,
    /// Allowed, and credited (by evaluate and conntrack) to a later allowing
    /// rule than the first: legal (the contract names no rule), worth knowing.
    pub credited_not_first: u64,
    pub ct_checked: u64,
    /// Neighbour discovery / MLD packets (judged by link rules, not policy).
    pub infra: u64,
    pub max_identities: usize,
    pub max_rule_entries: usize,
    pub apply_time: Duration,
    pub by_proto: std::collections::BTreeMap<u8, (u64, u64)>,
}

pub struct Harness {
    pub dp: Datapath,
    used: HashSet<FlowKey>,
    pub stats: Stats,
}

pub enum Failure {
    Prep(PrepError),
    Packet {
        pkt: Pkt,
        obs: Box<Observation>,
        failed: BTreeSet<&'static str>,
    },
}

impl Harness {
    pub fn new() -> Self {
        // Policies with one host prefix of a family keep it in the trie, with
        // two or more in the hash: successive policies move them both ways.
        let dp = Datapath::load(&LoadOptions {
            host_hash_min: 2,
            // One datapath judges every packet of the run, some sources many
            // times: the per-source conntrack quota is not what is compared.
            ct_source_rate: 0,
            ..LoadOptions::default()
        })
        .unwrap_or_else(|e| panic!("loading the datapath: {:#}", anyhow::Error::from(e)));
        Self {
            dp,
            used: HashSet::new(),
            stats: Stats::default(),
        }
    }

    pub fn apply(&mut self, prep: &Prepared) {
        let t = Instant::now();
        self.dp.apply(&prep.compiled).unwrap_or_else(|e| {
            panic!(
                "applying a compiled policy: {:#}\n{}",
                anyhow::Error::from(e),
                files_text(&prep.files)
            )
        });
        self.stats.apply_time += t.elapsed();
    }

    /// Gives `p` a source port / echo id no flow has used, if it needs one;
    /// `false` when none was found (then the packet is not sent).
    pub fn freshen(&mut self, rng: &mut Rng, p: &mut Pkt) -> bool {
        for _ in 0..64 {
            match p.lookup_key() {
                Some(k) if self.used.contains(&k) => p.sport = rng.below(65536) as u16,
                _ => {
                    self.used.insert(p.flow_key());
                    return true;
                }
            }
            if p.ct_ports() == (0, 0) {
                return false; // no port to vary (other protocols)
            }
        }
        false
    }

    pub fn run_case(&mut self, rng: &mut Rng, gp: &GPolicy, packets: u64) -> Result<(), Failure> {
        let prep = prepare(gp).map_err(Failure::Prep)?;
        self.apply(&prep);
        let s = &mut self.stats;
        s.policies += 1;
        s.max_identities = s.max_identities.max(prep.compiled.identities.len());
        s.max_rule_entries = s.max_rule_entries.max(prep.compiled.rules.len());
        let prefixes = gp.prefixes();
        for _ in 0..packets {
            let mut pkt = gen_packet(rng, gp, &prefixes);
            if !self.freshen(rng, &mut pkt) {
                continue;
            }
            let obs = observe(
                &mut self.dp,
                &prep,
                &gp.host,
                &gp.nodes,
                gp.enforce_opt,
                &pkt,
            );
            let failed = obs.failures();
            if !failed.is_empty() {
                return Err(Failure::Packet {
                    pkt,
                    obs: Box::new(obs),
                    failed,
                });
            }
            let s = &mut self.stats;
            s.packets += 1;
            let e = s.by_proto.entry(pkt.proto).or_default();
            e.0 += 1;
            if let Some(first) = &obs.reference {
                e.1 += 1;
                s.allowed += 1;
                if first.starts_with("builtin:") {
                    s.by_builtin += 1;
                }
                if obs.evaluate.as_ref().is_some_and(|(_, n)| n != first) {
                    s.credited_not_first += 1;
                }
            }
            if obs.ct_rule.is_some() {
                s.ct_checked += 1;
            }
            s.infra += u64::from(obs.discovery.is_some());
        }
        Ok(())
    }

    /// Whether `gp` still fails the way `failure` did (same checks, same packet).
    fn reproduces(&mut self, rng: &mut Rng, gp: &GPolicy, failure: &Failure) -> bool {
        match failure {
            Failure::Prep(e) => matches!(prepare(gp), Err(e2) if e2.kind() == e.kind()),
            Failure::Packet { pkt, failed, .. } => {
                let Ok(prep) = prepare(gp) else {
                    return false;
                };
                self.apply(&prep);
                let mut p = *pkt;
                if !self.freshen(rng, &mut p) {
                    return false;
                }
                let obs = observe(&mut self.dp, &prep, &gp.host, &gp.nodes, gp.enforce_opt, &p);
                obs.failures() == *failed
            }
        }
    }

    /// Greedy shrinking: keeps any one-step simplification that still fails
    /// the same way, until none does.
    pub fn shrink(&mut self, rng: &mut Rng, mut gp: GPolicy, failure: &Failure) -> GPolicy {
        loop {
            let mut progress = false;
            for cand in simplifications(&gp) {
                if self.reproduces(rng, &cand, failure) {
                    gp = cand;
                    progress = true;
                    break;
                }
            }
            if !progress {
                return gp;
            }
        }
    }
}
