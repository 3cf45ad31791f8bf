//! Per-connection settings, shared by all connections of a server or made for one client.
//! ws's options get their defaults in lib/, as in ws; the options that exist only in
//! ws-native get theirs from the protocol core (`ReceiverConfig::default()`,
//! `HeadLimits::default()`).

use std::sync::Arc;
use std::time::Duration;

use super::events::Sink;
use super::runtime::Pool;
use crate::protocol::deflate::DeflateOptions;
use crate::protocol::handshake::HeadLimits;
use crate::protocol::receiver::ReceiverConfig;

/// What every connection of a server, or one client connection, runs with.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub receiver: ReceiverConfig,
    pub auto_pong: bool,
    /// ws's `maxPendingAutoPongs` (0: no limit).
    pub max_pending_auto_pongs: u32,
    pub close_timeout: Duration,
    /// Client: the whole opening handshake. Server: receiving the request head.
    pub handshake_timeout: Option<Duration>,
    /// permessage-deflate: offered by a client, accepted by a server. None when disabled.
    pub deflate: Option<DeflateOptions>,
    /// The events of the Node environment that made this server or client.
    pub sink: Arc<Sink>,
    /// Limits on the request (server) or response (client) head.
    pub head_limits: HeadLimits,
    /// The built-in heartbeat (`heartbeat: { interval, timeout }`); None: off, as in ws.
    pub heartbeat: Option<Heartbeat>,
    /// Buffered output past `high` bytes makes a DRAIN record follow once it is back at `low`.
    pub water_marks: WaterMarks,
    /// `maxBackpressure`: most bytes a connection may have buffered; past it a send is
    /// dropped, or with `close` (`closeOnBackpressureLimit`) the connection ends. None: no
    /// limit, as in ws.
    pub backpressure_limit: Option<BackpressureLimit>,
}

impl ConnConfig {
    /// The runtime that serves these connections: a server that accepts permessage-deflate
    /// compresses on the compressing pool (see `runtime`); clients and other servers on the
    /// I/O pool.
    pub fn pool(&self) -> Pool {
        if self.receiver.is_server && self.deflate.is_some() {
            Pool::Compressing
        } else {
            Pool::Io
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// A connection silent this long is pinged.
    pub interval: Duration,
    /// A connection still silent this long after the ping is terminated.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaterMarks {
    pub high: u64,
    pub low: u64,
}

impl Default for WaterMarks {
    /// 64 KiB and 16 KiB.
    fn default() -> Self {
        WaterMarks { high: 64 * 1024, low: 16 * 1024 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackpressureLimit {
    pub bytes: u64,
    pub close: bool,
}
