//! Command-line interface of `netpol-agent`.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::datapath::Mode;

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/netpol-agent";

#[derive(Parser, Debug)]
#[command(
    name = "netpol-agent",
    version,
    about = "eBPF network policy enforcement agent"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the programs, enforce the policy directory, keep it in sync.
    Run(RunArgs),
    /// Validate a policy directory or file and print what it compiles to
    /// (no privileges or kernel needed).
    Check(CheckArgs),
    /// Print the verdict counters of a running agent (from its pinned maps).
    Stats(StatsArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Interface name or glob to enforce on (repeatable), e.g. `eth0` or `lxc*`.
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// Directory of *.yaml / *.yml policy files.
    #[arg(long)]
    pub policy_dir: PathBuf,
    /// Where maps are pinned in bpffs.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    /// `enforce` drops what the policy does not allow; `audit` only counts it.
    #[arg(long, value_enum, default_value_t = Mode::Enforce)]
    pub mode: Mode,
    /// Apply the policy to traffic from and to the node's own addresses too
    /// (by default the node itself is never cut off).
    #[arg(long)]
    pub enforce_host: bool,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// Seconds between re-reads of the node's own addresses (the `host` group).
    #[arg(long, default_value_t = 5)]
    pub host_refresh_secs: u64,
    /// Seconds between sweeps of expired conntrack entries.
    #[arg(long, default_value_t = 30)]
    pub gc_interval_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct Limits {
    /// Conntrack entries per address family (LRU: the oldest flows are evicted).
    #[arg(long, default_value_t = 262_144)]
    pub ct_max: u32,
    /// CIDR prefixes per address family.
    #[arg(long, default_value_t = 262_144)]
    pub prefix_max: u32,
    /// Compiled rule entries.
    #[arg(long, default_value_t = 1_048_576)]
    pub rule_max: u32,
    /// Fragmented datagrams tracked at once, per address family.
    #[arg(long, default_value_t = 8192)]
    pub frag_max: u32,
}

#[derive(Args, Debug, Clone)]
pub struct TimeoutArgs {
    /// TCP flow idle timeout before the handshake completes, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ct_tcp_syn_secs: u64,
    /// Established TCP flow idle timeout, in seconds.
    #[arg(long, default_value_t = 21_600)]
    pub ct_tcp_established_secs: u64,
    /// TCP flow timeout after FIN in both directions or RST, in seconds.
    #[arg(long, default_value_t = 10)]
    pub ct_tcp_close_secs: u64,
    /// UDP and SCTP flow idle timeout, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ct_udp_secs: u64,
    /// ICMP echo idle timeout, in seconds.
    #[arg(long, default_value_t = 30)]
    pub ct_icmp_secs: u64,
    /// Idle timeout for other protocols, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ct_other_secs: u64,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A policy directory or a single policy file.
    pub path: PathBuf,
    /// Addresses to treat as the node's own (`host`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub host_addr: Vec<std::net::IpAddr>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Pin directory of the running agent.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
