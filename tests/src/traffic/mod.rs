//! Pktgen-style traffic through a lab: frames built once from templates,
//! pushed out of a veth in the kernel with BPF_PROG_TEST_RUN in XDP
//! live-frames mode, received by the program under test on the peer veth.
//!
//! ```text
//!  gen ns  tg0 ══ tr0  dut ns (forwarding)  tp0 ══ tp1  pod ns
//!  lab_gen ──►   program under test ──► route ──►  count_drop (sink)
//! ```
//!
//! Beside it, the bulk scenario (`bulk`): iperf3 between a pod and a remote
//! host through a routing node, for what a filter costs a real TCP transfer.
//!
//! Everything lives in namespaces this module creates (docs/design.md
//! section 5): nothing is attached to a real interface and every send is
//! bounded in packets and time.

pub mod agent;
pub mod bulk;
pub mod bulk_lab;
pub mod chart;
pub mod frames;
pub mod gen;
pub mod iperf;
pub mod measure;
pub mod nft;
pub mod targets;
pub mod topo;
pub mod xdp_filter;

pub use agent::NetpolAgent;
pub use frames::{Template, FLOWS};
pub use gen::{Generator, SendLimits, SendReport};
pub use measure::{CountingProg, LinkStats};
pub use topo::TrafficLab;
