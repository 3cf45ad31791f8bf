//! TLS for the engine, with rustls (ring provider): the client side of `wss://` with ws's TLS
//! options (`ca`, `cert`, `key`, `rejectUnauthorized`, `servername`), and the native TLS server
//! (`tls: { cert, key, ca, requestCert }`).
//!
//! Trusted roots: the Mozilla root set that Node also bundles (webpki-roots), plus the
//! certificates of `NODE_EXTRA_CA_CERTS`; a `ca` option replaces both, as in Node.
//! Certificate errors carry Node's codes (`DEPTH_ZERO_SELF_SIGNED_CERT`, `CERT_HAS_EXPIRED`,
//! `ERR_TLS_CERT_ALTNAME_INVALID`...) and messages.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// A TLS failure as Node would report it: `err.code` and `err.message`.
#[derive(Debug, Clone)]
pub struct TlsError {
    pub code: String,
    pub message: String,
}

impl TlsError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        TlsError { code: code.into(), message: message.into() }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for TlsError {}

/// The client's TLS options, as JS passed them (PEM text or DER bytes).
#[derive(Default, Clone)]
pub struct ClientTls {
    /// Each entry may hold several PEM certificates. Empty: the default roots.
    pub ca: Vec<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    /// Decrypts an encrypted PKCS#8 `key` (`BEGIN ENCRYPTED PRIVATE KEY`).
    pub passphrase: Option<String>,
    pub reject_unauthorized: bool,
    /// `Some("")` turns SNI off; `None` uses the host (unless it is an IP address).
    pub servername: Option<String>,
    /// Node's `minVersion` / `maxVersion` (`TLSv1.2`, `TLSv1.3`); None: both.
    pub min_version: Option<String>,
    pub max_version: Option<String>,
}

/// The code of a handshake that rustls cannot judge (a certificate it cannot read, such as
/// an X.509 version 1 one) where Node's TLS may succeed: JS then makes the handshake again
/// through Node's TLS.
pub const NEEDS_NODE: &str = "ERR_WS_NATIVE_TLS_NEEDS_NODE";

/// The protocol versions between `min` and `max` (Node's names); Err: a version rustls does
/// not speak is asked for.
fn versions(min: Option<&str>, max: Option<&str>) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let rank = |v: Option<&str>, default: u8| match v {
        None => Ok(default),
        Some("TLSv1.2") => Ok(2),
        Some("TLSv1.3") => Ok(3),
        Some(other) => Err(TlsError::new("ERR_TLS_INVALID_PROTOCOL_VERSION", format!("{other} is not supported by the engine's TLS"))),
    };
    let (lo, hi) = (rank(min, 2)?, rank(max, 3)?);
    let mut out = Vec::new();
    if lo <= 2 && hi >= 2 {
        out.push(&rustls::version::TLS12);
    }
    if hi >= 3 {
        out.push(&rustls::version::TLS13);
    }
    if out.is_empty() {
        return Err(TlsError::new("ERR_TLS_PROTOCOL_VERSION_CONFLICT", "minVersion is above maxVersion"));
    }
    Ok(out)
}

/// The server's TLS options.
#[derive(Default, Clone)]
pub struct ServerTls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<Vec<u8>>,
    pub passphrase: Option<String>,
    pub request_cert: bool,
    pub reject_unauthorized: bool,
}

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

fn has_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Certificates from PEM (any number) or, without a PEM marker, one DER certificate.
fn parse_certs(data: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if !has_pem(data) {
        if data.first() == Some(&0x30) {
            return Ok(vec![CertificateDer::from(data.to_vec())]);
        }
        return Err(TlsError::new("ERR_TLS_INVALID_PEM", format!("The `{what}` option holds no PEM certificate")));
    }
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(data) {
        match c {
            Ok(c) => out.push(c),
            Err(e) => return Err(TlsError::new("ERR_TLS_INVALID_PEM", format!("The `{what}` option holds an invalid PEM certificate: {e}"))),
        }
    }
    if out.is_empty() {
        return Err(TlsError::new("ERR_TLS_INVALID_PEM", format!("The `{what}` option holds no PEM certificate")));
    }
    Ok(out)
}

fn parse_key(data: &[u8], passphrase: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    if data.windows(23).any(|w| w == b"BEGIN ENCRYPTED PRIVATE") {
        return decrypt_pkcs8(data, passphrase);
    }
    if data.windows(14).any(|w| w == b"Proc-Type: 4,E") {
        return Err(TlsError::new(
            "ERR_TLS_ENCRYPTED_KEY_UNSUPPORTED",
            "The `key` option holds a key encrypted in OpenSSL's legacy format (Proc-Type: 4,ENCRYPTED), \
             which ws-native cannot decrypt; convert it to encrypted PKCS#8 \
             (`openssl pkcs8 -topk8 -in key.pem -out key8.pem`) or give it unencrypted",
        ));
    }
    if !has_pem(data) && data.first() == Some(&0x30) {
        return PrivateKeyDer::try_from(data.to_vec())
            .map_err(|e| TlsError::new("ERR_TLS_INVALID_KEY", format!("The `key` option holds no usable private key: {e}")));
    }
    PrivateKeyDer::from_pem_slice(data).map_err(|e| {
        TlsError::new("ERR_TLS_INVALID_KEY", format!("The `key` option holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))
    })
}

/// An encrypted PKCS#8 key (PBES2: PBKDF2 or scrypt with AES-CBC), decrypted with `passphrase`;
/// the errors are Node's (a missing passphrase, a wrong one).
fn decrypt_pkcs8(pem: &[u8], passphrase: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    use pkcs8::der::Decode;
    let Some(pass) = passphrase else {
        return Err(TlsError::new("ERR_MISSING_PASSPHRASE", "Passphrase required for encrypted key"));
    };
    let invalid = |e: String| TlsError::new("ERR_TLS_INVALID_KEY", format!("The `key` option holds no usable encrypted PKCS#8 key: {e}"));
    let (_, der) = pkcs8::der::pem::decode_vec(pem).map_err(|e| invalid(e.to_string()))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der).map_err(|e| invalid(e.to_string()))?;
    let doc = info
        .decrypt(pass)
        .map_err(|_| TlsError::new("ERR_OSSL_BAD_DECRYPT", "error:1C800064:Provider routines::bad decrypt"))?;
    Ok(PrivateKeyDer::Pkcs8(doc.as_bytes().to_vec().into()))
}

/// `NODE_EXTRA_CA_CERTS`, read once as Node does. Unreadable files are ignored (Node warns).
fn extra_certs() -> &'static [CertificateDer<'static>] {
    static E: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    E.get_or_init(|| {
        let Some(path) = std::env::var_os("NODE_EXTRA_CA_CERTS") else { return Vec::new() };
        match std::fs::read(path) {
            Ok(data) => CertificateDer::pem_slice_iter(&data).filter_map(Result::ok).collect(),
            Err(_) => Vec::new(),
        }
    })
}

fn default_roots() -> RootCertStore {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    roots.add_parsable_certificates(extra_certs().iter().cloned());
    roots
}

fn roots_from(ca: &[Vec<u8>]) -> Result<RootCertStore, TlsError> {
    if ca.is_empty() {
        return Ok(default_roots());
    }
    let mut roots = RootCertStore::empty();
    for entry in ca {
        for c in parse_certs(entry, "ca")? {
            roots.add(c).map_err(|e| TlsError::new("ERR_TLS_INVALID_CA", format!("A certificate of the `ca` option is unusable: {e}")))?;
        }
    }
    Ok(roots)
}

fn config_error(e: rustls::Error) -> TlsError {
    TlsError::new("ERR_TLS_CONFIG", format!("TLS configuration failed: {e}"))
}

// --- Reading issuer and subject from a DER certificate, to tell self-signed certificates. ---

/// One DER element: (tag, whole element, content, rest of the input).
type Element<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// The first DER element of `input`.
fn der(input: &[u8]) -> Option<Element<'_>> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, hdr) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    if end > input.len() {
        return None;
    }
    Some((tag, &input[..end], &input[hdr..end], &input[end..]))
}

/// (issuer, subject) of a certificate, as encoded.
fn issuer_subject(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, _, cert, _) = der(cert)?;
    let (_, _, tbs, _) = der(cert)?;
    let mut rest = tbs;
    let (tag, _, _, r) = der(rest)?;
    if tag == 0xa0 {
        rest = r; // version
        let (_, _, _, r) = der(rest)?;
        rest = r; // serial
    } else {
        rest = r; // serial
    }
    let (_, _, _, r) = der(rest)?; // signature algorithm
    let (_, issuer, _, r) = der(r)?;
    let (_, _, _, r) = der(r)?; // validity
    let (_, subject, _, _) = der(r)?;
    Some((issuer, subject))
}

/// Seconds since the epoch of a UTCTime or GeneralizedTime.
fn der_time(tag: u8, t: &[u8]) -> Option<i64> {
    let t = std::str::from_utf8(t).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let y: i64 = t.get(0..2)?.parse().ok()?;
            (if y >= 50 { 1900 + y } else { 2000 + y }, t.get(2..)?)
        }
        0x18 => (t.get(0..4)?.parse().ok()?, t.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| rest.get(r).and_then(|s| s.parse::<i64>().ok());
    let (mo, d, h, mi, s) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10).unwrap_or(0));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

/// (notBefore, notAfter) of a certificate, in seconds since the epoch.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (_, _, cert, _) = der(cert)?;
    let (_, _, tbs, _) = der(cert)?;
    let (tag, _, _, mut rest) = der(tbs)?;
    if tag == 0xa0 {
        rest = der(rest)?.3; // serial
    }
    let r = der(rest)?.3; // signature algorithm
    let r = der(r)?.3; // issuer
    let (_, _, v, _) = der(r)?;
    let (t1, _, nb, r) = der(v)?;
    let (t2, _, na, _) = der(r)?;
    Some((der_time(t1, nb)?, der_time(t2, na)?))
}

fn self_issued(cert: &[u8]) -> bool {
    issuer_subject(cert).is_some_and(|(i, s)| i == s)
}

fn presented_names(presented: &[String]) -> String {
    presented
        .iter()
        .map(|p| {
            if let Some(n) = p.strip_prefix("DnsName(\"").and_then(|n| n.strip_suffix("\")")) {
                format!("DNS:{n}")
            } else if let Some(n) = p.strip_prefix("IpAddress(").and_then(|n| n.strip_suffix(')')) {
                format!("IP Address:{n}")
            } else {
                p.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Node's code and message for a failed certificate check.
fn node_error(e: &CertificateError, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], name: &ServerName<'_>) -> TlsError {
    use CertificateError::*;
    if matches!(e, Other(_)) && intermediates.is_empty() && self_issued(end_entity) {
        // e.g. webpki's CaUsedAsEndEntity for an untrusted `openssl req -x509` certificate.
        return TlsError::new("DEPTH_ZERO_SELF_SIGNED_CERT", "self-signed certificate");
    }
    match e {
        UnknownIssuer => {
            let top = intermediates.last().unwrap_or(end_entity);
            if intermediates.is_empty() && self_issued(end_entity) {
                TlsError::new("DEPTH_ZERO_SELF_SIGNED_CERT", "self-signed certificate")
            } else if self_issued(top) {
                TlsError::new("SELF_SIGNED_CERT_IN_CHAIN", "self-signed certificate in certificate chain")
            } else if intermediates.is_empty() {
                TlsError::new("UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unable to verify the first certificate")
            } else {
                TlsError::new("UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "unable to get local issuer certificate")
            }
        }
        Expired | ExpiredContext { .. } => TlsError::new("CERT_HAS_EXPIRED", "certificate has expired"),
        NotValidYet | NotValidYetContext { .. } => TlsError::new("CERT_NOT_YET_VALID", "certificate is not yet valid"),
        NotValidForName | NotValidForNameContext { .. } => {
            let presented = match e {
                NotValidForNameContext { presented, .. } => presented_names(presented),
                _ => String::new(),
            };
            let message = match name {
                ServerName::IpAddress(ip) => {
                    let ip: std::net::IpAddr = (*ip).into();
                    format!("Hostname/IP does not match certificate's altnames: IP: {ip} is not in the cert's list: {presented}")
                }
                other => format!(
                    "Hostname/IP does not match certificate's altnames: Host: {}. is not in the cert's altnames: {presented}",
                    other.to_str()
                ),
            };
            TlsError::new("ERR_TLS_CERT_ALTNAME_INVALID", message)
        }
        Revoked => TlsError::new("CERT_REVOKED", "certificate revoked"),
        BadSignature => TlsError::new("CERT_SIGNATURE_FAILURE", "certificate signature failure"),
        InvalidPurpose | InvalidPurposeContext { .. } => TlsError::new("INVALID_PURPOSE", "unsupported certificate purpose"),
        other => TlsError::new("ERR_TLS_CERT_INVALID", format!("invalid certificate: {other:?}")),
    }
}

/// The server's certificate can be read by webpki; if not (version 1, an unknown algorithm),
/// the handshake is for Node's TLS to make (`NEEDS_NODE`).
fn readable(end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    match webpki::EndEntityCert::try_from(end_entity) {
        Ok(_) => Ok(()),
        Err(e) => Err(wrap(TlsError::new(NEEDS_NODE, format!("the engine's TLS cannot read the server's certificate ({e})")))),
    }
}

fn wrap(e: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

/// webpki's checks, with Node's codes on failure.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// Certificates the user trusts explicitly (`ca`): a server presenting one of them as
    /// its own certificate is trusted, as OpenSSL does (webpki refuses a CA certificate as an
    /// end entity, and `openssl req -x509` makes exactly such self-signed certificates).
    pinned: Vec<CertificateDer<'static>>,
}

impl NodeVerifier {
    /// The checks left for a certificate the user trusts as such: validity and name.
    fn verify_pinned(&self, end_entity: &CertificateDer<'_>, server_name: &ServerName<'_>, now: UnixTime) -> Result<(), CertificateError> {
        let (not_before, not_after) = validity(end_entity).ok_or(CertificateError::BadEncoding)?;
        let now = now.as_secs() as i64;
        if now > not_after {
            return Err(CertificateError::Expired);
        }
        if now < not_before {
            return Err(CertificateError::NotValidYet);
        }
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|_| CertificateError::BadEncoding)?;
        ee.verify_is_valid_for_subject_name(server_name).map_err(|e| match e {
            webpki::Error::CertNotValidForName(ctx) => CertificateError::NotValidForNameContext { expected: ctx.expected, presented: ctx.presented },
            _ => CertificateError::NotValidForName,
        })
    }
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        readable(end_entity)?;
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(e)) => {
                if self.pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                    return match self.verify_pinned(end_entity, server_name, now) {
                        Ok(()) => Ok(ServerCertVerified::assertion()),
                        Err(e) => Err(wrap(node_error(&e, end_entity, intermediates, server_name))),
                    };
                }
                Err(wrap(node_error(&e, end_entity, intermediates, server_name)))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `rejectUnauthorized: false`: any certificate, though the handshake signatures still count.
#[derive(Debug)]
struct AcceptAny {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(&self, end_entity: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        // The handshake's signature is checked with the certificate's key: it must be readable.
        readable(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn build_client_config(o: &ClientTls) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let versions = versions(o.min_version.as_deref(), o.max_version.as_deref())?;
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions).map_err(config_error)?;
    let builder = if o.reject_unauthorized {
        let roots = roots_from(&o.ca)?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::new("ERR_TLS_INVALID_CA", format!("The trusted certificates are unusable: {e}")))?;
        let mut pinned = Vec::new();
        for entry in &o.ca {
            pinned.extend(parse_certs(entry, "ca")?);
        }
        if o.ca.is_empty() {
            pinned.extend(extra_certs().iter().cloned());
        }
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NodeVerifier { inner, pinned }))
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny { provider: provider.clone() }))
    };
    let mut config = match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => {
            let certs = parse_certs(cert, "cert")?;
            let key = parse_key(key, o.passphrase.as_deref())?;
            builder.with_client_auth_cert(certs, key).map_err(|e| TlsError::new("ERR_TLS_INVALID_KEY", format!("The `cert` and `key` options do not make a usable pair: {e}")))?
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(TlsError::new("ERR_TLS_INVALID_KEY", "The `cert` and `key` options must be given together"));
        }
        (None, None) => builder.with_no_client_auth(),
    };
    config.enable_sni = o.servername.as_deref() != Some("");
    Ok(Arc::new(config))
}

/// A client configuration, cached by its options (so sessions resume and the roots are not
/// rebuilt for every connection).
pub fn client_config(o: &ClientTls) -> Result<Arc<ClientConfig>, TlsError> {
    type Cache = Mutex<HashMap<Vec<u8>, Arc<ClientConfig>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut k = Vec::new();
    for c in &o.ca {
        k.extend_from_slice(&(c.len() as u64).to_le_bytes());
        k.extend_from_slice(c);
    }
    // The passphrase is part of the key: a wrong one must fail even after a right one worked.
    let pass = o.passphrase.as_ref().map(|p| p.as_bytes().to_vec());
    for part in [&o.cert, &o.key, &pass] {
        match part {
            Some(p) => {
                k.extend_from_slice(&(p.len() as u64).to_le_bytes());
                k.extend_from_slice(p);
            }
            None => k.extend_from_slice(&u64::MAX.to_le_bytes()),
        }
    }
    k.push(o.reject_unauthorized as u8);
    k.push((o.servername.as_deref() == Some("")) as u8);
    for v in [&o.min_version, &o.max_version] {
        k.extend_from_slice(v.as_deref().unwrap_or("-").as_bytes());
        k.push(0);
    }
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&k) {
        return Ok(c.clone());
    }
    let config = build_client_config(o)?;
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= 64 {
        map.clear();
    }
    map.insert(k, config.clone());
    Ok(config)
}

/// The name the certificate must match (and the SNI): `servername`, else the host.
pub fn server_name(o: &ClientTls, host: &str) -> Result<ServerName<'static>, TlsError> {
    let name = match o.servername.as_deref() {
        Some(s) if !s.is_empty() => s,
        _ => host,
    };
    ServerName::try_from(name.to_string())
        .map_err(|_| TlsError::new("ERR_INVALID_ARG_VALUE", format!("The TLS server name \"{name}\" is not a valid host name or IP address")))
}

/// Node's code and message for a failed client handshake.
pub fn handshake_error(e: &io::Error, host: &str, port: u16) -> TlsError {
    if let Some(inner) = e.get_ref() {
        if let Some(te) = inner.downcast_ref::<rustls::Error>() {
            if let rustls::Error::InvalidCertificate(CertificateError::Other(o)) = te {
                if let Some(ne) = o.0.downcast_ref::<TlsError>() {
                    return ne.clone();
                }
            }
            return match te {
                rustls::Error::AlertReceived(a) => alert_error(a, &format!("{host}:{port}")),
                other => TlsError::new("ERR_TLS_HANDSHAKE", format!("TLS handshake with {host}:{port} failed: {other}")),
            };
        }
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => TlsError::new(
            "ECONNRESET",
            format!("Client network socket disconnected before secure TLS connection was established ({host}:{port})"),
        ),
        _ => {
            let (code, msg) = super::net::io_error_code(e, "read");
            TlsError::new(&code, msg)
        }
    }
}

/// Node's (OpenSSL's) code for a TLS alert from the peer, e.g.
/// `ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`, and a readable message.
fn alert_error(a: &rustls::AlertDescription, peer: &str) -> TlsError {
    let name = format!("{a:?}");
    let mut snake = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(ch.to_ascii_uppercase());
    }
    let prefix = match a {
        rustls::AlertDescription::CertificateRequired => "TLSV13",
        rustls::AlertDescription::BadCertificate | rustls::AlertDescription::HandshakeFailure => "SSLV3",
        _ => "TLSV1",
    };
    TlsError::new(
        &format!("ERR_SSL_{prefix}_ALERT_{snake}"),
        format!("TLS alert from {peer}: {}", snake.to_ascii_lowercase().replace('_', " ")),
    )
}

/// Code and message for a failed read on a client connection: TLS errors as Node words
/// them (a server refusing the client certificate after a TLS 1.3 handshake shows here).
pub fn read_error(e: &io::Error) -> (String, String) {
    if let Some(te) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        let t = match te {
            rustls::Error::AlertReceived(a) => alert_error(a, "the server"),
            other => TlsError::new("ERR_TLS_HANDSHAKE", format!("TLS error: {other}")),
        };
        return (t.code, t.message);
    }
    super::net::io_error_code(e, "read")
}

/// A server configuration from the `tls` option.
pub fn server_config(o: &ServerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(config_error)?;
    let builder = if o.request_cert {
        let roots = Arc::new(roots_from(&o.ca)?);
        let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let b = if o.reject_unauthorized { b } else { b.allow_unauthenticated() };
        let v = b.build().map_err(|e| TlsError::new("ERR_TLS_INVALID_CA", format!("The `ca` option is unusable: {e}")))?;
        builder.with_client_cert_verifier(v)
    } else {
        builder.with_no_client_auth()
    };
    let certs = parse_certs(&o.cert, "cert")?;
    let key = parse_key(&o.key, o.passphrase.as_deref())?;
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::new("ERR_TLS_INVALID_KEY", format!("The `cert` and `key` options do not make a usable pair: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_parser_never_panics_on_garbage() {
        for n in 0..64u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let _ = issuer_subject(&v);
            let _ = der(&v);
        }
        assert!(der(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(der(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_none());
    }

    #[test]
    fn encrypted_keys_errors() {
        let enc = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(parse_key(enc, None).unwrap_err().code, "ERR_MISSING_PASSPHRASE");
        assert_eq!(parse_key(enc, Some("x")).unwrap_err().code, "ERR_TLS_INVALID_KEY");
        let legacy = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(parse_key(legacy, Some("x")).unwrap_err().code, "ERR_TLS_ENCRYPTED_KEY_UNSUPPORTED");
    }

    #[test]
    fn der_times() {
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x18, b"20240229120000Z"), Some(1_709_208_000));
        assert_eq!(der_time(0x17, b"49123123595"), None);
        assert_eq!(der_time(0x17, b"xx"), None);
        assert_eq!(der_time(0x18, b"2024139912000Z"), None);
    }

    #[test]
    fn names_are_shown_as_node_does() {
        assert_eq!(presented_names(&["DnsName(\"localhost\")".into()]), "DNS:localhost");
    }
}
