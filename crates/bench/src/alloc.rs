//! A counting global allocator: allocations per operation, counted only inside [`counted`],
//! so that timed work never pays for the count (a shared atomic added to on every
//! allocation would slow the in-process side of a row against a peer in its own process).
#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this only forwards to System.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Whether allocations are being counted: off outside [`counted`].
static ON: AtomicBool = AtomicBool::new(false);

fn note() {
    if ON.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The counting allocator: install it as the `#[global_allocator]` (the `compare` program
/// does); [`counted`] then counts the allocations a piece of work makes.
#[derive(Debug)]
pub struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller upholds `alloc`'s contract, which System shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as for `realloc` on System.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the allocations made meanwhile, process-wide (0
/// unless [`Counting`] is the global allocator). Not timed work: the count costs every
/// allocation an atomic add.
pub fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ON.store(true, Ordering::SeqCst);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let out = f();
    let n = ALLOCATIONS.load(Ordering::SeqCst) - before;
    ON.store(false, Ordering::SeqCst);
    (out, n)
}
