//! A transport for sockets only Node holds (TLS from an `https` server, or any Duplex without a
//! file descriptor): Node keeps the I/O, the engine still does all the protocol work. Bytes
//! Node reads arrive as BRIDGE_IN commands; bytes the engine writes leave as BRIDGE_OUT events
//! in the same batches as every other event.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::events;

#[derive(Default)]
struct InboxState {
    chunks: VecDeque<Vec<u8>>,
    offset: usize,
    eof: bool,
    waker: Option<Waker>,
}

/// Bytes from Node waiting for the connection task.
#[derive(Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues bytes Node read (an empty slice with `eof` marks the end of the stream).
    pub fn push(&self, bytes: &[u8], eof: bool) -> Option<Waker> {
        let mut s = self.lock();
        if !bytes.is_empty() {
            s.chunks.push_back(bytes.to_vec());
        }
        s.eof |= eof;
        s.waker.take()
    }
}

type Inboxes = Mutex<HashMap<u32, Arc<Inbox>>>;

fn inboxes() -> MutexGuard<'static, HashMap<u32, Arc<Inbox>>> {
    static I: OnceLock<Inboxes> = OnceLock::new();
    I.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|p| p.into_inner())
}

pub fn lookup(id: u32) -> Option<Arc<Inbox>> {
    inboxes().get(&id).cloned()
}

/// The transport half the connection task owns.
pub struct Bridge {
    id: u32,
    inbox: Arc<Inbox>,
}

impl Bridge {
    pub fn new(id: u32) -> Self {
        let inbox = Arc::new(Inbox::default());
        inboxes().insert(id, inbox.clone());
        Bridge { id, inbox }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        inboxes().remove(&self.id);
    }
}

impl AsyncRead for Bridge {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut s = self.inbox.lock();
        let mut progressed = false;
        while buf.remaining() > 0 {
            let offset = s.offset;
            let Some(front) = s.chunks.front() else { break };
            let n = (front.len() - offset).min(buf.remaining());
            buf.put_slice(&front[offset..offset + n]);
            progressed = true;
            if offset + n == front.len() {
                s.chunks.pop_front();
                s.offset = 0;
            } else {
                s.offset += n;
            }
        }
        if progressed || s.eof {
            return Poll::Ready(Ok(()));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Bridge {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let id = self.id;
        events::with_batch(|b| b.bridge_out(id, buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        events::with_batch(|b| b.bridge_end(id));
        Poll::Ready(Ok(()))
    }
}
