//! permessage-deflate on a connection: its zlib contexts, the compression jobs JS's sends
//! queue (run on the connection's task, never on Node's thread), and the parking of contexts
//! that go unused.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::engine::config::ConnConfig;
use crate::engine::state::{JobKind, Outbox, Sending, Shared};
use crate::protocol::deflate::DeflateParams;
use crate::protocol::zlib::{Deflater, Inflater};
use crate::protocol::frame::encode_frame;

/// With context takeover, a connection whose zlib contexts went unused this long gives them
/// up and keeps only their windows (see `Deflater::park`); the next compressed message rebuilds
/// them (hundreds of KiB held per idle connection otherwise, against a window at most). When a
/// connection uses its contexts this long or more after they were made, its deflate context
/// gives back the pages its data has not reached yet (`Deflater::settle`), once.
const ZLIB_PARK_AFTER: Duration = Duration::from_secs(1);

/// Lets JS's sends be compressed once permessage-deflate `p` was agreed (the outbox decides
/// per message, as ws's sender does: with no context takeover on our side, under ws's
/// `threshold` a message goes uncompressed).
pub(super) fn enable(out: &mut Outbox, p: &DeflateParams, cfg: &ConnConfig, is_client: bool) {
    let Some(opts) = cfg.deflate.as_ref() else { return };
    let our_no_takeover = if is_client { p.client_no_context_takeover } else { p.server_no_context_takeover };
    let sending = Sending { params: *p, is_server: !is_client, tuning: opts.tuning };
    out.enable_compression(our_no_takeover.then_some(opts.threshold), sending);
}

/// permessage-deflate: both sides' contexts (the receiver inflates through `inflater`), and
/// the timer that parks them.
pub(super) struct Zlib {
    deflater: Deflater,
    pub(super) inflater: Inflater,
    park: Option<Pin<Box<Sleep>>>,
    /// When contexts are held: from when a use settles the deflate context (once).
    settle_at: Option<Instant>,
}

impl Zlib {
    /// The contexts of an open connection that agreed `p`.
    pub(super) fn new(p: &DeflateParams, cfg: &ConnConfig, is_client: bool) -> Box<Zlib> {
        let tuning = cfg.deflate.as_ref().map(|o| o.tuning).unwrap_or_default();
        let is_server = !is_client;
        Box::new(Zlib { deflater: Deflater::new(p, is_server, tuning), inflater: Inflater::new(p, is_server), park: None, settle_at: None })
    }

    /// No timer is pending: the contexts were given up (or never held), nothing waits.
    pub(super) fn at_rest(&self) -> bool {
        self.park.is_none()
    }

    /// With context takeover, parks the contexts once unused for `ZLIB_PARK_AFTER`; the
    /// inflater stays while a message is half read (`in_message`). Contexts used again
    /// `ZLIB_PARK_AFTER` or more after they were made are settled.
    pub(super) fn park_if_unused(&mut self, cx: &mut Context<'_>, in_message: bool) {
        if !self.deflater.holds_context() && !self.inflater.holds_context() {
            self.park = None;
            self.settle_at = None;
            return;
        }
        let used = self.deflater.take_used() | self.inflater.take_used();
        let Some(t) = self.park.as_mut() else {
            // The activity until now is what makes the timer start.
            let at = Instant::now() + ZLIB_PARK_AFTER;
            let mut t = Box::pin(tokio::time::sleep_until(at));
            let _ = t.as_mut().poll(cx);
            self.park = Some(t);
            self.settle_at = Some(at);
            return;
        };
        if used {
            let now = Instant::now();
            t.as_mut().reset(now + ZLIB_PARK_AFTER);
            if self.settle_at.is_some_and(|at| now >= at) {
                self.settle_at = None;
                self.deflater.settle();
            }
        }
        if t.as_mut().poll(cx).is_ready() {
            self.deflater.park();
            if !in_message {
                self.inflater.park();
            }
            self.park = None;
            self.settle_at = None;
        }
    }
}

/// Compresses the jobs queued on `shared`, off its lock, and appends the frames in order.
/// Without contexts (`zlib` None: the message was queued before the connection opened, or
/// compression was not agreed) the data goes out uncompressed.
pub(super) fn run_jobs(shared: &Shared, mut zlib: Option<&mut Zlib>) {
    let Some(jobs) = shared.lock().take_jobs() else { return };
    let mut bytes = Vec::new();
    let mut acks = Vec::new();
    let mut estimate = 0u64;
    let mut z = Vec::new();
    for job in jobs {
        match job.kind {
            JobKind::Compress { opcode, first, fin, data, mask } => {
                estimate += data.len() as u64;
                z.clear();
                let rsv1 = match zlib.as_deref_mut() {
                    Some(zl) => {
                        zl.deflater.compress(&data, fin, &mut z);
                        first
                    }
                    None => {
                        z.extend_from_slice(&data);
                        false
                    }
                };
                encode_frame(&mut bytes, opcode, fin, rsv1, &z, mask);
            }
            JobKind::Bytes(b) => {
                estimate += b.len() as u64;
                bytes.extend_from_slice(&b);
            }
        }
        if job.ack {
            acks.push(bytes.len());
        }
    }
    shared.lock().jobs_done(&bytes, &acks, estimate);
}
