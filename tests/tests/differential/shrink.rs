//! Shrinking a failure: one-step simplifications of a policy, and replays
//! in fresh datapaths.

use std::collections::BTreeSet;

use netpol_agent::policy::{compile, Peer};

use crate::judges::{
    apply_all, fresh_datapath, observe, parse_files, prepare, Observation, Prepared,
};
use crate::packets::Pkt;
use crate::policy::{GPeer, GPolicy, GPort, GRule};
use crate::yaml::yaml_files;

/// Every one-step simplification of `gp`, biggest steps first.
pub fn simplifications(gp: &GPolicy) -> Vec<GPolicy> {
    let mut out = Vec::new();
    let referenced = |gp: &GPolicy, name: &str| {
        gp.rules
            .iter()
            .any(|r| r.peers().iter().any(|p| p.peer == Peer::Group(name.into())))
    };
    for i in 0..gp.rules.len() {
        let mut c = gp.clone();
        c.rules.remove(i);
        out.push(c);
    }
    for i in 0..gp.groups.len() {
        if !referenced(gp, &gp.groups[i].name) {
            let mut c = gp.clone();
            c.groups.remove(i);
            out.push(c);
        }
    }
    if gp.split != 0 {
        out.push(GPolicy {
            split: 0,
            ..gp.clone()
        });
    }
    if gp.settings.is_some() {
        out.push(GPolicy {
            settings: None,
            ..gp.clone()
        });
    }
    if gp.enforce_opt {
        out.push(GPolicy {
            enforce_opt: false,
            settings: Some(true),
            ..gp.clone()
        });
    }
    for i in 0..gp.nodes.len() {
        let mut c = gp.clone();
        c.nodes.remove(i);
        out.push(c);
    }
    for i in 0..gp.host.len() {
        let mut c = gp.clone();
        c.host.remove(i);
        out.push(c);
    }
    for i in 0..gp.rules.len() {
        let shrink_list = |v: &Vec<GPeer>| -> Vec<Vec<GPeer>> {
            if v.len() < 2 {
                return Vec::new();
            }
            (0..v.len())
                .map(|j| {
                    let mut w = v.clone();
                    w.remove(j);
                    w
                })
                .collect()
        };
        match &gp.rules[i] {
            GRule::Within { name, peers } => {
                for w in shrink_list(peers) {
                    let mut c = gp.clone();
                    c.rules[i] = GRule::Within {
                        name: name.clone(),
                        peers: w,
                    };
                    out.push(c);
                }
            }
            GRule::Edge {
                name,
                from,
                to,
                ports,
            } => {
                let edge = |from: &Vec<GPeer>, to: &Vec<GPeer>, ports: &Option<Vec<GPort>>| {
                    let mut c = gp.clone();
                    c.rules[i] = GRule::Edge {
                        name: name.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        ports: ports.clone(),
                    };
                    c
                };
                for w in shrink_list(from) {
                    out.push(edge(&w, to, ports));
                }
                for w in shrink_list(to) {
                    out.push(edge(from, &w, ports));
                }
                if let Some(ps) = ports {
                    out.push(edge(from, to, &None));
                    if ps.len() > 1 {
                        for j in 0..ps.len() {
                            let mut w = ps.clone();
                            w.remove(j);
                            out.push(edge(from, to, &Some(w)));
                        }
                    }
                }
            }
        }
    }
    for i in 0..gp.groups.len() {
        let g = &gp.groups[i];
        for j in 0..g.cidrs.len() {
            let mut c = gp.clone();
            let cg = &mut c.groups[i];
            cg.cidrs.remove(j);
            let cidrs = cg.cidrs.clone();
            cg.except.retain(|e| cidrs.iter().any(|n| n.contains(e)));
            out.push(c);
        }
        for j in 0..g.except.len() {
            let mut c = gp.clone();
            c.groups[i].except.remove(j);
            out.push(c);
        }
        if g.long_form && g.except.is_empty() {
            let mut c = gp.clone();
            c.groups[i].long_form = false;
            out.push(c);
        }
    }
    out
}

/// `pkt` judged in a fresh datapath after `history` (compiled with `gp`'s
/// options) and then `gp` were applied; `None` if some policy does not load.
pub fn replay(history: &[GPolicy], gp: &GPolicy, pkt: &Pkt) -> Option<(Prepared, Observation)> {
    let mut earlier = Vec::new();
    for h in history {
        let p = parse_files(&yaml_files(h)).ok()?;
        compile(&p, &gp.compile_options()).ok()?;
        earlier.push(p);
    }
    let prep = prepare(gp).ok()?;
    let mut dp = fresh_datapath();
    apply_all(&mut dp, &earlier, &gp.compile_options(), &prep);
    let obs = observe(&mut dp, &prep, &gp.host, &gp.nodes, gp.enforce_opt, pkt);
    Some((prep, obs))
}

pub fn replays(history: &[GPolicy], gp: &GPolicy, pkt: &Pkt, failed: &BTreeSet<&str>) -> bool {
    replay(history, gp, pkt).is_some_and(|(_, obs)| obs.failures() == *failed)
}

/// Greedy shrinking by replay in fresh datapaths: drops history policies,
/// simplifies the failing policy, then the history, while the same checks fail.
pub fn shrink_replay(
    mut history: Vec<GPolicy>,
    mut gp: GPolicy,
    pkt: &Pkt,
    failed: &BTreeSet<&str>,
) -> (Vec<GPolicy>, GPolicy) {
    'outer: loop {
        for i in 0..history.len() {
            let mut h = history.clone();
            h.remove(i);
            if replays(&h, &gp, pkt, failed) {
                history = h;
                continue 'outer;
            }
        }
        for cand in simplifications(&gp) {
            if replays(&history, &cand, pkt, failed) {
                gp = cand;
                continue 'outer;
            }
        }
        for i in 0..history.len() {
            for cand in simplifications(&history[i]) {
                let mut h = history.clone();
                h[i] = cand;
                if replays(&h, &gp, pkt, failed) {
                    history = h;
                    continue 'outer;
                }
            }
        }
        return (history, gp);
    }
}
