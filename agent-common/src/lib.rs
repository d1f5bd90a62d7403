//! Map keys and values shared by the eBPF programs and the userspace agent.
//!
//! Every type is `#[repr(C)]` with explicit padding fields, so both sides and the
//! verifier agree on every byte. Keys that the kernel compares byte-wise (LPM trie
//! keys, hash keys) hold their multi-byte fields as big-endian byte arrays.
#![no_std]

// One module per kind of shared item; everything is re-exported at the root so
// users name `agent_common::Foo` whichever module holds it.
mod config;
mod counters;
mod events;
mod filter;
mod keys;
mod names;
mod sources;
mod values;

pub use config::*;
pub use counters::*;
pub use events::*;
pub use filter::*;
pub use keys::*;
pub use names::*;
pub use sources::*;
pub use values::*;

/// Version of the pinned map layout: the types of these modules and what their
/// fields mean. Bump it whenever either changes, even when the sizes do not:
/// an agent never adopts maps pinned under another version (it builds fresh
/// ones beside them), so old state is never misread.
pub const LAYOUT_VERSION: u32 = 4;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), Copy, and have no implicit padding.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for IdentityValue {}
    unsafe impl aya::Pod for IdBlock {}
    unsafe impl aya::Pod for IdKey4 {}
    unsafe impl aya::Pod for IdKey6 {}
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for RuleValue {}
    unsafe impl aya::Pod for CtKey4 {}
    unsafe impl aya::Pod for CtKey6 {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for FragKey4 {}
    unsafe impl aya::Pod for FragKey6 {}
    unsafe impl aya::Pod for FragValue {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for FlowCache4 {}
    unsafe impl aya::Pod for FlowCache6 {}
    unsafe impl aya::Pod for DeniedValue {}
    unsafe impl aya::Pod for TokenBucket {}
    unsafe impl aya::Pod for VerdictEvent {}
    unsafe impl aya::Pod for RuleName {}
    unsafe impl aya::Pod for SourceKey {}
    unsafe impl aya::Pod for SourceValue {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // Sizes equal the sum of the fields: no implicit padding anywhere.
    #[test]
    fn no_implicit_padding() {
        assert_eq!(size_of::<Config>(), 6 * 4 + 8 * 15);
        assert_eq!(size_of::<IdentityValue>(), 8);
        assert_eq!(size_of::<IdBlock>(), 8 + 4 + 4);
        assert_eq!(size_of::<RuleKey>(), 1 + 4 + 4 + 1 + 2);
        assert_eq!(size_of::<IdKey4>(), 1 + 4);
        assert_eq!(size_of::<IdKey6>(), 1 + 16);
        assert_eq!(size_of::<RuleValue>(), 8);
        assert_eq!(size_of::<CtKey4>(), 4 + 4 + 2 + 2 + 1 + 3);
        assert_eq!(size_of::<CtKey6>(), 16 + 16 + 2 + 2 + 1 + 3);
        assert_eq!(size_of::<CtValue>(), 8 + 8 + 4 + 4 + 4 + 2 + 2 + 64);
        assert_eq!(size_of::<DeniedValue>(), 8 + 8 + 4 + 4 + 64);
        assert_eq!(size_of::<TokenBucket>(), 16);
        assert_eq!(
            size_of::<VerdictEvent>(),
            16 + 16 + 2 + 2 + 4 + 4 + 4 + 4 + 4
        );
        assert_eq!(size_of::<RuleName>(), 8 + RULE_NAME_LEN);
        assert_eq!(size_of::<FragKey4>(), 4 + 4 + 2 + 1 + 1);
        assert_eq!(size_of::<FragKey6>(), 16 + 16 + 4 + 1 + 3);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<SourceKey>(), 4 + 16);
        assert_eq!(size_of::<SourceValue>(), 4 + 4);
        assert_eq!(size_of::<FlowCache4>(), 16 + 8 + 4 + 4 + 2 * 2 + 4 + 64);
        assert_eq!(size_of::<FlowCache6>(), 40 + 8 + 4 + 4 + 2 * 2 + 4 + 64);
    }

    #[test]
    fn rule_key_is_big_endian_with_port_last() {
        let k = RuleKey::new(0x0102_0304, 0x0506_0708, 6, 0x1f90).in_slot(1);
        let bytes: [u8; 12] = unsafe { core::mem::transmute(k) };
        assert_eq!(bytes, [1, 1, 2, 3, 4, 5, 6, 7, 8, 6, 0x1f, 0x90]);
        assert_eq!(bytes, k.to_bytes());
    }

    #[test]
    fn source_key_is_big_endian() {
        let k = SourceKey::new(0x0102_0304, SourceKey::mapped_v4([10, 0, 1, 10]));
        let bytes: [u8; 20] = unsafe { core::mem::transmute(k) };
        assert_eq!(
            bytes,
            [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 10]
        );
        assert_eq!(k.ifindex(), 0x0102_0304);
        assert!(!k.is_iface());
        assert!(SourceKey::iface(7).is_iface());
    }

    #[test]
    fn counter_index_is_dense() {
        assert_eq!(
            counter_index(DIR_EGRESS, true, reason::COUNT - 1),
            COUNTER_SLOTS - 1
        );
        assert_eq!(counter_index(DIR_INGRESS, false, 0), 0);
    }
}
