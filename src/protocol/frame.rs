//! Frame header codec and masking (RFC 6455 section 5.2). Pure functions over bytes.

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// XORs `data` with `mask`, where `offset` is the position of `data[0]` in the payload.
#[inline]
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset & 3);
    let m32 = u32::from_ne_bytes(m);
    let m64 = (m32 as u64) | ((m32 as u64) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_ne_bytes(w) ^ m64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

/// Appends a complete frame to `out`: header, then the payload (masked when `mask` is set).
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, fin: bool, rsv1: bool, payload: &[u8], mask: Option<[u8; 4]>) {
    encode_header(out, opcode, fin, rsv1, payload.len() as u64, mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
}

/// Appends a frame header for a payload of `len` bytes.
pub fn encode_header(out: &mut Vec<u8>, opcode: u8, fin: bool, rsv1: bool, len: u64, mask: Option<[u8; 4]>) {
    let b0 = (if fin { 0x80 } else { 0 }) | (if rsv1 { 0x40 } else { 0 }) | (opcode & 0x0f);
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    out.push(b0);
    if len < 126 {
        out.push(mbit | len as u8);
    } else if len <= 0xffff {
        out.push(mbit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Length of the header a payload of `len` bytes needs.
pub fn header_len(len: u64, masked: bool) -> usize {
    let base = if len < 126 { 2 } else if len <= 0xffff { 4 } else { 10 };
    base + if masked { 4 } else { 0 }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub rsv1: bool,
    pub rsv2: bool,
    pub rsv3: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// Outcome of parsing a header from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderParse {
    /// More bytes are needed.
    Incomplete,
    /// A header of `.1` bytes.
    Complete(FrameHeader, usize),
}

/// Parses a frame header; the bytes need not hold the payload.
pub fn parse_header(buf: &[u8]) -> HeaderParse {
    if buf.len() < 2 {
        return HeaderParse::Incomplete;
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let masked = b1 & 0x80 != 0;
    let len7 = (b1 & 0x7f) as u64;
    let (payload_len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return HeaderParse::Incomplete;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return HeaderParse::Incomplete;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n, 2),
    };
    let mask = if masked {
        if buf.len() < pos + 4 {
            return HeaderParse::Incomplete;
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    HeaderParse::Complete(
        FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode: b0 & 0x0f,
            mask,
            payload_len,
        },
        pos,
    )
}

/// What `unmask_simple` found: a whole frame's opcode and where its payload is in the buffer.
#[derive(Debug, PartialEq)]
pub struct Simple {
    pub opcode: u8,
    pub payload: std::ops::Range<usize>,
}

/// Recognises input made only of whole, unfragmented, uncompressed frames: pings and pongs,
/// and text and binary messages when `data` is set (texts valid UTF-8 unless `skip_utf8`,
/// payloads within `max_payload` when it is not 0). Their payloads are unmasked in place.
/// None (with `buf` as it was) for anything else, which is the receiver's to decode: a close
/// frame, a fragment, a frame cut short, a bad mask bit, a bad text.
pub fn unmask_simple(buf: &mut [u8], masked: bool, data: bool, max_payload: u64, skip_utf8: bool) -> Option<Vec<Simple>> {
    scan_simple(buf, masked, data, max_payload, skip_utf8, false).map(|(frames, _)| frames)
}

/// As `unmask_simple`, but the input may end with part of a frame: the whole frames before it
/// are unmasked, and the second value says where they end.
pub fn unmask_simple_prefix(buf: &mut [u8], masked: bool, data: bool, max_payload: u64, skip_utf8: bool) -> Option<(Vec<Simple>, usize)> {
    scan_simple(buf, masked, data, max_payload, skip_utf8, true)
}

fn scan_simple(buf: &mut [u8], masked: bool, data: bool, max_payload: u64, skip_utf8: bool, partial: bool) -> Option<(Vec<Simple>, usize)> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let HeaderParse::Complete(h, n) = parse_header(&buf[pos..]) else { break };
        let control = h.opcode == OP_PING || h.opcode == OP_PONG;
        let message = data && (h.opcode == OP_TEXT || h.opcode == OP_BINARY);
        if !(control || message) || !h.fin || h.rsv1 || h.rsv2 || h.rsv3 || h.mask.is_some() != masked {
            return None;
        }
        if (control && h.payload_len > 125) || (message && max_payload != 0 && h.payload_len > max_payload) {
            return None;
        }
        let start = pos + n;
        let end = start.checked_add(usize::try_from(h.payload_len).ok()?)?;
        if end > buf.len() {
            break;
        }
        frames.push((h, start..end));
        pos = end;
    }
    // The loop stops early at a frame cut short, which only a prefix may end with.
    if frames.is_empty() || (!partial && pos < buf.len()) {
        return None;
    }
    let unmask = |buf: &mut [u8], frames: &[(FrameHeader, std::ops::Range<usize>)]| {
        for (h, r) in frames {
            if let Some(m) = h.mask {
                apply_mask(&mut buf[r.clone()], m, 0);
            }
        }
    };
    unmask(buf, &frames);
    let bad_text = !skip_utf8 && frames.iter().any(|(h, r)| h.opcode == OP_TEXT && !crate::protocol::utf8::is_valid(&buf[r.clone()]));
    if bad_text {
        // Masking twice gives the bytes back.
        unmask(buf, &frames);
        return None;
    }
    Some((frames.into_iter().map(|(h, payload)| Simple { opcode: h.opcode, payload }).collect(), pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_and_pongs_alone_are_recognised_without_data_frames() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, OP_PING, true, false, b"a", Some([1, 2, 3, 4]));
        encode_frame(&mut buf, OP_PONG, true, false, b"", Some([5, 6, 7, 8]));
        let mut got = buf.clone();
        let frames = unmask_simple(&mut got, true, false, 0, false).unwrap();
        let payloads: Vec<(u8, &[u8])> = frames.iter().map(|f| (f.opcode, &got[f.payload.clone()])).collect();
        assert_eq!(payloads, vec![(OP_PING, &b"a"[..]), (OP_PONG, &b""[..])]);
        let mut more = buf.clone();
        encode_frame(&mut more, OP_TEXT, true, false, b"x", Some([1, 1, 1, 1]));
        assert_eq!(unmask_simple(&mut more, true, false, 0, false), None);
        let mut big = Vec::new();
        encode_frame(&mut big, OP_PING, true, false, &[0; 126], None);
        assert_eq!(unmask_simple(&mut big, false, true, 0, false), None);
    }

    #[test]
    fn simple_frames_are_unmasked_in_place_and_anything_else_left_alone() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, OP_TEXT, true, false, b"hello", Some([1, 2, 3, 4]));
        encode_frame(&mut buf, OP_PING, true, false, b"p", Some([5, 6, 7, 8]));
        encode_frame(&mut buf, OP_BINARY, true, false, &[0xff, 0], Some([9, 9, 9, 9]));
        let mut got = buf.clone();
        let frames = unmask_simple(&mut got, true, true, 0, false).unwrap();
        let payloads: Vec<(u8, &[u8])> = frames.iter().map(|f| (f.opcode, &got[f.payload.clone()])).collect();
        assert_eq!(payloads, vec![(OP_TEXT, &b"hello"[..]), (OP_PING, &b"p"[..]), (OP_BINARY, &[0xff, 0][..])]);
        // Without data frames allowed, over the size limit, cut short, unmasked from a client.
        for (data, max, cut, masked) in [(false, 0, 0, true), (true, 4, 0, true), (true, 0, 1, true), (true, 0, 0, false)] {
            let mut b = buf[..buf.len() - cut].to_vec();
            assert_eq!(unmask_simple(&mut b, masked, data, max, false), None);
            assert_eq!(b, buf[..buf.len() - cut]);
        }
        // A bad text, a fragment, a compressed frame, a close: the bytes stay as they came.
        let mut bad = Vec::new();
        encode_frame(&mut bad, OP_BINARY, true, false, b"ok", Some([1, 2, 3, 4]));
        encode_frame(&mut bad, OP_TEXT, true, false, &[0xc3], Some([1, 2, 3, 4]));
        let mut b = bad.clone();
        assert_eq!(unmask_simple(&mut b, true, true, 0, false), None);
        assert_eq!(b, bad);
        assert!(unmask_simple(&mut bad.clone(), true, true, 0, true).is_some());
        for (op, fin, rsv1) in [(OP_TEXT, false, false), (OP_TEXT, true, true), (OP_CLOSE, true, false), (OP_CONTINUATION, true, false)] {
            let mut f = Vec::new();
            encode_frame(&mut f, op, fin, rsv1, b"x", None);
            assert_eq!(unmask_simple(&mut f, false, true, 0, false), None);
        }
        assert_eq!(unmask_simple(&mut [], false, true, 0, false), None);
    }

    #[test]
    fn a_prefix_of_whole_frames_is_unmasked_and_a_frame_cut_short_left_as_it_came() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, OP_TEXT, true, false, b"one", Some([1, 2, 3, 4]));
        encode_frame(&mut buf, OP_BINARY, true, false, &[7; 300], Some([5, 6, 7, 8]));
        let first = header_len(3, true) + 3;
        // Cut inside the second frame's payload, inside its header, and not at all.
        for (cut, whole) in [(buf.len() - 1, first), (first + 3, first), (buf.len(), buf.len())] {
            let mut got = buf[..cut].to_vec();
            let (frames, end) = unmask_simple_prefix(&mut got, true, true, 0, false).unwrap();
            assert_eq!(end, whole);
            assert_eq!(&got[frames[0].payload.clone()], b"one");
            assert_eq!(got[whole..], buf[whole..cut]);
            assert_eq!(frames.len(), if whole == first { 1 } else { 2 });
        }
        // Nothing whole, or a bad frame anywhere: None, the bytes as they came.
        let mut short = buf[..first - 1].to_vec();
        assert_eq!(unmask_simple_prefix(&mut short, true, true, 0, false), None);
        let mut bad = buf[..first].to_vec();
        encode_frame(&mut bad, OP_CLOSE, true, false, b"", Some([1, 1, 1, 1]));
        bad.extend_from_slice(&buf[first..first + 2]);
        let mut b = bad.clone();
        assert_eq!(unmask_simple_prefix(&mut b, true, true, 0, false), None);
        assert_eq!(b, bad);
    }

    #[test]
    fn roundtrip_lengths() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut out = Vec::new();
                encode_frame(&mut out, OP_BINARY, true, false, &payload, mask);
                let HeaderParse::Complete(h, n) = parse_header(&out) else { panic!() };
                assert_eq!(n, header_len(len as u64, mask.is_some()));
                assert_eq!(h.payload_len, len as u64);
                assert_eq!(h.mask, mask);
                let mut body = out[n..].to_vec();
                if let Some(m) = mask {
                    apply_mask(&mut body, m, 0);
                }
                assert_eq!(body, payload);
                for cut in 0..n {
                    assert_eq!(parse_header(&out[..cut]), HeaderParse::Incomplete);
                }
            }
        }
    }

    #[test]
    fn mask_offsets() {
        let data: Vec<u8> = (0..100u8).collect();
        let mask = [0xde, 0xad, 0xbe, 0xef];
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        for split in 0..100 {
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(parts, whole);
        }
    }
}
