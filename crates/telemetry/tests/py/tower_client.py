"""An OpenTelemetry-instrumented Python HTTP client, for the tower layer tests.

    tower_client.py <url>

Starts a CLIENT span (with baggage tenant=acme in its context), injects the context with
the W3C trace-context and baggage propagators into urllib's request headers, GETs <url>,
and prints one line: trace_id span_id http_status body.
"""
import sys
import urllib.request

from opentelemetry import baggage, context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def main():
    url = sys.argv[1]
    provider = TracerProvider()
    tracer = provider.get_tracer("tower-interop")
    propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    with tracer.start_as_current_span("python.get", kind=trace.SpanKind.CLIENT) as span:
        headers = {}
        propagator.inject(headers)
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
            body = response.read().decode()
        sc = span.get_span_context()
        print(f"{sc.trace_id:032x} {sc.span_id:016x} {status} {body}")
    context.detach(token)
    provider.shutdown()


if __name__ == "__main__":
    main()
