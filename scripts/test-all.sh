#!/usr/bin/env bash
# Every check Tern's CI runs, in order: formatting, lints, the no_std build of the codec, the
# repository tidy rules, the conformance matrix and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "rustfmt"
cargo fmt --all -- --check

step "clippy (all targets, warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tern-codec without std (no_std + alloc)"
cargo build -p tern-codec --no-default-features --locked

step "tidy rules"
python3 scripts/tidy.py

step "conformance matrix"
python3 scripts/check_conformance.py

step "tests"
cargo test --workspace --locked
