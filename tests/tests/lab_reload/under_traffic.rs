//! `reload_under_traffic`: 200 swaps between A and B under traffic.

use std::io;
use std::net::{IpAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netpol_tests::Family::V4;
use netpol_tests::{
    require_root, tcp_exchange, udp_exchange, AgentProcess, Endpoint, Lab, UdpEcho, ALLOWED_TIMEOUT,
};

use crate::agent::{
    counters, delta, enforced_lines, latest_generation, reload, reload_errors, settled_counters,
    show, tail, Outcome,
};
use crate::policies::{assert_valid, variant_a, variant_b, PolicyDir};
use crate::sockets::{connect_from, tcp_info, Echo};
use crate::traffic::{steady_loop, DeniedReport, ShortReport, StopOnDrop};
use crate::{
    AFTER_PROBE, DENIED_WAIT, GAPS_MS, SHORT_PACE, STEADY_SLOW, STEADY_TIMEOUT, SWAPS,
    SWAP_PHASE_BUDGET,
};

#[test]
fn reload_under_traffic() {
    if !require_root() {
        return;
    }
    let t_start = Instant::now();
    let a = variant_a();
    let b = variant_b(&a);
    assert_valid(&a);
    assert_valid(&b);
    let dir = PolicyDir::new("traffic");
    dir.install(&a.files);

    let lab = Lab::localplus();
    let (gateway, ledger, wallet) = (lab.ep("gateway"), lab.ep("ledger-a"), lab.ep("wallet"));
    let (world, coredns) = (lab.ep("world"), lab.ep("coredns"));
    let (prometheus, merchant) = (lab.ep("prometheus"), lab.ep("merchant"));
    let ledger_http = SocketAddrV4::new(ledger.v4, 8080);
    let wallet_grpc = SocketAddrV4::new(wallet.v4, 50051);
    // Keeps the server side of the steady flow (from the gateway) for tcp_info.
    let ledger_srv = Echo::spawn(&ledger.ns, ledger_http.into(), Some(IpAddr::V4(gateway.v4)));
    let wallet_srv = Echo::spawn(&wallet.ns, wallet_grpc.into(), None);
    let _dns = UdpEcho::spawn(&coredns.ns, coredns.sock(V4, 53));

    let mut agent = AgentProcess::spawn(&lab, &dir.path, &[]);
    let t_ready = t_start.elapsed();
    let gen_start = latest_generation(&agent.log());
    let enforced_start = enforced_lines(&agent.log());
    let (before, settle_drops) = settled_counters(&agent);

    // The steady flow is opened under A and must live through every swap.
    let mut steady = connect_from(&gateway.ns, gateway.v4, ledger_http, STEADY_TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "steady flow gateway -> {ledger_http}: cannot connect: {e}\n--- agent log ---\n{}",
                agent.log()
            )
        });

    // Edges that tell A and B apart, probed as swaps happen: the one allowed
    // only by the target variant must work as soon as its generation is
    // logged; the other one must be dropped.
    let only_a = (prometheus, ledger_http);
    let only_b = (merchant, wallet_grpc);
    let probe = |(from, to): (&Endpoint, SocketAddrV4), timeout| {
        tcp_exchange(&from.ns, IpAddr::V4(from.v4), to.into(), timeout)
    };

    let stop = AtomicBool::new(false);
    let mut probe_failures: Vec<String> = Vec::new();
    let mut reload_failure: Option<String> = None;
    let mut denied_probes = 0u64;
    let mut allowed_probes = 0u64;
    let mut swaps_done = 0u32;
    let mut reload_times: Vec<Duration> = Vec::new();
    let swap_phase = Instant::now();

    let (steady_report, short_tcp, short_udp, denied) = std::thread::scope(|s| {
        let steady_h = s.spawn(|| steady_loop(&mut steady, &stop));
        let short_tcp_h = s.spawn(|| {
            let mut r = ShortReport::default();
            while !stop.load(Ordering::Relaxed) {
                let res = tcp_exchange(
                    &ledger.ns,
                    IpAddr::V4(ledger.v4),
                    wallet_grpc.into(),
                    ALLOWED_TIMEOUT,
                );
                r.record("ledger-a -> wallet 50051/tcp", res);
                std::thread::sleep(SHORT_PACE);
            }
            r
        });
        let short_udp_h = s.spawn(|| {
            let mut r = ShortReport::default();
            while !stop.load(Ordering::Relaxed) {
                let res = udp_exchange(
                    &ledger.ns,
                    IpAddr::V4(ledger.v4),
                    coredns.sock(V4, 53),
                    ALLOWED_TIMEOUT,
                );
                r.record("ledger-a -> coredns 53/udp", res);
                std::thread::sleep(SHORT_PACE);
            }
            r
        });
        let denied_h = s.spawn(|| {
            let mut r = DeniedReport::default();
            while !stop.load(Ordering::Relaxed) {
                let res = tcp_exchange(
                    &world.ns,
                    IpAddr::V4(world.v4),
                    ledger_http.into(),
                    DENIED_WAIT,
                );
                r.record("world -> ledger-a 8080/tcp", res);
            }
            r
        });

        let _stop_guard = StopOnDrop(&stop);
        // Let every generator get going under A first.
        std::thread::sleep(Duration::from_millis(200));
        let mut gen = gen_start;
        for i in 1..=SWAPS {
            if swap_phase.elapsed() > SWAP_PHASE_BUDGET {
                reload_failure = Some(format!(
                    "swap phase over its {SWAP_PHASE_BUDGET:?} budget after {swaps_done} swaps"
                ));
                break;
            }
            let (target, here, gone) = if i % 2 == 1 {
                (&b, only_b, only_a)
            } else {
                (&a, only_a, only_b)
            };
            dir.install(&target.files);
            match reload(&mut agent) {
                Ok((Outcome::Enforced(g), t)) if g > gen => {
                    gen = g;
                    reload_times.push(t);
                }
                Ok((outcome, _)) => {
                    reload_failure = Some(format!(
                        "swap {i} (to {}), after generation {gen}: {outcome:?}",
                        target.name
                    ));
                    break;
                }
                Err(e) => {
                    reload_failure = Some(format!("swap {i} (to {}): {e}", target.name));
                    break;
                }
            }
            swaps_done = i;
            let mut gap = Duration::from_millis(GAPS_MS[i as usize % GAPS_MS.len()]);
            if i % 3 != 0 {
                allowed_probes += 1;
                if let Err(e) = probe(here, ALLOWED_TIMEOUT) {
                    probe_failures.push(format!(
                        "swap {i}: generation {gen} ({}): {} -> {} should be allowed: {e}",
                        target.name, here.0.name, here.1
                    ));
                }
                gap = gap.max(AFTER_PROBE);
            }
            if i <= 2 || i % 25 == 0 {
                denied_probes += 1;
                match probe(gone, DENIED_WAIT) {
                    Err(e) if e.is_timeout() => {}
                    other => probe_failures.push(format!(
                        "swap {i}: generation {gen} ({}): {} -> {} should be dropped, got {}",
                        target.name,
                        gone.0.name,
                        gone.1,
                        match other {
                            Ok(()) => "data echoed".to_string(),
                            Err(e) => e.to_string(),
                        }
                    )),
                }
            }
            std::thread::sleep(gap);
        }
        // Traffic goes on briefly under the last policy, then stops.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        (
            steady_h.join().expect("steady thread panicked"),
            short_tcp_h.join().expect("short tcp thread panicked"),
            short_udp_h.join().expect("short udp thread panicked"),
            denied_h.join().expect("denied thread panicked"),
        )
    });
    let swap_time = swap_phase.elapsed();

    let after = counters(&agent);
    let diff = delta(&before, &after);
    let client_info = tcp_info(&steady);
    let server_info = ledger_srv.kept_info();
    let log = agent.log();
    let reloads = enforced_lines(&log) - enforced_start;
    let by_inotify = log
        .lines()
        .filter(|l| l.contains("changed: reloading"))
        .count();
    let errors: Vec<String> = reload_errors(&log).into_iter().map(String::from).collect();
    let world_accepted = ledger_srv.peers_from(IpAddr::V4(world.v4));
    drop(steady);

    let drops_by_reason = |reason: &str| -> u64 {
        diff.iter()
            .filter(|((_, verdict, r), _)| verdict != "pass" && r == reason)
            .map(|(_, n)| n)
            .sum()
    };
    let other_drops: u64 = diff
        .iter()
        .filter(|((_, verdict, r), _)| verdict != "pass" && r != "policy-denied")
        .map(|(_, n)| n)
        .sum();
    let policy_denied = drops_by_reason("policy-denied");
    let revoked = drops_by_reason("revoked");
    // One SYN per denied attempt (each gives up before the SYN is retried).
    let expected_denied = denied.attempts + denied_probes;
    let retrans = |i: &io::Result<libc::tcp_info>| match i {
        Ok(i) => format!("{} (lost {})", i.tcpi_total_retrans, i.tcpi_lost),
        Err(e) => format!("unknown ({e})"),
    };
    let server_retrans: Vec<String> = server_info.iter().map(retrans).collect();
    let rt_max = reload_times.iter().max().copied().unwrap_or_default();
    let rt_mean = if reload_times.is_empty() {
        Duration::ZERO
    } else {
        reload_times.iter().sum::<Duration>() / reload_times.len() as u32
    };

    let report = format!(
        "reload_under_traffic: {swaps_done}/{SWAPS} swaps in {swap_time:.2?} \
         (agent ready after {t_ready:.2?}; total {:.2?})\n\
         successful reloads logged: {reloads} ({} after SIGHUP; {by_inotify} reloads \
         triggered by inotify), generation {gen_start} -> {}, reload errors: {}\n\
         reload latency (SIGHUP -> log): mean {rt_mean:.2?}, max {rt_max:.2?}\n\
         steady gateway -> ledger-a:8080: {} messages, max rtt {:.2?}, {} over {STEADY_SLOW:?}, \
         error: {:?}\n\
         steady retransmissions: client {}, server {:?}\n\
         short ledger-a -> wallet 50051/tcp: {} ok, {} failed {:?}\n\
         short ledger-a -> coredns 53/udp: {} ok, {} failed {:?}\n\
         denied world -> ledger-a 8080/tcp: {} attempts, {} silent, {} succeeded, {} answered {:?}; \
         accepted by the server: {world_accepted}\n\
         variant probes: {allowed_probes} allowed, {denied_probes} denied, failures: {:#?}\n\
         drops: policy-denied {policy_denied} (expected {expected_denied} = {} attempts + \
         {denied_probes} probes), revoked {revoked}, other non-policy drops {other_drops}\n\
         (drops while the fresh lab settled, before counting: {settle_drops})\n\
         counter deltas:\n{}",
        t_start.elapsed(),
        reload_times.len(),
        latest_generation(&log),
        errors.len(),
        steady_report.messages,
        steady_report.max_rtt,
        steady_report.slow,
        steady_report.error,
        retrans(&client_info),
        server_retrans,
        short_tcp.ok,
        short_tcp.failed,
        short_tcp.first_failures,
        short_udp.ok,
        short_udp.failed,
        short_udp.first_failures,
        denied.attempts,
        denied.silent,
        denied.succeeded,
        denied.answered,
        denied.first_bad,
        probe_failures,
        denied.attempts,
        show(&diff),
    );
    println!("{report}");

    let mut problems = Vec::new();
    if let Some(f) = &reload_failure {
        problems.push(f.clone());
    }
    if swaps_done != SWAPS {
        problems.push(format!("only {swaps_done} of {SWAPS} swaps done"));
    }
    if reload_times.len() != SWAPS as usize || reloads < SWAPS as usize {
        problems.push(format!(
            "{} SIGHUP reloads enforced ({reloads} successful reloads logged in all), \
             {SWAPS} expected",
            reload_times.len()
        ));
    }
    if !errors.is_empty() {
        problems.push(format!("reload errors logged:\n{}", errors.join("\n")));
    }
    if let Some(e) = &steady_report.error {
        problems.push(format!(
            "steady flow broke after {} messages: {e}",
            steady_report.messages
        ));
    }
    if steady_report.messages == 0 {
        problems.push("steady flow exchanged no message".into());
    }
    if short_tcp.failed > 0 || short_tcp.ok == 0 {
        problems.push(format!(
            "allowed ledger-a -> wallet 50051/tcp: {} failed, {} ok",
            short_tcp.failed, short_tcp.ok
        ));
    }
    if short_udp.failed > 0 || short_udp.ok == 0 {
        problems.push(format!(
            "allowed ledger-a -> coredns 53/udp: {} failed, {} ok",
            short_udp.failed, short_udp.ok
        ));
    }
    if denied.succeeded > 0 || denied.answered > 0 || denied.attempts == 0 || world_accepted > 0 {
        problems.push(format!(
            "denied world -> ledger-a 8080/tcp: {} succeeded, {} answered, {} attempts, \
             {world_accepted} accepted by the server",
            denied.succeeded, denied.answered, denied.attempts
        ));
    }
    if !probe_failures.is_empty() {
        problems.push(format!("{} variant probes failed", probe_failures.len()));
    }
    if revoked > 0 {
        problems.push(format!(
            "{revoked} packets dropped as revoked: no flow of this test loses its rule"
        ));
    }
    if other_drops > 0 {
        problems.push(format!(
            "{other_drops} packets dropped for reasons other than policy"
        ));
    }
    if policy_denied != expected_denied {
        problems.push(format!(
            "{policy_denied} packets dropped by policy, expected exactly {expected_denied} \
             (one SYN per denied attempt): an allowed packet was dropped, or a denied \
             SYN was let through"
        ));
    }
    let lost = |i: &io::Result<libc::tcp_info>| i.as_ref().map_or(0, |i| i.tcpi_total_retrans);
    if lost(&client_info) > 0 || server_info.iter().any(|i| lost(i) > 0) {
        problems.push(format!(
            "the steady flow retransmitted (client {}, server {:?}): a segment was lost",
            retrans(&client_info),
            server_retrans
        ));
    }
    if server_info.len() != 1 {
        problems.push(format!(
            "expected exactly one steady connection at the server, found {}",
            server_info.len()
        ));
    }
    assert!(
        problems.is_empty(),
        "reload under traffic failed:\n- {}\n\n{report}\n--- agent log (last 60 lines) ---\n{}",
        problems.join("\n- "),
        tail(&log, 60)
    );
    drop(wallet_srv);
}
