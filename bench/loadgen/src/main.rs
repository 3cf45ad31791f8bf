//! loadgen: a small, fast WebSocket load generator for loopback benchmarks.
//!
//! Hand-rolled client (HTTP/1.1 upgrade + masked frames) on tokio, so that the
//! generator costs as little CPU per message as possible. Three modes:
//!
//!   loadgen echo      --url ws://127.0.0.1:P/ --conns N --inflight K --size B [--binary|--text]
//!                     --duration S --warmup S
//!   loadgen broadcast --url ... --conns 1000 --size 64 --inflight 1 --duration S --warmup S
//!   loadgen connect   --url ... --conns 10000 --idle S --concurrency 256
//!
//! Common: --threads T (default 1 = current_thread runtime), --connect-timeout S.
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
}

const USAGE: &str = "usage: loadgen <echo|broadcast|connect> --url ws://127.0.0.1:PORT/ \
[--conns N] [--inflight K] [--size BYTES] [--binary|--text] [--duration SECS] [--warmup SECS] \
[--idle SECS] [--concurrency N] [--threads T] [--connect-timeout SECS] [--spin]\n\
--spin (echo mode): busy-poll the sockets instead of sleeping in epoll, so the\n\
generator's own wake-up latency is not part of the measured round trip.";

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
        _ => return Err(format!("unknown mode {mode:?}\n{USAGE}")),
    };
    let mut a = Args {
        mode,
        url: "ws://127.0.0.1:8080/".into(),
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
            "--conns" => a.conns = num(k, val()?)?,
            "--inflight" => a.inflight = num(k, val()?)?,
            "--size" => a.size = num(k, val()?)?,
            "--binary" => a.binary = true,
            "--text" => a.binary = false,
            "--spin" => a.spin = true,
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
    a.concurrency = a.concurrency.clamp(1, 65536);
    Ok(a)
}

/// A connection: plain TCP, or TLS for `wss://` targets (echo mode; any certificate is
/// accepted: the benchmark measures the servers, not the PKI).
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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

/// A pre-masked data frame; per-send only the 16-hex-digit fields are patched.
struct Template {
    frame: Vec<u8>,
    payload_off: usize,
    mask: [u8; 4],
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Template {
    fn new(opcode: u8, size: usize, mask: [u8; 4]) -> Self {
        let mut frame = Vec::with_capacity(size + 14);
        frame_header(&mut frame, opcode, size, mask);
        let payload_off = frame.len();
        // printable ASCII filler: valid UTF-8 for text mode
        frame.extend((0..size).map(|i| b'a' + (i % 26) as u8));
        apply_mask(&mut frame[payload_off..], mask);
        Template { frame, payload_off, mask }
    }
    /// Append one frame to `out`, writing each (payload offset, value) as 16 hex digits.
    #[inline]
    fn append(&self, out: &mut Vec<u8>, fields: &[(usize, u64)]) {
        let base = out.len() + self.payload_off;
        out.extend_from_slice(&self.frame);
        for &(off, v) in fields {
            for i in 0..16 {
                let nib = ((v >> (60 - 4 * i)) & 0xf) as usize;
                let p = off + i;
                out[base + p] = HEX[nib] ^ self.mask[p & 3];
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
/// bytes are not buffered: only the first CAP bytes of each message are kept.
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
}

impl Parser {
    fn new(bufsize: usize, leftover: &[u8]) -> Self {
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
        }
    }

    /// move unparsed bytes to the front of the buffer
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
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
                if self.cap_len < CAP {
                    let c = take.min(CAP - self.cap_len);
                    self.cap[self.cap_len..self.cap_len + c]
                        .copy_from_slice(&self.buf[self.start..self.start + c]);
                    self.cap_len += c;
                }
                self.start += take;
                self.left -= take as u64;
                self.msg_len += take as u64;
                if self.left == 0 && self.fin {
                    self.in_msg = false;
                    on(Ev::Msg(self.msg_opcode, self.msg_len, self.cap, self.cap_len));
                }
                continue;
            }
            if avail < 2 {
                break;
            }
            let b0 = self.buf[self.start];
            let b1 = self.buf[self.start + 1];
            if b0 & 0x70 != 0 {
                return Err("RSV bits set (no extension negotiated)");
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
                }
                _ => return Err("unknown data opcode"),
            }
            self.fin = fin;
            self.left = len;
            if len == 0 && fin {
                self.in_msg = false;
                on(Ev::Msg(self.msg_opcode, self.msg_len, self.cap, self.cap_len));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// connecting

async fn ws_connect(t: &Target, rng: &mut Rng) -> io::Result<(Conn, Vec<u8>)> {
    let tcp = TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    let mut s = if t.tls {
        let name = rustls::pki_types::ServerName::IpAddress(t.addr.ip().into());
        Conn::Tls(Box::new(tls_connector().connect(name, tcp).await?))
    } else {
        Conn::Plain(tcp)
    };
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&rng.next().to_ne_bytes());
    key[8..].copy_from_slice(&rng.next().to_ne_bytes());
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
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
            if lower.contains("sec-websocket-extensions:") {
                return Err(io::Error::new(io::ErrorKind::Other, "server negotiated an extension"));
            }
            return Ok((s, buf[pos + 4..].to_vec()));
        }
        if buf.len() > 16384 {
            return Err(io::Error::new(io::ErrorKind::Other, "handshake response too large"));
        }
    }
}

struct Connected {
    conns: Vec<Option<(Conn, Vec<u8>)>>,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed_ns: u64,
    hs: Hist,
}

/// Open `n` connections with at most `concurrency` handshakes in progress.
async fn connect_many(t: Arc<Target>, n: usize, concurrency: usize, timeout: f64) -> Connected {
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
                let r = tokio::time::timeout(Duration::from_secs_f64(timeout), ws_connect(&t, &mut rng)).await;
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
    let mut conns: Vec<Option<(Conn, Vec<u8>)>> = (0..n).map(|_| None).collect();
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
) -> (H, LoopResult) {
    let mut p = Parser::new(bufsize, &leftover);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut out_pos = 0usize;
    let mut res = LoopResult::default();
    let mut rng = Rng::new(seed);
    let deadline = tokio::time::sleep_until(at_ns(end_ns));
    tokio::pin!(deadline);
    let fail = |res: &mut LoopResult, e: String| {
        res.errors += 1;
        res.first_error.get_or_insert(e);
    };
    let (mut rd, wr) = stream.split();
    let mut closed = false;
    'outer: loop {
        let now = now_ns();
        if now >= end_ns {
            break;
        }
        // parse buffered input (also whatever came with the handshake response)
        {
            let mut pongs: Vec<Vec<u8>> = Vec::new();
            let r = p.parse(|ev| match ev {
                Ev::Msg(op, len, cap, cl) => h.on_msg(now, op, len, &cap[..cl], &mut out),
                Ev::Ping(pl) => pongs.push(pl),
                Ev::Close => closed = true,
            });
            for pl in pongs {
                control_frame(&mut out, OP_PONG, &pl, &mut rng);
            }
            if let Err(e) = r {
                fail(&mut res, format!("protocol error: {e}"));
                return (h, res);
            }
            if closed {
                fail(&mut res, "server sent close frame".into());
                return (h, res);
            }
        }
        h.poll(now, &mut out);
        // optimistic write
        while out_pos < out.len() {
            match wr.try_write(&out[out_pos..]) {
                Ok(n) => out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    fail(&mut res, format!("write: {e}"));
                    return (h, res);
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
                    return (h, res);
                }
                Ok(n) => p.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::task::yield_now().await,
                Err(e) => {
                    fail(&mut res, format!("read: {e}"));
                    return (h, res);
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
                    return (h, res);
                }
                Ok(n) => p.end += n,
                Err(e) => {
                    fail(&mut res, format!("read: {e}"));
                    return (h, res);
                }
            },
            r = wr.writable(), if pending_out => {
                if let Err(e) = r {
                    fail(&mut res, format!("writable: {e}"));
                    return (h, res);
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
    (h, res)
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
) -> (H, LoopResult) {
    let mut p = Parser::new(bufsize, &leftover);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut res = LoopResult::default();
    let mut rng = Rng::new(seed);
    let deadline = tokio::time::sleep_until(at_ns(end_ns));
    tokio::pin!(deadline);
    let fail = |res: &mut LoopResult, e: String| {
        res.errors += 1;
        res.first_error.get_or_insert(e);
    };
    loop {
        let now = now_ns();
        if now >= end_ns {
            break;
        }
        let mut closed = false;
        let mut pongs: Vec<Vec<u8>> = Vec::new();
        let r = p.parse(|ev| match ev {
            Ev::Msg(op, len, cap, cl) => h.on_msg(now, op, len, &cap[..cl], &mut out),
            Ev::Ping(pl) => pongs.push(pl),
            Ev::Close => closed = true,
        });
        for pl in pongs {
            control_frame(&mut out, OP_PONG, &pl, &mut rng);
        }
        if let Err(e) = r {
            fail(&mut res, format!("protocol error: {e}"));
            return (h, res);
        }
        if closed {
            fail(&mut res, "server sent close frame".into());
            return (h, res);
        }
        h.poll(now, &mut out);
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                fail(&mut res, format!("write: {e}"));
                return (h, res);
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
                    return (h, res);
                }
                Ok(n) => p.end += n,
                Err(e) => {
                    fail(&mut res, format!("read: {e}"));
                    return (h, res);
                }
            },
        }
    }
    let mut cf = Vec::new();
    control_frame(&mut cf, OP_CLOSE, &1000u16.to_be_bytes(), &mut rng);
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&cf)).await;
    (h, res)
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
}

impl Handler for EchoH {
    fn poll(&mut self, now: u64, out: &mut Vec<u8>) {
        // keep K in flight: one replacement per echoed message, all stamped
        // with one fresh clock read taken right before they are written
        if self.to_send > 0 {
            if now < self.end_ns {
                let ts = now_ns();
                for _ in 0..self.to_send {
                    self.tmpl.append(out, &[(0, ts)]);
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
        if let Some(ts) = parse_hex16(cap) {
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

async fn mode_echo(a: Args, t: Arc<Target>) -> String {
    let c = connect_many(t, a.conns, a.concurrency, a.connect_timeout).await;
    if c.ok == 0 {
        return error_json(&a, &format!("no connection: {}", c.first_error.unwrap_or_default()));
    }
    let start = now_ns();
    let warm_ns = start + (a.warmup * 1e9) as u64;
    let end_ns = warm_ns + (a.duration * 1e9) as u64;
    let opcode = if a.binary { OP_BINARY } else { OP_TEXT };
    let mut rng = Rng::new(7);
    let mut tasks = Vec::new();
    for (i, conn) in c.conns.into_iter().enumerate() {
        let Some((s, left)) = conn else { continue };
        let tmpl = Template::new(opcode, a.size, rng.mask());
        let mut out0 = Vec::new();
        let t0 = now_ns();
        for _ in 0..a.inflight {
            tmpl.append(&mut out0, &[(0, t0)]);
        }
        let h = EchoH { tmpl, warm_ns, end_ns, size: a.size as u64, opcode, msgs: 0, total_msgs: 0, bad: 0, hist: Hist::default(), to_send: 0 };
        let bufsize = bufsize_for(a.size);
        let spin = a.spin;
        tasks.push(tokio::spawn(async move {
            // the first K frames go out before entering the loop
            let mut s = s;
            if let Err(e) = s.write_all(&out0).await {
                return (h, LoopResult { errors: 1, first_error: Some(format!("write: {e}")) });
            }
            match s {
                Conn::Plain(s) => run_conn(s, left, h, end_ns, bufsize, None, i as u64 + 100, spin).await,
                Conn::Tls(s) => run_conn_tls(*s, left, h, end_ns, bufsize, i as u64 + 100).await,
            }
        }));
    }
    let (cpu, wall) = measure_window(warm_ns, end_ns).await;
    let mut hist = Hist::default();
    let (mut msgs, mut total, mut bad, mut errors, mut first_err) = (0u64, 0u64, 0u64, c.errors as u64, c.first_error);
    for tk in tasks {
        if let Ok(Ok((h, r))) = tokio::time::timeout(Duration::from_secs(10), tk).await {
            msgs += h.msgs;
            total += h.total_msgs;
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
        .bool("spin", a.spin)
        .int("threads", a.threads as u64);
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
    // N subscribers first, then the publisher (so every subscriber is registered)
    let c = connect_many(t.clone(), a.conns, a.concurrency, a.connect_timeout).await;
    if c.ok == 0 {
        return error_json(&a, &format!("no connection: {}", c.first_error.unwrap_or_default()));
    }
    let p = connect_many(t, 1, 1, a.connect_timeout).await;
    let Some(Some((Conn::Plain(ps), pleft))) = p.conns.into_iter().next() else {
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
        let Some((Conn::Plain(s), left)) = conn else { continue };
        let h = SubH { bc: bc.clone(), deliveries: 0, bad: 0, hist: Hist::default() };
        tasks.push(tokio::spawn(run_conn(s, left, h, end_ns, bufsize_for(a.size), None, i as u64 + 100, false)));
    }
    let mut rng = Rng::new(3);
    let ph = PubH { bc: bc.clone(), tmpl: Template::new(opcode, a.size, rng.mask()), inflight: a.inflight as u64, published: 0 };
    let pubtask = tokio::spawn(run_conn(ps, pleft, ph, end_ns, bufsize_for(a.size), Some(bc.notify.clone()), 1, false));
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

async fn close_one(mut s: Conn, seed: u64) -> bool {
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

async fn mode_connect(a: Args, t: Arc<Target>) -> String {
    eprintln!("CONNECTING {}", a.conns);
    let cpu0 = cpu_seconds();
    let c = connect_many(t, a.conns, a.concurrency, a.connect_timeout).await;
    let cpu1 = cpu_seconds();
    let secs = c.elapsed_ns as f64 / 1e9;
    eprintln!("IDLE {}", c.ok);
    let _ = io::stderr().flush();
    tokio::time::sleep(Duration::from_secs_f64(a.idle)).await;
    eprintln!("CLOSING");
    let t0 = now_ns();
    let streams: Vec<Conn> = c.conns.into_iter().flatten().map(|(s, _)| s).collect();
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
        .int("errors", c.errors as u64 + closed_bad)
        .int("concurrency", a.concurrency as u64)
        .int("threads", a.threads as u64);
    if let Some(e) = c.first_error {
        j.str("first_error", &e);
    }
    j.finish()
}

// ---------------------------------------------------------------------------

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
        let t = Template::new(OP_TEXT, 40, [9, 8, 7, 6]);
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
        let mut p = Parser::new(1024, &srv);
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
}
