//! The receiving half of a connection as a sans-IO state machine: bytes in, complete messages and
//! control frames out. It parses frame headers across read boundaries, unmasks in place,
//! validates UTF-8 incrementally, assembles fragments with control frames interleaved, and
//! enforces `maxPayload` and `maxFragments` with ws's error codes.

use super::close::{is_valid_received_code, NO_STATUS};
use super::zlib::Inflater;
use super::error::{ErrorKind, ProtocolError};
use super::frame::*;
use super::utf8::{is_valid, Utf8Validator};

/// Limits and role for a receiver.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Servers require masked frames; clients reject them.
    pub is_server: bool,
    /// Largest message in bytes; 0 for no limit.
    pub max_payload: u64,
    /// Most data frames in one message; 0 for no limit.
    pub max_fragments: u32,
    pub skip_utf8_validation: bool,
    /// RSV1 is allowed only when permessage-deflate was agreed.
    pub allow_rsv1: bool,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            is_server: true,
            max_payload: 100 * 1024 * 1024,
            max_fragments: 131_072,
            skip_utf8_validation: false,
            allow_rsv1: false,
        }
    }
}

/// A message payload: borrowed from the input when one read held the whole unfragmented
/// message, else the assembled buffer, handed over without a copy.
#[derive(Debug)]
pub enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Payload<'_> {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }
}

/// What the receiver produces.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// `fragments` holds the end offset of each fragment of a fragmented binary message
    /// (for ws's `binaryType = 'fragments'`); None otherwise.
    Message { binary: bool, data: Payload<'a>, fragments: Option<Vec<u32>> },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// A close frame; `code` is 1005 when the frame had no body.
    Close { code: u16, reason: &'a [u8] },
}

/// Most bytes reserved ahead for a frame still arriving.
const RESERVE_STEP: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
struct FrameState {
    opcode: u8,
    fin: bool,
    mask: Option<[u8; 4]>,
    len: u64,
    offset: u64,
}

/// What a receiver holds only while a control frame or a fragmented message arrives in
/// pieces (out of line: every idle connection holds a receiver).
#[derive(Debug, Default)]
struct Pieces {
    /// The payload of a control frame split across reads.
    control: Vec<u8>,
    /// End offsets of the frames of a fragmented binary message (binaryType 'fragments').
    fragment_ends: Vec<u32>,
}

#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    header: [u8; MAX_HEADER_LEN],
    header_len: u8,
    frame: Option<FrameState>,
    /// Opcode of the message being assembled (0 when none).
    message_opcode: u8,
    fragmented: bool,
    message_len: u64,
    fragments: u32,
    utf8: Utf8Validator,
    message: Vec<u8>,
    pieces: Option<Box<Pieces>>,
    done: bool,
    /// The message being assembled is compressed (RSV1 on its first frame).
    compressed: bool,
}

impl Receiver {
    pub fn new(cfg: ReceiverConfig) -> Self {
        Receiver {
            cfg,
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            frame: None,
            message_opcode: 0,
            fragmented: false,
            message_len: 0,
            fragments: 0,
            utf8: Utf8Validator::new(),
            message: Vec::new(),
            pieces: None,
            done: false,
            compressed: false,
        }
    }

    pub fn config(&self) -> &ReceiverConfig {
        &self.cfg
    }

    /// True after a close frame or an error: later bytes are ignored, as ws does.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// True when no partial frame or message is held: dropping the receiver loses nothing (a
    /// connection drops its receiver then, and makes a new one for its next read).
    pub fn is_idle(&self) -> bool {
        self.header_len == 0 && self.frame.is_none() && self.message_opcode == 0
    }

    /// A message is being assembled: its inflate stream is under way (an inflater may be
    /// parked only between messages, see `Inflater::park`).
    pub fn in_message(&self) -> bool {
        self.message_opcode != 0
    }

    fn pieces(&mut self) -> &mut Pieces {
        self.pieces.get_or_insert_with(Box::default)
    }

    /// Notes where a frame of a binary message ends, when the message has several frames.
    fn fragment_end(&mut self, f: FrameState, end: u32) {
        let single = f.fin && self.fragments == 1;
        if self.message_opcode == OP_BINARY && !single {
            let ends = &mut self.pieces().fragment_ends;
            if end > ends.last().copied().unwrap_or(0) {
                ends.push(end);
            }
        }
    }

    /// Consumes `input` (unmasking it in place) and calls `sink` for each complete item.
    /// Stops at the first error, or at a close frame, after which input is ignored.
    pub fn feed<F>(&mut self, input: &mut [u8], sink: F) -> Result<(), ProtocolError>
    where
        F: FnMut(Incoming<'_>),
    {
        self.feed_inflating(input, None, sink)
    }

    /// `feed` with permessage-deflate agreed (`cfg.allow_rsv1`): compressed messages go
    /// through `inflater`, the connection's, which it keeps between messages and receivers.
    pub fn feed_inflating<F>(&mut self, input: &mut [u8], mut inflater: Option<&mut Inflater>, mut sink: F) -> Result<(), ProtocolError>
    where
        F: FnMut(Incoming<'_>),
    {
        let mut pos = 0;
        while pos < input.len() && !self.done {
            let Some(mut f) = self.frame else {
                pos += self.read_header(&input[pos..])?;
                if let Some(f) = self.frame {
                    if f.len == 0 {
                        self.frame = None;
                        if f.opcode < OP_CLOSE && self.compressed {
                            self.end_compressed_frame(f, inflater.as_deref_mut(), &mut sink)?;
                            continue;
                        }
                        let direct = f.opcode >= OP_CLOSE || !self.fragmented_before();
                        self.finish_frame(f, &mut [], direct, &mut sink)?;
                    }
                }
                continue;
            };
            let avail = (f.len - f.offset).min((input.len() - pos) as u64) as usize;
            let whole = f.offset == 0 && avail as u64 == f.len;
            let chunk = &mut input[pos..pos + avail];
            pos += avail;
            if let Some(m) = f.mask {
                apply_mask(chunk, m, (f.offset & 3) as usize);
            }
            f.offset += avail as u64;
            let complete = f.offset == f.len;
            self.frame = if complete { None } else { Some(f) };
            if f.opcode >= OP_CLOSE {
                if whole {
                    self.finish_frame(f, chunk, true, &mut sink)?;
                } else {
                    self.pieces().control.extend_from_slice(chunk);
                    if complete {
                        let mut body = std::mem::take(&mut self.pieces().control);
                        self.finish_frame(f, &mut body, true, &mut sink)?;
                    }
                }
                continue;
            }
            if self.compressed {
                let before = self.message.len();
                let limit = self.cfg.max_payload;
                let r = match inflater.as_deref_mut() {
                    Some(inf) => inf.inflate(chunk, &mut self.message, limit),
                    None => Err(ProtocolError::frame("WS_ERR_UNEXPECTED_RSV_1", "RSV1 must be clear", 1002)),
                };
                if let Err(e) = r {
                    return Err(self.fail(e));
                }
                self.check_inflated_utf8(before)?;
                if complete {
                    self.end_compressed_frame(f, inflater.as_deref_mut(), &mut sink)?;
                }
                continue;
            }
            if self.message_opcode == OP_TEXT && !self.cfg.skip_utf8_validation && !self.utf8.feed(chunk) {
                return Err(self.fail(ProtocolError::invalid_utf8()));
            }
            if whole && f.fin && !self.fragmented_before() {
                self.finish_frame(f, chunk, true, &mut sink)?;
            } else {
                if f.offset == avail as u64 && f.len > avail as u64 {
                    // First piece of a frame longer than this read: make room for the rest
                    // at once (bounded, so an announced length alone cannot claim memory).
                    let rest = (f.len as usize).min(RESERVE_STEP);
                    self.message.reserve(rest);
                }
                self.message.extend_from_slice(chunk);
                if complete {
                    self.fragment_end(f, self.message.len() as u32);
                    self.finish_frame(f, &mut [], false, &mut sink)?;
                }
            }
        }
        Ok(())
    }

    /// Validates what the inflater just appended to a text message.
    fn check_inflated_utf8(&mut self, from: usize) -> Result<(), ProtocolError> {
        if self.message_opcode == OP_TEXT && !self.cfg.skip_utf8_validation && !self.utf8.feed(&self.message[from..]) {
            return Err(self.fail(ProtocolError::invalid_utf8()));
        }
        Ok(())
    }

    /// The last byte of a frame of a compressed message arrived: on the final frame, inflate
    /// the trailer the sender removed; then handle the frame as a buffered one.
    fn end_compressed_frame<F>(&mut self, f: FrameState, inflater: Option<&mut Inflater>, sink: &mut F) -> Result<(), ProtocolError>
    where
        F: FnMut(Incoming<'_>),
    {
        if f.fin {
            let before = self.message.len();
            let limit = self.cfg.max_payload;
            if let Some(inf) = inflater {
                if let Err(e) = inf.finish(&mut self.message, limit) {
                    return Err(self.fail(e));
                }
            }
            self.check_inflated_utf8(before)?;
        }
        // Frames that inflated to nothing are not listed, as ws skips them.
        self.fragment_end(f, self.message.len() as u32);
        self.finish_frame(f, &mut [], false, sink)
    }

    /// True when earlier fragments of the current message were buffered.
    fn fragmented_before(&self) -> bool {
        !self.message.is_empty() || self.fragments > 1
    }

    fn fail(&mut self, e: ProtocolError) -> ProtocolError {
        self.done = true;
        self.message = Vec::new();
        self.pieces = None;
        e
    }

    /// Reads (part of) a header; returns bytes consumed.
    fn read_header(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        let had = self.header_len as usize;
        let take = (MAX_HEADER_LEN - had).min(input.len());
        let parsed = if had == 0 {
            parse_header(input)
        } else {
            self.header[had..had + take].copy_from_slice(&input[..take]);
            parse_header(&self.header[..had + take])
        };
        match parsed {
            HeaderParse::Incomplete => {
                if had == 0 {
                    self.header[..take].copy_from_slice(&input[..take]);
                }
                // At most MAX_HEADER_LEN.
                self.header_len = (had + take) as u8;
                Ok(take)
            }
            HeaderParse::Complete(h, n) => {
                self.header_len = 0;
                self.start_frame(h)?;
                Ok(n - had)
            }
        }
    }

    fn start_frame(&mut self, h: FrameHeader) -> Result<(), ProtocolError> {
        let err = |code, msg: String| ProtocolError::frame(code, msg, 1002);
        if h.rsv2 || h.rsv3 {
            return Err(self.fail(err("WS_ERR_UNEXPECTED_RSV_2_3", "RSV2 and RSV3 must be clear".into())));
        }
        let rsv1_err = || err("WS_ERR_UNEXPECTED_RSV_1", "RSV1 must be clear".into());
        if h.rsv1 && !self.cfg.allow_rsv1 {
            return Err(self.fail(rsv1_err()));
        }
        match h.opcode {
            OP_CONTINUATION => {
                if h.rsv1 {
                    return Err(self.fail(rsv1_err()));
                }
                if !self.fragmented {
                    return Err(self.fail(err("WS_ERR_INVALID_OPCODE", "invalid opcode 0".into())));
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.fragmented {
                    return Err(self.fail(err("WS_ERR_INVALID_OPCODE", format!("invalid opcode {}", h.opcode))));
                }
                self.compressed = h.rsv1;
            }
            OP_CLOSE | OP_PING | OP_PONG => {
                if !h.fin {
                    return Err(self.fail(err("WS_ERR_EXPECTED_FIN", "FIN must be set".into())));
                }
                if h.rsv1 {
                    return Err(self.fail(rsv1_err()));
                }
                if h.payload_len > 125 || (h.opcode == OP_CLOSE && h.payload_len == 1) {
                    return Err(self.fail(err(
                        "WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH",
                        format!("invalid payload length {}", h.payload_len),
                    )));
                }
            }
            op => return Err(self.fail(err("WS_ERR_INVALID_OPCODE", format!("invalid opcode {op}")))),
        }
        if self.cfg.is_server && h.mask.is_none() {
            return Err(self.fail(err("WS_ERR_EXPECTED_MASK", "MASK must be set".into())));
        }
        if !self.cfg.is_server && h.mask.is_some() {
            return Err(self.fail(err("WS_ERR_UNEXPECTED_MASK", "MASK must be clear".into())));
        }
        if h.payload_len > (1u64 << 53) - 1 {
            return Err(self.fail(ProtocolError {
                kind: ErrorKind::RangeError,
                code: "WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH",
                message: "Unsupported WebSocket frame: payload length > 2^53 - 1".into(),
                close_code: 1009,
            }));
        }
        if h.opcode < OP_CLOSE {
            if h.opcode != OP_CONTINUATION {
                self.message_opcode = h.opcode;
                self.utf8.reset();
            }
            self.fragmented = !h.fin;
            self.message_len += h.payload_len;
            if self.cfg.max_payload > 0 && self.message_len > self.cfg.max_payload {
                return Err(self.fail(ProtocolError::max_payload()));
            }
            self.fragments += 1;
            if self.cfg.max_fragments > 0 && self.fragments > self.cfg.max_fragments {
                return Err(self.fail(ProtocolError::too_many_fragments()));
            }
        }
        self.frame = Some(FrameState { opcode: h.opcode, fin: h.fin, mask: h.mask, len: h.payload_len, offset: 0 });
        Ok(())
    }

    /// Handles a complete frame. `body` is the whole payload for control frames and for
    /// unbuffered messages (`direct`); otherwise the message is in `self.message`.
    fn finish_frame<F>(&mut self, f: FrameState, body: &mut [u8], direct: bool, sink: &mut F) -> Result<(), ProtocolError>
    where
        F: FnMut(Incoming<'_>),
    {
        match f.opcode {
            OP_PING => sink(Incoming::Ping(body)),
            OP_PONG => sink(Incoming::Pong(body)),
            OP_CLOSE => {
                self.done = true;
                if body.is_empty() {
                    sink(Incoming::Close { code: NO_STATUS, reason: &[] });
                } else {
                    let code = u16::from_be_bytes([body[0], body[1]]);
                    if !is_valid_received_code(code) {
                        return Err(self.fail(ProtocolError::frame(
                            "WS_ERR_INVALID_CLOSE_CODE",
                            format!("invalid status code {code}"),
                            1002,
                        )));
                    }
                    let reason = &body[2..];
                    if !self.cfg.skip_utf8_validation && !is_valid(reason) {
                        return Err(self.fail(ProtocolError::invalid_utf8()));
                    }
                    sink(Incoming::Close { code, reason });
                }
            }
            _ => {
                if !f.fin {
                    return Ok(());
                }
                let binary = self.message_opcode == OP_BINARY;
                if !binary && !self.cfg.skip_utf8_validation && !self.utf8.is_complete() {
                    return Err(self.fail(ProtocolError::invalid_utf8()));
                }
                self.message_opcode = 0;
                self.compressed = false;
                self.fragmented = false;
                self.message_len = 0;
                self.fragments = 0;
                if direct {
                    if let Some(p) = self.pieces.as_mut() {
                        p.fragment_ends.clear();
                    }
                    sink(Incoming::Message { binary, data: Payload::Borrowed(body), fragments: None });
                } else {
                    let data = std::mem::take(&mut self.message);
                    let ends = self.pieces.as_mut().map(|p| std::mem::take(&mut p.fragment_ends)).unwrap_or_default();
                    let fragments = (binary && ends.len() > 1).then_some(ends);
                    sink(Incoming::Message { binary, data: Payload::Owned(data), fragments });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Ev {
        Msg(bool, Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(u16, Vec<u8>),
    }

    fn run(cfg: ReceiverConfig, bytes: &[u8], step: usize) -> (Vec<Ev>, Option<ProtocolError>) {
        let mut r = Receiver::new(cfg);
        let mut out = Vec::new();
        let mut data = bytes.to_vec();
        for chunk in data.chunks_mut(step.max(1)) {
            let res = r.feed(chunk, |i| {
                out.push(match i {
                    Incoming::Message { binary, data, .. } => Ev::Msg(binary, data.as_slice().to_vec()),
                    Incoming::Ping(p) => Ev::Ping(p.to_vec()),
                    Incoming::Pong(p) => Ev::Pong(p.to_vec()),
                    Incoming::Close { code, reason } => Ev::Close(code, reason.to_vec()),
                })
            });
            if let Err(e) = res {
                return (out, Some(e));
            }
        }
        (out, None)
    }

    const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

    fn frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(&mut v, op, fin, false, payload, MASK);
        v
    }

    #[test]
    fn fragments_with_interleaved_control_at_every_split() {
        let mut bytes = frame(OP_TEXT, false, "hé".as_bytes());
        bytes.extend(frame(OP_PING, true, b"p"));
        bytes.extend(frame(OP_CONTINUATION, false, &[]));
        bytes.extend(frame(OP_CONTINUATION, true, "llo".as_bytes()));
        bytes.extend(frame(OP_BINARY, true, &[1, 2, 3]));
        bytes.extend(frame(OP_CLOSE, true, &[0x03, 0xe8, b'b', b'y']));
        bytes.extend(frame(OP_TEXT, true, b"ignored"));
        for step in 1..bytes.len() + 1 {
            let (ev, err) = run(ReceiverConfig::default(), &bytes, step);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(
                ev,
                vec![
                    Ev::Ping(b"p".to_vec()),
                    Ev::Msg(false, "héllo".as_bytes().to_vec()),
                    Ev::Msg(true, vec![1, 2, 3]),
                    Ev::Close(1000, b"by".to_vec()),
                ],
                "step {step}"
            );
        }
    }

    fn err_of(cfg: ReceiverConfig, bytes: &[u8]) -> ProtocolError {
        run(cfg, bytes, bytes.len()).1.expect("an error")
    }

    #[test]
    fn errors_match_ws() {
        let c = ReceiverConfig::default;
        let mut rsv2 = frame(OP_TEXT, true, b"a");
        rsv2[0] |= 0x20;
        assert_eq!(err_of(c(), &rsv2).code, "WS_ERR_UNEXPECTED_RSV_2_3");
        let mut rsv1 = frame(OP_TEXT, true, b"a");
        rsv1[0] |= 0x40;
        let e = err_of(c(), &rsv1);
        assert_eq!((e.code, e.close_code), ("WS_ERR_UNEXPECTED_RSV_1", 1002));
        assert_eq!(e.message, "Invalid WebSocket frame: RSV1 must be clear");
        assert_eq!(err_of(c(), &frame(3, true, b"")).message, "Invalid WebSocket frame: invalid opcode 3");
        assert_eq!(err_of(c(), &frame(OP_CONTINUATION, true, b"")).code, "WS_ERR_INVALID_OPCODE");
        let mut two = frame(OP_TEXT, false, b"a");
        two.extend(frame(OP_TEXT, true, b"b"));
        assert_eq!(err_of(c(), &two).message, "Invalid WebSocket frame: invalid opcode 1");
        assert_eq!(err_of(c(), &frame(OP_PING, false, b"")).code, "WS_ERR_EXPECTED_FIN");
        assert_eq!(err_of(c(), &frame(OP_PING, true, &[0; 126])).code, "WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH");
        assert_eq!(err_of(c(), &frame(OP_CLOSE, true, &[3])).code, "WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH");
        let e = err_of(c(), &frame(OP_CLOSE, true, &[0x03, 0xed]));
        assert_eq!((e.code, e.close_code), ("WS_ERR_INVALID_CLOSE_CODE", 1002));
        assert_eq!(e.message, "Invalid WebSocket frame: invalid status code 1005");
        let e = err_of(c(), &frame(OP_CLOSE, true, &[0x03, 0xe8, 0xff]));
        assert_eq!((e.code, e.close_code), ("WS_ERR_INVALID_UTF8", 1007));
        let e = err_of(c(), &frame(OP_TEXT, true, &[0xff]));
        assert_eq!((e.code, e.close_code), ("WS_ERR_INVALID_UTF8", 1007));
        let e = err_of(c(), &frame(OP_TEXT, true, &[0xe2, 0x82]));
        assert_eq!(e.code, "WS_ERR_INVALID_UTF8");
        let mut unmasked = Vec::new();
        encode_frame(&mut unmasked, OP_TEXT, true, false, b"a", None);
        assert_eq!(err_of(c(), &unmasked).code, "WS_ERR_EXPECTED_MASK");
        let client = ReceiverConfig { is_server: false, ..c() };
        assert_eq!(err_of(client.clone(), &frame(OP_TEXT, true, b"a")).code, "WS_ERR_UNEXPECTED_MASK");
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 53).to_be_bytes());
        let e = err_of(client, &huge);
        assert_eq!((e.code, e.close_code), ("WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH", 1009));
        let small = ReceiverConfig { max_payload: 10, ..c() };
        let mut parts = frame(OP_BINARY, false, &[0; 6]);
        parts.extend(frame(OP_CONTINUATION, true, &[0; 6]));
        let e = err_of(small, &parts);
        assert_eq!((e.code, e.close_code, e.message.as_str()), ("WS_ERR_UNSUPPORTED_MESSAGE_LENGTH", 1009, "Max payload size exceeded"));
        let few = ReceiverConfig { max_fragments: 2, ..c() };
        let mut many = frame(OP_BINARY, false, b"a");
        many.extend(frame(OP_CONTINUATION, false, b"b"));
        many.extend(frame(OP_CONTINUATION, true, b"c"));
        assert_eq!(err_of(few, &many).code, "WS_ERR_TOO_MANY_BUFFERED_PARTS");
    }

    #[test]
    fn utf8_fails_before_message_ends() {
        let mut r = Receiver::new(ReceiverConfig::default());
        let mut first = frame(OP_TEXT, false, &[0xce, 0xba, 0xf4, 0x90]);
        assert!(r.feed(&mut first, |_| {}).is_err());
    }

    #[test]
    fn binary_fragment_boundaries() {
        let mut bytes = frame(OP_BINARY, false, &[1, 2]);
        bytes.extend(frame(OP_CONTINUATION, false, &[]));
        bytes.extend(frame(OP_CONTINUATION, true, &[3]));
        let mut r = Receiver::new(ReceiverConfig::default());
        let mut seen = None;
        r.feed(&mut bytes, |i| {
            if let Incoming::Message { fragments, data, .. } = i {
                seen = Some((fragments, data.as_slice().to_vec()));
            }
        })
        .unwrap();
        // Empty fragments are not listed, as ws skips them.
        assert_eq!(seen, Some((Some(vec![2, 3]), vec![1, 2, 3])));
    }

    #[test]
    fn fragment_boundaries_at_every_split_and_nothing_held_when_idle() {
        let mut bytes = frame(OP_BINARY, false, &[1, 2]);
        bytes.extend(frame(OP_PING, true, b"ping"));
        bytes.extend(frame(OP_CONTINUATION, true, &[3]));
        // One frame split across reads: one fragment, so no boundaries.
        bytes.extend(frame(OP_BINARY, true, &[4, 5, 6, 7]));
        for step in 1..bytes.len() + 1 {
            let mut r = Receiver::new(ReceiverConfig::default());
            let mut seen = Vec::new();
            for chunk in bytes.clone().chunks_mut(step) {
                r.feed(chunk, |i| match i {
                    Incoming::Message { fragments, data, .. } => seen.push((fragments, data.as_slice().to_vec())),
                    Incoming::Ping(p) => assert_eq!(p, b"ping"),
                    _ => panic!("unexpected item"),
                })
                .unwrap();
            }
            assert_eq!(seen, vec![(Some(vec![2, 3]), vec![1, 2, 3]), (None, vec![4, 5, 6, 7])], "step {step}");
            assert!(r.is_idle());
            let pending = r.pieces.as_ref().is_some_and(|p| !p.control.is_empty() || !p.fragment_ends.is_empty());
            assert!(!pending && r.message.capacity() == 0, "step {step}: an idle receiver holds nothing of a message");
        }
    }

    fn deflated(msg: &[u8]) -> Vec<u8> {
        let mut d = crate::protocol::zlib::Deflater::new(&Default::default(), false, Default::default());
        let mut z = Vec::new();
        d.compress(msg, true, &mut z);
        z
    }

    /// A receiver with permessage-deflate agreed, and a server's inflater for it.
    fn with_inflater(cfg: ReceiverConfig) -> (Receiver, crate::protocol::zlib::Inflater) {
        let r = Receiver::new(ReceiverConfig { allow_rsv1: true, ..cfg });
        (r, crate::protocol::zlib::Inflater::new(&Default::default(), true))
    }

    fn inflate_error(cfg: ReceiverConfig, bytes: &mut [u8]) -> ProtocolError {
        let (mut r, mut inf) = with_inflater(cfg);
        r.feed_inflating(bytes, Some(&mut inf), |_| {}).unwrap_err()
    }

    #[test]
    fn compressed_messages_in_fragments_at_every_split() {
        let text = "héllo ".repeat(200);
        let z = deflated(text.as_bytes());
        let (a, b) = z.split_at(z.len() / 3);
        let mut first = frame(OP_TEXT, false, a);
        first[0] |= 0x40;
        let mut bytes = first;
        bytes.extend(frame(OP_PING, true, b"p"));
        bytes.extend(frame(OP_CONTINUATION, false, b));
        bytes.extend(frame(OP_CONTINUATION, true, &[]));
        let mut plain = frame(OP_BINARY, true, &[1, 2]);
        plain[0] &= !0x40;
        bytes.extend(plain);
        for step in [1, 2, 7, 100, bytes.len()] {
            let (mut r, mut inf) = with_inflater(ReceiverConfig::default());
            let mut out = Vec::new();
            for chunk in bytes.clone().chunks_mut(step) {
                r.feed_inflating(chunk, Some(&mut inf), |i| match i {
                    Incoming::Message { binary, data, .. } => out.push(Ev::Msg(binary, data.as_slice().to_vec())),
                    Incoming::Ping(p) => out.push(Ev::Ping(p.to_vec())),
                    _ => {}
                })
                .unwrap();
            }
            assert_eq!(out, vec![Ev::Ping(b"p".to_vec()), Ev::Msg(false, text.as_bytes().to_vec()), Ev::Msg(true, vec![1, 2])]);
        }
    }

    #[test]
    fn compressed_errors() {
        // A bomb: 16 MiB of zeros stopped at maxPayload, with ws's code.
        let z = deflated(&vec![0u8; 16 * 1024 * 1024]);
        let mut f = frame(OP_BINARY, true, &z);
        f[0] |= 0x40;
        let e = inflate_error(ReceiverConfig { max_payload: 1 << 20, ..ReceiverConfig::default() }, &mut f);
        assert_eq!((e.code, e.close_code), ("WS_ERR_UNSUPPORTED_MESSAGE_LENGTH", 1009));
        // Invalid UTF-8 inside a compressed text message.
        let mut f = frame(OP_TEXT, true, &deflated(&[b'a', 0xff]));
        f[0] |= 0x40;
        let e = inflate_error(ReceiverConfig::default(), &mut f);
        assert_eq!((e.code, e.close_code), ("WS_ERR_INVALID_UTF8", 1007));
        // Not deflate data.
        let mut f = frame(OP_BINARY, true, &[0xff; 8]);
        f[0] |= 0x40;
        let e = inflate_error(ReceiverConfig::default(), &mut f);
        assert_eq!((e.code, e.close_code), ("Z_DATA_ERROR", 1007));
        // RSV1 on a continuation frame.
        let mut f = frame(OP_BINARY, false, &deflated(b"a"));
        f[0] |= 0x40;
        let mut c = frame(OP_CONTINUATION, true, b"");
        c[0] |= 0x40;
        f.extend(c);
        let e = inflate_error(ReceiverConfig::default(), &mut f);
        assert_eq!(e.code, "WS_ERR_UNEXPECTED_RSV_1");
    }

    #[test]
    fn empty_close_and_skip_utf8() {
        let (ev, _) = run(ReceiverConfig::default(), &frame(OP_CLOSE, true, &[]), 1);
        assert_eq!(ev, vec![Ev::Close(1005, vec![])]);
        let cfg = ReceiverConfig { skip_utf8_validation: true, ..ReceiverConfig::default() };
        let (ev, err) = run(cfg, &frame(OP_TEXT, true, &[0xff]), 3);
        assert!(err.is_none());
        assert_eq!(ev, vec![Ev::Msg(false, vec![0xff])]);
    }
}
