//! What the CLI tests share: the binary, the address line a server prints, signals.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::BufRead;
use std::process::{Child, Command};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tracewire");

/// Reads the next line of a server's stdout and returns what follows `prefix` (servers
/// print e.g. `listening on ADDR` once bound, so port 0 works).
pub(crate) fn announced(stdout: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.trim().strip_prefix(prefix).unwrap_or_else(|| panic!("expected {prefix:?}..., got {line:?}")).to_owned()
}

/// Sends `signal` (e.g. `-INT`) to `child`'s own pid.
pub(crate) fn signal(child: &Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
}
