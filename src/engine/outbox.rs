//! JS -> engine: the per-connection outbox and the command batch that fills it.
//! JS queues commands during a tick and hands them over in one call; each command is framed
//! straight into its connection's outbox (the one copy out of JS memory), and each connection
//! whose task is parked is woken once per batch, not once per message.
//!
//! Command: `[op u8][flags u8][id u32 LE][len u32 LE][payload; len]`. Keep in sync with
//! `lib/native.js`.
//!
//! Compression never runs on Node's thread: a message to compress is queued as a job for the
//! connection's task, and while jobs wait, every later frame of that connection queues behind
//! them (as ws's sender queues behind a deflate in progress), so the order on the wire is the
//! order of the calls.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use super::registry;
use crate::protocol::frame::{encode_frame, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

pub mod op {
    pub const SEND: u8 = 1;
    pub const PING: u8 = 2;
    pub const PONG: u8 = 3;
    /// Payload: empty (no code) or `[code u16 BE][reason]`.
    pub const CLOSE: u8 = 4;
    pub const TERMINATE: u8 = 5;
    pub const PAUSE: u8 = 6;
    pub const RESUME: u8 = 7;
    /// Raw bytes on a connection still in its handshake (`wsClientError` sockets).
    pub const RAW_WRITE: u8 = 8;
    /// End a connection still in its handshake after its raw bytes.
    pub const RAW_END: u8 = 9;
    /// Bytes Node read from a bridged socket.
    pub const BRIDGE_IN: u8 = 10;
    /// A bridged socket ended (no more bytes will come).
    pub const BRIDGE_EOF: u8 = 11;
    /// JS is done with the id: its last command for it (see `engine::registry`).
    pub const RELEASE: u8 = 12;
}

pub mod flag {
    pub const BINARY: u8 = 1;
    pub const FIN: u8 = 2;
    /// Report with a WRITTEN event once the bytes reached the socket (send callbacks).
    pub const ACK: u8 = 4;
    /// The payload is the next buffer of the external list.
    pub const EXTERNAL: u8 = 8;
    pub const MASK_SET: u8 = 16;
    pub const MASK: u8 = 32;
    /// ws's `compress` send option (honoured when permessage-deflate was agreed).
    pub const COMPRESS: u8 = 64;
    /// The payload is the previous command's; no bytes follow (the length is informative).
    pub const REPEAT: u8 = 128;
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

/// What the server's JS decided about an upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Reject,
}

/// permessage-deflate's part of the outbox, on connections that agreed it (kept out of line:
/// every idle connection holds an outbox).
#[derive(Default)]
pub struct Compression {
    /// Our side has no context takeover: messages under this size go uncompressed (ws's
    /// `threshold`). None: every message asked to be compressed is.
    pub threshold: Option<u64>,
    /// The message being sent in fragments is compressed.
    pub compressing: bool,
    pub jobs: VecDeque<Job>,
    /// The task holds jobs it is compressing: later frames must queue too.
    pub deflating: bool,
    /// Bytes of queued jobs, for `bufferedAmount`.
    pub pending_bytes: u64,
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

/// Bytes and requests waiting for the connection task.
#[derive(Default)]
pub struct Outbox {
    pub buf: Vec<u8>,
    /// Bytes ever queued, to turn `ACK` positions into written counts.
    pub queued_total: u64,
    /// End positions (in `queued_total` terms) of sends that asked for an acknowledgement;
    /// the task reports them as its writes pass them.
    pub acks: Acks,
    pub waker: Option<Waker>,
    pub close_queued: bool,
    pub terminate: bool,
    pub paused: bool,
    pub fragmenting: bool,
    pub decision: Option<Decision>,
    /// The handshake is over and frames may be queued.
    pub open: bool,
    pub raw_end: bool,
    /// A plain TCP socket's descriptor, while the connection (on its task or
    /// parked) owns the socket: frames may then be written from the JS thread directly (see
    /// `write_direct`). Such connections park when idle (see `engine::park`).
    fd: Descriptor,
    /// The connection's task ran since the park thread's last sweep.
    pub polled: bool,
    /// The park thread asks the connection to park (it was idle for a whole sweep).
    pub park_asked: bool,
    /// The connection is parked.
    pub parked: bool,
    /// The task holds bytes it is writing: nobody else may write to the socket.
    pub task_busy: bool,
    /// permessage-deflate was agreed: COMPRESS sends are compressed.
    pub deflate: Option<Box<Compression>>,
}

/// The acknowledgement positions of an outbox, out of line: 8 bytes in every outbox, where
/// few connections send with callbacks (a `Vec` inline would take 24).
// The box is the point: one pointer in the outbox, the Vec's three words only when used.
#[allow(clippy::box_collection)]
#[derive(Default)]
pub struct Acks(Option<Box<Vec<u64>>>);

impl Acks {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    pub fn push(&mut self, end: u64) {
        self.0.get_or_insert_with(Default::default).push(end);
    }

    /// Removes the positions `written` has reached; returns how many.
    pub fn take_written(&mut self, written: u64) -> usize {
        let Some(v) = self.0.as_mut() else { return 0 };
        let done = v.iter().take_while(|&&end| end <= written).count();
        v.drain(..done);
        done
    }
}

pub struct Shared {
    pub out: Mutex<Outbox>,
    pub written_total: AtomicU64,
    /// Clients mask their frames.
    pub is_client: bool,
    /// The id of the events sink (Node environment) the connection belongs to.
    pub sink: u32,
}

impl Shared {
    pub fn new(is_client: bool, sink: u32) -> Arc<Self> {
        Arc::new(Shared { out: Mutex::new(Outbox::default()), written_total: AtomicU64::new(0), is_client, sink })
    }

    pub fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets JS write this connection's frames to `stream` directly (see `write_direct`): only
    /// for a plain TCP socket that the connection owns, whose `Owner` withdraws it.
    pub fn allow_direct_writes(&self, stream: &tokio::net::TcpStream) {
        self.lock().set_fd(Some(std::os::fd::AsRawFd::as_raw_fd(stream)));
        // Such connections park when idle: the sweeps start with the first.
        super::park::start();
    }

    /// Bytes queued and not yet written to the socket.
    pub fn buffered(&self) -> u64 {
        self.buffered_in(&self.lock())
    }

    /// `buffered()` for a caller that holds the lock.
    pub fn buffered_in(&self, out: &Outbox) -> u64 {
        (out.queued_total + out.deflate.as_ref().map_or(0, |d| d.pending_bytes)).saturating_sub(self.written_total.load(Ordering::Acquire))
    }
}

impl Outbox {
    /// The socket JS may write to directly, if any.
    pub fn fd(&self) -> Option<i32> {
        (self.fd.0 >= 0).then_some(self.fd.0)
    }

    pub fn set_fd(&mut self, fd: Option<i32>) {
        self.fd = Descriptor(fd.unwrap_or(-1));
    }

    /// Nothing from JS waits for the connection's task: no bytes, callbacks, compression,
    /// close, end, pause or termination (the connection's side is `Connection::parkable`).
    pub fn quiet(&self) -> bool {
        self.open
            && self.buf.is_empty()
            && self.acks.is_empty()
            && !self.queueing()
            && !self.task_busy
            && !self.close_queued
            && !self.terminate
            && !self.paused
            && !self.raw_end
    }

    /// Gives back the memory of the (empty) byte and acknowledgement queues: a parked
    /// connection keeps none (the next send allocates again).
    pub fn release_buffers(&mut self) {
        debug_assert!(self.buf.is_empty() && self.acks.is_empty());
        self.buf = Vec::new();
        self.acks = Acks::default();
    }

    /// True while frames must queue behind compression jobs.
    pub fn queueing(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.holds_frames())
    }

    /// Appends one frame; `mask` is the key when the frame is masked. Returns false when the
    /// frame was queued behind compression jobs (its acknowledgement goes with the job).
    pub fn frame(&mut self, opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> bool {
        let len = crate::protocol::frame::header_len(payload.len() as u64, mask.is_some()) + payload.len();
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

    /// Appends a frame already encoded (the broadcast cache); false when it must queue.
    fn encoded(&mut self, frame: &[u8]) -> bool {
        if self.queueing() {
            return false;
        }
        self.buf.extend_from_slice(frame);
        self.queued_total += frame.len() as u64;
        true
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
        }
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.queued_total += bytes.len() as u64;
    }

    /// A close frame with an optional code and reason.
    pub fn close_frame(&mut self, code: Option<u16>, reason: &[u8], mask: Option<[u8; 4]>) {
        let mut body = Vec::with_capacity(2 + reason.len());
        if let Some(c) = code {
            body.extend_from_slice(&c.to_be_bytes());
            body.extend_from_slice(reason);
        }
        self.frame(OP_CLOSE, true, &body, mask);
        self.close_queued = true;
    }
}

/// A fresh masking key for a client frame.
pub fn mask_key() -> [u8; 4] {
    rand::random()
}

/// Terminates every connection of an events sink (its Node environment is going away).
pub fn terminate_sink(sink: u32) {
    registry::release_sink(sink);
    let wake: Vec<Waker> = registry::lock()
        .values()
        .filter(|s| s.sink == sink)
        .filter_map(|s| {
            let mut out = s.lock();
            out.terminate = true;
            out.waker.take()
        })
        .collect();
    for w in wake {
        w.wake();
    }
}

/// Asks the open plain-TCP connections whose tasks did not run since the last call (and that
/// nothing waits for) to park, waking their tasks; the park thread calls it periodically.
pub fn ask_idle_to_park() {
    let all: Vec<Arc<Shared>> = registry::lock().values().cloned().collect();
    let mut wake = Vec::new();
    for shared in &all {
        let mut out = shared.lock();
        if std::mem::take(&mut out.polled) || out.parked || out.park_asked || out.fd().is_none() || !out.quiet() {
            continue;
        }
        out.park_asked = true;
        if let Some(w) = out.waker.take() {
            wake.push(w);
        }
    }
    for w in wake {
        w.wake();
    }
}

/// Writes the outbox's bytes to the socket from this (the JS) thread when the connection's
/// task is idle: a send then costs no thread wake-up (the task sleeps on), which is most of a
/// round trip's latency. Only plain TCP, only when no callback waits for the bytes, nothing
/// is compressing, no close is queued and the task is not writing itself. What is left in
/// `out.buf` is for the task.
fn write_direct(shared: &Shared, out: &mut Outbox) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let Some(fd) = out.fd() else { return };
    if out.task_busy || !out.acks.is_empty() || out.queueing() || out.close_queued || out.terminate || out.buf.is_empty() {
        return;
    }
    // SAFETY: `fd` is the socket of a live connection (on its task or parked): the connection
    // clears `out.fd` under this lock before its socket is closed (its `Owner` drops first),
    // and we hold the lock. ManuallyDrop: not ours to close.
    let sock = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    let mut done = 0;
    while done < out.buf.len() {
        match (&*sock).write(&out.buf[done..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    if done > 0 {
        shared.written_total.fetch_add(done as u64, Ordering::AcqRel);
        // The buffer keeps its capacity for the next sends (freeing and faulting in a large
        // one per message costs bulk transfers a quarter of their rate); it goes when the
        // connection parks (`release_buffers`).
        out.buf.drain(..done);
    }
}

/// Applies a batch of commands from JS. `external` holds the large payloads, in order.
/// Malformed input (it comes from our own JS) stops the batch; nothing panics.
pub fn apply_commands(cmds: &[u8], external: &[&[u8]]) {
    let mut wake: Vec<Waker> = Vec::new();
    // Connections whose frames may go out directly from this thread, after the batch.
    let mut direct: Vec<Arc<Shared>> = Vec::new();
    let mut ext = external.iter();
    // JS's RELEASEs, applied after the batch (they are the last commands for their ids).
    let mut released: Vec<u32> = Vec::new();
    let mut reg = registry::lock();
    let mut pos = 0;
    let mut last: Option<(u32, &Arc<Shared>)> = None;
    let mut prev: &[u8] = &[];
    // An unmasked frame encoded once for repeated sends of one payload (broadcast loops).
    let mut cache: Vec<u8> = Vec::new();
    let mut cache_key: Option<(u8, bool)> = None;
    while pos + 10 <= cmds.len() {
        let opc = cmds[pos];
        let flags = cmds[pos + 1];
        let id = u32::from_le_bytes([cmds[pos + 2], cmds[pos + 3], cmds[pos + 4], cmds[pos + 5]]);
        let len = u32::from_le_bytes([cmds[pos + 6], cmds[pos + 7], cmds[pos + 8], cmds[pos + 9]]) as usize;
        pos += 10;
        let repeat = flags & flag::REPEAT != 0;
        if !repeat {
            cache_key = None;
        }
        let payload: &[u8] = if repeat {
            prev
        } else if flags & flag::EXTERNAL != 0 {
            match ext.next() {
                Some(p) => p,
                None => break,
            }
        } else {
            if pos + len > cmds.len() {
                break;
            }
            let p = &cmds[pos..pos + len];
            pos += len;
            p
        };
        prev = payload;
        if opc == op::BRIDGE_IN || opc == op::BRIDGE_EOF {
            if let Some(inbox) = super::bridge::lookup(id) {
                if let Some(w) = inbox.push(payload, opc == op::BRIDGE_EOF) {
                    wake.push(w);
                }
            }
            continue;
        }
        if opc == op::RELEASE {
            released.push(id);
            continue;
        }
        let shared = match last {
            Some((lid, s)) if lid == id => s,
            _ => match reg.get(id) {
                Some(s) => {
                    last = Some((id, s));
                    s
                }
                None => continue,
            },
        };
        let mut out = shared.lock();
        let masked = if flags & flag::MASK_SET != 0 { flags & flag::MASK != 0 } else { shared.is_client };
        let mask = if masked { Some(mask_key()) } else { None };
        match opc {
            op::SEND | op::PING | op::PONG if out.open && !out.close_queued => {
                let ack = flags & flag::ACK != 0;
                let plain = match opc {
                    op::PING => Some((OP_PING, true)),
                    op::PONG => Some((OP_PONG, true)),
                    _ => {
                        let fin = flags & flag::FIN != 0;
                        let first = !out.fragmenting;
                        let opcode = if !first {
                            OP_CONTINUATION
                        } else if flags & flag::BINARY != 0 {
                            OP_BINARY
                        } else {
                            OP_TEXT
                        };
                        out.fragmenting = !fin;
                        match out.deflate.as_mut() {
                            Some(d) => {
                                if first {
                                    // ws decides on the first fragment, for the whole message.
                                    d.compressing = flags & flag::COMPRESS != 0 && d.threshold.is_none_or(|t| payload.len() as u64 >= t);
                                }
                                if d.compressing {
                                    // For the task to compress.
                                    d.pending_bytes += payload.len() as u64;
                                    let kind = JobKind::Compress { opcode, first, fin, data: payload.to_vec(), mask };
                                    d.jobs.push_back(Job { kind, ack });
                                    None
                                } else {
                                    Some((opcode, fin))
                                }
                            }
                            None => Some((opcode, fin)),
                        }
                    }
                };
                if let Some((opcode, fin)) = plain {
                    let cached = repeat && mask.is_none() && opc == op::SEND && {
                        if cache_key != Some((opcode, fin)) {
                            cache.clear();
                            encode_frame(&mut cache, opcode, fin, false, payload, None);
                            cache_key = Some((opcode, fin));
                        }
                        out.encoded(&cache)
                    };
                    if cached || out.frame(opcode, fin, payload, mask) {
                        if ack {
                            let end = out.queued_total;
                            out.acks.push(end);
                        }
                    } else if ack {
                        if let Some(j) = out.deflate.as_mut().and_then(|d| d.jobs.back_mut()) {
                            j.ack = true;
                        }
                    }
                }
            }
            op::CLOSE if out.open && !out.close_queued => {
                let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let reason = if payload.len() > 2 { &payload[2..] } else { &[][..] };
                out.close_frame(code, reason, mask);
            }
            op::TERMINATE => out.terminate = true,
            op::PAUSE => out.paused = true,
            op::RESUME => out.paused = false,
            op::RAW_WRITE if !out.open => out.raw(payload),
            op::RAW_END if !out.open => {
                out.raw(payload);
                out.raw_end = true;
            }
            _ => {}
        }
        let frames_only = matches!(opc, op::SEND | op::PING | op::PONG) && flags & flag::ACK == 0;
        if frames_only && out.fd().is_some() {
            if !direct.last().is_some_and(|d| Arc::ptr_eq(d, shared)) {
                direct.push(shared.clone());
            }
        } else if let Some(w) = out.waker.take() {
            wake.push(w);
        }
    }
    for id in released {
        reg.release(id);
    }
    drop(reg);
    for shared in direct {
        let mut out = shared.lock();
        write_direct(&shared, &mut out);
        if !out.buf.is_empty() || out.queueing() {
            if let Some(w) = out.waker.take() {
                wake.push(w);
            }
        }
    }
    for w in wake {
        w.wake();
    }
}
