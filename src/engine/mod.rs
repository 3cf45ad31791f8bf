//! The engine: the tokio runtime, one task per connection, the server accept loop, the client
//! connect, and the batches that carry events to JS and commands from it.

pub mod alloc;
pub mod bridge;
pub mod client;
pub mod connection;
pub mod events;
pub mod outbox;
pub mod park;
pub mod proxy;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod tls;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

/// Server ids (0 is never used). Connection ids come from `registry`.
pub fn next_server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The Node error code and message for an I/O error, as Node would word them
/// (`connect ECONNREFUSED 127.0.0.1:80`).
pub fn io_error_code(e: &io::Error, syscall: &str) -> (String, String) {
    let code = match e.raw_os_error() {
        Some(1) => "EPERM",
        Some(2) => "ENOENT",
        Some(13) => "EACCES",
        Some(32) => "EPIPE",
        Some(98) => "EADDRINUSE",
        Some(99) => "EADDRNOTAVAIL",
        Some(101) => "ENETUNREACH",
        Some(103) => "ECONNABORTED",
        Some(104) => "ECONNRESET",
        Some(110) => "ETIMEDOUT",
        Some(111) => "ECONNREFUSED",
        Some(113) => "EHOSTUNREACH",
        _ => match e.kind() {
            io::ErrorKind::ConnectionRefused => "ECONNREFUSED",
            io::ErrorKind::ConnectionReset => "ECONNRESET",
            io::ErrorKind::TimedOut => "ETIMEDOUT",
            io::ErrorKind::NotFound => "ENOENT",
            io::ErrorKind::AddrInUse => "EADDRINUSE",
            io::ErrorKind::BrokenPipe => "EPIPE",
            _ => "EIO",
        },
    };
    (code.to_string(), format!("{syscall} {code}"))
}
