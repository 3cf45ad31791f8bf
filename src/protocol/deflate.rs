//! permessage-deflate (RFC 7692): the options and the negotiation, answered exactly as ws's
//! `lib/permessage-deflate.js` answers it. The codec of the agreed parameters is `zlib`.

use super::extension::{self, Params, Value};

pub const EXTENSION_NAME: &str = "permessage-deflate";

/// A `serverMaxWindowBits` / `clientMaxWindowBits` option as given in JS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BitsOption {
    /// `undefined` / `null`.
    #[default]
    Unset,
    False,
    True,
    Num(u32),
}

impl BitsOption {
    fn truthy(self) -> bool {
        matches!(self, BitsOption::True) || matches!(self, BitsOption::Num(n) if n != 0)
    }
}

/// The `perMessageDeflate` options of ws. `Some(false)` is an explicit `false`; ws treats it
/// differently from `undefined`.
#[derive(Debug, Clone)]
pub struct DeflateOptions {
    pub server_no_context_takeover: Option<bool>,
    pub client_no_context_takeover: Option<bool>,
    pub server_max_window_bits: BitsOption,
    pub client_max_window_bits: BitsOption,
    /// Messages smaller than this are sent uncompressed when our side has no context takeover.
    pub threshold: u64,
    /// `zlibDeflateOptions`' `level`, `memLevel` and `strategy`.
    pub tuning: Tuning,
}

/// How messages are compressed: `zlibDeflateOptions`' `level` (0-9; -1 is zlib's default, 6),
/// `memLevel` (1-9, 8 by default: the size of the buffer of literals a block gathers) and
/// `strategy` (zlib's: 0 default, 1 filtered, 2 Huffman only, 3 RLE, 4 fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    pub level: i32,
    pub mem_level: u8,
    pub strategy: u8,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { level: -1, mem_level: 8, strategy: 0 }
    }
}

impl Default for DeflateOptions {
    fn default() -> Self {
        DeflateOptions {
            server_no_context_takeover: None,
            client_no_context_takeover: None,
            server_max_window_bits: BitsOption::Unset,
            client_max_window_bits: BitsOption::Unset,
            threshold: 1024,
            tuning: Tuning::default(),
        }
    }
}

/// A normalized parameter value: a bare name or a number of window bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PVal {
    True,
    Num(u8),
}

type NParams = Vec<(String, PVal)>;

fn get(p: &NParams, key: &str) -> Option<PVal> {
    p.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Sets like a JS object property: in place when present, else appended.
fn set(p: &mut NParams, key: &str, v: PVal) {
    match p.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = v,
        None => p.push((key.to_string(), v)),
    }
}

/// JavaScript's unary `+` on a parameter value, for what can be an integer.
fn js_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    let radix = |p: &str, r| u64::from_str_radix(p, r).ok().map(|v| v as f64);
    match t.get(..2) {
        Some("0x") | Some("0X") => radix(&t[2..], 16),
        Some("0o") | Some("0O") => radix(&t[2..], 8),
        Some("0b") | Some("0B") => radix(&t[2..], 2),
        _ if t.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') => None,
        _ => t.parse::<f64>().ok(),
    }
}

fn bits_value(v: &Value) -> Option<u8> {
    let Value::Text(s) = v else { return None };
    let n = js_number(s)?;
    (n.fract() == 0.0 && (8.0..=15.0).contains(&n)).then_some(n as u8)
}

fn text(v: &Value) -> String {
    match v {
        Value::True => "true".into(),
        Value::Text(s) => s.clone(),
    }
}

/// ws's `normalizeParams`: one value per parameter, window bits 8 to 15, no unknown names.
fn normalize(configs: &[Params], is_server: bool) -> Result<Vec<NParams>, String> {
    let mut out = Vec::with_capacity(configs.len());
    for params in configs {
        let mut n = NParams::new();
        for (key, values) in params {
            if values.len() > 1 {
                return Err(format!("Parameter \"{key}\" must have only a single value"));
            }
            let value = &values[0];
            let invalid = || format!("Invalid value for parameter \"{key}\": {}", text(value));
            let v = match key.as_str() {
                "client_max_window_bits" => match value {
                    Value::True if is_server => PVal::True,
                    Value::True => return Err(invalid()),
                    v => PVal::Num(bits_value(v).ok_or_else(invalid)?),
                },
                "server_max_window_bits" => PVal::Num(bits_value(value).ok_or_else(invalid)?),
                "client_no_context_takeover" | "server_no_context_takeover" => match value {
                    Value::True => PVal::True,
                    _ => return Err(invalid()),
                },
                _ => return Err(format!("Unknown parameter \"{key}\"")),
            };
            n.push((key.clone(), v));
        }
        out.push(n);
    }
    Ok(out)
}

/// What both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateParams {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    fn from_normalized(p: &NParams) -> Self {
        let num = |k| match get(p, k) {
            Some(PVal::Num(n)) => Some(n),
            _ => None,
        };
        DeflateParams {
            server_no_context_takeover: get(p, "server_no_context_takeover").is_some(),
            client_no_context_takeover: get(p, "client_no_context_takeover").is_some(),
            server_max_window_bits: num("server_max_window_bits"),
            client_max_window_bits: num("client_max_window_bits"),
        }
    }

    /// The parameters of an agreed `Sec-WebSocket-Extensions` value (a 101 answer already
    /// checked, as when Node's http made the handshake).
    pub fn from_agreed(header: &str) -> Option<Self> {
        let offers = extension::parse(header).ok()?;
        let (_, configs) = offers.iter().find(|(n, _)| n == EXTENSION_NAME)?;
        let n = normalize(configs, true).ok()?;
        n.first().map(Self::from_normalized)
    }

    /// Window bits and context takeover of what `is_server`'s side sends.
    pub fn sending(&self, is_server: bool) -> (Option<u8>, bool) {
        if is_server {
            (self.server_max_window_bits, self.server_no_context_takeover)
        } else {
            (self.client_max_window_bits, self.client_no_context_takeover)
        }
    }
}

/// The client's offer, as ws's `offer()` makes it.
pub fn offer(opts: &DeflateOptions) -> String {
    let mut p: Vec<(String, Value)> = Vec::new();
    if opts.server_no_context_takeover == Some(true) {
        p.push(("server_no_context_takeover".into(), Value::True));
    }
    if opts.client_no_context_takeover == Some(true) {
        p.push(("client_no_context_takeover".into(), Value::True));
    }
    let bits = |b: BitsOption| match b {
        BitsOption::Num(n) => Value::Text(n.to_string()),
        _ => Value::True,
    };
    if opts.server_max_window_bits.truthy() {
        p.push(("server_max_window_bits".into(), bits(opts.server_max_window_bits)));
    }
    if opts.client_max_window_bits.truthy() {
        p.push(("client_max_window_bits".into(), bits(opts.client_max_window_bits)));
    } else if opts.client_max_window_bits == BitsOption::Unset {
        p.push(("client_max_window_bits".into(), Value::True));
    }
    extension::format(EXTENSION_NAME, &p)
}

fn accept_as_server(opts: &DeflateOptions, offers: Vec<NParams>) -> Result<NParams, String> {
    let mut accepted = offers
        .into_iter()
        .find(|p| {
            let smwb = get(p, "server_max_window_bits");
            let cmwb = get(p, "client_max_window_bits");
            let refuse = (opts.server_no_context_takeover == Some(false) && get(p, "server_no_context_takeover").is_some())
                || (smwb.is_some()
                    && (opts.server_max_window_bits == BitsOption::False
                        || matches!((opts.server_max_window_bits, smwb), (BitsOption::Num(o), Some(PVal::Num(s))) if o > s as u32)))
                || match (opts.client_max_window_bits, cmwb) {
                    (BitsOption::Num(o), Some(PVal::Num(c))) => o > c as u32,
                    (BitsOption::Num(_), None) => true,
                    _ => false,
                };
            !refuse
        })
        .ok_or_else(|| "None of the extension offers can be accepted".to_string())?;
    if opts.server_no_context_takeover == Some(true) {
        set(&mut accepted, "server_no_context_takeover", PVal::True);
    }
    if opts.client_no_context_takeover == Some(true) {
        set(&mut accepted, "client_no_context_takeover", PVal::True);
    }
    if let BitsOption::Num(n) = opts.server_max_window_bits {
        set(&mut accepted, "server_max_window_bits", PVal::Num(n.min(255) as u8));
    }
    if let BitsOption::Num(n) = opts.client_max_window_bits {
        set(&mut accepted, "client_max_window_bits", PVal::Num(n.min(255) as u8));
    } else if get(&accepted, "client_max_window_bits") == Some(PVal::True) || opts.client_max_window_bits == BitsOption::False {
        accepted.retain(|(k, _)| k != "client_max_window_bits");
    }
    Ok(accepted)
}

/// The server's side: from the request's `Sec-WebSocket-Extensions` value, the answer's value
/// and the agreed parameters; `None` when permessage-deflate was not offered. The error is
/// ws's reason to refuse the handshake (answered with 400 and ws's message by the caller).
pub fn negotiate_server(opts: &DeflateOptions, header: &str) -> Result<Option<(String, DeflateParams)>, String> {
    let offers = extension::parse(header)?;
    let Some((_, configs)) = offers.iter().find(|(n, _)| n == EXTENSION_NAME) else { return Ok(None) };
    let accepted = accept_as_server(opts, normalize(configs, true)?)?;
    let answer: Vec<(String, Value)> = accepted
        .iter()
        .map(|(k, v)| {
            let v = match v {
                PVal::True => Value::True,
                PVal::Num(n) => Value::Text(n.to_string()),
            };
            (k.clone(), v)
        })
        .collect();
    Ok(Some((extension::format(EXTENSION_NAME, &answer), DeflateParams::from_normalized(&accepted))))
}

/// The client's side: checks the server's answer against our offer, with ws's messages.
pub fn negotiate_client(opts: &DeflateOptions, header: &str) -> Result<DeflateParams, String> {
    let invalid = || "Invalid Sec-WebSocket-Extensions header".to_string();
    let offers = extension::parse(header).map_err(|_| invalid())?;
    if offers.len() != 1 || offers[0].0 != EXTENSION_NAME {
        return Err("Server indicated an extension that was not requested".into());
    }
    let mut configs = normalize(&offers[0].1, false).map_err(|_| invalid())?;
    let mut params = configs.swap_remove(0);
    if opts.client_no_context_takeover == Some(false) && get(&params, "client_no_context_takeover").is_some() {
        return Err(invalid());
    }
    match get(&params, "client_max_window_bits") {
        None => {
            if let BitsOption::Num(n) = opts.client_max_window_bits {
                set(&mut params, "client_max_window_bits", PVal::Num(n.min(255) as u8));
            }
        }
        Some(PVal::Num(c)) => {
            if opts.client_max_window_bits == BitsOption::False
                || matches!(opts.client_max_window_bits, BitsOption::Num(o) if c as u32 > o)
            {
                return Err(invalid());
            }
        }
        Some(PVal::True) => return Err(invalid()),
    }
    Ok(DeflateParams::from_normalized(&params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DeflateOptions {
        DeflateOptions::default()
    }

    #[test]
    fn offer_as_ws() {
        assert_eq!(offer(&opts()), "permessage-deflate; client_max_window_bits");
        let o = DeflateOptions {
            server_no_context_takeover: Some(true),
            client_no_context_takeover: Some(true),
            server_max_window_bits: BitsOption::Num(10),
            client_max_window_bits: BitsOption::False,
            ..opts()
        };
        assert_eq!(offer(&o), "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10");
    }

    #[test]
    fn server_answers_as_ws() {
        let n = |o: &DeflateOptions, h: &str| negotiate_server(o, h).map(|r| r.map(|(s, _)| s));
        assert_eq!(n(&opts(), "permessage-deflate; client_max_window_bits").unwrap().unwrap(), "permessage-deflate");
        assert_eq!(n(&opts(), "x-foo").unwrap(), None);
        let o = DeflateOptions { client_max_window_bits: BitsOption::Num(10), server_no_context_takeover: Some(true), ..opts() };
        assert_eq!(
            n(&o, "permessage-deflate; client_max_window_bits=12").unwrap().unwrap(),
            "permessage-deflate; client_max_window_bits=10; server_no_context_takeover"
        );
        // The first acceptable offer wins.
        assert_eq!(
            n(&o, "permessage-deflate, permessage-deflate; client_max_window_bits").unwrap().unwrap(),
            "permessage-deflate; client_max_window_bits=10; server_no_context_takeover"
        );
        assert_eq!(n(&o, "permessage-deflate").unwrap_err(), "None of the extension offers can be accepted");
        assert_eq!(n(&opts(), "permessage-deflate; foo").unwrap_err(), "Unknown parameter \"foo\"");
        assert_eq!(
            n(&opts(), "permessage-deflate; server_max_window_bits=7").unwrap_err(),
            "Invalid value for parameter \"server_max_window_bits\": 7"
        );
        assert_eq!(
            n(&opts(), "permessage-deflate; server_no_context_takeover; server_no_context_takeover").unwrap_err(),
            "Parameter \"server_no_context_takeover\" must have only a single value"
        );
        assert!(n(&opts(), "permessage-deflate; =").is_err());
        let (_, p) = negotiate_server(&opts(), "permessage-deflate; server_max_window_bits=0x0a").unwrap().unwrap();
        assert_eq!(p.server_max_window_bits, Some(10));
    }

    #[test]
    fn client_checks_as_ws() {
        let c = |o: &DeflateOptions, h: &str| negotiate_client(o, h);
        assert_eq!(c(&opts(), "permessage-deflate").unwrap(), DeflateParams::default());
        assert_eq!(c(&opts(), "permessage-deflate; client_max_window_bits=10").unwrap().client_max_window_bits, Some(10));
        assert_eq!(c(&opts(), "foo").unwrap_err(), "Server indicated an extension that was not requested");
        assert_eq!(c(&opts(), "permessage-deflate, foo").unwrap_err(), "Server indicated an extension that was not requested");
        assert_eq!(c(&opts(), "permessage-deflate; client_max_window_bits").unwrap_err(), "Invalid Sec-WebSocket-Extensions header");
        assert_eq!(c(&opts(), "permessage-deflate;;").unwrap_err(), "Invalid Sec-WebSocket-Extensions header");
        let o = DeflateOptions { client_max_window_bits: BitsOption::Num(10), ..opts() };
        assert!(c(&o, "permessage-deflate; client_max_window_bits=11").is_err());
        assert_eq!(c(&o, "permessage-deflate").unwrap().client_max_window_bits, Some(10));
        let o = DeflateOptions { client_no_context_takeover: Some(false), ..opts() };
        assert!(c(&o, "permessage-deflate; client_no_context_takeover").is_err());
    }
}
