//! OpenTelemetry interop (feature `otel`): a `TextMapPropagator` that applies tracewire's
//! rules to trace context and baggage, and conversions to and from `SpanContext`.
//!
//! ```
//! use std::collections::HashMap;
//! use opentelemetry::propagation::TextMapPropagator;
//! use opentelemetry::trace::TraceContextExt;
//! use tracewire_context::otel::TraceContextPropagator;
//!
//! let propagator = TraceContextPropagator::new();
//! let mut headers = HashMap::new();
//! headers.insert("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
//! let cx = propagator.extract(&headers);
//! let sc = cx.span().span_context().clone();
//! assert!(sc.is_remote() && sc.is_sampled());
//! assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
//!
//! let mut out = HashMap::new();
//! propagator.inject_context(&cx, &mut out);
//! assert_eq!(out["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! ```

use std::sync::OnceLock;

use opentelemetry::Context;
use opentelemetry::baggage::{Baggage as OtelBaggage, BaggageExt};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{self as ot, TraceContextExt};

use crate::baggage::Baggage;
use crate::carrier::{BAGGAGE, Carrier, CarrierError, CarrierMut, TRACEPARENT, TRACESTATE};
use crate::id::{SpanId, TraceFlags, TraceId};
use crate::propagation::TraceContext;
use crate::traceparent::TraceParent;
use crate::tracestate::{MAX_MEMBERS, SERIALIZE_BUDGET, TraceState, valid_key, valid_value};

/// A [`TextMapPropagator`] for `traceparent`, `tracestate` and `baggage` that follows
/// tracewire's parsing rules (W3C Trace Context Level 2, W3C Baggage). Install it with
/// `opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new())` in place
/// of opentelemetry_sdk's `TraceContextPropagator` and `BaggagePropagator`.
#[derive(Debug, Clone)]
pub struct TraceContextPropagator {
    trace_context: bool,
    baggage: bool,
}

impl Default for TraceContextPropagator {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceContextPropagator {
    /// The propagator, for trace context and baggage.
    pub fn new() -> Self {
        Self { trace_context: true, baggage: true }
    }

    /// A propagator for some of the fields only (as `OTEL_PROPAGATORS=tracecontext` or
    /// `=baggage` selects): `traceparent`/`tracestate`, `baggage`, both or neither.
    pub fn with_fields(trace_context: bool, baggage: bool) -> Self {
        Self { trace_context, baggage }
    }
}

fn fields(trace_context: bool, baggage: bool) -> &'static [String] {
    static FIELDS: OnceLock<[String; 3]> = OnceLock::new();
    let all = FIELDS.get_or_init(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned(), BAGGAGE.to_owned()]);
    match (trace_context, baggage) {
        (true, true) => &all[..],
        (true, false) => &all[..2],
        (false, true) => &all[2..],
        (false, false) => &[],
    }
}

/// An opentelemetry [`Extractor`] seen as a tracewire [`Carrier`].
#[derive(Clone, Copy)]
pub struct ExtractorCarrier<'a>(pub &'a dyn Extractor);

impl std::fmt::Debug for ExtractorCarrier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Carrier for ExtractorCarrier<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.get_all(name).unwrap_or_default().into_iter()
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().into_iter()
    }
}

/// An opentelemetry [`Injector`] seen as a tracewire [`CarrierMut`].
pub struct InjectorCarrier<'a>(pub &'a mut dyn Injector);

impl std::fmt::Debug for InjectorCarrier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InjectorCarrier")
    }
}

impl CarrierMut for InjectorCarrier<'_> {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        self.0.set(name, value.to_owned());
        Ok(())
    }
}

/// Converts our tracestate into opentelemetry's (members that opentelemetry refuses make
/// it empty, as a discarded tracestate would be).
pub fn to_otel_tracestate(ts: &TraceState) -> ot::TraceState {
    if ts.is_empty() {
        return ot::TraceState::NONE;
    }
    ot::TraceState::from_key_value(ts.iter()).unwrap_or_default()
}

/// Converts opentelemetry's tracestate into ours (invalid by our rules: empty).
pub fn from_otel_tracestate(ts: &ot::TraceState) -> TraceState {
    TraceState::parse(&ts.header()).unwrap_or_default()
}

/// The opentelemetry `SpanContext` of `ctx`.
pub fn to_span_context(ctx: &TraceContext, is_remote: bool) -> ot::SpanContext {
    ot::SpanContext::new(
        ot::TraceId::from_bytes(ctx.trace_id.to_bytes()),
        ot::SpanId::from_bytes(ctx.span_id.to_bytes()),
        ot::TraceFlags::new(ctx.flags.outgoing().bits()),
        is_remote,
        to_otel_tracestate(&ctx.tracestate),
    )
}

/// Our context of an opentelemetry `SpanContext`; `None` when it is invalid.
pub fn from_span_context(sc: &ot::SpanContext) -> Option<TraceContext> {
    if !sc.is_valid() {
        return None;
    }
    Some(TraceContext {
        trace_id: TraceId::from_bytes(sc.trace_id().to_bytes()),
        span_id: SpanId::from_bytes(sc.span_id().to_bytes()),
        flags: TraceFlags::from_bits(sc.trace_flags().to_u8()),
        tracestate: from_otel_tracestate(sc.trace_state()),
    })
}

impl From<&TraceContext> for ot::SpanContext {
    fn from(ctx: &TraceContext) -> Self {
        to_span_context(ctx, false)
    }
}

/// Converts our baggage into opentelemetry's.
pub fn to_otel_baggage(b: &Baggage) -> OtelBaggage {
    let mut out = OtelBaggage::new();
    for e in b {
        out.insert_with_metadata(e.key().to_owned(), e.value().to_owned(), e.properties().to_owned());
    }
    out
}

/// Converts opentelemetry's baggage into ours (entries our rules refuse are left out).
pub fn from_otel_baggage(b: &OtelBaggage) -> Baggage {
    let mut out = Baggage::new();
    for (k, (v, meta)) in b {
        // Entries that break the key grammar or the limits are not propagated.
        let _ = out.insert_with_properties(k.as_str(), v.as_str(), meta.as_str());
    }
    out
}

/// The non-empty members of one tracestate header value, in order, with the spaces and
/// tabs around them trimmed: each split at its first `=` (`None` for a member without
/// one).
#[derive(Clone)]
struct Members<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Members<'a> {
    type Item = Option<(&'a str, &'a str)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.rest?;
            let bytes = rest.as_bytes();
            let end = bytes.iter().position(|&b| b == b',');
            self.rest = end.and_then(|comma| rest.get(comma + 1..));
            let (mut s, mut e) = (0, end.unwrap_or(bytes.len()));
            while s < e && matches!(bytes[s], b' ' | b'\t') {
                s += 1;
            }
            while e > s && matches!(bytes[e - 1], b' ' | b'\t') {
                e -= 1;
            }
            if s < e {
                let eq = bytes[s..e].iter().position(|&b| b == b'=').map(|i| s + i);
                return Some(eq.and_then(|eq| Some((rest.get(s..eq)?, rest.get(eq + 1..e)?))));
            }
        }
    }
}

/// The members of one tracestate header value, borrowed, when [`TraceState::parse`] would
/// accept it and keep every member as it is (all valid, at most 32, no repeated key);
/// `None` otherwise, and the caller takes the general path through [`TraceState`], which
/// also handles repeats and invalid lists. Nothing is allocated: one pass over the bytes
/// validates (the keys kept on the stack to find a repeat), and the iterator returned
/// splits the value again.
fn simple_members(value: &str) -> Option<impl Iterator<Item = (&str, &str)> + Clone> {
    let members = Members { rest: Some(value) };
    let mut keys = [""; MAX_MEMBERS];
    for (n, member) in members.clone().enumerate() {
        let (key, val) = member?;
        if n == MAX_MEMBERS || !valid_key(key) || !valid_value(val) || keys[..n].contains(&key) {
            return None;
        }
        keys[n] = key;
    }
    Some(members.map_while(std::convert::identity))
}

/// The tracestate of `carrier` as opentelemetry's, by tracewire's rules (what
/// [`to_otel_tracestate`] of [`TraceState::from_header_values`] gives), building it
/// straight from the header in the common case of one simple header value.
fn otel_tracestate_of(carrier: &ExtractorCarrier<'_>) -> ot::TraceState {
    let mut values = carrier.get_all(TRACESTATE);
    match (values.next(), values.next()) {
        (None, _) => ot::TraceState::NONE,
        (Some(one), None) if let Some(members) = simple_members(one) => {
            ot::TraceState::from_key_value(members).unwrap_or_default()
        }
        _ => to_otel_tracestate(&TraceState::from_header_values(carrier.get_all(TRACESTATE)).unwrap_or_default()),
    }
}

/// Sets `traceparent` and `tracestate` for `sc` (valid) on `injector`, as
/// [`TraceContext::inject`] of [`from_span_context`] would, writing opentelemetry's
/// tracestate header as it is when tracewire's rules keep it unchanged.
fn inject_span_context(sc: &ot::SpanContext, injector: &mut dyn Injector) {
    let traceparent = TraceParent {
        trace_id: TraceId::from_bytes(sc.trace_id().to_bytes()),
        parent_id: SpanId::from_bytes(sc.span_id().to_bytes()),
        flags: TraceFlags::from_bits(sc.trace_flags().to_u8()),
    };
    injector.set(TRACEPARENT, traceparent.encode().as_str().to_owned());
    let header = sc.trace_state().header();
    if header.is_empty() {
        return;
    }
    if header.len() <= SERIALIZE_BUDGET && simple_members(&header).is_some() {
        injector.set(TRACESTATE, header);
        return;
    }
    // Members tracewire refuses, repeats, or over the 512-character budget.
    let ours = TraceState::parse(&header).unwrap_or_default();
    if !ours.is_empty() {
        injector.set(TRACESTATE, ours.header());
    }
}

impl TextMapPropagator for TraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if self.trace_context && sc.is_valid() {
            inject_span_context(sc, injector);
        }
        if self.baggage {
            let baggage = from_otel_baggage(cx.baggage());
            if !baggage.is_empty() {
                injector.set(BAGGAGE, baggage.header());
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let carrier = ExtractorCarrier(extractor);
        let parent = if self.trace_context {
            TraceParent::from_header_values(carrier.get_all(TRACEPARENT)).ok().flatten()
        } else {
            None
        };
        let mut out = match parent {
            // The tracestate is read only when the traceparent is valid (as `read_remote`).
            Some(parent) => cx.with_remote_span_context(ot::SpanContext::new(
                ot::TraceId::from_bytes(parent.trace_id.to_bytes()),
                ot::SpanId::from_bytes(parent.parent_id.to_bytes()),
                ot::TraceFlags::new(parent.flags.outgoing().bits()),
                true,
                otel_tracestate_of(&carrier),
            )),
            None => cx.clone(),
        };
        if !self.baggage {
            return out;
        }
        let baggage = Baggage::from_header_values(carrier.get_all(BAGGAGE)).baggage;
        if !baggage.is_empty() {
            out = out.with_baggage(to_otel_baggage(&baggage));
        }
        out
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(fields(self.trace_context, self.baggage))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;

    use super::{TraceContextPropagator, from_span_context, to_otel_tracestate};
    use crate::{TraceState, read_remote};

    /// Headers that may repeat, as HTTP's do.
    struct Headers(Vec<(&'static str, String)>);

    impl opentelemetry::propagation::Extractor for Headers {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| *k).collect()
        }
        fn get_all(&self, key: &str) -> Option<Vec<&str>> {
            Some(self.0.iter().filter(|(k, _)| *k == key).map(|(_, v)| v.as_str()).collect())
        }
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Tracestates the direct paths must treat exactly as the general one: simple lists,
    /// OWS and empty members, repeats, invalid members, keys opentelemetry refuses, 32 and
    /// 33 members, and lists over the 512-character budget.
    fn tracestates() -> Vec<Vec<String>> {
        let many = |n: usize| (0..n).map(|i| format!("k{i}=v{i}")).collect::<Vec<_>>().join(",");
        let long = |n: usize| (0..n).map(|i| format!("k{i}={}", "x".repeat(100))).collect::<Vec<_>>().join(",");
        let one = |s: &str| vec![s.to_owned()];
        vec![
            one("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,vendor@tenant=opaque"),
            one(" congo=t61rcWkgMzE ,\t, rojo=00f067aa0ba902b7\t"),
            one(""),
            one(" , "),
            one("foo=1,bar=2,foo=3"),
            one("ok=1,Bad=2"),
            one("ok=1,novalue"),
            one("ok=1,sp=trailing "),
            one("a@b@c=1"),
            one("tenant@x=1,abcdefghijklmnop@vendorname=1"),
            one(&many(32)),
            one(&many(33)),
            one(&long(6)),
            vec!["rojo=00f067aa0ba902b7".to_owned(), "congo=t61rcWkgMzE".to_owned()],
            vec!["rojo=1".to_owned(), "rojo=2".to_owned()],
        ]
    }

    #[test]
    fn extract_builds_the_tracestate_the_general_path_builds() {
        let propagator = TraceContextPropagator::with_fields(true, false);
        for values in tracestates() {
            let mut headers = vec![("traceparent", TRACEPARENT.to_owned())];
            headers.extend(values.iter().map(|v| ("tracestate", v.clone())));
            let general = read_remote(&headers).map(|r| to_otel_tracestate(&r.tracestate)).unwrap_or_default();
            let got = propagator.extract(&Headers(headers));
            let sc = got.span().span_context().clone();
            assert!(sc.is_valid() && sc.is_remote(), "{values:?}");
            assert_eq!(sc.trace_state(), &general, "{values:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Random lists built from valid and invalid pieces (upper case, spaces, tabs, `@`,
        /// missing `=`, repeats, empty members): the direct path of extract agrees with
        /// tracewire's `TraceState` rules on every one.
        #[test]
        fn extract_agrees_with_the_general_path_on_random_tracestates(
            members in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => "[a-z][a-c@]{0,2}=[x-z]{1,2}",
                    1 => "[a-cA@ ]{0,3}(=[x-z ,=]{0,3})?",
                ],
                0..36,
            ),
            sep in "[, \t]{1,2}",
        ) {
            let value = members.join(&sep);
            let headers = vec![("traceparent", TRACEPARENT.to_owned()), ("tracestate", value.clone())];
            let general = read_remote(&headers).map(|r| to_otel_tracestate(&r.tracestate)).unwrap_or_default();
            let got = TraceContextPropagator::with_fields(true, false).extract(&Headers(headers));
            let span = got.span();
            proptest::prop_assert_eq!(span.span_context().trace_state(), &general, "{:?}", value);
        }
    }

    #[test]
    fn inject_writes_what_tracewires_inject_of_the_context_writes() {
        let propagator = TraceContextPropagator::with_fields(true, false);
        for values in tracestates() {
            let ts = opentelemetry::trace::TraceState::from_key_value(
                values.iter().flat_map(|v| v.split(',')).filter_map(|m| m.trim().split_once('=')),
            )
            .unwrap_or_default();
            let sc = opentelemetry::trace::SpanContext::new(
                opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                opentelemetry::trace::TraceFlags::SAMPLED,
                false,
                ts,
            );
            let mut expected = HashMap::new();
            from_span_context(&sc).unwrap().inject(None, &mut expected).unwrap();
            let mut got = HashMap::new();
            let cx = opentelemetry::Context::new().with_remote_span_context(sc);
            propagator.inject_context(&cx, &mut got);
            assert_eq!(got, expected, "{values:?}");
        }
        // An invalid span context writes nothing.
        let mut got = HashMap::new();
        propagator.inject_context(&opentelemetry::Context::new(), &mut got);
        assert!(got.is_empty());
        // Our own tracestate type agrees on a simple list.
        assert_eq!(TraceState::parse("a=1,b=2").unwrap().header(), "a=1,b=2");
    }
}
