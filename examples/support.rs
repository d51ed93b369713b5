//! What the long-running HTTP examples (`tower_http`, `w3c_service`) share: serving until
//! a signal, and a bounded telemetry shutdown that reports its counts.

use anyhow::Result;
use tracewire_telemetry::{Error, TelemetryGuard};

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Shuts telemetry down (bounded by `TRACEWIRE_SHUTDOWN_TIMEOUT_MS`) and prints its counts
/// to stderr; a passed deadline is counted in them, not an error.
///
/// # Errors
/// When shutting down fails otherwise.
pub(crate) fn shutdown_telemetry(telemetry: TelemetryGuard) -> Result<()> {
    let s = telemetry.shutdown().or_else(Error::into_stats)?;
    eprintln!("telemetry: emitted={} exported={} dropped={}", s.emitted, s.exported, s.dropped());
    Ok(())
}
