//! The `Sec-WebSocket-Extensions` header: parsed and formatted exactly as ws's
//! `lib/extension.js` does, so that the same headers are accepted, refused and answered.

/// RFC 7230 `tchar`.
pub fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A parameter value: a bare name (`true` in ws) or a token / quoted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    True,
    Text(String),
}

/// One configuration of an extension: its parameters in header order, each with all the
/// values it was given (ws refuses repeated parameters later, in the extension itself).
pub type Params = Vec<(String, Vec<Value>)>;

/// Extensions in header order, each with its configurations (offers) in order.
pub type Offers = Vec<(String, Vec<Params>)>;

fn push<T>(list: &mut Vec<(String, Vec<T>)>, name: &str, item: T) {
    match list.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => v.push(item),
        None => list.push((name.to_string(), vec![item])),
    }
}

/// Parses the header; errors are ws's `SyntaxError` messages.
pub fn parse(header: &str) -> Result<Offers, String> {
    let h = header.as_bytes();
    let unexpected = |i: usize| Err(format!("Unexpected character at index {i}"));
    let mut offers: Offers = Vec::new();
    let mut params: Params = Vec::new();
    let mut must_unescape = false;
    let mut is_escaping = false;
    let mut in_quotes = false;
    let mut extension_name: Option<String> = None;
    let mut param_name: Option<String> = None;
    let mut start: Option<usize> = None;
    let mut end: Option<usize> = None;
    let mut code: u8 = 0;
    let mut i = 0;
    let slice = |a: usize, b: usize| header[a..b].to_string();

    while i < h.len() {
        code = h[i];
        if extension_name.is_none() {
            if end.is_none() && is_token_char(code) {
                start.get_or_insert(i);
            } else if i != 0 && (code == b' ' || code == b'\t') {
                if end.is_none() && start.is_some() {
                    end = Some(i);
                }
            } else if code == b';' || code == b',' {
                let Some(s) = start else { return unexpected(i) };
                let name = slice(s, end.unwrap_or(i));
                if code == b',' {
                    push(&mut offers, &name, std::mem::take(&mut params));
                } else {
                    extension_name = Some(name);
                }
                start = None;
                end = None;
            } else {
                return unexpected(i);
            }
        } else if param_name.is_none() {
            if end.is_none() && is_token_char(code) {
                start.get_or_insert(i);
            } else if code == b' ' || code == b'\t' {
                if end.is_none() && start.is_some() {
                    end = Some(i);
                }
            } else if code == b';' || code == b',' {
                let Some(s) = start else { return unexpected(i) };
                push(&mut params, &slice(s, end.unwrap_or(i)), Value::True);
                if code == b',' {
                    let ext = extension_name.take().unwrap_or_default();
                    push(&mut offers, &ext, std::mem::take(&mut params));
                }
                start = None;
                end = None;
            } else if code == b'=' && start.is_some() && end.is_none() {
                param_name = Some(slice(start.unwrap_or(i), i));
                start = None;
            } else {
                return unexpected(i);
            }
        } else if is_escaping {
            // The value of a quoted string must be a token once unescaped (RFC 6455 9.1).
            if !is_token_char(code) {
                return unexpected(i);
            }
            if start.is_none() {
                start = Some(i);
            } else {
                must_unescape = true;
            }
            is_escaping = false;
        } else if in_quotes {
            if is_token_char(code) {
                start.get_or_insert(i);
            } else if code == b'"' && start.is_some() {
                in_quotes = false;
                end = Some(i);
            } else if code == b'\\' {
                is_escaping = true;
            } else {
                return unexpected(i);
            }
        } else if code == b'"' && i > 0 && h[i - 1] == b'=' {
            in_quotes = true;
        } else if end.is_none() && is_token_char(code) {
            start.get_or_insert(i);
        } else if start.is_some() && (code == b' ' || code == b'\t') {
            if end.is_none() {
                end = Some(i);
            }
        } else if code == b';' || code == b',' {
            let Some(s) = start else { return unexpected(i) };
            let mut value = slice(s, end.unwrap_or(i));
            if must_unescape {
                value = value.replace('\\', "");
                must_unescape = false;
            }
            let pname = param_name.take().unwrap_or_default();
            push(&mut params, &pname, Value::Text(value));
            if code == b',' {
                let ext = extension_name.take().unwrap_or_default();
                push(&mut offers, &ext, std::mem::take(&mut params));
            }
            start = None;
            end = None;
        } else {
            return unexpected(i);
        }
        i += 1;
    }

    let Some(s) = start else { return Err("Unexpected end of input".into()) };
    if in_quotes || code == b' ' || code == b'\t' {
        return Err("Unexpected end of input".into());
    }
    let token = slice(s, end.unwrap_or(i));
    match (extension_name, param_name) {
        (None, _) => push(&mut offers, &token, params),
        (Some(ext), None) => {
            push(&mut params, &token, Value::True);
            push(&mut offers, &ext, params);
        }
        (Some(ext), Some(p)) => {
            let v = if must_unescape { token.replace('\\', "") } else { token };
            push(&mut params, &p, Value::Text(v));
            push(&mut offers, &ext, params);
        }
    }
    Ok(offers)
}

/// Formats one extension configuration as ws's `format` does: `name; a; b=1`.
pub fn format(name: &str, params: &[(String, Value)]) -> String {
    let mut s = name.to_string();
    for (k, v) in params {
        s.push_str("; ");
        s.push_str(k);
        if let Value::Text(t) = v {
            s.push('=');
            s.push_str(t);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn parses_as_ws() {
        let o = parse("permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\", foo").unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].0, "permessage-deflate");
        assert_eq!(
            o[0].1[0],
            vec![("client_max_window_bits".to_string(), vec![Value::True]), ("server_max_window_bits".to_string(), vec![t("10")])]
        );
        assert_eq!(o[1], ("foo".to_string(), vec![vec![]]));
        let o = parse("a;x=1;x=2, a").unwrap();
        assert_eq!(o, vec![("a".to_string(), vec![vec![("x".to_string(), vec![t("1"), t("2")])], vec![]])]);
        assert_eq!(parse("a; b=\"c\\d\"").unwrap()[0].1[0][0].1[0], t("cd"));
        assert_eq!(parse("a; b = 1").unwrap_err(), "Unexpected character at index 5");
        for bad in ["", " a", "a,", "a;", "a; b=", "a; b=\"c", "a ", "a; b=c ", "a;;", ",a", "a; b=\"c d\""] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse("a;").unwrap_err(), "Unexpected end of input");
        assert_eq!(parse("a@").unwrap_err(), "Unexpected character at index 1");
    }

    #[test]
    fn formats_as_ws() {
        let p = vec![("server_no_context_takeover".to_string(), Value::True), ("client_max_window_bits".to_string(), t("10"))];
        assert_eq!(format("permessage-deflate", &p), "permessage-deflate; server_no_context_takeover; client_max_window_bits=10");
    }
}
