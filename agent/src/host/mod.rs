//! The node as the agent sees it: which interfaces to enforce, when links
//! and routes come and go, the node's own addresses and routes, and changes to the policy
//! directory. Uses no other module of the crate.
//!
//! - `ifaces`: the interfaces matching `--iface` patterns.
//! - `linkwatch`: netlink link and route events.
//! - `hostaddrs`: the node's addresses (the `host` group).
//! - `routes`: the node's routes: the addresses behind each pod interface,
//!   and the interfaces holding the default route.
//! - `dirwatch`: inotify on the policy directory, settled before a reload.
pub mod dirwatch;
pub mod hostaddrs;
pub mod ifaces;
pub mod linkwatch;
pub mod routes;
