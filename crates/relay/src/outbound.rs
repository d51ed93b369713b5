//! Frames on their way out. A message's last frame can carry the stage span that its
//! sending stage ends with (`relay.send` at an end, `relay.forward` at the relay), so the
//! span ends when the gRPC stream takes the frame for the wire, not when it was queued:
//! the wait in the outbound queue is part of the stage instead of a gap in the trace.

use std::time::SystemTime;

use opentelemetry::KeyValue;
use tracewire_proto::v1::RelayFrame;
use tracewire_telemetry::{Stage, emit_stage_span};

/// The span a frame ends when it is taken for the wire.
pub(crate) struct EndsSpan {
    pub(crate) stage: Stage,
    pub(crate) start: SystemTime,
    pub(crate) parent: opentelemetry::Context,
    pub(crate) attributes: Vec<KeyValue>,
}

impl EndsSpan {
    pub(crate) fn end(self) {
        emit_stage_span(self.stage, self.start, SystemTime::now(), &self.parent, &self.attributes);
    }
}

/// A frame in an outbound queue.
pub(crate) struct Outbound {
    pub(crate) frame: RelayFrame,
    pub(crate) ends: Option<EndsSpan>,
}

impl Outbound {
    /// Taken for the wire: ends the span it carries.
    pub(crate) fn take(self) -> RelayFrame {
        if let Some(span) = self.ends {
            span.end();
        }
        self.frame
    }
}

impl From<RelayFrame> for Outbound {
    fn from(frame: RelayFrame) -> Self {
        Self { frame, ends: None }
    }
}
