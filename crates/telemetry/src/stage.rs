//! The stage taxonomy: one name per stage a remote exec passes through.
//!
//! Span names and the `tracewire.stage` attribute are a contract: the report (collector)
//! groups by them. `docs/stages.md` documents each stage; a test checks that the two agree.

use std::fmt;

macro_rules! stages {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $kind:ident; )*) => {
        /// A stage of a remote exec. [`Stage::name`] is both the span name and the value of
        /// the `tracewire.stage` attribute.
        ///
        /// ```
        /// use tracewire_telemetry::Stage;
        ///
        /// assert_eq!(Stage::RpcDispatch.name(), "rpc.dispatch");
        /// assert_eq!(Stage::from_name("process.spawn"), Some(Stage::ProcessSpawn));
        /// assert!(Stage::ALL.len() >= 20);
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Stage {
            $( $(#[$doc])* $variant, )*
        }

        impl Stage {
            /// Every stage, in pipeline order.
            pub const ALL: &'static [Stage] = &[$(Stage::$variant),*];

            /// The stable span name (also the `tracewire.stage` attribute value).
            pub const fn name(self) -> &'static str {
                match self { $(Stage::$variant => $name,)* }
            }

            /// The OpenTelemetry span kind of this stage.
            pub const fn kind(self) -> opentelemetry::trace::SpanKind {
                match self { $(Stage::$variant => opentelemetry::trace::SpanKind::$kind,)* }
            }

            /// The stage of a span name, if it is one.
            pub fn from_name(name: &str) -> Option<Stage> {
                match name { $($name => Some(Stage::$variant),)* _ => None }
            }
        }
    };
}

stages! {
    /// The client's root span of one remote exec, from the call to the delivery of Exited.
    Exec = "exec", Client;
    /// A client connecting to its server: TCP and HTTP/2, or relay attach and handshake.
    RpcConnect = "rpc.connect", Client;
    /// A client's RPC call, from send to response.
    RpcCall = "rpc.call", Client;
    /// Residence of a request in the server's dispatch queue.
    RpcQueue = "rpc.queue", Internal;
    /// The server handling one request.
    RpcDispatch = "rpc.dispatch", Server;
    /// Encoding and splitting one message into relay records.
    RelayFrame = "relay.frame", Internal;
    /// Noise encryption of one message's records.
    RelayEncrypt = "relay.encrypt", Internal;
    /// Writing one message's frames to the relay stream.
    RelaySend = "relay.send", Producer;
    /// The relay forwarding one message (opt-in, timing metadata only).
    RelayForward = "relay.forward", Internal;
    /// Receiving one message: from its first record's arrival until the RPC layer takes it.
    RelayRecv = "relay.recv", Consumer;
    /// Noise decryption of one message's records.
    RelayDecrypt = "relay.decrypt", Internal;
    /// Decoding one reassembled message.
    RelayDecode = "relay.decode", Internal;
    /// A child process's life, from spawn to exit.
    Process = "process", Internal;
    /// Spawning a child process.
    ProcessSpawn = "process.spawn", Internal;
    /// A child's running time, from the end of its spawn to its exit.
    ProcessRun = "process.run", Internal;
    /// A child's stdout: time to first byte and bytes read.
    ProcessStdout = "process.stdout", Internal;
    /// A child's stderr: time to first byte and bytes read.
    ProcessStderr = "process.stderr", Internal;
    /// After the child's exit: waiting for its output readers to drain, and queueing Exited.
    ProcessExit = "process.exit", Internal;
    /// Residence of a terminal event in a delivery queue.
    TerminalQueue = "terminal.queue", Internal;
    /// Delivering a terminal event (Output, Exited) to the client.
    TerminalDeliver = "terminal.deliver", Internal;
    /// Handing a record to the store (caller side).
    StoreEnqueue = "store.enqueue", Internal;
    /// Residence of a record in the store's queue.
    StoreQueue = "store.queue", Internal;
    /// Writing one batch of records (linked to every record's context).
    StoreWrite = "store.write", Internal;
    /// A flush barrier.
    StoreFlush = "store.flush", Internal;
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The attribute that names a span's stage.
pub const STAGE_ATTRIBUTE: &str = "tracewire.stage";

/// Adds a stage span's `tracewire.stage` attribute and sets its span kind, when its name is
/// a stage and it does not carry the attribute yet. tracewire's export worker calls this
/// for every span it exports, off the application's threads; a pipeline of your own can
/// call it from its exporter.
///
/// ```
/// use opentelemetry::trace::SpanKind;
/// use opentelemetry_sdk::trace::SpanData;
/// # fn span(name: &'static str) -> SpanData {
/// #     SpanData {
/// #         span_context: opentelemetry::trace::SpanContext::empty_context(),
/// #         parent_span_id: opentelemetry::trace::SpanId::INVALID,
/// #         parent_span_is_remote: false,
/// #         span_kind: SpanKind::Internal,
/// #         name: name.into(),
/// #         start_time: std::time::SystemTime::now(),
/// #         end_time: std::time::SystemTime::now(),
/// #         attributes: Vec::new(),
/// #         dropped_attributes_count: 0,
/// #         events: Default::default(),
/// #         links: Default::default(),
/// #         status: opentelemetry::trace::Status::Unset,
/// #         instrumentation_scope: Default::default(),
/// #     }
/// # }
/// let mut s = span("rpc.dispatch");
/// tracewire_telemetry::enrich(&mut s);
/// assert_eq!(s.span_kind, SpanKind::Server);
/// assert_eq!(s.attributes[0].value.as_str(), "rpc.dispatch");
/// ```
pub fn enrich(span: &mut opentelemetry_sdk::trace::SpanData) {
    let Some(stage) = Stage::from_name(&span.name) else { return };
    if span.attributes.iter().any(|kv| kv.key.as_str() == STAGE_ATTRIBUTE) {
        return;
    }
    span.attributes.push(opentelemetry::KeyValue::new(STAGE_ATTRIBUTE, stage.name()));
    if span.span_kind == opentelemetry::trace::SpanKind::Internal {
        span.span_kind = stage.kind();
    }
}

/// Creates a `tracing` span for a stage, named after the stage (target `tracewire`, level
/// INFO). Extra fields follow as in `tracing::info_span!`.
///
/// The `tracewire.stage` attribute and the span kind are not recorded on the emitting
/// thread: tracewire's export worker adds them to every span whose name is a stage
/// ([`enrich`]), which keeps the emit path short.
///
/// With the crate feature `instrument` off, it expands to `tracing::Span::none()` and the
/// field expressions are not evaluated.
///
/// ```
/// use tracewire_telemetry::stage_span;
///
/// let pid = 42u32;
/// let span = stage_span!(ProcessSpawn, process.pid = pid, process.executable.name = "ls");
/// let _entered = span.enter();
/// ```
#[cfg(feature = "instrument")]
#[macro_export]
macro_rules! stage_span {
    ($stage:ident $(, $($fields:tt)*)?) => {
        $crate::__stage_span!(@ $stage $(, $($fields)*)?)
    };
}

/// See the documentation of `stage_span!` with the `instrument` feature on.
#[cfg(not(feature = "instrument"))]
#[macro_export]
macro_rules! stage_span {
    ($stage:ident $(, $($fields:tt)*)?) => {{
        const _: $crate::Stage = $crate::Stage::$stage;
        $crate::__private::tracing::Span::none()
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __stage_span {
    (@ Exec $($f:tt)*) => { $crate::__stage_span!(# "exec" $($f)*) };
    (@ RpcConnect $($f:tt)*) => { $crate::__stage_span!(# "rpc.connect" $($f)*) };
    (@ RpcCall $($f:tt)*) => { $crate::__stage_span!(# "rpc.call" $($f)*) };
    (@ RpcQueue $($f:tt)*) => { $crate::__stage_span!(# "rpc.queue" $($f)*) };
    (@ RpcDispatch $($f:tt)*) => { $crate::__stage_span!(# "rpc.dispatch" $($f)*) };
    (@ RelayFrame $($f:tt)*) => { $crate::__stage_span!(# "relay.frame" $($f)*) };
    (@ RelayEncrypt $($f:tt)*) => { $crate::__stage_span!(# "relay.encrypt" $($f)*) };
    (@ RelaySend $($f:tt)*) => { $crate::__stage_span!(# "relay.send" $($f)*) };
    (@ RelayForward $($f:tt)*) => { $crate::__stage_span!(# "relay.forward" $($f)*) };
    (@ RelayRecv $($f:tt)*) => { $crate::__stage_span!(# "relay.recv" $($f)*) };
    (@ RelayDecrypt $($f:tt)*) => { $crate::__stage_span!(# "relay.decrypt" $($f)*) };
    (@ RelayDecode $($f:tt)*) => { $crate::__stage_span!(# "relay.decode" $($f)*) };
    (@ Process $($f:tt)*) => { $crate::__stage_span!(# "process" $($f)*) };
    (@ ProcessSpawn $($f:tt)*) => { $crate::__stage_span!(# "process.spawn" $($f)*) };
    (@ ProcessRun $($f:tt)*) => { $crate::__stage_span!(# "process.run" $($f)*) };
    (@ ProcessStdout $($f:tt)*) => { $crate::__stage_span!(# "process.stdout" $($f)*) };
    (@ ProcessStderr $($f:tt)*) => { $crate::__stage_span!(# "process.stderr" $($f)*) };
    (@ ProcessExit $($f:tt)*) => { $crate::__stage_span!(# "process.exit" $($f)*) };
    (@ TerminalQueue $($f:tt)*) => { $crate::__stage_span!(# "terminal.queue" $($f)*) };
    (@ TerminalDeliver $($f:tt)*) => { $crate::__stage_span!(# "terminal.deliver" $($f)*) };
    (@ StoreEnqueue $($f:tt)*) => { $crate::__stage_span!(# "store.enqueue" $($f)*) };
    (@ StoreQueue $($f:tt)*) => { $crate::__stage_span!(# "store.queue" $($f)*) };
    (@ StoreWrite $($f:tt)*) => { $crate::__stage_span!(# "store.write" $($f)*) };
    (@ StoreFlush $($f:tt)*) => { $crate::__stage_span!(# "store.flush" $($f)*) };
    (# $name:literal) => {
        $crate::__private::tracing::info_span!(target: "tracewire", $name)
    };
    (# $name:literal, $($fields:tt)*) => {
        $crate::__private::tracing::info_span!(target: "tracewire", $name, $($fields)*)
    };
}
