"""Sends a parent and N child spans (default 1) with the OpenTelemetry Python SDK and
prints what it sent as JSON, so the test can compare it with what arrived. The exporter
reads the usual variables, e.g. OTEL_EXPORTER_OTLP_COMPRESSION=gzip.

    emit.py grpc http://127.0.0.1:PORT [N]
    emit.py http http://127.0.0.1:PORT/v1/traces [N]
"""
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

protocol, endpoint = sys.argv[1], sys.argv[2]
children = int(sys.argv[3]) if len(sys.argv) > 3 else 1
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
spans = []
with tracer.start_as_current_span("parent", attributes={"tracewire.stage": "exec", "n": 7}) as parent:
    for i in range(children):
        attributes = {"rpc.method": "Start"} if i == 0 else {"rpc.method": "Start", "i": i}
        with tracer.start_as_current_span("child", attributes=attributes) as child:
            spans.append(child)
for s in [parent] + spans:
    c = s.get_span_context()
    sent.append({
        "trace_id": format(c.trace_id, "032x"),
        "span_id": format(c.span_id, "016x"),
        "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
        "name": s.name,
        "start_ns": s.start_time,
        "end_ns": s.end_time,
        "attributes": {k: str(v) for k, v in s.attributes.items()},
    })
provider.shutdown()
print(json.dumps(sent))
