//! Policy files: parsing (with file/line/column positions) and compilation into
//! identity and rule map entries. The semantics are design.md section 2.
//!
//! - `yaml`: YAML text to a tree with positions (keeps repeated keys).
//! - `parse`: one file's tree to a `PolicyFile`; `cidr`, `ports`: the scalars.
//! - `load`: a directory's files, merged into a `Policy`.
//! - `identity`, `compile`: a `Policy` to map contents.
//! - `evaluate`: the datapath's lookups over compiled maps, in plain Rust.

mod cidr;
mod compile;
mod error;
mod evaluate;
mod identity;
mod load;
mod model;
mod parse;
mod ports;
mod suggest;
mod yaml;

#[cfg(test)]
mod tests;

pub use compile::{compile, CompileOptions, Compiled, HOST_EGRESS_RULE, HOST_INGRESS_RULE};
pub use error::{CompileError, Origin, PolicyError, PolicyErrors, Pos};
pub use evaluate::{evaluate, identity_of, lookup_rule};
pub use identity::IdentityInfo;
pub use load::{load_dir, load_file, merge, policy_files, read_file};
pub use model::{
    Group, Peer, Policy, PolicyFile, PortSpec, Rule, RuleOrigin, BUILTIN_ANY, BUILTIN_GROUPS,
    BUILTIN_HOST, BUILTIN_RULE_PREFIX, BUILTIN_WORLD,
};
pub use parse::parse_str;
pub use ports::{blocks as port_blocks, parse as parse_port};
