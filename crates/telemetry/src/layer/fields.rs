//! The field visitors of tracewire's layer: `tracing` field values made OpenTelemetry
//! values, put on a span's record ([`SpanFields`]), an event ([`EventFields`]) or held
//! until the span is locked ([`RecordedValues`]).

use std::borrow::Cow;

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Key, KeyValue, Value};
use smallvec::SmallVec;
use tracing::field::{Field, Visit};

use crate::record::CompactSpan;

/// Records a span's fields; `otel.name`, `otel.kind`, `otel.status_code` and
/// `otel.status_description` set the span's name, kind and status as in
/// tracing-opentelemetry.
pub(super) struct SpanFields<'a>(pub(super) &'a mut CompactSpan);

impl SpanFields<'_> {
    fn string(&mut self, field: &Field, value: String) {
        let rec = &mut *self.0;
        match field.name() {
            "otel.name" => rec.extra().name = Some(Cow::Owned(value)),
            "otel.kind" => rec.extra().kind = kind(&value),
            "otel.status_code" => {
                let extra = rec.extra();
                extra.status = match value.to_ascii_lowercase().as_str() {
                    "ok" => Status::Ok,
                    "error" => Status::error(status_description(&extra.status)),
                    _ => Status::Unset,
                };
            }
            "otel.status_description" => {
                let extra = rec.extra();
                if matches!(extra.status, Status::Error { .. } | Status::Unset) {
                    extra.status = Status::error(value);
                }
            }
            name => rec.set_attribute(KeyValue::new(Key::from_static_str(name), value)),
        }
    }
}

fn status_description(status: &Status) -> Cow<'static, str> {
    match status {
        Status::Error { description } => description.clone(),
        _ => Cow::Borrowed(""),
    }
}

fn kind(s: &str) -> Option<SpanKind> {
    Some(match s.to_ascii_lowercase().as_str() {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => return None,
    })
}

/// Records an event's fields: `message` names the event, the rest are its attributes.
pub(super) struct EventFields {
    pub(super) name: Option<String>,
    pub(super) attributes: Vec<KeyValue>,
}

/// Where a visitor puts a field's value; one [`Visit`] implementation ([`OtelValues`]) serves
/// spans and events.
pub(super) trait FieldTarget {
    fn put(&mut self, field: &Field, value: Value);
}

impl FieldTarget for SpanFields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name.starts_with("otel.") {
            self.string(field, value.as_str().into_owned());
        } else {
            self.0.set_attribute(KeyValue::new(Key::from_static_str(name), value));
        }
    }
}

/// OtelValues recorded later (`Span::record`), collected before the span is locked.
#[derive(Default)]
pub(super) struct RecordedValues(pub(super) SmallVec<[(Field, Value); 2]>);

impl FieldTarget for RecordedValues {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.push((field.clone(), value));
    }
}

impl FieldTarget for EventFields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.name = Some(value.as_str().into_owned());
        } else {
            self.attributes.push(KeyValue::new(Key::from_static_str(field.name()), value));
        }
    }
}

/// Turns `tracing` field values into OpenTelemetry values: integers stay integers (a `u64`
/// beyond `i64` becomes its decimal string), everything else that is not a number or a
/// boolean becomes a string.
pub(super) struct OtelValues<'a, P>(pub(super) &'a mut P);

impl<P: FieldTarget> Visit for OtelValues<'_, P> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.put(field, Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.put(field, Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.put(field, i64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::I64));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.put(field, Value::F64(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.put(field, Value::from(value.to_owned()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.put(field, Value::from(format!("{value:?}")));
    }
}
