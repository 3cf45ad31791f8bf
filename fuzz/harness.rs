// The fuzz harnesses, shared by the libFuzzer targets (fuzz/fuzz_targets/*.rs) and by the
// corpus replay in `cargo test --lib` (src/protocol/corpus_tests.rs). Included with
// `include!`, so the includer provides `proto` (the protocol module) in scope:
//     ws-native tests:  use crate::protocol as proto;
//     fuzz targets:     use ws_native::protocol as proto;
// Each harness takes arbitrary bytes and panics only when an invariant is broken.
//
// Adding a target: write `pub fn name(data: &[u8])` here, a two-line file in
// fuzz/fuzz_targets/name.rs, a [[bin]] in fuzz/Cargo.toml, seeds in fuzz/corpus/name/, and an
// arm in `TARGETS` below so the replay test runs its corpus.

/// A harness: its name (the corpus folder) and the function fed each input.
#[allow(dead_code)]
pub type Target = (&'static str, fn(&[u8]));

#[allow(dead_code)]
pub const TARGETS: &[Target] = &[
    ("receiver", receiver),
    ("handshake_request", handshake_request),
    ("handshake_response", handshake_response),
    ("subprotocols", subprotocols),
    ("utf8", utf8),
    ("extensions", extensions),
    ("inflate", inflate),
];

/// A tiny deterministic generator (xorshift) for chunk sizes, so one input byte picks a split.
struct Splitter(u32);

impl Splitter {
    fn next(&mut self, max: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        1 + (x as usize) % max.max(1)
    }
}

/// Cuts `len` bytes into chunks: 0 = whole, 1 = byte by byte, else pseudo-random sizes.
fn chunk_sizes(len: usize, mode: u8) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = len;
    let mut s = Splitter(0x9e37_79b9 ^ (mode as u32) << 8 | mode as u32);
    while left > 0 {
        let n = match mode {
            0 => left,
            1 => 1,
            m if m & 1 == 0 => s.next(16),
            _ => s.next(300),
        }
        .min(left);
        out.push(n);
        left -= n;
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Msg { binary: bool, data: Vec<u8>, fragments: Option<Vec<u32>> },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, Vec<u8>),
    Error { code: &'static str, message: String, close_code: u16 },
}

fn run_receiver(cfg: &proto::receiver::ReceiverConfig, input: &[u8], sizes: &[usize]) -> Vec<Ev> {
    use proto::receiver::{Incoming, Receiver};
    let mut r = Receiver::new(cfg.clone());
    let mut out = Vec::new();
    let mut buf = input.to_vec();
    let mut pos = 0;
    for &n in sizes {
        let chunk = &mut buf[pos..pos + n];
        pos += n;
        let res = r.feed(chunk, |i| {
            out.push(match i {
                Incoming::Message { binary, data, fragments } => {
                    Ev::Msg { binary, data: data.as_slice().to_vec(), fragments }
                }
                Incoming::Ping(p) => Ev::Ping(p.to_vec()),
                Incoming::Pong(p) => Ev::Pong(p.to_vec()),
                Incoming::Close { code, reason } => Ev::Close(code, reason.to_vec()),
            })
        });
        if let Err(e) = res {
            assert!(r.is_done(), "an error leaves the receiver done");
            out.push(Ev::Error { code: e.code, message: e.message, close_code: e.close_code });
            break;
        }
        if r.is_done() {
            // Input after a close frame is ignored; feeding more must stay silent.
            let before = out.len();
            let mut more = [0x81u8, 0x00];
            let _ = r.feed(&mut more, |_| out.push(Ev::Ping(Vec::new())));
            assert_eq!(out.len(), before, "events after close");
        }
    }
    out
}

/// The frame decoder: arbitrary bytes, both roles, small limits, in several chunkings that
/// must all produce the same events and error as one whole read.
/// Layout: [flags, split mode, bytes...].
#[allow(dead_code)]
pub fn receiver(data: &[u8]) {
    use proto::receiver::ReceiverConfig;
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let mode = data[1];
    let input = &data[2..];
    let cfg = ReceiverConfig {
        is_server: flags & 1 == 0,
        skip_utf8_validation: flags & 2 != 0,
        allow_rsv1: flags & 4 != 0,
        max_payload: [0, 16, 200, 70_000][((flags >> 3) & 3) as usize],
        max_fragments: [0, 1, 2, 3, 8, 131_072, 5, 0][(flags >> 5) as usize],
    };
    let whole = run_receiver(&cfg, input, &chunk_sizes(input.len(), 0));
    for m in [mode.max(2), 1] {
        if m == 1 && input.len() > 2048 {
            continue;
        }
        let split = run_receiver(&cfg, input, &chunk_sizes(input.len(), m));
        assert_eq!(whole, split, "chunking changed the outcome (mode {m})");
    }
    let mut closed = false;
    for ev in &whole {
        assert!(!closed, "event after close or error: {ev:?}");
        match ev {
            Ev::Msg { binary, data, fragments } => {
                if cfg.max_payload > 0 {
                    assert!(data.len() as u64 <= cfg.max_payload, "message over maxPayload");
                }
                if !binary && !cfg.skip_utf8_validation {
                    assert!(std::str::from_utf8(data).is_ok(), "invalid UTF-8 text delivered");
                }
                if let Some(f) = fragments {
                    assert!(*binary && f.len() > 1);
                    assert!(f.windows(2).all(|w| w[0] < w[1]), "fragment ends not increasing: {f:?}");
                    assert_eq!(f.last().copied(), Some(data.len() as u32));
                }
            }
            Ev::Ping(p) | Ev::Pong(p) => assert!(p.len() <= 125),
            Ev::Close(code, reason) => {
                closed = true;
                assert!(*code == 1005 || proto::close::is_valid_received_code(*code), "close code {code}");
                assert!(reason.len() <= 123);
                if !cfg.skip_utf8_validation {
                    assert!(std::str::from_utf8(reason).is_ok());
                }
            }
            Ev::Error { close_code, code, .. } => {
                closed = true;
                assert!(matches!(close_code, 1002 | 1007 | 1008 | 1009), "{code} closes with {close_code}");
            }
        }
    }
}

fn check_head_strings(head: &proto::handshake::Head) {
    // The engine sends header lines to JS separated by NUL bytes: none may contain one.
    for (k, v) in &head.headers {
        assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'), "header {k:?}: {v:?}");
    }
    let _ = head.header("connection");
}

/// The request head parser and ws's upgrade checks, plus the rejection it would answer.
/// Also: a head that parses complete at `n` bytes must be "incomplete" at every shorter
/// prefix, as the engine re-parses from the start on each read.
#[allow(dead_code)]
pub fn handshake_request(data: &[u8]) {
    use proto::extension::is_token_char;
    use proto::handshake::*;
    match parse_request(data) {
        Ok(Some((head, n))) => {
            assert!(n <= data.len() && n <= MAX_HEAD_SIZE);
            assert!(head.headers.len() <= MAX_HEADERS);
            check_head_strings(&head);
            let step = if n > 600 { n / 200 } else { 1 };
            for cut in (0..n).step_by(step) {
                assert!(
                    matches!(parse_request(&data[..cut]), Ok(None)),
                    "prefix of {cut} of a complete {n}-byte head is not incomplete"
                );
            }
            let _ = is_upgrade_request(&head);
            // The last byte picks whether the server has permessage-deflate on.
            let pmd = proto::deflate::DeflateOptions::default();
            let deflate = (data.last().is_some_and(|b| b & 1 == 1)).then_some(&pmd);
            match validate_upgrade(&head, deflate) {
                Ok(u) => {
                    assert_eq!(head.method, "GET");
                    assert!(u.version == 13 || u.version == 8);
                    assert_eq!(u.accept.len(), 28);
                    for p in &u.protocols {
                        assert!(!p.is_empty() && p.bytes().all(is_token_char));
                    }
                }
                Err(r) => {
                    let bytes = rejection_response(&r);
                    match parse_response(&bytes) {
                        Ok(Some((h, len))) => {
                            assert_eq!(h.status, r.status);
                            let body = if r.message.is_empty() { status_text(r.status) } else { r.message.as_str() };
                            assert_eq!(len + body.len(), bytes.len());
                        }
                        other => panic!("our own rejection does not parse: {other:?}"),
                    }
                }
            }
        }
        Ok(None) => assert!(data.len() <= MAX_HEAD_SIZE),
        Err(_) => {}
    }
}

/// The response head parser and ws's checks on a 101 answer. Layout: [flags, head bytes...];
/// the flags pick the offered subprotocols and whether extensions were offered.
#[allow(dead_code)]
pub fn handshake_response(data: &[u8]) {
    use proto::handshake::*;
    if data.is_empty() {
        return;
    }
    let flags = data[0];
    let data = &data[1..];
    let offered: Vec<String> = match flags & 3 {
        0 => vec![],
        1 => vec!["chat".into()],
        2 => vec!["chat".into(), "superchat".into()],
        _ => vec!["a".into(), "b".into(), "c,d".into()],
    };
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    match parse_response(data) {
        Ok(Some((head, n))) => {
            assert!(n <= data.len() && n <= MAX_HEAD_SIZE);
            check_head_strings(&head);
            let step = if n > 600 { n / 200 } else { 1 };
            for cut in (0..n).step_by(step) {
                assert!(matches!(parse_response(&data[..cut]), Ok(None)), "prefix {cut} of {n}");
            }
            let pmd = proto::deflate::DeflateOptions::default();
            if let Ok(a) = validate_response(&head, key, &offered, (flags & 4 != 0).then_some(&pmd)) {
                assert!(head.header("sec-websocket-accept").as_deref() == Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
                if offered.is_empty() {
                    assert!(a.protocol.is_empty());
                } else {
                    assert!(offered.contains(&a.protocol));
                }
                if flags & 4 == 0 {
                    assert!(a.extensions.is_empty());
                }
            }
        }
        Ok(None) => assert!(data.len() <= MAX_HEAD_SIZE),
        Err(_) => {}
    }
}

/// A plain reading of ws's subprotocol grammar: comma-separated tokens, optional spaces or
/// tabs around each (but none at the very start or the very end: ws rejects both, and the
/// HTTP parsers trim them anyway), no empty item, no duplicate.
fn subprotocols_reference(h: &str) -> Option<Vec<String>> {
    if h.starts_with([' ', '\t']) || h.ends_with([' ', '\t']) {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for part in h.split(',') {
        let t = part.trim_matches([' ', '\t']);
        if t.is_empty() || !t.bytes().all(proto::extension::is_token_char) || out.iter().any(|x| x == t) {
            return None;
        }
        out.push(t.to_owned());
    }
    Some(out)
}

/// `Sec-WebSocket-Protocol` parsing, differential against the reference above, and linear.
#[allow(dead_code)]
pub fn subprotocols(data: &[u8]) {
    // Header values reach the parser as the head parser decodes them (latin1 fallback).
    let s: String = match std::str::from_utf8(data) {
        Ok(s) => s.to_owned(),
        Err(_) => data.iter().map(|&c| c as char).collect(),
    };
    let got = proto::handshake::parse_subprotocols(&s);
    let want = subprotocols_reference(&s);
    assert_eq!(got.as_ref().ok(), want.as_ref(), "{s:?}: {got:?}");
}

/// The incremental UTF-8 validator, differential against `std::str::from_utf8` over arbitrary
/// splits, and fail-fast: it must report an invalid sequence by the chunk that completes it.
/// Layout: [split count, split bytes..., text bytes...].
#[allow(dead_code)]
pub fn utf8(data: &[u8]) {
    use proto::utf8::{is_valid, Utf8Validator};
    if data.is_empty() {
        return;
    }
    let k = (data[0] & 7) as usize;
    if data.len() < 1 + k {
        return;
    }
    let text = &data[1 + k..];
    let mut cuts: Vec<usize> = data[1..1 + k].iter().map(|&b| (b as usize * text.len()) / 255).collect();
    cuts.push(0);
    cuts.push(text.len());
    cuts.sort_unstable();
    let std_result = std::str::from_utf8(text);
    assert_eq!(is_valid(text), std_result.is_ok());
    let mut v = Utf8Validator::new();
    let mut failed_at: Option<(usize, usize)> = None;
    for w in cuts.windows(2) {
        if !v.feed(&text[w[0]..w[1]]) {
            failed_at = Some((w[0], w[1]));
            break;
        }
    }
    let ok = failed_at.is_none() && v.is_complete();
    assert_eq!(ok, std_result.is_ok(), "{text:?} cut at {cuts:?}");
    if let Err(e) = std_result {
        if let Some(len) = e.error_len() {
            // The bad byte is at most `len` bytes after the valid prefix.
            let Some((start, end)) = failed_at else { panic!("{text:?} {cuts:?}: invalid bytes not reported by feed") };
            assert!(end > e.valid_up_to(), "failed before the invalid bytes arrived");
            assert!(start <= e.valid_up_to() + len, "did not fail fast: {text:?} {cuts:?}");
        }
    }
}

/// permessage-deflate options from one byte (every combination ws's checks tell apart).
fn deflate_options(b: u8) -> proto::deflate::DeflateOptions {
    use proto::deflate::BitsOption;
    let flag = |v: u8| match v % 3 {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    };
    let bits = |v: u8| match v % 4 {
        0 => BitsOption::Unset,
        1 => BitsOption::True,
        2 => BitsOption::False,
        _ => BitsOption::Num(8 + (v as u32 / 4) % 9), // 8..16: 16 is out of range on purpose
    };
    proto::deflate::DeflateOptions {
        server_no_context_takeover: flag(b),
        client_no_context_takeover: flag(b / 3),
        server_max_window_bits: bits(b / 9),
        client_max_window_bits: bits(b / 36),
        ..Default::default()
    }
}

/// The `Sec-WebSocket-Extensions` parser and both sides of the negotiation. Layout:
/// [options byte, header...]. Checks: an accepted answer parses back to the same agreed
/// parameters, agreed window bits are 8 to 15, and our own offer is a valid header.
#[allow(dead_code)]
pub fn extensions(data: &[u8]) {
    use proto::deflate::*;
    if data.is_empty() {
        return;
    }
    let opts = deflate_options(data[0]);
    let header = String::from_utf8_lossy(&data[1..]);
    let _ = proto::extension::parse(&header);
    let ok_bits = |b: Option<u8>| b.is_none_or(|b| (8..=15).contains(&b));
    if let Ok(Some((answer, params))) = negotiate_server(&opts, &header) {
        assert_eq!(DeflateParams::from_agreed(&answer), Some(params), "answer {answer:?} to {header:?}");
        assert!(ok_bits(params.server_max_window_bits) && ok_bits(params.client_max_window_bits));
    }
    if let Ok(params) = negotiate_client(&opts, &header) {
        assert!(ok_bits(params.server_max_window_bits) && ok_bits(params.client_max_window_bits));
    }
    assert!(proto::extension::parse(&offer(&opts)).is_ok());
}

/// The per-message inflater with its size limit. Layout: [flags, split, compressed...]:
/// window bits and context takeover from the flags, a limit of none, 16 B, 1000 B or 64 KiB.
/// Checks: a success stays within the limit; a failure is a data error (1007) or the limit
/// (1009); with context takeover a second message inflates after the first.
#[allow(dead_code)]
pub fn inflate(data: &[u8]) {
    use proto::deflate::*;
    use proto::zlib::Inflater;
    if data.len() < 2 {
        return;
    }
    let (flags, split) = (data[0], data[1] as usize);
    let body = &data[2..];
    let params = DeflateParams {
        server_no_context_takeover: flags & 1 != 0,
        client_no_context_takeover: flags & 2 != 0,
        server_max_window_bits: Some(8 + (flags >> 2) % 8),
        client_max_window_bits: None,
    };
    let limit = [0u64, 16, 1000, 65536][((flags >> 5) & 3) as usize];
    let mut inf = Inflater::new(&params, false);
    let cut = if body.is_empty() { 0 } else { split % (body.len() + 1) };
    for _ in 0..2 {
        let mut out = Vec::new();
        let r = inf
            .inflate(&body[..cut], &mut out, limit)
            .and_then(|_| inf.inflate(&body[cut..], &mut out, limit))
            .and_then(|_| inf.finish(&mut out, limit));
        match r {
            Ok(()) => assert!(limit == 0 || out.len() as u64 <= limit),
            Err(e) => {
                assert!(matches!((e.code, e.close_code), ("Z_DATA_ERROR", 1007) | ("WS_ERR_UNSUPPORTED_MESSAGE_LENGTH", 1009)), "{e:?}");
                return;
            }
        }
    }
}
