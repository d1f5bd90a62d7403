//! One module per subcommand of `netpol-agent`; `main` dispatches to them.
//! `run` starts the long-lived agent in `daemon`; the others are offline
//! tools over policy files or a running agent's pins and endpoint.
//!
//! Shared by them: `output` (`-o table|json|yaml`), `client` (how
//! `monitor` and `status` reach a running agent) and `log` (text or JSON
//! log lines).
pub mod check;
pub mod client;
pub mod completion;
pub mod explain;
pub mod flows;
pub mod log;
pub mod monitor;
pub mod output;
pub mod run;
pub mod stats;
pub mod status;
pub mod uninstall;
pub mod version;
