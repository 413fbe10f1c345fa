#!/usr/bin/env bash
# Every check Tern's CI runs, in order: formatting, lints, the no_std build of the codec, the
# repository tidy rules, the conformance matrix, the Rust test suite, the benchmark report's
# statistics, and the black-box interop suite (paho-mqtt, raw sockets and the mosquitto
# command-line clients against `tern serve`).
# It installs what the tests need first (Debian's mosquitto, mosquitto-clients, nats-server,
# redis-server and chromium, a Python venv at .venv with paho-mqtt, pytest and Playwright).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# A clean build gains nothing from incremental compilation and full debug information, and they
# take most of the target directory's disk: keep the line tables, which backtraces need.
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=line-tables-only

step "test dependencies (mosquitto, mosquitto-clients, nats-server, redis-server, chromium, Python venv)"
./scripts/setup-test-deps.sh

step "rustfmt"
cargo fmt --all -- --check

# The optional features are built and tested too: `redis-auth` (the mosquitto-go-auth Redis
# layout, tested against Debian's redis-server).
FEATURES=(--features tern/redis-auth)

step "clippy (all targets, warnings denied; without and with the optional features)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked "${FEATURES[@]}" -- -D warnings

step "tern-codec without std (no_std + alloc)"
cargo build -p tern-codec --no-default-features --locked

step "tidy rules"
python3 scripts/tidy.py

step "conformance matrix"
python3 scripts/check_conformance.py

step "tests"
cargo test --workspace --locked "${FEATURES[@]}"

step "benchmark report statistics"
.venv/bin/pytest bench/test_report.py -q

step "interop: real clients against tern serve"
cargo build -p tern --locked
TERN_BIN="$PWD/target/debug/tern" .venv/bin/pytest tests/interop -q
