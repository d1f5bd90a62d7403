//! Hot reload under traffic, rejection of a bad reload, and of hostile files
//! in the policy directory, with the real agent in the node-shaped lab.
//!
//! Two policies, A (examples/localplus-cidr) and B (A plus merchant -> wallet
//! 50051/tcp, minus prometheus -> services 8080/tcp), are swapped 200 times by
//! rewriting the policy directory atomically and sending SIGHUP, while:
//! - one long-lived TCP connection gateway -> ledger-a:8080 (allowed by both)
//!   exchanges small messages in a tight loop and must never stall or lose one;
//! - short TCP and UDP exchanges on edges allowed by both must all succeed;
//! - connection attempts on an edge denied by both must all go unanswered.
//!
//! The agent's drop counters then have to account for every dropped packet:
//! one SYN per denied attempt and nothing else.
//!
//! Modules: `policies` (variants A and B, the policy directory), `agent`
//! (SIGHUP, the log, the counters), `sockets` (an echo server that keeps the
//! steady flow's server side, a connect that keeps the stream), `traffic`
//! (the generators' reports), and one module per test: `under_traffic`,
//! `invalid` and `hostile`.

mod agent;
mod hostile;
mod invalid;
mod policies;
mod sockets;
mod traffic;
mod under_traffic;

use std::time::Duration;

/// Policy swaps in `reload_under_traffic`.
pub const SWAPS: u32 = 200;
/// Longest a message of the steady flow may take to come back.
pub const STEADY_TIMEOUT: Duration = Duration::from_secs(1);
/// A round trip this slow on a veth means a retransmission (min RTO is 200 ms).
pub const STEADY_SLOW: Duration = Duration::from_millis(150);
/// Wait on edges denied by both policies. Shorter than the initial SYN RTO
/// (1 s), so every attempt sends exactly one SYN.
pub const DENIED_WAIT: Duration = Duration::from_millis(300);
/// Bound on one reload (SIGHUP to "policy generation N enforced").
pub const RELOAD_WAIT: Duration = Duration::from_secs(5);
/// Bound on the whole swap phase.
pub const SWAP_PHASE_BUDGET: Duration = Duration::from_secs(60);
/// Pause between short connections: keeps TIME_WAIT ports and server threads
/// bounded (a few thousand over the run).
pub const SHORT_PACE: Duration = Duration::from_millis(5);
/// After a probe connection, its close handshake must be over before the next
/// swap, or a swap that revokes its rule would (rightly) drop the last ACK.
pub const AFTER_PROBE: Duration = Duration::from_millis(30);
/// Pauses between swaps, cycled; zeros make back-to-back swaps.
pub const GAPS_MS: [u64; 8] = [0, 10, 40, 80, 120, 0, 60, 20];
