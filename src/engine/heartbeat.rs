//! The built-in heartbeat (`heartbeat: { interval, timeout }`): a connection whose peer has
//! been silent for `interval` is pinged, and terminated if it is still silent `timeout` after
//! the ping. No JS timer and no JS call per ping or pong: the pings carry `HEARTBEAT_PING`,
//! and the pongs that answer them are not reported to JS.
//!
//! One sweep for all connections, not a timer each: a task on the engine's runtime wakes every
//! `period` (a sixteenth of the shortest interval or timeout in use, between 10 ms and 1 s) and
//! looks at each watched connection's count of bytes read, which its task keeps anyway
//! (`Shared::read_total`): a connection whose count moved has been heard from. A sweep costs
//! one atomic load per connection (and a ping where one is due: written from the sweep's
//! thread when the socket takes it, so a parked connection stays parked; its peer's pong is
//! read by the park thread, see `engine::park`). A watch takes 40 bytes; timing is exact to
//! within a period. The short period spreads the pings: connections are pinged in the
//! sixteenth of the interval in which they were last heard from, so connections that came
//! over a few seconds are pinged in sixteen small waves per interval rather than in one,
//! which would hold both the CPU and the peers' answers up for the time of the whole wave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::config::Heartbeat;
use super::runtime;
use super::state::Shared;

const MIN_PERIOD: Duration = Duration::from_millis(10);
const MAX_PERIOD: Duration = Duration::from_secs(1);
/// Sweeps per interval (or timeout, if shorter).
const PERIODS: u32 = 16;

/// One watched connection. Times are milliseconds since the sweeps started.
struct Watch {
    shared: Arc<Shared>,
    /// Its bytes read at the last sweep that saw them change.
    seen: u64,
    /// When those bytes were seen to change (or the watch began).
    heard: u32,
    /// When the ping went out; 0: none pending.
    pinged: u32,
    interval: u32,
    timeout: u32,
}

struct Sweeper {
    watches: Mutex<Vec<Watch>>,
    started: Instant,
    /// The sweep period in milliseconds (it only shrinks).
    period_ms: AtomicU64,
}

fn sweeper() -> &'static Sweeper {
    static S: OnceLock<Sweeper> = OnceLock::new();
    S.get_or_init(|| Sweeper { watches: Mutex::new(Vec::new()), started: Instant::now(), period_ms: AtomicU64::new(MAX_PERIOD.as_millis() as u64) })
}

fn lock(s: &Sweeper) -> MutexGuard<'_, Vec<Watch>> {
    s.watches.lock().unwrap_or_else(|p| p.into_inner())
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// Watches a connection with the heartbeat `hb` (from now, as if just heard from).
pub fn watch(shared: Arc<Shared>, hb: Heartbeat) {
    let s = sweeper();
    let period = (hb.interval.min(hb.timeout) / PERIODS).clamp(MIN_PERIOD, MAX_PERIOD).as_millis() as u64;
    let before = s.period_ms.fetch_min(period, Ordering::AcqRel);
    let now = now_ms(s);
    let seen = shared.read_total();
    lock(s).push(Watch { shared, seen, heard: now, pinged: 0, interval: millis(hb.interval), timeout: millis(hb.timeout) });
    if RUNNING.load(Ordering::Acquire) == 0 || period < before {
        start();
    }
}

/// The generation of the sweep loop that runs (0: none, as before the first watch or once
/// the runtime stopped). A loop ends when a newer one starts (for a shorter period).
static RUNNING: AtomicU64 = AtomicU64::new(0);
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Marks the loop of its generation as ended when the loop's future is dropped (it returns,
/// or the runtime stops).
struct Running(u64);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = RUNNING.compare_exchange(self.0, 0, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Starts a sweep loop with the current period (ending the one before, if any).
fn start() {
    let Some(handle) = runtime::current() else { return };
    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    RUNNING.store(generation, Ordering::Release);
    handle.spawn(async move {
        let _running = Running(generation);
        let s = sweeper();
        loop {
            let period = Duration::from_millis(s.period_ms.load(Ordering::Acquire));
            tokio::time::sleep(period).await;
            if GENERATION.load(Ordering::Acquire) != generation {
                return;
            }
            sweep(s);
        }
    });
}

fn now_ms(s: &Sweeper) -> u32 {
    // Never 0 (0 means "no ping pending").
    u32::try_from(s.started.elapsed().as_millis()).unwrap_or(u32::MAX).max(1)
}

/// Looks at every watched connection once: pings the silent ones, ends the ones silent after
/// their ping, forgets the ones that ended.
fn sweep(s: &Sweeper) {
    let now = now_ms(s);
    let mut pings = Vec::new();
    let mut timeouts = Vec::new();
    lock(s).retain_mut(|w| {
        // Only the watch holds the state: the connection has ended.
        if Arc::strong_count(&w.shared) == 1 {
            return false;
        }
        let read = w.shared.read_total();
        if read != w.seen {
            w.seen = read;
            w.heard = now;
            w.pinged = 0;
        } else if w.pinged == 0 {
            if now.wrapping_sub(w.heard) >= w.interval {
                w.pinged = now;
                pings.push(w.shared.clone());
            }
        } else if now.wrapping_sub(w.pinged) >= w.timeout {
            timeouts.push(w.shared.clone());
            return false;
        }
        true
    });
    // Outside the table's lock: these take the connections' own locks and may wake tasks.
    for shared in pings {
        shared.heartbeat_ping();
    }
    for shared in timeouts {
        shared.heartbeat_timed_out();
    }
}

/// How many connections are watched (for tests and diagnostics).
pub fn count() -> usize {
    lock(sweeper()).len()
}
