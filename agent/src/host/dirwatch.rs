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
    /// Events were read and the directory has not settled yet. Kept here, not
    /// in `changed`'s future, so a caller that abandons the wait (another
    /// `select!` branch won) resumes it instead of losing the change.
    pending: bool,
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
        Ok(Self { fd, pending: false })
    }

    /// Waits for a change, then for the directory to settle. Cancel-safe: a
    /// change seen before cancellation is reported by the next call.
    pub async fn changed(&mut self) -> io::Result<()> {
        if !self.pending {
            self.drain_when_ready().await?;
            // No await between the drain and this: cancellation cannot fall
            // between them.
            self.pending = true;
        }
        loop {
            match tokio::time::timeout(SETTLE, self.drain_when_ready()).await {
                Err(_) => {
                    self.pending = false;
                    return Ok(());
                }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{DirWatch, SETTLE};

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("netpol-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn reports_a_rename_over_a_file() {
        let dir = temp_dir("rename");
        let mut w = DirWatch::new(&dir).unwrap();
        std::fs::write(dir.join(".tmp"), "rules: []\n").unwrap();
        std::fs::rename(dir.join(".tmp"), dir.join("p.yaml")).unwrap();
        tokio::time::timeout(Duration::from_secs(2), w.changed())
            .await
            .expect("a change within 2 s")
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The agent's event loop abandons `changed()` whenever another branch
    /// wins; a change already read must still be reported by the next call.
    #[tokio::test]
    async fn a_change_survives_an_abandoned_wait() {
        let dir = temp_dir("cancel");
        let mut w = DirWatch::new(&dir).unwrap();
        std::fs::write(dir.join("p.yaml"), "rules: []\n").unwrap();
        // Abandon the wait while it is settling (the event is already read).
        let abandoned = tokio::time::timeout(SETTLE / 4, w.changed()).await;
        assert!(abandoned.is_err(), "should still be settling");
        // No new event: the next call must report the pending change.
        tokio::time::timeout(SETTLE * 3, w.changed())
            .await
            .expect("the change read before the abandoned wait is reported")
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
