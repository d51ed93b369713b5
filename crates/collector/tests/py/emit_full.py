"""Sends one span using every part of OTLP's Span with the OpenTelemetry Python SDK and
prints, as JSON, its ids and the ExportTraceServiceRequest the SDK's own encoder makes of
it (hex of the protobuf bytes: what the exporter puts on the wire), so that the test can
compare what arrived field by field. The exporter reads the usual variables, e.g.
OTEL_EXPORTER_OTLP_COMPRESSION=gzip.

The span: SERVER, status ERROR "boom", an event `retrying {attempt: 2}`, int, float, bool
and string-array attributes, a link with attributes, a tracestate (from its remote
parent), resource `service.name` and `host.name`.

    emit_full.py grpc http://127.0.0.1:PORT SERVICE
    emit_full.py http http://127.0.0.1:PORT/v1/traces SERVICE
"""
import json
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

protocol, endpoint, service = sys.argv[1], sys.argv[2], sys.argv[3]
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint)

resource = Resource.create({"service.name": service, "host.name": "build-7"})
provider = TracerProvider(resource=resource)
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("emit_full", "1.2.3")

parent = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "opaque-1"), ("other", "x")]),
)
linked = SpanContext(
    trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)
with tracer.start_as_current_span(
    "GET /jobs",
    context=trace.set_span_in_context(NonRecordingSpan(parent)),
    kind=SpanKind.SERVER,
    links=[Link(linked, attributes={"link.reason": "retry-of", "link.n": 3})],
    attributes={
        "http.response.status_code": 500,
        "load": 0.75,
        "cached": False,
        "tags": ["a", "b"],
        "ratios": [0.5, 1.5],
    },
) as span:
    span.add_event("retrying", {"attempt": 2})
    span.set_status(Status(StatusCode.ERROR, "boom"))

c = span.get_span_context()
provider.shutdown()
print(json.dumps({
    "trace_id": format(c.trace_id, "032x"),
    "span_id": format(c.span_id, "016x"),
    "request": encode_spans([span]).SerializeToString().hex(),
}))
