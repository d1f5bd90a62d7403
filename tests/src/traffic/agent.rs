//! netpol-agent driven through its real binary and CLI, in any lab namespace
//! (tests/src/agent.rs's AgentProcess is tied to the node-shaped lab).
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::agent::{agent_bin, ensure_bpffs, READY_MARKER};
use crate::netns::{unique_suffix, Netns};

/// The largest policy file the benchmark writes, with room to spare (the
/// agent's default limit is 1 MiB).
pub const POLICY_FILE_MAX: &str = "16MiB";

pub struct NetpolAgent {
    child: Child,
    pin_path: PathBuf,
    /// Holds the agent's unix socket; removed on drop.
    socket_dir: PathBuf,
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
}

/// Counter totals of the agent's XDP (ingress) program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub pass: u64,
    pub drop: u64,
}

impl NetpolAgent {
    /// `netpol-agent run --iface IFACE --policy-dir DIR` in `ns`, waiting up to
    /// `ready_within` for its ready marker.
    pub fn start(
        ns: &Netns,
        iface: &str,
        policy_dir: &Path,
        ready_within: Duration,
    ) -> anyhow::Result<NetpolAgent> {
        // The new-flow scenarios open flows from one source at line rate: a
        // bucket that never runs dry keeps the quota's cost in the
        // measurement without its drops.
        let burst = u32::MAX.to_string();
        Self::start_on(
            ns,
            &[iface],
            policy_dir,
            &[
                "--ct-source-burst",
                &burst,
                // 100,000 extra prefixes make a 2.3 MB file.
                "--file-size-max",
                POLICY_FILE_MAX,
                // The interface under test stands for the node's uplink, a
                // NIC, where native XDP is the default; a veth would get TCX.
                "--ingress-hook",
                "xdp",
            ],
            ready_within,
        )
    }

    /// `netpol-agent run` on every interface of `ifaces`, with `extra`
    /// arguments after the lab's own.
    pub fn start_on(
        ns: &Netns,
        ifaces: &[&str],
        policy_dir: &Path,
        extra: &[&str],
        ready_within: Duration,
    ) -> anyhow::Result<NetpolAgent> {
        ensure_bpffs();
        let pin_path =
            PathBuf::from("/sys/fs/bpf").join(format!("netpol-traffic-{}", unique_suffix()));
        // A socket of its own (the default one is the node's), in a
        // directory only root can enter: whoever reaches the socket can read
        // every flow.
        let socket_dir = PathBuf::from("/run").join(format!("netpol-traffic-{}", unique_suffix()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&socket_dir)
            .with_context(|| format!("creating {}", socket_dir.display()))?;
        let mut cmd = Command::new("nsenter");
        // nsenter execs the agent in the namespace but keeps the root mount
        // namespace, so the agent pins into the real bpffs.
        cmd.arg(format!("--net={}", ns.path().display()))
            .arg("--")
            .arg(agent_bin())
            .arg("run");
        for iface in ifaces {
            cmd.args(["--iface", iface]);
        }
        cmd.arg("--policy-dir")
            .arg(policy_dir)
            .arg("--pin-path")
            .arg(&pin_path)
            .arg("--socket")
            .arg(socket_dir.join("agent.sock"))
            // Its last good policy goes with its socket, not on the node.
            .arg("--state-dir")
            .arg(socket_dir.join("state"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&socket_dir);
                return Err(e).with_context(|| format!("starting {cmd:?}"));
            }
        };
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().context("agent stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = NetpolAgent {
            child,
            pin_path,
            socket_dir,
            log: rx,
            lines: Vec::new(),
        };
        let deadline = Instant::now() + ready_within;
        loop {
            match agent.log.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let ready = line.contains(READY_MARKER);
                    agent.lines.push(line);
                    if ready {
                        return Ok(agent);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "netpol-agent exited before it was ready:\n{}",
                        agent.lines.join("\n")
                    )
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "netpol-agent not ready within {ready_within:?}:\n{}",
                    agent.lines.join("\n")
                );
            }
        }
    }

    /// `netpol-agent stats --json`: totals of the ingress (XDP) counters.
    pub fn verdicts(&self) -> anyhow::Result<Verdicts> {
        let out = Command::new(agent_bin())
            .args(["stats", "--json", "--pin-path"])
            .arg(&self.pin_path)
            .output()
            .context("running netpol-agent stats")?;
        if !out.status.success() {
            bail!(
                "netpol-agent stats failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).context("parsing netpol-agent stats --json")?;
        let mut v = Verdicts::default();
        for r in rows {
            // The DUT's interface holds its default route: an uplink, whose
            // XDP hook counts what enters the node (`ingress`).
            if r["traffic"] != "ingress" {
                continue;
            }
            let n = r["packets"].as_u64().unwrap_or(0);
            match r["verdict"].as_str() {
                Some("pass") => v.pass += n,
                Some("drop") => v.drop += n,
                _ => {}
            }
        }
        Ok(v)
    }
}

impl NetpolAgent {
    /// The agent's `/status` document, read from its unix socket as raw
    /// JSON: fields this build's CLI does not know survive.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let sock = self.socket_dir.join("agent.sock");
        let mut stream = UnixStream::connect(&sock)
            .with_context(|| format!("connecting to {}", sock.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        // HTTP/1.0: the agent answers with the whole body and closes.
        stream.write_all(b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).context("reading /status")?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("GET /status: no header end in {text:?}"))?;
        if head.split_whitespace().nth(1) != Some("200") {
            bail!("GET /status answered {head:?}: {body}");
        }
        serde_json::from_str(body).context("parsing /status")
    }

    /// The hook judging traffic that enters `iface`, as the agent reports it.
    pub fn ingress_hook(&self, iface: &str) -> anyhow::Result<Option<String>> {
        Ok(ingress_hook_of(&self.status()?, iface))
    }

    /// Everything the agent has printed on stderr so far.
    pub fn log(&mut self) -> String {
        while let Ok(line) = self.log.try_recv() {
            self.lines.push(line);
        }
        self.lines.join("\n")
    }
}

/// `xdp-native`, `xdp-generic` or `tcx` for `iface` in a `/status`
/// document: its `hook` field where the agent names the hook, else derived
/// from its XDP attach mode (an agent that only attaches XDP at ingress).
pub fn ingress_hook_of(status: &serde_json::Value, iface: &str) -> Option<String> {
    let entry = status["attached"]
        .as_array()?
        .iter()
        .find(|a| a["interface"] == iface)?;
    if let Some(h) = entry["hook"].as_str().filter(|h| !h.is_empty()) {
        return Some(h.to_string());
    }
    match entry["xdp_mode"].as_str()? {
        "driver" | "native" => Some("xdp-native".into()),
        "generic" | "skb" => Some("xdp-generic".into()),
        _ => None,
    }
}

impl Drop for NetpolAgent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.socket_dir);
        if self.pin_path.exists() {
            let _ = std::fs::remove_dir_all(&self.pin_path);
        }
    }
}

/// A policy directory: the LOCAL-PLUS example plus, when `extra` > 0, a
/// `bench-extra` group of that many /32s in 172.16.0.0/12 allowed to
/// svc-wallet 9999/tcp (the same shape as the microbenchmark's).
pub struct PolicyDir {
    pub path: PathBuf,
}

impl PolicyDir {
    pub fn localplus_plus(extra: &[ipnet::IpNet]) -> anyhow::Result<PolicyDir> {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus-cidr");
        let path = std::env::temp_dir().join(format!("netpol-traffic-policy-{}", unique_suffix()));
        std::fs::create_dir_all(&path)?;
        let dir = PolicyDir { path };
        for entry in
            std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))?
        {
            let entry = entry?;
            std::fs::copy(entry.path(), dir.path.join(entry.file_name()))?;
        }
        if !extra.is_empty() {
            let mut y = String::from("groups:\n  bench-extra:\n");
            for p in extra {
                y.push_str(&format!("    - {p}\n"));
            }
            y.push_str(
                "rules:\n  - name: bench-extra-to-wallet\n    from: bench-extra\n    to: svc-wallet\n    ports: [9999/tcp]\n",
            );
            std::fs::write(dir.path.join("bench-extra.yaml"), y)?;
        }
        Ok(dir)
    }
}

impl Drop for PolicyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `n` distinct /32s in 172.16.0.0/12 from a fixed seed (as netpol-bench).
pub fn extra_prefixes(n: usize) -> Vec<ipnet::IpNet> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seen.insert(0xac10_0000u32 | (x as u32 & 0x000f_ffff));
    }
    seen.into_iter()
        .map(|a| ipnet::IpNet::from(std::net::IpAddr::V4(std::net::Ipv4Addr::from(a))))
        .collect()
}
