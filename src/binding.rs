//! The #[napi] surface: thin glue between lib/native.js and the engine. No protocol logic.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;

use crate::engine::client::{self, ConnectParams, Target};
use crate::engine::connection::ConnConfig;
use crate::engine::outbox::{self, Decision};
use crate::engine::registry;
use crate::engine::{events, io_error_code, proxy, runtime, server, tls};
use crate::protocol::deflate::{BitsOption, DeflateOptions, DeflateParams};
use crate::protocol::handshake::{rejection_response, Rejection};
use crate::protocol::receiver::ReceiverConfig;

thread_local! {
    /// Large payloads of delivered batches, taken by JS in record order.
    static EXTERNAL: RefCell<VecDeque<Vec<u8>>> = const { RefCell::new(VecDeque::new()) };
    /// The events sink of the Node environment on this thread (the main thread or a Worker).
    static SINK: RefCell<Option<Arc<events::Sink>>> = const { RefCell::new(None) };
    /// The servers this environment listens with, closed when it goes away.
    static SERVERS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Batches up to this size reach JS as a copy in a buffer V8 allocates, which is cheaper than
/// an external buffer (no finalizer, freed by the collector itself) and sized to the events;
/// bigger ones are handed over without a copy.
const COPY_BATCH_MAX: usize = 256 * 1024;

/// A taken batch on its way to the JS callback.
struct Batch {
    buf: Vec<u8>,
    sink: Arc<events::Sink>,
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

/// This environment's sink (a sink nobody reads before `init`, which lib/native.js calls first).
fn env_sink() -> Arc<events::Sink> {
    SINK.with(|s| s.borrow_mut().get_or_insert_with(events::Sink::new).clone())
}

/// Registers the JS function that receives event batches. The threadsafe function is weak:
/// it never keeps Node alive.
#[napi(catch_unwind)]
pub fn init(env: Env, on_batch: Function<Buffer, ()>) -> Result<()> {
    if std::env::var_os("WS_NATIVE_TEST_PANIC").is_some_and(|v| v == "1") {
        crate::engine::connection::TEST_PANIC.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let sink = env_sink();
    let taker = sink.clone();
    let tsfn = on_batch
        .build_threadsafe_function::<()>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(move |_ctx| {
            let buf = EXTERNAL.with(|e| events::take_batch(&taker, &mut e.borrow_mut()));
            Ok(Batch { buf, sink: taker.clone() })
        })?;
    let tsfn = Arc::new(tsfn);
    sink.set_deliver(Some(Box::new(move || {
        tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
    })));
    runtime::acquire();
    // When this environment goes (process exit, or a Worker ending), its servers stop, its
    // connections end, and the runtime stops with the last environment.
    env.add_env_cleanup_hook(sink, |sink| {
        sink.set_deliver(None);
        for id in SERVERS.with(|s| std::mem::take(&mut *s.borrow_mut())) {
            server::close(id);
        }
        outbox::terminate_sink(sink.id);
        runtime::release();
    })?;
    Ok(())
}

/// The next large payload of the batch being dispatched.
#[napi(catch_unwind)]
pub fn take_external() -> Option<Buffer> {
    EXTERNAL.with(|e| e.borrow_mut().pop_front()).map(Buffer::from)
}

/// Limits and behaviour shared by client and server connections.
#[napi(object)]
pub struct ConnOptions {
    pub max_payload: Option<f64>,
    pub max_fragments: Option<f64>,
    pub skip_utf8_validation: Option<bool>,
    pub auto_pong: Option<bool>,
    pub close_timeout: Option<f64>,
    pub handshake_timeout: Option<f64>,
    /// permessage-deflate settings; absent when disabled.
    pub deflate: Option<DeflateJs>,
    /// Most bytes and header lines in the handshake head we receive (Node's names).
    pub max_header_size: Option<f64>,
    pub max_headers_count: Option<f64>,
}

/// ws's `perMessageDeflate` object, with JS truthiness already applied by lib/.
#[napi(object)]
#[derive(Clone)]
pub struct DeflateJs {
    pub server_no_context_takeover: Option<bool>,
    pub client_no_context_takeover: Option<bool>,
    pub server_max_window_bits: Option<Either<bool, f64>>,
    pub client_max_window_bits: Option<Either<bool, f64>>,
    pub threshold: Option<f64>,
    pub level: Option<f64>,
}

fn bits_option(v: &Option<Either<bool, f64>>) -> BitsOption {
    match v {
        None => BitsOption::Unset,
        Some(Either::A(true)) => BitsOption::True,
        Some(Either::A(false)) => BitsOption::False,
        Some(Either::B(n)) if n.is_finite() && *n >= 0.0 => BitsOption::Num(n.min(1e6) as u32),
        Some(Either::B(_)) => BitsOption::Num(0),
    }
}

fn deflate_options(d: &DeflateJs) -> DeflateOptions {
    DeflateOptions {
        server_no_context_takeover: d.server_no_context_takeover,
        client_no_context_takeover: d.client_no_context_takeover,
        server_max_window_bits: bits_option(&d.server_max_window_bits),
        client_max_window_bits: bits_option(&d.client_max_window_bits),
        threshold: d.threshold.filter(|t| t.is_finite() && *t >= 0.0).map(|t| t as u64).unwrap_or(1024),
        level: d.level.filter(|l| l.is_finite()).map(|l| l as i32).unwrap_or(-1),
    }
}

/// A flat `[name, value, name, value...]` list from JS as pairs.
fn pairs(list: Vec<String>) -> Vec<(String, String)> {
    let mut it = list.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

fn ms(v: f64) -> Duration {
    Duration::from_millis(if v.is_finite() && v > 0.0 { v as u64 } else { 0 })
}

fn conn_config(o: &ConnOptions, is_server: bool) -> ConnConfig {
    ConnConfig {
        receiver: ReceiverConfig {
            is_server,
            // Event records carry 32-bit lengths: "no limit" (0) still stops below 4 GiB.
            max_payload: o.max_payload.map(|v| if v > 0.0 { v as u64 } else { 0 }).unwrap_or(100 * 1024 * 1024).wrapping_sub(1).min(u32::MAX as u64 - 1) + 1,
            max_fragments: o.max_fragments.map(|v| if v > 0.0 { v as u32 } else { 0 }).unwrap_or(131_072),
            skip_utf8_validation: o.skip_utf8_validation.unwrap_or(false),
            allow_rsv1: false,
        },
        auto_pong: o.auto_pong.unwrap_or(true),
        close_timeout: ms(o.close_timeout.unwrap_or(30_000.0)),
        handshake_timeout: o.handshake_timeout.filter(|v| *v > 0.0).map(ms),
        deflate: o.deflate.as_ref().map(deflate_options),
        sink: env_sink(),
        head_limits: crate::protocol::handshake::HeadLimits {
            max_size: o.max_header_size.filter(|v| v.is_finite() && *v > 0.0).map(|v| v.min(1e9) as usize).unwrap_or(16 * 1024),
            max_headers: o.max_headers_count.filter(|v| v.is_finite() && *v > 0.0).map(|v| v.min(1e6) as usize).unwrap_or(128),
        },
    }
}

#[napi(object)]
pub struct ListenOptions {
    pub host: Option<String>,
    pub port: u32,
    pub backlog: Option<u32>,
    pub conn: ConnOptions,
    /// The native TLS server (`tls` option).
    pub tls: Option<ServerTlsOptions>,
}

/// The server's `tls` option, normalized by JS (PEM as Buffers).
#[napi(object)]
pub struct ServerTlsOptions {
    pub cert: Buffer,
    pub key: Buffer,
    pub ca: Option<Vec<Buffer>>,
    pub passphrase: Option<String>,
    pub request_cert: Option<bool>,
    pub reject_unauthorized: Option<bool>,
}

/// The client's TLS options for `wss:`, normalized by JS.
#[napi(object)]
pub struct ClientTlsOptions {
    pub ca: Option<Vec<Buffer>>,
    pub cert: Option<Buffer>,
    pub key: Option<Buffer>,
    pub passphrase: Option<String>,
    pub reject_unauthorized: Option<bool>,
    pub servername: Option<String>,
}

fn bufs(v: Option<Vec<Buffer>>) -> Vec<Vec<u8>> {
    v.unwrap_or_default().iter().map(|b| b.to_vec()).collect()
}

#[napi(object)]
pub struct ListenResult {
    pub id: u32,
    pub address: String,
    pub family: String,
    pub port: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// The error is in the options (the `tls` certificates or key): JS throws it at once, as
    /// `https.createServer()` does, instead of emitting it.
    pub bad_options: bool,
}

/// Binds a server. Bind errors come back as `errorCode` / `errorMessage` for JS to emit.
#[napi(catch_unwind)]
pub fn listen(opts: ListenOptions) -> ListenResult {
    let tls = match opts.tls {
        None => None,
        Some(t) => {
            let st = tls::ServerTls {
                cert: t.cert.to_vec(),
                key: t.key.to_vec(),
                ca: bufs(t.ca),
                passphrase: t.passphrase,
                request_cert: t.request_cert.unwrap_or(false),
                reject_unauthorized: t.reject_unauthorized.unwrap_or(true),
            };
            match tls::server_config(&st) {
                Ok(c) => Some(c),
                Err(e) => {
                    return ListenResult {
                        id: 0,
                        address: String::new(),
                        family: String::new(),
                        port: 0,
                        error_code: Some(e.code),
                        error_message: Some(e.message),
                        bad_options: true,
                    }
                }
            }
        }
    };
    let params = server::ListenParams {
        tls,
        host: opts.host.clone(),
        port: opts.port as u16,
        backlog: opts.backlog.unwrap_or(511),
        cfg: conn_config(&opts.conn, true),
    };
    match server::listen(params) {
        Ok((id, addr)) => {
            SERVERS.with(|s| s.borrow_mut().push(id));
            ListenResult {
                id,
                address: addr.ip().to_string(),
                family: if addr.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
                port: addr.port() as u32,
                error_code: None,
                error_message: None,
                bad_options: false,
            }
        }
        Err(e) => {
            let (code, msg) = io_error_code(&e, "listen");
            let host = opts.host.unwrap_or_else(|| "::".into());
            ListenResult {
                id: 0,
                address: String::new(),
                family: String::new(),
                port: 0,
                error_message: Some(format!("{msg}: address already in use {host}:{}", opts.port).replace(
                    ": address already in use",
                    if code == "EADDRINUSE" { ": address already in use" } else { ":" },
                )),
                error_code: Some(code),
                bad_options: false,
            }
        }
    }
}

#[napi(catch_unwind)]
pub fn close_server(id: u32) {
    SERVERS.with(|s| s.borrow_mut().retain(|&x| x != id));
    server::close(id);
}

/// Writes the 101 answer JS built and opens the connection. False when the socket is gone.
#[napi(catch_unwind)]
pub fn accept(id: u32, response: &[u8]) -> bool {
    let Some(shared) = registry::lookup(id) else { return false };
    let waker = {
        let mut out = shared.lock();
        out.raw(response);
        out.open = true;
        out.decision = Some(Decision::Accept);
        out.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
    true
}

/// Writes the standard 101 answer (no `headers` listener could change it) and opens the
/// connection. False when the socket is gone.
#[napi(catch_unwind)]
pub fn accept_standard(id: u32, accept_key: String, protocol: Option<String>, extensions: Option<String>) -> bool {
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n"
    );
    if let Some(p) = protocol {
        head.push_str("Sec-WebSocket-Protocol: ");
        head.push_str(&p);
        head.push_str("\r\n");
    }
    if let Some(e) = extensions {
        head.push_str("Sec-WebSocket-Extensions: ");
        head.push_str(&e);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    accept(id, head.as_bytes())
}

/// Refuses an upgrade with ws's HTTP answer. `headers` is a flat name, value list.
#[napi(catch_unwind)]
pub fn reject(id: u32, status: u32, message: String, headers: Vec<String>) -> bool {
    let Some(shared) = registry::lookup(id) else { return false };
    let r = Rejection {
        status: status as u16,
        message,
        headers: pairs(headers),
    };
    let waker = {
        let mut out = shared.lock();
        out.raw(&rejection_response(&r));
        out.decision = Some(Decision::Reject);
        out.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
    true
}

/// What the engine thinks of an upgrade request Node's http server received.
#[napi(object)]
pub struct UpgradeVerdict {
    /// 0 when valid, else the HTTP status of ws's refusal.
    pub status: u32,
    pub message: String,
    /// Flat name, value list of extra headers for the refusal.
    pub headers: Vec<String>,
    pub accept: String,
    pub protocols: Vec<String>,
    pub version: u32,
    /// The answer's `Sec-WebSocket-Extensions` value when permessage-deflate was agreed.
    pub extensions: String,
}

/// Runs ws's checks on a request Node parsed (`rawHeaders` as Node gives them).
#[napi(catch_unwind)]
pub fn check_upgrade(method: String, raw_headers: Vec<String>, deflate: Option<DeflateJs>) -> UpgradeVerdict {
    let head = crate::protocol::handshake::Head {
        method,
        headers: pairs(raw_headers),
        ..Default::default()
    };
    let deflate = deflate.as_ref().map(deflate_options);
    match crate::protocol::handshake::validate_upgrade(&head, deflate.as_ref()) {
        Ok(u) => UpgradeVerdict {
            status: 0,
            message: String::new(),
            headers: Vec::new(),
            accept: u.accept,
            protocols: u.protocols,
            version: u.version as u32,
            extensions: u.extensions.unwrap_or_default(),
        },
        Err(r) => UpgradeVerdict {
            status: r.status as u32,
            message: r.message,
            headers: r.headers.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            accept: String::new(),
            protocols: Vec::new(),
            version: 0,
            extensions: String::new(),
        },
    }
}

/// ws's HTTP refusal, for JS to write on a socket Node holds.
#[napi(catch_unwind)]
pub fn rejection(status: u32, message: String, headers: Vec<String>) -> Buffer {
    let r = Rejection {
        status: status as u16,
        message,
        headers: pairs(headers),
    };
    Buffer::from(rejection_response(&r))
}

/// Takes over an upgraded Node TCP socket by file descriptor; returns the connection id.
/// `is_client` when Node's http client made the handshake; `extensions` is the agreed
/// `Sec-WebSocket-Extensions` value, if any.
#[napi(catch_unwind)]
pub fn adopt_fd(fd: i32, early: &[u8], response: &[u8], conn: ConnOptions, is_client: Option<bool>, extensions: Option<String>) -> Result<u32> {
    let cfg = conn_config(&conn, !is_client.unwrap_or(false));
    let pmd = extensions.as_deref().and_then(DeflateParams::from_agreed);
    server::adopt_fd(fd, early.to_vec(), response, cfg, pmd).map_err(|e| Error::from_reason(e.to_string()))
}

/// Serves an upgraded socket Node keeps through the byte bridge; returns the connection id.
#[napi(catch_unwind)]
pub fn adopt_bridge(early: &[u8], response: &[u8], conn: ConnOptions, is_client: Option<bool>, extensions: Option<String>) -> Result<u32> {
    let cfg = conn_config(&conn, !is_client.unwrap_or(false));
    let pmd = extensions.as_deref().and_then(DeflateParams::from_agreed);
    server::adopt_bridge(early.to_vec(), response, cfg, pmd).map_err(|e| Error::from_reason(e.to_string()))
}

/// The client's permessage-deflate offer, for a handshake Node's http client makes.
#[napi(catch_unwind)]
pub fn deflate_offer(deflate: DeflateJs) -> String {
    crate::protocol::deflate::offer(&deflate_options(&deflate))
}

/// A fresh `Sec-WebSocket-Key`.
#[napi(catch_unwind)]
pub fn generate_key() -> String {
    tungstenite::handshake::client::generate_key()
}

/// ws's checks on a 101 answer Node's http client received. Returns the error message, or
/// an empty string and the agreed subprotocol.
#[napi(catch_unwind)]
pub fn check_response(key: String, raw_headers: Vec<String>, offered: Vec<String>, deflate: Option<DeflateJs>) -> Vec<String> {
    let head = crate::protocol::handshake::Head {
        status: 101,
        headers: pairs(raw_headers),
        ..Default::default()
    };
    let deflate = deflate.as_ref().map(deflate_options);
    match crate::protocol::handshake::validate_response(&head, &key, &offered, deflate.as_ref()) {
        Ok(a) => vec![String::new(), a.protocol, a.extensions],
        Err(e) => vec![e],
    }
}

#[napi(object)]
pub struct ConnectOptions {
    pub host: Option<String>,
    pub port: Option<u32>,
    pub socket_path: Option<String>,
    pub path: String,
    /// Flat name, value list, in order.
    pub headers: Vec<String>,
    pub protocols: Vec<String>,
    pub conn: ConnOptions,
    /// Present for `wss:`.
    pub tls: Option<ClientTlsOptions>,
    /// A proxy URL, or `env` to take it from the environment.
    pub proxy: Option<String>,
}

/// Starts a client connection; returns its id.
#[napi(catch_unwind)]
pub fn connect(opts: ConnectOptions) -> Result<u32> {
    let target = match opts.socket_path {
        Some(p) => Target::Unix(p),
        None => Target::Tcp { host: opts.host.unwrap_or_else(|| "localhost".into()), port: opts.port.unwrap_or(80) as u16 },
    };
    // The environment is read here, on Node's thread, where `process.env` writes land.
    let proxy = match (&target, opts.proxy) {
        (Target::Tcp { host, port }, Some(p)) if p == "env" => proxy::from_env(host, *port, opts.tls.is_some()).map(|u| proxy::Proxy::parse(&u)),
        (Target::Tcp { .. }, Some(p)) if !p.is_empty() => Some(proxy::Proxy::parse(&p)),
        _ => None,
    };
    let tls = opts.tls.map(|t| tls::ClientTls {
        ca: bufs(t.ca),
        cert: t.cert.map(|b| b.to_vec()),
        key: t.key.map(|b| b.to_vec()),
        passphrase: t.passphrase,
        reject_unauthorized: t.reject_unauthorized.unwrap_or(true),
        servername: t.servername,
    });
    let params = ConnectParams {
        target,
        path: opts.path,
        headers: pairs(opts.headers),
        protocols: opts.protocols,
        cfg: conn_config(&opts.conn, false),
        tls,
        proxy,
    };
    client::connect(params).map_err(|e| Error::from_reason(e.to_string()))
}

/// Applies one tick's commands. Large payloads come as separate buffers.
#[napi(catch_unwind)]
pub fn flush(commands: &[u8], external: Option<Vec<Buffer>>) {
    match external {
        Some(ext) => {
            let slices: Vec<&[u8]> = ext.iter().map(|b| b.as_ref()).collect();
            outbox::apply_commands(commands, &slices);
        }
        None => outbox::apply_commands(commands, &[]),
    }
}

/// Bytes queued in the engine and not yet written to the socket.
#[napi(catch_unwind)]
pub fn buffered_amount(id: u32) -> f64 {
    registry::lookup(id).map(|s| s.buffered() as f64).unwrap_or(0.0)
}

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

/// The C heap as glibc sees it, and the engine's slabs: `[inUse, free, mmapped, slabs]`
/// bytes (see `engine::alloc`). For memory tests and the per-connection figures in the
/// benchmarks; not part of the public API.
#[napi(catch_unwind)]
pub fn heap_stats() -> Vec<f64> {
    // SAFETY: mallinfo2 only reads allocator statistics.
    let m = unsafe { mallinfo2() };
    vec![m.uordblks as f64, m.fordblks as f64, m.hblkhd as f64, crate::engine::alloc::resident_bytes() as f64]
}

/// How many connections are parked (idle, off their tasks; see `engine::park`), or whether
/// connection `id` is. For tests and diagnostics; not part of the public API.
#[napi(catch_unwind)]
pub fn parked(id: Option<u32>) -> u32 {
    match id {
        Some(id) => crate::engine::park::is_parked(id) as u32,
        None => crate::engine::park::count() as u32,
    }
}

/// How many low bits of a connection id are its slot (`engine::registry`): JS indexes its
/// connections by slot.
#[napi(catch_unwind)]
pub fn slot_bits() -> u32 {
    registry::SLOT_BITS
}

/// The connection id table: slots made, slots free for reuse, connections registered. For
/// tests and diagnostics; not part of the public API.
#[napi(catch_unwind)]
pub fn slot_stats() -> Vec<u32> {
    registry::stats().to_vec()
}
