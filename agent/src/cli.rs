//! Command-line interface of `netpol-agent`, and how its outcomes map to exit
//! codes (kept here, in the library, so they are tested).
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::datapath::{
    CountingOptions, IngressHook, Mode, DEFAULT_CT_SOURCE_BURST, DEFAULT_CT_SOURCE_RATE,
    DEFAULT_DENIED_FLOW_BURST, DEFAULT_DENIED_FLOW_RATE,
};
use crate::policy::{self, CapacityError, CompileError, LockoutRefused, PolicyErrors};
use crate::telemetry::{
    flows::FlowFilter,
    http::{DEFAULT_LISTEN, DEFAULT_SOCKET},
};

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/netpol-agent";
/// Where `run` keeps the last good policy on the node's disk.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/netpol-agent";
/// The taint a node registers with so that no pod lands on it before the
/// agent enforces; `run --remove-taint` removes it.
pub const NOT_READY_TAINT: &str = "netpol-agent.io/agent-not-ready";
pub const DEFAULT_PREFIX_MAX: u32 = 262_144;
pub const DEFAULT_RULE_MAX: u32 = 1_048_576;

/// Success; for `explain`, the packet is allowed.
pub const EXIT_OK: u8 = 0;
/// A runtime error: kernel, interfaces, bpffs, ... (policy files that cannot
/// be read are reported as `PolicyErrors`, so they exit with 2).
pub const EXIT_RUNTIME: u8 = 1;
/// An invalid policy (or one that does not fit the maps, or that `run` refuses
/// as a lockout; for `check`, anything `run` would refuse), or invalid usage
/// (clap also exits with 2).
pub const EXIT_INVALID: u8 = 2;
/// `explain`: the packet is denied.
pub const EXIT_DENIED: u8 = 3;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success; for explain: the packet is allowed
  1  runtime error (kernel, interfaces, bpffs, signals, no agent answering)
  2  invalid or unreadable policy (each error printed on its own line as
     FILE:LINE:COLUMN: FIELD: MESSAGE), a policy too big for the maps, a
     lockout run refuses (check: whatever run would refuse), or invalid usage
  3  explain: the packet is denied";

/// `--version`: the version and the git revision it was built from (`-V`
/// prints the version alone; `netpol-agent version` says everything).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("NETPOL_GIT_REVISION"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "netpol-agent",
    version,
    long_version = LONG_VERSION,
    about = "eBPF network policy enforcement agent",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Built once per process and matched once: its size costs nothing, and
// boxing `RunArgs` would only add indirection to every use of it.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the programs, enforce the policy directory, keep it in sync.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Validate a policy directory or file and print what it compiles to
    /// (no privileges or kernel needed); exits with 2 whenever `run` would
    /// refuse it with the same flags.
    #[command(after_help = EXIT_CODES_HELP)]
    Check(CheckArgs),
    /// Say whether the policy allows a packet opening a flow, every rule that
    /// allows it, or the rules that nearly did (no privileges or kernel needed).
    #[command(after_help = EXIT_CODES_HELP)]
    Explain(ExplainArgs),
    /// Print the verdict counters of a running agent by direction, verdict,
    /// reason and rule, and its map fill (from its pinned maps).
    Stats(StatsArgs),
    /// Print the per-flow verdict counters of a running agent (from its
    /// pinned maps), busiest first.
    Flows(FlowsArgs),
    /// Follow a running agent's verdict events (new denied flows, and new
    /// allowed flows with --allowed), one line each.
    Monitor(MonitorArgs),
    /// Print a running agent's state: mode, readiness, policy generation,
    /// reloads and the last reload error, attached interfaces.
    Status(StatusArgs),
    /// Remove every program, link and map the agent pinned: enforcement stops
    /// (stop the agent first; SIGTERM alone leaves enforcement in place).
    Uninstall(UninstallArgs),
    /// Print the version, the git revision and toolchain of the build, the
    /// hash of the embedded eBPF object and what this kernel offers.
    Version(VersionArgs),
    /// Print a shell completion script: `source <(netpol-agent completion bash)`.
    Completion(CompletionArgs),
}

/// How a command that reads prints what it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people (the default).
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// `-o table|json|yaml`, as kubectl, cilium and calicoctl spell it.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct OutputArgs {
    /// Output format: a table for people, or a JSON or YAML document for
    /// scripts (the documents' fields are stable).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Same as `-o json`.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

impl OutputArgs {
    pub fn format(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            self.output
        }
    }
}

/// Where the commands that talk to a running agent reach it.
#[derive(Args, Clone, Debug)]
pub struct AgentEndpoint {
    /// The agent's unix socket (its --socket): flows, events and status are
    /// served there only, to root.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub agent: AgentEndpoint,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Pin directory of the agent to remove.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
}

/// How `run` writes its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people (env_logger's format).
    #[default]
    Text,
    /// One JSON object per line: ts, level, target, msg.
    Json,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A YAML file of settings: each key is a flag's long name (`policy-dir:
    /// /etc/netpol`, `iface: [uplink0, "lxc*"]`). A flag on the command line
    /// wins over its NETPOL_<FLAG> environment variable, which wins over the
    /// file, which wins over the default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: `text` for people, `json` for one object per line (ts,
    /// level, target, msg) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Interface name or glob to enforce on (repeatable), e.g. `eth0` or `lxc*`.
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// What judges traffic entering each interface. `auto`: TCX ingress on
    /// veth pairs (native XDP there costs a pod most of its bulk TCP
    /// throughput), native XDP elsewhere, TCX where the driver refuses
    /// native XDP; never generic XDP. `xdp`: XDP everywhere, generic where
    /// native is refused. `tcx`: TCX ingress everywhere.
    #[arg(long, value_enum, default_value_t = IngressHook::Auto)]
    pub ingress_hook: IngressHook,
    /// Directory of *.yaml / *.yml policy files.
    #[arg(long)]
    pub policy_dir: PathBuf,
    /// Directory of Kubernetes object manifests (Namespaces, Pods,
    /// NetworkPolicies; *.yaml, *.yml, *.json, `kind: List` as `kubectl get
    /// -o yaml` prints them): selector groups take the addresses of the pods
    /// they select.
    #[arg(long, value_name = "DIR", conflicts_with = "kubernetes")]
    pub kube_objects: Option<PathBuf>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Read Namespaces, Pods and NetworkPolicies from the Kubernetes API and
    /// follow them (list + watch): the in-cluster service account, or the
    /// kubeconfig KUBECONFIG names. The first policy is enforced once the
    /// initial lists are in.
    #[arg(long)]
    pub kubernetes: bool,
    /// The name of this node as Kubernetes knows it (its pods'
    /// `spec.nodeName`); default: NODE_NAME from the environment, else the
    /// host name, as kubelet.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
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
    /// Enforce a policy without rules (or whose rules allow nothing), which
    /// denies all workload traffic.
    #[arg(long)]
    pub allow_empty_policy: bool,
    /// With --enforce-host, enforce a policy that allows no traffic at all from
    /// or to the node's own addresses.
    #[arg(long)]
    pub allow_host_lockout: bool,
    /// A prefix of the cluster's node addresses (repeatable), e.g. the VPC
    /// or node subnets: with the node's own addresses, the group `nodes`,
    /// the only sources tunnels (VXLAN, Geneve, IP-in-IP, GRE) to the node
    /// are accepted from.
    #[arg(long = "node-cidr", value_name = "CIDR", value_parser = parse_node_cidr)]
    pub node_cidr: Vec<IpNet>,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// An enforced interface that is not a pod interface (name or glob,
    /// repeatable): its traffic may come from anywhere except this node's
    /// pods. Every other enforced interface is a pod interface, whose traffic
    /// must come from the addresses routed to it. Default: the interfaces
    /// holding the node's default route.
    #[arg(long = "uplink", value_name = "IFACE")]
    pub uplinks: Vec<String>,
    /// Do not check pod interfaces that own no address yet: no route to a
    /// pod address, or with Kubernetes identity no pod of this node holding
    /// the routed address (by default their IP traffic is dropped as
    /// `unknown-endpoint` until both are there).
    #[arg(long)]
    pub allow_unknown_endpoints: bool,
    /// Seconds between re-reads of the node's own addresses (the `host` group)
    /// and routes (the addresses behind each pod interface).
    #[arg(long, default_value_t = 5)]
    pub host_refresh_secs: u64,
    /// Seconds between sweeps of expired conntrack entries.
    #[arg(long, default_value_t = 30)]
    pub gc_interval_secs: u64,
    /// Seconds to wait for another agent on the same --pin-path to exit
    /// before giving up (exit 1).
    #[arg(long, default_value_t = 120)]
    pub lock_wait_secs: u64,
    /// Where the last good policy is kept on the node's disk. Started with a
    /// policy directory that is rejected, the agent enforces the policy kept
    /// there (not ready, `netpol_agent_policy_fallback 1`) and keeps
    /// reloading the directory; without one it exits (2).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// With --kubernetes: once the policy is enforced, remove the
    /// `netpol-agent.io/agent-not-ready` taint from this node (it needs get
    /// and patch on nodes), so pods are scheduled only where the policy
    /// already holds.
    #[arg(long, requires = "kubernetes")]
    pub remove_taint: bool,
    #[command(flatten)]
    pub counting: CountingArgs,
}

/// How much of the policy and Kubernetes objects directories is read: a
/// file or directory over the limit is rejected like an invalid one.
#[derive(Args, Debug, Clone)]
pub struct ReadArgs {
    /// Largest policy or object file read, in bytes (or with a KiB or MiB
    /// suffix).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub file_size_max: u64,
    /// Largest total of the files of one directory, in bytes (or with a KiB
    /// or MiB suffix).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub dir_size_max: u64,
}

impl ReadArgs {
    pub fn limits(&self) -> policy::ReadLimits {
        policy::ReadLimits {
            file_size_max: self.file_size_max,
            dir_size_max: self.dir_size_max,
        }
    }
}

/// A size in bytes: `65536`, `64KiB`, `1MiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let scale: u64 = match unit {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: a number of bytes, or with KiB, MiB or GiB"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?}: a number of bytes above 0, or with KiB, MiB or GiB"))
}

#[derive(Args, Debug, Clone)]
pub struct Limits {
    /// Conntrack entries per address family (LRU: the oldest flows are evicted).
    #[arg(long, default_value_t = 131_072)]
    pub ct_max: u32,
    /// CIDR prefixes per address family.
    #[arg(long, default_value_t = DEFAULT_PREFIX_MAX)]
    pub prefix_max: u32,
    /// Compiled rule entries.
    #[arg(long, default_value_t = DEFAULT_RULE_MAX)]
    pub rule_max: u32,
    /// Fragmented datagrams tracked at once, per address family.
    #[arg(long, default_value_t = 8192)]
    pub frag_max: u32,
    /// New conntrack entries each source address may create per second (0:
    /// no limit); a new flow over it is dropped (`ct-quota`), so one
    /// workload cannot evict the others' flows from the shared table.
    #[arg(long, default_value_t = DEFAULT_CT_SOURCE_RATE)]
    pub ct_source_rate: u32,
    /// New conntrack entries a source address may create at once above the rate.
    #[arg(long, default_value_t = DEFAULT_CT_SOURCE_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub ct_source_burst: u32,
}

/// Conntrack timeouts. A live flow's last_seen is refreshed about once a second
/// (and not at all while the flow cache answers it, up to one more second), so
/// anything shorter than 3 s would expire flows that are still talking.
#[derive(Args, Debug, Clone)]
pub struct TimeoutArgs {
    /// TCP flow idle timeout before the handshake completes, in seconds.
    #[arg(long, value_parser = min_timeout(), default_value_t = 60)]
    pub ct_tcp_syn_secs: u64,
    /// Established TCP flow idle timeout, in seconds.
    #[arg(long, value_parser = min_timeout(), default_value_t = 21_600)]
    pub ct_tcp_established_secs: u64,
    /// TCP flow timeout after FIN in both directions or RST, in seconds.
    #[arg(long, value_parser = min_timeout(), default_value_t = 10)]
    pub ct_tcp_close_secs: u64,
    /// UDP and SCTP flow idle timeout, in seconds.
    #[arg(long, value_parser = min_timeout(), default_value_t = 60)]
    pub ct_udp_secs: u64,
    /// ICMP echo idle timeout, in seconds.
    #[arg(long, value_parser = min_timeout(), default_value_t = 30)]
    pub ct_icmp_secs: u64,
    /// Idle timeout for other protocols, in seconds.
    #[arg(long, value_parser = min_timeout(), default_value_t = 60)]
    pub ct_other_secs: u64,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A policy directory or a single policy file (*.yaml or *.yml, the
    /// files `run` reads).
    #[arg(required_unless_present = "policy_dir", conflicts_with = "policy_dir")]
    pub path: Option<PathBuf>,
    /// The policy directory, as `run` and `explain` take it (the same as
    /// giving it as the argument).
    #[arg(long, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Directory of Kubernetes object manifests (Namespaces, Pods,
    /// NetworkPolicies; *.yaml, *.yml, *.json, `kind: List` as `kubectl get
    /// -o yaml` prints them): selector groups take the addresses of the pods
    /// they select.
    #[arg(long, value_name = "DIR")]
    pub kube_objects: Option<PathBuf>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Addresses to treat as the node's own (`host`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub host_addr: Vec<IpAddr>,
    /// Compile as `run --enforce-host` would (no built-in host rules).
    #[arg(long)]
    pub enforce_host: bool,
    /// A prefix of the cluster's node addresses (repeatable), as for run:
    /// with the node's own addresses, the group `nodes`.
    #[arg(long = "node-cidr", value_name = "CIDR", value_parser = parse_node_cidr)]
    pub node_cidr: Vec<IpNet>,
    /// CIDR prefixes per address family the maps will hold (as for run).
    #[arg(long, default_value_t = DEFAULT_PREFIX_MAX)]
    pub prefix_max: u32,
    /// Compiled rule entries the map will hold (as for run).
    #[arg(long, default_value_t = DEFAULT_RULE_MAX)]
    pub rule_max: u32,
    /// Accept a policy without rules (or whose rules allow nothing), as
    /// `run --allow-empty-policy` does.
    #[arg(long)]
    pub allow_empty_policy: bool,
    /// With --enforce-host, accept a policy that allows no traffic at all
    /// from or to the node's own addresses, as `run --allow-host-lockout` does.
    #[arg(long)]
    pub allow_host_lockout: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl CheckArgs {
    pub fn limits(&self) -> policy::MapLimits {
        policy::MapLimits {
            prefix_max: self.prefix_max,
            rule_max: self.rule_max,
        }
    }

    /// The directory or file to check, however it was given.
    pub fn path(&self) -> &std::path::Path {
        // clap requires exactly one of the two.
        self.path
            .as_deref()
            .or(self.policy_dir.as_deref())
            .unwrap_or(std::path::Path::new("."))
    }
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The policy directory (or a single policy file).
    #[arg(long)]
    pub policy_dir: PathBuf,
    /// Directory of Kubernetes object manifests (Namespaces, Pods,
    /// NetworkPolicies; *.yaml, *.yml, *.json, `kind: List` as `kubectl get
    /// -o yaml` prints them): selector groups take the addresses of the pods
    /// they select.
    #[arg(long, value_name = "DIR")]
    pub kube_objects: Option<PathBuf>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Source of the packet: an address, or NAMESPACE/POD (with --kube-objects).
    pub src: Endpoint,
    /// Destination of the packet: an address, or NAMESPACE/POD.
    pub dst: Endpoint,
    /// Protocol and destination port: tcp/443 (or 443/tcp), udp/53,
    /// sctp/3868, icmp/8 (code 0), icmp/3:4, icmpv6/128, or a protocol number
    /// without ports such as 47.
    #[arg(value_parser = parse_target_arg)]
    pub target: (u8, u16),
    /// Addresses to treat as the node's own (`host`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub host_addr: Vec<IpAddr>,
    /// Judge as `run --enforce-host` would (no built-in host rules).
    #[arg(long)]
    pub enforce_host: bool,
    /// A prefix of the cluster's node addresses (repeatable), as for run:
    /// with the node's own addresses, the group `nodes`.
    #[arg(long = "node-cidr", value_name = "CIDR", value_parser = parse_node_cidr)]
    pub node_cidr: Vec<IpNet>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One end of a packet `explain` judges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Addr(IpAddr),
    /// A pod of the Kubernetes objects, by namespace and name.
    Pod {
        namespace: String,
        name: String,
    },
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(ip) = text.parse() {
            return Ok(Endpoint::Addr(ip));
        }
        match text.split_once('/') {
            Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() && !pod.contains('/') => {
                Ok(Endpoint::Pod {
                    namespace: ns.to_string(),
                    name: pod.to_string(),
                })
            }
            _ => Err(format!(
                "{text:?} is neither an IP address nor NAMESPACE/POD"
            )),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Addr(a) => write!(f, "{a}"),
            Endpoint::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
        }
    }
}

fn parse_target_arg(text: &str) -> Result<(u8, u16), String> {
    policy::parse_target(text)
}

/// `--node-cidr`: a canonical prefix (`10.0.0.0/16`, not `10.0.0.5/16`), or
/// an address for itself alone, as a policy file writes one.
fn parse_node_cidr(text: &str) -> Result<IpNet, String> {
    policy::parse_cidr(text)
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Pin directory of the running agent.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct FlowsArgs {
    /// Pin directory of the running agent.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Print again every this many seconds until interrupted.
    #[arg(long)]
    pub watch: Option<u64>,
    #[command(flatten)]
    pub filter: FlowFilter,
}

/// A command used wrongly in a way clap cannot see (e.g. an IPv4 source with
/// an IPv6 destination); exits with 2.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Whether an error means the input was invalid rather than that something
/// failed at run time: looks through the whole chain, so context added on the
/// way up does not change the exit code.
fn is_invalid(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.is::<PolicyErrors>()
        || cause.is::<CompileError>()
        || cause.is::<CapacityError>()
        || cause.is::<LockoutRefused>()
        || cause.is::<UsageError>()
        || cause.is::<WouldRefuse>()
}

/// `check`: a policy that parses and compiles but that `run` would refuse
/// (too big for the maps, or a lockout not allowed by a flag); exits with 2
/// like `run` does. Each reason says which flag overrides it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct WouldRefuse {
    /// The directory or file, as given.
    pub path: String,
    pub reasons: Vec<String>,
}

impl std::fmt::Display for WouldRefuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run would refuse {}:", self.path)?;
        for r in &self.reasons {
            write!(f, "\n  - {r}")?;
        }
        Ok(())
    }
}

/// The exit code for a command that failed with `err`.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(is_invalid) {
        EXIT_INVALID
    } else {
        EXIT_RUNTIME
    }
}

/// What to print on standard error for `err`. Policy errors print one per
/// line exactly as `file:line:column: field: message`, so editors and CI can
/// jump to them; the context above them (e.g. which directory was rejected)
/// comes first.
pub fn error_lines(err: &anyhow::Error) -> Vec<String> {
    let Some(errors) = err.chain().find_map(|c| c.downcast_ref::<PolicyErrors>()) else {
        return vec![format!("netpol-agent: error: {err:#}")];
    };
    let context: Vec<String> = err
        .chain()
        .take_while(|c| !c.is::<PolicyErrors>())
        .map(ToString::to_string)
        .collect();
    let mut out = Vec::new();
    if !context.is_empty() {
        out.push(format!("netpol-agent: error: {}", context.join(": ")));
    }
    out.extend(errors.iter().map(ToString::to_string));
    out
}

/// The shortest conntrack timeout accepted, in seconds (see `TimeoutArgs`).
pub const MIN_TIMEOUT_SECS: u64 = 3;

fn min_timeout() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(MIN_TIMEOUT_SECS..)
}

/// `run` flags for per-flow counting, events and the endpoint.
#[derive(clap::Args, Debug, Clone)]
pub struct CountingArgs {
    /// Address and port of the HTTP endpoint for scrapers and probes
    /// (/metrics, /healthz, /readyz).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Unix socket serving /flows, /events and /status as well (root only:
    /// mode 0600, in a directory no one else can write).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Keep only the aggregate counters, no per-flow packets and bytes (and
    /// then no denied-flow events).
    #[arg(long)]
    pub no_flow_counters: bool,
    /// Denied flows remembered per address family (LRU: a flood evicts the
    /// oldest; the aggregates still count every packet).
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    pub denied_flow_max: u32,
    /// Verdict events each CPU may send per second (0: none).
    #[arg(long, default_value_t = 100)]
    pub event_rate: u32,
    /// Events a CPU may send at once above the rate.
    #[arg(long, default_value_t = 200)]
    pub event_burst: u32,
    /// Also send events for new allowed flows (`monitor --allowed` shows them).
    #[arg(long)]
    pub events_allowed: bool,
    /// New denied flows each CPU may record per second (0: every one). While
    /// new denied flows come faster (a flood), denied packets are counted in
    /// the aggregates only, without a lookup in (or churn of) the denied-flow
    /// map.
    #[arg(long, default_value_t = DEFAULT_DENIED_FLOW_RATE)]
    pub denied_flow_rate: u32,
    /// New denied flows a CPU may record at once above the rate.
    #[arg(long, default_value_t = DEFAULT_DENIED_FLOW_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub denied_flow_burst: u32,
    /// Add per-flow series for the N busiest flows to /metrics (at most 100).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub metrics_top_flows: u64,
}

impl CountingArgs {
    pub fn options(&self) -> CountingOptions {
        CountingOptions {
            flow_counters: !self.no_flow_counters,
            denied_flow_max: self.denied_flow_max,
            event_rate: self.event_rate,
            event_burst: self.event_burst,
            events_allowed: self.events_allowed,
            denied_flow_rate: self.denied_flow_rate,
            denied_flow_burst: self.denied_flow_burst,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub agent: AgentEndpoint,
    /// Show new allowed flows too (the agent must run with --events-allowed).
    #[arg(long)]
    pub allowed: bool,
    /// Print the events as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use clap::CommandFactory as _;

    fn policy_error() -> PolicyErrors {
        PolicyErrors(vec![
            policy::PolicyError {
                file: "policies/aiven.yaml".into(),
                line: 14,
                column: 9,
                field: "rules[2].ports[1]".into(),
                message: "\"70000/tcp\": port must be 0-65535".into(),
            },
            policy::PolicyError::file("policies/b.yaml", "cannot read: denied"),
        ])
    }

    #[test]
    fn invalid_input_exits_2_wherever_it_is_in_the_chain() {
        let bare = anyhow::Error::from(policy_error());
        assert_eq!(exit_code(&bare), EXIT_INVALID);
        let wrapped = Err::<(), _>(policy_error())
            .context("policy directory policies rejected")
            .context("starting")
            .unwrap_err();
        assert_eq!(exit_code(&wrapped), EXIT_INVALID);
        let compile = anyhow::Error::from(CompileError::UnknownGroup {
            rule: "r".into(),
            group: "g".into(),
        });
        assert_eq!(exit_code(&compile), EXIT_INVALID);
        let lockout = anyhow::Error::from(LockoutRefused(vec!["no rules".into()]));
        assert_eq!(exit_code(&lockout.context("run")), EXIT_INVALID);
        let usage = anyhow::Error::from(UsageError("mixed families".into()));
        assert_eq!(exit_code(&usage), EXIT_INVALID);
        let capacity = anyhow::Error::from(CapacityError(vec![]));
        assert_eq!(exit_code(&capacity), EXIT_INVALID);
    }

    #[test]
    fn runtime_errors_exit_1() {
        let io = anyhow::Error::from(std::io::Error::other("no bpffs"));
        assert_eq!(exit_code(&io.context("pinning maps")), EXIT_RUNTIME);
        assert_eq!(exit_code(&anyhow::anyhow!("kernel says no")), EXIT_RUNTIME);
    }

    #[test]
    fn policy_errors_print_one_per_line() {
        let bare = anyhow::Error::from(policy_error());
        assert_eq!(
            error_lines(&bare),
            vec![
                "policies/aiven.yaml:14:9: rules[2].ports[1]: \"70000/tcp\": port must be 0-65535",
                "policies/b.yaml: cannot read: denied",
            ]
        );
        let wrapped = anyhow::Error::from(policy_error()).context("policy directory p rejected");
        let lines = error_lines(&wrapped);
        assert_eq!(lines[0], "netpol-agent: error: policy directory p rejected");
        assert_eq!(lines.len(), 3);
        let other = anyhow::anyhow!("boom").context("loading");
        assert_eq!(
            error_lines(&other),
            vec!["netpol-agent: error: loading: boom"]
        );
    }

    #[test]
    fn usage_errors_exit_2_and_help_documents_the_codes() {
        let err = Cli::try_parse_from(["netpol-agent", "explain", "--policy-dir", "p", "10.0.0.1"])
            .unwrap_err();
        assert_eq!(err.exit_code(), i32::from(EXIT_INVALID));
        let err = Cli::try_parse_from([
            "netpol-agent",
            "explain",
            "--policy-dir",
            "p",
            "10.0.0.1",
            "10.0.0.2",
            "tcp/70000",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), i32::from(EXIT_INVALID));
        assert!(err.to_string().contains("port must be 0-65535"), "{err}");
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        let mut cmd = Cli::command();
        let explain = cmd.find_subcommand_mut("explain").unwrap();
        let help = explain.render_help().to_string();
        assert!(help.contains("3  explain: the packet is denied"), "{help}");
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let argv = ["netpol-agent"].iter().chain(args);
        Cli::try_parse_from(argv).map(|c| c.command)
    }

    fn format_of(args: &[&str]) -> OutputFormat {
        match parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}")) {
            Command::Check(a) => a.output.format(),
            Command::Explain(a) => a.output.format(),
            Command::Stats(a) => a.output.format(),
            Command::Flows(a) => a.output.format(),
            Command::Status(a) => a.output.format(),
            Command::Version(a) => a.output.format(),
            other => panic!("{other:?} has no output format"),
        }
    }

    #[test]
    fn every_reading_command_takes_an_output_format() {
        let explain = [
            "explain",
            "--policy-dir",
            "p",
            "10.0.0.1",
            "10.0.0.2",
            "tcp/443",
        ];
        let commands: [&[&str]; 6] = [
            &["check", "dir"],
            &explain,
            &["stats"],
            &["flows", "--verdict", "drop"],
            &["status"],
            &["version"],
        ];
        for cmd in commands {
            let with = |extra: &[&'static str]| [cmd, extra].concat();
            assert_eq!(format_of(cmd), OutputFormat::Table, "{cmd:?}: the default");
            assert_eq!(format_of(&with(&["-o", "json"])), OutputFormat::Json);
            assert_eq!(format_of(&with(&["--output", "yaml"])), OutputFormat::Yaml);
            assert_eq!(format_of(&with(&["-o", "table"])), OutputFormat::Table);
            // The flag scripts already use.
            assert_eq!(format_of(&with(&["--json"])), OutputFormat::Json, "{cmd:?}");
            let err = parse(&with(&["--json", "-o", "yaml"])).unwrap_err();
            assert_eq!(err.exit_code(), i32::from(EXIT_INVALID), "{cmd:?}");
            let err = parse(&with(&["-o", "xml"])).unwrap_err();
            assert!(
                err.to_string()
                    .contains("[possible values: table, json, yaml]"),
                "{err}"
            );
        }
    }

    #[test]
    fn check_takes_the_directory_either_way() {
        for args in [&["check", "dir"][..], &["check", "--policy-dir", "dir"]] {
            let Ok(Command::Check(a)) = parse(args) else {
                panic!("{args:?}")
            };
            assert_eq!(a.path(), std::path::Path::new("dir"), "{args:?}");
        }
        let err = parse(&["check"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(EXIT_INVALID));
        let err = parse(&["check", "a", "--policy-dir", "b"]).unwrap_err();
        assert!(err.to_string().contains("cannot be used with"), "{err}");
        let Ok(Command::Check(a)) = parse(&["check", "d", "--allow-empty-policy"]) else {
            panic!()
        };
        assert!(a.allow_empty_policy && !a.allow_host_lockout);
    }

    #[test]
    fn version_flags_and_command() {
        let err = Cli::try_parse_from(["netpol-agent", "-V"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(
            err.to_string(),
            format!("netpol-agent {}\n", env!("CARGO_PKG_VERSION"))
        );
        let err = Cli::try_parse_from(["netpol-agent", "--version"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "netpol-agent {} ({})\n",
                env!("CARGO_PKG_VERSION"),
                env!("NETPOL_GIT_REVISION")
            )
        );
        assert!(matches!(parse(&["version"]), Ok(Command::Version(_))));
        assert!(matches!(
            parse(&["completion", "zsh"]),
            Ok(Command::Completion(_))
        ));
        assert!(parse(&["completion", "tcsh"]).is_err());
    }

    #[test]
    fn refusals_exit_2_and_list_their_reasons() {
        let e = WouldRefuse {
            path: "p".into(),
            reasons: vec!["no rules (--allow-empty-policy)".into(), "too big".into()],
        };
        assert_eq!(
            e.to_string(),
            "run would refuse p:\n  - no rules (--allow-empty-policy)\n  - too big"
        );
        assert_eq!(exit_code(&anyhow::Error::from(e)), EXIT_INVALID);
    }

    #[test]
    fn explain_and_check_parse() {
        let cli = Cli::try_parse_from([
            "netpol-agent",
            "explain",
            "--policy-dir",
            "p",
            "10.0.1.5",
            "10.0.2.7",
            "icmp/3:4",
            "--host-addr",
            "10.0.0.5,fd00::5",
        ])
        .unwrap();
        let Command::Explain(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.target, (1, 0x0304));
        assert_eq!(a.host_addr.len(), 2);
        let cli =
            Cli::try_parse_from(["netpol-agent", "check", "dir", "--rule-max", "10"]).unwrap();
        let Command::Check(a) = cli.command else {
            panic!()
        };
        assert_eq!(
            a.limits(),
            policy::MapLimits {
                prefix_max: DEFAULT_PREFIX_MAX,
                rule_max: 10
            }
        );
        let cli = Cli::try_parse_from([
            "netpol-agent",
            "run",
            "--iface",
            "eth0",
            "--policy-dir",
            "p",
            "--allow-empty-policy",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!()
        };
        assert!(a.allow_empty_policy && !a.allow_host_lockout);
        assert_eq!(a.limits.prefix_max, DEFAULT_PREFIX_MAX);
    }
}
