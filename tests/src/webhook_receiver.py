"""A webhook receiver for vodsource's tests: an HTTP server that checks every request's
`Vodsource-Signature` with Python's own hmac (an implementation independent of the
sender's), records what it got, and answers as the test tells it.

    python3 webhook_receiver.py HOST    # prints the port it listens on, then serves

POST /hook/<name>       a delivery to endpoint <name>; answered 200 when its signature
                        verifies under the endpoint's secret, 400 when not, 500 while the
                        endpoint is told to fail, 307 (a redirect that keeps the method and
                        body) when told to redirect
POST /control/<name>    {"secret": ..., "fail": bool, "fail_types": [type, ...], "redirect": url,
                        "stall": bool, "clock_offset": seconds}:
                        how to answer <name> (fail: 500 to everything; fail_types: 500 to
                        events of those types; stall: note the request as "stalled" and
                        answer it only 30 s later; clock_offset: the receiver's clock is this
                        far ahead of the machine's, as the sender's is when a test moves it)
POST /schema            an OpenAPI document: every body is then checked against its
                        `WebhookEvent` schema (with the jsonschema package), any mismatch noted
GET  /log               every delivery seen, in arrival order
"""

import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE = 300
lock = threading.Lock()
controls = {}
log = []
validator = []


def verify(header, secret, body, offset=0):
    """The signature check a receiver does, from the documented scheme alone."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k == "t"]
    if len(stamps) != 1:
        return "no timestamp"
    t = stamps[0]
    if abs(time.time() + offset - int(t)) > TOLERANCE:
        return "stale timestamp"
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    if any(hmac.compare_digest(expected, v) for k, v in parts if k == "v1"):
        return None
    return "no signature matches"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/log":
            return self.answer(404)
        with lock:
            body = json.dumps(log).encode()
        self.answer(200, body, [("Content-Type", "application/json")])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        kind, _, name = self.path.strip("/").partition("/")
        if kind == "schema":
            import jsonschema

            document = json.loads(body)
            schema = {"$ref": "#/components/schemas/WebhookEvent", "components": document["components"]}
            with lock:
                validator[:] = [jsonschema.Draft7Validator(schema)]
            return self.answer(204)
        if kind == "control":
            with lock:
                controls.setdefault(name, {}).update(json.loads(body))
            return self.answer(204)
        if kind != "hook":
            return self.answer(404)
        with lock:
            control = dict(controls.get(name, {}))
        problem = verify(
            self.headers.get("Vodsource-Signature", ""), control.get("secret", ""), body, control.get("clock_offset", 0)
        )
        if control.get("redirect"):
            status = 307
        elif control.get("fail") or self.headers.get("Vodsource-Event-Type") in control.get("fail_types", []):
            status = 500
        else:
            status = 400 if problem else 200
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        with lock:
            check = validator[0] if validator else None
        schema_problem = None
        if check is not None:
            errors = [e.message for e in check.iter_errors(event)]
            schema_problem = "; ".join(errors) if errors else None
        stall = bool(control.get("stall"))
        with lock:
            log.append({
                "endpoint": name,
                "status": "stalled" if stall else status,
                "problem": problem,
                "schema_problem": schema_problem,
                "event": event,
                "event_id": self.headers.get("Vodsource-Event-Id"),
                "event_type": self.headers.get("Vodsource-Event-Type"),
                "attempt": self.headers.get("Vodsource-Delivery-Attempt"),
                "at": time.time(),
            })
        if stall:
            time.sleep(30)
        headers = [("Location", control["redirect"])] if status == 307 else []
        self.answer(status, b"", headers)


class Server(ThreadingHTTPServer):
    # The default backlog (5) refuses connections under a dispatcher's parallel requests.
    request_queue_size = 256


def main():
    server = Server((sys.argv[1], 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
