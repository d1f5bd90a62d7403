//! What every step of one packet's decision shares: the packet as counted, the
//! flow it belongs to, the shape of a verdict, and the clock.
use agent_common::{flow_counter_index, Config, CFG_F_FLOW_COUNTERS};
use aya_ebpf::helpers::bpf_jiffies64;

use crate::{family::Family, flowcache, parse::Ip};

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

/// An IP packet's flow, worked out once so every step of the decision sees
/// the same key, policy generation and time.
pub struct Flow<'a, F: Family> {
    pub cfg: &'a Config,
    pub ip: &'a Ip<F::Addr>,
    pub pkt: &'a Pkt,
    /// The policy generation, read once: the slot the packet looks up and the
    /// generation it stamps must be the same policy, even if a swap lands while
    /// the packet is being judged.
    pub gen: u32,
    /// `Config::flags` as the policy lookups see it.
    pub flags: u32,
    /// Per-flow counters are on (`CFG_F_FLOW_COUNTERS`).
    pub counting: bool,
    /// The direction-normalised conntrack key (`conntrack::ct_key`), and
    /// whether the packet comes from its endpoint B. A reference to the
    /// caller's key rather than the key itself: map helpers take the key's
    /// address, which would keep this whole struct on the stack, and the
    /// programs then outgrow BPF's 512 bytes of stack.
    pub key: &'a F::CtKey,
    pub src_is_b: bool,
    /// This packet's `flow_counter_index`.
    pub idx: usize,
    /// Whether the flow cache may answer this packet.
    pub cacheable: bool,
    /// The flow-cache slot of `key`.
    pub slot: u32,
    pub t: u64,
}

impl<'a, F: Family> Flow<'a, F> {
    #[inline(always)]
    pub fn new(
        cfg: &'a Config,
        ip: &'a Ip<F::Addr>,
        pkt: &'a Pkt,
        key: &'a F::CtKey,
        src_is_b: bool,
    ) -> Self {
        let l4 = &ip.l4;
        // SAFETY: a field of the CONFIG map value, read once.
        let gen = unsafe { core::ptr::read_volatile(&cfg.policy_gen) };
        let flags = cfg.flags;
        let counting = cfg.flags & CFG_F_FLOW_COUNTERS != 0;
        let idx = flow_counter_index(pkt.dir, src_is_b);
        let cacheable = flowcache::cacheable(ip.frag, l4);
        let slot = F::cache_slot(key);
        Flow {
            cfg,
            ip,
            pkt,
            gen,
            flags,
            counting,
            key,
            src_is_b,
            idx,
            cacheable,
            slot,
            t: now(),
        }
    }
}
