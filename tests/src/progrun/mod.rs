//! The harness of the BPF_PROG_TEST_RUN tests: the datapath judged frame by
//! frame, with no interface, no namespace and no bpffs.
//!
//! A [`Bench`] loads its own programs and maps (so tests run in parallel),
//! applies a small inline policy, runs crafted frames (see
//! [`crate::packet`]) through the XDP (ingress) or TC (egress) program, and
//! checks both the program's return value and the exact counter change each
//! frame causes: one packet and its bytes in exactly one (direction, verdict,
//! reason) slot.
//!
//! It lives in the library, not inside one test target, so that every target
//! that runs the datapath's programs on crafted frames (`prog_test_run`,
//! `prog_flow_counters`, `differential`) shares one meaning of the program
//! actions, the small map sizes and the checks.
//!
//! Loading eBPF programs needs root: [`Bench::new`] returns `None` (skip) when
//! not root, and fails under CI=true (see [`crate::privilege`]).

use netpol_agent::datapath::LoadOptions;
use netpol_agent::policy::{compile, merge, parse_str, CompileOptions, Compiled};

mod bench;
mod fam;
mod want;

pub use bench::Bench;
pub use fam::{Fam, BASE, V4, V6};
pub use want::{show_counts, tc_action_name, xdp_action_name, Counts, Hook, Want};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// TC "no verdict": under TCX the next program (or the stack) decides.
pub const TC_ACT_UNSPEC: i32 = -1;
pub const TC_ACT_SHOT: i32 = 2;

/// Smallest frame BPF_PROG_TEST_RUN accepts, for XDP and for skb (TC) programs
/// alike: the kernel's bpf_test_init() (net/bpf/test_run.c) refuses
/// `data_size_in < ETH_HLEN` with EINVAL, so a 13-byte frame never reaches the
/// program and a truncated Ethernet header cannot be tested this way (a truncated
/// VLAN tag can). The skb test run (TC) of Linux 6.18 also refuses, with EINVAL,
/// a frame whose ethertype is IPv4 or IPv6 but which is shorter than the fixed
/// IP header: TC_MIN_IPV4 and TC_MIN_IPV6 bytes. `minimum_frame_length` (in the
/// prog_test_run target) checks all three on the running kernel.
pub const MIN_FRAME: usize = 14;
pub const TC_MIN_IPV4: usize = 14 + 20;
pub const TC_MIN_IPV6: usize = 14 + 40;

/// Map sizes small enough for many datapaths loaded at once (one per test).
pub fn small_maps() -> LoadOptions {
    LoadOptions {
        ct_max: 4096,
        prefix_max: 1024,
        rule_max: 16384,
        frag_max: 1024,
        ..LoadOptions::default()
    }
}

/// `yaml` parsed (as the file `{test}.yaml`), merged and compiled; panics
/// naming the test and the stage that refused it.
pub fn compiled(test: &str, yaml: &str, opts: &CompileOptions) -> Compiled {
    let file = parse_str(&format!("{test}.yaml"), yaml)
        .unwrap_or_else(|e| panic!("{test}: policy does not parse:\n{e}"));
    let policy =
        merge(vec![file]).unwrap_or_else(|e| panic!("{test}: policy does not merge:\n{e}"));
    compile(&policy, opts).unwrap_or_else(|e| panic!("{test}: policy does not compile: {e}"))
}
