//! OTLP/HTTP: `POST /v1/traces`, protobuf or JSON, plain or gzip, answered as the OTLP
//! specification says.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use prost::Message;

use super::{Ingested, MAX_REQUEST_BYTES, RETRY_AFTER_SECONDS, ReceiverError, SpanStore, encoding};
use crate::google_rpc::Status as RpcStatus;
use crate::otlp::EncodedRequest;

/// Why an OTLP/HTTP export failed, as its status code says it (OTLP specification,
/// "OTLP/HTTP Response", "Failures").
#[derive(Debug)]
enum Failure {
    /// 400: the body cannot be decoded ("Bad Data"; not to be retried).
    BadData(String),
    /// 413: the body is over [`MAX_REQUEST_BYTES`], as sent or decompressed ("OTLP/HTTP
    /// Request"; not to be retried).
    TooLarge(String),
    /// 415: a content coding the receiver does not decode; the answer's `Accept-Encoding`
    /// lists those it does (RFC 9110 sections 15.5.16 and 12.5.3).
    UnsupportedEncoding(String),
    /// 415: a media type other than OTLP's two ("Binary Protobuf Encoding",
    /// "JSON Protobuf Encoding"), or none.
    UnsupportedMediaType(String),
    /// 503 with `Retry-After`: the database cannot take the batch now ("OTLP/HTTP
    /// Throttling"; to be retried).
    Unavailable(String),
}

impl From<encoding::BodyError> for Failure {
    fn from(e: encoding::BodyError) -> Self {
        match e {
            encoding::BodyError::Unsupported(_) => Self::UnsupportedEncoding(e.to_string()),
            encoding::BodyError::TooLarge { .. } => Self::TooLarge(e.to_string()),
            encoding::BodyError::Corrupt(_) | encoding::BodyError::Read(_) => Self::BadData(e.to_string()),
        }
    }
}

impl Failure {
    /// The answer, its body a `Status` in the request's encoding (protobuf, or JSON for a
    /// JSON request: "The server MUST use the same "Content-Type" in the response as it
    /// received in the request").
    fn respond(self, json: bool) -> axum::response::Response {
        let coding = matches!(self, Self::UnsupportedEncoding(_));
        let (status, code, message) = match self {
            Self::BadData(m) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, m),
            Self::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::ResourceExhausted, m),
            Self::UnsupportedEncoding(m) | Self::UnsupportedMediaType(m) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, tonic::Code::Unimplemented, m)
            }
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable, m),
        };
        let body = RpcStatus { code: code as i32, message, details: Vec::new() };
        let mut response = if json {
            let text = serde_json::json!({ "code": body.code, "message": body.message }).to_string();
            (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
        } else {
            (status, [(header::CONTENT_TYPE, "application/x-protobuf")], body.encode_to_vec()).into_response()
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if coding {
            response
                .headers_mut()
                .insert(header::ACCEPT_ENCODING, header::HeaderValue::from_static(encoding::ACCEPTED));
        }
        response
    }
}

/// The encodings of an OTLP/HTTP body, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    /// `application/x-protobuf` ("Binary Protobuf Encoding").
    Protobuf,
    /// `application/json` ("JSON Protobuf Encoding").
    Json,
}

/// The media type of a request: its `Content-Type`'s type and subtype, case-insensitive,
/// parameters (`; charset=utf-8`) ignored (RFC 9110 section 8.3.1); `None` for any other,
/// or none (RFC 9110 section 8.3: then "application/octet-stream" may be assumed, which
/// OTLP is not).
fn media_type(headers: &HeaderMap) -> Option<MediaType> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/x-protobuf") {
        Some(MediaType::Protobuf)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Some(MediaType::Json)
    } else {
        None
    }
}

async fn http_export(
    axum::extract::State(store): axum::extract::State<Arc<SpanStore>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    let Some(media) = media_type(&headers) else {
        // Read to its end all the same, so that the connection serves the next request.
        encoding::discard(body, MAX_REQUEST_BYTES).await;
        let given = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let message = format!(
            "unsupported Content-Type {} (OTLP/HTTP takes application/x-protobuf or application/json)",
            given.map_or_else(|| "(none)".to_owned(), |g| format!("{g:?}"))
        );
        return Failure::UnsupportedMediaType(message).respond(false);
    };
    let json = media == MediaType::Json;
    match export_body(&store, &headers, body, json).await {
        Ok(ingested) if json => {
            ([(header::CONTENT_TYPE, "application/json")], ingested.json_response()).into_response()
        }
        Ok(ingested) => {
            ([(header::CONTENT_TYPE, "application/x-protobuf")], ingested.response().encode_to_vec()).into_response()
        }
        Err(failure) => failure.respond(json),
    }
}

/// Reads, decodes and ingests one OTLP/HTTP body.
async fn export_body(
    store: &SpanStore,
    headers: &HeaderMap,
    body: axum::body::Body,
    json: bool,
) -> Result<Ingested, Failure> {
    let body = encoding::read(headers, body, MAX_REQUEST_BYTES).await?;
    let bad = |e: &dyn std::fmt::Display| Failure::BadData(format!("cannot decode the export request: {e}"));
    let ingested = if json {
        let request = crate::otlp_json::decode_slice(&body).map_err(|e| bad(&e))?;
        store.ingest(request).await
    } else {
        store.ingest_encoded(EncodedRequest::new(body).map_err(|e| bad(&e))?).await
    };
    ingested.map_err(|e| match e {
        tracewire_store::StoreError::Malformed(e) => bad(&e),
        e => Failure::Unavailable(format!("the span database cannot take this batch now ({e}); retry")),
    })
}

/// Serves OTLP/HTTP (`POST /v1/traces`, `application/x-protobuf` or `application/json`,
/// as it is or gzip-compressed: `Content-Encoding: gzip`) on `listener` until `shutdown`.
///
/// Answers as the OTLP specification says ("OTLP/HTTP Response"): 200 with an
/// `ExportTraceServiceResponse` (with `partial_success` when spans with invalid ids were
/// rejected); 400 for a body that cannot be decoded (corrupt gzip included); 413 for a body
/// over [`MAX_REQUEST_BYTES`] as sent or once decompressed (a compressed body is inflated as
/// it arrives and abandoned at the limit); 415 for a `Content-Type` other than
/// `application/x-protobuf` and `application/json`, and (with `Accept-Encoding`) for any
/// content coding other than gzip and identity; 503 with `Retry-After` when the database
/// cannot take the batch. Responses are in the request's encoding (failures: a
/// `google.rpc.Status`; protobuf when the content type is not supported).
///
/// # Errors
/// When serving fails.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    store: Arc<SpanStore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(http_export)).with_state(store);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(|e| ReceiverError::Io(e.to_string()))
}
