//! What the receiver tests share: requests made of simple spans, and an OTLP/HTTP receiver
//! on its own runtime for tests whose clients are blocking sockets.
#![allow(dead_code)]

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracewire_collector::receiver::{SpanStore, bind, serve_http};

/// A request of `spans` spans (`s0`, `s1`, ...) of the trace whose id repeats `trace`.
pub(crate) fn request(trace: u8, spans: u8) -> ExportTraceServiceRequest {
    let spans = (0..spans)
        .map(|i| Span { trace_id: vec![trace; 16], span_id: vec![i + 1; 8], name: format!("s{i}"), ..Span::default() })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

/// An OTLP/HTTP receiver into `store` on a thread of its own (one worker), serving until
/// the test process ends; returns its `host:port`.
pub(crate) fn http_receiver_thread(store: &Arc<SpanStore>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let serving = Arc::clone(store);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send(addr).unwrap();
            serve_http(listener, serving, std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap().to_string()
}
