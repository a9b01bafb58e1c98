#!/usr/bin/env bash
# The benchmarks' 1080p30 source of SECONDS seconds with audio (testsrc2 with moving grain,
# ~12 Mbit/s like a phone upload): made once per machine into ~/.cache/vodsource/bench (the
# 600 s one takes ~12 minutes) and kept; prints its path. Shared by bench-playable.sh and
# bench-chunks.sh, so that a cached source is the same whichever made it.
# Usage: scripts/bench-source.sh SECONDS
set -euo pipefail
seconds="${1:?usage: scripts/bench-source.sh SECONDS}"
cache="$HOME/.cache/vodsource/bench"
mkdir -p "$cache"
path="$cache/source-1080p-$seconds.mp4"
if [ ! -f "$path" ]; then
    ffmpeg -v error -y -f lavfi -i "testsrc2=size=1920x1080:rate=30,noise=alls=8:allf=t" \
        -f lavfi -i "sine=frequency=330:sample_rate=48000" \
        -t "$seconds" -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p -c:a aac -b:a 192k -shortest -f mp4 \
        "$path.part"
    mv "$path.part" "$path"
fi
echo "$path"
