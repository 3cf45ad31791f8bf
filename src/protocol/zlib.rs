//! permessage-deflate's codec: zlib-rs, raw deflate with the agreed window sizes (the
//! parameters come from `deflate`'s negotiation). Compression uses zlib-rs's own API, which
//! takes `memLevel` and `strategy` (flate2's does not); inflation goes through flate2.
//!
//! Memory: at 15 window bits a deflate context costs 256 KiB plus 7 << (memLevel + 6) bytes
//! of literal buffers (368 KiB at memLevel 8, 257 KiB at 1: zlib-rs's hash table is 128 KiB
//! whatever memLevel), and an inflate context ~42 KiB (docs/memory.md), so none is made
//! before a connection compresses or receives a compressed message. Without context takeover a context lives only while one message is processed: it
//! is then reset and returned to a small per-thread pool, so idle connections hold no zlib
//! state at all.

use std::cell::RefCell;
use std::collections::VecDeque;

use flate2::{Decompress, FlushDecompress, Status};
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Strategy};

use super::deflate::{DeflateParams, Tuning};
use super::error::{ErrorKind, ProtocolError};

const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Contexts kept per thread for connections without context takeover.
const POOL_SIZE: usize = 8;

/// Reset zlib contexts kept for reuse (one pool per thread and direction), each with the
/// parameters it was made for: a context is only reused with the same ones.
struct Pool<K, T>(RefCell<Vec<(K, T)>>);

impl<K: PartialEq, T> Pool<K, T> {
    const fn new() -> Self {
        Pool(RefCell::new(Vec::new()))
    }

    /// A context made for `key`, if one is kept.
    fn take(&self, key: &K) -> Option<T> {
        let mut p = self.0.borrow_mut();
        let i = p.iter().position(|(k, _)| k == key)?;
        Some(p.swap_remove(i).1)
    }

    /// Keeps a reset context for reuse (up to `POOL_SIZE`; else it is dropped).
    fn give(&self, key: K, context: T) {
        let mut p = self.0.borrow_mut();
        if p.len() < POOL_SIZE {
            p.push((key, context));
        }
    }
}

thread_local! {
    /// Window bits and tuning.
    static DEFLATE_POOL: Pool<(u8, Tuning), Deflate> = const { Pool::new() };
    /// Window bits.
    static INFLATE_POOL: Pool<u8, Decompress> = const { Pool::new() };
}

/// zlib does not do raw deflate with a 256-byte window; it uses 512 bytes for 8, as Node does.
fn zlib_bits(b: Option<u8>) -> u8 {
    b.unwrap_or(15).clamp(9, 15)
}

/// A valid tuning: zlib's default for what is out of range.
fn checked(t: Tuning) -> Tuning {
    let d = Tuning::default();
    Tuning {
        level: if (0..=9).contains(&t.level) { t.level } else { 6 },
        mem_level: if (1..=9).contains(&t.mem_level) { t.mem_level } else { d.mem_level },
        strategy: if t.strategy <= 4 { t.strategy } else { d.strategy },
    }
}

/// A raw deflate context (reset, as new) for window `bits` and `tuning`.
fn new_deflate(bits: u8, tuning: Tuning) -> Deflate {
    let strategy = Strategy::try_from(i32::from(tuning.strategy)).unwrap_or_default();
    Deflate::new_with_config(DeflateConfig {
        level: tuning.level,
        window_bits: -i32::from(bits),
        mem_level: i32::from(tuning.mem_level),
        strategy,
        ..DeflateConfig::default()
    })
}

/// The last bytes of one direction's plaintext, at most a window's worth: all that the
/// stream's next messages may refer back to. With context takeover it lets a connection drop
/// its zlib context while idle (`park`) and rebuild an equivalent one later with
/// `set_dictionary`, so that an idle connection holds up to a window of bytes (often far
/// less) instead of a context of hundreds of KiB.
#[derive(Default)]
struct History {
    bytes: VecDeque<u8>,
}

impl History {
    fn push(&mut self, data: &[u8], window: usize) {
        if data.len() >= window {
            self.bytes.clear();
            self.bytes.extend(&data[data.len() - window..]);
            return;
        }
        let over = (self.bytes.len() + data.len()).saturating_sub(window);
        self.bytes.drain(..over);
        self.bytes.extend(data);
    }

    fn clear(&mut self) {
        self.bytes = VecDeque::new();
    }

    fn as_slice(&mut self) -> &[u8] {
        self.bytes.make_contiguous()
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Our sending side: compresses messages, one context per connection with context takeover,
/// a pooled one per message without.
pub struct Deflater {
    c: Option<Deflate>,
    bits: u8,
    tuning: Tuning,
    takeover: bool,
    /// With takeover: what was compressed, for a context rebuilt after `park`.
    history: History,
    /// Compressed something since the last `take_used`.
    used: bool,
}

impl Deflater {
    pub fn new(params: &DeflateParams, is_server: bool, tuning: Tuning) -> Self {
        let (bits, no_takeover) = params.sending(is_server);
        Deflater { c: None, bits: zlib_bits(bits), tuning: checked(tuning), takeover: !no_takeover, history: History::default(), used: false }
    }

    /// Appends `data` compressed (a sync flush), without the trailing `00 00 ff ff` when
    /// `fin` ends the message.
    pub fn compress(&mut self, data: &[u8], fin: bool, out: &mut Vec<u8>) {
        let (bits, tuning) = (self.bits, self.tuning);
        let history = &mut self.history;
        let c = self.c.get_or_insert_with(|| {
            let mut c = DEFLATE_POOL.with(|p| p.take(&(bits, tuning))).unwrap_or_else(|| new_deflate(bits, tuning));
            if !history.is_empty() {
                // A context parked with takeover: rebuilt with the same history. (A fresh or
                // reset raw stream accepts a dictionary; there is no error to handle.)
                let _ = c.set_dictionary(history.as_slice());
            }
            c
        });
        self.used = true;
        let start = out.len();
        out.reserve(data.len() / 2 + 64);
        // As Node's zlib stream does: write the data, then a sync flush. (A sync flush right
        // after another one writes nothing; after a write it always ends in `00 00 ff ff`.)
        let mut input = data;
        for flush in [DeflateFlush::NoFlush, DeflateFlush::SyncFlush] {
            loop {
                let (before_in, before_out) = (c.total_in(), c.total_out());
                let spare = out.spare_capacity_mut();
                // Errors cannot happen with our own valid stream state; stop rather than loop.
                if c.compress_uninit(input, spare, flush).is_err() {
                    break;
                }
                let written = (c.total_out() - before_out) as usize;
                // SAFETY: zlib-rs initialised the `written` bytes after the vector's length.
                unsafe { out.set_len(out.len() + written) };
                input = &input[(c.total_in() - before_in) as usize..];
                if input.is_empty() && out.len() < out.capacity() {
                    break;
                }
                out.reserve(out.capacity().max(1024));
            }
        }
        if fin && out.len() - start >= 4 && out.ends_with(&TRAILER) {
            out.truncate(out.len() - 4);
        }
        if self.takeover {
            self.history.push(data, 1 << bits);
        } else if fin {
            self.release();
        }
    }

    /// Returns the context to the pool (reset), or drops it.
    pub fn release(&mut self) {
        if let Some(mut c) = self.c.take() {
            c.reset();
            DEFLATE_POOL.with(|p| p.give((self.bits, self.tuning), c));
        }
    }

    /// With context takeover, gives up the context while the connection is idle; the next
    /// message rebuilds it from the history. Call between messages (or fragments).
    pub fn park(&mut self) {
        if self.takeover {
            self.release();
        }
    }

    /// True if something was compressed since the last call.
    pub fn take_used(&mut self) -> bool {
        std::mem::take(&mut self.used)
    }

    /// True when a context is held between messages.
    pub fn holds_context(&self) -> bool {
        self.c.is_some()
    }
}

/// Our receiving side: inflates a message's frames into one buffer, checking `maxPayload`
/// on the inflated size as it grows.
pub struct Inflater {
    d: Option<Decompress>,
    bits: u8,
    takeover: bool,
    /// The peer ended its deflate stream (BFINAL); the next message starts a new one.
    ended: bool,
    /// With takeover: what was inflated, for a context rebuilt after `park`.
    history: History,
    /// Inflated something since the last `take_used`.
    used: bool,
}

fn inflate_error(e: &flate2::DecompressError) -> ProtocolError {
    let msg = e.message().unwrap_or("invalid compressed data").to_string();
    ProtocolError { kind: ErrorKind::Error, code: "Z_DATA_ERROR", message: msg, close_code: 1007 }
}

/// Largest step by which the output buffer grows.
const GROW_STEP: usize = 4 * 1024 * 1024;

impl Inflater {
    pub fn new(params: &DeflateParams, is_server: bool) -> Self {
        let (bits, no_takeover) = params.sending(!is_server);
        Inflater { d: None, bits: zlib_bits(bits), takeover: !no_takeover, ended: false, history: History::default(), used: false }
    }

    /// Appends the inflated `data` to `out`. `limit` (0 for none) bounds `out.len()`.
    pub fn inflate(&mut self, data: &[u8], out: &mut Vec<u8>, limit: u64) -> Result<(), ProtocolError> {
        if self.ended || data.is_empty() {
            return Ok(());
        }
        let bits = self.bits;
        let history = &mut self.history;
        let d = self.d.get_or_insert_with(|| {
            let mut d = INFLATE_POOL
                .with(|p| p.take(&bits))
                .unwrap_or_else(|| Decompress::new_with_window_bits(false, bits));
            if !history.is_empty() {
                // A context parked with takeover: the peer's earlier output, as its window was.
                // (A raw inflate stream takes a dictionary at any time: no error to handle.)
                let _ = d.set_dictionary(history.as_slice());
            }
            d
        });
        self.used = true;
        let produced_from = out.len();
        self.ended = match Self::run(d, data, out, limit) {
            Ok(ended) => ended,
            Err(e) => {
                self.d = None;
                return Err(e);
            }
        };
        if self.takeover {
            self.history.push(&out[produced_from..], 1 << bits);
        }
        Ok(())
    }

    /// Inflates into `out` until the input is used up; true when the peer's stream ended.
    fn run(d: &mut Decompress, data: &[u8], out: &mut Vec<u8>, limit: u64) -> Result<bool, ProtocolError> {
        let mut input = data;
        loop {
            if out.capacity() - out.len() < 1024 {
                let mut grow = out.len().clamp(16 * 1024, GROW_STEP);
                if limit > 0 {
                    let room = (limit as usize).saturating_add(1).saturating_sub(out.len()).max(1);
                    grow = grow.min(room);
                }
                out.reserve_exact(grow);
            }
            let (in0, len0) = (d.total_in(), out.len());
            let status = d.decompress_vec(input, out, FlushDecompress::Sync).map_err(|e| inflate_error(&e))?;
            let consumed = (d.total_in() - in0) as usize;
            input = &input[consumed..];
            if limit > 0 && out.len() as u64 > limit {
                return Err(ProtocolError::max_payload());
            }
            if status == Status::StreamEnd {
                return Ok(true);
            }
            let room_left = out.len() < out.capacity();
            if (input.is_empty() && room_left) || (consumed == 0 && out.len() == len0 && room_left) {
                return Ok(false);
            }
        }
    }

    /// Ends a message: inflates the trailer the sender removed, then resets the context when
    /// there is no context takeover (returning it to the pool).
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: u64) -> Result<(), ProtocolError> {
        self.inflate(&TRAILER, out, limit)?;
        if self.ended {
            // The next message starts a new stream, which cannot refer to this one.
            self.history.clear();
        }
        if self.ended || !self.takeover {
            self.ended = false;
            self.release();
        }
        Ok(())
    }

    /// With context takeover, gives up the context while the connection is idle; the next
    /// message rebuilds it from the history. Call between messages.
    pub fn park(&mut self) {
        if self.takeover {
            self.release();
        }
    }

    /// True if something was inflated since the last call.
    pub fn take_used(&mut self) -> bool {
        std::mem::take(&mut self.used)
    }

    /// Returns the context to the pool (reset).
    fn release(&mut self) {
        if let Some(mut d) = self.d.take() {
            d.reset(false);
            INFLATE_POOL.with(|p| p.give(self.bits, d));
        }
    }

    pub fn holds_context(&self) -> bool {
        self.d.is_some()
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inflater {{ bits: {}, takeover: {}, context: {} }}", self.bits, self.takeover, self.d.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_takeover() {
        for (no_takeover, bits) in [(false, None), (true, Some(8)), (false, Some(9)), (true, None)] {
            let p = DeflateParams {
                server_no_context_takeover: no_takeover,
                client_no_context_takeover: no_takeover,
                server_max_window_bits: bits,
                client_max_window_bits: bits,
            };
            let mut d = Deflater::new(&p, true, Tuning { level: -1, ..Tuning::default() });
            let mut i = Inflater::new(&p, false);
            for msg in [&b"hello hello hello hello"[..], b"", &[7u8; 100_000][..], b"hello again"] {
                let mut z = Vec::new();
                d.compress(msg, true, &mut z);
                let mut out = Vec::new();
                // Split the compressed bytes to inflate across frames.
                let (a, b) = z.split_at(z.len() / 2);
                i.inflate(a, &mut out, 0).unwrap();
                i.inflate(b, &mut out, 0).unwrap();
                i.finish(&mut out, 0).unwrap();
                assert_eq!(out, msg);
            }
            assert_eq!(d.holds_context(), !no_takeover);
            assert_eq!(i.holds_context(), !no_takeover);
        }
    }

    #[test]
    fn parked_contexts_carry_on_from_their_history() {
        // With context takeover each side may give up its context between messages and
        // rebuild it from the history; the other side, which keeps its context, must see the
        // same stream. Repeated messages show that the rebuilt compressor still refers back.
        for bits in [None, Some(9), Some(12)] {
            let p = DeflateParams { server_max_window_bits: bits, client_max_window_bits: bits, ..DeflateParams::default() };
            let msg: Vec<u8> = (0..3000u32).flat_map(|i| format!("{{\"n\":{}}}", i % 97).into_bytes()).collect();
            let mut sizes = Vec::new();
            for park_sender in [false, true] {
                let mut d = Deflater::new(&p, true, Tuning { level: 6, ..Tuning::default() });
                let mut i = Inflater::new(&p, false);
                let mut sent = Vec::new();
                for k in 0..6 {
                    let m = if k % 3 == 2 { &b"short one"[..] } else { &msg[..] };
                    let mut z = Vec::new();
                    d.compress(m, true, &mut z);
                    sent.push(z.len());
                    let mut out = Vec::new();
                    i.inflate(&z, &mut out, 0).unwrap();
                    i.finish(&mut out, 0).unwrap();
                    assert_eq!(out, m, "bits {bits:?}, message {k}, sender parked {park_sender}");
                    if park_sender {
                        d.park();
                        assert!(!d.holds_context());
                    } else {
                        i.park();
                        assert!(!i.holds_context());
                    }
                }
                sizes.push(sent);
            }
            // With a window larger than the message, the rebuilt compressor still refers back to
            // the history: a repeated message costs about what it costs a compressor that never
            // parked, far less than the first one.
            let (kept, parked) = (&sizes[0], &sizes[1]);
            if bits.is_none() {
                assert!(parked[1] * 4 < parked[0] * 3 && parked[1] * 2 < kept[1] * 3, "{kept:?} {parked:?}");
            }
        }
    }

    #[test]
    fn parking_without_takeover_or_after_the_stream_ended() {
        let p = DeflateParams { server_no_context_takeover: true, client_no_context_takeover: true, ..DeflateParams::default() };
        let mut d = Deflater::new(&p, true, Tuning { level: 6, ..Tuning::default() });
        let mut z = Vec::new();
        d.compress(b"abc abc abc", true, &mut z);
        d.park();
        assert!(!d.holds_context());
        // A peer that ends its stream (BFINAL) starts afresh: no history is carried over.
        let mut c = flate2::Compress::new_with_window_bits(flate2::Compression::new(6), false, 15);
        let mut z = Vec::with_capacity(256);
        c.compress_vec(b"first first first", &mut z, flate2::FlushCompress::Finish).unwrap();
        let mut i = Inflater::new(&DeflateParams::default(), true);
        let mut out = Vec::new();
        i.inflate(&z, &mut out, 0).unwrap();
        i.finish(&mut out, 0).unwrap();
        assert_eq!(out, b"first first first");
        assert!(i.history.is_empty() && !i.holds_context());
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let p = DeflateParams::default();
        let mut d = Deflater::new(&p, false, Tuning { level: 9, ..Tuning::default() });
        let mut z = Vec::new();
        d.compress(&vec![0u8; 64 * 1024 * 1024], true, &mut z);
        assert!(z.len() < 128 * 1024);
        let mut i = Inflater::new(&p, true);
        let mut out = Vec::new();
        let e = i.inflate(&z, &mut out, 1024 * 1024).unwrap_err();
        assert_eq!((e.code, e.close_code), ("WS_ERR_UNSUPPORTED_MESSAGE_LENGTH", 1009));
        assert!(out.capacity() <= 2 * 1024 * 1024, "{}", out.capacity());
    }

    #[test]
    fn bad_data_is_a_1007() {
        let mut i = Inflater::new(&DeflateParams::default(), true);
        let e = i.inflate(&[0xff, 0xff, 0xff, 0xff], &mut Vec::new(), 0).unwrap_err();
        assert_eq!((e.code, e.close_code), ("Z_DATA_ERROR", 1007));
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// `cargo test --release --lib deflate_cost -- --ignored --nocapture`: per-message cost of
    /// compressing and inflating 1 KiB JSON-like messages with context takeover, by level.
    #[test]
    #[ignore]
    fn deflate_cost() {
        let msgs: Vec<Vec<u8>> = (0..64)
            .map(|i| {
                let mut s = format!(
                    r#"{{"type":"ticker","symbol":"SYM{i}","price":{},"volume":{},"trades":["#,
                    1000 + i * 37,
                    i * 9173 % 100000
                );
                let mut k = 0;
                while s.len() < 1000 {
                    s.push_str(&format!(r#"{{"id":{},"px":{}.{},"qty":{}}},"#, i * 1000 + k, 100 + (k * 7 + i) % 50, (k * 13) % 100, (k * i) % 17 + 1));
                    k += 1;
                }
                s.truncate(1022);
                s.push_str("]}");
                s.into_bytes()
            })
            .collect();
        for level in [1, 2, 3, 4, 6] {
            let p = DeflateParams::default();
            let mut d = Deflater::new(&p, true, Tuning { level, ..Tuning::default() });
            let mut i = Inflater::new(&p, false);
            let (mut bytes_in, mut bytes_out) = (0usize, 0usize);
            let n = 20_000;
            let t = std::time::Instant::now();
            let mut z = Vec::new();
            let mut out = Vec::new();
            for k in 0..n {
                let m = &msgs[k % msgs.len()];
                z.clear();
                d.compress(m, true, &mut z);
                out.clear();
                i.inflate(&z, &mut out, 0).unwrap_or_default();
                i.finish(&mut out, 0).unwrap_or_default();
                bytes_in += m.len();
                bytes_out += z.len();
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            println!("level {level}: {us:.2} us per message (deflate + inflate), ratio {:.3}", bytes_out as f64 / bytes_in as f64);
        }
        // What a parked connection pays on its next message: contexts rebuilt from a full
        // 32 KiB history each way (the pools are warm, as on a busy server).
        let p = DeflateParams::default();
        let (mut d, mut i) = (Deflater::new(&p, true, Tuning { level: 6, ..Tuning::default() }), Inflater::new(&p, false));
        let (mut z, mut out) = (Vec::new(), Vec::new());
        let n = 2_000;
        let mut total = std::time::Duration::ZERO;
        for k in 0..n + 40 {
            let m = &msgs[k % msgs.len()];
            let t = std::time::Instant::now();
            z.clear();
            d.compress(m, true, &mut z);
            out.clear();
            i.inflate(&z, &mut out, 0).unwrap_or_default();
            i.finish(&mut out, 0).unwrap_or_default();
            if k >= 40 {
                // (the first 40 messages fill the 32 KiB history)
                total += t.elapsed();
                d.park();
                i.park();
            }
        }
        println!("level 6 after parking: {:.2} us per message (both contexts rebuilt from 32 KiB)", total.as_secs_f64() * 1e6 / n as f64);
    }
}

#[cfg(test)]
mod tuning_tests {
    use super::*;

    fn compressed_len(tuning: Tuning, data: &[u8]) -> Vec<u8> {
        let p = DeflateParams { server_no_context_takeover: true, ..DeflateParams::default() };
        let mut out = Vec::new();
        Deflater::new(&p, true, tuning).compress(data, true, &mut out);
        out
    }

    #[test]
    fn strategy_and_mem_level_are_honoured_and_the_output_inflates() {
        let data = b"the quick brown fox jumps over the lazy dog; ".repeat(200);
        let default = compressed_len(Tuning::default(), &data);
        // Huffman only: no string matches, so repetitive text compresses far less.
        let huffman = compressed_len(Tuning { strategy: 2, ..Tuning::default() }, &data);
        assert!(huffman.len() > 4 * default.len(), "huffman {} default {}", huffman.len(), default.len());
        let small = compressed_len(Tuning { mem_level: 1, ..Tuning::default() }, &data);
        for z in [&default, &huffman, &small] {
            let mut i = Inflater::new(&DeflateParams { server_no_context_takeover: true, ..DeflateParams::default() }, false);
            let mut out = Vec::new();
            assert!(i.inflate(z, &mut out, 0).is_ok() && i.finish(&mut out, 0).is_ok());
            assert_eq!(out, data);
        }
        // Out-of-range values fall back to zlib's defaults instead of failing.
        assert_eq!(compressed_len(Tuning { level: 42, mem_level: 0, strategy: 9 }, &data), default);
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Not a test: `cargo test --release --lib zlib::speed -- --ignored --nocapture` prints the
    /// time per message of compressing and inflating 1 KiB JSON-like text, with and without
    /// context takeover, at ws's default level.
    #[test]
    #[ignore]
    fn compress_and_inflate_1k_json() {
        let mut text = Vec::new();
        let mut i = 0u32;
        while text.len() < 1024 {
            text.extend_from_slice(format!("{{\"id\":{i},\"symbol\":\"SYM{}\",\"price\":{}.{},\"side\":\"buy\"}},", i % 97, i * 7 % 1000, i % 100).as_bytes());
            i += 1;
        }
        text.truncate(1024);
        for takeover in [false, true] {
            let params = DeflateParams { server_no_context_takeover: !takeover, ..DeflateParams::default() };
            let mut d = Deflater::new(&params, true, Tuning { level: -1, ..Tuning::default() });
            let mut inf = Inflater::new(&params, false);
            let n = 20_000;
            let t = std::time::Instant::now();
            let mut messages = Vec::with_capacity(n);
            for k in 0..n {
                // Each message differs a little from the last, as a ticker's do.
                text[..8].copy_from_slice(format!("{:08}", k).as_bytes());
                let mut out = Vec::new();
                d.compress(&text, true, &mut out);
                messages.push(out);
            }
            let c = t.elapsed();
            let total: usize = messages.iter().map(|m| m.len()).sum();
            let t = std::time::Instant::now();
            let mut plain = Vec::new();
            for m in &messages {
                plain.clear();
                assert!(inf.inflate(m, &mut plain, u64::MAX).is_ok() && inf.finish(&mut plain, u64::MAX).is_ok());
            }
            let i = t.elapsed();
            eprintln!("takeover {takeover}: compress {:.2} us/msg ({} B), inflate {:.2} us/msg", c.as_secs_f64() * 1e6 / n as f64, total / n, i.as_secs_f64() * 1e6 / n as f64);
        }
    }
}
