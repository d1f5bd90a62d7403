//! iperf3 run inside lab namespaces: real TCP sockets, real congestion
//! control, so the bulk scenario measures what a pod's transfer gets through
//! the node, GSO and GRO included.
use std::io::Read as _;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::netns::Netns;

/// iperf3's default port, the one the bulk policy allows.
pub const PORT: u16 = 5201;

/// Whether iperf3 is on PATH (`cargo xtask setup` installs it).
pub fn available() -> bool {
    Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A one-off iperf3 server (`-s -1`) bound to one address of `ns`; killed on
/// drop if the test never came.
pub struct Server {
    child: Child,
}

impl Server {
    /// Starts the server and waits (bounded) until it listens.
    pub fn start(ns: &Netns, addr: Ipv4Addr) -> anyhow::Result<Server> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "iperf3", "-s", "-1", "-B"])
            .arg(addr.to_string())
            .args(["-p", &PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        let mut server = Server { child };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if server.listening(ns)? {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "iperf3 -s in {} exited ({status}) before listening",
                    ns.name()
                );
            }
            if Instant::now() >= deadline {
                bail!("iperf3 -s in {} not listening within 5 s", ns.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn listening(&self, ns: &Netns) -> anyhow::Result<bool> {
        let filter = format!("sport = :{PORT}");
        let out = ns.exec(&["ss", "-Hltn", &filter]);
        if !out.status.success() {
            bail!(
                "ss in {}: {}",
                ns.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(!out.stdout.is_empty())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One client run: what the receiver got.
#[derive(Clone, Copy, Debug, Default)]
pub struct Transfer {
    /// Receiver goodput, bits per second (iperf3's `sum_received`).
    pub bits_per_second: f64,
    /// Payload bytes the receiver got.
    pub bytes: u64,
    /// TCP retransmissions seen by the sender.
    pub retransmits: u64,
    /// CPU time of the two iperf3 processes (user and system, so also the
    /// softirq work the kernel did in their context), ns: unlike the
    /// machine's busy time, other tenants do not add to it, but it misses
    /// softirq work deferred to ksoftirqd.
    pub process_cpu_ns: f64,
}

/// `iperf3 -c to -B from -t secs -P streams [-b rate] --json` in `ns`,
/// bounded in time (the run, plus the connect timeout, plus slack for a
/// loaded machine). `rate` caps each stream (iperf3's `-b`, e.g. `2G`).
pub fn client(
    ns: &Netns,
    from: Ipv4Addr,
    to: Ipv4Addr,
    secs: u32,
    streams: u32,
    rate: Option<&str>,
) -> anyhow::Result<Transfer> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name(), "iperf3", "--json", "-c"])
        .arg(to.to_string())
        .arg("-B")
        .arg(from.to_string())
        .args(["-p", &PORT.to_string()])
        .args(["-t", &secs.to_string()])
        .args(["-P", &streams.to_string()])
        .args(["--connect-timeout", "3000"]);
    if let Some(r) = rate {
        cmd.args(["-b", r]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting iperf3 -c")?;
    // Read while it runs: the JSON of several streams can outgrow a pipe.
    let mut stdout = child.stdout.take().context("iperf3 stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let limit = Duration::from_secs(u64::from(secs) + 20);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "iperf3 -c {to} in {} still running after {limit:?}",
                ns.name()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap_or_default();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let parsed = parse(&out);
    if !status.success() {
        let why = parsed.err().map(|e| format!("{e:#}")).unwrap_or_default();
        bail!(
            "iperf3 -c {to} in {} failed ({status}): {why} {err}",
            ns.name()
        );
    }
    parsed
}

/// The receiver's totals from iperf3's `--json` document.
pub fn parse(json: &[u8]) -> anyhow::Result<Transfer> {
    let v: serde_json::Value = serde_json::from_slice(json).context("iperf3 --json output")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let received = &v["end"]["sum_received"];
    let bits_per_second = received["bits_per_second"]
        .as_f64()
        .context("iperf3 --json has no end.sum_received.bits_per_second")?;
    let bytes = received["bytes"]
        .as_u64()
        .context("iperf3 --json has no end.sum_received.bytes")?;
    // Percent of one CPU over the test, client ("host") and server.
    let cpu = &v["end"]["cpu_utilization_percent"];
    let percent =
        cpu["host_total"].as_f64().unwrap_or(0.0) + cpu["remote_total"].as_f64().unwrap_or(0.0);
    let seconds = received["seconds"].as_f64().unwrap_or(0.0);
    Ok(Transfer {
        bits_per_second,
        bytes,
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        process_cpu_ns: percent / 100.0 * seconds * 1e9,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_receiver_totals() {
        let doc = br#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"bytes":1000,"bits_per_second":8000.0,"retransmits":3},
            "sum_received":{"bytes":990,"bits_per_second":7920.0,"seconds":2.0},
            "cpu_utilization_percent":{"host_total":30.0,"remote_total":20.0}}}"#;
        let t = parse(doc).unwrap();
        assert_eq!(t.bytes, 990);
        assert_eq!(t.bits_per_second, 7920.0);
        assert_eq!(t.retransmits, 3);
        assert!((t.process_cpu_ns - 1e9).abs() < 1.0, "{t:?}");
    }

    #[test]
    fn an_iperf3_error_is_an_error() {
        let doc = br#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server"}"#;
        let e = parse(doc).unwrap_err();
        assert!(format!("{e}").contains("unable to connect"), "{e}");
    }
}
