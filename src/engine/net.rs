//! Plain TCP for the client side (direct connections and connections to proxies), and Node's
//! names for I/O errors.

use std::io;

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The Node error code and message for an I/O error, as Node would word them
/// (`connect ECONNREFUSED 127.0.0.1:80`).
pub fn io_error_code(e: &io::Error, syscall: &str) -> (String, String) {
    let code = errno_name(e).unwrap_or(match e.kind() {
        io::ErrorKind::ConnectionRefused => "ECONNREFUSED",
        io::ErrorKind::ConnectionReset => "ECONNRESET",
        io::ErrorKind::TimedOut => "ETIMEDOUT",
        io::ErrorKind::NotFound => "ENOENT",
        io::ErrorKind::AddrInUse => "EADDRINUSE",
        io::ErrorKind::BrokenPipe => "EPIPE",
        _ => "EIO",
    });
    (code.to_string(), format!("{syscall} {code}"))
}

/// The name of a Linux errno (the numbers differ on other systems, which fall back to the
/// error's kind).
#[cfg(target_os = "linux")]
fn errno_name(e: &io::Error) -> Option<&'static str> {
    Some(match e.raw_os_error()? {
        1 => "EPERM",
        2 => "ENOENT",
        13 => "EACCES",
        32 => "EPIPE",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        _ => return None,
    })
}

#[cfg(not(target_os = "linux"))]
fn errno_name(_: &io::Error) -> Option<&'static str> {
    None
}

/// A TCP socket of Node's, duplicated (F_DUPFD_CLOEXEC): Node keeps its descriptor open for
/// the call and destroys it afterwards; the engine owns the duplicate. (Node gives no
/// descriptor on Windows, where its sockets are bridged instead.)
#[cfg(unix)]
pub fn dup_fd(fd: i32) -> io::Result<std::net::TcpStream> {
    if fd < 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file descriptor"));
    }
    // SAFETY: the caller's socket owns `fd` and keeps it open for the duration of this call;
    // only the duplicate is owned here.
    let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    Ok(std::net::TcpStream::from(owned))
}

#[cfg(not(unix))]
pub fn dup_fd(_: i32) -> io::Result<std::net::TcpStream> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "sockets are handed over by descriptor on Unix only"))
}

/// The descriptor of a socket the engine owns, for its outbox (`Outbox::set_fd`); -1 where
/// sockets have no descriptor (on Windows: the engine then writes from the connection's task
/// only, and connections do not park).
#[cfg(unix)]
pub fn fd_of(socket: &impl std::os::fd::AsRawFd) -> i32 {
    socket.as_raw_fd()
}

#[cfg(not(unix))]
pub fn fd_of<T>(_: &T) -> i32 {
    -1
}

/// A connection's TCP socket, borrowed for a call (`ws._socket`'s addresses and options).
/// Call only under the connection's outbox lock, which keeps `fd` open (see `Outbox::fd`).
#[cfg(unix)]
pub struct SocketRef(std::mem::ManuallyDrop<std::net::TcpStream>);

#[cfg(unix)]
impl SocketRef {
    /// # Safety
    /// `fd` must be an open TCP socket for the life of the value, which never closes it.
    pub unsafe fn new(fd: i32) -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: the caller keeps `fd` open; ManuallyDrop: not ours to close.
        SocketRef(std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) }))
    }

    /// The peer's and our address.
    pub fn addresses(&self) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        (self.0.peer_addr().ok(), self.0.local_addr().ok())
    }

    pub fn set_no_delay(&self, on: bool) -> io::Result<()> {
        self.0.set_nodelay(on)
    }

    /// SO_KEEPALIVE, and the idle time before the first probe when `delay_secs` > 0 (Node's
    /// `setKeepAlive(enable, initialDelay)`).
    pub fn set_keep_alive(&self, on: bool, delay_secs: u32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.0.as_raw_fd();
        let set = |level, name, value: libc::c_int| {
            // SAFETY: setsockopt reads one c_int from a valid pointer, on a socket kept open.
            let r = unsafe { libc::setsockopt(fd, level, name, (&value as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
            if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
        };
        set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, on as libc::c_int)?;
        if on && delay_secs > 0 {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, delay_secs as libc::c_int)?;
            #[cfg(target_vendor = "apple")]
            set(libc::IPPROTO_TCP, libc::TCP_KEEPALIVE, delay_secs as libc::c_int)?;
        }
        Ok(())
    }

}

/// Where a client connection comes from and which addresses it may go to (Node's `family`,
/// `localAddress` and `localPort` options).
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin {
    /// 4 or 6: only addresses of that family; None: any.
    pub family: Option<u8>,
    /// The local address to bind before connecting (with port 0 unless `local_port`).
    pub local_ip: Option<std::net::IpAddr>,
    pub local_port: Option<u16>,
}

impl Origin {
    fn allows(&self, a: &SocketAddr) -> bool {
        match self.family {
            Some(4) => a.is_ipv4(),
            Some(6) => a.is_ipv6(),
            _ => self.local_ip.is_none_or(|ip| ip.is_ipv4() == a.is_ipv4()),
        }
    }

    async fn connect(&self, a: SocketAddr) -> io::Result<TcpStream> {
        if self.local_ip.is_none() && self.local_port.is_none() {
            return TcpStream::connect(a).await;
        }
        let socket = if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        let unspecified: std::net::IpAddr = if a.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
        socket.bind(SocketAddr::new(self.local_ip.unwrap_or(unspecified), self.local_port.unwrap_or(0)))?;
        socket.connect(a).await
    }
}

/// Resolves `host` and connects to the first address that answers (of `origin`'s family,
/// from its local address), with Nagle off. Errors are Node's code and message
/// (`getaddrinfo ENOTFOUND host`, `connect ECONNREFUSED addr`).
pub async fn connect_tcp(host: &str, port: u16, origin: Origin) -> Result<TcpStream, (String, String)> {
    // As in Node, `family` chooses among the addresses a name resolves to: an address given
    // as such is used whatever its family.
    let literal = host.parse::<std::net::IpAddr>().is_ok();
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.filter(|a| literal || origin.allows(a)).collect(),
        Err(_) => return Err(("ENOTFOUND".into(), format!("getaddrinfo ENOTFOUND {host}"))),
    };
    let mut last = ("ENOTFOUND".to_string(), format!("getaddrinfo ENOTFOUND {host}"));
    for a in addrs {
        match origin.connect(a).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => {
                let (code, msg) = io_error_code(&e, "connect");
                last = (code, format!("{msg} {a}"));
            }
        }
    }
    Err(last)
}
