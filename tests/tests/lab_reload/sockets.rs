//! Sockets the one-shot exchanges of the library do not offer: an echo
//! server that keeps connections for `tcp_info`, and a connection kept open.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use netpol_tests::Netns;

/// TCP echo server that echoes every connection until EOF, remembers every
/// peer, and keeps the server side of connections from `keep_from` open for
/// `tcp_info` (other connections are closed as soon as the peer closes, so a
/// probe's close handshake is over quickly).
pub struct Echo {
    listener: Arc<TcpListener>,
    pub stop: Arc<AtomicBool>,
    pub kept: Arc<Mutex<Vec<TcpStream>>>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl Echo {
    pub fn spawn(ns: &Netns, addr: SocketAddr, keep_from: Option<IpAddr>) -> Echo {
        let listener = ns
            .run_in(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()));
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (listener, stop, kept, peers) =
                (listener.clone(), stop.clone(), kept.clone(), peers.clone());
            std::thread::Builder::new()
                .name(format!("echo {addr}"))
                .spawn(move || {
                    let mut workers = Vec::new();
                    loop {
                        let accepted = listener.accept();
                        if stop.load(Ordering::SeqCst) {
                            return workers;
                        }
                        let Ok((stream, peer)) = accepted else {
                            continue;
                        };
                        peers.lock().unwrap().push(peer);
                        if Some(peer.ip()) == keep_from {
                            if let Ok(c) = stream.try_clone() {
                                kept.lock().unwrap().push(c);
                            }
                        }
                        let stop = stop.clone();
                        workers.push(std::thread::spawn(move || echo_until_eof(stream, &stop)));
                    }
                })
                .expect("spawn echo acceptor")
        };
        Echo {
            listener,
            stop,
            kept,
            peers,
            acceptor: Some(acceptor),
        }
    }

    pub fn peers_from(&self, ip: IpAddr) -> usize {
        self.peers
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.ip() == ip)
            .count()
    }

    /// `tcp_info` of every kept connection.
    pub fn kept_info(&self) -> Vec<io::Result<libc::tcp_info>> {
        self.kept.lock().unwrap().iter().map(tcp_info).collect()
    }
}

fn echo_until_eof(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    // Short read timeouts only to notice `stop`; the connection itself may
    // stay idle as long as the test likes.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket wakes the thread blocked in accept.
        // SAFETY: the fd stays open: `self.listener` holds it.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for c in self.kept.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
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

pub fn tcp_info(s: &TcpStream) -> io::Result<libc::tcp_info> {
    // SAFETY: all-zero is a valid tcp_info; getsockopt writes at most `len`.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A TCP connection from `src` (any port) to `dst`, made inside `ns`. The
/// harness only offers one-shot exchanges; the steady flow needs the stream.
pub fn connect_from(
    ns: &Netns,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    timeout: Duration,
) -> io::Result<TcpStream> {
    ns.run_in(move || {
        // SAFETY: plain syscalls on a descriptor owned right away.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
        // SO_SNDTIMEO also bounds a blocking connect(2).
        stream.set_write_timeout(Some(timeout))?;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let sa = sockaddr_in(SocketAddrV4::new(src, 0));
        // SAFETY: a valid sockaddr_in of length `len`.
        if unsafe { libc::bind(raw, &sa as *const _ as *const libc::sockaddr, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let sa = sockaddr_in(dst);
        // SAFETY: as above.
        if unsafe { libc::connect(raw, &sa as *const _ as *const libc::sockaddr, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(stream)
    })
}
