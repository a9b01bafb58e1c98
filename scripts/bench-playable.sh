#!/usr/bin/env bash
# Time to playable and time to complete (issue 20), side by side in one run: 1080p30 sources
# with audio (testsrc2 with moving grain, ~12 Mbit/s like a phone upload), each encoded by a
# fresh `vodsource serve` (embedded, release build) with the built-in ladder on three paths,
# taking turns within each run: the earlier path (`--progressive=false`: the whole ladder is
# stored, then the video plays), progressive publication with one decode feeding the whole
# ladder (`lead_max_height = 0`), progressive publication with the low rungs and the audio
# encoded ahead on the one decode (the default: the larger rungs' pictures may wait in half
# the memory available), the same with a fixed 1 GiB for them (`lead_buffer_mib = 1024`,
# the default before: a machine short of memory spills sooner), the same with no spill to disk (the larger
# rungs' pictures past their queue in memory are decoded again instead: `lead_spill_mib = 0`,
# the default before), and the lead on decodes of its own from the start
# (`lead_buffer_mib = 0`, the default before that). Per run, web/e2e/ttp.mjs measures in
# headless Chromium:
#   ttp  upload-complete → the first frame hls.js shows (the page follows the video's SSE)
#   ttc  SourceUploaded → EncodingCompleted (as recorded)
#   cpu  the server's CPU seconds over the encode (EncodingCompleted's cost)
#   upload  seconds of the final upload, after the encode (the server's metrics)
#   spilled  pictures of the larger rungs that waited past their queue (in memory, then on
#          disk) because the lead would have fallen behind a viewer on the one decode, from
#          which picture, and the most MiB waiting in memory + on disk ("-": none; the
#          encoder's log)
#   apart  the picture from which the larger rungs had a decode of their own instead ("-":
#          never)
#   rss_mib  the server's peak resident memory (VmHWM), in MiB
#   faults_k  the server's minor page faults (its threads' first touches of memory), thousands
# and prints the median of RUNS runs per length and path (each run's figures on stderr as it
# ends).
# Usage: scripts/bench-playable.sh [RUNS] [SECONDS...]   (default: 3 runs of 20 120 600)
#   PATHS="whole-ladder progressive+lead" picks paths (default: all six; names as printed)
#   LADDER='preset = "faster"' adds settings to every path's ladder (for instance a slower
#   preset, for an encoder that is slower than real time on this machine)
#   BIN=path/to/vodsource measures that build (default: the release build of this checkout)
#   OBJECTS=s3 keeps the media in a fresh bucket per run on the S3 emulator (moto, started if
#   it is not running) instead of the data folder: every store is then a round trip away
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/target}"
runs="${1:-3}"
shift || true
lengths=("$@")
[ ${#lengths[@]} -gt 0 ] || lengths=(20 120 600)
scripts/services.sh start ffmpeg browser >/dev/null
case "${OBJECTS:-folder}" in
folder) ;;
s3)
    scripts/services.sh start aws >/dev/null
    export AWS_ENDPOINT_URL="${VODSOURCE_TEST_AWS_ENDPOINT:-http://127.0.0.1:5000}" AWS_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID=vodsource AWS_SECRET_ACCESS_KEY=vodsource
    ;;
*) echo "OBJECTS is folder or s3, not ${OBJECTS}" >&2; exit 2 ;;
esac
# BIN=path/to/vodsource measures that build instead (to compare two builds, one run each).
if [ -z "${BIN:-}" ]; then
    cargo build --release --locked --bin vodsource 2>&1 | tail -1
fi
bin="${BIN:-$CARGO_TARGET_DIR/release/vodsource}"
work="$(mktemp -d)"
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

printf 'lead_max_height = 0\n%s\n' "${LADDER:-}" >"$work/no-lead.toml"
printf 'lead_max_height = 480\n%s\n' "${LADDER:-}" >"$work/lead.toml"
printf 'lead_max_height = 480\nlead_buffer_mib = 1024\n%s\n' "${LADDER:-}" >"$work/lead-1gib.toml"
printf 'lead_max_height = 480\nlead_spill_mib = 0\n%s\n' "${LADDER:-}" >"$work/lead-decode.toml"
printf 'lead_max_height = 480\nlead_buffer_mib = 0\n%s\n' "${LADDER:-}" >"$work/own-lead.toml"

one() { # seconds progressive ladder -> "ttp_ms ttc_ms playable_ms cpu_s upload_s spilled apart rss_mib faults_k"
    local data="$work/data" log="$work/serve.log"
    rm -rf "$data"
    mkdir -p "$data"
    if [ "${OBJECTS:-folder}" = s3 ]; then
        export VODSOURCE_OBJECT_STORE="s3://bench-$(date +%s%N)/vod"
        "$bin" --data-dir "$data" setup >/dev/null
    fi
    VODSOURCE_LOG="warn,vodsource_api::http=info,vodsource_encoder::media=info" "$bin" --data-dir "$data" --log-json \
        "--progressive=$2" --ladder "$work/$3.toml" serve --listen 127.0.0.1:0 2>"$log" &
    server=$!
    local base=""
    for _ in $(seq 1 100); do
        base="$(grep "serving the API" "$log" | head -1 | python3 -c 'import json,sys; l=sys.stdin.readline(); print(json.loads(l)["fields"]["addr"] if l else "")' || true)"
        [ -n "$base" ] && break
        sleep 0.1
    done
    [ -n "$base" ] || { echo "the server did not start: $(cat "$log")" >&2; exit 1; }
    local out
    out="$(BASE="http://$base" SOURCE="$(scripts/bench-source.sh "$1")" node web/e2e/ttp.mjs 2>"$work/ttp.err" | tail -1)"
    local upload
    upload="$(curl -sf "http://$base/metrics" | awk '/^vodsource_encode_step_seconds_total\{step="upload"\}/ { print $2 }')"
    local rss
    rss="$(awk '/^VmHWM:/ { print int($2 / 1024) }' "/proc/$server/status" 2>/dev/null || true)"
    local faults
    # minflt, the 10th field of stat (the 8th after "pid (comm) ").
    faults="$(sed 's/.*) //' "/proc/$server/stat" 2>/dev/null | awk '{ print int($8 / 1000) }' || true)"
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
    local apart
    apart="$(grep 'a decode of their own' "$log" | grep -o '"from":[0-9]*' | head -1 | cut -d: -f2 || true)"
    local spilled
    spilled="$(grep 'waited past their queue' "$log" | head -1 | python3 -c 'import json,sys; l=sys.stdin.readline(); f=json.loads(l)["fields"] if l else None; print("%s@%s/%s+%sMiB" % (f["pictures"], f["from"], f["peak_held_mib"], f["peak_mib"]) if f else "")' || true)"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert "error" not in r, r; print(r["ttp_ms"], r["ttc_ms"], r["playable_ms"], r["cpu_s"], sys.argv[2] or "nan", sys.argv[3] or "-", sys.argv[4] or "-", sys.argv[5] or "-", sys.argv[6] or "-")' "$out" "$upload" "$spilled" "$apart" "$rss" "$faults"
}

median() { sort -n | sed -n "$(((runs + 1) / 2))p"; }

printf '%-8s %-24s %10s %10s %12s %8s %9s %18s %6s %8s %8s\n' length path ttp_s ttc_s playable_s cpu_s upload_s spilled apart rss_mib faults_k
paths=()
for path in "false no-lead whole-ladder" "true no-lead progressive" "true lead progressive+lead" \
    "true lead-1gib progressive+lead-1gib" "true lead-decode progressive+lead-decode" "true own-lead progressive+own-lead"; do
    if [ -z "${PATHS:-}" ] || [[ " $PATHS " == *" ${path##* } "* ]]; then
        paths+=("$path")
    fi
done
[ ${#paths[@]} -gt 0 ] || {
    echo "PATHS names none of: whole-ladder progressive progressive+lead progressive+lead-1gib progressive+lead-decode progressive+own-lead" >&2
    exit 2
}
for seconds in "${lengths[@]}"; do
    declare -A ttps=() ttcs=() playables=() cpus=() uploads=()
    for _ in $(seq 1 "$runs"); do
        for path in "${paths[@]}"; do
            read -r progressive ladder name <<<"$path"
            read -r ttp ttc playable cpu upload spilled apart rss faults <<<"$(one "$seconds" "$progressive" "$ladder")"
            awk -v l="${seconds}s" -v n="$name" -v p="$ttp" -v c="$ttc" -v r="$playable" -v u="$cpu" -v w="$upload" -v s="$spilled" -v a="$apart" -v m="$rss" -v f="$faults" \
                'BEGIN { printf "run %-4s %-24s %10.2f %10.2f %12.2f %8.1f %9.3f %18s %6s %8s %8s\n", l, n, p / 1000, c / 1000, r / 1000, u, w, s, a, m, f }' >&2
            ttps[$name]+="$ttp "
            ttcs[$name]+="$ttc "
            playables[$name]+="$playable "
            cpus[$name]+="$cpu "
            uploads[$name]+="$upload "
        done
    done
    for path in "${paths[@]}"; do
        read -r _ _ name <<<"$path"
        printf '%-8s %-24s %10.2f %10.2f %12.2f %8.1f %9.3f\n' "${seconds}s" "$name" \
            "$(printf '%s\n' ${ttps[$name]} | median | awk '{print $1/1000}')" \
            "$(printf '%s\n' ${ttcs[$name]} | median | awk '{print $1/1000}')" \
            "$(printf '%s\n' ${playables[$name]} | median | awk '{print $1/1000}')" \
            "$(printf '%s\n' ${cpus[$name]} | median)" \
            "$(printf '%s\n' ${uploads[$name]} | median)"
    done
    unset ttps ttcs playables cpus uploads
done
