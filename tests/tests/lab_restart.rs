//! The agent's lifecycle on a node: enforcement outlives the process (kill -9
//! and SIGTERM leave it in place), a restarted agent adopts the pinned links
//! and maps (conntrack and counters carry over, even into a resized map) and
//! switches the links to its own programs without a gap, `uninstall` takes
//! everything away, and pod interfaces that come and go are followed live.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use netpol_agent::bpffs::linkinfo;
use netpol_tests::observe::cli_json_at;
use netpol_tests::{
    agent_bin, check, check_all, connect_from, require_root, serve, AgentProcess, Edge, Family::V4,
    Lab, Mode, Proto::Tcp, ALLOWED_TIMEOUT, DENIED_TIMEOUT,
};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/localplus-cidr");

/// Removes a scratch directory, whatever happens.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes a pin directory the agents left behind, whatever happens.
struct PinsGuard(PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn ping_pong(stream: &mut TcpStream, n: u64) -> std::io::Result<()> {
    let msg = format!("ping {n}\n");
    stream.write_all(msg.as_bytes())?;
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got)?;
    if got != msg.as_bytes() {
        return Err(std::io::Error::other("echo mismatch"));
    }
    Ok(())
}

/// Keeps one established flow busy (a round trip every 20 ms) until dropped,
/// recording every round trip that failed.
struct SteadyTraffic {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<(u64, Vec<String>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SteadyTraffic {
    fn start(mut stream: TcpStream) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new((0u64, Vec::new())));
        let (s, st) = (stop.clone(), stats.clone());
        // Bounded: stops when asked, and after 120 s whatever happens.
        let deadline = Instant::now() + Duration::from_secs(120);
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                n += 1;
                match ping_pong(&mut stream, n) {
                    Ok(()) => st.lock().unwrap().0 += 1,
                    Err(e) => {
                        st.lock().unwrap().1.push(format!("round trip {n}: {e}"));
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            stats,
            thread: Some(thread),
        }
    }

    /// Round trips so far; panics if any failed.
    fn ok_so_far(&self, when: &str) -> u64 {
        let (ok, errs) = &*self.stats.lock().unwrap();
        assert!(
            errs.is_empty(),
            "the established flow broke {when}: {errs:?}"
        );
        *ok
    }

    /// Waits until `more` further round trips succeeded (bounded).
    fn advance(&self, more: u64, when: &str) {
        let target = self.ok_so_far(when) + more;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ok_so_far(when) < target {
            assert!(
                Instant::now() < deadline,
                "the established flow stalled {when}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SteadyTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Packets the agent's counters say passed (from its pinned maps).
fn passed(pins: &Path) -> u64 {
    pass_rows(pins)
        .iter()
        .map(|r| r["packets"].as_u64().unwrap())
        .sum()
}

/// Packets passed per rule name (from the agent's pinned maps).
fn per_rule(pins: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    for r in pass_rows(pins) {
        if let Some(rule) = r["rule"].as_str().filter(|s| !s.is_empty()) {
            *by.entry(rule.to_owned()).or_default() += r["packets"].as_u64().unwrap();
        }
    }
    by
}

/// The `pass` rows of `stats --json`.
fn pass_rows(pins: &Path) -> Vec<serde_json::Value> {
    let rows = cli_json_at(pins, &["stats", "--json"]);
    rows.as_array()
        .expect("stats --json is an array")
        .iter()
        .filter(|r| r["verdict"] == "pass")
        .cloned()
        .collect()
}

/// The example policy with its files loaded in reverse order, so every rule
/// gets another position (and, numbered afresh, another id).
fn reordered_example(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(EXAMPLE)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (i, f) in files.iter().rev().enumerate() {
        let name = f.file_name().unwrap().to_string_lossy();
        std::fs::copy(f, dir.join(format!("{i}-{name}"))).unwrap();
    }
}

fn assert_denied(lab: &Lab, edge: &Edge, when: &str) {
    let r = check(lab, edge, DENIED_TIMEOUT);
    assert!(
        r.as_ref().is_err_and(|e| e.is_timeout()),
        "{edge} must stay denied {when}, got {r:?}"
    );
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn enforcement_survives_kill_restart_upgrade_and_goes_with_uninstall() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let pins = AgentProcess::new_pin_path();
    let _guard = PinsGuard(pins.clone());
    let ifaces: Vec<&str> = lab.node_ifaces.iter().map(String::as_str).collect();
    // The first two agents judge ingress with XDP; the third moves to the
    // default hook of a veth, TCX, under the same traffic.
    let xdp = ["--ingress-hook", "xdp"];
    let mut first =
        AgentProcess::spawn_custom(&lab, Path::new(EXAMPLE), &ifaces, Some(&pins), &xdp);

    let allowed = Edge::allow("gateway", "ledger-a", V4, Tcp, 8080);
    let denied = Edge::deny("world", "ledger-a", V4, Tcp, 8080);
    let allowed_new = Edge::allow("gateway", "wallet", V4, Tcp, 8080);
    let _servers = serve(&lab, &[allowed, allowed_new]);
    let (gw, ledger) = (lab.ep("gateway"), lab.ep("ledger-a"));
    let (src, dst) = (gw.ip(V4), ledger.sock(V4, 8080));
    let stream = gw
        .ns
        .run_in(move || connect_from(src, dst, ALLOWED_TIMEOUT))
        .unwrap_or_else(|e| panic!("gateway -> ledger-a:8080: {e}\n{}", first.log()));
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let traffic = SteadyTraffic::start(stream);
    traffic.advance(5, "with the first agent");
    assert_denied(&lab, &denied, "with the first agent");

    let xdp_pin = pins.join("links/lxcledgera:xdp-drv");
    let before = linkinfo::pinned_link_info(&xdp_pin)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", xdp_pin.display(), first.log()));
    let passed_before = passed(&pins);
    let rules_before = per_rule(&pins);
    assert!(
        !rules_before.is_empty(),
        "no per-rule counts\n{}",
        first.log()
    );

    // kill -9: no chance to clean up, nothing may open.
    first.stop_keeping_pins(libc::SIGKILL);
    traffic.advance(10, "while no agent runs");
    assert_denied(&lab, &denied, "while no agent runs");
    check(&lab, &allowed_new, ALLOWED_TIMEOUT)
        .unwrap_or_else(|e| panic!("a new allowed flow must open while no agent runs: {e}"));

    // The next agent comes up with a bigger conntrack map and the same rules
    // in another order: it adopts the links (switching them to its
    // programs), carries conntrack over, and keeps each rule's id.
    let reordered = std::env::temp_dir().join(format!("netpol-reordered-{}", std::process::id()));
    let _reordered_guard = DirGuard(reordered.clone());
    reordered_example(&reordered);
    let mut second = AgentProcess::spawn_custom(
        &lab,
        &reordered,
        &ifaces,
        Some(&pins),
        &["--ct-max", "262144", "--ingress-hook", "xdp"],
    );
    let log = second.log();
    assert!(log.contains("adopted pinned state"), "{log}");
    assert!(log.contains("map CT4: carried"), "{log}");
    assert!(log.contains("adopted from pinned links"), "{log}");
    let after = linkinfo::pinned_link_info(&xdp_pin).unwrap();
    assert_eq!(
        after.id, before.id,
        "the link must be updated, not replaced"
    );
    assert_ne!(
        after.prog_id, before.prog_id,
        "the link must run the new agent's program"
    );
    traffic.advance(10, "across the upgrade");
    assert_denied(&lab, &denied, "after the restart");
    let passed_after = passed(&pins);
    assert!(
        passed_after > passed_before,
        "counters must carry on from {passed_before}, got {passed_after}"
    );
    let rules_after = per_rule(&pins);
    // All allowed traffic here is gateway -> services: counts credited to
    // any other rule would mean ids moved under the adopted counters.
    assert_eq!(
        rules_after.keys().collect::<Vec<_>>(),
        rules_before.keys().collect::<Vec<_>>(),
        "{rules_before:?} -> {rules_after:?}"
    );
    for (rule, before) in &rules_before {
        let after = rules_after.get(rule).copied().unwrap_or(0);
        assert!(
            after >= *before,
            "rule {rule}: {before} packets before the restart, {after} after\n{rules_after:?}"
        );
    }

    // SIGTERM is a restart, not an uninstall.
    let status = second.stop_keeping_pins(libc::SIGTERM);
    assert!(status.success(), "{status}\n{}", second.log());
    traffic.advance(5, "after SIGTERM");
    assert_denied(&lab, &denied, "after SIGTERM");

    // An agent of another layout version finds maps it must not read: it
    // builds its own beside them, switches the links, then removes the old.
    let current = pins.join(format!("maps-v{}", agent_common::LAYOUT_VERSION));
    let older = pins.join("maps-v0");
    std::fs::rename(&current, &older).unwrap();
    let mut third = AgentProcess::spawn_custom(&lab, Path::new(EXAMPLE), &ifaces, Some(&pins), &[]);
    assert!(current.is_dir() && !older.exists(), "{}", third.log());
    assert!(
        third.log().contains("maps of another layout version"),
        "{}",
        third.log()
    );
    // The ingress moved from XDP to TCX: the new link runs before the old
    // one goes.
    let tcx_pin = pins.join("links/lxcledgera:tcx-in");
    let tcx = linkinfo::pinned_link_info(&tcx_pin)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", tcx_pin.display(), third.log()));
    assert_eq!(tcx.link_type, linkinfo::LINK_TYPE_TCX);
    assert!(!xdp_pin.exists(), "{}", third.log());
    wait_until("the XDP link to go", Duration::from_secs(3), || {
        !linkinfo::link_exists(before.id)
    });
    // Conntrack starts empty; the flow's next packet from the gateway is
    // allowed by policy and re-creates its entry.
    traffic.advance(5, "across a layout change");
    assert_denied(&lab, &denied, "after a layout change");
    let status = third.stop_keeping_pins(libc::SIGTERM);
    assert!(status.success(), "{status}\n{}", third.log());

    let out = std::process::Command::new(agent_bin())
        .args(["uninstall", "--pin-path"])
        .arg(&pins)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "uninstall: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("removed {} links", 2 * ifaces.len())),
        "{text}"
    );
    assert!(!pins.exists(), "uninstall must remove {}", pins.display());
    wait_until("the TCX link to go", Duration::from_secs(3), || {
        !linkinfo::link_exists(tcx.id)
    });
    check(
        &lab,
        &Edge::allow("world", "ledger-a", V4, Tcp, 8080),
        ALLOWED_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("after uninstall nothing is enforced any more: {e}"));
    traffic.ok_so_far("after uninstall");
}

#[test]
fn pod_interfaces_are_followed_live() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::localplus();
    // Only pod interfaces: whatever a new pod's traffic meets is its own veth.
    // XDP asked for: veth takes native XDP at a jumbo MTU only from a program
    // that handles multi-buffer frames, as the agent's does.
    let agent = AgentProcess::spawn_custom(
        &lab,
        Path::new(EXAMPLE),
        &["lxc*"],
        None,
        &["--ingress-hook", "xdp"],
    );
    let pins = agent.pin_path().to_owned();

    lab.add_pod("newpod", "lxcnewpod", "10.0.3.20", "fd00:0:3::20", None);
    lab.add_pod(
        "jumbopod",
        "lxcjumbo",
        "10.0.3.21",
        "fd00:0:3::21",
        Some(9000),
    );
    let (xdp, tc) = (
        pins.join("links/lxcnewpod:xdp-drv"),
        pins.join("links/lxcnewpod:tc"),
    );
    let (jumbo_xdp, jumbo_tc) = (
        pins.join("links/lxcjumbo:xdp-drv"),
        pins.join("links/lxcjumbo:tc"),
    );
    wait_until(
        "the agent to attach to the new pods",
        Duration::from_secs(5),
        || xdp.exists() && tc.exists() && jumbo_xdp.exists() && jumbo_tc.exists(),
    );
    assert!(
        !agent.log().contains("native XDP refused"),
        "{}",
        agent.log()
    );
    let edges = [
        Edge::allow("gateway", "newpod", V4, Tcp, 8080),
        Edge::deny("newpod", "world", V4, Tcp, 8080),
        Edge::deny("world", "newpod", V4, Tcp, 8080),
        Edge::allow("gateway", "jumbopod", V4, Tcp, 8080),
        Edge::deny("jumbopod", "world", V4, Tcp, 8080),
        Edge::deny("world", "jumbopod", V4, Tcp, 8080),
    ];
    let servers = serve(&lab, &edges);
    let wrong = check_all(&lab, &edges, Mode::Enforced);
    assert!(wrong.is_empty(), "{wrong:#?}\n{}", agent.log());

    drop(servers);
    lab.remove_pod("newpod", "lxcnewpod");
    wait_until(
        "the agent to forget lxcnewpod",
        Duration::from_secs(5),
        || !xdp.exists() && !tc.exists(),
    );
    assert!(
        agent.log().contains("lxcnewpod: gone or no longer matched"),
        "{}",
        agent.log()
    );
    // The rest of the node is still enforced.
    let rest = [Edge::deny("world", "ledger-a", V4, Tcp, 8080)];
    let _servers = serve(&lab, &[Edge::allow("gateway", "ledger-a", V4, Tcp, 8080)]);
    let wrong = check_all(&lab, &rest, Mode::Enforced);
    assert!(wrong.is_empty(), "{wrong:#?}\n{}", agent.log());
}

/// Two agents on one pin directory would interleave their policy swaps: a
/// second one (a DaemonSet surge pod) waits until the first has exited.
#[test]
fn a_second_agent_waits_for_the_first() {
    if !require_root() {
        return;
    }
    let lab = Arc::new(Lab::localplus());
    let pins = AgentProcess::new_pin_path();
    let _guard = PinsGuard(pins.clone());
    let ifaces: Vec<String> = lab.node_ifaces.clone();
    let mut first = AgentProcess::spawn_custom(
        &lab,
        Path::new(EXAMPLE),
        &as_strs(&ifaces),
        Some(&pins),
        &[],
    );
    let (lab2, pins2) = (lab.clone(), pins.clone());
    let second = std::thread::spawn(move || {
        let agent = AgentProcess::spawn_custom(
            &lab2,
            Path::new(EXAMPLE),
            &as_strs(&ifaces),
            Some(&pins2),
            &[],
        );
        (agent, Instant::now())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!second.is_finished(), "the second agent must wait");
    first.stop_keeping_pins(libc::SIGTERM);
    let stopped = Instant::now();
    let (second, ready) = second.join().expect("second agent");
    assert!(
        ready >= stopped,
        "the second agent was ready before the first exited"
    );
    // The wait names the pin directory and the agent holding it.
    let waited = format!(
        "another netpol-agent holds {} (pid {}",
        pins.display(),
        first.pid()
    );
    assert!(second.log().contains(&waited), "{}", second.log());
}

/// `netpol-agent ARGS` in the lab's node namespace, bounded to 30 s.
fn run_in_node(lab: &Lab, args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new("nsenter")
        .arg(format!("--net={}", lab.node.path().display()))
        .arg("--")
        .arg(agent_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start netpol-agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "netpol-agent {args:?} still running after 30 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A second agent that cannot take the pin directory in time gives up with
/// the holder named; so does `uninstall` while an agent runs.
#[test]
fn a_second_agent_gives_up_after_its_wait_and_names_the_holder() {
    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let first = AgentProcess::spawn(&lab, Path::new(EXAMPLE), &[]);
    let pins = first.pin_path().to_str().unwrap().to_owned();
    let holder = format!("another netpol-agent holds {pins} (pid {}", first.pid());
    let sock_dir = DirGuard(std::env::temp_dir().join(format!(
        "netpol-sock-{}",
        netpol_tests::netns::unique_suffix()
    )));
    std::fs::create_dir(&sock_dir.0).unwrap();
    let socket = sock_dir.0.join("agent.sock");
    let ifaces: Vec<String> = lab
        .node_ifaces
        .iter()
        .map(|i| format!("--iface={i}"))
        .collect();
    let mut args = vec!["run", "--policy-dir", EXAMPLE, "--pin-path", &pins];
    args.extend(ifaces.iter().map(String::as_str));
    args.extend([
        "--lock-wait-secs",
        "1",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    let started = Instant::now();
    let out = run_in_node(&lab, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&holder), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "{err}");

    let out = run_in_node(&lab, &["uninstall", "--pin-path", &pins]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&holder) && err.contains("stop it first"),
        "{err}"
    );
    assert!(
        Path::new(&pins).exists(),
        "uninstall removed a running agent's pins"
    );
}

/// Any hostNetwork process can bind an abstract unix socket name; the name
/// earlier agents locked with must not keep an agent from starting.
#[test]
fn a_squatter_on_the_old_abstract_lock_name_does_not_block_the_agent() {
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::net::{SocketAddr, UnixListener};

    if !require_root() {
        return;
    }
    let lab = Lab::localplus();
    let pins = AgentProcess::new_pin_path();
    let _guard = PinsGuard(pins.clone());
    let mut name = b"netpol-agent:".to_vec();
    name.extend_from_slice(pins.as_os_str().as_encoded_bytes());
    // Held in the node's network namespace, where the agent runs.
    let _squatter = lab
        .node
        .run_in(|| UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name)?))
        .expect("bind the abstract name");
    let ifaces: Vec<String> = lab.node_ifaces.clone();
    // Panics (with the log) unless the agent is ready within 20 s.
    let agent = AgentProcess::spawn_custom(
        &lab,
        Path::new(EXAMPLE),
        &as_strs(&ifaces),
        Some(&pins),
        &[],
    );
    assert!(
        !agent.log().contains("another netpol-agent"),
        "{}",
        agent.log()
    );
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
