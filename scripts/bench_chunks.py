"""The driver of scripts/bench-chunks.sh: vodsource BIN, SOURCE, RUNS, CHUNK_SECONDS, SECONDS.

Time to complete (SourceUploaded -> EncodingCompleted, as recorded) of one source under four
shapes of the same two cores, RUNS runs each, taking turns within a run:
  whole      today's path: one `vodsource encoder` process on cores 0-1, the source encoded whole
  chunks x1  one encoder process on cores 0-1, the source split into chunks
  chunks x2  two encoder processes, one pinned to each core (taskset -c 0 / -c 1)
  chunks x4  four encoder processes, two pinned to each core
Each run has a fresh data folder and a `vodsource serve --encoders 0` (API, projectors and the
supervisor) beside the encoders. From the chunked runs' histories: the CPU seconds of each
chunk (ChunkEncoded's cost, one worker per process), how long the probe and plan took, and the
assembly; from those, a simulated fleet of W single-core encoders (list scheduling of the
measured chunks in the plan's order) gives the time to complete with W workers, for this source
and for one six times as long (its runs of frames repeated).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

from bench_api import request, wait_live

BIN, SOURCE, RUNS, CHUNK, SECONDS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
SHAPES = [
    ("whole ladder, 1 process, cores 0-1", 0, ["0,1"]),
    ("chunks, 1 process, cores 0-1", CHUNK, ["0,1"]),
    ("chunks, 2 processes, 1 core each", CHUNK, ["0", "1"]),
    ("chunks, 4 processes, 2 per core", CHUNK, ["0", "0", "1", "1"]),
]


def call(method, url, body=None):
    return request(method, url, body)[2]


def at(event):
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


def history(base, video):
    events, after = [], 0
    while True:
        page = call("GET", f"{base}/v1/history/{video}?limit=1000&after_version={after}")
        events += page["events"]
        if "next_after_version" not in page:
            return events
        after = page["next_after_version"]


def run(chunk_seconds, cores):
    data = tempfile.mkdtemp(prefix="vodsource-bench-chunks-")
    env = dict(os.environ, VODSOURCE_LOG="warn", VODSOURCE_NO_QOE_SINK="true",
               VODSOURCE_CHUNK_SECONDS=str(chunk_seconds), VODSOURCE_MAX_UPLOAD_BYTES=str(8 * 1024**3))
    env.pop("VODSOURCE_JWT_SECRET", None)
    port = 19000 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    processes = [subprocess.Popen([BIN, "--data-dir", data, "--encoders", "0", "serve", "--listen",
                                   f"127.0.0.1:{port}"], env=env,
                                  stderr=open(os.path.join(data, "serve.log"), "w"))]
    try:
        wait_live(base)
        for i, cpus in enumerate(cores):
            processes.append(subprocess.Popen(["taskset", "-c", cpus, BIN, "--data-dir", data, "--encoders", "1",
                                               "encoder"], env=env,
                                              stderr=open(os.path.join(data, f"encoder-{i}.log"), "w")))
        size = os.path.getsize(SOURCE)
        registered = call("POST", f"{base}/v1/videos", {"title": "chunks", "filename": "source.mp4",
                                                           "content_type": "video/mp4", "size_bytes": size})
        video = registered["video_id"]
        subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-X", "PUT", "-H", "content-type: video/mp4",
                        "-T", SOURCE, registered["upload"]["url"]], check=True)
        call("POST", f"{base}/v1/videos/{video}/upload-complete")
        while True:
            status = call("GET", f"{base}/v1/videos/{video}/status")
            if status["status"] == "failed":
                raise RuntimeError(f"the encode failed: {status}")
            if status["status"] == "ready":
                break
            time.sleep(1)
        events = history(base, video)
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait()
        subprocess.run(["rm", "-rf", data], check=False)
    first = {}
    for e in events:
        first.setdefault(e["type"], e)
    uploaded, completed = at(first["SourceUploaded"]), at(first["EncodingCompleted"])
    chunks = [e for e in events if e["type"] == "ChunkEncoded"]
    planned = first.get("EncodingPlanned")
    return {
        "ttc": completed - uploaded,
        "cpu": first["EncodingCompleted"]["data"]["cost"]["cpu_seconds"],
        "claims": sum(e["type"] == "ChunkClaimed" for e in events),
        "plan": (at(planned) - uploaded) if planned else None,
        "spans": planned["data"]["chunks"] if planned else [],
        "chunk_cpu": {e["data"]["chunk"]: e["data"]["output"]["cost"]["cpu_seconds"] for e in chunks},
        "assembly": (completed - max(at(e) for e in chunks)) if chunks else None,
    }


def fleet(plan, chunk_cpu, assembly, workers):
    """Completion time of W single-core workers taking the chunks in the plan's order."""
    free = [plan] * workers
    for chunk in sorted(chunk_cpu):
        i = free.index(min(free))
        free[i] += chunk_cpu[chunk]
    return max(free) + assembly


def main():
    results = {name: [] for name, _, _ in SHAPES}
    for r in range(RUNS):
        for name, chunk_seconds, cores in SHAPES:
            result = run(chunk_seconds, cores)
            results[name].append(result)
            print(f"run {r + 1} {name}: {result['ttc']:.2f} s, {result['cpu']:.1f} CPU s, "
                  f"{result['claims']} chunk claims", file=sys.stderr, flush=True)
    base_ttc = statistics.median(x["ttc"] for x in results[SHAPES[0][0]])
    print(f"\n| shape | time to complete | vs whole | CPU s | chunk claims |")
    print("|---|---|---|---|---|")
    for name, _, _ in SHAPES:
        ttc = statistics.median(x["ttc"] for x in results[name])
        cpu = statistics.median(x["cpu"] for x in results[name])
        claims = statistics.median(x["claims"] for x in results[name])
        print(f"| {name} | {ttc:.2f} s | {100 * (ttc / base_ttc - 1):+.1f} % | {cpu:.1f} | {claims:.0f} |")
    # The fleet: the measured chunks of the median four-process run.
    runs = sorted(results[SHAPES[3][0]], key=lambda x: x["ttc"])
    measured = runs[len(runs) // 2]
    cpus = measured["chunk_cpu"]
    print(f"\nchunks: {len(cpus)} (the audio and {len(cpus) - 1} runs of frames); CPU s per chunk: "
          + ", ".join(f"{cpus[c]:.1f}" for c in sorted(cpus)))
    print(f"probe and plan {measured['plan']:.2f} s after upload; assembly {measured['assembly']:.2f} s")
    # The same source six times as long: its runs of frames cost what the measured ones did.
    frames = [cpus[c] for c in sorted(cpus)[1:]]
    longer = dict(enumerate([cpus[min(cpus)]] + frames * 6))
    print(f"\n| simulated single-core workers | {SECONDS} s source ({len(cpus)} chunks, measured) "
          f"| {6 * SECONDS} s source ({len(longer)} chunks, the measured runs six times) |")
    print("|---|---|---|")
    for workers in (1, 2, 4, 8, 16, 32, 64):
        short = fleet(measured["plan"], cpus, measured["assembly"], workers)
        long = fleet(measured["plan"], longer, measured["assembly"], workers)
        print(f"| {workers} | {short:.1f} s | {long:.1f} s |")
    print(json.dumps({k: [{**x, "spans": len(x["spans"])} for x in v] for k, v in results.items()}), file=sys.stderr)


main()
