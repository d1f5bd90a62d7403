//! A named network namespace that exists exactly as long as its guard.
//!
//! Tests never touch the root namespace: every interface is created directly
//! inside a namespace made here, so a panic (which still runs `Drop`) leaves
//! nothing behind on the machine.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A process-unique suffix: the pid keeps concurrent test binaries apart, the
/// counter keeps tests within one binary apart.
pub fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Guard for `ip netns add np-<pid>-<n>-<label>`; `ip netns del` on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(label: &str) -> Netns {
        let name = format!("np-{}-{}", unique_suffix(), label);
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        // A fresh namespace has lo down; almost everything expects it up.
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, for setns(2) and `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> ARGS`, panicking with the command and its stderr on failure.
    /// Returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip netns exec <ns> CMD...`, without checking the exit status.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns exec {} {cmd:?}: {e}", self.name))
    }

    pub fn sysctl(&self, key: &str, val: &str) {
        run_checked(
            Command::new("ip")
                .args(["netns", "exec", &self.name, "sysctl", "-qw"])
                .arg(format!("{key}={val}")),
        );
    }

    /// Runs `f` on a new thread that has joined this namespace and returns its
    /// result. Sockets made inside keep the namespace they were created in, so
    /// servers and clients built here can be used from any thread afterwards.
    pub fn run_in<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path();
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                let file =
                    File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                // SAFETY: setns on a valid namespace fd; it changes only the
                // calling thread, which ends when `f` returns.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    panic!(
                        "setns({}): {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    );
                }
                f()
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let res = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match res {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}

/// Runs a command and panics with its full command line and stderr on failure.
pub fn run_checked(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if !out.status.success() {
        panic!(
            "command failed ({}): {shown}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out
}
