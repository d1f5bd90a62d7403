//! The node's routes, from an rtnetlink dump (RTM_GETROUTE): which addresses
//! sit behind each interface (routed CNIs such as Calico and the AWS VPC CNI
//! install one /32 or /128 route per pod to its host veth), and which
//! interfaces hold the default route (the uplinks, unless named).
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
/// `rtnexthop`: len (2), flags (1), hops (1), ifindex (4).
const RTNH_LEN: usize = 8;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RTN_UNICAST: u8 = 1;

/// One route of the dump, as much of it as the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix (`0.0.0.0` or `::` with length 0 for a default route).
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub table: u32,
    /// `RTN_*` (unicast, local, broadcast, ...).
    pub kind: u8,
    /// Output interfaces: the route's own, or each next hop's.
    pub oifs: Vec<u32>,
}

impl Route {
    fn main_unicast(&self) -> bool {
        self.table == RT_TABLE_MAIN && self.kind == RTN_UNICAST
    }

    /// A route to exactly one address (/32, /128).
    pub fn is_host(&self) -> bool {
        let full = if self.dst.is_ipv4() { 32 } else { 128 };
        self.prefix_len == full
    }
}

/// Every IPv4 and IPv6 route of every table.
pub fn dump() -> io::Result<Vec<Route>> {
    let mut all = dump_family(libc::AF_INET as u8)?;
    all.extend(dump_family(libc::AF_INET6 as u8)?);
    Ok(all)
}

/// Host routes (/32, /128) of the main table, by output interface: the
/// addresses a routed CNI placed behind each interface.
pub fn host_routes(routes: &[Route]) -> BTreeMap<u32, BTreeSet<IpAddr>> {
    let mut out: BTreeMap<u32, BTreeSet<IpAddr>> = BTreeMap::new();
    for r in routes.iter().filter(|r| r.main_unicast() && r.is_host()) {
        for &oif in &r.oifs {
            out.entry(oif).or_default().insert(r.dst);
        }
    }
    out
}

/// Interfaces holding a default route (IPv4 or IPv6) of the main table.
pub fn default_route_ifindexes(routes: &[Route]) -> BTreeSet<u32> {
    routes
        .iter()
        .filter(|r| r.main_unicast() && r.prefix_len == 0)
        .flat_map(|r| r.oifs.iter().copied())
        .collect()
}

fn dump_family(family: u8) -> io::Result<Vec<Route>> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just created and nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // A dump the kernel never finishes must not hang the agent.
    let tv = libc::timeval {
        tv_sec: Duration::from_secs(5).as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: `tv` is a valid timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let seq: u32 = 1;
    let mut req = [0u8; NLMSG_HDRLEN + RTMSG_LEN];
    req[0..4].copy_from_slice(&((NLMSG_HDRLEN + RTMSG_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    req[NLMSG_HDRLEN] = family;
    // SAFETY: sending a buffer we own, of the size given (to the kernel:
    // the socket is unbound and unconnected, which netlink allows).
    let n = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut routes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: reading into a buffer we own, of the size given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if parse_messages(&buf[..n as usize], seq, &mut routes)? {
            return Ok(routes);
        }
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("route dump: {what}"))
}

/// Parses one datagram of a dump into `out`; `Ok(true)` once the dump is done.
pub fn parse_messages(mut b: &[u8], seq: u32, out: &mut Vec<Route>) -> io::Result<bool> {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(bad("message length beyond the datagram"));
        }
        let ty = u16_at(b, 4);
        let msg_seq = u32_at(b, 8);
        let body = &b[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match ty {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = if body.len() >= 4 {
                        -(u32_at(body, 0) as i32)
                    } else {
                        libc::EIO
                    };
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                }
                RTM_NEWROUTE => {
                    if let Some(r) = parse_route(body)? {
                        out.push(r);
                    }
                }
                _ => {}
            }
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(false)
}

fn parse_route(body: &[u8]) -> io::Result<Option<Route>> {
    if body.len() < RTMSG_LEN {
        return Err(bad("short rtmsg"));
    }
    let family = body[0];
    let prefix_len = body[1];
    let mut table = body[4] as u32;
    let kind = body[7];
    let full = match family as i32 {
        libc::AF_INET => 4,
        libc::AF_INET6 => 16,
        _ => return Ok(None),
    };
    let mut dst = None;
    let mut oifs = Vec::new();
    for (ty, v) in attrs(&body[RTMSG_LEN..])? {
        match ty {
            RTA_DST if v.len() == full => dst = Some(ip_from(v)),
            RTA_OIF if v.len() == 4 => oifs.push(u32_at(v, 0)),
            RTA_TABLE if v.len() == 4 => table = u32_at(v, 0),
            RTA_MULTIPATH => {
                let mut m = v;
                while m.len() >= RTNH_LEN {
                    let l = u16_at(m, 0) as usize;
                    if l < RTNH_LEN || l > m.len() {
                        return Err(bad("next hop length beyond the attribute"));
                    }
                    oifs.push(u32_at(m, 4));
                    m = &m[align4(l).min(m.len())..];
                }
            }
            _ => {}
        }
    }
    let dst = dst.unwrap_or(if full == 4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    Ok(Some(Route {
        dst,
        prefix_len,
        table,
        kind,
        oifs,
    }))
}

fn ip_from(v: &[u8]) -> IpAddr {
    if v.len() == 4 {
        IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(v);
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

/// The (type, value) attributes of a message's tail.
fn attrs(mut b: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16_at(b, 0) as usize;
        if len < 4 || len > b.len() {
            return Err(bad("attribute length beyond the message"));
        }
        // The top bits are flags (nested, byte order).
        out.push((u16_at(b, 2) & 0x3fff, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend(((4 + v.len()) as u16).to_ne_bytes());
        a.extend(ty.to_ne_bytes());
        a.extend(v);
        a.resize(align4(a.len()), 0);
        a
    }

    fn msg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend(ty.to_ne_bytes());
        m.extend(0x2u16.to_ne_bytes());
        m.extend(seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(body);
        m.resize(align4(m.len()), 0);
        m
    }

    fn route(family: u8, prefix: u8, table: u8, kind: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![family, prefix, 0, 0, table, 3, 0, kind, 0, 0, 0, 0];
        for a in attrs {
            b.extend(a);
        }
        msg(RTM_NEWROUTE, 1, &b)
    }

    #[test]
    fn parses_host_default_and_multipath_routes() {
        let v4 = libc::AF_INET as u8;
        let v6 = libc::AF_INET6 as u8;
        let mut dg = Vec::new();
        // 10.0.1.10/32 dev 7 (main table)
        dg.extend(route(
            v4,
            32,
            254,
            RTN_UNICAST,
            &[
                attr(RTA_DST, &[10, 0, 1, 10]),
                attr(RTA_OIF, &7u32.to_ne_bytes()),
            ],
        ));
        // fd00:0:1::10/128 dev 7, table given by RTA_TABLE
        let a6: Ipv6Addr = "fd00:0:1::10".parse().unwrap();
        dg.extend(route(
            v6,
            128,
            252,
            RTN_UNICAST,
            &[
                attr(RTA_DST, &a6.octets()),
                attr(RTA_OIF, &7u32.to_ne_bytes()),
                attr(RTA_TABLE, &254u32.to_ne_bytes()),
            ],
        ));
        // default via two next hops (dev 2 and dev 3)
        let mut nh = Vec::new();
        for i in [2u32, 3] {
            nh.extend(8u16.to_ne_bytes());
            nh.extend([0, 0]);
            nh.extend(i.to_ne_bytes());
        }
        dg.extend(route(v4, 0, 254, RTN_UNICAST, &[attr(RTA_MULTIPATH, &nh)]));
        // a local-table host route: not a pod
        dg.extend(route(
            v4,
            32,
            255,
            2,
            &[
                attr(RTA_DST, &[10, 0, 0, 5]),
                attr(RTA_OIF, &2u32.to_ne_bytes()),
            ],
        ));
        // another request's message is ignored
        dg.extend(msg(
            RTM_NEWROUTE,
            9,
            &[v4, 32, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0],
        ));
        let mut routes = Vec::new();
        assert!(!parse_messages(&dg, 1, &mut routes).unwrap());
        assert_eq!(routes.len(), 4);
        let hosts = host_routes(&routes);
        assert_eq!(hosts.len(), 1);
        let want: BTreeSet<IpAddr> = [IpAddr::from([10, 0, 1, 10]), IpAddr::V6(a6)].into();
        assert_eq!(hosts[&7], want);
        assert_eq!(default_route_ifindexes(&routes), [2, 3].into());
        assert!(parse_messages(&msg(NLMSG_DONE, 1, &[0; 4]), 1, &mut routes).unwrap());
    }

    #[test]
    fn refuses_cut_messages_and_reports_errors() {
        let mut routes = Vec::new();
        let mut m = route(
            libc::AF_INET as u8,
            32,
            254,
            1,
            &[attr(RTA_DST, &[1, 2, 3, 4])],
        );
        // The attribute claims more than the message holds.
        m[NLMSG_HDRLEN + RTMSG_LEN] = 40;
        assert!(parse_messages(&m, 1, &mut routes).is_err());
        let err = msg(NLMSG_ERROR, 1, &(-libc::EPERM).to_ne_bytes());
        let e = parse_messages(&err, 1, &mut routes).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn dumps_this_namespace() {
        // Whatever the machine's routes, the dump must parse to the end.
        let routes = dump().unwrap();
        assert!(routes.iter().all(|r| r.prefix_len <= 128));
    }
}
