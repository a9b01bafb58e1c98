#!/usr/bin/env bash
# Scale-out of chunked encoding (issue 20): time to complete of one 1080p30 source with audio
# (testsrc2 with moving grain, ~12 Mbit/s like a phone upload; made once into
# ~/.cache/vodsource/bench) on the two cores of this machine, side by side in one run:
# today's path (one encoder process, the source whole) against 1, 2 and 4 encoder processes
# sharing it in chunks, each pinned to its share of the cores with taskset; then a simulated
# fleet of single-core workers from the CPU seconds each chunk took (see scripts/bench_chunks.py).
# Usage: scripts/bench-chunks.sh [RUNS] [SECONDS] [CHUNK_SECONDS]   (default: 3 600 60)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/target}"
runs="${1:-3}" seconds="${2:-600}" chunk="${3:-60}"
[ "$(nproc)" -ge 2 ] || { echo "needs two cores (taskset -c 0 and -c 1)" >&2; exit 1; }
scripts/services.sh start ffmpeg python >/dev/null
cargo build --release --locked --bin vodsource 2>&1 | tail -1
source="$(scripts/bench-source.sh "$seconds")"
exec python3 scripts/bench_chunks.py "$CARGO_TARGET_DIR/release/vodsource" "$source" "$runs" "$chunk" "$seconds"
