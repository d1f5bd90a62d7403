//! Conntrack expiry and reclaim, and the per-CPU flow cache in front of it.

use std::time::{Duration, Instant};

use agent_common::reason::*;
use netpol_agent::datapath::ct_gc;
use netpol_agent::datapath::{LoadOptions, Timeouts};
use netpol_agent::policy::CompileOptions;
use netpol_tests::packet::{Packet, PROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{small_maps, Bench, BASE, V4, V6};

#[test]
fn conntrack_expiry_and_gc() {
    let load = LoadOptions {
        timeouts: Timeouts {
            udp: Duration::from_secs(1),
            fragment: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..small_maps()
    };
    let test = "conntrack_expiry_and_gc";
    let Some(mut b) = Bench::with(test, BASE, &load, &CompileOptions::default()) else {
        return;
    };
    let start = Instant::now();
    b.xdp(
        "UDP web->db:53",
        &Packet::ip(V4.web, V4.db).udp(55000, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "UDP reply",
        &Packet::ip(V4.db, V4.web).udp(53, 55000),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "IPv6 UDP web->db:53",
        &Packet::ip(V6.web, V6.db).udp(55001, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "IPv6 UDP reply",
        &Packet::ip(V6.db, V6.web).udp(53, 55001),
        Pass(PASS_ESTABLISHED),
    );
    b.xdp(
        "TCP SYN (60 s timeout)",
        &Packet::ip(V4.web, V4.db).tcp(55002, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    let first = V4.fragment(
        Packet::ip(V4.web, V4.db).udp(55003, 53).payload(&[0; 32]),
        0x55,
        0,
        true,
    );
    b.xdp(
        "first fragment (UDP flow + fragment entry)",
        &first,
        Pass(PASS_POLICY),
    );
    b.assert_ct("before expiry", (3, 1));

    // Past the 1 s timeouts of the newest entry, with margin for the coarse
    // clock (one tick): the only wait, bounded.
    let newest = Instant::now();
    assert!(
        newest - start < Duration::from_millis(900),
        "{test}: setting up took {:?}, so the first entries may have expired early",
        newest - start
    );
    std::thread::sleep(Duration::from_millis(1250));

    b.xdp(
        "UDP reply after the timeout",
        &Packet::ip(V4.db, V4.web).udp(53, 55000),
        Drop(DROP_POLICY),
    );
    b.xdp(
        "IPv6 UDP reply after the timeout",
        &Packet::ip(V6.db, V6.web).udp(53, 55001),
        Drop(DROP_POLICY),
    );
    let later = V4.fragment(
        Packet::ip(V4.web, V4.db).proto(PROTO_UDP).payload(&[0; 16]),
        0x55,
        5,
        false,
    );
    b.xdp(
        "later fragment after the fragment timeout",
        &later,
        Drop(DROP_FRAGMENT),
    );
    b.xdp(
        "TCP SYN-ACK (flow still live)",
        &Packet::ip(V4.db, V4.web).tcp(5432, 55002, TCP_SYN | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    b.assert_ct("expired entries stay until collected", (3, 1));

    let cfg = b.dp.config();
    // The sweeper compares against the clock the datapath stamps entries with.
    let t = b.dp.jiffies().expect("reading the datapath clock");
    let removed = ct_gc::collect(b.dp.ebpf_mut(), &cfg, t).expect("ct_gc::collect");
    // Two UDP flows (IPv4, IPv6) and the fragment's UDP flow; the fragment
    // entry.
    b.same("conntrack entries collected", removed.conntrack, 3);
    b.same("fragment entries collected", removed.fragments, 1);
    b.assert_ct("after collect: only the TCP flow", (1, 0));
    let t = b.dp.jiffies().expect("reading the datapath clock");
    let removed = ct_gc::collect(b.dp.ebpf_mut(), &cfg, t).expect("ct_gc::collect");
    b.same(
        "entries collected by a second sweep",
        removed,
        ct_gc::Swept::default(),
    );
    b.xdp(
        "UDP web->db:53 opens a new flow",
        &Packet::ip(V4.web, V4.db).udp(55000, 53),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "its reply",
        &Packet::ip(V4.db, V4.web).udp(53, 55000),
        Pass(PASS_ESTABLISHED),
    );
}

/// The per-CPU flow cache answers two-way flows without conntrack, but must
/// never hide a state change: RST and FIN always reach conntrack, so a reset
/// flow expires on the close timeout even while its packets were cached.
#[test]
fn flow_cache_defers_state_changes_to_conntrack() {
    let load = LoadOptions {
        timeouts: Timeouts {
            tcp_close: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..small_maps()
    };
    let test = "flow_cache_defers_state_changes_to_conntrack";
    let Some(b) = Bench::with(test, BASE, &load, &CompileOptions::default()) else {
        return;
    };
    let (web, db) = (V4.web, V4.db);
    b.xdp(
        "SYN",
        &Packet::ip(web, db).tcp(56100, 5432, TCP_SYN),
        Pass(PASS_POLICY),
    );
    b.xdp(
        "SYN-ACK",
        &Packet::ip(db, web).tcp(5432, 56100, TCP_SYN | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    // Cached from here on, in both directions.
    for i in 0..3 {
        b.xdp(
            &format!("client ACK {i}"),
            &Packet::ip(web, db).tcp(56100, 5432, TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
        b.xdp(
            &format!("server ACK {i}"),
            &Packet::ip(db, web).tcp(5432, 56100, TCP_ACK),
            Pass(PASS_ESTABLISHED),
        );
    }
    b.xdp(
        "client RST",
        &Packet::ip(web, db).tcp(56100, 5432, TCP_RST | TCP_ACK),
        Pass(PASS_ESTABLISHED),
    );
    // Past the 1 s close timeout and the cache's 1 s validity: the server's
    // packet must find the flow gone (the only wait, bounded).
    std::thread::sleep(Duration::from_millis(1300));
    b.xdp(
        "server ACK after the reset flow closed",
        &Packet::ip(db, web).tcp(5432, 56100, TCP_ACK),
        Drop(DROP_POLICY),
    );
}
