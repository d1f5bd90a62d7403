//! Verdict events: the agent is the ring buffer's single consumer and fans
//! each event out to every `/events` client (`netpol-agent monitor`).
use std::{net::IpAddr, sync::Arc, time::SystemTime};

use agent_common::{map_names, reason, VerdictEvent, EVENT_VERDICT_AUDIT, EVENT_VERDICT_DROP};
use log::warn;
use tokio::io::unix::AsyncFd;

use super::{flows::proto_name, status::AgentState};
use crate::datapath::RuleInfo;

/// One event as `/events` sends it (one JSON object per line).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    /// Unix time the agent read the event, in seconds.
    pub time: f64,
    pub direction: String,
    /// `pass`, `drop` or `audit`.
    pub verdict: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: String,
    pub sport: u16,
    /// Destination port, or ICMP `type << 8 | code`.
    pub dport: u16,
    /// Frame length of the packet that opened the flow.
    pub len: u32,
}

impl EventRecord {
    pub fn from_kernel(e: &VerdictEvent, rules: &[RuleInfo]) -> Self {
        let addr = |a: &[u8; 16]| -> IpAddr {
            if e.family == 4 {
                IpAddr::from([a[0], a[1], a[2], a[3]])
            } else {
                IpAddr::from(*a)
            }
        };
        let rule = rules.get(e.rule_id as usize).filter(|r| !r.name.is_empty());
        let verdict = match e.verdict {
            EVENT_VERDICT_DROP => "drop",
            EVENT_VERDICT_AUDIT => "audit",
            _ if rule.is_some_and(|r| r.audit) => "audit",
            _ => "pass",
        };
        Self {
            time: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            direction: if e.dir == 0 { "ingress" } else { "egress" }.into(),
            verdict: verdict.into(),
            reason: reason::NAMES
                .get(e.reason as usize)
                .copied()
                .unwrap_or("unknown")
                .into(),
            rule: rule.map(|r| r.name.clone()),
            src: addr(&e.src),
            dst: addr(&e.dst),
            proto: proto_name(e.proto),
            sport: e.sport,
            dport: e.dport,
            len: e.len,
        }
    }

    /// The `monitor` line.
    pub fn line(&self) -> String {
        let ep = |a: &IpAddr, p: u16| match a {
            IpAddr::V4(_) => format!("{a}:{p}"),
            IpAddr::V6(_) => format!("[{a}]:{p}"),
        };
        let why = self.rule.as_deref().unwrap_or(&self.reason);
        let secs = self.time as u64 % 86_400;
        format!(
            "{:02}:{:02}:{:02}.{:03} {:<7} {:<5} {:<6} {} > {} ({why}) len {}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            (self.time.fract() * 1000.0) as u32,
            self.direction,
            self.verdict.to_uppercase(),
            self.proto,
            ep(&self.src, self.sport),
            ep(&self.dst, self.dport),
            self.len
        )
    }
}

/// Reads the ring buffer until the agent stops, sending every event to the
/// broadcast channel (clients that fall behind lose events, never the agent).
pub async fn consume(state: Arc<AgentState>) -> anyhow::Result<()> {
    let ring = state.pinned.ring_buf(map_names::EVENTS)?;
    // SAFETY: the ring buffer owns its fd and keeps it open while registered.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("watching the event ring buffer: {e}"))?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let rules = state.rules();
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() < core::mem::size_of::<VerdictEvent>() {
                warn!("short verdict event ({} bytes) ignored", item.len());
                continue;
            }
            // SAFETY: the kernel wrote a VerdictEvent (a Pod) here; read
            // unaligned since the ring gives no alignment promise to us.
            let ev: VerdictEvent =
                unsafe { core::ptr::read_unaligned(item.as_ptr() as *const VerdictEvent) };
            // No receiver is fine: nobody is watching.
            let _ = state.events.send(EventRecord::from_kernel(&ev, &rules));
        }
        guard.clear_ready();
    }
}
