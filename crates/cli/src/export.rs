//! `tracewire export`: stored spans written as OTLP JSON lines, or replayed into any OTLP
//! backend (Jaeger v2, Grafana Tempo, an OpenTelemetry Collector, rotel-agent, another
//! `tracewire collect`) over OTLP/HTTP (protobuf) or OTLP/gRPC.
//!
//! Replaying follows the OTLP specification's exporter rules (opentelemetry-proto
//! `docs/specification.md`): spans go in batches (`--batch`), one export request each,
//! grouped under their resource and scope; a "Partial Success" answer counts its
//! `rejected_spans` as rejected; the retryable failures ("Failures", "OTLP/HTTP
//! Throttling", "OTLP/gRPC Throttling": HTTP 429, 502, 503, 504 honouring `Retry-After`;
//! gRPC UNAVAILABLE and the other retryable codes, RESOURCE_EXHAUSTED only with a
//! `RetryInfo`, whose delay is honoured) and failures to connect are retried with
//! exponential backoff and jitter, for at most `--retry-for` per batch; any other failure
//! refuses its batch (counted as rejected), and the export goes on with the next one.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest};
use prost::Message;
use tracewire_collector::google_rpc::{Status as RpcStatus, retry_delay};
use tracewire_store::{SpanFilter, SpanRecord, Store, to_request};

use crate::flags;
use crate::shutdown::{self, Stop};

/// The first wait before retrying a batch; it doubles (with jitter) up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// The longest wait between two attempts of a batch that the backoff chooses (a server's
/// `Retry-After` or `RetryInfo` may ask for longer, within `--retry-for`).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The exit status when spans were rejected or not sent (2 is clap's, for a usage error).
const EXIT_INCOMPLETE: i32 = 3;

/// How often progress goes to stderr during a long export.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `tracewire export`'s arguments.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["otlp_json", "otlp_endpoint"])))]
pub(crate) struct ExportArgs {
    /// The database (written by `tracewire collect --db`).
    #[arg(long)]
    db: PathBuf,
    /// Write the spans to OUT as OTLP JSON, one ExportTraceServiceRequest per line (up to
    /// --batch spans each), as the OpenTelemetry Collector's file exporter writes them;
    /// `-` writes to stdout.
    #[arg(long, value_name = "OUT")]
    otlp_json: Option<PathBuf>,
    /// Send the spans to this OTLP receiver, http://HOST:PORT[/PATH]. With --protocol http
    /// the spans are POSTed to URL/v1/traces, or to URL itself when it already ends in
    /// /v1/traces (so the values of both OTEL_EXPORTER_OTLP_ENDPOINT and
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT work); with grpc URL is the gRPC server.
    /// Plain http only (no TLS).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// The OTLP transport for --otlp-endpoint: http (OTLP/HTTP, protobuf) or grpc.
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    protocol: Protocol,
    /// Compress requests to --otlp-endpoint.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// Only the spans of this trace: 32 hex digits (repeatable).
    #[arg(long = "trace", value_name = "ID", value_parser = parse_trace_id)]
    traces: Vec<String>,
    /// Only spans that start at or after T: an RFC 3339 time (2026-12-05T14:00:00Z,
    /// 2026-12-05T15:00:00.5+01:00) or a duration ago (90s, 15m, 1h, 2d, 1h30m).
    #[arg(long, value_name = "T", value_parser = parse_when)]
    since: Option<i64>,
    /// Only spans that start before T (as --since).
    #[arg(long, value_name = "T", value_parser = parse_when)]
    until: Option<i64>,
    /// Spans per export request (and per JSON line).
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// How long one request may take (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = flags::duration)]
    timeout: Option<Duration>,
    /// --timeout in milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// How long to keep retrying one batch after retryable failures (the backend
    /// unreachable or asking to back off; default 30s); then the export stops.
    #[arg(long, value_name = "DURATION", value_parser = flags::duration)]
    retry_for: Option<Duration>,
    /// --retry-for in milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    retry_for_ms: Option<u64>,
}

/// The default of `--timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default of `--retry-for`.
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);

/// An OTLP transport.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// OTLP/HTTP with protobuf bodies (`POST /v1/traces`).
    Http,
    /// OTLP/gRPC (`TraceService/Export`).
    Grpc,
}

/// Request compression.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum Compression {
    /// None.
    None,
    /// gzip (`Content-Encoding: gzip`, gRPC's `grpc-encoding: gzip`).
    Gzip,
}

/// A `--trace` value: 32 hex digits, not all zero (W3C Trace Context, "trace-id"; OTLP
/// requires 16 bytes), lowercased.
fn parse_trace_id(s: &str) -> Result<String, String> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a trace id (32 hex digits)"));
    }
    if s.bytes().all(|b| b == b'0') {
        return Err("the all-zero trace id is invalid".to_owned());
    }
    Ok(s.to_ascii_lowercase())
}

/// A `--since`/`--until` value as Unix nanoseconds: an RFC 3339 time, or a duration before
/// now.
fn parse_when(s: &str) -> Result<i64, String> {
    if let Ok(ago) = flags::duration(s) {
        let ago = i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX);
        let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos())
            .unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(ago));
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!("{s:?} is neither an RFC 3339 time (2026-12-05T14:00:00Z) nor a duration ago (90s, 15m, 1h, 2d, 1h30m)")
    })
}

/// An RFC 3339 `date-time` (section 5.6: `2026-12-05T14:00:00.123Z`, `...+01:00`; `t`,
/// `z` and a space for `T` accepted, as its note allows) as Unix nanoseconds.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let t = s.get(from..to)?;
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().ok() } else { None }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    // Section 5.7: a leap second (60) is allowed.
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Nanoseconds: the first nine digits, padded.
        for k in 0..9 {
            let d = if k < digits { i64::from(b[i + 1 + k] - b'0') } else { 0 };
            frac_ns = frac_ns * 10 + d;
        }
        i += 1 + digits;
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            if b.get(i + 3) != Some(&b':') {
                return None;
            }
            let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            if *sign == b'-' { -(oh * 3600 + om * 60) } else { oh * 3600 + om * 60 }
        }
        _ => return None,
    };
    if i != b.len() {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Runs `tracewire export`; the exit status (see the subcommand's help).
pub(crate) async fn run(args: ExportArgs) -> Result<i32> {
    // Before anything else: from here on a signal stops a replay between batches.
    let stop = shutdown::listen()?;
    let db = &args.db;
    if !db.is_file() {
        bail!("{}: no such database (write one with `tracewire collect --db {}`)", db.display(), db.display());
    }
    if let (Some(since), Some(until)) = (args.since, args.until) {
        if since >= until {
            bail!("--since is not before --until: no span can match");
        }
    }
    let store = Store::open(db).with_context(|| format!("opening {}", db.display()))?;
    let filter = SpanFilter { traces: args.traces.clone(), since_ns: args.since, until_ns: args.until };
    let spans = store.spans_matching(filter).await.with_context(|| format!("reading spans from {}", db.display()))?;
    let batch = usize::try_from(args.batch).unwrap_or(usize::MAX);
    if let Some(out) = &args.otlp_json {
        let lines = write_json(out, &spans, batch)?;
        let to = if out == Path::new("-") { "stdout".to_owned() } else { out.display().to_string() };
        eprintln!("wrote {} spans as OTLP JSON ({lines} lines) to {to}", spans.len());
        return Ok(0);
    }
    let Some(url) = &args.otlp_endpoint else { bail!("give --otlp-json OUT or --otlp-endpoint URL") };
    let timeout = flags::or_millis(args.timeout, args.timeout_ms, DEFAULT_TIMEOUT);
    let retry_for = flags::or_millis(args.retry_for, args.retry_for_ms, DEFAULT_RETRY_FOR);
    let mut sender = Sender::new(url, args.protocol, args.compression, timeout)?;
    replay(&mut sender, &spans, batch, retry_for, &stop).await
}

/// Writes `spans` to `out` (`-`: stdout) as OTLP JSON lines of up to `batch` spans;
/// returns the number of lines.
fn write_json(out: &Path, spans: &[SpanRecord], batch: usize) -> Result<usize> {
    let mut w: Box<dyn Write> = if out == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        Box::new(std::io::BufWriter::new(file))
    };
    let lines = tracewire_collector::otlp_json::write_lines_per(spans, &mut w, batch)
        .with_context(|| format!("writing {}", out.display()))?;
    w.flush().with_context(|| format!("writing {}", out.display()))?;
    Ok(lines)
}

/// Why an attempt to send a batch failed.
#[derive(Debug)]
enum Failure {
    /// Worth another attempt (after the server's delay, when it gave one).
    Retryable { reason: String, after: Option<Duration> },
    /// The server refused the batch; sending it again would not help.
    Refused(String),
}

/// An OTLP exporter of requests.
enum Sender {
    Http { client: reqwest::Client, url: String, gzip: bool },
    Grpc { client: TraceServiceClient<tonic::transport::Channel>, url: String },
}

impl Sender {
    fn new(url: &str, protocol: Protocol, compression: Compression, timeout: Duration) -> Result<Self> {
        let base = url.trim_end_matches('/');
        if base.starts_with("https://") {
            bail!("--otlp-endpoint {url}: tracewire export speaks plain http only (no TLS)");
        }
        let Some(authority) = base.strip_prefix("http://").filter(|a| !a.is_empty()) else {
            bail!("--otlp-endpoint {url:?}: give http://HOST:PORT");
        };
        let gzip = compression == Compression::Gzip;
        match protocol {
            Protocol::Http => {
                let url = if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") };
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .build()
                    .context("building the HTTP client")?;
                Ok(Self::Http { client, url, gzip })
            }
            Protocol::Grpc => {
                let host = authority.split('/').next().unwrap_or(authority);
                let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}"))
                    .with_context(|| format!("--otlp-endpoint {url:?}"))?
                    .connect_timeout(timeout)
                    .timeout(timeout);
                let mut client = TraceServiceClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(16 << 20)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
                if gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Ok(Self::Grpc { client, url: format!("http://{host}") })
            }
        }
    }

    /// Where the spans go.
    fn url(&self) -> &str {
        match self {
            Self::Http { url, .. } | Self::Grpc { url, .. } => url,
        }
    }

    /// One attempt: the server's partial success (if it sent one), or why it failed.
    async fn send(
        &mut self,
        request: &ExportTraceServiceRequest,
    ) -> Result<Option<ExportTracePartialSuccess>, Failure> {
        match self {
            Self::Http { client, url, gzip } => send_http(client, url, *gzip, request).await,
            Self::Grpc { client, url } => match client.export(tonic::Request::new(request.clone())).await {
                Ok(response) => Ok(response.into_inner().partial_success),
                Err(status) => Err(grpc_failure(&status, url)),
            },
        }
    }
}

/// OTLP/HTTP, "Binary Protobuf Encoding": POST the request, read the answer.
async fn send_http(
    client: &reqwest::Client,
    url: &str,
    gzip: bool,
    request: &ExportTraceServiceRequest,
) -> Result<Option<ExportTracePartialSuccess>, Failure> {
    let mut body = request.encode_to_vec();
    let mut post = client.post(url).header("content-type", "application/x-protobuf");
    if gzip {
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
        let compressed = encoder.write_all(&body).and_then(|()| encoder.finish());
        body = compressed.map_err(|e| Failure::Refused(format!("compressing the request: {e}")))?;
        post = post.header("content-encoding", "gzip");
    }
    let response = post.body(body).send().await.map_err(|e| Failure::Retryable {
        reason: if e.is_timeout() {
            format!("{url}: no answer within --timeout")
        } else if e.is_connect() {
            format!("cannot reach {url}: {}", root_cause(&e))
        } else {
            format!("{url}: {}", root_cause(&e))
        },
        after: None,
    })?;
    let status = response.status();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let is_protobuf = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-protobuf"));
    let bytes = response.bytes().await.map_err(|e| Failure::Retryable {
        reason: format!("{url}: reading the answer: {}", root_cause(&e)),
        after: None,
    })?;
    if status.is_success() {
        // "Full Success"/"Partial Success": an ExportTraceServiceResponse (an empty body
        // decodes as one without a partial success).
        return Ok(opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(bytes)
            .ok()
            .and_then(|r| r.partial_success));
    }
    // "Failures": the body is a google.rpc.Status (in protobuf, as sent); fall back to text.
    let message = is_protobuf
        .then(|| RpcStatus::decode(bytes.clone()).ok().map(|s| s.message))
        .flatten()
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
    let reason =
        format!("{url}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") });
    // "Retryable Response Codes": 429, 502, 503, 504.
    if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
        Err(Failure::Retryable { reason, after: retry_after })
    } else {
        Err(Failure::Refused(reason))
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110, section 10.2.3).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
    let w: Vec<&str> = v.split_ascii_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = w.as_slice() else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = MONTHS.iter().position(|x| x == month)? + 1;
    let at = parse_rfc3339(&format!("{year}-{m:02}-{day:0>2}T{time}Z"))?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
    Some(Duration::from_nanos(u64::try_from(at.saturating_sub(now)).unwrap_or(0)))
}

/// OTLP/gRPC "Failures": which status codes are retryable ("Retryable gRPC Status Codes"),
/// and "OTLP/gRPC Throttling": RESOURCE_EXHAUSTED is retried only with a `RetryInfo`,
/// whose `retry_delay` is honoured.
fn grpc_failure(status: &tonic::Status, url: &str) -> Failure {
    use tonic::Code;
    let retry_info = retry_delay(status.details());
    // A connection that failed carries the transport error as its source.
    let reason = if status.code() == Code::Unavailable && std::error::Error::source(status).is_some() {
        format!("cannot reach {url}: {}", root_cause(status))
    } else {
        format!("{url}: gRPC {:?}: {}", status.code(), status.message())
    };
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Failure::Retryable { reason, after: retry_info },
        Code::ResourceExhausted if retry_info.is_some() => Failure::Retryable { reason, after: retry_info },
        _ => Failure::Refused(reason),
    }
}

/// The innermost source of an error (e.g. `Connection refused (os error 111)` under the
/// client's layers of context).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// What happened to the spans of an export.
#[derive(Default)]
struct Tally {
    /// Requests answered.
    requests: u64,
    accepted: u64,
    rejected: u64,
    /// Spans never sent (the export stopped before their batch).
    not_sent: u64,
    /// Batches the server refused whole.
    refused_batches: u64,
}

/// How one batch ended.
enum Outcome {
    Answered(Option<ExportTracePartialSuccess>),
    Refused(String),
    GaveUp(String),
    Stopped,
}

/// A random fraction in [0.5, 1): the jitter of a backoff.
fn jitter(d: Duration) -> Duration {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    #[allow(clippy::cast_precision_loss)]
    let f = 0.5 + (h.finish() >> 11) as f64 / (1u64 << 54) as f64;
    d.mul_f64(f)
}

/// Sends one batch, retrying the retryable failures within `retry_for` (a stop request
/// ends the waiting).
async fn send_batch(
    sender: &mut Sender,
    request: &ExportTraceServiceRequest,
    retry_for: Duration,
    stop: &Stop,
) -> Outcome {
    let t0 = Instant::now();
    let mut backoff = INITIAL_BACKOFF;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let (reason, after) = match sender.send(request).await {
            Ok(partial) => return Outcome::Answered(partial),
            Err(Failure::Refused(reason)) => return Outcome::Refused(reason),
            Err(Failure::Retryable { reason, after }) => (reason, after),
        };
        let wait = after.unwrap_or_else(|| jitter(backoff));
        if t0.elapsed() + wait > retry_for {
            return Outcome::GaveUp(format!(
                "{reason} (gave up after {attempts} attempts in {:.1} s; --retry-for {:?})",
                t0.elapsed().as_secs_f64(),
                retry_for
            ));
        }
        eprintln!("tracewire: {reason}; retrying in {:.1} s", wait.as_secs_f64());
        tokio::select! {
            () = stop.requested() => return Outcome::Stopped,
            () = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether a stop was requested (without waiting).
async fn stopping(stop: &Stop) -> bool {
    tokio::select! {
        biased;
        () = stop.requested() => true,
        () = std::future::ready(()) => false,
    }
}

/// Replays `spans` in batches of `batch`; prints what was accepted and rejected.
async fn replay(
    sender: &mut Sender,
    spans: &[SpanRecord],
    batch: usize,
    retry_for: Duration,
    stop: &Stop,
) -> Result<i32> {
    let total = spans.len() as u64;
    let url = sender.url().to_owned();
    eprintln!("exporting {total} spans to {url} in batches of up to {batch}");
    let mut tally = Tally::default();
    let mut messages: Vec<String> = Vec::new();
    let mut note = |m: String| {
        if messages.len() < 10 && !messages.contains(&m) {
            messages.push(m);
        }
    };
    let (t0, mut last_progress, mut progressed) = (Instant::now(), Instant::now(), false);
    let mut gave_up = None;
    let mut stopped = false;
    let mut done = 0u64;
    for chunk in spans.chunks(batch) {
        let n = chunk.len() as u64;
        if stopping(stop).await {
            stopped = true;
            break;
        }
        match send_batch(sender, &to_request(chunk), retry_for, stop).await {
            Outcome::Answered(partial) => {
                tally.requests += 1;
                let partial = partial.unwrap_or_default();
                let rejected = u64::try_from(partial.rejected_spans).unwrap_or(0).min(n);
                tally.rejected += rejected;
                tally.accepted += n - rejected;
                if !partial.error_message.is_empty() {
                    let kind = if rejected > 0 { "rejected" } else { "warning" };
                    note(format!("{kind}: {}", partial.error_message));
                } else if rejected > 0 {
                    note(format!("rejected: {rejected} spans (the server gave no reason)"));
                }
            }
            Outcome::Refused(reason) => {
                tally.requests += 1;
                tally.rejected += n;
                tally.refused_batches += 1;
                note(format!("refused a batch of {n} spans: {reason}"));
            }
            Outcome::GaveUp(reason) => {
                gave_up = Some(reason);
                break;
            }
            Outcome::Stopped => {
                stopped = true;
                break;
            }
        }
        done += n;
        if last_progress.elapsed() >= PROGRESS_EVERY {
            #[allow(clippy::cast_precision_loss)]
            let rate = done as f64 / t0.elapsed().as_secs_f64();
            eprint!("\rsent {done}/{total} spans ({rate:.0}/s), {} rejected   ", tally.rejected);
            let _ = std::io::stderr().flush();
            (last_progress, progressed) = (Instant::now(), true);
        }
    }
    if progressed {
        eprintln!();
    }
    tally.not_sent = total - done;
    for m in &messages {
        eprintln!("tracewire: {m}");
    }
    let mut line = format!(
        "exported to {url}: {total} spans, {} requests, {} accepted, {} rejected",
        tally.requests, tally.accepted, tally.rejected
    );
    if tally.refused_batches > 0 {
        let _ = write!(line, " ({} batches refused)", tally.refused_batches);
    }
    if tally.not_sent > 0 {
        let _ = write!(line, ", {} not sent", tally.not_sent);
    }
    println!("{line}");
    if let Some(reason) = gave_up {
        bail!("{reason}; {} spans not sent", tally.not_sent);
    }
    if stopped {
        eprintln!("tracewire: stopped by a signal; {} spans not sent", tally.not_sent);
    }
    Ok(if tally.rejected > 0 || tally.not_sent > 0 { EXIT_INCOMPLETE } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_per_section_5_6() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01t00:00:01.5z"), Some(1_500_000_000));
        // 1985-04-12T23:20:50.52Z, the RFC's first example.
        assert_eq!(parse_rfc3339("1985-04-12T23:20:50.52Z"), Some(482_196_050_520_000_000));
        // The RFC's 1996-12-19T16:39:57-08:00 is 1996-12-20T00:39:57Z.
        assert_eq!(parse_rfc3339("1996-12-19T16:39:57-08:00"), parse_rfc3339("1996-12-20T00:39:57Z"));
        assert_eq!(
            parse_rfc3339("2024-02-29 12:00:00.123456789123+01:00"),
            parse_rfc3339("2024-02-29T11:00:00.123456789Z")
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-05T24:00:00Z",
            "2026-12-05T14:00:00",
            "2026-12-05T14:00:00.Z",
            "2026-12-05T14:00:00+0100",
            "2026-12-05",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_ago_parse() {
        for bad in ["", "h", "1", "1y", "1h-", "-1h"] {
            assert!(parse_when(bad).is_err(), "{bad}");
        }
        let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap();
        let hour_ago = parse_when("1h").unwrap();
        assert!((now - 3_600_000_000_000 - hour_ago).abs() < 5_000_000_000);
        assert!(parse_when("soon").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn trace_ids_are_32_hex_digits_and_not_zero() {
        assert_eq!(parse_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736").unwrap(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parse_trace_id("4bf92f3577b34da6a3ce929d0e0e473").is_err());
        assert!(parse_trace_id("4bf92f3577b34da6a3ce929d0e0e473g").is_err());
        assert!(parse_trace_id("00000000000000000000000000000000").is_err());
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert!(parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT").unwrap() > Duration::from_secs(1 << 30));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn a_retry_info_delay_is_read_from_grpc_status_details() {
        let status = RpcStatus::with_retry_info(8, "slow down", Duration::from_millis(2500));
        assert_eq!(retry_delay(&status.encode_to_vec()), Some(Duration::from_millis(2500)));
        let grpc =
            tonic::Status::with_details(tonic::Code::ResourceExhausted, "slow down", status.encode_to_vec().into());
        assert!(matches!(grpc_failure(&grpc, "u"), Failure::Retryable { after: Some(_), .. }));
        let bare = tonic::Status::resource_exhausted("full");
        assert!(matches!(grpc_failure(&bare, "u"), Failure::Refused(_)));
        assert!(matches!(grpc_failure(&tonic::Status::unavailable("x"), "u"), Failure::Retryable { after: None, .. }));
        assert!(matches!(grpc_failure(&tonic::Status::invalid_argument("x"), "u"), Failure::Refused(_)));
    }
}
