//! One connection = one task running this hand-written future, generic over its transport
//! (TCP, Unix socket, later TLS and Node-socket bridges). It polls both directions itself, so
//! a connection costs one task and no buffers while idle: reads land in a per-thread scratch
//! buffer and are decoded at once; writes are taken from the outbox only while data flows.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::events::{self, kind};
use super::outbox::{mask_key, Compression, Decision, JobKind, Outbox, Shared};
use super::registry::{self, unregister};
use crate::protocol::close::ABNORMAL;
use crate::protocol::deflate::{Deflater, DeflateOptions, DeflateParams, Inflater};
use crate::protocol::error::ProtocolError;
use crate::protocol::frame::{encode_frame, OP_PONG};
use crate::protocol::handshake::{self, HeadError, Rejection};
use crate::protocol::receiver::{Incoming, Payload, Receiver, ReceiverConfig};

/// Per-connection settings, shared by all connections of a server.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub receiver: ReceiverConfig,
    pub auto_pong: bool,
    pub close_timeout: Duration,
    /// Client: the whole opening handshake. Server: receiving the request head.
    pub handshake_timeout: Option<Duration>,
    /// permessage-deflate: offered by a client, accepted by a server. None when disabled.
    pub deflate: Option<DeflateOptions>,
    /// The events of the Node environment that made this server or client.
    pub sink: Arc<events::Sink>,
    /// Limits on the request (server) or response (client) head.
    pub head_limits: handshake::HeadLimits,
}

/// What a server tells JS about the peer along with its request.
pub struct PeerInfo {
    pub server_id: u32,
    pub remote: Option<std::net::SocketAddr>,
    pub local: Option<std::net::SocketAddr>,
}

/// What a client needs to check the server's answer.
pub struct ClientHandshake {
    pub key: String,
    pub protocols: Vec<String>,
}

/// What a connection holds only until it is open (or refused): one allocation, freed then.
#[derive(Default)]
struct Handshake {
    /// The request or response head as it arrives; after the head, the bytes that came with
    /// it (frames sent early), fed to the receiver once the connection opens.
    head: Vec<u8>,
    peer: Option<PeerInfo>,
    client: Option<ClientHandshake>,
    response: Option<PendingResponse>,
}

/// A non-101 answer whose body is still arriving.
struct PendingResponse {
    status: String,
    reason: String,
    lines: Vec<u8>,
    body: Vec<u8>,
    /// Content-Length, capped at `MAX_BODY`.
    expected: usize,
}

/// The fixed field of an UPGRADE record: server id (u32), status (u16), remote and local ports
/// (u16 each), WebSocket version, HTTP minor version, 1 if the peer is IPv6 (u8 each); all
/// little-endian.
const UPGRADE_FIXED: usize = 13;

/// Most body bytes kept from a refused handshake.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Server: reading the request head.
    ServerHead,
    /// Server: JS is deciding (verifyClient, handleProtocols, headers).
    ServerDecision,
    /// Client: request written or queued, reading the response head.
    ClientHead,
    /// Client: a non-101 answer; reading its body (bounded) for `unexpected-response`.
    ClientBody,
    Open,
    /// Writing a refusal, then closing.
    Refusing,
}

/// Why a connection ended, for the last event JS gets.
enum End {
    /// Normal end of an open connection: CLOSED with the peer's code, or 1006.
    Closed,
    /// Client handshake failure: message and optional Node-style error code.
    HandshakeFailed(String, String),
    /// A server connection that never reached JS, or was refused.
    Silent,
}

enum ReadOutcome {
    Pending,
    Eof,
    Failed(io::Error),
    Data(Option<End>),
}

const SCRATCH_SIZE: usize = 64 * 1024;
/// Auto-pongs stop while this many bytes wait to be written: a peer that floods pings and
/// does not read our pongs cannot grow the outbox (RFC 6455 5.5.3 lets pongs be skipped).
const PONG_BACKLOG: u64 = 1024 * 1024;
/// What a control frame counts for in the read-ahead bound, beyond its payload.
const CONTROL_COST: usize = 64;
/// Reads per poll before yielding to other tasks.
const READS_PER_POLL: usize = 16;
/// With context takeover, a connection whose zlib contexts went unused this long gives them
/// up and keeps only its history (see `Deflater::park`); the next compressed message rebuilds
/// them (hundreds of KiB held per idle connection otherwise, against a window at most).
const ZLIB_PARK_AFTER: Duration = Duration::from_secs(1);

/// permessage-deflate: both sides' contexts (the receiver inflates through `inflater`), and
/// the timer that parks them.
struct Zlib {
    deflater: Deflater,
    inflater: Inflater,
    park: Option<Pin<Box<Sleep>>>,
}

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_SIZE].into_boxed_slice());
}

/// A connection's hold on its outbox. Dropping it withdraws the socket from JS's direct writes
/// (see `outbox::write_direct`): it is the connection's first field, so this happens before
/// the socket (the next field) is closed, however the connection ends. Moving the connection
/// (to park it, see `engine::park`) keeps the socket open and the withdrawal for later.
struct Owner(Arc<Shared>);

impl std::ops::Deref for Owner {
    type Target = Arc<Shared>;
    fn deref(&self) -> &Arc<Shared> {
        &self.0
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().set_fd(None);
    }
}

pub struct Connection<T> {
    shared: Owner,
    io: T,
    id: u32,
    cfg: Arc<ConnConfig>,
    phase: Phase,
    /// Only while a frame or message is partly read, or after the close frame or an error
    /// (when it ignores all input): an idle open connection has none (see `feed`).
    receiver: Option<Box<Receiver>>,
    /// permessage-deflate, once agreed.
    pmd: Option<DeflateParams>,
    zlib: Option<Box<Zlib>>,
    hs: Option<Box<Handshake>>,
    wbuf: Vec<u8>,
    wpos: usize,
    paused: bool,
    /// Sends wait for their callbacks (the outbox has acks): writes must report them.
    acks_pending: bool,
    close_seen: bool,
    /// The peer's close frame, once received: its code and reason.
    peer_close: Option<Box<(u16, Vec<u8>)>>,
    protocol_error: bool,
    /// Message bytes delivered into the batch of epoch `batch_epoch` (see events::READ_AHEAD);
    /// the epoch's low 32 bits, which tell one batch from the next.
    batch_epoch: u32,
    batch_bytes: u32,
    read_eof: bool,
    want_shutdown: bool,
    shutdown_done: bool,
    /// The park thread found the connection idle and asks it to park (see `engine::park`).
    park_asked: bool,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T: Transport> Connection<T> {
    /// A server connection that starts by reading the upgrade request.
    pub fn server(io: T, id: u32, shared: Arc<Shared>, cfg: Arc<ConnConfig>, peer: PeerInfo) -> Self {
        let mut c = Self::new(io, id, Owner(shared), cfg, Phase::ServerHead);
        // Made on the runtime (the accept loop): tokio's timers need its context.
        c.timer = c.cfg.handshake_timeout.map(|d| Box::pin(tokio::time::sleep(d)));
        c.hs = Some(Box::new(Handshake { peer: Some(peer), ..Handshake::default() }));
        c
    }

    /// A connection whose handshake Node's http server received: open from the start, with
    /// the 101 answer already in the outbox and `early` holding bytes read after the request.
    pub fn adopted(io: T, id: u32, shared: Arc<Shared>, cfg: Arc<ConnConfig>, early: Vec<u8>, pmd: Option<DeflateParams>) -> Self {
        let mut c = Self::new(io, id, Owner(shared), cfg, Phase::Open);
        c.timer = None;
        c.pmd = pmd;
        if pmd.is_some() {
            let mut out = c.shared.lock();
            c.enable_deflate(&mut out);
        }
        c.zlib = c.open_codec();
        if !early.is_empty() {
            c.hs = Some(Box::new(Handshake { head: early, ..Handshake::default() }));
        }
        c
    }

    /// Lets JS's sends be compressed (the outbox decides per message, as ws's sender does).
    fn enable_deflate(&self, out: &mut Outbox) {
        let (Some(p), Some(opts)) = (self.pmd, self.cfg.deflate.as_ref()) else { return };
        let our_no_takeover = if self.shared.is_client { p.client_no_context_takeover } else { p.server_no_context_takeover };
        out.deflate = Some(Box::new(Compression { threshold: our_no_takeover.then_some(opts.threshold), ..Compression::default() }));
    }

    /// The connection is open: frames flow, through permessage-deflate when agreed (the
    /// receiver is made by `feed`).
    fn open_codec(&self) -> Option<Box<Zlib>> {
        let p = self.pmd?;
        let level = self.cfg.deflate.as_ref().map(|o| o.level).unwrap_or(-1);
        let is_server = !self.shared.is_client;
        Some(Box::new(Zlib {
            deflater: Deflater::new(&p, is_server, level),
            inflater: Inflater::new(&p, is_server),
            park: None,
        }))
    }

    /// Compresses the queued jobs, off the lock, and appends the frames in order.
    fn run_jobs(&mut self) {
        let jobs = {
            let mut out = self.shared.lock();
            let Some(d) = out.deflate.as_mut().filter(|d| !d.jobs.is_empty()) else { return };
            d.deflating = true;
            std::mem::take(&mut d.jobs)
        };
        let mut bytes = Vec::new();
        let mut acks = Vec::new();
        let mut estimate = 0u64;
        let mut z = Vec::new();
        for job in jobs {
            match job.kind {
                JobKind::Compress { opcode, first, fin, data, mask } => {
                    estimate += data.len() as u64;
                    z.clear();
                    let rsv1 = match self.zlib.as_mut() {
                        Some(zl) => {
                            zl.deflater.compress(&data, fin, &mut z);
                            first
                        }
                        None => {
                            z.extend_from_slice(&data);
                            false
                        }
                    };
                    encode_frame(&mut bytes, opcode, fin, rsv1, &z, mask);
                }
                JobKind::Bytes(b) => {
                    estimate += b.len() as u64;
                    bytes.extend_from_slice(&b);
                }
            }
            if job.ack {
                acks.push(bytes.len());
            }
        }
        let mut out = self.shared.lock();
        out.jobs_done(&bytes, &acks, estimate);
        if let Some(d) = out.deflate.as_mut().filter(|d| d.jobs.is_empty()) {
            d.deflating = false;
        }
    }

    /// A client connection whose request is already in the outbox. `deadline` bounds the
    /// handshake, including the connect that came before.
    pub fn client(io: T, id: u32, shared: Arc<Shared>, cfg: Arc<ConnConfig>, hs: ClientHandshake, deadline: Option<Instant>) -> Self {
        let mut c = Self::new(io, id, Owner(shared), cfg, Phase::ClientHead);
        c.hs = Some(Box::new(Handshake { client: Some(hs), ..Handshake::default() }));
        c.timer = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        c
    }

    /// Takes what JS queued: decisions, flags, bytes to write.
    fn sync_outbox(&mut self, cx: &Context<'_>) -> Option<End> {
        let mut out = self.shared.lock();
        // The decision first: JS may accept and terminate in one batch, before this task
        // runs; the connection is then open for JS and must end with a CLOSED event.
        if self.phase == Phase::ServerDecision {
            match out.decision {
                Some(Decision::Accept) => {
                    self.phase = Phase::Open;
                    self.zlib = self.open_codec();
                    self.timer = None;
                }
                Some(Decision::Reject) => {
                    self.phase = Phase::Refusing;
                    self.want_shutdown = true;
                }
                None => {}
            }
        }
        if out.terminate {
            return Some(match self.phase {
                Phase::ClientHead => {
                    End::HandshakeFailed("WebSocket was closed before the connection was established".into(), String::new())
                }
                Phase::Open => End::Closed,
                _ => End::Silent,
            });
        }
        if out.raw_end {
            // JS ended a request's socket (`wsClientError`): the connection is refused, and
            // ends once the bytes are out and the peer has ended too.
            self.want_shutdown = true;
            if self.phase == Phase::ServerDecision {
                self.phase = Phase::Refusing;
            }
        }
        if out.close_queued && !self.close_seen {
            self.close_seen = true;
            self.timer = Some(Box::pin(tokio::time::sleep(self.cfg.close_timeout)));
        }
        if self.wpos == self.wbuf.len() && !out.buf.is_empty() {
            self.wbuf = std::mem::take(&mut out.buf);
            self.wpos = 0;
            out.task_busy = true;
        }
        self.paused = out.paused;
        self.acks_pending = !out.acks.is_empty();
        // Seen by the park thread's sweep: this connection is not idle.
        out.polled = true;
        out.parked = false;
        self.park_asked |= std::mem::take(&mut out.park_asked);
        match &out.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => out.waker = Some(cx.waker().clone()),
        }
        None
    }

    /// Writes what it can. Returns Err when the socket failed.
    fn poll_write_side(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut progressed = false;
        while self.wpos < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    // JS may write to the socket directly too: both count into the total.
                    self.shared.written_total.fetch_add(n as u64, Ordering::AcqRel);
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if self.wpos == self.wbuf.len() && !self.wbuf.is_empty() {
            // Drained: release the buffer rather than keep it per idle connection.
            self.wbuf = Vec::new();
            self.wpos = 0;
            self.shared.lock().task_busy = false;
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Err(e);
            }
        }
        if progressed && self.acks_pending {
            // Sends waiting for their callbacks complete only by the task's writes (JS does not
            // write directly while any wait; acks queued since `sync_outbox` are for bytes not
            // taken yet, and their send woke the task).
            let written = self.shared.written_total.load(Ordering::Acquire);
            let mut out = self.shared.lock();
            let done = out.acks.take_written(written);
            if done > 0 {
                self.acks_pending = !out.acks.is_empty();
                drop(out);
                let done = done as u32;
                events::with_batch(|b| b.push(kind::WRITTEN, self.id, &done.to_le_bytes()));
            }
        }
        Ok(progressed)
    }

    fn all_written(&self) -> bool {
        self.wpos == self.wbuf.len() && {
            let out = self.shared.lock();
            out.buf.is_empty() && !out.queueing()
        }
    }

    fn reading_allowed(&mut self, cx: &Context<'_>) -> bool {
        !self.read_eof
            && match self.phase {
                Phase::ServerHead | Phase::ClientHead | Phase::ClientBody | Phase::Refusing => true,
                Phase::Open => !self.paused && !self.read_ahead_full(cx),
                Phase::ServerDecision => false,
            }
    }

    /// True when this connection filled its share of the batch JS has not taken yet; the
    /// task is then woken when JS takes it. (The batch is scheduled for delivery, since it
    /// holds this connection's messages, so the wait always ends.)
    fn read_ahead_full(&mut self, cx: &Context<'_>) -> bool {
        if (self.batch_bytes as usize) < events::READ_AHEAD {
            return false;
        }
        events::with_batch(|b| {
            if b.epoch as u32 != self.batch_epoch {
                self.batch_epoch = b.epoch as u32;
                self.batch_bytes = 0;
                false
            } else {
                b.waiting.push(cx.waker().clone());
                true
            }
        })
    }

    fn on_bytes(&mut self, data: &mut [u8]) -> Option<End> {
        match self.phase {
            Phase::ServerHead => self.on_request_bytes(data),
            Phase::ClientHead => self.on_response_bytes(data),
            Phase::ClientBody => self.on_body_bytes(data),
            Phase::Open => {
                self.feed(data);
                None
            }
            Phase::ServerDecision => {
                self.hs.get_or_insert_with(Box::default).head.extend_from_slice(data);
                None
            }
            Phase::Refusing => None,
        }
    }

    /// The engine refuses the request itself: JS never hears of the connection, and gives
    /// up the hold on its id that it would have had (see `engine::registry`).
    fn refuse_raw(&mut self, bytes: &[u8]) {
        registry::release(self.id);
        self.shared.lock().raw(bytes);
        self.phase = Phase::Refusing;
        self.want_shutdown = true;
        self.hs = None;
    }

    fn on_request_bytes(&mut self, data: &[u8]) -> Option<End> {
        let limits = self.cfg.head_limits;
        let Some(hs) = self.hs.as_mut() else { return Some(End::Silent) };
        let old = hs.head.len();
        hs.head.extend_from_slice(data);
        if !worth_parsing(&hs.head, old, limits.max_size) {
            return None;
        }
        let (head, n) = match handshake::parse_request_within(&hs.head, limits) {
            Ok(None) => return None,
            Ok(Some(h)) => h,
            Err(HeadError::TooLarge) => {
                self.refuse_raw(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n");
                return None;
            }
            Err(HeadError::Invalid(_)) => {
                self.refuse_raw(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
                return None;
            }
        };
        if !handshake::is_upgrade_request(&head) {
            self.refuse_raw(&handshake::upgrade_required_response());
            return None;
        }
        // Keep only bytes that came after the head (frames sent early); free the rest.
        let Some(hs) = self.hs.as_mut() else { return Some(End::Silent) };
        hs.head = hs.head.split_off(n);
        let Some(peer) = hs.peer.take() else { return Some(End::Silent) };
        let verdict = handshake::validate_upgrade(&head, self.cfg.deflate.as_ref());
        if let Ok(u) = &verdict {
            if u.deflate.is_some() {
                // Sends wait for JS's decision (the outbox is not open before it).
                self.pmd = u.deflate;
                let mut out = self.shared.lock();
                self.enable_deflate(&mut out);
            }
        }
        let raw: Vec<u8> = head.headers.iter().flat_map(|(k, v)| [k.as_bytes(), b"\0", v.as_bytes(), b"\0"].concat()).collect();
        let (status, message, reject_headers, accept, protocols, version, extensions) = match &verdict {
            Ok(u) => (0u16, "", Vec::new(), u.accept.as_str(), u.protocols.join(","), u.version, u.extensions.clone().unwrap_or_default()),
            Err(Rejection { status, message, headers }) => {
                let h: Vec<u8> = headers.iter().flat_map(|(k, v)| [k.as_bytes(), b"\0", v.as_bytes(), b"\0"].concat()).collect();
                (*status, message.as_str(), h, "", String::new(), 0, String::new())
            }
        };
        let ip = |a: Option<std::net::SocketAddr>| a.map(|a| a.ip().to_string()).unwrap_or_default();
        let port = |a: Option<std::net::SocketAddr>| a.map_or(0u16, |a| a.port());
        // The numbers in one fixed field (JS reads them without making strings; see
        // `upgradeRecord` in lib/native.js), the text after it.
        let mut fixed = [0u8; UPGRADE_FIXED];
        fixed[0..4].copy_from_slice(&peer.server_id.to_le_bytes());
        fixed[4..6].copy_from_slice(&status.to_le_bytes());
        fixed[6..8].copy_from_slice(&port(peer.remote).to_le_bytes());
        fixed[8..10].copy_from_slice(&port(peer.local).to_le_bytes());
        fixed[10] = version;
        fixed[11] = head.minor;
        fixed[12] = peer.remote.is_some_and(|a| a.is_ipv6()) as u8;
        events::with_batch(|b| {
            b.push_fields(
                kind::UPGRADE,
                self.id,
                &[
                    &fixed,
                    head.method.as_bytes(),
                    head.path.as_bytes(),
                    &raw,
                    ip(peer.remote).as_bytes(),
                    ip(peer.local).as_bytes(),
                    message.as_bytes(),
                    &reject_headers,
                    accept.as_bytes(),
                    protocols.as_bytes(),
                    extensions.as_bytes(),
                ],
            )
        });
        self.phase = Phase::ServerDecision;
        self.timer = None;
        None
    }

    fn on_response_bytes(&mut self, data: &mut [u8]) -> Option<End> {
        let limits = self.cfg.head_limits;
        let Some(hs) = self.hs.as_mut() else { return Some(End::Silent) };
        let old = hs.head.len();
        hs.head.extend_from_slice(data);
        if !worth_parsing(&hs.head, old, limits.max_size) {
            return None;
        }
        let (head, n) = match handshake::parse_response_within(&hs.head, limits) {
            Ok(None) => return None,
            Ok(Some(h)) => h,
            Err(HeadError::TooLarge) => return Some(End::HandshakeFailed("Response header too large".into(), "HPE_HEADER_OVERFLOW".into())),
            Err(HeadError::Invalid(e)) => return Some(End::HandshakeFailed(format!("Parse Error: {e}"), "HPE_INVALID_CONSTANT".into())),
        };
        let Some(client) = hs.client.take() else { return Some(End::Silent) };
        let lines: Vec<u8> = head.headers.iter().flat_map(|(k, v)| [k.as_bytes(), b"\0", v.as_bytes(), b"\0"].concat()).collect();
        if head.status != 101 {
            // JS decides between a redirect, `unexpected-response` and an error; it gets the
            // body when a Content-Length announces one.
            let expected = head
                .header("content-length")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0)
                .min(MAX_BODY);
            let mut body = hs.head.split_off(n);
            hs.head = Vec::new();
            body.truncate(expected);
            hs.response = Some(PendingResponse {
                status: head.status.to_string(),
                reason: head.reason.clone(),
                lines,
                body,
                expected,
            });
            self.phase = Phase::ClientBody;
            return self.on_body_bytes(&mut []);
        }
        let mut rest = hs.head.split_off(n);
        self.hs = None;
        let accepted = match handshake::validate_response(&head, &client.key, &client.protocols, self.cfg.deflate.as_ref()) {
            Ok(a) => a,
            Err(msg) => return Some(End::HandshakeFailed(msg, String::new())),
        };
        self.pmd = accepted.deflate;
        // Open the outbox before JS hears of it: sends made in the 'open' handler must not be
        // dropped as "not open yet".
        {
            let mut out = self.shared.lock();
            out.open = true;
            self.enable_deflate(&mut out);
        }
        events::with_batch(|b| {
            b.push_fields(kind::OPEN, self.id, &[accepted.protocol.as_bytes(), accepted.extensions.as_bytes(), head.reason.as_bytes(), &lines])
        });
        self.phase = Phase::Open;
        self.timer = None;
        self.zlib = self.open_codec();
        if !rest.is_empty() {
            self.feed(&mut rest);
        }
        None
    }

    fn on_body_bytes(&mut self, data: &mut [u8]) -> Option<End> {
        let r = self.hs.as_mut()?.response.as_mut()?;
        let take = (r.expected - r.body.len()).min(data.len());
        r.body.extend_from_slice(&data[..take]);
        if r.body.len() < r.expected {
            return None;
        }
        Some(self.response_end())
    }

    /// Hands a non-101 answer (and what arrived of its body) to JS.
    fn response_end(&mut self) -> End {
        if let Some(r) = self.hs.as_mut().and_then(|h| h.response.take()) {
            events::with_batch(|b| {
                b.push_fields(
                    kind::HANDSHAKE_FAILED,
                    self.id,
                    &[b"", b"", r.status.as_bytes(), r.reason.as_bytes(), &r.lines, &r.body],
                )
            });
        }
        End::Silent
    }

    /// Decodes frames and appends their events to the batch. The receiver is made for the
    /// read and dropped after it unless it holds part of a frame or message: between
    /// messages a connection keeps only what `Receiver::new` would give back, and is smaller
    /// by a receiver (tokio's task cell 256 bytes instead of 384).
    fn feed(&mut self, data: &mut [u8]) {
        if self.phase != Phase::Open {
            return;
        }
        let compressed = self.zlib.is_some();
        let receiver = self
            .receiver
            .get_or_insert_with(|| Box::new(Receiver::new(ReceiverConfig { allow_rsv1: compressed, ..self.cfg.receiver.clone() })));
        let inflater = self.zlib.as_mut().map(|z| &mut z.inflater);
        if receiver.is_done() {
            return;
        }
        let id = self.id;
        let shared = &self.shared;
        let auto_pong = self.cfg.auto_pong;
        let is_client = shared.is_client;
        let mut close: Option<(u16, Vec<u8>)> = None;
        let (batch_epoch, batch_bytes) = (&mut self.batch_epoch, &mut self.batch_bytes);
        let result = events::with_batch(|b| {
            if b.epoch as u32 != *batch_epoch {
                *batch_epoch = b.epoch as u32;
                *batch_bytes = 0;
            }
            receiver.feed_inflating(data, inflater, |item| match item {
                Incoming::Message { binary, data, fragments } => {
                    count(batch_bytes, data.as_slice().len());
                    if !binary && data.as_slice() == PANIC_TRIGGER && TEST_PANIC.load(Ordering::Relaxed) {
                        panic!("test panic (WS_NATIVE_TEST_PANIC)");
                    }
                    if let Some(ends) = fragments {
                        let bytes: Vec<u8> = ends.iter().flat_map(|e| e.to_le_bytes()).collect();
                        b.push(kind::FRAGMENTS, id, &bytes);
                    }
                    let k = if binary { kind::BINARY } else { kind::TEXT };
                    match data {
                        Payload::Borrowed(s) => b.push(k, id, s),
                        Payload::Owned(v) => b.push_owned(k, id, v),
                    }
                }
                Incoming::Ping(p) => {
                    if auto_pong {
                        let mut out = shared.lock();
                        if out.open && !out.close_queued && shared.buffered_in(&out) < PONG_BACKLOG {
                            out.frame(OP_PONG, true, p, is_client.then(mask_key));
                        }
                    }
                    count(batch_bytes, p.len() + CONTROL_COST);
                    b.push(kind::PING, id, p);
                }
                Incoming::Pong(p) => {
                    count(batch_bytes, p.len() + CONTROL_COST);
                    b.push(kind::PONG, id, p)
                }
                Incoming::Close { code, reason } => {
                    b.push_code(kind::CLOSE_FRAME, id, code, reason);
                    close = Some((code, reason.to_vec()));
                }
            })
        });
        if receiver.is_idle() && !receiver.is_done() {
            self.receiver = None;
        }
        if let Err(e) = result {
            self.on_protocol_error(e);
        } else if let Some((code, reason)) = close {
            // JS answers with the same code and reason (ws's receiverOnConclude), after the
            // events before it, so replies to earlier messages go out first.
            self.peer_close = Some(Box::new((code, reason)));
        }
    }

    /// JS emits `error` and closes with the error's code (ws's receiverOnError), after the
    /// events before it; the receiver ignores all later input.
    fn on_protocol_error(&mut self, e: ProtocolError) {
        self.protocol_error = true;
        events::with_batch(|b| {
            b.push_fields(
                kind::ERROR,
                self.id,
                &[&[e.kind as u8], e.code.as_bytes(), e.message.as_bytes(), &e.close_code.to_be_bytes()],
            )
        });
    }

    /// When the close handshake (or a failure) means our side should end the TCP stream.
    fn should_shutdown(&self) -> bool {
        self.want_shutdown || self.read_eof || (self.close_seen && (self.peer_close.is_some() || self.protocol_error))
    }

    fn end_for_io_failure(&self, e: &io::Error) -> End {
        match self.phase {
            Phase::ClientHead => {
                let (code, msg) = super::tls::read_error(e);
                End::HandshakeFailed(msg, code)
            }
            Phase::Open => End::Closed,
            _ => End::Silent,
        }
    }
}

/// What a connection runs on. Plain TCP connections park when idle (see `engine::park`;
/// only they are asked to: the sweep picks connections JS may write to directly).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Sized {
    /// Parks an idle connection; gives it back when it cannot be parked now.
    fn park(conn: Connection<Self>) -> Result<(), Connection<Self>> {
        Err(conn)
    }
}

impl Transport for tokio::net::TcpStream {
    fn park(conn: Connection<Self>) -> Result<(), Connection<Self>> {
        super::park::park(conn)
    }
}

impl Transport for tokio::net::UnixStream {}
impl<IO: AsyncRead + AsyncWrite + Unpin> Transport for tokio_rustls::server::TlsStream<IO> {}
impl<IO: AsyncRead + AsyncWrite + Unpin> Transport for tokio_rustls::client::TlsStream<IO> {}
impl Transport for super::bridge::Bridge {}

/// How a poll of a connection ended, when it did not return `Pending`.
pub enum Step {
    /// The connection is over (JS got its last event).
    Ended,
    /// Open, idle, and asked to park: the task may give the connection to `engine::park`.
    Idle,
}

/// What a parked connection keeps (see `engine::park`): it is open with nothing under way, so
/// it has no receiver, handshake, write buffer, timer or close state to keep; 40 bytes
/// instead of a connection's 120.
pub struct Parked {
    /// First, as in `Connection`: withdraws the socket from direct writes before it closes.
    shared: Owner,
    socket: std::net::TcpStream,
    cfg: Arc<ConnConfig>,
    zlib: Option<Box<Zlib>>,
    pmd: Option<DeflateParams>,
    id: u32,
}

impl Parked {
    /// Takes an idle connection (`Connection::parkable`) off tokio's reactor. Err: leaving it
    /// failed and took the socket along (the connection is lost).
    pub(super) fn park(conn: Connection<tokio::net::TcpStream>) -> Result<Parked, Connection<()>> {
        let Connection { shared, io, id, cfg, zlib, pmd, .. } = conn;
        match io.into_std() {
            Ok(socket) => Ok(Parked { shared, socket, cfg, zlib, pmd, id }),
            Err(_) => Err(Connection::new((), id, shared, cfg, Phase::Open)),
        }
    }

    /// The connection back on tokio's reactor (called within the runtime's context). Err:
    /// that failed, and the socket is gone.
    pub(super) fn resume(self) -> Result<Connection<tokio::net::TcpStream>, Connection<()>> {
        let Parked { shared, socket, cfg, zlib, pmd, id } = self;
        match tokio::net::TcpStream::from_std(socket) {
            Ok(io) => {
                let mut conn = Connection::new(io, id, shared, cfg, Phase::Open);
                conn.zlib = zlib;
                conn.pmd = pmd;
                Ok(conn)
            }
            Err(_) => Err(Connection::new((), id, shared, cfg, Phase::Open)),
        }
    }

    pub(super) fn socket(&self) -> &std::net::TcpStream {
        &self.socket
    }

    pub(super) fn id(&self) -> u32 {
        self.id
    }
}

/// A connection's task (its state takes no more room: the option uses a niche).
pub struct Task<T>(Option<Connection<T>>);

impl<T: Transport> Future for Task<T> {
    type Output = ();

    /// A panic in this connection's code ends this connection only: JS gets an `error`
    /// (close code 1011) and the close, the peer gets a 1011 close frame when the socket
    /// takes it, and the engine's other connections carry on.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = self.get_mut();
        let Some(this) = task.0.as_mut() else { return Poll::Ready(()) };
        let cfg = this.cfg.clone();
        let _entered = events::enter(&cfg.sink);
        let step = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.poll_inner(cx))) {
            Ok(p) => p,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                this.on_panic(cx, &what)
            }
        };
        match step {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Step::Ended) => Poll::Ready(()),
            Poll::Ready(Step::Idle) => {
                let Some(conn) = task.0.take() else { return Poll::Ready(()) };
                match T::park(conn) {
                    Ok(()) => Poll::Ready(()),
                    Err(conn) => {
                        // Something came up meanwhile (its command woke this task): go on.
                        task.0 = Some(conn);
                        Poll::Pending
                    }
                }
            }
        }
    }
}

/// Adds `n` bytes to a connection's count for the batch, saturating.
fn count(batch_bytes: &mut u32, n: usize) {
    *batch_bytes = batch_bytes.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
}

/// Whether a head that grew from `old` to `buf.len()` bytes should be parsed again: when the
/// new bytes may end it (an empty line), on the first read (to refuse garbage at once), when
/// it grows past a power of two, or past the size limit. A client trickling its head byte by
/// byte then costs O(n log n) parsing, not O(n²).
fn worth_parsing(buf: &[u8], old: usize, max_size: usize) -> bool {
    let tail = &buf[old.saturating_sub(2)..];
    old == 0
        || buf.len() > max_size
        || old.next_power_of_two() != buf.len().next_power_of_two()
        || tail.windows(2).any(|w| w == b"\n\n")
        || tail.windows(3).any(|w| w == b"\n\r\n")
}

impl<T> Connection<T> {
    fn new(io: T, id: u32, shared: Owner, cfg: Arc<ConnConfig>, phase: Phase) -> Self {
        Connection {
            shared,
            io,
            id,
            cfg,
            phase,
            receiver: None,
            pmd: None,
            zlib: None,
            hs: None,
            wbuf: Vec::new(),
            wpos: 0,
            paused: false,
            acks_pending: false,
            close_seen: false,
            peer_close: None,
            protocol_error: false,
            batch_epoch: 0,
            batch_bytes: 0,
            read_eof: false,
            want_shutdown: false,
            shutdown_done: false,
            park_asked: false,
            timer: None,
        }
    }

    pub(super) fn id(&self) -> u32 {
        self.id
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The connection runs on its own task, which may park it when idle.
    pub fn run(self) -> Task<T> {
        Task(Some(self))
    }

    /// Nothing is under way on the connection's side: open, no close or failure started,
    /// nothing partly read or left to write, reading not paused, no send waiting for its
    /// callback, zlib contexts (if any) given up. (`Outbox::quiet` is JS's side of it.)
    fn parkable(&self) -> bool {
        self.phase == Phase::Open
            && !self.close_seen
            && !self.read_eof
            && !self.want_shutdown
            && !self.protocol_error
            && !self.paused
            && !self.acks_pending
            && self.peer_close.is_none()
            && self.receiver.is_none()
            && self.hs.is_none()
            && self.wpos == self.wbuf.len()
            && self.zlib.as_ref().is_none_or(|z| z.park.is_none())
    }

    /// The socket went away while the connection was parked: JS gets the close (1006).
    pub(super) fn lost(mut self) {
        let cfg = self.cfg.clone();
        let _entered = events::enter(&cfg.sink);
        let _ = self.finish(End::Closed);
    }

    fn finish(&mut self, end: End) -> Poll<Step> {
        if self.phase == Phase::ServerHead {
            // Ended before its request was read: JS never heard of it.
            registry::release(self.id);
        }
        unregister(self.id);
        let id = self.id;
        // A server connection JS accepted (even if this task never saw the decision, as when
        // the socket failed first) has a WebSocket in JS waiting for its CLOSED event.
        let end = match end {
            End::Silent if self.phase == Phase::Open || self.shared.lock().decision == Some(Decision::Accept) => End::Closed,
            e => e,
        };
        match end {
            End::Closed => {
                let (code, reason) = self.peer_close.take().map_or((ABNORMAL, Vec::new()), |c| *c);
                events::with_batch(|b| b.push_code(kind::CLOSED, id, code, &reason));
            }
            End::HandshakeFailed(message, code) => {
                events::with_batch(|b| b.push_fields(kind::HANDSHAKE_FAILED, id, &[message.as_bytes(), code.as_bytes(), b"", b"", b""]));
            }
            End::Silent => {}
        }
        Poll::Ready(Step::Ended)
    }

}

/// Set by the tests' hidden trigger (WS_NATIVE_TEST_PANIC=1 in the environment at load):
/// a text message equal to `PANIC_TRIGGER` panics inside the connection's task.
pub static TEST_PANIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
const PANIC_TRIGGER: &[u8] = b"ws-native:test-panic";

impl<T: Transport> Connection<T> {
    fn on_panic(&mut self, cx: &mut Context<'_>, what: &str) -> Poll<Step> {
        if self.phase == Phase::Open {
            events::with_batch(|b| {
                let message = format!("Internal error in the native engine: {what}");
                b.push_fields(kind::ERROR, self.id, &[&[0], b"WS_ERR_INTERNAL", message.as_bytes(), &1011u16.to_be_bytes()])
            });
            // Best effort: a close frame with 1011 if the socket takes it now.
            let mut frame = Vec::new();
            encode_frame(&mut frame, crate::protocol::frame::OP_CLOSE, true, false, &1011u16.to_be_bytes(), self.shared.is_client.then(mask_key));
            let _ = Pin::new(&mut self.io).poll_write(cx, &frame);
        }
        self.peer_close = None;
        self.finish(End::Closed)
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        let this = self;
        let mut yielded = false;
        loop {
            this.run_jobs();
            if let Some(end) = this.sync_outbox(cx) {
                return this.finish(end);
            }
            if this.phase == Phase::Open {
                // Frames that arrived with the request, before JS accepted it; the handshake's
                // state goes with them.
                if let Some(mut hs) = this.hs.take() {
                    this.feed(&mut hs.head);
                }
            }
            let mut progressed = match this.poll_write_side(cx) {
                Ok(p) => p,
                Err(e) => {
                    let end = this.end_for_io_failure(&e);
                    return this.finish(end);
                }
            };
            if this.should_shutdown() && !this.shutdown_done && this.all_written() {
                match Pin::new(&mut this.io).poll_shutdown(cx) {
                    Poll::Ready(_) => {
                        this.shutdown_done = true;
                        progressed = true;
                        if this.phase == Phase::Refusing || this.read_eof {
                            let end = if this.phase == Phase::Open { End::Closed } else { End::Silent };
                            return this.finish(end);
                        }
                    }
                    Poll::Pending => {}
                }
            }
            let mut reads = 0;
            while this.reading_allowed(cx) {
                if reads == READS_PER_POLL {
                    yielded = true;
                    break;
                }
                reads += 1;
                let outcome = SCRATCH.with(|s| {
                    let mut s = s.borrow_mut();
                    let mut rb = ReadBuf::new(&mut s[..]);
                    match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                        Poll::Pending => ReadOutcome::Pending,
                        Poll::Ready(Err(e)) => ReadOutcome::Failed(e),
                        Poll::Ready(Ok(())) => {
                            let n = rb.filled().len();
                            if n == 0 {
                                ReadOutcome::Eof
                            } else {
                                ReadOutcome::Data(this.on_bytes(&mut s[..n]))
                            }
                        }
                    }
                });
                match outcome {
                    ReadOutcome::Pending => break,
                    ReadOutcome::Failed(e) => {
                        let end = this.end_for_io_failure(&e);
                        return this.finish(end);
                    }
                    ReadOutcome::Eof => {
                        // The peer ended its side.
                        this.read_eof = true;
                        progressed = true;
                        match this.phase {
                            Phase::ClientHead => {
                                return this.finish(End::HandshakeFailed("socket hang up".into(), "ECONNRESET".into()));
                            }
                            Phase::ClientBody => {
                                let end = this.response_end();
                                return this.finish(end);
                            }
                            Phase::ServerHead | Phase::Refusing => return this.finish(End::Silent),
                            _ => {}
                        }
                    }
                    ReadOutcome::Data(Some(end)) => return this.finish(end),
                    ReadOutcome::Data(None) => progressed = true,
                }
            }
            if this.read_eof && this.shutdown_done {
                return this.finish(End::Closed);
            }
            if !progressed || yielded {
                break;
            }
        }
        if let Some(t) = this.timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                let end = match this.phase {
                    Phase::ClientHead => End::HandshakeFailed("Opening handshake has timed out".into(), String::new()),
                    Phase::ClientBody => this.response_end(),
                    Phase::Open => End::Closed,
                    _ => End::Silent,
                };
                return this.finish(end);
            }
        }
        if std::mem::take(&mut this.park_asked) && this.parkable() {
            // Idle since the sweep before last (see `engine::park`).
            return Poll::Ready(Step::Idle);
        }
        this.park_idle_zlib(cx);
        if yielded {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// With context takeover, parks zlib contexts that went unused for `ZLIB_PARK_AFTER`.
    fn park_idle_zlib(&mut self, cx: &mut Context<'_>) {
        let Some(z) = self.zlib.as_mut() else { return };
        if !z.deflater.holds_context() && !z.inflater.holds_context() {
            z.park = None;
            return;
        }
        let used = z.deflater.take_used() | z.inflater.take_used();
        let Some(t) = z.park.as_mut() else {
            // The activity until now is what makes the timer start.
            let mut t = Box::pin(tokio::time::sleep(ZLIB_PARK_AFTER));
            let _ = t.as_mut().poll(cx);
            z.park = Some(t);
            return;
        };
        if used {
            t.as_mut().reset(Instant::now() + ZLIB_PARK_AFTER);
        }
        if t.as_mut().poll(cx).is_ready() {
            z.deflater.park();
            if !self.receiver.as_ref().is_some_and(|r| r.in_message()) {
                z.inflater.park();
            }
            z.park = None;
        }
    }
}

#[cfg(test)]
mod budget {
    /// What tokio's task cell holds: the future, or its output (tokio's `Stage`).
    #[allow(dead_code)]
    pub enum Stage<T> {
        Running(T),
        Finished(Result<(), tokio::task::JoinError>),
        Consumed,
    }

    /// tokio 1.54's task cell is the stage plus 104 bytes, rounded up to 128 (found by
    /// spawning futures of known sizes and watching which slab class of `engine::alloc` they
    /// came from: a 152-byte stage gets a 256-byte cell, a 160-byte one 384). So a plain-TCP
    /// connection's task costs 256 bytes while its state stays within 152. Grow it knowingly.
    #[test]
    fn an_idle_connection_fits_a_256_byte_task_cell() {
        let stage = std::mem::size_of::<Stage<super::Task<tokio::net::TcpStream>>>();
        assert!(stage + 104 <= 256, "the task cell of a TCP connection grew past 256 bytes (stage {stage})");
    }
}

#[cfg(test)]
mod size {
    /// `cargo test --release --lib sizes -- --ignored --nocapture`: what a connection costs the
    /// engine in its task, for the memory work.
    #[test]
    #[ignore]
    fn sizes() {
        println!("Connection<TcpStream>: {} bytes", std::mem::size_of::<super::Connection<tokio::net::TcpStream>>());
        println!("task stage: {} bytes", std::mem::size_of::<super::budget::Stage<super::Task<tokio::net::TcpStream>>>());
        println!("Parked: {} bytes", std::mem::size_of::<super::Parked>());
        println!("Outbox: {} bytes", std::mem::size_of::<super::super::outbox::Outbox>());
        println!("Shared: {} bytes", std::mem::size_of::<super::super::outbox::Shared>());
        println!("Receiver: {} bytes", std::mem::size_of::<crate::protocol::receiver::Receiver>());
        println!("TcpStream: {} bytes", std::mem::size_of::<tokio::net::TcpStream>());
        println!("Option<DeflateParams>: {} bytes", std::mem::size_of::<Option<crate::protocol::deflate::DeflateParams>>());
        println!("VecDeque<u64>: {} bytes", std::mem::size_of::<std::collections::VecDeque<u64>>());
        println!("Utf8Validator: {} bytes", std::mem::size_of::<crate::protocol::utf8::Utf8Validator>());
        println!("ReceiverConfig: {} bytes", std::mem::size_of::<crate::protocol::receiver::ReceiverConfig>());
    }
}
