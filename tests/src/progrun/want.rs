//! What a frame should get, where it is run, and how counters are shown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use agent_common::reason;

use super::{TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_ABORTED, XDP_DROP, XDP_PASS};

/// What a frame should get: the verdict and the counted reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Pass(u32),
    Drop(u32),
    /// Audit mode: would be dropped for this reason, passes.
    Audit(u32),
}

impl Want {
    pub fn passes(self) -> bool {
        !matches!(self, Want::Drop(_))
    }

    pub fn verdict(self) -> &'static str {
        match self {
            Want::Pass(_) => "pass",
            Want::Drop(_) => "drop",
            Want::Audit(_) => "audit-deny",
        }
    }

    pub fn reason(self) -> &'static str {
        let (Want::Pass(r) | Want::Drop(r) | Want::Audit(r)) = self;
        reason::NAMES[r as usize]
    }
}

/// The program a frame runs through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    /// TCX ingress, the alternative to XDP on interfaces where XDP costs more
    /// than it saves.
    TcIngress,
    /// TCX egress.
    Tc,
}

impl Hook {
    pub fn direction(self) -> &'static str {
        match self {
            Hook::Xdp | Hook::TcIngress => "ingress",
            Hook::Tc => "egress",
        }
    }
}

/// (direction, verdict, reason) -> (packets, bytes).
pub type Counts = BTreeMap<(&'static str, &'static str, &'static str), (u64, u64)>;

pub fn show_counts(c: &Counts) -> String {
    if c.is_empty() {
        return "    (none)\n".into();
    }
    let mut s = String::new();
    for ((dir, verdict, why), (p, b)) in c {
        let _ = writeln!(
            s,
            "    {dir:<8} {verdict:<10} {why:<20} {p:>4} pkts {b:>6} bytes"
        );
    }
    s
}

pub fn xdp_action_name(a: u32) -> String {
    match a {
        XDP_ABORTED => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        3 => "XDP_TX".into(),
        4 => "XDP_REDIRECT".into(),
        n => format!("XDP action {n}"),
    }
}

pub fn tc_action_name(a: i32) -> String {
    match a {
        TC_ACT_UNSPEC => "TC_ACT_UNSPEC".into(),
        0 => "TC_ACT_OK".into(),
        TC_ACT_SHOT => "TC_ACT_SHOT".into(),
        n => format!("TC action {n}"),
    }
}
