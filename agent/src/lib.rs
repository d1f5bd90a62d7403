//! netpol-agent: loads the XDP/TC enforcement programs, compiles policy files
//! into their maps and reports what they decided.
//!
//! Layers, each importing only those listed before it (`cargo xtask lint`
//! checks this):
//! - `policy`: policy files to map contents, in plain Rust (no kernel).
//! - `bpffs`, `host`: the pin directory, and the node (interfaces, link and
//!   address events, the policy directory).
//! - `datapath`: the eBPF object, its maps and links (uses `policy`, `bpffs`).
//! - `telemetry`: counters, flows, events, status and the HTTP endpoint
//!   (reads `datapath`, `bpffs`, `policy`).
//! - `kube`: Namespaces, Pods and NetworkPolicies watched on the API server
//!   (uses `policy`).
//! - `cli`, `commands`, `daemon`: the command line and what each command
//!   does; `daemon` is `run`'s long-lived agent. Nothing imports them.
//! - `config`: `run`'s flags from a configuration file and `NETPOL_*`
//!   environment variables, layered under the command line (uses `cli`,
//!   `policy`).

pub mod bpffs;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod host;
pub mod kube;
pub mod policy;
pub mod telemetry;

/// The eBPF object holding the enforcement programs, built by build.rs.
pub static NETPOL_EBPF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpol"));
/// No-op and sender XDP programs for benchmarks and the traffic generator.
pub static LAB_EBPF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab-progs"));

/// Logged once the programs are attached and the policy is live; tests wait for it.
pub const READY_MARKER: &str = "netpol-agent: enforcing";

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of the embedded eBPF object (`version` prints it, and
/// `/metrics` has it in `netpol_agent_build_info`), computed once.
pub fn ebpf_sha256() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| sha256_hex(NETPOL_EBPF))
}
