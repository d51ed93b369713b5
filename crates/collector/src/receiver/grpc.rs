//! OTLP/gRPC: `TraceService/Export` over a codec that validates the request's bytes
//! instead of decoding them; throttling answers; the size limit's status.

use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::{Request, Response, Status};

use super::{MAX_REQUEST_BYTES, RETRY_AFTER_SECONDS, ReceiverError, SpanStore};
use crate::google_rpc::{RetryInfo, Status as RpcStatus};
use crate::otlp::EncodedRequest;

/// tonic codec of `TraceService/Export` that keeps the request's bytes: the message
/// (already reassembled and, if compressed, inflated by tonic) is validated
/// ([`EncodedRequest::new`]), not decoded; a malformed one is `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy, Default)]
struct EncodedCodec;

#[derive(Debug)]
struct EncodedDecoder;

#[derive(Debug)]
struct ResponseEncoder;

impl Codec for EncodedCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = EncodedRequest;
    type Encoder = ResponseEncoder;
    type Decoder = EncodedDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedDecoder
    }
}

impl Decoder for EncodedDecoder {
    type Item = EncodedRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<EncodedRequest>, Status> {
        use bytes::Buf;
        // Zero-copy: tonic's buffer is split, not copied.
        let bytes = src.copy_to_bytes(src.remaining());
        EncodedRequest::new(bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed ExportTraceServiceRequest: {e}")))
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: ExportTraceServiceResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

/// The gRPC path of `TraceService/Export`.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `TraceService` over [`EncodedCodec`] (what `TraceServiceServer` is over prost's codec).
#[derive(Debug, Clone)]
struct TraceServer {
    store: Arc<SpanStore>,
    accept: tonic::codec::EnabledCompressionEncodings,
}

/// The unary `Export` call: the validated request into the store, the store's answer.
#[derive(Debug, Clone)]
struct ExportService(Arc<SpanStore>);

impl tonic::server::UnaryService<EncodedRequest> for ExportService {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<ExportTraceServiceResponse>, Status>;

    fn call(&mut self, request: Request<EncodedRequest>) -> Self::Future {
        let store = Arc::clone(&self.0);
        Box::pin(async move {
            match store.ingest_encoded(request.into_inner()).await {
                Ok(ingested) => Ok(Response::new(ingested.response())),
                // (Not reached: the codec validated the request, more strictly than the store.)
                Err(tracewire_store::StoreError::Malformed(e)) => {
                    Err(Status::invalid_argument(format!("malformed ExportTraceServiceRequest: {e}")))
                }
                Err(e) => Err(throttled(format!("the span database cannot take this batch now ({e}); retry"))),
            }
        })
    }
}

impl<B> Service<http::Request<B>> for TraceServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("only TraceService/Export is served").into_http()) });
        }
        let export = ExportService(Arc::clone(&self.store));
        let accept = self.accept;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EncodedCodec)
                .apply_compression_config(accept, tonic::codec::EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(too_large_is_resource_exhausted(grpc.unary(export, req).await))
        })
    }
}

/// OTLP/gRPC backpressure (OTLP specification, "OTLP/gRPC Throttling": "the server SHOULD
/// return an error with code Unavailable and MAY supply additional details via status using
/// RetryInfo"): `UNAVAILABLE` whose details (`grpc-status-details-bin`, a `google.rpc.Status`,
/// as grpc-go, grpc-java and tonic-types read it) hold a `google.rpc.RetryInfo` of
/// [`RETRY_AFTER_SECONDS`], also sent alone as the `google.rpc.retryinfo-bin` trailer (where
/// the OpenTelemetry Python SDK's exporter reads it).
fn throttled(message: String) -> Status {
    let delay = std::time::Duration::from_secs(RETRY_AFTER_SECONDS);
    let retry = RetryInfo::after(delay);
    let details = RpcStatus::with_retry_info(tonic::Code::Unavailable as i32, &message, delay);
    let mut status = Status::with_details(tonic::Code::Unavailable, message, details.encode_to_vec().into());
    status
        .metadata_mut()
        .insert_bin("google.rpc.retryinfo-bin", tonic::metadata::MetadataValue::from_bytes(&retry.encode_to_vec()));
    status
}

/// tonic answers a message over its size limit (as sent) with `OUT_OF_RANGE`, which OTLP
/// clients retry ("OTLP/gRPC Response", "Failures": `OUT_OF_RANGE` is retryable); OTLP says
/// otherwise ("OTLP/gRPC Request": "If the limit is exceeded, the client MUST treat the error
/// as not-retryable. Note that in such a scenario, the gRPC server implementations return a
/// `RESOURCE_EXHAUSTED` status code"). The export itself never answers `OUT_OF_RANGE`, so
/// that answer is tonic's size check, made `RESOURCE_EXHAUSTED` (without `RetryInfo`: not to
/// be retried, as a message too large once decompressed already is).
fn too_large_is_resource_exhausted(response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .is_some_and(|code| code == tonic::Code::OutOfRange as i32);
    if !out_of_range {
        return response;
    }
    Status::resource_exhausted(format!(
        "the export request is larger than {MAX_REQUEST_BYTES} bytes; split it into smaller batches"
    ))
    .into_http()
}

impl tonic::server::NamedService for TraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// Serves OTLP/gRPC on `listener` until `shutdown`.
///
/// # Errors
/// When serving fails.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    store: Arc<SpanStore>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ReceiverError> {
    // Collectors (rotel-agent, the OpenTelemetry Collector) forward gzip-compressed.
    let mut accept = tonic::codec::EnabledCompressionEncodings::default();
    accept.enable(tonic::codec::CompressionEncoding::Gzip);
    tonic::transport::Server::builder()
        // Export requests are often larger than HTTP/2's default 64 KiB window: with the
        // default, every request waits for window updates.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .tcp_nodelay(true)
        .add_service(TraceServer { store, accept })
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| ReceiverError::Io(e.to_string()))
}
