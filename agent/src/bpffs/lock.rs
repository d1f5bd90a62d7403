//! One agent per pin directory. Two agents writing the same maps would
//! interleave their slot swaps; a DaemonSet rolling update with `maxSurge`, or
//! an operator starting a second copy by hand, must not be able to do that.
//!
//! The guard is an abstract unix socket named after the pin directory: it
//! lives exactly as long as the process (no stale lock file after kill -9), and
//! every agent of a node shares the host network namespace, where abstract
//! names live.
use std::{
    io,
    os::unix::net::{SocketAddr, UnixListener},
    path::Path,
    time::Duration,
};

use log::warn;

pub struct InstanceGuard {
    _socket: UnixListener,
}

fn name(pin_path: &Path) -> Vec<u8> {
    let mut n = b"netpol-agent:".to_vec();
    n.extend_from_slice(pin_path.as_os_str().as_encoded_bytes());
    // Abstract names are at most 107 bytes; a long path keeps its tail.
    if n.len() > 100 {
        n.drain(13..n.len() - 87);
    }
    n
}

fn bind(pin_path: &Path) -> io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt as _;
    UnixListener::bind_addr(&SocketAddr::from_abstract_name(name(pin_path))?)
}

/// Whether an agent holds `pin_path` right now.
pub fn running(pin_path: &Path) -> bool {
    matches!(bind(pin_path), Err(e) if e.kind() == io::ErrorKind::AddrInUse)
}

/// Takes the pin directory, waiting (and saying so) while another agent holds
/// it: a surge pod starts once the old one has gone.
pub async fn acquire(pin_path: &Path) -> io::Result<InstanceGuard> {
    let mut warned = false;
    loop {
        match bind(pin_path) {
            Ok(s) => return Ok(InstanceGuard { _socket: s }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if !warned {
                    warn!(
                        "another netpol-agent is running on {}; waiting for it to exit",
                        pin_path.display()
                    );
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
