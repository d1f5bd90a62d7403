//! Mounting bpffs where the agent pins: a fresh node (or a container with
//! the host's /sys) may have none mounted yet. Done with the syscalls, not
//! the `mount` program, which a minimal image does not ship.
use std::{io, path::Path};

use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, FsType},
};

/// Where bpffs is mounted on every systemd host and Kubernetes node.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: FsType = FsType(libc::BPF_FS_MAGIC as _);

/// Whether bpffs is mounted at `path`.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs at /sys/fs/bpf unless something already is.
pub fn ensure_bpffs() -> io::Result<()> {
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS)?;
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("mount -t bpf bpf {BPFFS}: {e}")))
}
