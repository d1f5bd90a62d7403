//! Which interfaces `--iface` names: exact names or shell globs (`lxc*`, `eni*`).
/// Names of the interfaces in the agent's network namespace.
pub fn list() -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = nix::net::if_::if_nameindex()?
        .iter()
        .map(|i| i.name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The ifindex of interface `name`, if it exists.
pub fn index_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Whether `name` is one end of a veth pair (a pod's interface on most
/// CNIs), from the driver name the kernel reports (ETHTOOL_GDRVINFO, which
/// needs no sysfs of the agent's network namespace). Unknown: false.
pub fn is_veth(name: &str) -> bool {
    driver(name).is_some_and(|d| d == "veth")
}

fn driver(name: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    // struct ethtool_drvinfo: cmd, then driver[32] and the rest, 196 bytes.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    // struct ifreq: the name, then a union whose pointer member we set.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        pad: [u8; 16],
    }
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a datagram socket only used for this ioctl, closed below; the
    // kernel writes at most size_of::<DrvInfo>() bytes through `data`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req as *mut IfReq);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Interfaces matching any pattern; `lo` only when named exactly.
pub fn select(
    patterns: &[String],
    available: &[String],
) -> Result<Vec<String>, glob::PatternError> {
    let compiled = patterns
        .iter()
        .map(|p| glob::Pattern::new(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(available
        .iter()
        .filter(|name| {
            patterns.iter().any(|p| p == *name)
                || (name.as_str() != "lo" && compiled.iter().any(|p| p.matches(name)))
        })
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::select;

    #[test]
    fn loopback_is_not_a_veth() {
        assert!(!super::is_veth("lo"));
        assert!(!super::is_veth("no-such-if0"));
        assert_eq!(super::driver("no-such-if0"), None);
    }

    #[test]
    fn globs_and_names() {
        let avail: Vec<String> = ["lo", "eth0", "lxc1", "lxc2", "eni9"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let pats = vec!["lxc*".to_string(), "eth0".to_string()];
        assert_eq!(select(&pats, &avail).unwrap(), ["eth0", "lxc1", "lxc2"]);
        assert_eq!(select(&["*".to_string()], &avail).unwrap().len(), 4);
        assert_eq!(select(&["lo".to_string()], &avail).unwrap(), ["lo"]);
        assert!(select(&["[".to_string()], &avail).is_err());
    }
}
