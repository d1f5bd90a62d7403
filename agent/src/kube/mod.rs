//! `run --kubernetes`: Namespaces, Pods and NetworkPolicies read from the API
//! server and kept current with list + watch.
//!
//! - `connect`: the API client (in-cluster service account, or KUBECONFIG)
//!   and the name of this node.
//! - `view`: the watched objects, each read by the policy module's object
//!   reader as it arrives, with one debounced notification per burst.
//! - `taint`: the node taint removed once the agent enforces.
//!
//! Uses only `policy` (the `Cluster` and NetworkPolicy model); the daemon
//! turns its notifications into reloads.
mod connect;
mod taint;
mod view;

pub use connect::{client, client_for, node_name};
pub use taint::remove_taint;
pub use view::{KubeView, Resource, DEFAULT_DEBOUNCE, FIRST_RETRY, MAX_RETRY};
