#!/usr/bin/env bash
# HTTP figures: requests/s and latency percentiles of the release build of `vodsource serve`
# under wrk (a separate process) at 64 connections, on a seeded embedded store. The floor
# (GET /v1/health/live: routing, auth-free, no store) is measured in the same run.
# Then the beacon endpoint again with the QoE stream on Kafka (Tansu on 127.0.0.1:9092) instead
# of the embedded log.
# Usage: scripts/bench-http.sh [seconds per endpoint, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh start wrk python kafka
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/target}"
# The same package and feature selection as scripts/run.sh and the other benchmarks: one
# build serves all (`-p vodsource-api` resolves features differently and rebuilds half the tree).
cargo build --release --locked --bin vodsource
bin="$CARGO_TARGET_DIR/release/vodsource"
secs="${1:-10}"
conns="${VODSOURCE_BENCH_CONNECTIONS:-64}"

data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export VODSOURCE_JWT_SECRET="bench-secret-0123456789abcdef-0123456789"
export VODSOURCE_RATE_LIMIT=10000000 VODSOURCE_RATE_BURST=10000000 VODSOURCE_LOG=warn VODSOURCE_ENCODERS=0
"$bin" --data-dir "$data" seed --videos 2000 >/dev/null
"$bin" --data-dir "$data" serve --listen "127.0.0.1:$port" >"$data/server.log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data" "$data.kafka"; }
trap cleanup EXIT
base="http://127.0.0.1:$port"
export VODSOURCE_BENCH_TOKEN="$("$bin" token --sub bench --role admin --ttl-secs 3600)"
auth="Authorization: Bearer $VODSOURCE_BENCH_TOKEN"
for _ in $(seq 1 600); do
    lag="$(curl -fsS -H "$auth" "$base/v1/admin/projections" 2>/dev/null | python3 -c 'import sys,json; print(max(p["lag"] for p in json.load(sys.stdin)["projections"]))' 2>/dev/null || echo x)"
    [ "$lag" = 0 ] && break
    sleep 0.1
done
id="$(curl -fsS -H "$auth" "$base/v1/videos?limit=1" | python3 -c 'import sys,json; print(json.load(sys.stdin)["items"][0]["video_id"])')"
# Beacons name videos that exist (the endpoint checks each event's cid against the catalog).
videos() { curl -fsS -H "$auth" "$base/v1/videos?limit=7" | python3 -c 'import sys,json; print(",".join(v["video_id"] for v in json.load(sys.stdin)["items"]))'; }
export VODSOURCE_BENCH_VIDEOS="$(videos)"

# One batch by hand first: every event of it must be accepted, or the figures mean nothing.
accepted() {
    lua_body="$(VODSOURCE_BENCH_VIDEOS="$VODSOURCE_BENCH_VIDEOS" python3 - <<'PY'
import json, os, time
videos = os.environ["VODSOURCE_BENCH_VIDEOS"].split(",")
now = int(time.time() * 1000)
events = [{"event_id": "01a20000-0000-7000-8000-%012d" % (900000 + i), "event_type": "heartbeat",
           "sid": "check-%d" % (i % 10), "cid": videos[i % len(videos)], "ts": now - 1000} for i in range(100)]
print(json.dumps({"events": events}))
PY
)"
    curl -fsS -H "$auth" -H 'Content-Type: application/json' -d "$lua_body" "$base/v1/playback/beacons" \
        | python3 -c 'import sys, json; a = json.load(sys.stdin)["accepted"]; assert a == 100, f"only {a} of 100 beacons accepted"'
}

run() { # name, wrk args...
    local name="$1"; shift
    local out
    out="$(wrk -t1 -c"$conns" -d"${secs}s" --latency "$@")"
    local rps p50 p99 errors
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    errors="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
    printf '%-28s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "${errors:-0}"
}
echo "wrk, 1 thread, $conns connections, ${secs}s each; server: release build, embedded SQLite, 2000 seeded videos"
run "GET /v1/health/live (floor)" "$base/v1/health/live"
run "GET /v1/videos/{id}" -H "$auth" "$base/v1/videos/$id"
run "GET /v1/videos?limit=20" -H "$auth" "$base/v1/videos?limit=20"
run "POST /v1/videos" -s scripts/wrk/register.lua "$base"
# 100 events per request: accepted events/s is 100 x requests/s (every event is valid).
accepted
run "POST /v1/playback/beacons x100" -s scripts/wrk/beacons.lua "$base"

# The same beacons with the QoE stream on Kafka (fresh topics under a prefix of this run).
kill "$server"; wait "$server" 2>/dev/null || true
mkdir -p "$data.kafka"
export VODSOURCE_STREAM="kafka://127.0.0.1:9092?partitions=8&prefix=bench-$(date +%s)-"
"$bin" --data-dir "$data.kafka" seed --videos 20 >/dev/null
"$bin" --data-dir "$data.kafka" serve --listen "127.0.0.1:$port" >"$data/server-kafka.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
    curl -fsS "$base/v1/health/ready" >/dev/null 2>&1 && [ -n "$(videos 2>/dev/null)" ] && break
    sleep 0.1
done
export VODSOURCE_BENCH_VIDEOS="$(videos)"
echo "the QoE stream on Kafka (Tansu, memory storage, acks=all):"
accepted
run "POST /v1/playback/beacons x100" -s scripts/wrk/beacons.lua "$base"
