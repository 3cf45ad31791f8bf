//! One tokio runtime per process, started on first use and shut down without blocking when
//! Node exits. Its threads never keep Node alive: JS is reached only by weak threadsafe calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Runtime>> {
    RUNTIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Worker threads: `WS_NATIVE_THREADS`, else 1. Node's own thread runs the JS side, so one
/// I/O thread keeps both busy on small machines.
fn worker_threads() -> usize {
    std::env::var("WS_NATIVE_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(1)
}

/// The runtime's handle, starting the runtime if needed.
pub fn handle() -> std::io::Result<Handle> {
    let mut rt = lock();
    if let Some(r) = rt.as_ref() {
        return Ok(r.handle().clone());
    }
    let r = Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .thread_name("ws-native")
        .enable_all()
        .build()?;
    let h = r.handle().clone();
    *rt = Some(r);
    Ok(h)
}

/// The runtime's handle while it runs (never starts it: for work that only makes sense on
/// a running engine).
pub fn current() -> Option<Handle> {
    lock().as_ref().map(|r| r.handle().clone())
}

/// Node environments (main thread, Workers) using the engine.
static USERS: AtomicUsize = AtomicUsize::new(0);

/// An environment starts using the engine.
pub fn acquire() {
    USERS.fetch_add(1, Ordering::AcqRel);
}

/// An environment is going away; the last one stops the runtime.
pub fn release() {
    if USERS.fetch_sub(1, Ordering::AcqRel) == 1 {
        shutdown();
    }
}

/// Stops the runtime without waiting for its tasks (joining could deadlock against a JS
/// thread that is itself shutting down).
pub fn shutdown() {
    if let Some(r) = lock().take() {
        r.shutdown_background();
    }
}
