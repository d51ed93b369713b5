//! Waiting for an event with a deadline, never for a fixed time.
//!
//! A test that sleeps a fixed time and then looks is both slow (the sleep is always paid)
//! and flaky (a loaded machine takes longer). These helpers look at once, then again after
//! a short pause that grows from 1 ms to 50 ms, until the condition holds or the deadline
//! passes; the caller's assertion message then says what never happened.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use tracewire_testkit::{eventually, eventually_some};
//!
//! let calls = AtomicUsize::new(0);
//! eventually(Duration::from_secs(5), || calls.fetch_add(1, Ordering::Relaxed) >= 3).unwrap();
//! let n = eventually_some(Duration::from_secs(5), || Some(calls.load(Ordering::Relaxed))).unwrap();
//! assert!(n >= 4);
//! assert!(eventually(Duration::from_millis(20), || false).is_err());
//! ```

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// The condition did not hold before the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    /// How long the condition was given.
    pub within: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the condition did not hold within {:?}", self.within)
    }
}

impl std::error::Error for TimedOut {}

/// Pauses between looks: 1 ms, doubling up to 50 ms.
struct Backoff(Duration);

impl Backoff {
    const fn new() -> Self {
        Self(Duration::from_millis(1))
    }

    /// The next pause, never past `deadline`.
    fn next(&mut self, deadline: Instant) -> Duration {
        let pause = self.0.min(deadline.saturating_duration_since(Instant::now()));
        self.0 = (self.0 * 2).min(Duration::from_millis(50));
        pause
    }
}

/// Calls `condition` until it returns `true` (`Ok`) or `within` has passed (`Err`); it is
/// always called at least once, and once more at the deadline.
///
/// # Errors
/// [`TimedOut`] when the condition never held.
pub fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> Result<(), TimedOut> {
    eventually_some(within, || condition().then_some(()))
}

/// Calls `f` until it returns `Some` (that value) or `within` has passed (`Err`).
///
/// # Errors
/// [`TimedOut`] when `f` never returned a value.
pub fn eventually_some<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T, TimedOut> {
    let deadline = Instant::now() + within;
    let mut backoff = Backoff::new();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut { within });
        }
        std::thread::sleep(backoff.next(deadline));
    }
}

/// [`eventually`] for an async condition, pausing with tokio's timer (so the runtime keeps
/// running the tasks the condition waits for).
///
/// # Errors
/// [`TimedOut`] when the condition never held.
pub async fn eventually_async<F, Fut>(within: Duration, mut condition: F) -> Result<(), TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some_async(within, || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// [`eventually_some`] for an async `f`, pausing with tokio's timer.
///
/// # Errors
/// [`TimedOut`] when `f` never returned a value.
pub async fn eventually_some_async<T, F, Fut>(within: Duration, mut f: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let mut backoff = Backoff::new();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut { within });
        }
        tokio::time::sleep(backoff.next(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_never_holds_times_out_near_its_deadline() {
        let start = Instant::now();
        let mut looks = 0;
        let err = eventually(Duration::from_millis(100), || {
            looks += 1;
            false
        })
        .unwrap_err();
        assert_eq!(err.within, Duration::from_millis(100));
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(looks >= 3, "looked {looks} times");
    }

    #[test]
    fn a_condition_that_holds_at_once_is_looked_at_once() {
        let mut looks = 0;
        let v = eventually_some(Duration::from_secs(1), || {
            looks += 1;
            Some(7)
        });
        assert_eq!((v, looks), (Ok(7), 1));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_async_form_lets_the_runtime_run_what_it_waits_for() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(5);
        });
        let rx = std::sync::Mutex::new(rx);
        let got = eventually_some_async(Duration::from_secs(5), || {
            let v = rx.lock().ok().and_then(|mut r| r.try_recv().ok());
            async move { v }
        })
        .await;
        assert_eq!(got, Ok(5));
        assert!(eventually_async(Duration::from_millis(10), || async { false }).await.is_err());
    }
}
