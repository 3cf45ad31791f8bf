//! The addon's allocator: the system's malloc, except for small blocks that ask for more than
//! 16-byte alignment. tokio gives each connection two of those, its task cell and its I/O
//! registration, both 128-byte aligned (cache-line padding). glibc serves them with memalign,
//! which leaves a free fragment before or after each block that nothing else of ours fits: at
//! 10,000 idle connections the engine's heap held about 18,000 such fragments of 96 and 112
//! bytes (malloc_info), 2 MB in all. Here those blocks come from slabs of 64 KiB cut into
//! blocks of a multiple of 128 bytes: no fragments.
//!
//! Parked connections (`engine::park`) give both blocks back, so freed memory must go back to
//! the system too, which glibc would not do for free chunks amid its heap: a slab is mapped
//! on its own, tracks its free blocks in a bitmap in its header (not in the blocks), and
//! returns each page no live block overlaps (`MADV_DONTNEED`); an empty slab is unmapped,
//! but for one per block size kept for reuse.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The alignment every slab block has (and the granularity of block sizes).
const LINE: usize = 128;
/// Block sizes 128, 256, ... 2048 bytes.
const CLASSES: usize = 16;
/// Slabs are this large and aligned to it, so a block's slab is its address rounded down.
const SLAB: usize = 64 * 1024;
const PAGE: usize = 4096;
const PAGES: usize = SLAB / PAGE;
/// The slab's header takes its first line; blocks follow.
const HEAD: usize = LINE;
const WORDS: usize = ((SLAB - HEAD) / LINE).div_ceil(64);

/// A slab's header, at its start.
#[repr(C)]
struct Slab {
    /// Links in its class's list of slabs that have free blocks.
    prev: *mut Slab,
    next: *mut Slab,
    /// Bit i set: block i is free.
    free: [u64; WORDS],
    /// How many live blocks overlap each page (page 0 holds the header and is never returned).
    page_live: [u16; PAGES],
    size: u32,
    blocks: u16,
    live: u16,
}

const _: () = assert!(std::mem::size_of::<Slab>() <= HEAD);

struct State {
    /// Per class: the slabs with free blocks.
    partial: [*mut Slab; CLASSES],
    /// Per class: how many of those are empty (one is kept, the others unmapped).
    empty: [u16; CLASSES],
}

// SAFETY: the pointers are to slabs owned by the allocator, only touched under the mutex.
unsafe impl Send for State {}

static STATE: Mutex<State> = Mutex::new(State { partial: [ptr::null_mut(); CLASSES], empty: [0; CLASSES] });

/// Bytes of slab pages in use (each slab's first page, and the pages live blocks overlap).
static RESIDENT: AtomicUsize = AtomicUsize::new(0);

/// What the slabs hold in memory (the C heap's statistics do not see them).
pub fn resident_bytes() -> usize {
    RESIDENT.load(Ordering::Relaxed)
}

pub struct Allocator;

/// The class serving `layout`, if it is a small over-aligned block.
fn class(layout: &Layout) -> Option<usize> {
    let (size, align) = (layout.size(), layout.align());
    (align > 16 && align <= LINE && size > 0 && size <= CLASSES * LINE).then(|| size.div_ceil(LINE) - 1)
}

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pages block `i` of a slab with blocks of `size` bytes overlaps.
fn pages(i: usize, size: usize) -> std::ops::RangeInclusive<usize> {
    let start = HEAD + i * size;
    start / PAGE..=(start + size - 1) / PAGE
}

/// A new slab of blocks of `size` bytes, all free; null when out of memory. Mapped twice as
/// large and trimmed to its aligned middle (the kernel zero-fills it, and only pages written
/// to count).
unsafe fn map_slab(size: usize) -> *mut Slab {
    let len = 2 * SLAB;
    let p = libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
    if p == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    let addr = p as usize;
    let start = (addr + SLAB - 1) & !(SLAB - 1);
    if start > addr {
        libc::munmap(addr as *mut libc::c_void, start - addr);
    }
    if addr + len > start + SLAB {
        libc::munmap((start + SLAB) as *mut libc::c_void, addr + len - start - SLAB);
    }
    let s = start as *mut Slab;
    let blocks = (SLAB - HEAD) / size;
    let mut free = [0u64; WORDS];
    for i in 0..blocks {
        free[i / 64] |= 1 << (i % 64);
    }
    RESIDENT.fetch_add(PAGE, Ordering::Relaxed);
    s.write(Slab { prev: ptr::null_mut(), next: ptr::null_mut(), free, page_live: [0; PAGES], size: size as u32, blocks: blocks as u16, live: 0 });
    s
}

unsafe fn push(st: &mut State, c: usize, s: *mut Slab) {
    (*s).prev = ptr::null_mut();
    (*s).next = st.partial[c];
    if !st.partial[c].is_null() {
        (*st.partial[c]).prev = s;
    }
    st.partial[c] = s;
}

unsafe fn unlink(st: &mut State, c: usize, s: *mut Slab) {
    let (prev, next) = ((*s).prev, (*s).next);
    if prev.is_null() {
        st.partial[c] = next;
    } else {
        (*prev).next = next;
    }
    if !next.is_null() {
        (*next).prev = prev;
    }
    (*s).prev = ptr::null_mut();
    (*s).next = ptr::null_mut();
}

/// A block of class `c`; null when out of memory.
unsafe fn take(c: usize) -> *mut u8 {
    let mut st = state();
    let mut s = st.partial[c];
    if s.is_null() {
        s = map_slab((c + 1) * LINE);
        if s.is_null() {
            return ptr::null_mut();
        }
        push(&mut st, c, s);
        st.empty[c] += 1;
    }
    let slab = &mut *s;
    // A slab on the list has a free block.
    let Some(w) = slab.free.iter().position(|&w| w != 0) else { return ptr::null_mut() };
    let i = w * 64 + slab.free[w].trailing_zeros() as usize;
    slab.free[w] &= !(1u64 << (i % 64));
    if slab.live == 0 {
        st.empty[c] -= 1;
    }
    slab.live += 1;
    let size = slab.size as usize;
    for p in pages(i, size) {
        if slab.page_live[p] == 0 && p != 0 {
            RESIDENT.fetch_add(PAGE, Ordering::Relaxed);
        }
        slab.page_live[p] += 1;
    }
    if slab.live == slab.blocks {
        unlink(&mut st, c, s);
    }
    (s as *mut u8).add(HEAD + i * size)
}

unsafe fn give(c: usize, block: *mut u8) {
    let mut st = state();
    let s = (block as usize & !(SLAB - 1)) as *mut Slab;
    let slab = &mut *s;
    let size = slab.size as usize;
    let i = (block as usize - s as usize - HEAD) / size;
    let was_full = slab.live == slab.blocks;
    slab.free[i / 64] |= 1u64 << (i % 64);
    slab.live -= 1;
    for p in pages(i, size) {
        slab.page_live[p] -= 1;
        if slab.page_live[p] == 0 && p != 0 {
            // Under the lock: no block of this page can be handed out meanwhile.
            libc::madvise((s as *mut u8).add(p * PAGE) as *mut libc::c_void, PAGE, libc::MADV_DONTNEED);
            RESIDENT.fetch_sub(PAGE, Ordering::Relaxed);
        }
    }
    if was_full {
        push(&mut st, c, s);
    }
    if slab.live == 0 {
        if st.empty[c] >= 1 {
            unlink(&mut st, c, s);
            libc::munmap(s as *mut libc::c_void, SLAB);
            RESIDENT.fetch_sub(PAGE, Ordering::Relaxed);
        } else {
            st.empty[c] += 1;
        }
    }
}

// SAFETY: blocks of class c are LINE-aligned (slabs are SLAB-aligned, the header takes one
// line and block sizes are multiples of LINE) and at least as large as any layout mapped to c;
// a block is free in its slab's bitmap or owned by exactly one caller; a page is returned to
// the system only when no live block overlaps it, under the lock that hands blocks out; every
// other layout goes to System, and a layout's dealloc gets the same class as its alloc did
// (GlobalAlloc passes the same layout).
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

    /// Whether the page at `p` is resident.
    fn resident(p: *mut u8) -> bool {
        let mut v = [0u8; 1];
        // SAFETY: mincore only reports on the page; `p` is page-aligned inside a live mapping.
        unsafe { libc::mincore(p as *mut libc::c_void, PAGE, v.as_mut_ptr()) == 0 && v[0] & 1 == 1 }
    }

    #[test]
    fn freed_pages_go_back_to_the_system() {
        // 1792-byte blocks: a class no other test uses, so no one else holds blocks in these slabs.
        let l = Layout::from_size_align(1792, 128).unwrap_or(Layout::new::<u8>());
        // SAFETY: blocks are written and freed with the layout they were allocated with.
        unsafe {
            let blocks: Vec<*mut u8> = (0..200).map(|_| Allocator.alloc(l)).collect();
            assert!(blocks.iter().all(|p| !p.is_null()));
            for &p in &blocks {
                ptr::write_bytes(p, 1, 1792);
            }
            let keep = blocks[0];
            let slab = keep as usize & !(SLAB - 1);
            assert!(resident((slab + PAGE) as *mut u8), "a written page is not resident");
            // Free all but the first block: every page but the slabs' first ones goes back.
            for &p in &blocks[1..] {
                Allocator.dealloc(p, l);
            }
            for p in 1..PAGES {
                assert!(!resident((slab + p * PAGE) as *mut u8), "page {p} of a slab with one live block in page 0 is resident");
            }
            // Reused after release: the memory reads as written.
            let again: Vec<*mut u8> = (0..50).map(|_| Allocator.alloc(l)).collect();
            for &p in &again {
                assert!(!p.is_null() && (p as usize).is_multiple_of(128));
                ptr::write_bytes(p, 9, 1792);
                assert!(std::slice::from_raw_parts(p, 1792).iter().all(|&b| b == 9));
            }
            assert!(std::slice::from_raw_parts(keep, 1792).iter().all(|&b| b == 1), "a live block was released");
            for p in again.into_iter().chain([keep]) {
                Allocator.dealloc(p, l);
            }
        }
    }
}
