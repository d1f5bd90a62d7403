//! `netpol-agent monitor`: follows a running agent's `/events` stream and
//! prints one line per new flow's verdict, like tcpdump for verdicts.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{cli::MonitorArgs, telemetry::events::EventRecord};

/// Reads an HTTP/1.1 response body that may be chunked.
struct Body<R> {
    inner: R,
    chunked: bool,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.chunked {
            return self.inner.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            // A blank line ends the previous chunk.
            while size.trim().is_empty() {
                size.clear();
                if self.inner.read_line(&mut size)? == 0 {
                    return Ok(0);
                }
            }
            let hex = size.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(hex, 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n;
        Ok(n)
    }
}

pub fn monitor(args: &MonitorArgs) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(&args.endpoint).with_context(|| {
        format!(
            "connecting to {} (is the agent running with --listen {0}?)",
            args.endpoint
        )
    })?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: {}\r\nAccept: application/x-ndjson\r\n\r\n",
        args.endpoint
    )?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.contains(" 200 ") {
        bail!("{} answered {:?}", args.endpoint, status.trim());
    }
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        let h = h.to_ascii_lowercase();
        if h.starts_with("transfer-encoding:") && h.contains("chunked") {
            chunked = true;
        }
    }
    let body = BufReader::new(Body {
        inner: reader,
        chunked,
        left: 0,
        done: false,
    });
    let mut shown = 0;
    let out = std::io::stdout();
    for line in body.lines() {
        let line = line?;
        if line.contains("\"lagged\"") {
            eprintln!("monitor: fell behind, events skipped: {line}");
            continue;
        }
        let Ok(ev) = serde_json::from_str::<EventRecord>(&line) else {
            continue;
        };
        if ev.verdict == "pass" && !args.allowed {
            continue;
        }
        let mut out = out.lock();
        if args.json {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", ev.line())?;
        }
        out.flush()?;
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            break;
        }
    }
    Ok(())
}
