//! One module per subcommand of `netpol-agent`; `main` dispatches to them.
//! `run` starts the long-lived agent in `daemon`; the others are offline
//! tools over policy files or a running agent's pins and endpoint.
pub mod check;
pub mod explain;
pub mod flows;
pub mod monitor;
pub mod run;
pub mod stats;
pub mod uninstall;
