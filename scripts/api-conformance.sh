#!/usr/bin/env bash
# Runs schemathesis as a client team would — every check (`--checks all`) and every phase
# (examples, coverage, fuzzing, stateful) — against the OpenAPI document of a real
# `vodsource serve` (the binary given, or the debug build), twice: with authentication on (an
# admin's token) and off. Any failure fails the run, as does a server that never becomes
# ready or logs an error. Usage: scripts/api-conformance.sh [path/to/vodsource]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/target}"
bin="${1:-$CARGO_TARGET_DIR/debug/vodsource}"
[ -x "$bin" ] || { echo "error: $bin not built; run cargo build --locked --bin vodsource" >&2; exit 1; }

config="$PWD/scripts/schemathesis.toml"
# tus's request bodies (application/offset+octet-stream) need a serializer of their own.
export SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
scratch="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT

# Starts `vodsource serve` on a port it picks itself; sets $server and $base, or fails.
start() { # data-dir
    local data="$1"
    mkdir -p "$data"
    # The rate limiter has tests of its own; here a 429 would only hide the answer under test.
    VODSOURCE_RATE_LIMIT=1000000 VODSOURCE_RATE_BURST=1000000 \
    VODSOURCE_LOG="warn,vodsource_api::http=info" \
        "$bin" --data-dir "$data" --log-json serve --listen 127.0.0.1:0 >"$data/server.log" 2>&1 &
    server=$!
    base=""
    for _ in $(seq 1 300); do
        base="$(python3 -c '
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if str(fields.get("message", "")).startswith("serving the API"):
        print("http://" + fields["addr"]); break
' "$data/server.log" 2>/dev/null || true)"
        if [ -n "$base" ] && curl -fsS "$base/v1/health/ready" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$server" 2>/dev/null; then
            echo "error: the server exited before it was ready:" >&2
            cat "$data/server.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "error: the server was not ready within 30 s:" >&2
    cat "$data/server.log" >&2
    exit 1
}

stop() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
}

# schemathesis keeps a cache in the working folder: run it in the scratch one. The live event
# stream (videoEvents) never ends by design; its handshake is covered by the Rust API tests.
check() { # label data-dir [schemathesis args...]
    local label="$1" data="$2"
    shift 2
    echo "== schemathesis, $label: $base/openapi.json" >&2
    (cd "$data" && st --config-file "$config" run "$base/openapi.json" \
        --checks all \
        --phases examples,coverage,fuzzing,stateful \
        --exclude-operation-id videoEvents \
        --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" \
        --workers 1 \
        --seed 20261123 \
        --no-color "$@")
    if grep -E '"level":"ERROR"|panicked' "$data/server.log" >&2; then
        echo "error: the server logged errors during the $label run" >&2
        exit 1
    fi
}

export VODSOURCE_JWT_SECRET="conformance-$(date +%s%N)-secret-0123456789"
start "$scratch/on"
token="$("$bin" token --sub conformance --role admin)"
check "authentication on" "$scratch/on" -H "Authorization: Bearer $token"
stop

unset VODSOURCE_JWT_SECRET
start "$scratch/off"
check "authentication off" "$scratch/off"
stop
