//! The checks the fuzz targets run: each takes arbitrary bytes, drives one decoder of the
//! library and asserts its invariants (panicking on a violation, which libFuzzer reports).
//! The corpus replay tests of the workspace include these modules by path and run them on
//! every file of `fuzz/corpus/<target>/`.

pub mod context;
pub mod otlp;
pub mod relay;
pub mod rpc;
