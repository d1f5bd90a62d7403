//! One agent per pin directory. Two agents writing the same maps would
//! interleave their slot swaps; a DaemonSet rolling update with `maxSurge`, or
//! an operator starting a second copy by hand, must not be able to do that.
//!
//! The guard is an flock on the pin directory itself (bpffs holds no regular
//! files, so there can be no lock file in it). Only whoever can open that
//! directory can take or contend for the lock: it is created 0700 and must
//! belong to the agent's user, so that is root on the node. A name in the
//! host network namespace would not do: any hostNetwork pod can bind an
//! abstract socket name before the agent and keep it from ever starting. The
//! kernel drops the lock with the process, so kill -9 leaves nothing stale.
use std::{
    fs::{DirBuilder, File, OpenOptions},
    io,
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    os::unix::io::AsRawFd as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use log::warn;

/// How often a waiting agent says it is still waiting.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_millis(200);

/// Holds the pin directory until dropped.
#[derive(Debug)]
pub struct InstanceGuard {
    _dir: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("another netpol-agent holds {}{}", .pin_path.display(), describe(.holder))]
    Held {
        pin_path: PathBuf,
        holder: Option<Holder>,
    },
    /// The pin directory is not one the agent may trust.
    #[error("{}: {message}", .pin_path.display())]
    Unsafe { pin_path: PathBuf, message: String },
    #[error("{}: {source}", .pin_path.display())]
    Io {
        pin_path: PathBuf,
        source: io::Error,
    },
}

/// The process holding a lock, as far as /proc tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// 0 when the holder is outside this process's PID namespace.
    pub pid: u32,
    /// Its command line, when readable.
    pub command: Option<String>,
}

fn describe(holder: &Option<Holder>) -> String {
    match holder {
        Some(Holder { pid: 0, .. }) => " (a process outside this PID namespace)".into(),
        Some(Holder {
            pid,
            command: Some(c),
        }) => format!(" (pid {pid}: {c})"),
        Some(Holder { pid, command: None }) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

fn io_error(pin_path: &Path, source: io::Error) -> LockError {
    LockError::Io {
        pin_path: pin_path.to_owned(),
        source,
    }
}

/// Opens the pin directory without following a symlink, and checks that it
/// is the agent's own: anyone else who could open it could hold the lock, or
/// swap what is pinned there.
fn open_dir(pin_path: &Path) -> Result<File, LockError> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(pin_path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => LockError::Unsafe {
                pin_path: pin_path.to_owned(),
                message: "not a directory (a symlink or a file): refused as the pin directory"
                    .into(),
            },
            _ => io_error(pin_path, e),
        })?;
    let meta = dir.metadata().map_err(|e| io_error(pin_path, e))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(LockError::Unsafe {
            pin_path: pin_path.to_owned(),
            message: format!(
                "owned by uid {}, not by this agent's uid {me}: refused as the pin directory \
                 (its owner could hold its lock or replace what is pinned in it)",
                meta.uid()
            ),
        });
    }
    if meta.mode() & 0o077 != 0 {
        dir.set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error(pin_path, e))?;
    }
    Ok(dir)
}

/// Whether `dir` is still what `pin_path` names: uninstall removes the
/// directory, and a lock on a removed directory guards nothing.
fn still_there(dir: &File, pin_path: &Path) -> bool {
    match (dir.metadata(), std::fs::symlink_metadata(pin_path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Takes the lock without waiting: Ok(false) when another process holds it.
fn try_flock(dir: &File, pin_path: &Path) -> Result<bool, LockError> {
    // SAFETY: a valid descriptor owned by `dir`.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(io_error(pin_path, e))
    }
}

fn held(dir: &File, pin_path: &Path) -> LockError {
    LockError::Held {
        pin_path: pin_path.to_owned(),
        holder: holder(dir),
    }
}

/// The process holding an flock on `dir`, from /proc/locks.
fn holder(dir: &File) -> Option<Holder> {
    let meta = dir.metadata().ok()?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 1234 00:27:136857 0 EOF"; waiters are
    // marked "->" and hold nothing.
    let pid = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") || fields.get(5) != Some(&id.as_str()) {
            return None;
        }
        fields.get(4)?.parse::<i64>().ok()
    })?;
    let pid = u32::try_from(pid).unwrap_or(0);
    let command = (pid != 0)
        .then(|| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .flatten()
        .map(|raw| {
            let mut c: String = String::from_utf8_lossy(&raw)
                .split('\0')
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if c.len() > 200 {
                let cut = (0..=200)
                    .rev()
                    .find(|&i| c.is_char_boundary(i))
                    .unwrap_or(0);
                c.truncate(cut);
                c.push_str("...");
            }
            c
        })
        .filter(|c| !c.is_empty());
    Some(Holder { pid, command })
}

/// Takes the pin directory if no agent holds it, without waiting. Ok(None)
/// when there is no such directory (no agent can run on it either).
pub fn try_acquire(pin_path: &Path) -> Result<Option<InstanceGuard>, LockError> {
    let dir = match open_dir(pin_path) {
        Ok(d) => d,
        Err(LockError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    if !try_flock(&dir, pin_path)? {
        return Err(held(&dir, pin_path));
    }
    Ok(Some(InstanceGuard { _dir: dir }))
}

/// Takes the pin directory (creating it, 0700), waiting while another agent
/// holds it, and saying so and who: a surge pod starts once the old one has
/// gone. Gives up after `wait`.
pub async fn acquire(pin_path: &Path, wait: Duration) -> Result<InstanceGuard, LockError> {
    let start = Instant::now();
    let mut logged: Option<Instant> = None;
    loop {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(pin_path)
            .map_err(|e| io_error(pin_path, e))?;
        let dir = open_dir(pin_path)?;
        if try_flock(&dir, pin_path)? {
            if still_there(&dir, pin_path) {
                return Ok(InstanceGuard { _dir: dir });
            }
            // Removed (uninstall) while this agent waited: start afresh.
            continue;
        }
        let busy = held(&dir, pin_path);
        if start.elapsed() >= wait {
            return Err(busy);
        }
        if logged.is_none_or(|t| t.elapsed() >= WAIT_LOG_EVERY) {
            warn!(
                "{busy}; waiting for it to exit (at most {}s more)",
                wait.saturating_sub(start.elapsed()).as_secs()
            );
            logged = Some(Instant::now());
        }
        drop(dir);
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(label: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "netpol-lock-{label}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn second_taker_is_refused_with_the_holder_named() {
        let s = Scratch::new("held");
        let pins = s.0.join("pins");
        let first = block_on(acquire(&pins, Duration::ZERO)).unwrap();
        let mode = std::fs::metadata(&pins).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "created root-only");
        let err = block_on(acquire(&pins, Duration::from_millis(300))).unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("{err}")
        };
        let holder = holder.clone().expect("holder found in /proc/locks");
        assert_eq!(holder.pid, std::process::id(), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(matches!(try_acquire(&pins), Err(LockError::Held { .. })));
        drop(first);
        assert!(try_acquire(&pins).unwrap().is_some(), "free once dropped");
        assert!(try_acquire(&s.0.join("none")).unwrap().is_none());
    }

    #[test]
    fn a_symlink_or_a_foreign_directory_is_refused() {
        let s = Scratch::new("unsafe");
        let real = s.0.join("real");
        std::fs::create_dir(&real).unwrap();
        let link = s.0.join("link");
        symlink(&real, &link).unwrap();
        let err = block_on(acquire(&link, Duration::ZERO)).unwrap_err();
        assert!(matches!(err, LockError::Unsafe { .. }), "{err}");
        assert!(err.to_string().contains("symlink"), "{err}");

        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let foreign = s.0.join("foreign");
            std::fs::create_dir(&foreign).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            let err = block_on(acquire(&foreign, Duration::ZERO)).unwrap_err();
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        }
    }

    #[test]
    fn a_wider_directory_is_narrowed_to_its_owner() {
        let s = Scratch::new("mode");
        let pins = s.0.join("pins");
        std::fs::create_dir(&pins).unwrap();
        std::fs::set_permissions(&pins, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _g = block_on(acquire(&pins, Duration::ZERO)).unwrap();
        assert_eq!(std::fs::metadata(&pins).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_waiter_locks_the_directory_there_after_an_uninstall() {
        let s = Scratch::new("removed");
        let pins = s.0.join("pins");
        let first = try_acquire(&{
            std::fs::create_dir(&pins).unwrap();
            pins.clone()
        })
        .unwrap()
        .unwrap();
        let waiter = {
            let pins = pins.clone();
            std::thread::spawn(move || block_on(acquire(&pins, Duration::from_secs(10))))
        };
        std::thread::sleep(Duration::from_millis(300));
        // What uninstall does: remove the directory, then let go.
        std::fs::remove_dir(&pins).unwrap();
        drop(first);
        let got = waiter.join().unwrap().unwrap();
        assert!(
            still_there(&got._dir, &pins),
            "locked the directory there now"
        );
    }
}
