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

/// The pings and pongs `buf` holds, if it holds whole ones and nothing else: each frame's
/// opcode and unmasked payload, and the bytes they take (all of `buf`). None when `buf` holds
/// anything else or a part of a frame: that is for the connection's receiver to read. `masked`:
/// whether the peer must mask its frames (it is a client).
pub fn only_pings_and_pongs(buf: &[u8], masked: bool) -> Option<Vec<(u8, Vec<u8>)>> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let HeaderParse::Complete(h, n) = parse_header(&buf[pos..]) else { return None };
        let control = h.opcode == OP_PING || h.opcode == OP_PONG;
        if !control || !h.fin || h.rsv1 || h.rsv2 || h.rsv3 || h.payload_len > 125 || h.mask.is_some() != masked {
            return None;
        }
        let end = pos + n + h.payload_len as usize;
        let mut payload = buf.get(pos + n..end)?.to_vec();
        if let Some(m) = h.mask {
            apply_mask(&mut payload, m, 0);
        }
        frames.push((h.opcode, payload));
        pos = end;
    }
    (!frames.is_empty()).then_some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_and_pongs_alone_are_recognised() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, OP_PING, true, false, b"a", Some([1, 2, 3, 4]));
        encode_frame(&mut buf, OP_PONG, true, false, b"", Some([5, 6, 7, 8]));
        assert_eq!(only_pings_and_pongs(&buf, true), Some(vec![(OP_PING, b"a".to_vec()), (OP_PONG, Vec::new())]));
        // Unmasked from a client, a part of a frame, a data frame after: for the receiver.
        assert_eq!(only_pings_and_pongs(&buf, false), None);
        assert_eq!(only_pings_and_pongs(&buf[..buf.len() - 1], true), None);
        let mut more = buf.clone();
        encode_frame(&mut more, OP_TEXT, true, false, b"x", Some([1, 1, 1, 1]));
        assert_eq!(only_pings_and_pongs(&more, true), None);
        let mut close = Vec::new();
        encode_frame(&mut close, OP_CLOSE, true, false, b"", None);
        assert_eq!(only_pings_and_pongs(&close, false), None);
        assert_eq!(only_pings_and_pongs(&[], false), None);
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
