//! Set-up shared by the tower tests (`tower_grpc.rs`, `tower_http.rs`): the spans of a trace
//! from the in-memory pipeline (`tracewire_telemetry::testing`), waited for with a deadline.

use std::time::Duration;

use opentelemetry_sdk::trace::SpanData;
use tracewire_telemetry::testing;

/// How long a test waits for the spans it expects.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The spans of `trace` once `want` of them have ended (the server span ends when its
/// response body has been sent, which may be just after the client has its answer), or
/// those there are at the deadline, for the test's assertions to name what is missing.
pub(crate) async fn spans_of(trace: &str, want: usize) -> Vec<SpanData> {
    let enough = tracewire_testkit::eventually_some_async(WAIT, || async move {
        Some(testing::install().spans_of(trace)).filter(|spans| spans.len() >= want)
    })
    .await;
    enough.unwrap_or_else(|_| testing::install().spans_of(trace))
}

/// The value of the attribute `key` of `span`, as a string.
pub(crate) fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

/// A random trace id, hex.
pub(crate) fn random_trace() -> String {
    tracewire_context::TraceId::random().to_string()
}
