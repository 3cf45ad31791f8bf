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

use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use tokio::net::TcpStream;

use super::connection::{Connection, Idle, Transport};
use super::state::{Shared, HEARTBEAT_PING};
use super::{events, registry, runtime};
use crate::protocol::frame::{only_pings_and_pongs, OP_PING};

/// A parked connection: an idle one with its socket off tokio's reactor.
type Parked = Idle<std::net::TcpStream>;

/// Only plain TCP connections park (the sweep asks connections JS may write to directly).
impl Transport for TcpStream {
    fn park(conn: Connection<Self>) -> Result<(), Connection<Self>> {
        park(conn)
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
}

/// Parked connections by slot of their id (see `engine::registry`: slots are dense).
#[derive(Default)]
struct Table {
    slots: Vec<Option<Box<Parked>>>,
    count: usize,
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
        Some(Lot { registry, parked: Mutex::new(Table::default()) })
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
        for e in events.iter() {
            let id = e.token().0 as u32;
            if take_input(id) {
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

/// Reads what a parked socket received. When it is only pings and pongs (a heartbeat's, or
/// ws's pattern of `ping()` and 'pong'), the connection stays parked: an auto-pong is written
/// from here and JS gets the 'ping' and 'pong' events (but for the pongs to the engine's own
/// heartbeat). Anything else (or an answer the socket did not take) brings the connection
/// back on a task, which gets the bytes read. The end of the stream, or an error, is left
/// for the task to read. True when the connection stays parked.
fn take_input(id: u32) -> bool {
    let Some(lot) = lot() else { return false };
    let mut buf = [0u8; 1024];
    // Under the table's lock, which keeps the connection parked and so its socket open.
    let (shared, cfg, frames) = {
        let mut table = lock(lot);
        let Some(parked) = table.get(id) else { return true };
        let n = match std::io::Read::read(&mut parked.io(), &mut buf) {
            Ok(n) if n > 0 => n,
            Ok(_) | Err(_) => return false,
        };
        let shared = parked.shared().clone();
        shared.read(n);
        match only_pings_and_pongs(&buf[..n], !shared.is_client) {
            Some(frames) => (shared, parked.cfg().clone(), frames),
            None => {
                let Some(parked) = table.remove(id) else { return true };
                drop(table);
                resume(lot, *parked, &mut buf[..n]);
                return true;
            }
        }
    };
    let mut task_needed = false;
    let _entered = events::enter(&cfg.sink);
    for (opcode, payload) in frames {
        if opcode == OP_PING && cfg.auto_pong {
            task_needed |= !shared.pong_directly(&payload);
        }
        if opcode == OP_PING {
            events::with_batch(|b| b.ping(id, &payload));
        } else if payload != HEARTBEAT_PING {
            events::with_batch(|b| b.pong(id, &payload));
        }
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
    lock(lot).insert(Box::new(parked));
    // Registered last: an event for the socket finds the connection in the table.
    if lot.registry.register(&mut SourceFd(&fd), Token(id as usize), Interest::READABLE).is_err() {
        drop(out);
        unpark(id);
    }
    Ok(())
}

/// Brings a parked connection back on a task of its own (no-op if it is not parked).
pub fn unpark(id: u32) {
    let Some(lot) = lot() else { return };
    let Some(parked) = lock(lot).remove(id) else { return };
    resume(lot, *parked, &mut []);
}

/// Puts a connection taken off the table back on a task, with the bytes already read from its
/// socket (decoded first: their events come before anything the task reads).
fn resume(lot: &Lot, parked: Parked, input: &mut [u8]) {
    let _ = lot.registry.deregister(&mut SourceFd(&parked.io().as_raw_fd()));
    // The engine stopped (Node is exiting): nothing to come back to.
    let Some(handle) = runtime::current() else { return };
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
    lot().map_or(0, |l| lock(l).count)
}

/// Whether connection `id` is parked (for tests).
pub fn is_parked(id: u32) -> bool {
    lot().is_some_and(|l| lock(l).contains(id))
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
