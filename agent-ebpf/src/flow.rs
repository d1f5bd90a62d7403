//! What every step of one packet's decision shares: the packet as counted, the
//! shape of a verdict, and the clock.
use aya_ebpf::helpers::bpf_jiffies64;

/// What the packet is, for counting: hook direction and frame length.
pub struct Pkt {
    pub dir: u32,
    pub len: u64,
}

/// `Ok((pass reason, rule id))`, or `Err((drop reason, audited))`: an audited
/// drop passes (audit mode, or an audit-only group on either side).
pub type Decision = Result<(u32, u32), (u32, bool)>;

/// Jiffies rather than ktime: the verifier inlines bpf_jiffies64() into one
/// load, where a ktime helper call is a real call (see `Config`'s timeouts).
#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_jiffies64() }
}
