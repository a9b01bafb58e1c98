#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: starts (installing if needed) what the tests
# need, then runs every test of the workspace against the real services.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# No import cycle between the modules of any crate (crates themselves cannot have one).
python3 scripts/module-cycles.py domain/src commands/src qoe/src projections/src app/src infra/src encoder/src lake/src \
    api/src tests/src bench/src

scripts/services.sh start postgres python schemathesis ffmpeg lake-readers kafka aws browser tus-clients origins

cargo test --workspace --locked "$@"
# The embedded shape alone (no PostgreSQL, DynamoDB, Kafka, Kinesis, S3 or lake SQL) still
# builds, tests included.
cargo check --workspace --all-targets --locked --no-default-features
# The benchmarks are a workspace of their own: one that no longer builds fails here.
cargo check --locked --manifest-path bench/Cargo.toml --all-targets
# The OpenAPI document against the server it describes (the debug binary the tests built).
scripts/api-conformance.sh
