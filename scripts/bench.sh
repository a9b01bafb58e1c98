#!/usr/bin/env bash
# The speed figures: appends on SQLite and PostgreSQL beside postgres-es, and replay of a
# 1,000,000-event log. Pass `appends ...` or `replay ...` to run one part with options.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh start postgres
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/bench-target}"
if [ $# -eq 0 ]; then set -- all; fi
# `replay --dynamodb` without an AWS environment replays into moto on loopback (an emulator in
# Python: its figures show vodsource's side, not DynamoDB's).
if printf '%s\n' "$@" | grep -qx -- '--dynamodb' && [ -z "${AWS_ENDPOINT_URL:-}" ]; then
    scripts/services.sh start aws
    export AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=vodsource AWS_SECRET_ACCESS_KEY=vodsource
fi
cargo run --release --locked --manifest-path bench/Cargo.toml -- "$@"
