//! Protocol errors carry what ws exposes: an error code (`WS_ERR_*`), a message, and the close
//! code sent to the peer when the connection is failed.

use std::fmt;

/// Which JS error constructor ws uses for an error (`RangeError` for most frame errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Error = 0,
    RangeError = 1,
    SyntaxError = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub close_code: u16,
}

impl ProtocolError {
    /// A frame error; ws prefixes these messages with "Invalid WebSocket frame: ".
    pub fn frame(code: &'static str, message: impl fmt::Display, close_code: u16) -> Self {
        ProtocolError {
            kind: ErrorKind::RangeError,
            code,
            message: format!("Invalid WebSocket frame: {message}"),
            close_code,
        }
    }

    pub fn invalid_utf8() -> Self {
        ProtocolError {
            kind: ErrorKind::Error,
            code: "WS_ERR_INVALID_UTF8",
            message: "Invalid WebSocket frame: invalid UTF-8 sequence".into(),
            close_code: 1007,
        }
    }

    pub fn max_payload() -> Self {
        ProtocolError {
            kind: ErrorKind::RangeError,
            code: "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH",
            message: "Max payload size exceeded".into(),
            close_code: 1009,
        }
    }

    pub fn too_many_fragments() -> Self {
        ProtocolError {
            kind: ErrorKind::RangeError,
            code: "WS_ERR_TOO_MANY_BUFFERED_PARTS",
            message: "Too many message fragments".into(),
            close_code: 1008,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ProtocolError {}
