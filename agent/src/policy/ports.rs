//! The `ports:` mini-language, and splitting port ranges into the masked ports
//! an LPM trie can hold.

use std::fmt;

use agent_common::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

use super::model::PortSpec;

const NAMED: [(&str, u8); 5] = [
    ("tcp", IPPROTO_TCP),
    ("udp", IPPROTO_UDP),
    ("sctp", IPPROTO_SCTP),
    ("icmp", IPPROTO_ICMP),
    ("icmpv6", IPPROTO_ICMPV6),
];

/// Protocols whose packets carry a destination port the datapath reads.
pub(super) fn has_ports(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
}

fn is_icmp(proto: u8) -> bool {
    matches!(proto, IPPROTO_ICMP | IPPROTO_ICMPV6)
}

pub(super) fn proto_name(proto: u8) -> Option<&'static str> {
    NAMED.iter().find(|(_, p)| *p == proto).map(|(n, _)| *n)
}

fn parse_proto(text: &str) -> Result<u8, String> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, p)) = NAMED.iter().find(|(n, _)| *n == lower) {
        return Ok(*p);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(n) if n <= 255 => Ok(n as u8),
            _ => Err(format!(
                "protocol number must be 0-255 (for port {text} write {text}/tcp or {text}/udp)"
            )),
        };
    }
    Err(format!(
        "unknown protocol {text:?}: expected tcp, udp, sctp, icmp, icmpv6, any or a protocol number"
    ))
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a port number"));
    }
    text.parse::<u16>()
        .map_err(|_| "port must be 0-65535".to_string())
}

fn parse_byte(text: &str, what: &str) -> Result<u16, String> {
    match text.parse::<u8>() {
        Ok(n) => Ok(n as u16),
        Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{what} must be 0-255"))
        }
        Err(_) => Err(format!("{text:?} is not a number")),
    }
}

/// `icmp/TYPE` or `icmp/TYPE:CODE` (after the slash).
fn parse_icmp(proto: u8, rest: &str) -> Result<PortSpec, String> {
    let name = proto_name(proto).unwrap_or("icmp");
    let (ty, code) = match rest.split_once(':') {
        Some((t, c)) => (t, Some(c)),
        None => (rest, None),
    };
    let ty = parse_byte(ty, &format!("{name} type"))
        .map_err(|e| format!("{e} (write {name}/TYPE or {name}/TYPE:CODE)"))?;
    Ok(match code {
        None => PortSpec::range(proto, ty << 8, ty << 8 | 0xff),
        Some(c) => {
            let code = parse_byte(c, &format!("{name} code"))?;
            PortSpec::port(proto, ty << 8 | code)
        }
    })
}

/// The protocol of `text` when it names one whose packets carry ports
/// (`tcp`, `udp`, `sctp`, any case).
fn named_port_proto(text: &str) -> Option<u8> {
    NAMED
        .iter()
        .find(|(n, p)| has_ports(*p) && n.eq_ignore_ascii_case(text))
        .map(|(_, p)| *p)
}

/// Whether `text` reads as a port or a port range (`53`, `8000-9000`).
fn looks_like_ports(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
}

/// Parses one `ports:` entry. The error message does not repeat the text.
pub fn parse(text: &str) -> Result<PortSpec, String> {
    if text.eq_ignore_ascii_case("any") {
        return Ok(PortSpec::ANY);
    }
    let Some((left, right)) = text.split_once('/') else {
        // `tcp:53` (Docker, Kubernetes Services and Calico write ports so).
        if let Some((l, r)) = text.split_once(':') {
            let (proto, ports) = match (named_port_proto(l), named_port_proto(r)) {
                (Some(_), None) => (l, r),
                (None, Some(_)) => (r, l),
                _ => ("", ""),
            };
            if !proto.is_empty() && looks_like_ports(ports) {
                let proto = proto.to_ascii_lowercase();
                return Err(format!("write {ports}/{proto}"));
            }
        }
        return parse_proto(text).map(PortSpec::proto);
    };
    // ICMP puts the protocol first (`icmp/8`), the rest put it last (`80/tcp`).
    if let Some((_, p)) = NAMED
        .iter()
        .find(|(n, p)| is_icmp(*p) && n.eq_ignore_ascii_case(left))
    {
        return parse_icmp(*p, right);
    }
    // `tcp/443`, as `explain` takes a packet's port, is `443/tcp`.
    let (left, right) = match named_port_proto(left) {
        Some(_) if named_port_proto(right).is_none() => (right, left),
        _ => (left, right),
    };
    let proto = parse_proto(right)?;
    if is_icmp(proto) {
        let name = proto_name(proto).unwrap_or("icmp");
        return Err(format!(
            "{name} has types, not ports: write {name}/TYPE or {name}/TYPE:CODE"
        ));
    }
    if !has_ports(proto) {
        return Err(format!(
            "protocol {proto} has no ports the agent reads: write just \"{proto}\" to allow all of it"
        ));
    }
    let (low, high) = match left.split_once('-') {
        Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
        None => {
            let p = parse_port(left)?;
            (p, p)
        }
    };
    if low > high {
        return Err(format!("range start {low} is above its end {high}"));
    }
    Ok(PortSpec::range(proto, low, high))
}

pub(crate) fn format(spec: &PortSpec, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Some(proto) = spec.proto else {
        return f.write_str("any");
    };
    let name = proto_name(proto).map_or_else(|| proto.to_string(), str::to_string);
    match spec.range {
        None => f.write_str(&name),
        Some((lo, hi)) if is_icmp(proto) => {
            if lo & 0xff == 0 && hi == lo | 0xff {
                write!(f, "{name}/{}", lo >> 8)
            } else if lo == hi {
                write!(f, "{name}/{}:{}", lo >> 8, lo & 0xff)
            } else {
                write!(f, "{name}/{lo:#06x}-{hi:#06x}")
            }
        }
        Some((lo, hi)) if lo == hi => write!(f, "{lo}/{name}"),
        Some((lo, hi)) => write!(f, "{lo}-{hi}/{name}"),
    }
}

/// Splits `low..=high` into the fewest aligned power-of-two blocks, each given as
/// (first port, number of low bits left free). A masked key in the rule trie can
/// only express such blocks.
pub fn blocks(low: u16, high: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut cur, high) = (u32::from(low), u32::from(high));
    while cur <= high {
        let mut bits = if cur == 0 {
            16
        } else {
            cur.trailing_zeros().min(16)
        };
        while cur + (1 << bits) - 1 > high {
            bits -= 1;
        }
        out.push((cur as u16, bits));
        cur += 1 << bits;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> PortSpec {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn every_form() {
        assert_eq!(ok("8080/tcp"), PortSpec::port(6, 8080));
        assert_eq!(ok("53/udp"), PortSpec::port(17, 53));
        assert_eq!(ok("3868/sctp"), PortSpec::port(132, 3868));
        assert_eq!(ok("30000-32767/tcp"), PortSpec::range(6, 30000, 32767));
        assert_eq!(ok("0-65535/udp"), PortSpec::range(17, 0, 65535));
        assert_eq!(ok("5400-5499/6"), PortSpec::range(6, 5400, 5499));
        assert_eq!(ok("tcp"), PortSpec::proto(6));
        assert_eq!(ok("UDP"), PortSpec::proto(17));
        assert_eq!(ok("sctp"), PortSpec::proto(132));
        assert_eq!(ok("47"), PortSpec::proto(47));
        assert_eq!(ok("0"), PortSpec::proto(0));
        assert_eq!(ok("255"), PortSpec::proto(255));
        assert_eq!(ok("icmp"), PortSpec::proto(1));
        assert_eq!(ok("icmpv6"), PortSpec::proto(58));
        assert_eq!(ok("icmp/8"), PortSpec::range(1, 0x0800, 0x08ff));
        assert_eq!(ok("icmp/3:4"), PortSpec::port(1, 0x0304));
        assert_eq!(ok("icmpv6/128"), PortSpec::range(58, 0x8000, 0x80ff));
        assert_eq!(ok("icmpv6/1:4"), PortSpec::port(58, 0x0104));
        assert_eq!(ok("icmp/255:255"), PortSpec::port(1, 0xffff));
        assert_eq!(ok("any"), PortSpec::ANY);
    }

    #[test]
    fn protocol_first_is_the_same_port() {
        assert_eq!(ok("tcp/443"), ok("443/tcp"));
        assert_eq!(ok("UDP/53"), PortSpec::port(17, 53));
        assert_eq!(ok("sctp/3868"), PortSpec::port(132, 3868));
        assert_eq!(ok("tcp/8000-8999"), PortSpec::range(6, 8000, 8999));
        // Printed the way the policy language prefers.
        assert_eq!(ok("tcp/443").to_string(), "443/tcp");
        assert_eq!(parse("tcp/70000").unwrap_err(), "port must be 0-65535");
        assert_eq!(
            parse("tcp/http").unwrap_err(),
            "\"http\" is not a port number"
        );
        assert_eq!(
            parse("tcp/udp").unwrap_err(),
            "\"tcp\" is not a port number"
        );
    }

    #[test]
    fn colon_forms_say_how_to_write_them() {
        let err = |t: &str| parse(t).unwrap_err();
        assert_eq!(err("tcp:53"), "write 53/tcp");
        assert_eq!(err("UDP:53"), "write 53/udp");
        assert_eq!(err("53:tcp"), "write 53/tcp");
        assert_eq!(err("tcp:8000-9000"), "write 8000-9000/tcp");
        // Not a port after all: the general message.
        assert!(
            err("tcp:x").starts_with("unknown protocol \"tcp:x\""),
            "{}",
            err("tcp:x")
        );
    }

    #[test]
    fn errors() {
        let err = |t: &str| parse(t).unwrap_err();
        assert_eq!(err("70000/tcp"), "port must be 0-65535");
        assert_eq!(
            err("8080"),
            "protocol number must be 0-255 (for port 8080 write 8080/tcp or 8080/udp)"
        );
        assert_eq!(err("80/tpc"), "unknown protocol \"tpc\": expected tcp, udp, sctp, icmp, icmpv6, any or a protocol number");
        assert_eq!(
            err("9000-8000/tcp"),
            "range start 9000 is above its end 8000"
        );
        assert_eq!(
            err("80/47"),
            "protocol 47 has no ports the agent reads: write just \"47\" to allow all of it"
        );
        assert_eq!(
            err("8/icmp"),
            "icmp has types, not ports: write icmp/TYPE or icmp/TYPE:CODE"
        );
        assert_eq!(
            err("icmp/256"),
            "icmp type must be 0-255 (write icmp/TYPE or icmp/TYPE:CODE)"
        );
        assert_eq!(err("icmpv6/1:300"), "icmpv6 code must be 0-255");
        assert_eq!(
            err("icmp/echo"),
            "\"echo\" is not a number (write icmp/TYPE or icmp/TYPE:CODE)"
        );
        assert_eq!(err("/tcp"), "\"\" is not a port number");
        assert_eq!(err("80-/tcp"), "\"\" is not a port number");
        assert_eq!(err("-80/tcp"), "\"\" is not a port number");
        assert_eq!(
            err("256"),
            "protocol number must be 0-255 (for port 256 write 256/tcp or 256/udp)"
        );
        assert!(parse("").is_err());
        assert!(parse("80/tcp/x").is_err());
    }

    #[test]
    fn display_round_trips() {
        for t in [
            "8080/tcp",
            "30000-32767/tcp",
            "tcp",
            "47",
            "icmp",
            "icmp/8",
            "icmp/3:4",
            "icmpv6/2",
            "any",
            "3868/sctp",
        ] {
            assert_eq!(ok(t).to_string(), t);
            assert_eq!(ok(&ok(t).to_string()), ok(t));
        }
    }

    fn covered(bl: &[(u16, u32)]) -> Vec<u32> {
        let mut v: Vec<u32> = bl
            .iter()
            .flat_map(|&(b, bits)| u32::from(b)..u32::from(b) + (1 << bits))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn blocks_are_minimal_and_exact() {
        assert_eq!(blocks(80, 80), vec![(80, 0)]);
        assert_eq!(blocks(0, 65535), vec![(0, 16)]);
        assert_eq!(blocks(0x0800, 0x08ff), vec![(0x0800, 8)]);
        assert_eq!(blocks(65535, 65535), vec![(65535, 0)]);
        assert_eq!(blocks(1, 65535).len(), 16);
        // 30000-32767: 30000 = 0b111010100110000.
        let b = blocks(30000, 32767);
        assert_eq!(
            b,
            vec![(30000, 4), (30016, 6), (30080, 7), (30208, 9), (30720, 11)]
        );
        assert_eq!(covered(&b), (30000..=32767).collect::<Vec<_>>());
        for (lo, hi) in [
            (5400, 5499),
            (1, 1023),
            (1024, 65535),
            (0, 0),
            (7, 8),
            (100, 60000),
        ] {
            let b = blocks(lo, hi);
            assert_eq!(
                covered(&b),
                (u32::from(lo)..=u32::from(hi)).collect::<Vec<_>>()
            );
            for &(base, bits) in &b {
                assert_eq!(u32::from(base) % (1 << bits), 0, "aligned");
            }
            // Minimal: no two blocks merge into one aligned block.
            for w in b.windows(2) {
                let (a, c) = (w[0], w[1]);
                let merged = a.1 == c.1 && u32::from(a.0) % (1 << (a.1 + 1)) == 0;
                assert!(!merged, "{lo}-{hi}: {a:?} {c:?}");
            }
        }
    }
}
