#!/usr/bin/env bash
# Runs every check CI runs: installs what the tests need (idempotently), then formatting,
# clippy (warnings are errors), all tests including doc tests, and one pass of every
# criterion bench in test mode.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot run gains nothing from incremental compilation, whose caches would take as much
# disk as every test binary together.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

./scripts/setup-test-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "==> cargo test (unit, integration and doc tests)"
cargo test --workspace --all-features
echo "==> criterion benches, each routine once (test mode: checks the fixtures, measures nothing)"
cargo test -p tracewire-benches --benches
echo "==> instrumentation compiled out (tracewire-telemetry without the instrument feature)"
cargo clippy -p tracewire-telemetry --no-default-features --all-targets -- -D warnings
cargo test -p tracewire-telemetry --no-default-features --test instrument_off
