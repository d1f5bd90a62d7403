//! One decision for both hooks: conntrack first (one lookup, direction-normalised
//! key), then identities and the rule trie, then counters. This module only
//! composes the steps; each concern lives in its own module.
use agent_common::{
    ct_timeout, flow_counter_index, reason, rule_counter_index, stat, Config, Counter, CtValue,
    FlowCache, CFG_F_EVENTS_ALLOWED, CFG_F_FLOW_COUNTERS, CT_F_ORIG_B, CT_F_REPLY_SEEN, CT_F_SYN,
    CT_F_SYNACK, EVENT_VERDICT_PASS, IPPROTO_TCP, MODE_AUDIT,
};

use crate::{
    conntrack::{ct_flags_after, ct_key},
    counting::{bump_stat, shared_add},
    denied::deny,
    events::{event, send_event},
    family::{Family, V4, V6},
    flow::{now, Decision, Pkt},
    flowcache::{cache_hit, flush},
    frag::note_first_fragment,
    maps::{BPF_NOEXIST, CONFIG, COUNTERS, RULE_COUNTERS},
    parse::{
        parse_ipv4, parse_ipv6, parse_l2, Bounds, Frag, Ip, Parsed6, Track, L3, TCP_FIN, TCP_RST,
        TCP_SYN,
    },
    policy::policy,
};

/// Verdict of an IP packet, counting it on its flow.
#[inline(always)]
fn decide_ip<F: Family>(cfg: &Config, ip: &Ip<F::Addr>, pkt: &Pkt) -> Decision {
    let l4 = &ip.l4;
    // One read of the generation for the whole packet: the slot it looks up and
    // the generation it stamps must be the same policy, even if a swap lands
    // while the packet is being judged.
    // SAFETY: a field of the CONFIG map value, read once.
    let gen = unsafe { core::ptr::read_volatile(&cfg.policy_gen) };
    let flags = cfg.flags;
    if let Frag::Later(id) = ip.frag {
        let key = F::frag_key(&ip.src, &ip.dst, id, ip.frag_proto);
        return match F::frag().get_ptr(&key) {
            Some(v) if now().saturating_sub(unsafe { (*v).seen }) < cfg.frag_timeout => {
                Ok((reason::PASS_FRAGMENT, 0))
            }
            _ => Err((reason::DROP_FRAGMENT, cfg.mode == MODE_AUDIT)),
        };
    }
    let counting = cfg.flags & CFG_F_FLOW_COUNTERS != 0;

    let (key, src_is_b) = ct_key::<F>(&ip.src, &ip.dst, l4.sport, l4.dport, l4.proto);
    let idx = flow_counter_index(pkt.dir, src_is_b);
    // Packets that may change a flow's state (FIN, RST, and everything but
    // plain Lookup) always go to conntrack; the rest may be answered by the cache.
    let cacheable = l4.track == Track::Lookup && l4.tcp_flags & (TCP_FIN | TCP_RST) == 0;
    let slot = F::cache_slot(&key);
    let t = now();
    if cacheable {
        if let Some(c) = F::cache().get_ptr_mut(slot) {
            // SAFETY: this CPU's slot of a per-CPU array.
            let c = unsafe { &mut *c };
            if cache_hit::<F>(c, &key, gen, t) {
                // Counting on the hot path is two adds on the slot's own line;
                // conntrack gets them at the next flush.
                if counting {
                    if let Some(d) = c.counters.get_mut(idx) {
                        d.packets += 1;
                        d.bytes += pkt.len;
                    }
                }
                return Ok((reason::PASS_ESTABLISHED, c.rule_id));
            }
        }
    }
    if l4.track != Track::Open && l4.track != Track::PolicyOnly {
        if let Some(entry) = F::ct().get_ptr_mut(&key) {
            // SAFETY: map value pointer from a successful lookup.
            let e = unsafe { &mut *entry };
            // Saturating: another CPU may have stamped the entry after this one read
            // the clock.
            let age = t.saturating_sub(e.last_seen);
            let is_orig = src_is_b == (e.flags & CT_F_ORIG_B != 0);
            // An echo reply travelling the way its request did is not a reply.
            let usable = !(is_orig && l4.track == Track::Reply);
            if usable && age < ct_timeout(cfg, l4.proto, e.flags) {
                let cslot = F::cache().get_ptr_mut(slot);
                if counting {
                    if let Some(c) = cslot {
                        // SAFETY: this CPU's slot of a per-CPU array.
                        let c = unsafe { &mut *c };
                        if F::key_eq(&c.key, &key) {
                            flush(&mut c.counters, &mut e.counters);
                        }
                    }
                }
                let f = ct_flags_after(e.flags, is_orig, l4.proto, l4.tcp_flags);
                if e.policy_gen != gen {
                    // Policy changed since this flow was checked: ask the live
                    // policy the flow's original question once (revocation).
                    let (a, b) = F::ct_addrs(&key);
                    let (osrc, odst) = if e.flags & CT_F_ORIG_B != 0 {
                        (b, a)
                    } else {
                        (a, b)
                    };
                    let rule = match policy::<F>(gen, flags, &osrc, &odst, l4.proto, e.orig_port) {
                        Ok(rule) => rule,
                        Err(audit) => {
                            let _ = F::ct().remove(&key);
                            bump_stat(stat::CT_REMOVED);
                            return deny::<F>(
                                cfg,
                                &key,
                                src_is_b,
                                ip,
                                pkt,
                                reason::DROP_REVOKED,
                                audit,
                                t,
                            );
                        }
                    };
                    e.policy_gen = gen;
                    e.rule_id = rule.rule_id;
                    e.flags = f;
                    e.last_seen = t;
                    if counting {
                        if let Some(c) = e.counters.get_mut(idx) {
                            shared_add(c, 1, pkt.len);
                        }
                    }
                    return Ok((reason::PASS_RECHECKED, rule.rule_id));
                }
                if counting {
                    if let Some(c) = e.counters.get_mut(idx) {
                        shared_add(c, 1, pkt.len);
                    }
                }
                let changed = f != e.flags;
                if changed {
                    e.flags = f;
                }
                if changed || age > cfg.refresh_interval {
                    e.last_seen = t;
                }
                // Two-way flows only: until a reply is seen, every packet must
                // reach conntrack to record the reply's state change.
                if cacheable && f & CT_F_REPLY_SEEN != 0 {
                    if let Some(c) = cslot {
                        // SAFETY: this CPU's slot of a per-CPU array.
                        let c = unsafe { &mut *c };
                        // Another flow's pending counts go to its own entry
                        // before it loses the slot (only on a slot collision).
                        if counting && !F::key_eq(&c.key, &key) {
                            let pending = c.counters.iter().any(|p| p.packets != 0);
                            if pending {
                                if let Some(other) = F::ct().get_ptr_mut(&c.key) {
                                    // SAFETY: map value pointer from a successful lookup.
                                    flush(&mut c.counters, unsafe { &mut (*other).counters });
                                }
                            }
                        }
                        *c = FlowCache {
                            key,
                            valid_until: t + cfg.refresh_interval,
                            policy_gen: gen,
                            rule_id: e.rule_id,
                            counters: [Counter::default(); 4],
                        };
                    }
                }
                return Ok((reason::PASS_ESTABLISHED, e.rule_id));
            }
        }
    }

    let rule = match policy::<F>(gen, flags, &ip.src, &ip.dst, l4.proto, l4.policy_port) {
        Ok(rule) => rule,
        Err(audit) => {
            return deny::<F>(cfg, &key, src_is_b, ip, pkt, reason::DROP_POLICY, audit, t)
        }
    };
    if l4.track == Track::Open || l4.track == Track::Lookup {
        let mut flags = if src_is_b { CT_F_ORIG_B } else { 0 };
        if l4.proto == IPPROTO_TCP {
            // A flow picked up mid-stream (agent restart, evicted entry) counts as
            // established; a SYN starts a fresh handshake.
            flags |= if l4.tcp_flags & TCP_SYN != 0 {
                CT_F_SYN
            } else {
                CT_F_SYN | CT_F_SYNACK
            };
        }
        let mut value = CtValue {
            created: t,
            last_seen: t,
            policy_gen: gen,
            rule_id: rule.rule_id,
            flags,
            orig_port: l4.policy_port,
            _pad: 0,
            counters: [Counter::default(); 4],
        };
        if counting {
            if let Some(c) = value.counters.get_mut(idx) {
                *c = Counter {
                    packets: 1,
                    bytes: pkt.len,
                };
            }
        }
        // Create-only first, so creations (for fill and eviction figures) are
        // counted once; a SYN reusing a live flow's ports then replaces it.
        if F::ct().insert(&key, value, BPF_NOEXIST).is_ok() {
            bump_stat(F::CT_CREATED);
            if cfg.flags & CFG_F_EVENTS_ALLOWED != 0 {
                let ev = event::<F>(
                    ip,
                    pkt,
                    reason::PASS_POLICY,
                    rule.rule_id,
                    EVENT_VERDICT_PASS,
                );
                send_event(cfg, t, ev);
            }
        } else {
            let _ = F::ct().insert(&key, value, 0);
        }
    }
    Ok((reason::PASS_POLICY, rule.rule_id))
}

#[inline(always)]
fn decide_family<F: Family>(cfg: &Config, ip: &Ip<F::Addr>, pkt: &Pkt) -> Decision {
    let r = decide_ip::<F>(cfg, ip, pkt);
    if r.is_ok() {
        note_first_fragment::<F>(ip);
    }
    r
}

#[inline(always)]
fn judge_v4(b: &Bounds, l3: usize, cfg: &Config, pkt: &Pkt) -> Decision {
    let ip = parse_ipv4(b, l3).map_err(|r| (r, false))?;
    decide_family::<V4>(cfg, &ip, pkt)
}

#[inline(always)]
fn judge_v6(b: &Bounds, l3: usize, cfg: &Config, pkt: &Pkt) -> Decision {
    match parse_ipv6(b, l3).map_err(|r| (r, false))? {
        Parsed6::Ip(ip) => decide_family::<V6>(cfg, &ip, pkt),
        Parsed6::NeighbourDiscovery => Ok((reason::PASS_NEIGHBOUR_DISCOVERY, 0)),
    }
}

/// Judges one frame. Returns true when it may pass, after counting it.
#[inline(always)]
pub fn judge(b: &Bounds, dir: u32) -> bool {
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
    let verdict = match parse_l2(b) {
        Ok(L3::V4(l3)) => judge_v4(b, l3, cfg, &pkt),
        Ok(L3::V6(l3)) => judge_v6(b, l3, cfg, &pkt),
        Ok(L3::NonIp) => Ok((reason::PASS_NON_IP, 0)),
        Err(r) => Err((r, false)),
    };
    let (pass, why, rule_id, audited) = match verdict {
        Ok((r, rule_id)) => (true, r, rule_id, false),
        Err((r, audit)) => (false, r, 0, audit || cfg.mode == MODE_AUDIT),
    };
    // A pass by a rule is counted once, under its rule (the per-reason totals
    // are sums over rules); everything else by direction and reason. Either
    // array is per-CPU and never evicts, so the aggregates lose no count.
    let by_rule = match rule_counter_index(rule_id, dir, why) {
        Some(i) if pass && rule_id != 0 => RULE_COUNTERS.get_ptr_mut(i),
        _ => None,
    };
    let slot = match by_rule {
        Some(c) => Some(c),
        None => COUNTERS.get_ptr_mut(agent_common::counter_index(dir, audited, why)),
    };
    if let Some(c) = slot {
        // SAFETY: per-CPU slot of this CPU; no other writer.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += pkt.len;
        }
    }
    pass || audited
}
