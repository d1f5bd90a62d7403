//! How much of the kernel verifier's budget each loaded program used. The
//! verifier walks every path through a program and refuses one that takes
//! more than `VERIFIER_LIMIT` instructions; another kernel's verifier may
//! walk the same program differently, so the agent reports its margin at
//! start-up and a test keeps it wide.
use agent_common::prog_names;

use super::Datapath;

/// Instructions the kernel's verifier walks through one program at most
/// (BPF_COMPLEXITY_LIMIT_INSNS) before it refuses it.
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// The programs the datapath attaches, in the order `load` loads them.
pub const ATTACHED_PROGRAMS: [&str; 3] = [prog_names::XDP, prog_names::TC, prog_names::TC_INGRESS];

/// One program's walk through the verifier.
#[derive(Debug, Clone, Copy)]
pub struct VerifierWork {
    pub program: &'static str,
    /// Instructions the verifier walked; `None` when the kernel does not say
    /// (before Linux 5.16).
    pub instructions: Option<u32>,
}

impl VerifierWork {
    /// The share of `VERIFIER_LIMIT` used, in percent.
    pub fn percent(&self) -> Option<f64> {
        self.instructions
            .map(|n| 100.0 * f64::from(n) / f64::from(VERIFIER_LIMIT))
    }
}

impl Datapath {
    /// The verifier's work for each attached program, as the kernel reports it.
    pub fn verifier_work(&self) -> Vec<VerifierWork> {
        ATTACHED_PROGRAMS
            .iter()
            .map(|&program| VerifierWork {
                program,
                instructions: self
                    .ebpf
                    .program(program)
                    .and_then(|p| p.info().ok())
                    .and_then(|i| i.verified_instruction_count()),
            })
            .collect()
    }
}
