//! Bounded socket helpers: echo servers and clients that prove data flows both
//! ways between two lab endpoints, or say precisely how it did not.
//!
//! Every wait has a deadline, so a dropped packet shows up as
//! `ExchangeError::Timeout` instead of a hung test.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::Netns;

/// Wait for edges that should work: generous, since a slow CI box must not
/// turn an allowed edge into a false "denied".
pub const ALLOWED_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait for edges that should be dropped: long enough that a working path
/// (sub-millisecond on veths) would certainly have answered.
pub const DENIED_TIMEOUT: Duration = Duration::from_millis(700);

/// Bounds how long a server connection lingers if a client vanishes mid-flow
/// (for example when the agent drops its packets).
const SERVER_IDLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

#[derive(Debug)]
pub enum ExchangeError {
    /// Nothing came back in time: what a dropped packet looks like.
    Timeout {
        waiting_for: &'static str,
    },
    /// TCP RST to the SYN, or ICMP port unreachable for UDP: the path works
    /// but nothing listens (or something rejects rather than drops).
    Refused,
    /// The connection was reset after it was established.
    Reset,
    /// An answer came back but not our payload.
    Mismatch {
        sent: Vec<u8>,
        got: Vec<u8>,
    },
    Other(io::Error),
}

impl ExchangeError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, ExchangeError::Timeout { .. })
    }

    fn from_io(e: io::Error, waiting_for: &'static str) -> ExchangeError {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                ExchangeError::Timeout { waiting_for }
            }
            io::ErrorKind::ConnectionRefused => ExchangeError::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                ExchangeError::Reset
            }
            _ => ExchangeError::Other(e),
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Timeout { waiting_for } => {
                write!(f, "timeout (no answer) waiting for {waiting_for}")
            }
            ExchangeError::Refused => f.write_str("refused (RST or ICMP port unreachable)"),
            ExchangeError::Reset => f.write_str("connection reset after it was established"),
            ExchangeError::Mismatch { sent, got } => write!(
                f,
                "echo mismatch: sent {:?}, got {:?}",
                String::from_utf8_lossy(sent),
                String::from_utf8_lossy(got)
            ),
            ExchangeError::Other(e) => write!(f, "error: {e} ({:?})", e.kind()),
        }
    }
}

impl std::error::Error for ExchangeError {}

static PAYLOAD_SEQ: AtomicU64 = AtomicU64::new(0);

/// A payload unique to this exchange, so a stale reply from an earlier one
/// can never pass for this one.
fn payload(src: IpAddr, dst: SocketAddr, proto: Proto) -> Vec<u8> {
    let n = PAYLOAD_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("netpol-lab {proto} {src} -> {dst} #{n}\n").into_bytes()
}

/// Connects from `src` (any port) to `dst` inside `ns`, sends a payload and
/// checks that the same bytes come back.
pub fn tcp_exchange(
    ns: &Netns,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<(), ExchangeError> {
    let sent = payload(src, dst, Proto::Tcp);
    let mut stream = ns
        .run_in(|| connect_from(src, dst, timeout))
        .map_err(|e| ExchangeError::from_io(e, "the SYN-ACK"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ExchangeError::Other)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(ExchangeError::Other)?;
    stream
        .write_all(&sent)
        .map_err(|e| ExchangeError::from_io(e, "send buffer space"))?;
    let mut got = vec![0u8; sent.len()];
    let mut filled = 0;
    while filled < got.len() {
        match stream.read(&mut got[filled..]) {
            Ok(0) => {
                got.truncate(filled);
                return Err(ExchangeError::Mismatch { sent, got });
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ExchangeError::from_io(e, "the echoed payload")),
        }
    }
    if got != sent {
        return Err(ExchangeError::Mismatch { sent, got });
    }
    Ok(())
}

/// Sends one datagram from `src` to `dst` inside `ns` and waits for its echo.
pub fn udp_exchange(
    ns: &Netns,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<(), ExchangeError> {
    let sent = payload(src, dst, Proto::Udp);
    let sock = ns
        .run_in(|| UdpSocket::bind(SocketAddr::new(src, 0)))
        .map_err(ExchangeError::Other)?;
    // A connected UDP socket reports ICMP port unreachable as ECONNREFUSED
    // and ignores datagrams from anyone but `dst`.
    sock.connect(dst).map_err(ExchangeError::Other)?;
    // UDP may lose a datagram: the same one is sent up to three times, each
    // waiting a third of `timeout` for the echo. A denied edge must still
    // drop every one of them.
    const TRIES: u32 = 3;
    sock.set_read_timeout(Some(timeout / TRIES))
        .map_err(ExchangeError::Other)?;
    let mut buf = vec![0u8; sent.len() + 64];
    let mut tries = 0;
    let n = loop {
        tries += 1;
        sock.send(&sent)
            .map_err(|e| ExchangeError::from_io(e, "the send"))?;
        match sock.recv(&mut buf) {
            Ok(n) => break n,
            Err(e) => {
                let e = ExchangeError::from_io(e, "the echoed datagram");
                if !e.is_timeout() || tries == TRIES {
                    return Err(e);
                }
            }
        }
    };
    buf.truncate(n);
    if buf != sent {
        return Err(ExchangeError::Mismatch { sent, got: buf });
    }
    Ok(())
}

/// Either exchange by protocol.
pub fn exchange(
    ns: &Netns,
    proto: Proto,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<(), ExchangeError> {
    match proto {
        Proto::Tcp => tcp_exchange(ns, src, dst, timeout),
        Proto::Udp => udp_exchange(ns, src, dst, timeout),
    }
}

/// std cannot bind a TCP client before connecting, so this does
/// socket/bind/non-blocking connect/poll by hand. Must run inside the
/// namespace the socket belongs to.
pub fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let domain = match dst {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain syscalls on a descriptor we own from here on.
    let fd = unsafe {
        let raw = libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(raw)
    };
    let (sa, len) = sockaddr(SocketAddr::new(src, 0));
    // SAFETY: `sa` is a valid sockaddr of length `len`.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let (sa, len) = sockaddr(dst);
    // SAFETY: as above.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut err: libc::c_int = 0;
        let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one c_int.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut libc::c_void,
                &mut elen,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// TCP echo server bound to one address inside a namespace; stops on drop.
pub struct TcpEcho {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl TcpEcho {
    pub fn spawn(ns: &Netns, addr: SocketAddr) -> TcpEcho {
        let listener = ns
            .run_in(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("tcp echo: bind {addr} in {}: {e}", ns.name()));
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (listener, stop, conns) = (listener.clone(), stop.clone(), conns.clone());
            std::thread::Builder::new()
                .name(format!("tcp-echo {addr}"))
                .spawn(move || accept_loop(&listener, &stop, &conns))
                .expect("spawn tcp echo thread")
        };
        TcpEcho {
            addr,
            listener,
            stop,
            conns,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    conns: &Mutex<Vec<TcpStream>>,
) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok((stream, _)) = accepted else {
            continue;
        };
        if let Ok(clone) = stream.try_clone() {
            conns.lock().unwrap().push(clone);
        }
        workers.push(std::thread::spawn(move || echo_stream(stream)));
    }
    workers
}

fn echo_stream(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(SERVER_IDLE));
    let _ = stream.set_write_timeout(Some(SERVER_IDLE));
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket wakes a thread blocked in accept.
        // SAFETY: the fd stays open: `self.listener` holds it.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            if let Ok(workers) = acceptor.join() {
                for w in workers {
                    let _ = w.join();
                }
            }
        }
    }
}

/// UDP echo server bound to one address inside a namespace; stops on drop.
pub struct UdpEcho {
    addr: SocketAddr,
    sock: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl UdpEcho {
    pub fn spawn(ns: &Netns, addr: SocketAddr) -> UdpEcho {
        let sock = ns
            .run_in(|| UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("udp echo: bind {addr} in {}: {e}", ns.name()));
        // Backstop in case the shutdown wake-up below is ever missed.
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("udp read timeout");
        let sock = Arc::new(sock);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (sock, stop) = (sock.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("udp-echo {addr}"))
                .spawn(move || {
                    let mut buf = [0u8; 65536];
                    while !stop.load(Ordering::SeqCst) {
                        if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                            if !stop.load(Ordering::SeqCst) {
                                let _ = sock.send_to(&buf[..n], peer);
                            }
                        }
                    }
                })
                .expect("spawn udp echo thread")
        };
        UdpEcho {
            addr,
            sock,
            stop,
            worker: Some(worker),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // On Linux, shutdown(SHUT_RD) wakes a blocked recv even on an
        // unconnected UDP socket (it returns ENOTCONN but still flags it).
        // SAFETY: the fd stays open: `self.sock` holds it.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RD) };
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// An echo server of either protocol, for tables of edges.
pub enum EchoServer {
    Tcp(TcpEcho),
    Udp(UdpEcho),
}

impl EchoServer {
    pub fn spawn(ns: &Netns, proto: Proto, addr: SocketAddr) -> EchoServer {
        match proto {
            Proto::Tcp => EchoServer::Tcp(TcpEcho::spawn(ns, addr)),
            Proto::Udp => EchoServer::Udp(UdpEcho::spawn(ns, addr)),
        }
    }
}

/// Whether a `ping` binary is on PATH; the lab does not install one.
pub fn ping_available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("ping").is_file()))
}

/// One bounded ICMP echo from inside `ns`: `None` when ping is not installed
/// (callers skip the check), else whether a reply came back.
pub fn ping(ns: &Netns, dst: IpAddr) -> Option<bool> {
    if !ping_available() {
        return None;
    }
    let dst = dst.to_string();
    let out = ns.exec(&["ping", "-n", "-c1", "-W1", &dst]);
    Some(out.status.success())
}
