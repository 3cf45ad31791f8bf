//! Connection ids, and the table from an id to its connection's shared state.
//!
//! An id is a slot of the table and that slot's generation: `generation << SLOT_BITS | slot`.
//! Slots are reused, so the ids of the connections open at once stay dense: JS keeps its
//! connections in an array indexed by slot (`lib/native.js`), and both tables are as large as
//! the most connections open at once, not a hash table each.
//!
//! A slot is reused only once both sides are done with its id:
//! - the engine when the connection's task ends (`unregister`);
//! - JS when it sends RELEASE, its last command with that id. JS holds every id from the
//!   start: a client's or an adopted connection's id is the call's result, a server
//!   connection's arrives with its UPGRADE event; a server connection that ends before that
//!   (the engine refused its request itself, or it never sent one) releases JS's hold on
//!   JS's behalf. An environment that goes away gives back what it held, and no connection
//!   registers for it afterwards (`release_sink`).
//!
//! So a command JS queued for a connection that has just ended can never reach the next
//! connection in its slot. The generation is a second guard: an id used after its release (a
//! bug) finds another generation in the slot and is ignored.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::state::Shared;

/// Bits of an id that are its slot (4,194,303 connections open at once); the rest count the
/// slot's reuses. lib/native.js reads it from the binding (`wire().slotBits`).
pub const SLOT_BITS: u32 = 22;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

struct Entry {
    /// The connection's state while its task (or parked state) lives.
    shared: Option<Arc<Shared>>,
    /// The slot's current id (or its last, once free).
    id: u32,
    /// The events sink (Node environment) whose JS holds the id; 0: JS does not hold it.
    js: u32,
}

/// The table: entries indexed by slot (slot 0 is never used, so no id is 0), and the slots
/// free for reuse, oldest first (a slot's generations come back as slowly as they can).
pub struct Table {
    entries: Vec<Entry>,
    free: VecDeque<u32>,
    /// Sinks whose environment went away, ascending (sink ids only grow): a connection
    /// accepted for one while it was going is not registered (nobody would ever release it).
    gone: Vec<u32>,
}

impl Table {
    const fn new() -> Self {
        Table { entries: Vec::new(), free: VecDeque::new(), gone: Vec::new() }
    }

    fn entry(&self, id: u32) -> Option<&Entry> {
        self.entries.get(slot(id)).filter(|e| e.id == id)
    }

    fn entry_mut(&mut self, id: u32) -> Option<&mut Entry> {
        self.entries.get_mut(slot(id)).filter(|e| e.id == id)
    }

    /// A new id for `shared`, held by JS of sink `js` from now on if not 0. None: every slot
    /// is taken, or sink `js`'s environment is gone.
    fn allocate(&mut self, shared: Arc<Shared>, js: u32) -> Option<u32> {
        if js != 0 && self.gone.binary_search(&js).is_ok() {
            return None;
        }
        if self.entries.is_empty() {
            self.entries.push(Entry { shared: None, id: 0, js: 0 });
        }
        let slot = match self.free.pop_front() {
            Some(s) => s,
            None => {
                let s = self.entries.len() as u32;
                if s > SLOT_MASK {
                    return None;
                }
                self.entries.push(Entry { shared: None, id: s, js: 0 });
                s
            }
        };
        let e = &mut self.entries[slot as usize];
        let generation = (e.id >> SLOT_BITS).wrapping_add(1) & (u32::MAX >> SLOT_BITS);
        e.id = generation << SLOT_BITS | slot;
        e.shared = Some(shared);
        e.js = js;
        Some(e.id)
    }

    /// The slot goes back to the free list once neither side holds its id.
    fn free_if_done(&mut self, id: u32) {
        if self.entry(id).is_some_and(|e| e.shared.is_none() && e.js == 0) {
            self.free.push_back(id & SLOT_MASK);
        }
    }

    /// The connection's task ended.
    fn unregister(&mut self, id: u32) {
        if let Some(e) = self.entry_mut(id) {
            if e.shared.take().is_some() {
                self.free_if_done(id);
            }
        }
    }

    /// JS is done with the id.
    pub fn release(&mut self, id: u32) {
        if let Some(e) = self.entry_mut(id) {
            if e.js != 0 {
                e.js = 0;
                self.free_if_done(id);
            }
        }
    }

    fn release_sink(&mut self, sink: u32) {
        if let Err(at) = self.gone.binary_search(&sink) {
            self.gone.insert(at, sink);
        }
        let held: Vec<u32> = self.entries.iter().filter(|e| e.js == sink && sink != 0).map(|e| e.id).collect();
        for id in held {
            self.release(id);
        }
    }

    pub fn get(&self, id: u32) -> Option<&Arc<Shared>> {
        self.entry(id).and_then(|e| e.shared.as_ref())
    }

    /// The connections registered now.
    pub fn values(&self) -> impl Iterator<Item = &Arc<Shared>> {
        self.entries.iter().filter_map(|e| e.shared.as_ref())
    }
}

fn table() -> &'static Mutex<Table> {
    static T: OnceLock<Mutex<Table>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(Table::new()))
}

pub fn lock() -> MutexGuard<'static, Table> {
    table().lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers a connection and returns its id, held by the engine and by JS of the
/// connection's sink until `unregister` and `release`. None: no slot is free, or the sink's
/// environment is gone.
pub fn register(shared: Arc<Shared>) -> Option<u32> {
    let sink = shared.sink;
    lock().allocate(shared, sink)
}

/// The connection's task ended: commands for its id find nothing from now on.
pub fn unregister(id: u32) {
    lock().unregister(id);
}

/// JS is done with `id` (its RELEASE, or the engine's on its behalf).
pub fn release(id: u32) {
    lock().release(id);
}

/// The environment of sink `sink` is going away: what its JS held is released, no
/// connection registers for it from now on, and its connections end at once.
pub fn terminate_sink(sink: u32) {
    let connections: Vec<Arc<Shared>> = {
        let mut t = lock();
        t.release_sink(sink);
        t.values().filter(|s| s.sink == sink).cloned().collect()
    };
    for s in connections {
        s.terminate();
    }
}

pub fn lookup(id: u32) -> Option<Arc<Shared>> {
    lock().get(id).cloned()
}

/// Slots made, slots free for reuse, connections registered (for tests and diagnostics).
pub fn stats() -> [u32; 3] {
    let t = lock();
    let made = t.entries.len().saturating_sub(1) as u32;
    [made, t.free.len() as u32, t.values().count() as u32]
}

/// The error of a connection that got no id (see `register`).
pub fn no_id_error() -> std::io::Error {
    std::io::Error::other("too many connections open (no connection id is free)")
}

/// The slot part of an id (the index of this table and of the park table).
pub fn slot(id: u32) -> usize {
    (id & SLOT_MASK) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Shared::new(false, 7)
    }

    #[test]
    fn a_slot_is_reused_only_when_both_sides_are_done() {
        let mut t = Table::new();
        let a = t.allocate(shared(), 7).unwrap();
        assert_ne!(a, 0);
        t.unregister(a);
        // JS still holds `a`: a new connection gets another slot.
        let b = t.allocate(shared(), 0).unwrap();
        assert_ne!(b & SLOT_MASK, a & SLOT_MASK);
        t.release(a);
        let c = t.allocate(shared(), 0).unwrap();
        assert_eq!(c & SLOT_MASK, a & SLOT_MASK);
        assert_ne!(c, a, "same slot, next generation");
        // The old id reaches nothing, and releasing it again frees nothing.
        assert!(t.get(a).is_none());
        t.release(a);
        t.unregister(a);
        assert!(t.get(c).is_some());
        assert!(t.free.is_empty());
    }

    #[test]
    fn release_before_the_end_waits_for_the_end() {
        let mut t = Table::new();
        let a = t.allocate(shared(), 7).unwrap();
        t.release(a);
        assert!(t.get(a).is_some(), "the connection goes on until its task ends");
        assert!(t.free.is_empty());
        t.unregister(a);
        t.unregister(a);
        assert_eq!(t.free.len(), 1, "freed once");
    }

    #[test]
    fn a_gone_sink_registers_nothing_and_keeps_nothing() {
        let mut t = Table::new();
        let a = t.allocate(shared(), 7).unwrap();
        let b = t.allocate(shared(), 8).unwrap();
        t.release_sink(7);
        assert!(t.allocate(shared(), 7).is_none());
        assert!(t.allocate(shared(), 8).is_some());
        t.unregister(a);
        assert_eq!(t.free.len(), 1);
        assert!(t.get(b).is_some());
    }

    #[test]
    fn generations_wrap_and_ids_are_never_zero() {
        let mut t = Table::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(1 << (32 - SLOT_BITS)) + 5 {
            let id = t.allocate(shared(), 0).unwrap();
            assert_ne!(id, 0);
            assert_eq!(id & SLOT_MASK, 1);
            seen.insert(id);
            t.unregister(id);
        }
        assert_eq!(seen.len(), 1 << (32 - SLOT_BITS));
    }
}
