//! `netpol-agent monitor`: follows a running agent's `/events` stream (on its
//! unix socket) and prints one line per new flow's verdict, like tcpdump for
//! verdicts.
use std::{io::Write, time::Duration};

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::{cli::MonitorArgs, telemetry::events::EventRecord};

pub fn monitor(args: &MonitorArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(follow(args))
}

async fn follow(args: &MonitorArgs) -> anyhow::Result<()> {
    let socket = args.socket.display();
    let stream = UnixStream::connect(&args.socket).await.with_context(|| {
        format!("connecting to {socket} (is the agent running with --socket {socket}, and are you root?)")
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("talking HTTP on {socket}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/events")
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::ACCEPT, "application/x-ndjson")
        .body(Empty::<Bytes>::new())?;
    let mut response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .with_context(|| format!("the agent did not answer on {socket}"))??;
    if response.status() != hyper::StatusCode::OK {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        bail!(
            "the agent answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
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
