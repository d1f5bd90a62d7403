//! Watches the policy directory with inotify so edits reload the policy. It
//! covers editors (write, rename over) and Kubernetes ConfigMap volumes, which
//! swap a `..data` symlink by rename: both show up as events on the directory.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
    time::Duration,
};

use tokio::io::{unix::AsyncFd, Interest};

pub struct DirWatch {
    fd: AsyncFd<OwnedFd>,
}

/// How long the directory must stay quiet before one reload covers a burst of
/// events (a ConfigMap update is several renames; an editor writes twice).
pub const SETTLE: Duration = Duration::from_millis(200);

impl DirWatch {
    pub fn new(dir: &Path) -> io::Result<Self> {
        // SAFETY: plain syscalls; the fd is owned right away.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mask = libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_CLOSE_WRITE
            | libc::IN_MODIFY
            | libc::IN_ATTRIB
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        // SAFETY: valid fd and C string.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is an inotify descriptor owned by the AsyncFd from here
        // on; nothing else closes or replaces it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Waits for a change, then for the directory to settle.
    pub async fn changed(&mut self) -> io::Result<()> {
        self.drain_when_ready().await?;
        loop {
            match tokio::time::timeout(SETTLE, self.drain_when_ready()).await {
                Err(_) => return Ok(()),
                Ok(r) => r?,
            }
        }
    }

    async fn drain_when_ready(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match drain(guard.get_inner().as_raw_fd()) {
                Ok(0) => guard.clear_ready(),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads (and discards) every pending event: what changed does not matter,
/// the whole directory is compiled again.
fn drain(fd: RawFd) -> io::Result<usize> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock && total > 0 {
                return Ok(total);
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(total);
        }
        total += n as usize;
    }
}
