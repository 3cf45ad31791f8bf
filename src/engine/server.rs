//! The standalone server: a native TCP listener whose accept loop starts one connection task
//! per socket. Requests go to JS for ws's decisions; the rest stays here.
//!
//! In a cluster worker the listening socket can also be Node's (shared with the primary, as
//! ws's would be): the server is then `attach`ed without a listener, and each socket Node
//! accepts is handed over by descriptor (`adopt_accepted`) to be served the same way.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use super::bridge::Bridge;
use super::config::ConnConfig;
use super::connection::{Connection, PeerInfo};
use super::park::allow_direct_writes;
use super::state::Shared;
use super::{registry, runtime};
use crate::protocol::deflate::DeflateParams;

/// Server ids (0 is never used). Connection ids come from `registry`.
fn next_server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub struct ListenParams {
    /// The native TLS server: each socket is served after its TLS handshake.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub host: Option<String>,
    pub port: u16,
    pub backlog: u32,
    /// SO_REUSEPORT: other sockets (other processes) may listen on the same port, and the
    /// kernel spreads the connections among them.
    pub reuse_port: bool,
    pub cfg: ConnConfig,
}

/// What a server's connections are served with.
#[derive(Clone)]
struct Serving {
    server_id: u32,
    cfg: Arc<ConnConfig>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

type Stops = Mutex<HashMap<u32, oneshot::Sender<()>>>;

fn stops() -> MutexGuard<'static, HashMap<u32, oneshot::Sender<()>>> {
    static S: OnceLock<Stops> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|p| p.into_inner())
}

fn bind(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}

#[cfg(unix)]
fn set_reuse_port(socket: &TcpSocket) -> io::Result<()> {
    socket.set_reuseport(true)
}

#[cfg(not(unix))]
fn set_reuse_port(_: &TcpSocket) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "reusePort is not supported on this platform"))
}

/// Binds synchronously (so `address()` works at once, and bind errors are known) and starts
/// the accept loop. Returns the server id and the bound address.
pub fn listen(p: ListenParams) -> io::Result<(u32, SocketAddr)> {
    let handle = runtime::handle_for(p.cfg.pool())?;
    let _guard = handle.enter();
    let listener = match &p.host {
        None => bind(SocketAddr::from(([0u16; 8], p.port)), p.backlog, p.reuse_port)
            .or_else(|_| bind(SocketAddr::from(([0u8; 4], p.port)), p.backlog, p.reuse_port))?,
        Some(h) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "ENOTFOUND");
            let mut bound = None;
            for a in (h.as_str(), p.port).to_socket_addrs()? {
                match bind(a, p.backlog, p.reuse_port) {
                    Ok(l) => {
                        bound = Some(l);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            bound.ok_or(last)?
        }
    };
    let local = listener.local_addr()?;
    let server_id = next_server_id();
    let (tx, rx) = oneshot::channel();
    stops().insert(server_id, tx);
    let serving = Serving { server_id, cfg: Arc::new(p.cfg), tls: p.tls.map(tokio_rustls::TlsAcceptor::from) };
    handle.spawn(accept_loop(listener, serving, rx));
    Ok((server_id, local))
}

type Attached = Mutex<HashMap<u32, Serving>>;

/// Servers whose listening socket Node holds.
fn attached() -> MutexGuard<'static, HashMap<u32, Serving>> {
    static A: OnceLock<Attached> = OnceLock::new();
    A.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|p| p.into_inner())
}

/// A server without a listener of its own: Node accepts its sockets (see `adopt_accepted`).
/// Returns its id.
pub fn attach(tls: Option<Arc<rustls::ServerConfig>>, cfg: ConnConfig) -> u32 {
    let server_id = next_server_id();
    let serving = Serving { server_id, cfg: Arc::new(cfg), tls: tls.map(tokio_rustls::TlsAcceptor::from) };
    attached().insert(server_id, serving);
    server_id
}

/// Serves a socket Node accepted for attached server `server_id` (the descriptor is
/// duplicated; Node destroys its copy afterwards). False when the server is closed.
pub fn adopt_accepted(server_id: u32, fd: i32) -> io::Result<bool> {
    let Some(serving) = attached().get(&server_id).cloned() else { return Ok(false) };
    let handle = runtime::handle_for(serving.cfg.pool())?;
    let _guard = handle.enter();
    let stream = tokio::net::TcpStream::from_std(super::net::dup_fd(fd)?)?;
    let remote = stream.peer_addr()?;
    serve(stream, remote, &serving);
    Ok(true)
}

/// Stops accepting; connections already made stay up, as in ws 8.
pub fn close(server_id: u32) {
    if let Some(tx) = stops().remove(&server_id) {
        let _ = tx.send(());
    }
    attached().remove(&server_id);
}

/// Most time a TLS client gets to finish its handshake (Node's `tls.Server` default).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// The TLS handshake, then the connection as for a plain socket. A failed handshake ends
/// the socket without JS hearing of it (as an `https` server's 'tlsClientError').
async fn serve_tls(acceptor: tokio_rustls::TlsAcceptor, stream: tokio::net::TcpStream, cfg: Arc<ConnConfig>, peer: PeerInfo) {
    let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else { return };
    let shared = Shared::new(false, cfg.sink.id);
    shared.lock().set_fd(super::net::fd_of(tls.get_ref().0), false);
    let Some(id) = registry::register(shared.clone()) else { return };
    Connection::server(tls, id, shared, cfg, peer).run().await
}

async fn accept_loop(listener: TcpListener, serving: Serving, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok((stream, remote)) => serve(stream, remote, &serving),
                // Out of descriptors or a reset before accept: wait a little and go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

/// Starts serving an accepted socket (within the runtime's context): its TLS handshake if
/// the server has one, then its upgrade request.
fn serve(stream: tokio::net::TcpStream, remote: SocketAddr, serving: &Serving) {
    let _ = stream.set_nodelay(true);
    let peer = PeerInfo { server_id: serving.server_id, remote: Some(remote), local: stream.local_addr().ok() };
    if let Some(acceptor) = &serving.tls {
        tokio::spawn(serve_tls(acceptor.clone(), stream, serving.cfg.clone(), peer));
        return;
    }
    let shared = Shared::new(false, serving.cfg.sink.id);
    // Every slot taken (4 million connections), or the server's environment is going away:
    // the socket closes.
    let Some(id) = registry::register(shared.clone()) else { return };
    allow_direct_writes(&shared, &stream);
    tokio::spawn(Connection::server(stream, id, shared, serving.cfg.clone(), peer).run());
}

/// An adopted connection's state, registered (its id is JS's from the start).
fn adopted_shared(response: &[u8], is_client: bool, sink: u32) -> io::Result<(u32, Arc<Shared>)> {
    let shared = Shared::new(is_client, sink);
    {
        let mut out = shared.lock();
        out.raw(response);
        out.open();
    }
    let id = registry::register(shared.clone()).ok_or_else(registry::no_id_error)?;
    Ok((id, shared))
}

/// Takes over a TCP socket from Node by file descriptor (Node destroys its copy afterwards):
/// `early` are the bytes Node had already read, `response` the 101 answer to write first
/// (empty on the client side, where Node's http client did the handshake).
pub fn adopt_fd(fd: i32, early: Vec<u8>, response: &[u8], cfg: ConnConfig, pmd: Option<DeflateParams>) -> io::Result<u32> {
    let is_client = !cfg.receiver.is_server;
    let handle = runtime::handle_for(cfg.pool())?;
    let _guard = handle.enter();
    let std_stream = super::net::dup_fd(fd)?;
    std_stream.set_nonblocking(true)?;
    let _ = std_stream.set_nodelay(true);
    let stream = tokio::net::TcpStream::from_std(std_stream)?;
    let (id, shared) = adopted_shared(response, is_client, cfg.sink.id)?;
    allow_direct_writes(&shared, &stream);
    handle.spawn(Connection::adopted(stream, id, shared, Arc::new(cfg), early, pmd).run());
    Ok(id)
}

/// Serves a socket Node keeps (TLS, or a Duplex without a descriptor) through a byte bridge.
pub fn adopt_bridge(early: Vec<u8>, response: &[u8], cfg: ConnConfig, pmd: Option<DeflateParams>) -> io::Result<u32> {
    let handle = runtime::handle_for(cfg.pool())?;
    let (id, shared) = adopted_shared(response, !cfg.receiver.is_server, cfg.sink.id)?;
    let bridge = Bridge::new(id);
    handle.spawn(Connection::adopted(bridge, id, shared, Arc::new(cfg), early, pmd).run());
    Ok(id)
}
