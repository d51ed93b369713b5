//! Parsing and formatting a traceparent allocates nothing, and the OpenTelemetry
//! propagator allocates no more than the types it must fill require (a counting global
//! allocator, per thread).
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

/// tracewire's OpenTelemetry propagator: the tracestate goes from the header straight into
/// opentelemetry's `TraceState` (extract) and opentelemetry's header goes straight into the
/// carrier (inject), without a round trip through tracewire's own `TraceState`.
#[cfg(feature = "otel")]
mod otel {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracewire_context::otel::TraceContextPropagator;

    use super::allocations;

    const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,vendor@tenant=opaque";

    #[test]
    fn extract_and_inject_of_a_three_member_tracestate_allocate_only_what_opentelemetry_keeps() {
        let propagator = TraceContextPropagator::with_fields(true, false);
        let headers: HashMap<String, String> = [
            ("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
            ("tracestate".to_owned(), TRACESTATE.to_owned()),
        ]
        .into();
        let _ = propagator.extract(&headers); // warm-up: thread-locals, lazily built statics
        let (cx, n) = allocations(|| propagator.extract(&headers));
        assert_eq!(cx.span().span_context().trace_state().header(), TRACESTATE);
        // The HashMap carrier's two get_all calls (a lowercased key and a Vec each: 4), the
        // tracestate's three keys and values and its list (7), the Context's span (1).
        // Going through tracewire's `TraceState` would take 19.
        assert!(n <= 12, "extract allocated {n} times");

        let mut out: HashMap<String, String> = HashMap::with_capacity(4);
        propagator.inject_context(&cx, &mut out);
        out.clear();
        let ((), n) = allocations(|| propagator.inject_context(&cx, &mut out));
        assert_eq!(out["tracestate"], TRACESTATE);
        // Two lowercased keys and the traceparent's String; the rest is opentelemetry's
        // `TraceState::header` (a String per member, their list, the joined header). Going
        // through tracewire's `TraceState` would take 23.
        assert!(n <= 11, "inject allocated {n} times");
    }
}
