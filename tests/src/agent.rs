//! Runs the real `netpol-agent` binary inside a lab's node namespace and
//! guarantees it is gone (and its pins removed) when the guard drops.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::lab::Lab;
use crate::netns::{run_checked, unique_suffix, Netns};

/// What the agent prints on stderr once every program is attached and the
/// policy is loaded.
pub use netpol_agent::READY_MARKER;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const TERM_GRACE: Duration = Duration::from_secs(5);
const BPFFS: &str = "/sys/fs/bpf";

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    ready: bool,
    open_streams: usize,
}

/// Output of the agent, shared with the reader threads; the condvar wakes the
/// start-up wait on every line and on EOF.
#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

impl Log {
    fn text(&self) -> String {
        self.state.lock().unwrap().lines.join("\n")
    }
}

pub struct AgentProcess {
    child: Child,
    log: Arc<Log>,
    pin_path: PathBuf,
    /// The unix socket serving /flows, /events and /status.
    socket: PathBuf,
    /// The directory holding it, removed on drop; None when the test chose
    /// the socket.
    socket_dir: Option<PathBuf>,
    /// The agent's own `--state-dir`, removed on drop; None when the test
    /// chose it (to restart an agent on what another kept).
    state_dir: Option<PathBuf>,
    /// Leave the pins (and so the enforcement) behind on drop, for a test
    /// that restarts the agent on them.
    keep_pins: bool,
    // Keeps the node namespace alive until the agent is gone, whatever order
    // the test drops things in.
    _node: Arc<Netns>,
}

impl AgentProcess {
    /// Starts `netpol-agent run` in `lab`'s node namespace, attached to every
    /// node interface, and waits for its ready marker. Panics with the
    /// captured log if it exits first or is not ready within 20 s.
    pub fn spawn(lab: &Lab, policy_dir: &Path, extra_args: &[&str]) -> AgentProcess {
        let ifaces: Vec<&str> = lab.node_ifaces.iter().map(String::as_str).collect();
        Self::spawn_custom(lab, policy_dir, &ifaces, None, extra_args)
    }

    /// A fresh pin directory for one test's agents.
    pub fn new_pin_path() -> PathBuf {
        PathBuf::from(BPFFS).join(format!("netpol-test-{}", unique_suffix()))
    }

    /// `spawn` with the `--iface` patterns given, and on `pin_path` (a fresh
    /// one when None) so a test can restart an agent on what another pinned.
    pub fn spawn_custom(
        lab: &Lab,
        policy_dir: &Path,
        ifaces: &[&str],
        pin_path: Option<&Path>,
        extra_args: &[&str],
    ) -> AgentProcess {
        ensure_bpffs();
        let bin = agent_bin();
        let pin_path = pin_path.map_or_else(Self::new_pin_path, Path::to_path_buf);
        // Parallel agents each need a socket of their own.
        let chosen = extra_args
            .iter()
            .position(|a| *a == "--socket")
            .map(|i| PathBuf::from(extra_args[i + 1]));
        let (socket, socket_dir) = match chosen {
            Some(s) => (s, None),
            None => {
                let dir = std::env::temp_dir().join(format!("netpol-sock-{}", unique_suffix()));
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
                (dir.join("agent.sock"), Some(dir))
            }
        };
        // The node's default state directory is never touched: a last good
        // policy left there would change how every later agent starts.
        let state_dir = (!extra_args.contains(&"--state-dir"))
            .then(|| std::env::temp_dir().join(format!("netpol-state-{}", unique_suffix())));
        let mut cmd = Command::new("nsenter");
        // nsenter execs the agent (no fork for a net namespace), so the pid
        // we signal is the agent's own. The mount namespace stays the root
        // one, so the agent sees the real bpffs.
        cmd.arg(format!("--net={}", lab.node.path().display()))
            .arg("--")
            .arg(&bin)
            .arg("run");
        for iface in ifaces {
            cmd.args(["--iface", iface]);
        }
        cmd.arg("--policy-dir")
            .arg(policy_dir)
            .arg("--pin-path")
            .arg(&pin_path);
        if socket_dir.is_some() {
            cmd.arg("--socket").arg(&socket);
        }
        if let Some(dir) = &state_dir {
            cmd.arg("--state-dir").arg(dir);
        }
        cmd.args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));

        let log = Arc::new(Log::default());
        log.state.lock().unwrap().lines.push(format!("$ {shown}"));
        // Readers are detached: they end at EOF, and nothing waits on them
        // unboundedly.
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, "stdout", log.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, "stderr", log.clone());
        }
        let mut agent = AgentProcess {
            child,
            log,
            pin_path,
            socket,
            socket_dir,
            state_dir,
            keep_pins: false,
            _node: lab.node.clone(),
        };
        // On panic, `agent` drops here and the process is stopped.
        agent.wait_ready(READY_TIMEOUT);
        agent
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let state = self.log.state.lock().unwrap();
                if state.ready {
                    return;
                }
                let now = Instant::now();
                if now >= deadline {
                    drop(state);
                    panic!(
                        "netpol-agent printed no {READY_MARKER:?} within {timeout:?}; log:\n{}",
                        self.log.text()
                    );
                }
                // Wake at least every 200 ms to notice an exit whose pipes
                // stay open (a forked child holding them).
                let wait = (deadline - now).min(Duration::from_millis(200));
                let (state, _) = self.log.changed.wait_timeout(state, wait).unwrap();
                if state.ready {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.wait_streams_closed(Duration::from_secs(1));
                panic!(
                    "netpol-agent exited ({status}) before {READY_MARKER:?}; log:\n{}",
                    self.log.text()
                );
            }
        }
    }

    /// Lets the readers drain what a dead agent wrote, without trusting that
    /// every copy of its pipes is closed (a forked child could hold one).
    fn wait_streams_closed(&self, timeout: Duration) {
        let state = self.log.state.lock().unwrap();
        let _ = self
            .log
            .changed
            .wait_timeout_while(state, timeout, |s| s.open_streams > 0)
            .unwrap();
    }

    /// Everything the agent has printed so far (stdout and stderr, tagged).
    /// Runs `change`, then waits (10 s at most) until the agent enforces a
    /// new policy generation.
    pub fn after_new_generation(&self, what: &str, change: impl FnOnce()) {
        let count = || self.log().matches(" enforced").count();
        let n = count();
        change();
        let start = Instant::now();
        while count() == n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no new policy generation after {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.log.text()
    }

    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    /// The agent's unix socket (`--socket`), where /flows, /events and
    /// /status are served.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` and waits (bounded) for the agent to exit; its pins
    /// stay (the caller owns their cleanup from here).
    pub fn stop_keeping_pins(&mut self, signal: libc::c_int) -> std::process::ExitStatus {
        self.keep_pins = true;
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + TERM_GRACE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.wait_streams_closed(Duration::from_secs(1));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "netpol-agent did not exit on signal {signal}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn_reader<R: Read + Send + 'static>(stream: R, tag: &'static str, log: Arc<Log>) {
    log.state.lock().unwrap().open_streams += 1;
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut state = log.state.lock().unwrap();
            if line.contains(READY_MARKER) {
                state.ready = true;
            }
            state.lines.push(format!("[{tag}] {line}"));
            log.changed.notify_all();
        }
        log.state.lock().unwrap().open_streams -= 1;
        log.changed.notify_all();
    });
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + TERM_GRACE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("netpol-agent ignored SIGTERM for {TERM_GRACE:?}; killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        self.wait_streams_closed(Duration::from_secs(1));
        for dir in [&self.socket_dir, &self.state_dir].into_iter().flatten() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if !self.keep_pins && self.pin_path.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pin_path) {
                eprintln!("warning: cannot remove {}: {e}", self.pin_path.display());
            }
        }
    }
}

/// The agent binary: NETPOL_AGENT_BIN, else `netpol-agent` in the profile
/// directory this binary runs from (tests run from its `deps/`, bins from it).
pub fn agent_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NETPOL_AGENT_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .unwrap_or_else(|| panic!("unexpected binary location {}", exe.display()));
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let bin = profile_dir.join("netpol-agent");
    if !bin.is_file() {
        panic!(
            "{} not found: build it first: cargo build -p netpol-agent (cargo xtask test does this)",
            bin.display()
        );
    }
    bin
}

/// Mounts bpffs at /sys/fs/bpf unless it already is (it is not by default on
/// these machines), so the agent can pin maps.
pub fn ensure_bpffs() {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, point, fstype) = (f.next(), f.next(), f.next());
        point == Some(BPFFS) && fstype == Some("bpf")
    });
    if !mounted {
        std::fs::create_dir_all(BPFFS).expect("create /sys/fs/bpf");
        run_checked(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]));
    }
}
