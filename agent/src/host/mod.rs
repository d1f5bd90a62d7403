//! The node as the agent sees it: which interfaces to enforce, when links
//! come and go, the node's own addresses, and changes to the policy
//! directory. Uses no other module of the crate.
//!
//! - `ifaces`: the interfaces matching `--iface` patterns.
//! - `linkwatch`: netlink link events.
//! - `hostaddrs`: the node's addresses (the `host` group).
//! - `dirwatch`: inotify on the policy directory, settled before a reload.
pub mod dirwatch;
pub mod hostaddrs;
pub mod ifaces;
pub mod linkwatch;
