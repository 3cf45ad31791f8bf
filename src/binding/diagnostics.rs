//! What the tests and benchmarks read of the engine's insides. Built only with the
//! `diagnostics` cargo feature (the test build turns it on); release builds carry none of it.

use napi_derive::napi;

use crate::engine::{park, registry};

/// The C heap as the allocator sees it, and the engine's slabs: `[inUse, free, mmapped,
/// slabs]` bytes (see `engine::alloc`). The allocator's figures are glibc's; elsewhere they
/// are 0.
#[napi(catch_unwind)]
pub fn heap_stats() -> Vec<f64> {
    let (used, free, mapped) = malloc_stats();
    #[cfg(unix)]
    let slabs = crate::engine::alloc::resident_bytes();
    #[cfg(not(unix))]
    let slabs = 0;
    vec![used as f64, free as f64, mapped as f64, slabs as f64]
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_stats() -> (usize, usize, usize) {
    #[repr(C)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: mallinfo2 only reads allocator statistics.
    let m = unsafe { mallinfo2() };
    (m.uordblks, m.fordblks, m.hblkhd)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_stats() -> (usize, usize, usize) {
    (0, 0, 0)
}

/// How many connections are parked (idle, off their tasks; see `engine::park`), or whether
/// connection `id` is.
#[napi(catch_unwind)]
pub fn parked(id: Option<u32>) -> u32 {
    match id {
        Some(id) => park::is_parked(id) as u32,
        None => park::count() as u32,
    }
}

/// Whether connection `id` waits in the lot its environment's JS thread serves (see
/// `engine::park`).
#[napi(catch_unwind)]
pub fn served(id: u32) -> bool {
    park::is_served(id)
}

/// The connection id table: slots made, slots free for reuse, connections registered.
#[napi(catch_unwind)]
pub fn slot_stats() -> Vec<u32> {
    registry::stats().to_vec()
}

/// Arms the tests' panic trigger when WS_NATIVE_TEST_PANIC=1 (see `engine::connection`).
pub fn arm_test_panic() {
    if std::env::var_os("WS_NATIVE_TEST_PANIC").is_some_and(|v| v == "1") {
        crate::engine::connection::TEST_PANIC.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Topics and subscriptions over every hub.
#[napi(object)]
pub struct TopicStats {
    pub topics: u32,
    pub subscriptions: u32,
}

#[napi(catch_unwind)]
pub fn topic_stats() -> TopicStats {
    let (topics, subscriptions) = crate::engine::topics::stats();
    TopicStats { topics: topics as u32, subscriptions: subscriptions as u32 }
}
