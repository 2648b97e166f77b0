#!/usr/bin/python3
"""demo-app -- the lab's deploy target: a small real HTTP service.

deploy-with-failover.yml deploys it in the lab: each release is a directory
(releases/VERSION) with this program, its VERSION, some content and a
MANIFEST of sha256 sums. At start the service checks its own release against
the MANIFEST, so it can say whether it serves one complete release:

  GET /version   {"version", "complete", "release", "pid", "started"}
  GET /health    200 {"status": "ok"} -- or 500 when the release is broken
                 (a release built with a BROKEN file: the lab's failing deploy)
  GET /          the content of the release

It listens on APP_LISTEN (HOST:PORT, default 127.0.0.1:8080).
"""

import hashlib
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.realpath(__file__))
STARTED = time.time()


def read(name):
    try:
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def complete():
    """Every file of the MANIFEST is there with its sha256."""
    manifest = read("MANIFEST")
    if not manifest:
        return False
    for line in manifest.splitlines():
        digest, _, name = line.partition("  ")
        try:
            with open(os.path.join(ROOT, name), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    return False
        except OSError:
            return False
    return True


VERSION = read("VERSION") or "unknown"
COMPLETE = complete()
BROKEN = os.path.exists(os.path.join(ROOT, "BROKEN"))


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body, kind="application/json"):
        data = (json.dumps(body) + "\n").encode() if kind == "application/json" else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/version":
            self.reply(200, {"version": VERSION, "complete": COMPLETE, "release": ROOT,
                             "pid": os.getpid(), "started": STARTED})
        elif self.path == "/health":
            if BROKEN or not COMPLETE:
                self.reply(500, {"status": "failing", "version": VERSION,
                                 "why": "this release is broken" if BROKEN else "incomplete release"})
            else:
                self.reply(200, {"status": "ok", "version": VERSION})
        elif self.path == "/":
            self.reply(200, read("index.html") + "\n", "text/html")
        else:
            self.reply(404, {"status": "not found"})

    def log_message(self, *_args):
        pass


def main():
    host, _, port = os.environ.get("APP_LISTEN", "127.0.0.1:8080").rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    print(f"demo-app {VERSION} from {ROOT} on {host}:{port} (complete: {COMPLETE})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
