#!/usr/bin/env bash
# Runs vodsource on a fresh machine too: installs FFmpeg's libraries if missing (the encoder
# links them), then builds and runs the release binary. Usage: scripts/run.sh [serve flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/target}"
scripts/services.sh start ffmpeg
exec cargo run --release --locked --bin vodsource -- serve "$@"
