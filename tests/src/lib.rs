//! Test lab for netpol-agent: network namespaces shaped like a node, real
//! sockets across them, and a guard that runs the agent inside the lab.
//!
//! Rules it keeps (docs/design.md section 5): addresses exist only inside
//! namespaces it creates, nothing is added to the root namespace, every wait
//! is bounded, and guards clean up on drop even when a test panics.

pub mod agent;
pub mod edges;
pub mod fake_api;
pub mod files;
pub mod fuzz;
pub mod lab;
pub mod net;
pub mod netns;
pub mod observe;
pub mod privilege;

pub use agent::{agent_bin, ensure_bpffs, AgentProcess, READY_MARKER};
pub use edges::{assert_enforced, check, check_all, serve, Edge, Expect, Mode, Servers};
pub use lab::{Endpoint, Family, Lab, NODE_NAME};
pub use net::{
    connect_from, exchange, ping, ping_available, tcp_exchange, udp_exchange, EchoServer,
    ExchangeError, Proto, TcpEcho, UdpEcho, ALLOWED_TIMEOUT, DENIED_TIMEOUT,
};
pub use netns::Netns;
pub mod traffic;
pub use privilege::require_root;
pub mod bench_frames;
pub mod bench_identity;
pub mod bench_memory;
pub mod e2e_netpol;
pub mod packet;
pub mod progrun;
pub mod reference;
pub mod reference_k8s;
