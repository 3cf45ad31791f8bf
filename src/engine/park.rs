//! Parked connections. An open plain-TCP connection whose task had nothing to do for a while
//! gives up its task and its registration with tokio's reactor, 512 bytes together, and
//! waits here: its state in a table, its socket in one epoll set watched by a thread of its
//! own. The first thing the peer sends (or its end of the stream) brings the connection back
//! as a new task, and so does any command from JS that needs the task (JS's sends are written
//! to the socket directly and do not wake it).
//!
//! Idle means not polled for a whole `SWEEP` period: the thread sweeps the connections every
//! period (`ask_idle_to_park`), so a connection parks one to two periods after its
//! last activity, and a busy one pays nothing but a flag per poll (no timer). After a wave of
//! parking the sweep also has the C allocator return the memory those tasks freed.
//!
//! A Node environment may also serve parked connections on its own JS thread (`serve`): its
//! event loop watches a second epoll set (a `Served` lot), and what arrives there is read and
//! decoded on the JS thread, messages included, with no hand-off between threads. A
//! connection goes there once its reads bring whole messages and nothing else (see
//! `Connection::message_reads`): a request and its answer, a game's inputs, a stream of
//! messages of up to 64 KiB. Each wake of the JS thread then reads every ready socket once
//! and runs the listeners of what they brought, as ws and uWebSockets.js do, where the
//! engine's thread would read, copy the messages into a batch and wake the JS thread, which
//! copies the batch again. The connection goes back to its task as soon as a read holds
//! anything but whole unfragmented, uncompressed frames, ends inside a frame or fills the
//! read buffer.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use tokio::net::TcpStream;

use super::connection::{Connection, Idle, Transport};
use super::state::{Shared, HEARTBEAT_PING};
use super::events::{self, Sink};
use super::{registry, runtime};
use crate::protocol::frame::{unmask_simple, unmask_simple_prefix, OP_BINARY, OP_PING, OP_PONG, OP_TEXT};
use crate::protocol::receiver::Payload;

/// A parked connection: an idle one with its socket off tokio's reactor.
type Parked = Idle<std::net::TcpStream>;

/// Only plain TCP connections park (the sweep asks connections JS may write to directly).
impl Transport for TcpStream {
    fn park(conn: Connection<Self>) -> Result<(), Connection<Self>> {
        park(conn)
    }

    fn serve_on_js(conn: Connection<Self>) -> Result<(), Connection<Self>> {
        serve_on_js(conn)
    }
}

/// How often idle connections are asked to park.
const SWEEP: Duration = Duration::from_secs(1);

/// How long the thread lets a wave of pings and pongs gather before reading on.
const COALESCE: Duration = Duration::from_millis(1);

/// The parked connections and the epoll set their sockets are in.
struct Lot {
    registry: Registry,
    parked: Mutex<Table>,
    /// Served by a JS thread (see `serve`): messages are read here too, not only pings and
    /// pongs.
    served: bool,
}

/// A lot a Node environment's JS thread serves. Kept once made: a lot whose environment went
/// away serves the next one that asks.
struct Served {
    lot: Lot,
    poll: Mutex<Poll>,
}

static SERVED: Mutex<Vec<&'static Served>> = Mutex::new(Vec::new());

/// Whether any environment serves a lot (connections look before offering themselves).
static SERVING: AtomicBool = AtomicBool::new(false);

fn served_lots() -> MutexGuard<'static, Vec<&'static Served>> {
    SERVED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lot environment `sink` serves, if it serves one.
fn served_by(sink: u32) -> Option<&'static Served> {
    served_lots().iter().copied().find(|s| sink != 0 && lock(&s.lot).sink == sink)
}

/// Parked connections by slot of their id (see `engine::registry`: slots are dense).
#[derive(Default)]
struct Table {
    slots: Vec<Option<Box<Parked>>>,
    count: usize,
    /// A served lot's environment (its sink's id); 0 when no environment serves it, and then
    /// it takes no connection.
    sink: u32,
}

impl Table {
    fn insert(&mut self, parked: Box<Parked>) {
        let slot = registry::slot(parked.id());
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        if self.slots[slot].replace(parked).is_none() {
            self.count += 1;
        }
    }

    fn remove(&mut self, id: u32) -> Option<Box<Parked>> {
        if !self.contains(id) {
            return None;
        }
        self.count -= 1;
        self.slots[registry::slot(id)].take()
    }

    fn contains(&self, id: u32) -> bool {
        self.get(id).is_some()
    }

    fn get(&self, id: u32) -> Option<&Parked> {
        self.slots.get(registry::slot(id))?.as_deref().filter(|p| p.id() == id)
    }
}

/// The lot, made with its thread on first use; None if the system would not give either
/// (connections then stay on their tasks).
fn lot() -> Option<&'static Lot> {
    static LOT: OnceLock<Option<Lot>> = OnceLock::new();
    LOT.get_or_init(|| {
        let poll = Poll::new().ok()?;
        let registry = poll.registry().try_clone().ok()?;
        std::thread::Builder::new().name("ws-native-park".into()).stack_size(256 * 1024).spawn(move || watch(poll)).ok()?;
        Some(Lot { registry, parked: Mutex::new(Table::default()), served: false })
    })
    .as_ref()
}

fn lock(lot: &Lot) -> MutexGuard<'_, Table> {
    lot.parked.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lot's thread: a parked socket that becomes readable (data, end of stream, error)
/// brings its connection back; every `SWEEP`, idle connections are asked to park.
fn watch(mut poll: Poll) {
    let mut events = Events::with_capacity(1024);
    let mut next_sweep = Instant::now() + SWEEP;
    let mut trimmed_at = 0;
    loop {
        let now = Instant::now();
        if now >= next_sweep {
            ask_idle_to_park();
            next_sweep = now + SWEEP;
            trim_after_parking(&mut trimmed_at);
        }
        if poll.poll(&mut events, Some(next_sweep.saturating_duration_since(now))).is_err() {
            // EINTR; anything else would repeat at once: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let mut inline = false;
        let Some(lot) = lot() else { return };
        for e in events.iter() {
            let id = e.token().0 as u32;
            if take_input(lot, id) {
                inline = true;
            } else {
                unpark(id);
            }
        }
        // Pings and pongs come in waves (a heartbeat round, a `ping()` to every client): a
        // wave's frames are read a few hundred per wake rather than a few, which spares the
        // thread a sleep and a wake for each. What else comes in meanwhile waits as long.
        if inline {
            std::thread::sleep(COALESCE);
        }
    }
}

thread_local! {
    /// What `take_input` reads into: on the park thread and the JS threads that serve lots.
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Most bytes a served lot reads from one socket per wake: a burst of messages up to 64 KiB
/// each from a peer with four in flight. A read that fills it brings the connection back to
/// its task, which reads the rest (the epoll set is edge-triggered: what stays in the socket
/// would not wake the JS thread again).
const SERVED_READ: usize = 256 * 1024;

/// Reads what a parked socket received. When it is only pings and pongs (a heartbeat's, or
/// ws's pattern of `ping()` and 'pong'), or, in a served lot, whole messages, the connection
/// stays parked: an auto-pong is written from here and JS gets the events (but for the pongs
/// to the engine's own heartbeat). Anything else (or an answer the socket did not take, or
/// a read that ends inside a frame or fills the buffer) brings the connection back on a
/// task, which gets the bytes read that are not decoded here. The end of the stream, or an
/// error, is left for the task to read. True when the connection stays parked.
fn take_input(lot: &Lot, id: u32) -> bool {
    INPUT.with(|input| {
        let mut buf = input.borrow_mut();
        let size = if lot.served { SERVED_READ } else { 1024 };
        if buf.len() < size {
            buf.resize(size, 0);
        }
        take_input_into(lot, id, &mut buf[..size])
    })
}

fn take_input_into(lot: &Lot, id: u32, buf: &mut [u8]) -> bool {
    // Under the table's lock, which keeps the connection parked and so its socket open, and
    // orders these events before any its task would deliver once it is back.
    let mut table = lock(lot);
    let Some(parked) = table.get(id) else { return true };
    let n = match std::io::Read::read(&mut parked.io(), buf) {
        Ok(n) if n > 0 => n,
        Ok(_) | Err(_) => return false,
    };
    let shared = parked.shared().clone();
    let cfg = parked.cfg().clone();
    shared.read(n);
    let limits = &cfg.receiver;
    // A served lot takes the whole messages a read brought and leaves a frame the read cut
    // short to the task; the park thread takes reads of whole pings and pongs only.
    let found = if lot.served {
        unmask_simple_prefix(&mut buf[..n], !shared.is_client, true, limits.max_payload, limits.skip_utf8_validation)
    } else if n == buf.len() {
        None
    } else {
        unmask_simple(&mut buf[..n], !shared.is_client, false, limits.max_payload, limits.skip_utf8_validation).map(|f| (f, n))
    };
    let Some((frames, whole)) = found else {
        let Some(parked) = table.remove(id) else { return true };
        drop(table);
        resume(lot, *parked, &mut buf[..n]);
        return true;
    };
    let _entered = events::enter(&cfg.sink);
    events::with_batch(|b| {
        for f in &frames {
            let payload = &buf[f.payload.clone()];
            match f.opcode {
                OP_TEXT | OP_BINARY => b.message(id, f.opcode == OP_BINARY, Payload::Borrowed(payload), None),
                OP_PING => b.ping(id, payload),
                OP_PONG if payload != HEARTBEAT_PING => b.pong(id, payload),
                _ => {}
            }
        }
    });
    // A read that filled the buffer may have left bytes in the socket: the task reads them.
    let back = if whole < n || n == buf.len() { table.remove(id) } else { None };
    drop(table);
    let mut task_needed = false;
    if cfg.auto_pong {
        for f in frames.iter().filter(|f| f.opcode == OP_PING) {
            task_needed |= !shared.pong_directly(&buf[f.payload.clone()]);
        }
    }
    if let Some(parked) = back {
        resume(lot, *parked, &mut buf[whole..n]);
        return true;
    }
    !task_needed
}

/// Parked connections' memory goes back to the system: their tasks' buffers were freed into
/// the C allocator, which keeps free memory below the top of its heaps resident. Once at
/// least `TRIM_AFTER` more connections are parked than at the last trim, the allocator is
/// asked to give back its free pages (glibc's malloc_trim, all of its arenas).
fn trim_after_parking(trimmed_at: &mut usize) {
    const TRIM_AFTER: usize = 1000;
    let parked = count();
    if parked < *trimmed_at {
        *trimmed_at = parked;
    } else if parked - *trimmed_at >= TRIM_AFTER {
        *trimmed_at = parked;
        // SAFETY: malloc_trim only gives free pages of the allocator's own heaps back to the
        // system (it takes each arena's lock: 0.3 ms here with 10,000 connections just parked).
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Lets JS write a plain TCP connection's frames to `stream` directly (see
/// `engine::commands`), which makes it one that parks when idle: the sweeps start with the
/// first. The connection's `Owner` withdraws the socket before it closes.
pub fn allow_direct_writes(shared: &Shared, stream: &TcpStream) {
    shared.lock().set_fd(super::net::fd_of(stream), true);
    let _ = lot();
}

/// Asks the open plain-TCP connections whose tasks did not run since the last call (and that
/// nothing waits for) to park, waking their tasks; the park thread calls it every `SWEEP`.
fn ask_idle_to_park() {
    let all: Vec<std::sync::Arc<Shared>> = registry::lock().values().cloned().collect();
    let wake: Vec<Waker> = all.iter().filter_map(|s| s.lock().ask_to_park()).collect();
    for w in wake {
        w.wake();
    }
}

/// Takes an idle connection off its task. Gives it back if JS queued something meanwhile
/// (its command woke the task, which goes on).
// The connection goes back to its task by value: it is the task's state, moved, not copied
// into a box.
#[allow(clippy::result_large_err)]
pub fn park(conn: Connection<TcpStream>) -> Result<(), Connection<TcpStream>> {
    let Some(lot) = lot() else { return Err(conn) };
    park_in(lot, conn)
}

/// Parks a connection in the lot its environment's JS thread serves (Err if it serves none,
/// or if JS queued something meanwhile).
#[allow(clippy::result_large_err)]
pub fn serve_on_js(conn: Connection<TcpStream>) -> Result<(), Connection<TcpStream>> {
    match served_by(conn.cfg().sink.id) {
        Some(s) => park_in(&s.lot, conn),
        None => Err(conn),
    }
}

/// Whether some environment serves a lot.
fn serving() -> bool {
    SERVING.load(Ordering::Relaxed)
}

#[allow(clippy::result_large_err)]
fn park_in(lot: &'static Lot, conn: Connection<TcpStream>) -> Result<(), Connection<TcpStream>> {
    let id = conn.id();
    let shared = conn.shared().clone();
    // Under the outbox lock: a command from JS either came before (and the connection stays
    // on its task) or comes after and finds the waker that brings the connection back.
    let mut out = shared.lock();
    if !out.quiet() {
        return Err(conn);
    }
    let parked = match conn.into_idle().convert(TcpStream::into_std) {
        Ok(p) => p,
        Err(lost) => {
            drop(out);
            lost.lost();
            return Ok(());
        }
    };
    let fd = parked.io().as_raw_fd();
    out.park(unpark_waker(id));
    {
        let mut table = lock(lot);
        let stopped = lot.served && table.sink != parked.cfg().sink.id;
        table.insert(Box::new(parked));
        if stopped {
            // Its environment stopped serving the lot meanwhile: back to a task at once.
            drop(table);
            drop(out);
            unpark_in(lot, id);
            return Ok(());
        }
    }
    // Registered last: an event for the socket finds the connection in the table.
    if lot.registry.register(&mut SourceFd(&fd), Token(id as usize), Interest::READABLE).is_err() {
        drop(out);
        unpark(id);
    }
    Ok(())
}

/// Brings a parked connection back on a task of its own (no-op if it is not parked).
pub fn unpark(id: u32) {
    if let Some(lot) = lot() {
        if unpark_in(lot, id) {
            return;
        }
    }
    if serving() {
        let lots = served_lots().clone();
        for s in lots {
            if unpark_in(&s.lot, id) {
                return;
            }
        }
    }
}

fn unpark_in(lot: &Lot, id: u32) -> bool {
    let Some(parked) = lock(lot).remove(id) else { return false };
    resume(lot, *parked, &mut []);
    true
}

/// The lot an environment's JS thread serves, as `serve` gives it to that thread.
#[derive(Clone, Copy)]
pub struct ServedLot(&'static Served);

/// Environment `sink`'s JS thread serves a lot from now on; its thread's event loop watches
/// the lot's epoll set (`ServedLot::fd`) and calls `ServedLot::ready` when it is readable.
pub fn serve(sink: &Sink) -> Option<ServedLot> {
    let mut all = SERVED.lock().unwrap_or_else(|p| p.into_inner());
    let s = match all.iter().find(|s| lock(&s.lot).sink == 0) {
        Some(s) => *s,
        None => {
            let poll = Poll::new().ok()?;
            let registry = poll.registry().try_clone().ok()?;
            let lot = Lot { registry, parked: Mutex::new(Table::default()), served: true };
            let s: &'static Served = Box::leak(Box::new(Served { lot, poll: Mutex::new(poll) }));
            all.push(s);
            s
        }
    };
    lock(&s.lot).sink = sink.id;
    SERVING.store(true, Ordering::Relaxed);
    sink.set_served(true);
    Some(ServedLot(s))
}

impl ServedLot {
    /// The lot's epoll descriptor.
    pub fn fd(self) -> RawFd {
        self.0.poll.lock().unwrap_or_else(|p| p.into_inner()).as_raw_fd()
    }

    /// On the serving environment's JS thread, when the lot's epoll set is readable: reads
    /// what its sockets received. Returns the connection read if there was just one.
    pub fn ready(self) -> Option<u32> {
        serve_ready(self.0)
    }

    /// Environment `sink` no longer serves the lot (it is going away): its connections go
    /// back to tasks, and the lot is free for another environment.
    pub fn stop(self, sink: &Sink) {
        sink.set_served(false);
        let s = self.0;
        let parked: Vec<Box<Parked>> = {
            let mut table = lock(&s.lot);
            table.sink = 0;
            table.count = 0;
            table.slots.iter_mut().filter_map(Option::take).collect()
        };
        for p in parked {
            resume(&s.lot, *p, &mut []);
        }
    }
}

fn serve_ready(s: &Served) -> Option<u32> {
    const CAPACITY: usize = 256;
    thread_local! {
        static EVENTS: RefCell<Option<Events>> = const { RefCell::new(None) };
    }
    let mut only = None;
    let mut count = 0;
    EVENTS.with(|e| {
        let mut e = e.borrow_mut();
        let events = e.get_or_insert_with(|| Events::with_capacity(CAPACITY));
        // Only this environment's thread polls its lot: the lock is never contended.
        let mut poll = s.poll.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if poll.poll(events, Some(Duration::ZERO)).is_err() {
                return;
            }
            let mut ready = 0;
            for e in events.iter() {
                ready += 1;
                count += 1;
                let id = e.token().0 as u32;
                only = Some(id);
                if !take_input(&s.lot, id) {
                    unpark_in(&s.lot, id);
                }
            }
            if ready < CAPACITY {
                return;
            }
        }
    });
    only.filter(|_| count == 1)
}

/// Puts a connection taken off the table back on a task, with the bytes already read from its
/// socket (decoded first: their events come before anything the task reads).
fn resume(lot: &Lot, parked: Parked, input: &mut [u8]) {
    let _ = lot.registry.deregister(&mut SourceFd(&parked.io().as_raw_fd()));
    // The engine stopped (Node is exiting): nothing to come back to.
    let Some(handle) = runtime::current_for(parked.cfg().pool()) else { return };
    // Back on tokio's reactor, which needs the runtime's context.
    let _guard = handle.enter();
    match parked.convert(TcpStream::from_std) {
        Ok(idle) => {
            let mut conn = idle.resume();
            if !input.is_empty() {
                let sink = conn.cfg().sink.clone();
                let _entered = events::enter(&sink);
                conn.input(input);
            }
            handle.spawn(conn.run());
        }
        Err(lost) => lost.lost(),
    }
}

/// How many connections are parked (for tests and diagnostics).
pub fn count() -> usize {
    lot().map_or(0, |l| lock(l).count) + served_lots().iter().map(|s| lock(&s.lot).count).sum::<usize>()
}

/// Whether connection `id` is in a lot a JS thread serves (for tests).
pub fn is_served(id: u32) -> bool {
    served_lots().iter().any(|s| lock(&s.lot).contains(id))
}

/// Whether connection `id` is parked (for tests).
pub fn is_parked(id: u32) -> bool {
    lot().is_some_and(|l| lock(l).contains(id)) || served_lots().iter().any(|s| lock(&s.lot).contains(id))
}

/// A waker that unparks connection `id`: what a parked connection's outbox holds, so that
/// the commands that would wake its task bring it back. It owns nothing (the id is the data).
fn unpark_waker(id: u32) -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);
    fn clone(data: *const ()) -> RawWaker {
        RawWaker::new(data, &VTABLE)
    }
    fn wake(data: *const ()) {
        unpark(data as usize as u32);
    }
    fn drop(_: *const ()) {}
    // SAFETY: the vtable's functions only read the id from the data pointer, which is never
    // dereferenced; nothing is owned, so cloning and dropping are free.
    unsafe { Waker::from_raw(RawWaker::new(id as usize as *const (), &VTABLE)) }
}
