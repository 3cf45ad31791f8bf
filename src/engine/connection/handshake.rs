//! A connection's opening handshake, both sides, as a state fed with the bytes that arrive:
//! the server reads the request head and hands it to JS for ws's decisions; the client reads
//! the answer to its request and opens, or hands a refusal (with what arrived of its body) to
//! JS. The connection (`super`) applies what each step says.

use crate::engine::config::ConnConfig;
use crate::engine::events;
use crate::engine::wire::Upgrade;
use crate::protocol::deflate::DeflateParams;
use crate::protocol::handshake::{self, Accepted, Head, HeadError, Rejection, UpgradeRequest};

/// What a server tells JS about the peer along with its request.
pub struct PeerInfo {
    pub server_id: u32,
    pub remote: Option<std::net::SocketAddr>,
    pub local: Option<std::net::SocketAddr>,
}

/// What a client needs to check the server's answer.
pub struct ClientHandshake {
    pub key: String,
    pub protocols: Vec<String>,
}

/// What a connection holds only until it is open (or refused): one allocation, freed then.
#[derive(Default)]
pub(super) struct Handshake {
    /// The request or response head as it arrives; after the head, the bytes that came with
    /// it (frames sent early), fed to the receiver once the connection opens.
    pub(super) head: Vec<u8>,
    peer: Option<PeerInfo>,
    client: Option<ClientHandshake>,
    response: Option<PendingResponse>,
}

/// A non-101 answer whose body is still arriving.
struct PendingResponse {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Content-Length, capped at `MAX_BODY`.
    expected: usize,
}

/// Most body bytes kept from a refused handshake.
const MAX_BODY: usize = 1024 * 1024;

/// What the connection does after a step of the handshake.
pub(super) enum Progress {
    /// Wait for more bytes.
    More,
    /// Server: the engine refuses the request itself with this answer (JS never hears of it).
    Refuse(Vec<u8>),
    /// Server: a whole request, for JS to decide on (`announce` it once the connection is
    /// ready for the decision).
    Request(Box<Request>),
    /// Client: the answer is a 101 that checks out.
    Open(Box<Opened>),
    /// Client: another status; its body is still arriving.
    Body,
    /// Client: the answer (with its body) went to JS; the connection ends.
    Answered,
    /// Client: the handshake failed (message, Node error code).
    Failed(String, String),
    /// The handshake's state is gone (nothing to do but end).
    Gone,
}

/// A server's request, parsed and checked.
pub(super) struct Request {
    peer: PeerInfo,
    head: Head,
    verdict: Result<UpgradeRequest, Rejection>,
}

impl Request {
    /// permessage-deflate, if the request is valid and agreed on it.
    pub(super) fn deflate(&self) -> Option<DeflateParams> {
        self.verdict.as_ref().ok().and_then(|u| u.deflate)
    }

    /// Tells JS about the request (the UPGRADE record).
    pub(super) fn announce(&self, id: u32) {
        let mut upgrade = Upgrade {
            server_id: self.peer.server_id,
            status: 0,
            remote: self.peer.remote,
            local: self.peer.local,
            ws_version: 0,
            http_minor: self.head.minor,
            method: &self.head.method,
            path: &self.head.path,
            headers: &self.head.headers,
            message: "",
            reject_headers: &[],
            accept: "",
            protocols: &[],
            extensions: "",
        };
        match &self.verdict {
            Ok(u) => {
                upgrade.accept = &u.accept;
                upgrade.protocols = &u.protocols;
                upgrade.ws_version = u.version;
                upgrade.extensions = u.extensions.as_deref().unwrap_or_default();
            }
            Err(Rejection { status, message, headers }) => {
                upgrade.status = *status;
                upgrade.message = message;
                upgrade.reject_headers = headers;
            }
        }
        events::with_batch(|b| b.upgrade(id, &upgrade));
    }
}

/// A client's accepted answer: what was agreed, the answer's head for JS, and the bytes that
/// came after it.
pub(super) struct Opened {
    pub(super) accepted: Accepted,
    pub(super) head: Head,
    pub(super) rest: Vec<u8>,
}

impl Handshake {
    /// A server's: the request is still to come from `peer`.
    pub(super) fn server(peer: PeerInfo) -> Box<Self> {
        Box::new(Handshake { peer: Some(peer), ..Handshake::default() })
    }

    /// A client's: its request is out, the answer is checked with `client`.
    pub(super) fn client(client: ClientHandshake) -> Box<Self> {
        Box::new(Handshake { client: Some(client), ..Handshake::default() })
    }

    /// Only the bytes that came after a head already handled (frames sent early).
    pub(super) fn early(head: Vec<u8>) -> Box<Self> {
        Box::new(Handshake { head, ..Handshake::default() })
    }

    /// Server: more bytes of the request.
    pub(super) fn on_request_bytes(&mut self, data: &[u8], cfg: &ConnConfig) -> Progress {
        let limits = cfg.head_limits;
        let old = self.head.len();
        self.head.extend_from_slice(data);
        if !worth_parsing(&self.head, old, limits.max_size) {
            return Progress::More;
        }
        let (head, n) = match handshake::parse_request_within(&self.head, limits) {
            Ok(None) => return Progress::More,
            Ok(Some(h)) => h,
            Err(e) => return Progress::Refuse(handshake::head_error_response(&e).to_vec()),
        };
        if !handshake::is_upgrade_request(&head) {
            return Progress::Refuse(handshake::upgrade_required_response());
        }
        // Keep only bytes that came after the head (frames sent early); free the rest.
        self.head = self.head.split_off(n);
        let Some(peer) = self.peer.take() else { return Progress::Gone };
        let verdict = handshake::validate_upgrade(&head, cfg.deflate.as_ref());
        Progress::Request(Box::new(Request { peer, head, verdict }))
    }

    /// Client: more bytes of the answer's head.
    pub(super) fn on_response_bytes(&mut self, data: &[u8], cfg: &ConnConfig, id: u32) -> Progress {
        let limits = cfg.head_limits;
        let old = self.head.len();
        self.head.extend_from_slice(data);
        if !worth_parsing(&self.head, old, limits.max_size) {
            return Progress::More;
        }
        let (head, n) = match handshake::parse_response_within(&self.head, limits) {
            Ok(None) => return Progress::More,
            Ok(Some(h)) => h,
            Err(HeadError::TooLarge) => return Progress::Failed("Response header too large".into(), "HPE_HEADER_OVERFLOW".into()),
            Err(HeadError::Invalid(e)) => return Progress::Failed(format!("Parse Error: {e}"), "HPE_INVALID_CONSTANT".into()),
        };
        let Some(client) = self.client.take() else { return Progress::Gone };
        if head.status != 101 {
            // JS decides between a redirect, `unexpected-response` and an error; it gets the
            // body when a Content-Length announces one.
            let expected = head
                .header("content-length")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0)
                .min(MAX_BODY);
            let mut body = self.head.split_off(n);
            self.head = Vec::new();
            body.truncate(expected);
            self.response = Some(PendingResponse { status: head.status, reason: head.reason, headers: head.headers, body, expected });
            return self.on_body_bytes(&[], id);
        }
        let rest = self.head.split_off(n);
        match handshake::validate_response(&head, &client.key, &client.protocols, cfg.deflate.as_ref()) {
            Ok(accepted) => Progress::Open(Box::new(Opened { accepted, head, rest })),
            Err(msg) => Progress::Failed(msg, String::new()),
        }
    }

    /// Client: more bytes of a refusal's body.
    pub(super) fn on_body_bytes(&mut self, data: &[u8], id: u32) -> Progress {
        let Some(r) = self.response.as_mut() else { return Progress::Gone };
        let take = (r.expected - r.body.len()).min(data.len());
        r.body.extend_from_slice(&data[..take]);
        if r.body.len() < r.expected {
            return Progress::Body;
        }
        self.answer(id);
        Progress::Answered
    }

    /// Client: hands a non-101 answer (and what arrived of its body) to JS.
    pub(super) fn answer(&mut self, id: u32) {
        if let Some(r) = self.response.take() {
            events::with_batch(|b| b.unexpected_response(id, r.status, &r.reason, &r.headers, &r.body));
        }
    }
}

/// Whether a head that grew from `old` to `buf.len()` bytes should be parsed again: when the
/// new bytes may end it (an empty line), on the first read (to refuse garbage at once), when
/// it grows past a power of two, or past the size limit. A client trickling its head byte by
/// byte then costs O(n log n) parsing, not O(n²).
fn worth_parsing(buf: &[u8], old: usize, max_size: usize) -> bool {
    let tail = &buf[old.saturating_sub(2)..];
    old == 0
        || buf.len() > max_size
        || old.next_power_of_two() != buf.len().next_power_of_two()
        || tail.windows(2).any(|w| w == b"\n\n")
        || tail.windows(3).any(|w| w == b"\n\r\n")
}
