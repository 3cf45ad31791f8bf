//! Incremental UTF-8 validation across fragments and partial reads, so that an invalid text
//! message fails as soon as the bad byte arrives (Autobahn 6.4 "fail fast").

use simdutf8::compat::from_utf8;

#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: u8,
}

fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// True when `bytes` is valid UTF-8 or a valid prefix of it (only an incomplete tail).
fn is_valid_prefix(bytes: &[u8]) -> bool {
    match from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of a text message. Returns false on the first invalid byte.
    pub fn feed(&mut self, mut input: &[u8]) -> bool {
        if self.carry_len > 0 {
            let have = self.carry_len as usize;
            let need = sequence_len(self.carry[0]);
            let take = (need - have).min(input.len());
            self.carry[have..have + take].copy_from_slice(&input[..take]);
            self.carry_len += take as u8;
            input = &input[take..];
            let seq = &self.carry[..self.carry_len as usize];
            if (self.carry_len as usize) < need {
                return is_valid_prefix(seq);
            }
            if from_utf8(seq).is_err() {
                return false;
            }
            self.carry_len = 0;
        }
        match from_utf8(input) {
            Ok(_) => true,
            Err(e) => {
                if e.error_len().is_some() {
                    return false;
                }
                let tail = &input[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                true
            }
        }
    }

    /// True when the message ended on a character boundary.
    pub fn is_complete(&self) -> bool {
        self.carry_len == 0
    }

    pub fn reset(&mut self) {
        self.carry_len = 0;
    }
}

/// Whole-buffer validation for the common unfragmented case.
pub fn is_valid(bytes: &[u8]) -> bool {
    simdutf8::basic::from_utf8(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(s: &[u8]) -> bool {
        // Every split point must agree with whole validation.
        let whole = std::str::from_utf8(s).is_ok();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                let mut v = Utf8Validator::new();
                let ok = v.feed(&s[..i]) && v.feed(&s[i..j]) && v.feed(&s[j..]) && v.is_complete();
                assert_eq!(ok, whole, "{s:?} split {i} {j}");
            }
        }
        whole
    }

    #[test]
    fn splits() {
        assert!(split_all("héllo €𝄞 ok".as_bytes()));
        assert!(!split_all(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65]));
        assert!(!split_all(&[0xf4, 0x90, 0x80, 0x80]));
        assert!(!split_all(&[0xc0, 0x80]));
        assert!(!split_all(&[0xe2, 0x82]));
    }

    #[test]
    fn fails_fast() {
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xce, 0xba]));
        assert!(!v.feed(&[0xf4, 0x90]));
    }
}
