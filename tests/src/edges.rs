//! Policy edges as data: start the servers a table of edges needs, exercise
//! every edge in parallel, and describe each one that behaved wrongly.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::lab::{Family, Lab};
use crate::net::{exchange, EchoServer, ExchangeError, Proto, ALLOWED_TIMEOUT, DENIED_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny,
}

/// One directed flow between two lab endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub from: &'static str,
    pub to: &'static str,
    pub family: Family,
    pub proto: Proto,
    pub port: u16,
    pub expect: Expect,
}

impl Edge {
    pub const fn allow(
        from: &'static str,
        to: &'static str,
        family: Family,
        proto: Proto,
        port: u16,
    ) -> Edge {
        Edge {
            from,
            to,
            family,
            proto,
            port,
            expect: Expect::Allow,
        }
    }

    pub const fn deny(
        from: &'static str,
        to: &'static str,
        family: Family,
        proto: Proto,
        port: u16,
    ) -> Edge {
        Edge {
            expect: Expect::Deny,
            ..Edge::allow(from, to, family, proto, port)
        }
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {}/{} ({})",
            self.from, self.to, self.port, self.proto, self.family
        )
    }
}

/// What the edges are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No agent: every edge, allowed or not, must carry data.
    Open,
    /// Agent enforcing: allowed edges carry data, denied ones get no answer.
    Enforced,
}

/// Keeps the echo servers of a set of edges running.
pub struct Servers(#[allow(dead_code)] Vec<EchoServer>);

/// One echo server per distinct destination (endpoint, family, proto, port).
pub fn serve(lab: &Lab, edges: &[Edge]) -> Servers {
    let wanted: BTreeSet<_> = edges
        .iter()
        .map(|e| (e.to, e.family, e.proto, e.port))
        .collect();
    Servers(
        wanted
            .into_iter()
            .map(|(to, family, proto, port)| {
                let ep = lab.ep(to);
                EchoServer::spawn(&ep.ns, proto, ep.sock(family, port))
            })
            .collect(),
    )
}

/// One exchange along `edge`, from the source endpoint's own address.
pub fn check(lab: &Lab, edge: &Edge, timeout: Duration) -> Result<(), ExchangeError> {
    let from = lab.ep(edge.from);
    let to = lab.ep(edge.to);
    exchange(
        &from.ns,
        edge.proto,
        from.ip(edge.family),
        to.sock(edge.family, edge.port),
        timeout,
    )
}

/// Checks every edge at once (so denied edges cost one timeout in total, not
/// one each) and returns a line per edge that did not behave as `mode` says.
pub fn check_all(lab: &Lab, edges: &[Edge], mode: Mode) -> Vec<String> {
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = edges
            .iter()
            .map(|edge| {
                let timeout = match (mode, edge.expect) {
                    (Mode::Enforced, Expect::Deny) => DENIED_TIMEOUT,
                    _ => ALLOWED_TIMEOUT,
                };
                s.spawn(move || check(lab, edge, timeout))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("edge check panicked"))
            .collect()
    });
    edges
        .iter()
        .zip(results)
        .filter_map(|(edge, result)| judge(edge, result, mode))
        .collect()
}

fn judge(edge: &Edge, result: Result<(), ExchangeError>, mode: Mode) -> Option<String> {
    let want_open = mode == Mode::Open || edge.expect == Expect::Allow;
    match (want_open, result) {
        (true, Ok(())) => None,
        (true, Err(e)) => Some(format!("{edge}: should carry data, but {e}")),
        (false, Err(e)) if e.is_timeout() => None,
        (false, Err(e)) => Some(format!(
            "{edge}: should be dropped silently (timeout), but got {e}"
        )),
        (false, Ok(())) => Some(format!("{edge}: should be denied, but data was echoed")),
    }
}

/// Asserts that every edge behaves as it expects under `agent`, printing the
/// failures and the agent's log otherwise; `when` names the moment checked.
pub fn assert_enforced(lab: &Lab, edges: &[Edge], agent: &crate::AgentProcess, when: &str) {
    let failures = check_all(lab, edges, Mode::Enforced);
    assert!(
        failures.is_empty(),
        "{when}: {} of {} edges behaved wrongly:\n{}\n--- agent log ---\n{}",
        failures.len(),
        edges.len(),
        failures.join("\n"),
        agent.log()
    );
}
