//! netpol-agent: loads the XDP/TC enforcement programs, compiles policy files
//! into their maps and reports what they decided.

/// The eBPF object holding the enforcement programs, built by build.rs.
pub static NETPOL_EBPF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpol"));
/// No-op and sender XDP programs for benchmarks and the traffic generator.
pub static LAB_EBPF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab-progs"));
