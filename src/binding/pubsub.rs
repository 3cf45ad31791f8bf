//! The #[napi] surface of pub/sub: a server's hub (its topics, and its link to Redis), and
//! the questions JS asks of it. Subscribing and publishing are commands (`engine::wire`).

use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::{env_sink, HUBS};
use crate::engine::scaleout::LinkConfig;
use crate::engine::topics;

/// The server's `redis` option.
#[napi(object)]
pub struct RedisOptions {
    pub url: String,
    pub prefix: Option<String>,
    pub max_buffered_messages: Option<u32>,
    pub max_buffered_bytes: Option<f64>,
    /// Reconnection backoff bounds, in milliseconds (100 and 5,000 by default).
    pub backoff_min_ms: Option<u32>,
    pub backoff_max_ms: Option<u32>,
    /// How long a reconnected publisher waits for the other processes to subscribe again
    /// before sending what it buffered, in milliseconds (6,000 by default).
    pub rejoin_wait_ms: Option<u32>,
}

/// A new hub for a server, linked to Redis when `redis` is given. Throws on a URL the Redis
/// client rejects.
#[napi(catch_unwind)]
pub fn hub_open(redis: Option<RedisOptions>) -> Result<u32> {
    let id = topics::open(env_sink());
    HUBS.with(|h| h.borrow_mut().push(id));
    if let Some(r) = redis {
        let mut config = LinkConfig::new(r.url);
        if let Some(p) = r.prefix {
            config.prefix = p;
        }
        if let Some(n) = r.max_buffered_messages {
            config.max_buffered_messages = n as usize;
        }
        if let Some(n) = r.max_buffered_bytes.filter(|n| n.is_finite() && *n >= 0.0) {
            config.max_buffered_bytes = n as usize;
        }
        let ms = |v: Option<u32>, d: Duration| v.map_or(d, |m| Duration::from_millis(m as u64));
        config.backoff_min = ms(r.backoff_min_ms, config.backoff_min);
        config.backoff_max = ms(r.backoff_max_ms, config.backoff_max).max(config.backoff_min);
        config.rejoin_wait = ms(r.rejoin_wait_ms, config.rejoin_wait);
        let linked = topics::hub(id).map(|hub| hub.link(config));
        if let Some(Err(e)) = linked {
            hub_close(id);
            return Err(Error::new(Status::InvalidArg, e.0));
        }
    }
    Ok(id)
}

/// The server closed: its topics go, and its link stops.
#[napi(catch_unwind)]
pub fn hub_close(id: u32) {
    HUBS.with(|h| h.borrow_mut().retain(|&x| x != id));
    topics::close(id);
}

#[napi(catch_unwind)]
pub fn is_subscribed(hub: u32, id: u32, topic: String) -> bool {
    topics::hub(hub).is_some_and(|h| h.is_subscribed(id, topic.as_bytes()))
}

/// Connection `id`'s topics, in subscription order.
#[napi(catch_unwind)]
pub fn topics_of(hub: u32, id: u32) -> Vec<String> {
    topics::hub(hub).map(|h| h.topics_of(id).into_iter().map(|t| String::from_utf8_lossy(&t).into_owned()).collect()).unwrap_or_default()
}

#[napi(catch_unwind)]
pub fn subscriber_count(hub: u32, topic: String) -> u32 {
    topics::hub(hub).map_or(0, |h| h.subscriber_count(topic.as_bytes()) as u32)
}

/// `wss.redisStatus()`.
#[napi(object)]
pub struct RedisStatus {
    pub connected: bool,
    pub buffered_messages: u32,
    pub buffered_bytes: f64,
    pub lost: f64,
    pub missed: f64,
    pub last_error: Option<String>,
}

#[napi(catch_unwind)]
pub fn redis_status(hub: u32) -> Option<RedisStatus> {
    let s = topics::hub(hub)?.link_status()?;
    Some(RedisStatus {
        connected: s.connected,
        buffered_messages: s.buffered_messages as u32,
        buffered_bytes: s.buffered_bytes as f64,
        lost: s.lost as f64,
        missed: s.missed as f64,
        last_error: s.last_error,
    })
}
