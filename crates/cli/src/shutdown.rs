//! Stopping a long-running subcommand: the first SIGINT or SIGTERM asks for a graceful
//! stop, a second one exits at once.
//!
//! Every subcommand that serves until stopped (`exec-server`, with or without `--admin` and
//! `--relay`; `relay`; `collect`) listens with [`listen`] before it binds anything, so a
//! signal is never handled by the default action (which ends the process without flushing
//! its telemetry). A graceful stop: stop accepting, let the work in flight finish within
//! its bound (`--drain-timeout` for an exec-server; then what is left is killed and has
//! [`KILL_GRACE`] to report), flush telemetry within `TRACEWIRE_SHUTDOWN_TIMEOUT_MS`, exit 0.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tracewire_exec::ExecServer;

/// The default of `--drain-timeout`: how long a stopping exec-server waits for its
/// processes and clients. With [`KILL_GRACE`] and the telemetry's 2 s this stays under
/// the 10 s that `docker stop` waits before SIGKILL.
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

/// After the drain bound: how long killed processes, servers and listeners get to finish.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(1);

/// A stop requested by a signal, shared by everything a command serves.
#[derive(Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once a stop was requested.
    pub(crate) async fn requested(&self) {
        let mut rx = self.0.clone();
        // An error means the listener task is gone, which only happens at runtime
        // shutdown: treat it as a stop.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// [`Stop::requested`] as an owned future, for servers that take a `'static` one.
    pub(crate) fn future(&self) -> impl Future<Output = ()> + Send + 'static {
        let me = self.clone();
        async move { me.requested().await }
    }
}

/// Listens for SIGINT and SIGTERM for the rest of the process: the first requests a
/// graceful stop (and says so on stderr), the second exits at once with status 128 +
/// the signal's number (130 for SIGINT, 143 for SIGTERM) without flushing anything.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub(crate) fn listen() -> Result<Stop> {
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let (name, _) = next(&mut int, &mut term).await;
        eprintln!("tracewire: {name}: stopping gracefully (a second SIGINT or SIGTERM exits at once)");
        let _ = tx.send(true);
        let (name, code) = next(&mut int, &mut term).await;
        eprintln!("tracewire: {name} again: exiting without finishing the work in flight");
        std::process::exit(code);
    });
    Ok(Stop(rx))
}

/// The next of the two signals: its name and the exit status it forces.
async fn next(int: &mut Signal, term: &mut Signal) -> (&'static str, i32) {
    tokio::select! {
        _ = int.recv() => ("SIGINT", 130),
        _ = term.recv() => ("SIGTERM", 143),
    }
}

/// An exec-server's part of a graceful stop: no new processes; the running ones and their
/// clients get `bound` to finish; what is left then is killed (SIGKILL) and gets
/// [`KILL_GRACE`] to send its Exited and close its spans. (A killed process whose own
/// children keep its output pipes open waits for them up to the server's drain grace, so
/// its Exited may not make it.) Returns whether the server ended idle: no process, no
/// connection.
pub(crate) async fn drain(exec: &ExecServer, bound: Duration) -> bool {
    exec.stop_accepting();
    let snap = exec.snapshot();
    if snap.processes.is_empty() && snap.connections == 0 {
        // Tasks of processes that just exited may still be closing their spans.
        return tokio::time::timeout(KILL_GRACE, exec.idle()).await.is_ok();
    }
    eprintln!(
        "tracewire: waiting up to {} ms for {} processes and {} connections",
        bound.as_millis(),
        snap.processes.len(),
        snap.connections
    );
    if tokio::time::timeout(bound, exec.idle()).await.is_ok() {
        return true;
    }
    let killed = exec.kill_all();
    eprintln!("tracewire: killed {killed} processes still running after {} ms", bound.as_millis());
    if tokio::time::timeout(KILL_GRACE, exec.idle()).await.is_ok() {
        return true;
    }
    eprintln!("tracewire: clients still connected; stopping anyway");
    false
}

/// The last of an exec-server's stop: the process records queued for its database (with
/// `--db`) are committed, within [`KILL_GRACE`].
pub(crate) async fn flush_store(exec: &ExecServer) {
    let Some(store) = exec.store() else { return };
    match tokio::time::timeout(KILL_GRACE, store.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("tracewire: the process history was not all written: {e}"),
        Err(_) => eprintln!("tracewire: the process history was still being written after {KILL_GRACE:?}"),
    }
}
