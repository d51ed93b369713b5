//! A command run by the exec-server starts with every signal at its default disposition,
//! whatever the server ignores: an ignored signal survives `exec` (POSIX, "exec": "Signals
//! set to be ignored by the calling process image shall be set to be ignored by the new
//! process image"), so without a reset a server started as a background job of a
//! non-interactive shell (SIGINT and SIGQUIT ignored) or under `nohup` (SIGHUP) would run
//! commands that a client's `signal` cannot stop.
//!
//! This file is its own test binary because it changes the process's dispositions.

#![allow(unsafe_code)] // libc::signal, to ignore signals as a shell or nohup would.

mod common;

use std::collections::HashMap;

use tracewire_exec::Start;

use common::{argv, client, server};

/// Ignores `sig` in this process (the server's), as a shell or `nohup` would.
fn ignore(sig: libc::c_int) {
    // SAFETY: setting a disposition to SIG_IGN has no preconditions.
    let previous = unsafe { libc::signal(sig, libc::SIG_IGN) };
    assert_ne!(previous, libc::SIG_ERR);
}

/// Starts `sleep 30` with `start`'s settings, sends it `sig` and returns the signal that
/// ended it.
async fn ended_by(c: &tracewire_exec::ExecClient, start: Start, sig: i32) -> Option<i32> {
    let p = c.start(start).await.unwrap();
    p.signal(sig).await.unwrap();
    p.wait_with_output().await.unwrap().status.signal
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_the_server_ignores_still_reach_its_commands() {
    for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM] {
        ignore(sig);
    }
    let s = server().await;
    let c = client(&s).await;
    for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM] {
        // The server's own spawn path (posix_spawn on Linux).
        assert_eq!(ended_by(&c, argv(&["sleep", "30"]), sig).await, Some(sig), "signal {sig}");
        // A request that sets PATH for a bare program name takes tokio's Command.
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());
        let start = Start { env: HashMap::from([("PATH".to_owned(), path)]), ..argv(&["sleep", "30"]) };
        assert_eq!(ended_by(&c, start, sig).await, Some(sig), "signal {sig}, through tokio's Command");
    }
}
