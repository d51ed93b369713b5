//! Continues a trace: reads a traceparent (and optional tracestate and baggage) from the
//! command line, applies tracewire's propagation policy, and prints the headers a child call
//! would carry.
//!
//! ```text
//! cargo run --example propagate -- 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 'rojo=1' 'user=alice'
//! ```

use anyhow::Result;
use tracewire_context::{TraceCarrier, extract};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let incoming = TraceCarrier {
        traceparent: args.next().unwrap_or_default(),
        tracestate: args.next().unwrap_or_default(),
        baggage: args.next().unwrap_or_default(),
    };
    let ex = extract(&incoming);
    match ex.started {
        None => {
            let parent = ex.remote_parent.map(|p| p.to_string()).unwrap_or_default();
            println!("continued trace {} from remote parent span {parent}", ex.context.trace_id);
        }
        Some(reason) => println!("started a new trace {}: {reason}", ex.context.trace_id),
    }
    if let Some(e) = ex.tracestate_error {
        println!("tracestate discarded: {e}");
    }
    if ex.baggage_dropped > 0 {
        println!("baggage members dropped: {}", ex.baggage_dropped);
    }
    let mut outgoing = TraceCarrier::default();
    ex.context.inject(Some(&ex.baggage), &mut outgoing)?;
    println!("traceparent: {}", outgoing.traceparent);
    if !outgoing.tracestate.is_empty() {
        println!("tracestate: {}", outgoing.tracestate);
    }
    if !outgoing.baggage.is_empty() {
        println!("baggage: {}", outgoing.baggage);
    }
    Ok(())
}
