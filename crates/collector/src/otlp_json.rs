//! Writing spans as OTLP JSON lines, one `ExportTraceServiceRequest` per line, as the
//! OpenTelemetry Collector's file exporter writes them.
