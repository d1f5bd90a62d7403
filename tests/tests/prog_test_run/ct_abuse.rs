//! Conntrack under abuse: a flow picked up mid-stream keeps the handshake
//! timeout until a packet of the other direction is seen, and each source
//! address may create new entries only at its quota's rate (`ct-quota`), so
//! one workload cannot fill the shared table and evict everyone's flows.

use std::time::{Duration, Instant};

use agent_common::reason::*;
use netpol_agent::datapath::{LoadOptions, Timeouts};
use netpol_agent::policy::CompileOptions;
use netpol_tests::packet::{Packet, TCP_ACK, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{small_maps, Bench, BASE, V4, V6};

#[test]
fn picked_up_flow_keeps_the_handshake_timeout_until_answered() {
    let load = LoadOptions {
        timeouts: Timeouts {
            tcp_syn: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..small_maps()
    };
    let test = "picked_up_flow_keeps_the_handshake_timeout_until_answered";
    let Some(b) = Bench::with(test, BASE, &load, &CompileOptions::default()) else {
        return;
    };
    let start = Instant::now();
    for f in [V4, V6] {
        let n = f.name;
        b.xdp(
            &format!("{n}: bare ACK with no flow (picked up)"),
            &Packet::ip(f.web, f.db).tcp(45000, 5432, TCP_ACK),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{n}: another picked-up flow"),
            &Packet::ip(f.web, f.db).tcp(45001, 5432, TCP_ACK),
            Pass(PASS_POLICY),
        );
        b.xdp(
            &format!("{n}: its peer answers"),
            &Packet::ip(f.db, f.web).tcp(5432, 45001, TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
    }
    let newest = Instant::now();
    assert!(
        newest - start < Duration::from_millis(900),
        "{test}: setting up took {:?}, so the first entries may have expired early",
        newest - start
    );
    // Past the 1 s handshake timeout, with margin for the coarse clock.
    std::thread::sleep(Duration::from_millis(1250));
    for f in [V4, V6] {
        let n = f.name;
        // Nobody ever answered the first: it was one bare ACK, and its entry
        // is gone (before, it lived for the established timeout, 6 hours).
        b.xdp(
            &format!("{n}: reply to the unanswered pickup, after 1 s"),
            &Packet::ip(f.db, f.web).tcp(5432, 45000, TCP_ACK),
            Drop(DROP_POLICY),
        );
        b.xdp(
            &format!("{n}: the answered pickup is established"),
            &Packet::ip(f.db, f.web).tcp(5432, 45001, TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
    }
}

fn quota(rate: u32, burst: u32) -> LoadOptions {
    LoadOptions {
        ct_source_rate: rate,
        ct_source_burst: burst,
        ..small_maps()
    }
}

#[test]
fn new_flows_are_limited_per_source() {
    let test = "new_flows_are_limited_per_source";
    // One new entry per second, five at once: the test sends its frames
    // well within a second.
    let Some(b) = Bench::with(test, BASE, &quota(1, 5), &CompileOptions::default()) else {
        return;
    };
    for f in [V4, V6] {
        let n = f.name;
        for port in 0..5 {
            b.xdp(
                &format!("{n}: new flow {port} of web's five"),
                &Packet::ip(f.web, f.db).tcp(46000 + port, 5432, TCP_SYN),
                Pass(PASS_POLICY),
            );
        }
        b.xdp(
            &format!("{n}: web's sixth SYN"),
            &Packet::ip(f.web, f.db).tcp(46005, 5432, TCP_SYN),
            Drop(DROP_CT_QUOTA),
        );
        b.xdp(
            &format!("{n}: web's bare ACK with no flow"),
            &Packet::ip(f.web, f.db).tcp(46006, 5432, TCP_ACK),
            Drop(DROP_CT_QUOTA),
        );
        b.xdp(
            &format!("{n}: web's new UDP flow"),
            &Packet::ip(f.web, f.db).udp(46007, 53),
            Drop(DROP_CT_QUOTA),
        );
        b.xdp(
            &format!("{n}: web's denied SYN is judged by policy first"),
            &Packet::ip(f.web, f.db).tcp(46008, 5433, TCP_SYN),
            Drop(DROP_POLICY),
        );
        // Its flows carry on, both ways, and other sources are not limited.
        b.xdp(
            &format!("{n}: reply of one of web's flows"),
            &Packet::ip(f.db, f.web).tcp(5432, 46000, TCP_SYN | TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
        b.xdp(
            &format!("{n}: web's established flow"),
            &Packet::ip(f.web, f.db).tcp(46000, 5432, TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
        b.xdp(
            &format!("{n}: another pod's new flow"),
            &Packet::ip(f.web2, f.db).tcp(46000, 5432, TCP_SYN),
            Pass(PASS_POLICY),
        );
        b.tc(
            &format!("{n}: web's sixth SYN on egress"),
            &Packet::ip(f.web, f.db).tcp(46009, 5432, TCP_SYN),
            Drop(DROP_CT_QUOTA),
        );
    }
    b.assert_ct("five flows of web and one of web2 per family", (6, 6));
}

#[test]
fn the_quota_refills_and_can_be_turned_off() {
    let test = "the_quota_refills_and_can_be_turned_off";
    let Some(b) = Bench::with(test, BASE, &quota(2, 1), &CompileOptions::default()) else {
        return;
    };
    let syn = |sport| Packet::ip(V4.web, V4.db).tcp(sport, 5432, TCP_SYN);
    b.xdp(
        "the one new flow of the burst",
        &syn(47000),
        Pass(PASS_POLICY),
    );
    b.xdp("over the quota", &syn(47001), Drop(DROP_CT_QUOTA));
    // Two per second: one token back within half a second and a tick.
    std::thread::sleep(Duration::from_millis(600));
    b.xdp("a token later", &syn(47002), Pass(PASS_POLICY));
    drop(b);
    let Some(b) = Bench::with(
        "the_quota_can_be_turned_off",
        BASE,
        &quota(0, 1),
        &CompileOptions::default(),
    ) else {
        return;
    };
    for sport in 0..20 {
        b.xdp(
            &format!("new flow {sport} without a quota"),
            &syn(48000 + sport),
            Pass(PASS_POLICY),
        );
    }
}
