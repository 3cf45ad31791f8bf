//! A connection's state shared between its task and JS's commands: the outbox of bytes and
//! requests waiting for the task, and the flags both sides read. Its fields are private; each
//! change is a method named for the transition (`accept`, `reject`, `terminate`, `park`...),
//! so that what can change a connection is listed here.
//!
//! Compression never runs on Node's thread: a message to compress is queued as a job for the
//! connection's task, and while jobs wait, every later frame of that connection queues behind
//! them (as ws's sender queues behind a deflate in progress), so the order on the wire is the
//! order of the calls.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use super::config::{BackpressureLimit, WaterMarks};
use crate::protocol::deflate::{DeflateParams, Tuning};
use crate::protocol::frame::{encode_frame, encode_header, header_len, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// The payload of the heartbeat's pings: the pongs that carry it are the engine's, and JS
/// does not hear of them (ws has no heartbeat to emit them); other pings and pongs are
/// reported as in ws.
pub const HEARTBEAT_PING: &[u8] = b"ws-native:heartbeat";

/// What the buffered output's size means for JS (see `Shared::pressure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// It passed the high-water mark; `over_limit`: past `maxBackpressure` too (JS then
    /// drops sends until the drain).
    Backpressure { over_limit: bool },
    /// It is back at the low-water mark after a `Backpressure`.
    Drain,
    /// It passed `maxBackpressure` with `closeOnBackpressureLimit`: the connection ends.
    Close,
}

/// Work for the connection's task, in call order.
pub enum JobKind {
    /// A data frame to compress: `first` is the message's first frame (RSV1 set).
    Compress { opcode: u8, first: bool, fin: bool, data: Vec<u8>, mask: Option<[u8; 4]> },
    /// Frame bytes queued behind a compression.
    Bytes(Vec<u8>),
}

pub struct Job {
    pub kind: JobKind,
    /// Report a WRITTEN event once the job's bytes are written.
    pub ack: bool,
}

/// The connections that got frames during a batch of commands (or a publish), to write
/// from this thread once it is done, and the tasks to wake: a connection's frames go out in
/// one write however many the batch gave it.
#[derive(Default)]
pub struct Writes {
    direct: Vec<Arc<Shared>>,
    wake: Vec<Waker>,
}

impl Writes {
    /// Frames were queued on `shared` (whose outbox `out` is locked): its bytes are written
    /// after the batch if JS may write them directly, else its task is woken.
    pub fn queued(&mut self, shared: &Arc<Shared>, out: &mut Outbox) {
        if out.has(bit::DIRECT) {
            if !out.has(bit::LISTED) {
                out.set(bit::LISTED, true);
                self.direct.push(shared.clone());
            }
        } else if let Some(w) = out.take_waker() {
            self.wake.push(w);
        }
    }

    /// A task to wake after the batch.
    pub fn wake(&mut self, w: Waker) {
        self.wake.push(w);
    }

    /// Writes what the listed connections' sockets take; wakes the tasks (and those of the
    /// connections whose bytes were not all written). Dropping does the same: a listed
    /// connection is never left out of later lists.
    pub fn finish(self) {}
}

impl Drop for Writes {
    fn drop(&mut self) {
        for shared in std::mem::take(&mut self.direct) {
            let mut out = shared.lock();
            out.set(bit::LISTED, false);
            shared.write_direct(&mut out);
            if !out.drained() {
                if let Some(w) = out.take_waker() {
                    self.wake.push(w);
                }
            }
        }
        for w in self.wake.drain(..) {
            w.wake();
        }
    }
}

/// How a published message goes to one subscriber (`Outbox::publish_mode`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PublishMode {
    /// Uncompressed: the frame made once for all.
    Plain,
    /// Compressed without context takeover: the compressed frame made once per `Sending`.
    Shared(Sending),
    /// Compressed with the connection's own context (takeover), by its task.
    Own,
}

/// What the server's JS decided about an upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Reject,
}

/// permessage-deflate's part of the outbox, on connections that agreed it (kept out of line:
/// every idle connection holds an outbox).
#[derive(Default)]
struct Compression {
    /// Our side has no context takeover: messages under this size go uncompressed (ws's
    /// `threshold`). None: every message asked to be compressed is.
    threshold: Option<u64>,
    /// The message being sent in fragments is compressed.
    compressing: bool,
    jobs: VecDeque<Job>,
    /// The task holds jobs it is compressing: later frames must queue too.
    deflating: bool,
    /// Bytes of queued jobs, for `bufferedAmount`.
    pending_bytes: u64,
    /// How our side compresses (negotiated parameters and level): a publish compresses once
    /// for every subscriber that compresses alike without context takeover.
    sending: Option<Sending>,
}

/// How a connection compresses what it sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sending {
    pub params: DeflateParams,
    pub is_server: bool,
    pub tuning: Tuning,
}

impl Compression {
    /// Frames must queue behind jobs waiting or being compressed.
    fn holds_frames(&self) -> bool {
        self.deflating || !self.jobs.is_empty()
    }
}

/// A socket's descriptor, -1 for none (4 bytes where `Option<i32>` takes 8).
#[derive(Clone, Copy)]
struct Descriptor(i32);

impl Default for Descriptor {
    fn default() -> Self {
        Descriptor(-1)
    }
}

/// The acknowledgement positions of an outbox, out of line: 8 bytes in every outbox, where
/// few connections send with callbacks (a `Vec` inline would take 24).
// The box is the point: one pointer in the outbox, the Vec's three words only when used.
#[allow(clippy::box_collection)]
#[derive(Default)]
struct Acks(Option<Box<Vec<u64>>>);

impl Acks {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    fn push(&mut self, end: u64) {
        self.0.get_or_insert_with(Default::default).push(end);
    }

    /// Removes the positions `written` has reached; returns how many.
    fn take_written(&mut self, written: u64) -> usize {
        let Some(v) = self.0.as_mut() else { return 0 };
        let done = v.iter().take_while(|&&end| end <= written).count();
        v.drain(..done);
        done
    }
}

/// The outbox's flags, as bits of one word (every idle connection holds an outbox).
mod bit {
    pub const CLOSE_QUEUED: u16 = 1;
    pub const TERMINATE: u16 = 1 << 1;
    pub const PAUSED: u16 = 1 << 2;
    /// A data message is being sent in fragments.
    pub const FRAGMENTING: u16 = 1 << 3;
    /// The handshake is over and frames may be queued.
    pub const OPEN: u16 = 1 << 4;
    pub const RAW_END: u16 = 1 << 5;
    /// The connection opened or read a message (or close frame) since the park thread's
    /// last sweep. Pings and pongs do not count: the park thread handles them for a parked
    /// connection, which they keep parked.
    pub const ACTIVE: u16 = 1 << 6;
    /// The park thread asks the connection to park (it was idle for a whole sweep).
    pub const PARK_ASKED: u16 = 1 << 7;
    /// The connection is parked.
    pub const PARKED: u16 = 1 << 8;
    /// The task holds bytes it is writing: nobody else may write to the socket.
    pub const TASK_BUSY: u16 = 1 << 9;
    /// JS may write the connection's frames to `fd` directly (a plain TCP socket).
    pub const DIRECT: u16 = 1 << 10;
    /// JS decided about the upgrade request: it accepted it (`OPEN` set too), or refused.
    pub const DECIDED: u16 = 1 << 11;
    /// Buffered output passed the high-water mark (JS got BACKPRESSURE), and past
    /// `maxBackpressure` too: a DRAIN record follows once it is back at the low-water mark.
    pub const ABOVE_HIGH: u16 = 1 << 12;
    pub const ABOVE_LIMIT: u16 = 1 << 13;
    /// The heartbeat found the peer silent: the connection ends with its error.
    pub const HEARTBEAT_TIMEOUT: u16 = 1 << 14;
    /// The connection is on a `Writes` list: its bytes go out once, after the batch.
    pub const LISTED: u16 = 1 << 15;
}

/// Bytes and requests waiting for the connection task.
#[derive(Default)]
pub struct Outbox {
    buf: Vec<u8>,
    /// Bytes ever queued, to turn `ACK` positions into written counts.
    queued_total: u64,
    /// End positions (in `queued_total` terms) of sends that asked for an acknowledgement;
    /// the task reports them as its writes pass them.
    acks: Acks,
    waker: Option<Waker>,
    flags: u16,
    /// Bytes queued before the connection opened (its HTTP head, first on the wire; at most
    /// 65,535 are told apart): not `bufferedAmount`, which counts WebSocket data only, as in ws.
    head_len: u16,
    /// The TCP socket's descriptor while the connection (on its task or parked) owns it, for
    /// the socket's options and addresses (`ws._socket`). On a plain TCP socket (`DIRECT`),
    /// frames may also be written from the JS thread directly (see `engine::commands`); such
    /// connections park when idle (see `engine::park`).
    fd: Descriptor,
    /// permessage-deflate was agreed: COMPRESS sends are compressed.
    deflate: Option<Box<Compression>>,
}

/// A connection's state, shared by its task (or its parked state) and JS's commands.
pub struct Shared {
    out: Mutex<Outbox>,
    written_total: AtomicU64,
    /// Bytes read from the socket (`ws._socket.bytesRead`).
    read_total: AtomicU64,
    /// Clients mask their frames.
    pub is_client: bool,
    /// The id of the events sink (Node environment) the connection belongs to.
    pub sink: u32,
}

impl Shared {
    pub fn new(is_client: bool, sink: u32) -> Arc<Self> {
        Arc::new(Shared { out: Mutex::new(Outbox::default()), written_total: AtomicU64::new(0), read_total: AtomicU64::new(0), is_client, sink })
    }

    pub fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes queued and not yet written to the socket.
    pub fn buffered(&self) -> u64 {
        self.buffered_in(&self.lock())
    }

    /// `buffered()` for a caller that holds the lock.
    pub fn buffered_in(&self, out: &Outbox) -> u64 {
        let written = self.written_total();
        let queued = out.queued_total + out.deflate.as_ref().map_or(0, |d| d.pending_bytes);
        queued.saturating_sub(written).saturating_sub((out.head_len as u64).saturating_sub(written))
    }

    /// Bytes written to the socket, by the task or from JS's thread directly.
    pub fn written_total(&self) -> u64 {
        self.written_total.load(Ordering::Acquire)
    }

    /// Counts `n` more bytes written to the socket.
    pub fn wrote(&self, n: usize) {
        self.written_total.fetch_add(n as u64, Ordering::AcqRel);
    }

    /// Bytes read from the socket.
    pub fn read_total(&self) -> u64 {
        self.read_total.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes read from the socket (only the connection's task reads).
    pub fn read(&self, n: usize) {
        self.read_total.store(self.read_total() + n as u64, Ordering::Relaxed);
    }

    /// Runs `f` on the connection's TCP socket while the connection owns one (held open by the
    /// lock for the call).
    #[cfg(unix)]
    fn with_socket<R>(&self, f: impl FnOnce(&super::net::SocketRef) -> R) -> Option<R> {
        let out = self.lock();
        let fd = out.fd()?;
        // SAFETY: the connection withdraws `fd` under this lock before its socket closes, and
        // the lock is held until `f` returns.
        let socket = unsafe { super::net::SocketRef::new(fd) };
        Some(f(&socket))
    }

    /// The peer's and our address, while the connection owns its TCP socket.
    #[cfg(unix)]
    pub fn socket_addresses(&self) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        self.with_socket(|s| s.addresses()).unwrap_or((None, None))
    }

    /// Node's `setNoDelay` and `setKeepAlive(on, delay seconds)` on the connection's socket;
    /// false when it has none.
    #[cfg(unix)]
    pub fn set_socket_options(&self, no_delay: Option<bool>, keep_alive: Option<(bool, u32)>) -> bool {
        self.with_socket(|s| {
            if let Some(on) = no_delay {
                let _ = s.set_no_delay(on);
            }
            if let Some((on, delay)) = keep_alive {
                let _ = s.set_keep_alive(on, delay);
            }
        })
        .is_some()
    }

    #[cfg(not(unix))]
    pub fn socket_addresses(&self) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        (None, None)
    }

    #[cfg(not(unix))]
    pub fn set_socket_options(&self, _: Option<bool>, _: Option<(bool, u32)>) -> bool {
        false
    }

    /// JS accepted the upgrade request: writes its 101 answer and opens the connection.
    pub fn accept(&self, response: &[u8]) {
        self.decide(Decision::Accept, response);
    }

    /// JS refused the upgrade request: writes its HTTP answer, then the connection ends.
    pub fn reject(&self, response: &[u8]) {
        self.decide(Decision::Reject, response);
    }

    fn decide(&self, decision: Decision, response: &[u8]) {
        let waker = {
            let mut out = self.lock();
            out.raw(response);
            let accept = decision == Decision::Accept;
            out.set(bit::OPEN, accept);
            out.set(bit::DECIDED, true);
            out.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the connection at once (its Node environment is going away).
    pub fn terminate(&self) {
        let waker = {
            let mut out = self.lock();
            out.set(bit::TERMINATE, true);
            out.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// What the buffered output's size means now (called by the connection's task as its
    /// output changes): a record for JS, or the end of the connection.
    pub fn pressure(&self, out: &mut Outbox, marks: WaterMarks, limit: Option<BackpressureLimit>) -> Option<Pressure> {
        let buffered = self.buffered_in(out);
        if let Some(l) = limit {
            if buffered > l.bytes {
                if l.close {
                    return Some(Pressure::Close);
                }
                if !out.has(bit::ABOVE_LIMIT) {
                    out.set(bit::ABOVE_LIMIT | bit::ABOVE_HIGH, true);
                    return Some(Pressure::Backpressure { over_limit: true });
                }
            }
        }
        if buffered > marks.high && !out.has(bit::ABOVE_HIGH) {
            out.set(bit::ABOVE_HIGH, true);
            return Some(Pressure::Backpressure { over_limit: false });
        }
        if buffered <= marks.low && out.has(bit::ABOVE_HIGH) {
            out.set(bit::ABOVE_HIGH | bit::ABOVE_LIMIT, false);
            return Some(Pressure::Drain);
        }
        None
    }

    /// The heartbeat's ping, when the connection is open: written from this thread when the
    /// socket takes it (a parked connection stays parked), else by the connection's task.
    pub fn heartbeat_ping(&self) {
        let waker = {
            let mut out = self.lock();
            if !out.can_send() {
                return;
            }
            let mask = self.is_client.then(mask_key);
            out.frame(OP_PING, true, HEARTBEAT_PING, mask);
            self.write_direct(&mut out);
            if out.drained() {
                return;
            }
            out.take_waker()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// An auto-pong for a parked connection, written from the park thread. False when the
    /// socket did not take it all (the connection's task writes the rest).
    pub fn pong_directly(&self, payload: &[u8]) -> bool {
        let mut out = self.lock();
        if !out.can_send() {
            return true;
        }
        let mask = self.is_client.then(mask_key);
        out.frame(OP_PONG, true, payload, mask);
        self.write_direct(&mut out);
        out.drained()
    }

    /// The heartbeat found the peer silent: the connection ends, with the heartbeat's error.
    pub fn heartbeat_timed_out(&self) {
        let waker = {
            let mut out = self.lock();
            out.set(bit::TERMINATE | bit::HEARTBEAT_TIMEOUT, true);
            out.take_waker()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Writes the outbox's bytes to the socket from this thread (JS's, or the heartbeat's)
    /// when the connection's task is idle: a send then costs no thread wake-up, which is most
    /// of a round trip's latency (see `Outbox::direct_write` for when). What is left is for
    /// the task.
    #[cfg(unix)]
    pub fn write_direct(&self, out: &mut Outbox) {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        let Some((fd, bytes)) = out.direct_write() else { return };
        // SAFETY: `fd` is the socket of a live connection (on its task or parked): the
        // connection clears it under this lock before its socket is closed (its `Owner` drops
        // first), and we hold the lock. ManuallyDrop: not ours to close.
        let sock = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        let mut done = 0;
        while done < bytes.len() {
            match (&*sock).write(&bytes[done..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        if done > 0 {
            self.wrote(done);
            out.written_directly(done);
        }
    }

    #[cfg(not(unix))]
    pub fn write_direct(&self, _: &mut Outbox) {}

    /// Writes an unmasked frame of `payload` to the socket from JS's thread at once, when
    /// nothing is queued before it (`Outbox::write_through_fd`): the payload goes from JS's
    /// memory to the kernel without a copy into the queue, which for large messages is a
    /// memcpy per message saved. What the socket does not take is queued. False when the
    /// socket may not be written now: the caller queues the frame.
    #[cfg(unix)]
    pub fn frame_through(&self, out: &mut Outbox, opcode: u8, fin: bool, payload: &[u8]) -> bool {
        let Some(fd) = out.write_through_fd() else { return false };
        let mut head = Vec::with_capacity(10);
        encode_header(&mut head, opcode, fin, false, payload.len() as u64, None);
        let iov = [
            libc::iovec { iov_base: head.as_ptr() as *mut libc::c_void, iov_len: head.len() },
            libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() },
        ];
        // SAFETY: `fd` is the socket of a live connection, valid while we hold the outbox lock
        // (see `write_direct`); both iovecs point into buffers alive for the call.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
        let n = usize::try_from(n).unwrap_or(0);
        out.queued_total += (head.len() + payload.len()) as u64;
        if n > 0 {
            self.wrote(n);
        }
        if n < head.len() {
            out.buf.extend_from_slice(&head[n..]);
            out.buf.extend_from_slice(payload);
        } else {
            out.buf.extend_from_slice(&payload[n - head.len()..]);
        }
        true
    }

    #[cfg(not(unix))]
    pub fn frame_through(&self, _: &mut Outbox, _: u8, _: bool, _: &[u8]) -> bool {
        false
    }

    /// Answers a ping; `pending` auto-pongs wait to be written since the output was last all
    /// written. With `max` (not 0) of them waiting, the connection is terminated instead, as
    /// ws does (`maxPendingAutoPongs`); while `backlog` bytes wait, the pong is skipped (RFC
    /// 6455 5.5.3 lets pongs be skipped). Returns the pending count after this ping.
    pub fn auto_pong(&self, payload: &[u8], backlog: u64, pending: u16, max: u32) -> u16 {
        let mut out = self.lock();
        if !out.can_send() {
            return pending;
        }
        let buffered = self.buffered_in(&out);
        let pending = if buffered == 0 { 0 } else { pending };
        if max > 0 && u32::from(pending) >= max {
            out.terminate();
            return pending;
        }
        if buffered < backlog {
            let mask = self.is_client.then(mask_key);
            out.frame(OP_PONG, true, payload, mask);
        }
        pending.saturating_add(1)
    }
}

impl Outbox {
    fn has(&self, b: u16) -> bool {
        self.flags & b != 0
    }

    fn set(&mut self, b: u16, on: bool) {
        if on {
            self.flags |= b;
        } else {
            self.flags &= !b;
        }
    }

    /// Clears flag `b`; returns whether it was set.
    fn take(&mut self, b: u16) -> bool {
        let was = self.has(b);
        self.flags &= !b;
        was
    }

    // What JS asked for, read by the connection's task.

    pub fn decision(&self) -> Option<Decision> {
        match (self.has(bit::DECIDED), self.has(bit::OPEN)) {
            (false, _) => None,
            (true, true) => Some(Decision::Accept),
            (true, false) => Some(Decision::Reject),
        }
    }

    pub fn terminating(&self) -> bool {
        self.has(bit::TERMINATE)
    }

    /// JS ended a request's socket (`wsClientError`) after its raw bytes.
    pub fn raw_ended(&self) -> bool {
        self.has(bit::RAW_END)
    }

    pub fn close_queued(&self) -> bool {
        self.has(bit::CLOSE_QUEUED)
    }

    pub fn paused(&self) -> bool {
        self.has(bit::PAUSED)
    }

    /// The connection ends because the heartbeat found its peer silent.
    pub fn heartbeat_timeout(&self) -> bool {
        self.has(bit::HEARTBEAT_TIMEOUT)
    }

    /// Sends wait for their callbacks.
    pub fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    /// Of the sends whose callbacks wait, how many were queued as frames and how many behind
    /// a compression (for a connection that ends: they were never written).
    pub fn unsent_callbacks(&self) -> (u32, u32) {
        let frames = self.acks.0.as_ref().map_or(0, |v| v.len());
        let compressing = self.deflate.as_ref().map_or(0, |d| d.jobs.iter().filter(|j| j.ack).count());
        (frames as u32, compressing as u32)
    }

    /// Nothing left for the task to write: no bytes, no compression under way.
    pub fn drained(&self) -> bool {
        self.buf.is_empty() && !self.queueing()
    }

    /// Nothing from JS waits for the connection's task: no bytes, callbacks, compression,
    /// close, end, pause or termination (the connection's side is `Connection::parkable`).
    pub fn quiet(&self) -> bool {
        self.has(bit::OPEN)
            && self.buf.is_empty()
            && self.acks.is_empty()
            && !self.queueing()
            && !self.has(bit::TASK_BUSY | bit::CLOSE_QUEUED | bit::TERMINATE | bit::PAUSED | bit::RAW_END)
    }

    /// True while frames must queue behind compression jobs.
    fn queueing(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.holds_frames())
    }

    // The connection's task.

    /// The task runs: the outbox wakes `waker` for what JS queues next. Returns whether the
    /// park thread asked the connection to park.
    pub fn polled(&mut self, waker: &Waker) -> bool {
        self.set(bit::PARKED, false);
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
        self.take(bit::PARK_ASKED)
    }

    /// The task takes the queued bytes to write them: nobody else writes until it is done.
    pub fn take_writes(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            return None;
        }
        self.set(bit::TASK_BUSY, true);
        Some(std::mem::take(&mut self.buf))
    }

    /// The task wrote all it took.
    pub fn writes_done(&mut self) {
        self.set(bit::TASK_BUSY, false);
    }

    /// The sends whose bytes `written` has reached: how many callbacks are due.
    pub fn take_acks_written(&mut self, written: u64) -> usize {
        self.acks.take_written(written)
    }

    /// The handshake is over: frames may be queued.
    pub fn open(&mut self) {
        self.set(bit::OPEN, true);
    }

    /// permessage-deflate was agreed: sends asked to be compressed are, as ws's sender decides
    /// per message (`threshold`: see `Compression`).
    pub fn enable_compression(&mut self, threshold: Option<u64>, sending: Sending) {
        self.deflate = Some(Box::new(Compression { threshold, sending: Some(sending), ..Compression::default() }));
    }

    /// For a publish: how an unmasked message of `len` bytes asked to be compressed goes out.
    pub fn publish_mode(&self, compress: bool, len: usize) -> PublishMode {
        match self.deflate.as_deref() {
            Some(d) if compress && !self.has(bit::FRAGMENTING) => match (d.threshold, d.sending) {
                // No context takeover: the same compressed bytes serve every such subscriber.
                (Some(t), Some(sending)) if len as u64 >= t => PublishMode::Shared(sending),
                (Some(_), _) => PublishMode::Plain,
                (None, _) => PublishMode::Own,
            },
            _ => PublishMode::Plain,
        }
    }

    /// The compression jobs queued so far, for the task to run (later frames keep queueing
    /// behind them until `jobs_done`).
    pub fn take_jobs(&mut self) -> Option<VecDeque<Job>> {
        if self.has(bit::TERMINATE) {
            // The connection ends: nothing more is compressed (the jobs' callbacks fail).
            return None;
        }
        let d = self.deflate.as_mut().filter(|d| !d.jobs.is_empty())?;
        d.deflating = true;
        Some(std::mem::take(&mut d.jobs))
    }

    /// Appends what the task produced for a batch of jobs: `bytes`, with the end offsets of
    /// those that asked for an acknowledgement; `estimate` is what the jobs counted while
    /// queued.
    pub fn jobs_done(&mut self, bytes: &[u8], acks: &[usize], estimate: u64) {
        let base = self.queued_total;
        self.buf.extend_from_slice(bytes);
        self.queued_total += bytes.len() as u64;
        for &a in acks {
            self.acks.push(base + a as u64);
        }
        if let Some(d) = self.deflate.as_mut() {
            d.pending_bytes = d.pending_bytes.saturating_sub(estimate);
            if d.jobs.is_empty() {
                d.deflating = false;
            }
        }
    }

    // Parking (see `engine::park`).

    /// The connection opened, or read a message or a close frame: the park thread's next
    /// sweep leaves it on its task.
    pub fn active(&mut self) {
        self.set(bit::ACTIVE, true);
    }

    /// The sweep's question: if the connection was not active since the last sweep and
    /// nothing waits for its task, it is asked to park; returns the waker that tells its task.
    pub fn ask_to_park(&mut self) -> Option<Waker> {
        if self.take(bit::ACTIVE) || self.has(bit::PARKED | bit::PARK_ASKED) || !self.has(bit::DIRECT) || !self.quiet() {
            return None;
        }
        self.set(bit::PARK_ASKED, true);
        self.waker.take()
    }

    /// The connection parks: its (empty) byte and acknowledgement queues give back their
    /// memory (the next send allocates again), and `waker` brings it back.
    pub fn park(&mut self, waker: Waker) {
        debug_assert!(self.buf.is_empty() && self.acks.is_empty());
        self.buf = Vec::new();
        self.acks = Acks::default();
        self.waker = Some(waker);
        self.set(bit::PARKED, true);
    }

    // Direct writes (see `engine::commands`).

    /// The connection's TCP socket, while it owns one.
    pub fn fd(&self) -> Option<i32> {
        (self.fd.0 >= 0).then_some(self.fd.0)
    }

    /// JS may write this connection's frames to its socket directly.
    pub fn direct(&self) -> bool {
        self.has(bit::DIRECT)
    }

    /// The connection's TCP socket `fd`; `direct`: a plain one, to which JS may write the
    /// connection's frames directly.
    pub fn set_fd(&mut self, fd: i32, direct: bool) {
        if fd >= 0 {
            self.fd = Descriptor(fd);
            self.set(bit::DIRECT, direct);
        }
    }

    /// The connection withdraws its socket before it closes: nobody may use `fd` any more.
    pub fn withdraw_fd(&mut self) {
        self.fd = Descriptor(-1);
        self.set(bit::DIRECT, false);
    }

    /// The socket and the bytes JS may write there now, from its own thread: only when the
    /// task is not writing itself, no callback waits for the bytes, nothing is compressing,
    /// and no close is queued. A termination queued after the bytes does not hold them back:
    /// as with ws, whose sends reach the socket before `terminate()` destroys it.
    pub fn direct_write(&self) -> Option<(i32, &[u8])> {
        if self.buf.is_empty() {
            return None;
        }
        Some((self.writable_fd()?, &self.buf))
    }

    /// The socket JS may write a new frame to at once (`Shared::frame_through`): as for
    /// `direct_write`, with nothing queued before the frame.
    pub fn write_through_fd(&self) -> Option<i32> {
        if !self.buf.is_empty() {
            return None;
        }
        self.writable_fd()
    }

    fn writable_fd(&self) -> Option<i32> {
        let fd = self.fd()?;
        if !self.has(bit::DIRECT) || self.has(bit::TASK_BUSY | bit::CLOSE_QUEUED) || !self.acks.is_empty() || self.queueing() {
            return None;
        }
        Some(fd)
    }

    /// `n` bytes of the queue were written directly. The buffer keeps its capacity for the
    /// next sends (freeing and faulting in a large one per message costs bulk transfers a
    /// quarter of their rate); it goes when the connection parks.
    pub fn written_directly(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    /// The waker of the connection's task (or of its parked state), taken: for a command that
    /// needs the task.
    pub fn take_waker(&mut self) -> Option<Waker> {
        self.waker.take()
    }

    // Commands from JS (see `engine::commands`).

    /// The handshake is over (JS accepted, or the client's handshake succeeded).
    pub fn is_open(&self) -> bool {
        self.has(bit::OPEN)
    }

    /// Data, pings and pongs may be queued: open, and no close queued.
    pub fn can_send(&self) -> bool {
        self.has(bit::OPEN) && !self.has(bit::CLOSE_QUEUED)
    }

    /// Starts or continues a data message. Returns its frame's opcode and whether the frame
    /// goes to compression (ws decides on the first fragment, for the whole message).
    pub fn data_frame(&mut self, binary: bool, fin: bool, compress: bool, len: usize) -> (u8, bool, bool) {
        let first = !self.has(bit::FRAGMENTING);
        let opcode = if !first {
            OP_CONTINUATION
        } else if binary {
            OP_BINARY
        } else {
            OP_TEXT
        };
        self.set(bit::FRAGMENTING, !fin);
        let compressed = match self.deflate.as_mut() {
            Some(d) => {
                if first {
                    d.compressing = compress && d.threshold.is_none_or(|t| len as u64 >= t);
                }
                d.compressing
            }
            None => false,
        };
        (opcode, compressed, first)
    }

    /// Queues a data frame for the task to compress.
    pub fn queue_compression(&mut self, opcode: u8, first: bool, fin: bool, data: &[u8], mask: Option<[u8; 4]>, ack: bool) {
        if let Some(d) = self.deflate.as_mut() {
            d.pending_bytes += data.len() as u64;
            let kind = JobKind::Compress { opcode, first, fin, data: data.to_vec(), mask };
            d.jobs.push_back(Job { kind, ack });
        }
    }

    /// Appends one frame; `mask` is the key when the frame is masked. Returns false when the
    /// frame was queued behind compression jobs (its acknowledgement goes with the job).
    pub fn frame(&mut self, opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> bool {
        let len = header_len(payload.len() as u64, mask.is_some()) + payload.len();
        if let Some(d) = self.deflate.as_mut().filter(|d| d.holds_frames()) {
            let mut bytes = Vec::with_capacity(len);
            encode_frame(&mut bytes, opcode, fin, false, payload, mask);
            d.pending_bytes += bytes.len() as u64;
            d.jobs.push_back(Job { kind: JobKind::Bytes(bytes), ack: false });
            return false;
        }
        self.buf.reserve(len);
        let before = self.buf.len();
        encode_frame(&mut self.buf, opcode, fin, false, payload, mask);
        self.queued_total += (self.buf.len() - before) as u64;
        true
    }

    /// A data message is half sent (its last fragment is still to come).
    pub fn fragmenting(&self) -> bool {
        self.has(bit::FRAGMENTING)
    }

    /// The buffered output passed `maxBackpressure` (the task said so to JS): sends and
    /// publishes are dropped until it drains.
    pub fn over_limit(&self) -> bool {
        self.has(bit::ABOVE_LIMIT)
    }

    /// JS saw its sends pass the high-water mark before the engine had them: a DRAIN is owed
    /// once the buffered output is at the low-water mark (as after a BACKPRESSURE).
    pub fn want_drain(&mut self) {
        self.set(bit::ABOVE_HIGH, true);
    }

    /// A DRAIN is owed (see `Shared::pressure`).
    pub fn above_high(&self) -> bool {
        self.has(bit::ABOVE_HIGH)
    }

    /// Frames already encoded, queued behind the compression jobs waiting.
    pub fn raw_frames(&mut self, bytes: Vec<u8>) {
        if let Some(d) = self.deflate.as_mut() {
            d.pending_bytes += bytes.len() as u64;
            d.jobs.push_back(Job { kind: JobKind::Bytes(bytes), ack: false });
        }
    }

    /// Appends a frame already encoded (a broadcast's, encoded once); false when it must
    /// queue behind compression (the caller then frames it with `frame`).
    pub fn encoded(&mut self, frame: &[u8]) -> bool {
        if self.queueing() {
            return false;
        }
        self.buf.extend_from_slice(frame);
        self.queued_total += frame.len() as u64;
        true
    }

    /// The last send asked for a callback: reported once its bytes are written. `queued` says
    /// whether its frame went to the queue (`frame` / `encoded` returned true) or to a job.
    pub fn ack_last(&mut self, queued: bool) {
        if queued {
            let end = self.queued_total;
            self.acks.push(end);
        } else if let Some(j) = self.deflate.as_mut().and_then(|d| d.jobs.back_mut()) {
            j.ack = true;
        }
    }

    /// Raw bytes (an HTTP head, or bytes on a connection still in its handshake).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.queued_total += bytes.len() as u64;
        if !self.has(bit::OPEN) {
            self.head_len = self.head_len.saturating_add(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
        }
    }

    /// `wsClientError`'s `socket.end()`: the last raw bytes, then the connection ends.
    pub fn raw_end(&mut self, bytes: &[u8]) {
        self.raw(bytes);
        self.set(bit::RAW_END, true);
    }

    /// A close frame with an optional code and reason.
    pub fn close(&mut self, code: Option<u16>, reason: &[u8], mask: Option<[u8; 4]>) {
        let mut body = Vec::with_capacity(2 + reason.len());
        if let Some(c) = code {
            body.extend_from_slice(&c.to_be_bytes());
            body.extend_from_slice(reason);
        }
        self.frame(OP_CLOSE, true, &body, mask);
        self.set(bit::CLOSE_QUEUED, true);
    }

    pub fn terminate(&mut self) {
        self.set(bit::TERMINATE, true);
    }

    pub fn pause(&mut self, paused: bool) {
        self.set(bit::PAUSED, paused);
    }
}

/// A fresh masking key for a client frame.
pub fn mask_key() -> [u8; 4] {
    rand::random()
}
