//! OTLP/HTTP request bodies: their content coding (`Content-Encoding`, RFC 9110 section
//! 8.4) and the size bound, which holds for the body as decoded.
//!
//! The OTLP specification requires a server to accept `none` and `gzip` ("Protocol
//! Details"; "OTLP/HTTP Request": "The client MAY gzip the content and in that case MUST
//! include "Content-Encoding: gzip""), and to limit the body "including after
//! decompression", answering 413 when the limit is exceeded. So a gzip body is inflated as
//! it arrives, chunk by chunk, into a buffer that may not grow past the limit: a small body
//! that inflates past it (a "gzip bomb") costs at most the limit in memory, never its
//! inflated size. Other codings are refused (415, RFC 9110 section 15.5.16).

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;

/// The content codings accepted, as the `Accept-Encoding` of a 415 lists them (RFC 9110
/// section 12.5.3).
pub(super) const ACCEPTED: &str = "gzip, identity";

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    /// As it is (no `Content-Encoding`, or `identity`).
    Identity,
    /// gzip (RFC 1952; one member or several, one after another).
    Gzip,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// A content coding other than gzip or identity, or gzip applied more than once.
    #[error("unsupported Content-Encoding {0:?} (accepted: {ACCEPTED})")]
    Unsupported(String),
    /// The body, as sent or once decompressed, is larger than the limit.
    #[error("the request body is larger than {limit} bytes{}", if *.decompressed { " once decompressed" } else { "" })]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
        /// Whether the decompressed body went past it (not the body as sent).
        decompressed: bool,
    },
    /// The body is not valid gzip (bad header, corrupt or truncated data, wrong checksum).
    #[error("the gzip body is corrupt: {0}")]
    Corrupt(std::io::Error),
    /// Reading the body from the connection failed.
    #[error("reading the request body: {0}")]
    Read(axum::Error),
}

/// The coding of a request from its `Content-Encoding` header fields: a list of codings
/// in the order they were applied, names case-insensitive; `x-gzip` is `gzip` (RFC 9110
/// section 8.4.1.3) and `identity` changes nothing.
fn coding(headers: &HeaderMap) -> Result<Coding, BodyError> {
    let mut coding = Coding::Identity;
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err(BodyError::Unsupported(String::from_utf8_lossy(value.as_bytes()).into_owned()));
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name.eq_ignore_ascii_case("identity") {
                continue;
            }
            if (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && coding == Coding::Identity
            {
                coding = Coding::Gzip;
                continue;
            }
            let all: Vec<&str> =
                headers.get_all(header::CONTENT_ENCODING).iter().filter_map(|v| v.to_str().ok()).collect();
            return Err(BodyError::Unsupported(all.join(", ")));
        }
    }
    Ok(coding)
}

/// A buffer that refuses to grow past `limit` bytes (and never reserves more than that).
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    /// The size expected in all (a declared `Content-Length`), reserved at the first write.
    expect: usize,
    over: bool,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Self { buf: Vec::new(), limit, expect: 0, over: false }
    }
}

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let need = self.buf.len() + data.len();
        if need > self.limit {
            self.over = true;
            return Err(std::io::Error::other("over the limit"));
        }
        if need > self.buf.capacity() {
            // Doubling, but never past the limit.
            let want = need.max(self.buf.capacity() * 2).max(self.expect).min(self.limit);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where the chunks of a body go.
enum Sink {
    /// Identity: the first chunk as it came (a one-chunk body is not copied), then all.
    Plain { first: Option<Bytes>, rest: Bounded },
    /// gzip: inflated as it comes.
    Gzip(flate2::write::MultiGzDecoder<Bounded>),
}

impl Sink {
    fn push(&mut self, chunk: Bytes) -> Result<(), BodyError> {
        match self {
            Self::Plain { first, rest } => {
                if first.is_none() && rest.buf.is_empty() {
                    *first = Some(chunk);
                    return Ok(());
                }
                if let Some(first) = first.take() {
                    write_plain(rest, &first)?;
                }
                write_plain(rest, &chunk)
            }
            Self::Gzip(decoder) => decoder.write_all(&chunk).map_err(|e| gzip_error(decoder.get_ref(), e)),
        }
    }

    fn finish(self) -> Result<Bytes, BodyError> {
        match self {
            Self::Plain { first: Some(first), .. } => Ok(first),
            Self::Plain { first: None, rest } => Ok(rest.buf.into()),
            Self::Gzip(mut decoder) => {
                // The end of the body must be the end of a member, its checksum and size right.
                decoder.try_finish().map_err(|e| gzip_error(decoder.get_ref(), e))?;
                Ok(std::mem::take(&mut decoder.get_mut().buf).into())
            }
        }
    }
}

fn write_plain(out: &mut Bounded, data: &[u8]) -> Result<(), BodyError> {
    out.write_all(data).map_err(|_| BodyError::TooLarge { limit: out.limit, decompressed: false })
}

fn gzip_error(out: &Bounded, e: std::io::Error) -> BodyError {
    if out.over { BodyError::TooLarge { limit: out.limit, decompressed: true } } else { BodyError::Corrupt(e) }
}

/// Reads a request body, decoded as its `Content-Encoding` says, of at most `limit` bytes
/// both as sent and as decoded.
///
/// A declared `Content-Length` over the limit is refused before reading. Any other refusal
/// (an unsupported coding, too large once inflated, corrupt) still reads the rest of the
/// body, discarding it, up to `limit` bytes as sent: the connection stays usable for the
/// sender's next request, and the sender reads the answer rather than a reset connection
/// (which an OTLP client takes for a reason to retry).
pub(super) async fn read(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit, decompressed: false });
    }
    let mut state = coding(headers).map(|coding| match coding {
        Coding::Identity => {
            let mut rest = Bounded::new(limit);
            // Reserved only once a second chunk comes.
            rest.expect = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
            Sink::Plain { first: None, rest }
        }
        Coding::Gzip => Sink::Gzip(flate2::write::MultiGzDecoder::new(Bounded::new(limit))),
    });
    let mut sent = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return Err(state.err().unwrap_or(BodyError::Read(e))),
        };
        let Ok(chunk) = frame.into_data() else { continue };
        sent = sent.saturating_add(chunk.len());
        if sent > limit {
            return Err(state.err().unwrap_or(BodyError::TooLarge { limit, decompressed: false }));
        }
        let pushed = match &mut state {
            Ok(sink) => sink.push(chunk),
            Err(_) => Ok(()),
        };
        if let Err(e) = pushed {
            state = Err(e);
        }
    }
    state.and_then(Sink::finish)
}

/// Reads a request body to its end, or to `limit` bytes as sent, and drops it: the body of
/// a request refused before it is read (an unsupported media type), so that the connection
/// serves the sender's next request, as after any refusal of [`read`].
pub(super) async fn discard(mut body: Body, limit: usize) {
    let mut sent = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(chunk) = frame.into_data() {
            sent = sent.saturating_add(chunk.len());
            if sent > limit {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(encodings: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for e in encodings {
            h.append(header::CONTENT_ENCODING, e.parse().unwrap());
        }
        h
    }

    #[test]
    fn content_encoding_names_and_lists() {
        for (given, want) in [
            (&[][..], Some(Coding::Identity)),
            (&["identity"], Some(Coding::Identity)),
            (&["gzip"], Some(Coding::Gzip)),
            (&["GZip"], Some(Coding::Gzip)),
            (&["x-gzip"], Some(Coding::Gzip)),
            (&["identity, gzip"], Some(Coding::Gzip)),
            (&["gzip", "identity"], Some(Coding::Gzip)),
            (&["deflate"], None),
            (&["zstd"], None),
            (&["br"], None),
            (&["gzip, gzip"], None),
            (&["gzip", "deflate"], None),
        ] {
            let got = coding(&headers(given)).ok();
            assert_eq!(got, want, "{given:?}");
        }
    }

    #[test]
    fn the_bounded_buffer_never_reserves_past_its_limit() {
        let mut b = Bounded::new(1000);
        for _ in 0..10 {
            b.write_all(&[0; 99]).unwrap();
        }
        assert!(b.write_all(&[0; 11]).is_err());
        assert!(b.over);
        assert!(b.buf.capacity() <= 1000, "{}", b.buf.capacity());
        assert_eq!(b.buf.len(), 990);
    }
}
