//! Reading traces users already have: OTLP JSON (as the OpenTelemetry Collector's file
//! exporter writes it) and Jaeger JSON (the Jaeger UI's download, the query API's answer).
