//! Policy files: parsing (with file/line/column positions) and compilation into
//! identity and rule map entries. The semantics are docs/design.md section 2.
//!
//! - `yaml`: YAML text to a tree with positions (keeps repeated keys).
//! - `parse`: one file's tree to a `PolicyFile`; `cidr`, `ports`: the scalars.
//! - `source`: files read as hostile input (regular files only, bounded,
//!   one ConfigMap generation per directory).
//! - `settings`: a flat YAML mapping of names to scalars or lists, read the
//!   same way, with positions (the agent's configuration file).
//! - `load`: a directory's files, merged into a `Policy`.
//! - `selector`, `cluster`: label selectors, and the Kubernetes objects
//!   (Namespaces, Pods) selector groups are resolved against; `selection`:
//!   each selector's pods, kept and updated per pod that changed.
//! - `k8s`: NetworkPolicy documents without the objects (address form);
//!   `netpol`: with them (selectors, named ports, Kubernetes' isolation).
//! - `identity`, `compile`: a `Policy` to map contents; `combine`: the
//!   NetworkPolicy sides combined into allowed pairs; `incremental`: the
//!   compiles of one agent, identity ids kept and entries reused across them;
//!   `identity_update`: its identities updated per host prefix that moved.
//! - `api_objects`: Kubernetes objects from the API server, read as files are;
//!   `object_cache`: object files parsed again only when their text changed.
//! - `evaluate`: the datapath's lookups over compiled maps, in plain Rust.
//! - `trace`: every rule judged on its own against a packet, and each
//!   NetworkPolicy side (`explain`).
//! - `limits`, `lockout`: whether a policy fits the maps, and whether
//!   enforcing it would cut off the workloads or the node.

mod api_objects;
mod cidr;
mod cluster;
mod combine;
mod compile;
mod error;
mod evaluate;
mod identity;
mod identity_update;
mod incremental;
mod k8s;
mod limits;
mod load;
mod lockout;
mod model;
mod netpol;
mod object_cache;
mod parse;
mod ports;
mod selection;
mod selector;
mod settings;
mod source;
mod suggest;
mod trace;
mod yaml;

#[cfg(test)]
mod tests;

pub use api_objects::{objects_from_parts, parse_object_text};
pub use cidr::parse as parse_cidr;
pub use cluster::{
    merge_clusters, pods_group, resolve, Cluster, NamedPort, Pod, NAMESPACE_NAME_LABEL, PODS_GROUP,
};
pub use combine::{side_rule, NOT_ISOLATED_RULE};
pub use compile::{
    builtin_rules, compile, enforces_host, is_encap, CompileOptions, Compiled, ENCAP_PROTOS,
    ENCAP_REFUSAL, ENCAP_UDP_PORTS, HOST_EGRESS_RULE, HOST_INGRESS_RULE, NODE_ENCAP_RULE,
};
pub use error::{CompileError, Origin, PolicyError, PolicyErrors, Pos};
pub use evaluate::{evaluate, identity_of, lookup_entry, lookup_rule, refusing_rule};
pub use identity::IdentityInfo;
pub use incremental::Compiler;
pub use k8s::{API_VERSION as K8S_API_VERSION, CIDRS_ANNOTATION as K8S_CIDRS_ANNOTATION};
pub use limits::{check_capacity, map_usage, CapacityError, MapLimits, MapUsage};
pub use load::{
    is_policy_file_name, load_dir, load_dir_with_cluster, load_dir_with_objects, load_file,
    load_objects, load_objects_cached, load_sources, load_sources_with_cluster,
    load_sources_with_cluster_cached, load_sources_with_objects, load_sources_with_objects_cached,
    merge, object_files, objects_from_str, policy_files, read_file, read_file_with, read_sources,
    with_cluster, with_cluster_cached, Sources, POLICY_EXTENSIONS,
};
pub use lockout::{
    lockout_findings, lockout_problems, refuse_lockout, LockoutKind, LockoutProblem,
    LockoutRefused, ALLOW_EMPTY_POLICY_FLAG, ALLOW_HOST_LOCKOUT_FLAG,
};
pub use model::{
    Group, GroupSelector, NamespaceSelector, Peer, Policy, PolicyFile, PortSpec, Rule, RuleOrigin,
    BUILTIN_ANY, BUILTIN_GROUPS, BUILTIN_HOST, BUILTIN_NODES, BUILTIN_RULE_PREFIX, BUILTIN_WORLD,
};
pub use netpol::{Direction, NetworkPolicy, SideRule, Workloads};
pub use object_cache::{ObjectCache, ParsedObjects};
pub use parse::{parse_str, parse_str_with};
pub use ports::{blocks as port_blocks, parse as parse_port};
pub use selection::Selections;
pub use selector::{LabelSelector, Labels, Operator, Requirement};
pub use settings::{parse_settings, read_settings, Setting, SettingScalar, SettingValue};
pub use source::{ReadLimits, DEFAULT_DIR_SIZE_MAX, DEFAULT_FILE_SIZE_MAX};
pub use suggest::did_you_mean;
pub use trace::{
    check_rules, explain, format_target, in_peer, judged_without_rules, parse_target, Explanation,
    Packet, Part, RuleCheck, Side, SideVerdict, WorkloadVerdict,
};
