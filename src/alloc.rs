//! The global allocator: the C library's `malloc` (musl's, in the static build), except
//! that freed TLS-record-sized blocks are kept for reuse.
//!
//! Why: rustls allocates each outgoing record (16,406 bytes for a full one) and frees
//! it once the record is written. musl's allocator gives such blocks from a group it
//! maps per use and unmaps once its last block is freed, so a download mapped,
//! page-faulted and unmapped a fresh group for every `writev` (3,031 `mmap`s and 43,000
//! page faults per 189 MiB bundle; see docs/benchmarks.md). Keeping a few freed blocks
//! lets the next records reuse memory that is already mapped. At most [`SLOTS`] blocks
//! are kept (204 KiB, and only after large responses); the rest are freed as before.
//!
//! The kept class is recognised when freed by `malloc_usable_size`, not by the
//! `Layout`, so every `dealloc` in the program stays a one-argument call (passing the
//! layout on cost 14 KB of the binary's size budget). Any freed block with at least
//! [`BLOCK`] usable bytes (and less than a page more) may be kept, and every request of
//! the class is for at most `BLOCK` bytes, so a kept block always fits.
//!
//! Small blocks (at most [`SMALL`] bytes) are cached per thread, on threads that ask
//! for it ([`ThreadCache`]: the first HTTP workers, as many as cores). musl has one
//! malloc lock for the whole process; a `/v1/health` request allocates and frees about
//! twenty small blocks (the parsed request, headers, the access line), so two workers on
//! two cores spent their time waiting on that lock (futex calls, issue 16). A worker
//! keeps up to [`PER_CLASS`] freed blocks per 16-byte size class in a thread-local list
//! and takes from it without the lock; leaving the cache frees them, so a retiring
//! worker leaks nothing.
//!
//! Invariant: this module's `unsafe` is the `GlobalAlloc` contract and the C
//! allocator's, each block with a `SAFETY:` comment; the crate root denies
//! `unsafe_code` elsewhere but `src/sys.rs`.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Requests kept: a full TLS record with its header and tag, and a little over, for
/// other suites' overheads. Each is allocated at `BLOCK` bytes.
const MIN: usize = 16 * 1024 + 1;
const BLOCK: usize = 17 * 1024;
/// Blocks kept: the records of one full write (four, plus a key update) for two
/// downloads at once.
const SLOTS: usize = 12;
/// The alignment `malloc` guarantees on the targets joinery is built for (x86_64 and
/// aarch64 Linux); larger alignments go to `aligned_alloc` and are never kept.
const MALLOC_ALIGN: usize = 16;

/// The largest block a thread cache keeps, and its size classes' step.
const SMALL: usize = 256;
const STEP: usize = 16;
const CLASSES: usize = SMALL / STEP;
/// Freed blocks a thread keeps per class (at most 68 KiB a thread, all classes full). A
/// request holds more than a dozen blocks of the smallest class at once (header names
/// and values): with 8 kept, every request still took the lock for them.
const PER_CLASS: u8 = 32;

/// One thread's cached small blocks: per class, a list linked through the blocks'
/// first word. Const-initialised and without `Drop`, so using it never allocates.
struct Small {
    on: Cell<bool>,
    heads: [Cell<*mut c_void>; CLASSES],
    counts: [Cell<u8>; CLASSES],
}

thread_local! {
    static SMALL_CACHE: Small = const {
        Small {
            on: Cell::new(false),
            heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            counts: [const { Cell::new(0) }; CLASSES],
        }
    };
}

/// This thread caches small blocks while the value lives (an HTTP worker holds one for
/// its life); dropping it frees what the cache holds.
pub(crate) struct ThreadCache(());

impl ThreadCache {
    pub(crate) fn start() -> ThreadCache {
        SMALL_CACHE.with(|c| c.on.set(true));
        ThreadCache(())
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        SMALL_CACHE.with(|c| {
            c.on.set(false);
            for (head, count) in c.heads.iter().zip(&c.counts) {
                let mut p = head.replace(ptr::null_mut());
                count.set(0);
                while !p.is_null() {
                    // SAFETY: every block on a list is a live malloc block whose first
                    // word holds the next one (written by `cache_small`).
                    unsafe {
                        let next = p.cast::<*mut c_void>().read();
                        libc::free(p);
                        p = next;
                    }
                }
            }
        });
    }
}

/// A cached block for a request of `size` bytes (`None`: allocate one of the class's
/// size, so it can be cached later), or no class at all when this thread does not
/// cache or the size is not small.
fn take_small(size: usize) -> Option<(usize, *mut c_void)> {
    if size > SMALL {
        return None;
    }
    SMALL_CACHE.with(|c| {
        if !c.on.get() {
            return None;
        }
        let class = size.saturating_sub(1) / STEP;
        let p = c.heads[class].get();
        if !p.is_null() {
            // SAFETY: `p` heads this class's list: a live block whose first word is the
            // next one.
            c.heads[class].set(unsafe { p.cast::<*mut c_void>().read() });
            c.counts[class].set(c.counts[class].get() - 1);
        }
        Some(((class + 1) * STEP, p))
    })
}

/// Whether this thread caches small blocks.
fn caching() -> bool {
    SMALL_CACHE.with(|c| c.on.get())
}

/// Keeps the freed block `p` with `usable` bytes in this thread's cache, if it caches
/// and the class has room. False: the caller frees it.
fn cache_small(p: *mut c_void, usable: usize) -> bool {
    if !(STEP..=SMALL + STEP - 1).contains(&usable) {
        return false;
    }
    SMALL_CACHE.with(|c| {
        // The largest class that fits in the block.
        let class = (usable / STEP).min(CLASSES) - 1;
        if !c.on.get() || c.counts[class].get() >= PER_CLASS {
            return false;
        }
        // SAFETY: `p` is a live block of at least STEP bytes that nobody else holds now.
        unsafe { p.cast::<*mut c_void>().write(c.heads[class].get()) };
        c.heads[class].set(p);
        c.counts[class].set(c.counts[class].get() + 1);
        true
    })
}

struct RecordPool {
    slots: [AtomicPtr<c_void>; SLOTS],
}

#[global_allocator]
static POOL: RecordPool = RecordPool {
    slots: [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS],
};

impl RecordPool {
    #[inline(never)]
    fn malloc(&self, size: usize) -> *mut c_void {
        if let Some((class_size, p)) = take_small(size) {
            if !p.is_null() {
                return p;
            }
            // SAFETY: plain malloc; a null result is passed on as allocation failure.
            return unsafe { libc::malloc(class_size) };
        }
        if (MIN..=BLOCK).contains(&size) {
            for slot in &self.slots {
                let p = slot.swap(ptr::null_mut(), Ordering::Acquire);
                if !p.is_null() {
                    return p;
                }
            }
            // SAFETY: plain malloc; a null result is passed on as allocation failure.
            return unsafe { libc::malloc(BLOCK) };
        }
        // SAFETY: as above.
        unsafe { libc::malloc(size) }
    }

    fn usable(p: *mut c_void) -> usize {
        // SAFETY: `p` is a live block from this allocator's `malloc`/`realloc`.
        unsafe { libc::malloc_usable_size(p) }
    }

    #[inline(never)]
    fn free(&self, p: *mut c_void) {
        if !p.is_null() {
            self.free_usable(p, Self::usable(p));
        }
    }

    /// Frees (or keeps) `p`, a live block with `usable` bytes.
    fn free_usable(&self, p: *mut c_void, usable: usize) {
        if cache_small(p, usable) {
            return;
        }
        if (BLOCK..BLOCK + 4096).contains(&usable) {
            for slot in &self.slots {
                let kept =
                    slot.compare_exchange(ptr::null_mut(), p, Ordering::Release, Ordering::Relaxed);
                if kept.is_ok() {
                    return;
                }
            }
        }
        // SAFETY: `p` came from `malloc`, `realloc` or `aligned_alloc` and is freed once.
        unsafe { libc::free(p) }
    }

    #[inline(never)]
    fn realloc(&self, p: *mut c_void, new_size: usize) -> *mut c_void {
        let usable = Self::usable(p);
        // Blocks of a kept class move through `malloc`/`free` (C's realloc would take
        // the malloc lock for a small one, and never keep a record block).
        let kept_class = (MIN..=BLOCK).contains(&new_size)
            || (BLOCK..BLOCK + 4096).contains(&usable)
            || (new_size.min(usable) <= SMALL && caching());
        if !kept_class {
            // SAFETY: `p` is a live block from `malloc`; realloc keeps it on failure.
            return unsafe { libc::realloc(p, new_size) };
        }
        let q = self.malloc(new_size);
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct; the copy is no longer than
            // either (`usable` bytes of `p` are readable, `new_size` of `q` writable).
            unsafe {
                ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), usable.min(new_size))
            };
            self.free_usable(p, usable);
        }
        q
    }
}

// SAFETY: blocks come from the C allocator with at least the requested size and
// `MALLOC_ALIGN` alignment (`aligned_alloc` for more); a kept block is handed to one
// caller only (each slot is emptied by an atomic swap before its block is returned) and
// has at least `BLOCK` usable bytes, the most a request of its class asks for.
unsafe impl GlobalAlloc for RecordPool {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            return self.malloc(layout.size()).cast();
        }
        // SAFETY: a power-of-two alignment, and a size made a multiple of it as C11 asks.
        unsafe { libc::aligned_alloc(layout.align(), layout.pad_to_align().size()).cast() }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        let kept_class = (MIN..=BLOCK).contains(&size) || (size <= SMALL && caching());
        if layout.align() <= MALLOC_ALIGN && !kept_class {
            // SAFETY: calloc, as std's own allocator does for zeroed memory.
            return unsafe { libc::calloc(1, layout.size()).cast() };
        }
        // SAFETY: `alloc` returns at least `layout.size()` bytes, or null.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        self.free(p.cast());
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            return self.realloc(p.cast(), new_size).cast();
        }
        // SAFETY: the caller's contract, passed on: a new block, the bytes copied, the
        // old one freed.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            let q = self.alloc(new);
            if !q.is_null() {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
            q
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ThreadCache, POOL, SMALL_CACHE};
    use std::sync::atomic::Ordering::Relaxed;

    fn kept() -> Vec<usize> {
        POOL.slots
            .iter()
            .map(|s| s.load(Relaxed) as usize)
            .collect()
    }

    #[test]
    fn a_freed_record_block_is_kept_and_handed_out_again() {
        // Other tests' threads allocate records too: each step may need a retry.
        let freed_is_kept = (0..64).any(|_| {
            let v: Vec<u8> = Vec::with_capacity(16_406);
            let addr = v.as_ptr() as usize;
            drop(v);
            kept().contains(&addr)
        });
        assert!(freed_is_kept, "a freed record-sized block was not kept");
        let reused = (0..64).any(|_| {
            drop(Vec::<u8>::with_capacity(16_406));
            let before = kept();
            let v: Vec<u8> = Vec::with_capacity(17_000);
            before.contains(&(v.as_ptr() as usize))
        });
        assert!(reused, "a record-sized request did not get a kept block");
        // Other sizes are never kept.
        let small: Vec<u8> = Vec::with_capacity(16_384);
        let addr = small.as_ptr() as usize;
        drop(small);
        assert!(!kept().contains(&addr));
    }

    #[test]
    fn growing_into_and_out_of_the_class_keeps_the_bytes() {
        let mut v: Vec<u8> = (0..=255).cycle().take(16_000).collect();
        v.reserve_exact(1_000);
        v.extend(std::iter::repeat_n(7, 1_000));
        v.shrink_to_fit();
        v.reserve_exact(10_000);
        assert!(v[..16_000]
            .iter()
            .zip((0..=255).cycle())
            .all(|(a, b)| *a == b));
        assert!(v[16_000..].iter().all(|&b| b == 7));
        // Over-aligned blocks of the class's size are not kept, and still work.
        #[repr(align(64))]
        struct Aligned([u8; 16_448]);
        let a = Box::new(Aligned([5; 16_448]));
        assert_eq!(std::ptr::from_ref(&*a) as usize % 64, 0);
        assert_eq!(a.0[16_447], 5);
        let z = vec![0u8; 16_500];
        assert!(z.iter().all(|&b| b == 0));
    }

    fn cached() -> usize {
        SMALL_CACHE.with(|c| c.counts.iter().map(|n| usize::from(n.get())).sum())
    }

    #[test]
    fn a_thread_cache_reuses_small_blocks_and_gives_them_all_back() {
        // A test thread has no cache: a freed small block goes back to malloc.
        drop(vec![1u8; 40]);
        assert_eq!(cached(), 0);
        let cache = ThreadCache::start();
        let a = vec![1u8; 40];
        let at = a.as_ptr() as usize;
        drop(a);
        assert_eq!(cached(), 1);
        // The next request of that class gets the same block, without malloc.
        let b = vec![2u8; 35];
        assert_eq!(b.as_ptr() as usize, at);
        assert_eq!(cached(), 0);
        // A block is kept in the largest class it fits, and each class keeps a few.
        let many: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 1 + i * 6]).collect();
        assert!(many
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|&x| x == i as u8)));
        drop(many);
        let kept = cached();
        assert!((16..=40).contains(&kept), "{kept} blocks kept");
        // Growing and shrinking through the classes (realloc) keeps the bytes.
        let mut grown = Vec::new();
        for i in 0..600u32 {
            grown.push(i as u8);
        }
        grown.truncate(100);
        grown.shrink_to_fit();
        assert!(grown.iter().enumerate().all(|(i, &x)| x == i as u8));
        let zeroed = vec![0u64; 20];
        assert!(zeroed.iter().all(|&x| x == 0));
        drop((b, grown, zeroed));
        drop(cache);
        assert_eq!(cached(), 0);
        drop(vec![3u8; 40]);
        assert_eq!(cached(), 0);
    }
}
