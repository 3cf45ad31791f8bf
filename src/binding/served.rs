//! The JS thread's event loop serves its environment's lot of connections (`engine::park`):
//! libuv watches the lot's epoll descriptor, and its callback has the engine read what came,
//! then hands the batch to JS at once (`napi_make_callback`, as a native module's completion
//! does), without the threadsafe call's wake-up: the records wait for nothing.
//! libuv's functions are looked up in the process (Node exports them) when the environment
//! starts; without them, or with `WS_NATIVE_JS_READS=0`, connections stay on the engine's
//! threads.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;

use super::batch::Batch;
use crate::engine::{events, park};

type PollCb = unsafe extern "C" fn(*mut c_void, c_int, c_int);
type CloseCb = unsafe extern "C" fn(*mut c_void);

/// The libuv functions used here (uv.h).
struct Uv {
    handle_size: unsafe extern "C" fn(c_int) -> usize,
    poll_init: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int,
    poll_start: unsafe extern "C" fn(*mut c_void, c_int, PollCb) -> c_int,
    poll_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    close: unsafe extern "C" fn(*mut c_void, CloseCb),
    unref: unsafe extern "C" fn(*mut c_void),
    idle_init: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    idle_start: unsafe extern "C" fn(*mut c_void, IdleCb) -> c_int,
    idle_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
}

type IdleCb = unsafe extern "C" fn(*mut c_void);

/// `UV_POLL` in `uv_handle_type`, `UV_READABLE` in `uv_poll_event`.
const UV_POLL: c_int = 8;
const UV_IDLE: c_int = 6;
const UV_READABLE: c_int = 1;

fn uv() -> Option<&'static Uv> {
    static UV: OnceLock<Option<Uv>> = OnceLock::new();
    UV.get_or_init(|| {
        fn find(name: &CStr) -> Option<*mut c_void> {
            // SAFETY: dlsym with RTLD_DEFAULT only looks a name up in the loaded objects.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr() as *const c_char) };
            (!p.is_null()).then_some(p)
        }
        // SAFETY: each pointer is libuv's function of that name, whose C signature the field's
        // type repeats (uv.h, stable since libuv 1.0; uv_handle_size since 1.0 too).
        unsafe {
            Some(Uv {
                handle_size: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int) -> usize>(find(c"uv_handle_size")?),
                poll_init: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int>(find(c"uv_poll_init")?),
                poll_start: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, c_int, PollCb) -> c_int>(find(c"uv_poll_start")?),
                poll_stop: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> c_int>(find(c"uv_poll_stop")?),
                close: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, CloseCb)>(find(c"uv_close")?),
                unref: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(find(c"uv_unref")?),
                idle_init: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int>(find(c"uv_idle_init")?),
                idle_start: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, IdleCb) -> c_int>(find(c"uv_idle_start")?),
                idle_stop: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> c_int>(find(c"uv_idle_stop")?),
            })
        }
    })
    .as_ref()
}

/// A uv_poll_t watching a lot, a uv_idle_t that keeps the loop from sleeping, and what
/// their callbacks need.
pub struct Watch {
    handle: *mut c_void,
    ctx: *mut Ctx,
}

/// The environment a watch serves: its sink and lot, and the JS function that takes batches.
struct Ctx {
    sink: Arc<events::Sink>,
    lot: park::ServedLot,
    env: sys::napi_env,
    callback: sys::napi_ref,
    async_context: sys::napi_async_context,
    idle: Cell<*mut c_void>,
    /// The connection the last wake read, if it read one, and when.
    last: Cell<Option<(u32, Instant)>>,
    spinning: Cell<bool>,
    spin: Duration,
}

/// The spin's default, in µs: a wake-up of a sleeping thread costs 15 to 40 µs on a virtual
/// machine, and a peer answering in a tight loop sends its next message well within 50.
const SPIN_US: u64 = 50;

/// How long the loop polls without sleeping after a read, once reads come this close to one
/// another (`WS_NATIVE_SPIN_US`, `SPIN_US` when unset; 0: never).
fn spin_time() -> Duration {
    let us = std::env::var("WS_NATIVE_SPIN_US").ok().and_then(|v| v.parse().ok()).unwrap_or(SPIN_US);
    Duration::from_micros(us)
}

/// While spinning, on every turn of the loop (which then polls with a zero timeout): stops
/// once the lot has been quiet for the spin time.
unsafe extern "C" fn on_idle(handle: *mut c_void) {
    // SAFETY: as in `on_readable`.
    let ctx = unsafe { &*(*(handle as *const *const Ctx)) };
    let quiet = ctx.last.get().is_none_or(|(_, t)| t.elapsed() > ctx.spin);
    if quiet {
        if let Some(uv) = uv() {
            // SAFETY: the idle handle `start` made.
            unsafe { (uv.idle_stop)(handle) };
        }
        ctx.spinning.set(false);
    }
}

/// The handle's first field is libuv's `void* data` (UV_HANDLE_FIELDS): the `Ctx`.
unsafe extern "C" fn on_readable(handle: *mut c_void, _status: c_int, _events: c_int) {
    // SAFETY: `handle` is the one `start` made, whose data field holds its `Ctx`, alive until
    // the handle is closed.
    let ctx = unsafe { &*(*(handle as *const *const Ctx)) };
    let lot = ctx.lot;
    let read = std::panic::catch_unwind(|| events::held(|| lot.ready()));
    if events::has_records(&ctx.sink) {
        // SAFETY: on the environment's own thread, outside any JS call (a libuv callback).
        unsafe { deliver(ctx) };
    }
    // One connection whose reads come within twice the spin time of each other (a peer in a
    // tight request and answer loop): the loop polls without sleeping for the spin time, so
    // that its next message finds the thread awake. Reads of many connections do not count:
    // a busy server gains nothing from it.
    let now = Instant::now();
    let Ok(Some(id)) = read else {
        ctx.last.set(None);
        return;
    };
    let close = ctx.last.replace(Some((id, now))).is_some_and(|(last, t)| last == id && now.duration_since(t) <= ctx.spin * 2);
    if close && !ctx.spinning.get() && !ctx.spin.is_zero() {
        if let Some(uv) = uv() {
            // SAFETY: the idle handle `start` made, on its loop's thread.
            if unsafe { (uv.idle_start)(ctx.idle.get(), on_idle) } == 0 {
                ctx.spinning.set(true);
            }
        }
    }
}

/// Calls the JS batch callback with what the sink holds, as the threadsafe call would:
/// nextTicks and microtasks run after it, and an exception it throws is an uncaught one.
unsafe fn deliver(ctx: &Ctx) {
    let env = ctx.env;
    let mut scope = std::ptr::null_mut();
    // SAFETY (all below): napi calls on the environment's thread, inside the handle scope
    // opened here; the reference and async context live as long as the watch.
    unsafe {
        if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
            return;
        }
        let batch = Batch::take(&ctx.sink);
        let mut func = std::ptr::null_mut();
        let mut recv = std::ptr::null_mut();
        if let Ok(buf) = Batch::to_napi_value(env, batch) {
            if sys::napi_get_reference_value(env, ctx.callback, &mut func) == sys::Status::napi_ok && sys::napi_get_global(env, &mut recv) == sys::Status::napi_ok {
                let mut result = std::ptr::null_mut();
                let status = sys::napi_make_callback(env, ctx.async_context, recv, func, 1, &buf, &mut result);
                if status == sys::Status::napi_pending_exception {
                    let mut err = std::ptr::null_mut();
                    if sys::napi_get_and_clear_last_exception(env, &mut err) == sys::Status::napi_ok {
                        sys::napi_fatal_exception(env, err);
                    }
                }
            }
        }
        sys::napi_close_handle_scope(env, scope);
    }
}

unsafe extern "C" fn on_closed(handle: *mut c_void) {
    // SAFETY: made by `calloc` in `start`; libuv is done with it once it calls this.
    unsafe { libc::free(handle) };
}

/// Environment `sink`'s event loop starts serving a lot, handing batches to `callback`. None
/// when it cannot (no libuv in the process, `WS_NATIVE_JS_READS=0`, or the system refused).
pub fn start(env: &Env, sink: &Arc<events::Sink>, callback: sys::napi_value) -> Option<Watch> {
    if std::env::var("WS_NATIVE_JS_READS").is_ok_and(|v| v == "0") || !is_node(env) {
        return None;
    }
    let uv = uv()?;
    let mut uv_loop = std::ptr::null_mut();
    // SAFETY: a valid env on its own thread.
    let status = unsafe { sys::napi_get_uv_event_loop(env.raw(), &mut uv_loop) };
    if status != sys::Status::napi_ok || uv_loop.is_null() {
        return None;
    }
    let raw = env.raw();
    let mut callback_ref = std::ptr::null_mut();
    let mut name = std::ptr::null_mut();
    let mut async_context = std::ptr::null_mut();
    // SAFETY: napi calls inside the JS call that runs `init`.
    unsafe {
        if sys::napi_create_reference(raw, callback, 1, &mut callback_ref) != sys::Status::napi_ok {
            return None;
        }
        let made = sys::napi_create_string_utf8(raw, c"ws-native".as_ptr(), 9, &mut name) == sys::Status::napi_ok
            && sys::napi_async_init(raw, std::ptr::null_mut(), name, &mut async_context) == sys::Status::napi_ok;
        if !made {
            sys::napi_delete_reference(raw, callback_ref);
            return None;
        }
    }
    let Some(lot) = park::serve(sink) else {
        // SAFETY: made above, on this thread.
        unsafe {
            sys::napi_async_destroy(raw, async_context);
            sys::napi_delete_reference(raw, callback_ref);
        }
        return None;
    };
    let ctx = Box::into_raw(Box::new(Ctx {
        sink: sink.clone(),
        lot,
        env: raw,
        callback: callback_ref,
        async_context,
        idle: Cell::new(std::ptr::null_mut()),
        last: Cell::new(None),
        spinning: Cell::new(false),
        spin: spin_time(),
    }));
    let fd = lot.fd();
    // SAFETY: zeroed blocks of the sizes libuv gives for a uv_idle_t and a uv_poll_t,
    // initialised by uv_idle_init and uv_poll_init before any other use; freed only by
    // `on_closed`.
    let watch = unsafe {
        (|| {
            let idle = libc::calloc(1, (uv.handle_size)(UV_IDLE).max(std::mem::size_of::<usize>()));
            if idle.is_null() {
                return None;
            }
            if (uv.idle_init)(uv_loop.cast(), idle) != 0 {
                libc::free(idle);
                return None;
            }
            *(idle as *mut *mut Ctx) = ctx;
            (uv.unref)(idle);
            (*ctx).idle.set(idle);
            let handle = libc::calloc(1, (uv.handle_size)(UV_POLL).max(std::mem::size_of::<usize>()));
            if handle.is_null() || (uv.poll_init)(uv_loop.cast(), handle, fd) != 0 {
                libc::free(handle);
                (uv.close)(idle, on_closed);
                return None;
            }
            *(handle as *mut *mut Ctx) = ctx;
            (uv.unref)(handle);
            if (uv.poll_start)(handle, UV_READABLE, on_readable) != 0 {
                (uv.close)(handle, on_closed);
                (uv.close)(idle, on_closed);
                return None;
            }
            Some(Watch { handle, ctx })
        })()
    };
    if watch.is_none() {
        lot.stop(sink);
        // SAFETY: made above and used by no handle.
        unsafe { free_ctx(ctx) };
    }
    watch
}

/// Whether the runtime is Node's: other runtimes with napi (Bun, Deno) may have libuv's
/// names without its loop behind `napi_get_uv_event_loop`.
fn is_node(env: &Env) -> bool {
    let versions = env
        .get_global()
        .and_then(|g| g.get_named_property::<Object>("process"))
        .and_then(|p| p.get_named_property::<Object>("versions"));
    let Ok(versions) = versions else { return false };
    let has = |name: &str| versions.has_named_property(name).unwrap_or(true);
    has("node") && !has("bun") && !has("deno")
}

/// Gives back what a `Ctx` holds (on its environment's thread).
unsafe fn free_ctx(ctx: *mut Ctx) {
    // SAFETY: `ctx` came from Box::into_raw and is freed once.
    let ctx = unsafe { Box::from_raw(ctx) };
    // SAFETY: napi calls on the environment's thread, for what `start` made.
    unsafe {
        sys::napi_async_destroy(ctx.env, ctx.async_context);
        sys::napi_delete_reference(ctx.env, ctx.callback);
    }
}

impl Watch {
    /// The environment is going away: the loop stops watching, and the lot's connections go
    /// back to the engine's threads.
    pub fn stop(self) {
        // SAFETY: the ctx and handle `start` made; the handle is stopped before the ctx goes,
        // so its callback no longer runs, and closed once.
        unsafe {
            let ctx = &*self.ctx;
            if let Some(uv) = uv() {
                (uv.poll_stop)(self.handle);
                (uv.close)(self.handle, on_closed);
                (uv.idle_stop)(ctx.idle.get());
                (uv.close)(ctx.idle.get(), on_closed);
            }
            ctx.lot.stop(&ctx.sink);
            free_ctx(self.ctx);
        }
    }
}
