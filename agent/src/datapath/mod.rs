//! The kernel side as userspace sees it: load the eBPF object, size its maps,
//! swap compiled policy in, attach to interfaces, read counters.
//!
//! - `options`: what `run` asks for (mode, timeouts, map sizes, counting).
//! - `load`: the object, its maps sized and adopted from earlier pins.
//! - `slots`: the two policy slots and the atomic swap between them.
//! - `attach`: the ingress link (XDP or TCX) and the TCX egress link of each
//!   interface, adopted or new, pinned.
//! - `clock`, `ct_gc`: the kernel's jiffies and the conntrack sweeper.
//! - `counters`, `rule_names`, `rule_ids`: verdict counters and the rule ids
//!   they are kept by, stable across reloads.
//! - `sources`: the `SOURCES` map (anti-spoofing): interface roles and the
//!   addresses each pod interface owns.
//! - `test_run`: BPF_PROG_TEST_RUN for tests and benchmarks.
//! - `verifier`: how much of the verifier's budget each program used.
//! - `error`, `handles`: typed errors and typed access to maps and programs.
mod attach;
mod clock;
mod counters;
pub mod ct_gc;
mod error;
mod handles;
mod load;
mod options;
mod rule_ids;
mod rule_names;
mod slots;
mod sources;
mod test_run;
mod verifier;

pub use attach::Attachment;
pub use attach::IngressLink;
pub use counters::{fold_rule_counters, note_gc_removed, read_counters, sum_counters, CounterRow};
pub use error::DatapathError;
pub use load::Adoption;
pub use options::{
    CountingOptions, IngressHook, IngressPlan, LoadOptions, Mode, Timeouts,
    DEFAULT_CT_SOURCE_BURST, DEFAULT_CT_SOURCE_RATE, DEFAULT_DENIED_FLOW_BURST,
    DEFAULT_DENIED_FLOW_RATE,
};
pub use rule_ids::StableRuleIds;
pub use rule_names::{publish_rule_names, rule_names, RuleInfo};
pub use slots::{ApplyStats, HOST_HASH_MIN};
pub use sources::{source_addr, IfaceRole, SourcePlan, SourceSync};
pub use verifier::{VerifierWork, ATTACHED_PROGRAMS, VERIFIER_LIMIT};

use std::path::PathBuf;

use agent_common::Config;
use aya::Ebpf;

use crate::bpffs::{PinLayout, Repin};
use attach::IfaceLinks;
use slots::SlotContents;

pub struct Datapath {
    ebpf: Ebpf,
    slots: [SlotContents; 2],
    /// A slot whose write failed midway: its map contents are unknown, so the
    /// next write clears it first instead of diffing.
    dirty: [bool; 2],
    config: Config,
    links: std::collections::BTreeMap<String, IfaceLinks>,
    pins: Option<PinLayout>,
    /// Maps created beside a pinned one they replace; re-pinned by `commit_pins`.
    repins: Vec<Repin>,
    foreign: Vec<PathBuf>,
    host_hash_min: usize,
    /// What this agent wrote to `SOURCE_FILTER` (empty: nothing yet; the
    /// first sync writes every word).
    source_filter: Vec<u64>,
}

impl Datapath {
    pub fn config(&self) -> Config {
        self.config
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}
