//! The traffic generators' loops and reports: the steady flow, short
//! allowed exchanges, denied attempts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netpol_tests::ExchangeError;

use crate::{STEADY_SLOW, STEADY_TIMEOUT};

#[derive(Debug, Default)]
pub struct SteadyReport {
    pub messages: u64,
    pub max_rtt: Duration,
    pub slow: u64,
    pub error: Option<String>,
}

/// Request/response on one connection until `stop`; stops at the first
/// timeout, short read or corrupted echo.
pub fn steady_loop(stream: &mut TcpStream, stop: &AtomicBool) -> SteadyReport {
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
pub struct ShortReport {
    pub ok: u64,
    pub failed: u64,
    pub first_failures: Vec<String>,
}

impl ShortReport {
    pub fn record(&mut self, what: &str, result: Result<(), ExchangeError>) {
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
pub struct DeniedReport {
    pub attempts: u64,
    pub silent: u64,
    /// Data echoed: the edge was open.
    pub succeeded: u64,
    /// Refused, reset or another error: something answered (or broke).
    pub answered: u64,
    pub first_bad: Vec<String>,
}

impl DeniedReport {
    pub fn record(&mut self, what: &str, result: Result<(), ExchangeError>) {
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
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
