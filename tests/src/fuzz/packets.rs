//! The packet target: frames through the XDP program with
//! BPF_PROG_TEST_RUN, under `progrun::BASE`. Three kinds of frames, each
//! with what must hold:
//!
//! - well-formed (a TCP SYN or a UDP datagram between the policy's groups
//!   and the world, both families): the verdict is the reference's
//!   (`reference::verdict`, plus the reply of a flow allowed earlier, which
//!   conntrack lets back);
//! - broken (an allowed frame cut inside its IP or transport header, an
//!   IPv4 header length under 5, an IP version that is not the
//!   ethertype's): an IP packet the parser cannot read never passes;
//! - mutated (random byte mutations of either): never XDP_ABORTED.
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use netpol_agent::policy::{merge, parse_str, CompileOptions, Policy};

use super::{mutate, save, Finding, Report, Rng, Target};
use crate::packet::{hex, Packet, TCP_SYN};
use crate::progrun::{small_maps, xdp_action_name, Bench, BASE, XDP_ABORTED, XDP_PASS};
use crate::reference;

const TCP: u8 = 6;
const UDP: u8 = 17;

/// One generated flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
}

impl Flow {
    fn reverse(self) -> Flow {
        Flow {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..self
        }
    }

    fn frame(self) -> Vec<u8> {
        let p = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Packet::ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => Packet::ipv6(s, d),
            _ => unreachable!("one family per flow"),
        };
        match self.proto {
            TCP => p.tcp(self.sport, self.dport, TCP_SYN),
            _ => p.udp(self.sport, self.dport),
        }
        .build()
    }

    /// Bytes of Ethernet, IP and transport headers in `frame()`.
    fn headers_len(self) -> usize {
        let ip = if self.src.is_ipv4() { 20 } else { 40 };
        14 + ip + if self.proto == TCP { 20 } else { 8 }
    }
}

/// An address in BASE's `web` (0), `db` (1), or the world (2).
fn addr(rng: &mut Rng, v6: bool, group: usize) -> IpAddr {
    let host = 1 + rng.below(250) as u8;
    if v6 {
        let prefix: [u16; 2] = match group {
            0 => [0xfd00, 1],
            1 => [0xfd00, 2],
            _ => [0x2001, 0xdb8],
        };
        IpAddr::V6(Ipv6Addr::new(
            prefix[0],
            prefix[1],
            0,
            0,
            0,
            0,
            0,
            u16::from(host),
        ))
    } else {
        let net = match group {
            0 => [10, 0, 1],
            1 => [10, 0, 2],
            _ => [192, 0, 2],
        };
        IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host))
    }
}

fn flow(rng: &mut Rng, allowed_shape: bool) -> Flow {
    let v6 = rng.chance(2);
    let proto = if rng.chance(2) { TCP } else { UDP };
    let (from, to) = if allowed_shape {
        (0, 1)
    } else {
        (rng.below(3), rng.below(3))
    };
    let dport = if allowed_shape {
        if proto == TCP {
            5432
        } else {
            53
        }
    } else {
        [5432, 53, 80, 443, rng.below(65536) as u16][rng.below(5)]
    };
    Flow {
        src: addr(rng, v6, from),
        dst: addr(rng, v6, to),
        proto,
        sport: 1024 + rng.below(64000) as u16,
        dport,
    }
}

/// A frame of `f` the parser cannot read, and how it was broken.
fn broken(rng: &mut Rng, f: Flow) -> (Vec<u8>, String) {
    let mut frame = f.frame();
    match rng.below(3) {
        0 => {
            let cut = 15 + rng.below(f.headers_len() - 15);
            frame.truncate(cut);
            (frame, format!("cut to {cut} bytes"))
        }
        1 if f.src.is_ipv4() => {
            let ihl = rng.below(5) as u8;
            frame[14] = (frame[14] & 0xf0) | ihl;
            (frame, format!("IPv4 header length {ihl}"))
        }
        _ => {
            let want = if f.src.is_ipv4() { 4 } else { 6 };
            let mut v = rng.below(16) as u8;
            if v == want {
                v = (v + 1) % 16;
            }
            frame[14] = (frame[14] & 0x0f) | (v << 4);
            (frame, format!("IP version {v} under ethertype IPv{want}"))
        }
    }
}

/// BASE as the reference reads it.
fn base_policy() -> Policy {
    merge(vec![parse_str("base.yaml", BASE).expect("BASE parses")]).expect("BASE merges")
}

/// Fuzzes the packet parser for `budget`; `None` when not root (skipped;
/// under CI=true `Bench` fails instead).
pub fn run(budget: Duration, seed: u64, crash_dir: &Path) -> Option<Report> {
    let bench = Bench::with(
        "fuzz-packets",
        BASE,
        &small_maps(),
        &CompileOptions::default(),
    )?;
    let policy = base_policy();
    let mut rng = Rng::new(seed);
    let mut allowed: HashSet<Flow> = HashSet::new();
    let mut report = Report::default();
    let mut pool: Vec<Vec<u8>> = super::regressions(Target::Packets)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let started = Instant::now();
    while started.elapsed() < budget {
        report.execs += 1;
        let (frame, check): (Vec<u8>, Check) = match rng.below(10) {
            0..=3 => {
                let f = flow(&mut rng, false);
                let by_policy =
                    reference::verdict(&policy, &[], &[], false, f.src, f.dst, f.proto, f.dport)
                        .is_some();
                let pass = by_policy || allowed.contains(&f.reverse());
                if by_policy {
                    allowed.insert(f);
                }
                (f.frame(), Check::Verdict(pass, format!("{f:?}")))
            }
            4..=6 => {
                let f = flow(&mut rng, true);
                let (frame, how) = broken(&mut rng, f);
                (frame, Check::NeverPass(how))
            }
            _ => {
                let seed_frame = if pool.is_empty() || rng.chance(2) {
                    flow(&mut rng, false).frame()
                } else {
                    pool[rng.below(pool.len())].clone()
                };
                let other = flow(&mut rng, false).frame();
                let mut m = mutate(&mut rng, &seed_frame, &other);
                // The kernel refuses a test run under an Ethernet header.
                m.resize(m.len().max(14), 0);
                m.truncate(1500);
                if pool.len() < 1024 && rng.chance(16) {
                    pool.push(m.clone());
                }
                (m, Check::NotAborted)
            }
        };
        let action = match bench.dp.xdp_test_run_on(&frame, None, 1) {
            Ok((a, _)) => a,
            Err(e) => {
                record(
                    &mut report,
                    crash_dir,
                    "testrun",
                    format!("testrun: the kernel refused the frame: {e:?}"),
                    frame,
                );
                continue;
            }
        };
        let failure = if action == XDP_ABORTED {
            Some(("aborted", "aborted: XDP_ABORTED".to_owned()))
        } else {
            match &check {
                Check::Verdict(pass, what) if (action == XDP_PASS) != *pass => Some((
                    "verdict",
                    format!(
                        "verdict: {what}: {} but the reference says {}",
                        xdp_action_name(action),
                        if *pass { "pass" } else { "drop" }
                    ),
                )),
                Check::NeverPass(how) if action == XDP_PASS => Some((
                    "pass",
                    format!("pass: an IP packet it cannot parse passed ({how})"),
                )),
                _ => None,
            }
        };
        if let Some((kind, detail)) = failure {
            record(&mut report, crash_dir, kind, detail, frame);
        }
    }
    report.elapsed = started.elapsed();
    Some(report)
}

/// Runs committed regression frames: none may make the program abort (what a
/// frame was found for is in its file name; every kind aborts or passes
/// where it must not, and an abort is the one check that needs no flow).
/// `None` when not root.
pub fn replay(frames: &[(std::path::PathBuf, Vec<u8>)]) -> Option<Vec<String>> {
    let bench = Bench::with(
        "fuzz-replay",
        BASE,
        &small_maps(),
        &CompileOptions::default(),
    )?;
    let mut failures = Vec::new();
    for (path, frame) in frames {
        match bench.dp.xdp_test_run_on(frame, None, 1) {
            Ok((XDP_ABORTED, _)) => failures.push(format!("{}: XDP_ABORTED", path.display())),
            Ok(_) => {}
            Err(e) => failures.push(format!("{}: test run refused: {e:?}", path.display())),
        }
    }
    Some(failures)
}

enum Check {
    /// Whether it must pass, and the flow, for the message.
    Verdict(bool, String),
    NeverPass(String),
    NotAborted,
}

fn record(report: &mut Report, crash_dir: &Path, kind: &str, detail: String, frame: Vec<u8>) {
    // One of each kind is enough to act on; the rest only repeat it.
    if report.findings.iter().filter(|f| f.kind == kind).count() >= 3 {
        return;
    }
    let saved = save(crash_dir, Target::Packets, kind, &frame);
    report.findings.push(Finding {
        target: Target::Packets,
        kind: kind.to_owned(),
        detail: format!("{detail}\n{}", hex(&frame)),
        input: frame,
        saved,
    });
}
