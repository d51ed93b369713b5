//! Criterion benchmarks of tracewire's hot paths against their peers, measured in the same
//! run. Each bench file starts with a comment recording its latest results and the machine.
//! Run with `cargo bench -p tracewire-benches`.
