//! The engine's tokio runtimes, started on first use and shut down without blocking when
//! Node exits. Their threads never keep Node alive: JS is reached only by weak threadsafe
//! calls.
//!
//! Two pools: `Io` serves every connection that does not compress, with one thread by
//! default (Node's own thread runs the JS side, and one I/O thread keeps both busy on small
//! machines: a second costs plain traffic cross-thread wake-ups). `Compressing` serves the
//! servers that accept permessage-deflate: their messages cost tens of microseconds of zlib
//! work each, so they get two threads when the machine has two cores or more.
//! `WS_NATIVE_THREADS` (read when the first runtime starts) sets the threads of one runtime
//! that serves both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tokio::runtime::{Builder, Handle, Runtime};

/// Which runtime a server's connections run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Io,
    Compressing,
}

static IO: Mutex<Option<Runtime>> = Mutex::new(None);
static COMPRESSING: Mutex<Option<Runtime>> = Mutex::new(None);

fn lock(m: &'static Mutex<Option<Runtime>>) -> MutexGuard<'static, Option<Runtime>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `WS_NATIVE_THREADS`, if set to a positive number.
fn threads_env() -> Option<usize> {
    std::env::var("WS_NATIVE_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0)
}

/// Threads of the compressing pool's own runtime; None: the I/O runtime serves it (one
/// core, or `WS_NATIVE_THREADS` set). Decided once: servers ask for every socket they adopt.
fn compressing_threads() -> Option<usize> {
    static THREADS: OnceLock<Option<usize>> = OnceLock::new();
    *THREADS.get_or_init(|| {
        if threads_env().is_some() {
            return None;
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        (cores >= 2).then_some(2)
    })
}

/// The runtime in `slot`, started with `threads()` workers if it is not running.
fn start(slot: &'static Mutex<Option<Runtime>>, threads: impl FnOnce() -> usize) -> std::io::Result<Handle> {
    let mut rt = lock(slot);
    if let Some(r) = rt.as_ref() {
        return Ok(r.handle().clone());
    }
    let r = Builder::new_multi_thread().worker_threads(threads()).thread_name("ws-native").enable_all().build()?;
    let h = r.handle().clone();
    *rt = Some(r);
    Ok(h)
}

/// The I/O runtime's handle, starting it if needed.
pub fn handle() -> std::io::Result<Handle> {
    start(&IO, || threads_env().unwrap_or(1))
}

/// The handle of `pool`'s runtime, starting it if needed. The I/O runtime is always started
/// too: the engine's process-wide tasks (heartbeat sweeps, topics) run on it.
pub fn handle_for(pool: Pool) -> std::io::Result<Handle> {
    let io = handle()?;
    match (pool, compressing_threads()) {
        (Pool::Compressing, Some(n)) => start(&COMPRESSING, || n),
        _ => Ok(io),
    }
}

/// The I/O runtime's handle while it runs (never starts it: for work that only makes sense
/// on a running engine).
pub fn current() -> Option<Handle> {
    lock(&IO).as_ref().map(|r| r.handle().clone())
}

/// `pool`'s runtime while it runs (the I/O runtime when the pool has none of its own).
pub fn current_for(pool: Pool) -> Option<Handle> {
    if pool == Pool::Compressing {
        if let Some(h) = lock(&COMPRESSING).as_ref().map(|r| r.handle().clone()) {
            return Some(h);
        }
    }
    current()
}

/// Node environments (main thread, Workers) using the engine.
static USERS: AtomicUsize = AtomicUsize::new(0);

/// An environment starts using the engine.
pub fn acquire() {
    USERS.fetch_add(1, Ordering::AcqRel);
}

/// An environment is going away; the last one stops the runtimes.
pub fn release() {
    if USERS.fetch_sub(1, Ordering::AcqRel) == 1 {
        shutdown();
    }
}

/// Stops the runtimes without waiting for their tasks (joining could deadlock against a JS
/// thread that is itself shutting down).
pub fn shutdown() {
    for slot in [&COMPRESSING, &IO] {
        if let Some(r) = lock(slot).take() {
            r.shutdown_background();
        }
    }
}
