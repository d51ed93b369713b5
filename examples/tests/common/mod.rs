//! What the example tests share: an example started as a real process that announces
//! itself on its first line of output.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// An example's process whose first line of stdout was `listening on ADDR` (or another
/// announcement); stopped by its own pid when dropped.
pub(crate) struct Listening {
    pub(crate) child: Child,
    /// What followed the announcement's prefix: the `ADDR` of `listening on ADDR`.
    pub(crate) addr: String,
}

impl Listening {
    /// Spawns `cmd` with its stdout piped and reads the first line, `listening on ADDR`.
    pub(crate) fn spawn(cmd: &mut Command) -> Self {
        Self::spawn_announcing(cmd, "listening on ")
    }

    /// Spawns `cmd` with its stdout piped and reads the first line, which must start with
    /// `prefix`.
    pub(crate) fn spawn_announcing(cmd: &mut Command, prefix: &str) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix(prefix).map(str::to_owned) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("expected {prefix:?}..., got {line:?}");
        };
        Self { child, addr }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
