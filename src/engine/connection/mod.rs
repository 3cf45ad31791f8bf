//! One connection = one task running this hand-written future, generic over its transport
//! (TCP, Unix socket, TLS, and the bridge to a socket Node keeps). It polls both directions
//! itself, so a connection costs one task and no buffers while idle: reads land in a
//! per-thread scratch buffer and are decoded at once; writes are taken from the outbox only
//! while data flows.
//!
//! This file holds the poll loop and the open connection's frames; `handshake` the opening
//! handshake of both sides, `compression` permessage-deflate.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::config::ConnConfig;
use super::events;
use super::registry::{self, unregister};
use super::state::{mask_key, Decision, Pressure, Shared, HEARTBEAT_PING};
use crate::protocol::close::ABNORMAL;
use crate::protocol::deflate::DeflateParams;
use crate::protocol::error::ProtocolError;
use crate::protocol::frame::encode_frame;
use crate::protocol::receiver::{Incoming, Receiver, ReceiverConfig};

mod compression;
mod handshake;

use compression::Zlib;
pub use handshake::{ClientHandshake, PeerInfo};
use handshake::{Handshake, Progress};

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
    /// The engine ended an open connection: JS gets this error (code, message, the close
    /// code it reports), then CLOSED.
    Ended(&'static str, &'static str, u16),
}

/// The ERROR record's flag for an error that ends the connection (JS closes nothing).
const ERROR_ENDS: u8 = super::wire::ERROR_ENDS;

/// The heartbeat found the peer silent.
const HEARTBEAT_TIMEOUT: End = End::Ended("WS_ERR_HEARTBEAT_TIMEOUT", "The peer did not answer the heartbeat's ping in time", 1006);
/// The buffered output passed `maxBackpressure` with `closeOnBackpressureLimit`.
const BACKPRESSURE_LIMIT: End = End::Ended("WS_ERR_BACKPRESSURE_LIMIT", "The buffered output passed maxBackpressure", 1008);

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

/// Reads of messages alone in a row (see `Connection::message_reads`) after which a
/// connection offers itself to its environment's JS thread.
const MESSAGE_READS: u8 = 8;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_SIZE].into_boxed_slice());
}

/// A connection's hold on its state. Dropping it withdraws the socket from JS's direct writes
/// (see `engine::commands`): it is the connection's first field, so this happens before
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
        self.0.lock().withdraw_fd();
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
    /// the epoch's low 16 bits, which tell one batch from the next.
    batch_epoch: u16,
    /// Auto-pongs queued since the connection's output was last all written (ws's
    /// `maxPendingAutoPongs`).
    pending_pongs: u16,
    batch_bytes: u32,
    read_eof: bool,
    want_shutdown: bool,
    shutdown_done: bool,
    /// The park thread found the connection idle and asks it to park (see `engine::park`).
    park_asked: bool,
    /// JS got a BACKPRESSURE record and waits for the DRAIN.
    above_high: bool,
    /// Reads in a row that brought messages and nothing else (no control frame, no error):
    /// its environment's JS thread may serve its reads itself once one ends between frames
    /// (see `engine::park`).
    message_reads: u8,
    timer: Option<Pin<Box<Sleep>>>,
}

/// Puts a connection under the built-in heartbeat, if its configuration has one.
fn watch_heartbeat(shared: &Arc<Shared>, cfg: &ConnConfig) {
    if let Some(hb) = cfg.heartbeat {
        super::heartbeat::watch(shared.clone(), hb);
    }
}

impl<T: Transport> Connection<T> {
    /// A server connection that starts by reading the upgrade request.
    pub fn server(io: T, id: u32, shared: Arc<Shared>, cfg: Arc<ConnConfig>, peer: PeerInfo) -> Self {
        watch_heartbeat(&shared, &cfg);
        let mut c = Self::new(io, id, Owner(shared), cfg, Phase::ServerHead);
        // Made on the runtime (the accept loop): tokio's timers need its context.
        c.timer = c.cfg.handshake_timeout.map(|d| Box::pin(tokio::time::sleep(d)));
        c.hs = Some(Handshake::server(peer));
        c
    }

    /// A connection whose handshake Node's http server received: open from the start, with
    /// the 101 answer already in the outbox and `early` holding bytes read after the request.
    pub fn adopted(io: T, id: u32, shared: Arc<Shared>, cfg: Arc<ConnConfig>, early: Vec<u8>, pmd: Option<DeflateParams>) -> Self {
        watch_heartbeat(&shared, &cfg);
        let mut c = Self::new(io, id, Owner(shared), cfg, Phase::Open);
        c.timer = None;
        c.pmd = pmd;
        if let Some(p) = &pmd {
            compression::enable(&mut c.shared.lock(), p, &c.cfg, c.shared.is_client);
        }
        c.zlib = c.open_codec();
        if !early.is_empty() {
            c.hs = Some(Handshake::early(early));
        }
        c
    }

    /// A client connection whose request is already in the outbox. `deadline` bounds the
    /// handshake, including the connect that came before.
    pub fn client(io: T, id: u32, shared: Arc<Shared>, cfg: Arc<ConnConfig>, hs: ClientHandshake, deadline: Option<Instant>) -> Self {
        watch_heartbeat(&shared, &cfg);
        let mut c = Self::new(io, id, Owner(shared), cfg, Phase::ClientHead);
        c.hs = Some(Handshake::client(hs));
        c.timer = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        c
    }

    /// Takes what JS queued: decisions, flags, bytes to write.
    fn sync_outbox(&mut self, cx: &Context<'_>) -> Option<End> {
        let mut out = self.shared.lock();
        // The decision first: JS may accept and terminate in one batch, before this task
        // runs; the connection is then open for JS and must end with a CLOSED event.
        if self.phase == Phase::ServerDecision {
            match out.decision() {
                Some(Decision::Accept) => {
                    out.active();
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
        if out.terminating() {
            if self.phase == Phase::Open && self.wpos == self.wbuf.len() {
                // What JS sent before terminating gets one try at the socket (see `poll_inner`).
                if let Some(bytes) = out.take_writes() {
                    self.wbuf = bytes;
                    self.wpos = 0;
                }
                self.acks_pending = out.has_acks();
            }
            return Some(match self.phase {
                Phase::ClientHead => {
                    End::HandshakeFailed("WebSocket was closed before the connection was established".into(), String::new())
                }
                Phase::Open if out.heartbeat_timeout() => HEARTBEAT_TIMEOUT,
                Phase::Open => End::Closed,
                _ => End::Silent,
            });
        }
        if out.raw_ended() {
            // JS ended a request's socket (`wsClientError`): the connection is refused, and
            // ends once the bytes are out and the peer has ended too.
            self.want_shutdown = true;
            if self.phase == Phase::ServerDecision {
                self.phase = Phase::Refusing;
            }
        }
        if out.close_queued() && !self.close_seen {
            self.close_seen = true;
            self.timer = Some(Box::pin(tokio::time::sleep(self.cfg.close_timeout)));
        }
        if self.wpos == self.wbuf.len() {
            if let Some(bytes) = out.take_writes() {
                self.wbuf = bytes;
                self.wpos = 0;
            }
        }
        self.paused = out.paused();
        self.acks_pending = out.has_acks();
        self.park_asked |= out.polled(cx.waker());
        // A DRAIN is owed (JS may have asked for one): the writes below check for it too.
        self.above_high |= out.above_high();
        let pressure = (self.phase == Phase::Open).then(|| self.shared.pressure(&mut out, self.cfg.water_marks, self.cfg.backpressure_limit)).flatten();
        drop(out);
        self.report_pressure(pressure)
    }

    /// Tells JS what the buffered output's size means (`Shared::pressure`); the end of the
    /// connection when it passed `maxBackpressure` with `closeOnBackpressureLimit`.
    fn report_pressure(&mut self, pressure: Option<Pressure>) -> Option<End> {
        match pressure? {
            Pressure::Close => return Some(BACKPRESSURE_LIMIT),
            Pressure::Backpressure { over_limit } => {
                self.above_high = true;
                events::with_batch(|b| b.backpressure(self.id, over_limit))
            }
            Pressure::Drain => {
                self.above_high = false;
                events::with_batch(|b| b.drain(self.id))
            }
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
                    self.shared.wrote(n);
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
            self.shared.lock().writes_done();
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Err(e);
            }
        }
        if progressed && self.acks_pending {
            // Sends waiting for their callbacks complete only by the task's writes (JS does not
            // write directly while any wait; acks queued since `sync_outbox` are for bytes not
            // taken yet, and their send woke the task).
            let written = self.shared.written_total();
            let mut out = self.shared.lock();
            let done = out.take_acks_written(written);
            if done > 0 {
                self.acks_pending = out.has_acks();
                drop(out);
                events::with_batch(|b| b.written(self.id, done as u32));
            }
        }
        if progressed && self.above_high {
            // Writes only lower the buffered output: a DRAIN, when it reached the low mark.
            let pressure = self.shared.pressure(&mut self.shared.lock(), self.cfg.water_marks, self.cfg.backpressure_limit);
            self.report_pressure(pressure);
        }
        Ok(progressed)
    }

    fn all_written(&self) -> bool {
        self.wpos == self.wbuf.len() && self.shared.lock().drained()
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
            if b.epoch as u16 != self.batch_epoch {
                self.batch_epoch = b.epoch as u16;
                self.batch_bytes = 0;
                false
            } else {
                b.waiting.push(cx.waker().clone());
                true
            }
        })
    }

    /// The zlib contexts of a connection that opens, if it agreed permessage-deflate (the
    /// receiver is made by `feed`).
    fn open_codec(&self) -> Option<Box<Zlib>> {
        self.pmd.as_ref().map(|p| Zlib::new(p, &self.cfg, self.shared.is_client))
    }

    fn on_bytes(&mut self, data: &mut [u8]) -> Option<End> {
        let id = self.id;
        let step = match (self.phase, self.hs.as_mut()) {
            (Phase::ServerHead, Some(hs)) => hs.on_request_bytes(data, &self.cfg),
            (Phase::ClientHead, Some(hs)) => hs.on_response_bytes(data, &self.cfg, id),
            (Phase::ClientBody, Some(hs)) => hs.on_body_bytes(data, id),
            (Phase::ServerHead | Phase::ClientHead | Phase::ClientBody, None) => Progress::Gone,
            (Phase::Open, _) => {
                self.feed(data);
                return None;
            }
            (Phase::ServerDecision, _) => {
                self.hs.get_or_insert_with(Box::default).head.extend_from_slice(data);
                return None;
            }
            (Phase::Refusing, _) => return None,
        };
        self.handshake_step(step)
    }

    /// Applies what a step of the opening handshake says.
    fn handshake_step(&mut self, step: Progress) -> Option<End> {
        match step {
            Progress::More => None,
            Progress::Refuse(answer) => {
                // JS never hears of the connection: it gives up the hold on the id that it
                // would have had (see `engine::registry`).
                registry::release(self.id);
                self.shared.lock().raw(&answer);
                self.phase = Phase::Refusing;
                self.want_shutdown = true;
                self.hs = None;
                None
            }
            Progress::Request(request) => {
                if let Some(p) = request.deflate() {
                    // Sends wait for JS's decision (the outbox is not open before it).
                    self.pmd = Some(p);
                    compression::enable(&mut self.shared.lock(), &p, &self.cfg, self.shared.is_client);
                }
                request.announce(self.id);
                self.phase = Phase::ServerDecision;
                self.timer = None;
                None
            }
            Progress::Open(opened) => {
                let handshake::Opened { accepted, head, mut rest } = *opened;
                self.hs = None;
                self.pmd = accepted.deflate;
                // Open the outbox before JS hears of it: sends made in the 'open' handler
                // must not be dropped as "not open yet".
                {
                    let mut out = self.shared.lock();
                    out.open();
                    out.active();
                    if let Some(p) = &self.pmd {
                        compression::enable(&mut out, p, &self.cfg, self.shared.is_client);
                    }
                }
                events::with_batch(|b| b.open(self.id, &accepted.protocol, &accepted.extensions, &head.reason, &head.headers));
                self.phase = Phase::Open;
                self.timer = None;
                self.zlib = self.open_codec();
                if !rest.is_empty() {
                    self.feed(&mut rest);
                }
                None
            }
            Progress::Body => {
                self.phase = Phase::ClientBody;
                None
            }
            Progress::Answered | Progress::Gone => Some(End::Silent),
            Progress::Failed(message, code) => Some(End::HandshakeFailed(message, code)),
        }
    }

    /// Client: the connection ends while a refusal's body arrives: JS gets what came of it.
    fn response_end(&mut self) -> End {
        if let Some(hs) = self.hs.as_mut() {
            hs.answer(self.id);
        }
        End::Silent
    }

    /// Bytes read from the socket before the connection's task runs (by the park thread):
    /// decoded as the task decodes what it reads.
    pub fn input(&mut self, data: &mut [u8]) {
        self.feed(data);
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
        let max_pongs = self.cfg.max_pending_auto_pongs;
        let pending_pongs = &mut self.pending_pongs;
        let mut close: Option<(u16, Vec<u8>)> = None;
        let mut active = false;
        let (batch_epoch, batch_bytes) = (&mut self.batch_epoch, &mut self.batch_bytes);
        // Events this read delivers: messages, and others (a control frame, an error).
        let (mut messages, mut others) = (0u32, 0u32);
        let result = events::with_batch(|b| {
            if b.epoch as u16 != *batch_epoch {
                *batch_epoch = b.epoch as u16;
                *batch_bytes = 0;
            }
            receiver.feed_inflating(data, inflater, |item| match item {
                Incoming::Message { binary, data, fragments } => {
                    active = true;
                    messages += 1;
                    count(batch_bytes, data.as_slice().len());
                    #[cfg(feature = "diagnostics")]
                    if !binary && data.as_slice() == PANIC_TRIGGER && TEST_PANIC.load(std::sync::atomic::Ordering::Relaxed) {
                        panic!("test panic (WS_NATIVE_TEST_PANIC)");
                    }
                    b.message(id, binary, data, fragments.as_deref());
                }
                Incoming::Ping(p) => {
                    others += 1;
                    if auto_pong {
                        // As ws: a peer that does not take its pongs is terminated once
                        // `maxPendingAutoPongs` wait (a pong is pending until our output is
                        // all written).
                        *pending_pongs = shared.auto_pong(p, PONG_BACKLOG, *pending_pongs, max_pongs);
                    }
                    count(batch_bytes, p.len() + CONTROL_COST);
                    b.ping(id, p);
                }
                // The heartbeat's own pongs are proof of life, not events.
                Incoming::Pong(p) if p == HEARTBEAT_PING => {}
                Incoming::Pong(p) => {
                    others += 1;
                    count(batch_bytes, p.len() + CONTROL_COST);
                    b.pong(id, p)
                }
                Incoming::Close { code, reason } => {
                    active = true;
                    others += 1;
                    b.close_frame(id, code, reason);
                    close = Some((code, reason.to_vec()));
                }
            })
        });
        if receiver.is_idle() && !receiver.is_done() {
            self.receiver = None;
        }
        let only_messages = messages > 0 && others == 0 && result.is_ok();
        self.message_reads = if only_messages { self.message_reads.saturating_add(1) } else { 0 };
        if active {
            // Seen by the park thread's sweep: this connection is not idle.
            self.shared.lock().active();
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
        events::with_batch(|b| b.error(self.id, e.kind as u8, e.code, &e.message, e.close_code));
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

/// What a connection runs on. Plain TCP connections park when idle (`engine::park` implements
/// `park` for them; only they are asked to: the sweep picks connections JS may write to
/// directly).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Sized {
    /// Parks an idle connection; gives it back when it cannot be parked now.
    fn park(conn: Connection<Self>) -> Result<(), Connection<Self>> {
        Err(conn)
    }

    /// Parks a connection whose reads its environment's JS thread serves; gives it back when
    /// it cannot.
    fn serve_on_js(conn: Connection<Self>) -> Result<(), Connection<Self>> {
        Err(conn)
    }
}

#[cfg(unix)]
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
    /// Open, with nothing under way, its messages taken one by one: the task may give the
    /// connection to the lot its environment's JS thread serves (`engine::park`).
    ServeOnJs,
}

/// An open connection with nothing under way, off its task (see `engine::park`): it has no
/// receiver, handshake, write buffer, timer or close state to keep; on a TCP socket, 40 bytes
/// instead of a connection's 120.
pub struct Idle<S> {
    /// First, as in `Connection`: withdraws the socket from direct writes before it closes.
    shared: Owner,
    io: S,
    cfg: Arc<ConnConfig>,
    zlib: Option<Box<Zlib>>,
    pmd: Option<DeflateParams>,
    id: u32,
}

impl<S> Idle<S> {
    /// The same connection on another form of its socket (off or back onto tokio's reactor).
    /// Err: converting failed and took the socket along: the connection is lost (see `lost`).
    pub fn convert<U>(self, f: impl FnOnce(S) -> io::Result<U>) -> Result<Idle<U>, Idle<()>> {
        let Idle { shared, io, cfg, zlib, pmd, id } = self;
        match f(io) {
            Ok(io) => Ok(Idle { shared, io, cfg, zlib, pmd, id }),
            Err(_) => Err(Idle { shared, io: (), cfg, zlib, pmd, id }),
        }
    }

    /// The connection, to run on a task again.
    pub fn resume(self) -> Connection<S> {
        let Idle { shared, io, cfg, zlib, pmd, id } = self;
        let mut conn = Connection::new(io, id, shared, cfg, Phase::Open);
        conn.zlib = zlib;
        conn.pmd = pmd;
        conn
    }

    /// The socket went away while the connection was idle: JS gets the close (1006).
    pub fn lost(self) {
        self.resume().lost();
    }

    pub fn io(&self) -> &S {
        &self.io
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn cfg(&self) -> &Arc<ConnConfig> {
        &self.cfg
    }

    pub fn id(&self) -> u32 {
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
            Poll::Ready(step @ (Step::Idle | Step::ServeOnJs)) => {
                let Some(conn) = task.0.take() else { return Poll::Ready(()) };
                let parked = if matches!(step, Step::Idle) { T::park(conn) } else { T::serve_on_js(conn) };
                match parked {
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
            pending_pongs: 0,
            batch_bytes: 0,
            read_eof: false,
            want_shutdown: false,
            shutdown_done: false,
            park_asked: false,
            above_high: false,
            message_reads: 0,
            timer: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The connection without what an idle one does not hold (`parkable` says when it is
    /// idle; what it drops is empty then).
    pub fn into_idle(self) -> Idle<T> {
        let Connection { shared, io, id, cfg, zlib, pmd, .. } = self;
        Idle { shared, io, cfg, zlib, pmd, id }
    }

    pub fn cfg(&self) -> &Arc<ConnConfig> {
        &self.cfg
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
            && self.zlib.as_ref().is_none_or(|z| z.at_rest())
    }

    /// The socket went away while the connection was idle: JS gets the close (1006).
    fn lost(mut self) {
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
            End::Silent if self.phase == Phase::Open || self.shared.lock().decision() == Some(Decision::Accept) => End::Closed,
            e => e,
        };
        if let End::Ended(code, message, close_code) = end {
            events::with_batch(|b| b.error(id, ERROR_ENDS, code, message, close_code));
        }
        match end {
            End::Closed | End::Ended(..) => {
                let (code, reason) = self.peer_close.take().map_or((ABNORMAL, Vec::new()), |c| *c);
                let (callbacks, unsent) = {
                    let out = self.shared.lock();
                    (out.unsent_callbacks(), self.shared.buffered_in(&out))
                };
                events::with_batch(|b| b.closed(id, code, &reason, callbacks, unsent));
            }
            End::HandshakeFailed(message, code) => {
                events::with_batch(|b| b.handshake_failed(id, &message, &code));
            }
            End::Silent => {}
        }
        Poll::Ready(Step::Ended)
    }
}

/// The tests' panic trigger (builds with the `diagnostics` feature, WS_NATIVE_TEST_PANIC=1 in
/// the environment at load): a text message equal to `PANIC_TRIGGER` panics inside the
/// connection's task.
#[cfg(feature = "diagnostics")]
pub static TEST_PANIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
#[cfg(feature = "diagnostics")]
const PANIC_TRIGGER: &[u8] = b"ws-native:test-panic";

impl<T: Transport> Connection<T> {
    fn on_panic(&mut self, cx: &mut Context<'_>, what: &str) -> Poll<Step> {
        if self.phase == Phase::Open {
            let message = format!("Internal error in the native engine: {what}");
            events::with_batch(|b| b.error(self.id, 0, "WS_ERR_INTERNAL", &message, 1011));
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
            compression::run_jobs(&this.shared, this.zlib.as_deref_mut());
            if let Some(end) = this.sync_outbox(cx) {
                if this.phase == Phase::Open {
                    // A termination: what the socket takes at once goes out first, as ws's
                    // sends reach the socket before `terminate()` destroys it.
                    let _ = this.poll_write_side(cx);
                }
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
                                this.shared.read(n);
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
        if !yielded && this.message_reads >= MESSAGE_READS && this.pmd.is_none() && this.cfg.sink.served() && this.parkable() {
            this.message_reads = 0;
            return Poll::Ready(Step::ServeOnJs);
        }
        if std::mem::take(&mut this.park_asked) && this.parkable() {
            // Idle since the sweep before last (see `engine::park`).
            return Poll::Ready(Step::Idle);
        }
        if let Some(z) = this.zlib.as_mut() {
            z.park_if_unused(cx, this.receiver.as_ref().is_some_and(|r| r.in_message()));
        }
        if yielded {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
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
        println!("Idle<std TcpStream>: {} bytes", std::mem::size_of::<super::Idle<std::net::TcpStream>>());
        println!("Outbox: {} bytes", std::mem::size_of::<super::super::state::Outbox>());
        println!("Shared: {} bytes", std::mem::size_of::<super::super::state::Shared>());
        println!("Receiver: {} bytes", std::mem::size_of::<crate::protocol::receiver::Receiver>());
        println!("TcpStream: {} bytes", std::mem::size_of::<tokio::net::TcpStream>());
        println!("Option<DeflateParams>: {} bytes", std::mem::size_of::<Option<crate::protocol::deflate::DeflateParams>>());
        println!("VecDeque<u64>: {} bytes", std::mem::size_of::<std::collections::VecDeque<u64>>());
        println!("Utf8Validator: {} bytes", std::mem::size_of::<crate::protocol::utf8::Utf8Validator>());
        println!("ReceiverConfig: {} bytes", std::mem::size_of::<crate::protocol::receiver::ReceiverConfig>());
    }
}
