//! netpol-agent datapath: XDP or TCX ingress judges traffic entering an
//! interface, TCX egress judges traffic leaving it; all share maps and one
//! decision.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic adds on shared flow counters (see counting::atomic_add).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod counting;
#[cfg(target_arch = "bpf")]
mod denied;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod family;
#[cfg(target_arch = "bpf")]
mod flow;
#[cfg(target_arch = "bpf")]
mod flowcache;
#[cfg(target_arch = "bpf")]
mod frag;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod nd;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod quota;
#[cfg(target_arch = "bpf")]
mod related;
#[cfg(target_arch = "bpf")]
mod sources;
#[cfg(target_arch = "bpf")]
mod verdict;

#[cfg(target_arch = "bpf")]
mod prog {
    use agent_common::{DIR_EGRESS, DIR_INGRESS};
    use aya_ebpf::{
        bindings::{xdp_action, TC_ACT_SHOT, TC_ACT_UNSPEC},
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };

    use crate::{
        parse::{Bounds, MAX_L4_OFFSET},
        verdict::judge,
    };

    /// Bytes TC needs in the linear area to read every header we parse: up to
    /// two VLAN tags and IPv6 extension headers (parse.rs's bound on where the
    /// transport header starts), then the transport header (TCP's is at most
    /// 60 bytes).
    const TC_PULL_LEN: usize = MAX_L4_OFFSET + 64;

    /// Declares multi-buffer support (`xdp.frags`) so that jumbo MTUs keep
    /// native mode on drivers that split large frames (veth above ~3.5 KB):
    /// the headers are in the first buffer, and the length counted is the
    /// whole frame's.
    #[xdp(frags)]
    pub fn netpol_xdp(ctx: XdpContext) -> u32 {
        // SAFETY: the context the kernel passed in.
        let len = unsafe { aya_ebpf::helpers::bpf_xdp_get_buff_len(ctx.ctx) } as usize;
        let b = Bounds {
            start: ctx.data(),
            end: ctx.data_end(),
            len,
        };
        // SAFETY: the context the kernel passed in; a plain field read.
        let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
        if judge(&b, DIR_INGRESS, ifindex, true) {
            xdp_action::XDP_PASS
        } else {
            xdp_action::XDP_DROP
        }
    }

    /// The same decision on a socket buffer, for either direction.
    #[inline(always)]
    fn judge_skb(ctx: &TcContext, dir: u32, check_sources: bool) -> i32 {
        let len = ctx.len() as usize;
        let want = if len < TC_PULL_LEN { len } else { TC_PULL_LEN };
        if ctx.data_end() - ctx.data() < want {
            // Headers partly outside the linear area (GSO, paged frags): pull them
            // in; on failure the parse below sees a short packet and counts it.
            let _ = ctx.pull_data(want as u32);
        }
        let b = Bounds {
            start: ctx.data(),
            end: ctx.data_end(),
            len,
        };
        // SAFETY: the context the kernel passed in; a plain field read. On
        // ingress this is the interface the packet arrived on, on egress the
        // one it leaves by: either way the enforced interface.
        let ifindex = unsafe { (*ctx.skb.skb).ifindex };
        // Pass means "next": other TCX programs on the interface still run.
        if judge(&b, dir, ifindex, check_sources) {
            TC_ACT_UNSPEC
        } else {
            TC_ACT_SHOT
        }
    }

    /// Egress. Sources are checked where packets enter, not where they
    /// leave; the interface still says from which side the packet is counted.
    #[classifier]
    pub fn netpol_tc(ctx: TcContext) -> i32 {
        judge_skb(&ctx, DIR_EGRESS, false)
    }

    /// Ingress where XDP costs more than it saves (a pod's veth: native XDP
    /// there takes the pod's large TCP segments apart) or is not available
    /// natively: the same checks as `netpol_xdp`, on the socket buffer.
    #[classifier]
    pub fn netpol_tc_ingress(ctx: TcContext) -> i32 {
        judge_skb(&ctx, DIR_INGRESS, true)
    }

    /// Never attached: the agent runs it with BPF_PROG_TEST_RUN to read the
    /// clock the datapath stamps conntrack entries with.
    #[xdp]
    pub fn netpol_clock(_ctx: XdpContext) -> u32 {
        if let Some(c) = crate::maps::CLOCK.get_ptr_mut(0) {
            // SAFETY: array slot; nothing else writes it.
            unsafe { *c = aya_ebpf::helpers::bpf_jiffies64() };
        }
        xdp_action::XDP_PASS
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
