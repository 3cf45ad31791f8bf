//! JS -> engine: applies a batch of commands (decoded by `engine::wire`) to the connections'
//! states. JS queues commands during a tick and hands them over in one call; each is framed
//! straight into its connection's outbox (the one copy out of JS memory), and each connection
//! whose task is needed is woken once per batch, not once per message.
//!
//! Frames of a plain TCP connection whose task is idle are written to its socket from this
//! (the JS) thread directly: a send then costs no thread wake-up, which is most of a round
//! trip's latency.

use std::sync::Arc;

use super::state::{mask_key, Shared, Writes};
use super::{registry, topics};
use super::wire::{flag, op, Command, Commands};
use crate::protocol::frame::{encode_frame, OP_PING, OP_PONG};

/// Payloads from this size are written to an idle socket straight from JS's memory
/// (`Shared::frame_through`) rather than copied into the queue first.
const WRITE_THROUGH_MIN: usize = 64 * 1024;

/// An unmasked frame encoded once for repeated sends of one payload (broadcast loops): the
/// frame, and the opcode and FIN it was made for.
#[derive(Default)]
struct FrameCache {
    frame: Vec<u8>,
    key: Option<(u8, bool)>,
}

/// Applies a batch of commands from JS. `external` holds the large payloads, in order.
/// Returns, for the PUBLISH commands that asked (`ACK`), in order, whether the link to Redis
/// refused them.
pub fn apply(cmds: &[u8], external: &[&[u8]]) -> Vec<bool> {
    let mut writes = Writes::default();
    // JS's RELEASEs, applied after the batch (they are the last commands for their ids).
    let mut released: Vec<u32> = Vec::new();
    let mut cache = FrameCache::default();
    // The hub and topic named by the last TOPIC command.
    let mut topic: Option<(Arc<topics::Hub>, &[u8])> = None;
    let mut lost: Vec<bool> = Vec::new();
    let mut reg = registry::lock();
    let mut last: Option<(u32, &Arc<Shared>)> = None;
    for c in Commands::new(cmds, external) {
        if !c.has(flag::REPEAT) {
            cache.key = None;
        }
        match c.op {
            op::BRIDGE_IN | op::BRIDGE_EOF => {
                if let Some(inbox) = super::bridge::lookup(c.id) {
                    if let Some(w) = inbox.push(c.payload, c.op == op::BRIDGE_EOF) {
                        writes.wake(w);
                    }
                }
                continue;
            }
            op::RELEASE => {
                released.push(c.id);
                continue;
            }
            op::TOPIC => {
                topic = topics::hub(c.id).map(|h| (h, c.payload));
                continue;
            }
            op::PUBLISH => {
                let Some((hub, name)) = topic.as_ref() else { continue };
                let msg = topics::Message { binary: c.has(flag::BINARY), compress: c.has(flag::COMPRESS), data: c.payload };
                let p = hub.publish(name, &msg, c.id, &mut writes);
                if c.has(flag::ACK) {
                    lost.push(p.lost);
                }
                continue;
            }
            _ => {}
        }
        let shared = match last {
            Some((lid, s)) if lid == c.id => s,
            _ => match reg.get(c.id) {
                Some(s) => {
                    last = Some((c.id, s));
                    s
                }
                None => continue,
            },
        };
        match c.op {
            op::SUBSCRIBE | op::UNSUBSCRIBE => {
                if let Some((hub, name)) = topic.as_ref() {
                    if c.op == op::UNSUBSCRIBE {
                        hub.unsubscribe(c.id, name);
                    } else if shared.lock().can_send() {
                        hub.subscribe(c.id, shared, name);
                    }
                }
                continue;
            }
            _ => {}
        }
        let mut out = shared.lock();
        apply_one(shared, &mut out, &c, &mut cache);
        if matches!(c.op, op::SEND | op::PING | op::PONG) && !c.has(flag::ACK) {
            writes.queued(shared, &mut out);
        } else if let Some(w) = out.take_waker() {
            writes.wake(w);
        }
    }
    for &id in &released {
        reg.release(id);
    }
    drop(reg);
    for id in released {
        topics::leave_all(id);
    }
    writes.finish();
    lost
}

/// One command on its connection's outbox (locked).
fn apply_one(shared: &Shared, out: &mut super::state::Outbox, c: &Command<'_>, cache: &mut FrameCache) {
    let masked = if c.has(flag::MASK_SET) { c.has(flag::MASK) } else { shared.is_client };
    let mask = masked.then(mask_key);
    match c.op {
        op::SEND | op::PING | op::PONG if out.can_send() => {
            let ack = c.has(flag::ACK);
            let plain = match c.op {
                op::PING => Some((OP_PING, true)),
                op::PONG => Some((OP_PONG, true)),
                _ => {
                    let fin = c.has(flag::FIN);
                    let (opcode, compressed, first) = out.data_frame(c.has(flag::BINARY), fin, c.has(flag::COMPRESS), c.payload.len());
                    if compressed {
                        out.queue_compression(opcode, first, fin, c.payload, mask, ack);
                        None
                    } else {
                        Some((opcode, fin))
                    }
                }
            };
            if let Some((opcode, fin)) = plain {
                let cached = c.has(flag::REPEAT) && mask.is_none() && c.op == op::SEND && {
                    if cache.key != Some((opcode, fin)) {
                        cache.frame.clear();
                        encode_frame(&mut cache.frame, opcode, fin, false, c.payload, None);
                        cache.key = Some((opcode, fin));
                    }
                    out.encoded(&cache.frame)
                };
                let through = !cached && !ack && mask.is_none() && c.payload.len() >= WRITE_THROUGH_MIN && shared.frame_through(out, opcode, fin, c.payload);
                let queued = cached || through || out.frame(opcode, fin, c.payload, mask);
                if ack {
                    out.ack_last(queued);
                }
            }
            if c.op == op::SEND && c.has(flag::FIN) {
                // Frames published to it while its message was half sent follow it.
                topics::fragmented_message_sent(c.id, out);
            }
        }
        op::CLOSE if out.can_send() => {
            let code = (c.payload.len() >= 2).then(|| u16::from_be_bytes([c.payload[0], c.payload[1]]));
            let reason = c.payload.get(2..).unwrap_or(&[]);
            out.close(code, reason, mask);
        }
        op::TERMINATE => out.terminate(),
        op::WANT_DRAIN if out.can_send() => out.want_drain(),
        op::PAUSE => out.pause(true),
        op::RESUME => out.pause(false),
        op::RAW_WRITE if !out.is_open() => out.raw(c.payload),
        op::RAW_END if !out.is_open() => out.raw_end(c.payload),
        _ => {}
    }
}
