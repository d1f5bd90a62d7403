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

    // Traffic benchmark: a receiver that counts what it sees, and a
    // sender that varies each live frame so one template makes many flows.
    use aya_ebpf::maps::{Array, PerCpuArray};

    /// Packets seen by `count_drop` / `count_pass`, per CPU, slot 0.
    #[map]
    static RX_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    #[inline(always)]
    fn count_rx() {
        if let Some(c) = RX_COUNT.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while we run.
            unsafe { *c += 1 };
        }
    }

    /// The drop-only limit with a count, so the receiver proves what arrived.
    #[xdp]
    pub fn count_drop(_ctx: XdpContext) -> u32 {
        count_rx();
        xdp_action::XDP_DROP
    }

    /// The pass-only limit with a count.
    #[xdp]
    pub fn count_pass(_ctx: XdpContext) -> u32 {
        count_rx();
        xdp_action::XDP_PASS
    }

    /// Up to GEN_SLOTS templates; frame number `seq` of a run is built from
    /// template `seq % GEN_COUNT[0]`, so one live-frames run can send a mix.
    const GEN_SLOTS: u32 = 8;
    #[map]
    static GEN_COUNT: Array<u32> = Array::with_max_entries(1, 0);

    /// How `lab_gen` varies each frame of a template:
    /// [0] low bits of the source address to randomise (last 32-bit word),
    /// [1] 1 = random source port (>= 1024); 2 = the flow port of [2] goes
    ///     into the destination port instead (replies of the flows),
    /// [2] flow count, a power of two: source port = [3] + (sequence & ([2]-1)),
    /// [3] base source port for [2].
    #[map]
    static GEN_CFG: Array<[u32; 4]> = Array::with_max_entries(GEN_SLOTS, 0);

    /// The templates' first bytes, copied over every frame before it is varied:
    /// live frames are recycled without being reset, and a frame the stack
    /// forwarded comes back with its MAC addresses and TTL rewritten.
    #[map]
    static GEN_TPL: Array<[u64; TPL_WORDS]> = Array::with_max_entries(GEN_SLOTS, 0);
    /// Enough for Ethernet + IPv6 + the TCP header up to its checksum.
    const TPL_WORDS: usize = 10;

    /// Per CPU: [0] xorshift state, [1] frame sequence.
    #[map]
    static GEN_STATE: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

    const ETH_LEN: usize = 14;

    use agent_common::{IPPROTO_TCP, IPPROTO_UDP};

    /// RFC 1624 incremental update of a one's-complement checksum when one
    /// 16-bit word changes; the sum does not depend on byte order as long as
    /// every word is read the same way.
    #[inline(always)]
    fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
        let mut s = (!csum) as u32 + (!old) as u32 + new as u32;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }

    #[inline(always)]
    fn load16(p: usize) -> u16 {
        // SAFETY: callers bound-check p + 2 <= data_end first.
        unsafe { core::ptr::read_unaligned(p as *const u16) }
    }

    #[inline(always)]
    fn store16(p: usize, v: u16) {
        // SAFETY: as load16.
        unsafe { core::ptr::write_unaligned(p as *mut u16, v) }
    }

    /// Sender for BPF_PROG_TEST_RUN live-frames mode, like `lab_tx`, that first
    /// writes the headers of one of the GEN_TPL templates over the frame, then
    /// varies its source address and port (fixing the checksums), so each
    /// frame of an IPv4/IPv6 TCP or UDP template can open a new flow.
    #[xdp]
    pub fn lab_gen(ctx: XdpContext) -> u32 {
        let _ = try_gen(&ctx);
        xdp_action::XDP_TX
    }

    #[inline(always)]
    fn try_gen(ctx: &XdpContext) -> Option<()> {
        let st = GEN_STATE.get_ptr_mut(0)?;
        // SAFETY: per-CPU slot.
        let st = unsafe { &mut *st };
        let mut x = if st[0] == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            st[0]
        };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        st[0] = x;
        let seq = st[1];
        st[1] = seq + 1;
        let n = *GEN_COUNT.get(0)?;
        let slot = if n > 1 { (seq % n as u64) as u32 } else { 0 };
        let cfg = GEN_CFG.get(slot)?;
        let tpl = GEN_TPL.get(slot)?;

        let data = ctx.data();
        let end = ctx.data_end();
        for (i, w) in tpl.iter().enumerate() {
            let at = data + i * 8;
            if at + 8 > end {
                break;
            }
            // SAFETY: bound-checked above; live frames start 8-byte aligned
            // (after XDP_PACKET_HEADROOM in a page).
            unsafe { core::ptr::write(at as *mut u64, *w) };
        }
        if data + ETH_LEN + 20 + 20 > end {
            return None;
        }
        let ethertype = load16(data + 12);
        // (l3 checksum offset or 0, source last word, protocol byte, l4 start)
        let (ip_csum, src, proto, l4) = if ethertype == 0x0008u16 {
            let l3 = data + ETH_LEN;
            (l3 + 10, l3 + 12, l3 + 9, l3 + 20)
        } else if ethertype == 0xdd86u16 {
            let l3 = data + ETH_LEN;
            (0, l3 + 20, l3 + 6, l3 + 40)
        } else {
            return None;
        };
        // SAFETY: the protocol byte lies within the first 54 bytes, checked
        // above.
        let proto = unsafe { *(proto as *const u8) };
        let l4_csum = match proto {
            IPPROTO_TCP => l4 + 16,
            IPPROTO_UDP => l4 + 6,
            _ => return None,
        };
        if l4 + 18 > end {
            return None;
        }
        let mut sum4 = load16(l4_csum);
        // An IPv4 UDP checksum of zero means "none" and must stay zero.
        let fix_l4 = !(proto == IPPROTO_UDP && sum4 == 0);

        let bits = cfg[0];
        if bits > 0 && bits <= 24 {
            let mask: u32 = (1u32 << bits) - 1;
            let hi_old = load16(src);
            let lo_old = load16(src + 2);
            let h = hi_old.to_ne_bytes();
            let l = lo_old.to_ne_bytes();
            // The address in host order: keep the high bits, randomise the
            // low ones, write it back big-endian.
            let addr = u32::from_be_bytes([h[0], h[1], l[0], l[1]]);
            let nb = ((addr & !mask) | (x as u32 & mask)).to_be_bytes();
            let hi_new = u16::from_ne_bytes([nb[0], nb[1]]);
            let lo_new = u16::from_ne_bytes([nb[2], nb[3]]);
            store16(src, hi_new);
            store16(src + 2, lo_new);
            if ip_csum != 0 {
                let mut s = load16(ip_csum);
                s = csum_replace(s, hi_old, hi_new);
                s = csum_replace(s, lo_old, lo_new);
                store16(ip_csum, s);
            }
            if fix_l4 {
                sum4 = csum_replace(sum4, hi_old, hi_new);
                sum4 = csum_replace(sum4, lo_old, lo_new);
            }
        }
        let port = if cfg[2] > 0 {
            Some((cfg[3] as u64 + (seq & (cfg[2] as u64 - 1))) as u16)
        } else if cfg[1] == 1 {
            Some(((x >> 32) as u16) | 0x0400)
        } else {
            None
        };
        if let Some(port) = port {
            let at = if cfg[1] == 2 { l4 + 2 } else { l4 };
            let old = load16(at);
            let new = port.to_be();
            store16(at, new);
            if fix_l4 {
                sum4 = csum_replace(sum4, old, new);
            }
        }
        if fix_l4 {
            store16(l4_csum, sum4);
        }
        Some(())
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
