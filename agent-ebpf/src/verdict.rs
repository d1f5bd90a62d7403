//! One decision for both hooks: the source check (where packets enter), the
//! flow cache, then
//! conntrack (one lookup, direction-normalised key), then identities and the
//! rule trie, then counters. This module only says in which order the steps run and what each
//! outcome means; each step lives in the module of its concern.
use agent_common::{
    reason, traffic_of, Config, CtValue, CFG_F_EVENTS_ALLOWED, CT_F_REPLY_SEEN, EVENT_VERDICT_PASS,
    MODE_AUDIT,
};

use crate::{
    conntrack::{self, ct_flags_after, ct_key, Live},
    counting::{count_shared, count_verdict},
    denied::deny,
    events::send_event,
    family::{Family, V4, V6},
    flow::{Decision, Flow, Pkt},
    flowcache::{self, SrcCheck},
    frag::{later_fragment, note_first_fragment},
    maps::CONFIG,
    nd,
    parse::{parse_ipv4, parse_ipv6, parse_l2, Bounds, Frag, Ip, Parsed6, Track, L3},
    policy, quota, related, sources,
};

/// Verdict of an IP packet, counting it on its flow. Each step is reached only
/// when the cheaper one before it cannot answer: the flow cache, conntrack,
/// then the policy, which opens the flow or denies it. The source check `sc`
/// comes first, before anything the packet could ride on; only a packet the
/// flow cache may answer has it in the cache lookup, which can vouch for it.
#[inline(always)]
fn decide_ip<F: Family>(
    b: &Bounds,
    cfg: &Config,
    ip: &Ip<F::Addr>,
    pkt: &Pkt,
    sc: SrcCheck,
) -> Decision {
    let cacheable = flowcache::cacheable(ip.frag, &ip.l4);
    // A packet that asks the policy before any lookup (one opening a flow, a
    // stateless one) may have its source vouched for by the answer cache.
    let asks_first = !matches!(ip.frag, Frag::Later(_))
        && matches!(ip.l4.track, Track::Open | Track::PolicyOnly);
    if !cacheable && !asks_first {
        sc.run::<F>(&ip.src).map_err(|r| (r, false))?;
    }
    if let Frag::Later(id) = ip.frag {
        return later_fragment::<F>(cfg, ip, id);
    }
    // Before the flow's key exists: the error's own key is never used, and
    // the quote's key would need stack beside it.
    if ip.l4.track == Track::Related {
        return related::judge::<F>(b, cfg, ip);
    }
    let l4 = &ip.l4;
    let (key, src_is_b) = ct_key::<F>(&ip.src, &ip.dst, l4.sport, l4.dport, l4.proto);
    let fl = Flow::<F>::new(cfg, ip, pkt, &key, src_is_b);
    // Exactly one of the three places runs the source check: above, in the
    // flow-cache lookup (`cacheable` is `fl.cacheable`), or in the policy
    // lookup (`asks_first`), which asks nothing else before it.
    if cacheable {
        match flowcache::lookup(&fl, sc) {
            Ok(Some(rule_id)) => return Ok((reason::PASS_ESTABLISHED, rule_id)),
            Ok(None) => {}
            Err(r) => return Err((r, false)),
        }
    }
    let mut found = false;
    if conntrack::looks_up(l4.track) {
        if let Some(e) = conntrack::entry::<F>(fl.key) {
            let live = Live::new(&fl, e);
            if live.usable(&fl) {
                return established(&fl, live, sc);
            }
            found = true;
        }
    }
    // A packet that asked first (`asks_first`) still owes its source check.
    let answer = policy::lookup::<F>(
        fl.gen,
        fl.flags,
        &ip.src,
        &ip.dst,
        l4.proto,
        l4.policy_port,
        sc,
        asks_first,
    );
    let rule = match answer {
        Ok(Ok(rule)) => rule,
        Ok(Err(audit)) => return deny(&fl, reason::DROP_POLICY, audit),
        Err(r) => return Err((r, false)),
    };
    if conntrack::creates(l4.track) {
        if !quota::take(&fl) {
            return Err((reason::DROP_CT_QUOTA, false));
        }
        open(&fl, rule.rule_id, found);
    }
    Ok((reason::PASS_POLICY, rule.rule_id))
}

/// A packet of a flow with a live conntrack entry: passes under the entry's
/// rule, or under a re-check if the policy changed since the flow was checked.
/// `sc` is the source check the packet passed.
#[inline(always)]
fn established<F: Family>(fl: &Flow<F>, live: Live, sc: SrcCheck) -> Decision {
    let Live { e, is_orig, age } = live;
    let cslot = F::cache().get_ptr_mut(fl.slot);
    if fl.counting {
        flowcache::flush_own::<F>(cslot, fl.key, &mut e.counters);
    }
    let f = ct_flags_after(e.flags, is_orig, fl.ip.l4.proto, fl.ip.l4.tcp_flags);
    if e.policy_gen != fl.gen {
        return recheck(fl, e, f);
    }
    if fl.counting {
        count_shared(&mut e.counters, fl.idx, fl.pkt.len);
    }
    conntrack::touch(e, f, age, fl.t, fl.cfg.refresh_interval);
    // Two-way flows only: until a reply is seen, every packet must reach
    // conntrack to record the reply's state change.
    if fl.cacheable && f & CT_F_REPLY_SEEN != 0 {
        flowcache::fill(fl, cslot, e.rule_id, sc);
    }
    Ok((reason::PASS_ESTABLISHED, e.rule_id))
}

/// Policy changed since this flow was checked: asks the live policy the
/// flow's original question once (revocation). `f` is the entry's state after
/// this packet.
#[inline(always)]
fn recheck<F: Family>(fl: &Flow<F>, e: &mut CtValue, f: u32) -> Decision {
    let (osrc, odst) = conntrack::orig_endpoints::<F>(fl.key, e.flags);
    let rule = match policy::lookup::<F>(
        fl.gen,
        fl.flags,
        &osrc,
        &odst,
        fl.ip.l4.proto,
        e.orig_port,
        // The original question's source is not this packet's: no fact.
        SrcCheck { ifindex: 0, gen: 0 },
        false,
    )
    .unwrap_or(Err(false))
    {
        Ok(rule) => rule,
        Err(audit) => {
            conntrack::remove::<F>(fl.key);
            return deny(fl, reason::DROP_REVOKED, audit);
        }
    };
    conntrack::rechecked(e, fl.gen, rule.rule_id, f, fl.t);
    if fl.counting {
        count_shared(&mut e.counters, fl.idx, fl.pkt.len);
    }
    Ok((reason::PASS_RECHECKED, rule.rule_id))
}

/// A packet the policy allows, of a flow conntrack tracks: creates the flow's
/// entry (`found`: its lookup found one it could not use); a new flow sends
/// an event if allowed flows are reported.
#[inline(always)]
fn open<F: Family>(fl: &Flow<F>, rule_id: u32, found: bool) {
    if conntrack::create(fl, rule_id, found) && fl.cfg.flags & CFG_F_EVENTS_ALLOWED != 0 {
        send_event::<F>(
            fl.cfg,
            fl.t,
            fl.ip,
            fl.pkt,
            reason::PASS_POLICY,
            rule_id,
            EVENT_VERDICT_PASS,
        );
    }
}

#[inline(always)]
fn decide_family<F: Family>(
    b: &Bounds,
    cfg: &Config,
    ip: &Ip<F::Addr>,
    pkt: &Pkt,
    sc: SrcCheck,
) -> Decision {
    let r = decide_ip::<F>(b, cfg, ip, pkt, sc);
    if r.is_ok() {
        note_first_fragment::<F>(ip);
    }
    r
}

/// The decision, with the source check on `ifindex` (0: none, as on egress).
/// The `SOURCES` generation is read before any `SOURCES` lookup, so a fact
/// the flow cache keeps is never newer than the generation it is filed under.
#[inline(always)]
fn guarded<F: Family>(
    b: &Bounds,
    cfg: &Config,
    ip: &Ip<F::Addr>,
    pkt: &Pkt,
    ifindex: u32,
) -> Decision {
    // SAFETY: a field of the CONFIG map value, read once.
    let gen = unsafe { core::ptr::read_volatile(&cfg.sources_gen) };
    decide_family::<F>(b, cfg, ip, pkt, SrcCheck { ifindex, gen })
}

#[inline(always)]
fn judge_v4(b: &Bounds, l3: usize, cfg: &Config, pkt: &Pkt, ifindex: u32) -> Decision {
    let ip = parse_ipv4(b, l3).map_err(|r| (r, false))?;
    guarded::<V4>(b, cfg, &ip, pkt, ifindex)
}

#[inline(always)]
fn judge_v6(b: &Bounds, l3: usize, cfg: &Config, pkt: &Pkt, ifindex: u32) -> Decision {
    match parse_ipv6(b, l3, ifindex != 0).map_err(|r| (r, false))? {
        Parsed6::Ip(ip) => guarded::<V6>(b, cfg, &ip, pkt, ifindex),
        Parsed6::NeighbourDiscovery(shape) => {
            if nd::passes(shape, ifindex) {
                Ok((reason::PASS_NEIGHBOUR_DISCOVERY, 0))
            } else {
                Err((reason::DROP_ND_INVALID, false))
            }
        }
    }
}

/// Judges one frame. Returns true when it may pass, after counting it.
/// `ifindex` is the interface the hook runs on; `check_sources` runs the
/// source check on it (XDP: where packets enter).
#[inline(always)]
pub fn judge(b: &Bounds, dir: u32, ifindex: u32, check_sources: bool) -> bool {
    let Some(cfg) = CONFIG.get(0) else {
        return false;
    };
    let pkt = Pkt {
        dir,
        len: b.len as u64,
    };
    // Everything is inlined into the entry point: a BPF-to-BPF call returns
    // through the kernel's return thunk, which costs real time on CPUs that
    // need SRSO mitigation (as these do).
    let src_ifindex = if check_sources { ifindex } else { 0 };
    let verdict = match parse_l2(b) {
        Ok(L3::V4(l3)) => judge_v4(b, l3, cfg, &pkt, src_ifindex),
        Ok(L3::V6(l3)) => judge_v6(b, l3, cfg, &pkt, src_ifindex),
        Ok(L3::NonIp) => Ok((reason::PASS_NON_IP, 0)),
        Err(r) => Err((r, false)),
    };
    let (pass, why, rule_id, audited) = match verdict {
        Ok((r, rule_id)) => (true, r, rule_id, false),
        Err((r, audit)) => (false, r, 0, audit || cfg.mode == MODE_AUDIT),
    };
    // The aggregates read from the workload's side: on a pod interface the
    // hook's direction is the pod's opposite one.
    let traffic = traffic_of(dir, sources::is_pod(ifindex));
    count_verdict(traffic, pass, why, rule_id, audited, pkt.len);
    pass || audited
}
