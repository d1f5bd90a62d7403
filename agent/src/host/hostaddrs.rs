//! The node's own addresses (the built-in group `host`), read from the
//! interfaces of the network namespace the agent runs in.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every address on every interface, sorted and deduplicated.
pub fn discover() -> std::io::Result<Vec<IpAddr>> {
    let mut addrs = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: nodes of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        if let Some(addr) = unsafe { sockaddr_ip(ifa.ifa_addr) } {
            addrs.push(addr);
        }
        cur = ifa.ifa_next;
    }
    unsafe { libc::freeifaddrs(head) };
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// # Safety
/// `sa` is null or points to a sockaddr whose family says how long it is.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    match (*sa).sa_family as i32 {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_loopback() {
        let addrs = super::discover().unwrap();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
    }
}
