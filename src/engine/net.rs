//! Plain TCP for the client side (direct connections and connections to proxies), and Node's
//! names for I/O errors.

use std::io;

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

/// A socket of Node's, duplicated (F_DUPFD_CLOEXEC): Node keeps its descriptor open for the
/// call and destroys it afterwards; the engine owns the duplicate.
pub fn dup_fd(fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    if fd < 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file descriptor"));
    }
    // SAFETY: the caller's socket owns `fd` and keeps it open for the duration of this call;
    // only the duplicate is owned here.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
}

/// Resolves `host` and connects to the first address that answers, with Nagle off. Errors
/// are Node's code and message (`getaddrinfo ENOTFOUND host`, `connect ECONNREFUSED addr`).
pub async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, (String, String)> {
    let addrs: Vec<_> = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect(),
        Err(_) => return Err(("ENOTFOUND".into(), format!("getaddrinfo ENOTFOUND {host}"))),
    };
    let mut last = ("ENOTFOUND".to_string(), format!("getaddrinfo ENOTFOUND {host}"));
    for a in addrs {
        match TcpStream::connect(a).await {
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
