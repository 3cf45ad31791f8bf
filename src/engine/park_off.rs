//! Where sockets have no Unix descriptor (Windows), connections do not park and JS does not
//! write to their sockets directly: they stay on their tasks. The interface of `park.rs`.

use tokio::net::TcpStream;

use super::connection::Transport;
use super::state::Shared;

impl Transport for TcpStream {}

/// Connections keep writing from their tasks only.
pub fn allow_direct_writes(_: &Shared, _: &TcpStream) {}

pub fn count() -> usize {
    0
}

pub fn is_parked(_: u32) -> bool {
    false
}

pub fn is_served(_: u32) -> bool {
    false
}
