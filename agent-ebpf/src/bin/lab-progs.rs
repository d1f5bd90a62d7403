//! XDP programs for benchmarks and the lab traffic generator, built by the same
//! toolchain as the agent so their cost is a fair floor.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

    /// The floor: no enforcement can be cheaper than dropping unread.
    #[xdp]
    pub fn noop_drop(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_DROP
    }

    #[xdp]
    pub fn noop_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    /// Sender for BPF_PROG_TEST_RUN live-frames mode: every frame goes out of the
    /// interface named by `ingress_ifindex` in the context.
    #[xdp]
    pub fn lab_tx(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_TX
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
