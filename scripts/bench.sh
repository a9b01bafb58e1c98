#!/usr/bin/env bash
# The speed figures: appends on SQLite and PostgreSQL beside postgres-es, and replay of a
# 1,000,000-event log. Pass `appends ...` or `replay ...` to run one part with options.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh start postgres
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/bench-target}"
if [ $# -eq 0 ]; then set -- all; fi
cargo run --release --locked --manifest-path bench/Cargo.toml -- "$@"
