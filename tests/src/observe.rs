//! Reading a lab agent's observability surfaces: its network port (from
//! inside the node namespace: /metrics and health), its unix socket (/flows,
//! /events, /status), its CLI on the pinned maps, and the Prometheus text it
//! serves.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use crate::agent::{agent_bin, AgentProcess};
use crate::netns::Netns;

/// The agent's default `--listen`; each lab's node namespace has its own
/// loopback, so parallel labs never collide on it.
pub const ENDPOINT: &str = "127.0.0.1:9986";

/// Sends `GET path` as HTTP/1.0 on `stream` and reads the answer until the
/// agent closes the connection (bounded by a 10 s read timeout): (status,
/// body).
fn get_on(mut stream: impl Read + Write, path: &str) -> (u16, String) {
    // An agent over its connection bound answers 503 and closes without
    // reading the request, which may then meet a closed socket: its answer
    // is still there to read.
    if let Err(e) = write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n") {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "sending GET {path}: {e}"
        );
    }
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading GET {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no header end in {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: bad status line in {head:?}"));
    (status, body.to_owned())
}

/// Connects to the agent's network port from inside `ns`.
pub fn connect_port(ns: &Netns) -> TcpStream {
    let addr: SocketAddr = ENDPOINT.parse().unwrap();
    let stream = ns
        .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connecting to {ENDPOINT} in {}: {e}", ns.name()));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Connects to the agent's unix socket.
pub fn connect_socket(agent: &AgentProcess) -> UnixStream {
    let stream = UnixStream::connect(agent.socket())
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", agent.socket().display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// `GET path` on the agent's network port from inside `ns`: (status, body).
pub fn http_get(ns: &Netns, path: &str) -> (u16, String) {
    get_on(connect_port(ns), path)
}

/// `GET path` on the network port that must answer 200; returns the body.
pub fn http_ok(ns: &Netns, path: &str) -> String {
    let (status, body) = http_get(ns, path);
    assert_eq!(status, 200, "GET {path} answered {status}: {body}");
    body
}

/// `GET path` on the agent's unix socket: (status, body).
pub fn socket_get(agent: &AgentProcess, path: &str) -> (u16, String) {
    get_on(connect_socket(agent), path)
}

/// `GET path` on the unix socket that must answer 200; returns the body.
pub fn socket_ok(agent: &AgentProcess, path: &str) -> String {
    let (status, body) = socket_get(agent, path);
    assert_eq!(
        status, 200,
        "GET {path} on the socket answered {status}: {body}"
    );
    body
}

/// Runs `netpol-agent ARGS --pin-path <agent's>` and parses its JSON output.
pub fn cli_json(agent: &AgentProcess, args: &[&str]) -> serde_json::Value {
    cli_json_at(agent.pin_path(), args)
}

/// `cli_json` on a pin directory, which may outlive the agents that used it.
pub fn cli_json_at(pin_path: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(agent_bin())
        .args(args)
        .arg("--pin-path")
        .arg(pin_path)
        .output()
        .expect("run netpol-agent");
    assert!(
        out.status.success(),
        "netpol-agent {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("netpol-agent {args:?}: not JSON ({e})"))
}

/// Sum of the samples of `name` whose labels include every `want` pair.
pub fn metric_sum(text: &str, name: &str, want: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let has = |k: &str, v: &str| labels.split(',').any(|p| p == format!("{k}=\"{v}\""));
            if !want.iter().all(|(k, v)| has(k, v)) {
                return None;
            }
            value.parse::<f64>().ok().map(|v| v as u64)
        })
        .sum()
}

/// Runs `promtool check metrics` on `text`; returns its combined output and
/// whether it passed.
pub fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; cargo xtask setup installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}
