//! Pub/sub: the topic tables and the fan-out of a publish.
//!
//! A hub is one WebSocketServer's set of topics (hub 0 holds the topics of client sockets,
//! which have no server). A topic maps to its subscribers, each an open connection's shared
//! state. A publish frames the message once and appends the frame to every subscriber's
//! outbox (a copy into each connection's buffer, no JS and no allocation per recipient);
//! the sockets are written after the batch (`Writes`), one write per connection however many
//! publishes reached it.
//!
//! With permessage-deflate, a subscriber whose side has no context takeover gets the same
//! compressed frame as every other subscriber that compresses alike (same window bits and
//! level): it is compressed once per publish (uWebSockets.js's shared compressor). One with
//! context takeover gets the message compressed with its own context, by its task. One
//! without permessage-deflate, or mid-way through a fragmented message of its own, gets the
//! uncompressed frame (or the frame waits, see `Outbox::publish_mode`).
//!
//! A subscriber past `maxBackpressure` (its task flagged it, see `Shared::pressure`) misses
//! publishes until it drains; with `closeOnBackpressureLimit` its task ends it. Without a
//! limit, as for `send()` in ws, its buffered output grows.
//!
//! A hub may have a link to Redis (`engine::scaleout`): its publishes also go there, and the
//! other processes' messages fan out here, on the runtime's thread, without JS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use super::events::{self, Sink};
use super::runtime;
use super::scaleout::{Deliver, Link, LinkConfig, LinkEvent, LinkStatus, OnEvent, StartError};
use super::state::{mask_key, Outbox, PublishMode, Sending, Shared, Writes};
use crate::protocol::frame::{encode_frame, OP_BINARY, OP_TEXT};
use crate::protocol::zlib::Deflater;

/// A message to publish.
pub struct Message<'a> {
    pub binary: bool,
    /// ws's `compress` option: compressed for subscribers that agreed permessage-deflate.
    pub compress: bool,
    pub data: &'a [u8],
}

/// What a publish did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Local subscribers that got the message.
    pub delivered: usize,
    /// The link to Redis refused it (its buffer is full): other processes will not get it.
    pub lost: bool,
}

/// One topic's subscribers: a list to iterate, and where each connection is in it.
#[derive(Default)]
struct Topic {
    subs: Vec<(u32, Arc<Shared>)>,
    at: HashMap<u32, usize>,
}

impl Topic {
    fn insert(&mut self, id: u32, shared: &Arc<Shared>) -> bool {
        if self.at.contains_key(&id) {
            return false;
        }
        self.at.insert(id, self.subs.len());
        self.subs.push((id, shared.clone()));
        true
    }

    fn remove(&mut self, id: u32) -> bool {
        let Some(i) = self.at.remove(&id) else { return false };
        self.subs.swap_remove(i);
        if let Some((moved, _)) = self.subs.get(i) {
            self.at.insert(*moved, i);
        }
        true
    }
}

/// A hub's topics, and each subscribed connection's topics in subscription order.
#[derive(Default)]
struct Table {
    topics: HashMap<Box<[u8]>, Topic>,
    by_conn: HashMap<u32, Vec<Box<[u8]>>>,
}

/// One WebSocketServer's topics (or client sockets', hub 0), and its link to Redis.
pub struct Hub {
    id: u32,
    table: Mutex<Table>,
    /// The writes of the other processes' messages fanned out since the last flush: the link
    /// delivers the messages of one read one by one, and each socket is written once for
    /// them all (by a task spawned at the first).
    remote: Mutex<Option<Writes>>,
    link: Mutex<Option<Link>>,
    /// Where the link's events go (the Node environment of the server).
    sink: Option<Arc<Sink>>,
}

/// All hubs by id, and the total count of subscriptions (connections leaving their topics
/// skip every lookup while it is 0).
struct Hubs {
    hubs: Mutex<HashMap<u32, Arc<Hub>>>,
    next: AtomicU32,
    subscriptions: AtomicUsize,
}

fn hubs() -> &'static Hubs {
    static HUBS: OnceLock<Hubs> = OnceLock::new();
    HUBS.get_or_init(|| Hubs { hubs: Mutex::new(HashMap::new()), next: AtomicU32::new(1), subscriptions: AtomicUsize::new(0) })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hub `id`; hub 0 (client sockets') is made on first use.
pub fn hub(id: u32) -> Option<Arc<Hub>> {
    let mut all = lock(&hubs().hubs);
    if id == 0 {
        return Some(all.entry(0).or_insert_with(|| Arc::new(Hub::new(0, None))).clone());
    }
    all.get(&id).cloned()
}

/// A new hub for a server whose events go to `sink`.
pub fn open(sink: Arc<Sink>) -> u32 {
    let h = hubs();
    let id = h.next.fetch_add(1, Ordering::Relaxed);
    lock(&h.hubs).insert(id, Arc::new(Hub::new(id, Some(sink))));
    id
}

/// The server closed: its topics are dropped and its link stops (sending what it buffered
/// if it is connected).
pub fn close(id: u32) {
    if id == 0 {
        return;
    }
    let Some(hub) = lock(&hubs().hubs).remove(&id) else { return };
    let table = std::mem::take(&mut *lock(&hub.table));
    let n: usize = table.topics.values().map(|t| t.subs.len()).sum();
    hubs().subscriptions.fetch_sub(n, Ordering::Relaxed);
    let link = lock(&hub.link).take();
    if let Some(link) = link {
        // JS keeps the process alive until the link has sent what was published before.
        let sink = hub.sink.clone();
        link.stop_then(Box::new(move || {
            if let Some(sink) = sink {
                let _entered = events::enter(&sink);
                events::with_batch(|b| b.redis(id, REDIS_STOPPED, ""));
            }
        }));
    }
}

/// Published frames waiting for the end of their subscriber's fragmented message, by
/// connection (rare: only `send(data, { fin: false })` sends fragments), and how many
/// connections have some.
static HELD: Mutex<Option<HashMap<u32, Vec<u8>>>> = Mutex::new(None);
static HELD_COUNT: AtomicUsize = AtomicUsize::new(0);

fn hold(id: u32, frame: &[u8]) {
    let mut held = lock(&HELD);
    let v = held.get_or_insert_with(HashMap::new).entry(id).or_default();
    if v.is_empty() {
        HELD_COUNT.fetch_add(1, Ordering::Relaxed);
    }
    v.extend_from_slice(frame);
}

fn take_held(id: u32) -> Option<Vec<u8>> {
    if HELD_COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let v = lock(&HELD).as_mut()?.remove(&id)?;
    HELD_COUNT.fetch_sub(1, Ordering::Relaxed);
    Some(v)
}

/// Connection `id` (outbox `out`) sent the last fragment of a message: the frames published
/// to it meanwhile follow.
pub fn fragmented_message_sent(id: u32, out: &mut Outbox) {
    if let Some(frames) = take_held(id) {
        if !out.encoded(&frames) {
            out.raw_frames(frames);
        }
    }
}

/// Connection `id` is gone (JS released it): it leaves every topic of every hub.
pub fn leave_all(id: u32) {
    take_held(id);
    let h = hubs();
    if h.subscriptions.load(Ordering::Relaxed) == 0 {
        return;
    }
    let all: Vec<Arc<Hub>> = lock(&h.hubs).values().cloned().collect();
    for hub in all {
        let mut t = lock(&hub.table);
        let Some(names) = t.by_conn.remove(&id) else { continue };
        for name in names {
            if let Some(topic) = t.topics.get_mut(&name) {
                if topic.remove(id) {
                    h.subscriptions.fetch_sub(1, Ordering::Relaxed);
                }
                if topic.subs.is_empty() {
                    t.topics.remove(&name);
                }
            }
        }
    }
}

/// Topics and subscriptions over all hubs (for tests and diagnostics).
pub fn stats() -> (usize, usize) {
    let all: Vec<Arc<Hub>> = lock(&hubs().hubs).values().cloned().collect();
    all.iter().fold((0, 0), |(t, s), hub| {
        let table = lock(&hub.table);
        (t + table.topics.len(), s + table.topics.values().map(|x| x.subs.len()).sum::<usize>())
    })
}

impl Hub {
    fn new(id: u32, sink: Option<Arc<Sink>>) -> Self {
        Hub { id, table: Mutex::new(Table::default()), remote: Mutex::new(None), link: Mutex::new(None), sink }
    }

    /// Subscribes connection `id`; false if it already was.
    pub fn subscribe(&self, id: u32, shared: &Arc<Shared>, topic: &[u8]) -> bool {
        let mut t = lock(&self.table);
        if !t.topics.entry(topic.into()).or_default().insert(id, shared) {
            return false;
        }
        t.by_conn.entry(id).or_default().push(topic.into());
        hubs().subscriptions.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Unsubscribes connection `id`; false if it was not subscribed.
    pub fn unsubscribe(&self, id: u32, topic: &[u8]) -> bool {
        let mut t = lock(&self.table);
        let Some(sub) = t.topics.get_mut(topic) else { return false };
        if !sub.remove(id) {
            return false;
        }
        if sub.subs.is_empty() {
            t.topics.remove(topic);
        }
        if let Some(names) = t.by_conn.get_mut(&id) {
            names.retain(|n| &n[..] != topic);
            if names.is_empty() {
                t.by_conn.remove(&id);
            }
        }
        hubs().subscriptions.fetch_sub(1, Ordering::Relaxed);
        true
    }

    pub fn is_subscribed(&self, id: u32, topic: &[u8]) -> bool {
        lock(&self.table).topics.get(topic).is_some_and(|t| t.at.contains_key(&id))
    }

    /// Connection `id`'s topics, in subscription order.
    pub fn topics_of(&self, id: u32) -> Vec<Vec<u8>> {
        lock(&self.table).by_conn.get(&id).map(|v| v.iter().map(|n| n.to_vec()).collect()).unwrap_or_default()
    }

    pub fn subscriber_count(&self, topic: &[u8]) -> usize {
        lock(&self.table).topics.get(topic).map_or(0, |t| t.subs.len())
    }

    /// Publishes `msg` to the local subscribers of `topic` but `exclude` (0: none), then to
    /// the other processes through the link, if any. Their sockets are written by `writes`.
    pub fn publish(&self, topic: &[u8], msg: &Message<'_>, exclude: u32, writes: &mut Writes) -> Published {
        let delivered = self.fan_out(topic, msg, exclude, writes);
        let link = lock(&self.link);
        let lost = link.as_ref().is_some_and(|l| l.publish(&String::from_utf8_lossy(topic), msg.data, msg.binary).is_err());
        Published { delivered, lost }
    }

    /// Appends the message to every subscriber's outbox; returns how many got it.
    fn fan_out(&self, topic: &[u8], msg: &Message<'_>, exclude: u32, writes: &mut Writes) -> usize {
        let t = lock(&self.table);
        let Some(sub) = t.topics.get(topic) else { return 0 };
        let opcode = if msg.binary { OP_BINARY } else { OP_TEXT };
        let mut frames = Frames { opcode, data: msg.data, plain: None, shared: Vec::new() };
        let mut delivered = 0;
        for (id, shared) in &sub.subs {
            if *id == exclude {
                continue;
            }
            let mut out = shared.lock();
            if !out.can_send() || out.over_limit() {
                continue;
            }
            delivered += 1;
            if out.fragmenting() {
                // Its own message is half sent: the frame follows that message's last fragment.
                let mask = shared.is_client.then(mask_key);
                let mut f = Vec::with_capacity(msg.data.len() + 14);
                encode_frame(&mut f, opcode, true, false, msg.data, mask);
                hold(*id, &f);
                continue;
            }
            if shared.is_client {
                // A client masks every frame with a key of its own: no frame to share.
                let (op, compressed, _) = out.data_frame(msg.binary, true, msg.compress, msg.data.len());
                if compressed {
                    out.queue_compression(op, true, true, msg.data, Some(mask_key()), false);
                } else {
                    out.frame(op, true, msg.data, Some(mask_key()));
                }
            } else {
                match out.publish_mode(msg.compress, msg.data.len()) {
                    PublishMode::Plain => {
                        if !out.encoded(frames.plain()) {
                            out.frame(opcode, true, msg.data, None);
                        }
                    }
                    PublishMode::Shared(sending) => {
                        if !out.encoded(frames.compressed(sending)) {
                            let (op, _, _) = out.data_frame(msg.binary, true, true, msg.data.len());
                            out.queue_compression(op, true, true, msg.data, None, false);
                        }
                    }
                    PublishMode::Own => {
                        let (op, _, _) = out.data_frame(msg.binary, true, true, msg.data.len());
                        out.queue_compression(op, true, true, msg.data, None, false);
                    }
                }
            }
            writes.queued(shared, &mut out);
        }
        delivered
    }

    /// Connects the hub to Redis; its events go to JS as REDIS records.
    pub fn link(self: &Arc<Self>, config: LinkConfig) -> Result<(), StartError> {
        let weak: Weak<Hub> = Arc::downgrade(self);
        let deliver: Deliver = Arc::new(move |topic: &str, data: &[u8], binary: bool| {
            if let Some(hub) = weak.upgrade() {
                hub.deliver_remote(&weak, topic.as_bytes(), &Message { binary, compress: true, data });
            }
        });
        let (id, sink) = (self.id, self.sink.clone());
        let on_event: OnEvent = Arc::new(move |e: LinkEvent| {
            let Some(sink) = sink.as_ref() else { return };
            let _entered = events::enter(sink);
            events::with_batch(|b| match e {
                LinkEvent::Connected => b.redis(id, REDIS_CONNECT, ""),
                LinkEvent::Disconnected(why) => b.redis(id, REDIS_DISCONNECT, &why),
                LinkEvent::Error(why) => b.redis(id, REDIS_ERROR, &why),
            });
        });
        let link = Link::start(config, deliver, on_event)?;
        *lock(&self.link) = Some(link);
        Ok(())
    }

    /// Fans out a message from another process. Its sockets are written by a task spawned
    /// for the first message since the last such write, which runs once the link's task has
    /// delivered what it read (or at once, without a runtime).
    fn deliver_remote(&self, weak: &Weak<Hub>, topic: &[u8], msg: &Message<'_>) {
        // Lock order: the pending writes, then the table (in `fan_out`), then outboxes.
        let mut pending = lock(&self.remote);
        let first = pending.is_none();
        self.fan_out(topic, msg, 0, pending.get_or_insert_with(Writes::default));
        if !first {
            return;
        }
        let Some(handle) = runtime::current() else {
            drop(pending.take());
            return;
        };
        drop(pending);
        let weak = weak.clone();
        handle.spawn(async move {
            if let Some(hub) = weak.upgrade() {
                let writes = lock(&hub.remote).take();
                drop(writes);
            }
        });
    }

    /// The link's state; None without a link.
    pub fn link_status(&self) -> Option<LinkStatus> {
        lock(&self.link).as_ref().map(|l| l.status())
    }
}

/// REDIS record kinds (see `engine::wire`).
pub use super::wire::redis_event::{CONNECT as REDIS_CONNECT, DISCONNECT as REDIS_DISCONNECT, ERROR as REDIS_ERROR, STOPPED as REDIS_STOPPED};

/// A publish's frames, each made when a first subscriber needs it: uncompressed, and
/// compressed once per way of compressing (window bits and level).
struct Frames<'a> {
    opcode: u8,
    data: &'a [u8],
    plain: Option<Vec<u8>>,
    shared: Vec<(Sending, Vec<u8>)>,
}

impl Frames<'_> {
    fn plain(&mut self) -> &[u8] {
        let (opcode, data) = (self.opcode, self.data);
        self.plain.get_or_insert_with(|| {
            let mut f = Vec::with_capacity(data.len() + 10);
            encode_frame(&mut f, opcode, true, false, data, None);
            f
        })
    }

    fn compressed(&mut self, sending: Sending) -> &[u8] {
        let i = match self.shared.iter().position(|(s, _)| *s == sending) {
            Some(i) => i,
            None => {
                let mut payload = Vec::new();
                Deflater::new(&sending.params, sending.is_server, sending.tuning).compress(self.data, true, &mut payload);
                let mut f = Vec::with_capacity(payload.len() + 10);
                encode_frame(&mut f, self.opcode, true, true, &payload, None);
                self.shared.push((sending, f));
                self.shared.len() - 1
            }
        };
        &self.shared[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Arc<Shared> {
        let s = Shared::new(false, 0);
        s.lock().open();
        s
    }

    #[test]
    fn subscribe_unsubscribe_and_leave() {
        let hub = Hub::new(99, None);
        let (a, b) = (conn(), conn());
        assert!(hub.subscribe(1, &a, b"t"));
        assert!(!hub.subscribe(1, &a, b"t"));
        assert!(hub.subscribe(2, &b, b"t"));
        assert!(hub.subscribe(1, &a, b"u"));
        assert_eq!(hub.subscriber_count(b"t"), 2);
        assert_eq!(hub.topics_of(1), vec![b"t".to_vec(), b"u".to_vec()]);
        assert!(hub.unsubscribe(1, b"t"));
        assert!(!hub.unsubscribe(1, b"t"));
        assert!(!hub.is_subscribed(1, b"t"));
        assert!(hub.is_subscribed(2, b"t"));
        assert_eq!(hub.topics_of(1), vec![b"u".to_vec()]);
        // The last subscriber of a topic leaving drops the topic.
        assert!(hub.unsubscribe(2, b"t"));
        assert!(!lock(&hub.table).topics.contains_key(&b"t"[..]));
    }

    #[test]
    fn publish_frames_once_and_skips_the_excluded_and_the_closed() {
        let hub = Hub::new(98, None);
        let subs: Vec<Arc<Shared>> = (0..4).map(|_| conn()).collect();
        for (i, s) in subs.iter().enumerate() {
            hub.subscribe(i as u32 + 1, s, b"news");
        }
        subs[3].lock().close(None, b"", None);
        let mut writes = Writes::default();
        let p = hub.publish(b"news", &Message { binary: false, compress: false, data: b"hello" }, 2, &mut writes);
        assert_eq!(p, Published { delivered: 2, lost: false });
        for (i, s) in subs.iter().enumerate() {
            let queued = s.buffered();
            match i {
                0 | 2 => assert_eq!(queued, 7, "subscriber {i}: one text frame of 5 bytes"),
                1 => assert_eq!(queued, 0, "the excluded publisher"),
                _ => {}
            }
        }
        assert_eq!(hub.publish(b"nobody", &Message { binary: true, compress: false, data: b"x" }, 0, &mut writes).delivered, 0);
    }
}
