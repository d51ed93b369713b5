"""Python side of the interop tests, using the OpenTelemetry Python SDK.

    interop.py continue <traceparent> <grpc-endpoint>   continue our trace, print ids
    interop.py start <grpc-endpoint>                    start a trace, print its traceparent

Prints one line: trace_id span_id parent_id traceparent (parent_id is '-' for a root).
"""
import sys

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def provider(endpoint):
    p = TracerProvider(resource=Resource.create({"service.name": "python-interop"}))
    p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    return p


def main():
    mode = sys.argv[1]
    prop = TraceContextTextMapPropagator()
    if mode == "continue":
        traceparent, endpoint = sys.argv[2], sys.argv[3]
        ctx = prop.extract({"traceparent": traceparent})
        name = "python.child"
    elif mode == "start":
        endpoint = sys.argv[2]
        ctx = None
        name = "python.root"
    else:
        raise SystemExit(f"unknown mode {mode}")
    p = provider(endpoint)
    tracer = p.get_tracer("interop")
    with tracer.start_as_current_span(name, context=ctx) as span:
        carrier = {}
        prop.inject(carrier)
        sc = span.get_span_context()
        parent = span.parent.span_id if span.parent is not None else None
        print(
            f"{sc.trace_id:032x} {sc.span_id:016x} "
            f"{'-' if parent is None else format(parent, '016x')} {carrier['traceparent']}"
        )
    p.shutdown()


if __name__ == "__main__":
    main()
