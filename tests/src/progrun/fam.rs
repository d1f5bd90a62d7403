//! The policy most BPF_PROG_TEST_RUN tests apply, and addresses of each
//! family to build frames from.

use crate::packet::{Ext, Packet};

/// The policy most tests use.
pub const BASE: &str = r#"
groups:
  web: [10.0.1.0/24, "fd00:1::/64"]
  db: [10.0.2.0/24, "fd00:2::/64"]
rules:
  - name: web-to-db
    from: web
    to: db
    ports: [5432/tcp, 53/udp, 3868/sctp, icmp/8, icmpv6/128]
"#;

/// Addresses of one family: web and db are groups of `BASE`, world is in none.
#[derive(Clone, Copy)]
pub struct Fam {
    pub name: &'static str,
    pub v6: bool,
    pub web: &'static str,
    pub web2: &'static str,
    pub db: &'static str,
    pub world: &'static str,
}

pub const V4: Fam = Fam {
    name: "IPv4",
    v6: false,
    web: "10.0.1.5",
    web2: "10.0.1.6",
    db: "10.0.2.7",
    world: "192.0.2.1",
};

pub const V6: Fam = Fam {
    name: "IPv6",
    v6: true,
    web: "fd00:1::5",
    web2: "fd00:1::6",
    db: "fd00:2::7",
    world: "2001:db8::1",
};

impl Fam {
    pub fn echo_request(self, src: &str, dst: &str, id: u16) -> Packet {
        let p = Packet::ip(src, dst);
        if self.v6 {
            p.icmpv6(128, 0, id)
        } else {
            p.icmp(8, 0, id)
        }
    }

    pub fn echo_reply(self, src: &str, dst: &str, id: u16) -> Packet {
        let p = Packet::ip(src, dst);
        if self.v6 {
            p.icmpv6(129, 0, id)
        } else {
            p.icmp(0, 0, id)
        }
    }

    /// Makes `p` a fragment: IPv4 header fields or an IPv6 fragment header.
    pub fn fragment(self, p: Packet, id: u16, offset: u16, more: bool) -> Packet {
        if self.v6 {
            p.ext(Ext::fragment(offset, more, u32::from(id) | 0x0001_0000))
        } else {
            p.ipv4_mut(|h| {
                h.id = id;
                h.frag_offset = offset;
                h.more_fragments = more;
            })
        }
    }
}
