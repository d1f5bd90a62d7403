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

    // Reference points for the microbenchmark: what one building block of the
    // datapath costs alone on this kernel, so its table can say where time goes.
    use aya_ebpf::{macros::map, maps::LruHashMap};

    /// Same key and value sizes as the IPv4 conntrack map, same default size.
    #[map]
    static REF_LRU: LruHashMap<[u8; 16], [u64; 4]> = LruHashMap::with_max_entries(262_144, 0);

    /// One LRU hash lookup (a hit after the first run), then drop.
    #[xdp]
    pub fn ref_lru_lookup(ctx: XdpContext) -> u32 {
        let key = [(ctx.data_end() - ctx.data()) as u8; 16];
        if REF_LRU.get_ptr_mut(key).is_none() {
            let _ = REF_LRU.insert(key, [0; 4], 0);
        }
        xdp_action::XDP_DROP
    }

    /// One bpf_ktime_get_coarse_ns() call, then drop.
    #[xdp]
    pub fn ref_ktime(_ctx: XdpContext) -> u32 {
        let t = unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() };
        if t == u64::MAX {
            xdp_action::XDP_PASS
        } else {
            xdp_action::XDP_DROP
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
