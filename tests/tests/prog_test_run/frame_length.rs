//! The test-run interface itself: the shortest frames BPF_PROG_TEST_RUN
//! accepts for XDP and TC, and what the programs make of them.

use agent_common::reason::*;
use netpol_tests::packet::{Packet, ETH_P_ARP};
use netpol_tests::progrun::Want::{Drop, Pass};
use netpol_tests::progrun::{Bench, Hook, BASE, MIN_FRAME, TC_MIN_IPV4, TC_MIN_IPV6};

use crate::truncation::{tcp4_frame, tcp6_frame};

#[test]
fn minimum_frame_length() {
    let Some(b) = Bench::new("minimum_frame_length", BASE) else {
        return;
    };
    let refused = |hook: Hook, frame: &[u8]| {
        let before = b.counts();
        let r = match hook {
            Hook::Xdp => b.dp.xdp_test_run(frame, 1).map(|_| ()),
            Hook::Tc => b.dp.tc_test_run(frame).map(|_| ()),
            Hook::TcIngress => b.dp.tc_ingress_test_run(frame).map(|_| ()),
        };
        assert_eq!(b.counts(), before, "a refused frame was counted");
        r.is_err()
    };
    let arp = Packet::ethertype(ETH_P_ARP).payload(&[0; 28]).build();
    for len in 0..MIN_FRAME {
        let f = &arp[..len];
        assert!(
            refused(Hook::Xdp, f),
            "XDP test run accepted {len} bytes: MIN_FRAME is stale"
        );
        assert!(
            refused(Hook::Tc, f),
            "TC test run accepted {len} bytes: MIN_FRAME is stale"
        );
    }
    let f = &arp[..MIN_FRAME];
    b.xdp_bytes("bare Ethernet header (ARP)", f, Pass(PASS_NON_IP));
    b.record(b.check(Hook::Tc, "bare Ethernet header (ARP)", f, Pass(PASS_NON_IP)));

    // The skb test run wants the fixed IP header of an IP ethertype.
    for (full, tc_min) in [
        (tcp4_frame().build(), TC_MIN_IPV4),
        (tcp6_frame().build(), TC_MIN_IPV6),
    ] {
        for len in MIN_FRAME..tc_min {
            let f = &full[..len];
            assert!(
                refused(Hook::Tc, f),
                "TC test run accepted {len} bytes of IP: TC_MIN_* stale"
            );
        }
        let f = &full[..tc_min];
        let why = if tc_min == TC_MIN_IPV4 {
            DROP_MALFORMED_IPV4
        } else {
            DROP_MALFORMED_IPV6
        };
        let scenario = format!("IP frame cut to {tc_min} bytes");
        b.record(b.check(Hook::Tc, &scenario, f, Drop(why)));
    }
}
