//! netpol-agent: loads the XDP/TC enforcement programs, compiles policy files
//! into their maps and reports what they decided.

pub mod adopt;
pub mod aggregates;
pub mod check;
pub mod cli;
pub mod counting;
pub mod ct_gc;
pub mod datapath;
pub mod events;
pub mod explain;
pub mod flows;
pub mod hostaddrs;
pub mod http;
pub mod ifaces;
pub mod instance;
pub mod linkinfo;
pub mod linkwatch;
pub mod metrics;
pub mod monitor;
pub mod pin;
pub mod pinned;
pub mod policy;
pub mod rule_ids;
pub mod run;
pub mod stats;
pub mod status;
pub mod uninstall;
pub mod watch;

/// The eBPF object holding the enforcement programs, built by build.rs.
pub static NETPOL_EBPF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpol"));
/// No-op and sender XDP programs for benchmarks and the traffic generator.
pub static LAB_EBPF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab-progs"));

/// Logged once the programs are attached and the policy is live; tests wait for it.
pub const READY_MARKER: &str = "netpol-agent: enforcing";
