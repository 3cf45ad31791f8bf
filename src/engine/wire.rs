//! The engine-to-JS boundary's format, in one place: the numbers both sides use (exported to
//! JS by the binding, never copied), the encoder of every record JS reads, and the decoder of
//! the commands JS sends.
//!
//! Both directions carry a batch of records `[kind u8][flags u8][id u32 LE][len u32 LE]`
//! followed by `len` payload bytes. A payload marked external travels as a buffer of its own
//! (engine to JS: `take_external`, JS to engine: the `flush` call's list), in record order.
//! Text fields inside a payload are length-prefixed (`[len u32 LE][bytes]`); header lists are
//! `name\0value\0...`. lib/native.js and lib/records.js read them.

use std::net::SocketAddr;

use crate::protocol::receiver::Payload;

/// Bytes of a record's header.
pub const HEADER_LEN: usize = 10;

/// In an ERROR record's constructor byte: the engine ends the connection itself (a protocol
/// error leaves the close to JS, as in ws).
pub const ERROR_ENDS: u8 = 0x80;

/// Declares a set of wire numbers as constants and as a `(name, value)` table for JS.
macro_rules! numbers {
    ($(#[$doc:meta])* $set:ident { $($(#[$m:meta])* $name:ident = $v:expr,)* }) => {
        $(#[$doc])*
        pub mod $set {
            $($(#[$m])* pub const $name: u8 = $v;)*
            /// Every number of the set with its name, for JS.
            pub const ALL: &[(&str, u8)] = &[$((stringify!($name), $name)),*];
        }
    };
}

numbers! {
    /// Record kinds, engine to JS.
    kind {
        /// Client handshake done: fields protocol, extensions, reason phrase, header list.
        OPEN = 1,
        TEXT = 2,
        BINARY = 3,
        PING = 4,
        PONG = 5,
        /// The peer's close frame arrived: `[code u16 BE][reason]`.
        CLOSE_FRAME = 6,
        /// The connection ended: `[code u16 BE][frames u32 LE][compressing u32 LE][unsent u64
        /// LE][reason]`: the peer's close code and reason (1006 and none without a close
        /// frame); of the sends still waiting for their callbacks, how many were queued as
        /// frames and how many behind a compression (both never written); the bytes queued
        /// and never written. Last record for an id.
        CLOSED = 7,
        /// An error: fields constructor (`[u8]`: 0 Error, 1 RangeError, 2 SyntaxError, with
        /// `ERROR_ENDS` when the engine ends the connection itself), code, message, close code
        /// (`[u16 BE]`: what JS closes with, or, with `ERROR_ENDS`, the code its 'close' reports).
        ERROR = 8,
        /// `[count u32 LE]` more sends that asked for a callback were written to the socket.
        WRITTEN = 9,
        /// Server: an upgrade request awaits JS's decision (see `Records::upgrade`).
        UPGRADE = 10,
        /// Client: the handshake failed: fields message, Node error code. Last record for an id.
        HANDSHAKE_FAILED = 11,
        /// Before a fragmented binary message: each fragment's end offset (`u32 LE` each).
        FRAGMENTS = 12,
        /// Bridged connection: bytes for Node to write to its socket.
        BRIDGE_OUT = 13,
        /// Bridged connection: Node should end its socket.
        BRIDGE_END = 14,
        /// Client: the server answered with another status than 101: fields status, reason
        /// phrase, header list, body (what arrived of it, bounded). Last record for an id.
        UNEXPECTED_RESPONSE = 15,
        /// The buffered output passed the high-water mark: `[over_limit u8]`, 1 when past
        /// `maxBackpressure` too (JS drops sends until the DRAIN).
        BACKPRESSURE = 16,
        /// The buffered output is back at the low-water mark after a BACKPRESSURE.
        DRAIN = 17,
        /// A server's link to Redis (the id is its hub's): `[event u8][message]`, the event
        /// one of `redis_event`.
        REDIS = 18,
    }
}

numbers! {
    /// What a REDIS record reports.
    redis_event {
        CONNECT = 1,
        /// The message says why.
        DISCONNECT = 2,
        ERROR = 3,
        /// The server closed and its link has sent what it had buffered (or given up): the
        /// last record for the hub.
        STOPPED = 4,
    }
}

numbers! {
    /// Record flags, engine to JS.
    record_flag {
        /// The payload is not in the batch: JS takes it with `takeExternal()`, in order.
        EXTERNAL = 1,
    }
}

numbers! {
    /// Commands, JS to engine.
    op {
        SEND = 1,
        PING = 2,
        PONG = 3,
        /// Payload: empty (no code) or `[code u16 BE][reason]`.
        CLOSE = 4,
        TERMINATE = 5,
        PAUSE = 6,
        RESUME = 7,
        /// Raw bytes on a connection still in its handshake (`wsClientError` sockets).
        RAW_WRITE = 8,
        /// End a connection still in its handshake after its raw bytes.
        RAW_END = 9,
        /// Bytes Node read from a bridged socket.
        BRIDGE_IN = 10,
        /// A bridged socket ended (no more bytes will come).
        BRIDGE_EOF = 11,
        /// JS is done with the id: its last command for it (see `engine::registry`).
        RELEASE = 12,
        /// Names the topic of the SUBSCRIBE, UNSUBSCRIBE and PUBLISH commands that follow in
        /// the batch: the id is the hub's (a server's topics; 0: client sockets'), the
        /// payload the topic.
        TOPIC = 13,
        /// Connection `id` subscribes to the current topic.
        SUBSCRIBE = 14,
        UNSUBSCRIBE = 15,
        /// Publishes the payload to the current topic's subscribers but connection `id` (0:
        /// none). `BINARY` and `COMPRESS` as for SEND; `ACK`: `flush` reports whether the link
        /// to Redis refused it.
        PUBLISH = 16,
        /// JS counted more than the high-water mark sent in one tick (`isBackpressured` was
        /// true before the engine had the bytes): a DRAIN follows once the buffered output is
        /// at the low-water mark.
        WANT_DRAIN = 17,
    }
}

numbers! {
    /// Command flags, JS to engine.
    flag {
        BINARY = 1,
        FIN = 2,
        /// Report with a WRITTEN record once the bytes reached the socket (send callbacks).
        ACK = 4,
        /// The payload is the next buffer of the external list.
        EXTERNAL = 8,
        MASK_SET = 16,
        MASK = 32,
        /// ws's `compress` send option (honoured when permessage-deflate was agreed).
        COMPRESS = 64,
        /// The payload is the previous command's; no bytes follow (the length is informative).
        REPEAT = 128,
    }
}

/// Message payloads at least this large travel to JS as their own buffer instead of being
/// copied into the batch.
pub const EXTERNAL_MIN: usize = 64 * 1024;

const MIN_BATCH: usize = 16 * 1024;
const MAX_BATCH_RESERVE: usize = 4 * 1024 * 1024;
/// Largest buffer kept for reuse once JS has copied a batch out of it.
const SPARE_MAX: usize = 4 * 1024 * 1024;

/// What the UPGRADE record tells JS about a request: the fixed field of numbers, then text.
pub struct Upgrade<'a> {
    pub server_id: u32,
    /// 0 when the request is valid, else the HTTP status of ws's refusal.
    pub status: u16,
    pub remote: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub ws_version: u8,
    pub http_minor: u8,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    /// The refusal's message and extra headers (empty when valid).
    pub message: &'a str,
    pub reject_headers: &'a [(String, String)],
    /// When valid: the `Sec-WebSocket-Accept` value, the offered subprotocols, and the
    /// answer's `Sec-WebSocket-Extensions` value ('' when none was agreed).
    pub accept: &'a str,
    pub protocols: &'a [String],
    pub extensions: &'a str,
}

/// The fixed field of an UPGRADE record: server id (u32), status (u16), remote and local ports
/// (u16 each), WebSocket version, HTTP minor version, 1 if the peer is IPv6 (u8 each); all
/// little-endian. JS reads it without making strings (`upgradeRecord` in lib/records.js).
pub const UPGRADE_FIXED: usize = 13;

/// `name\0value\0...` for a header list.
fn nul_pairs(list: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (k, v) in list {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Records on their way to JS: the batch buffer and the payloads that travel on their own.
/// Each record kind has one encoder here.
#[derive(Default)]
pub struct Records {
    buf: Vec<u8>,
    external: Vec<Vec<u8>>,
    /// Size of the last batch taken: a new batch starts with about that much room, so that
    /// busy connections do not pay for repeated growth (and its copies).
    last_len: usize,
    /// A buffer JS copied out of, emptied, for the next batch.
    spare: Vec<u8>,
}

impl Records {
    /// Bytes appended since the batch was last taken.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the batch: its bytes, and its external payloads in record order.
    pub fn take(&mut self) -> (Vec<u8>, std::vec::Drain<'_, Vec<u8>>) {
        self.last_len = self.buf.len();
        (std::mem::take(&mut self.buf), self.external.drain(..))
    }

    /// Gives back a batch's buffer once JS has copied it, to carry the next batch.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > SPARE_MAX {
            return;
        }
        buf.clear();
        if self.spare.capacity() < buf.capacity() {
            self.spare = buf;
        }
    }

    fn header(&mut self, kind: u8, flags: u8, id: u32, len: usize) {
        if self.buf.capacity() == 0 {
            let want = self.last_len.next_power_of_two().clamp(MIN_BATCH, MAX_BATCH_RESERVE);
            self.buf = std::mem::take(&mut self.spare);
            self.buf.reserve(want.max(len + HEADER_LEN));
        }
        self.buf.push(kind);
        self.buf.push(flags);
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
    }

    fn bytes(&mut self, kind: u8, id: u32, payload: &[u8]) {
        self.header(kind, 0, id, payload.len());
        self.buf.extend_from_slice(payload);
    }

    /// A payload made of a big-endian u16 and bytes (close codes and reasons).
    fn code(&mut self, kind: u8, id: u32, code: u16, rest: &[u8]) {
        self.header(kind, 0, id, 2 + rest.len());
        self.buf.extend_from_slice(&code.to_be_bytes());
        self.buf.extend_from_slice(rest);
    }

    /// A payload of length-prefixed fields.
    fn fields(&mut self, kind: u8, id: u32, fields: &[&[u8]]) {
        let len: usize = fields.iter().map(|f| 4 + f.len()).sum();
        self.header(kind, 0, id, len);
        for f in fields {
            self.buf.extend_from_slice(&(f.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(f);
        }
    }

    pub fn open(&mut self, id: u32, protocol: &str, extensions: &str, reason: &str, headers: &[(String, String)]) {
        let lines = nul_pairs(headers);
        self.fields(kind::OPEN, id, &[protocol.as_bytes(), extensions.as_bytes(), reason.as_bytes(), &lines]);
    }

    /// A whole message; `fragments`, for a binary message received in several frames, is each
    /// fragment's end offset (JS's `fragments` binary type). A payload the engine owns moves
    /// to JS without a copy when it is large.
    pub fn message(&mut self, id: u32, binary: bool, data: Payload<'_>, fragments: Option<&[u32]>) {
        if let Some(ends) = fragments {
            let bytes: Vec<u8> = ends.iter().flat_map(|e| e.to_le_bytes()).collect();
            self.bytes(kind::FRAGMENTS, id, &bytes);
        }
        let k = if binary { kind::BINARY } else { kind::TEXT };
        match data {
            Payload::Owned(v) if v.len() >= EXTERNAL_MIN => {
                self.header(k, record_flag::EXTERNAL, id, v.len());
                self.external.push(v);
            }
            Payload::Owned(v) => self.bytes(k, id, &v),
            Payload::Borrowed(s) => self.bytes(k, id, s),
        }
    }

    /// `event`: one of `redis_event`.
    pub fn redis(&mut self, hub: u32, event: u8, message: &str) {
        self.header(kind::REDIS, 0, hub, 1 + message.len());
        self.buf.push(event);
        self.buf.extend_from_slice(message.as_bytes());
    }

    pub fn ping(&mut self, id: u32, payload: &[u8]) {
        self.bytes(kind::PING, id, payload);
    }

    pub fn pong(&mut self, id: u32, payload: &[u8]) {
        self.bytes(kind::PONG, id, payload);
    }

    pub fn close_frame(&mut self, id: u32, code: u16, reason: &[u8]) {
        self.code(kind::CLOSE_FRAME, id, code, reason);
    }

    /// `callbacks`: the sends whose callbacks still wait, as frames and behind a compression;
    /// `unsent`: the bytes queued and never written.
    pub fn closed(&mut self, id: u32, code: u16, reason: &[u8], callbacks: (u32, u32), unsent: u64) {
        self.header(kind::CLOSED, 0, id, 18 + reason.len());
        self.buf.extend_from_slice(&code.to_be_bytes());
        self.buf.extend_from_slice(&callbacks.0.to_le_bytes());
        self.buf.extend_from_slice(&callbacks.1.to_le_bytes());
        self.buf.extend_from_slice(&unsent.to_le_bytes());
        self.buf.extend_from_slice(reason);
    }

    /// `ctor`: 0 Error, 1 RangeError, 2 SyntaxError (the class JS makes).
    pub fn error(&mut self, id: u32, ctor: u8, code: &str, message: &str, close_code: u16) {
        self.fields(kind::ERROR, id, &[&[ctor], code.as_bytes(), message.as_bytes(), &close_code.to_be_bytes()]);
    }

    pub fn written(&mut self, id: u32, count: u32) {
        self.bytes(kind::WRITTEN, id, &count.to_le_bytes());
    }

    pub fn upgrade(&mut self, id: u32, u: &Upgrade<'_>) {
        let ip = |a: Option<SocketAddr>| a.map(|a| a.ip().to_string()).unwrap_or_default();
        let port = |a: Option<SocketAddr>| a.map_or(0u16, |a| a.port());
        let mut fixed = [0u8; UPGRADE_FIXED];
        fixed[0..4].copy_from_slice(&u.server_id.to_le_bytes());
        fixed[4..6].copy_from_slice(&u.status.to_le_bytes());
        fixed[6..8].copy_from_slice(&port(u.remote).to_le_bytes());
        fixed[8..10].copy_from_slice(&port(u.local).to_le_bytes());
        fixed[10] = u.ws_version;
        fixed[11] = u.http_minor;
        fixed[12] = u.remote.is_some_and(|a| a.is_ipv6()) as u8;
        let headers = nul_pairs(u.headers);
        let reject_headers = nul_pairs(u.reject_headers);
        let protocols = u.protocols.join(",");
        self.fields(
            kind::UPGRADE,
            id,
            &[
                &fixed,
                u.method.as_bytes(),
                u.path.as_bytes(),
                &headers,
                ip(u.remote).as_bytes(),
                ip(u.local).as_bytes(),
                u.message.as_bytes(),
                &reject_headers,
                u.accept.as_bytes(),
                protocols.as_bytes(),
                u.extensions.as_bytes(),
            ],
        );
    }

    /// `code`: Node's error code (`ECONNREFUSED`), or '' for ws's own errors.
    pub fn handshake_failed(&mut self, id: u32, message: &str, code: &str) {
        self.fields(kind::HANDSHAKE_FAILED, id, &[message.as_bytes(), code.as_bytes()]);
    }

    pub fn unexpected_response(&mut self, id: u32, status: u16, reason: &str, headers: &[(String, String)], body: &[u8]) {
        let lines = nul_pairs(headers);
        let status = status.to_string();
        self.fields(kind::UNEXPECTED_RESPONSE, id, &[status.as_bytes(), reason.as_bytes(), &lines, body]);
    }

    pub fn backpressure(&mut self, id: u32, over_limit: bool) {
        self.bytes(kind::BACKPRESSURE, id, &[over_limit as u8]);
    }

    pub fn drain(&mut self, id: u32) {
        self.bytes(kind::DRAIN, id, &[]);
    }

    pub fn bridge_out(&mut self, id: u32, bytes: &[u8]) {
        self.bytes(kind::BRIDGE_OUT, id, bytes);
    }

    pub fn bridge_end(&mut self, id: u32) {
        self.bytes(kind::BRIDGE_END, id, &[]);
    }
}

/// One command from JS.
pub struct Command<'a> {
    pub op: u8,
    pub flags: u8,
    pub id: u32,
    /// Its payload (for `flag::REPEAT`, the previous command's).
    pub payload: &'a [u8],
}

impl Command<'_> {
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Decodes a batch of commands. Malformed input (it comes from our own JS) ends the batch;
/// nothing panics.
pub struct Commands<'a> {
    cmds: &'a [u8],
    pos: usize,
    external: std::slice::Iter<'a, &'a [u8]>,
    prev: &'a [u8],
}

impl<'a> Commands<'a> {
    /// `external` holds the large payloads, in order.
    pub fn new(cmds: &'a [u8], external: &'a [&'a [u8]]) -> Self {
        Commands { cmds, pos: 0, external: external.iter(), prev: &[] }
    }
}

impl<'a> Iterator for Commands<'a> {
    type Item = Command<'a>;

    fn next(&mut self) -> Option<Command<'a>> {
        let h = self.cmds.get(self.pos..self.pos + HEADER_LEN)?;
        let (op, flags) = (h[0], h[1]);
        let id = u32::from_le_bytes([h[2], h[3], h[4], h[5]]);
        let len = u32::from_le_bytes([h[6], h[7], h[8], h[9]]) as usize;
        self.pos += HEADER_LEN;
        let payload: &'a [u8] = if flags & flag::REPEAT != 0 {
            self.prev
        } else if flags & flag::EXTERNAL != 0 {
            self.external.next()?
        } else {
            let p = self.cmds.get(self.pos..self.pos.checked_add(len)?)?;
            self.pos += len;
            p
        };
        self.prev = payload;
        Some(Command { op, flags, id, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(op: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![op, flags];
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn commands_decode_inline_external_and_repeated_payloads() {
        let mut cmds = command(op::SEND, flag::FIN, 7, b"hi");
        cmds.extend(command(op::SEND, flag::FIN | flag::REPEAT, 8, b""));
        let mut ext = command(op::SEND, flag::EXTERNAL, 9, b"");
        ext.truncate(HEADER_LEN);
        cmds.extend(ext);
        cmds.extend(command(op::SEND, flag::REPEAT, 10, b""));
        let big: &[u8] = b"external";
        let external = [big];
        let got: Vec<(u8, u32, Vec<u8>)> = Commands::new(&cmds, &external).map(|c| (c.op, c.id, c.payload.to_vec())).collect();
        assert_eq!(
            got,
            vec![(op::SEND, 7, b"hi".to_vec()), (op::SEND, 8, b"hi".to_vec()), (op::SEND, 9, b"external".to_vec()), (op::SEND, 10, b"external".to_vec())]
        );
    }

    #[test]
    fn a_truncated_batch_ends_without_panicking() {
        let mut cmds = command(op::SEND, 0, 1, b"hello");
        cmds.truncate(cmds.len() - 1);
        assert_eq!(Commands::new(&cmds, &[]).count(), 0);
        assert_eq!(Commands::new(&cmds[..5], &[]).count(), 0);
        let lying = command(op::SEND, 0, 1, b"");
        let mut l = lying.clone();
        l[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Commands::new(&l, &[]).count(), 0);
        let missing_external = command(op::SEND, flag::EXTERNAL, 1, b"");
        assert_eq!(Commands::new(&missing_external, &[]).count(), 0);
    }

    /// Reads a record back: (kind, flags, id, payload).
    fn records(r: &mut Records) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let (buf, _) = r.take();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + HEADER_LEN <= buf.len() {
            let id = u32::from_le_bytes(buf[pos + 2..pos + 6].try_into().unwrap());
            let len = u32::from_le_bytes(buf[pos + 6..pos + 10].try_into().unwrap()) as usize;
            let external = buf[pos + 1] & record_flag::EXTERNAL != 0;
            let end = pos + HEADER_LEN + if external { 0 } else { len };
            out.push((buf[pos], buf[pos + 1], id, buf[pos + HEADER_LEN..end].to_vec()));
            pos = end;
        }
        out
    }

    fn fields(mut p: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while p.len() >= 4 {
            let n = u32::from_le_bytes(p[..4].try_into().unwrap()) as usize;
            out.push(p[4..4 + n].to_vec());
            p = &p[4 + n..];
        }
        out
    }

    #[test]
    fn every_handshake_failure_has_the_same_fields() {
        let mut r = Records::default();
        r.handshake_failed(3, "socket hang up", "ECONNRESET");
        r.unexpected_response(3, 404, "Not Found", &[("a".into(), "b".into())], b"body");
        let got = records(&mut r);
        assert_eq!(got[0].0, kind::HANDSHAKE_FAILED);
        assert_eq!(fields(&got[0].3), vec![b"socket hang up".to_vec(), b"ECONNRESET".to_vec()]);
        assert_eq!(got[1].0, kind::UNEXPECTED_RESPONSE);
        assert_eq!(fields(&got[1].3), vec![b"404".to_vec(), b"Not Found".to_vec(), b"a\0b\0".to_vec(), b"body".to_vec()]);
    }

    #[test]
    fn large_owned_messages_travel_on_their_own() {
        let mut r = Records::default();
        r.message(1, true, Payload::Owned(vec![1; EXTERNAL_MIN]), None);
        r.message(1, false, Payload::Borrowed(b"x"), None);
        r.message(1, true, Payload::Borrowed(b"ab"), Some(&[1, 2]));
        let (buf, external) = r.take();
        assert_eq!(external.count(), 1);
        let mut again = Records { buf, ..Default::default() };
        let got = records(&mut again);
        assert_eq!(got[0].1, record_flag::EXTERNAL);
        assert_eq!((got[1].0, got[1].3.clone()), (kind::TEXT, b"x".to_vec()));
        assert_eq!(got[2].0, kind::FRAGMENTS);
        assert_eq!(got[3].0, kind::BINARY);
    }

    #[test]
    fn wire_numbers_are_unique_within_each_set() {
        for set in [kind::ALL, op::ALL, flag::ALL] {
            let mut seen: Vec<u8> = set.iter().map(|(_, v)| *v).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), set.len());
        }
    }
}
