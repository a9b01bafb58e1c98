"""What the benchmark drivers share: JSON calls to the API and waiting for a server to start."""
import json
import time
import urllib.request


def request(method, url, body=None, headers=None):
    """(status, headers, JSON body or None) of one call; a JSON `body` is sent as such."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return r.status, r.headers, (json.loads(text) if text else None)


def wait_live(base, seconds=30):
    """Polls `base`'s liveness until it answers (raising after `seconds`)."""
    deadline = time.time() + seconds
    while True:
        try:
            request("GET", f"{base}/v1/health/live")
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
