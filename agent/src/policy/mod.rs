//! Policy files: parsing (with file/line/column positions) and compilation into
//! identity and rule map entries. The semantics are docs/design.md section 2.
//!
//! - `yaml`: YAML text to a tree with positions (keeps repeated keys).
//! - `parse`: one file's tree to a `PolicyFile`; `cidr`, `ports`: the scalars.
//! - `source`: files read as hostile input (regular files only, bounded,
//!   one ConfigMap generation per directory).
//! - `load`: a directory's files, merged into a `Policy`.
//! - `identity`, `compile`: a `Policy` to map contents.
//! - `evaluate`: the datapath's lookups over compiled maps, in plain Rust.
//! - `k8s`: Kubernetes NetworkPolicy documents, read into the same model.
//! - `trace`: every rule judged on its own against a packet (`explain`).
//! - `limits`, `lockout`: whether a policy fits the maps, and whether
//!   enforcing it would cut off the workloads or the node.

mod cidr;
mod cluster;
mod compile;
mod error;
mod evaluate;
mod identity;
mod k8s;
mod limits;
mod load;
mod lockout;
mod model;
mod parse;
mod ports;
mod selector;
mod source;
mod suggest;
mod trace;
mod yaml;

#[cfg(test)]
mod tests;

pub use cluster::{
    merge_clusters, pods_group, resolve, Cluster, NamedPort, Pod, NAMESPACE_NAME_LABEL, PODS_GROUP,
};
pub use compile::{
    builtin_rules, compile, enforces_host, CompileOptions, Compiled, HOST_EGRESS_RULE,
    HOST_INGRESS_RULE,
};
pub use error::{CompileError, Origin, PolicyError, PolicyErrors, Pos};
pub use evaluate::{evaluate, identity_of, lookup_rule};
pub use identity::IdentityInfo;
pub use k8s::{API_VERSION as K8S_API_VERSION, CIDRS_ANNOTATION as K8S_CIDRS_ANNOTATION};
pub use limits::{check_capacity, map_usage, CapacityError, MapLimits, MapUsage};
pub use load::{
    load_dir, load_dir_with_objects, load_file, load_objects, merge, object_files, policy_files,
    read_file, with_cluster,
};
pub use lockout::{
    lockout_findings, lockout_problems, refuse_lockout, LockoutKind, LockoutProblem,
    LockoutRefused, ALLOW_EMPTY_POLICY_FLAG, ALLOW_HOST_LOCKOUT_FLAG,
};
pub use model::{
    Group, GroupSelector, NamespaceSelector, Peer, Policy, PolicyFile, PortSpec, Rule, RuleOrigin,
    BUILTIN_ANY, BUILTIN_GROUPS, BUILTIN_HOST, BUILTIN_RULE_PREFIX, BUILTIN_WORLD,
};
pub use parse::parse_str;
pub use ports::{blocks as port_blocks, parse as parse_port};
pub use selector::{LabelSelector, Labels, Operator, Requirement};
pub use source::{ReadLimits, DEFAULT_DIR_SIZE_MAX, DEFAULT_FILE_SIZE_MAX};
pub use trace::{
    check_rules, explain, format_target, in_peer, parse_target, Explanation, Packet, Part,
    RuleCheck, Side,
};
