//! The node's own addresses (the built-in group `host`), read from the
//! interfaces of the network namespace the agent runs in.
use std::net::IpAddr;

/// Every address on every interface, sorted and deduplicated.
pub fn discover() -> std::io::Result<Vec<IpAddr>> {
    let mut addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()?
        .filter_map(|ifa| {
            let a = ifa.address?;
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_loopback() {
        let addrs = super::discover().unwrap();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
    }
}
