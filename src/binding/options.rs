//! JS's option objects (normalized by lib/) and their conversion to the engine's settings.
//! ws's options arrive with ws's defaults already applied by lib/, as in ws; the options that
//! exist only in ws-native default to the protocol core's values.

use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::engine::config::{BackpressureLimit, ConnConfig, Heartbeat, WaterMarks};
use crate::engine::events::Sink;
use crate::protocol::deflate::{BitsOption, DeflateOptions, Tuning};
use crate::protocol::handshake::HeadLimits;
use crate::protocol::receiver::ReceiverConfig;

/// Limits and behaviour shared by client and server connections.
#[napi(object)]
pub struct ConnOptions {
    pub max_payload: Option<f64>,
    pub max_fragments: Option<f64>,
    pub skip_utf8_validation: bool,
    pub auto_pong: bool,
    pub max_pending_auto_pongs: Option<f64>,
    pub close_timeout: Option<f64>,
    pub handshake_timeout: Option<f64>,
    /// permessage-deflate settings; absent when disabled.
    pub deflate: Option<DeflateJs>,
    /// Most bytes and header lines in the handshake head we receive (Node's names).
    pub max_header_size: Option<f64>,
    pub max_headers_count: Option<f64>,
    /// The built-in heartbeat, milliseconds; absent when off.
    pub heartbeat_interval: Option<f64>,
    pub heartbeat_timeout: Option<f64>,
    /// Bytes: the `drain` event's marks.
    pub high_water_mark: Option<f64>,
    pub low_water_mark: Option<f64>,
    /// Bytes; absent when unlimited.
    pub max_backpressure: Option<f64>,
    pub close_on_backpressure_limit: Option<bool>,
}

/// ws's `perMessageDeflate` object, with JS truthiness already applied by lib/.
#[napi(object)]
#[derive(Clone)]
pub struct DeflateJs {
    pub server_no_context_takeover: Option<bool>,
    pub client_no_context_takeover: Option<bool>,
    pub server_max_window_bits: Option<Either<bool, f64>>,
    pub client_max_window_bits: Option<Either<bool, f64>>,
    pub threshold: Option<f64>,
    pub level: Option<f64>,
    pub mem_level: Option<f64>,
    pub strategy: Option<f64>,
}

fn bits_option(v: &Option<Either<bool, f64>>) -> BitsOption {
    match v {
        None => BitsOption::Unset,
        Some(Either::A(true)) => BitsOption::True,
        Some(Either::A(false)) => BitsOption::False,
        Some(Either::B(n)) if n.is_finite() && *n >= 0.0 => BitsOption::Num(n.min(1e6) as u32),
        Some(Either::B(_)) => BitsOption::Num(0),
    }
}

pub fn deflate_options(d: &DeflateJs) -> DeflateOptions {
    let defaults = DeflateOptions::default();
    DeflateOptions {
        server_no_context_takeover: d.server_no_context_takeover,
        client_no_context_takeover: d.client_no_context_takeover,
        server_max_window_bits: bits_option(&d.server_max_window_bits),
        client_max_window_bits: bits_option(&d.client_max_window_bits),
        threshold: d.threshold.filter(|t| t.is_finite() && *t >= 0.0).map(|t| t as u64).unwrap_or(defaults.threshold),
        tuning: Tuning {
            level: d.level.filter(|l| l.is_finite()).map(|l| l as i32).unwrap_or(defaults.tuning.level),
            mem_level: d.mem_level.filter(|m| (1.0..=9.0).contains(m)).map(|m| m as u8).unwrap_or(defaults.tuning.mem_level),
            strategy: d.strategy.filter(|s| (0.0..=4.0).contains(s)).map(|s| s as u8).unwrap_or(defaults.tuning.strategy),
        },
    }
}

/// A flat `[name, value, name, value...]` list from JS as pairs.
pub fn pairs(list: Vec<String>) -> Vec<(String, String)> {
    let mut it = list.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

/// Milliseconds from JS; anything not a positive number is 0.
fn ms(v: f64) -> Duration {
    Duration::from_millis(if v.is_finite() && v > 0.0 { v as u64 } else { 0 })
}

/// A positive count from JS, or None.
fn count(v: Option<f64>, ceiling: f64) -> Option<usize> {
    v.filter(|v| v.is_finite() && *v > 0.0).map(|v| v.min(ceiling) as usize)
}

pub fn conn_config(o: &ConnOptions, is_server: bool, sink: std::sync::Arc<Sink>) -> ConnConfig {
    let receiver_defaults = ReceiverConfig::default();
    let head_defaults = HeadLimits::default();
    ConnConfig {
        receiver: ReceiverConfig {
            is_server,
            // ws's `maxPayload` (0 or unset: no limit, as `maxPayload | 0` in ws). Event
            // records carry 32-bit lengths: "no limit" still stops below 4 GiB.
            max_payload: o.max_payload.map(|v| if v > 0.0 { v as u64 } else { 0 }).unwrap_or(0).wrapping_sub(1).min(u32::MAX as u64 - 1) + 1,
            max_fragments: o.max_fragments.map(|v| if v > 0.0 { v as u32 } else { 0 }).unwrap_or(receiver_defaults.max_fragments),
            skip_utf8_validation: o.skip_utf8_validation,
            allow_rsv1: false,
        },
        auto_pong: o.auto_pong,
        max_pending_auto_pongs: o.max_pending_auto_pongs.filter(|v| v.is_finite() && *v > 0.0).map_or(0, |v| v.min(u32::MAX as f64) as u32),
        close_timeout: ms(o.close_timeout.unwrap_or(0.0)),
        handshake_timeout: o.handshake_timeout.filter(|v| *v > 0.0).map(ms),
        deflate: o.deflate.as_ref().map(deflate_options),
        sink,
        head_limits: HeadLimits {
            max_size: count(o.max_header_size, 1e9).unwrap_or(head_defaults.max_size),
            max_headers: count(o.max_headers_count, 1e6).unwrap_or(head_defaults.max_headers),
        },
        heartbeat: match (o.heartbeat_interval, o.heartbeat_timeout) {
            (Some(i), Some(t)) if i.is_finite() && i > 0.0 && t.is_finite() && t > 0.0 => Some(Heartbeat { interval: ms(i), timeout: ms(t) }),
            _ => None,
        },
        water_marks: {
            let d = WaterMarks::default();
            let high = count(o.high_water_mark, 1e15).map_or(d.high, |v| v as u64);
            let low = o.low_water_mark.filter(|v| v.is_finite() && *v >= 0.0).map_or(d.low.min(high), |v| (v as u64).min(high));
            WaterMarks { high, low }
        },
        backpressure_limit: count(o.max_backpressure, 1e15).map(|bytes| BackpressureLimit { bytes: bytes as u64, close: o.close_on_backpressure_limit.unwrap_or(false) }),
    }
}

/// The server's `tls` option, normalized by JS (PEM as Buffers).
#[napi(object)]
pub struct ServerTlsOptions {
    pub cert: Buffer,
    pub key: Buffer,
    pub ca: Option<Vec<Buffer>>,
    pub passphrase: Option<String>,
    pub request_cert: Option<bool>,
    pub reject_unauthorized: Option<bool>,
}

/// The client's TLS options for `wss:`, normalized by JS.
#[napi(object)]
pub struct ClientTlsOptions {
    pub ca: Option<Vec<Buffer>>,
    pub cert: Option<Buffer>,
    pub key: Option<Buffer>,
    pub passphrase: Option<String>,
    pub reject_unauthorized: Option<bool>,
    pub servername: Option<String>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
}

pub fn bufs(v: Option<Vec<Buffer>>) -> Vec<Vec<u8>> {
    v.unwrap_or_default().iter().map(|b| b.to_vec()).collect()
}
