//! Reading prefixes strictly: a prefix with host bits set is rejected rather
//! than truncated, because `10.0.1.5/24` more likely means a typo than the /24.

use std::net::IpAddr;

use ipnet::IpNet;

/// Whether `text` is meant as an address or prefix rather than a group name.
/// A parseable address, or a slash after something address-like, decides it, so
/// that a broken prefix gets a prefix error instead of "unknown group". A slash
/// alone does not: groups imported from Kubernetes are named `namespace/name`.
pub fn looks_like_cidr(text: &str) -> bool {
    if text.parse::<IpAddr>().is_ok() {
        return true;
    }
    let Some((addr, len)) = text.split_once('/') else {
        return false;
    };
    // `10.0.1/24`, `fd00::/300`, `10/8`, `fd00/16`; but not `default/web` or
    // `123/web` (a namespace of digits).
    let dotted = addr.contains(['.', ':']);
    let hex = addr.chars().all(|c| c.is_ascii_hexdigit());
    let length = len.chars().all(|c| c.is_ascii_digit());
    dotted || (hex && length)
}

/// `ADDR/LEN` with no host bits set, or a bare address (a /32 or /128).
pub fn parse(text: &str) -> Result<IpNet, String> {
    let Some((addr, len)) = text.split_once('/') else {
        return text
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"));
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len.parse() {
        Ok(n) if n <= max && !len.starts_with('+') => n,
        _ => return Err(format!("prefix length must be 0-{max}")),
    };
    let net = IpNet::new(ip, len).map_err(|e| e.to_string())?;
    if net.network() != ip {
        let single = IpNet::from(ip);
        return Err(format!(
            "host bits set: the /{len} containing {ip} is {}; write that, or {single} for the one address",
            net.trunc()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts() {
        assert_eq!(parse("10.0.1.0/24").unwrap().to_string(), "10.0.1.0/24");
        assert_eq!(parse("10.0.1.5").unwrap().to_string(), "10.0.1.5/32");
        assert_eq!(parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse("fd00:0:1::/64").unwrap().to_string(), "fd00:0:1::/64");
        assert_eq!(parse("fd00:1:0::/64").unwrap().to_string(), "fd00:1::/64");
        assert_eq!(parse("fd00::1").unwrap().to_string(), "fd00::1/128");
        assert_eq!(parse("::/0").unwrap().to_string(), "::/0");
    }

    #[test]
    fn rejects() {
        assert_eq!(
            parse("10.0.1.5/24").unwrap_err(),
            "host bits set: the /24 containing 10.0.1.5 is 10.0.1.0/24; write that, or 10.0.1.5/32 for the one address"
        );
        assert_eq!(
            parse("10.0.1.0/33").unwrap_err(),
            "prefix length must be 0-32"
        );
        assert_eq!(
            parse("fd00::/129").unwrap_err(),
            "prefix length must be 0-128"
        );
        assert_eq!(
            parse("10.0.1.0/").unwrap_err(),
            "prefix length must be 0-32"
        );
        assert_eq!(
            parse("10.0.1.300/24").unwrap_err(),
            "\"10.0.1.300\" is not an IP address"
        );
        assert_eq!(
            parse("10.0.1").unwrap_err(),
            "\"10.0.1\" is not an IP address or CIDR"
        );
        assert!(parse("fd00::1/64").unwrap_err().contains("fd00::/64"));
    }

    #[test]
    fn cidr_or_name() {
        assert!(looks_like_cidr("10.0.0.0/8"));
        assert!(looks_like_cidr("10.0.0.300/8"));
        assert!(looks_like_cidr("::1"));
        assert!(!looks_like_cidr("svc-ledger"));
        assert!(!looks_like_cidr("10.0.1"));
        assert!(looks_like_cidr("10.0.1/24"));
        assert!(looks_like_cidr("10/8"));
        assert!(looks_like_cidr("fd00/16"));
        assert!(looks_like_cidr("10.0.1.0/"));
        assert!(looks_like_cidr("/24"));
        assert!(!looks_like_cidr("default/web"));
        assert!(!looks_like_cidr("123/web"));
        assert!(!looks_like_cidr("default/web/ingress[0].from[1]"));
    }
}
