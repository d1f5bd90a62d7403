//! The datapath judged frame by frame through BPF_PROG_TEST_RUN: no interfaces,
//! no namespaces, no bpffs. Each test loads its own programs and maps (so tests
//! run in parallel), applies a small inline policy, runs frames through the XDP
//! (ingress) or TC (egress) program, and checks both the program's return value
//! and the exact counter change each frame causes: one packet and its bytes in
//! exactly one (direction, verdict, reason) slot.
//!
//! The harness is `netpol_tests::progrun`; the tests are grouped by topic, one
//! module each. Needs root (loading eBPF programs); skips with a notice
//! otherwise, and fails under CI=true.

mod audit;
mod conntrack;
mod ct_abuse;
mod egress;
mod fragments;
mod frame_length;
mod icmp;
mod ipv6_ext;
mod l2;
mod malformed;
mod nd;
mod peers;
mod related;
mod reload;
mod spoofing;
mod transport;
mod truncation;
mod verifier;
mod workloads;
