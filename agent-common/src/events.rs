//! Verdict events of new flows (the `EVENTS` ring buffer) and the per-CPU
//! token buckets that keep a flood from turning into a flood of events or of
//! denied-flow records.

/// `BUCKETS` slot limiting verdict events.
pub const BUCKET_EVENTS: u32 = 0;
/// `BUCKETS` slot limiting new denied-flow records.
pub const BUCKET_RECORDS: u32 = 1;
/// Slots in `BUCKETS`.
pub const BUCKET_SLOTS: u32 = 2;

/// Token bucket limiting verdict events or denied-flow records (per CPU), or
/// the conntrack entries of one source address (`CT_SOURCES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens scaled by `hz`, so a refill of `elapsed_jiffies * rate` is exact.
    pub tokens: u64,
    /// Jiffies of the last refill.
    pub last: u64,
}

pub const EVENT_VERDICT_PASS: u8 = 0;
pub const EVENT_VERDICT_DROP: u8 = 1;
pub const EVENT_VERDICT_AUDIT: u8 = 2;

/// One new flow's verdict, sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictEvent {
    /// IPv4 addresses use the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host order; ICMP: `type << 8 | code` in `dport`.
    pub sport: u16,
    pub dport: u16,
    pub rule_id: u32,
    pub reason: u32,
    /// Frame length of the packet.
    pub len: u32,
    /// 4 or 6.
    pub family: u8,
    pub proto: u8,
    /// `DIR_*`.
    pub dir: u8,
    /// `EVENT_VERDICT_*`.
    pub verdict: u8,
    pub _pad: u32,
}
