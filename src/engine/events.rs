//! Engine -> JS events, batched. Connection tasks append records to one shared buffer; at most
//! one threadsafe call is in flight, and the JS thread takes everything appended until then.
//! JS splits the buffer with `subarray` (see lib/native.js for the reader).
//!
//! There is one such sink per Node environment that loaded the addon (the main thread and each
//! Worker): a connection delivers to the sink of the environment that made it. Its task enters
//! that sink while it runs (`enter`), so code below it appends with `with_batch` unchanged.
//!
//! Record: `[kind u8][flags u8][id u32 LE][len u32 LE][payload; len]`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;

pub const HEADER_LEN: usize = 10;

/// Record kinds. Keep in sync with `lib/native.js`.
pub mod kind {
    /// Client handshake done: fields protocol, extensions, response head lines.
    pub const OPEN: u8 = 1;
    pub const TEXT: u8 = 2;
    pub const BINARY: u8 = 3;
    pub const PING: u8 = 4;
    pub const PONG: u8 = 5;
    /// The peer's close frame arrived: `[code u16 BE][reason]`.
    pub const CLOSE_FRAME: u8 = 6;
    /// The connection ended: `[code u16 BE][reason]`. Last record for an id.
    pub const CLOSED: u8 = 7;
    /// A protocol error: fields kind, code, message, close code.
    pub const ERROR: u8 = 8;
    /// Sends up to sequence number `[seq u32 LE]` were written to the socket.
    pub const WRITTEN: u8 = 9;
    /// Server: an upgrade request awaits JS's decision (fields, see engine::server).
    pub const UPGRADE: u8 = 10;
    /// Client: the handshake failed (fields, see engine::client). Last record for an id.
    pub const HANDSHAKE_FAILED: u8 = 11;
    /// Before a fragmented binary message: each fragment's end offset (`u32 LE` each).
    pub const FRAGMENTS: u8 = 12;
    /// Bridged connection: bytes for Node to write to its socket.
    pub const BRIDGE_OUT: u8 = 13;
    /// Bridged connection: Node should end its socket.
    pub const BRIDGE_END: u8 = 14;
}

/// The payload is not in the batch: JS takes it with `takeExternal()`, in order.
pub const FLAG_EXTERNAL: u8 = 1;

/// Payloads at least this large travel as their own buffer instead of being copied.
pub const EXTERNAL_MIN: usize = 64 * 1024;

#[derive(Default)]
pub struct EventBatch {
    pub buf: Vec<u8>,
    pub external: Vec<Vec<u8>>,
    /// Size of the last batch taken: a new batch starts with about that much room, so that
    /// busy connections do not pay for repeated growth (and its copies).
    last_len: usize,
    /// Counts batches taken by JS; a connection's delivered bytes are counted per epoch.
    pub epoch: u64,
    /// Connections that delivered `READ_AHEAD` bytes into this batch and stopped reading
    /// until JS takes it.
    pub waiting: Vec<Waker>,
    /// A buffer JS copied out of, emptied, for the next batch.
    spare: Vec<u8>,
}

/// Most message bytes one connection puts into a batch JS has not taken yet. Past it the
/// connection stops reading until JS takes the batch: a busy or paused JS consumer then holds
/// the peer back through TCP, instead of the engine reading ahead without bound.
pub const READ_AHEAD: usize = 1024 * 1024;

const MIN_BATCH: usize = 16 * 1024;
const MAX_BATCH_RESERVE: usize = 4 * 1024 * 1024;

impl EventBatch {
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

    pub fn push(&mut self, kind: u8, id: u32, payload: &[u8]) {
        self.header(kind, 0, id, payload.len());
        self.buf.extend_from_slice(payload);
    }

    /// A payload made of a big-endian u16 and bytes (close codes and reasons).
    pub fn push_code(&mut self, kind: u8, id: u32, code: u16, rest: &[u8]) {
        self.header(kind, 0, id, 2 + rest.len());
        self.buf.extend_from_slice(&code.to_be_bytes());
        self.buf.extend_from_slice(rest);
    }

    /// A payload of length-prefixed fields (`[len u32 LE][bytes]` each).
    pub fn push_fields(&mut self, kind: u8, id: u32, fields: &[&[u8]]) {
        let len: usize = fields.iter().map(|f| 4 + f.len()).sum();
        self.header(kind, 0, id, len);
        for f in fields {
            self.buf.extend_from_slice(&(f.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(f);
        }
    }

    /// A message payload the engine already owns: large ones move without a copy.
    pub fn push_owned(&mut self, kind: u8, id: u32, data: Vec<u8>) {
        if data.len() >= EXTERNAL_MIN {
            self.header(kind, FLAG_EXTERNAL, id, data.len());
            self.external.push(data);
        } else {
            self.push(kind, id, &data);
        }
    }
}

/// Delivers a taken batch to JS; set by the binding once the JS callback is registered.
pub type Deliver = Box<dyn Fn() + Send + Sync>;

/// The events of one Node environment.
pub struct Sink {
    /// Tells the environment's connections apart (`Shared::sink`).
    pub id: u32,
    batch: Mutex<EventBatch>,
    scheduled: AtomicBool,
    deliver: Mutex<Option<Deliver>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sink({})", self.id)
    }
}

impl Sink {
    pub fn new() -> Arc<Sink> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        Arc::new(Sink {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            batch: Mutex::new(EventBatch::default()),
            scheduled: AtomicBool::new(false),
            deliver: Mutex::new(None),
        })
    }

    /// Installs the function that schedules one call into JS (None: events are dropped, as
    /// when the environment is gone).
    pub fn set_deliver(&self, d: Option<Deliver>) {
        *lock(&self.deliver) = d;
        self.scheduled.store(false, Ordering::SeqCst);
    }
}

/// Where events go when no sink was entered (nothing of the engine appends outside a
/// connection's task or an explicit sink; this only keeps such a slip harmless).
fn fallback() -> &'static Arc<Sink> {
    static F: OnceLock<Arc<Sink>> = OnceLock::new();
    F.get_or_init(Sink::new)
}

thread_local! {
    static CURRENT: Cell<*const Sink> = const { Cell::new(std::ptr::null()) };
}

/// While alive, `with_batch` on this thread appends to the entered sink.
pub struct Entered<'a> {
    prev: *const Sink,
    _sink: std::marker::PhantomData<&'a Sink>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}

/// Makes `sink` the current one on this thread until the guard drops.
pub fn enter(sink: &Sink) -> Entered<'_> {
    let prev = CURRENT.with(|c| c.replace(sink as *const Sink));
    Entered { prev, _sink: std::marker::PhantomData }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends records under one lock, then schedules a delivery unless one is already pending.
pub fn with_batch<R>(f: impl FnOnce(&mut EventBatch) -> R) -> R {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: a non-null pointer was set by `enter`, whose guard borrows the sink and puts
    // the previous pointer back when dropped, so the sink outlives every use made here.
    let s: &Sink = if p.is_null() { fallback() } else { unsafe { &*p } };
    let (r, schedule) = {
        let mut b = lock(&s.batch);
        let before = b.buf.len();
        let r = f(&mut b);
        let appended = b.buf.len() != before;
        (r, appended && !s.scheduled.swap(true, Ordering::AcqRel))
    };
    if schedule {
        if let Some(d) = lock(&s.deliver).as_ref() {
            d();
        }
    }
    r
}

/// On the JS thread: takes everything appended so far. The external payloads are queued for
/// `take_external`, in record order.
pub fn take_batch(s: &Sink, external_out: &mut VecDeque<Vec<u8>>) -> Vec<u8> {
    let (buf, waiting) = {
        let mut b = lock(&s.batch);
        s.scheduled.store(false, Ordering::Release);
        external_out.extend(b.external.drain(..));
        b.last_len = b.buf.len();
        b.epoch += 1;
        (std::mem::take(&mut b.buf), std::mem::take(&mut b.waiting))
    };
    for w in waiting {
        w.wake();
    }
    buf
}

/// Largest buffer kept for reuse once JS has copied a batch out of it.
const SPARE_MAX: usize = 1024 * 1024;

/// Gives back a batch's buffer once JS has copied it, to carry the next batch.
pub fn recycle(s: &Sink, mut buf: Vec<u8>) {
    if buf.capacity() > SPARE_MAX {
        return;
    }
    buf.clear();
    let mut b = lock(&s.batch);
    if b.spare.capacity() < buf.capacity() {
        b.spare = buf;
    }
}
