//! The client: resolve, connect (TCP or Unix socket), optionally through a proxy and with TLS,
//! then run the connection with the upgrade request already queued. `handshakeTimeout` covers
//! the connect, the proxy and the TLS handshake too.

use std::io;
use std::sync::Arc;

use tokio::time::Instant;

use super::config::ConnConfig;
use super::connection::{ClientHandshake, Connection};
use super::events;
use super::net::{connect_tcp, io_error_code, Origin};
use super::park::allow_direct_writes;
use super::proxy::{self, Proxy};
use super::registry::{self, unregister};
use super::runtime;
use super::state::Shared;
use super::tls::{self, ClientTls};
use crate::protocol::handshake::client_request;

pub enum Target {
    Tcp { host: String, port: u16 },
    Unix(String),
}

pub struct ConnectParams {
    pub target: Target,
    pub path: String,
    /// Request headers, without the key (added here).
    pub headers: Vec<(String, String)>,
    pub protocols: Vec<String>,
    pub cfg: ConnConfig,
    /// `wss:`: the TLS options.
    pub tls: Option<ClientTls>,
    /// Family and local address of the TCP connection (to the proxy, with one).
    pub origin: Origin,
    /// The proxy, or why its URL is unusable (reported as the handshake's failure).
    pub proxy: Option<Result<Proxy, proxy::ProxyError>>,
}

fn fail(sink: &events::Sink, id: u32, message: &str, code: &str) {
    unregister(id);
    let _entered = events::enter(sink);
    events::with_batch(|b| b.handshake_failed(id, message, code));
}

#[cfg(unix)]
async fn connect_unix(path: &str) -> io::Result<tokio::net::UnixStream> {
    tokio::net::UnixStream::connect(path).await
}

/// `ws+unix:` URLs need Unix sockets (a stand-in type that never connects elsewhere).
#[cfg(not(unix))]
async fn connect_unix(_: &str) -> io::Result<tokio::net::TcpStream> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "ws+unix: URLs need Unix sockets"))
}

/// Runs a setup step within the handshake deadline.
async fn within<T>(deadline: Option<Instant>, f: impl std::future::Future<Output = Result<T, (String, String)>>) -> Result<T, (String, String)> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, f)
            .await
            .unwrap_or_else(|_| Err((String::new(), "Opening handshake has timed out".to_string()))),
        None => f.await,
    }
}

/// Why a client connection did not start.
pub enum ConnectError {
    Io(io::Error),
    /// The engine's TLS cannot use the TLS options (a certificate format rustls does not
    /// read, for one): Node's TLS may.
    TlsUnusable,
}

/// Starts a client connection and returns its id at once; the outcome arrives as an OPEN,
/// HANDSHAKE_FAILED or UNEXPECTED_RESPONSE record.
pub fn connect(p: ConnectParams) -> Result<u32, ConnectError> {
    let config = match &p.tls {
        Some(t) => Some(tls::client_config(t).map_err(|_| ConnectError::TlsUnusable)?),
        None => None,
    };
    let handle = runtime::handle().map_err(ConnectError::Io)?;
    let key = tungstenite::handshake::client::generate_key();
    let mut headers = p.headers;
    headers.push(("Sec-WebSocket-Key".into(), key.clone()));
    if let Some(opts) = &p.cfg.deflate {
        headers.push(("Sec-WebSocket-Extensions".into(), crate::protocol::deflate::offer(opts)));
    }
    let shared = Shared::new(true, p.cfg.sink.id);
    shared.lock().raw(&client_request(&p.path, &headers));
    let id = registry::register(shared.clone()).ok_or_else(|| ConnectError::Io(registry::no_id_error()))?;
    let cfg = Arc::new(p.cfg);
    let hs = ClientHandshake { key, protocols: p.protocols };
    handle.spawn(async move {
        let deadline = cfg.handshake_timeout.map(|d| Instant::now() + d);
        match p.target {
            Target::Tcp { host, port } => {
                let proxy = match p.proxy.transpose() {
                    Ok(px) => px,
                    Err((code, msg)) => return fail(&cfg.sink, id, &msg, &code),
                };
                let tcp = async {
                    match &proxy {
                        Some(px) => proxy::tunnel(px, &host, port, p.origin).await,
                        None => connect_tcp(&host, port, p.origin).await,
                    }
                };
                match p.tls.zip(config) {
                    None => match within(deadline, tcp).await {
                        Ok(s) => {
                            allow_direct_writes(&shared, &s);
                            Connection::client(s, id, shared, cfg, hs, deadline).run().await
                        }
                        Err((code, msg)) => fail(&cfg.sink, id, &msg, &code),
                    },
                    Some((t, config)) => {
                        let secured = async {
                            let name = tls::server_name(&t, &host).map_err(|e| (e.code, e.message))?;
                            let s = tcp.await?;
                            tokio_rustls::TlsConnector::from(config).connect(name, s).await.map_err(|e| {
                                let e = tls::handshake_error(&e, &host, port);
                                (e.code, e.message)
                            })
                        };
                        match within(deadline, secured).await {
                            Ok(s) => {
                                shared.lock().set_fd(super::net::fd_of(s.get_ref().0), false);
                                Connection::client(s, id, shared, cfg, hs, deadline).run().await
                            }
                            Err((code, msg)) => fail(&cfg.sink, id, &msg, &code),
                        }
                    }
                }
            }
            Target::Unix(path) => {
                let r = match deadline {
                    Some(d) => tokio::time::timeout_at(d, connect_unix(&path)).await,
                    None => Ok(connect_unix(&path).await),
                };
                match r {
                    Ok(Ok(s)) => Connection::client(s, id, shared, cfg, hs, deadline).run().await,
                    Ok(Err(e)) => {
                        let (code, msg) = io_error_code(&e, "connect");
                        fail(&cfg.sink, id, &format!("{msg} {path}"), &code)
                    }
                    Err(_) => fail(&cfg.sink, id, "Opening handshake has timed out", ""),
                }
            }
        }
    });
    Ok(id)
}
