//! The #[napi] surface: thin glue between lib/native.js and the engine. It converts JS's
//! values and calls the engine; no protocol logic and no engine state changes live here.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;

use crate::engine::client::{self, ConnectParams, Target};
use crate::engine::net::{self, io_error_code};
use crate::engine::registry;
use crate::engine::{commands, events, proxy, runtime, server, tls, wire};
use crate::protocol::deflate::DeflateParams;
use crate::protocol::handshake::{self, rejection_response, Rejection};

mod batch;
#[cfg(feature = "diagnostics")]
mod diagnostics;
mod options;
mod pubsub;
#[cfg(unix)]
mod served;

use batch::Batch;
use options::{bufs, conn_config, deflate_options, pairs, ClientTlsOptions, ConnOptions, DeflateJs, ServerTlsOptions};

thread_local! {
    /// The events sink of the Node environment on this thread (the main thread or a Worker).
    static SINK: RefCell<Option<Arc<events::Sink>>> = const { RefCell::new(None) };
    /// The servers this environment listens with, closed when it goes away.
    static SERVERS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// The hubs (servers' topics and links to Redis) this environment opened, likewise.
    static HUBS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// This environment's sink (a sink nobody reads before `init`, which lib/native.js calls first).
fn env_sink() -> Arc<events::Sink> {
    SINK.with(|s| s.borrow_mut().get_or_insert_with(events::Sink::new).clone())
}

/// Registers the JS function that receives event batches. The threadsafe function is weak:
/// it never keeps Node alive.
#[napi(catch_unwind)]
pub fn init(env: Env, on_batch: Function<Buffer, ()>) -> Result<()> {
    #[cfg(feature = "diagnostics")]
    diagnostics::arm_test_panic();
    let sink = env_sink();
    #[cfg(unix)]
    let callback = on_batch.value().value;
    let taker = sink.clone();
    let tsfn = on_batch
        .build_threadsafe_function::<()>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(move |_ctx| Ok(Batch::take(&taker)))?;
    let tsfn = Arc::new(tsfn);
    sink.set_deliver(Some(Box::new(move || {
        tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
    })));
    runtime::acquire();
    #[cfg(unix)]
    let watch = served::start(&env, &sink, callback);
    // When this environment goes (process exit, or a Worker ending), its servers stop, its
    // connections end, and the runtime stops with the last environment.
    env.add_env_cleanup_hook(sink, move |sink| {
        #[cfg(unix)]
        if let Some(w) = watch {
            w.stop();
        }
        sink.set_deliver(None);
        for id in SERVERS.with(|s| std::mem::take(&mut *s.borrow_mut())) {
            server::close(id);
        }
        for id in HUBS.with(|h| std::mem::take(&mut *h.borrow_mut())) {
            crate::engine::topics::close(id);
        }
        registry::terminate_sink(sink.id);
        runtime::release();
    })?;
    Ok(())
}

/// The next large payload of the batch being dispatched.
#[napi(catch_unwind)]
pub fn take_external() -> Option<Buffer> {
    batch::take_external().map(Buffer::from)
}

/// The numbers of the boundary's format (`engine::wire`), for lib/native.js: record kinds
/// and flags, commands and their flags, the header size, and the id's slot bits.
#[napi(object)]
pub struct Wire {
    pub event: HashMap<String, u32>,
    pub event_flag: HashMap<String, u32>,
    pub op: HashMap<String, u32>,
    pub flag: HashMap<String, u32>,
    /// What a REDIS record reports.
    pub redis_event: HashMap<String, u32>,
    pub header_len: u32,
    pub slot_bits: u32,
    /// The HANDSHAKE_FAILED code of a TLS handshake the engine leaves to Node's TLS.
    pub tls_needs_node: String,
    /// The ERROR record's flag for an error after which the engine ends the connection.
    pub error_ends: u32,
}

#[napi(catch_unwind)]
pub fn wire() -> Wire {
    let table = |all: &[(&str, u8)]| all.iter().map(|(k, v)| (k.to_string(), *v as u32)).collect();
    Wire {
        event: table(wire::kind::ALL),
        event_flag: table(wire::record_flag::ALL),
        op: table(wire::op::ALL),
        flag: table(wire::flag::ALL),
        redis_event: table(wire::redis_event::ALL),
        header_len: wire::HEADER_LEN as u32,
        slot_bits: registry::SLOT_BITS,
        tls_needs_node: tls::NEEDS_NODE.to_owned(),
        error_ends: wire::ERROR_ENDS as u32,
    }
}

#[napi(object)]
pub struct ListenOptions {
    pub host: Option<String>,
    pub port: u32,
    pub backlog: Option<u32>,
    /// SO_REUSEPORT (Node's `reusePort` listen option).
    pub reuse_port: Option<bool>,
    pub conn: ConnOptions,
    /// The native TLS server (`tls` option).
    pub tls: Option<ServerTlsOptions>,
}

/// The server's `tls` option as the engine's TLS configuration.
fn server_tls(tls: Option<ServerTlsOptions>) -> std::result::Result<Option<Arc<rustls::ServerConfig>>, tls::TlsError> {
    let Some(t) = tls else { return Ok(None) };
    let st = tls::ServerTls {
        cert: t.cert.to_vec(),
        key: t.key.to_vec(),
        ca: bufs(t.ca),
        passphrase: t.passphrase,
        request_cert: t.request_cert.unwrap_or(false),
        reject_unauthorized: t.reject_unauthorized.unwrap_or(true),
    };
    tls::server_config(&st).map(Some)
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
    let tls = match server_tls(opts.tls) {
        Ok(t) => t,
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
    };
    let params = server::ListenParams {
        tls,
        host: opts.host.clone(),
        port: opts.port as u16,
        backlog: opts.backlog.unwrap_or(511),
        reuse_port: opts.reuse_port.unwrap_or(false),
        cfg: conn_config(&opts.conn, true, env_sink()),
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

/// Whether the engine's TLS serves the server `tls` options (else Node's TLS does).
#[napi(catch_unwind)]
pub fn server_tls_usable(tls: ServerTlsOptions) -> bool {
    server_tls(Some(tls)).is_ok()
}

#[napi(object)]
pub struct AttachOptions {
    pub conn: ConnOptions,
    pub tls: Option<ServerTlsOptions>,
}

/// A server whose listening socket Node holds (a cluster worker's shared handle): its id,
/// whose accepted sockets JS hands over with `adoptAccepted` (no address: Node's server has
/// it). Unusable `tls` options come back as `badOptions`, as for `listen`.
#[napi(catch_unwind)]
pub fn attach_server(opts: AttachOptions) -> ListenResult {
    let mut r = ListenResult {
        id: 0,
        address: String::new(),
        family: String::new(),
        port: 0,
        error_code: None,
        error_message: None,
        bad_options: false,
    };
    match server_tls(opts.tls) {
        Ok(tls) => {
            r.id = server::attach(tls, conn_config(&opts.conn, true, env_sink()));
            SERVERS.with(|s| s.borrow_mut().push(r.id));
        }
        Err(e) => {
            r.error_code = Some(e.code);
            r.error_message = Some(e.message);
            r.bad_options = true;
        }
    }
    r
}

/// Serves a socket Node accepted for attached server `server_id`. False when that server
/// is closed.
#[napi(catch_unwind)]
pub fn adopt_accepted(server_id: u32, fd: i32) -> Result<bool> {
    server::adopt_accepted(server_id, fd).map_err(|e| Error::from_reason(e.to_string()))
}

#[napi(catch_unwind)]
pub fn close_server(id: u32) {
    SERVERS.with(|s| s.borrow_mut().retain(|&x| x != id));
    server::close(id);
}

/// Accepts an upgrade request with the 101 answer JS built (after a `headers` listener).
/// False when the connection is gone.
#[napi(catch_unwind)]
pub fn accept(id: u32, response: &[u8]) -> bool {
    let Some(shared) = registry::lookup(id) else { return false };
    shared.accept(response);
    true
}

/// Accepts an upgrade request with the standard 101 answer. False when the connection is gone.
#[napi(catch_unwind)]
pub fn accept_standard(id: u32, accept_key: String, protocol: Option<String>, extensions: Option<String>) -> bool {
    accept(id, &handshake::accept_response(&accept_key, protocol.as_deref(), extensions.as_deref()))
}

/// The lines of the standard 101 answer, for the server's `headers` event (JS joins them
/// with `head` once its listeners are done).
#[napi(catch_unwind)]
pub fn accept_lines(accept_key: String, protocol: Option<String>, extensions: Option<String>) -> Vec<String> {
    handshake::accept_lines(&accept_key, protocol.as_deref(), extensions.as_deref())
}

/// A response head made of `lines` (each line and the head end with CRLF).
#[napi(catch_unwind)]
pub fn head(lines: Vec<String>) -> Buffer {
    Buffer::from(handshake::head_bytes(&lines))
}

/// Refuses an upgrade with ws's HTTP answer. `headers` is a flat name, value list. False
/// when the connection is gone.
#[napi(catch_unwind)]
pub fn reject(id: u32, status: u32, message: String, headers: Vec<String>) -> bool {
    let Some(shared) = registry::lookup(id) else { return false };
    shared.reject(&rejection(status, message, headers));
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
    let head = handshake::Head {
        method,
        headers: pairs(raw_headers),
        ..Default::default()
    };
    let deflate = deflate.as_ref().map(deflate_options);
    match handshake::validate_upgrade(&head, deflate.as_ref()) {
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

/// ws's HTTP refusal (`abortHandshake`).
fn rejection(status: u32, message: String, headers: Vec<String>) -> Vec<u8> {
    rejection_response(&Rejection { status: status as u16, message, headers: pairs(headers) })
}

/// ws's HTTP refusal, for JS to write on a socket Node holds.
#[napi(js_name = "rejection", catch_unwind)]
pub fn rejection_js(status: u32, message: String, headers: Vec<String>) -> Buffer {
    Buffer::from(rejection(status, message, headers))
}

/// Takes over an upgraded Node TCP socket by file descriptor; returns the connection id.
/// `is_client` when Node's http client made the handshake; `extensions` is the agreed
/// `Sec-WebSocket-Extensions` value, if any.
#[napi(catch_unwind)]
pub fn adopt_fd(fd: i32, early: &[u8], response: &[u8], conn: ConnOptions, is_client: Option<bool>, extensions: Option<String>) -> Result<u32> {
    let cfg = conn_config(&conn, !is_client.unwrap_or(false), env_sink());
    let pmd = extensions.as_deref().and_then(DeflateParams::from_agreed);
    server::adopt_fd(fd, early.to_vec(), response, cfg, pmd).map_err(|e| Error::from_reason(e.to_string()))
}

/// Serves an upgraded socket Node keeps through the byte bridge; returns the connection id.
#[napi(catch_unwind)]
pub fn adopt_bridge(early: &[u8], response: &[u8], conn: ConnOptions, is_client: Option<bool>, extensions: Option<String>) -> Result<u32> {
    let cfg = conn_config(&conn, !is_client.unwrap_or(false), env_sink());
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
    let head = handshake::Head {
        status: 101,
        headers: pairs(raw_headers),
        ..Default::default()
    };
    let deflate = deflate.as_ref().map(deflate_options);
    match handshake::validate_response(&head, &key, &offered, deflate.as_ref()) {
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
    /// Node's `family` (4 or 6), `localAddress` and `localPort`.
    pub family: Option<u32>,
    pub local_address: Option<String>,
    pub local_port: Option<u32>,
}

/// Starts a client connection; returns its id, or 0 when the engine's TLS cannot use the
/// TLS options (JS then makes the handshake with Node's TLS).
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
        min_version: t.min_version,
        max_version: t.max_version,
    });
    let origin = net::Origin {
        family: opts.family.filter(|f| *f == 4 || *f == 6).map(|f| f as u8),
        local_ip: match opts.local_address.as_deref().map(str::parse) {
            None => None,
            Some(Ok(ip)) => Some(ip),
            Some(Err(_)) => return Err(Error::new(Status::InvalidArg, "localAddress must be an IP address")),
        },
        local_port: opts.local_port.map(|p| p as u16),
    };
    let params = ConnectParams {
        target,
        path: opts.path,
        headers: pairs(opts.headers),
        protocols: opts.protocols,
        cfg: conn_config(&opts.conn, false, env_sink()),
        tls,
        origin,
        proxy,
    };
    match client::connect(params) {
        Ok(id) => Ok(id),
        Err(client::ConnectError::TlsUnusable) => Ok(0),
        Err(client::ConnectError::Io(e)) => Err(Error::from_reason(e.to_string())),
    }
}

/// Applies one tick's commands. Large payloads come as separate buffers.
#[napi(catch_unwind)]
/// Returns, when the batch published with `ACK`, whether the link to Redis refused each such
/// publish, in order.
pub fn flush(commands: &[u8], external: Option<Vec<Buffer>>) -> Option<Vec<bool>> {
    let lost = match external {
        Some(ext) => {
            let slices: Vec<&[u8]> = ext.iter().map(|b| b.as_ref()).collect();
            commands::apply(commands, &slices)
        }
        None => commands::apply(commands, &[]),
    };
    (!lost.is_empty()).then_some(lost)
}

/// What `ws._socket` reports of the engine's socket.
#[napi(object)]
pub struct SocketInfo {
    /// Empty when the connection has no TCP socket (any more).
    pub remote_address: String,
    pub remote_port: u32,
    pub remote_family: String,
    pub local_address: String,
    pub local_port: u32,
    pub local_family: String,
    pub bytes_read: f64,
    pub bytes_written: f64,
}

/// The addresses and byte counts of connection `id`'s socket; None when the connection is gone.
#[napi(catch_unwind)]
pub fn socket_info(id: u32) -> Option<SocketInfo> {
    let shared = registry::lookup(id)?;
    let (remote, local) = shared.socket_addresses();
    let family = |a: Option<std::net::SocketAddr>| a.map_or("", |a| if a.is_ipv4() { "IPv4" } else { "IPv6" }).to_owned();
    Some(SocketInfo {
        remote_address: remote.map(|a| a.ip().to_string()).unwrap_or_default(),
        remote_port: remote.map_or(0, |a| a.port() as u32),
        remote_family: family(remote),
        local_address: local.map(|a| a.ip().to_string()).unwrap_or_default(),
        local_port: local.map_or(0, |a| a.port() as u32),
        local_family: family(local),
        bytes_read: shared.read_total() as f64,
        bytes_written: shared.written_total() as f64,
    })
}

/// `setNoDelay` / `setKeepAlive` on connection `id`'s socket. False when it has none.
#[napi(catch_unwind)]
pub fn socket_option(id: u32, no_delay: Option<bool>, keep_alive: Option<bool>, keep_alive_delay_ms: Option<f64>) -> bool {
    let Some(shared) = registry::lookup(id) else { return false };
    let delay_secs = keep_alive_delay_ms.filter(|d| d.is_finite() && *d > 0.0).map_or(0, |d| (d / 1000.0).max(1.0) as u32);
    shared.set_socket_options(no_delay, keep_alive.map(|on| (on, delay_secs)))
}

/// Bytes queued in the engine and not yet written to the socket.
#[napi(catch_unwind)]
pub fn buffered_amount(id: u32) -> f64 {
    registry::lookup(id).map(|s| s.buffered() as f64).unwrap_or(0.0)
}
