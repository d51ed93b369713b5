//! Parsing and formatting a traceparent allocates nothing (a counting global allocator).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tracewire_context::{Carrier, TraceParent, TraceParentBuf};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator; only counts allocations per thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCS.with(Cell::get);
    let r = f();
    (r, ALLOCS.with(Cell::get) - before)
}

#[test]
fn parsing_and_formatting_a_traceparent_does_not_allocate() {
    let inputs = [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "  cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future\t",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "garbage",
    ];
    for input in inputs {
        let (parsed, n) = allocations(|| TraceParent::parse(input));
        assert_eq!(n, 0, "parse of {input:?} allocated");
        if let Ok(p) = parsed {
            let (buf, n): (TraceParentBuf, usize) = allocations(|| p.encode());
            assert_eq!(n, 0, "encode allocated");
            assert_eq!(buf.len(), 55);
        }
    }
    // Through a borrowed header list, as a server would read it.
    let headers = [("traceparent", inputs[0])];
    let (p, n) = allocations(|| TraceParent::from_header_values(headers.get_all("traceparent")));
    assert_eq!(n, 0);
    assert!(p.unwrap().is_some());
}

#[test]
fn the_counter_sees_allocations() {
    let (_v, n) = allocations(|| vec![1u8; 16]);
    assert!(n >= 1, "the counting allocator must observe a Vec allocation");
}
