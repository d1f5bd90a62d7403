#![no_std]
//! Library target so agent/build.rs can depend on this crate and cargo rebuilds
//! the agent when the eBPF sources change (aya-template pattern). The programs
//! are the binaries (src/main.rs, src/bin/).
