//! Hot reload under traffic (issue 3, item 8) and rejection of a bad reload,
//! with the real agent in the node-shaped lab.
//!
//! Two policies, A (examples/localplus) and B (A plus merchant -> wallet
//! 50051/tcp, minus prometheus -> services 8080/tcp), are swapped 200 times by
//! rewriting the policy directory atomically and sending SIGHUP, while:
//! - one long-lived TCP connection gateway -> ledger-a:8080 (allowed by both)
//!   exchanges small messages in a tight loop and must never stall or lose one;
//! - short TCP and UDP exchanges on edges allowed by both must all succeed;
//! - connection attempts on an edge denied by both must all go unanswered.
//!
//! The agent's drop counters then have to account for every dropped packet:
//! one SYN per denied attempt and nothing else.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netpol_tests::Family::V4;
use netpol_tests::{
    agent_bin, require_root, tcp_exchange, udp_exchange, AgentProcess, Endpoint, ExchangeError,
    Lab, Netns, UdpEcho, ALLOWED_TIMEOUT, DENIED_TIMEOUT,
};

/// Policy swaps in `reload_under_traffic`.
const SWAPS: u32 = 200;
/// Longest a message of the steady flow may take to come back.
const STEADY_TIMEOUT: Duration = Duration::from_secs(1);
/// A round trip this slow on a veth means a retransmission (min RTO is 200 ms).
const STEADY_SLOW: Duration = Duration::from_millis(150);
/// Wait on edges denied by both policies. Shorter than the initial SYN RTO
/// (1 s), so every attempt sends exactly one SYN.
const DENIED_WAIT: Duration = Duration::from_millis(300);
/// Bound on one reload (SIGHUP to "policy generation N enforced").
const RELOAD_WAIT: Duration = Duration::from_secs(5);
/// Bound on the whole swap phase.
const SWAP_PHASE_BUDGET: Duration = Duration::from_secs(60);
/// Pause between short connections: keeps TIME_WAIT ports and server threads
/// bounded (a few thousand over the run).
const SHORT_PACE: Duration = Duration::from_millis(5);
/// After a probe connection, its close handshake must be over before the next
/// swap, or a swap that revokes its rule would (rightly) drop the last ACK.
const AFTER_PROBE: Duration = Duration::from_millis(30);
/// Pauses between swaps, cycled; zeros make back-to-back swaps.
const GAPS_MS: [u64; 8] = [0, 10, 40, 80, 120, 0, 60, 20];

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Variant {
    name: &'static str,
    /// (file name, contents), every file of the directory.
    files: Vec<(String, String)>,
}

impl Variant {
    fn file(&self, name: &str) -> &str {
        &self
            .files
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("variant {} has no {name}", self.name))
            .1
    }

    fn with_file(&self, name: &'static str, file: &str, text: String) -> Variant {
        let mut v = self.clone();
        v.name = name;
        let slot = v
            .files
            .iter_mut()
            .find(|(n, _)| n == file)
            .unwrap_or_else(|| panic!("no {file} to replace"));
        slot.1 = text;
        v
    }
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus")
}

/// A: the LOCAL-PLUS example policy as it is.
fn variant_a() -> Variant {
    let mut files: Vec<(String, String)> = fs::read_dir(examples_dir())
        .expect("read examples/localplus")
        .map(|e| e.expect("examples entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, text)
        })
        .collect();
    files.sort();
    assert!(
        files.iter().any(|(n, _)| n == "services.yaml")
            && files.iter().any(|(n, _)| n == "platform.yaml"),
        "examples/localplus changed: services.yaml and platform.yaml expected, found {:?}",
        files.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    Variant { name: "A", files }
}

/// Appends a rule to a file whose last top-level key is `rules:`.
fn append_rule(text: &str, rule: &str) -> String {
    let mut out = text.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(rule);
    out
}

// Not a `\`-continued literal: that would strip the YAML indentation.
const MERCHANT_TO_WALLET: &str = concat!(
    "  # Variant B only: merchant calls wallet over gRPC.\n",
    "  - name: merchant-to-wallet\n",
    "    from: svc-merchant\n",
    "    to: svc-wallet\n",
    "    ports: [50051/tcp]\n",
);

/// B: A plus merchant -> wallet 50051/tcp, minus prometheus -> services
/// 8080/tcp. Gateway -> services, ledger -> wallet and DNS are in both.
fn variant_b(a: &Variant) -> Variant {
    let services = append_rule(a.file("services.yaml"), MERCHANT_TO_WALLET);
    let platform = a.file("platform.yaml");
    let mut kept = Vec::new();
    let mut skipping = false;
    let mut removed = false;
    for line in platform.lines() {
        if line.trim_start().starts_with("- name:") {
            skipping = line.trim() == "- name: prometheus-scrape";
            removed |= skipping;
        } else if skipping && !line.starts_with("    ") {
            skipping = false;
        }
        if !skipping {
            kept.push(line);
        }
    }
    assert!(
        removed,
        "examples/localplus/platform.yaml has no rule prometheus-scrape to drop for variant B"
    );
    let platform = kept.join("\n") + "\n";
    a.with_file("B", "services.yaml", services)
        .with_file("B", "platform.yaml", platform)
}

/// A policy directory under the temp dir, removed on drop.
struct PolicyDir {
    path: PathBuf,
}

impl PolicyDir {
    fn new(label: &str) -> PolicyDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "netpol-reload-{}-{}-{label}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        PolicyDir { path }
    }

    /// Writes each file to a dot-name (which the agent skips), then renames it
    /// over the real one, so a reader sees the old file or the new, never half.
    fn install(&self, files: &[(String, String)]) {
        for (name, text) in files {
            self.install_file(name, text);
        }
    }

    fn install_file(&self, name: &str, text: &str) {
        let tmp = self.path.join(format!(".{name}.tmp"));
        let dst = self.path.join(name);
        fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, &dst)
            .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), dst.display()));
    }
}

impl Drop for PolicyDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// `netpol-agent check` must accept the variant, so a rejected reload later
/// can only be the agent's fault.
fn assert_valid(v: &Variant) {
    let dir = PolicyDir::new(&format!("check-{}", v.name));
    dir.install(&v.files);
    let out = Command::new(agent_bin())
        .arg("check")
        .arg(&dir.path)
        .output()
        .expect("run netpol-agent check");
    assert!(
        out.status.success(),
        "variant {} does not pass `netpol-agent check`:\n{}{}",
        v.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Agent: signals, log, counters
// ---------------------------------------------------------------------------

fn sighup(agent: &AgentProcess) {
    // SAFETY: signalling our own, unreaped child.
    let rc = unsafe { libc::kill(agent.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(
        rc,
        0,
        "kill -HUP {}: {}",
        agent.pid(),
        io::Error::last_os_error()
    );
}

/// The numbers N of every "policy generation N" in the log (the ready line
/// and each "policy generation N enforced").
fn generations(log: &str) -> Vec<u32> {
    let key = "policy generation ";
    log.match_indices(key)
        .filter_map(|(i, _)| {
            let rest = &log[i + key.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

fn latest_generation(log: &str) -> u32 {
    generations(log)
        .into_iter()
        .max()
        .unwrap_or_else(|| panic!("no policy generation in the agent log:\n{log}"))
}

/// Lines logging a successful reload.
fn enforced_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("policy generation ") && l.trim_end().ends_with(" enforced"))
        .count()
}

fn reload_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("reload rejected") || l.contains("reload failed"))
        .collect()
}

/// What the reload triggered by one SIGHUP did.
#[derive(Debug)]
enum Outcome {
    /// "policy generation N enforced".
    Enforced(u32),
    /// "reload rejected ..." or "reload failed ...", with the lines after it
    /// (an error may span several).
    Refused(String),
}

/// Sends SIGHUP and waits (bounded) for the outcome of the reload it caused:
/// the first outcome line after the agent's next "SIGHUP: reloading" line.
/// The agent also reloads on inotify events; tying the outcome to the SIGHUP
/// line keeps such extra reloads from passing for this one.
fn reload(agent: &mut AgentProcess) -> Result<(Outcome, Duration), String> {
    let skip = agent.log().lines().count();
    let start = Instant::now();
    sighup(agent);
    loop {
        let log = agent.log();
        let new: Vec<&str> = log.lines().skip(skip).collect();
        if let Some(at) = new.iter().position(|l| l.contains("SIGHUP: reloading")) {
            for (i, l) in new.iter().enumerate().skip(at + 1) {
                if l.contains("reload rejected") || l.contains("reload failed") {
                    return Ok((Outcome::Refused(new[i..].join("\n")), start.elapsed()));
                }
                if l.trim_end().ends_with(" enforced") {
                    if let Some(&gen) = generations(l).first() {
                        return Ok((Outcome::Enforced(gen), start.elapsed()));
                    }
                }
            }
        }
        if !agent.is_running() {
            return Err(format!("agent exited after SIGHUP:\n{}", new.join("\n")));
        }
        if start.elapsed() > RELOAD_WAIT {
            return Err(format!(
                "no reload outcome within {RELOAD_WAIT:?} of SIGHUP; log since:\n{}",
                new.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

type Counters = BTreeMap<(String, String, String), u64>;

/// `netpol-agent stats --json`: packets by (direction, verdict, reason).
fn counters(agent: &AgentProcess) -> Counters {
    let rows = netpol_tests::observe::cli_json(agent, &["stats", "--json"]);
    let rows = rows
        .as_array()
        .expect("stats --json output is a JSON array");
    rows.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (
                (s("direction"), s("verdict"), s("reason")),
                r["packets"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn drop_total(c: &Counters) -> u64 {
    c.iter()
        .filter(|((_, verdict, _), _)| verdict != "pass")
        .map(|(_, n)| n)
        .sum()
}

/// Waits (bounded) until the drop counters have not moved for `QUIET`, and
/// returns the counters then, with how many drops the wait saw. A fresh lab's
/// interfaces send MLD reports (ICMPv6 143 to ff02::16, retransmitted up to a
/// second later) that the policy drops; they must not be charged to a reload.
fn settled_counters(agent: &AgentProcess) -> (Counters, u64) {
    const QUIET: Duration = Duration::from_millis(1500);
    const BOUND: Duration = Duration::from_secs(6);
    let start = Instant::now();
    let first = counters(agent);
    let mut last = first.clone();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < QUIET && start.elapsed() < BOUND {
        std::thread::sleep(Duration::from_millis(100));
        let now = counters(agent);
        if drop_total(&now) != drop_total(&last) {
            quiet_since = Instant::now();
        }
        last = now;
    }
    let seen = drop_total(&last) - drop_total(&first);
    (last, seen)
}

fn delta(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn show(c: &Counters) -> String {
    c.iter()
        .map(|((dir, verdict, reason), n)| format!("  {dir:<8} {verdict:<6} {reason:<20} {n}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------

/// TCP echo server that echoes every connection until EOF, remembers every
/// peer, and keeps the server side of connections from `keep_from` open for
/// `tcp_info` (other connections are closed as soon as the peer closes, so a
/// probe's close handshake is over quickly).
struct Echo {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    kept: Arc<Mutex<Vec<TcpStream>>>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl Echo {
    fn spawn(ns: &Netns, addr: SocketAddr, keep_from: Option<IpAddr>) -> Echo {
        let listener = ns
            .run_in(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()));
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (listener, stop, kept, peers) =
                (listener.clone(), stop.clone(), kept.clone(), peers.clone());
            std::thread::Builder::new()
                .name(format!("echo {addr}"))
                .spawn(move || {
                    let mut workers = Vec::new();
                    loop {
                        let accepted = listener.accept();
                        if stop.load(Ordering::SeqCst) {
                            return workers;
                        }
                        let Ok((stream, peer)) = accepted else {
                            continue;
                        };
                        peers.lock().unwrap().push(peer);
                        if Some(peer.ip()) == keep_from {
                            if let Ok(c) = stream.try_clone() {
                                kept.lock().unwrap().push(c);
                            }
                        }
                        let stop = stop.clone();
                        workers.push(std::thread::spawn(move || echo_until_eof(stream, &stop)));
                    }
                })
                .expect("spawn echo acceptor")
        };
        Echo {
            listener,
            stop,
            kept,
            peers,
            acceptor: Some(acceptor),
        }
    }

    fn peers_from(&self, ip: IpAddr) -> usize {
        self.peers
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.ip() == ip)
            .count()
    }

    /// `tcp_info` of every kept connection.
    fn kept_info(&self) -> Vec<io::Result<libc::tcp_info>> {
        self.kept.lock().unwrap().iter().map(tcp_info).collect()
    }
}

fn echo_until_eof(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    // Short read timeouts only to notice `stop`; the connection itself may
    // stay idle as long as the test likes.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket wakes the thread blocked in accept.
        // SAFETY: the fd stays open: `self.listener` holds it.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for c in self.kept.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            if let Ok(workers) = acceptor.join() {
                for w in workers {
                    let _ = w.join();
                }
            }
        }
    }
}

fn tcp_info(s: &TcpStream) -> io::Result<libc::tcp_info> {
    // SAFETY: all-zero is a valid tcp_info; getsockopt writes at most `len`.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A TCP connection from `src` (any port) to `dst`, made inside `ns`. The
/// harness only offers one-shot exchanges; the steady flow needs the stream.
fn connect_from(
    ns: &Netns,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    timeout: Duration,
) -> io::Result<TcpStream> {
    ns.run_in(move || {
        // SAFETY: plain syscalls on a descriptor owned right away.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
        // SO_SNDTIMEO also bounds a blocking connect(2).
        stream.set_write_timeout(Some(timeout))?;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let sa = sockaddr_in(SocketAddrV4::new(src, 0));
        // SAFETY: a valid sockaddr_in of length `len`.
        if unsafe { libc::bind(raw, &sa as *const _ as *const libc::sockaddr, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let sa = sockaddr_in(dst);
        // SAFETY: as above.
        if unsafe { libc::connect(raw, &sa as *const _ as *const libc::sockaddr, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(stream)
    })
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct SteadyReport {
    messages: u64,
    max_rtt: Duration,
    slow: u64,
    error: Option<String>,
}

/// Request/response on one connection until `stop`; stops at the first
/// timeout, short read or corrupted echo.
fn steady_loop(stream: &mut TcpStream, stop: &AtomicBool) -> SteadyReport {
    let mut r = SteadyReport::default();
    let mut seq: u64 = 0;
    let mut got = [0u8; 32];
    while !stop.load(Ordering::Relaxed) {
        let mut msg = [b'.'; 32];
        let text = format!("steady #{seq:020}\n");
        msg[..text.len()].copy_from_slice(text.as_bytes());
        let t = Instant::now();
        if let Err(e) = stream.write_all(&msg) {
            r.error = Some(format!("message {seq}: send: {e}"));
            break;
        }
        if let Err(e) = stream.read_exact(&mut got) {
            r.error = Some(format!(
                "message {seq}: no echo within {STEADY_TIMEOUT:?} ({e}, {:?}) after {:?}",
                e.kind(),
                t.elapsed()
            ));
            break;
        }
        let rtt = t.elapsed();
        if got != msg {
            r.error = Some(format!(
                "message {seq}: echo mismatch: {:?}",
                String::from_utf8_lossy(&got)
            ));
            break;
        }
        r.messages += 1;
        r.max_rtt = r.max_rtt.max(rtt);
        if rtt > STEADY_SLOW {
            r.slow += 1;
        }
        seq += 1;
    }
    r
}

#[derive(Debug, Default)]
struct ShortReport {
    ok: u64,
    failed: u64,
    first_failures: Vec<String>,
}

impl ShortReport {
    fn record(&mut self, what: &str, result: Result<(), ExchangeError>) {
        match result {
            Ok(()) => self.ok += 1,
            Err(e) => {
                self.failed += 1;
                if self.first_failures.len() < 5 {
                    self.first_failures.push(format!("{what}: {e}"));
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct DeniedReport {
    attempts: u64,
    silent: u64,
    /// Data echoed: the edge was open.
    succeeded: u64,
    /// Refused, reset or another error: something answered (or broke).
    answered: u64,
    first_bad: Vec<String>,
}

impl DeniedReport {
    fn record(&mut self, what: &str, result: Result<(), ExchangeError>) {
        self.attempts += 1;
        let bad = match result {
            Err(e) if e.is_timeout() => {
                self.silent += 1;
                None
            }
            Ok(()) => {
                self.succeeded += 1;
                Some("data was echoed".to_string())
            }
            Err(e) => {
                self.answered += 1;
                Some(e.to_string())
            }
        };
        if let Some(bad) = bad {
            if self.first_bad.len() < 5 {
                self.first_bad.push(format!("{what}: {bad}"));
            }
        }
    }
}

/// Sets the flag on drop, so a panicking reloader still stops the traffic
/// threads (and the scope joining them returns).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn reload_under_traffic() {
    if !require_root() {
        return;
    }
    let t_start = Instant::now();
    let a = variant_a();
    let b = variant_b(&a);
    assert_valid(&a);
    assert_valid(&b);
    let dir = PolicyDir::new("traffic");
    dir.install(&a.files);

    let lab = Lab::localplus();
    let (gateway, ledger, wallet) = (lab.ep("gateway"), lab.ep("ledger-a"), lab.ep("wallet"));
    let (world, coredns) = (lab.ep("world"), lab.ep("coredns"));
    let (prometheus, merchant) = (lab.ep("prometheus"), lab.ep("merchant"));
    let ledger_http = SocketAddrV4::new(ledger.v4, 8080);
    let wallet_grpc = SocketAddrV4::new(wallet.v4, 50051);
    // Keeps the server side of the steady flow (from the gateway) for tcp_info.
    let ledger_srv = Echo::spawn(&ledger.ns, ledger_http.into(), Some(IpAddr::V4(gateway.v4)));
    let wallet_srv = Echo::spawn(&wallet.ns, wallet_grpc.into(), None);
    let _dns = UdpEcho::spawn(&coredns.ns, coredns.sock(V4, 53));

    let mut agent = AgentProcess::spawn(&lab, &dir.path, &[]);
    let t_ready = t_start.elapsed();
    let gen_start = latest_generation(&agent.log());
    let enforced_start = enforced_lines(&agent.log());
    let (before, settle_drops) = settled_counters(&agent);

    // The steady flow is opened under A and must live through every swap.
    let mut steady = connect_from(&gateway.ns, gateway.v4, ledger_http, STEADY_TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "steady flow gateway -> {ledger_http}: cannot connect: {e}\n--- agent log ---\n{}",
                agent.log()
            )
        });

    // Edges that tell A and B apart, probed as swaps happen: the one allowed
    // only by the target variant must work as soon as its generation is
    // logged; the other one must be dropped.
    let only_a = (prometheus, ledger_http);
    let only_b = (merchant, wallet_grpc);
    let probe = |(from, to): (&Endpoint, SocketAddrV4), timeout| {
        tcp_exchange(&from.ns, IpAddr::V4(from.v4), to.into(), timeout)
    };

    let stop = AtomicBool::new(false);
    let mut probe_failures: Vec<String> = Vec::new();
    let mut reload_failure: Option<String> = None;
    let mut denied_probes = 0u64;
    let mut allowed_probes = 0u64;
    let mut swaps_done = 0u32;
    let mut reload_times: Vec<Duration> = Vec::new();
    let swap_phase = Instant::now();

    let (steady_report, short_tcp, short_udp, denied) = std::thread::scope(|s| {
        let steady_h = s.spawn(|| steady_loop(&mut steady, &stop));
        let short_tcp_h = s.spawn(|| {
            let mut r = ShortReport::default();
            while !stop.load(Ordering::Relaxed) {
                let res = tcp_exchange(
                    &ledger.ns,
                    IpAddr::V4(ledger.v4),
                    wallet_grpc.into(),
                    ALLOWED_TIMEOUT,
                );
                r.record("ledger-a -> wallet 50051/tcp", res);
                std::thread::sleep(SHORT_PACE);
            }
            r
        });
        let short_udp_h = s.spawn(|| {
            let mut r = ShortReport::default();
            while !stop.load(Ordering::Relaxed) {
                let res = udp_exchange(
                    &ledger.ns,
                    IpAddr::V4(ledger.v4),
                    coredns.sock(V4, 53),
                    ALLOWED_TIMEOUT,
                );
                r.record("ledger-a -> coredns 53/udp", res);
                std::thread::sleep(SHORT_PACE);
            }
            r
        });
        let denied_h = s.spawn(|| {
            let mut r = DeniedReport::default();
            while !stop.load(Ordering::Relaxed) {
                let res = tcp_exchange(
                    &world.ns,
                    IpAddr::V4(world.v4),
                    ledger_http.into(),
                    DENIED_WAIT,
                );
                r.record("world -> ledger-a 8080/tcp", res);
            }
            r
        });

        let _stop_guard = StopOnDrop(&stop);
        // Let every generator get going under A first.
        std::thread::sleep(Duration::from_millis(200));
        let mut gen = gen_start;
        for i in 1..=SWAPS {
            if swap_phase.elapsed() > SWAP_PHASE_BUDGET {
                reload_failure = Some(format!(
                    "swap phase over its {SWAP_PHASE_BUDGET:?} budget after {swaps_done} swaps"
                ));
                break;
            }
            let (target, here, gone) = if i % 2 == 1 {
                (&b, only_b, only_a)
            } else {
                (&a, only_a, only_b)
            };
            dir.install(&target.files);
            match reload(&mut agent) {
                Ok((Outcome::Enforced(g), t)) if g > gen => {
                    gen = g;
                    reload_times.push(t);
                }
                Ok((outcome, _)) => {
                    reload_failure = Some(format!(
                        "swap {i} (to {}), after generation {gen}: {outcome:?}",
                        target.name
                    ));
                    break;
                }
                Err(e) => {
                    reload_failure = Some(format!("swap {i} (to {}): {e}", target.name));
                    break;
                }
            }
            swaps_done = i;
            let mut gap = Duration::from_millis(GAPS_MS[i as usize % GAPS_MS.len()]);
            if i % 3 != 0 {
                allowed_probes += 1;
                if let Err(e) = probe(here, ALLOWED_TIMEOUT) {
                    probe_failures.push(format!(
                        "swap {i}: generation {gen} ({}): {} -> {} should be allowed: {e}",
                        target.name, here.0.name, here.1
                    ));
                }
                gap = gap.max(AFTER_PROBE);
            }
            if i <= 2 || i % 25 == 0 {
                denied_probes += 1;
                match probe(gone, DENIED_WAIT) {
                    Err(e) if e.is_timeout() => {}
                    other => probe_failures.push(format!(
                        "swap {i}: generation {gen} ({}): {} -> {} should be dropped, got {}",
                        target.name,
                        gone.0.name,
                        gone.1,
                        match other {
                            Ok(()) => "data echoed".to_string(),
                            Err(e) => e.to_string(),
                        }
                    )),
                }
            }
            std::thread::sleep(gap);
        }
        // Traffic goes on briefly under the last policy, then stops.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        (
            steady_h.join().expect("steady thread panicked"),
            short_tcp_h.join().expect("short tcp thread panicked"),
            short_udp_h.join().expect("short udp thread panicked"),
            denied_h.join().expect("denied thread panicked"),
        )
    });
    let swap_time = swap_phase.elapsed();

    let after = counters(&agent);
    let diff = delta(&before, &after);
    let client_info = tcp_info(&steady);
    let server_info = ledger_srv.kept_info();
    let log = agent.log();
    let reloads = enforced_lines(&log) - enforced_start;
    let by_inotify = log
        .lines()
        .filter(|l| l.contains("changed: reloading"))
        .count();
    let errors: Vec<String> = reload_errors(&log).into_iter().map(String::from).collect();
    let world_accepted = ledger_srv.peers_from(IpAddr::V4(world.v4));
    drop(steady);

    let drops_by_reason = |reason: &str| -> u64 {
        diff.iter()
            .filter(|((_, verdict, r), _)| verdict != "pass" && r == reason)
            .map(|(_, n)| n)
            .sum()
    };
    let other_drops: u64 = diff
        .iter()
        .filter(|((_, verdict, r), _)| verdict != "pass" && r != "policy-denied")
        .map(|(_, n)| n)
        .sum();
    let policy_denied = drops_by_reason("policy-denied");
    let revoked = drops_by_reason("revoked");
    // One SYN per denied attempt (each gives up before the SYN is retried).
    let expected_denied = denied.attempts + denied_probes;
    let retrans = |i: &io::Result<libc::tcp_info>| match i {
        Ok(i) => format!("{} (lost {})", i.tcpi_total_retrans, i.tcpi_lost),
        Err(e) => format!("unknown ({e})"),
    };
    let server_retrans: Vec<String> = server_info.iter().map(retrans).collect();
    let rt_max = reload_times.iter().max().copied().unwrap_or_default();
    let rt_mean = if reload_times.is_empty() {
        Duration::ZERO
    } else {
        reload_times.iter().sum::<Duration>() / reload_times.len() as u32
    };

    let report = format!(
        "reload_under_traffic: {swaps_done}/{SWAPS} swaps in {swap_time:.2?} \
         (agent ready after {t_ready:.2?}; total {:.2?})\n\
         successful reloads logged: {reloads} ({} after SIGHUP; {by_inotify} reloads \
         triggered by inotify), generation {gen_start} -> {}, reload errors: {}\n\
         reload latency (SIGHUP -> log): mean {rt_mean:.2?}, max {rt_max:.2?}\n\
         steady gateway -> ledger-a:8080: {} messages, max rtt {:.2?}, {} over {STEADY_SLOW:?}, \
         error: {:?}\n\
         steady retransmissions: client {}, server {:?}\n\
         short ledger-a -> wallet 50051/tcp: {} ok, {} failed {:?}\n\
         short ledger-a -> coredns 53/udp: {} ok, {} failed {:?}\n\
         denied world -> ledger-a 8080/tcp: {} attempts, {} silent, {} succeeded, {} answered {:?}; \
         accepted by the server: {world_accepted}\n\
         variant probes: {allowed_probes} allowed, {denied_probes} denied, failures: {:#?}\n\
         drops: policy-denied {policy_denied} (expected {expected_denied} = {} attempts + \
         {denied_probes} probes), revoked {revoked}, other non-policy drops {other_drops}\n\
         (drops while the fresh lab settled, before counting: {settle_drops})\n\
         counter deltas:\n{}",
        t_start.elapsed(),
        reload_times.len(),
        latest_generation(&log),
        errors.len(),
        steady_report.messages,
        steady_report.max_rtt,
        steady_report.slow,
        steady_report.error,
        retrans(&client_info),
        server_retrans,
        short_tcp.ok,
        short_tcp.failed,
        short_tcp.first_failures,
        short_udp.ok,
        short_udp.failed,
        short_udp.first_failures,
        denied.attempts,
        denied.silent,
        denied.succeeded,
        denied.answered,
        denied.first_bad,
        probe_failures,
        denied.attempts,
        show(&diff),
    );
    println!("{report}");

    let mut problems = Vec::new();
    if let Some(f) = &reload_failure {
        problems.push(f.clone());
    }
    if swaps_done != SWAPS {
        problems.push(format!("only {swaps_done} of {SWAPS} swaps done"));
    }
    if reload_times.len() != SWAPS as usize || reloads < SWAPS as usize {
        problems.push(format!(
            "{} SIGHUP reloads enforced ({reloads} successful reloads logged in all), \
             {SWAPS} expected",
            reload_times.len()
        ));
    }
    if !errors.is_empty() {
        problems.push(format!("reload errors logged:\n{}", errors.join("\n")));
    }
    if let Some(e) = &steady_report.error {
        problems.push(format!(
            "steady flow broke after {} messages: {e}",
            steady_report.messages
        ));
    }
    if steady_report.messages == 0 {
        problems.push("steady flow exchanged no message".into());
    }
    if short_tcp.failed > 0 || short_tcp.ok == 0 {
        problems.push(format!(
            "allowed ledger-a -> wallet 50051/tcp: {} failed, {} ok",
            short_tcp.failed, short_tcp.ok
        ));
    }
    if short_udp.failed > 0 || short_udp.ok == 0 {
        problems.push(format!(
            "allowed ledger-a -> coredns 53/udp: {} failed, {} ok",
            short_udp.failed, short_udp.ok
        ));
    }
    if denied.succeeded > 0 || denied.answered > 0 || denied.attempts == 0 || world_accepted > 0 {
        problems.push(format!(
            "denied world -> ledger-a 8080/tcp: {} succeeded, {} answered, {} attempts, \
             {world_accepted} accepted by the server",
            denied.succeeded, denied.answered, denied.attempts
        ));
    }
    if !probe_failures.is_empty() {
        problems.push(format!("{} variant probes failed", probe_failures.len()));
    }
    if revoked > 0 {
        problems.push(format!(
            "{revoked} packets dropped as revoked: no flow of this test loses its rule"
        ));
    }
    if other_drops > 0 {
        problems.push(format!(
            "{other_drops} packets dropped for reasons other than policy"
        ));
    }
    if policy_denied != expected_denied {
        problems.push(format!(
            "{policy_denied} packets dropped by policy, expected exactly {expected_denied} \
             (one SYN per denied attempt): an allowed packet was dropped, or a denied \
             SYN was let through"
        ));
    }
    let lost = |i: &io::Result<libc::tcp_info>| i.as_ref().map_or(0, |i| i.tcpi_total_retrans);
    if lost(&client_info) > 0 || server_info.iter().any(|i| lost(i) > 0) {
        problems.push(format!(
            "the steady flow retransmitted (client {}, server {:?}): a segment was lost",
            retrans(&client_info),
            server_retrans
        ));
    }
    if server_info.len() != 1 {
        problems.push(format!(
            "expected exactly one steady connection at the server, found {}",
            server_info.len()
        ));
    }
    assert!(
        problems.is_empty(),
        "reload under traffic failed:\n- {}\n\n{report}\n--- agent log (last 60 lines) ---\n{}",
        problems.join("\n- "),
        tail(&log, 60)
    );
    drop(wallet_srv);
}

#[test]
fn invalid_reload_keeps_last_good_policy() {
    if !require_root() {
        return;
    }
    let a = variant_a();
    let dir = PolicyDir::new("invalid");
    dir.install(&a.files);

    let lab = Lab::localplus();
    let (gateway, ledger, wallet) = (lab.ep("gateway"), lab.ep("ledger-a"), lab.ep("wallet"));
    let (world, merchant) = (lab.ep("world"), lab.ep("merchant"));
    let ledger_http = SocketAddrV4::new(ledger.v4, 8080);
    let wallet_grpc = SocketAddrV4::new(wallet.v4, 50051);
    let _ledger_srv = Echo::spawn(&ledger.ns, ledger_http.into(), None);
    let _wallet_srv = Echo::spawn(&wallet.ns, wallet_grpc.into(), None);

    let mut agent = AgentProcess::spawn(&lab, &dir.path, &[]);
    let gen0 = latest_generation(&agent.log());

    let exchange = |from: &Endpoint, to: SocketAddrV4, timeout| {
        tcp_exchange(&from.ns, IpAddr::V4(from.v4), to.into(), timeout)
    };
    let expect = |when: &str, log: &dyn Fn() -> String| {
        let allowed = exchange(gateway, ledger_http, ALLOWED_TIMEOUT);
        assert!(
            allowed.is_ok(),
            "{when}: gateway -> ledger-a 8080/tcp should be allowed: {}\n--- agent log ---\n{}",
            allowed.unwrap_err(),
            log()
        );
        for (from, to) in [(world, ledger_http), (merchant, wallet_grpc)] {
            match exchange(from, to, DENIED_TIMEOUT) {
                Err(e) if e.is_timeout() => {}
                other => panic!(
                    "{when}: {} -> {to} should be dropped, got {other:?}\n--- agent log ---\n{}",
                    from.name,
                    log()
                ),
            }
        }
    };
    expect("under A", &|| agent.log());

    // A new rule whose first port is fine and whose second is not: a reload
    // that applied the file partially would open merchant -> wallet 50051.
    let base = a.file("services.yaml");
    let rule_index = base
        .lines()
        .filter(|l| l.trim_start().starts_with("- name:"))
        .count();
    let broken_rule = concat!(
        "  - name: merchant-to-wallet\n",
        "    from: svc-merchant\n",
        "    to: svc-wallet\n",
        "    ports: [50051/tcp, \"70000/tcp\"]\n",
    );
    let broken = append_rule(base, broken_rule);
    let (line, col) = broken
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("\"70000/tcp\"").map(|c| (i + 1, c + 1)))
        .expect("the broken port is in the file");
    let want_at = format!("services.yaml:{line}:{col}: rules[{rule_index}].ports[1]");

    dir.install_file("services.yaml", &broken);
    let rejection = match reload(&mut agent) {
        Ok((Outcome::Refused(text), t)) => {
            println!("rejected after {t:.2?}: {text}");
            text
        }
        other => panic!(
            "SIGHUP with a broken file: expected \"reload rejected\", got {other:?}\n\
             --- agent log ---\n{}",
            agent.log()
        ),
    };
    assert!(
        rejection.contains("reload rejected")
            && rejection.contains(&want_at)
            && rejection.contains("70000"),
        "the rejection should be a \"reload rejected\" naming {want_at:?} and the bad value:\n\
         {rejection}"
    );
    let log = agent.log();
    assert!(agent.is_running(), "agent exited on a bad reload:\n{log}");
    assert_eq!(
        latest_generation(&log),
        gen0,
        "a rejected reload changed the policy generation:\n{log}"
    );
    expect("after the rejected reload", &|| agent.log());
    // The agent may also have reloaded on its own (inotify); every such
    // attempt on the broken directory must have been a rejection too.
    assert!(
        reload_errors(&agent.log())
            .iter()
            .all(|l| l.contains("reload rejected")),
        "a reload of the broken directory failed in another way than a rejection:\n{}",
        agent.log()
    );
    let rejections = reload_errors(&agent.log()).len();

    // Fixed: the rule keeps its valid port only, and is enforced.
    let fixed = append_rule(
        base,
        &broken_rule.replace("[50051/tcp, \"70000/tcp\"]", "[50051/tcp]"),
    );
    dir.install_file("services.yaml", &fixed);
    let gen1 = match reload(&mut agent) {
        Ok((Outcome::Enforced(g), _)) if g > gen0 => g,
        other => panic!(
            "SIGHUP after fixing the file: expected a new generation after {gen0}, got \
             {other:?}\n--- agent log ---\n{}",
            agent.log()
        ),
    };
    let now_allowed = exchange(merchant, wallet_grpc, ALLOWED_TIMEOUT);
    assert!(
        now_allowed.is_ok(),
        "generation {gen1} enforced but merchant -> wallet 50051/tcp (the fixed rule) fails: \
         {}\n--- agent log ---\n{}",
        now_allowed.unwrap_err(),
        agent.log()
    );
    let allowed = exchange(gateway, ledger_http, ALLOWED_TIMEOUT);
    assert!(
        allowed.is_ok(),
        "after the fix: gateway -> ledger-a 8080/tcp fails: {}",
        allowed.unwrap_err()
    );
    match exchange(world, ledger_http, DENIED_TIMEOUT) {
        Err(e) if e.is_timeout() => {}
        other => panic!("after the fix: world -> ledger-a should be dropped, got {other:?}"),
    }
    let log = agent.log();
    assert_eq!(
        reload_errors(&log).len(),
        rejections,
        "a reload failed after the directory was fixed:\n{log}"
    );
    println!(
        "invalid_reload_keeps_last_good_policy: rejected at {want_at} ({rejections} rejected \
         reloads), generation {gen0} kept, generation {gen1} enforced after the fix"
    );
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
