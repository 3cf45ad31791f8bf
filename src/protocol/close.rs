//! Close codes (RFC 6455 section 7.4) as ws validates them.

/// A close code a peer may send in a close frame (ws's `isValidStatusCode`).
pub fn is_valid_received_code(code: u16) -> bool {
    (1000..=1014).contains(&code) && code != 1004 && code != 1005 && code != 1006
        || (3000..=4999).contains(&code)
}

/// No status code was present in the close frame.
pub const NO_STATUS: u16 = 1005;
/// The connection closed without a close frame.
pub const ABNORMAL: u16 = 1006;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        for c in [1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999] {
            assert!(is_valid_received_code(c), "{c}");
        }
        for c in [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535] {
            assert!(!is_valid_received_code(c), "{c}");
        }
    }
}
