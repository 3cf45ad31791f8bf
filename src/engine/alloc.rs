//! The addon's allocator: the system's malloc, except for small blocks that ask for more than
//! 16-byte alignment. tokio gives each connection two of those, its task cell and its I/O
//! registration, both 128-byte aligned (cache-line padding). glibc serves them with memalign,
//! which leaves a free fragment before or after each block that nothing else of ours fits: at
//! 10,000 idle connections the engine's heap held about 18,000 such fragments of 96 and 112
//! bytes (malloc_info), 2 MB in all. Here those blocks come from slabs of 64 KiB cut into
//! blocks of a multiple of 128 bytes, with one free list per block size: no fragments. Freed
//! blocks are reused; slabs are kept (as glibc keeps most of a fragmented heap).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::Mutex;

/// The alignment every slab block has (and the granularity of block sizes).
const LINE: usize = 128;
/// Block sizes 128, 256, ... 2048 bytes.
const CLASSES: usize = 16;
const SLAB: usize = 64 * 1024;

/// Heads of the free lists; a free block holds the address of the next one.
struct Lists([*mut u8; CLASSES]);

// SAFETY: the pointers are to blocks owned by the lists, only touched under the mutex.
unsafe impl Send for Lists {}

static LISTS: Mutex<Lists> = Mutex::new(Lists([ptr::null_mut(); CLASSES]));

pub struct Allocator;

/// The free list serving `layout`, if it is a small over-aligned block.
fn class(layout: &Layout) -> Option<usize> {
    let (size, align) = (layout.size(), layout.align());
    (align > 16 && align <= LINE && size > 0 && size <= CLASSES * LINE).then(|| size.div_ceil(LINE) - 1)
}

fn lists() -> std::sync::MutexGuard<'static, Lists> {
    LISTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A block of class `c`, from its free list or from a new slab; null when out of memory.
unsafe fn take(c: usize) -> *mut u8 {
    let mut lists = lists();
    let head = lists.0[c];
    if !head.is_null() {
        lists.0[c] = *(head as *mut *mut u8);
        return head;
    }
    let size = (c + 1) * LINE;
    // Not re-entrant: System does not call back into this allocator.
    let slab = System.alloc(Layout::from_size_align_unchecked(SLAB, LINE));
    if slab.is_null() {
        return slab;
    }
    // The first block is the caller's; the others go on the (empty) list, in address order.
    let n = SLAB / size;
    for i in 1..n {
        let next = if i + 1 < n { slab.add((i + 1) * size) } else { ptr::null_mut() };
        *(slab.add(i * size) as *mut *mut u8) = next;
    }
    lists.0[c] = if n > 1 { slab.add(size) } else { ptr::null_mut() };
    slab
}

unsafe fn give(c: usize, block: *mut u8) {
    let mut lists = lists();
    *(block as *mut *mut u8) = lists.0[c];
    lists.0[c] = block;
}

// SAFETY: blocks of class c are LINE-aligned (slabs are, and block sizes are multiples of
// LINE) and at least as large as any layout mapped to c; a block is on a free list or owned
// by exactly one caller; every other layout goes to System, and a layout's dealloc gets the
// same class as its alloc did (GlobalAlloc passes the same layout).
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(&layout) {
            Some(c) => take(c),
            None => System.alloc(layout),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class(&layout) {
            Some(c) => {
                let p = take(c);
                if !p.is_null() {
                    ptr::write_bytes(p, 0, layout.size());
                }
                p
            }
            None => System.alloc_zeroed(layout),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class(&layout) {
            Some(c) => give(c, ptr),
            None => System.dealloc(ptr, layout),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        if class(&layout).is_none() && class(&new).is_none() {
            return System.realloc(ptr, layout, new_size);
        }
        let p = self.alloc(new);
        if !p.is_null() {
            ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_aligned_blocks_are_aligned_distinct_and_reused() {
        let layouts = [(384, 128), (256, 128), (64, 64), (40, 32), (2048, 128), (129, 128)];
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for round in 0..3 {
                        for i in 0..2000 {
                            let (size, align) = layouts[(i + t) % layouts.len()];
                            let l = Layout::from_size_align(size, align).unwrap_or(Layout::new::<u8>());
                            // SAFETY: a non-zero-size layout; freed below with the same layout.
                            let p = unsafe { Allocator.alloc(l) };
                            assert!(!p.is_null());
                            assert_eq!(p as usize % align, 0, "{size}/{align}");
                            let mark = (i as u8) ^ (t as u8) ^ round;
                            // SAFETY: p points to `size` bytes we own.
                            unsafe { ptr::write_bytes(p, mark, size) };
                            held.push((p, l, mark));
                        }
                        for &(p, l, mark) in &held {
                            // SAFETY: each block is still ours; nobody else wrote to it.
                            let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
                            assert!(bytes.iter().all(|&b| b == mark), "a block was written by another owner");
                        }
                        for (p, l, _) in held.drain(..) {
                            // SAFETY: allocated above with this layout, freed once.
                            unsafe { Allocator.dealloc(p, l) };
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        // Zeroed and grown blocks keep their contents and alignment.
        let l = Layout::from_size_align(200, 128).unwrap_or(Layout::new::<u8>());
        // SAFETY: as above.
        unsafe {
            let p = Allocator.alloc_zeroed(l);
            assert!(std::slice::from_raw_parts(p, 200).iter().all(|&b| b == 0));
            ptr::write_bytes(p, 7, 200);
            let q = Allocator.realloc(p, l, 5000);
            assert_eq!(q as usize % 128, 0);
            assert!(std::slice::from_raw_parts(q, 200).iter().all(|&b| b == 7));
            Allocator.dealloc(q, Layout::from_size_align_unchecked(5000, 128));
        }
    }
}
