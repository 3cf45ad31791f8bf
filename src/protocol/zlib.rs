//! permessage-deflate's codec: zlib-rs through its zlib API (`libz-rs-sys`), raw deflate with
//! the agreed window sizes (the parameters come from `deflate`'s negotiation). That API, unlike
//! flate2's and zlib-rs's Rust ones, takes `memLevel` and `strategy` and gives a stream's
//! window back (`deflateGetDictionary`, `inflateGetDictionary`), which is what lets an idle
//! connection hold its window alone instead of its contexts.
//!
//! Memory: at 15 window bits a deflate context costs 256 KiB plus 7 << (memLevel + 6) bytes
//! of literal buffers (368 KiB at memLevel 8, 257 KiB at 1: zlib-rs's hash table is 128 KiB
//! whatever memLevel), and an inflate context ~42 KiB (docs/memory.md), so none is made
//! before a connection compresses or receives a compressed message. Without context takeover
//! a context lives only while one message is processed: it is then reset and returned to a
//! small per-thread pool, so idle connections hold no zlib state at all. With takeover an
//! idle connection gives its contexts up too (`park`), keeping only their windows.
//!
//! zlib-rs makes a deflate context as one block (state, window, chains, hash table, pending
//! and symbol buffers) and writes zeros over all of it but the pending buffer as it makes it,
//! where zlib fills its window and chains as data comes: a context takes most of its 368 KiB
//! before compressing a byte, and keeps it. So deflate contexts are allocated here (`calloc`,
//! every byte initialised), and a context a connection keeps using (`Deflater::settle`) gives
//! the pages of its block that still hold only zeros back to the kernel (`release_zero_pages`):
//! the end of its window and chains that data has not reached yet, the unused part of its
//! pending buffer. Each takes memory again when zlib-rs first writes to it.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, CStr};

use libz_rs_sys as z;

use super::deflate::{DeflateParams, Tuning};
use super::error::{ErrorKind, ProtocolError};

const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Contexts kept per thread for connections without context takeover.
const POOL_SIZE: usize = 8;

/// Reset zlib contexts kept for reuse (one pool per thread and direction), each with the
/// parameters it was made for: a context is only reused with the same ones.
struct Pool<K>(RefCell<Vec<(K, Stream)>>);

impl<K: PartialEq> Pool<K> {
    const fn new() -> Self {
        Pool(RefCell::new(Vec::new()))
    }

    /// A context made for `key`, if one is kept.
    fn take(&self, key: &K) -> Option<Stream> {
        let mut p = self.0.borrow_mut();
        let i = p.iter().position(|(k, _)| k == key)?;
        Some(p.swap_remove(i).1)
    }

    /// Keeps a reset context for reuse (up to `POOL_SIZE`; else it is dropped).
    fn give(&self, key: K, context: Stream) {
        let mut p = self.0.borrow_mut();
        if p.len() < POOL_SIZE {
            p.push((key, context));
        }
    }
}

thread_local! {
    /// Window bits and tuning.
    static DEFLATE_POOL: Pool<(u8, Tuning)> = const { Pool::new() };
    /// Window bits.
    static INFLATE_POOL: Pool<u8> = const { Pool::new() };
    /// The block `zalloc` last made on this thread (address, bytes), for `Stream::deflate`.
    static MADE: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// zlib's allocation function for deflate contexts: zeroed memory, so that every byte of the
/// block is initialised and `release_zero_pages` may read it; the block is noted in `MADE`.
unsafe extern "C" fn zalloc(_opaque: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    // SAFETY: calloc checks `items * size` for overflow and returns null on failure, which
    // zlib reports as Z_MEM_ERROR.
    let p = unsafe { libc::calloc(items as usize, size as usize) };
    MADE.with(|m| m.set((p as usize, (items as usize).saturating_mul(size as usize))));
    p
}

unsafe extern "C" fn zfree(_opaque: z::voidpf, p: z::voidpf) {
    // SAFETY: `p` came from `zalloc` and zlib frees it once.
    unsafe { libc::free(p) }
}

/// Hands the pages of `[start, start + len)` that hold only zeros back to the kernel. On
/// Linux a private anonymous page read after `MADV_DONTNEED` is a fresh zero page, so the
/// memory reads as it did, and the page takes memory again only when written. The range must
/// be initialised memory the caller owns, with nothing else sharing its whole pages' contents
/// but zeros (a malloc'd block: its allocator keeps its own records outside it).
#[cfg(target_os = "linux")]
fn release_zero_pages(start: usize, len: usize) {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return,
    };
    let end = (start + len) & !(page - 1);
    let mut at = start.next_multiple_of(page);
    let mut run = at;
    let release = |from: usize, to: usize| {
        if to > from {
            // SAFETY: whole pages inside the caller's block, which hold only zeros.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED) };
        }
    };
    while at < end {
        // SAFETY: a whole page inside the block, initialised (see above), and page-aligned.
        let words = unsafe { std::slice::from_raw_parts(at as *const u64, page / 8) };
        if words.iter().fold(0, |acc, &w| acc | w) != 0 {
            release(run, at);
            run = at + page;
        }
        at += page;
    }
    release(run, end);
}

#[cfg(not(target_os = "linux"))]
fn release_zero_pages(_start: usize, _len: usize) {}

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

/// One raw zlib stream, deflating or inflating, and its state. The `z_stream` lives on the
/// heap: zlib's state refers back to it, so it must not move.
struct Stream {
    s: Box<z::z_stream>,
    deflating: bool,
    /// A deflate context's block from `zalloc` (address, bytes); (0, 0) for inflate.
    block: (usize, usize),
}

// SAFETY: the stream and the state it points to belong to this value alone (zlib-rs keeps no
// other reference to them, and allocates through Rust's allocator or malloc, `zalloc`, which
// any thread may free).
unsafe impl Send for Stream {}

/// Ran out of input, or of room for output: not an error.
fn progressed(ret: c_int) -> bool {
    matches!(ret, z::Z_OK | z::Z_STREAM_END | z::Z_BUF_ERROR)
}

impl Stream {
    /// A raw deflate context for window `bits` and `tuning`; None if zlib could not make one
    /// (out of memory: the parameters are checked).
    fn deflate(bits: u8, tuning: Tuning) -> Option<Stream> {
        let mut s = Box::new(z::z_stream { zalloc: Some(zalloc), zfree: Some(zfree), ..z::z_stream::default() });
        MADE.with(|m| m.set((0, 0)));
        // SAFETY: `s` is a fresh z_stream on the heap; the version and size are zlib-rs's own.
        let ret = unsafe {
            z::deflateInit2_(
                &mut *s,
                tuning.level,
                z::Z_DEFLATED,
                -c_int::from(bits),
                c_int::from(tuning.mem_level),
                c_int::from(tuning.strategy),
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if ret != z::Z_OK {
            return None;
        }
        Some(Stream { s, deflating: true, block: MADE.with(|m| m.take()) })
    }

    /// A raw inflate context for window `bits`; None if zlib could not make one.
    fn inflate(bits: u8) -> Option<Stream> {
        let mut s = Box::new(z::z_stream::default());
        // SAFETY: as in `deflate`.
        let ret = unsafe { z::inflateInit2_(&mut *s, -c_int::from(bits), z::zlibVersion(), std::mem::size_of::<z::z_stream>() as c_int) };
        (ret == z::Z_OK).then_some(Stream { s, deflating: false, block: (0, 0) })
    }

    /// Runs deflate or inflate over `input` into `out`'s spare capacity with `flush`; returns
    /// zlib's code and how many bytes were consumed. `out` grows by what was produced.
    fn run(&mut self, input: &[u8], out: &mut Vec<u8>, flush: c_int) -> (c_int, usize) {
        let spare = out.spare_capacity_mut();
        let (in_len, out_len) = (input.len().min(u32::MAX as usize), spare.len().min(u32::MAX as usize));
        self.s.next_in = input.as_ptr();
        self.s.avail_in = in_len as u32;
        self.s.next_out = spare.as_mut_ptr().cast();
        self.s.avail_out = out_len as u32;
        // SAFETY: the stream was initialised for this direction; `next_in` and `next_out` point
        // to `avail_in` readable and `avail_out` writable bytes, alive for the call.
        let ret = unsafe {
            if self.deflating {
                z::deflate(&mut *self.s, flush)
            } else {
                z::inflate(&mut *self.s, flush)
            }
        };
        let consumed = in_len - self.s.avail_in as usize;
        let produced = out_len - self.s.avail_out as usize;
        self.s.next_in = std::ptr::null();
        self.s.next_out = std::ptr::null_mut();
        self.s.avail_in = 0;
        self.s.avail_out = 0;
        // SAFETY: zlib initialised the `produced` bytes after the vector's length.
        unsafe { out.set_len(out.len() + produced) };
        (ret, consumed)
    }

    /// The stream's window: the last bytes (at most a window's worth) that what follows may
    /// refer back to, to rebuild an equivalent context with `set_dictionary`. Call between
    /// messages, when deflate has all its input behind a flush.
    fn dictionary(&self) -> Vec<u8> {
        let get = |dict: *mut u8, len: &mut z::uInt| {
            // SAFETY: the stream was initialised for this direction; `dict` is null (the length
            // only) or has room for the length the stream reported.
            unsafe {
                if self.deflating {
                    z::deflateGetDictionary(&*self.s, dict, len)
                } else {
                    z::inflateGetDictionary(&*self.s, dict, len)
                }
            }
        };
        let mut len: z::uInt = 0;
        if get(std::ptr::null_mut(), &mut len) != z::Z_OK || len == 0 {
            return Vec::new();
        }
        let mut dict = vec![0u8; len as usize];
        if get(dict.as_mut_ptr(), &mut len) != z::Z_OK {
            return Vec::new();
        }
        dict.truncate(len as usize);
        dict
    }

    /// A fresh or reset context takes up where a parked one left off: it starts from the
    /// parked context's `window`, which is then dropped (nothing to do without one).
    fn resume(mut self, window: &mut Vec<u8>) -> Stream {
        if !window.is_empty() {
            self.set_dictionary(window);
            *window = Vec::new();
        }
        self
    }

    /// Starts the stream from `dict`, as if those bytes had just gone through it. A fresh or
    /// reset raw stream accepts a dictionary: there is no error to handle.
    fn set_dictionary(&mut self, dict: &[u8]) {
        let len = dict.len().min(u32::MAX as usize) as z::uInt;
        // SAFETY: `dict` is readable for `len` bytes.
        unsafe {
            if self.deflating {
                z::deflateSetDictionary(&mut *self.s, dict.as_ptr(), len);
            } else {
                z::inflateSetDictionary(&mut *self.s, dict.as_ptr(), len);
            }
        }
    }

    fn reset(&mut self) {
        // SAFETY: the stream was initialised for this direction.
        unsafe {
            if self.deflating {
                z::deflateReset(&mut *self.s);
            } else {
                z::inflateReset(&mut *self.s);
            }
        }
    }

    /// Gives the kernel back the pages of a deflate context's block that hold only zeros.
    fn release_zero_pages(&self) {
        if self.block.0 != 0 {
            release_zero_pages(self.block.0, self.block.1);
        }
    }

    /// zlib's message for the last error, if it gave one.
    fn message(&self) -> Option<String> {
        // SAFETY: zlib sets `msg` to null or to a static NUL-terminated string.
        (!self.s.msg.is_null()).then(|| unsafe { CStr::from_ptr(self.s.msg) }.to_string_lossy().into_owned())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised for this direction and is ended once.
        unsafe {
            if self.deflating {
                z::deflateEnd(&mut *self.s);
            } else {
                z::inflateEnd(&mut *self.s);
            }
        }
    }
}

/// `data` as raw deflate stored blocks ending in a sync flush's empty block: what a message
/// is sent as when no deflate context can be made. It refers to nothing before it, so the
/// peer's stream stays valid with or without context takeover.
fn stored(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(u16::MAX as usize) {
        let n = chunk.len() as u16;
        out.push(0);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.push(0);
    out.extend_from_slice(&TRAILER);
}

/// Our sending side: compresses messages, one context per connection with context takeover,
/// a pooled one per message without.
pub struct Deflater {
    c: Option<Stream>,
    bits: u8,
    tuning: Tuning,
    takeover: bool,
    /// With takeover, while the context is given up (`park`): its window, to rebuild it.
    window: Vec<u8>,
    /// Compressed something since the last `take_used`.
    used: bool,
}

impl Deflater {
    pub fn new(params: &DeflateParams, is_server: bool, tuning: Tuning) -> Self {
        let (bits, no_takeover) = params.sending(is_server);
        Deflater { c: None, bits: zlib_bits(bits), tuning: checked(tuning), takeover: !no_takeover, window: Vec::new(), used: false }
    }

    /// The context, made (or taken from the pool, and given the window it parked with) if
    /// there is none.
    fn context(&mut self) -> Option<&mut Stream> {
        if self.c.is_none() {
            let key = (self.bits, self.tuning);
            let c = DEFLATE_POOL.with(|p| p.take(&key)).or_else(|| Stream::deflate(key.0, key.1))?;
            self.c = Some(c.resume(&mut self.window));
        }
        self.c.as_mut()
    }

    /// Appends `data` compressed (a sync flush), without the trailing `00 00 ff ff` when
    /// `fin` ends the message.
    pub fn compress(&mut self, data: &[u8], fin: bool, out: &mut Vec<u8>) {
        self.used = true;
        let start = out.len();
        match self.context() {
            Some(c) => {
                out.reserve(data.len() / 2 + 64);
                // As Node's zlib stream does: write the data, then a sync flush. (A sync flush
                // right after another one writes nothing; after a write it always ends in
                // `00 00 ff ff`.)
                let mut input = data;
                for flush in [z::Z_NO_FLUSH, z::Z_SYNC_FLUSH] {
                    loop {
                        let (ret, consumed) = c.run(input, out, flush);
                        input = &input[consumed..];
                        // Errors cannot happen with our own valid stream state; stop rather
                        // than loop.
                        if !progressed(ret) || (input.is_empty() && out.len() < out.capacity()) {
                            break;
                        }
                        out.reserve(out.capacity().max(1024));
                    }
                }
            }
            None => self.stored(data, out),
        }
        if fin && out.len() - start >= 4 && out.ends_with(&TRAILER) {
            out.truncate(out.len() - 4);
        }
        if !self.takeover && fin {
            self.release();
        }
    }

    /// Without a context: `data` in stored blocks. The next context starts without a window:
    /// what it compresses then refers to nothing before, which the peer's window allows.
    fn stored(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.window = Vec::new();
        stored(data, out);
    }

    /// Returns the context to the pool (reset), or drops it.
    pub fn release(&mut self) {
        if let Some(mut c) = self.c.take() {
            c.reset();
            DEFLATE_POOL.with(|p| p.give((self.bits, self.tuning), c));
        }
    }

    /// With context takeover, gives up the context while the connection is idle, keeping its
    /// window; the next message rebuilds it from that. Call between messages (or fragments).
    pub fn park(&mut self) {
        if self.takeover {
            if let Some(c) = self.c.as_ref() {
                self.window = c.dictionary();
            }
            self.release();
        }
    }

    /// True if something was compressed since the last call.
    pub fn take_used(&mut self) -> bool {
        std::mem::take(&mut self.used)
    }

    /// For a context the connection keeps using: gives the kernel back the pages of its
    /// context that hold only zeros, which it takes again as zlib-rs writes them. Costs a read
    /// of the context (368 KiB at 15 window bits) and a page fault for each page written
    /// later, so it is for contexts that stay, once.
    pub fn settle(&mut self) {
        if let Some(c) = self.c.as_ref() {
            c.release_zero_pages();
        }
    }

    /// True when a context is held between messages.
    pub fn holds_context(&self) -> bool {
        self.c.is_some()
    }
}

/// Our receiving side: inflates a message's frames into one buffer, checking `maxPayload`
/// on the inflated size as it grows.
pub struct Inflater {
    d: Option<Stream>,
    bits: u8,
    takeover: bool,
    /// The peer ended its deflate stream (BFINAL); the next message starts a new one.
    ended: bool,
    /// With takeover, while the context is given up (`park`): its window, to rebuild it.
    window: Vec<u8>,
    /// Inflated something since the last `take_used`.
    used: bool,
}

fn inflate_error(code: &'static str, message: Option<String>) -> ProtocolError {
    let message = message.unwrap_or_else(|| "invalid compressed data".to_string());
    ProtocolError { kind: ErrorKind::Error, code, message, close_code: 1007 }
}

/// Largest step by which the output buffer grows.
const GROW_STEP: usize = 4 * 1024 * 1024;

impl Inflater {
    pub fn new(params: &DeflateParams, is_server: bool) -> Self {
        let (bits, no_takeover) = params.sending(!is_server);
        Inflater { d: None, bits: zlib_bits(bits), takeover: !no_takeover, ended: false, window: Vec::new(), used: false }
    }

    /// The context, made (or taken from the pool, and given the window it parked with: the
    /// peer's earlier output) if there is none.
    fn context(&mut self) -> Option<&mut Stream> {
        if self.d.is_none() {
            let bits = self.bits;
            let d = INFLATE_POOL.with(|p| p.take(&bits)).or_else(|| Stream::inflate(bits))?;
            self.d = Some(d.resume(&mut self.window));
        }
        self.d.as_mut()
    }

    /// Appends the inflated `data` to `out`. `limit` (0 for none) bounds `out.len()`.
    pub fn inflate(&mut self, data: &[u8], out: &mut Vec<u8>, limit: u64) -> Result<(), ProtocolError> {
        if self.ended || data.is_empty() {
            return Ok(());
        }
        let Some(d) = self.context() else {
            return Err(inflate_error("Z_MEM_ERROR", Some("out of memory".into())));
        };
        let ran = Self::run(d, data, out, limit);
        self.used = true;
        self.ended = match ran {
            Ok(ended) => ended,
            Err(e) => {
                self.d = None;
                return Err(e);
            }
        };
        Ok(())
    }

    /// Inflates into `out` until the input is used up; true when the peer's stream ended.
    fn run(d: &mut Stream, data: &[u8], out: &mut Vec<u8>, limit: u64) -> Result<bool, ProtocolError> {
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
            let len0 = out.len();
            let (ret, consumed) = d.run(input, out, z::Z_SYNC_FLUSH);
            input = &input[consumed..];
            if !progressed(ret) {
                let code = match ret {
                    z::Z_MEM_ERROR => "Z_MEM_ERROR",
                    z::Z_STREAM_ERROR => "Z_STREAM_ERROR",
                    z::Z_NEED_DICT => "Z_NEED_DICT",
                    _ => "Z_DATA_ERROR",
                };
                return Err(inflate_error(code, d.message()));
            }
            if limit > 0 && out.len() as u64 > limit {
                return Err(ProtocolError::max_payload());
            }
            if ret == z::Z_STREAM_END {
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
        if self.ended || !self.takeover {
            // After the peer's stream ended, the next message starts a new one, which cannot
            // refer to this one: the context is reset like one without takeover.
            self.ended = false;
            self.release();
        }
        Ok(())
    }

    /// With context takeover, gives up the context while the connection is idle, keeping its
    /// window; the next message rebuilds it from that. Call between messages.
    pub fn park(&mut self) {
        if self.takeover {
            if let Some(d) = self.d.as_ref() {
                self.window = d.dictionary();
            }
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
            d.reset();
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

    /// How many of the pages of `[start, start + len)` are in memory.
    #[cfg(target_os = "linux")]
    fn resident_pages(start: usize, len: usize) -> usize {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let from = start & !(page - 1);
        let pages = (start + len - from).div_ceil(page);
        let mut v = vec![0u8; pages];
        // SAFETY: the range is mapped (a live malloc'd block, rounded to its pages); `v` has a
        // byte per page.
        let r = unsafe { libc::mincore(from as *mut libc::c_void, pages * page, v.as_mut_ptr()) };
        assert_eq!(r, 0);
        v.iter().filter(|&&b| b & 1 != 0).count()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_settled_context_gives_back_the_pages_data_has_not_reached() {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let p = DeflateParams::default();
        let mut d = Deflater::new(&p, true, Tuning::default());
        let mut i = Inflater::new(&p, false);
        let echo = |d: &mut Deflater, i: &mut Inflater, n: u32| {
            let msg = format!("{{\"seq\":{n},\"price\":{},\"note\":\"{}\"}}", n * 7919 % 1000, "ab".repeat((n % 300) as usize));
            let mut z = Vec::new();
            d.compress(msg.as_bytes(), true, &mut z);
            let mut out = Vec::new();
            i.inflate(&z, &mut out, 0).unwrap();
            i.finish(&mut out, 0).unwrap();
            assert_eq!(out, msg.as_bytes());
            d.c.as_ref().map(|c| c.block)
        };
        let mut block = (0, 0);
        for n in 0..4 {
            block = echo(&mut d, &mut i, n).unwrap();
        }
        let (start, len) = block;
        assert!(len > 300 * 1024, "the context's block: {len} bytes");
        let before = resident_pages(start, len);
        // Four short messages reached a page or two of its window and chains: the rest of them
        // goes back, with the symbol buffer (cleared after each message) and the unused
        // pending buffer.
        d.settle();
        let after = resident_pages(start, len);
        assert!((before - after) * page >= 128 * 1024, "{before} pages in memory, {after} once settled");
        // It compresses on as before, over more than a window of data, and takes pages back as
        // it writes them.
        for n in 4..400 {
            assert_eq!(echo(&mut d, &mut i, n), Some(block));
        }
        let later = resident_pages(start, len);
        assert!(later > after, "{after} pages once settled, {later} after a window of data");
    }

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
    fn parked_contexts_carry_on_from_their_windows() {
        // With context takeover each side may give up its context between messages and
        // rebuild it from its window; the other side, which keeps its context, must see the
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
            // the window: a repeated message costs about what it costs a compressor that never
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
        // A peer that ends its stream (BFINAL) starts afresh: no window is carried over.
        let Some(mut c) = Stream::deflate(15, Tuning { level: 6, ..Tuning::default() }) else { panic!("no deflate context") };
        let mut z = Vec::with_capacity(256);
        assert_eq!(c.run(b"first first first", &mut z, z::Z_FINISH), (z::Z_STREAM_END, 17));
        let mut i = Inflater::new(&DeflateParams::default(), true);
        let mut out = Vec::new();
        i.inflate(&z, &mut out, 0).unwrap();
        i.finish(&mut out, 0).unwrap();
        assert_eq!(out, b"first first first");
        assert!(i.window.is_empty() && !i.holds_context());
    }

    #[test]
    fn stored_blocks_inflate_between_compressed_messages() {
        // What a message is sent as when no deflate context can be made (after the connection
        // parked its context): the peer's stream (with context takeover) goes on through it,
        // and through the compressed messages before and after it.
        let p = DeflateParams::default();
        let mut d = Deflater::new(&p, true, Tuning::default());
        let mut i = Inflater::new(&p, false);
        let big = vec![b'x'; 70_000];
        for (k, msg) in [&b"compressed compressed"[..], b"stored", &big[..], b"", b"compressed compressed"].into_iter().enumerate() {
            let mut z = Vec::new();
            if k == 0 || k == 4 {
                d.compress(msg, true, &mut z);
                d.park();
            } else {
                d.stored(msg, &mut z);
                z.truncate(z.len() - 4);
            }
            let mut out = Vec::new();
            i.inflate(&z, &mut out, 0).unwrap();
            i.finish(&mut out, 0).unwrap();
            assert_eq!(out, msg, "message {k}");
        }
    }

    #[test]
    fn only_a_parked_context_keeps_its_window() {
        let p = DeflateParams::default();
        let (mut d, mut i) = (Deflater::new(&p, true, Tuning::default()), Inflater::new(&p, false));
        let msg: Vec<u8> = (0..5000u32).flat_map(|n| format!("{n},").into_bytes()).collect();
        for _ in 0..3 {
            let (mut z, mut out) = (Vec::new(), Vec::new());
            d.compress(&msg, true, &mut z);
            i.inflate(&z, &mut out, 0).unwrap();
            i.finish(&mut out, 0).unwrap();
            assert!(d.window.is_empty() && i.window.is_empty());
        }
        d.park();
        i.park();
        // The last 32 KiB each way (the three messages are longer than the window).
        let all = msg.repeat(3);
        let last = &all[all.len() - 32 * 1024..];
        assert_eq!((&d.window[..], &i.window[..]), (last, last));
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
        // 32 KiB window each way (the pools are warm, as on a busy server).
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
                // (the first 40 messages fill the 32 KiB windows)
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
