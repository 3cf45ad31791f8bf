//! Scale-out through Redis: the link between this process and the other server processes
//! that share a Redis server. It knows nothing of WebSocket connections or topic tables: it
//! carries `(topic, payload, binary)` messages out (`Link::publish`) and hands the other
//! processes' messages to a callback (`deliver`), which fans them out to local subscribers.
//!
//! # The Redis client crate
//!
//! `redis` (redis-rs, 1.x) with `default-features = false` and only `tokio-comp` (async I/O
//! on our tokio runtime). Against `fred` (10.x):
//! - maintenance: redis-rs is the most used Rust client, kept by a team under the redis-rs
//!   organisation with frequent releases; fred is mostly one maintainer's;
//! - weight: with these features redis adds 39 crates to our tree (24 of them the `url`
//!   crate's IDNA and ICU tables), fred with only `i-pubsub` about 57 (the same `url`, plus
//!   futures with its executor, parking_lot, nom, rand 0.8, semver, async-trait, ...). The
//!   release `.so` grows by about 0.85 MB (3.94 -> 4.79 MB), mostly redis's command and
//!   connection code, its `combine` parser and `url`;
//! - pub/sub and reconnection: both have an async pub/sub connection. fred reconnects and
//!   resubscribes by itself, and redis's `ConnectionManager` reconnects; neither tells us
//!   which publications reached Redis across a reconnection, which is what the buffer below
//!   needs. So this module runs its own reconnection loop over two plain connections, and
//!   redis's plain `PubSub` and `MultiplexedConnection` are all it uses;
//! - MSRV: redis 1.8 needs rustc 1.88, fred 1.75; ours is 1.95.
//!
//! # Two connections, one pattern
//!
//! The publisher connection sends `PUBLISH {prefix}{topic} envelope`, pipelined, at most
//! one pipeline (`BATCH_MESSAGES`, `BATCH_BYTES`) in flight. The subscriber connection
//! holds one `PSUBSCRIBE {prefix}*` (the prefix with its glob characters escaped). One
//! pattern rather than a `SUBSCRIBE` per topic: the topic table stays out of this module
//! (no subscribe / unsubscribe round trips as local topics come and go, nothing to
//! resubscribe but one pattern after a reconnection, no window in which a new local topic
//! misses remote messages), at the cost that every process receives every message under the
//! prefix, including its own, and drops those it has no subscriber for. Deployments whose
//! processes hold disjoint sets of topics would save bandwidth with per-topic subscriptions;
//! that is a refinement this interface allows later. Redis's pub/sub ignores the database
//! number: links on one Redis are grouped by `prefix` alone.
//!
//! # The envelope
//!
//! A Redis payload is `ENVELOPE_HEADER` (17) bytes, then the message's bytes:
//! - byte 0: version (high 4 bits, `VERSION`) and kind (low 4 bits: 0 text, 1 binary,
//!   2 probe);
//! - bytes 1..9: the origin, a random id per `Link` (little endian);
//! - bytes 9..17: the sequence number, from 1 in publication order per origin (little
//!   endian).
//!
//! A subscriber drops its own origin's messages (the caller delivered them locally) and
//! probes, and keeps the last sequence number seen from each origin: a message at or below
//! it is a resend and is dropped; one beyond it by more than one tells how many were missed.
//!
//! # Delivery guarantee
//!
//! - **Accepted or `Lost`.** `publish` never blocks. It accepts a message unless the
//!   messages accepted and not yet acknowledged by Redis would pass
//!   `max_buffered_messages` (default 10,000) or `max_buffered_bytes` (default 16 MiB, topic
//!   and envelope counted); past either bound it returns `Err(Lost)`: that message will not
//!   be sent (a later one may be, so the caller reports the loss).
//! - **Buffered while Redis is unreachable, sent in order once it is back.** A message
//!   leaves the buffer only when Redis has answered its `PUBLISH`. A pipeline that got no
//!   answer is sent again on the next connection; subscribers drop the copies they already
//!   had by sequence number, so each remote subscriber gets each message once, in
//!   publication order.
//! - **Sent again after a failed connection.** Redis answers a `PUBLISH` once the message is
//!   in its subscribers' output buffers, not once it is written to them: a Redis killed in
//!   between, or whose connections end in a reset that discards what the kernel still held,
//!   has answered for messages some subscribers never get. So the publisher keeps the
//!   messages Redis answered for (at most one pipeline's worth, `BATCH_MESSAGES` and
//!   `BATCH_BYTES`), and when its connection fails sends again, first on the next connection,
//!   those answered for within `REPLAY_WITHIN` before; subscribers drop the copies they had.
//!   A process that subscribes in that time may get such a message although it was published
//!   before it joined.
//! - **Rejoining.** Redis keeps no messages for absent subscribers, so a publisher that
//!   reconnects first would send its buffer before the others' subscribers are back. After
//!   each reconnection it therefore waits, before sending, until its probe (a `PUBLISH` of a
//!   probe envelope, whose answer counts the subscribers that received it, its own
//!   included) reaches the count that the last `PUBLISH` (or idle probe) before the outage
//!   reported, and at most `rejoin_wait` (default 6 s: more than `backoff_max`, so every
//!   live peer has retried by then; a peer that went away during the outage costs this
//!   wait once). When every peer is still subscribed (only this process lost its
//!   connection), that is one probe. On a first connection no count is known: it waits
//!   until Redis has been up for `rejoin_wait`, so a Redis that was already running costs
//!   nothing and one that just started lets the peers subscribe first. Messages published
//!   meanwhile are buffered within the same bounds.
//! - **What is not covered.** A subscriber that is away while others publish (a network
//!   fault on its side only, or a process joining for the first time) misses those
//!   messages: Redis does not store them. Its link counts the ones it can tell it missed
//!   (`LinkStatus::missed`). A message Redis answered for longer than `REPLAY_WITHIN` before
//!   the publisher's connection failed, or past the bounds above, and did not write to a
//!   subscriber is lost for that subscriber. `stop` sends what is
//!   buffered if connected (each pipeline within `response_timeout`) and drops it if not
//!   (or if still waiting to rejoin).
//! - **Slow subscribers.** Redis disconnects a subscriber whose output it holds past
//!   `client-output-buffer-limit pubsub` (32 MiB, or 8 MiB for 60 s, by default): `deliver`
//!   must keep up. The link reconnects; what it missed meanwhile counts in `missed`.
//!
//! # Threads and callbacks
//!
//! `publish` and `status` are called from any thread (Node's JS thread): atomics and an
//! unbounded channel, whose length the bounds above limit. Two tasks on the engine's
//! runtime do the rest. `deliver` is called from the subscriber's task, one message at a
//! time, in arrival order; `on_event` from either task. Both run under `catch_unwind`: a
//! panicking callback loses that call, not the link. Neither is called once `stop` has
//! returned, except a call already under way. The tasks live on the engine's runtime: if it
//! shuts down (the last Node environment has gone), they end with it and `publish` returns
//! `Lost`.
//!
//! An idle connection is checked every `ping_interval`: the subscriber sends PING, the
//! publisher a probe (which also refreshes the count a rejoin waits for); each link of the
//! group receives the probes of the others and drops them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, Client, Msg, RedisResult};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::runtime;

/// The envelope's version (high 4 bits of its first byte).
const VERSION: u8 = 1;
const KIND_TEXT: u8 = 0;
const KIND_BINARY: u8 = 1;
/// A probe: counts the receiving subscribers; never delivered.
const KIND_PROBE: u8 = 2;
/// Version and kind, origin, sequence number.
pub const ENVELOPE_HEADER: usize = 1 + 8 + 8;

/// At most this many `PUBLISH`es in one pipeline...
const BATCH_MESSAGES: usize = 1024;
/// ...and about this many bytes (a single larger message goes alone).
const BATCH_BYTES: usize = 1 << 20;
/// Messages the publisher takes from the channel between two pipelines, at most.
const TAKE_MAX: usize = 4 * BATCH_MESSAGES;
/// Messages the subscriber hands over per wake-up, at most (then it looks at its timers).
const DRAIN_MAX: usize = 256;
/// How often the rejoining publisher probes.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Origins whose last sequence number a subscriber keeps (the least recently heard one
/// goes first).
const ORIGINS_MAX: usize = 4096;
/// Messages Redis answered for this long before the publisher's connection failed are sent
/// again on the next one (see "Delivery guarantee").
const REPLAY_WITHIN: Duration = Duration::from_secs(1);

/// What a link needs to know. `LinkConfig::new(url)` has the defaults.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// `redis://[[user]:password@]host[:port][/db]`.
    pub url: String,
    /// Channels are `prefix + topic`; links with the same prefix on one Redis form a group.
    /// Default `"ws-native:"`.
    pub prefix: String,
    /// Messages accepted and not yet acknowledged by Redis, at most. Default 10,000.
    pub max_buffered_messages: usize,
    /// Their bytes (topic, prefix and envelope included), at most: a single larger message
    /// is always `Lost`. Default 16 MiB.
    pub max_buffered_bytes: usize,
    /// The first reconnection delay; each failure doubles it, up to `backoff_max`. Each delay
    /// is drawn between half and all of the current value. Default 100 ms.
    pub backoff_min: Duration,
    /// Default 5 s.
    pub backoff_max: Duration,
    /// A connection attempt (TCP, AUTH, SELECT, PSUBSCRIBE) fails after this. Default 2 s.
    pub connect_timeout: Duration,
    /// A command (a pipeline, a PING) not answered within this ends the connection. Default 3 s.
    pub response_timeout: Duration,
    /// An idle connection is checked this often (the subscriber's PING, the publisher's
    /// probe). Default 1 s.
    pub ping_interval: Duration,
    /// After a reconnection, how long Redis must have been up before buffered messages go
    /// out without the subscribers' count being back (see the module's docs). Default 6 s.
    pub rejoin_wait: Duration,
}

impl LinkConfig {
    pub fn new(url: impl Into<String>) -> Self {
        LinkConfig {
            url: url.into(),
            prefix: "ws-native:".to_owned(),
            max_buffered_messages: 10_000,
            max_buffered_bytes: 16 << 20,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(3),
            ping_interval: Duration::from_secs(1),
            rejoin_wait: Duration::from_secs(6),
        }
    }
}

/// Called with `(topic, payload, binary)` for each message of another process, on the
/// runtime's thread: it must not block (the fan-out to local sockets, not a wait on JS). A
/// text payload is valid UTF-8.
pub type Deliver = Arc<dyn Fn(&str, &[u8], bool) + Send + Sync>;
/// Called on each change of the link's state.
pub type OnEvent = Arc<dyn Fn(LinkEvent) + Send + Sync>;

/// The link's state changes. The texts name the connection (`subscriber: ...`,
/// `publisher: ...`) and give Redis's or the system's error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Both connections are up (subscribed; publishing): at first, and after each outage.
    Connected,
    /// The link was connected and a connection failed: publications are buffered from now.
    Disconnected(String),
    /// A connection attempt, or a connection while the link was not connected, failed. At
    /// most one per connection per backoff delay.
    Error(String),
}

/// A snapshot of the link.
#[derive(Clone, Debug, Default)]
pub struct LinkStatus {
    /// Both connections are up (the last event was `Connected`).
    pub connected: bool,
    /// The subscriber connection is up and subscribed.
    pub subscriber_connected: bool,
    /// The publisher connection is up and past its rejoin wait (sending).
    pub publisher_connected: bool,
    /// The last connection error, if any.
    pub last_error: Option<String>,
    /// Accepted messages Redis has not acknowledged yet, and their bytes.
    pub buffered_messages: usize,
    pub buffered_bytes: usize,
    /// Publications refused with `Lost`.
    pub lost: u64,
    /// Other processes' messages this link can tell it did not receive (gaps in their
    /// sequence numbers).
    pub missed: u64,
    /// Payloads under the prefix that were not envelopes of this version, or text that was
    /// not UTF-8: dropped.
    pub malformed: u64,
}

/// `publish` refused the message: the buffer is at its bound (or the link is stopping).
/// The message will not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lost;

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the Redis buffer is full: the message was not published to other processes")
    }
}

impl std::error::Error for Lost {}

/// `Link::start` failed: a URL the client does not accept, or no runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A link to Redis: two tasks and their connections, until `stop` (or drop).
pub struct Link {
    ctx: Arc<Ctx>,
    tx: mpsc::UnboundedSender<Item>,
    /// Dropped with the link: both tasks watch it.
    _stop: watch::Sender<()>,
}

impl Link {
    /// Starts the link's tasks on the engine's runtime; they connect in the background (the
    /// first result comes as an event). Fails only on a URL the client rejects (a `rediss:`
    /// URL among them: this build has no TLS for Redis) or a runtime that cannot start.
    pub fn start(config: LinkConfig, deliver: Deliver, on_event: OnEvent) -> Result<Link, StartError> {
        let client = Client::open(config.url.as_str()).map_err(|e| StartError(format!("Redis URL: {e}")))?;
        let handle = runtime::handle().map_err(|e| StartError(format!("runtime: {e}")))?;
        let origin: u64 = rand::random();
        let ctx = Arc::new(Ctx {
            pattern: format!("{}*", escape_glob(&config.prefix)),
            probe: envelope(KIND_PROBE, origin, &[]),
            cfg: config,
            origin,
            deliver,
            on_event,
            stopped: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            buffered_bytes: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            publisher_end: Mutex::new((false, None)),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(());
        handle.spawn(run_subscriber(ctx.clone(), client.clone(), stop_rx.clone()));
        let end = PublisherEnd(ctx.clone());
        let publisher = run_publisher(ctx.clone(), client, rx, stop_rx);
        handle.spawn(async move {
            let _end = end;
            publisher.await;
        });
        Ok(Link { ctx, tx, _stop: stop })
    }

    /// Hands a message to the publisher task (never blocks). `Err(Lost)` past the bounds.
    pub fn publish(&self, topic: &str, payload: &[u8], binary: bool) -> Result<(), Lost> {
        let ctx = &self.ctx;
        let channel_len = ctx.cfg.prefix.len() + topic.len();
        let cost = channel_len + ENVELOPE_HEADER + payload.len();
        if !ctx.reserve(cost) {
            ctx.lost.fetch_add(1, Ordering::Relaxed);
            return Err(Lost);
        }
        let mut channel = String::with_capacity(channel_len);
        channel.push_str(&ctx.cfg.prefix);
        channel.push_str(topic);
        let kind = if binary { KIND_BINARY } else { KIND_TEXT };
        let item = Item { channel, envelope: envelope(kind, ctx.origin, payload), counted: true };
        if self.tx.send(item).is_err() {
            // The publisher task has ended (the runtime is shutting down).
            ctx.release(1, cost);
            ctx.lost.fetch_add(1, Ordering::Relaxed);
            return Err(Lost);
        }
        Ok(())
    }

    /// A snapshot of the link (takes the link's state lock briefly).
    pub fn status(&self) -> LinkStatus {
        let ctx = &self.ctx;
        let s = ctx.lock();
        LinkStatus {
            connected: s.reported,
            subscriber_connected: s.subscriber,
            publisher_connected: s.publisher,
            last_error: s.last_error.clone(),
            buffered_messages: ctx.buffered.load(Ordering::Acquire),
            buffered_bytes: ctx.buffered_bytes.load(Ordering::Acquire),
            lost: ctx.lost.load(Ordering::Relaxed),
            missed: ctx.missed.load(Ordering::Relaxed),
            malformed: ctx.malformed.load(Ordering::Relaxed),
        }
    }

    /// This link's origin id (in every envelope it publishes).
    pub fn origin(&self) -> u64 {
        self.ctx.origin
    }

    /// Stops the link without waiting: no callback starts after this returns. The
    /// subscriber's connection closes at once; the publisher sends what is buffered if it is
    /// connected (each pipeline within `response_timeout`), then closes. Dropping the link
    /// does the same.
    pub fn stop(self) {
        drop(self);
    }

    /// `stop`, then `done` once the publisher has sent what was buffered (or given up: not
    /// connected, or the runtime stopped); at once if the publisher has already ended.
    pub fn stop_then(self, done: Done) {
        let ctx = self.ctx.clone();
        drop(self);
        let done = {
            let mut end = ctx.publisher_end.lock().unwrap_or_else(|p| p.into_inner());
            if end.0 {
                Some(done)
            } else {
                end.1 = Some(done);
                None
            }
        };
        if let Some(done) = done {
            let _ = catch_unwind(AssertUnwindSafe(done));
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The fields go next: the channel closes (the publisher drains and ends) and the stop
        // watch fires (the subscriber ends).
        self.ctx.stopped.store(true, Ordering::Release);
    }
}

/// A message on its way to Redis. The sequence number is written into the envelope when
/// the publisher task takes it, so that it follows the channel's order.
struct Item {
    channel: String,
    envelope: Vec<u8>,
    /// Counted in the link's buffer bounds (a message sent again is not: it was released
    /// when Redis first answered for it).
    counted: bool,
}

impl Item {
    fn cost(&self) -> usize {
        self.channel.len() + self.envelope.len()
    }
}

fn envelope(kind: u8, origin: u64, payload: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(ENVELOPE_HEADER + payload.len());
    e.push(VERSION << 4 | kind);
    e.extend_from_slice(&origin.to_le_bytes());
    e.extend_from_slice(&0u64.to_le_bytes());
    e.extend_from_slice(payload);
    e
}

fn set_seq(envelope: &mut [u8], seq: u64) {
    if let Some(s) = envelope.get_mut(9..ENVELOPE_HEADER) {
        s.copy_from_slice(&seq.to_le_bytes());
    }
}

/// A received envelope.
#[derive(Debug, PartialEq, Eq)]
struct Envelope<'a> {
    kind: u8,
    origin: u64,
    seq: u64,
    payload: &'a [u8],
}

fn parse(bytes: &[u8]) -> Option<Envelope<'_>> {
    let (&first, rest) = bytes.split_first()?;
    let kind = first & 0x0f;
    if first >> 4 != VERSION || kind > KIND_PROBE {
        return None;
    }
    let (origin, rest) = rest.split_first_chunk::<8>()?;
    let (seq, payload) = rest.split_first_chunk::<8>()?;
    Some(Envelope { kind, origin: u64::from_le_bytes(*origin), seq: u64::from_le_bytes(*seq), payload })
}

/// The prefix as a literal in a Redis glob pattern.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `uptime_in_seconds` from `INFO server`.
fn uptime(info: &str) -> Option<u64> {
    info.lines().find_map(|l| l.strip_prefix("uptime_in_seconds:")).and_then(|v| v.trim().parse().ok())
}

/// Reconnection delays: doubling from `min` to `max`, each drawn in [d/2, d].
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(cfg: &LinkConfig) -> Self {
        let min = cfg.backoff_min.max(Duration::from_millis(1));
        Backoff { next: min, min, max: cfg.backoff_max.max(min) }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = d.saturating_mul(2).min(self.max);
        let half = d / 2;
        let jitter = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(rand::random_range(0..=jitter))
    }

    /// After a connection that was up since `up_at` failed: a connection that lived long
    /// starts over from `min`; one that failed soon after connecting keeps backing off.
    fn after(&mut self, up_at: Instant) {
        if up_at.elapsed() >= self.max {
            self.reset();
        }
    }
}

/// A connection attempt's result, its failure as text (the error, or the timeout).
fn connected<T, E: std::fmt::Display>(attempt: Result<Result<T, E>, tokio::time::error::Elapsed>) -> Result<T, String> {
    match attempt {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connection timed out".to_owned()),
    }
}

/// Sleeps for `d`; true if the link stopped meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<()>) -> bool {
    tokio::select! {
        biased;
        _ = stop.changed() => true,
        _ = sleep(d) => false,
    }
}

#[derive(Clone, Copy)]
enum Role {
    Subscriber,
    Publisher,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Subscriber => "subscriber",
            Role::Publisher => "publisher",
        }
    }
}

#[derive(Default)]
struct State {
    subscriber: bool,
    publisher: bool,
    /// The last event was `Connected`.
    reported: bool,
    last_error: Option<String>,
}

/// What the link's handle and its two tasks share.
struct Ctx {
    cfg: LinkConfig,
    pattern: String,
    /// The probe's envelope.
    probe: Vec<u8>,
    origin: u64,
    deliver: Deliver,
    on_event: OnEvent,
    stopped: AtomicBool,
    buffered: AtomicUsize,
    buffered_bytes: AtomicUsize,
    lost: AtomicU64,
    missed: AtomicU64,
    malformed: AtomicU64,
    state: Mutex<State>,
    /// Whether the publisher task has ended, and what to call when it does (`stop_then`).
    publisher_end: Mutex<(bool, Option<Done>)>,
}

/// Called once the publisher has sent what it could after `stop_then`.
pub type Done = Box<dyn FnOnce() + Send>;

/// Owned by the publisher task: its end (returning, or dropped with the runtime) runs the
/// `stop_then` callback, or marks the task ended for one that comes later.
struct PublisherEnd(Arc<Ctx>);

impl Drop for PublisherEnd {
    fn drop(&mut self) {
        let done = {
            let mut end = self.0.publisher_end.lock().unwrap_or_else(|p| p.into_inner());
            end.0 = true;
            end.1.take()
        };
        if let Some(done) = done {
            let _ = catch_unwind(AssertUnwindSafe(done));
        }
    }
}

impl Ctx {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a message of `cost` bytes into the buffer, if within the bounds.
    fn reserve(&self, cost: usize) -> bool {
        let n = self.buffered.fetch_add(1, Ordering::AcqRel);
        let b = self.buffered_bytes.fetch_add(cost, Ordering::AcqRel);
        if n >= self.cfg.max_buffered_messages || b.saturating_add(cost) > self.cfg.max_buffered_bytes {
            self.release(1, cost);
            return false;
        }
        true
    }

    fn release(&self, n: usize, bytes: usize) {
        self.buffered.fetch_sub(n, Ordering::AcqRel);
        self.buffered_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn emit(&self, event: LinkEvent) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        // A panicking listener loses this event only.
        let _ = catch_unwind(AssertUnwindSafe(|| (self.on_event)(event)));
    }

    fn up(&self, role: Role) {
        let event = {
            let mut s = self.lock();
            match role {
                Role::Subscriber => s.subscriber = true,
                Role::Publisher => s.publisher = true,
            }
            if s.subscriber && s.publisher && !s.reported {
                s.reported = true;
                Some(LinkEvent::Connected)
            } else {
                None
            }
        };
        if let Some(e) = event {
            self.emit(e);
        }
    }

    fn down(&self, role: Role, error: &str) {
        let text = format!("{}: {error}", role.name());
        let event = {
            let mut s = self.lock();
            match role {
                Role::Subscriber => s.subscriber = false,
                Role::Publisher => s.publisher = false,
            }
            s.last_error = Some(text.clone());
            if s.reported {
                s.reported = false;
                LinkEvent::Disconnected(text)
            } else {
                LinkEvent::Error(text)
            }
        };
        self.emit(event);
    }

    /// One message from the subscriber connection.
    fn on_message(&self, origins: &mut Origins, msg: &Msg) {
        let Some(topic) = msg.get_channel_name().strip_prefix(self.cfg.prefix.as_str()) else {
            return;
        };
        let Some(env) = parse(msg.get_payload_bytes()) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if env.origin == self.origin || env.kind == KIND_PROBE {
            return;
        }
        match origins.see(env.origin, env.seq) {
            Seen::Again => return,
            Seen::After(missed) => {
                self.missed.fetch_add(missed, Ordering::Relaxed);
            }
            Seen::Next => {}
        }
        let binary = env.kind == KIND_BINARY;
        if !binary && std::str::from_utf8(env.payload).is_err() {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        // A panicking callback loses this message only.
        let _ = catch_unwind(AssertUnwindSafe(|| (self.deliver)(topic, env.payload, binary)));
    }
}

/// The last sequence number heard from each origin.
#[derive(Default)]
struct Origins {
    /// origin -> (last sequence number, when it was heard (`tick`)).
    last: HashMap<u64, (u64, u64)>,
    tick: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The next one (or the first heard from this origin).
    Next,
    /// After this many missed ones.
    After(u64),
    /// At or below the last one: a resend.
    Again,
}

impl Origins {
    fn see(&mut self, origin: u64, seq: u64) -> Seen {
        self.tick += 1;
        let tick = self.tick;
        if let Some((last, heard)) = self.last.get_mut(&origin) {
            if seq <= *last {
                return Seen::Again;
            }
            let missed = seq - *last - 1;
            *last = seq;
            *heard = tick;
            return if missed == 0 { Seen::Next } else { Seen::After(missed) };
        }
        if self.last.len() >= ORIGINS_MAX {
            let oldest = self.last.iter().min_by_key(|(_, &(_, heard))| heard).map(|(&o, _)| o);
            if let Some(o) = oldest {
                self.last.remove(&o);
            }
        }
        self.last.insert(origin, (seq, tick));
        Seen::Next
    }
}

async fn subscribe(client: &Client, pattern: &str) -> RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe(pattern).await?;
    Ok(pubsub)
}

/// The subscriber task: connect, PSUBSCRIBE, hand messages over, PING when idle; again
/// after a backoff delay when the connection fails. Runs until the link stops; each turn
/// of its loops waits on the connection, a timer or the stop signal.
async fn run_subscriber(ctx: Arc<Ctx>, client: Client, mut stop: watch::Receiver<()>) {
    let cfg = &ctx.cfg;
    let mut backoff = Backoff::new(cfg);
    let mut origins = Origins::default();
    loop {
        let attempt = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = timeout(cfg.connect_timeout, subscribe(&client, &ctx.pattern)) => r,
        };
        let pubsub = match connected(attempt) {
            Ok(p) => p,
            Err(why) => {
                ctx.down(Role::Subscriber, &why);
                if pause(backoff.delay(), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        ctx.up(Role::Subscriber);
        let up_at = Instant::now();
        let (mut sink, mut stream) = pubsub.split();
        let mut heard = Instant::now();
        let error = loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                m = stream.next() => {
                    let Some(msg) = m else { break "connection closed".to_owned() };
                    ctx.on_message(&mut origins, &msg);
                    // What else has arrived, without going back through the select.
                    let mut closed = false;
                    for _ in 1..DRAIN_MAX {
                        match stream.next().now_or_never() {
                            Some(Some(msg)) => ctx.on_message(&mut origins, &msg),
                            Some(None) => {
                                closed = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    if closed {
                        break "connection closed".to_owned();
                    }
                    heard = Instant::now();
                }
                _ = sleep_until(heard + cfg.ping_interval) => {
                    match timeout(cfg.response_timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => heard = Instant::now(),
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break "no answer to PING".to_owned(),
                    }
                }
            }
        };
        drop((sink, stream));
        ctx.down(Role::Subscriber, &error);
        backoff.after(up_at);
        if pause(backoff.delay(), &mut stop).await {
            return;
        }
    }
}

async fn connect_publisher(client: &Client, cfg: &LinkConfig) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(cfg.response_timeout));
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// The publisher task's state, kept across connections.
struct Publisher {
    ctx: Arc<Ctx>,
    /// Taken from the channel, sequence numbers set, not yet acknowledged by Redis.
    queue: VecDeque<Item>,
    /// The last messages Redis answered for, with when (at most `BATCH_MESSAGES`, about
    /// `BATCH_BYTES`), to send again if the connection fails (`requeue_answered`).
    answered: VecDeque<(Instant, Item)>,
    answered_bytes: usize,
    next_seq: u64,
    /// Subscribers that received the last `PUBLISH` (or idle probe) while connected: the
    /// count a rejoin waits for. The rejoin's own probes leave it alone, so that a connection
    /// lost while rejoining waits for the same count next time.
    receivers: Option<u64>,
    /// The link has stopped (the channel is closed).
    closing: bool,
}

impl Publisher {
    fn push(&mut self, mut item: Item) {
        set_seq(&mut item.envelope, self.next_seq);
        self.next_seq += 1;
        self.queue.push_back(item);
    }

    /// Moves what the channel holds into the queue (at most `TAKE_MAX`).
    fn take_ready(&mut self, rx: &mut mpsc::UnboundedReceiver<Item>) {
        for _ in 0..TAKE_MAX {
            match rx.try_recv() {
                Ok(item) => self.push(item),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closing = true;
                    return;
                }
            }
        }
    }

    /// Publishes a probe: the answer counts the subscribers of the group (this link's own
    /// included) that received it.
    async fn probe(&self, con: &mut MultiplexedConnection) -> RedisResult<u64> {
        redis::cmd("PUBLISH").arg(&self.ctx.cfg.prefix).arg(&self.ctx.probe[..]).query_async(con).await
    }

    /// Waits before sending on a new connection (see "Rejoining" in the module's docs).
    async fn rejoin(&self, con: &mut MultiplexedConnection) -> RedisResult<()> {
        let cfg = &self.ctx.cfg;
        let want = self.receivers;
        let wait = match want {
            // A count to wait for: at most `rejoin_wait` from now.
            Some(_) => cfg.rejoin_wait,
            // None yet (a first connection): until Redis has been up for `rejoin_wait`. A Redis
            // that refuses INFO (ACLs) counts as just started.
            None => {
                let info: RedisResult<String> = redis::cmd("INFO").arg("server").query_async(con).await;
                let up = info.ok().as_deref().and_then(uptime).unwrap_or(0);
                cfg.rejoin_wait.saturating_sub(Duration::from_secs(up))
            }
        };
        let deadline = Instant::now() + wait;
        // Two probes in a row, `PROBE_EVERY` apart, must reach the count: a subscription whose
        // client has gone (a peer's connection from before a freeze) may still be counted
        // until Redis reads the end of its socket, which takes it one turn of its event loop.
        let mut reached = 0;
        loop {
            if let Some(want) = want {
                if self.probe(con).await? >= want {
                    reached += 1;
                    if reached == 2 {
                        return Ok(());
                    }
                } else {
                    reached = 0;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            sleep(PROBE_EVERY.min(deadline - now)).await;
        }
    }

    /// Sends the first pipeline's worth of the queue; drops it from the queue once Redis
    /// has answered.
    async fn send_batch(&mut self, con: &mut MultiplexedConnection) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        let (mut n, mut bytes) = (0, 0);
        for item in &self.queue {
            if n == BATCH_MESSAGES || (n > 0 && bytes + item.cost() > BATCH_BYTES) {
                break;
            }
            pipe.cmd("PUBLISH").arg(&item.channel).arg(&item.envelope[..]);
            n += 1;
            bytes += item.cost();
        }
        let replies: Vec<u64> = pipe.query_async(con).await?;
        if let Some(&last) = replies.last() {
            self.receivers = Some(last);
        }
        let now = Instant::now();
        let (mut counted, mut released) = (0, 0);
        for mut item in self.queue.drain(..n) {
            if item.counted {
                counted += 1;
                released += item.cost();
                item.counted = false;
            }
            self.answered_bytes += item.cost();
            self.answered.push_back((now, item));
        }
        while self.answered.len() > BATCH_MESSAGES || self.answered_bytes > BATCH_BYTES {
            let Some((_, old)) = self.answered.pop_front() else { break };
            self.answered_bytes -= old.cost();
        }
        self.ctx.release(counted, released);
        Ok(())
    }

    /// After a failed connection: puts the messages Redis answered for within
    /// `REPLAY_WITHIN` back at the head of the queue, in order, to be sent again.
    fn requeue_answered(&mut self) {
        let since = Instant::now().checked_sub(REPLAY_WITHIN);
        while let Some((at, item)) = self.answered.pop_back() {
            self.answered_bytes -= item.cost();
            if since.is_none_or(|since| at >= since) {
                self.queue.push_front(item);
            }
        }
    }

    /// Sends while connected. `Ok` once the link has stopped and the queue is sent; `Err`
    /// when the connection fails (the unacknowledged messages stay queued).
    async fn serve(&mut self, con: &mut MultiplexedConnection, rx: &mut mpsc::UnboundedReceiver<Item>) -> RedisResult<()> {
        let ping_interval = self.ctx.cfg.ping_interval;
        loop {
            self.take_ready(rx);
            if !self.queue.is_empty() {
                self.send_batch(con).await?;
                continue;
            }
            if self.closing {
                return Ok(());
            }
            tokio::select! {
                biased;
                item = rx.recv() => match item {
                    Some(item) => self.push(item),
                    None => self.closing = true,
                },
                _ = sleep(ping_interval) => {
                    self.receivers = Some(self.probe(con).await?);
                }
            }
        }
    }
}

/// The publisher task: connect, rejoin, send the queue in order; again after a backoff delay
/// when the connection fails. Runs until the link stops; each turn of its loop waits on the
/// connection, a timer or the stop signal.
async fn run_publisher(
    ctx: Arc<Ctx>,
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Item>,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = Backoff::new(&ctx.cfg);
    let mut p = Publisher {
        ctx: ctx.clone(),
        queue: VecDeque::new(),
        answered: VecDeque::new(),
        answered_bytes: 0,
        next_seq: 1,
        receivers: None,
        closing: false,
    };
    loop {
        let attempt = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = timeout(ctx.cfg.connect_timeout, connect_publisher(&client, &ctx.cfg)) => r,
        };
        let mut con = match connected(attempt) {
            Ok(con) => con,
            Err(why) => {
                ctx.down(Role::Publisher, &why);
                if pause(backoff.delay(), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let rejoined = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = p.rejoin(&mut con) => r,
        };
        let up_at = Instant::now();
        let result = match rejoined {
            Ok(()) => {
                ctx.up(Role::Publisher);
                p.serve(&mut con, &mut rx).await
            }
            Err(e) => Err(e),
        };
        drop(con);
        match result {
            Ok(()) => return,
            Err(e) => ctx.down(Role::Publisher, &e.to_string()),
        }
        p.requeue_answered();
        if p.closing {
            // Stopped while the connection failed: what is left is dropped.
            return;
        }
        backoff.after(up_at);
        if pause(backoff.delay(), &mut stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc as std_mpsc;
    use std::time::Instant as StdInstant;

    // ---- without Redis

    #[test]
    fn envelope_round_trip() {
        let mut e = envelope(KIND_BINARY, 0x0102_0304_0506_0708, b"abc");
        set_seq(&mut e, 42);
        assert_eq!(e.len(), ENVELOPE_HEADER + 3);
        assert_eq!(
            parse(&e),
            Some(Envelope { kind: KIND_BINARY, origin: 0x0102_0304_0506_0708, seq: 42, payload: b"abc" })
        );
        assert_eq!(parse(&envelope(KIND_TEXT, 1, b"")).map(|e| e.payload.len()), Some(0));
        // Too short, another version, an unknown kind.
        assert_eq!(parse(&e[..ENVELOPE_HEADER - 1]), None);
        assert_eq!(parse(b""), None);
        let mut v2 = e.clone();
        v2[0] = 2 << 4;
        assert_eq!(parse(&v2), None);
        let mut k = e.clone();
        k[0] = VERSION << 4 | 7;
        assert_eq!(parse(&k), None);
    }

    #[test]
    fn origins_drop_resends_and_count_gaps() {
        let mut o = Origins::default();
        assert_eq!(o.see(1, 5), Seen::Next);
        assert_eq!(o.see(1, 6), Seen::Next);
        assert_eq!(o.see(1, 6), Seen::Again);
        assert_eq!(o.see(1, 3), Seen::Again);
        assert_eq!(o.see(1, 9), Seen::After(2));
        assert_eq!(o.see(2, 1), Seen::Next);
        // Bounded: the least recently heard origin goes first.
        for origin in 100..100 + ORIGINS_MAX as u64 {
            o.see(origin, 1);
        }
        assert_eq!(o.last.len(), ORIGINS_MAX);
        assert!(!o.last.contains_key(&1) && !o.last.contains_key(&2));
    }

    #[test]
    fn glob_prefix_and_uptime() {
        assert_eq!(escape_glob("app:*[x]?\\"), "app:\\*\\[x\\]\\?\\\\");
        assert_eq!(uptime("# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:12\r\nuptime_in_days:0\r\n"), Some(12));
        assert_eq!(uptime("# Server\r\n"), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let mut cfg = LinkConfig::new("redis://127.0.0.1");
        cfg.backoff_min = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_secs(5);
        let mut b = Backoff::new(&cfg);
        let mut base = Duration::from_millis(100);
        for _ in 0..10 {
            let d = b.delay();
            assert!(d >= base / 2 && d <= base, "{d:?} for {base:?}");
            base = (base * 2).min(Duration::from_secs(5));
        }
        b.reset();
        assert!(b.delay() <= Duration::from_millis(100));
    }

    #[test]
    fn bad_url_fails_to_start() {
        let (deliver, _) = inbox();
        let (on_event, _) = events();
        assert!(Link::start(LinkConfig::new("http://nowhere"), deliver.clone(), on_event.clone()).is_err());
        // No TLS for Redis in this build.
        assert!(Link::start(LinkConfig::new("rediss://127.0.0.1:1"), deliver, on_event).is_err());
    }

    /// The byte bound, with no Redis at all (nothing listens on the port).
    #[test]
    fn byte_bound_without_redis() {
        let mut cfg = LinkConfig::new(format!("redis://127.0.0.1:{}", free_port()));
        cfg.prefix = "p:".into();
        cfg.max_buffered_bytes = 3 * (2 + 1 + ENVELOPE_HEADER + 100);
        let (deliver, _) = inbox();
        let (on_event, ev) = events();
        let link = Link::start(cfg, deliver, on_event).unwrap();
        for _ in 0..3 {
            link.publish("t", &[0; 100], true).unwrap();
        }
        assert_eq!(link.publish("t", &[0; 100], true), Err(Lost));
        // A smaller one still fits nowhere: the bound is exact.
        assert_eq!(link.publish("t", &[], true), Err(Lost));
        let s = link.status();
        assert_eq!((s.buffered_messages, s.buffered_bytes, s.lost), (3, 3 * (3 + ENVELOPE_HEADER + 100), 2));
        // It reports the failed attempts.
        match ev.recv_timeout(Duration::from_secs(10)) {
            Ok(LinkEvent::Error(text)) => assert!(text.starts_with("subscriber: ") || text.starts_with("publisher: "), "{text}"),
            other => panic!("{other:?}"),
        }
        assert!(!link.status().connected && link.status().last_error.is_some());
        link.stop();
    }

    // ---- with a real Redis

    type Got = (String, Vec<u8>, bool);

    fn inbox() -> (Deliver, std_mpsc::Receiver<Got>) {
        let (tx, rx) = std_mpsc::channel();
        let deliver: Deliver = Arc::new(move |topic: &str, payload: &[u8], binary: bool| {
            let _ = tx.send((topic.to_owned(), payload.to_vec(), binary));
        });
        (deliver, rx)
    }

    fn events() -> (OnEvent, std_mpsc::Receiver<LinkEvent>) {
        let (tx, rx) = std_mpsc::channel();
        let on_event: OnEvent = Arc::new(move |e| {
            let _ = tx.send(e);
        });
        (on_event, rx)
    }

    /// Waits for `Connected`, skipping other events.
    fn wait_connected(ev: &std_mpsc::Receiver<LinkEvent>, within: Duration) {
        let deadline = StdInstant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(StdInstant::now());
            match ev.recv_timeout(left) {
                Ok(LinkEvent::Connected) => return,
                Ok(_) => {}
                Err(e) => panic!("no Connected event within {within:?}: {e}"),
            }
        }
    }

    /// Waits until `cond` holds, polling (for states that have no event).
    fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = StdInstant::now() + within;
        while !cond() {
            assert!(StdInstant::now() < deadline, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Receives `n` messages (each within `within` of the previous one).
    fn take(rx: &std_mpsc::Receiver<Got>, n: usize, within: Duration) -> Vec<Got> {
        (0..n)
            .map(|i| rx.recv_timeout(within).unwrap_or_else(|e| panic!("message {} of {n}: {e}", i + 1)))
            .collect()
    }

    /// Nothing more arrives for a while.
    fn assert_quiet(rx: &std_mpsc::Receiver<Got>) {
        if let Ok(m) = rx.recv_timeout(Duration::from_millis(300)) {
            panic!("unexpected message {m:?}");
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn have_redis() -> bool {
        let ok = Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("redis-server is not on PATH: test skipped");
        }
        ok
    }

    /// A redis-server on a loopback port, without persistence, ended on drop.
    struct Server {
        port: u16,
        child: Option<Child>,
    }

    impl Server {
        fn start(port: u16) -> Server {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            let s = Server { port, child: Some(child) };
            wait_until("redis-server listening", Duration::from_secs(10), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            s
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        fn signal(&self, sig: libc::c_int) {
            if let Some(c) = &self.child {
                assert_eq!(unsafe { libc::kill(c.id() as i32, sig) }, 0);
            }
        }

        /// SIGTERM (Redis's shutdown), then waits for the process to end.
        fn stop(&mut self) {
            if let Some(mut c) = self.child.take() {
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let deadline = StdInstant::now() + Duration::from_secs(5);
                while c.try_wait().ok().flatten().is_none() && StdInstant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// Short delays, so that the tests stay within seconds.
    fn quick(url: String) -> LinkConfig {
        let mut cfg = LinkConfig::new(url);
        cfg.prefix = "test:".into();
        cfg.backoff_min = Duration::from_millis(20);
        cfg.backoff_max = Duration::from_millis(200);
        cfg.ping_interval = Duration::from_millis(200);
        cfg.rejoin_wait = Duration::from_secs(2);
        cfg
    }

    struct Peer {
        link: Link,
        got: std_mpsc::Receiver<Got>,
        ev: std_mpsc::Receiver<LinkEvent>,
    }

    fn peer(cfg: LinkConfig) -> Peer {
        let (deliver, got) = inbox();
        let (on_event, ev) = events();
        Peer { link: Link::start(cfg, deliver, on_event).unwrap(), got, ev }
    }

    /// Two links on `redis` with the `quick` settings, once both are connected.
    fn connected_pair(redis: &Server) -> (Peer, Peer) {
        let a = peer(quick(redis.url()));
        let b = peer(quick(redis.url()));
        wait_connected(&a.ev, Duration::from_secs(10));
        wait_connected(&b.ev, Duration::from_secs(10));
        (a, b)
    }

    fn text(i: usize) -> Vec<u8> {
        format!("m{i}").into_bytes()
    }

    fn assert_texts(got: &[Got], topic: &str, range: std::ops::RangeInclusive<usize>) {
        let want: Vec<Got> = range.map(|i| (topic.to_owned(), text(i), false)).collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
    }

    #[test]
    fn two_links_exchange_once_in_order_never_their_own() {
        if !have_redis() {
            return;
        }
        let redis = Server::start(free_port());
        let (a, b) = connected_pair(&redis);
        for i in 1..=1000 {
            a.link.publish("room", &text(i), false).unwrap();
        }
        for i in 0..10u8 {
            b.link.publish("bin/ä", &[i, 0xff], true).unwrap();
        }
        assert_texts(&take(&b.got, 1000, Duration::from_secs(10)), "room", 1..=1000);
        let from_b = take(&a.got, 10, Duration::from_secs(10));
        for (i, g) in from_b.iter().enumerate() {
            assert_eq!(g, &("bin/ä".to_owned(), vec![i as u8, 0xff], true));
        }
        assert_quiet(&a.got);
        assert_quiet(&b.got);
        // Another prefix is another group.
        let mut other = quick(redis.url());
        other.prefix = "other:".into();
        let c = peer(other);
        wait_connected(&c.ev, Duration::from_secs(10));
        a.link.publish("room", b"late", false).unwrap();
        assert_eq!(take(&b.got, 1, Duration::from_secs(10))[0].1, b"late");
        assert_quiet(&c.got);
        for l in [&a.link, &b.link] {
            let s = l.status();
            assert!(s.connected && s.last_error.is_none(), "{s:?}");
            assert_eq!((s.lost, s.missed, s.malformed, s.buffered_messages, s.buffered_bytes), (0, 0, 0, 0, 0));
        }
    }

    #[test]
    fn redis_restarted_mid_stream_loses_nothing() {
        if !have_redis() {
            return;
        }
        let mut redis = Server::start(free_port());
        let (a, b) = connected_pair(&redis);
        // Some in flight when Redis goes.
        for i in 1..=1000 {
            a.link.publish("t", &text(i), false).unwrap();
        }
        redis.stop();
        wait_until("A disconnected", Duration::from_secs(10), || !a.link.status().connected);
        for i in 1001..=2000 {
            a.link.publish("t", &text(i), false).unwrap();
        }
        assert!(a.link.status().buffered_messages >= 1000);
        let redis = Server::start(redis.port);
        for i in 2001..=3000 {
            a.link.publish("t", &text(i), false).unwrap();
        }
        assert_texts(&take(&b.got, 3000, Duration::from_secs(15)), "t", 1..=3000);
        assert_quiet(&b.got);
        assert_quiet(&a.got);
        // Disconnected, then (errors while Redis was away, then) Connected.
        match a.ev.recv_timeout(Duration::from_secs(1)) {
            Ok(LinkEvent::Disconnected(text)) => assert!(!text.is_empty()),
            other => panic!("{other:?}"),
        }
        wait_connected(&a.ev, Duration::from_secs(10));
        let s = a.link.status();
        assert_eq!((s.lost, s.buffered_messages), (0, 0), "{s:?}");
        assert_eq!(b.link.status().missed, 0);
        drop(redis);
    }

    /// Redis stopped (SIGSTOP) long enough for both links to give up their connections, then
    /// resumed: it then runs the pipeline it had received, and the publisher sends it again.
    #[test]
    fn redis_frozen_then_resumed_delivers_once_in_order() {
        if !have_redis() {
            return;
        }
        let redis = Server::start(free_port());
        let cfg = || {
            let mut cfg = quick(redis.url());
            cfg.connect_timeout = Duration::from_millis(300);
            cfg.response_timeout = Duration::from_millis(300);
            cfg
        };
        let a = peer(cfg());
        let b = peer(cfg());
        wait_connected(&a.ev, Duration::from_secs(10));
        wait_connected(&b.ev, Duration::from_secs(10));
        for i in 1..=500 {
            a.link.publish("t", &text(i), false).unwrap();
        }
        assert_texts(&take(&b.got, 500, Duration::from_secs(10)), "t", 1..=500);
        redis.signal(libc::SIGSTOP);
        for i in 501..=1000 {
            a.link.publish("t", &text(i), false).unwrap();
        }
        wait_until("A and B disconnected", Duration::from_secs(10), || {
            let (sa, sb) = (a.link.status(), b.link.status());
            !sa.publisher_connected && !sa.subscriber_connected && !sb.subscriber_connected
        });
        for i in 1001..=1500 {
            a.link.publish("t", &text(i), false).unwrap();
        }
        redis.signal(libc::SIGCONT);
        assert_texts(&take(&b.got, 1000, Duration::from_secs(15)), "t", 501..=1500);
        assert_quiet(&b.got);
        assert_quiet(&a.got);
        assert_eq!((a.link.status().lost, b.link.status().missed), (0, 0));
    }

    /// Sends an inline command over a new raw connection and returns the connection.
    fn raw(redis: &Server, command: &str) -> TcpStream {
        use std::io::Write;
        let mut s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        s
    }

    /// How many times `needle` went by on `s` (a raw subscriber) once it has gone by `want`
    /// times, or `within` has passed.
    fn count_seen(s: &mut TcpStream, needle: &[u8], want: usize, within: Duration) -> usize {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let deadline = StdInstant::now() + within;
        let mut buf = Vec::new();
        let mut chunk = [0; 4096];
        loop {
            let seen = buf.windows(needle.len()).filter(|w| *w == needle).count();
            if seen >= want || StdInstant::now() >= deadline {
                return seen;
            }
            if let Ok(n) = s.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// The publisher's connection killed just after Redis answered for a few messages: they
    /// go again on the next connection (a raw subscriber sees each twice), and the peer drops
    /// the copies it had.
    #[test]
    fn answered_messages_go_again_after_the_publishers_connection_fails() {
        if !have_redis() {
            return;
        }
        let redis = Server::start(free_port());
        let (a, b) = connected_pair(&redis);
        let mut watcher = raw(&redis, "PSUBSCRIBE test:*");
        assert_eq!(count_seen(&mut watcher, b"psubscribe", 1, Duration::from_secs(10)), 1, "the raw subscription");
        let again = |i: usize| format!("again{i}").into_bytes();
        for i in 1..=5 {
            a.link.publish("t", &again(i), false).unwrap();
        }
        assert_eq!(take(&b.got, 5, Duration::from_secs(10)).into_iter().map(|g| g.1).collect::<Vec<_>>(), (1..=5).map(again).collect::<Vec<_>>());
        wait_until("Redis answered for A's messages", Duration::from_secs(10), || a.link.status().buffered_messages == 0);
        // Both links' publisher connections (normal clients; the subscribers are pubsub ones).
        let mut kill = raw(&redis, "CLIENT KILL TYPE normal");
        assert_eq!(count_seen(&mut kill, b":2\r\n", 1, Duration::from_secs(10)), 1, "CLIENT KILL's answer");
        assert_eq!(count_seen(&mut watcher, &again(5), 2, Duration::from_secs(10)), 2);
        a.link.publish("t", &again(6), false).unwrap();
        assert_eq!(take(&b.got, 1, Duration::from_secs(10))[0].1, again(6));
        assert_quiet(&b.got);
        assert_quiet(&a.got);
        let (sa, sb) = (a.link.status(), b.link.status());
        assert_eq!((sa.lost, sa.buffered_messages, sb.missed), (0, 0, 0), "{sa:?} {sb:?}");
    }

    #[test]
    fn redis_down_at_start_joins_when_it_appears() {
        if !have_redis() {
            return;
        }
        let port = free_port();
        let url = format!("redis://127.0.0.1:{port}");
        let a = peer(quick(url.clone()));
        let b = peer(quick(url));
        match a.ev.recv_timeout(Duration::from_secs(10)) {
            Ok(LinkEvent::Error(text)) => assert!(text.contains(": "), "{text}"),
            other => panic!("{other:?}"),
        }
        let s = a.link.status();
        assert!(!s.connected && !s.publisher_connected && s.last_error.is_some(), "{s:?}");
        for i in 1..=100 {
            a.link.publish("t", &text(i), false).unwrap();
        }
        assert_eq!(a.link.status().buffered_messages, 100);
        let _redis = Server::start(port);
        wait_connected(&a.ev, Duration::from_secs(10));
        wait_connected(&b.ev, Duration::from_secs(10));
        assert_texts(&take(&b.got, 100, Duration::from_secs(10)), "t", 1..=100);
        assert_quiet(&b.got);
        assert_eq!(a.link.status().buffered_messages, 0);
    }

    #[test]
    fn past_the_bound_publish_reports_lost_and_the_rest_arrives() {
        if !have_redis() {
            return;
        }
        let mut redis = Server::start(free_port());
        let mut cfg = quick(redis.url());
        cfg.max_buffered_messages = 50;
        let a = peer(cfg);
        let b = peer(quick(redis.url()));
        wait_connected(&a.ev, Duration::from_secs(10));
        wait_connected(&b.ev, Duration::from_secs(10));
        a.link.publish("t", &text(0), false).unwrap();
        assert_texts(&take(&b.got, 1, Duration::from_secs(10)), "t", 0..=0);
        redis.stop();
        wait_until("A disconnected", Duration::from_secs(10), || !a.link.status().connected);
        for i in 1..=50 {
            a.link.publish("t", &text(i), false).unwrap();
        }
        assert_eq!(a.link.publish("t", &text(51), false), Err(Lost));
        assert_eq!(a.link.publish("t", &text(52), false), Err(Lost));
        assert_eq!(a.link.status().lost, 2);
        let _redis = Server::start(redis.port);
        assert_texts(&take(&b.got, 50, Duration::from_secs(15)), "t", 1..=50);
        // Room again once Redis has taken them.
        wait_until("A's buffer sent", Duration::from_secs(10), || a.link.status().buffered_messages == 0);
        a.link.publish("t", &text(53), false).unwrap();
        assert_texts(&take(&b.got, 1, Duration::from_secs(10)), "t", 53..=53);
        assert_quiet(&b.got);
    }

    #[test]
    fn panicking_callbacks_lose_only_that_call() {
        if !have_redis() {
            return;
        }
        let redis = Server::start(free_port());
        let mut cfg = quick(redis.url());
        cfg.rejoin_wait = Duration::ZERO;
        let a = peer(cfg.clone());
        let (tx, got) = std_mpsc::channel();
        let deliver: Deliver = Arc::new(move |_: &str, payload: &[u8], _: bool| {
            if payload == b"boom" {
                panic!("a listener's panic");
            }
            let _ = tx.send(payload.to_vec());
        });
        let (ev_tx, ev) = std_mpsc::channel();
        let on_event: OnEvent = Arc::new(move |e| {
            let _ = ev_tx.send(e.clone());
            panic!("an event listener's panic");
        });
        let b = Link::start(cfg, deliver, on_event).unwrap();
        wait_connected(&a.ev, Duration::from_secs(10));
        wait_connected(&ev, Duration::from_secs(10));
        for m in [&b"boom"[..], b"after"] {
            a.link.publish("t", m, true).unwrap();
        }
        assert_eq!(got.recv_timeout(Duration::from_secs(10)).unwrap(), b"after");
        assert!(b.status().connected);
    }

    #[test]
    fn stop_sends_what_is_buffered_then_ends() {
        if !have_redis() {
            return;
        }
        let redis = Server::start(free_port());
        let (a, b) = connected_pair(&redis);
        for i in 1..=500 {
            a.link.publish("t", &text(i), false).unwrap();
        }
        a.link.stop();
        assert_texts(&take(&b.got, 500, Duration::from_secs(10)), "t", 1..=500);
        // A's connections are gone: only B's two remain (and this test's check).
        wait_until("A's connections closed", Duration::from_secs(10), || clients(&redis) == 2);
        // No event once stopped (its connections' ends are not reported).
        assert_eq!(a.ev.try_iter().collect::<Vec<_>>(), vec![]);
        drop(b);
    }

    /// Connected clients other than the one asking (CLIENT LIST over a raw connection).
    fn clients(redis: &Server) -> usize {
        use std::io::Read;
        let mut s = raw(redis, "CLIENT LIST");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0; 4096];
        // A bulk string: "$len\r\n" then len bytes and "\r\n".
        loop {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                let len: usize = std::str::from_utf8(&buf[1..end]).unwrap().parse().unwrap();
                if buf.len() >= end + 2 + len + 2 {
                    let list = std::str::from_utf8(&buf[end + 2..end + 2 + len]).unwrap();
                    return list.lines().count() - 1;
                }
            }
        }
    }

    /// Publish -> deliver through a local Redis, one publisher and one receiver, 64-byte
    /// payloads: `cargo test --release --lib scaleout::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        if !have_redis() {
            return;
        }
        const N: usize = 100_000;
        let redis = Server::start(free_port());
        let mut cfg = quick(redis.url());
        cfg.max_buffered_messages = N;
        cfg.max_buffered_bytes = 64 << 20;
        let (on_event, ev) = events();
        let (done_tx, done) = std_mpsc::channel();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let deliver: Deliver = Arc::new(move |_: &str, p: &[u8], _: bool| {
            assert_eq!(p.len(), 64);
            if counter.fetch_add(1, Ordering::Relaxed) + 1 == N {
                let _ = done_tx.send(());
            }
        });
        let receiver = Link::start(cfg.clone(), deliver, on_event).unwrap();
        wait_connected(&ev, Duration::from_secs(10));
        let (on_event, ev2) = events();
        let (nothing, _) = inbox();
        let sender = Link::start(cfg, nothing, on_event).unwrap();
        wait_connected(&ev2, Duration::from_secs(10));
        let payload = [b'x'; 64];
        let start = StdInstant::now();
        for _ in 0..N {
            sender.publish("bench", &payload, false).unwrap();
        }
        let published = start.elapsed();
        done.recv_timeout(Duration::from_secs(60)).expect("all delivered");
        let all = start.elapsed();
        println!(
            "{N} messages of 64 B: publish calls {:.0}/s ({:.0} ns each); publish -> deliver {:.0} messages/s ({:?})",
            N as f64 / published.as_secs_f64(),
            published.as_nanos() as f64 / N as f64,
            N as f64 / all.as_secs_f64(),
            all
        );
        drop((sender, receiver));
    }
}
