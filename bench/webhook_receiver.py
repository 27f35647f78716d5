#!/usr/bin/env python3
"""A webhook receiver for bench/webhooks: answers 200 to every POST and
records, for each event, how long after its `at` it arrived. GET /summary
prints the delays (ms) of the events so far, per type family, as
`kind=... count=... p50_ms=... p99_ms=... max_ms=...` lines, and resets.

Usage: webhook_receiver.py PORT
"""
import json
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
delays = {"join": [], "leave": []}
ids = set()
duplicates = 0
LEAVES = {"user.offline", "module.leave", "resource.leave", "resource.vacated"}


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        global duplicates
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        now = time.time() * 1000
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        events = json.loads(body)["data"]["events"]
        with lock:
            for e in events:
                if e["id"] in ids:
                    duplicates += 1
                    continue
                ids.add(e["id"])
                at = datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp() * 1000
                family = "leave" if e["type"] in LEAVES else "join"
                delays[family].append(now - at)

    def do_GET(self):
        global duplicates
        with lock:
            lines = [
                f"kind={k} count={len(v)} p50_ms={percentile(v, 50):.0f} "
                f"p99_ms={percentile(v, 99):.0f} max_ms={max(v, default=float('nan')):.0f}"
                for k, v in delays.items()
            ]
            lines.append(f"duplicates={duplicates}")
            for v in delays.values():
                v.clear()
            duplicates = 0
        out = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
