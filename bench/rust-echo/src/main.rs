//! rust-echo: pure-Rust (tokio + tokio-tungstenite) reference WebSocket server.
//!
//!   rust-echo --port P [--host 127.0.0.1] [--threads T] [--broadcast]
//!
//! Echo mode echoes every text/binary message back on the same connection
//! (messages that are already buffered are fed and flushed together).
//! --broadcast forwards every message received from any client to all clients.
//! Prints `LISTENING <port>` on stdout once bound (port 0 = ephemeral).
//! `--threads 1` (default) is a current_thread runtime, i.e. one core, like Node.
//! `--read-buffer BYTES` sets tungstenite's per-connection read buffer (default 16 KiB).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Clients = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

fn raise_nofile() {
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

static READ_BUF: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(16 * 1024);

async fn accept(stream: TcpStream) -> Option<WebSocketStream<TcpStream>> {
    let _ = stream.set_nodelay(true);
    // tungstenite's default 128 KiB read buffer per connection would dominate
    // the idle-RSS workload; 16 KiB costs nothing measurable in throughput.
    let cfg = WebSocketConfig::default().read_buffer_size(READ_BUF.load(Ordering::Relaxed));
    tokio_tungstenite::accept_async_with_config(stream, Some(cfg)).await.ok()
}

/// Feed a received message; Ok(false) means "stop" (close or error).
async fn feed_echo(ws: &mut WebSocketStream<TcpStream>, m: Message) -> bool {
    match m {
        Message::Text(_) | Message::Binary(_) => ws.feed(m).await.is_ok(),
        Message::Close(_) => {
            // tungstenite queued the close reply; flush it
            let _ = ws.flush().await;
            false
        }
        _ => true, // ping: the pong is queued by tungstenite and sent on flush
    }
}

async fn echo(stream: TcpStream) {
    let Some(mut ws) = accept(stream).await else { return };
    loop {
        let m = match ws.next().await {
            Some(Ok(m)) => m,
            _ => return,
        };
        if !feed_echo(&mut ws, m).await {
            return;
        }
        // everything already received is echoed in the same flush
        loop {
            match ws.next().now_or_never() {
                Some(Some(Ok(m))) => {
                    if !feed_echo(&mut ws, m).await {
                        return;
                    }
                }
                Some(_) => return,
                None => break,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

async fn broadcast(stream: TcpStream, id: u64, clients: Clients) {
    let Some(mut ws) = accept(stream).await else { return };
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    clients.lock().unwrap().insert(id, tx);
    let fanout = |m: &Message| {
        for c in clients.lock().unwrap().values() {
            let _ = c.send(m.clone()); // Bytes payload: clone is a refcount bump
        }
    };
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => fanout(&m),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => { if ws.flush().await.is_err() { break } }
            },
            m = rx.recv() => {
                let Some(m) = m else { break };
                if ws.feed(m).await.is_err() { break }
                while let Ok(m) = rx.try_recv() {
                    if ws.feed(m).await.is_err() { break }
                }
                if ws.flush().await.is_err() { break }
            }
        }
    }
    clients.lock().unwrap().remove(&id);
    let _ = ws.close(None).await;
}

fn main() {
    let mut port: u16 = 8080;
    let mut host = String::from("127.0.0.1");
    let mut threads: usize = 1;
    let mut bcast = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--port" => {
                i += 1;
                port = args.get(i).and_then(|v| v.parse().ok()).expect("--port N");
            }
            "--host" => {
                i += 1;
                host = args.get(i).cloned().expect("--host ADDR");
            }
            "--threads" => {
                i += 1;
                threads = args.get(i).and_then(|v| v.parse().ok()).expect("--threads N");
            }
            "--broadcast" => bcast = true,
            "--read-buffer" => {
                i += 1;
                let n: usize = args.get(i).and_then(|v| v.parse().ok()).expect("--read-buffer BYTES");
                READ_BUF.store(n.max(256), Ordering::Relaxed);
            }
            a => {
                eprintln!("usage: rust-echo --port P [--host H] [--threads T] [--broadcast] [--read-buffer BYTES] (unknown {a:?})");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    raise_nofile();
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
    .expect("runtime");
    rt.block_on(async move {
        let listener = match TcpListener::bind((host.as_str(), port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bind {host}:{port}: {e}");
                std::process::exit(1);
            }
        };
        let actual = listener.local_addr().unwrap().port();
        println!("LISTENING {actual}");
        let _ = std::io::stdout().flush();
        let clients: Clients = Arc::new(Mutex::new(HashMap::new()));
        let next_id = AtomicU64::new(0);
        loop {
            let (s, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // e.g. EMFILE: back off briefly instead of spinning
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if bcast {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(broadcast(s, id, clients.clone()));
            } else {
                tokio::spawn(echo(s));
            }
        }
    });
}
