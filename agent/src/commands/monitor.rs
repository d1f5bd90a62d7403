//! `netpol-agent monitor`: follows a running agent's `/events` stream (on its
//! unix socket) and prints one line per new flow's verdict, like tcpdump for
//! verdicts.
use std::io::Write;

use bytes::BytesMut;
use http_body_util::BodyExt as _;

use super::client::{block_on, AgentClient};
use crate::{cli::MonitorArgs, telemetry::events::EventRecord};

pub fn monitor(args: &MonitorArgs) -> anyhow::Result<()> {
    block_on(follow(args))?
}

async fn follow(args: &MonitorArgs) -> anyhow::Result<()> {
    let client = AgentClient::new(&args.agent);
    let mut response = client.get("/events", "application/x-ndjson").await?;
    let body = response.body_mut();
    let mut buf = BytesMut::new();
    let mut shown = 0;
    let out = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(end + 1);
            let line = String::from_utf8_lossy(&line[..end]);
            if !show(args, &line, &mut out.lock())? {
                continue;
            }
            shown += 1;
            if args.count.is_some_and(|n| shown >= n) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Prints one event line as asked; false when it is not shown.
fn show(args: &MonitorArgs, line: &str, out: &mut impl Write) -> anyhow::Result<bool> {
    if line.contains("\"lagged\"") {
        eprintln!("monitor: fell behind, events skipped: {line}");
        return Ok(false);
    }
    let Ok(ev) = serde_json::from_str::<EventRecord>(line) else {
        return Ok(false);
    };
    if ev.verdict == "pass" && !args.allowed {
        return Ok(false);
    }
    if args.json {
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "{}", ev.line())?;
    }
    out.flush()?;
    Ok(true)
}
