//! Differential test: random policies and flow-opening packets, judged three
//! ways, which must agree:
//!
//! - the reference evaluator (`netpol_tests::reference`, written from the
//!   contract in docs/design.md section 2 alone);
//! - `policy::evaluate`, the datapath's lookups done in Rust over the compiled
//!   maps (so a disagreement says whether the compiler or the kernel side is
//!   wrong);
//! - the datapath itself: the XDP program through BPF_PROG_TEST_RUN, and the TC
//!   program on the same frame.
//!
//! Policies are written as YAML and go through the real parser and merge (one
//! file, two files, or two documents in one file), and the parsed `Policy` must
//! equal the one the generator meant. One datapath is reused for every policy,
//! so each `apply` also exercises the diff against the slot's previous contents.
//! Only packets that open flows are sent: TCP SYN and ICMP echo requests (which
//! skip conntrack), other ICMP types (policy only; errors quote no flow, so
//! they are dropped whatever the policy), and UDP, SCTP and other
//! protocols with a 5-tuple never used before, so no conntrack entry can match.
//! A few IPv6 neighbour discovery / MLD packets are sent too: with the
//! builder's hop limit they were routed, so they are dropped whatever the
//! policy (`reference::discovery`).
//! When the datapath allows a packet that creates a conntrack entry, the entry's
//! rule id is read back: it must be the rule `evaluate` names, and that rule must
//! be one the reference says allows the packet (the contract does not say which
//! of several allowing rules a flow is credited to, so it need not be the first).
//!
//! Knobs: NETPOL_DIFF_CASES (policies; default `DEFAULT_CASES`), NETPOL_DIFF_SEED
//! (decimal or 0x-hex), NETPOL_DIFF_PACKETS (per policy), NETPOL_DIFF_CASE (run
//! only that case index). On the first disagreement the case is replayed in a
//! fresh datapath (alone, or after the one or two policies applied before it),
//! shrunk there, and the test panics with a ready-to-paste `#[test]` calling
//! `check_packet` (or `check_packet_after`, with that history) of
//! `regressions.rs`. Paste it into that file and run `cargo fmt`.
//!
//! Needs root; skips with a notice otherwise, and fails under CI=true.
//!
//! Modules: `rng` (seeded random numbers), `addrs` (the address space),
//! `policy` and `policy_gen` (generated policies), `yaml` (their text),
//! `packets` (flow-opening packets), `judges` (the three judges), `harness`
//! (one datapath for the whole run), `shrink` and `report` (what a
//! disagreement becomes), `random_run` (the test), `regressions`, and
//! `workloads` (the same three judges over generated Kubernetes objects,
//! selector groups and NetworkPolicies, against `reference_k8s`).

mod addrs;
mod harness;
mod judges;
mod packets;
mod policy;
mod policy_gen;
mod random_run;
mod regressions;
mod report;
mod rng;
mod shrink;
mod workloads;
mod yaml;

/// Policies per run by default: 13 s here idle, 25 s loaded (debug build, 2
/// vCPUs, Linux 6.18); `cargo xtask test --large` runs 20000.
pub const DEFAULT_CASES: u64 = 2000;
pub const DEFAULT_PACKETS: u64 = 30;
pub const DEFAULT_SEED: u64 = 0x6e65_7470_6f6c_2d31;
