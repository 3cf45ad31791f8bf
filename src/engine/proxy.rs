//! Client proxies: HTTP `CONNECT` (with Basic auth) and SOCKS5 (RFC 1928, with the
//! username/password method of RFC 1929), plus the opt-in choice of a proxy from the
//! environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`).
//!
//! Every failure names the proxy (without its password) and the reason.

use std::net::IpAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Http,
    /// `socks5://`: the target's name is resolved here.
    Socks5,
    /// `socks5h://`: the proxy resolves the name.
    Socks5h,
}

#[derive(Debug, Clone)]
pub struct Proxy {
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    pub auth: Option<(String, String)>,
}

/// A proxy failure: Node-style code and message.
pub type ProxyError = (String, String);

fn err(code: &str, message: String) -> ProxyError {
    (code.to_string(), message)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Proxy {
    /// Parses `http://[user[:pass]@]host[:port][/]`, `socks5://...`, `socks5h://...`. A URL
    /// without a scheme (as some environments set it) is taken as `http://`.
    pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
        let bad = |why: &str| err("ERR_INVALID_PROXY", format!("Invalid proxy URL \"{}\": {why}", redact(url)));
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("http".to_string(), url),
        };
        let (kind, default_port) = match scheme.as_str() {
            "http" => (Kind::Http, 80),
            "socks5" => (Kind::Socks5, 1080),
            "socks5h" => (Kind::Socks5h, 1080),
            "https" => return Err(bad("proxies reached over TLS (https://) are not supported; use http:// (the tunnel to a wss:// server is still TLS end to end)")),
            _ => return Err(bad("the scheme must be http, socks5 or socks5h")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let auth = userinfo.map(|u| match u.split_once(':') {
            Some((user, pass)) => (percent_decode(user), percent_decode(pass)),
            None => (percent_decode(u), String::new()),
        });
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed IPv6 address"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None | Some("") => default_port,
            Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| bad("invalid port"))?,
        };
        Ok(Proxy { kind, host, port, auth })
    }

    /// The proxy as shown in messages: its URL without the password.
    pub fn display(&self) -> String {
        let scheme = match self.kind {
            Kind::Http => "http",
            Kind::Socks5 => "socks5",
            Kind::Socks5h => "socks5h",
        };
        let user = match &self.auth {
            Some((u, _)) => format!("{u}:***@"),
            None => String::new(),
        };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{user}{host}:{}", self.port)
    }
}

/// A URL with its password hidden, for messages about unparsable proxies.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, after)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{after}");
            }
        }
    }
    url.to_string()
}

fn env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// Whether `NO_PROXY` (a comma or space separated list of names, `.suffix`es, IPs, each with
/// an optional `:port`, or `*`) exempts this target.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    for entry in list.split([',', ' ']).map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        // `name:port`, `[v6]:port`, a bare IPv6 address.
        let (name, eport) = if let Some(v6) = entry.strip_prefix('[') {
            match v6.split_once(']') {
                Some((h, after)) => (h.to_string(), after.strip_prefix(':').and_then(|p| p.parse::<u16>().ok())),
                None => continue,
            }
        } else if entry.parse::<IpAddr>().is_ok() {
            (entry.clone(), None)
        } else {
            match entry.rsplit_once(':') {
                Some((h, p)) => match p.parse::<u16>() {
                    Ok(p) => (h.to_string(), Some(p)),
                    Err(_) => continue,
                },
                None => (entry.clone(), None),
            }
        };
        if eport.is_some_and(|p| p != port) {
            continue;
        }
        let name = name.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.');
        if name.is_empty() {
            continue;
        }
        if host == name || (host.len() > name.len() && host.ends_with(name) && host.as_bytes()[host.len() - name.len() - 1] == b'.') {
            return true;
        }
    }
    false
}

/// The proxy the environment names for this target, if any (`proxy: 'env'`): `https_proxy` /
/// `HTTPS_PROXY` for `wss:`, `http_proxy` / `HTTP_PROXY` for `ws:`, else `all_proxy` /
/// `ALL_PROXY`; none when `no_proxy` / `NO_PROXY` matches.
pub fn from_env(host: &str, port: u16, secure: bool) -> Option<String> {
    if let Some(list) = env(&["no_proxy", "NO_PROXY"]) {
        if no_proxy_matches(&list, host, port) {
            return None;
        }
    }
    let specific = if secure { env(&["https_proxy", "HTTPS_PROXY"]) } else { env(&["http_proxy", "HTTP_PROXY"]) };
    specific.or_else(|| env(&["all_proxy", "ALL_PROXY"]))
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

fn io_fail(p: &Proxy, e: &std::io::Error, during: &str) -> ProxyError {
    let (code, msg) = super::net::io_error_code(e, "read");
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return err("ECONNRESET", format!("Proxy {} closed the connection {during}", p.display()));
    }
    err(&code, format!("Proxy {} failed {during}: {msg}", p.display()))
}

fn target_text(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Opens the tunnel through an HTTP proxy with `CONNECT`.
async fn http_connect(s: &mut TcpStream, p: &Proxy, host: &str, port: u16) -> Result<(), ProxyError> {
    let target = target_text(host, port);
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((u, pw)) = &p.auth {
        req.push_str("Proxy-Authorization: Basic ");
        req.push_str(&base64(format!("{u}:{pw}").as_bytes()));
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| io_fail(p, &e, "while sending CONNECT"))?;
    // Read the answer head byte by byte: nothing past it may be consumed (the tunnel's bytes
    // belong to TLS or to the WebSocket handshake). It is short and read once per connection.
    let mut head = Vec::with_capacity(256);
    loop {
        if head.len() >= 16 * 1024 {
            return Err(err("ERR_PROXY_PROTOCOL", format!("Proxy {} sent an oversized answer to CONNECT", p.display())));
        }
        let b = s.read_u8().await.map_err(|e| io_fail(p, &e, "before answering CONNECT"))?;
        head.push(b);
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(err("ERR_PROXY_PROTOCOL", format!("Proxy {} sent an invalid answer to CONNECT", p.display()))),
    }
    let code = resp.code.unwrap_or(0);
    let reason = resp.reason.unwrap_or("").to_string();
    if (200..300).contains(&code) {
        return Ok(());
    }
    // 407, or 401 as tinyproxy answers wrong credentials.
    let auth_failed = code == 407 || code == 401;
    let what = if auth_failed {
        if p.auth.is_some() { "rejected the credentials" } else { "requires authentication" }
    } else {
        "refused the tunnel"
    };
    let code_name = if auth_failed { "ERR_PROXY_AUTH" } else { "ERR_PROXY_TUNNEL" };
    Err(err(code_name, format!("Proxy {} {what} to {target}: {code} {reason}", p.display()).trim_end().to_string()))
}

fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

/// Opens the tunnel through a SOCKS5 proxy.
async fn socks5_connect(s: &mut TcpStream, p: &Proxy, host: &str, port: u16) -> Result<(), ProxyError> {
    let name = p.display();
    let target = target_text(host, port);
    let methods: &[u8] = if p.auth.is_some() { &[0x00, 0x02] } else { &[0x00] };
    let mut hello = vec![5u8, methods.len() as u8];
    hello.extend_from_slice(methods);
    s.write_all(&hello).await.map_err(|e| io_fail(p, &e, "during the SOCKS5 greeting"))?;
    let mut r = [0u8; 2];
    s.read_exact(&mut r).await.map_err(|e| io_fail(p, &e, "during the SOCKS5 greeting"))?;
    if r[0] != 5 {
        return Err(err("ERR_PROXY_PROTOCOL", format!("Proxy {name} is not a SOCKS5 server (version byte {})", r[0])));
    }
    match r[1] {
        0x00 => {}
        0x02 => {
            let Some((u, pw)) = &p.auth else {
                return Err(err("ERR_PROXY_AUTH", format!("Proxy {name} asked for credentials that were not given")));
            };
            if u.len() > 255 || pw.len() > 255 {
                return Err(err("ERR_PROXY_AUTH", format!("Proxy {name}: SOCKS5 user name and password are limited to 255 bytes")));
            }
            let mut a = vec![1u8, u.len() as u8];
            a.extend_from_slice(u.as_bytes());
            a.push(pw.len() as u8);
            a.extend_from_slice(pw.as_bytes());
            s.write_all(&a).await.map_err(|e| io_fail(p, &e, "during SOCKS5 authentication"))?;
            s.read_exact(&mut r).await.map_err(|e| io_fail(p, &e, "during SOCKS5 authentication"))?;
            if r[1] != 0 {
                return Err(err("ERR_PROXY_AUTH", format!("Proxy {name} rejected the credentials (SOCKS5 auth status {})", r[1])));
            }
        }
        0xff => {
            let why = if p.auth.is_some() { "accepted none of the offered methods" } else { "requires authentication" };
            return Err(err("ERR_PROXY_AUTH", format!("Proxy {name} {why}")));
        }
        m => return Err(err("ERR_PROXY_PROTOCOL", format!("Proxy {name} chose an unoffered SOCKS5 method {m}"))),
    }
    let mut req = vec![5u8, 1, 0];
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
    let addr = match (literal, &p.kind) {
        (Some(ip), _) => Some(ip),
        (None, Kind::Socks5) => {
            let found = tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| err("ENOTFOUND", format!("getaddrinfo ENOTFOUND {host}")))?
                .next()
                .ok_or_else(|| err("ENOTFOUND", format!("getaddrinfo ENOTFOUND {host}")))?;
            Some(found.ip())
        }
        (None, _) => None,
    };
    match addr {
        Some(IpAddr::V4(v4)) => {
            req.push(1);
            req.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            req.push(4);
            req.extend_from_slice(&v6.octets());
        }
        None => {
            if host.len() > 255 {
                return Err(err("ERR_PROXY_PROTOCOL", format!("Host name too long for SOCKS5: {host}")));
            }
            req.push(3);
            req.push(host.len() as u8);
            req.extend_from_slice(host.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.map_err(|e| io_fail(p, &e, "during the SOCKS5 request"))?;
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.map_err(|e| io_fail(p, &e, "before answering the SOCKS5 request"))?;
    if h[0] != 5 {
        return Err(err("ERR_PROXY_PROTOCOL", format!("Proxy {name} sent an invalid SOCKS5 reply")));
    }
    if h[1] != 0 {
        return Err(err(
            "ERR_PROXY_TUNNEL",
            format!("Proxy {name} could not connect to {target}: {} (SOCKS5 reply {})", socks_reply(h[1]), h[1]),
        ));
    }
    // The bound address, which we do not need.
    let skip = match h[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let n = s.read_u8().await.map_err(|e| io_fail(p, &e, "in the SOCKS5 reply"))?;
            n as usize + 2
        }
        _ => return Err(err("ERR_PROXY_PROTOCOL", format!("Proxy {name} sent an invalid SOCKS5 reply"))),
    };
    let mut rest = vec![0u8; skip];
    s.read_exact(&mut rest).await.map_err(|e| io_fail(p, &e, "in the SOCKS5 reply"))?;
    Ok(())
}

/// Connects to the proxy and opens a tunnel to `host:port`.
pub async fn tunnel(p: &Proxy, host: &str, port: u16, origin: super::net::Origin) -> Result<TcpStream, ProxyError> {
    let mut s = super::net::connect_tcp(&p.host, p.port, origin)
        .await
        .map_err(|(code, msg)| (code, format!("{msg} (proxy {})", p.display())))?;
    match p.kind {
        Kind::Http => http_connect(&mut s, p, host, port).await?,
        Kind::Socks5 | Kind::Socks5h => socks5_connect(&mut s, p, host, port).await?,
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls() {
        let p = Proxy::parse("http://us%40er:p%3Ass@proxy.local:3128/").unwrap();
        assert_eq!((p.kind.clone(), p.host.as_str(), p.port), (Kind::Http, "proxy.local", 3128));
        assert_eq!(p.auth, Some(("us@er".into(), "p:ss".into())));
        assert_eq!(p.display(), "http://us@er:***@proxy.local:3128");
        let p = Proxy::parse("socks5h://[::1]").unwrap();
        assert_eq!((p.kind, p.host.as_str(), p.port), (Kind::Socks5h, "::1", 1080));
        assert_eq!(Proxy::parse("proxy:8080").unwrap().port, 8080);
        assert!(Proxy::parse("ftp://x").is_err());
        assert!(Proxy::parse("http://x:99999").is_err());
        assert!(Proxy::parse("http://:80").is_err());
        let e = Proxy::parse("http://u:secret@x:99999").unwrap_err();
        assert!(!e.1.contains("secret"));
        let _ = percent_decode("%");
        let _ = percent_decode("%4");
        let _ = percent_decode("a%zz");
    }

    #[test]
    fn no_proxy_rules() {
        assert!(no_proxy_matches("*", "x.com", 1));
        assert!(no_proxy_matches("example.com", "example.com", 443));
        assert!(no_proxy_matches("example.com", "a.example.com", 443));
        assert!(no_proxy_matches(".example.com", "a.example.com", 443));
        assert!(!no_proxy_matches("example.com", "badexample.com", 443));
        assert!(no_proxy_matches("localhost:8080, 10.0.0.1", "localhost", 8080));
        assert!(!no_proxy_matches("localhost:8080", "localhost", 8081));
        assert!(no_proxy_matches("10.0.0.1", "10.0.0.1", 1));
        assert!(no_proxy_matches("::1", "::1", 1));
        assert!(no_proxy_matches("[::1]:5", "[::1]", 5));
        assert!(!no_proxy_matches("", "x", 1));
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }
}
