//! The opening handshake (RFC 6455 section 4) on both sides, as ws performs it: request and
//! response parsing, the checks with ws's HTTP answers and error messages, and the
//! `Sec-WebSocket-Protocol` grammar. Bytes in, decisions out; no sockets.

use super::deflate::{negotiate_client, negotiate_server, DeflateOptions, DeflateParams};
use super::extension::is_token_char;
use tungstenite::handshake::derive_accept_key;

/// Most header lines accepted in a request or response head.
pub const MAX_HEADERS: usize = 128;
/// Largest request or response head in bytes (Node's default `maxHeaderSize`).
pub const MAX_HEAD_SIZE: usize = 16 * 1024;

/// A parsed HTTP head. Header names keep their case, as in Node's `rawHeaders`.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub reason: String,
    /// HTTP minor version (1.0 or 1.1).
    pub minor: u8,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// A header's value, duplicates joined with ", " as Node joins them.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (k, v) in &self.headers {
            if k.eq_ignore_ascii_case(name) {
                match &mut out {
                    Some(s) => {
                        s.push_str(", ");
                        s.push_str(v);
                    }
                    None => out = Some(v.clone()),
                }
            }
        }
        out
    }
}

/// Why a head could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed HTTP: answered with 400 on the server side.
    Invalid(String),
    /// Head larger than `MAX_HEAD_SIZE` or with more than `MAX_HEADERS` lines: 431.
    TooLarge,
}

fn latin1(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => b.iter().map(|&c| c as char).collect(),
    }
}

fn collect_headers(hs: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    hs.iter().map(|h| (h.name.to_owned(), latin1(h.value))).collect()
}

/// The size limits and error mapping shared by request and response parsing: `Ok(Some(n))`
/// for a complete head of `n` bytes, `Ok(None)` when more bytes are needed.
fn head_status(buf: &[u8], parsed: httparse::Result<usize>, max_size: usize) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n > max_size => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf.len() > max_size => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Invalid(e.to_string())),
    }
}

/// Limits on a request or response head: bytes and header lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub max_size: usize,
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits { max_size: MAX_HEAD_SIZE, max_headers: MAX_HEADERS }
    }
}

/// Most header lines a limit may allow (the parser's slots are allocated up front).
const MAX_HEADERS_CEILING: usize = 4096;

/// Parses a request head from the start of `buf`; `Ok(None)` means more bytes are needed.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    parse_request_within(buf, HeadLimits::default())
}

/// `parse_request` with other limits.
pub fn parse_request_within(buf: &[u8], limits: HeadLimits) -> Result<Option<(Head, usize)>, HeadError> {
    let mut hs = vec![httparse::EMPTY_HEADER; limits.max_headers.clamp(1, MAX_HEADERS_CEILING)];
    let mut req = httparse::Request::new(&mut hs);
    let parsed = req.parse(buf);
    Ok(head_status(buf, parsed, limits.max_size)?.map(|n| {
        let head = Head {
            method: req.method.unwrap_or("").to_owned(),
            path: req.path.unwrap_or("").to_owned(),
            minor: req.version.unwrap_or(1),
            headers: collect_headers(req.headers),
            ..Head::default()
        };
        (head, n)
    }))
}

/// Parses a response head from the start of `buf`; `Ok(None)` means more bytes are needed.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    parse_response_within(buf, HeadLimits::default())
}

/// `parse_response` with other limits.
pub fn parse_response_within(buf: &[u8], limits: HeadLimits) -> Result<Option<(Head, usize)>, HeadError> {
    let mut hs = vec![httparse::EMPTY_HEADER; limits.max_headers.clamp(1, MAX_HEADERS_CEILING)];
    let mut res = httparse::Response::new(&mut hs);
    let parsed = res.parse(buf);
    Ok(head_status(buf, parsed, limits.max_size)?.map(|n| {
        let head = Head {
            status: res.code.unwrap_or(0),
            reason: res.reason.unwrap_or("").to_owned(),
            minor: res.version.unwrap_or(1),
            headers: collect_headers(res.headers),
            ..Head::default()
        };
        (head, n)
    }))
}

/// An HTTP answer that refuses a handshake, as ws's `abortHandshake` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
    pub headers: Vec<(String, String)>,
}

impl Rejection {
    fn new(status: u16, message: &str) -> Self {
        Rejection { status, message: message.to_owned(), headers: Vec::new() }
    }
}

/// The reason phrase Node uses for a status code.
pub fn status_text(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serializes a refusal as ws's `abortHandshake` does: `Connection: close`, `text/html` and the
/// length, then the extra headers (one with the same name replaces a default in place, like
/// the object spread ws uses), then the message.
pub fn rejection_response(r: &Rejection) -> Vec<u8> {
    let message = if r.message.is_empty() { status_text(r.status) } else { r.message.as_str() };
    let mut headers: Vec<(String, String)> = vec![
        ("Connection".into(), "close".into()),
        ("Content-Type".into(), "text/html".into()),
        ("Content-Length".into(), message.len().to_string()),
    ];
    for (k, v) in &r.headers {
        match headers.iter_mut().find(|(name, _)| name == k) {
            Some(h) => h.1 = v.clone(),
            None => headers.push((k.clone(), v.clone())),
        }
    }
    let mut s = format!("HTTP/1.1 {} {}\r\n", r.status, status_text(r.status));
    for (k, v) in &headers {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(message);
    s.into_bytes()
}

/// The lines of the 101 answer that accepts an upgrade (without the empty line that ends
/// the head), in ws's order: what the server's `headers` event hands to its listeners.
pub fn accept_lines(accept: &str, protocol: Option<&str>, extensions: Option<&str>) -> Vec<String> {
    let mut lines = vec![
        "HTTP/1.1 101 Switching Protocols".to_owned(),
        "Upgrade: websocket".to_owned(),
        "Connection: Upgrade".to_owned(),
        format!("Sec-WebSocket-Accept: {accept}"),
    ];
    if let Some(p) = protocol {
        lines.push(format!("Sec-WebSocket-Protocol: {p}"));
    }
    if let Some(e) = extensions {
        lines.push(format!("Sec-WebSocket-Extensions: {e}"));
    }
    lines
}

/// A head made of `lines`, as written on the wire (each line and the head end with CRLF).
pub fn head_bytes<S: AsRef<str>>(lines: &[S]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.as_ref().len() + 2).sum::<usize>() + 2);
    for l in lines {
        out.extend_from_slice(l.as_ref().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The 101 answer that accepts an upgrade.
pub fn accept_response(accept: &str, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    head_bytes(&accept_lines(accept, protocol, extensions))
}

/// The answer to a request head that cannot be parsed (400) or is over the limits (431).
pub fn head_error_response(e: &HeadError) -> &'static [u8] {
    match e {
        HeadError::TooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n",
        HeadError::Invalid(_) => b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n",
    }
}

/// The answer of ws's own HTTP server to a request that is not an upgrade.
pub fn upgrade_required_response() -> Vec<u8> {
    b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 16\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nUpgrade Required".to_vec()
}

fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// True when Node would treat the request as an upgrade (`Connection: upgrade` and `Upgrade`).
pub fn is_upgrade_request(head: &Head) -> bool {
    head.header("upgrade").is_some() && head.header("connection").map(|c| has_token(&c, "upgrade")).unwrap_or(false)
}

/// What a valid upgrade request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    pub accept: String,
    pub version: u8,
    pub protocols: Vec<String>,
    /// The `Sec-WebSocket-Extensions` value of the answer, when permessage-deflate was agreed.
    pub extensions: Option<String>,
    pub deflate: Option<DeflateParams>,
}

fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22] == b'='
        && b[23] == b'='
        && b[..22].iter().all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// ws's checks on an upgrade request, in ws's order, with ws's answers. `deflate` is the
/// server's permessage-deflate configuration, when enabled.
pub fn validate_upgrade(head: &Head, deflate: Option<&DeflateOptions>) -> Result<UpgradeRequest, Rejection> {
    if head.method != "GET" {
        return Err(Rejection::new(405, "Invalid HTTP method"));
    }
    match head.header("upgrade") {
        Some(u) if u.eq_ignore_ascii_case("websocket") => {}
        _ => return Err(Rejection::new(400, "Invalid Upgrade header")),
    }
    let key = match head.header("sec-websocket-key") {
        Some(k) if is_valid_key(&k) => k,
        _ => return Err(Rejection::new(400, "Missing or invalid Sec-WebSocket-Key header")),
    };
    let version = match head.header("sec-websocket-version").as_deref().map(str::trim) {
        Some("13") => 13,
        Some("8") => 8,
        _ => {
            let mut r = Rejection::new(400, "Missing or invalid Sec-WebSocket-Version header");
            r.headers.push(("Sec-WebSocket-Version".into(), "13, 8".into()));
            return Err(r);
        }
    };
    let protocols = match head.header("sec-websocket-protocol") {
        Some(p) => parse_subprotocols(&p).map_err(|_| Rejection::new(400, "Invalid Sec-WebSocket-Protocol header"))?,
        None => Vec::new(),
    };
    let (extensions, deflate) = match (deflate, head.header("sec-websocket-extensions")) {
        (Some(opts), Some(h)) => match negotiate_server(opts, &h) {
            Ok(Some((answer, params))) => (Some(answer), Some(params)),
            Ok(None) => (None, None),
            Err(_) => return Err(Rejection::new(400, "Invalid or unacceptable Sec-WebSocket-Extensions header")),
        },
        _ => (None, None),
    };
    Ok(UpgradeRequest { accept: derive_accept_key(key.as_bytes()), version, protocols, extensions, deflate })
}

/// Parses a `Sec-WebSocket-Protocol` header exactly as ws's `subprotocol.parse` does
/// (linear time; CVE-2021-32640 was a regular expression here).
pub fn parse_subprotocols(header: &str) -> Result<Vec<String>, String> {
    let b = header.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let (mut start, mut end): (Option<usize>, Option<usize>) = (None, None);
    let push = |p: &str, out: &mut Vec<String>| {
        if out.iter().any(|x| x == p) {
            return Err(format!("The \"{p}\" subprotocol is duplicated"));
        }
        out.push(p.to_owned());
        Ok(())
    };
    for (i, &c) in b.iter().enumerate() {
        if end.is_none() && is_token_char(c) {
            if start.is_none() {
                start = Some(i);
            }
        } else if i != 0 && (c == b' ' || c == b'\t') {
            if end.is_none() && start.is_some() {
                end = Some(i);
            }
        } else if c == b',' {
            let Some(s) = start else { return Err(format!("Unexpected character at index {i}")) };
            let e = end.unwrap_or(i);
            push(&header[s..e], &mut out)?;
            start = None;
            end = None;
        } else {
            return Err(format!("Unexpected character at index {i}"));
        }
    }
    match (start, end) {
        (Some(s), None) => push(&header[s..], &mut out)?,
        _ => return Err("Unexpected end of input".into()),
    }
    Ok(out)
}

/// Builds a client's upgrade request. `headers` are the user's, already merged by the caller.
pub fn client_request(path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut s = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// What the client learned from a valid 101 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub protocol: String,
    /// The answer's `Sec-WebSocket-Extensions` value, empty when none.
    pub extensions: String,
    pub deflate: Option<DeflateParams>,
}

/// ws's checks on the server's 101 answer, with ws's messages. Non-101 answers are handled
/// by the caller (redirects and `unexpected-response`).
/// `deflate` is the client's permessage-deflate configuration, when it was offered.
pub fn validate_response(head: &Head, key: &str, offered: &[String], deflate: Option<&DeflateOptions>) -> Result<Accepted, String> {
    match head.header("upgrade") {
        Some(u) if u.eq_ignore_ascii_case("websocket") => {}
        _ => return Err("Invalid Upgrade header".into()),
    }
    if head.header("sec-websocket-accept").as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err("Invalid Sec-WebSocket-Accept header".into());
    }
    let protocol = match head.header("sec-websocket-protocol") {
        Some(p) => {
            if offered.is_empty() {
                return Err("Server sent a subprotocol but none was requested".into());
            }
            if !offered.contains(&p) {
                return Err("Server sent an invalid subprotocol".into());
            }
            p
        }
        None if !offered.is_empty() => return Err("Server sent no subprotocol".into()),
        None => String::new(),
    };
    let (extensions, deflate) = match (head.header("sec-websocket-extensions"), deflate) {
        (Some(_), None) => {
            return Err("Server sent a Sec-WebSocket-Extensions header but no extension was requested".into());
        }
        (Some(e), Some(opts)) => {
            let params = negotiate_client(opts, &e)?;
            (e, Some(params))
        }
        (None, _) => (String::new(), None),
    };
    Ok(Accepted { protocol, extensions, deflate })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &str) -> Head {
        let text = format!("GET /chat?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n");
        parse_request(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn valid_request() {
        let h = req("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n");
        assert!(is_upgrade_request(&h));
        let u = validate_upgrade(&h, None).unwrap();
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.protocols, vec!["chat", "superchat"]);
        assert_eq!(h.path, "/chat?x=1");
    }

    #[test]
    fn rejections() {
        let r = validate_upgrade(&req("Sec-WebSocket-Version: 12\r\n"), None).unwrap_err();
        assert_eq!((r.status, r.message.as_str()), (400, "Missing or invalid Sec-WebSocket-Version header"));
        assert_eq!(r.headers, vec![("Sec-WebSocket-Version".to_string(), "13, 8".to_string())]);
        let r = validate_upgrade(&req("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a,,b\r\n"), None).unwrap_err();
        assert_eq!(r.message, "Invalid Sec-WebSocket-Protocol header");
        let mut h = req("Sec-WebSocket-Version: 13\r\n");
        h.method = "POST".into();
        assert_eq!(validate_upgrade(&h, None).unwrap_err().status, 405);
        let h = req("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\n");
        assert_eq!(validate_upgrade(&h, None).unwrap_err().message, "Missing or invalid Sec-WebSocket-Key header");
        let resp = String::from_utf8(rejection_response(&Rejection::new(401, ""))).unwrap();
        assert!(resp.starts_with("HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n"));
        assert!(resp.ends_with("Content-Length: 12\r\n\r\nUnauthorized"));
        let mut custom = Rejection::new(403, "no");
        custom.headers = vec![("Content-Type".into(), "text/plain".into()), ("X-Why".into(), "auth".into())];
        let resp = String::from_utf8(rejection_response(&custom)).unwrap();
        assert_eq!(resp, "HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nX-Why: auth\r\n\r\nno");
    }

    #[test]
    fn subprotocols_like_ws() {
        assert_eq!(parse_subprotocols("foo").unwrap(), vec!["foo"]);
        assert_eq!(parse_subprotocols("foo , bar\t,baz").unwrap(), vec!["foo", "bar", "baz"]);
        assert_eq!(parse_subprotocols("foo,foo").unwrap_err(), "The \"foo\" subprotocol is duplicated");
        assert_eq!(parse_subprotocols(" foo").unwrap_err(), "Unexpected character at index 0");
        assert_eq!(parse_subprotocols("foo,").unwrap_err(), "Unexpected end of input");
        assert_eq!(parse_subprotocols("fo o").unwrap_err(), "Unexpected character at index 3");
        assert_eq!(parse_subprotocols("").unwrap_err(), "Unexpected end of input");
        // Linear on hostile input.
        let evil = format!("a{}b", " ".repeat(100_000));
        assert!(parse_subprotocols(&evil).is_err());
    }

    #[test]
    fn response_checks() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        let parse = |extra: &str| parse_response(format!("{ok}{extra}\r\n").as_bytes()).unwrap().unwrap().0;
        assert_eq!(validate_response(&parse(""), key, &[], None).unwrap().protocol, "");
        assert_eq!(validate_response(&parse("Sec-WebSocket-Protocol: a\r\n"), key, &[], None).unwrap_err(), "Server sent a subprotocol but none was requested");
        assert_eq!(validate_response(&parse("Sec-WebSocket-Protocol: b\r\n"), key, &["a".into()], None).unwrap_err(), "Server sent an invalid subprotocol");
        assert_eq!(validate_response(&parse(""), key, &["a".into()], None).unwrap_err(), "Server sent no subprotocol");
        assert_eq!(validate_response(&parse(""), "AAAAAAAAAAAAAAAAAAAAAA==", &[], None).unwrap_err(), "Invalid Sec-WebSocket-Accept header");
        assert!(validate_response(&parse("Sec-WebSocket-Extensions: x\r\n"), key, &[], None).unwrap_err().contains("no extension was requested"));
    }

    #[test]
    fn oversize_heads() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_SIZE));
        assert_eq!(parse_request(big.as_bytes()).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..200).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(parse_request(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).unwrap_err(), HeadError::TooLarge);
        assert!(matches!(parse_request(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), Err(HeadError::Invalid(_))));
    }
}
