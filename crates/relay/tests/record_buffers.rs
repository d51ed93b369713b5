//! Sealing a steady stream of messages reuses the sealed records' buffers: once a
//! message's records are dropped (the wire wrote them), the next message is sealed into
//! the same buffers instead of a new, zeroed 60 KiB allocation per record; a record still
//! held is never reused (a counting global allocator, per thread).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tracewire_relay::framing::pair_for_tests;
use tracewire_relay::{MAX_RECORD_PLAINTEXT, NoiseConfig, Pattern, Suite};

struct Counting;

thread_local! {
    /// Allocations of at least a record's plaintext size made by this thread.
    static LARGE: Cell<usize> = const { Cell::new(0) };
}

fn count(size: usize) {
    if size >= MAX_RECORD_PLAINTEXT {
        let _ = LARGE.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator; only counts large allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn large_allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = LARGE.with(Cell::get);
    let r = f();
    (r, LARGE.with(Cell::get) - before)
}

/// The record-buffer pool is process-wide: the tests take turns, so that one test's held
/// buffers never make the other's seal allocate.
static POOL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn message(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| u8::try_from((i + j) % 251).unwrap()).collect()
}

#[test]
fn a_steady_stream_seals_into_reused_record_buffers() {
    let _turn = POOL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
        let config = NoiseConfig { pattern: Pattern::Ik, suite };
        let ((mut seal, _), (_, mut open)) = pair_for_tests(config, 64, 1 << 20).unwrap();
        // The first messages fill the pool.
        for i in 0..4 {
            let m = message(i, MAX_RECORD_PLAINTEXT);
            for f in seal.seal(&m, "").unwrap() {
                assert_eq!(open.push(f).unwrap().messages, vec![m.clone()]);
            }
        }
        let mut large = 0;
        for i in 4..104 {
            let m = message(i, MAX_RECORD_PLAINTEXT);
            let (frames, n) = large_allocations(|| seal.seal(&m, "").unwrap());
            large += n;
            // A reused buffer seals correctly (the opener authenticates every byte).
            for f in frames {
                assert_eq!(open.push(f).unwrap().messages, vec![m.clone()], "{suite:?} message {i}");
            }
        }
        assert_eq!(large, 0, "{suite:?}: a 60 KiB allocation per record");
    }
}

#[test]
fn a_record_still_held_is_never_reused() {
    let _turn = POOL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 64, 1 << 20).unwrap();
    let a = message(1, 3 * MAX_RECORD_PLAINTEXT);
    let held = seal.seal(&a, "").unwrap();
    let copies: Vec<Vec<u8>> = held.iter().map(|f| f.record.to_vec()).collect();
    // Sealing and dropping more messages while `held` is alive leaves its bytes alone.
    for i in 0..8 {
        drop(seal.seal(&message(10 + i, 2 * MAX_RECORD_PLAINTEXT), "").unwrap());
    }
    for (f, copy) in held.iter().zip(&copies) {
        assert_eq!(f.record.as_ref(), copy.as_slice());
    }
    let mut got = Vec::new();
    for f in held {
        got.extend(open.push(f).unwrap().messages);
    }
    assert_eq!(got, vec![a]);
}
