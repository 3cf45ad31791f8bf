//! loadgen: a small, fast WebSocket load generator for loopback benchmarks.
//!
//! Hand-rolled client (HTTP/1.1 upgrade + masked frames) on tokio, so that the
//! generator costs as little CPU per message as possible. Modes:
//!
//!   loadgen echo      --url ws://127.0.0.1:P/ --conns N --inflight K --size B [--binary|--text]
//!                     --duration S --warmup S
//!   loadgen broadcast --url ... [--url2 ws://127.0.0.1:P2/] --conns 1000 --size 64 --inflight 1
//!                     --duration S --warmup S
//!   loadgen connect   --url ... --conns 10000 --idle S --concurrency 256
//!   loadgen codec     --size B [--json] [--deflate-level L] [--conns N] --duration S   (no network;
//!                     N connections' contexts taken in turn, default 1)
//!   loadgen payloads  --size B --json|--words [--json-variants N]   (no network: prints the
//!                     payloads the other modes send, one per line, for other tools to time)
//!
//! echo and connect also take wss:// URLs (TLS with rustls, any server certificate accepted),
//! with or without --deflate.
//! Common: --threads T (default 1 = current_thread runtime), --connect-timeout S,
//! --deflate (offer permessage-deflate and compress / inflate messages), --json (echo mode and
//! connect --send-one: the payloads are JSON objects padded to --size), --words (the same: text of
//! random common English words), --send-one (connect mode:
//! every connection echoes one message before the idle period).
//! --url2 (broadcast mode): half the subscribers (conns / 2) connect to this second server, the
//! others and the publisher to --url; for servers that relay publications to each other
//! (through Redis), a broadcast then completes when it reached the subscribers of both.
//! One JSON line of results goes to stdout; progress lines go to stderr:
//!   `PHASE measure` (warm-up over), `PHASE done`, and in connect mode `IDLE <n>` / `CLOSING`.
//!
//! Only loopback targets are accepted. Every phase is bounded in time.

use std::future::Future;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

// ---------------------------------------------------------------------------
// time

static EPOCH: OnceLock<Instant> = OnceLock::new();

#[inline]
fn now_ns() -> u64 {
    EPOCH.get().unwrap().elapsed().as_nanos() as u64
}

fn at_ns(ns: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(*EPOCH.get().unwrap() + Duration::from_nanos(ns))
}

fn cpu_seconds() -> f64 {
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

fn raise_nofile() -> (u64, u64) {
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            if rl.rlim_cur < rl.rlim_max {
                rl.rlim_cur = rl.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
            }
            return (rl.rlim_cur as u64, rl.rlim_max as u64);
        }
    }
    (0, 0)
}

// ---------------------------------------------------------------------------
// log-linear latency histogram (ns values, ~0.8% relative precision)

const SUB_BITS: u32 = 7; // 128 sub-buckets per power of two
const HIST_LEN: usize = 36 * 128 + 256; // covers values up to 2^44 ns (~4.9 h)

#[derive(Clone, Default)]
struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Hist {
    #[inline]
    fn index(v: u64) -> usize {
        let v = v.min((1u64 << 44) - 1);
        if v < (1 << (SUB_BITS + 1)) {
            v as usize
        } else {
            let e = 63 - v.leading_zeros();
            let shift = e - SUB_BITS;
            (shift as usize) * 128 + (v >> shift) as usize
        }
    }
    fn value(idx: usize) -> u64 {
        if idx < 256 {
            idx as u64
        } else {
            let shift = (idx / 128 - 1) as u32;
            let m = (idx - (shift as usize) * 128) as u64;
            (m << shift) + ((1u64 << shift) - 1) / 2
        }
    }
    #[inline]
    fn record(&mut self, v: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; HIST_LEN];
        }
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.sum += v as u128;
        if v > self.max {
            self.max = v;
        }
    }
    fn merge(&mut self, o: &Hist) {
        if o.total == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; HIST_LEN];
        }
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += *b;
        }
        self.total += o.total;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }
    /// percentile in microseconds (None if empty)
    fn pct_us(&self, p: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut acc = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            acc += *c;
            if acc >= rank {
                return Some(Self::value(i).min(self.max) as f64 / 1000.0);
            }
        }
        Some(self.max as f64 / 1000.0)
    }
    fn mean_us(&self) -> Option<f64> {
        if self.total == 0 {
            None
        } else {
            Some(self.sum as f64 / self.total as f64 / 1000.0)
        }
    }
}

// ---------------------------------------------------------------------------
// tiny JSON writer

struct Json(String);
impl Json {
    fn new() -> Self {
        Json(String::from("{"))
    }
    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(k);
        self.0.push_str("\":");
    }
    fn num(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        if v.is_finite() {
            let r = (v * 1000.0).round() / 1000.0;
            self.0.push_str(&format!("{}", r));
        } else {
            self.0.push_str("null");
        }
        self
    }
    fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.0.push_str(&v.to_string());
        self
    }
    fn opt(&mut self, k: &str, v: Option<f64>) -> &mut Self {
        match v {
            Some(v) => self.num(k, v),
            None => {
                self.key(k);
                self.0.push_str("null");
                self
            }
        }
    }
    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.0.push('"');
        for ch in v.chars() {
            match ch {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => self.0.push_str(&format!("\\u{:04x}", c as u32)),
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }
    fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }
    fn hist(&mut self, prefix: &str, h: &Hist) -> &mut Self {
        self.opt(&format!("{prefix}p50_us"), h.pct_us(50.0));
        self.opt(&format!("{prefix}p90_us"), h.pct_us(90.0));
        self.opt(&format!("{prefix}p99_us"), h.pct_us(99.0));
        self.opt(&format!("{prefix}p999_us"), h.pct_us(99.9));
        self.opt(&format!("{prefix}mean_us"), h.mean_us());
        self.opt(
            &format!("{prefix}max_us"),
            if h.total > 0 { Some(h.max as f64 / 1000.0) } else { None },
        );
        self
    }
    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

// ---------------------------------------------------------------------------
// args

#[derive(Clone, Debug)]
struct Args {
    mode: String,
    url: String,
    url2: Option<String>,
    conns: usize,
    inflight: usize,
    size: usize,
    binary: bool,
    duration: f64,
    warmup: f64,
    threads: usize,
    idle: f64,
    concurrency: usize,
    connect_timeout: f64,
    spin: bool,
    deflate: bool,
    deflate_level: u32,
    json: bool,
    /// Payloads of random common English words (`--words`).
    words: bool,
    json_variants: usize,
    send_one: bool,
}

const USAGE: &str = "usage: loadgen <echo|broadcast|connect|codec|payloads> --url ws[s]://127.0.0.1:PORT/ \
[--url2 ws://127.0.0.1:PORT2/] [--conns N] [--inflight K] [--size BYTES] [--binary|--text] [--duration SECS] [--warmup SECS] \
[--idle SECS] [--concurrency N] [--threads T] [--connect-timeout SECS] [--spin] \
[--deflate [--deflate-level L]] [--json|--words [--json-variants N]] [--send-one]\n\
--url2 (broadcast mode): conns / 2 of the subscribers connect to this server instead of --url.\n\
--spin (echo mode): busy-poll the sockets instead of sleeping in epoll, so the\n\
generator's own wake-up latency is not part of the measured round trip (ws:// only).\n\
wss:// (echo and connect modes): TLS with rustls, any server certificate accepted.\n\
--deflate: offer `permessage-deflate; client_max_window_bits`; the server must accept it.\n\
Outgoing messages are compressed (raw deflate, level L, default 1), incoming RSV1 messages inflated.\n\
--json: payloads are N (default 64) different JSON ticker/chat objects of exactly --size bytes,\n\
cycled per connection, so consecutive messages share structure but not content.\n\
--words: the same with texts of random common English words.\n\
--send-one (connect mode): each connection sends one message and waits for its echo before\n\
the idle period (so both sides' per-connection codec state exists); its own codec state is\n\
then dropped.\n\
payloads: print the --json or --words payloads, one per line, and exit (no network).";

fn parse_args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || argv[0] == "-h" || argv[0] == "--help" {
        return Err(USAGE.into());
    }
    let mode = argv[0].clone();
    let (d_conns, d_size) = match mode.as_str() {
        "echo" => (1, 32),
        "broadcast" => (1000, 64),
        "connect" => (10000, 32),
        "codec" | "payloads" => (1, 1024),
        _ => return Err(format!("unknown mode {mode:?}\n{USAGE}")),
    };
    let mut a = Args {
        mode,
        url: "ws://127.0.0.1:8080/".into(),
        url2: None,
        conns: d_conns,
        inflight: 1,
        size: d_size,
        binary: true,
        duration: 5.0,
        warmup: 1.0,
        threads: 1,
        idle: 5.0,
        concurrency: 256,
        connect_timeout: 10.0,
        spin: false,
        deflate: false,
        deflate_level: 1,
        json: false,
        words: false,
        json_variants: 64,
        send_one: false,
    };
    let mut i = 1;
    while i < argv.len() {
        let k = argv[i].as_str();
        let mut val = || -> Result<String, String> {
            i += 1;
            argv.get(i).cloned().ok_or_else(|| format!("missing value for {k}"))
        };
        fn num<T: std::str::FromStr>(k: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("bad value for {k}: {v:?}"))
        }
        match k {
            "--url" => a.url = val()?,
            "--url2" => a.url2 = Some(val()?),
            "--conns" => a.conns = num(k, val()?)?,
            "--inflight" => a.inflight = num(k, val()?)?,
            "--size" => a.size = num(k, val()?)?,
            "--binary" => a.binary = true,
            "--text" => a.binary = false,
            "--spin" => a.spin = true,
            "--deflate" => a.deflate = true,
            "--deflate-level" => a.deflate_level = num(k, val()?)?,
            "--json" => a.json = true,
            "--words" => a.words = true,
            "--json-variants" => a.json_variants = num(k, val()?)?,
            "--send-one" => a.send_one = true,
            "--duration" => a.duration = num(k, val()?)?,
            "--warmup" => a.warmup = num(k, val()?)?,
            "--threads" => a.threads = num(k, val()?)?,
            "--idle" => a.idle = num(k, val()?)?,
            "--concurrency" => a.concurrency = num(k, val()?)?,
            "--connect-timeout" => a.connect_timeout = num(k, val()?)?,
            _ => return Err(format!("unknown flag {k:?}\n{USAGE}")),
        }
        i += 1;
    }
    if a.conns == 0 || a.conns > 1_000_000 {
        return Err("--conns must be 1..1000000".into());
    }
    if a.inflight == 0 || a.inflight > 4096 {
        return Err("--inflight must be 1..4096".into());
    }
    if a.mode == "broadcast" && a.inflight > SLOTS / 2 {
        return Err(format!("--inflight must be <= {} in broadcast mode", SLOTS / 2));
    }
    let min_size = if a.mode == "broadcast" { 32 } else { 16 };
    if a.size < min_size || a.size > 256 << 20 {
        return Err(format!("--size must be {min_size}..268435456 in this mode"));
    }
    if !(a.duration > 0.0 && a.duration <= 3600.0) || !(a.warmup >= 0.0 && a.warmup <= 600.0) {
        return Err("--duration must be in (0,3600], --warmup in [0,600]".into());
    }
    if !(a.idle >= 0.0 && a.idle <= 3600.0) {
        return Err("--idle must be in [0,3600]".into());
    }
    if a.threads == 0 || a.threads > 64 {
        return Err("--threads must be 1..64".into());
    }
    if a.deflate_level > 9 {
        return Err("--deflate-level must be 0..9".into());
    }
    if a.mode == "broadcast" && a.url.starts_with("wss://") {
        return Err("wss:// is for echo and connect modes (broadcast mode speaks plain ws:// only)".into());
    }
    if let Some(u) = &a.url2 {
        if a.mode != "broadcast" || u.starts_with("wss://") {
            return Err("--url2 is for broadcast mode, with a ws:// URL".into());
        }
        if a.conns < 2 {
            return Err("--url2 needs --conns >= 2".into());
        }
    }
    if a.json && a.words {
        return Err("--json and --words do not go together".into());
    }
    if a.mode == "payloads" && !(a.json || a.words) {
        return Err("payloads needs --json or --words".into());
    }
    if a.json || a.words {
        if a.mode == "broadcast" {
            return Err("--json and --words are for echo and connect modes".into());
        }
        if a.size < JSON_MIN_SIZE {
            return Err(format!("--json and --words need --size >= {JSON_MIN_SIZE}"));
        }
        if a.json_variants == 0 || a.json_variants > 4096 {
            return Err("--json-variants must be 1..4096".into());
        }
    }
    a.concurrency = a.concurrency.clamp(1, 65536);
    Ok(a)
}

/// The transport under a connection: plain TCP, or TLS for `wss://` targets (echo and connect
/// modes; any certificate is accepted: the benchmark measures the servers, not the PKI).
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static C: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    C.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    })
    .clone()
}

struct Target {
    tls: bool,
    addr: SocketAddr,
    host_header: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = match url.strip_prefix("wss://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("ws://").ok_or_else(|| format!("only ws:// and wss:// URLs are supported: {url}"))?),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hp = if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:{}", if tls { 443 } else { 80 })
    };
    let addrs: Vec<SocketAddr> = hp
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .collect();
    let addr = addrs
        .iter()
        .copied()
        .find(|a| a.ip().is_loopback())
        .ok_or_else(|| format!("refusing non-loopback target {hostport} (loopback only)"))?;
    Ok(Target { tls, addr, host_header: hostport.to_string(), path: path.to_string() })
}

// ---------------------------------------------------------------------------
// randomness (xorshift64*) -- masks and handshake keys only

struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn mask(&mut self) -> [u8; 4] {
        loop {
            let m = (self.next() >> 16) as u32;
            if m != 0 {
                return m.to_ne_bytes();
            }
        }
    }
}

fn base64_16(b: &[u8; 16]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(24);
    for ch in b.chunks(3) {
        let n = (ch[0] as u32) << 16
            | (*ch.get(1).unwrap_or(&0) as u32) << 8
            | *ch.get(2).unwrap_or(&0) as u32;
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if ch.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        s.push(if ch.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    s
}

// ---------------------------------------------------------------------------
// frames

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: [u8; 4]) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
}

fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let m8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().unwrap()) ^ m8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // the remainder starts at a multiple of 8, so the mask index restarts at 0
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// small control frame (close / pong), fully built
fn control_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], rng: &mut Rng) {
    let mask = rng.mask();
    frame_header(out, opcode, payload.len(), mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

// ---------------------------------------------------------------------------
// permessage-deflate (RFC 7692)

/// What the server agreed to in its `Sec-WebSocket-Extensions` answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pmd {
    server_nct: bool,
    client_nct: bool,
    server_bits: Option<u8>,
    client_bits: Option<u8>,
}

impl Pmd {
    fn describe(&self) -> String {
        let mut s = String::from("permessage-deflate");
        if self.server_nct {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_nct {
            s.push_str("; client_no_context_takeover");
        }
        if let Some(b) = self.server_bits {
            s.push_str(&format!("; server_max_window_bits={b}"));
        }
        if let Some(b) = self.client_bits {
            s.push_str(&format!("; client_max_window_bits={b}"));
        }
        s
    }
}

/// The offer sent with --deflate (what ws's client offers by default).
const PMD_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Parse the server's answer to PMD_OFFER (the value of its Sec-WebSocket-Extensions header).
fn parse_pmd_answer(v: &str) -> Result<Pmd, String> {
    if v.contains(',') {
        return Err(format!("server answered more than one extension: {v:?}"));
    }
    let mut parts = v.split(';').map(str::trim);
    let name = parts.next().unwrap_or("");
    if name != "permessage-deflate" {
        return Err(format!("server answered an extension that was not offered: {name:?}"));
    }
    let mut p = Pmd::default();
    let mut seen: Vec<&str> = Vec::new();
    for part in parts {
        let (k, val) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (part, None),
        };
        if seen.contains(&k) {
            return Err(format!("repeated permessage-deflate parameter {k:?}"));
        }
        seen.push(k);
        match k {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                if val.is_some() {
                    return Err(format!("permessage-deflate parameter {k} takes no value"));
                }
                if k.starts_with("server") {
                    p.server_nct = true;
                } else {
                    p.client_nct = true;
                }
            }
            "server_max_window_bits" | "client_max_window_bits" => {
                let b = val
                    .and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| (8..=15).contains(b))
                    .ok_or_else(|| format!("bad value for {k}: {val:?}"))?;
                if k.starts_with("server") {
                    p.server_bits = Some(b);
                } else {
                    p.client_bits = Some(b);
                }
            }
            _ => return Err(format!("unknown permessage-deflate parameter {k:?}")),
        }
    }
    if p.client_bits == Some(8) {
        // zlib (and zlib-rs) cannot produce a raw deflate stream with a 256-byte window
        return Err("client_max_window_bits=8 is not supported (zlib's raw deflate needs >= 9)".into());
    }
    Ok(p)
}

/// Per-message compressor for outgoing messages.
struct Deflater {
    c: Compress,
    reset_each: bool,
    buf: Vec<u8>,
    plain_bytes: u64,
    wire_bytes: u64,
}

impl Deflater {
    fn new(level: u32, pmd: &Pmd) -> Self {
        let bits = pmd.client_bits.unwrap_or(15);
        Deflater {
            c: Compress::new_with_window_bits(Compression::new(level), false, bits),
            reset_each: pmd.client_nct,
            buf: Vec::with_capacity(4096),
            plain_bytes: 0,
            wire_bytes: 0,
        }
    }

    /// Compress one whole message (sync flush, trailing 00 00 ff ff removed).
    fn message(&mut self, input: &[u8]) -> Result<&[u8], String> {
        self.buf.clear();
        let mut pos = 0usize;
        let mut done = false;
        for _ in 0..(1 << 20) {
            // keep > 6 bytes of room so that a sync flush never ends on a full buffer
            if self.buf.capacity() - self.buf.len() < 256 {
                self.buf.reserve(input.len() / 2 + 4096);
            }
            let in0 = self.c.total_in();
            self.c
                .compress_vec(&input[pos..], &mut self.buf, FlushCompress::Sync)
                .map_err(|e| format!("deflate: {e}"))?;
            pos += (self.c.total_in() - in0) as usize;
            if pos == input.len() && self.buf.len() < self.buf.capacity() {
                done = true;
                break;
            }
        }
        if !done || !self.buf.ends_with(&[0, 0, 0xff, 0xff]) {
            return Err("deflate: sync flush did not end with 00 00 ff ff".into());
        }
        let n = self.buf.len() - 4;
        self.buf.truncate(n);
        if self.reset_each {
            self.c.reset();
        }
        self.plain_bytes += input.len() as u64;
        self.wire_bytes += n as u64;
        Ok(&self.buf)
    }
}

/// Inflater for incoming compressed messages: streaming, keeps only the first CAP bytes.
struct Inflater {
    d: Decompress,
    reset_each: bool,
    ended: bool,
    scratch: Box<[u8]>,
    wire_bytes: u64,
    plain_bytes: u64,
}

const PMD_TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

impl Inflater {
    fn new(pmd: &Pmd) -> Self {
        Inflater {
            // a 15-bit window inflates any smaller window too
            d: Decompress::new_with_window_bits(false, 15),
            reset_each: pmd.server_nct,
            ended: false,
            scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
            wire_bytes: 0,
            plain_bytes: 0,
        }
    }

    /// Inflate `input`; the first CAP bytes of output go to `cap`. Returns the bytes produced.
    fn feed(
        &mut self,
        mut input: &[u8],
        flush: FlushDecompress,
        cap: &mut [u8; CAP],
        cap_len: &mut usize,
    ) -> Result<u64, &'static str> {
        let mut produced = 0u64;
        self.wire_bytes += input.len() as u64;
        for _ in 0..(1u32 << 24) {
            if self.ended {
                // the server ended the deflate stream (BFINAL): nothing more in this message
                break;
            }
            let (i0, o0) = (self.d.total_in(), self.d.total_out());
            let st = self
                .d
                .decompress(input, &mut self.scratch, flush)
                .map_err(|_| "inflate: invalid deflate data")?;
            let used = (self.d.total_in() - i0) as usize;
            let out = (self.d.total_out() - o0) as usize;
            if *cap_len < CAP {
                let c = out.min(CAP - *cap_len);
                cap[*cap_len..*cap_len + c].copy_from_slice(&self.scratch[..c]);
                *cap_len += c;
            }
            produced += out as u64;
            input = &input[used..];
            if st == Status::StreamEnd {
                self.ended = true;
                break;
            }
            if input.is_empty() && out < self.scratch.len() {
                break;
            }
            if used == 0 && out == 0 {
                return Err("inflate: no progress");
            }
        }
        self.plain_bytes += produced;
        Ok(produced)
    }

    /// End of a compressed message: the 00 00 ff ff tail, then a reset if no context takeover.
    fn finish(&mut self, cap: &mut [u8; CAP], cap_len: &mut usize) -> Result<u64, &'static str> {
        let n = self.feed(&PMD_TAIL, FlushDecompress::Sync, cap, cap_len)?;
        self.wire_bytes -= PMD_TAIL.len() as u64;
        if self.reset_each || self.ended {
            self.d.reset(false);
            self.ended = false;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// payloads

const JSON_MIN_SIZE: usize = 192;
/// offset of the 16 hex digits of the send timestamp in a --json payload (`{"ts":"`)
const JSON_TS_OFF: usize = 7;

/// `n` different texts of random common English words, each exactly `size` bytes, starting
/// with the 16 hex digits of the send timestamp and a space. Deterministic.
fn word_payloads(size: usize, n: usize) -> Vec<Vec<u8>> {
    const WORDS: [&str; 96] = [
        "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with",
        "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what",
        "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do",
        "how", "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so",
        "some", "her", "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write",
        "go", "see", "number", "no", "way", "could", "people", "my", "than", "first", "water", "been", "call",
        "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get", "come", "made",
    ];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    (0..n)
        .map(|_| {
            let mut s = b"0000000000000000".to_vec();
            while s.len() < size {
                s.push(b' ');
                s.extend_from_slice(WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes());
            }
            s.truncate(size);
            s
        })
        .collect()
}

/// `n` different JSON objects (a market ticker with trades and a chat line), each exactly
/// `size` bytes, starting with `{"ts":"0000000000000000"`. Deterministic.
fn json_payloads(size: usize, n: usize) -> Vec<Vec<u8>> {
    use std::fmt::Write as _;
    const SYMS: [&str; 8] = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-EUR", "DOGE-USD", "XRP-EUR", "DOT-USD", "LINK-USD"];
    const USERS: [&str; 8] = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
    const WORDS: [&str; 24] = [
        "the", "market", "is", "moving", "fast", "today", "see", "chart", "buy", "sell", "the", "dip",
        "hold", "long", "short", "volume", "spike", "on", "news", "after", "open", "bid", "ask", "spread",
    ];
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let mut r = move |m: u64| rng.next() % m;
    (0..n)
        .map(|k| {
            let target = size - 2; // room for the closing `"}`
            let mut s = String::with_capacity(size + 256);
            let sym = SYMS[r(8) as usize];
            let _ = write!(
                s,
                "{{\"ts\":\"0000000000000000\",\"type\":\"ticker\",\"channel\":\"market.{sym}\",\"seq\":{},\
                 \"bid\":\"{}.{:02}\",\"ask\":\"{}.{:02}\",\"trades\":[",
                1_000_000 + k as u64 * 7 + r(7),
                40_000 + r(5000),
                r(100),
                40_000 + r(5000),
                r(100)
            );
            let mut first = true;
            loop {
                let rec = format!(
                    "{{\"id\":{},\"price\":\"{}.{:02}\",\"qty\":\"0.{:05}\",\"side\":\"{}\",\"maker\":{},\
                     \"time\":\"2026-11-26T12:{:02}:{:02}.{:03}Z\"}}",
                    88_000_000 + r(1_000_000),
                    40_000 + r(5000),
                    r(100),
                    r(100_000),
                    if r(2) == 0 { "buy" } else { "sell" },
                    r(2) == 0,
                    r(60),
                    r(60),
                    r(1000)
                );
                // leave room for the chat part: `],"chat":{"user":"...","text":"` + some text
                if s.len() + rec.len() + 1 + 80 > target {
                    break;
                }
                if !first {
                    s.push(',');
                }
                first = false;
                s.push_str(&rec);
            }
            let _ = write!(s, "],\"chat\":{{\"user\":\"{}\",\"room\":\"lobby\",\"text\":\"", USERS[r(8) as usize]);
            while s.len() < target - 1 {
                let w = WORDS[r(WORDS.len() as u64) as usize];
                let piece = format!("{w} ");
                let take = piece.len().min(target - 1 - s.len());
                s.push_str(&piece[..take]);
            }
            // the closing `"}}`: 3 bytes from `target - 1`
            s.truncate(target - 1);
            s.push_str("\"}}");
            debug_assert_eq!(s.len(), size);
            s.into_bytes()
        })
        .collect()
}

/// The filler payload of the non-JSON modes: printable ASCII (valid UTF-8 for text mode).
fn filler_payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Outgoing data messages of one connection. Without deflate every payload is a pre-masked
/// frame and a send only copies it and patches the 16-hex-digit fields in place; with deflate
/// the patched payload is compressed per message (the context follows the negotiation).
struct Template {
    frames: Vec<Vec<u8>>,
    plain: Arc<Vec<Vec<u8>>>,
    next: usize,
    payload_off: usize,
    mask: [u8; 4],
    opcode: u8,
    z: Option<Deflater>,
    scratch: Vec<u8>,
    errors: u64,
    first_error: Option<String>,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[inline]
fn put_hex16(dst: &mut [u8], v: u64) {
    for (i, d) in dst[..16].iter_mut().enumerate() {
        *d = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

impl Template {
    #[cfg(test)]
    fn new(opcode: u8, size: usize, mask: [u8; 4]) -> Self {
        Self::with_payloads(opcode, Arc::new(vec![filler_payload(size)]), mask, None)
    }

    /// `payloads` must all have the same length.
    fn with_payloads(opcode: u8, plain: Arc<Vec<Vec<u8>>>, mask: [u8; 4], z: Option<Deflater>) -> Self {
        let size = plain.first().map_or(0, |p| p.len());
        let mut hdr = Vec::new();
        frame_header(&mut hdr, opcode, size, mask);
        let payload_off = hdr.len();
        let frames = if z.is_some() {
            Vec::new()
        } else {
            plain
                .iter()
                .map(|p| {
                    let mut f = Vec::with_capacity(payload_off + p.len());
                    frame_header(&mut f, opcode, p.len(), mask);
                    f.extend_from_slice(p);
                    apply_mask(&mut f[payload_off..], mask);
                    f
                })
                .collect()
        };
        Template { frames, plain, next: 0, payload_off, mask, opcode, z, scratch: Vec::new(), errors: 0, first_error: None }
    }

    /// Append one frame to `out`, writing each (payload offset, value) as 16 hex digits.
    #[inline]
    fn append(&mut self, out: &mut Vec<u8>, fields: &[(usize, u64)]) {
        let n = self.plain.len();
        let i = self.next;
        self.next = if i + 1 == n { 0 } else { i + 1 };
        let Some(z) = self.z.as_mut() else {
            let frame = &self.frames[i];
            let base = out.len() + self.payload_off;
            out.extend_from_slice(frame);
            for &(off, v) in fields {
                for k in 0..16 {
                    let nib = ((v >> (60 - 4 * k)) & 0xf) as usize;
                    let p = off + k;
                    out[base + p] = HEX[nib] ^ self.mask[p & 3];
                }
            }
            return;
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.plain[i]);
        for &(off, v) in fields {
            put_hex16(&mut self.scratch[off..], v);
        }
        match z.message(&self.scratch) {
            Ok(c) => {
                // RSV1 marks the compressed message
                frame_header(out, 0x40 | self.opcode, c.len(), self.mask);
                let start = out.len();
                out.extend_from_slice(c);
                apply_mask(&mut out[start..], self.mask);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

#[inline]
fn parse_hex16(b: &[u8]) -> Option<u64> {
    if b.len() < 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in &b[..16] {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

const CAP: usize = 32;

enum Ev {
    /// complete data message: opcode, total length, first CAP bytes of payload
    Msg(u8, u64, [u8; CAP], usize),
    Ping(Vec<u8>),
    Close,
}

/// Streaming frame parser for server->client (unmasked) frames. Data payload
/// bytes are not buffered: only the first CAP bytes of each message are kept
/// (of the inflated payload, for compressed messages, which are inflated as they arrive).
struct Parser {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    left: u64,
    fin: bool,
    in_msg: bool,
    msg_opcode: u8,
    msg_len: u64,
    cap: [u8; CAP],
    cap_len: usize,
    /// the current message has RSV1 (compressed)
    msg_z: bool,
    /// Some when permessage-deflate was agreed
    inf: Option<Inflater>,
}

impl Parser {
    fn new(bufsize: usize, leftover: &[u8], pmd: Option<&Pmd>) -> Self {
        let mut buf = vec![0u8; bufsize.max(leftover.len() + 1024)];
        buf[..leftover.len()].copy_from_slice(leftover);
        Parser {
            buf,
            start: 0,
            end: leftover.len(),
            left: 0,
            fin: false,
            in_msg: false,
            msg_opcode: 0,
            msg_len: 0,
            cap: [0; CAP],
            cap_len: 0,
            msg_z: false,
            inf: pmd.map(Inflater::new),
        }
    }

    /// End of the current data message (all frames read): (opcode, length, cap, cap length).
    fn end_msg(&mut self) -> Result<Ev, &'static str> {
        self.in_msg = false;
        if self.msg_z {
            let inf = self.inf.as_mut().ok_or("compressed message without inflater")?;
            self.msg_len += inf.finish(&mut self.cap, &mut self.cap_len)?;
        }
        Ok(Ev::Msg(self.msg_opcode, self.msg_len, self.cap, self.cap_len))
    }

    /// move unparsed bytes to the front of the buffer
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Copies the inflate counters (compressed messages received) into a loop's result.
    fn record(&self, res: &mut LoopResult) {
        if let Some(inf) = &self.inf {
            res.rx_wire_bytes = inf.wire_bytes;
            res.rx_plain_bytes = inf.plain_bytes;
        }
    }

    fn parse(&mut self, mut on: impl FnMut(Ev)) -> Result<(), &'static str> {
        loop {
            let avail = self.end - self.start;
            if self.left > 0 {
                if avail == 0 {
                    break;
                }
                let take = (avail as u64).min(self.left) as usize;
                if self.msg_z {
                    let inf = self.inf.as_mut().ok_or("compressed message without inflater")?;
                    let chunk = &self.buf[self.start..self.start + take];
                    self.msg_len += inf.feed(chunk, FlushDecompress::None, &mut self.cap, &mut self.cap_len)?;
                } else {
                    if self.cap_len < CAP {
                        let c = take.min(CAP - self.cap_len);
                        self.cap[self.cap_len..self.cap_len + c]
                            .copy_from_slice(&self.buf[self.start..self.start + c]);
                        self.cap_len += c;
                    }
                    self.msg_len += take as u64;
                }
                self.start += take;
                self.left -= take as u64;
                if self.left == 0 && self.fin {
                    on(self.end_msg()?);
                }
                continue;
            }
            if avail < 2 {
                break;
            }
            let b0 = self.buf[self.start];
            let b1 = self.buf[self.start + 1];
            let rsv = b0 & 0x70;
            if rsv != 0 {
                if self.inf.is_none() {
                    return Err("RSV bits set (no extension negotiated)");
                }
                if rsv != 0x40 {
                    return Err("RSV2/RSV3 set");
                }
                let op = b0 & 0x0f;
                if op != OP_TEXT && op != OP_BINARY {
                    return Err("RSV1 on a control or continuation frame");
                }
            }
            if b1 & 0x80 != 0 {
                return Err("server frame is masked");
            }
            let l7 = b1 & 0x7f;
            let hl = 2 + match l7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            if avail < hl {
                break;
            }
            let s = self.start;
            let len: u64 = match l7 {
                126 => u16::from_be_bytes([self.buf[s + 2], self.buf[s + 3]]) as u64,
                127 => u64::from_be_bytes(self.buf[s + 2..s + 10].try_into().unwrap()),
                n => n as u64,
            };
            let opcode = b0 & 0x0f;
            let fin = b0 & 0x80 != 0;
            if opcode >= 8 {
                if len > 125 || !fin {
                    return Err("bad control frame");
                }
                if avail < hl + len as usize {
                    break;
                }
                let payload = &self.buf[s + hl..s + hl + len as usize];
                let ev = match opcode {
                    OP_PING => Some(Ev::Ping(payload.to_vec())),
                    OP_CLOSE => Some(Ev::Close),
                    OP_PONG => None,
                    _ => return Err("unknown control opcode"),
                };
                self.start += hl + len as usize;
                if let Some(ev) = ev {
                    on(ev);
                }
                continue;
            }
            self.start += hl;
            match opcode {
                OP_CONT => {
                    if !self.in_msg {
                        return Err("unexpected continuation frame");
                    }
                }
                OP_TEXT | OP_BINARY => {
                    if self.in_msg {
                        return Err("new data frame inside fragmented message");
                    }
                    self.in_msg = true;
                    self.msg_opcode = opcode;
                    self.msg_len = 0;
                    self.cap_len = 0;
                    self.msg_z = rsv != 0;
                }
                _ => return Err("unknown data opcode"),
            }
            self.fin = fin;
            self.left = len;
            if len == 0 && fin {
                on(self.end_msg()?);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// connecting

/// An open WebSocket connection: the transport, bytes read past the handshake, the agreed
/// deflate.
struct Conn {
    s: Transport,
    left: Vec<u8>,
    pmd: Option<Pmd>,
}

fn other_err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::Other, msg)
}

async fn ws_connect(t: &Target, rng: &mut Rng, deflate: bool) -> io::Result<Conn> {
    let tcp = TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    let mut s = if t.tls {
        let name = rustls::pki_types::ServerName::IpAddress(t.addr.ip().into());
        Transport::Tls(Box::new(tls_connector().connect(name, tcp).await?))
    } else {
        Transport::Plain(tcp)
    };
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&rng.next().to_ne_bytes());
    key[8..].copy_from_slice(&rng.next().to_ne_bytes());
    let ext = if deflate { format!("Sec-WebSocket-Extensions: {PMD_OFFER}\r\n") } else { String::new() };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n",
        t.path,
        t.host_header,
        base64_16(&key)
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 2048];
    loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF during handshake"));
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]);
            let status = head.lines().next().unwrap_or("");
            if !status.starts_with("HTTP/1.1 101") {
                return Err(io::Error::new(
                    io::ErrorKind::Other,
                    format!("handshake refused: {status}"),
                ));
            }
            let lower = head.to_ascii_lowercase();
            if !lower.contains("sec-websocket-accept:") {
                return Err(io::Error::new(io::ErrorKind::Other, "no Sec-WebSocket-Accept"));
            }
            let mut pmd = None;
            for line in head.lines().skip(1) {
                let Some((k, v)) = line.split_once(':') else { continue };
                if !k.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
                    continue;
                }
                if !deflate {
                    return Err(other_err(format!("server negotiated an extension that was not offered: {}", v.trim())));
                }
                if pmd.is_some() {
                    return Err(other_err("repeated Sec-WebSocket-Extensions header".into()));
                }
                pmd = Some(parse_pmd_answer(v.trim()).map_err(other_err)?);
            }
            if deflate && pmd.is_none() {
                return Err(other_err("--deflate: the server did not accept permessage-deflate".into()));
            }
            return Ok(Conn { s, left: buf[pos + 4..].to_vec(), pmd });
        }
        if buf.len() > 16384 {
            return Err(io::Error::new(io::ErrorKind::Other, "handshake response too large"));
        }
    }
}

struct Connected {
    conns: Vec<Option<Conn>>,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed_ns: u64,
    hs: Hist,
}

/// Open `n` connections with at most `concurrency` handshakes in progress.
async fn connect_many(t: Arc<Target>, n: usize, concurrency: usize, timeout: f64, deflate: bool) -> Connected {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = now_ns();
    let mut workers = Vec::new();
    for w in 0..concurrency.min(n) {
        let next = next.clone();
        let t = t.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new(w as u64 + 1);
            let mut got = Vec::new();
            let mut hs = Hist::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let s = now_ns();
                let r = tokio::time::timeout(Duration::from_secs_f64(timeout), ws_connect(&t, &mut rng, deflate)).await;
                let r = match r {
                    Ok(Ok(c)) => {
                        hs.record(now_ns() - s);
                        Ok(c)
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("handshake timed out".to_string()),
                };
                got.push((i, r));
            }
            (got, hs)
        }));
    }
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let (mut ok, mut errors, mut first_error, mut hs) = (0, 0, None, Hist::default());
    for w in workers {
        let (got, h) = w.await.expect("connect worker panicked");
        hs.merge(&h);
        for (i, r) in got {
            match r {
                Ok(c) => {
                    conns[i] = Some(c);
                    ok += 1;
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    Connected { conns, ok, errors, first_error, elapsed_ns: now_ns() - t0, hs }
}

// ---------------------------------------------------------------------------
// generic per-connection event loop

/// What a connection does with the bytes it receives.
trait Handler: Send + 'static {
    /// called before every wait; may append frames to `out`
    fn poll(&mut self, _now: u64, _out: &mut Vec<u8>) {}
    /// called for every complete data message
    fn on_msg(&mut self, now: u64, opcode: u8, len: u64, cap: &[u8], out: &mut Vec<u8>);
}

#[derive(Default)]
struct LoopResult {
    errors: u64,
    first_error: Option<String>,
    /// compressed messages received: payload bytes on the wire / inflated
    rx_wire_bytes: u64,
    rx_plain_bytes: u64,
}

/// Counts an error of a connection's loop (the first one is kept).
fn fail(res: &mut LoopResult, e: String) {
    res.errors += 1;
    res.first_error.get_or_insert(e);
}

/// Hands what the parser holds to the handler and answers pings. Err says why the connection
/// must stop: a protocol error, or the server's close frame.
fn consume_input<H: Handler>(p: &mut Parser, h: &mut H, now: u64, out: &mut Vec<u8>, rng: &mut Rng) -> Result<(), String> {
    let mut closed = false;
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    let r = p.parse(|ev| match ev {
        Ev::Msg(op, len, cap, cl) => h.on_msg(now, op, len, &cap[..cl], out),
        Ev::Ping(pl) => pongs.push(pl),
        Ev::Close => closed = true,
    });
    for pl in pongs {
        control_frame(out, OP_PONG, &pl, rng);
    }
    r.map_err(|e| format!("protocol error: {e}"))?;
    if closed {
        return Err("server sent close frame".into());
    }
    Ok(())
}

/// Drive one connection until `end_ns`: optimistic non-blocking writes of `out`;
/// reads via AsyncRead (a short read clears readiness, saving an EAGAIN syscall),
/// parsed by the streaming parser.
async fn run_conn<H: Handler>(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    mut h: H,
    end_ns: u64,
    bufsize: usize,
    wake: Option<Arc<Notify>>,
    seed: u64,
    spin: bool,
    pmd: Option<Pmd>,
) -> (H, LoopResult) {
    let mut p = Parser::new(bufsize, &leftover, pmd.as_ref());
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut out_pos = 0usize;
    let mut res = LoopResult::default();
    macro_rules! ret {
        () => {{
            p.record(&mut res);
            return (h, res);
        }};
    }
    let mut rng = Rng::new(seed);
    let deadline = tokio::time::sleep_until(at_ns(end_ns));
    tokio::pin!(deadline);
    let (mut rd, wr) = stream.split();
    'outer: loop {
        let now = now_ns();
        if now >= end_ns {
            break;
        }
        // parse buffered input (also whatever came with the handshake response)
        if let Err(e) = consume_input(&mut p, &mut h, now, &mut out, &mut rng) {
            fail(&mut res, e);
            ret!();
        }
        h.poll(now, &mut out);
        // optimistic write
        while out_pos < out.len() {
            match wr.try_write(&out[out_pos..]) {
                Ok(n) => out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    fail(&mut res, format!("write: {e}"));
                    ret!();
                }
            }
        }
        if out_pos == out.len() {
            out.clear();
            out_pos = 0;
        }
        p.compact();
        let pending_out = !out.is_empty();
        let space = &mut p.buf[p.end..];
        if spin {
            match rd.try_read(space) {
                Ok(0) => {
                    fail(&mut res, "connection closed by server".into());
                    ret!();
                }
                Ok(n) => p.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::task::yield_now().await,
                Err(e) => {
                    fail(&mut res, format!("read: {e}"));
                    ret!();
                }
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = &mut deadline => break 'outer,
            _ = async { match &wake { Some(n) => n.notified().await, None => std::future::pending().await } } => {}
            r = rd.read(space) => match r {
                Ok(0) => {
                    fail(&mut res, "connection closed by server".into());
                    ret!();
                }
                Ok(n) => p.end += n,
                Err(e) => {
                    fail(&mut res, format!("read: {e}"));
                    ret!();
                }
            },
            r = wr.writable(), if pending_out => {
                if let Err(e) = r {
                    fail(&mut res, format!("writable: {e}"));
                    ret!();
                }
            }
        }
    }
    // polite close if no frame is half-written
    if out_pos == out.len() {
        let mut cf = Vec::new();
        control_frame(&mut cf, OP_CLOSE, &1000u16.to_be_bytes(), &mut rng);
        let _ = wr.try_write(&cf);
    }
    ret!()
}

/// `run_conn` for TLS: plain async reads and writes (the echo workloads keep a bounded
/// number of bytes in flight, so writing all before reading cannot deadlock).
async fn run_conn_tls<H: Handler>(
    mut stream: tokio_rustls::client::TlsStream<TcpStream>,
    leftover: Vec<u8>,
    mut h: H,
    end_ns: u64,
    bufsize: usize,
    seed: u64,
    pmd: Option<Pmd>,
) -> (H, LoopResult) {
    let mut p = Parser::new(bufsize, &leftover, pmd.as_ref());
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut res = LoopResult::default();
    macro_rules! ret {
        () => {{
            p.record(&mut res);
            return (h, res);
        }};
    }
    let mut rng = Rng::new(seed);
    let deadline = tokio::time::sleep_until(at_ns(end_ns));
    tokio::pin!(deadline);
    loop {
        let now = now_ns();
        if now >= end_ns {
            break;
        }
        if let Err(e) = consume_input(&mut p, &mut h, now, &mut out, &mut rng) {
            fail(&mut res, e);
            ret!();
        }
        h.poll(now, &mut out);
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                fail(&mut res, format!("write: {e}"));
                ret!();
            }
            out.clear();
        }
        p.compact();
        let space = &mut p.buf[p.end..];
        tokio::select! {
            biased;
            _ = &mut deadline => break,
            r = stream.read(space) => match r {
                Ok(0) => {
                    fail(&mut res, "connection closed by server".into());
                    ret!();
                }
                Ok(n) => p.end += n,
                Err(e) => {
                    fail(&mut res, format!("read: {e}"));
                    ret!();
                }
            },
        }
    }
    let mut cf = Vec::new();
    control_frame(&mut cf, OP_CLOSE, &1000u16.to_be_bytes(), &mut rng);
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&cf)).await;
    ret!()
}

fn bufsize_for(size: usize) -> usize {
    if size >= 64 * 1024 { 256 * 1024 } else { 64 * 1024 }
}

// ---------------------------------------------------------------------------
// echo mode

struct EchoH {
    tmpl: Template,
    warm_ns: u64,
    end_ns: u64,
    size: u64,
    opcode: u8,
    msgs: u64,
    total_msgs: u64,
    bad: u64,
    hist: Hist,
    to_send: usize,
    /// offset of the timestamp (16 hex digits) in the payload
    ts_off: usize,
}

impl Handler for EchoH {
    fn poll(&mut self, now: u64, out: &mut Vec<u8>) {
        // keep K in flight: one replacement per echoed message, all stamped
        // with one fresh clock read taken right before they are written
        if self.to_send > 0 {
            if now < self.end_ns {
                let ts = now_ns();
                for _ in 0..self.to_send {
                    self.tmpl.append(out, &[(self.ts_off, ts)]);
                }
            }
            self.to_send = 0;
        }
    }
    fn on_msg(&mut self, now: u64, opcode: u8, len: u64, cap: &[u8], _out: &mut Vec<u8>) {
        self.total_msgs += 1;
        if len != self.size || opcode != self.opcode {
            self.bad += 1;
        }
        if let Some(ts) = parse_hex16(cap.get(self.ts_off..).unwrap_or(&[])) {
            if now >= self.warm_ns && now < self.end_ns {
                self.msgs += 1;
                self.hist.record(now.saturating_sub(ts));
            }
        } else {
            self.bad += 1;
        }
        self.to_send += 1;
    }
}

/// The payloads of echo mode / connect --send-one, and the timestamp offset in them.
fn payloads(a: &Args) -> (Arc<Vec<Vec<u8>>>, usize) {
    if a.json {
        (Arc::new(json_payloads(a.size, a.json_variants)), JSON_TS_OFF)
    } else if a.words {
        (Arc::new(word_payloads(a.size, a.json_variants)), 0)
    } else {
        (Arc::new(vec![filler_payload(a.size)]), 0)
    }
}

async fn mode_echo(a: Args, t: Arc<Target>) -> String {
    let c = connect_many(t, a.conns, a.concurrency, a.connect_timeout, a.deflate).await;
    if c.ok == 0 {
        return error_json(&a, &format!("no connection: {}", c.first_error.unwrap_or_default()));
    }
    let start = now_ns();
    let warm_ns = start + (a.warmup * 1e9) as u64;
    let end_ns = warm_ns + (a.duration * 1e9) as u64;
    let opcode = if a.binary { OP_BINARY } else { OP_TEXT };
    let mut rng = Rng::new(7);
    let (plain, ts_off) = payloads(&a);
    let mut agreed: Option<Pmd> = None;
    let mut mixed_pmd = 0u64;
    let mut tasks = Vec::new();
    for (i, conn) in c.conns.into_iter().enumerate() {
        let Some(Conn { s, left, pmd }) = conn else { continue };
        match agreed {
            None => agreed = pmd,
            Some(p) if Some(p) != pmd => mixed_pmd += 1,
            _ => {}
        }
        let z = pmd.as_ref().map(|p| Deflater::new(a.deflate_level, p));
        // each connection starts at a different payload of the pool
        let mut tmpl = Template::with_payloads(opcode, plain.clone(), rng.mask(), z);
        tmpl.next = i % plain.len();
        let mut out0 = Vec::new();
        let t0 = now_ns();
        for _ in 0..a.inflight {
            tmpl.append(&mut out0, &[(ts_off, t0)]);
        }
        let h = EchoH {
            tmpl, warm_ns, end_ns, size: a.size as u64, opcode, msgs: 0, total_msgs: 0, bad: 0,
            hist: Hist::default(), to_send: 0, ts_off,
        };
        let bufsize = bufsize_for(a.size);
        let spin = a.spin;
        tasks.push(tokio::spawn(async move {
            // the first K frames go out before entering the loop
            let mut s = s;
            if let Err(e) = s.write_all(&out0).await {
                return (h, LoopResult { errors: 1, first_error: Some(format!("write: {e}")), ..Default::default() });
            }
            match s {
                Transport::Plain(s) => run_conn(s, left, h, end_ns, bufsize, None, i as u64 + 100, spin, pmd).await,
                Transport::Tls(s) => run_conn_tls(*s, left, h, end_ns, bufsize, i as u64 + 100, pmd).await,
            }
        }));
    }
    let (cpu, wall) = measure_window(warm_ns, end_ns).await;
    let mut hist = Hist::default();
    let (mut msgs, mut total, mut bad, mut errors, mut first_err) = (0u64, 0u64, 0u64, c.errors as u64, c.first_error);
    let (mut tx_plain, mut tx_wire, mut rx_wire, mut rx_plain) = (0u64, 0u64, 0u64, 0u64);
    for tk in tasks {
        if let Ok(Ok((h, r))) = tokio::time::timeout(Duration::from_secs(10), tk).await {
            msgs += h.msgs;
            total += h.total_msgs;
            bad += h.bad + h.tmpl.errors;
            hist.merge(&h.hist);
            errors += r.errors;
            if first_err.is_none() {
                first_err = r.first_error.or(h.tmpl.first_error);
            }
            if let Some(z) = &h.tmpl.z {
                tx_plain += z.plain_bytes;
                tx_wire += z.wire_bytes;
            }
            rx_wire += r.rx_wire_bytes;
            rx_plain += r.rx_plain_bytes;
        } else {
            errors += 1;
        }
    }
    if mixed_pmd > 0 && first_err.is_none() {
        first_err = Some(format!("{mixed_pmd} connection(s) agreed different deflate parameters"));
    }
    let mut j = Json::new();
    j.str("mode", "echo")
        .int("conns", a.conns as u64)
        .int("connected", c.ok as u64)
        .int("inflight", a.inflight as u64)
        .int("size", a.size as u64)
        .bool("binary", a.binary)
        .num("warmup_s", a.warmup)
        .num("duration_s", wall)
        .int("msgs", msgs)
        .num("msgs_per_sec", msgs as f64 / wall)
        .num("mbytes_per_sec", msgs as f64 * a.size as f64 / wall / 1e6)
        .hist("", &hist)
        .int("total_msgs", total)
        .int("bad_msgs", bad)
        .int("errors", errors + bad)
        .num("cpu_pct", cpu)
        // the loadgen's own CPU time per received message in the window (all its work: send,
        // compress, receive, inflate)
        .num("cpu_us_per_msg", if msgs > 0 { cpu / 100.0 * wall * 1e6 / msgs as f64 } else { f64::NAN })
        .bool("spin", a.spin)
        .bool("json", a.json)
        .bool("words", a.words)
        .int("threads", a.threads as u64);
    if a.deflate {
        j.str("deflate", &agreed.map(|p| p.describe()).unwrap_or_default())
            .int("deflate_level", a.deflate_level as u64)
            .int("tx_plain_bytes", tx_plain)
            .int("tx_wire_bytes", tx_wire)
            .num("tx_ratio", if tx_plain > 0 { tx_wire as f64 / tx_plain as f64 } else { f64::NAN })
            .int("rx_wire_bytes", rx_wire)
            .int("rx_plain_bytes", rx_plain)
            .num("rx_ratio", if rx_plain > 0 { rx_wire as f64 / rx_plain as f64 } else { f64::NAN });
    }
    if let Some(e) = first_err {
        j.str("first_error", &e);
    }
    j.finish()
}

/// Sleep through warm-up and the measured window, reporting phases on stderr.
/// Returns (loadgen CPU% during the window, window wall seconds).
async fn measure_window(warm_ns: u64, end_ns: u64) -> (f64, f64) {
    tokio::time::sleep_until(at_ns(warm_ns)).await;
    let c0 = cpu_seconds();
    let w0 = now_ns();
    eprintln!("PHASE measure");
    tokio::time::sleep_until(at_ns(end_ns)).await;
    let c1 = cpu_seconds();
    let w1 = now_ns();
    eprintln!("PHASE done");
    let wall = (w1 - w0) as f64 / 1e9;
    ((c1 - c0) / wall * 100.0, (end_ns - warm_ns) as f64 / 1e9)
}

fn error_json(a: &Args, msg: &str) -> String {
    let mut j = Json::new();
    j.str("mode", &a.mode).str("error", msg).int("errors", 1);
    j.finish()
}

// ---------------------------------------------------------------------------
// broadcast mode

const SLOTS: usize = 256;

struct Slot {
    seq: AtomicU64,
    remaining: AtomicU32,
    pub_ts: AtomicU64,
}

struct Bcast {
    n: u32,
    slots: Vec<Slot>,
    completed: AtomicU64,
    completed_in_window: AtomicU64,
    fanout: Mutex<Hist>,
    notify: Arc<Notify>,
    warm_ns: u64,
    end_ns: u64,
}

struct SubH {
    bc: Arc<Bcast>,
    deliveries: u64,
    bad: u64,
    hist: Hist,
}

impl Handler for SubH {
    fn on_msg(&mut self, now: u64, _opcode: u8, _len: u64, cap: &[u8], _out: &mut Vec<u8>) {
        let (Some(seq), Some(ts)) = (parse_hex16(cap), parse_hex16(cap.get(16..).unwrap_or(&[]))) else {
            self.bad += 1;
            return;
        };
        let bc = &*self.bc;
        let in_win = now >= bc.warm_ns && now < bc.end_ns;
        if in_win {
            self.deliveries += 1;
            self.hist.record(now.saturating_sub(ts));
        }
        let slot = &bc.slots[(seq as usize) % SLOTS];
        if slot.seq.load(Ordering::Acquire) == seq && slot.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            bc.completed.fetch_add(1, Ordering::AcqRel);
            if in_win {
                bc.completed_in_window.fetch_add(1, Ordering::Relaxed);
                let lat = now.saturating_sub(slot.pub_ts.load(Ordering::Acquire));
                bc.fanout.lock().unwrap().record(lat);
            }
            bc.notify.notify_one();
        }
    }
}

struct PubH {
    bc: Arc<Bcast>,
    tmpl: Template,
    inflight: u64,
    published: u64,
}

impl Handler for PubH {
    fn poll(&mut self, now: u64, out: &mut Vec<u8>) {
        let bc = &*self.bc;
        while now < bc.end_ns && self.published - bc.completed.load(Ordering::Acquire) < self.inflight {
            let seq = self.published;
            let slot = &bc.slots[(seq as usize) % SLOTS];
            let ts = now_ns();
            slot.seq.store(u64::MAX, Ordering::Release);
            slot.remaining.store(bc.n, Ordering::Release);
            slot.pub_ts.store(ts, Ordering::Release);
            slot.seq.store(seq, Ordering::Release);
            self.tmpl.append(out, &[(0, seq), (16, ts)]);
            self.published += 1;
        }
    }
    fn on_msg(&mut self, _: u64, _: u8, _: u64, _: &[u8], _: &mut Vec<u8>) {
        // the publisher receives its own broadcast too: drained and ignored
    }
}

async fn mode_broadcast(a: Args, t: Arc<Target>) -> String {
    // N subscribers first, then the publisher (so every subscriber is registered); with
    // --url2, the last conns / 2 subscribers on the second server
    let t2 = match a.url2.as_deref().map(parse_url) {
        None => None,
        Some(Ok(t2)) => Some(Arc::new(t2)),
        Some(Err(e)) => return error_json(&a, &e),
    };
    let n2 = if t2.is_some() { a.conns / 2 } else { 0 };
    let mut c = connect_many(t.clone(), a.conns - n2, a.concurrency, a.connect_timeout, a.deflate).await;
    let mut connected2 = 0;
    if let Some(t2) = t2 {
        let c2 = connect_many(t2, n2, a.concurrency, a.connect_timeout, a.deflate).await;
        connected2 = c2.ok;
        c.conns.extend(c2.conns);
        c.ok += c2.ok;
        c.errors += c2.errors;
        if c.first_error.is_none() {
            c.first_error = c2.first_error;
        }
    }
    if c.ok == 0 {
        return error_json(&a, &format!("no connection: {}", c.first_error.unwrap_or_default()));
    }
    let p = connect_many(t, 1, 1, a.connect_timeout, a.deflate).await;
    // wss:// is refused for broadcast mode in parse_args
    let Some(Some(Conn { s: Transport::Plain(ps), left: pleft, pmd: ppmd })) = p.conns.into_iter().next() else {
        return error_json(&a, &format!("publisher: {}", p.first_error.unwrap_or_default()));
    };
    // let the server finish registering the last clients
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = now_ns();
    let warm_ns = start + (a.warmup * 1e9) as u64;
    let end_ns = warm_ns + (a.duration * 1e9) as u64;
    let bc = Arc::new(Bcast {
        n: c.ok as u32,
        slots: (0..SLOTS)
            .map(|_| Slot { seq: AtomicU64::new(u64::MAX), remaining: AtomicU32::new(0), pub_ts: AtomicU64::new(0) })
            .collect(),
        completed: AtomicU64::new(0),
        completed_in_window: AtomicU64::new(0),
        fanout: Mutex::new(Hist::default()),
        notify: Arc::new(Notify::new()),
        warm_ns,
        end_ns,
    });
    let opcode = if a.binary { OP_BINARY } else { OP_TEXT };
    let mut tasks = Vec::new();
    for (i, conn) in c.conns.into_iter().enumerate() {
        let Some(Conn { s: Transport::Plain(s), left, pmd }) = conn else { continue };
        let h = SubH { bc: bc.clone(), deliveries: 0, bad: 0, hist: Hist::default() };
        tasks.push(tokio::spawn(run_conn(s, left, h, end_ns, bufsize_for(a.size), None, i as u64 + 100, false, pmd)));
    }
    let mut rng = Rng::new(3);
    let z = ppmd.as_ref().map(|p| Deflater::new(a.deflate_level, p));
    let tmpl = Template::with_payloads(opcode, Arc::new(vec![filler_payload(a.size)]), rng.mask(), z);
    let ph = PubH { bc: bc.clone(), tmpl, inflight: a.inflight as u64, published: 0 };
    let pubtask = tokio::spawn(run_conn(ps, pleft, ph, end_ns, bufsize_for(a.size), Some(bc.notify.clone()), 1, false, ppmd));
    let (cpu, wall) = measure_window(warm_ns, end_ns).await;
    let mut hist = Hist::default();
    let (mut deliveries, mut bad, mut errors, mut first_err) = (0u64, 0u64, c.errors as u64, c.first_error);
    for tk in tasks {
        if let Ok(Ok((h, r))) = tokio::time::timeout(Duration::from_secs(10), tk).await {
            deliveries += h.deliveries;
            bad += h.bad;
            hist.merge(&h.hist);
            errors += r.errors;
            if first_err.is_none() {
                first_err = r.first_error;
            }
        } else {
            errors += 1;
        }
    }
    let published = match tokio::time::timeout(Duration::from_secs(10), pubtask).await {
        Ok(Ok((h, r))) => {
            errors += r.errors;
            if first_err.is_none() {
                first_err = r.first_error;
            }
            h.published
        }
        _ => {
            errors += 1;
            0
        }
    };
    let completed = bc.completed.load(Ordering::Acquire);
    let cw = bc.completed_in_window.load(Ordering::Acquire);
    let fan = bc.fanout.lock().unwrap().clone();
    let mut j = Json::new();
    j.str("mode", "broadcast")
        .int("conns", a.conns as u64)
        .int("connected", c.ok as u64)
        .int("connected_url2", connected2 as u64)
        .int("inflight", a.inflight as u64)
        .int("size", a.size as u64)
        .num("warmup_s", a.warmup)
        .num("duration_s", wall)
        .int("published", published)
        .int("completed", completed)
        .int("incomplete", published.saturating_sub(completed))
        .int("broadcasts", cw)
        .num("broadcasts_per_sec", cw as f64 / wall)
        .int("deliveries", deliveries)
        .num("deliveries_per_sec", deliveries as f64 / wall)
        .hist("fanout_", &fan)
        .hist("delivery_", &hist)
        .int("errors", errors + bad)
        .num("cpu_pct", cpu)
        .int("threads", a.threads as u64);
    if let Some(e) = first_err {
        j.str("first_error", &e);
    }
    j.finish()
}

// ---------------------------------------------------------------------------
// connect mode

async fn close_one(mut s: Transport, seed: u64) -> bool {
    let mut rng = Rng::new(seed);
    let mut cf = Vec::new();
    control_frame(&mut cf, OP_CLOSE, &1000u16.to_be_bytes(), &mut rng);
    if s.write_all(&cf).await.is_err() {
        return false;
    }
    // wait for the server's close frame and then its FIN (the server closes the
    // TCP connection first, as RFC 6455 says); bounded
    let mut got_close = false;
    let fut = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return true,
                Ok(n) => {
                    // an idle connection receives nothing but the close reply
                    if n >= 2 && buf[0] & 0x0f == OP_CLOSE {
                        got_close = true;
                    }
                }
                Err(_) => return got_close,
            }
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(3), fut).await;
    r.unwrap_or(got_close)
}

/// connect --send-one: send one message and wait for its echo; then drop this side's codec
/// state (only the server's is being measured) and return the bare stream.
async fn one_roundtrip(c: Conn, plain: Arc<Vec<Vec<u8>>>, opcode: u8, ts_off: usize, level: u32, seed: u64) -> Result<Transport, String> {
    let Conn { mut s, left, pmd } = c;
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    {
        let z = pmd.as_ref().map(|p| Deflater::new(level, p));
        let mut t = Template::with_payloads(opcode, plain, rng.mask(), z);
        t.next = seed as usize % t.plain.len();
        t.append(&mut out, &[(ts_off, now_ns())]);
        if let Some(e) = t.first_error {
            return Err(e);
        }
    }
    s.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
    let mut p = Parser::new(16 * 1024, &left, pmd.as_ref());
    loop {
        let mut got = false;
        let mut pongs = Vec::new();
        let mut closed = false;
        p.parse(|ev| match ev {
            Ev::Msg(..) => got = true,
            Ev::Ping(pl) => pongs.push(pl),
            Ev::Close => closed = true,
        })
        .map_err(|e| format!("protocol error: {e}"))?;
        if got {
            return Ok(s);
        }
        if closed {
            return Err("server sent close frame".into());
        }
        for pl in pongs {
            let mut f = Vec::new();
            control_frame(&mut f, OP_PONG, &pl, &mut rng);
            s.write_all(&f).await.map_err(|e| format!("write: {e}"))?;
        }
        p.compact();
        if p.end == p.buf.len() {
            return Err("frame header larger than the read buffer".into());
        }
        let end = p.end;
        match s.read(&mut p.buf[end..]).await {
            Ok(0) => return Err("connection closed by server".into()),
            Ok(n) => p.end += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

async fn mode_connect(a: Args, t: Arc<Target>) -> String {
    eprintln!("CONNECTING {}", a.conns);
    let cpu0 = cpu_seconds();
    let c = connect_many(t, a.conns, a.concurrency, a.connect_timeout, a.deflate).await;
    let cpu1 = cpu_seconds();
    let secs = c.elapsed_ns as f64 / 1e9;
    let agreed = c.conns.iter().flatten().find_map(|c| c.pmd);
    let (mut sent_ok, mut sent_err, mut sent_first_err) = (0u64, 0u64, None::<String>);
    let conns: Vec<Conn> = c.conns.into_iter().flatten().collect();
    let streams: Vec<Transport> = if a.send_one {
        let (plain, ts_off) = payloads(&a);
        let opcode = if a.binary { OP_BINARY } else { OP_TEXT };
        let n = conns.len();
        let queue = Arc::new(Mutex::new(conns.into_iter().enumerate().collect::<Vec<_>>()));
        let mut workers = Vec::new();
        for _ in 0..a.concurrency.min(n).max(1) {
            let q = queue.clone();
            let plain = plain.clone();
            let level = a.deflate_level;
            workers.push(tokio::spawn(async move {
                let mut kept = Vec::new();
                let (mut bad, mut first) = (0u64, None);
                loop {
                    let item = q.lock().map(|mut v| v.pop()).unwrap_or(None);
                    let Some((i, c)) = item else { break };
                    let r = tokio::time::timeout(
                        Duration::from_secs(10),
                        one_roundtrip(c, plain.clone(), opcode, ts_off, level, i as u64 + 1000),
                    )
                    .await;
                    match r {
                        Ok(Ok(s)) => kept.push(s),
                        Ok(Err(e)) => {
                            bad += 1;
                            first.get_or_insert(e);
                        }
                        Err(_) => {
                            bad += 1;
                            first.get_or_insert("no echo within 10 s".to_string());
                        }
                    }
                }
                (kept, bad, first)
            }));
        }
        let mut all = Vec::with_capacity(n);
        for w in workers {
            match tokio::time::timeout(Duration::from_secs(120), w).await {
                Ok(Ok((kept, bad, first))) => {
                    sent_ok += kept.len() as u64;
                    all.extend(kept);
                    sent_err += bad;
                    if sent_first_err.is_none() {
                        sent_first_err = first;
                    }
                }
                _ => {
                    sent_err += 1;
                    sent_first_err.get_or_insert("send-one worker failed".into());
                }
            }
        }
        all
    } else {
        conns.into_iter().map(|c| c.s).collect()
    };
    eprintln!("IDLE {}", streams.len());
    let _ = io::stderr().flush();
    tokio::time::sleep(Duration::from_secs_f64(a.idle)).await;
    eprintln!("CLOSING");
    let t0 = now_ns();
    let queue = Arc::new(Mutex::new(streams));
    let mut workers = Vec::new();
    for w in 0..a.concurrency.min(queue.lock().unwrap().len()).max(1) {
        let q = queue.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0u64, 0u64);
            loop {
                let s = q.lock().unwrap().pop();
                let Some(s) = s else { break };
                if close_one(s, w as u64 + 5).await { ok += 1 } else { bad += 1 }
            }
            (ok, bad)
        }));
    }
    let (mut closed_ok, mut closed_bad) = (0u64, 0u64);
    for w in workers {
        if let Ok(Ok((o, b))) = tokio::time::timeout(Duration::from_secs(120), w).await {
            closed_ok += o;
            closed_bad += b;
        }
    }
    let close_secs = (now_ns() - t0) as f64 / 1e9;
    eprintln!("PHASE done");
    let mut j = Json::new();
    j.str("mode", "connect")
        .int("conns", a.conns as u64)
        .int("connected", c.ok as u64)
        .int("connect_errors", c.errors as u64)
        .num("connect_s", secs)
        .num("connections_per_sec", c.ok as f64 / secs)
        .hist("handshake_", &c.hs)
        .num("connect_cpu_pct", (cpu1 - cpu0) / secs * 100.0)
        .num("idle_s", a.idle)
        .int("closed_clean", closed_ok)
        .int("closed_unclean", closed_bad)
        .num("close_s", close_secs)
        .int("errors", c.errors as u64 + closed_bad + sent_err)
        .int("concurrency", a.concurrency as u64)
        .int("threads", a.threads as u64);
    if a.send_one {
        j.int("idle_conns", sent_ok).int("send_one_errors", sent_err).int("size", a.size as u64).bool("json", a.json);
    }
    if a.deflate {
        j.str("deflate", &agreed.map(|p| p.describe()).unwrap_or_default());
    }
    if let Some(e) = c.first_error.or(sent_first_err) {
        j.str("first_error", &e);
    }
    j.finish()
}

// ---------------------------------------------------------------------------

/// `loadgen codec`: no network. Times the per-message deflate work in this process, for one
/// connection with the agreed default (context takeover both ways):
///  * client: what the loadgen does per echoed message (compress at --deflate-level, inflate
///    the server's reply);
///  * server floor: what any server must do per echoed message (inflate the client's message,
///    compress the reply at zlib's default level 6, as ws and ws-native do).
fn mode_codec(a: &Args) -> String {
    let (plain, ts_off) = payloads(a);
    let pmd = Pmd::default();
    // one set of contexts per connection, used in turn as a server with --conns N connections
    // uses them (N contexts' memory does not fit in the caches when N is large)
    let conns = a.conns.max(1);
    let mut ctx: Vec<(Deflater, Deflater, Inflater, Inflater)> = (0..conns)
        .map(|_| (Deflater::new(a.deflate_level, &pmd), Deflater::new(6, &pmd), Inflater::new(&pmd), Inflater::new(&pmd)))
        .collect();
    let mut sent = vec![0usize; conns]; // messages per connection, each cycling through the payloads
    let mut buf = Vec::new();
    let mut cap = [0u8; CAP];
    let mut cl: usize;
    let (mut t_client, mut t_server, mut n) = (0u64, 0u64, 0u64);
    let end = now_ns() + (a.duration * 1e9) as u64;
    let c0 = cpu_seconds();
    let w0 = now_ns();
    while now_ns() < end && n < 100_000_000 {
        for _ in 0..64 {
            let ci = n as usize % conns;
            let p = &plain[sent[ci] % plain.len()];
            sent[ci] += 1;
            let (cz, sz, sinf, cinf) = &mut ctx[ci];
            buf.clear();
            buf.extend_from_slice(p);
            put_hex16(&mut buf[ts_off..], n);
            let t0 = now_ns();
            let wire = match cz.message(&buf) {
                Ok(w) => w.to_vec(),
                Err(e) => return error_json(a, &e),
            };
            let t1 = now_ns();
            cl = 0;
            let r1 = sinf.feed(&wire, FlushDecompress::None, &mut cap, &mut cl).and_then(|x| Ok(x + sinf.finish(&mut cap, &mut cl)?));
            let reply = match (r1, sz.message(&buf)) {
                (Ok(_), Ok(w)) => w.to_vec(),
                (Err(e), _) => return error_json(a, e),
                (_, Err(e)) => return error_json(a, &e),
            };
            let t2 = now_ns();
            cl = 0;
            if let Err(e) = cinf.feed(&reply, FlushDecompress::None, &mut cap, &mut cl).and_then(|x| Ok(x + cinf.finish(&mut cap, &mut cl)?)) {
                return error_json(a, e);
            }
            let t3 = now_ns();
            t_client += (t1 - t0) + (t3 - t2);
            t_server += t2 - t1;
            n += 1;
        }
    }
    let wall = (now_ns() - w0) as f64 / 1e9;
    let cpu = cpu_seconds() - c0;
    // on a shared machine wall time includes time spent descheduled: split the process's CPU
    // time between the two sides in proportion to their wall time instead
    let n = n.max(1) as f64;
    let total = (t_client + t_server).max(1) as f64;
    let client_s = cpu * t_client as f64 / total;
    let server_s = cpu * t_server as f64 / total;
    let mut j = Json::new();
    j.str("mode", "codec")
        .int("size", a.size as u64)
        .bool("json", a.json)
        .bool("words", a.words)
        .int("deflate_level", a.deflate_level as u64)
        .int("conns", conns as u64)
        .int("messages", n as u64)
        .num("client_cpu_us_per_msg", client_s / n * 1e6)
        .num("server_floor_cpu_us_per_msg", server_s / n * 1e6)
        .num("client_max_msgs_per_sec", n / client_s)
        .num("server_floor_max_msgs_per_sec", n / server_s)
        .num("client_tx_ratio", ctx.iter().map(|c| c.0.wire_bytes).sum::<u64>() as f64 / ctx.iter().map(|c| c.0.plain_bytes).sum::<u64>().max(1) as f64)
        .num("server_tx_ratio", ctx.iter().map(|c| c.1.wire_bytes).sum::<u64>() as f64 / ctx.iter().map(|c| c.1.plain_bytes).sum::<u64>().max(1) as f64)
        .num("cpu_pct", cpu / wall * 100.0);
    j.finish()
}

/// `loadgen payloads`: the --json or --words texts, one per line (none contains a newline), so
/// that other tools time their own codecs on exactly what the echo mode sends.
fn mode_payloads(a: &Args) -> String {
    let (plain, _) = payloads(a);
    plain.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>().join("\n")
}

fn run<F: Future<Output = String>>(threads: usize, f: F) -> String {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
    .expect("tokio runtime");
    rt.block_on(f)
}

fn main() {
    EPOCH.get_or_init(Instant::now);
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let t = match parse_url(&a.url) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let (soft, _hard) = raise_nofile();
    if (soft as usize) < a.conns + 64 {
        eprintln!("warning: RLIMIT_NOFILE is {soft}, fewer than --conns {} + 64", a.conns);
    }
    let out = match a.mode.as_str() {
        "echo" => run(a.threads, mode_echo(a.clone(), t)),
        "broadcast" => run(a.threads, mode_broadcast(a.clone(), t)),
        "connect" => run(a.threads, mode_connect(a.clone(), t)),
        "codec" => mode_codec(&a),
        "payloads" => mode_payloads(&a),
        _ => unreachable!(),
    };
    let mut so = io::stdout().lock();
    let _ = writeln!(so, "{out}");
    let _ = so.flush();
    // do not wait for lingering sockets/tasks
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_index_roundtrip() {
        for v in [0u64, 1, 100, 255, 256, 300, 511, 512, 1000, 123_456, 10_000_000_000] {
            let i = Hist::index(v);
            let back = Hist::value(i);
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.01, "v={v} i={i} back={back}");
        }
        let mut last = 0;
        for v in 0..100_000u64 {
            let i = Hist::index(v);
            assert!(i >= last);
            last = i;
        }
    }

    #[test]
    fn mask_matches_bytewise() {
        let mask = [1, 2, 3, 4];
        let mut a: Vec<u8> = (0..37).collect();
        let b = a.clone();
        apply_mask(&mut a, mask);
        for i in 0..37 {
            assert_eq!(a[i], b[i] ^ mask[i % 4]);
        }
    }

    #[test]
    fn template_and_parser() {
        let mut t = Template::new(OP_TEXT, 40, [9, 8, 7, 6]);
        let mut out = Vec::new();
        t.append(&mut out, &[(0, 0xdead_beef), (16, 42)]);
        // unmask what the server would see, and re-frame it unmasked
        let payload: Vec<u8> = out[6..].iter().enumerate().map(|(i, b)| b ^ [9, 8, 7, 6][i % 4]).collect();
        assert_eq!(parse_hex16(&payload), Some(0xdead_beef));
        assert_eq!(parse_hex16(&payload[16..]), Some(42));
        let mut srv = vec![0x01, 20];
        srv.extend_from_slice(&payload[..20]);
        srv.extend_from_slice(&[0x80, 20]);
        srv.extend_from_slice(&payload[20..]);
        srv.extend_from_slice(&[0x89, 0]);
        let mut p = Parser::new(1024, &srv, None);
        let mut msgs = 0;
        p.parse(|ev| {
            if let Ev::Msg(op, len, cap, cl) = ev {
                assert_eq!((op, len, cl), (OP_TEXT, 40, 32));
                assert_eq!(parse_hex16(&cap), Some(0xdead_beef));
                msgs += 1;
            }
        })
        .unwrap();
        assert_eq!(msgs, 1);
    }

    #[test]
    fn urls() {
        let t = parse_url("wss://127.0.0.1:8443/x").unwrap();
        assert!(t.tls && t.addr.port() == 8443 && t.path == "/x");
        let t = parse_url("ws://127.0.0.1").unwrap();
        assert!(!t.tls && t.addr.port() == 80 && t.path == "/");
        assert_eq!(parse_url("wss://127.0.0.1").unwrap().addr.port(), 443);
        assert!(parse_url("http://127.0.0.1/").is_err());
    }

    #[test]
    fn pmd_answers() {
        assert_eq!(parse_pmd_answer("permessage-deflate").unwrap(), Pmd::default());
        let p = parse_pmd_answer("permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12").unwrap();
        assert!(p.server_nct && p.client_nct && p.client_bits == Some(12) && p.server_bits.is_none());
        assert!(parse_pmd_answer("permessage-deflate; server_max_window_bits=\"10\"").is_ok());
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=8",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert!(parse_pmd_answer(bad).is_err(), "{bad}");
        }
    }

    /// what our Deflater sends inflates with a plain raw inflater, message after message,
    /// and our Inflater reads what a plain sync-flushing deflater produces, fed in pieces
    fn roundtrip(pmd: Pmd) {
        let msgs = json_payloads(1024, 8);
        let mut z = Deflater::new(6, &pmd);
        let mut d = Decompress::new_with_window_bits(false, 15);
        let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
        let mut inf = Inflater::new(&pmd);
        for round in 0..3 {
            for m in &msgs {
                let mut wire = z.message(m).unwrap().to_vec();
                wire.extend_from_slice(&PMD_TAIL);
                let mut plain = Vec::with_capacity(4096);
                d.decompress_vec(&wire, &mut plain, FlushDecompress::Sync).unwrap();
                assert_eq!(&plain, m, "round {round}");
                if pmd.client_nct {
                    d.reset(false);
                }
                // server side
                let mut sw = Vec::with_capacity(4096);
                c.compress_vec(m, &mut sw, FlushCompress::Sync).unwrap();
                assert!(sw.ends_with(&PMD_TAIL));
                sw.truncate(sw.len() - 4);
                if pmd.server_nct {
                    c.reset();
                }
                let (mut cap, mut cl, mut n) = ([0u8; CAP], 0usize, 0u64);
                for piece in sw.chunks(7) {
                    n += inf.feed(piece, FlushDecompress::None, &mut cap, &mut cl).unwrap();
                }
                n += inf.finish(&mut cap, &mut cl).unwrap();
                assert_eq!(n, 1024);
                assert_eq!(&cap[..cl], &m[..CAP]);
            }
        }
        assert!(z.wire_bytes < z.plain_bytes / 2, "JSON compresses: {} / {}", z.wire_bytes, z.plain_bytes);
    }

    #[test]
    fn deflate_roundtrip_takeover() {
        roundtrip(Pmd::default());
    }

    #[test]
    fn deflate_roundtrip_no_takeover() {
        roundtrip(Pmd { server_nct: true, client_nct: true, server_bits: None, client_bits: Some(10) });
    }

    #[test]
    fn word_payloads_are_exact() {
        let v = word_payloads(1024, 16);
        for p in &v {
            assert_eq!(p.len(), 1024);
            assert!(p.starts_with(b"0000000000000000 ") && p.is_ascii());
        }
        assert_ne!(v[0], v[1]);
    }

    #[test]
    fn json_payloads_are_exact() {
        for size in [JSON_MIN_SIZE, 300, 1024, 4096] {
            let v = json_payloads(size, 16);
            for p in &v {
                assert_eq!(p.len(), size);
                assert!(p.starts_with(b"{\"ts\":\"0000000000000000\","));
                assert!(p.ends_with(b"\"}}"));
            }
            assert_ne!(v[0], v[1]);
        }
    }

    #[test]
    fn parser_inflates_rsv1_frames() {
        let pmd = Pmd::default();
        let m = json_payloads(1024, 1).remove(0);
        let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
        let mut sw = Vec::with_capacity(4096);
        c.compress_vec(&m, &mut sw, FlushCompress::Sync).unwrap();
        sw.truncate(sw.len() - 4);
        // fragmented: RSV1 on the first frame only
        let half = sw.len() / 2;
        let mut srv = vec![0x41, 126];
        srv.extend_from_slice(&(half as u16).to_be_bytes());
        srv.extend_from_slice(&sw[..half]);
        srv.extend_from_slice(&[0x80, 126]);
        srv.extend_from_slice(&((sw.len() - half) as u16).to_be_bytes());
        srv.extend_from_slice(&sw[half..]);
        let mut p = Parser::new(4096, &srv, Some(&pmd));
        let mut got = 0;
        p.parse(|ev| {
            if let Ev::Msg(op, len, cap, cl) = ev {
                assert_eq!((op, len, cl), (OP_TEXT, 1024, CAP));
                assert_eq!(&cap[..], &m[..CAP]);
                got += 1;
            }
        })
        .unwrap();
        assert_eq!(got, 1);
        // RSV1 without an agreed extension
        let mut p = Parser::new(4096, &[0xc1, 0], None);
        assert!(p.parse(|_| {}).is_err());
    }
}
