//! The randomised run: `NETPOL_DIFF_CASES` generated policies, each with
//! `NETPOL_DIFF_PACKETS` packets, from `NETPOL_DIFF_SEED`.

use std::time::Instant;

use netpol_tests::require_root;

use crate::harness::{Failure, Harness};
use crate::judges::{observe, prepare};
use crate::policy::GPolicy;
use crate::policy_gen::gen_policy;
use crate::report::{files_text, regression_test};
use crate::rng::Rng;
use crate::shrink::{replay, replays, shrink_replay};
use crate::yaml::yaml_files;
use crate::{DEFAULT_CASES, DEFAULT_PACKETS, DEFAULT_SEED};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?}: expected a number")))
}

#[test]
fn policy_vs_datapath() {
    if !require_root() {
        return;
    }
    let seed = env_u64("NETPOL_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("NETPOL_DIFF_CASES").unwrap_or(DEFAULT_CASES);
    let packets = env_u64("NETPOL_DIFF_PACKETS").unwrap_or(DEFAULT_PACKETS);
    let only = env_u64("NETPOL_DIFF_CASE");
    eprintln!(
        "differential: NETPOL_DIFF_SEED={seed:#x}, {} policies x {packets} packets",
        only.map_or(cases, |_| 1)
    );
    let started = Instant::now();
    let mut h = Harness::new();
    let range = match only {
        Some(c) => c..c + 1,
        None => 0..cases,
    };
    for case in range {
        let mut rng = Rng::for_case(seed, case);
        let gp = gen_policy(&mut rng);
        let Err(failure) = h.run_case(&mut rng, &gp, packets) else {
            continue;
        };
        let original = match &failure {
            Failure::Prep(_) => String::new(),
            Failure::Packet { pkt, obs, failed } => format!(
                "first failing packet {}: {failed:?}\n{}\npolicy as generated:\n{}\n",
                pkt.describe(),
                obs.report(&prepare(&gp).map(|p| p.compiled).unwrap_or_default()),
                files_text(&yaml_files(&gp)),
            ),
        };
        let (pkt, failed) = match &failure {
            Failure::Prep(e) => {
                let mut shrink_rng = Rng::new(seed ^ 0x5f5f);
                let small = h.shrink(&mut shrink_rng, gp.clone(), &failure);
                let now = prepare(&small).err().unwrap_or_else(|| e.clone());
                panic!(
                    "differential: seed {seed:#x} case {case}: a generated policy failed to load ({}):\n{now:?}\n\nshrunk policy:\n{}\noriginal policy:\n{}",
                    e.kind(),
                    files_text(&yaml_files(&small)),
                    files_text(&yaml_files(&gp)),
                );
            }
            Failure::Packet { pkt, failed, .. } => (*pkt, failed.clone()),
        };
        // Replay in datapaths of their own, with no history, then after the
        // policies applied just before (a reload writes the slot that held
        // the policy before last), so the regression stands alone.
        let earlier: Vec<GPolicy> = (case.saturating_sub(2)..case)
            .map(|c| gen_policy(&mut Rng::for_case(seed, c)))
            .collect();
        let history = [0, 1, 2]
            .into_iter()
            .filter(|&n| n <= earlier.len())
            .map(|n| earlier[earlier.len() - n..].to_vec())
            .find(|hist| replays(hist, &gp, &pkt, &failed));
        let Some(history) = history else {
            // Depends on a longer history: shrink in the long-lived datapath.
            let mut shrink_rng = Rng::new(seed ^ 0x5f5f);
            let small = h.shrink(&mut shrink_rng, gp.clone(), &failure);
            let prep = prepare(&small).expect("the shrunk policy prepared before");
            h.apply(&prep);
            let mut p = pkt;
            h.freshen(&mut shrink_rng, &mut p);
            let obs = observe(
                &mut h.dp,
                &prep,
                &small.host,
                &small.nodes,
                small.enforce_opt,
                &p,
            );
            panic!(
                "differential: seed {seed:#x} case {case}: the judges disagree on {} ({:?})\n{}\n\nThis does NOT reproduce in a fresh datapath, even after the two policies applied before it: it depends on a longer history of reloads. Replay the whole run with NETPOL_DIFF_SEED={seed:#x} NETPOL_DIFF_CASES={}.\n\npolicy (shrunk in the long-lived datapath):\n{}\n{original}",
                p.describe(),
                obs.failures(),
                obs.report(&prep.compiled),
                case + 1,
                files_text(&prep.files),
            );
        };
        let t = Instant::now();
        let (history, small) = shrink_replay(history, gp.clone(), &pkt, &failed);
        let (prep, obs) = replay(&history, &small, &pkt).expect("the shrunk case replays");
        let want = obs.passes();
        panic!(
            "differential: seed {seed:#x} case {case}: the judges disagree on {} ({:?})\n{}\n\npolicy (shrunk in {:.1?}{}):\n{}\n{original}\nRegression test (paste into tests/tests/differential/regressions.rs):\n\n{}\n",
            pkt.describe(),
            obs.failures(),
            obs.report(&prep.compiled),
            t.elapsed(),
            if history.is_empty() {
                String::new()
            } else {
                format!(
                    "; applied after {} other polic{}, see the regression test",
                    history.len(),
                    if history.len() == 1 { "y" } else { "ies" }
                )
            },
            files_text(&prep.files),
            regression_test(seed, case, &history, &prep, &small, &pkt, want),
        );
    }
    let s = &h.stats;
    eprintln!(
        "differential: {} policies, {} packets ({} allowed, {} by built-in host rules, {} ND/MLD; {} conntrack rule ids read; {} credited to a later allowing rule than the first) in {:.1?} (apply {:.1?}); largest policy {} identities, {} rule entries",
        s.policies,
        s.packets,
        s.allowed,
        s.by_builtin,
        s.infra,
        s.ct_checked,
        s.credited_not_first,
        started.elapsed(),
        s.apply_time,
        s.max_identities,
        s.max_rule_entries,
    );
    eprintln!(
        "differential: per protocol (sent, allowed): {:?}",
        s.by_proto
    );
}
