//! The disk spool: a bounded on-disk queue of the OTLP export requests the collector did not
//! take, replayed oldest first when it answers again (see `docs/telemetry.md`, "Disk
//! spool").
//!
//! # Layout of the directory
//!
//! - `lock`: held with an exclusive `flock(2)` by the one process that uses the directory.
//!   A second process finds it taken and runs without the spool (its undelivered spans are
//!   dropped and counted) until the lock is free. The kernel releases it when its holder
//!   exits, also on a crash, so a lock is never stale.
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segment files, numbered in the order they were created.
//!   A segment starts with the 8-byte magic `TWSPOOL1`, then holds records one after
//!   another, each `len: u32 LE | crc: u32 LE | spans: u32 LE | request`, where `len`
//!   counts `spans` and `request` (the encoded `ExportTraceServiceRequest`, exactly what
//!   the exporter sends) and `crc` is the CRC-32C of `len` and what follows it. Records are
//!   only ever appended, each process to segments of its own, so a crash mid-write can only
//!   tear the last record of the segment being written: the next process finds it by its
//!   length or checksum, counts it and cuts the segment there; every record before it is
//!   intact.
//! - `cursor`: how far the oldest segment has been replayed (segment number and offset,
//!   checksummed), replaced atomically (written aside, then renamed) after each replayed
//!   record. A segment replayed to its end is deleted.
//!
//! The bound (`TRACEWIRE_SPOOL_MAX_BYTES`) counts the bytes of every segment file. An
//! append that would exceed it first deletes the oldest segments (a segment is an eighth
//! of the bound, between 4 KiB and 4 MiB), and their spans not yet replayed are counted as
//! evicted.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::config::{Config, Protocol};
use crate::export::ExporterError;

/// The first bytes of every segment file.
const SEGMENT_MAGIC: &[u8; 8] = b"TWSPOOL1";
/// The first bytes of the cursor file.
const CURSOR_MAGIC: &[u8; 8] = b"TWCURSR1";
const SEGMENT_HEADER: u64 = SEGMENT_MAGIC.len() as u64;
/// `len` and `crc`.
const RECORD_HEADER: u64 = RECORD_HEADER_LEN as u64;
const RECORD_HEADER_LEN: usize = 8;
/// `spans`, the first field `len` counts.
const SPANS_FIELD: u64 = SPANS_LEN as u64;
const SPANS_LEN: usize = 4;
const CURSOR_LEN: usize = 28;

/// Why the spool could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// Reading or writing a file of the spool failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("{} is used by another process (its lock file is held)", dir.display())]
    Locked {
        /// The spool directory.
        dir: PathBuf,
    },
    /// One request is larger than the whole spool may be.
    #[error("a request of {bytes} bytes does not fit in a spool of at most {max} bytes")]
    TooLarge {
        /// The record's size on disk.
        bytes: u64,
        /// `TRACEWIRE_SPOOL_MAX_BYTES`.
        max: u64,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), a byte at a time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)]
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for part in parts {
        for &b in *part {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
    }
    !c
}

/// One record of a segment: where it is and how many spans it holds.
#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: u64,
    /// `len`: the spans field and the request.
    len: u32,
    spans: u32,
}

impl Rec {
    fn end(self) -> u64 {
        self.offset + RECORD_HEADER + u64::from(self.len)
    }
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    /// The file's length.
    bytes: u64,
    /// Its records not replayed yet, oldest first.
    records: VecDeque<Rec>,
}

/// The oldest record not replayed yet.
#[derive(Debug)]
pub(crate) struct Head {
    /// The encoded `ExportTraceServiceRequest`.
    pub(crate) request: Vec<u8>,
    /// How many spans it holds.
    pub(crate) spans: u64,
}

/// An open spool directory (its lock held). See the [module](self) documentation.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Holds the `flock`; released when dropped.
    _lock: File,
    /// Oldest first. While `writer` is set, the last one is the segment it appends to.
    segments: VecDeque<Segment>,
    writer: Option<File>,
    /// The head segment, open for reading.
    reader: Option<(u64, File)>,
    next_seq: u64,
    /// The bytes of every segment file.
    total: u64,
    /// Spans in records not replayed yet.
    spans: u64,
    /// Records found torn or corrupt since [`Spool::take_torn`] was last called.
    torn: u64,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

/// Takes the directory's lock without waiting.
#[cfg(unix)]
fn lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join("lock");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_error(&path))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(SpoolError::Locked { dir: dir.to_owned() }),
        Err(e) => Err(SpoolError::Io { path, source: e.into() }),
    }
}

#[cfg(not(unix))]
fn lock(dir: &Path) -> Result<File, SpoolError> {
    Err(SpoolError::Io {
        path: dir.to_owned(),
        source: io::Error::new(io::ErrorKind::Unsupported, "the disk spool needs flock(2)"),
    })
}

/// The records of a segment file read whole, up to the first torn or corrupt one.
/// Returns them and the length of the intact prefix; `None` when the file does not start
/// with a complete magic.
fn scan(data: &[u8]) -> Option<(Vec<Rec>, u64)> {
    if data.get(..SEGMENT_MAGIC.len())? != SEGMENT_MAGIC {
        return None;
    }
    let mut records = Vec::new();
    let mut at = SEGMENT_MAGIC.len();
    while let Some(header) = data.get(at..at + 8) {
        let len_bytes = &header[..4];
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = data.get(at + 8..at + 8 + len as usize) else { break };
        if u64::from(len) < SPANS_FIELD || crc32c(&[len_bytes, payload]) != crc {
            break;
        }
        let spans = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        records.push(Rec { offset: at as u64, len, spans });
        at += 8 + len as usize;
    }
    Some((records, at as u64))
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, bounded to `max_bytes`: takes its
    /// lock, reads the cursor, scans every segment and cuts torn tails (counted in
    /// [`Spool::take_torn`]).
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock = lock(dir)?;
        let (cursor_seq, cursor_offset) = read_cursor(dir).unwrap_or((0, 0));
        let mut seqs: Vec<u64> = fs::read_dir(dir)
            .map_err(io_error(dir))?
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                let stem = name.to_str()?.strip_suffix(".seg")?;
                if stem.len() == 20 { stem.parse().ok() } else { None }
            })
            .collect();
        seqs.sort_unstable();
        let mut me = Self {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(4096, 4 << 20),
            _lock: lock,
            segments: VecDeque::new(),
            writer: None,
            reader: None,
            next_seq: seqs.last().copied().unwrap_or(0).max(cursor_seq) + 1,
            total: 0,
            spans: 0,
            torn: 0,
        };
        for seq in seqs {
            let path = segment_path(dir, seq);
            if seq < cursor_seq {
                // Replayed to its end; its deletion did not happen before a crash.
                remove(&path)?;
                continue;
            }
            let data = fs::read(&path).map_err(io_error(&path))?;
            let Some((records, intact)) = scan(&data) else {
                // A segment whose creation was cut short holds no record; anything else
                // without the magic is not a segment this code wrote.
                if data.len() >= SEGMENT_MAGIC.len() {
                    me.torn += 1;
                }
                remove(&path)?;
                continue;
            };
            if intact < data.len() as u64 {
                me.torn += 1;
                let file = OpenOptions::new().write(true).open(&path).map_err(io_error(&path))?;
                file.set_len(intact).map_err(io_error(&path))?;
            }
            let skip = if seq == cursor_seq { cursor_offset } else { 0 };
            let records: VecDeque<Rec> = records.into_iter().filter(|r| r.offset >= skip).collect();
            if records.is_empty() {
                remove(&path)?;
                continue;
            }
            me.spans += records.iter().map(|r| u64::from(r.spans)).sum::<u64>();
            me.total += intact;
            me.segments.push_back(Segment { seq, bytes: intact, records });
        }
        Ok(me)
    }

    /// Whether every record has been replayed (or evicted).
    pub(crate) fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.records.is_empty())
    }

    /// Spans waiting in the spool.
    #[cfg(test)]
    pub(crate) fn spans(&self) -> u64 {
        self.spans
    }

    /// The bytes of its segment files.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.total
    }

    /// Records found torn or corrupt since the last call.
    pub(crate) fn take_torn(&mut self) -> u64 {
        std::mem::take(&mut self.torn)
    }

    /// Appends one encoded request of `spans` spans at the tail, first evicting the oldest
    /// segments while it would not fit. Returns the spans evicted.
    pub(crate) fn append(&mut self, request: &[u8], spans: u64) -> Result<u64, SpoolError> {
        let len = SPANS_FIELD + request.len() as u64;
        let record = RECORD_HEADER + len;
        if SEGMENT_HEADER + record > self.max_bytes || u32::try_from(len).is_err() {
            return Err(SpoolError::TooLarge { bytes: SEGMENT_HEADER + record, max: self.max_bytes });
        }
        let mut evicted = 0;
        let roll = loop {
            let roll = match (&self.writer, self.segments.back()) {
                (Some(_), Some(back)) => back.bytes > SEGMENT_HEADER && back.bytes + record > self.segment_bytes,
                _ => true,
            };
            let needed = record + if roll { SEGMENT_HEADER } else { 0 };
            if self.total + needed <= self.max_bytes {
                break roll;
            }
            match self.evict_oldest()? {
                Some(n) => evicted += n,
                None => return Err(SpoolError::TooLarge { bytes: needed, max: self.max_bytes }),
            }
        };
        if roll {
            self.roll()?;
        }
        let (Some(writer), Some(back)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Err(SpoolError::Io {
                path: self.dir.clone(),
                source: io::Error::other("no segment open for writing"),
            });
        };
        let spans32 = u32::try_from(spans).unwrap_or(u32::MAX);
        #[allow(clippy::cast_possible_truncation)] // checked above
        let len32 = len as u32;
        let mut buf = Vec::with_capacity(usize::try_from(record).unwrap_or(0));
        buf.extend_from_slice(&len32.to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&spans32.to_le_bytes());
        buf.extend_from_slice(request);
        let crc = crc32c(&[&buf[..4], &buf[8..]]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let path = segment_path(&self.dir, back.seq);
        if let Err(e) = writer.write_all(&buf) {
            // Cut what was written of this record, so that later ones do not follow a torn
            // one; if even that fails, the next append starts a new segment.
            if writer.set_len(back.bytes).is_err() {
                self.writer = None;
            }
            return Err(SpoolError::Io { path, source: e });
        }
        back.records.push_back(Rec { offset: back.bytes, len: len32, spans: spans32 });
        back.bytes += record;
        self.total += record;
        self.spans += u64::from(spans32);
        Ok(evicted)
    }

    /// Starts a new segment for appending.
    fn roll(&mut self) -> Result<(), SpoolError> {
        if let Some(w) = self.writer.take() {
            // The segment is complete: make it durable (best effort).
            let _ = w.sync_data();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = segment_path(&self.dir, seq);
        let mut file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io_error(&path))?;
        if let Err(e) = file.write_all(SEGMENT_MAGIC) {
            let _ = fs::remove_file(&path);
            return Err(SpoolError::Io { path, source: e });
        }
        self.segments.push_back(Segment { seq, bytes: SEGMENT_HEADER, records: VecDeque::new() });
        self.total += SEGMENT_HEADER;
        self.writer = Some(file);
        Ok(())
    }

    /// Deletes the oldest segment; returns its spans not replayed yet, or `None` when there
    /// is no segment.
    fn evict_oldest(&mut self) -> Result<Option<u64>, SpoolError> {
        let Some(seg) = self.segments.pop_front() else { return Ok(None) };
        let spans: u64 = seg.records.iter().map(|r| u64::from(r.spans)).sum();
        self.drop_segment(&seg)?;
        self.spans -= spans;
        Ok(Some(spans))
    }

    /// Deletes a segment already taken out of `segments`.
    fn drop_segment(&mut self, seg: &Segment) -> Result<(), SpoolError> {
        if self.segments.is_empty() {
            // It was the last one, so the one being written, if any.
            self.writer = None;
        }
        if self.reader.as_ref().is_some_and(|(s, _)| *s == seg.seq) {
            self.reader = None;
        }
        self.total -= seg.bytes;
        remove(&segment_path(&self.dir, seg.seq))
    }

    /// The oldest record not replayed yet, read and checked; `None` when there is none.
    /// A record that fails its check (the file changed under the spool) is skipped with
    /// the rest of its segment, and counted as torn.
    pub(crate) fn head(&mut self) -> Result<Option<Head>, SpoolError> {
        loop {
            let Some(seg) = self.segments.front() else { return Ok(None) };
            let seq = seg.seq;
            let Some(&rec) = seg.records.front() else {
                if self.segments.len() == 1 && self.writer.is_some() {
                    return Ok(None);
                }
                if let Some(seg) = self.segments.pop_front() {
                    self.drop_segment(&seg)?;
                }
                continue;
            };
            let path = segment_path(&self.dir, seq);
            if self.reader.as_ref().is_none_or(|(s, _)| *s != seq) {
                let file = File::open(&path).map_err(io_error(&path))?;
                self.reader = Some((seq, file));
            }
            let Some((_, file)) = self.reader.as_mut() else { continue };
            let mut buf = vec![0; RECORD_HEADER_LEN + rec.len as usize];
            file.seek(SeekFrom::Start(rec.offset)).map_err(io_error(&path))?;
            let read = file.read_exact(&mut buf);
            let intact = read.is_ok()
                && buf[..4] == rec.len.to_le_bytes()
                && crc32c(&[&buf[..4], &buf[8..]]).to_le_bytes() == buf[4..8];
            if !intact {
                self.torn += 1;
                if let Some(seg) = self.segments.pop_front() {
                    self.spans -= seg.records.iter().map(|r| u64::from(r.spans)).sum::<u64>();
                    self.drop_segment(&seg)?;
                }
                continue;
            }
            buf.drain(..RECORD_HEADER_LEN + SPANS_LEN);
            return Ok(Some(Head { request: buf, spans: u64::from(rec.spans) }));
        }
    }

    /// Marks the record [`Spool::head`] returned as replayed: persists the cursor past it,
    /// or deletes its segment when it was the segment's last record (a segment being
    /// written too: the next append starts a new one).
    pub(crate) fn pop_head(&mut self) -> Result<(), SpoolError> {
        let Some(seg) = self.segments.front_mut() else { return Ok(()) };
        let Some(rec) = seg.records.pop_front() else { return Ok(()) };
        self.spans -= u64::from(rec.spans);
        let (seq, next) = (seg.seq, seg.records.front().map_or(rec.end(), |r| r.offset));
        if seg.records.is_empty() {
            if let Some(seg) = self.segments.pop_front() {
                self.drop_segment(&seg)?;
            }
            Ok(())
        } else {
            write_cursor(&self.dir, seq, next)
        }
    }
}

fn remove(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SpoolError::Io { path: path.to_owned(), source: e }),
        _ => Ok(()),
    }
}

fn read_cursor(dir: &Path) -> Option<(u64, u64)> {
    let data = fs::read(dir.join("cursor")).ok()?;
    if data.len() != CURSOR_LEN || &data[..8] != CURSOR_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(data[24..28].try_into().ok()?);
    if crc32c(&[&data[..24]]) != crc {
        return None;
    }
    Some((u64::from_le_bytes(data[8..16].try_into().ok()?), u64::from_le_bytes(data[16..24].try_into().ok()?)))
}

/// Replaces the cursor atomically: written aside, then renamed over the old one.
fn write_cursor(dir: &Path, seq: u64, offset: u64) -> Result<(), SpoolError> {
    let mut data = Vec::with_capacity(CURSOR_LEN);
    data.extend_from_slice(CURSOR_MAGIC);
    data.extend_from_slice(&seq.to_le_bytes());
    data.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32c(&[&data]);
    data.extend_from_slice(&crc.to_le_bytes());
    let aside = dir.join("cursor.new");
    fs::write(&aside, &data).map_err(io_error(&aside))?;
    let path = dir.join("cursor");
    fs::rename(&aside, &path).map_err(io_error(&path))
}

/// Why sending one request failed, per the OTLP specification's "Failures" sections.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Worth another attempt later (no answer, or a retryable status): the request is
    /// spooled, or stays in the spool.
    Retryable(String),
    /// The collector refused the request; sending it again would not help.
    Refused(String),
}

/// The OTLP client the spooling worker sends encoded requests with, live and replayed
/// alike, so a replayed request is the request that would have been sent.
#[derive(Debug)]
pub(crate) enum Sender {
    /// OTLP/HTTP, binary protobuf or JSON.
    Http { client: reqwest::Client, url: String, json: bool, headers: reqwest::header::HeaderMap },
    /// OTLP/gRPC.
    Grpc { client: TraceServiceClient<tonic::transport::Channel>, metadata: tonic::metadata::MetadataMap },
}

impl Sender {
    /// The client the configuration describes. Call it inside a tokio runtime.
    pub(crate) fn new(config: &Config) -> Result<Self, ExporterError> {
        match config.protocol {
            Protocol::Grpc => {
                let endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| ExporterError::Endpoint { endpoint: config.endpoint.clone(), source: e.into() })?
                    .connect_timeout(config.timeout)
                    .timeout(config.timeout);
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &config.headers {
                    tracewire_context::CarrierMut::set(&mut metadata, k, v)
                        .map_err(|e| ExporterError::Header { name: k.clone(), source: e.into() })?;
                }
                Ok(Self::Grpc { client: TraceServiceClient::new(endpoint.connect_lazy()), metadata })
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let client = reqwest::Client::builder()
                    .connect_timeout(config.timeout)
                    .timeout(config.timeout)
                    .build()
                    .map_err(|e| ExporterError::HttpClient(e.into()))?;
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &config.headers {
                    let header = |e: Box<dyn std::error::Error + Send + Sync>| ExporterError::Header {
                        name: k.clone(),
                        source: e,
                    };
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| header(e.into()))?;
                    let value = reqwest::header::HeaderValue::from_str(v).map_err(|e| header(e.into()))?;
                    headers.insert(name, value);
                }
                Ok(Self::Http {
                    client,
                    url: config.endpoint.clone(),
                    json: config.protocol == Protocol::HttpJson,
                    headers,
                })
            }
        }
    }

    /// Sends one encoded `ExportTraceServiceRequest`.
    pub(crate) async fn send(&mut self, request: &[u8]) -> Result<(), SendError> {
        match self {
            Self::Http { client, url, json, headers } => {
                let (body, content_type) = if *json {
                    let decoded = ExportTraceServiceRequest::decode(request)
                        .map_err(|e| SendError::Refused(format!("undecodable request: {e}")))?;
                    let body = serde_json::to_vec(&decoded)
                        .map_err(|e| SendError::Refused(format!("cannot encode JSON: {e}")))?;
                    (body, "application/json")
                } else {
                    (request.to_vec(), "application/x-protobuf")
                };
                let response = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| SendError::Retryable(format!("cannot reach {url}: {e}")))?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let reason = format!("{url}: HTTP {status}");
                // OTLP/HTTP "Retryable Response Codes": 429, 502, 503, 504.
                if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
                    Err(SendError::Retryable(reason))
                } else {
                    Err(SendError::Refused(reason))
                }
            }
            Self::Grpc { client, metadata } => {
                let decoded = ExportTraceServiceRequest::decode(request)
                    .map_err(|e| SendError::Refused(format!("undecodable request: {e}")))?;
                let request = tonic::Request::from_parts(metadata.clone(), tonic::Extensions::default(), decoded);
                match client.export(request).await {
                    Ok(_) => Ok(()),
                    Err(status) => {
                        use tonic::Code;
                        let reason = format!("gRPC {:?}: {}", status.code(), status.message());
                        // OTLP/gRPC "Retryable gRPC Status Codes" (RESOURCE_EXHAUSTED only
                        // with a RetryInfo, which this client does not read: refused).
                        match status.code() {
                            Code::Cancelled
                            | Code::DeadlineExceeded
                            | Code::Aborted
                            | Code::OutOfRange
                            | Code::Unavailable
                            | Code::DataLoss => Err(SendError::Retryable(reason)),
                            _ => Err(SendError::Refused(reason)),
                        }
                    }
                }
            }
        }
    }
}

/// How long to wait after a failed attempt before trying the spool's head again.
pub(crate) fn retry_delay(schedule_delay: Duration) -> Duration {
    schedule_delay.clamp(Duration::from_millis(10), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tracewire-spool-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn crc32c_matches_the_check_value() {
        // The CRC-32C check value (RFC 3720, appendix B.4): "123456789" -> 0xE3069283.
        assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
        assert_eq!(crc32c(&[b"1234", b"56789"]), 0xE306_9283);
    }

    #[test]
    fn records_come_back_in_order_and_survive_a_reopen_with_the_cursor() {
        let d = dir("order");
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        for i in 0..5u8 {
            assert_eq!(s.append(&[i; 100], u64::from(i) + 1).unwrap(), 0);
        }
        assert_eq!(s.spans(), 15);
        let h = s.head().unwrap().unwrap();
        assert_eq!((h.request, h.spans), (vec![0; 100], 1));
        s.pop_head().unwrap();
        drop(s);
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(s.spans(), 14);
        for i in 1..5u8 {
            let h = s.head().unwrap().unwrap();
            assert_eq!((h.request, h.spans), (vec![i; 100], u64::from(i) + 1));
            s.pop_head().unwrap();
        }
        assert!(s.head().unwrap().is_none());
        assert!(s.is_empty());
        assert_eq!(s.take_torn(), 0);
        drop(s);
        let s = Spool::open(&d, 1 << 20).unwrap();
        assert!(s.is_empty(), "a reopen replays nothing twice");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_spool_evicts_its_oldest_segments_and_stays_within_its_bound() {
        let d = dir("evict");
        let max = 64 << 10;
        let mut s = Spool::open(&d, max).unwrap(); // segments of 8 KiB
        let mut evicted = 0;
        for i in 0..100u8 {
            evicted += s.append(&[i; 1000], 10).unwrap();
            assert!(s.bytes() <= max, "{} > {max}", s.bytes());
        }
        assert!(evicted > 0);
        assert_eq!(evicted + s.spans(), 1000);
        let first = s.head().unwrap().unwrap().request[0];
        assert_eq!(u64::from(first), 100 - s.spans() / 10, "the oldest went first");
        assert!(matches!(s.append(&vec![0; 70 << 10], 1), Err(SpoolError::TooLarge { .. })));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_second_opener_finds_the_directory_locked() {
        let d = dir("lock");
        let s = Spool::open(&d, 1 << 20).unwrap();
        assert!(matches!(Spool::open(&d, 1 << 20), Err(SpoolError::Locked { .. })));
        drop(s);
        Spool::open(&d, 1 << 20).unwrap();
        let _ = fs::remove_dir_all(&d);
    }
}
