"""Sends a parent and a child span with the OpenTelemetry Python SDK and prints what it
sent as JSON, so the test can compare it with what arrived.

    emit.py grpc http://127.0.0.1:PORT
    emit.py http http://127.0.0.1:PORT/v1/traces
"""
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

protocol, endpoint = sys.argv[1], sys.argv[2]
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint)

provider = TracerProvider(resource=Resource.create({"service.name": "py-" + protocol}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("emit")
sent = []
with tracer.start_as_current_span("parent", attributes={"tracewire.stage": "exec", "n": 7}) as parent:
    with tracer.start_as_current_span("child", attributes={"rpc.method": "Start"}) as child:
        pass
for s in (parent, child):
    c = s.get_span_context()
    sent.append({
        "trace_id": format(c.trace_id, "032x"),
        "span_id": format(c.span_id, "016x"),
        "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
        "name": s.name,
        "start_ns": s.start_time,
        "end_ns": s.end_time,
    })
provider.shutdown()
print(json.dumps(sent))
