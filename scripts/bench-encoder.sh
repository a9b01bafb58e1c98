#!/usr/bin/env bash
# The encoder benchmark (issue 4). One 20 s 1080p30 source with audio; the same ladder in three
# ways, each writing 4 H.264 rungs (High, x264 preset veryfast, 5000/2800/1400/800 kbit/s,
# maxrate 1.5x, bufsize 2x, a keyframe every 4 s and no scene-cut keyframes) and AAC 128 kbit/s,
# packaged as HLS fMP4 with 4 s segments:
#   (a) four ffmpeg CLI runs, one per rung (audio with the first)   -- the naive approach
#   (b) one ffmpeg CLI run, -filter_complex split=4, four encodes    -- what an expert writes
#   (c) vodsource transcode (also writes the DASH MPD, master playlist, poster and sprite)
# Wall and CPU (user+sys) seconds of each, the median of RUNS runs, and the PSNR of each
# one's 720p rung against the source scaled to 720p.  Usage: scripts/bench-encoder.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodsource/target}"
runs="${1:-3}"
scripts/services.sh start ffmpeg
cargo build --release --locked --bin vodsource 2>&1 | tail -1
bin="$CARGO_TARGET_DIR/release/vodsource"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
src="$work/source.mp4"
# testsrc2 with moving film grain, at about 12 Mbit/s like a phone upload: detail the encoders
# have to spend their bitrate on (the bare
# pattern is so easy that every rung reaches 46+ dB and the comparison says little).
ffmpeg -v error -y -f lavfi -i "testsrc2=size=1920x1080:rate=30,noise=alls=8:allf=t" \
    -f lavfi -i "sine=frequency=330:sample_rate=48000" \
    -t 20 -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p -c:a aac -b:a 192k -shortest "$src"

rungs=("1080p 1920 1080 5000" "720p 1280 720 2800" "480p 854 480 1400" "360p 640 360 800")
video_opts() { # bitrate_kbps
    echo "-c:v libx264 -preset veryfast -profile:v high -b:v ${1}k -maxrate $(($1 * 3 / 2))k -bufsize $(($1 * 2))k -g 120 -keyint_min 120 -sc_threshold 0"
}
hls_opts() { # dir
    mkdir -p "$1"
    echo "-f hls -hls_time 4 -hls_segment_type fmp4 -hls_playlist_type vod -hls_segment_filename $1/seg_%05d.m4s $1/index.m3u8"
}

naive() { # out
    local first=1
    for rung in "${rungs[@]}"; do
        read -r name w h kbps <<<"$rung"
        local audio=""
        if [ $first = 1 ]; then audio="-map 0:a -c:a aac -b:a 128k -ac 2 -ar 48000 $(hls_opts "$1/audio")"; first=0; fi
        # shellcheck disable=SC2046
        ffmpeg -v error -y -i "$src" -map 0:v -vf "scale=$w:$h" $(video_opts "$kbps") $(hls_opts "$1/$name") $audio
    done
}

expert() { # out
    local graph="[0:v]split=4[s0][s1][s2][s3]" maps=() i=0
    for rung in "${rungs[@]}"; do
        read -r name w h kbps <<<"$rung"
        graph="$graph;[s$i]scale=$w:$h[v$i]"
        # shellcheck disable=SC2206
        maps+=(-map "[v$i]" $(video_opts "$kbps") $(hls_opts "$1/$name"))
        i=$((i + 1))
    done
    # shellcheck disable=SC2046
    ffmpeg -v error -y -i "$src" -filter_complex "$graph" "${maps[@]}" -map 0:a -c:a aac -b:a 128k -ac 2 -ar 48000 $(hls_opts "$1/audio")
}

vodsource() { # out
    "$bin" transcode "$src" "$1" >/dev/null
}

measure() { # label function -> "wall cpu" medians over $runs, outputs of the last run in $work/<label>
    local label="$1" fn="$2" walls=() cpus=()
    for _ in $(seq 1 "$runs"); do
        rm -rf "${work:?}/$label"
        mkdir -p "$work/$label"
        /usr/bin/time -f "%e %U %S" -o "$work/time" bash -c "$(declare -f "$fn" video_opts hls_opts); $(declare -p rungs src bin); $fn $work/$label"
        read -r wall user sys <"$work/time"
        walls+=("$wall")
        cpus+=("$(echo "$user + $sys" | bc)")
    done
    echo "$(printf '%s\n' "${walls[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p") $(printf '%s\n' "${cpus[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")"
}

psnr() { # dir -> average PSNR of the 720p rung against the source scaled to 720p
    ffmpeg -nostats -i "$1/720p/index.m3u8" -i "$src" \
        -lavfi "[1:v]scale=1280:720:flags=bicubic[ref];[0:v][ref]psnr" -f null - 2>&1 |
        sed -n 's/.*PSNR.* average:\([0-9.inf]*\).*/\1/p' | tail -1
}

echo "source: 20 s 1920x1080 30 fps + audio ($(du -h "$src" | cut -f1)); $(nproc) cores; median of $runs run(s)"
printf '%-34s %8s %8s %10s\n' "variant" "wall s" "cpu s" "PSNR 720p"
declare -A result
for variant in "a naive" "b expert" "c vodsource"; do
    read -r label fn <<<"$variant"
    read -r wall cpu < <(measure "$label" "$fn")
    result[$label]="$wall"
    printf '%-34s %8.2f %8.2f %10s\n' "($label) $fn" "$wall" "$cpu" "$(psnr "$work/$label")"
done
echo "speed-up of (c): $(echo "scale=2; ${result[a]} / ${result[c]}" | bc)x over (a), $(echo "scale=2; ${result[b]} / ${result[c]}" | bc)x over (b); (a)/(b) = $(echo "scale=2; ${result[a]} / ${result[b]}" | bc)x"
