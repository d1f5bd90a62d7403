//! The agent under test: SIGHUP, what its log says about reloads, and its
//! drop counters.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use netpol_tests::AgentProcess;

use crate::RELOAD_WAIT;

fn sighup(agent: &AgentProcess) {
    // SAFETY: signalling our own, unreaped child.
    let rc = unsafe { libc::kill(agent.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(
        rc,
        0,
        "kill -HUP {}: {}",
        agent.pid(),
        io::Error::last_os_error()
    );
}

/// The numbers N of every "policy generation N" in the log (the ready line
/// and each "policy generation N enforced").
fn generations(log: &str) -> Vec<u32> {
    let key = "policy generation ";
    log.match_indices(key)
        .filter_map(|(i, _)| {
            let rest = &log[i + key.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

pub fn latest_generation(log: &str) -> u32 {
    generations(log)
        .into_iter()
        .max()
        .unwrap_or_else(|| panic!("no policy generation in the agent log:\n{log}"))
}

/// Lines logging a successful reload.
pub fn enforced_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("policy generation ") && l.trim_end().ends_with(" enforced"))
        .count()
}

pub fn reload_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("reload rejected") || l.contains("reload failed"))
        .collect()
}

/// What the reload triggered by one SIGHUP did.
#[derive(Debug)]
pub enum Outcome {
    /// "policy generation N enforced".
    Enforced(u32),
    /// "reload rejected ..." or "reload failed ...", with the lines after it
    /// (an error may span several).
    Refused(String),
}

/// Sends SIGHUP and waits (bounded) for the outcome of the reload it caused:
/// the first outcome line after the agent's next "SIGHUP: reloading" line.
/// The agent also reloads on inotify events; tying the outcome to the SIGHUP
/// line keeps such extra reloads from passing for this one.
pub fn reload(agent: &mut AgentProcess) -> Result<(Outcome, Duration), String> {
    let skip = agent.log().lines().count();
    let start = Instant::now();
    sighup(agent);
    loop {
        let log = agent.log();
        let new: Vec<&str> = log.lines().skip(skip).collect();
        if let Some(at) = new.iter().position(|l| l.contains("SIGHUP: reloading")) {
            for (i, l) in new.iter().enumerate().skip(at + 1) {
                if l.contains("reload rejected") || l.contains("reload failed") {
                    return Ok((Outcome::Refused(new[i..].join("\n")), start.elapsed()));
                }
                if l.trim_end().ends_with(" enforced") {
                    if let Some(&gen) = generations(l).first() {
                        return Ok((Outcome::Enforced(gen), start.elapsed()));
                    }
                }
            }
        }
        if !agent.is_running() {
            return Err(format!("agent exited after SIGHUP:\n{}", new.join("\n")));
        }
        if start.elapsed() > RELOAD_WAIT {
            return Err(format!(
                "no reload outcome within {RELOAD_WAIT:?} of SIGHUP; log since:\n{}",
                new.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

type Counters = BTreeMap<(String, String, String), u64>;

/// `netpol-agent stats --json`: packets by (traffic, verdict, reason).
pub fn counters(agent: &AgentProcess) -> Counters {
    let rows = netpol_tests::observe::cli_json(agent, &["stats", "--json"]);
    let rows = rows
        .as_array()
        .expect("stats --json output is a JSON array");
    rows.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (
                (s("traffic"), s("verdict"), s("reason")),
                r["packets"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn drop_total(c: &Counters) -> u64 {
    c.iter()
        .filter(|((_, verdict, _), _)| verdict != "pass")
        .map(|(_, n)| n)
        .sum()
}

/// Waits (bounded) until the drop counters have not moved for `QUIET`, and
/// returns the counters then, with how many drops the wait saw. A fresh lab's
/// interfaces send MLD reports (ICMPv6 143 to ff02::16, retransmitted up to a
/// second later) that the policy drops; they must not be charged to a reload.
pub fn settled_counters(agent: &AgentProcess) -> (Counters, u64) {
    const QUIET: Duration = Duration::from_millis(1500);
    const BOUND: Duration = Duration::from_secs(6);
    let start = Instant::now();
    let first = counters(agent);
    let mut last = first.clone();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < QUIET && start.elapsed() < BOUND {
        std::thread::sleep(Duration::from_millis(100));
        let now = counters(agent);
        if drop_total(&now) != drop_total(&last) {
            quiet_since = Instant::now();
        }
        last = now;
    }
    let seen = drop_total(&last) - drop_total(&first);
    (last, seen)
}

pub fn delta(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

pub fn show(c: &Counters) -> String {
    c.iter()
        .map(|((dir, verdict, reason), n)| format!("  {dir:<8} {verdict:<6} {reason:<20} {n}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
