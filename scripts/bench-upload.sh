#!/usr/bin/env bash
# Upload figures: one file (1 GiB unless SIZE_MB says otherwise) sent over loopback to the
# release build of `vodsource serve`, timed, with the API process's CPU seconds per GB:
#   - the single PUT to the registration's upload link (today's path),
#   - tus through /v1/uploads (one PATCH of the whole file, curl streaming it from disk),
#   - with --s3 (objects on moto at 127.0.0.1:5000) the same two: the PUT then goes to the
#     presigned S3 URL, straight to the bucket, and tus becomes an S3 multipart upload; and a
#     third, presigned multipart straight to the bucket (the API signs each 8 MiB part's URL,
#     four parts go at a time, as Uppy's S3 plugin sends them).
# Usage: scripts/bench-upload.sh [--s3]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh start python
if [ "${1:-}" = --s3 ]; then scripts/services.sh start aws; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/target}"
# The same package and feature selection as scripts/run.sh and the other benchmarks.
cargo build --release --locked --bin vodsource
exec python3 scripts/bench_upload.py "$CARGO_TARGET_DIR/release/vodsource" "${SIZE_MB:-1024}" "$@"
