#!/usr/bin/env bash
# QoE events to Parquet on one core: vodsource's lake writer beside duckdb (one thread) on the
# same 1,000,000 events. Options go to `vodsource-bench lake` (--events, --runs, --dir).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh start lake-readers
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/bench-target}"
cargo build --release --locked --manifest-path bench/Cargo.toml
taskset -c 0 "$CARGO_TARGET_DIR/release/vodsource-bench" lake "$@"
