#!/usr/bin/env bash
# The release binary's size and build cost: builds `vodsource` (every shape, or with
# --embedded the embedded shape alone) in a target folder of its own (empty unless kept:
# KEEP=1), under /usr/bin/time -v, prints CPU seconds, wall time, peak memory and the
# binary's size, and checks that a panic of the stripped binary still names its file and line.
# Usage: scripts/build-size.sh [--embedded]
set -euo pipefail
cd "$(dirname "$0")/.."
features=()
shape=full
if [ "${1:-}" = --embedded ]; then features=(--no-default-features); shape=embedded; fi
target="${BUILD_SIZE_TARGET:-$HOME/.cache/vodsource/size-$shape}"
[ -n "${KEEP:-}" ] || rm -rf "$target"
times="$(mktemp)"
CARGO_TARGET_DIR="$target" /usr/bin/time -v -o "$times" cargo build --release --locked --bin vodsource "${features[@]}"
bin="$target/release/vodsource"
grep -E 'User time|System time|Elapsed|Maximum resident' "$times"
python3 - "$times" "$bin" <<'PY'
import os, re, sys
t = open(sys.argv[1]).read()
cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", t).group(1)) for k in ("User", "System"))
print(f"CPU (user + sys): {cpu:,.0f} s; binary: {os.path.getsize(sys.argv[2]) / 1e6:.1f} MB")
PY
rm -f "$times"
panicked="$(VODSOURCE_FAILPOINT=panic "$bin" --data-dir "$(mktemp -d)" config 2>&1 >/dev/null || true)"
if ! grep -q 'panicked at api/src/cli/mod.rs:[0-9]*:[0-9]*' <<<"$panicked"; then
    echo "error: the stripped binary's panic does not name its file and line: $panicked" >&2
    exit 1
fi
echo "a panic still names its file and line: $(grep -o 'panicked at [^:]*:[0-9]*:[0-9]*' <<<"$panicked")"
