//! Event batches on their way into JS: the threadsafe call that delivers them, and the large
//! payloads JS takes one by one (`take_external`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use napi::bindgen_prelude::*;

use crate::engine::events::{self, Sink};

thread_local! {
    /// Large payloads of delivered batches, taken by JS in record order.
    static EXTERNAL: RefCell<VecDeque<Vec<u8>>> = const { RefCell::new(VecDeque::new()) };
}

/// Batches up to this size reach JS as a copy in a buffer V8 allocates, which is cheaper than
/// an external buffer (no finalizer, freed by the collector itself) and sized to the events,
/// and the batch's buffer is kept for the next one: handing it over would leave the engine's
/// thread to fill fresh memory (page faults, regrowth), which costs it more than the copy
/// costs JS. Bigger ones are handed over without a copy.
const COPY_BATCH_MAX: usize = 4 * 1024 * 1024;

/// A taken batch on its way to the JS callback.
pub struct Batch {
    buf: Vec<u8>,
    sink: Arc<Sink>,
}

impl Batch {
    /// On the JS thread: everything `sink` holds now.
    pub fn take(sink: &Arc<Sink>) -> Batch {
        let buf = EXTERNAL.with(|e| events::take_batch(sink, &mut e.borrow_mut()));
        Batch { buf, sink: sink.clone() }
    }
}

impl ToNapiValue for Batch {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let Batch { mut buf, sink } = val;
        if buf.len() > COPY_BATCH_MAX {
            // JS frees it when V8 collects it, which an idle process may not do for a long
            // time: hand over only the bytes used (glibc shrinks in place, without a copy).
            buf.shrink_to_fit();
            return unsafe { Buffer::to_napi_value(env, Buffer::from(buf)) };
        }
        let mut data = std::ptr::null_mut();
        let mut out = std::ptr::null_mut();
        // SAFETY: `buf` is alive for the call, which copies `len` bytes from it.
        let status = unsafe { sys::napi_create_buffer_copy(env, buf.len(), buf.as_ptr().cast(), &mut data, &mut out) };
        events::recycle(&sink, buf);
        check_status!(status)?;
        Ok(out)
    }
}

/// The next large payload of the batch being dispatched.
pub fn take_external() -> Option<Vec<u8>> {
    EXTERNAL.with(|e| e.borrow_mut().pop_front())
}
