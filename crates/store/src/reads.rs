//! The span reads of a [`Store`]: each after a barrier, so they see every span appended
//! before them. Whole-table reads go through the writer's connection; trace streams
//! ([`Store::for_each_trace`] and its kin) read on a thread of their own with a read-only
//! connection, one row at a time, while the writer keeps writing (WAL).
//!
//! Invariants: a trace stream gives each trace whole, in trace id order, and holds one
//! trace in memory, not the database (tests: `tests/stream.rs`
//! `for_each_trace_gives_each_trace_whole_in_trace_order`,
//! `for_each_trace_reads_while_the_writer_writes_and_filters`); a recycled record keeps
//! nothing of the span it held before (`tests/columns.rs`
//! `a_recycling_read_leaks_nothing_of_the_previous_spans`).

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::Store;
use crate::error::StoreError;
use crate::spans::{self, SpanDetail, SpanFilter, SpanRecord};
use crate::writer::WriterCommand;

impl Store {
    /// Every stored span, ordered by start, after a barrier.
    ///
    /// # Errors
    /// As [`Store::flush`]; [`StoreError::Corrupt`] for a row whose attributes do not parse.
    pub async fn spans(&self) -> Result<Vec<SpanRecord>, StoreError> {
        self.spans_matching(SpanFilter::default()).await
    }

    /// The stored spans that `filter` selects, ordered by start, after a barrier.
    ///
    /// # Errors
    /// As [`Store::spans`].
    pub async fn spans_matching(&self, filter: SpanFilter) -> Result<Vec<SpanRecord>, StoreError> {
        self.ask_writer(|ack| WriterCommand::LoadSpans(filter, ack)).await
    }

    /// Calls `f` with each stored trace that `filter` selects, after a barrier: in trace id
    /// order, a trace's spans ordered by start (then span id), each span as
    /// [`Store::spans_matching`] gives it. The spans are read on a thread of their own with
    /// a read-only connection (WAL: the writer keeps writing meanwhile) one row at a time,
    /// so memory holds one trace, not the database.
    ///
    /// ```
    /// use tracewire_store::{SpanFilter, SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-each-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let span = |trace: &str, id: &str| SpanRecord { trace_id: trace.into(), span_id: id.into(), ..Default::default() };
    /// let (a, b) = ("0af7651916cd43dd8448eb211c80319c", "1af7651916cd43dd8448eb211c80319c");
    /// store.append_spans(vec![span(b, "0000000000000001"), span(a, "0000000000000002"), span(b, "0000000000000003")]).await.unwrap();
    /// let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let seen = std::sync::Arc::clone(&sizes);
    /// store.for_each_trace(SpanFilter::default(), move |t: Vec<SpanRecord>| {
    ///     seen.lock().unwrap().push((t[0].trace_id.clone(), t.len()));
    /// }).await.unwrap();
    /// assert_eq!(*sizes.lock().unwrap(), [(a.to_owned(), 1), (b.to_owned(), 2)]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Store::spans`].
    pub async fn for_each_trace<F>(&self, filter: SpanFilter, f: F) -> Result<(), StoreError>
    where
        F: FnMut(Vec<SpanRecord>) + Send + 'static,
    {
        self.for_each_trace_with(filter, SpanDetail::Full, f).await
    }

    /// [`Store::for_each_trace`], reading of each span what `detail` says: with
    /// [`SpanDetail::Columns`], the analysis's view only (no OTLP form, only the attributes
    /// named), which is several times cheaper than the whole span.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use tracewire_store::{SpanDetail, SpanFilter, SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-columns-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let attributes = BTreeMap::from([("tracewire.stage".into(), "exec".into()), ("host.name".into(), "h".into())]);
    /// let span = SpanRecord { trace_id: "0af7651916cd43dd8448eb211c80319c".into(), span_id: "b7ad6b7169203331".into(),
    ///     service: "api".into(), attributes, ..Default::default() };
    /// store.append_spans(vec![span]).await.unwrap();
    /// let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let into = std::sync::Arc::clone(&seen);
    /// let detail = SpanDetail::Columns(vec!["tracewire.stage".into()]);
    /// store.for_each_trace_with(SpanFilter::default(), detail, move |t| into.lock().unwrap().extend(t)).await.unwrap();
    /// let read = &seen.lock().unwrap()[0];
    /// assert_eq!((read.service.as_str(), read.stage(), read.attributes.len()), ("api", "exec", 1));
    /// assert!(read.otlp.is_none());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Store::spans`].
    pub async fn for_each_trace_with<F>(&self, filter: SpanFilter, detail: SpanDetail, f: F) -> Result<(), StoreError>
    where
        F: FnMut(Vec<SpanRecord>) + Send + 'static,
    {
        self.read_traces(filter, detail, None, f).await
    }

    /// [`Store::for_each_trace_with`], reusing the records of the traces `f` was given and
    /// hands back through `spare`: with [`SpanDetail::Columns`] each row is written over a
    /// record handed back (every field set: nothing of the span it held before remains,
    /// not even an attribute this span lacks), so reading allocates next to nothing once a
    /// few traces went round, and the consumer frees nothing. Traces need not all come
    /// back; the reader takes what is there when it needs a record.
    ///
    /// ```
    /// use tracewire_store::{SpanDetail, SpanFilter, SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-recycle-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let span = |trace: &str| SpanRecord { trace_id: trace.into(), span_id: "b7ad6b7169203331".into(), ..Default::default() };
    /// store.append_spans(vec![span("0af7651916cd43dd8448eb211c80319c"), span("4bf92f3577b34da6a3ce929d0e0e4736")]).await.unwrap();
    /// let (back, spare) = std::sync::mpsc::channel();
    /// let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let into = std::sync::Arc::clone(&seen);
    /// let detail = SpanDetail::Columns(vec!["tracewire.stage".into()]);
    /// store.for_each_trace_recycling(SpanFilter::default(), detail, spare, move |t: Vec<SpanRecord>| {
    ///     into.lock().unwrap().push(t[0].trace_id.clone());
    ///     back.send(t).unwrap(); // done with it: its records are filled again
    /// }).await.unwrap();
    /// assert_eq!(seen.lock().unwrap().len(), 2);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Store::spans`].
    pub async fn for_each_trace_recycling<F>(
        &self,
        filter: SpanFilter,
        detail: SpanDetail,
        spare: std::sync::mpsc::Receiver<Vec<SpanRecord>>,
        f: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(Vec<SpanRecord>) + Send + 'static,
    {
        self.read_traces(filter, detail, Some(spare), f).await
    }

    /// The read of [`Store::for_each_trace_with`] and [`Store::for_each_trace_recycling`].
    async fn read_traces<F>(
        &self,
        filter: SpanFilter,
        detail: SpanDetail,
        spare: Option<std::sync::mpsc::Receiver<Vec<SpanRecord>>>,
        mut f: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(Vec<SpanRecord>) + Send + 'static,
    {
        self.ask_writer(WriterCommand::Flush).await?;
        let (path, busy_timeout) = (Arc::clone(&self.path), self.config.busy_timeout);
        let (ack, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("tracewire-store-read".into())
            .spawn(move || {
                let read = || -> Result<(), StoreError> {
                    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let conn = Connection::open_with_flags(path.as_path(), flags)?;
                    conn.busy_timeout(busy_timeout)?;
                    spans::for_each_trace(&conn, &filter, detail, spare, &mut f)
                };
                let _ = ack.send(read());
            })
            .map_err(|e| StoreError::Other(e.to_string()))?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// How many spans are stored, after a barrier.
    ///
    /// # Errors
    /// As [`Store::flush`].
    pub async fn span_count(&self) -> Result<u64, StoreError> {
        self.ask_writer(WriterCommand::CountSpans).await
    }
}
