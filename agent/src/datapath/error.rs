//! What can go wrong where aya errors enter the agent, naming the map,
//! program or interface concerned so the operator sees which part failed.
use std::path::PathBuf;

use aya::programs::{links::LinkError, ProgramError};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(String),
    #[error("attaching to {iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("creating pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("link of {iface}: {source}")]
    Link {
        iface: String,
        #[source]
        source: LinkError,
    },
    #[error("interface {iface}: {source}")]
    Iface {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("carrying {name} over to its resized map: {source}")]
    Migrate {
        name: String,
        #[source]
        source: aya::maps::MapError,
    },
}

pub(super) type Result<T> = std::result::Result<T, DatapathError>;

pub(super) fn map_err(name: &str) -> impl Fn(aya::maps::MapError) -> DatapathError + '_ {
    move |source| DatapathError::Map {
        name: name.to_owned(),
        source,
    }
}
