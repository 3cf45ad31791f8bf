//! Engine -> JS events, batched. Connection tasks append records to one shared buffer; at most
//! one threadsafe call is in flight, and the JS thread takes everything appended until then.
//! JS splits the buffer with `subarray` (see lib/native.js for the reader).
//!
//! There is one such sink per Node environment that loaded the addon (the main thread and each
//! Worker): a connection delivers to the sink of the environment that made it. Its task enters
//! that sink while it runs (`enter`), so code below it appends with `with_batch` unchanged.
//!
//! The records themselves are encoded by `engine::wire`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;

use super::wire::Records;

/// The records waiting for JS, and what the connections that fill them need to know.
#[derive(Default)]
pub struct EventBatch {
    pub records: Records,
    /// Counts batches taken by JS; a connection's delivered bytes are counted per epoch.
    pub epoch: u64,
    /// Connections that delivered `READ_AHEAD` bytes into this batch and stopped reading
    /// until JS takes it.
    pub waiting: Vec<Waker>,
}

impl std::ops::Deref for EventBatch {
    type Target = Records;
    fn deref(&self) -> &Records {
        &self.records
    }
}

impl std::ops::DerefMut for EventBatch {
    fn deref_mut(&mut self) -> &mut Records {
        &mut self.records
    }
}

/// Most message bytes one connection puts into a batch JS has not taken yet. Past it the
/// connection stops reading until JS takes the batch: a busy or paused JS consumer then holds
/// the peer back through TCP, instead of the engine reading ahead without bound.
pub const READ_AHEAD: usize = 1024 * 1024;

/// Delivers a taken batch to JS; set by the binding once the JS callback is registered.
pub type Deliver = Box<dyn Fn() + Send + Sync>;

/// The events of one Node environment.
pub struct Sink {
    /// Tells the environment's connections apart (`Shared::sink`).
    pub id: u32,
    batch: Mutex<EventBatch>,
    scheduled: AtomicBool,
    deliver: Mutex<Option<Deliver>>,
    /// The environment's JS thread serves a lot of connections (see `engine::park`).
    served: AtomicBool,
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
            served: AtomicBool::new(false),
        })
    }

    /// Installs the function that schedules one call into JS (None: events are dropped, as
    /// when the environment is gone).
    pub fn set_deliver(&self, d: Option<Deliver>) {
        *lock(&self.deliver) = d;
        self.scheduled.store(false, Ordering::SeqCst);
    }

    /// Whether the environment's JS thread serves connections' reads (`engine::park::serve`).
    pub fn served(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }

    pub fn set_served(&self, on: bool) {
        self.served.store(on, Ordering::Relaxed);
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
    /// Set while the JS thread reads for its own environment (see `held`).
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` without scheduling deliveries for what it appends: the caller is the JS thread,
/// which takes the batch itself right after (`has_records`, `take_batch`) instead of waking
/// itself through the threadsafe call.
pub fn held<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            HELD.with(|h| h.set(self.0));
        }
    }
    let _reset = Reset(HELD.with(|h| h.replace(true)));
    f()
}

/// Whether `s` holds records JS has not taken.
pub fn has_records(s: &Sink) -> bool {
    !lock(&s.batch).records.is_empty()
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
        let before = b.records.len();
        let r = f(&mut b);
        let appended = b.records.len() != before;
        (r, appended && !HELD.with(|h| h.get()) && !s.scheduled.swap(true, Ordering::AcqRel))
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
        let (buf, external) = b.records.take();
        external_out.extend(external);
        b.epoch += 1;
        (buf, std::mem::take(&mut b.waiting))
    };
    for w in waiting {
        w.wake();
    }
    buf
}

/// Gives back a batch's buffer once JS has copied it, to carry the next batch.
pub fn recycle(s: &Sink, buf: Vec<u8>) {
    lock(&s.batch).records.recycle(buf);
}
