"""The driver of scripts/bench-upload.sh: vodsource BIN, SIZE_MB, [--s3]."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

from bench_api import request, wait_live

BIN, SIZE_MB = sys.argv[1], int(sys.argv[2])
S3 = "--s3" in sys.argv[3:]
SIZE = SIZE_MB * 1024 * 1024
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main():
    data = tempfile.mkdtemp(prefix="vodsource-bench-upload-")
    env = dict(os.environ, VODSOURCE_LOG="warn", VODSOURCE_ENCODERS="0", VODSOURCE_NO_QOE_SINK="true",
               VODSOURCE_MAX_UPLOAD_BYTES=str(8 * 1024**3))
    env.pop("VODSOURCE_JWT_SECRET", None)
    if S3:
        env.update(VODSOURCE_OBJECT_STORE=f"s3://bench-{uuid.uuid4().hex[:20]}/vod", AWS_ENDPOINT_URL="http://127.0.0.1:5000",
                   AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="vodsource", AWS_SECRET_ACCESS_KEY="vodsource")
        subprocess.run([BIN, "--data-dir", data, "setup"], env=env, check=True, stdout=subprocess.DEVNULL)
    source = os.path.join(data, "source.bin")
    with open(source, "wb") as f:
        block = os.urandom(1024 * 1024)
        for _ in range(SIZE_MB):
            f.write(block)
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen([BIN, "--data-dir", data, "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                              stderr=open(os.path.join(data, "server.log"), "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_live(base)
        rows = []

        def register(title):
            _, _, body = request("POST", f"{base}/v1/videos", {"title": title, "filename": "source.mp4",
                                                               "content_type": "video/mp4", "size_bytes": SIZE})
            return body

        def measure(name, run):
            cpu, started = cpu_seconds(server.pid), time.monotonic()
            run()
            wall, cpu = time.monotonic() - started, cpu_seconds(server.pid) - cpu
            rows.append((name, wall, SIZE / wall / 1e6, cpu / (SIZE / 1e9)))

        def single_put():
            registered = register("single PUT")
            target = registered["upload"]
            subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-X", "PUT", "-H", "content-type: video/mp4",
                            "-T", source, target["url"]], check=True)
            request("POST", f"{base}/v1/videos/{registered['video_id']}/upload-complete")

        def tus():
            video = register("tus")["video_id"]
            import base64
            meta = "video_id " + base64.b64encode(video.encode()).decode()
            _, headers, _ = request("POST", f"{base}/v1/uploads", headers={
                "Tus-Resumable": "1.0.0", "Upload-Length": str(SIZE), "Upload-Metadata": meta})
            location = headers["Location"]
            subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-X", "PATCH", "-H", "Tus-Resumable: 1.0.0",
                            "-H", "Upload-Offset: 0", "-H", "Content-Type: application/offset+octet-stream",
                            "-T", source, base + location], check=True)

        def direct():
            # A client that speaks S3 multipart (as Uppy's plugin does): the API signs each
            # part's URL; four parts at a time go straight to the bucket.
            from concurrent.futures import ThreadPoolExecutor
            multipart = register("direct multipart")["multipart"]
            calls = multipart["endpoint"] + "/s3/multipart"
            part_size = multipart["part_size"]
            _, _, created = request("POST", calls, {})
            upload = created["uploadId"]

            def send(number):
                _, _, signed = request("GET", f"{calls}/{upload}/{number}")
                with open(source, "rb") as f:
                    f.seek((number - 1) * part_size)
                    body = f.read(part_size)
                # urllib would call the body a form, which moto then tries to parse.
                req = urllib.request.Request(signed["url"], data=body, method="PUT",
                                             headers={"content-type": "application/octet-stream"})
                with urllib.request.urlopen(req) as r:
                    r.read()

            with ThreadPoolExecutor(int(os.environ.get("DIRECT_PARTS_IN_FLIGHT", "4"))) as pool:
                list(pool.map(send, range(1, created["partCount"] + 1)))
            request("POST", f"{calls}/{upload}/complete", {})

        shape = "S3 (moto)" if S3 else "embedded (folder)"
        measure(f"single PUT ({'presigned, to the bucket' if S3 else 'to the API'})", single_put)
        measure("tus, one PATCH (through the API)", tus)
        if S3:
            measure("presigned multipart, to the bucket", direct)
        print(f"{SIZE_MB} MiB over loopback, {shape}:")
        print(f"{'upload':45} {'wall s':>8} {'MB/s':>8} {'API CPU s/GB':>13}")
        for name, wall, rate, cpu in rows:
            print(f"{name:45} {wall:8.2f} {rate:8.1f} {cpu:13.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data, ignore_errors=True)


main()
