#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: a run that finds everything in place
# changes nothing. Nothing is downloaded outside the package registries.
#   - ./.venv: a Python venv with the pinned packages of scripts/requirements-test.txt
#     (the rotel-agent OTLP collector and the OpenTelemetry Python SDK).
#   - Debian's chromium (headless browser tests of the HTML report and admin page), with apt.
#   - Debian's faketime (libfaketime: an exec-server whose clock is off, for the clock-skew
#     test, crates/cli/tests/clock_skew.rs), with apt.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: missing required tool: $1" >&2; exit 1; }; }
need cargo
need python3
cargo fmt --version >/dev/null 2>&1 || { echo "setup: rustfmt is missing (rustup component add rustfmt)" >&2; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "setup: clippy is missing (rustup component add clippy)" >&2; exit 1; }

venv=.venv
req=scripts/requirements-test.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: $venv is up to date"
else
    echo "setup: installing Python test packages into $venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --pre -r "$req"
    echo "$want" > "$stamp"
fi
agent=$(ls "$venv"/lib/python3*/site-packages/rotel/rotel-agent 2>/dev/null | head -n 1 || true)
[ -n "$agent" ] && [ -x "$agent" ] || { echo "setup: rotel-agent not found in $venv" >&2; exit 1; }
echo "setup: rotel-agent at $agent ($("$agent" --version))"

# apt_package WHAT PACKAGE CHECK: runs CHECK (a command that prints what it finds, or
# nothing); when it finds nothing, installs Debian's PACKAGE with apt (as root, or with a
# password-less sudo) and fails unless CHECK then finds it.
apt_package() {
    local what=$1 package=$2 check=$3 found
    found=$($check)
    if [ -n "$found" ]; then
        echo "setup: $what is installed ($found)"
        return
    fi
    echo "setup: installing Debian's $package ($what)"
    local as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo -n)
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
    [ -n "$($check)" ] || { echo "setup: $package did not install" >&2; exit 1; }
}

chromium_bin() { [ -x /usr/bin/chromium ] && { /usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium; } || true; }
faketime_lib() { dpkg -L libfaketime 2>/dev/null | grep -m 1 'libfaketimeMT\.so' || true; }
apt_package chromium chromium chromium_bin
apt_package libfaketime faketime faketime_lib
