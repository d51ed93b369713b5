#!/usr/bin/env bash
# Fuzzes every target of fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each, then merges what
# was found into the checked-in corpus, keeping it minimal (a set cover of the edges).
# Usage: ./scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 seconds, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). There is no nightly toolchain here:
# RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags cargo-fuzz passes (sanitizer,
# coverage). FUZZ_SANITIZER=none builds without AddressSanitizer (faster, coverage-guided
# only). Crashes are written to fuzz/artifacts/<target>/ and make the script exit 1; add the
# minimized input to fuzz/corpus/<target>/ with the fix, so the normal test run replays it
# (crates/{context,relay,rpc,collector}/tests/fuzz_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(traceparent tracestate baggage relay_frames envelope otlp_export)
fi
SANITIZER="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi

cargo fuzz build -O --sanitizer "$SANITIZER"
failed=0
for t in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$t"
    work="fuzz/target/work/$t"
    mkdir -p "$corpus" "$work" "fuzz/artifacts/$t"
    echo "==> fuzzing $t for ${SECONDS_PER_TARGET}s"
    # New inputs go to a scratch directory; the checked-in corpus is only read.
    if ! cargo fuzz run -O --sanitizer "$SANITIZER" "$t" "$work" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "fuzz: $t FAILED, see fuzz/artifacts/$t/" >&2
        failed=1
        continue
    fi
    # Merge: the checked-in corpus is the smallest set of inputs that covers every edge the
    # whole working corpus covers (set cover, edge coverage without hit counts); the full
    # working corpus stays in fuzz/target/work/ for the next session.
    merged="fuzz/target/merged/$t"
    rm -rf "$merged" && mkdir -p "$merged"
    cargo fuzz run -O --sanitizer "$SANITIZER" "$t" "$merged" "$corpus" "$work" -- \
        -set_cover_merge=1 -use_counters=0 -max_len=4096 >/dev/null 2>&1
    # Keep hand-written seeds (seed-*) whatever the merge says: they document the cases.
    find "$corpus" -type f ! -name 'seed-*' -delete
    for f in "$merged"/*; do
        [ -e "$f" ] || continue
        name="$(basename "$f")"
        [ -e "$corpus/seed-$name" ] || cp "$f" "$corpus/$name"
    done
    # Drop merged copies of seeds (same content, hash name).
    for s in "$corpus"/seed-*; do
        [ -e "$s" ] || continue
        h="$(sha1sum "$s" | cut -d' ' -f1)"
        rm -f "$corpus/$h"
    done
    echo "==> $t: $(find "$corpus" -type f | wc -l) corpus files, $(du -sk "$corpus" | cut -f1) KiB"
done
exit "$failed"
